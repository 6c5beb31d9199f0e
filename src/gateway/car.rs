//! `application/vnd.ipld.car`: a CARv1 streamed as blocks are read and verified.

use bytes::Bytes;
use http::header::{ACCEPT_RANGES, CONTENT_TYPE};
use http::{Response, StatusCode};
use sha2::Digest;
use tokio::sync::mpsc;

use super::body::{channel, BodyError};
use super::error::GatewayError;
use super::headers::set;
use super::request::{CarParams, GatewayRequest};
use super::{Body, Gateway};
use crate::content::dag::CarFrames;
use crate::content::select::DagScope;
use crate::content::selector;
use crate::ipld::car;

/// Chunks buffered between the DAG walk and the socket (two per block: prefix and data).
const CHANNEL_CHUNKS: usize = 32;

/// The `Content-Type` of a CAR response, echoing the negotiated parameters.
pub fn content_type(p: &CarParams) -> String {
    format!(
        "application/vnd.ipld.car; version=1; order={}; dups={}",
        if p.order_unk { "unk" } else { "dfs" },
        if p.selection.dups { "y" } else { "n" }
    )
}

/// A weak `Etag` unique per path and selection.
pub fn etag(req: &GatewayRequest, p: &CarParams) -> String {
    let mut h = sha2::Sha256::new();
    h.update(req.content_path.as_bytes());
    let s = &p.selection;
    if s.scope != DagScope::All {
        h.update(format!("\0scope={}", s.scope.as_str()));
    }
    if p.order_unk {
        h.update("\0order=unk");
    }
    if s.dups {
        h.update("\0dups=y");
    }
    if let Some(eb) = s.entity_bytes {
        h.update(format!("\0range={}:{:?}", eb.from, eb.to));
    }
    let d = h.finalize();
    let tag = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    format!("W/\"{}.car.{tag:x}\"", req.root)
}

/// Serves a CAR of the request's path and selection.
pub async fn respond(
    gw: &Gateway,
    req: &GatewayRequest,
    params: CarParams,
) -> Result<Response<Body>, GatewayError> {
    let etag = etag(req, &params);
    let mut resp = gw.base_response(req, &[req.root], &etag);
    let headers = resp.headers_mut();
    set(headers, CONTENT_TYPE, &content_type(&params));
    set(headers, ACCEPT_RANGES, "none");
    gw.set_disposition(headers, req, &format!("{}.car", req.root), true);
    if gw.not_modified(req, &etag) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    // A remote tier streams the whole selection at once instead of block by block, for as
    // long as the response body lives.
    let interest = if req.head {
        crate::content::source::Interest::none()
    } else {
        gw.prefetch(req, params.selection.scope, params.selection.entity_bytes)
            .await
    };
    let resolved = gw.resolve(req.root, &req.segments).await?;
    set(
        resp.headers_mut(),
        super::headers::X_IPFS_ROOTS,
        &super::roots_header(&resolved.roots),
    );
    // The status is committed once headers go out: the entity's own block must be here and
    // verified first, so that a missing or lying source is a clean 404 / 502.
    let target = gw.source().get(&resolved.target).await?;
    selector::check_target(&target, &params.selection)?;
    let selected = match (params.selection.scope, params.selection.entity_bytes) {
        (DagScope::Block, _) => Some(target.data().len() as u64),
        (scope, Some(eb)) => {
            crate::content::entity::unixfs_dag_size(&target, scope == DagScope::All)
                .map(|size| eb.resolve(size).map_or(0, |(s, e)| e - s + 1))
        }
        (scope, None) => crate::content::entity::unixfs_dag_size(&target, scope == DagScope::All),
    };
    if let Some(size) = selected {
        gw.check_size(size, super::Delivery::Verifiable)?;
    }
    if req.head {
        return Ok(resp);
    }
    let header = car::header(&[req.root]).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, BodyError>>(CHANNEL_CHUNKS);
    let src = gw.source_arc();
    let selection = params.selection;
    tokio::spawn(async move {
        if tx.send(Ok(header)).await.is_err() {
            return;
        }
        let mut sink = CarFrames {
            tx,
            bytes: 0,
            limit: u64::MAX,
        };
        if let Err(e) = selector::walk(src.as_ref(), &resolved, &selection, &mut sink).await {
            tracing::warn!(root = %resolved.root, error = %e, "CAR stream cut short");
            let _ = sink.tx.send(Err(Box::new(e))).await;
        }
    });
    *resp.body_mut() = super::body::holding(channel(rx), interest);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::BodyExt;

    use super::super::GatewayOptions;
    use super::*;
    use crate::ipld::Cid;

    /// An identity CID whose bytes are `data` under `codec`.
    fn identity(codec: u64, data: &[u8]) -> String {
        let mh = cid::multihash::Multihash::<64>::wrap(crate::ipld::IDENTITY, data).unwrap();
        Cid::new_v1(codec, mh).to_string()
    }

    #[tokio::test]
    async fn undecodable_roots_are_refused_before_the_stream_starts() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::tiers::local::LocalStore::open(dir.path()).unwrap();
        let gw = Gateway::new(Arc::new(store), GatewayOptions::default());
        let get = |uri: String| {
            let req = http::Request::get(uri)
                .header("host", "a")
                .body(())
                .unwrap();
            gw.handle(req)
        };
        // A truncated dag-cbor map (its links are read for dag-scope=all only; a document is
        // its own entity) and a dag-pb node that is not one (read in every scope but block).
        for (root, queries) in [
            (
                identity(crate::ipld::DAG_CBOR, &[0xa1]),
                &["format=car"][..],
            ),
            (
                identity(crate::ipld::DAG_PB, &[0xff, 0xfe, 0x00]),
                &[
                    "format=car",
                    "format=car&dag-scope=entity",
                    "format=car&entity-bytes=0:*",
                ][..],
            ),
        ] {
            for q in queries {
                let resp = get(format!("/ipfs/{root}?{q}")).await;
                assert_eq!(resp.status(), 422, "{root}?{q}");
            }
            // The block alone needs no decoding.
            let resp = get(format!("/ipfs/{root}?format=car&dag-scope=block")).await;
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(!body.is_empty());
        }
        // A block that decodes is streamed whole.
        let resp = get(format!(
            "/ipfs/{}?format=car",
            identity(crate::ipld::RAW, b"hello")
        ))
        .await;
        assert_eq!(resp.status(), 200);
        assert!(resp.into_body().collect().await.is_ok());
    }
}
