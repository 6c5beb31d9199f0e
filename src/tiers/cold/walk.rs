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

use crate::content::select::{reach, DagRequest, DagScope, EntityBytes, Place, WHOLE_FILE};
use crate::ipld::DAG_PB;

type Mh = Multihash<64>;
/// Missing children of one parent: its arrival number, the scope to ask with, (link index, CID).
type SubtreeGroup = (u64, DagScope, Vec<(usize, Cid)>);
/// Missing children of one file node: its arrival number, the first missing byte, the wanted
/// range of the terminal file.
type FileGroup = (u64, u64, (u64, u64));

/// More resume requests than this and the whole request is asked again instead (the blocks
/// already held are skipped as duplicates).
const MAX_RESUME_REQUESTS: usize = 16;
/// More missing children of one parent than this and the parent is asked for instead.
const MAX_CHILD_REQUESTS: usize = 4;

#[derive(Clone, Debug)]
struct Expected {
    cid: Cid,
    place: Place,
    /// Other places the block is reached at: a file node that occurs twice in a file (the
    /// same bytes at two offsets) holds other wanted bytes at each.
    more: Vec<Place>,
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
    /// Received file nodes that straddle an end of the byte range, with the places they were
    /// expanded at, kept to expand them again when the file reaches them at another offset (a
    /// stream without duplicates sends such a node once).
    file_nodes: HashMap<Mh, (Bytes, Vec<Place>)>,
    seq: u64,
}

