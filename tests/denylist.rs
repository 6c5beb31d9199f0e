//! IPIP-383 denylists in force (design invariant 9): blocked content answers 410 (or 451) on
//! every route, is never fetched from the hot node, never put in a CAR, and lists reload
//! without a restart.

mod common;

use std::time::{Duration, Instant};

use common::fault_proxy::{FaultProxy, ProxyFault};
use common::{cidgate, client, metric_sum, metrics, Server};
use sha2::Digest;

/// A site with `open.txt`, `secret.txt`, `dir/inner.txt` and `legal.txt`; returns the data
/// dir and the root CID.
fn site() -> (tempfile::TempDir, String) {
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = src.path().join("site");
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::write(root.join("open.txt"), "open\n").unwrap();
    std::fs::write(root.join("secret.txt"), "secret\n").unwrap();
    std::fs::write(root.join("legal.txt"), "legal\n").unwrap();
    std::fs::write(root.join("dir/inner.txt"), "inner\n").unwrap();
    let out = cidgate(dir.path(), &["add", root.to_str().unwrap()]);
    assert!(out.status.success());
    let cid = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (dir, cid)
}

/// The CID `/ipfs/{root}/{path}` resolves to, from the last entry of `X-Ipfs-Roots`.
async fn cid_of(s: &Server, root: &str, path: &str) -> String {
    let r = client()
        .head(format!("{}/ipfs/{root}/{path}", s.url))
        .send()
        .await
        .unwrap();
    let roots = r.headers()["x-ipfs-roots"].to_str().unwrap().to_string();
    roots.rsplit(',').next().unwrap().to_string()
}

