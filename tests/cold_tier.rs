//! The cold tier: storage providers are other cidgate processes serving the trustless protocol
//! from their own stores; faults come from a proxy in front of them; discovery answers come from
//! a fake IPNI / Delegated Routing server. The gateway under test holds nothing and has no hot
//! node, so everything it serves is retrieved from providers and verified on the way.

mod common;

use std::path::Path;
use std::time::Duration;

use common::fault_proxy::{FaultProxy, ProxyFault};
use common::routing::{FakeProvider, RoutingServer};
use common::{cidgate, get, metric_sum, metrics, noise, parse_car, Server};

const MIB: usize = 1 << 20;

/// The content every provider holds: `site/` (a 12 MiB file of twelve leaves and a small nested
/// file) and `other/` (a different `big.bin`, used to answer for the wrong root).
struct Content {
    site: String,
    other: String,
    big: Vec<u8>,
}

fn write_tree(root: &Path) -> Content {
    let big = noise(12 * MIB, 7);
    let site = root.join("site");
    std::fs::create_dir_all(site.join("sub")).unwrap();
    std::fs::write(site.join("big.bin"), &big).unwrap();
    std::fs::write(site.join("sub/small.txt"), b"small and cold\n").unwrap();
    let other = root.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("big.bin"), noise(2 * MIB, 99)).unwrap();
    Content {
        site: String::new(),
        other: String::new(),
        big,
    }
}

/// A provider: a cidgate holding `site/` and `other/`.
fn provider() -> (Server, Content) {
    let src = tempfile::tempdir().unwrap();
    let mut content = write_tree(src.path());
    let dir = tempfile::tempdir().unwrap();
    for (name, slot) in [("site", &mut content.site), ("other", &mut content.other)] {
        let out = cidgate(
            dir.path(),
            &["add", src.path().join(name).to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        *slot = String::from_utf8(out.stdout).unwrap().trim().to_string();
    }
    (Server::spawn(dir, &[], &[]), content)
}

/// The gateway under test: empty store, no hot node, these providers and settings.
fn gateway(env: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("CIDGATE_COLD__FIRST_BYTE_TIMEOUT", "2s"),
        ("CIDGATE_COLD__IDLE_TIMEOUT", "1s"),
        ("CIDGATE_COLD__HEDGE_AFTER", "30s"),
        ("CIDGATE_COLD__DEADLINE", "20s"),
    ];
    all.extend_from_slice(env);
    Server::spawn(tempfile::tempdir().unwrap(), &all, &[])
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn providers_report(s: &Server) -> serde_json::Value {
    let body = get(&format!("{}/admin/providers", s.admin))
        .await
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn provider_entry<'a>(report: &'a serde_json::Value, url: &str) -> &'a serde_json::Value {
    report["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["url"] == url)
        .unwrap_or_else(|| panic!("{url} not in {report:#}"))
}

#[tokio::test]
async fn serves_files_paths_and_cars_from_storage_providers() {
    let (p, c) = provider();
    let g = gateway(&[("CIDGATE_COLD__PROVIDERS", &p.url)]);

    let r = get(&format!("{}/ipfs/{}/big.bin", g.url, c.site)).await;
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, "x-cidgate-tier").contains("cold"),
        "{}",
        header(&r, "x-cidgate-tier")
    );
    assert!(
        header(&r, "server-timing").contains("cold"),
        "{}",
        header(&r, "server-timing")
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), c.big.as_slice());

    // A directory path, then the file again: now from the edge cache.
    let r = get(&format!("{}/ipfs/{}/sub/small.txt", g.url, c.site)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "small and cold\n");
    let r = get(&format!("{}/ipfs/{}/big.bin", g.url, c.site)).await;
    assert_eq!(header(&r, "x-cidgate-tier"), "cache");
    assert_eq!(r.bytes().await.unwrap().len(), c.big.len());

    // A whole-DAG CAR of content not seen yet: the same blocks as the provider's own answer.
    let ours = get(&format!("{}/ipfs/{}?format=car", g.url, c.other))
        .await
        .bytes()
        .await
        .unwrap();
    let theirs = get(&format!("{}/ipfs/{}?format=car", p.url, c.other))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(parse_car(&ours).cids(), parse_car(&theirs).cids());
    assert!(parse_car(&ours).cids().len() >= 3);

    let report = providers_report(&g).await;
    let entry = provider_entry(&report, &p.url);
    assert!(entry["successes"].as_u64().unwrap() >= 2, "{entry:#}");
    assert!(
        entry["bytes"].as_u64().unwrap() >= 8 * MIB as u64,
        "{entry:#}"
    );
    let m = metrics(&g).await;
    assert!(metric_sum(&m, "cidgate_cold_fetches_total", "outcome=\"ok\"") >= 2.0);
    assert_eq!(
        metric_sum(&m, "cidgate_tier_verification_failures_total", ""),
        0.0
    );
}

