//! The cold tier's provider CAR stream verifier: a fuzzed CAR stream goes through what
//! `ColdTier` does with a storage provider's response (`CarStream::next`: the CAR decoder, the
//! header's roots, the block size cap; `ColdTier::take`: `DagWalk::check`, `Block::verified`,
//! `DagWalk::accept`) for one request.
//!
//! Two input forms, by the first byte:
//! - even: `[0][scope][path]\0[CAR bytes]`: raw CAR bytes (seeded from the fixtures) for a
//!   request whose root is the CAR's first root and whose path and scope come from the prefix;
//! - odd: an `arbitrary` plan: a DAG the target builds itself (dag-pb files, directories, HAMT
//!   shards, symlinks, raw leaves, dag-cbor and dag-json documents, with real hashes), a
//!   request into it, and either an honest provider that sends what the walk expects or a
//!   script of sends, corrupted blocks, re-labelled CIDs and foreign blocks.
//!
//! Properties: no panic; every block handed on hashes to its CID, has the bytes the DAG really
//! holds, and carries the very CID the walk expected; an honest provider completes the walk, in
//! a CAR stream too; resume requests can always be made.
#![no_main]

use std::collections::{BTreeMap, HashMap};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use cid::Cid;
use cidgate::ipld::car::{frame_prefix, header, CarItem};
use cidgate::ipld::dagpb::{PbLink, PbNode};
use cidgate::ipld::unixfs::{Data, DataType};
use cidgate::ipld::{cid_v1_sha256, hamt, Block, DAG_CBOR, DAG_JSON, DAG_PB, MAX_BLOCK_SIZE, RAW};
use cidgate::tiers::cold::walk::{Accepted, DagWalk};
use cidgate::tiers::{DagRequest, DagScope, EntityBytes};
use cidgate_fuzz::decode_chunked;
use ipld_core::ipld::Ipld;
use libfuzzer_sys::fuzz_target;
use multihash::Multihash;
use prost::Message;

const NAMES: [&str; 6] = ["a", "b", "index.html", "sub", "f\u{e9}", "x y"];
const SCOPES: [DagScope; 3] = [DagScope::Block, DagScope::Entity, DagScope::All];

/// How a provider's stream ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The CAR ended cleanly.
    Clean,
    /// A block the walk does not reach, or a CAR for another root (`Failure::Lie`).
    Lie,
    /// A block whose bytes do not hash to its CID (`Failure::Corrupt`).
    Corrupt,
    /// The CAR itself is malformed, or a block is over the cap (`Failure::Error`).
    Error,
}

/// What the cold tier does with one provider CAR stream; verified new blocks go to `out`.
fn consume(
    req: &DagRequest,
    walk: &mut DagWalk,
    car: &[u8],
    chunk: usize,
    out: &mut Vec<Block>,
) -> End {
    let (items, err) = decode_chunked(car, chunk);
    for item in items {
        match item {
            CarItem::Header(roots) => {
                if !roots.is_empty() && !roots.iter().any(|r| r.hash() == req.root.hash()) {
                    return End::Lie;
                }
            }
            CarItem::Block(cid, data) => {
                if data.len() > MAX_BLOCK_SIZE {
                    return End::Error;
                }
                match walk.check(&cid) {
                    Err(_) => return End::Lie,
                    Ok(Accepted::Duplicate) => continue,
                    Ok(Accepted::New) => {}
                }
                let expected = walk.pending();
                let Ok(block) = Block::verified(cid, data) else {
                    return End::Corrupt;
                };
                // The very block expected: same multihash and codec (CIDv0 = CIDv1 dag-pb).
                assert!(
                    expected
                        .iter()
                        .any(|e| e.hash() == block.cid().hash() && e.codec() == block.cid().codec()),
                    "walk took {} although it expected {expected:?}",
                    block.cid()
                );
                match walk.accept(block.cid(), block.data()) {
                    Ok(Accepted::New) => {}
                    other => panic!("check said new, accept said {other:?}"),
                }
                out.push(block);
            }
        }
    }
    if err.is_some() {
        End::Error
    } else {
        End::Clean
    }
}