/// The legacy double hash of the Bad Bits list: hex sha256 of `CIDv1-base32/path`.
fn double_hash(cid: &str, path: &str) -> String {
    let c = cid::Cid::try_from(cid).unwrap();
    let v1 = cid::Cid::new_v1(c.codec(), *c.hash());
    let text = format!("{}/{}", v1, path);
    let d = sha2::Sha256::digest(text.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// An IPNS key a list blocks, and one it does not (names of the conformance fixtures' records).
const BLOCKED_KEY: &str = "k51qzi5uqu5dit2ku9mutlfgwyz8u730on38kd10m97m36bjt66my99hb6103f";
const OPEN_KEY: &str = "k51qzi5uqu5dlkw8pxuw9qmqayfdeh4kfebhmreauqdc6a7c3y7d5i9fi8mk9w";

async fn status(url: String, host: Option<String>) -> u16 {
    let mut r = client().get(url);
    if let Some(h) = host {
        r = r.header("host", h);
    }
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn blocked_content_is_refused_on_every_route_and_never_fetched() {
    let (dir, root) = site();
    let hot = Server::spawn(dir, &[], &[]);
    let (secret, legal, sub) = (
        cid_of(&hot, &root, "secret.txt").await,
        cid_of(&hot, &root, "legal.txt").await,
        cid_of(&hot, &root, "dir/").await,
    );
    let counted = FaultProxy::start(&hot.url, ProxyFault::None).await;
    let lists = tempfile::tempdir().unwrap();
    let deny = lists.path().join("site.deny");
    std::fs::write(
        &deny,
        format!(
            "version: 1\nname: test\n---\n\
             # a CID, whatever path reaches it\n/ipfs/{secret}\n\
             # a path below a directory, double-hashed (Bad Bits form)\n//{}\n\
             # a directory and everything under it\n/ipfs/{sub}/*\n\
             # a DNSLink name (the name itself; `/ipns/name/*` would block its paths too)\n/ipns/blocked.example\n\
             # legal reasons\n/ipfs/{legal} gateway_status=451\n\
             # an IPNS key, by name\n/ipns/{BLOCKED_KEY}\n",
            double_hash(&root, "open.txt"),
        ),
    )
    .unwrap();
    let g = Server::spawn(
        tempfile::tempdir().unwrap(),
        &[
            ("CIDGATE_HOT__BACKEND", "trustless"),
            ("CIDGATE_HOT__URL", &counted.url),
            ("CIDGATE_DENYLIST__FILES", deny.to_str().unwrap()),
            ("CIDGATE_DENYLIST__POLL", "200ms"),
            (
                "CIDGATE_DNSLINK__NAMES",
                &format!("blocked.example=/ipfs/{root},open.example=/ipfs/{root}"),
            ),
        ],
        &[],
    );
    let base = &g.url;
    // The path gateway, the trustless gateway (raw and CAR), TAR, the subdomain gateway,
    // /ipns/ and a DNSLink host: each refuses.
    let cases = [
        (format!("{base}/ipfs/{root}/secret.txt"), None, 410),
        (format!("{base}/ipfs/{secret}"), None, 410),
        (format!("{base}/ipfs/{secret}?format=raw"), None, 410),
        (format!("{base}/ipfs/{secret}?format=car"), None, 410),
        (
            format!("{base}/ipfs/{root}/secret.txt?format=car"),
            None,
            410,
        ),
        (format!("{base}/ipfs/{root}/open.txt"), None, 410),
        // Other spellings of the same content path (an encoded separator, dot segments).
        (format!("{base}/ipfs/{root}/dir%2F..%2Fopen.txt"), None, 410),
        (format!("{base}/ipfs/{root}/dir%2Finner.txt"), None, 410),
        (format!("{base}/ipfs/{root}/dir/inner.txt"), None, 410),
        (format!("{base}/ipfs/{sub}/inner.txt"), None, 410),
        (format!("{base}/ipfs/{root}/legal.txt"), None, 451),
        (format!("{base}/ipfs/{secret}?format=tar"), None, 410),
        (
            format!("{base}/secret.txt"),
            Some(format!("{root}.ipfs.localhost")),
            410,
        ),
        (
            format!("{base}/ipns/blocked.example/dir/inner.txt"),
            None,
            410,
        ),
        (format!("{base}/ipns/blocked.example/"), None, 410),
        (format!("{base}/"), Some("blocked.example".to_string()), 410),
        (format!("{base}/ipns/open.example/secret.txt"), None, 410),
        // An IPNS key is refused by name, before any record is looked for, on both gateways.
        (format!("{base}/ipns/{BLOCKED_KEY}"), None, 410),
        (
            format!("{base}/"),
            Some(format!("{BLOCKED_KEY}.ipns.localhost")),
            410,
        ),
        (
            format!("{base}/ipns/{BLOCKED_KEY}?format=ipns-record"),
            None,
            410,
        ),
    ];
    for (url, host, want) in cases {
        assert_eq!(
            status(url.clone(), host.clone()).await,
            want,
            "{url} {host:?}"
        );
    }
    assert_eq!(status(format!("{base}/ipfs/{root}/dir/"), None).await, 410);
    // Another key is not refused by the list: it is only unknown here.
    let other = status(format!("{base}/ipns/{OPEN_KEY}"), None).await;
    assert!(other != 410 && other != 451, "{other}");
    // Not blocked: the site's own listing.
    assert_eq!(status(format!("{base}/ipfs/{root}/"), None).await, 200);
    let r = client()
        .get(format!("{base}/ipfs/{root}/secret.txt"))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age"));

    // The blocked blocks were never asked of the hot node.
    let asked = counted.paths();
    for blocked in [&secret, &legal] {
        assert!(
            !asked.iter().any(|p| p.contains(blocked.as_str())),
            "{blocked} fetched: {asked:?}"
        );
    }
    // A CAR of the whole site never carries a blocked block: the stream stops instead.
    let car = client()
        .get(format!("{base}/ipfs/{root}?format=car"))
        .send()
        .await
        .unwrap();
    assert_eq!(car.status(), 200);
    // The stream stops at the first blocked block: it ends unclean (no client or CDN takes it
    // for the whole DAG), and nothing blocked is in what arrived before.
    let (sent, end) = common::body_until_end(car).await;
    assert!(
        end.is_err(),
        "a CAR with blocked blocks left out ended clean"
    );
    for blocked in [&b"secret\n"[..], b"legal\n", b"inner\n"] {
        assert!(
            !sent.windows(blocked.len()).any(|w| w == blocked),
            "blocked bytes {:?} in a CAR",
            String::from_utf8_lossy(blocked)
        );
    }
    let m = metrics(&g).await;
    assert!(metric_sum(&m, "cidgate_blocked_requests_total", "") >= 10.0);
    assert!(metric_sum(&m, "cidgate_denylist_rules", "") >= 5.0);
}

/// The denylist holds on the paths that are not a client's request: a storage provider is
/// never asked for a blocked block, prewarming and promoting a site that holds one keep
/// nothing of it, and asking for it is not demand. Lifting the rule afterwards shows that the
/// block was never kept.
#[tokio::test]
async fn blocked_blocks_are_never_asked_of_providers_prewarmed_or_promoted() {
    let (dir, root) = site();
    let provider = Server::spawn(dir, &[], &[]);
    let secret = cid_of(&provider, &root, "secret.txt").await;
    let inner = cid_of(&provider, &root, "dir/inner.txt").await;
    let counted = FaultProxy::start(&provider.url, ProxyFault::None).await;
    let lists = tempfile::tempdir().unwrap();
    let deny = lists.path().join("one.deny");
    std::fs::write(&deny, format!("/ipfs/{secret}\n")).unwrap();
    let g = Server::spawn(
        tempfile::tempdir().unwrap(),
        &[
            ("CIDGATE_COLD__PROVIDERS", &counted.url),
            ("CIDGATE_DENYLIST__FILES", deny.to_str().unwrap()),
            ("CIDGATE_DENYLIST__POLL", "200ms"),
            ("CIDGATE_POPULARITY__INTERVAL", "200ms"),
            ("CIDGATE_POPULARITY__PREWARM_THRESHOLD", "3"),
            ("CIDGATE_POPULARITY__PROMOTE_THRESHOLD", "6"),
            ("CIDGATE_POPULARITY__DEMOTE_THRESHOLD", "1"),
        ],
        &[],
    );
    // A CAR of the whole site, asked first: the provider streams every block of the DAG,
    // the blocked one included; the gateway keeps none of it and its answer stops there.
    let car = client()
        .get(format!("{}/ipfs/{root}?format=car", g.url))
        .send()
        .await
        .unwrap();
    assert_eq!(car.status(), 200);
    let (_, end) = common::body_until_end(car).await;
    assert!(end.is_err(), "the CAR stopped at the blocked block");
    // Demand for the site (served from the provider) and for the blocked file (refused).
    for _ in 0..10 {
        let r = client()
            .get(format!("{}/ipfs/{root}/dir/inner.txt", g.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "inner\n");
        for url in [
            format!("{}/ipfs/{secret}", g.url),
            format!("{}/ipfs/{root}/secret.txt", g.url),
        ] {
            assert_eq!(status(url, None).await, 410);
        }
    }
    // The site is wanted enough to be prewarmed and promoted. Both walk its whole DAG, and a
    // DAG that holds blocked content is not pinned (as Kubo's `pin add` with a denylist): the
    // promotion fails, naming the block, and nothing of it is pinned.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = metrics(&g).await;
        let prewarms = metric_sum(&m, "cidgate_popularity_actions_total", "action=\"prewarm\"");
        let pins: serde_json::Value = client()
            .get(format!("{}/admin/pins", g.admin))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap();
        let attempted = pins["made_by_cidgate"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["cid"] == root.as_str())
            .cloned();
        // The record exists while the promotion walks the DAG ("pinning"): wait for its end.
        let ended = attempted.filter(|p| p["state"] != "pinning");
        if let (true, Some(p)) = (prewarms >= 1.0, ended) {
            assert_eq!(p["state"], "failed", "{pins:#}");
            assert!(
                p["last_error"].as_str().unwrap().contains("blocked"),
                "{pins:#}"
            );
            let stored = pins["store"].to_string();
            assert!(
                !stored.contains(&root) && !stored.contains(&secret),
                "blocked content pinned: {pins:#}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "site not prewarmed ({prewarms}) and promoted: {pins:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Refused requests are not demand.
    let popular: serde_json::Value = client()
        .get(format!("{}/admin/popular?limit=100", g.admin))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
    assert!(
        !popular.to_string().contains(&secret),
        "blocked content counted as demand: {popular:#}"
    );
    // The provider was asked for the site, never for the blocked block by name.
    let asked = counted.paths();
    assert!(asked.iter().any(|p| p.contains(root.as_str())), "{asked:?}");
    assert!(
        !asked.iter().any(|p| p.contains(secret.as_str())),
        "{secret} asked of the provider: {asked:?}"
    );

    // What the gateway kept survives it (blocks fetched are written to its store as cache
    // entries). The same store, served without the list and without the provider, holds the
    // file its clients read and not the blocked one. (Lifting the rule on the running gateway
    // would let its next prewarm round fetch the block legitimately.)
    let mut g = g;
    g.terminate();
    assert!(g.wait_exit(Duration::from_secs(10)));
    let dir = std::mem::replace(&mut g.dir, tempfile::tempdir().unwrap());
    drop(g);
    drop(counted);
    drop(provider);
    let g = Server::spawn(dir, &[], &[]);
    let held = |cid: &str| {
        client()
            .get(format!("{}/ipfs/{cid}?format=raw", g.url))
            .header("cache-control", "only-if-cached")
            .send()
    };
    assert_eq!(held(&inner).await.unwrap().status(), 200, "served, so kept");
    assert_eq!(held(&secret).await.unwrap().status(), 412, "never kept");
}

/// The site served with one local list, empty at first and polled every `poll`. Returns the
/// server, the list's folder (kept alive) and path, and the URL and CID of `secret.txt`.
async fn site_with_a_list(
    poll: &str,
) -> (
    Server,
    tempfile::TempDir,
    std::path::PathBuf,
    String,
    String,
) {
    let (dir, root) = site();
    let lists = tempfile::tempdir().unwrap();
    let deny = lists.path().join("live.deny");
    std::fs::write(&deny, "# nothing yet\n").unwrap();
    let g = Server::spawn(
        dir,
        &[
            ("CIDGATE_DENYLIST__FILES", deny.to_str().unwrap()),
            ("CIDGATE_DENYLIST__POLL", poll),
        ],
        &[],
    );
    let secret = cid_of(&g, &root, "secret.txt").await;
    let url = format!("{}/ipfs/{root}/secret.txt", g.url);
    (g, lists, deny, url, secret)
}

/// Sends SIGHUP to the server.
fn hup(g: &Server) {
    let _ = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(g.child.id().to_string())
        .status();
}

#[tokio::test]
async fn lists_reload_without_a_restart_and_cached_answers_follow() {
    let (g, _lists, deny, url, secret) = site_with_a_list("200ms").await;
    // Served twice: the second answer comes from the whole-response cache.
    for _ in 0..2 {
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "secret\n");
    }
    std::fs::write(&deny, format!("/ipfs/{secret}\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(url.clone(), None).await != 410 {
        assert!(Instant::now() < deadline, "the new rule never applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An exception appended later lifts it again; SIGHUP reloads at once as well.
    std::fs::write(&deny, format!("/ipfs/{secret}\n!/ipfs/{secret}\n")).unwrap();
    hup(&g);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(url.clone(), None).await != 200 {
        assert!(Instant::now() < deadline, "the exception never applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Blocked content cannot be pinned either.
    std::fs::write(&deny, format!("/ipfs/{secret}\n")).unwrap();
    hup(&g);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(url.clone(), None).await != 410 {
        assert!(Instant::now() < deadline, "the rule never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = client()
        .post(format!("{}/admin/pins/{secret}", g.admin))
        .send()
        .await
        .unwrap();
    assert!(!r.status().is_success(), "a blocked CID was pinned");
}

#[tokio::test]
async fn sighup_alone_reloads_lists_that_are_not_polled() {
    let (g, _lists, deny, url, secret) = site_with_a_list("1h").await;
    assert_eq!(status(url.clone(), None).await, 200);
    std::fs::write(&deny, format!("/ipfs/{secret}\n")).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status(url.clone(), None).await,
        200,
        "not polled: the file is read again on SIGHUP only"
    );
    hup(&g);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(url.clone(), None).await != 410 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload the list");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `cidgate import` straight into a store (no server running) applies the configured lists as
/// a server would: the blocked block is left out, so the root stays unpinned.
#[test]
fn an_offline_import_leaves_blocked_blocks_out() {
    let (dir, root) = site();
    let work = tempfile::tempdir().unwrap();
    let car = work.path().join("site.car");
    let out = cidgate(dir.path(), &["export", &root, "-o", car.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `add` stores a one-chunk file as a CIDv1 raw leaf.
    let digest = sha2::Sha256::digest(b"secret\n");
    let secret = cid::Cid::new_v1(
        0x55,
        cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap(),
    );
    let deny = work.path().join("offline.deny");
    std::fs::write(&deny, format!("/ipfs/{secret}\n")).unwrap();
    let import = |data: &std::path::Path, lists: &str| {
        let out = std::process::Command::new(common::bin())
            .arg("--data-dir")
            .arg(data)
            .args(["import", car.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .env("CIDGATE_DENYLIST__FILES", lists)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let blocked = import(&work.path().join("blocked"), deny.to_str().unwrap());
    assert!(blocked.contains("INCOMPLETE"), "{blocked}");
    let open = import(&work.path().join("open"), "");
    assert!(open.contains("complete, pinned"), "{open}");
}
