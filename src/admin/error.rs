//! Why an admin request failed, and the one place that says which status each reason gets.
//! (The Pinning Service API has its own error bodies, `pinning.rs`, as its spec requires.)

use http::StatusCode;

use crate::content::source::TierError;
use crate::content::ContentError;
use crate::ipns::ResolveError;
use crate::popularity::promoter::PromoteError;
use crate::tiers::import::ImportError;
use crate::tiers::local::StoreError;

/// A failed admin request: the reason, shown to the operator as the body.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The request itself is wrong: a CID, a query parameter, a body.
    #[error("{0}")]
    BadRequest(String),
    /// No or a wrong bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// Writes are refused on a non-loopback listener without a token.
    #[error("{0}")]
    Forbidden(String),
    /// Nothing there (a path, a record, a feature that is off).
    #[error("{0}")]
    NotFound(String),
    /// The path exists, not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The same work is already running, or a newer record is held.
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than this endpoint takes.
    #[error("{0}")]
    TooLarge(String),
    /// Content whose blocks do not decode the way it was asked to be read.
    #[error("{0}")]
    Undecodable(String),
    /// Content on a denylist: 410, or 451 when the list says so.
    #[error("{message}")]
    Blocked {
        /// The list's status.
        status: u16,
        /// What is blocked.
        message: String,
    },
    /// A service this request needed answered with an error (the hot node, DNS, routers).
    #[error("{0}")]
    Upstream(String),
    /// The store's budget (`store.max_size`) or its disk is full.
    #[error("{0}")]
    StoreFull(String),
    /// This gateway cannot do it now: the store failed, a task died, a feature is busy.
    #[error("{0}")]
    Unavailable(String),
}

impl AdminError {
    /// The HTTP status of this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::Undecodable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::Blocked { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::GONE)
            }
            AdminError::Upstream(_) => StatusCode::BAD_GATEWAY,
            AdminError::StoreFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A failure of this gateway's own machinery (a store, a task).
    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        AdminError::Unavailable(e.to_string())
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full(_) => AdminError::StoreFull(e.to_string()),
            _ => AdminError::Unavailable(e.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for AdminError {
    fn from(e: tokio::task::JoinError) -> Self {
        AdminError::Unavailable(format!("task failed: {e}"))
    }
}

impl From<TierError> for AdminError {
    fn from(e: TierError) -> Self {
        match e {
            TierError::NotFound(_) => AdminError::NotFound(e.to_string()),
            TierError::Blocked { status, .. } => AdminError::Blocked {
                status,
                message: e.to_string(),
            },
            TierError::Upstream { .. } | TierError::Providers { .. } => {
                AdminError::Upstream(e.to_string())
            }
            // Bad bytes from this gateway's own store (what the admin API reads) are its own
            // failure, like the rest.
            _ => AdminError::Unavailable(e.to_string()),
        }
    }
}

impl From<ContentError> for AdminError {
    fn from(e: ContentError) -> Self {
        match e {
            ContentError::Tier(t) => t.into(),
            ContentError::NoLink { .. } => AdminError::NotFound(e.to_string()),
            ContentError::Malformed { .. } | ContentError::Unsupported(_) => {
                AdminError::Undecodable(e.to_string())
            }
        }
    }
}

impl From<ImportError> for AdminError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Store(s) => s.into(),
            ImportError::Tier(t) => t.into(),
            ImportError::Task(_) => AdminError::Unavailable(e.to_string()),
            // The sender's CAR: unreadable, a block that does not verify, nothing to pin.
            _ => AdminError::BadRequest(e.to_string()),
        }
    }
}

impl From<ResolveError> for AdminError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Store(s) => s.into(),
            ResolveError::Unknown(_) => AdminError::NotFound(e.to_string()),
            ResolveError::Stale { .. } => AdminError::Conflict(e.to_string()),
            ResolveError::Dnslink(_) | ResolveError::Routing(_) => {
                AdminError::Upstream(e.to_string())
            }
            _ => AdminError::BadRequest(e.to_string()),
        }
    }
}

impl From<PromoteError> for AdminError {
    fn from(e: PromoteError) -> Self {
        match e {
            PromoteError::Busy(_) => AdminError::Conflict(e.to_string()),
            PromoteError::Store(_) => AdminError::Unavailable(e.to_string()),
            PromoteError::Pin(_) => AdminError::Upstream(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_are_the_gateways_not_the_clients() {
        let io = StoreError::Io(std::io::Error::other("disk on fire"));
        assert_eq!(
            AdminError::from(ImportError::Store(io)).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let full = StoreError::Full("store.max_size".into());
        assert_eq!(
            AdminError::from(ImportError::Store(full)).status(),
            StatusCode::INSUFFICIENT_STORAGE
        );
        let unavailable = TierError::Unavailable {
            tier: "store",
            reason: "read failed".into(),
        };
        assert_eq!(
            AdminError::from(ImportError::Tier(unavailable)).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            AdminError::from(ResolveError::Store(StoreError::Io(std::io::Error::other(
                "x"
            ))))
            .status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            AdminError::from(ImportError::NoBlocks).status(),
            StatusCode::BAD_REQUEST
        );
        let blocked = TierError::Blocked {
            cid: crate::ipld::cid_v1_sha256(crate::ipld::RAW, b"x"),
            status: 451,
        };
        assert_eq!(
            AdminError::from(ContentError::Tier(blocked))
                .status()
                .as_u16(),
            451
        );
    }
}
