//! Cost of denylist checks on the request path, and of compiling a big list.
//!
//! `cargo bench --bench denylist` (`-- --quick` for a short run). The big list is generated
//! here, deterministically: a million legacy double-hashed anchors (the Bad Bits format:
//! sha2-256 of `{CIDv1 base32}/`, hex), like `loadtest/lib/gen_denylist.py` writes.

use std::hint::black_box;

use cidgate::denylist::Denylist;
use cidgate::ipld::{cid_v1_sha256, Cid, RAW};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use multibase::Base;
use sha2::{Digest, Sha256};

/// The `i`-th generated CID: raw, sha2-256 of the little-endian index.
fn nth_cid(i: u64) -> Cid {
    cid_v1_sha256(RAW, &i.to_le_bytes())
}

/// A Bad Bits style list: header with its status hint, then `n` legacy anchors of CID roots.
fn double_hashed_list(n: u64) -> String {
    let mut text = String::with_capacity(n as usize * 67 + 128);
    text.push_str("version: 1\nname: generated\nhints:\n  gateway_status: 410\n---\n");
    for i in 0..n {
        let v1 = nth_cid(i)
            .to_string_of_base(Base::Base32Lower)
            .unwrap_or_default();
        let d = Sha256::digest(format!("{v1}/").as_bytes());
        text.push_str("//");
        for b in d {
            text.push_str(&format!("{b:02x}"));
        }
        text.push('\n');
    }
    text
}

/// A hand-written list with a few rules of every kind.
fn small_list() -> String {
    let mut text = String::from("# small\n");
    for i in 0..5u64 {
        text.push_str(&format!("/ipfs/{}\n", nth_cid(1_000_000 + i)));
        text.push_str(&format!("/ipfs/{}/private*\n", nth_cid(2_000_000 + i)));
        text.push_str(&format!("/ipns/site{i}.example\n"));
    }
    text.push_str(&format!("!/ipfs/{}/private/ok\n", nth_cid(2_000_000)));
    let tail = double_hashed_list(5);
    text.push_str(&tail[tail.find("---\n").map_or(0, |i| i + 4)..]);
    text
}

fn compile(text: &str) -> Denylist {
    let (d, w) = Denylist::compile(&[("bench.deny".to_string(), text.to_string())]);
    assert!(w.is_empty(), "{w:?}");
    d
}

fn checks(c: &mut Criterion) {
    let empty = Denylist::empty();
    let small = compile(&small_list());
    let big = compile(&double_hashed_list(1_000_000));
    assert_eq!(big.rules(), 1_000_000);

    // A CID no list names, the usual case, and a path of typical depth.
    let miss = nth_cid(u64::MAX);
    let path: Vec<String> = vec!["wiki".into(), "index.html".into()];
    let listed = nth_cid(123_456);
    assert!(big.check_cid(&listed).is_some());
    assert!(big.check_ipfs_path(&miss, &path).is_none());

    let mut g = c.benchmark_group("check_ipfs_path");
    for (name, d) in [
        ("empty", &empty),
        ("small", &small),
        ("1M-double-hashed", &big),
    ] {
        g.bench_with_input(BenchmarkId::new(name, "miss"), d, |b, d| {
            b.iter(|| d.check_ipfs_path(black_box(&miss), black_box(&path)))
        });
    }
    g.bench_function(BenchmarkId::new("1M-double-hashed", "root-only"), |b| {
        b.iter(|| big.check_ipfs_path(black_box(&miss), black_box(&[])))
    });
    g.bench_function(BenchmarkId::new("1M-double-hashed", "hit"), |b| {
        b.iter(|| big.check_ipfs_path(black_box(&listed), black_box(&path)))
    });
    g.finish();

    let mut g = c.benchmark_group("check_cid");
    for (name, d) in [
        ("empty", &empty),
        ("small", &small),
        ("1M-double-hashed", &big),
    ] {
        g.bench_with_input(BenchmarkId::new(name, "miss"), d, |b, d| {
            b.iter(|| d.check_cid(black_box(&miss)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("check_ipns_path");
    g.bench_function(BenchmarkId::new("1M-double-hashed", "dnslink"), |b| {
        b.iter(|| big.check_ipns_path(black_box("en.wikipedia-on-ipfs.org"), black_box(&path)))
    });
    g.finish();
}

fn compile_time(c: &mut Criterion) {
    let text = double_hashed_list(1_000_000);
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("1M-double-hashed", |b| {
        b.iter(|| {
            Denylist::compile_lists([("bench.deny", text.as_str())])
                .0
                .rules()
        })
    });
    g.finish();
}

/// The floor under a double-hashed check: one sha2-256 of a CIDv1's base32 text and `/`
/// (61 bytes, two compression blocks).
fn baseline(c: &mut Criterion) {
    let text = format!(
        "{}/",
        nth_cid(0)
            .to_string_of_base(Base::Base32Lower)
            .unwrap_or_default()
    );
    c.bench_function("baseline/sha256-cidv1-base32", |b| {
        b.iter(|| Sha256::digest(black_box(text.as_bytes())))
    });
}

criterion_group!(benches, checks, compile_time, baseline);
criterion_main!(benches);
