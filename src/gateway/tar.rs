//! `application/x-tar`: a TAR of a UnixFS file or directory, streamed entry by entry. Entry
//! names that would escape the archive root are refused.

use bytes::{Bytes, BytesMut};
use cid::Cid;
use http::header::CONTENT_TYPE;
use http::{Response, StatusCode};
use tar::{EntryType, Header};
use tokio::sync::mpsc;

use super::body::{channel, BodyError};
use super::error::GatewayError;
use super::headers::set;
use super::request::GatewayRequest;
use super::unixfs_file::pump;
use super::{Body, Gateway};
use crate::content::source::BlockSource;
use crate::content::tree::{TreeEntry, TreeWalk};
use crate::content::ContentError;
use crate::ipld::{DAG_PB, RAW};

pub use crate::content::tree::OUTSIDE_ROOT;

/// Serves a TAR of the request's UnixFS entity.
pub async fn respond(gw: &Gateway, req: &GatewayRequest) -> Result<Response<Body>, GatewayError> {
    // The stream runs as long as the response body (see `body::holding` below).
    let interest = if req.head {
        crate::content::source::Interest::none()
    } else {
        gw.prefetch(req, crate::content::select::DagScope::All, None)
            .await
    };
    let resolved = gw.resolve(req.root, &req.segments).await?;
    let target = resolved.target;
    if target.codec() != DAG_PB && target.codec() != RAW {
        return Err(GatewayError::BadRequest(format!(
            "{target} is not UnixFS; TAR needs a UnixFS file or directory"
        )));
    }
    let etag = format!("W/\"{target}.x-tar\"");
    let mut resp = gw.base_response(req, &resolved.roots, &etag);
    set(resp.headers_mut(), CONTENT_TYPE, "application/x-tar");
    gw.set_disposition(resp.headers_mut(), req, &format!("{target}.tar"), true);
    if gw.not_modified(req, &etag) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    let root = gw.source().get(&target).await?;
    if let Some(size) = crate::content::entity::unixfs_dag_size(&root, true) {
        gw.check_size(size, super::Delivery::Deserialized)?;
    }
    // The root must be a UnixFS node: a block that is not (an identity CID the client made up,
    // say) is a 422 while the status can still say so, not a 200 cut after its headers.
    let src = gw.source_arc();
    let walk = TreeWalk::new(src.clone(), root)?;
    if req.head {
        return Ok(resp);
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, BodyError>>(8);
    tokio::spawn(async move {
        match write_tree(&src, walk, target, &tx).await {
            Ok(true) => {
                let _ = tx.send(Ok(Bytes::from_static(&[0u8; 1024]))).await;
            }
            Ok(false) => {}
            // A refused entry is refused every time: say why in the body, as the reference
            // gateway does (the archive is left without its end marker, so it cannot pass as
            // complete).
            Err(ContentError::Unsupported(msg)) => {
                tracing::info!(%target, reason = %msg, "TAR refused");
                let _ = tx.send(Ok(Bytes::from(format!("\n{msg}\n")))).await;
            }
            Err(e) => {
                tracing::warn!(%target, error = %e, "TAR stream cut short");
                let _ = tx.send(Err(Box::new(e))).await;
            }
        }
    });
    *resp.body_mut() = super::body::holding(channel(rx), interest);
    Ok(resp)
}

fn header(
    path: &str,
    kind: EntryType,
    size: u64,
    link: Option<&str>,
) -> Result<Bytes, ContentError> {
    let mut out = BytesMut::new();
    let mut h = Header::new_gnu();
    let bytes = path.as_bytes();
    if bytes.len() > 100 {
        // GNU long-name entry: the real name travels as the data of a preceding entry.
        let mut long = Header::new_gnu();
        long.set_entry_type(EntryType::GNULongName);
        long.set_size(bytes.len() as u64 + 1);
        long.set_mode(0o644);
        if let Some(gnu) = long.as_gnu_mut() {
            gnu.name[..13].copy_from_slice(b"././@LongLink");
        }
        long.set_cksum();
        out.extend_from_slice(long.as_bytes());
        out.extend_from_slice(bytes);
        out.extend_from_slice(&[0u8]);
        out.extend_from_slice(&vec![0u8; pad(bytes.len() as u64 + 1)]);
    }
    if let Some(gnu) = h.as_gnu_mut() {
        let n = bytes.len().min(100);
        gnu.name[..n].copy_from_slice(&bytes[..n]);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    if let Some(l) = link {
        h.set_link_name(l)
            .map_err(|e| ContentError::Unsupported(format!("symlink {path}: {e}")))?;
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    Ok(out.freeze())
}

fn pad(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// Writes the tree `walk` goes over (its root named `name`); false when the client went away.
async fn write_tree(
    src: &std::sync::Arc<dyn BlockSource>,
    mut walk: TreeWalk,
    name: Cid,
    tx: &mpsc::Sender<Result<Bytes, BodyError>>,
) -> Result<bool, ContentError> {
    let archive_path = |path: &[String]| {
        std::iter::once(name.to_string())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join("/")
    };
    while let Some(entry) = walk.next().await? {
        let sent = match entry {
            TreeEntry::File { path, size, block } => {
                let path = archive_path(&path);
                tx.send(Ok(header(&path, EntryType::Regular, size, None)?))
                    .await
                    .is_ok()
                    && (size == 0 || pump(src, &block, 0, size - 1, tx).await)
                    && (pad(size) == 0
                        || tx.send(Ok(Bytes::from(vec![0u8; pad(size)]))).await.is_ok())
            }
            TreeEntry::Symlink { path, target } => tx
                .send(Ok(header(
                    &archive_path(&path),
                    EntryType::Symlink,
                    0,
                    Some(&target),
                )?))
                .await
                .is_ok(),
            TreeEntry::Directory { path } => tx
                .send(Ok(header(
                    &format!("{}/", archive_path(&path)),
                    EntryType::Directory,
                    0,
                    None,
                )?))
                .await
                .is_ok(),
        };
        if !sent {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn roots_that_are_not_unixfs_are_refused_before_the_stream_starts() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::tiers::local::LocalStore::open(dir.path()).unwrap();
        let gw = Gateway::new(std::sync::Arc::new(store), Default::default());
        let identity = |codec, data: &[u8]| {
            let mh = cid::multihash::Multihash::<64>::wrap(crate::ipld::IDENTITY, data).unwrap();
            Cid::new_v1(codec, mh)
        };
        // Not dag-pb at all, and a dag-pb node without UnixFS data.
        for root in [identity(DAG_PB, &[0xff, 0xfe, 0x00]), identity(DAG_PB, &[])] {
            for method in ["GET", "HEAD"] {
                let req = http::Request::builder()
                    .method(method)
                    .uri(format!("/ipfs/{root}?format=tar"))
                    .header("host", "a")
                    .body(())
                    .unwrap();
                assert_eq!(gw.handle(req).await.status(), 422, "{method} {root}");
            }
        }
    }

    #[test]
    fn long_names_use_a_gnu_long_name_entry() {
        let name = "d/".repeat(80);
        let h = header(&name, EntryType::Regular, 5, None).unwrap();
        assert_eq!(h.len() % 512, 0);
        assert!(h.len() >= 1536);
    }
}
