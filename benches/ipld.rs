//! Verification and CAR encode/decode throughput.
//!
//! `cargo bench --bench ipld`; figures are recorded in docs/benchmarks.md.

use bytes::{Bytes, BytesMut};
use cidgate::ipld::car::{frame_prefix, header, CarDecoder, CarItem};
use cidgate::ipld::{cid_v1_sha256, verify, Block, Cid, RAW};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sha2::Digest;
use tokio_util::codec::Decoder;

fn blocks(n: usize, size: usize) -> Vec<Block> {
    (0..n)
        .map(|i| {
            let data: Vec<u8> = (0..size).map(|j| (i * 31 + j * 7) as u8).collect();
            let cid = cid_v1_sha256(RAW, &data);
            Block::verified(cid, Bytes::from(data)).unwrap()
        })
        .collect()
}

fn verification(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify");
    for size in [4 * 1024, 256 * 1024, 1024 * 1024] {
        let b = &blocks(1, size)[0];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("bare-sha256", size), b, |bench, b| {
            bench.iter(|| sha2::Sha256::digest(b.data()))
        });
        g.bench_with_input(BenchmarkId::new("verify-cid", size), b, |bench, b| {
            bench.iter(|| verify::check(b.cid(), b.data()).unwrap())
        });
    }
    g.finish();
}

fn car_bytes(bs: &[Block]) -> Vec<u8> {
    let mut out = header(&[*bs[0].cid()]).unwrap().to_vec();
    for b in bs {
        out.extend_from_slice(&frame_prefix(b.cid(), b.len()));
        out.extend_from_slice(b.data());
    }
    out
}

fn car(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("car");
    for (n, size) in [(256usize, 4 * 1024usize), (16, 1024 * 1024)] {
        let bs = blocks(n, size);
        let total = car_bytes(&bs);
        g.throughput(Throughput::Bytes(total.len() as u64));
        let label = format!("{n}x{size}");
        g.bench_with_input(
            BenchmarkId::new("encode-bytes-frames", &label),
            &bs,
            |bench, bs| {
                bench.iter(|| {
                    // What a response does: small prefixes plus clones of the block handles.
                    let mut chunks: Vec<Bytes> = vec![header(&[*bs[0].cid()]).unwrap()];
                    for b in bs {
                        chunks.push(frame_prefix(b.cid(), b.len()));
                        chunks.push(b.data().clone());
                    }
                    chunks
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("encode-iroh-car", &label),
            &bs,
            |bench, bs| {
                bench.iter(|| {
                    rt.block_on(async {
                        let mut w = iroh_car::CarWriter::new(
                            iroh_car::CarHeader::new_v1(vec![*bs[0].cid()]),
                            Vec::new(),
                        );
                        for b in bs {
                            w.write(*b.cid(), b.data()).await.unwrap();
                        }
                        w.finish().await.unwrap()
                    })
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("decode-bytes-decoder", &label),
            &total,
            |bench, total| {
                bench.iter(|| {
                    let mut buf = BytesMut::from(&total[..]);
                    let mut dec = CarDecoder::new();
                    let mut n = 0;
                    while let Some(item) = dec.decode_eof(&mut buf).unwrap() {
                        if let CarItem::Block(_, d) = item {
                            n += d.len();
                        }
                    }
                    n
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("decode-iroh-car", &label),
            &total,
            |bench, total| {
                bench.iter(|| {
                    rt.block_on(async {
                        let mut r = iroh_car::CarReader::new(&total[..]).await.unwrap();
                        let mut n = 0;
                        while let Some((_c, d)) = r.next_block().await.unwrap() {
                            n += d.len();
                        }
                        n
                    })
                })
            },
        );
    }
    g.finish();
    let _ = Cid::default();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = verification, car
}
criterion_main!(benches);
