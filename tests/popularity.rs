//! Popularity end to end: a skewed workload against a gateway whose only source is a storage
//! provider (another cidgate); the popular items are prewarmed, then promoted into the embedded
//! store and survive the provider going away; one-offs are not. Plus the admin API (auth,
//! validation, prewarm, the Pinning Service API), the CLI, and sequential read-ahead.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::FakeCluster;
use common::fault_proxy::{FaultProxy, ProxyFault};
use common::{bin, cidgate, client, get, metric_sum, metrics, noise, tier, Server};

const MIB: usize = 1 << 20;

/// A provider holding `n` items, each a directory with `a.bin` (1.5 MiB, two leaves) and
/// `b.txt`; returns it and the item roots.
fn provider(n: usize) -> (Server, Vec<String>) {
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut roots = Vec::new();
    for i in 0..n {
        let item = src.path().join(format!("item{i}"));
        std::fs::create_dir_all(&item).unwrap();
        std::fs::write(item.join("a.bin"), noise(3 * MIB / 2, i as u64 + 11)).unwrap();
        std::fs::write(item.join("b.txt"), format!("item {i}\n")).unwrap();
        let out = cidgate(dir.path(), &["add", item.to_str().unwrap()]);
        assert!(out.status.success());
        roots.push(String::from_utf8(out.stdout).unwrap().trim().to_string());
    }
    (Server::spawn(dir, &[], &[]), roots)
}

async fn admin_json(s: &Server, path: &str) -> serde_json::Value {
    let body = get(&format!("{}{path}", s.admin))
        .await
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn store_pin<'a>(pins: &'a serde_json::Value, cid: &str) -> Option<&'a serde_json::Value> {
    pins["store"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["cid"] == cid)
}

const THRESHOLDS: [(&str, &str); 5] = [
    ("CIDGATE_POPULARITY__INTERVAL", "200ms"),
    ("CIDGATE_POPULARITY__PREWARM_THRESHOLD", "3"),
    ("CIDGATE_POPULARITY__PROMOTE_THRESHOLD", "6"),
    ("CIDGATE_POPULARITY__DEMOTE_THRESHOLD", "1"),
    ("CIDGATE_COLD__FIRST_BYTE_TIMEOUT", "2s"),
];

