//! What a provider's CAR stream may contain: the blocks a walk of the requested
//! `root/path` with its dag-scope and entity-bytes reaches, discovered as their parents arrive.
//!
//! A provider cannot inject unrelated blocks or answer for another root: a block is accepted
//! only when an accepted block (or the request itself, for the root) links to it in a way the
//! walk follows. When a provider fails mid-stream, the blocks still expected tell the next one
//! exactly what is missing ([`DagWalk::resume_requests`]): a file resumes with `entity-bytes` from
//! the first missing byte, a path from the first missing path block.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use cid::Cid;
use multihash::Multihash;

use crate::ipld::codec::{self, DocStep};
use crate::ipld::unixfs::FsNode;
use crate::ipld::{hamt, DAG_CBOR, DAG_JSON, DAG_PB, RAW};
use crate::tiers::{DagRequest, DagScope, EntityBytes};

type Mh = Multihash<64>;
/// Missing children of one parent: its arrival number, the scope to ask with, (link index, CID).
type SubtreeGroup = (u64, DagScope, Vec<(usize, Cid)>);

/// More resume requests than this and the whole request is asked again instead (the blocks
/// already held are skipped as duplicates).
const MAX_RESUME_REQUESTS: usize = 16;
/// More missing children of one parent than this and the parent is asked for instead.
const MAX_CHILD_REQUESTS: usize = 4;

/// Where an expected block sits in the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// On the content path with `rest` segments of the request still to resolve below it;
    /// `shard` is the depth inside a HAMT directory being resolved.
    Path { rest: usize, shard: u32 },
    /// A node of the terminal file whose content starts at byte `start` of that file.
    File { start: u64 },
    /// A sub-shard of the terminal HAMT directory (dag-scope=entity).
    DirShard,
    /// Anything below the terminal element under dag-scope=all.
    All,
}

#[derive(Clone, Copy, Debug)]
struct Expected {
    cid: Cid,
    place: Place,
    /// The block that links here (sequence number of its arrival) and this link's index.
    parent: Option<(Cid, u64, usize)>,
}

/// Why a block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// The block is not one the walk reaches: injected, or from another DAG.
    #[error("unexpected block {0}: not linked from the requested DAG")]
    Unexpected(Cid),
}

/// What accepting a block did.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// A block the walk expected; hand it on.
    New,
    /// Already received (a duplicate, or re-sent on resume); drop it.
    Duplicate,
}

/// The state of one DAG retrieval.
#[derive(Debug)]
pub struct DagWalk {
    req: DagRequest,
    expected: HashMap<Mh, Expected>,
    received: HashSet<Mh>,
    /// Arrival order and place of received blocks that may still have pending children.
    places: HashMap<Mh, (u64, Place)>,
    seq: u64,
    /// Inclusive byte range of the terminal file that is wanted, once its root arrived.
    range: Option<(u64, u64)>,
    /// Whether the terminal file's range was resolved (an empty range expects no children).
    range_known: bool,
}

impl DagWalk {
    /// A walk of `req`; only its root is expected at first.
    pub fn new(req: DagRequest) -> Self {
        let mut expected = HashMap::new();
        expected.insert(
            *req.root.hash(),
            Expected {
                cid: req.root,
                place: Place::Path { rest: 0, shard: 0 },
                parent: None,
            },
        );
        Self {
            req,
            expected,
            received: HashSet::new(),
            places: HashMap::new(),
            seq: 0,
            range: None,
            range_known: false,
        }
    }

    /// The request this walk retrieves.
    pub fn request(&self) -> &DagRequest {
        &self.req
    }

    /// Whether nothing more is expected.
    pub fn complete(&self) -> bool {
        self.expected.is_empty()
    }

    /// The CIDs expected next.
    pub fn pending(&self) -> Vec<Cid> {
        self.expected.values().map(|e| e.cid).collect()
    }

    /// Blocks received so far.
    pub fn received(&self) -> usize {
        self.received.len()
    }

