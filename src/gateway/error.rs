//! Gateway errors and the one place they become HTTP statuses.

use http::StatusCode;

use crate::content::ContentError;
use crate::tiers::TierError;

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
