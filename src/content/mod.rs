//! Content: resolving `/ipfs/{cid}/path` through UnixFS directories (plain and HAMT) and
//! dag-cbor / dag-json documents, and choosing the blocks of a CAR response (dag-scope,
//! entity-bytes). Knows nothing of HTTP or of where blocks come from.

pub mod resolve;
pub mod selector;

use cid::Cid;

use crate::ipld::codec::CodecError;
use crate::ipld::unixfs::UnixFsError;
use crate::tiers::{BlockSource, TierError};

pub use resolve::{resolve, Resolved};

/// Why content could not be resolved or walked.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A block source failed or lacks a block.
    #[error(transparent)]
    Tier(#[from] TierError),
    /// A path segment names nothing.
    #[error("no link named {segment:?} under {parent}")]
    NoLink {
        /// The missing segment.
        segment: String,
        /// The CID it was looked up in.
        parent: Cid,
    },
    /// A block's structure is malformed for its codec.
    #[error("cannot decode {cid}: {reason}")]
    Malformed {
        /// The undecodable block.
        cid: Cid,
        /// What the decoder said.
        reason: String,
    },
    /// The request asks for something cidgate does not implement.
    #[error("{0}")]
    Unsupported(String),
}

impl ContentError {
    fn malformed(cid: &Cid, e: impl std::fmt::Display) -> Self {
        ContentError::Malformed {
            cid: *cid,
            reason: e.to_string(),
        }
    }
}

impl From<(Cid, UnixFsError)> for ContentError {
    fn from((cid, e): (Cid, UnixFsError)) -> Self {
        ContentError::malformed(&cid, e)
    }
}

impl From<(Cid, CodecError)> for ContentError {
    fn from((cid, e): (Cid, CodecError)) -> Self {
        ContentError::malformed(&cid, e)
    }
}

/// Fetches a block, turning "not found" into a content error for `cid`.
pub(crate) async fn fetch(
    src: &dyn BlockSource,
    cid: &Cid,
) -> Result<crate::ipld::Block, ContentError> {
    Ok(src.get(cid).await?)
}
