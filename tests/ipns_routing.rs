//! IPNS over Delegated Routing V1: `/ipns/{key}` names without a stored record are fetched from
//! a fake router (`GET /routing/v1/ipns/{name}`), verified, stored and cached by TTL; a record
//! past its TTL is answered at once while one background request refreshes it
//! (stale-while-revalidate); invalid and forged records and a router that is down answer 502.

mod common;

use std::time::{Duration, Instant};

use common::ipns_records::{inline_path, Key};
use common::routing::RoutingServer;
use common::{answer, metric_sum, metrics, Answer, Server};

const IPNS: &str = "/routing/v1/ipns/";

/// A gateway asking `router` for IPNS records (and, unused here, providers).
fn gateway(router: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    Server::spawn(
        dir,
        &[
            ("CIDGATE_COLD__ROUTERS", router),
            ("CIDGATE_COLD__DISCOVERY_TIMEOUT", "3s"),
            ("CIDGATE_COLD__NEGATIVE_TTL", "30s"),
        ],
        &[],
    )
}

async fn get(s: &Server, path: &str) -> Answer {
    answer(common::client().get(format!("{}{path}", s.url))).await
}

#[tokio::test]
async fn a_name_is_fetched_verified_stored_and_cached_for_its_ttl() {
    let router = RoutingServer::start().await;
    let key = Key::new(1);
    let record = key.record(&inline_path("first"), 1, Duration::from_secs(60));
    router.set_ipns(&key.name, record.clone());
    let s = gateway(&router.url);

    let a = get(&s, &format!("/ipns/{}", key.name)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(&a.body[..], b"first");
    let age: u64 = a
        .header("cache-control")
        .strip_prefix("public, max-age=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{}", a.header("cache-control")));
    assert!(age > 50 && age <= 60, "fresh for the record's TTL: {age}");
    let asked = router.requests();
    assert_eq!(router.count(IPNS), 1, "{asked:?}");
    assert!(asked
        .iter()
        .any(|(p, accept)| p.starts_with(IPNS) && accept == "application/vnd.ipfs.ipns-record"));

    // Within the TTL: answered from memory, the router is not asked again.
    for _ in 0..3 {
        let a = get(&s, &format!("/ipns/{}/", key.name)).await;
        assert_eq!(a.status, 200);
    }
    let a = get(&s, &format!("/ipns/{}?format=ipns-record", key.name)).await;
    assert_eq!(a.status, 200);
    assert!(a.body == record, "the record itself, as fetched");
    assert_eq!(router.count(IPNS), 1);

    // Stored like an imported record: the admin routing API serves it back.
    let stored = common::client()
        .get(format!("{}/routing/v1/ipns/{}", s.admin, key.name))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);
    assert!(stored.bytes().await.unwrap() == record);

    let m = metrics(&s).await;
    assert_eq!(
        metric_sum(&m, "cidgate_ipns_routing_fetches_total", "outcome=\"ok\""),
        1.0
    );
    assert!(
        metric_sum(
            &m,
            "cidgate_ipns_routing_answers_total",
            "outcome=\"fresh\""
        ) >= 3.0
    );
}

#[tokio::test]
async fn a_stale_record_answers_at_once_while_one_refresh_runs() {
    let router = RoutingServer::start().await;
    let key = Key::new(2);
    router.set_ipns(
        &key.name,
        key.record(&inline_path("old"), 1, Duration::from_secs(1)),
    );
    let s = gateway(&router.url);
    let path = format!("/ipns/{}", key.name);
    let a = get(&s, &path).await;
    assert_eq!(&a.body[..], b"old");
    assert_eq!(router.count(IPNS), 1);

    // The TTL passes; the router now has a new record but is slow to say so.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    router.set_ipns(
        &key.name,
        key.record(&inline_path("new"), 2, Duration::from_secs(60)),
    );
    router.set_ipns_delay(Duration::from_millis(1500));
    let start = Instant::now();
    let a = get(&s, &path).await;
    let took = start.elapsed();
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], b"old", "the held record, at once");
    assert!(
        took < Duration::from_millis(700),
        "not delayed by the router: {took:?}"
    );
    assert_eq!(
        a.header("cache-control"),
        "public, max-age=0",
        "no freshness is left to give"
    );
    // More requests during the refresh: still the old value, still one router request.
    for _ in 0..3 {
        let a = get(&s, &path).await;
        assert_eq!(&a.body[..], b"old");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while router.count(IPNS) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(router.count(IPNS), 2, "one background request");

    // Once it is back: the new value, fresh, without asking again.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let a = get(&s, &path).await;
    assert_eq!(&a.body[..], b"new");
    assert!(!a.header("cache-control").ends_with("max-age=0"));
    assert_eq!(router.count(IPNS), 2);
    let m = metrics(&s).await;
    assert!(
        metric_sum(
            &m,
            "cidgate_ipns_routing_answers_total",
            "outcome=\"stale\""
        ) >= 4.0
    );
}

