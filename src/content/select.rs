//! The one selection rule: which children of a block a request reaches. A request names a root,
//! a path below it, a `dag-scope` and an `entity-bytes` range; [`reach`] answers, for one block
//! at one [`Place`] of that request, which of its links the request follows and where each
//! child sits. Everything that walks a request uses it: the response walk of a CAR (and of
//! every DAG a response reads, [`super::selector`]), path resolution ([`path_step`]), and the
//! verified walk of a provider's CAR stream (`tiers::cold::walk`), so that what a gateway sends
//! and what it accepts from a provider can never disagree.
//!
//! Pure: bytes in, links out; no I/O and no state.

use cid::Cid;

use super::ContentError;
use crate::ipld::codec::{self, DocStep};
use crate::ipld::hamt::{self, ShardStep};
use crate::ipld::unixfs::FsNode;
use crate::ipld::{DAG_CBOR, DAG_JSON, DAG_PB, RAW};

/// The `dag-scope` of a CAR request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DagScope {
    /// Only the terminal block.
    Block,
    /// What is needed to use the terminal entity (a whole file, a directory's own blocks).
    Entity,
    /// The whole DAG under the terminal element.
    #[default]
    All,
}

impl DagScope {
    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            DagScope::Block => "block",
            DagScope::Entity => "entity",
            DagScope::All => "all",
        }
    }
}

/// An `entity-bytes=from:to` range; negative values count from the end, `to: None` is `*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntityBytes {
    /// First byte (inclusive).
    pub from: i64,
    /// Last byte (inclusive), or `None` for the end.
    pub to: Option<i64>,
}

impl EntityBytes {
    /// Inclusive byte range within a file of `size` bytes, or `None` when it selects nothing.
    pub fn resolve(&self, size: u64) -> Option<(u64, u64)> {
        let size = size as i128;
        let from = if self.from < 0 {
            (size + self.from as i128).max(0)
        } else {
            self.from as i128
        };
        let to = match self.to {
            None => size - 1,
            Some(t) if t < 0 => size + t as i128,
            Some(t) => (t as i128).min(size - 1),
        };
        (from <= to && from < size && to >= 0).then_some((from as u64, to as u64))
    }
}

/// A DAG-shaped request: what a response will read below a root, so that a remote tier can
/// be asked for all of it as one CAR stream instead of block by block.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DagRequest {
    /// Root CID of the content path.
    pub root: Cid,
    /// Path segments below the root.
    pub segments: Vec<String>,
    /// The dag-scope the response needs.
    pub scope: DagScope,
    /// The entity-bytes range, if any.
    pub entity_bytes: Option<EntityBytes>,
}

impl DagRequest {
    /// The scope the walk applies: an `entity-bytes` range asks for part of an entity.
    pub fn effective_scope(&self) -> DagScope {
        if self.entity_bytes.is_some() {
            DagScope::Entity
        } else {
            self.scope
        }
    }
}

/// Where a block sits in the walk of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// On the content path with `rest` segments of the request resolved above it (the
    /// terminal element once `rest` is the number of segments); `shard` is the depth inside a
    /// HAMT directory being resolved.
    Path {
        /// Segments consumed before this block.
        rest: usize,
        /// Depth inside the HAMT directory the next segment is looked up in.
        shard: u32,
    },
    /// A node of the terminal file whose content starts at byte `start` of that file; `want`
    /// is the inclusive byte range of the file the request needs (`(0, u64::MAX)`: all of it).
    File {
        /// Offset of this node's first byte in the terminal file.
        start: u64,
        /// Bytes of the file below this node, as its parent says.
        len: u64,
        /// Wanted bytes of the terminal file, inclusive.
        want: (u64, u64),
    },
    /// A sub-shard of the terminal HAMT directory (dag-scope=entity).
    DirShard,
    /// Anything below the terminal element under dag-scope=all.
    All,
}

impl Place {
    /// The place of a request's root.
    pub const ROOT: Place = Place::Path { rest: 0, shard: 0 };

    /// Whether a block reaches the same children at both places: a file node wanted whole
    /// reaches all of them, whatever its offset (a file that repeats a node, as files of
    /// repeated content do, places it at many offsets).
    pub fn same_reach(&self, other: &Place) -> bool {
        self == other || (self.wanted_whole() && other.wanted_whole())
    }

    /// A file node all of whose bytes the request wants (so it reaches all its children).
    pub fn wanted_whole(&self) -> bool {
        match *self {
            Place::File {
                start,
                len,
                want: (from, to),
            } => start >= from && start.saturating_add(len).saturating_sub(1) <= to,
            _ => false,
        }
    }
}