    /// Whether `cid` may be accepted (call before spending time hashing it).
    pub fn check(&self, cid: &Cid) -> Result<Accepted, WalkError> {
        if self.received.contains(cid.hash()) {
            Ok(Accepted::Duplicate)
        } else if self.expecting(cid).is_some() {
            Ok(Accepted::New)
        } else {
            Err(WalkError::Unexpected(*cid))
        }
    }

    /// The expected entry `cid` answers: same multihash and same codec (CIDv0 and CIDv1 of a
    /// dag-pb block are the same block). A provider that re-labels a block with another codec
    /// would make the walk read it as something else: follow links a raw leaf does not have,
    /// or miss the children of a dag-pb node.
    fn expecting(&self, cid: &Cid) -> Option<&Expected> {
        self.expected
            .get(cid.hash())
            .filter(|e| e.cid.codec() == cid.codec())
    }

    /// Records a block whose bytes were verified against `cid`, expecting its children.
    pub fn accept(&mut self, cid: &Cid, data: &Bytes) -> Result<Accepted, WalkError> {
        self.accept_expecting(cid, data, &mut Vec::new())
    }

    /// Like [`DagWalk::accept`], adding the CIDs it now expects because of this block to `newly`.
    pub fn accept_expecting(
        &mut self,
        cid: &Cid,
        data: &Bytes,
        newly: &mut Vec<Cid>,
    ) -> Result<Accepted, WalkError> {
        let mh = *cid.hash();
        if self.received.contains(&mh) {
            return Ok(Accepted::Duplicate);
        }
        if self.expecting(cid).is_none() {
            return Err(WalkError::Unexpected(*cid));
        }
        let Some(exp) = self.expected.remove(&mh) else {
            return Err(WalkError::Unexpected(*cid));
        };
        self.received.insert(mh);
        self.seq += 1;
        let children = self.children(cid, data, exp.place);
        if !children.is_empty() {
            self.places.insert(mh, (self.seq, exp.place));
        }
        for (index, (child, place)) in children.into_iter().enumerate() {
            let cm = *child.hash();
            if self.received.contains(&cm) || self.expected.contains_key(&cm) {
                continue;
            }
            newly.push(child);
            self.expected.insert(
                cm,
                Expected {
                    cid: child,
                    place,
                    parent: Some((*cid, self.seq, index)),
                },
            );
        }
        Ok(Accepted::New)
    }

    /// The links of a just-accepted block that the walk follows, with their places.
    fn children(&mut self, cid: &Cid, data: &Bytes, place: Place) -> Vec<(Cid, Place)> {
        match place {
            Place::Path { rest, shard } => self.path_children(cid, data, rest, shard),
            Place::File { start } => self.file_children(cid, data, start),
            Place::DirShard => match FsNode::decode(cid.codec(), data) {
                Ok(FsNode::HamtShard { links, fanout, .. }) => links
                    .iter()
                    .filter(|l| hamt::entry_name(l.name_str(), fanout).is_none())
                    .map(|l| (l.cid, Place::DirShard))
                    .collect(),
                _ => Vec::new(),
            },
            Place::All => all_links(cid, data),
        }
    }

