//! The selection of a request's blocks (`content::select::reach` since issue 15): a CAR
//! response walk of a 30 000-leaf file (whole, and a byte range in its middle) from memory,
//! and the verified walk of a provider stream accepting the same blocks.
//!
//! `cargo bench --bench selection`

use bytes::Bytes;
use cid::Cid;
use cidgate::content::selector::{walk, BlockSink, Selection};
use cidgate::content::source::MemorySource;
use cidgate::content::Resolved;
use cidgate::ipld::dagpb::{PbLink, PbNode};
use cidgate::ipld::unixfs::{Data, DataType};
use cidgate::ipld::{cid_v1_sha256, Block, DAG_PB, RAW};
use cidgate::tiers::cold::walk::DagWalk;
use cidgate::tiers::{DagRequest, DagScope, EntityBytes};
use criterion::{criterion_group, criterion_main, Criterion};
use prost::Message;

const LEAF: usize = 100;
const FANOUT: usize = 174;
const NODES: usize = 172;

struct Count(usize);

impl BlockSink for Count {
    async fn emit(&mut self, _block: Block) -> bool {
        self.0 += 1;
        true
    }
}

/// A file node over `children` (CID, content bytes).
fn node(children: &[(Cid, u64)], blocks: &mut Vec<Block>) -> (Cid, u64) {
    let data = Data {
        r#type: DataType::File as i32,
        filesize: Some(children.iter().map(|c| c.1).sum()),
        blocksizes: children.iter().map(|c| c.1).collect(),
        ..Default::default()
    };
    let bytes = PbNode {
        links: children
            .iter()
            .map(|(cid, _)| PbLink {
                cid: *cid,
                name: None,
                tsize: None,
            })
            .collect(),
        data: Some(Bytes::from(data.encode_to_vec())),
    }
    .encode();
    let cid = cid_v1_sha256(DAG_PB, &bytes);
    blocks.push(Block::verified(cid, bytes).unwrap());
    (cid, children.iter().map(|c| c.1).sum())
}

/// A two-level file of `NODES × FANOUT` distinct leaves; its root, size and blocks.
fn file() -> (Cid, u64, Vec<Block>) {
    let mut blocks = Vec::new();
    let mut inner = Vec::new();
    for n in 0..NODES {
        let mut leaves = Vec::new();
        for l in 0..FANOUT {
            let mut bytes = vec![0u8; LEAF];
            bytes[..8].copy_from_slice(&((n * FANOUT + l) as u64).to_le_bytes());
            let cid = cid_v1_sha256(RAW, &bytes);
            blocks.push(Block::verified(cid, Bytes::from(bytes)).unwrap());
            leaves.push((cid, LEAF as u64));
        }
        inner.push(node(&leaves, &mut blocks));
    }
    let (root, size) = node(&inner, &mut blocks);
    (root, size, blocks)
}

fn selection(c: &mut Criterion) {
    let (root, size, blocks) = file();
    let src = MemorySource::new(blocks.iter().cloned());
    let resolved = Resolved {
        root,
        target: root,
        path_blocks: Vec::new(),
        roots: vec![root],
        remainder: Vec::new(),
    };
    let middle = Some(EntityBytes {
        from: (size / 4) as i64,
        to: Some((size * 3 / 4) as i64),
    });
    let mut g = c.benchmark_group("selection");
    g.sample_size(20);
    for (name, scope, entity_bytes) in [
        ("response-walk-entity", DagScope::Entity, None),
        ("response-walk-all", DagScope::All, None),
        ("response-walk-range", DagScope::Entity, middle),
    ] {
        let sel = Selection {
            scope,
            entity_bytes,
            dups: false,
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                futures::executor::block_on(async {
                    let mut sink = Count(0);
                    walk(&src, &resolved, &sel, &mut sink).await.unwrap();
                    assert!(sink.0 > 1);
                    sink.0
                })
            })
        });
    }
    // A provider's stream in DFS order: parents before children.
    let mut order = Vec::new();
    futures::executor::block_on(async {
        struct Keep<'a>(&'a mut Vec<Block>);
        impl BlockSink for Keep<'_> {
            async fn emit(&mut self, block: Block) -> bool {
                self.0.push(block);
                true
            }
        }
        let sel = Selection {
            scope: DagScope::Entity,
            entity_bytes: None,
            dups: false,
        };
        walk(&src, &resolved, &sel, &mut Keep(&mut order))
            .await
            .unwrap();
    });
    let req = DagRequest {
        root,
        segments: Vec::new(),
        scope: DagScope::Entity,
        entity_bytes: None,
    };
    g.bench_function("stream-walk-accept", |b| {
        b.iter(|| {
            let mut w = DagWalk::new(req.clone());
            for block in &order {
                w.accept(block.cid(), block.data()).unwrap();
            }
            assert!(w.complete());
            w.received()
        })
    });
    g.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