#[tokio::test]
async fn faulty_providers_are_replaced_resumed_from_and_scored_down() {
    let (p, c) = provider();
    let faults = [
        ProxyFault::ResetMidBody { after: 5 * MIB / 2 },
        ProxyFault::FlipByte { at: 3 * MIB / 2 },
        ProxyFault::ExtraBlock,
        ProxyFault::WrongRoot(c.other.clone()),
        ProxyFault::Status(500),
        ProxyFault::SlowFirstByte(Duration::from_secs(5)),
        ProxyFault::StallBody {
            after: MIB + MIB / 2,
        },
    ];
    for fault in faults {
        let bad = FaultProxy::start(&p.url, fault.clone()).await;
        // The honest provider sits behind a faithful proxy that records what it is asked.
        let good = FaultProxy::start(&p.url, ProxyFault::None).await;
        let g = gateway(&[(
            "CIDGATE_COLD__PROVIDERS",
            &format!("{},{}", bad.url, good.url),
        )]);
        let r = get(&format!("{}/ipfs/{}/big.bin", g.url, c.site)).await;
        assert_eq!(r.status(), 200, "{fault:?}");
        let body = r.bytes().await.unwrap();
        assert!(body.as_ref() == c.big.as_slice(), "{fault:?}: wrong bytes");

        let report = providers_report(&g).await;
        let (b, h) = (
            provider_entry(&report, &bad.url),
            provider_entry(&report, &good.url),
        );
        assert!(
            b["score"].as_f64().unwrap() < h["score"].as_f64().unwrap(),
            "{fault:?}: faulty provider not scored down: {report:#}"
        );
        let expect = match fault {
            ProxyFault::FlipByte { .. } => "corrupt",
            ProxyFault::ExtraBlock | ProxyFault::WrongRoot(_) => "lie",
            ProxyFault::Status(_) | ProxyFault::ResetMidBody { .. } => "error",
            _ => "timeout",
        };
        let last = b["last_error"].as_str().unwrap_or_default();
        assert!(last.starts_with(expect), "{fault:?}: last error {last}");
        if let ProxyFault::ResetMidBody { .. } = fault {
            // The next provider was asked only for what was missing.
            let asked = good.paths();
            assert!(
                asked.iter().all(|p| p.contains("entity-bytes=")) && !asked.is_empty(),
                "not resumed: {asked:?}"
            );
            let from: u64 = asked[0]
                .split("entity-bytes=")
                .nth(1)
                .and_then(|s| s.split(':').next())
                .and_then(|s| s.parse().ok())
                .unwrap();
            assert!(from >= MIB as u64, "resumed from byte {from}: {asked:?}");
            let m = metrics(&g).await;
            assert_eq!(metric_sum(&m, "cidgate_cold_resumes_total", ""), 1.0);
        }
        if let ProxyFault::FlipByte { .. } = fault {
            let m = metrics(&g).await;
            assert!(
                metric_sum(
                    &m,
                    "cidgate_tier_verification_failures_total",
                    "tier=\"cold\""
                ) >= 1.0
            );
        }
    }
}