/// The whole of a file, as a wanted range.
pub const WHOLE_FILE: (u64, u64) = (0, u64::MAX);

/// One step of path resolution in one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathStep {
    /// `consumed` segments lead to `cid` (one for a directory entry, more inside a document).
    Link {
        /// Segments used in this block.
        consumed: usize,
        /// Where they lead.
        cid: Cid,
    },
    /// The next segment is in this HAMT sub-shard, one level down.
    Shard(Cid),
    /// The path ends inside this document on a value that is not a link.
    Value,
    /// Segment number `index` (counted from the first one looked up here) names nothing.
    Missing {
        /// Index of the missing segment among the ones looked up here.
        index: usize,
    },
}

/// Looks `segments` up in the block `cid` / `data`, which sits `shard` levels deep in a HAMT
/// directory when `shard > 0`.
pub fn path_step(
    cid: &Cid,
    data: &bytes::Bytes,
    segments: &[String],
    shard: u32,
) -> Result<PathStep, ContentError> {
    let Some(name) = segments.first() else {
        return Ok(PathStep::Value);
    };
    match cid.codec() {
        DAG_PB => match FsNode::decode(DAG_PB, data).map_err(|e| (*cid, e))? {
            FsNode::Directory { links } if shard == 0 => Ok(links
                .iter()
                .find(|l| l.name_str() == name)
                .map_or(PathStep::Missing { index: 0 }, |l| PathStep::Link {
                    consumed: 1,
                    cid: l.cid,
                })),
            FsNode::HamtShard {
                links,
                fanout,
                hash_type,
            } => match hamt::step(&links, fanout, hash_type, name, shard)
                .map_err(|e| ContentError::Unsupported(e.to_string()))?
            {
                ShardStep::Found(l) => Ok(PathStep::Link {
                    consumed: 1,
                    cid: l.cid,
                }),
                ShardStep::Descend(l) => Ok(PathStep::Shard(l.cid)),
                ShardStep::Absent => Ok(PathStep::Missing { index: 0 }),
            },
            _ if shard > 0 => Err(ContentError::malformed(
                cid,
                "HAMT link to a non-shard node",
            )),
            _ => Ok(PathStep::Missing { index: 0 }),
        },
        DAG_CBOR | DAG_JSON => {
            let doc = codec::decode_ipld(cid.codec(), data).map_err(|e| (*cid, e))?;
            Ok(match codec::walk_document(&doc, segments) {
                DocStep::Link { consumed, cid } => PathStep::Link { consumed, cid },
                DocStep::Value => PathStep::Value,
                DocStep::Missing { index } => PathStep::Missing { index },
            })
        }
        _ => Ok(PathStep::Missing { index: 0 }),
    }
}

/// The children of the block `cid` / `data`, reached at `place` by `req`, that `req` selects,
/// each with its own place, in the order a depth-first walk visits them. Errors are blocks that
/// do not decode the way the walk must read them (a response fails on them; a stream validator
/// may simply expect nothing below them).
pub fn reach(
    req: &DagRequest,
    cid: &Cid,
    data: &bytes::Bytes,
    place: Place,
) -> Result<Vec<(Cid, Place)>, ContentError> {
    // Raw blocks link to nothing, wherever they are (most blocks of most DAGs are raw leaves).
    if cid.codec() == RAW {
        return Ok(Vec::new());
    }
    match place {
        Place::Path { rest, shard } if rest < req.segments.len() => {
            Ok(match path_step(cid, data, &req.segments[rest..], shard)? {
                PathStep::Link { consumed, cid } => vec![(
                    cid,
                    Place::Path {
                        rest: rest + consumed,
                        shard: 0,
                    },
                )],
                PathStep::Shard(next) => vec![(
                    next,
                    Place::Path {
                        rest,
                        shard: shard + 1,
                    },
                )],
                // The path ends inside this document: it is the terminal entity.
                PathStep::Value => terminal(req, cid, data)?,
                PathStep::Missing { .. } => Vec::new(),
            })
        }
        Place::Path { .. } => terminal(req, cid, data),
        Place::File { start, want, .. } => file_children(req, cid, data, start, want),
        Place::DirShard => match FsNode::decode(cid.codec(), data).map_err(|e| (*cid, e))? {
            FsNode::HamtShard { links, fanout, .. } => Ok(links
                .iter()
                .filter(|l| hamt::entry_name(l.name_str(), fanout).is_none())
                .map(|l| (l.cid, Place::DirShard))
                .collect()),
            _ => Err(ContentError::malformed(
                cid,
                "HAMT link to a non-shard node",
            )),
        },
        Place::All => all_links(cid, data),
    }
}

