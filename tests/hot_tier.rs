//! The edge cache in front of a remote hot node: another cidgate process serving the trustless
//! protocol, and fault-injecting fake nodes.

mod common;

use std::time::{Duration, Instant};

use common::faulty::{Fault, FaultyNode};
use common::{client, metric_sum, metrics, parse_car, tier, Server};

const MIXED: &str = "bafybeidh6k2vzukelqtrjsmd4p52cpmltd2ufqrdtdg6yigi73in672fwu";
const LISTING: &str = "bafybeig6ka5mlwkl4subqhaiatalkcleo4jgnr3hqwvpmsqfca27cijp3i";

fn origin() -> Server {
    Server::start(&[
        "trustless_gateway_car/subdir-with-mixed-block-files.car",
        "dir_listing/fixtures.car",
    ])
}

fn front(hot_url: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("CIDGATE_HOT__BACKEND", "trustless"),
        ("CIDGATE_HOT__URL", hot_url),
    ];
    env.extend_from_slice(extra);
    Server::spawn(tempfile::tempdir().unwrap(), &env, &[])
}

async fn get(url: String) -> reqwest::Response {
    match client().get(&url).send().await {
        Ok(r) => r,
        Err(e) => panic!("GET {url}: {e:?}"),
    }
}

#[tokio::test]
async fn serves_from_the_hot_node_then_from_cache() {
    let o = origin();
    let f = front(&o.url, &[]);
    let path = format!("/ipfs/{MIXED}/subdir/multiblock.txt");
    let want = get(format!("{}{path}", o.url)).await.bytes().await.unwrap();
    let r = get(format!("{}{path}", f.url)).await;
    assert_eq!(r.status(), 200);
    assert!(
        tier(&r).contains("hot"),
        "first read comes from the hot node: {}",
        tier(&r)
    );
    assert!(r.headers()["server-timing"]
        .to_str()
        .unwrap()
        .contains("hot;dur="));
    assert_eq!(r.bytes().await.unwrap(), want);
    let r = get(format!("{}{path}", f.url)).await;
    assert_eq!(tier(&r), "cache");
    assert_eq!(r.bytes().await.unwrap(), want);
    // A CAR and a directory path, verified block by block on the way.
    let car = get(format!("{}/ipfs/{MIXED}?format=car", f.url))
        .await
        .bytes()
        .await
        .unwrap();
    let theirs = get(format!("{}/ipfs/{MIXED}?format=car", o.url))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(parse_car(&car).cids(), parse_car(&theirs).cids());
    let r = get(format!(
        "{}/ipfs/{LISTING}/%C4%85/%C4%99/file-%C5%BA%C5%82.txt",
        f.url
    ))
    .await;
    assert_eq!(
        r.text().await.unwrap(),
        "I am a txt file on path with utf8\n"
    );
    let m = metrics(&f).await;
    assert!(metric_sum(&m, "cidgate_cache_hits_total", "") > 0.0);
    assert!(metric_sum(&m, "cidgate_tier_fetches_total", "tier=\"hot") > 0.0);
}

#[tokio::test]
async fn concurrent_misses_cause_one_upstream_request() {
    let o = origin();
    let f = front(&o.url, &[]);
    let before = metric_sum(&metrics(&o).await, "cidgate_requests_total", "");
    let url = format!("{}/ipfs/{MIXED}/subdir/multiblock.txt", f.url);
    let c = client();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let c = c.clone();
            let url = url.clone();
            tokio::spawn(async move {
                c.get(url)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
                    .len()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1026);
    }
    let after = metric_sum(&metrics(&o).await, "cidgate_requests_total", "");
    assert_eq!(
        after - before,
        1.0,
        "200 concurrent requests cost exactly one upstream request"
    );
    assert!(metric_sum(&metrics(&f).await, "cidgate_coalesced_waiters_total", "") > 0.0);
}

#[tokio::test]
async fn a_lying_hot_node_is_detected_and_its_bytes_never_served() {
    let node = FaultyNode::start(Fault::WrongBytes).await;
    let f = front(&node.url, &[]);
    let cid = "bafkreihhpc5y2pqvl5rbe5uuyhqjouybfs3rvlmisccgzue2kkt5zq6upq";
    for path in [
        format!("/ipfs/{cid}?format=raw"),
        format!("/ipfs/{cid}"),
        format!("/ipfs/{cid}?format=car"),
    ] {
        let r = get(format!("{}{path}", f.url)).await;
        assert_eq!(r.status(), 502, "{path}");
        let body = r.bytes().await.unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("evil"), "{path}");
        assert!(
            !String::from_utf8_lossy(&body).contains("not the bytes"),
            "{path}"
        );
    }
    assert!(
        metric_sum(
            &metrics(&f).await,
            "cidgate_tier_verification_failures_total",
            "hot"
        ) >= 1.0
    );
}

#[tokio::test]
async fn a_stalled_hot_node_times_out_and_the_breaker_opens() {
    let node = FaultyNode::start(Fault::Stall).await;
    let f = front(
        &node.url,
        &[
            ("CIDGATE_HOT__TIMEOUT", "1s"),
            ("CIDGATE_HOT__BREAKER_FAILURES", "2"),
            ("CIDGATE_HOT__BREAKER_COOLDOWN", "60s"),
        ],
    );
    let raw = |i: u32| {
        let cid = cidgate::ipld::cid_v1_sha256(cidgate::ipld::RAW, &i.to_le_bytes());
        format!("{}/ipfs/{cid}?format=raw", f.url)
    };
    for i in 0..2 {
        let start = Instant::now();
        let r = get(raw(i)).await;
        assert_eq!(r.status(), 504);
        assert!(r.headers().contains_key("retry-after"));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "answered within the deadline"
        );
    }
    let asked = node.count();
    let start = Instant::now();
    let r = get(raw(99)).await;
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("circuit open"));
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "an open circuit fails fast"
    );
    assert_eq!(
        node.count(),
        asked,
        "an open circuit does not call the node"
    );
}

#[tokio::test]
async fn the_cache_keeps_serving_when_the_hot_node_dies() {
    let o = origin();
    let f = front(&o.url, &[("CIDGATE_HOT__TIMEOUT", "2s")]);
    let path = format!("/ipfs/{MIXED}/subdir/multiblock.txt");
    let first = get(format!("{}{path}", f.url)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.bytes().await.unwrap().len(), 1026);
    drop(o);
    let r = get(format!("{}{path}", f.url)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(tier(&r), "cache");
    assert_eq!(r.bytes().await.unwrap().len(), 1026);
    let start = Instant::now();
    let r = get(format!("{}/ipfs/{LISTING}/", f.url)).await;
    assert_eq!(r.status(), 502, "not cached and the node is gone");
    assert!(start.elapsed() < Duration::from_secs(5));
}
