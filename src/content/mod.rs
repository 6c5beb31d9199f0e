//! Content: resolving `/ipfs/{cid}/path` through UnixFS directories (plain and HAMT) and
//! dag-cbor / dag-json documents, and choosing the blocks a request reaches (dag-scope,
//! entity-bytes: [`select`], the one selection rule). Knows nothing of HTTP or of where blocks
//! come from: it reads them through [`source::BlockSource`], which it declares and the tiers
//! implement.

pub mod dag;
pub mod entity;
pub mod listing;
pub mod resolve;
pub mod select;
pub mod selector;
pub mod source;
pub mod tree;
pub mod unixfs_reader;

use cid::Cid;

use crate::ipld::codec::CodecError;
use crate::ipld::unixfs::UnixFsError;
use source::{BlockSource, TierError};

pub use resolve::{resolve, Resolved};

use crate::ipld::hamt;
use crate::ipld::unixfs::FsNode;

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
    pub(crate) fn malformed(cid: &Cid, e: impl std::fmt::Display) -> Self {
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

/// One entry of a UnixFS directory.
#[derive(Clone, Debug)]
pub struct DirEntry {
    /// Entry name.
    pub name: String,
    /// Target CID.
    pub cid: Cid,
    /// Cumulative DAG size, when recorded.
    pub size: Option<u64>,
}

/// The entries of a plain or HAMT directory node, in stored order (HAMT: shard order). Reads
/// every shard of a HAMT, none of the entries.
pub async fn list_directory(
    src: &dyn BlockSource,
    node: FsNode,
) -> Result<Vec<DirEntry>, ContentError> {
    let (links, fanout) = match node {
        FsNode::Directory { links } => {
            return Ok(links
                .into_iter()
                .map(|l| DirEntry {
                    name: l.name.unwrap_or_default(),
                    cid: l.cid,
                    size: l.tsize,
                })
                .collect())
        }
        FsNode::HamtShard { links, fanout, .. } => (links, fanout),
        _ => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    // Depth-first over shards; a stack of iterators keeps the stored order.
    let mut stack = vec![links.into_iter()];
    while let Some(top) = stack.last_mut() {
        let Some(l) = top.next() else {
            stack.pop();
            continue;
        };
        match hamt::entry_name(l.name_str(), fanout) {
            Some(name) => out.push(DirEntry {
                name: name.to_string(),
                cid: l.cid,
                size: l.tsize,
            }),
            None => {
                let block = fetch(src, &l.cid).await?;
                match FsNode::decode(l.cid.codec(), block.data()).map_err(|e| (l.cid, e))? {
                    FsNode::HamtShard { links, .. } => stack.push(links.into_iter()),
                    _ => {
                        return Err(ContentError::malformed(
                            &l.cid,
                            "HAMT link to a non-shard node",
                        ))
                    }
                }
            }
        }
    }
    Ok(out)
}
