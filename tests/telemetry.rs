//! Observability: Prometheus metrics on the admin listener, `Server-Timing` / `X-Cidgate-Tier`
//! on responses, and OTLP export of request spans to a collector.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{client, metric_sum, metrics, Server};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

const ASCII: &str = "bafkreihhpc5y2pqvl5rbe5uuyhqjouybfs3rvlmisccgzue2kkt5zq6upq";

#[tokio::test]
async fn metrics_and_timing_headers() {
    let s = Server::start(&["gateway-raw-block.car"]);
    let mut answers = Vec::new();
    for _ in 0..3 {
        let r = client()
            .get(format!("{}/ipfs/{ASCII}?format=raw", s.url))
            .send()
            .await
            .unwrap();
        assert!(r.headers()["server-timing"]
            .to_str()
            .unwrap()
            .contains("dur="));
        assert!(!r.headers()["x-cidgate-tier"].is_empty());
        let headers = r.headers().clone();
        answers.push((headers, r.bytes().await.unwrap()));
    }
    // The first answer read the store; the later ones came whole from memory (the response
    // cache's short path) and say so, with the same bytes and every other header unchanged.
    let (first, first_body) = &answers[0];
    assert_ne!(first["x-cidgate-tier"], "cache");
    for (later, body) in &answers[1..] {
        assert_eq!(later["x-cidgate-tier"], "cache");
        assert_eq!(later["server-timing"], "cache;dur=0.000");
        assert_eq!(body, first_body);
        let rest = |h: &reqwest::header::HeaderMap| {
            let mut v: Vec<(String, String)> = h
                .iter()
                .filter(|(n, _)| !["date", "server-timing", "x-cidgate-tier"].contains(&n.as_str()))
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(rest(later), rest(first));
    }
    let _ = client()
        .get(format!("{}/ipfs/not-a-cid", s.url))
        .send()
        .await
        .unwrap();
    let m = metrics(&s).await;
    assert_eq!(
        metric_sum(
            &m,
            "cidgate_requests_total",
            "status=\"200\",format=\"raw\""
        ),
        3.0
    );
    assert_eq!(
        metric_sum(&m, "cidgate_requests_total", "status=\"400\""),
        1.0
    );
    assert!(metric_sum(&m, "cidgate_response_bytes_total", "") >= 93.0);
    assert!(
        metric_sum(&m, "cidgate_cache_hits_total", "") >= 2.0,
        "the second read is a cache hit"
    );
    assert_eq!(
        metric_sum(&m, "cidgate_served_by_total", "tier=\"cache\""),
        2.0,
        "answers from memory are counted under the cache tier"
    );
    assert!(m.contains("cidgate_ttfb_seconds_bucket"));
    assert!(m.contains("cidgate_request_duration_seconds_bucket"));
    assert!(m.contains("cidgate_tier_fetches_total{tier=\"store\",outcome=\"ok\"}"));
    assert!(m.contains("cidgate_inflight_requests"));
    assert!(m.contains("cidgate_cache_bytes"));
}

// Multi-threaded: the wait for the server's exit blocks a thread while the collector answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_an_otlp_collector() {
    // A minimal OTLP/HTTP collector that keeps what it is sent.
    let bodies: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = bodies.clone();
    let collector = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        store.lock().unwrap().push((path, body));
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let endpoint = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::spawn(dir, &[("CIDGATE_TELEMETRY__OTLP_ENDPOINT", &endpoint)], &[]);
    for _ in 0..3 {
        client()
            .get(format!("{}/ipfs/bafkqaaa?format=raw", s.url))
            .send()
            .await
            .unwrap();
    }
    // Shutdown flushes the batch.
    s.terminate();
    assert!(s.wait_exit(Duration::from_secs(15)));
    let got = bodies.lock().unwrap().clone();
    collector.abort();
    let traces: Vec<&(String, Bytes)> = got.iter().filter(|(p, _)| p == "/v1/traces").collect();
    assert!(
        !traces.is_empty(),
        "no OTLP export arrived: {:?}",
        got.iter().map(|g| &g.0).collect::<Vec<_>>()
    );
    let all: Vec<u8> = traces.iter().flat_map(|(_, b)| b.to_vec()).collect();
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("request"), "the request span is exported");
    assert!(text.contains("cidgate"), "with the service name");
}
