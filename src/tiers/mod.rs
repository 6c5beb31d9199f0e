//! Block sources, fastest first: the edge cache, the hot pinning node (the embedded store by
//! default) and, later, the cold tier of Filecoin storage providers.
//!
//! Every source hands out [`Block`]s, which exist only once their bytes were hashed against their
//! CID (or came from the cache, which admits only such blocks).

pub mod import;
pub mod local;

use async_trait::async_trait;
use cid::Cid;

use crate::ipld::verify::VerifyError;
use crate::ipld::{Block, IDENTITY};

/// Why a source could not hand out a block.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The source does not have the block.
    #[error("block {0} not found")]
    NotFound(Cid),
    /// The source returned bytes that do not hash to the CID; they were discarded.
    #[error("{tier} gave bad bytes: {error}")]
    Corrupt {
        /// Which source lied.
        tier: &'static str,
        /// The verification failure.
        error: VerifyError,
    },
    /// The source took too long.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The source cannot be used right now (down, circuit open, disk error).
    #[error("{tier} unavailable: {reason}")]
    Unavailable {
        /// Which source.
        tier: &'static str,
        /// What went wrong.
        reason: String,
    },
}

impl TierError {
    /// True when the block simply is not there (as opposed to a failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, TierError::NotFound(_))
    }
}

/// A place blocks come from.
#[async_trait]
pub trait BlockSource: Send + Sync + 'static {
    /// The verified block for `cid`; [`TierError::NotFound`] when this source lacks it.
    async fn get(&self, cid: &Cid) -> Result<Block, TierError>;

    /// Whether the block is held here, without transferring it.
    async fn has(&self, cid: &Cid) -> Result<bool, TierError>;

    /// Short name for logs, metrics and the `Server-Timing` header.
    fn name(&self) -> &'static str;
}

/// The block of an identity CID, whose bytes are inside the CID itself.
pub fn identity_block(cid: &Cid) -> Option<Block> {
    (cid.hash().code() == IDENTITY)
        .then(|| Block::already_verified(*cid, bytes::Bytes::copy_from_slice(cid.hash().digest())))
}
