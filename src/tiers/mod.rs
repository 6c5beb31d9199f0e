//! The tiers blocks come from, fastest first: the edge cache in memory, the embedded store
//! (pins and the disk cache), the hot pinning node (Kubo RPC or a trustless gateway) and the
//! cold tier of Filecoin storage providers; [`tiered::TieredSource`] puts them in that order,
//! coalesces fetches and streams DAGs. Each implements [`BlockSource`], the interface content
//! declares (`content::source`).

pub mod cache;
pub mod cold;
pub mod import;
pub mod kubo;
pub mod local;
pub mod pins;
pub mod pinset;
pub mod records;
pub mod remote;
pub mod scrub;
pub mod segments;
pub mod space;
pub mod spill;
pub mod tiered;
pub mod trustless;

use cid::Cid;

use crate::ipld::{Block, IDENTITY};

pub use crate::content::select::{DagRequest, DagScope, EntityBytes};
pub use crate::content::source::{BlockSource, DagSink, Interest, TierError};

/// The block of an identity CID, whose bytes are inside the CID itself.
pub fn identity_block(cid: &Cid) -> Option<Block> {
    (cid.hash().code() == IDENTITY)
        .then(|| Block::already_verified(*cid, bytes::Bytes::copy_from_slice(cid.hash().digest())))
}
