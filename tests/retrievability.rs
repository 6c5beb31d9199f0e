//! Retrievability checks and repairs: `cidgate check` (offline and through the server), a store
//! block corrupted on disk and rewritten, providers that serve corrupt bytes or fail, content
//! nowhere (exit 1), the hot layer asked whoever pinned there, a lost hot-layer pin pushed again
//! (by a live server and by an offline check), the admin API and its filter, metrics, records
//! that survive a restart, provider time to first byte, and the scheduled checks.

mod common;

use std::convert::Infallible;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::cluster::FakeCluster;
use common::fault_proxy::{FaultProxy, ProxyFault};
use common::{bin, cidgate, client, metric_sum, metrics, noise, serve_http, Server};

const MIB: usize = 1 << 20;

/// A site of one 1.5 MiB file (two leaves) and a small one; adds it to the store in `dir` and
/// returns its root CID and the file's bytes.
fn add_site(dir: &Path) -> (String, Vec<u8>) {
    add_site_seeded(dir, 42)
}

/// [`add_site`] with the file's bytes drawn from `seed` (another seed, another root).
fn add_site_seeded(dir: &Path, seed: u64) -> (String, Vec<u8>) {
    let src = tempfile::tempdir().unwrap();
    let site = src.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let data = noise(3 * MIB / 2, seed);
    std::fs::write(site.join("a.bin"), &data).unwrap();
    std::fs::write(site.join("b.txt"), "b\n").unwrap();
    let out = cidgate(dir, &["add", site.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
        data,
    )
}

/// `cidgate check CID` on `dir` with extra environment.
fn check(dir: &Path, cid: &str, env: &[(&str, &str)]) -> Output {
    std::process::Command::new(bin())
        .arg("--data-dir")
        .arg(dir)
        .args(["check", cid])
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

async fn json_of(r: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Flips one byte of the store's segment files inside the first copy of `needle` (a piece of
/// a block).
fn corrupt_store(dir: &Path, needle: &[u8]) {
    use std::os::unix::fs::FileExt;
    for entry in std::fs::read_dir(dir.join("blocks")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            // Rot on the disk: the byte changes on the disk, not in memory. A direct write of
            // the page holding it goes around the page cache, and the kernel drops its cached
            // copy, as memory pressure would drop a page before a read finds the rot.
            let at = at + needle.len() / 2;
            const PAGE: usize = 4096;
            let start = at / PAGE * PAGE;
            assert!(start + PAGE <= bytes.len(), "a page inside the file");
            let mut scratch = vec![0u8; 2 * PAGE];
            let align = scratch.as_ptr().align_offset(PAGE);
            let page = &mut scratch[align..align + PAGE];
            page.copy_from_slice(&bytes[start..start + PAGE]);
            page[at - start] ^= 0x55;
            let mut open = std::fs::OpenOptions::new();
            open.write(true);
            #[cfg(target_os = "linux")]
            {
                use std::os::unix::fs::OpenOptionsExt;
                open.custom_flags(libc::O_DIRECT);
            }
            let file = open.open(&path).unwrap();
            file.write_all_at(page, start as u64).unwrap();
            file.sync_all().unwrap();
            return;
        }
    }
    panic!("the block's bytes are in no segment file");
}

// Multi-threaded: the blocking `cidgate check` runs while the fault proxy serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_store_block_is_found_and_rewritten_and_bad_providers_are_named() {
    // The provider holds the same site (same CIDs).
    let far = tempfile::tempdir().unwrap();
    let (root, data) = add_site(far.path());
    let provider = Server::spawn(far, &[], &[]);
    let proxy = FaultProxy::start(&provider.url, ProxyFault::None).await;
    let env = [("CIDGATE_COLD__PROVIDERS", proxy.url.as_str())];

    let dir = tempfile::tempdir().unwrap();
    let (same, _) = add_site(dir.path());
    assert_eq!(same, root);

    // Everything in order: the store scrubbed, the provider sampled.
    let out = check(dir.path(), &root, &env);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with(&format!("{root}: healthy")), "{text}");
    assert!(text.contains("store") && text.contains("blocks"), "{text}");
    assert!(text.contains(&proxy.url), "{text}");
    assert!(!text.contains("FAILED"), "{text}");

    // A block rots on disk: found by the scrub, fetched again from the provider, rewritten.
    corrupt_store(dir.path(), &data[MIB + 1000..MIB + 1064]);
    let out = check(dir.path(), &root, &env);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("repaired:") && text.contains("corrupt"),
        "{text}"
    );
    assert!(text.starts_with(&format!("{root}: healthy")), "{text}");
    let out = check(dir.path(), &root, &env);
    assert!(
        !stdout(&out).contains("repaired"),
        "fixed for good: {}",
        stdout(&out)
    );

    // The gateway serves the file whole from its own store again, and checks through it.
    let g = Server::spawn(dir, &env, &[]);
    let got = client()
        .get(format!("{}/ipfs/{root}/a.bin", g.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], &data[..]);

    // A provider that serves corrupt bytes fails its sample; the root is flagged.
    proxy.set_fault(ProxyFault::FlipByte { at: 200 });
    let c = client();
    let r = c
        .post(format!("{}/admin/retrievability/{root}", g.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rec = json_of(r).await;
    assert_eq!(rec["state"], "under_replicated", "{rec:#}");
    let provider_place = rec["places"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "provider")
        .unwrap()
        .clone();
    assert_eq!(provider_place["ok"], false);
    assert!(
        provider_place["detail"].as_str().unwrap().contains("hash")
            || provider_place["detail"].as_str().unwrap().contains("verif"),
        "{provider_place:#}"
    );

    // A provider that is down is named with its failure; the listing shows failing roots.
    proxy.set_fault(ProxyFault::Status(502));
    let report = json_of(
        c.post(format!("{}/admin/retrievability/{root}", g.admin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(report["places"].to_string().contains("502"), "{report:#}");
    let failing = json_of(
        c.get(format!("{}/admin/retrievability?failing=true", g.admin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(failing["roots"][0]["root"], root.as_str());
    assert_eq!(failing["states"]["under_replicated"], 1);
    let p = &failing["providers"][0];
    assert!(p["success_rate"].as_f64().unwrap() < 1.0, "{p:#}");
    assert!(
        failing["events"].to_string().contains("flagged"),
        "{failing:#}"
    );
    let m = metrics(&g).await;
    assert!(metric_sum(&m, "cidgate_retrieval_checks_total", "result=\"failed\"") >= 2.0);
    assert_eq!(
        metric_sum(
            &m,
            "cidgate_retrievability_roots",
            "state=\"under_replicated\""
        ),
        1.0
    );

    // Content nowhere: exit 1.
    let nowhere = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    let out = std::process::Command::new(bin())
        .args(["--admin", &g.admin, "check", nowhere])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("unretrievable"), "{}", stdout(&out));
}

#[tokio::test]
async fn pinned_roots_are_checked_on_a_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = add_site(dir.path());
    let g = Server::spawn(
        dir,
        &[
            ("CIDGATE_RETRIEVAL_CHECKS__INTERVAL", "1s"),
            ("CIDGATE_RETRIEVAL_CHECKS__MIN_PROVIDERS", "0"),
        ],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = json_of(
            client()
                .get(format!("{}/admin/retrievability", g.admin))
                .send()
                .await
                .unwrap(),
        )
        .await;
        if let Some(r) = report["roots"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["root"] == root.as_str()))
        {
            assert_eq!(r["state"], "healthy", "{r:#}");
            assert_eq!(r["places"][0]["place"], "store");
            break;
        }
        assert!(Instant::now() < deadline, "never checked: {report:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = client().get(format!("{}/", g.admin)).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("Retrievability"), "a status page panel");
}

/// Pins `root` in the fake cluster as someone else would (not this gateway's promoter): its CAR,
/// read from `from`, uploaded to `/add?format=car`.
async fn cluster_add(cluster: &FakeCluster, from: &str, root: &str) {
    let car = client()
        .get(format!("{from}/ipfs/{root}?format=car"))
        .header("accept", "application/vnd.ipld.car")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(car.to_vec())
            .file_name("dag.car")
            .mime_str("application/vnd.ipld.car")
            .unwrap(),
    );
    let r = client()
        .post(format!("{}/add?format=car", cluster.url))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(cluster.pin(root).is_some());
}

/// The fake cluster loses the pin of `root`.
async fn cluster_lose(cluster: &FakeCluster, root: &str) {
    let r = client()
        .delete(format!("{}/pins/{root}", cluster.url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(cluster.pin(root).is_none());
}

/// The line of `place` in a `cidgate check` report.
fn line_of<'a>(text: &'a str, place: &str) -> &'a str {
    text.lines()
        .find(|l| l.trim_start().starts_with(place))
        .unwrap_or_else(|| panic!("no {place} line in:\n{text}"))
}

/// The hot layer answers for content this gateway never pinned there: an offline `cidgate check`
/// (no promoter running) of a root not in its store asks the Cluster whether it pins it and the
/// hot node for a sampled block, and the root is retrievable from there; once the hot node stops
/// serving it, the root is retrievable from nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_layer_is_asked_about_roots_this_gateway_never_pinned_there() {
    let hot_dir = tempfile::tempdir().unwrap();
    let (root, _) = add_site(hot_dir.path());
    let hot = Server::spawn(hot_dir, &[], &[]);
    let hot_url = hot.url.clone();
    let cluster = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CIDGATE_HOT__BACKEND", "trustless"),
        ("CIDGATE_HOT__URL", hot_url.as_str()),
        ("CIDGATE_HOT__CLUSTER_URL", cluster.url.as_str()),
    ];

    // Held by the hot node, pinned nowhere: retrievable (and said to be unpinned).
    let out = check(dir.path(), &root, &env);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with(&format!("{root}: healthy")), "{text}");
    let line = line_of(&text, "cluster");
    assert!(line.contains(" ok "), "{text}");
    assert!(line.contains("not pinned there"), "{text}");
    assert!(line.contains("served and verified"), "{text}");

    // Pinned in the Cluster by someone else: asked, and said so.
    cluster_add(&cluster, &hot.url, &root).await;
    let out = check(dir.path(), &root, &env);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let line = line_of(&text, "cluster");
    assert!(
        line.contains("pinned; block") && !line.contains("not pinned"),
        "{text}"
    );

    // Still pinned, but the node serves nothing: retrievable from no place, exit 1.
    drop(hot);
    let out = check(dir.path(), &root, &env);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with(&format!("{root}: unretrievable")),
        "{text}"
    );
    assert!(line_of(&text, "cluster").contains("FAILED"), "{text}");
}

async fn report_of(admin: &str, query: &str) -> serde_json::Value {
    json_of(
        client()
            .get(format!("{admin}/admin/retrievability{query}"))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn check_now(admin: &str, root: &str) -> serde_json::Value {
    let r = client()
        .post(format!("{admin}/admin/retrievability/{root}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    json_of(r).await
}

fn root_in<'a>(report: &'a serde_json::Value, root: &str) -> &'a serde_json::Value {
    report["roots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["root"] == root)
        .unwrap_or_else(|| panic!("{root} not in {report:#}"))
}

fn place_of<'a>(record: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    record["places"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} place in {record:#}"))
}

/// On a live server: a healthy root and a failing one (the `?failing=true` filter keeps only the
/// latter), a corrupt store block and a pin the Cluster lost repaired by one check, the repairs
/// as events and in `cidgate_repairs_total`, the provider's success rate in
/// `cidgate_provider_check_success_ratio`, the number of providers that served each root; the
/// records survive a restart (last success, last failure and why); and an offline `cidgate check`
/// loads the promoter's records, so it too pushes a lost pin again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repairs_and_results_are_visible_on_a_live_server_and_survive_a_restart() {
    let far = tempfile::tempdir().unwrap();
    let (root, data) = add_site(far.path());
    let provider = Server::spawn(far, &[], &[]);
    let cluster = FakeCluster::start().await;

    let dir = tempfile::tempdir().unwrap();
    assert_eq!(add_site(dir.path()).0, root);
    // Only in this store: no provider has it.
    let (lonely, _) = add_site_seeded(dir.path(), 7);
    let env = [
        ("CIDGATE_COLD__PROVIDERS", provider.url.as_str()),
        ("CIDGATE_HOT__CLUSTER_URL", cluster.url.as_str()),
        ("CIDGATE_RETRIEVAL_CHECKS__MIN_PROVIDERS", "1"),
    ];
    let g = Server::spawn_in(dir.path(), &env);
    let c = client();

    // An operator pin through this gateway goes to the Cluster (the promoter records it).
    let r = c
        .post(format!("{}/admin/pins/{root}", g.admin))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(cluster.pin(&root).is_some());

    let rec = check_now(&g.admin, &root).await;
    assert_eq!(rec["state"], "healthy", "{rec:#}");
    assert_eq!(rec["hot"], true, "{rec:#}");
    assert_eq!(rec["providers"], 1, "{rec:#}");
    assert_eq!(place_of(&rec, "hot")["place"], "cluster", "{rec:#}");
    assert_eq!(place_of(&rec, "hot")["ok"], true, "{rec:#}");
    let rec = check_now(&g.admin, &lonely).await;
    assert_eq!(rec["state"], "under_replicated", "{rec:#}");
    assert_eq!(rec["providers"], 0, "{rec:#}");
    assert_eq!(rec["hot"], true, "{rec:#}");

    // The filter: both roots listed, only the failing one with ?failing=true.
    let all = report_of(&g.admin, "").await;
    assert_eq!(all["roots"].as_array().unwrap().len(), 2, "{all:#}");
    assert_eq!(all["states"]["healthy"], 1, "{all:#}");
    assert_eq!(all["states"]["under_replicated"], 1, "{all:#}");
    let failing = report_of(&g.admin, "?failing=true").await;
    let listed: Vec<&str> = failing["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["root"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [lonely.as_str()], "{failing:#}");

    // A block rots on disk and the Cluster loses the pin; one check repairs both.
    corrupt_store(dir.path(), &data[MIB + 1000..MIB + 1064]);
    cluster_lose(&cluster, &root).await;
    let rec = check_now(&g.admin, &root).await;
    assert_eq!(rec["state"], "healthy", "{rec:#}");
    let store = place_of(&rec, "store");
    assert!(
        store["repaired"].as_str().unwrap_or("").contains("corrupt"),
        "{rec:#}"
    );
    let hot = place_of(&rec, "hot");
    assert!(
        hot["repaired"]
            .as_str()
            .unwrap_or("")
            .contains("pushed again"),
        "{rec:#}"
    );
    assert!(cluster.pin(&root).is_some(), "pushed to the Cluster again");

    // The repairs are events of the admin API, and metrics.
    let report = report_of(&g.admin, "").await;
    let events = report["events"].as_array().unwrap();
    for kind in ["repaired_block", "repushed_pin"] {
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == kind && e["root"] == root.as_str()),
            "no {kind} event: {report:#}"
        );
    }
    let m = metrics(&g).await;
    assert_eq!(
        metric_sum(&m, "cidgate_repairs_total", "state=\"store_block\""),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "cidgate_repairs_total", "state=\"hot_pin\""),
        1.0,
        "{m}"
    );
    // Served `root` twice, not `lonely`: 2 of 3.
    let label = format!("provider=\"{}\"", provider.url);
    let ratio = metric_sum(&m, "cidgate_provider_check_success_ratio", &label);
    assert!((ratio - 2.0 / 3.0).abs() < 1e-9, "{ratio}\n{m}");
    assert_eq!(report["providers"][0]["checks"], 3, "{report:#}");

    // A restart (killed, not stopped: the records are written at every check) keeps them.
    let before = report;
    drop(g);
    let g = Server::spawn_in(dir.path(), &env);
    let after = report_of(&g.admin, "").await;
    for r in [&root, &lonely] {
        let (b, a) = (root_in(&before, r), root_in(&after, r));
        for field in [
            "state",
            "checked_at",
            "last_success",
            "last_failure",
            "last_error",
            "hot",
            "providers",
        ] {
            assert_eq!(a[field], b[field], "{field} of {r}: {after:#}");
        }
    }
    let l = root_in(&after, &lonely);
    assert!(l["last_failure"].as_f64().is_some(), "{l:#}");
    assert!(
        l["last_error"]
            .as_str()
            .unwrap()
            .contains(provider.url.as_str()),
        "why, with the place: {l:#}"
    );
    assert!(root_in(&after, &root)["last_success"].as_f64().is_some());
    assert_eq!(after["providers"], before["providers"], "{after:#}");
    let m = metrics(&g).await;
    let ratio = metric_sum(&m, "cidgate_provider_check_success_ratio", &label);
    assert!(
        (ratio - 2.0 / 3.0).abs() < 1e-9,
        "after the restart: {ratio}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "cidgate_retrievability_roots",
            "state=\"under_replicated\""
        ),
        1.0
    );

    // Offline, the promoter's records are read: the pin this gateway made, lost again, is
    // pushed again by `cidgate check` alone.
    drop(g);
    cluster_lose(&cluster, &root).await;
    let out = check(dir.path(), &root, &env);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with(&format!(
            "{root}: healthy (retrievable from the hot layer and 1 provider(s))"
        )),
        "{text}"
    );
    assert!(text.contains("pushed again"), "{text}");
    assert!(cluster.pin(&root).is_some(), "pushed again offline");
}

