//! Retrievability checks and repairs: `cidgate check` (offline and through the server), a store
//! block corrupted on disk and rewritten, providers that serve corrupt bytes or fail, content
//! nowhere (exit 1), the admin API, metrics and the scheduled checks.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::fault_proxy::{FaultProxy, ProxyFault};
use common::{bin, cidgate, client, metric_sum, metrics, noise, Server};

const MIB: usize = 1 << 20;

/// A site of one 1.5 MiB file (two leaves) and a small one; adds it to the store in `dir` and
/// returns its root CID and the file's bytes.
fn add_site(dir: &Path) -> (String, Vec<u8>) {
    let src = tempfile::tempdir().unwrap();
    let site = src.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let data = noise(3 * MIB / 2, 42);
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
    for entry in std::fs::read_dir(dir.join("blocks")).unwrap() {
        let path = entry.unwrap().path();
        let mut file = std::fs::read(&path).unwrap();
        if let Some(at) = file.windows(needle.len()).position(|w| w == needle) {
            file[at + needle.len() / 2] ^= 0x55;
            std::fs::write(&path, file).unwrap();
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