#[tokio::test]
async fn a_slow_provider_is_hedged_and_scores_survive_a_restart() {
    let (p, c) = provider();
    let slow = FaultProxy::start(&p.url, ProxyFault::SlowFirstByte(Duration::from_secs(3))).await;
    let env = [
        ("CIDGATE_COLD__PROVIDERS", format!("{},{}", slow.url, p.url)),
        ("CIDGATE_COLD__HEDGE_AFTER", "200ms".to_string()),
        ("CIDGATE_COLD__FIRST_BYTE_TIMEOUT", "10s".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let mut g = Server::spawn(dir, &env, &[]);
    let r = get(&format!("{}/ipfs/{}/sub/small.txt", g.url, c.site)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "small and cold\n");
    let m = metrics(&g).await;
    assert_eq!(metric_sum(&m, "cidgate_cold_hedges_total", ""), 1.0);
    // The provider's success is counted when its stream ends, which may be a moment after the
    // client has the whole file.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let report = providers_report(&g).await;
        let ok = provider_entry(&report, &p.url)["successes"]
            .as_u64()
            .unwrap_or(0);
        if ok >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no success counted: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Scores are saved at shutdown and loaded at start.
    g.terminate();
    assert!(g.wait_exit(Duration::from_secs(10)));
    let keep = std::mem::replace(&mut g.dir, tempfile::tempdir().unwrap());
    drop(g);
    let g = Server::spawn(keep, &env, &[]);
    assert_eq!(g.dir.path(), data);
    let report = providers_report(&g).await;
    assert!(
        provider_entry(&report, &p.url)["successes"]
            .as_u64()
            .unwrap()
            >= 1,
        "scores lost across a restart: {report:#}"
    );
}

#[tokio::test]
async fn providers_are_discovered_through_ipni_and_delegated_routing() {
    let (p, c) = provider();
    let routing = RoutingServer::start().await;
    let site: cidgate::ipld::Cid = c.site.parse().unwrap();
    routing.add(
        &site,
        FakeProvider::http_only("12D3KooWProviderOne", &p.url),
    );
    let bitswap_only = FakeProvider {
        peer_id: "12D3KooWBitswapOnly".into(),
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        http: false,
        bitswap: true,
        graphsync: None,
    };
    let other: cidgate::ipld::Cid = c.other.parse().unwrap();
    routing.add(&other, bitswap_only);

    // IPNI.
    let g = gateway(&[("CIDGATE_COLD__INDEXERS", &routing.url)]);
    let r = get(&format!("{}/ipfs/{}/sub/small.txt", g.url, c.site)).await;
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, "server-timing").contains("cold-discovery"),
        "{}",
        header(&r, "server-timing")
    );
    assert_eq!(r.text().await.unwrap(), "small and cold\n");
    assert!(routing.count("/cid/") >= 1);
    let report = providers_report(&g).await;
    assert_eq!(provider_entry(&report, &p.url)["origin"], "ipni");

    // Nobody has it: 404, and the empty answer is cached (and concurrent lookups coalesce).
    let missing = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    let before = routing.count("/cid/");
    let asks = (0..8).map(|_| get_status(format!("{}/ipfs/{missing}", g.url)));
    let statuses = futures::future::join_all(asks).await;
    assert!(statuses.iter().all(|s| *s == 404), "{statuses:?}");
    assert_eq!(get_status(format!("{}/ipfs/{missing}", g.url)).await, 404);
    assert_eq!(
        routing.count("/cid/") - before,
        1,
        "lookups not coalesced or cached"
    );

    // A provider reachable only over bitswap is unusable: counted, never asked.
    assert_eq!(get_status(format!("{}/ipfs/{}", g.url, c.other)).await, 404);
    let m = metrics(&g).await;
    assert!(metric_sum(&m, "cidgate_discovery_unusable_addresses_total", "") >= 1.0);
    drop(g);

    // Delegated Routing V1, asking for HTTP providers, NDJSON preferred.
    let g = gateway(&[("CIDGATE_COLD__ROUTERS", &routing.url)]);
    let r = get(&format!("{}/ipfs/{}/big.bin", g.url, c.site)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), c.big.as_slice());
    let asked = routing.requests();
    let (path, accept) = asked
        .iter()
        .find(|(p, _)| p.starts_with("/routing/v1/providers/"))
        .unwrap();
    assert!(
        path.contains("filter-protocols=transport-ipfs-gateway-http"),
        "{path}"
    );
    assert!(accept.contains("application/x-ndjson"), "{accept}");
}

async fn get_status(url: String) -> u16 {
    get(&url).await.status().as_u16()
}

#[tokio::test]
async fn failures_become_502_and_504_with_reasons() {
    let (p, c) = provider();
    let broken = FaultProxy::start(&p.url, ProxyFault::Status(500)).await;
    let g = gateway(&[("CIDGATE_COLD__PROVIDERS", &broken.url)]);
    let r = get(&format!("{}/ipfs/{}/big.bin", g.url, c.site)).await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("500"),
        "reason names the provider's answer: {text}"
    );
    // … but not the provider: internal addresses stay in the log (design invariant 10).
    let port = broken.url.rsplit(':').next().unwrap();
    assert!(
        !text.contains("127.0.0.1") && !text.contains(port),
        "no internal address in a public answer: {text}"
    );
    drop(g);

    let stalled =
        FaultProxy::start(&p.url, ProxyFault::SlowFirstByte(Duration::from_secs(30))).await;
    let g = gateway(&[
        ("CIDGATE_COLD__PROVIDERS", &stalled.url),
        ("CIDGATE_COLD__FIRST_BYTE_TIMEOUT", "500ms"),
    ]);
    let start = std::time::Instant::now();
    let r = get(&format!("{}/ipfs/{}/big.bin", g.url, c.site)).await;
    assert_eq!(r.status(), 504);
    assert!(!header(&r, "retry-after").is_empty());
    assert!(start.elapsed() < Duration::from_secs(15));
    drop(g);

    // Cut after the headers: the body ends without a clean end of stream.
    let cut = FaultProxy::start(&p.url, ProxyFault::ResetMidBody { after: 5 * MIB / 2 }).await;
    let g = gateway(&[("CIDGATE_COLD__PROVIDERS", &cut.url)]);
    let r = get(&format!("{}/ipfs/{}/big.bin", g.url, c.site)).await;
    assert_eq!(
        r.status(),
        200,
        "headers go out once the first blocks are verified"
    );
    assert!(
        r.bytes().await.is_err(),
        "a cut response must not look complete"
    );
}

