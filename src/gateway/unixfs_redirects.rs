//! Applying a site's `_redirects` file (ipfs/specs `web-redirects-file.md`) to a request whose
//! path is missing from its content root. The rules themselves live in [`super::redirects`].

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use cid::Cid;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{Response, StatusCode};
use lru::LruCache;
use tokio::sync::mpsc;

use super::error::GatewayError;
use super::headers::{set, X_IPFS_PATH, X_IPFS_ROOTS};
use super::redirects::{Redirects, RedirectsError, MAX_REDIRECTS_FILE_BYTES};
use super::request::{GatewayRequest, ResponseFormat};
use super::{body, Body, Gateway};
use crate::content::entity::UnixFsEntity;
use crate::content::resolve;
use crate::content::unixfs_reader::read_range;
use crate::path_encoding::encode_segment;

/// The file's name at the content root.
const FILE_NAME: &str = "_redirects";

/// Content roots whose `_redirects` were read recently.
const CACHED_ROOTS: usize = 256;

/// What a root's `_redirects` was found to be.
type Loaded = Result<Option<Arc<Redirects>>, String>;

/// Parsed `_redirects` files by content root. Content never changes under a CID, so entries
/// never go stale; without this, every request for a missing path of a site (any made-up
/// path, any single-page-app route) would read and parse the file again.
#[derive(Clone)]
pub struct RedirectsCache(Arc<Mutex<LruCache<Cid, Loaded>>>);

impl RedirectsCache {
    /// Forgets every parsed file.
    pub fn clear(&self) {
        if let Ok(mut c) = self.0.lock() {
            c.clear();
        }
    }
}

impl Default for RedirectsCache {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(LruCache::new(
            NonZeroUsize::new(CACHED_ROOTS).unwrap_or(NonZeroUsize::MIN),
        ))))
    }
}

/// Whether a request that ended in `not_found` may be answered by the root's `_redirects`:
/// only where the root has an origin of its own (a subdomain host), and only for the implicit
/// web representation, never for an explicit format a client asked for.
pub fn applies(req: &GatewayRequest, not_found: &GatewayError) -> bool {
    matches!(not_found, GatewayError::NotFound(_))
        && req.subdomain
        && req.format == ResponseFormat::Deserialized
}

/// Answers `req` from the first `_redirects` rule matching its path; the original `not_found`
/// when the root has no such file or no rule matches.
pub async fn respond(
    gw: &Gateway,
    req: &GatewayRequest,
    not_found: GatewayError,
) -> Result<Response<Body>, GatewayError> {
    let Some(rules) = cached_load(gw, req).await? else {
        return Err(not_found);
    };
    let mut path = format!("/{}", req.segments.join("/"));
    if req.trailing_slash && path.len() > 1 {
        path.push('/');
    }
    let Some(hit) = rules.lookup(&path, req.query.as_deref()) else {
        return Err(not_found);
    };
    match hit.status {
        200 => {
            // A rewrite is applied once: a missing target is the file's mistake, not a loop.
            let target = rewritten(req, &hit.to, true);
            gw.ipfs(&target).await.map_err(|e| match e {
                GatewayError::NotFound(reason) => GatewayError::Internal(format!(
                    "failed to resolve {} (rewritten by {}): {reason}",
                    target.content_path,
                    file_path(req)
                )),
                other => other,
            })
        }
        301 | 302 | 303 | 307 | 308 => {
            let mut resp = redirect(req, hit.status, &hit.to);
            req.named.stamp(&mut resp);
            Ok(resp)
        }
        status => error_page(gw, req, status, &hit.to).await,
    }
}

/// [`load`] through the gateway's cache. Only answers about the content are kept (none, or
/// parsed, or invalid); a failure to read it (a tier down) is not.
async fn cached_load(
    gw: &Gateway,
    req: &GatewayRequest,
) -> Result<Option<Arc<Redirects>>, GatewayError> {
    if let Some(hit) = gw
        .redirects
        .0
        .lock()
        .ok()
        .and_then(|mut c| c.get(&req.root).cloned())
    {
        return hit.map_err(GatewayError::Internal);
    }
    let loaded: Loaded = match load(gw, req).await {
        Ok(found) => Ok(found.map(Arc::new)),
        Err(GatewayError::Internal(reason)) => Err(reason),
        Err(other) => return Err(other),
    };
    if let Ok(mut cache) = gw.redirects.0.lock() {
        cache.put(req.root, loaded.clone());
    }
    loaded.map_err(GatewayError::Internal)
}

