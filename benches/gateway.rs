//! The gateway's own per-request cost on a cache hit, without sockets: `Gateway::handle` for a
//! 4 KiB file and a raw block, through the same tiered source `serve` builds.
//!
//! `cargo bench --bench gateway`; figures are recorded in docs/benchmarks.md.

use std::sync::Arc;

use bytes::Bytes;
use cidgate::config::Config;
use cidgate::gateway::{Gateway, GatewayOptions};
use cidgate::ipld::{cid_v1_sha256, Block, RAW};
use cidgate::telemetry::Metrics;
use cidgate::tiers::local::{LocalStore, PinReason};
use criterion::{criterion_group, criterion_main, Criterion};

fn gateway(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let cid = cid_v1_sha256(RAW, &data);
    let block = Block::verified(cid, Bytes::from(data)).unwrap();
    let batch = store.new_batch().unwrap();
    store.put_staged(batch, &[block], true).unwrap();
    store
        .commit_batch(batch, &[(cid, PinReason::Operator)])
        .unwrap();
    let mut config = Config::default();
    config.server.subdomain_hosts = vec!["localhost".into()];
    let source =
        cidgate::app::tiered_source(&config, store, Metrics::new(), None, Default::default())
            .unwrap();
    let options = |responses: u64| GatewayOptions {
        subdomain_hosts: config.server.subdomain_hosts.clone(),
        tls: false,
        response_cache_bytes: responses,
        ..Default::default()
    };
    // The block path alone, and with the whole response kept (the default configuration).
    let gw_blocks = Gateway::new(source.clone(), options(0));
    let gw_default = Gateway::new(source, options(config.cache.responses.as_u64()));
    let mut g = c.benchmark_group("gateway-hit");
    for (name, gw, uri) in [
        ("file-4k", &gw_blocks, format!("/ipfs/{cid}")),
        ("raw-4k", &gw_blocks, format!("/ipfs/{cid}?format=raw")),
        (
            "file-4k-response-cache",
            &gw_default,
            format!("/ipfs/{cid}"),
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let req = http::Request::builder()
                        .uri(uri.as_str())
                        .header("host", "127.0.0.1:8080")
                        .body(())
                        .unwrap();
                    let resp = gw.handle(req).await;
                    assert_eq!(resp.status(), 200);
                    resp
                })
            })
        });
    }
    g.finish();
    let _ = Arc::new(());
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = gateway
}
criterion_main!(benches);
