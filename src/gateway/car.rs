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
use crate::content::selector::{self, DagScope};
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
        crate::tiers::Interest::none()
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
        (scope, Some(eb)) => super::unixfs_dag_size(&target, scope == DagScope::All)
            .map(|size| eb.resolve(size).map_or(0, |(s, e)| e - s + 1)),
        (scope, None) => super::unixfs_dag_size(&target, scope == DagScope::All),
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
