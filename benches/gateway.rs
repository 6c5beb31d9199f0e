//! The gateway's own per-request cost on a cache hit, without sockets: `Gateway::handle` for a
//! 4 KiB file and a raw block, through the same tiered source `serve` builds; and the same
//! request through the per-request middleware (`GatewayHandler`: metrics, deadlines, the access
//! log) with the access log off, on (text and JSON lines written to a sink), and on but
//! filtered out.
//!
//! `cargo bench --bench gateway`; figures are recorded in docs/benchmarks.md.

use std::sync::Arc;

use bytes::Bytes;
use cidgate::app::{GatewayHandler, LiveSettings, RequestDeadlines};
use cidgate::config::Config;
use cidgate::gateway::{Gateway, GatewayOptions};
use cidgate::ipld::{cid_v1_sha256, Block, RAW};
use cidgate::server::Client;
use cidgate::telemetry::Metrics;
use cidgate::tiers::local::{LocalStore, PinReason};
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt;

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
    // The tiers spawn their background writers: inside the runtime.
    let _runtime = rt.enter();
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
    let source_for_handler = source.clone();
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

    // The middleware around the same gateway, its body read to the end (the request ends,
    // and its access log line is written, when the body is dropped).
    let deadlines = RequestDeadlines {
        retrieval: std::time::Duration::from_secs(60),
        stall: std::time::Duration::from_secs(60),
        total: std::time::Duration::ZERO,
    };
    let uri = format!("/ipfs/{cid}");
    let client = Client::direct("192.0.2.1:40000".parse().unwrap());
    let mut g = c.benchmark_group("handler-hit");
    type Dispatch = tracing::Dispatch;
    let text: Dispatch = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .finish()
        .into();
    let json: Dispatch = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .finish()
        .into();
    let filtered: Dispatch = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::WARN)
        .finish()
        .into();
    for (name, access_log, dispatch) in [
        ("file-4k-access-log-off", false, &text),
        ("file-4k-access-log-text", true, &text),
        ("file-4k-access-log-json", true, &json),
        ("file-4k-access-log-filtered-out", true, &filtered),
    ] {
        let handler = GatewayHandler::new(
            Gateway::new(source_for_handler.clone(), options(0)),
            LiveSettings::new(deadlines, access_log),
            Metrics::new(),
            None,
        );
        tracing::dispatcher::with_default(dispatch, || {
            g.bench_function(name, |b| {
                b.iter(|| {
                    rt.block_on(async {
                        let req = http::Request::builder()
                            .uri(uri.as_str())
                            .header("host", "127.0.0.1:8080")
                            .body(())
                            .unwrap();
                        let resp = handler.handle(req, client).await;
                        assert_eq!(resp.status(), 200);
                        resp.into_body().collect().await.unwrap().to_bytes()
                    })
                })
            });
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