fn check_resume(walk: &DagWalk) {
    let resume = walk.resume_requests();
    assert_eq!(resume.is_empty(), walk.complete());
    for r in resume {
        let w = DagWalk::new(r);
        assert!(!w.complete());
    }
}

// ---- raw CAR mode ----

fn raw_mode(input: &[u8]) {
    let Some((&scope, rest)) = input.split_first() else {
        return;
    };
    let (path, car) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let segments: Vec<String> = String::from_utf8_lossy(path)
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let (items, _) = decode_chunked(car, car.len().max(1));
    let root = match items.first() {
        Some(CarItem::Header(roots)) if !roots.is_empty() => roots[0],
        _ => cid_v1_sha256(RAW, b""),
    };
    let entity_bytes = (scope & 0x80 != 0).then(|| EntityBytes {
        from: i64::from((scope >> 2) & 0x0f) * 100 - 300,
        to: (scope & 0x40 != 0).then_some(1000),
    });
    let req = DagRequest {
        root,
        segments,
        scope: SCOPES[usize::from(scope & 3) % 3],
        entity_bytes,
    };
    let mut walk = DagWalk::new(req.clone());
    let mut out = Vec::new();
    let chunk = [car.len(), 1, 13, 512][usize::from(scope >> 6)];
    consume(&req, &mut walk, car, chunk, &mut out);
    check_resume(&walk);
}

// ---- built DAG mode ----

#[derive(Arbitrary, Debug)]
enum Kind {
    Raw,
    File {
        filesize: Option<u64>,
        sizes: Option<Vec<u64>>,
    },
    Dir,
    Shard {
        fanout_log: u8,
        depth: u8,
    },
    Symlink,
    DagCbor,
    DagJson,
}