    fn path_children(
        &mut self,
        cid: &Cid,
        data: &Bytes,
        rest: usize,
        shard: u32,
    ) -> Vec<(Cid, Place)> {
        let segments = &self.req.segments;
        if rest >= segments.len() {
            return self.terminal_children(cid, data);
        }
        let name = segments[rest].as_str();
        match cid.codec() {
            DAG_PB => match FsNode::decode(DAG_PB, data) {
                Ok(FsNode::Directory { links }) => links
                    .iter()
                    .find(|l| l.name_str() == name)
                    .map(|l| {
                        vec![(
                            l.cid,
                            Place::Path {
                                rest: rest + 1,
                                shard: 0,
                            },
                        )]
                    })
                    .unwrap_or_default(),
                Ok(FsNode::HamtShard {
                    links,
                    fanout,
                    hash_type,
                }) => match hamt::step(&links, fanout, hash_type, name, shard) {
                    Ok(hamt::ShardStep::Found(l)) => {
                        vec![(
                            l.cid,
                            Place::Path {
                                rest: rest + 1,
                                shard: 0,
                            },
                        )]
                    }
                    Ok(hamt::ShardStep::Descend(l)) => vec![(
                        l.cid,
                        Place::Path {
                            rest,
                            shard: shard + 1,
                        },
                    )],
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            },
            DAG_CBOR | DAG_JSON => {
                let Ok(doc) = codec::decode_ipld(cid.codec(), data) else {
                    return Vec::new();
                };
                match codec::walk_document(&doc, &segments[rest..]) {
                    DocStep::Link {
                        consumed,
                        cid: next,
                    } => vec![(
                        next,
                        Place::Path {
                            rest: rest + consumed,
                            shard: 0,
                        },
                    )],
                    // The path ends inside this block: it is the terminal entity.
                    DocStep::Value => self.terminal_children(cid, data),
                    DocStep::Missing { .. } => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    fn terminal_children(&mut self, cid: &Cid, data: &Bytes) -> Vec<(Cid, Place)> {
        let unixfs = matches!(cid.codec(), DAG_PB | RAW);
        match (self.req.scope, unixfs) {
            (DagScope::Block, _) => Vec::new(),
            (_, true) => match FsNode::decode(cid.codec(), data) {
                Ok(FsNode::File { size, .. }) => {
                    let wanted = match (self.req.scope, self.req.entity_bytes) {
                        (DagScope::Entity, Some(eb)) => eb.resolve(size),
                        _ => (size > 0).then(|| (0, size - 1)),
                    };
                    self.range = wanted;
                    self.range_known = true;
                    self.file_children(cid, data, 0)
                }
                Ok(FsNode::HamtShard { links, fanout, .. })
                    if self.req.scope == DagScope::Entity =>
                {
                    links
                        .iter()
                        .filter(|l| hamt::entry_name(l.name_str(), fanout).is_none())
                        .map(|l| (l.cid, Place::DirShard))
                        .collect()
                }
                Ok(_) if self.req.scope == DagScope::Entity => Vec::new(),
                _ => all_links(cid, data),
            },
            (DagScope::Entity, false) => Vec::new(),
            (DagScope::All, false) => all_links(cid, data),
        }
    }

    fn file_children(&self, cid: &Cid, data: &Bytes, start: u64) -> Vec<(Cid, Place)> {
        let Ok(FsNode::File {
            data: inline,
            children,
            ..
        }) = FsNode::decode(cid.codec(), data)
        else {
            return Vec::new();
        };
        let Some((from, to)) = self.range else {
            return Vec::new();
        };
        // A child's own sizes need not add up to what its parent said it holds: saturate
        // rather than overflow (offsets past u64::MAX are past any wanted range anyway).
        let mut offset = start.saturating_add(inline.len() as u64);
        let mut out = Vec::new();
        for (child, len) in children {
            // `end` is exclusive. Empty children carry no bytes but are part of the file's DAG.
            let end = offset.saturating_add(len);
            if (len == 0 && offset >= from && offset <= to.saturating_add(1))
                || (offset <= to && end > from)
            {
                out.push((child, Place::File { start: offset }));
            }
            offset = end;
        }
        out
    }

    /// Requests that bring exactly what is still expected, in the order a DFS walk needs it.
    pub fn resume_requests(&self) -> Vec<DagRequest> {
        if self.expected.is_empty() {
            return Vec::new();
        }
        let whole = || vec![self.req.clone()];
        // Pending file children grouped by parent: one entity-bytes request per parent.
        let mut file_groups: HashMap<Cid, (u64, u64)> = HashMap::new(); // parent -> (seq, min start)
        let mut singles: Vec<((u64, usize), DagRequest)> = Vec::new();
        // Pending whole subtrees grouped by parent: (seq, scope) -> children (index, cid).
        let mut subtree_groups: HashMap<Cid, SubtreeGroup> = HashMap::new();
        for exp in self.expected.values() {
            match (exp.place, exp.parent) {
                (Place::Path { .. }, _) | (_, None) => return whole(),
                (Place::File { start }, Some((parent, seq, _))) => {
                    let e = file_groups.entry(parent).or_insert((seq, start));
                    e.1 = e.1.min(start);
                }
                (place @ (Place::DirShard | Place::All), Some((parent, seq, index))) => {
                    let scope = if place == Place::DirShard {
                        DagScope::Entity
                    } else {
                        DagScope::All
                    };
                    subtree_groups
                        .entry(parent)
                        .or_insert((seq, scope, Vec::new()))
                        .2
                        .push((index, exp.cid));
                }
            }
        }
        let subtree = |root: Cid, scope: DagScope| DagRequest {
            root,
            segments: Vec::new(),
            scope,
            entity_bytes: None,
        };
        for (parent, (seq, scope, children)) in subtree_groups {
            if children.len() > MAX_CHILD_REQUESTS {
                // Ask for the parent again: its finished children come back as duplicates,
                // which costs bandwidth but keeps the number of requests at the DAG's depth.
                singles.push(((seq, 0), subtree(parent, scope)));
            } else {
                for (index, cid) in children {
                    singles.push(((seq, index), subtree(cid, scope)));
                }
            }
        }
        let (from, to) = match self.range {
            Some(r) => r,
            None if file_groups.is_empty() => (0, 0),
            None => return whole(),
        };
        for (parent, (seq, first_missing)) in file_groups {
            let Some(&(
                _,
                Place::File {
                    start: parent_start,
                },
            )) = self.places.get(parent.hash())
            else {
                // The terminal file itself (start 0) is recorded as a path place.
                singles.push((
                    (seq, 0),
                    file_request(parent, first_missing.max(from), to, 0),
                ));
                continue;
            };
            singles.push((
                (seq, 0),
                file_request(parent, first_missing.max(from), to, parent_start),
            ));
        }
        if singles.len() > MAX_RESUME_REQUESTS {
            return whole();
        }
        // DFS order: the most recently arrived parent's children come next, in link order.
        singles.sort_by(|a, b| b.0 .0.cmp(&a.0 .0).then(a.0 .1.cmp(&b.0 .1)));
        singles.into_iter().map(|(_, r)| r).collect()
    }
}

/// An entity-bytes request for the part `[from, to]` of the terminal file that lies below the
/// file node `node`, whose content starts at byte `node_start` of that file.
fn file_request(node: Cid, from: u64, to: u64, node_start: u64) -> DagRequest {
    DagRequest {
        root: node,
        segments: Vec::new(),
        scope: DagScope::Entity,
        entity_bytes: Some(EntityBytes {
            from: from.saturating_sub(node_start) as i64,
            to: Some(to.saturating_sub(node_start) as i64),
        }),
    }
}

fn all_links(cid: &Cid, data: &Bytes) -> Vec<(Cid, Place)> {
    codec::links(cid, data)
        .unwrap_or_default()
        .into_iter()
        .map(|l| (l, Place::All))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::builder::{directory, FileBuilder, CHUNK_SIZE};
    use crate::ipld::{cid_v1_sha256, Block};

    /// `dir/{a.bin (4 leaves + root), b.txt}` and every block, children before parents.
    fn tree() -> (Cid, Cid, Vec<Block>) {
        let mut blocks = Vec::new();
        let mut f = FileBuilder::new();
        let data: Vec<u8> = (0..CHUNK_SIZE * 3 + 100).map(|i| (i % 251) as u8).collect();
        f.write(&data, &mut blocks).unwrap();
        let file = f.finish(&mut blocks).unwrap();
        let mut s = FileBuilder::new();
        s.write(b"small", &mut blocks).unwrap();
        let small = s.finish(&mut blocks).unwrap();
        let dir = directory(
            vec![("a.bin".into(), file), ("b.txt".into(), small)],
            &mut blocks,
        )
        .unwrap();
        (dir.cid, file.cid, blocks)
    }

    fn find<'a>(blocks: &'a [Block], cid: &Cid) -> &'a Block {
        blocks.iter().find(|b| b.cid() == cid).unwrap()
    }

    fn req(root: Cid, path: &[&str], scope: DagScope, eb: Option<EntityBytes>) -> DagRequest {
        DagRequest {
            root,
            segments: path.iter().map(|s| s.to_string()).collect(),
            scope,
            entity_bytes: eb,
        }
    }

    #[test]
    fn a_path_expects_only_the_blocks_it_walks() {
        let (dir, file, blocks) = tree();
        let mut w = DagWalk::new(req(dir, &["a.bin"], DagScope::Entity, None));
        let stranger = cid_v1_sha256(RAW, b"not in this DAG");
        assert_eq!(w.check(&stranger), Err(WalkError::Unexpected(stranger)));
        assert_eq!(
            w.accept(&dir, find(&blocks, &dir).data()),
            Ok(Accepted::New)
        );
        // The sibling b.txt is not on the path.
        let b_txt = blocks
            .iter()
            .find(|b| b.data().as_ref() == b"small")
            .unwrap();
        assert!(w.check(b_txt.cid()).is_err());
        assert_eq!(
            w.accept(&file, find(&blocks, &file).data()),
            Ok(Accepted::New)
        );
        // Re-sent blocks are duplicates, not lies.
        assert_eq!(w.check(&dir), Ok(Accepted::Duplicate));
        let leaves: Vec<&Block> = blocks.iter().filter(|b| b.cid().codec() == RAW).collect();
        for leaf in &leaves[..4] {
            assert_eq!(w.accept(leaf.cid(), leaf.data()), Ok(Accepted::New));
        }
        assert!(w.complete());
        assert!(w.resume_requests().is_empty());
    }

    #[test]
    fn a_block_relabelled_with_another_codec_is_unexpected() {
        // Found by the `provider_stream` fuzz target: the walk keyed blocks by multihash only,
        // so a raw leaf sent as dag-pb (or a dag-pb node sent as raw) was taken and read with
        // the provider's codec.
        let (dir, file, blocks) = tree();
        let mut w = DagWalk::new(req(dir, &["a.bin"], DagScope::Entity, None));
        let as_raw = Cid::new_v1(RAW, *dir.hash());
        assert_eq!(w.check(&as_raw), Err(WalkError::Unexpected(as_raw)));
        assert_eq!(
            w.accept(&as_raw, find(&blocks, &dir).data()),
            Err(WalkError::Unexpected(as_raw))
        );
        // CIDv0 is the same dag-pb block as its CIDv1.
        let v0 = Cid::new_v0(*dir.hash()).unwrap();
        assert_eq!(w.check(&v0), Ok(Accepted::New));
        w.accept(&dir, find(&blocks, &dir).data()).unwrap();
        w.accept(&file, find(&blocks, &file).data()).unwrap();
        let leaf = blocks.iter().find(|b| b.cid().codec() == RAW).unwrap();
        let as_pb = Cid::new_v1(DAG_PB, *leaf.cid().hash());
        assert_eq!(w.check(&as_pb), Err(WalkError::Unexpected(as_pb)));
        assert_eq!(w.check(leaf.cid()), Ok(Accepted::New));
    }

    #[test]
    fn file_offsets_past_u64_max_saturate() {
        use crate::ipld::dagpb::{PbLink, PbNode};
        use crate::ipld::unixfs::{Data, DataType};
        use prost::Message;
        let file = |inline: &[u8], sizes: Vec<u64>, links: Vec<Cid>| {
            let data = Data {
                r#type: DataType::File as i32,
                data: Some(Bytes::copy_from_slice(inline)),
                blocksizes: sizes,
                ..Default::default()
            };
            let node = PbNode {
                links: links
                    .into_iter()
                    .map(|cid| PbLink {
                        cid,
                        name: None,
                        tsize: None,
                    })
                    .collect(),
                data: Some(Bytes::from(data.encode_to_vec())),
            };
            let bytes = node.encode();
            (cid_v1_sha256(DAG_PB, &bytes), bytes)
        };
        let leaf = cid_v1_sha256(RAW, b"aaa");
        // The child claims 5 bytes but holds 100 inline and a 10-byte child after them.
        let (child, child_bytes) = file(&[7; 100], vec![10], vec![leaf]);
        let (parent, parent_bytes) = file(b"", vec![u64::MAX - 5, 5], vec![leaf, child]);
        let mut w = DagWalk::new(req(parent, &[], DagScope::All, None));
        w.accept(&parent, &parent_bytes).unwrap();
        assert_eq!(w.check(&child), Ok(Accepted::New));
        assert_eq!(w.accept(&child, &child_bytes), Ok(Accepted::New));
        let _ = w.resume_requests();
    }

    #[test]
    fn entity_bytes_expect_only_covering_leaves_and_resume_from_the_first_missing_byte() {
        let (_, file, blocks) = tree();
        let leaves: Vec<&Block> = blocks.iter().filter(|b| b.cid().codec() == RAW).collect();
        let from = CHUNK_SIZE as i64 + 10;
        let eb = EntityBytes {
            from,
            to: Some(3 * CHUNK_SIZE as i64 + 5),
        };
        let mut w = DagWalk::new(req(file, &[], DagScope::Entity, Some(eb)));
        w.accept(&file, find(&blocks, &file).data()).unwrap();
        assert!(
            w.check(leaves[0].cid()).is_err(),
            "leaf 0 is outside the range"
        );
        w.accept(leaves[1].cid(), leaves[1].data()).unwrap();
        // The provider fails here: leaves 2 and 3 are missing.
        let resume = w.resume_requests();
        assert_eq!(resume.len(), 1);
        assert_eq!(resume[0].root, file);
        assert_eq!(
            resume[0].entity_bytes,
            Some(EntityBytes {
                from: 2 * CHUNK_SIZE as i64,
                to: Some(3 * CHUNK_SIZE as i64 + 5)
            })
        );
        w.accept(leaves[2].cid(), leaves[2].data()).unwrap();
        w.accept(leaves[3].cid(), leaves[3].data()).unwrap();
        assert!(w.complete());
    }

    #[test]
    fn whole_dags_resume_per_missing_subtree_and_paths_restart() {
        let (dir, file, blocks) = tree();
        let mut w = DagWalk::new(req(dir, &[], DagScope::All, None));
        w.accept(&dir, find(&blocks, &dir).data()).unwrap();
        w.accept(&file, find(&blocks, &file).data()).unwrap();
        let resume = w.resume_requests();
        // The file's four leaves (one file request under the terminal) and b.txt.
        assert!(resume
            .iter()
            .any(|r| r.root != file && r.scope == DagScope::All));
        assert!(resume.len() <= MAX_RESUME_REQUESTS);
        // Nothing received yet on a path: the request is asked again as it was.
        let w = DagWalk::new(req(dir, &["a.bin"], DagScope::Entity, None));
        assert_eq!(w.resume_requests(), vec![w.request().clone()]);
        // Block scope: the terminal alone.
        let mut w = DagWalk::new(req(dir, &["a.bin"], DagScope::Block, None));
        w.accept(&dir, find(&blocks, &dir).data()).unwrap();
        w.accept(&file, find(&blocks, &file).data()).unwrap();
        assert!(w.complete());
    }
}
