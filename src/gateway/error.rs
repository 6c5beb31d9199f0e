//! Gateway errors and the one place they become HTTP statuses.

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_RANGE, CONTENT_TYPE, RETRY_AFTER,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{Response, StatusCode};

use super::body::{self, Body};
use super::headers::set;
use super::unixfs_dir::html_escape;
use crate::content::source::TierError;
use crate::content::ContentError;

/// Everything a gateway request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed (CID, path, query, header): 400.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing at that path: 404.
    #[error("{0}")]
    NotFound(String),
    /// The method is not GET, HEAD or OPTIONS: 405.
    #[error("method {0} not allowed: read only access")]
    MethodNotAllowed(String),
    /// No acceptable representation: 406.
    #[error("{0}")]
    NotAcceptable(String),
    /// The content will not be served by this gateway, for good (over a size cap): a
    /// cacheable 410, so that CDNs shield the origin from repeats.
    #[error("{0}")]
    Gone(String),
    /// The content is on a denylist (IPIP-383): 410 Gone, or 451 when the list's hints ask for
    /// it; cacheable, as the spec says.
    #[error("{message}")]
    Blocked {
        /// 410 or 451.
        status: u16,
        /// What to tell the client.
        message: String,
    },
    /// A dedicated gateway does not serve this content to this client: 403.
    #[error("{0}")]
    Forbidden(String),
    /// `Cache-Control: only-if-cached` and the root is not held: 412.
    #[error("{0} not in local datastore")]
    NotCached(String),
    /// The Range cannot be satisfied: 416.
    #[error("{reason}")]
    RangeNotSatisfiable {
        /// Why.
        reason: String,
        /// Size of the representation, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// The content cannot be decoded as its codec claims: 422.
    #[error("{0}")]
    Unprocessable(String),
    /// The content itself is unusable as the gateway must read it (an invalid `_redirects`
    /// file, a rewrite to a missing path): 500. Never for anything the client sent.
    #[error("{0}")]
    Internal(String),
    /// The request asks for something not implemented: 501.
    #[error("{0}")]
    NotImplemented(String),
    /// An upstream failed or sent bad data: 502.
    #[error("{0}")]
    BadGateway(String),
    /// Overloaded or a dependency is down: 503.
    #[error("{0}")]
    Unavailable(String),
    /// An upstream took too long: 504.
    #[error("{0}")]
    Timeout(String),
}

impl GatewayError {
    /// The answer for blocked content (`what` names it as the client asked for it).
    pub fn blocked(status: u16, what: &str) -> Self {
        let why = if status == 451 {
            "unavailable for legal reasons"
        } else {
            "blocked by this gateway's content policy"
        };
        GatewayError::Blocked {
            status: if status == 451 { 451 } else { 410 },
            message: format!("{what} is {why}"),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            GatewayError::NotCached(_) => StatusCode::PRECONDITION_FAILED,
            GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::Gone(_) => StatusCode::GONE,
            GatewayError::Blocked { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::GONE)
            }
            GatewayError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            GatewayError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            GatewayError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Seconds a client should wait before retrying, for transient failures.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::Unavailable(_)
            | GatewayError::Timeout(_)
            | GatewayError::BadGateway(_) => Some(30),
            _ => None,
        }
    }
}

impl GatewayError {
    /// The response for this error: the one-line reason as plain text, or, for a browser
    /// navigating to `page_path` (the path it asked for), an HTML page with the status, the
    /// reason, the path and, when the failure is transient, when to retry. Both say only the
    /// public reason (design invariant 10).
    pub fn response(&self, page_path: Option<&str>) -> Response<Body> {
        let (body, content_type) = match page_path {
            Some(path) => (html_page(self, path), "text/html; charset=utf-8"),
            None => (format!("{self}\n"), "text/plain; charset=utf-8"),
        };
        let mut resp = Response::new(body::full(Bytes::from(body)));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        let cache_control = match self {
            // Deterministic refusals: a CDN may keep them.
            GatewayError::Gone(_) | GatewayError::Blocked { .. } => "public, max-age=604800",
            _ => "no-cache",
        };
        h.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
        if let Some(secs) = self.retry_after() {
            set(h, RETRY_AFTER, &secs.to_string());
        }
        match self {
            GatewayError::MethodNotAllowed(_) => set(h, ALLOW, "GET, HEAD, OPTIONS"),
            GatewayError::RangeNotSatisfiable { size, .. } => {
                set(h, CONTENT_RANGE, &format!("bytes */{size}"))
            }
            _ => {}
        }
        if page_path.is_some() {
            // The page and the plain reason share a URL.
            h.insert(http::header::VARY, HeaderValue::from_static("Accept"));
        }
        resp
    }
}

/// Whether the request's `Accept` lists `text/html`: a browser navigating, which gets error
/// pages rather than plain text.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