#[tokio::test]
async fn paid_providers_follow_the_deal_policy() {
    let (p, c) = provider();
    let free = FaultProxy::start(&p.url, ProxyFault::None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cidgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"[cold]
providers = [
  {{ url = "{p}", label = "dear", price_per_gib = 5.0 }},
  {{ url = "{paid}", label = "paid", price_per_gib = 0.5 }},
]
daily_budget = 1.0
request_ceiling = 0.1
max_price_per_gib = 1.0
"#,
            p = p.url,
            paid = free.url,
        ),
    )
    .unwrap();
    let g = Server::spawn_with_config(tempfile::tempdir().unwrap(), &config, &[]);
    // 12 MiB at 0.5 FIL/GiB costs about 0.0059 FIL: within the ceiling.
    let r = get(&format!("{}/ipfs/{}/big.bin", g.url, c.site)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), c.big.len());
    let report = providers_report(&g).await;
    let spent = report["spend"]["today"].as_f64().unwrap();
    assert!(spent > 0.0058 && spent < 0.0062, "{report:#}");
    let declined = report["last_declined"].as_array().unwrap();
    assert!(
        declined
            .iter()
            .any(|d| d["reason"].as_str().unwrap().contains("max_price_per_gib")),
        "{report:#}"
    );
    let m = metrics(&g).await;
    assert!(metric_sum(&m, "cidgate_cold_spend_fil_total", "") > 0.0);
    assert!(metric_sum(&m, "cidgate_cold_deal_decisions_total", "declined") >= 1.0);
}

#[tokio::test]
async fn a_slow_reader_holds_the_provider_stream_back_instead_of_refetching() {
    // 20 MiB read at about 5 MiB/s: the provider could run far ahead, past what the edge cache
    // and the socket buffers between gateway and reader hold.
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("long.bin");
    std::fs::write(&file, noise(20 * MIB, 3)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = cidgate(dir.path(), &["add", file.to_str().unwrap()]);
    assert!(out.status.success());
    let root = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let p = Server::spawn(dir, &[], &[]);
    let counted = FaultProxy::start(&p.url, ProxyFault::None).await;
    // The edge cache is far smaller than the reader's lag could grow without backpressure.
    let g = gateway(&[
        ("CIDGATE_COLD__PROVIDERS", &counted.url),
        ("CIDGATE_CACHE__MEMORY", "8 MiB"),
    ]);
    let mut r = get(&format!("{}/ipfs/{root}?format=car", g.url)).await;
    assert_eq!(r.status(), 200);
    let mut car = Vec::new();
    let mut next_pause = MIB;
    while let Some(chunk) = r.chunk().await.unwrap() {
        car.extend_from_slice(&chunk);
        if car.len() >= next_pause {
            next_pause += MIB;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let theirs = get(&format!("{}/ipfs/{root}?format=car", p.url))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(parse_car(&car).cids(), parse_car(&theirs).cids());
    assert_eq!(
        counted.request_count(),
        1,
        "one CAR stream, no block-by-block refetches: {:?}",
        counted.paths()
    );
}

#[tokio::test]
async fn a_client_that_goes_away_stops_the_provider_stream() {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("long.bin");
    std::fs::write(&file, noise(48 * MIB, 9)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = cidgate(dir.path(), &["add", file.to_str().unwrap()]);
    let root = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let p = Server::spawn(dir, &[], &[]);
    let g = gateway(&[
        ("CIDGATE_COLD__PROVIDERS", &p.url),
        ("CIDGATE_CACHE__MEMORY", "8 MiB"),
    ]);
    let mut r = get(&format!("{}/ipfs/{root}?format=car", g.url)).await;
    let mut read = 0;
    while read < 2 * MIB {
        read += r.chunk().await.unwrap().unwrap().len();
    }
    drop(r);
    // The stream waits for its reader (bounded read-ahead), then stops when nobody reads.
    tokio::time::sleep(Duration::from_secs(13)).await;
    let cold = metric_sum(
        &metrics(&g).await,
        "cidgate_tier_bytes_total",
        "tier=\"cold\"",
    );
    assert!(
        cold < (24 * MIB) as f64,
        "{cold} bytes pulled from the provider for a reader that left after 2 MiB"
    );
    // The gateway is healthy and serves the content again from the start.
    let again = get(&format!("{}/ipfs/{root}?format=car", g.url)).await;
    assert_eq!(again.status(), 200);
    assert!(again.bytes().await.unwrap().len() > 48 * MIB);
}
