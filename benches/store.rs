//! Embedded store write and read throughput (verified reads).
//!
//! `cargo bench --bench store`; figures are recorded in docs/benchmarks.md.

use bytes::Bytes;
use cidgate::ipld::{cid_v1_sha256, Block, RAW};
use cidgate::tiers::local::LocalStore;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn blocks(n: usize, size: usize, salt: usize) -> Vec<Block> {
    (0..n)
        .map(|i| {
            let mut data: Vec<u8> = (0..size).map(|j| (i * 131 + j * 7) as u8).collect();
            // A unique prefix per block and round, so every write is a new block (no dedup).
            data[..8].copy_from_slice(&(salt as u64).to_le_bytes());
            data[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            Block::verified(cid_v1_sha256(RAW, &data), Bytes::from(data)).unwrap()
        })
        .collect()
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let mut g = c.benchmark_group("store");
    for size in [4 * 1024usize, 256 * 1024] {
        let n = (8 * 1024 * 1024) / size;
        g.throughput(Throughput::Bytes((n * size) as u64));
        let mut salt = 0;
        g.bench_function(BenchmarkId::new("write-batch", size), |b| {
            b.iter_batched(
                || {
                    salt += 1;
                    blocks(n, size, salt)
                },
                |bs| {
                    let batch = store.new_batch().unwrap();
                    store.put_staged(batch, &bs, false).unwrap();
                    store.commit_batch(batch, &[]).unwrap();
                },
                criterion::BatchSize::LargeInput,
            )
        });
        let stored = blocks(n, size, 1_000_000);
        let batch = store.new_batch().unwrap();
        store.put_staged(batch, &stored, false).unwrap();
        store.commit_batch(batch, &[]).unwrap();
        g.bench_function(BenchmarkId::new("read-verified", size), |b| {
            b.iter(|| {
                for blk in &stored {
                    store.get_sync(blk.cid()).unwrap().unwrap();
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(4)).warm_up_time(std::time::Duration::from_secs(1));
    targets = store
}
criterion_main!(benches);