/// The parsed `_redirects` of the request's root, `None` when it has none.
async fn load(gw: &Gateway, req: &GatewayRequest) -> Result<Option<Redirects>, GatewayError> {
    let trouble = |reason: String| {
        GatewayError::Internal(format!(
            "trouble processing _redirects file at {:?}: {reason}",
            file_path(req)
        ))
    };
    let resolved = match resolve(gw.source(), req.root, &[FILE_NAME.to_string()]).await {
        Ok(r) if r.remainder.is_empty() => r,
        Ok(_) => return Ok(None),
        Err(e) => match GatewayError::from(e) {
            GatewayError::NotFound(_) => return Ok(None),
            other => return Err(other),
        },
    };
    let (block, size) = match UnixFsEntity::decode(gw.source().get(&resolved.target).await?) {
        Ok(UnixFsEntity::File { block, size }) => (block, size),
        Ok(_) => return Err(trouble("_redirects is not a file".into())),
        Err(e) => return Err(trouble(e.to_string())),
    };
    if size > MAX_REDIRECTS_FILE_BYTES as u64 {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        return Err(trouble(format!(
            "could not parse _redirects: {}",
            RedirectsError::TooLarge { size }
        )));
    }
    let mut text = BytesMut::with_capacity(size as usize);
    if size > 0 {
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        let reading = read_range(gw.source_arc(), block, 0, size - 1, tx);
        let collecting = async {
            while let Some(chunk) = rx.recv().await {
                text.extend_from_slice(&chunk);
            }
        };
        let (read, ()) = tokio::join!(reading, collecting);
        read.map_err(GatewayError::from)?;
    }
    Redirects::parse(&text)
        .map(Some)
        .map_err(|e| trouble(format!("could not parse _redirects: {e}")))
}

/// `/ipfs/{root}/_redirects`, for messages.
fn file_path(req: &GatewayRequest) -> String {
    format!("/ipfs/{}/{FILE_NAME}", req.root)
}

/// `req` pointed at `to`, a decoded path below the same root.
fn rewritten(req: &GatewayRequest, to: &str, keep_conditions: bool) -> GatewayRequest {
    let segments: Vec<String> = to
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let encoded: Vec<String> = segments.iter().map(|s| encode_segment(s)).collect();
    let mut out = req.clone();
    out.trailing_slash = to.ends_with('/') && !segments.is_empty();
    out.content_path = format!("/ipfs/{}/{}", req.root, encoded.join("/"));
    if out.trailing_slash {
        out.content_path.push('/');
    }
    out.original_path = format!("/{}", encoded.join("/"));
    if out.trailing_slash {
        out.original_path.push('/');
    }
    // Headers name what is served: the target, below the same root (`/ipns/` name or CID).
    out.named = req.named.with_path(&segments, out.trailing_slash);
    out.segments = segments;
    if !keep_conditions {
        out.range = None;
        out.if_range = None;
        out.if_none_match = None;
    }
    out
}

/// A 3xx to `location`, with the short HTML body browsers show while they follow it.
fn redirect(req: &GatewayRequest, status: u16, location: &str) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let text = format!(
        "<a href=\"{}\">{}</a>.\n",
        super::unixfs_dir::html_escape(location),
        status.canonical_reason().unwrap_or("Redirect")
    );
    let mut resp = Response::new(if req.head {
        body::empty()
    } else {
        body::full(text.clone())
    });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    set(h, LOCATION, location);
    set(h, CONTENT_TYPE, "text/html; charset=utf-8");
    set(h, CONTENT_LENGTH, &text.len().to_string());
    resp
}

/// The file at `to` served with `status` (404, 410, 451): a site's own error page.
async fn error_page(
    gw: &Gateway,
    req: &GatewayRequest,
    status: u16,
    to: &str,
) -> Result<Response<Body>, GatewayError> {
    let target = rewritten(req, to, false);
    let trouble = |reason: String| {
        GatewayError::Internal(format!(
            "trouble processing _redirects file at {:?}: {} named by a {status} rule: {reason}",
            file_path(req),
            target.content_path
        ))
    };
    let mut resp = gw.ipfs(&target).await.map_err(|e| trouble(e.to_string()))?;
    if resp.status() != StatusCode::OK {
        return Err(trouble("not a file".into()));
    }
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND);
    let h = resp.headers_mut();
    // The page describes the missing path, not a path of its own.
    h.remove(X_IPFS_PATH);
    h.remove(super::named::IPFS_URI);
    h.remove(X_IPFS_ROOTS);
    h.remove(http::header::CONTENT_DISPOSITION);
    set(h, CONTENT_TYPE, "text/html");
    Ok(resp)
}