impl DagWalk {
    /// A walk of `req`; only its root is expected at first.
    pub fn new(req: DagRequest) -> Self {
        let mut expected = HashMap::new();
        expected.insert(
            *req.root.hash(),
            Expected {
                cid: req.root,
                place: Place::ROOT,
                more: Vec::new(),
                parent: None,
            },
        );
        Self {
            req,
            expected,
            received: HashSet::new(),
            places: HashMap::new(),
            file_nodes: HashMap::new(),
            seq: 0,
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
        let mut has_children = false;
        for place in std::iter::once(exp.place).chain(exp.more) {
            has_children |= self.expand(cid, data, place, newly);
        }
        if has_children {
            self.places.insert(mh, (self.seq, exp.place));
        }
        Ok(Accepted::New)
    }

    /// Expects the children `req` reaches below the received block `cid` at `place`; a child
    /// already received is expanded again when it is a file node reached at another offset.
    /// Whether the block itself has children there.
    fn expand(&mut self, cid: &Cid, data: &Bytes, place: Place, newly: &mut Vec<Cid>) -> bool {
        // Received nodes to expand again; empty (and unallocated) for almost every block.
        let mut again = Vec::new();
        let has_children = self.expand_one(cid, data, place, newly, &mut again);
        while let Some((cid, data, place)) = again.pop() {
            self.expand_one(&cid, &data, place, newly, &mut again);
        }
        has_children
    }

    /// One block of [`DagWalk::expand`]; received file nodes it reaches at a new place go to
    /// `again`. Whether the block has children at `place`.
    fn expand_one(
        &mut self,
        cid: &Cid,
        data: &Bytes,
        place: Place,
        newly: &mut Vec<Cid>,
        again: &mut Vec<(Cid, Bytes, Place)>,
    ) -> bool {
        // A block that does not decode the way the walk reads it expects nothing below it;
        // the response that reads it fails on it, not the stream.
        let children = reach(&self.req, cid, data, place).unwrap_or_default();
        // A file node that straddles an end of the range reaches only some of its children:
        // kept (even with none wanted here) to expand it again where the file repeats it at
        // another offset. A node wanted whole reached all of them already, so nothing is kept
        // for it, and without a byte range nothing is kept at all: at most the nodes along the
        // range's two ends.
        if matches!(place, Place::File { .. }) && cid.codec() == DAG_PB && !place.wanted_whole() {
            let (_, expanded) = self
                .file_nodes
                .entry(*cid.hash())
                .or_insert_with(|| (data.clone(), Vec::new()));
            expanded.push(place);
        }
        if children.is_empty() {
            return false;
        }
        for (index, (child, child_place)) in children.into_iter().enumerate() {
            let cm = *child.hash();
            if self.received.contains(&cm) {
                if let Some((bytes, expanded)) = self.file_nodes.get(&cm) {
                    if !expanded.iter().any(|p| p.same_reach(&child_place)) {
                        again.push((child, bytes.clone(), child_place));
                    }
                }
                continue;
            }
            if let Some(e) = self.expected.get_mut(&cm) {
                if matches!(child_place, Place::File { .. })
                    && !e.place.same_reach(&child_place)
                    && !e.more.iter().any(|p| p.same_reach(&child_place))
                {
                    e.more.push(child_place);
                }
                continue;
            }
            newly.push(child);
            self.expected.insert(
                cm,
                Expected {
                    cid: child,
                    place: child_place,
                    more: Vec::new(),
                    parent: Some((*cid, self.seq, index)),
                },
            );
        }
        true
    }

    /// Requests that bring exactly what is still expected, in the order a DFS walk needs it.
    pub fn resume_requests(&self) -> Vec<DagRequest> {
        if self.expected.is_empty() {
            return Vec::new();
        }
        let whole = || vec![self.req.clone()];
        // Pending file children grouped by parent: one entity-bytes request per parent.
        let mut file_groups: HashMap<Cid, FileGroup> = HashMap::new();
        let mut singles: Vec<((u64, usize), DagRequest)> = Vec::new();
        // Pending whole subtrees grouped by parent: (seq, scope) -> children (index, cid).
        let mut subtree_groups: HashMap<Cid, SubtreeGroup> = HashMap::new();
        for exp in self.expected.values() {
            match (exp.place, exp.parent) {
                // Wanted at several offsets: the resume arithmetic assumes one.
                _ if !exp.more.is_empty() => return whole(),
                (Place::Path { .. }, _) | (_, None) => return whole(),
                (Place::File { start, want, .. }, Some((parent, seq, _))) => {
                    let e = file_groups.entry(parent).or_insert((seq, start, want));
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
        for (parent, (seq, first_missing, (from, to))) in file_groups {
            // The terminal file itself (start 0) is recorded with its path place.
            let parent_start = match self.places.get(parent.hash()) {
                Some(&(_, Place::File { start, .. })) => start,
                _ => 0,
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
/// file node `node`, whose content starts at byte `node_start` of that file (`to` of
/// [`WHOLE_FILE`]: to its end).
fn file_request(node: Cid, from: u64, to: u64, node_start: u64) -> DagRequest {
    // Offsets beyond i64 are beyond any real file: saturate instead of wrapping negative.
    let relative = |at: u64| i64::try_from(at.saturating_sub(node_start)).unwrap_or(i64::MAX);
    DagRequest {
        root: node,
        segments: Vec::new(),
        scope: DagScope::Entity,
        entity_bytes: Some(EntityBytes {
            from: relative(from),
            to: (to != WHOLE_FILE.1).then(|| relative(to)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::builder::{directory, FileBuilder, CHUNK_SIZE};
    use crate::ipld::{cid_v1_sha256, Block, RAW};

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

    /// The property that makes one selection rule worth having: whatever a response walk of a
    /// request sends, the verified walk of a provider stream for that request accepts, in that
    /// order, and then expects nothing more; and the leaves of a byte range cover that range.
    mod same_selection {
        use super::*;
        use crate::content::selector::{walk, BlockSink, Selection};
        use crate::content::source::MemorySource;
        use crate::ipld::dagpb::{PbLink, PbNode};
        use crate::ipld::unixfs::{Data, DataType};
        use proptest::prelude::*;
        use prost::Message;

        /// A file DAG: a leaf of raw bytes, or a node with inline bytes and children.
        #[derive(Clone, Debug)]
        enum Shape {
            Leaf(Vec<u8>),
            Node(Vec<u8>, Vec<Shape>),
        }

        /// Files with repeated content: the same leaves and the same subtrees at several
        /// offsets, as deduplicating builders make them.
        fn shape() -> impl Strategy<Value = Shape> {
            let leaf = prop_oneof![
                Just(Vec::new()),
                Just(vec![7u8; 5]),
                proptest::collection::vec(any::<u8>(), 0..40),
            ]
            .prop_map(Shape::Leaf);
            leaf.prop_recursive(3, 40, 5, |inner| {
                (
                    proptest::collection::vec(any::<u8>(), 0..3),
                    proptest::collection::vec(inner, 1..5),
                    0usize..3,
                    any::<bool>(),
                )
                    .prop_map(|(inline, mut kids, repeats, wrapped)| {
                        // The first subtree again: under this node, and under another one
                        // (reached after the first copy has arrived).
                        for _ in 0..repeats {
                            kids.push(kids[0].clone());
                        }
                        if wrapped {
                            kids.push(Shape::Node(vec![1], vec![kids[0].clone()]));
                        }
                        Shape::Node(inline, kids)
                    })
            })
        }

        /// Builds the blocks of `shape`; its CID and content.
        fn build(shape: &Shape, blocks: &mut Vec<Block>) -> (Cid, Vec<u8>) {
            match shape {
                Shape::Leaf(bytes) => {
                    let cid = cid_v1_sha256(RAW, bytes);
                    blocks.push(Block::verified(cid, Bytes::from(bytes.clone())).unwrap());
                    (cid, bytes.clone())
                }
                Shape::Node(inline, kids) => {
                    let mut content = inline.clone();
                    let mut links = Vec::new();
                    let mut sizes = Vec::new();
                    for k in kids {
                        let (cid, bytes) = build(k, blocks);
                        sizes.push(bytes.len() as u64);
                        content.extend_from_slice(&bytes);
                        links.push(PbLink {
                            cid,
                            name: None,
                            tsize: None,
                        });
                    }
                    let data = Data {
                        r#type: DataType::File as i32,
                        data: (!inline.is_empty()).then(|| Bytes::from(inline.clone())),
                        filesize: Some(content.len() as u64),
                        blocksizes: sizes,
                        ..Default::default()
                    };
                    let bytes = PbNode {
                        links,
                        data: Some(Bytes::from(data.encode_to_vec())),
                    }
                    .encode();
                    let cid = cid_v1_sha256(DAG_PB, &bytes);
                    blocks.push(Block::verified(cid, bytes).unwrap());
                    (cid, content)
                }
            }
        }

        struct Sent(Vec<Block>);

        impl BlockSink for Sent {
            async fn emit(&mut self, block: Block) -> bool {
                self.0.push(block);
                true
            }
        }

        fn scope() -> impl Strategy<Value = DagScope> {
            prop_oneof![
                Just(DagScope::Block),
                Just(DagScope::Entity),
                Just(DagScope::All)
            ]
        }

        fn entity_bytes() -> impl Strategy<Value = Option<EntityBytes>> {
            proptest::option::of(
                (-300i64..300, proptest::option::of(-300i64..300))
                    .prop_map(|(from, to)| EntityBytes { from, to }),
            )
        }

        proptest! {
            // A fixed seed keeps the suite deterministic; 20 000 cases passed when written
            // (and fail with either half of the repeated-node handling taken out).
            #![proptest_config(ProptestConfig {
                cases: 1000,
                rng_seed: proptest::test_runner::RngSeed::Fixed(0x5e1ec7),
                failure_persistence: None,
                ..ProptestConfig::default()
            })]
            #[test]
            fn a_stream_accepts_exactly_what_a_response_sends(
                file in shape(),
                scope in scope(),
                eb in entity_bytes(),
                under_dir in any::<bool>(),
            ) {
                let mut blocks = Vec::new();
                let (file_cid, content) = build(&file, &mut blocks);
                let (root, segments) = if under_dir {
                    let entry = crate::ipld::builder::Entry { cid: file_cid, content_size: content.len() as u64, dag_size: 0 };
                    let dir = crate::ipld::builder::directory(
                        vec![("f".into(), entry)],
                        &mut blocks,
                    )
                    .unwrap();
                    (dir.cid, vec!["f".to_string()])
                } else {
                    (file_cid, Vec::new())
                };
                let src = MemorySource::new(blocks.iter().cloned());
                let req = DagRequest { root, segments: segments.clone(), scope, entity_bytes: eb };
                let selection = Selection { scope, entity_bytes: eb, dups: false };
                let sent = futures::executor::block_on(async {
                    let resolved = crate::content::resolve(&src, root, &segments).await.unwrap();
                    let mut sent = Sent(Vec::new());
                    walk(&src, &resolved, &selection, &mut sent).await.unwrap();
                    sent.0
                });
                let mut stream = DagWalk::new(req.clone());
                for b in &sent {
                    prop_assert_eq!(stream.accept(b.cid(), b.data()), Ok(Accepted::New));
                }
                prop_assert!(stream.complete(), "the stream still expects {:?}", stream.pending());
                // A byte range is covered by the leaves sent.
                if let Some(range) = eb.and_then(|eb| eb.resolve(content.len() as u64)) {
                    let sent_leaves: std::collections::HashSet<Cid> =
                        sent.iter().map(|b| *b.cid()).collect();
                    let mut covered = vec![false; content.len()];
                    mark(&file, &mut blocks.iter(), 0, &sent_leaves, &mut covered);
                    for (at, is_covered) in covered.iter().enumerate().take(range.1 as usize + 1).skip(range.0 as usize) {
                        prop_assert!(is_covered, "byte {} of {:?} not sent", at, range);
                    }
                }
            }
        }

        /// Marks the bytes of `shape` (starting at `at`) held by blocks in `sent`, walking the
        /// blocks in the order `build` pushed them.
        fn mark<'a>(
            shape: &Shape,
            built: &mut impl Iterator<Item = &'a Block>,
            at: usize,
            sent: &std::collections::HashSet<Cid>,
            covered: &mut [bool],
        ) -> usize {
            match shape {
                Shape::Leaf(bytes) => {
                    let cid = built.next().unwrap().cid();
                    if sent.contains(cid) {
                        covered[at..at + bytes.len()]
                            .iter_mut()
                            .for_each(|c| *c = true);
                    }
                    bytes.len()
                }
                Shape::Node(inline, kids) => {
                    let mut len = inline.len();
                    let start = at;
                    for k in kids {
                        len += mark(k, built, at + len, sent, covered);
                    }
                    // The node's own block comes after its children's.
                    let cid = built.next().unwrap().cid();
                    if sent.contains(cid) {
                        covered[start..start + inline.len()]
                            .iter_mut()
                            .for_each(|c| *c = true);
                    }
                    len
                }
            }
        }
    }
}