#[derive(Arbitrary, Debug)]
struct NodeSpec {
    kind: Kind,
    data: Vec<u8>,
    /// (target, name): the target is one of the nodes after this one (so the DAG is acyclic).
    links: Vec<(u8, u8)>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Send(u8),
    Corrupt(u8, u16),
    Relabel(u8),
    Foreign(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Plan {
    nodes: Vec<NodeSpec>,
    path: Vec<u8>,
    scope: u8,
    entity_bytes: Option<(i16, Option<i16>)>,
    script: Option<Vec<Op>>,
    other_root: bool,
    chunk: u8,
}

struct Built {
    cid: Cid,
    data: Bytes,
    size: u64,
}

fn pb(data: Data, links: Vec<PbLink>) -> Bytes {
    PbNode {
        links,
        data: Some(Bytes::from(data.encode_to_vec())),
    }
    .encode()
}

fn build(nodes: &[NodeSpec]) -> Option<Vec<Built>> {
    let n = nodes.len();
    let mut built: Vec<Option<Built>> = (0..n).map(|_| None).collect();
    for i in (0..n).rev() {
        let spec = &nodes[i];
        let data = Bytes::copy_from_slice(&spec.data[..spec.data.len().min(512)]);
        let children: Vec<(&Built, &str)> = if i + 1 < n {
            spec.links
                .iter()
                .take(8)
                .map(|&(t, name)| {
                    let j = i + 1 + usize::from(t) % (n - i - 1);
                    (
                        built[j].as_ref().expect("built bottom-up"),
                        NAMES[usize::from(name) % NAMES.len()],
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let (codec, bytes, size) = match &spec.kind {
            Kind::Raw => (RAW, data.clone(), data.len() as u64),
            Kind::File { filesize, sizes } => {
                let blocksizes: Vec<u64> = children
                    .iter()
                    .enumerate()
                    .map(|(k, (c, _))| {
                        sizes
                            .as_ref()
                            .and_then(|s| s.get(k).copied())
                            .unwrap_or(c.size)
                    })
                    .collect();
                let size = blocksizes
                    .iter()
                    .fold(data.len() as u64, |a, b| a.saturating_add(*b));
                let links = children
                    .iter()
                    .map(|(c, _)| PbLink {
                        cid: c.cid,
                        name: None,
                        tsize: Some(c.data.len() as u64),
                    })
                    .collect();
                let d = Data {
                    r#type: DataType::File as i32,
                    data: Some(data.clone()),
                    filesize: Some(filesize.unwrap_or(size)),
                    blocksizes,
                    ..Default::default()
                };
                (DAG_PB, pb(d, links), filesize.unwrap_or(size))
            }
            Kind::Dir => {
                let links = children
                    .iter()
                    .map(|(c, name)| PbLink {
                        cid: c.cid,
                        name: Some(name.to_string()),
                        tsize: None,
                    })
                    .collect();
                let d = Data {
                    r#type: DataType::Directory as i32,
                    ..Default::default()
                };
                (DAG_PB, pb(d, links), 0)
            }
            Kind::Shard { fanout_log, depth } => {
                let fanout = 1u64 << (1 + fanout_log % 8);
                let bits = fanout.trailing_zeros();
                let used = bits * (u32::from(*depth % 3) + 1);
                let width = hamt::prefix_len(fanout);
                let links = children
                    .iter()
                    .enumerate()
                    .map(|(k, (c, name))| {
                        let index = if used <= 64 {
                            (hamt::hash_name(name) >> (64 - used)) & (fanout - 1)
                        } else {
                            0
                        };
                        let prefix = format!("{index:0width$X}");
                        // Every third link is a sub-shard (the bucket prefix alone).
                        let link_name = if k % 3 == 2 {
                            prefix
                        } else {
                            format!("{prefix}{name}")
                        };
                        PbLink {
                            cid: c.cid,
                            name: Some(link_name),
                            tsize: None,
                        }
                    })
                    .collect();
                let d = Data {
                    r#type: DataType::HamtShard as i32,
                    data: Some(data.clone()),
                    fanout: Some(fanout),
                    hash_type: Some(hamt::MURMUR3_X64_64),
                    ..Default::default()
                };
                (DAG_PB, pb(d, links), 0)
            }
            Kind::Symlink => {
                let d = Data {
                    r#type: DataType::Symlink as i32,
                    data: Some(data.clone()),
                    ..Default::default()
                };
                (DAG_PB, pb(d, Vec::new()), 0)
            }
            Kind::DagCbor | Kind::DagJson => {
                let mut map = BTreeMap::new();
                map.insert("data".to_string(), Ipld::Bytes(data.to_vec()));
                for (c, name) in &children {
                    map.insert(name.to_string(), Ipld::Link(c.cid));
                }
                let doc = Ipld::Map(map);
                if matches!(spec.kind, Kind::DagCbor) {
                    (
                        DAG_CBOR,
                        Bytes::from(serde_ipld_dagcbor::to_vec(&doc).ok()?),
                        0,
                    )
                } else {
                    (
                        DAG_JSON,
                        Bytes::from(serde_ipld_dagjson::to_vec(&doc).ok()?),
                        0,
                    )
                }
            }
        };
        built[i] = Some(Built {
            cid: cid_v1_sha256(codec, &bytes),
            data: bytes,
            size,
        });
    }
    built.into_iter().collect()
}

fn car_of(root: Cid, frames: &[(Cid, Bytes)]) -> Vec<u8> {
    let mut out = header(&[root])
        .expect("a header of one root encodes")
        .to_vec();
    for (cid, data) in frames {
        out.extend_from_slice(&frame_prefix(cid, data.len()));
        out.extend_from_slice(data);
    }
    out
}

fn plan_mode(input: &[u8]) {
    let Ok(plan) = Plan::arbitrary_take_rest(Unstructured::new(input)) else {
        return;
    };
    if plan.nodes.is_empty() || plan.nodes.len() > 16 {
        return;
    }
    let Some(built) = build(&plan.nodes) else {
        return;
    };
    let truth: HashMap<Multihash<64>, &Built> = built.iter().map(|b| (*b.cid.hash(), b)).collect();
    let root = built[0].cid;
    let req = DagRequest {
        root,
        segments: plan
            .path
            .iter()
            .take(4)
            .map(|&p| NAMES[usize::from(p) % NAMES.len()].to_string())
            .collect(),
        scope: SCOPES[usize::from(plan.scope) % 3],
        entity_bytes: plan.entity_bytes.map(|(f, t)| EntityBytes {
            from: i64::from(f),
            to: t.map(i64::from),
        }),
    };
    let chunk = usize::from(plan.chunk) + 1;
    let check_out = |out: &[Block]| {
        for b in out {
            let t = truth
                .get(b.cid().hash())
                .unwrap_or_else(|| panic!("delivered {} is not in the DAG", b.cid()));
            assert_eq!(b.data(), &t.data, "delivered other bytes for {}", b.cid());
            assert_eq!(b.cid(), &t.cid, "delivered under another CID");
        }
    };

    let Some(script) = plan.script else {
        // An honest provider: it sends exactly what the walk expects next.
        let mut walk = DagWalk::new(req.clone());
        let mut order = Vec::new();
        for _ in 0..=built.len() {
            let mut pending = walk.pending();
            pending.sort();
            let Some(next) = pending.first() else { break };
            let b = truth
                .get(next.hash())
                .expect("the walk only expects linked blocks");
            assert_eq!(walk.accept(&b.cid, &b.data), Ok(Accepted::New));
            order.push((b.cid, b.data.clone()));
            check_resume(&walk);
        }
        assert!(
            walk.complete(),
            "an honest provider did not complete {req:?}"
        );
        // The same blocks as one CAR stream.
        let mut walk = DagWalk::new(req.clone());
        let mut out = Vec::new();
        let end = consume(&req, &mut walk, &car_of(root, &order), chunk, &mut out);
        assert_eq!(end, End::Clean);
        assert!(walk.complete());
        assert_eq!(out.len(), order.len());
        check_out(&out);
        return;
    };

    let mut frames = Vec::new();
    for op in script.iter().take(64) {
        let pick = |i: &u8| &built[usize::from(*i) % built.len()];
        match op {
            Op::Send(i) => {
                let b = pick(i);
                frames.push((b.cid, b.data.clone()));
            }
            Op::Corrupt(i, pos) => {
                let b = pick(i);
                let mut d = b.data.to_vec();
                if d.is_empty() {
                    d.push(0);
                } else {
                    let at = usize::from(*pos) % d.len();
                    d[at] ^= 1;
                }
                frames.push((b.cid, Bytes::from(d)));
            }
            Op::Relabel(i) => {
                let b = pick(i);
                let codec = if b.cid.codec() == RAW { DAG_PB } else { RAW };
                frames.push((Cid::new_v1(codec, *b.cid.hash()), b.data.clone()));
            }
            Op::Foreign(d) => frames.push((cid_v1_sha256(RAW, d), Bytes::copy_from_slice(d))),
        }
    }
    let header_root = if plan.other_root {
        cid_v1_sha256(RAW, b"another root")
    } else {
        root
    };
    let mut walk = DagWalk::new(req.clone());
    let mut out = Vec::new();
    let end = consume(
        &req,
        &mut walk,
        &car_of(header_root, &frames),
        chunk,
        &mut out,
    );
    if plan.other_root {
        assert!(out.is_empty() && end == End::Lie);
    }
    check_out(&out);
    check_resume(&walk);
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        raw_mode(rest);
    } else {
        plan_mode(rest);
    }
});