/// The children of the terminal element.
fn terminal(
    req: &DagRequest,
    cid: &Cid,
    data: &bytes::Bytes,
) -> Result<Vec<(Cid, Place)>, ContentError> {
    match req.effective_scope() {
        DagScope::Block => Ok(Vec::new()),
        // A file is walked as a file even here, so that a stream cut short can resume from
        // its first missing byte; every child of every node is still reached.
        DagScope::All if cid.codec() == DAG_PB => file_children(req, cid, data, 0, WHOLE_FILE),
        DagScope::All => all_links(cid, data),
        // A document's entity is the document block itself.
        DagScope::Entity if cid.codec() != DAG_PB && cid.codec() != RAW => Ok(Vec::new()),
        DagScope::Entity => match FsNode::decode(cid.codec(), data).map_err(|e| (*cid, e))? {
            FsNode::File { size, .. } => {
                let want = match req.entity_bytes {
                    None => WHOLE_FILE,
                    Some(eb) => match eb.resolve(size) {
                        Some(range) => range,
                        // The range selects no byte: the file's root alone.
                        None => return Ok(Vec::new()),
                    },
                };
                file_children(req, cid, data, 0, want)
            }
            FsNode::HamtShard { links, fanout, .. } => Ok(links
                .iter()
                .filter(|l| hamt::entry_name(l.name_str(), fanout).is_none())
                .map(|l| (l.cid, Place::DirShard))
                .collect()),
            FsNode::Directory { .. } | FsNode::Symlink { .. } => Ok(Vec::new()),
        },
    }
}

/// The children of a file node starting at byte `start` of the terminal file that hold bytes
/// of `want`. An empty child next to the range is part of it (it carries no bytes, but a
/// verifying client expects the file's DAG as the producer walked it). Under dag-scope=all a
/// node that is not a UnixFS file node is walked by its links, whatever it is.
fn file_children(
    req: &DagRequest,
    cid: &Cid,
    data: &bytes::Bytes,
    start: u64,
    (from, to): (u64, u64),
) -> Result<Vec<(Cid, Place)>, ContentError> {
    let whole_dag = req.effective_scope() == DagScope::All;
    let (inline, children) = match FsNode::decode(cid.codec(), data) {
        Ok(FsNode::File {
            data: inline,
            children,
            ..
        }) => (inline, children),
        _ if whole_dag => return all_links(cid, data),
        Ok(_) => return Ok(Vec::new()),
        Err(e) => return Err((*cid, e).into()),
    };
    // A child's own sizes need not add up to what its parent said it holds: saturate rather
    // than overflow (offsets past u64::MAX are past any wanted range anyway).
    let mut offset = start.saturating_add(inline.len() as u64);
    let mut out = Vec::new();
    for (child, len) in children {
        // `end` is exclusive.
        let end = offset.saturating_add(len);
        if (len == 0 && offset >= from && offset <= to.saturating_add(1))
            || (offset <= to && end > from)
        {
            out.push((
                child,
                Place::File {
                    start: offset,
                    len,
                    want: (from, to),
                },
            ));
        }
        offset = end;
    }
    Ok(out)
}

/// Every link of a block, whatever its codec (codecs without links have none).
fn all_links(cid: &Cid, data: &bytes::Bytes) -> Result<Vec<(Cid, Place)>, ContentError> {
    match codec::links(cid, data) {
        Ok(links) => Ok(links.into_iter().map(|l| (l, Place::All)).collect()),
        Err(codec::CodecError::Unsupported(_)) => Ok(Vec::new()),
        Err(e) => Err((*cid, e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_bytes_resolve_like_the_conformance_cases() {
        let eb = |from, to| EntityBytes { from, to };
        assert_eq!(eb(0, None).resolve(1026), Some((0, 1025)));
        assert_eq!(eb(512, Some(1023)).resolve(1026), Some((512, 1023)));
        assert_eq!(eb(512, Some(-256)).resolve(1026), Some((512, 770)));
        assert_eq!(eb(-5, None).resolve(1026), Some((1021, 1025)));
        assert_eq!(eb(-9999, None).resolve(1026), Some((0, 1025)));
        assert_eq!(eb(-9999, Some(-3)).resolve(1026), Some((0, 1023)));
        assert_eq!(eb(0, Some(0)).resolve(1026), Some((0, 0)));
        assert_eq!(eb(2000, None).resolve(1026), None);
        assert_eq!(eb(0, None).resolve(0), None);
        assert_eq!(eb(0, Some(99999)).resolve(10), Some((0, 9)));
    }
}