#[tokio::test]
async fn popular_items_are_prewarmed_then_promoted_and_outlive_the_provider() {
    let (p, roots) = provider(10);
    let counted = FaultProxy::start(&p.url, ProxyFault::None).await;
    let mut env: Vec<(&str, &str)> = THRESHOLDS.to_vec();
    env.push(("CIDGATE_COLD__PROVIDERS", &counted.url));
    let g = Server::spawn(tempfile::tempdir().unwrap(), &env, &[]);

    // Zipf-like demand: item 0 most, item 1 next, item 2 warm, the rest requested once.
    let demand = [10usize, 7, 4, 1, 1, 1, 1, 1, 1, 1];
    let mut schedule = Vec::new();
    for (i, n) in demand.iter().enumerate() {
        for _ in 0..*n {
            schedule.push(i);
        }
    }
    // Interleave deterministically so no item's requests all come first.
    schedule.sort_by_key(|i| (schedule_key(*i), *i));
    for i in schedule {
        let r = get(&format!("{}/ipfs/{}/a.bin", g.url, roots[i])).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), 3 * MIB / 2);
    }

    // Promotions happen within a few decision rounds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pins = admin_json(&g, "/admin/pins").await;
        let done = [0, 1]
            .iter()
            .all(|i| store_pin(&pins, &roots[*i]).is_some_and(|p| p["reason"] == "auto"));
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "not promoted: {pins:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pins = admin_json(&g, "/admin/pins").await;
    for root in &roots[2..] {
        assert!(
            store_pin(&pins, root).is_none(),
            "{root} promoted: {pins:#}"
        );
    }
    let popular = admin_json(&g, "/admin/popular?limit=3").await;
    assert_eq!(popular["items"][0]["cid"], roots[0].as_str());
    assert_eq!(popular["items"][0]["pin"]["state"], "pinned");

    // Item 2 crossed the prewarm threshold: its never-requested file is in the cache already.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_sum(
        &metrics(&g).await,
        "cidgate_popularity_actions_total",
        "action=\"prewarm\",outcome=\"ok\"",
    ) < 1.0
    {
        assert!(Instant::now() < deadline, "nothing prewarmed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = counted.request_count();
    let r = get(&format!("{}/ipfs/{}/b.txt", g.url, roots[2])).await;
    assert_eq!(r.status(), 200);
    assert_eq!(tier(&r), "cache");
    assert_eq!(r.text().await.unwrap(), "item 2\n");
    assert_eq!(
        counted.request_count(),
        before,
        "prewarmed content needs no provider"
    );
    // A one-off was not prewarmed: its other file comes from the provider.
    let r = get(&format!("{}/ipfs/{}/b.txt", g.url, roots[5])).await;
    assert!(tier(&r).contains("cold"), "{}", tier(&r));

    // The provider goes away and the gateway restarts: promoted items are still served.
    drop(counted);
    drop(p);
    let mut g = g;
    g.terminate();
    assert!(g.wait_exit(Duration::from_secs(10)));
    let dir = std::mem::replace(&mut g.dir, tempfile::tempdir().unwrap());
    drop(g);
    let mut env: Vec<(&str, &str)> = THRESHOLDS.to_vec();
    env.push(("CIDGATE_COLD__PROVIDERS", "http://127.0.0.1:9"));
    let g = Server::spawn(dir, &env, &[]);
    for i in [0, 1] {
        let r = get(&format!("{}/ipfs/{}/a.bin", g.url, roots[i])).await;
        assert_eq!(r.status(), 200);
        // From the store, or from the cache when the restored demand prewarmed it already
        // (or partly, "cache,store", when that prewarm is running during the read).
        assert!(
            tier(&r).split(',').all(|t| ["store", "cache"].contains(&t)),
            "{}",
            tier(&r)
        );
        assert_eq!(r.bytes().await.unwrap().len(), 3 * MIB / 2);
    }
    let r = get(&format!("{}/ipfs/{}/b.txt", g.url, roots[7])).await;
    assert!(r.status().is_server_error(), "{}", r.status());
    // Demand was saved at shutdown.
    let popular = admin_json(&g, "/admin/popular?limit=1").await;
    assert_eq!(popular["items"][0]["cid"], roots[0].as_str());
}

fn schedule_key(i: usize) -> usize {
    (i * 7919) % 13
}

#[tokio::test]
async fn admin_api_checks_tokens_and_input_and_speaks_the_pinning_service_api() {
    let (p, roots) = provider(2);
    let env = [
        ("CIDGATE_COLD__PROVIDERS", p.url.as_str()),
        ("CIDGATE_ADMIN__TOKEN", "s3cret"),
    ];
    let g = Server::spawn(tempfile::tempdir().unwrap(), &env, &[]);
    let c = client();
    let admin = |path: &str| format!("{}{path}", g.admin);

    // Writes need the token; reads of the plain admin API do not.
    let r = c
        .post(admin(&format!("/admin/pins/{}", roots[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(admin(&format!("/admin/pins/{}", roots[0])))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(admin("/admin/pins/not-a-cid"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("invalid CID"));
    assert_eq!(get(&admin("/admin/popular?limit=0")).await.status(), 400);
    assert_eq!(get(&admin("/admin/popular?limit=5")).await.status(), 200);
    let r = c
        .post(admin("/admin/import"))
        .body("not a car")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(admin("/admin/prewarm"))
        .bearer_auth("s3cret")
        .body("bafy-not-a-cid")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Prewarm streams progress and ends with a done line per CID.
    let r = c
        .post(admin("/admin/prewarm"))
        .bearer_auth("s3cret")
        .body(roots[1].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["done"], true, "{text}");
    // The directory, b.txt, and a.bin's root and two leaves.
    assert_eq!(last["blocks"], 5, "{text}");
    let r = get(&format!("{}/ipfs/{}/b.txt", g.url, roots[1])).await;
    assert_eq!(tier(&r), "cache");

    // The Pinning Service API.
    let r = c.get(admin("/pins")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(body["error"]["reason"].is_string());
    let r = c
        .post(admin("/pins"))
        .bearer_auth("s3cret")
        .header("content-type", "application/json")
        .body(serde_json::json!({"cid": "nope"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(admin("/pins"))
        .bearer_auth("s3cret")
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"cid": roots[0], "name": "first", "meta": {"app": "test"}})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let status: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let id = status["requestid"].as_str().unwrap().to_string();
    assert!(!status["delegates"].as_array().unwrap().is_empty());
    let pinned = wait_status(&g, &id, "pinned").await;
    assert_eq!(pinned["pin"]["name"], "first");
    let pins = admin_json(&g, "/admin/pins").await;
    assert_eq!(store_pin(&pins, &roots[0]).unwrap()["reason"], "operator");
    let listed = pin_list(&g, "?name=FIR&match=ipartial").await;
    assert_eq!(listed["count"], 1);
    assert_eq!(pin_list(&g, "?status=failed").await["count"], 0);
    assert_eq!(
        pin_list(&g, "?meta=%7B%22app%22%3A%22test%22%7D").await["count"],
        1
    );

    // Replace: a new request id for the other CID; the old one is gone and its pin released.
    let r = c
        .post(admin(&format!("/pins/{id}")))
        .bearer_auth("s3cret")
        .header("content-type", "application/json")
        .body(serde_json::json!({"cid": roots[1], "name": "second"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let replaced: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let id2 = replaced["requestid"].as_str().unwrap().to_string();
    assert_ne!(id2, id);
    wait_status(&g, &id2, "pinned").await;
    let r = c
        .get(admin(&format!("/pins/{id}")))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let pins = admin_json(&g, "/admin/pins").await;
    assert!(
        store_pin(&pins, &roots[0]).is_none(),
        "old pin kept: {pins:#}"
    );
    let r = c
        .delete(admin(&format!("/pins/{id2}")))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(pin_list(&g, "").await["count"], 0);
    let pins = admin_json(&g, "/admin/pins").await;
    assert!(store_pin(&pins, &roots[1]).is_none());

    // The CLI goes through the same API with the configured token.
    let cli = |args: &[&str]| {
        Command::new(bin())
            .arg("--data-dir")
            .arg(g.dir.path())
            .args(args)
            .env("CIDGATE_ADMIN__TOKEN", "s3cret")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = cli(&["pin", "add", &roots[1], "--name", "cli"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["pin", "ls"]);
    let ls = String::from_utf8(out.stdout).unwrap();
    // A header row, then the pin with the name it was given.
    assert!(ls.starts_with("CID "), "{ls}");
    let row = ls.lines().find(|l| l.starts_with(&roots[1])).unwrap();
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(words[1..3], ["cli", "operator"], "{ls}");
    let out = cli(&["pin", "rm", &roots[1]]);
    assert!(String::from_utf8(out.stdout).unwrap().contains("unpinned"));
    let out = cli(&["prewarm", &roots[0]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warmed = String::from_utf8(out.stdout).unwrap();
    assert!(warmed.contains("all in the edge cache"), "{warmed}");
    let out = cli(&["pin", "add", "nonsense"]);
    assert_eq!(out.status.code(), Some(1));
    let wrong = Command::new(bin())
        .arg("--data-dir")
        .arg(g.dir.path())
        .args(["pin", "add", &roots[0]])
        .env("CIDGATE_ADMIN__TOKEN", "guess")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
}

async fn pin_list(g: &Server, query: &str) -> serde_json::Value {
    let r = client()
        .get(format!("{}/pins{query}", g.admin))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query}");
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

async fn wait_status(g: &Server, id: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = client()
            .get(format!("{}/pins/{id}", g.admin))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        if v["status"] == want {
            return v;
        }
        assert!(Instant::now() < deadline, "{id} never {want}: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sequential_range_readers_are_read_ahead() {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("movie.bin");
    std::fs::write(&file, noise(16 * MIB, 5)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = cidgate(dir.path(), &["add", file.to_str().unwrap()]);
    let root = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let p = Server::spawn(dir, &[], &[]);
    let counted = FaultProxy::start(&p.url, ProxyFault::None).await;
    let g = Server::spawn(
        tempfile::tempdir().unwrap(),
        &[("CIDGATE_COLD__PROVIDERS", counted.url.as_str())],
        &[],
    );
    let range = |from: usize| {
        client()
            .get(format!("{}/ipfs/{root}", g.url))
            .header("range", format!("bytes={from}-{}", from + MIB - 1))
            .send()
    };
    for from in [0, MIB] {
        let r = range(from).await.unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.unwrap().len(), MIB);
    }
    // The second range continued the first: the next 8 MiB are read ahead.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_sum(
        &metrics(&g).await,
        "cidgate_popularity_actions_total",
        "action=\"prefetch\",outcome=\"ok\"",
    ) < 1.0
    {
        assert!(Instant::now() < deadline, "no read-ahead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Headers name the tiers used before they went out; the provider's request count tells
    // where the body came from.
    let before = counted.request_count();
    for from in [2 * MIB, 5 * MIB, 9 * MIB] {
        let r = range(from).await.unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.unwrap().len(), MIB);
    }
    // Nothing was fetched for these ranges themselves: at most the read-ahead moved on (the
    // read at 2 MiB continued the previous one).
    let after: Vec<String> = counted.paths()[before..].to_vec();
    for path in &after {
        assert!(
            path.contains("format=car"),
            "block fetched alone: {after:?}"
        );
        for from in [2 * MIB, 5 * MIB, 9 * MIB] {
            let own = format!("entity-bytes={from}:{}", from + MIB - 1);
            assert!(
                !path.contains(&own),
                "range {from} not read ahead: {after:?}"
            );
        }
    }
    let before = counted.request_count();
    // Beyond the read-ahead window the provider is asked again.
    let r = range(14 * MIB).await.unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), MIB);
    assert!(counted.request_count() > before);
}

#[tokio::test]
async fn promotions_and_operator_pins_go_to_an_ipfs_cluster_with_replication_factors() {
    let (p, roots) = provider(2);
    let cluster = FakeCluster::start().await;
    let mut env: Vec<(&str, &str)> = THRESHOLDS.to_vec();
    env.extend([
        ("CIDGATE_COLD__PROVIDERS", p.url.as_str()),
        ("CIDGATE_HOT__CLUSTER_URL", cluster.url.as_str()),
        ("CIDGATE_HOT__CLUSTER_REPLICATION_MIN", "2"),
        ("CIDGATE_HOT__CLUSTER_REPLICATION_MAX", "3"),
    ]);
    let g = Server::spawn(tempfile::tempdir().unwrap(), &env, &[]);
    for _ in 0..7 {
        let r = get(&format!("{}/ipfs/{}/b.txt", g.url, roots[0])).await;
        assert_eq!(r.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let pin = loop {
        if let Some(pin) = cluster.pin(&roots[0]) {
            break pin;
        }
        assert!(Instant::now() < deadline, "not added to the cluster");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The whole verified DAG was pushed: directory, b.txt, a.bin's root and two leaves.
    assert_eq!(pin.blocks, 5);
    assert_eq!(pin.options["replication-min"], "2");
    assert_eq!(pin.options["replication-max"], "3");
    assert_eq!(pin.options["meta-cidgate-pin"], "auto");
    assert!(pin.options["name"].contains(&roots[0]));

    // An operator pin is marked as such; unpinning deletes it from the cluster.
    let c = client();
    let r = c
        .post(format!("{}/admin/pins/{}?name=mine", g.admin, roots[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let pin = cluster.pin(&roots[1]).unwrap();
    assert_eq!(pin.options["meta-cidgate-pin"], "operator");
    assert_eq!(pin.options["name"], "mine");
    let r = c
        .delete(format!("{}/admin/pins/{}", g.admin, roots[1]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(cluster.deletes(), vec![roots[1].clone()]);
    let pins = admin_json(&g, "/admin/pins").await;
    assert_eq!(pins["target"], "cluster");
}

/// Two gateways of a fleet share one cluster: each promotes popular content as a claim of its
/// own (named, with metadata saying which gateway and what content), and a gateway whose demand
/// faded removes only its claim: the content stays while the other gateway still wants it.
#[tokio::test]
async fn fleet_gateways_promote_claims_into_a_shared_cluster_and_demote_only_their_own() {
    let (p, roots) = provider(1);
    let root = roots[0].clone();
    let cluster = FakeCluster::start().await;
    let mut env: Vec<(&str, &str)> = THRESHOLDS.to_vec();
    env.extend([
        ("CIDGATE_COLD__PROVIDERS", p.url.as_str()),
        ("CIDGATE_HOT__CLUSTER_URL", cluster.url.as_str()),
        ("CIDGATE_POPULARITY__HALF_LIFE", "2s"),
        ("CIDGATE_POPULARITY__DEMOTE_AFTER", "1s"),
    ]);
    let gateway = |name: &'static str| {
        let mut env = env.clone();
        env.push(("CIDGATE_POPULARITY__GATEWAY_NAME", name));
        Server::spawn(tempfile::tempdir().unwrap(), &env, &[])
    };
    let (g1, g2) = (gateway("gw-1"), gateway("gw-2"));
    let content: cid::Cid = root.parse().unwrap();
    let claim = |name: &str| {
        cidgate::tiers::pins::claim_block(name, &content)
            .unwrap()
            .0
            .to_string()
    };
    let (c1, c2) = (claim("gw-1"), claim("gw-2"));
    assert_ne!(c1, c2);
    let file = format!("/ipfs/{root}/b.txt");
    for _ in 0..8 {
        for g in [&g1, &g2] {
            assert_eq!(get(&format!("{}{file}", g.url)).await.status(), 200);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.pin(&c1).is_none() || cluster.pin(&c2).is_none() {
        assert!(
            Instant::now() < deadline,
            "both gateways' claims not pinned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (c, name) in [(&c1, "gw-1"), (&c2, "gw-2")] {
        let pin = cluster.pin(c).unwrap();
        assert_eq!(pin.options["meta-cidgate-gateway"], name);
        assert_eq!(pin.options["meta-cidgate-content"], root);
        assert_eq!(pin.options["meta-cidgate-pin"], "auto");
        assert_eq!(
            pin.options["name"],
            format!("cidgate {name} promoted {root}")
        );
        // The claim block first, then the whole verified DAG.
        assert_eq!(pin.blocks, 6);
        assert_eq!(pin.cids[0], *c);
    }
    assert!(
        cluster.pin(&root).is_none(),
        "the content itself is not pinned"
    );
    assert!(cluster.keeps(&root));

    // gw-2 keeps being asked; gw-1's demand fades and it demotes its own claim only.
    let deadline = Instant::now() + Duration::from_secs(40);
    while !cluster.deletes().contains(&c1) {
        assert!(Instant::now() < deadline, "gw-1 never demoted");
        assert_eq!(get(&format!("{}{file}", g2.url)).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(cluster.deletes(), vec![c1.clone()]);
    assert!(cluster.pin(&c2).is_some(), "gw-2's claim stays");
    assert!(cluster.keeps(&root), "the content stays in the hot layer");
    let pins = admin_json(&g1, "/admin/pins").await;
    let mine = pins["made_by_cidgate"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["cid"] == root.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["state"], "unpinned", "{mine}");

    // Once gw-2's demand fades too, the last claim goes and nothing keeps the content.
    let deadline = Instant::now() + Duration::from_secs(40);
    while !cluster.deletes().contains(&c2) {
        assert!(Instant::now() < deadline, "gw-2 never demoted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!cluster.keeps(&root));
}