/// A provider that answers at once but sends its body late: the time to first byte is the time
/// to its headers, not to the end of its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_time_to_first_byte_is_the_time_to_its_headers() {
    const BODY_DELAY: Duration = Duration::from_secs(3);
    let far = tempfile::tempdir().unwrap();
    let (root, _) = add_site(far.path());
    let provider = Server::spawn(far, &[], &[]);
    let upstream = provider.url.clone();
    // Headers as soon as the provider behind has answered; the body after BODY_DELAY.
    let (slow, _task) = serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let url = format!("{upstream}{}", req.uri());
        let accept = req.headers().get("accept").cloned();
        async move {
            let mut get = client().get(url);
            if let Some(a) = accept {
                get = get.header("accept", a);
            }
            let r = get.send().await.unwrap();
            let status = r.status();
            let content_type = r.headers().get("content-type").cloned();
            let body = r.bytes().await.unwrap();
            let late = futures::stream::once(async move {
                tokio::time::sleep(BODY_DELAY).await;
                Ok::<_, Infallible>(hyper::body::Frame::data(body))
            });
            let mut resp = hyper::Response::new(http_body_util::StreamBody::new(late));
            *resp.status_mut() = status;
            if let Some(ct) = content_type {
                resp.headers_mut().insert("content-type", ct);
            }
            resp
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    add_site(dir.path());
    let started = Instant::now();
    let out = check(
        dir.path(),
        &root,
        &[("CIDGATE_COLD__PROVIDERS", slow.as_str())],
    );
    let took = started.elapsed();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let line = line_of(&text, &slow);
    assert!(line.contains(" ok "), "{text}");
    let ms: f64 = line
        .split(" ms")
        .next()
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no time in {line:?}"));
    // The block's body came BODY_DELAY after its headers (and the check waited for it).
    assert!(took >= BODY_DELAY, "{took:?}");
    assert!(
        ms < BODY_DELAY.as_millis() as f64 / 2.0,
        "{ms} ms is not the time to the headers"
    );
}