#[tokio::test]
async fn a_stale_record_is_never_answered_past_its_validity() {
    let router = RoutingServer::start().await;
    let key = Key::new(5);
    // The gateway first: its start on a loaded machine must not eat into the validity.
    let s = gateway(&router.url);
    let until = std::time::SystemTime::now() + Duration::from_secs(3);
    router.set_ipns(
        &key.name,
        key.record_until(&inline_path("old"), 1, Duration::from_secs(1), until),
    );
    let path = format!("/ipns/{}", key.name);
    assert_eq!(&get(&s, &path).await.body[..], b"old");

    // Past its TTL but within its validity: answered at once while the router is slow.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    router.set_ipns_delay(Duration::from_millis(1500));
    let start = Instant::now();
    let a = get(&s, &path).await;
    assert_eq!(&a.body[..], b"old");
    assert!(start.elapsed() < Duration::from_millis(700));

    // Past its validity the record is dead: the gateway waits for the router rather than
    // answer with it. The router still has only the dead record: it is refused, not served.
    let wait = until
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(300)).await;
    let a = get(&s, &path).await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert_ne!(&a.body[..], b"old");

    // A new record from the router is waited for and answered.
    router.set_ipns(
        &key.name,
        key.record(&inline_path("new"), 2, Duration::from_secs(60)),
    );
    let start = Instant::now();
    let a = get(&s, &path).await;
    assert_eq!(&a.body[..], b"new");
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "waited for the router: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn invalid_and_forged_records_and_a_router_that_is_down_answer_502() {
    let router = RoutingServer::start().await;
    let (a_key, b_key) = (Key::new(3), Key::new(4));
    // A's record with its signature damaged; B's (valid) record served for C's name.
    let mut damaged = a_key
        .record(&inline_path("x"), 1, Duration::from_secs(60))
        .to_vec();
    damaged[5] ^= 0x01;
    router.set_ipns(&a_key.name, damaged.into());
    let c_key = Key::new(5);
    router.set_ipns(
        &c_key.name,
        b_key.record(&inline_path("forged"), 9, Duration::from_secs(60)),
    );
    let s = gateway(&router.url);
    for name in [&a_key.name, &c_key.name] {
        let a = get(&s, &format!("/ipns/{name}")).await;
        assert_eq!(a.status, 502, "{name}: {}", a.text());
        assert!(a.text().contains("not valid"), "{}", a.text());
    }
    // A name no router knows.
    let a = get(&s, &format!("/ipns/{}", Key::new(6).name)).await;
    assert_eq!(a.status, 502, "{}", a.text());
    let m = metrics(&s).await;
    assert_eq!(
        metric_sum(
            &m,
            "cidgate_ipns_routing_fetches_total",
            "outcome=\"invalid\""
        ),
        2.0
    );

    // A router that is down, and nothing held.
    let down = format!("http://127.0.0.1:{}", common::dns::free_port());
    let s = gateway(&down);
    let start = Instant::now();
    let a = get(&s, &format!("/ipns/{}", Key::new(7).name)).await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert!(!a.text().contains("127.0.0.1"), "{}", a.text());
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_newer_stored_record_is_never_replaced_by_an_older_fetched_one() {
    let router = RoutingServer::start().await;
    let key = Key::new(8);
    router.set_ipns(
        &key.name,
        key.record(&inline_path("older"), 3, Duration::from_secs(60)),
    );
    let s = gateway(&router.url);
    let put = common::client()
        .put(format!("{}/routing/v1/ipns/{}", s.admin, key.name))
        .body(key.record(&inline_path("newer"), 5, Duration::from_secs(60)))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    // Held but never checked: answered at once, the routers asked in the background.
    let a = get(&s, &format!("/ipns/{}", key.name)).await;
    assert_eq!(&a.body[..], b"newer");
    let deadline = Instant::now() + Duration::from_secs(5);
    while router.count(IPNS) < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = get(&s, &format!("/ipns/{}", key.name)).await;
    assert_eq!(&a.body[..], b"newer", "sequence 5 stays");
    assert_eq!(router.count(IPNS), 1);

    // A record stored through the admin API is served at once, not once the one the gateway
    // remembers expires.
    let put = common::client()
        .put(format!("{}/routing/v1/ipns/{}", s.admin, key.name))
        .body(key.record(&inline_path("newest"), 6, Duration::from_secs(60)))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let a = get(&s, &format!("/ipns/{}", key.name)).await;
    assert_eq!(&a.body[..], b"newest");
}
