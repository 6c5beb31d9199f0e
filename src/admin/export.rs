//! `GET /admin/export/{cid}[/path]`: a CAR of a DAG in the embedded store, what `cidgate export`
//! asks a running server for (the store is the server's while it runs). The path is resolved
//! before the answer, so a missing DAG is a 404, not a cut stream; after the 200 a block that
//! cannot be read ends the stream with an error rather than a clean end, so a partial CAR is
//! never taken for whole. Blocked content is refused like on the public port (invariant 9).

use std::sync::Arc;

use async_trait::async_trait;
use cid::Cid;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};

use super::{Admin, AdminError};
use crate::body::{self, Body};
use crate::content::dag::{dag_size, resolved_car};
use crate::content::resolve;
use crate::denylist::Denylist;
use crate::ipld::Block;
use crate::tiers::local::LocalStore;
use crate::tiers::{BlockSource, TierError};

/// Header carrying what the export's root block records as the size of its DAG (block bytes),
/// so a client can show a percentage; absent when the root does not record it.
pub const DAG_SIZE_HEADER: &str = "x-cidgate-dag-size";

/// The store, refusing blocks a denylist blocks.
struct Unblocked {
    store: LocalStore,
    denylist: Arc<Denylist>,
}

impl Unblocked {
    fn check(&self, cid: &Cid) -> Result<(), TierError> {
        match self.denylist.check_cid(cid) {
            Some(b) => Err(TierError::Blocked {
                cid: *cid,
                status: b.status,
            }),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl BlockSource for Unblocked {
    async fn get(&self, cid: &Cid) -> Result<Block, TierError> {
        self.check(cid)?;
        BlockSource::get(&self.store, cid).await
    }

    async fn has(&self, cid: &Cid) -> Result<bool, TierError> {
        self.check(cid)?;
        BlockSource::has(&self.store, cid).await
    }

    fn name(&self) -> &'static str {
        "store"
    }
}

impl Admin {
    /// `GET /admin/export/{cid}[/path]` (the path percent-encoded per segment).
    pub(super) async fn export(&self, target: &str) -> Result<Response<Body>, AdminError> {
        let mut parts = target.split('/').filter(|s| !s.is_empty());
        let root_text = parts.next().unwrap_or("");
        let root = Cid::try_from(root_text)
            .map_err(|e| AdminError::BadRequest(format!("invalid CID {root_text:?}: {e}")))?;
        let segments = parts
            .map(|p| {
                percent_encoding::percent_decode_str(p)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| AdminError::BadRequest(format!("path segment {p:?} is not UTF-8")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let denylist = self.denylist.current();
        if let Some(b) = denylist.check_ipfs_path(&root, &segments) {
            return Err(AdminError::Blocked {
                status: b.status,
                message: format!("{root} is blocked on this gateway"),
            });
        }
        let src: Arc<dyn BlockSource> = Arc::new(Unblocked {
            store: self.store.clone(),
            denylist,
        });
        let resolved = resolve(src.as_ref(), root, &segments).await?;
        let size = dag_size(src.as_ref(), &resolved.target).await?;
        // No size limit: this is the operator's own store, streamed with bounded memory.
        let rx = resolved_car(src, resolved, u64::MAX);
        let mut resp = Response::new(body::channel(rx));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.ipld.car; version=1"),
        );
        if let Some(n) = size {
            resp.headers_mut()
                .insert(DAG_SIZE_HEADER, HeaderValue::from(n));
        }
        Ok(resp)
    }
}