/// The HTML error page of `e` for a request of `path` (still percent-encoded; shown decoded).
fn html_page(e: &GatewayError, path: &str) -> String {
    let status = e.status();
    let reason = status.canonical_reason().unwrap_or("Error");
    let shown = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let hint = match (e, e.retry_after()) {
        (GatewayError::Timeout(_), Some(secs)) => format!(
            "<p class=\"hint\">The content could not be fetched in time. It may be on its way into this gateway's cache now: <a href=\"\">try again</a> in {secs} seconds.</p>"
        ),
        (_, Some(secs)) => format!(
            "<p class=\"hint\">This is likely temporary: <a href=\"\">try again</a> in {secs} seconds.</p>"
        ),
        _ => String::new(),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{code} {reason}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#222}}
h1{{font-size:1.6rem;margin-bottom:.5rem}} h1 .code{{color:#b00}} code{{background:#f3f3f3;padding:0 .2em;word-break:break-all}}
.hint{{background:#fff8e0;border-left:4px solid #e0b000;padding:.5rem .8rem}}</style>
</head><body>
<h1><span class="code">{code}</span> {reason}</h1>
<p class="path"><code>{path}</code></p>
<p class="reason">{message}</p>
{hint}</body></html>
"#,
        code = status.as_u16(),
        reason = html_escape(reason),
        path = html_escape(&shown),
        message = html_escape(&e.to_string()),
    )
}

impl From<TierError> for GatewayError {
    /// Failures of the tiers name hot nodes, providers, URLs and disk paths: those go to the
    /// log, and the public body says only which tier failed (design invariant 10).
    fn from(e: TierError) -> Self {
        match &e {
            TierError::NotFound(cid) => GatewayError::NotFound(format!("block {cid} not found")),
            TierError::Corrupt { tier, error } => {
                tracing::warn!(error = %e, "a tier sent bytes that failed verification");
                GatewayError::BadGateway(format!(
                    "the {tier} tier sent bytes that failed verification ({error}); they were discarded"
                ))
            }
            TierError::Timeout(tier) => {
                GatewayError::Timeout(format!("the {tier} tier did not answer in time"))
            }
            TierError::Unavailable { tier, reason } => {
                tracing::warn!(%tier, %reason, "tier unavailable");
                GatewayError::Unavailable(format!("the {tier} tier is unavailable"))
            }
            TierError::Blocked { cid, status } => GatewayError::blocked(*status, &cid.to_string()),
            TierError::CircuitOpen(tier) => GatewayError::BadGateway(format!(
                "the {tier} tier is skipped after repeated failures (circuit open); retry later"
            )),
            TierError::Providers { failures } => {
                tracing::warn!(error = %e, "storage providers failed");
                let each: Vec<String> = failures
                    .iter()
                    .enumerate()
                    .map(|(i, (public, _))| format!("provider {}: {public}", i + 1))
                    .collect();
                GatewayError::BadGateway(format!(
                    "the cold tier could not provide the content: every storage provider failed ({})",
                    each.join("; ")
                ))
            }
            TierError::Upstream { tier, reason } => {
                tracing::warn!(%tier, %reason, "tier failed");
                GatewayError::BadGateway(format!("the {tier} tier could not provide the content"))
            }
        }
    }
}

impl From<ContentError> for GatewayError {
    fn from(e: ContentError) -> Self {
        match e {
            ContentError::Tier(t) => t.into(),
            ContentError::NoLink { .. } => GatewayError::NotFound(e.to_string()),
            ContentError::Malformed { .. } => GatewayError::Unprocessable(e.to_string()),
            ContentError::Unsupported(m) => GatewayError::NotImplemented(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{cid_v1_sha256, RAW};
    use http_body_util::BodyExt;

    async fn text(resp: Response<Body>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn browsers_get_a_page_with_status_reason_path_and_retry_hint() {
        let e = GatewayError::from(TierError::Timeout("cold"));
        let resp = e.response(Some("/ipfs/bafy/%C4%85<b>"));
        assert_eq!(resp.status(), 504);
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(resp.headers()[RETRY_AFTER], "30");
        let page = text(resp).await;
        assert!(
            page.contains("<title>504 Gateway Timeout</title>"),
            "{page}"
        );
        assert!(
            page.contains("<code>/ipfs/bafy/ą&lt;b&gt;</code>"),
            "{page}"
        );
        assert!(
            page.contains("the cold tier did not answer in time"),
            "{page}"
        );
        assert!(page.contains("try again</a> in 30 seconds"), "{page}");
        // No retry hint where retrying cannot help.
        let page = text(GatewayError::NotFound("nothing at /x".into()).response(Some("/x"))).await;
        assert!(page.contains("404</span> Not Found") && !page.contains("try again"));
        // Everyone else gets the one line.
        let resp = e.response(None);
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(text(resp).await, "the cold tier did not answer in time\n");
    }

    #[test]
    fn pages_never_name_what_the_log_gets() {
        let e = GatewayError::from(TierError::Upstream {
            tier: "hot",
            reason: "http://10.0.0.7:5001/api/v0/block/get failed".into(),
        });
        let page = html_page(&e, "/ipfs/x");
        assert!(!page.contains("10.0.0.7"), "{page}");
        assert!(page.contains("502") && page.contains("try again"));
    }

    #[test]
    fn tier_errors_map_to_the_spec_statuses() {
        let cid = cid_v1_sha256(RAW, b"x");
        assert_eq!(GatewayError::from(TierError::NotFound(cid)).status(), 404);
        assert_eq!(GatewayError::from(TierError::Timeout("cold")).status(), 504);
        let corrupt = TierError::Corrupt {
            tier: "hot",
            error: crate::ipld::verify::VerifyError::Mismatch(cid),
        };
        assert_eq!(GatewayError::from(corrupt).status(), 502);
        let nolink = ContentError::NoLink {
            segment: "a".into(),
            parent: cid,
        };
        assert_eq!(GatewayError::from(nolink).status(), 404);
    }
}
