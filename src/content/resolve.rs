//! Path resolution: `/ipfs/{root}/a/b` to the CID at the end, collecting the blocks traversed
//! (a CAR response must start with them) and the logical root of every segment.

use cid::Cid;

use super::{fetch, ContentError};
use crate::ipld::codec::{decode_ipld, walk_document, DocStep};
use crate::ipld::hamt::{self, ShardStep};
use crate::ipld::unixfs::FsNode;
use crate::ipld::{Block, DAG_CBOR, DAG_JSON, DAG_PB};
use crate::tiers::BlockSource;

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

/// Resolves `segments` (already percent-decoded) starting at `root`.
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
    let mut i = 0;
    while i < segments.len() {
        let cur = out.target;
        let block = fetch(src, &cur).await?;
        match cur.codec() {
            DAG_PB => {
                let node = FsNode::decode(DAG_PB, block.data()).map_err(|e| (cur, e))?;
                out.path_blocks.push(block);
                let next = match node {
                    FsNode::Directory { links } => links
                        .into_iter()
                        .find(|l| l.name_str() == segments[i])
                        .map(|l| l.cid),
                    FsNode::HamtShard {
                        links,
                        fanout,
                        hash_type,
                    } => {
                        hamt_lookup(
                            src,
                            &mut out.path_blocks,
                            links,
                            fanout,
                            hash_type,
                            &segments[i],
                        )
                        .await?
                    }
                    _ => None,
                };
                let next = next.ok_or_else(|| ContentError::NoLink {
                    segment: segments[i].clone(),
                    parent: cur,
                })?;
                out.target = next;
                out.roots.push(next);
                i += 1;
            }
            DAG_CBOR | DAG_JSON => {
                let doc = decode_ipld(cur.codec(), block.data()).map_err(|e| (cur, e))?;
                match walk_document(&doc, &segments[i..]) {
                    DocStep::Link { consumed, cid } => {
                        out.path_blocks.push(block);
                        out.roots.extend(std::iter::repeat_n(cur, consumed - 1));
                        out.roots.push(cid);
                        out.target = cid;
                        i += consumed;
                    }
                    DocStep::Value => {
                        out.remainder = segments[i..].to_vec();
                        return Ok(out);
                    }
                    DocStep::Missing { index } => {
                        return Err(ContentError::NoLink {
                            segment: segments[i + index].clone(),
                            parent: cur,
                        })
                    }
                }
            }
            _ => {
                return Err(ContentError::NoLink {
                    segment: segments[i].clone(),
                    parent: cur,
                })
            }
        }
    }
    Ok(out)
}

/// Follows a name through HAMT shards, recording the shard blocks it reads.
async fn hamt_lookup(
    src: &dyn BlockSource,
    path_blocks: &mut Vec<Block>,
    mut links: Vec<crate::ipld::dagpb::PbLink>,
    mut fanout: u64,
    mut hash_type: u64,
    name: &str,
) -> Result<Option<Cid>, ContentError> {
    let mut depth = 0;
    loop {
        let shard_cid = match hamt::step(&links, fanout, hash_type, name, depth)
            .map_err(|e| ContentError::Unsupported(e.to_string()))?
        {
            ShardStep::Found(link) => return Ok(Some(link.cid)),
            ShardStep::Absent => return Ok(None),
            ShardStep::Descend(link) => link.cid,
        };
        let block = fetch(src, &shard_cid).await?;
        match FsNode::decode(shard_cid.codec(), block.data()).map_err(|e| (shard_cid, e))? {
            FsNode::HamtShard {
                links: l,
                fanout: f,
                hash_type: h,
            } => {
                links = l;
                fanout = f;
                hash_type = h;
            }
            _ => {
                return Err(ContentError::malformed(
                    &shard_cid,
                    "HAMT link to a non-shard node",
                ))
            }
        }
        path_blocks.push(block);
        depth += 1;
    }
}
