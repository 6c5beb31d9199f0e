//! Path resolution: `/ipfs/{root}/a/b` to the CID at the end, collecting the blocks traversed
//! (a CAR response must start with them) and the logical root of every segment.

use cid::Cid;

use super::select::{path_step, PathStep};
use super::source::BlockSource;
use super::{fetch, ContentError};
use crate::ipld::Block;

/// The outcome of resolving a content path.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The CID the path starts from.
    pub root: Cid,
    /// The CID the path ends at.
    pub target: Cid,
    /// Every block read to get from `root` to `target`, in order, excluding `target`'s block.
    pub path_blocks: Vec<Block>,
    /// The CID each prefix of the path resolves to (`root` first): the `X-Ipfs-Roots` list.
    pub roots: Vec<Cid>,
    /// Segments left over inside a dag-cbor / dag-json document that end on a non-link value.
    pub remainder: Vec<String>,
}

/// Resolves `segments` (already percent-decoded) starting at `root`, one [`path_step`] per
/// block (the rule the selection of every request follows).
pub async fn resolve(
    src: &dyn BlockSource,
    root: Cid,
    segments: &[String],
) -> Result<Resolved, ContentError> {
    let mut out = Resolved {
        root,
        target: root,
        path_blocks: Vec::new(),
        roots: vec![root],
        remainder: Vec::new(),
    };
    // The block being read: the current path element, or a sub-shard of a HAMT directory.
    let mut cur = root;
    let mut shard = 0;
    let mut i = 0;
    while i < segments.len() {
        let block = fetch(src, &cur).await?;
        match path_step(&cur, block.data(), &segments[i..], shard)? {
            PathStep::Link { consumed, cid } => {
                out.path_blocks.push(block);
                // Inside a document, the segments before the link name the document itself.
                out.roots.extend(std::iter::repeat_n(cur, consumed - 1));
                out.roots.push(cid);
                out.target = cid;
                cur = cid;
                shard = 0;
                i += consumed;
            }
            PathStep::Shard(next) => {
                out.path_blocks.push(block);
                cur = next;
                shard += 1;
            }
            PathStep::Value => {
                out.remainder = segments[i..].to_vec();
                return Ok(out);
            }
            PathStep::Missing { index } => {
                return Err(ContentError::NoLink {
                    segment: segments[i + index].clone(),
                    parent: out.target,
                })
            }
        }
    }
    Ok(out)
}
