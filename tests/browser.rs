//! A real browser (headless Chromium) renders the sample site through the path gateway and the
//! subdomain gateway; the DOM it dumps proves the page rendered and the image loaded. Needs
//! Debian's `chromium`, which `.ci/run` installs; run with `-- --ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;

fn chromium() -> PathBuf {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(c).exists() {
            return PathBuf::from(c);
        }
    }
    panic!("chromium is not installed (apt-get install chromium)");
}

/// Runs headless Chromium on `url` for `budget_ms` of virtual time (a page that refreshes itself
/// must get less than its refresh period, or Chromium keeps following the refreshes).
fn run_chromium(url: &str, budget_ms: u32, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ])
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_site(url: &str, shot: &str) {
    let dom = run_chromium(url, 10_000, &["--dump-dom"]);
    assert!(
        dom.contains("Hello from cidgate"),
        "page did not render from {url}:\n{dom}"
    );
    assert!(
        dom.contains("data-logo-width=\"96\""),
        "image did not load (naturalWidth) from {url}:\n{dom}"
    );
    assert!(dom.contains("image loaded"));
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let png = target.join(shot);
    let _ = std::fs::remove_file(&png);
    run_chromium(
        url,
        10_000,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=900,700",
        ],
    );
    assert!(
        png.exists() && std::fs::metadata(&png).unwrap().len() > 1000,
        "no screenshot at {}",
        png.display()
    );
}

#[test]
#[ignore = "needs chromium (installed by .ci/run)"]
fn sample_site_renders_through_path_and_subdomain_gateways() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::spawn(
        dir,
        &[
            ("CIDGATE_SERVER__SAMPLE", "true"),
            ("CIDGATE_SERVER__SUBDOMAIN_HOSTS", "localhost"),
        ],
        &[],
    );
    let (root, _) = cidgate::sample::build().unwrap();
    let port = s.url.rsplit(':').next().unwrap().to_string();
    check_site(
        &format!("{}/ipfs/{}/", s.url, root.cid),
        "browser-path-gateway.png",
    );
    // Chromium resolves *.localhost to loopback by itself.
    let label = cidgate::gateway::subdomain::dns_label(&root.cid).unwrap();
    check_site(
        &format!("http://{label}.ipfs.localhost:{port}/"),
        "browser-subdomain-gateway.png",
    );
}

/// The admin status page renders its four inline SVG charts in a real browser (the page's own
/// script counts the charts whose boxes have a size and writes the count into the DOM). The page
/// refreshes every 5 s, so Chromium gets 3 s of virtual time.
#[tokio::test]
#[ignore = "needs chromium (installed by .ci/run)"]
async fn status_page_charts_render_in_chromium() {
    let provider = Server::spawn(
        tempfile::tempdir().unwrap(),
        &[("CIDGATE_SERVER__SAMPLE", "true")],
        &[],
    );
    let s = Server::spawn(
        tempfile::tempdir().unwrap(),
        &[("CIDGATE_COLD__PROVIDERS", provider.url.as_str())],
        &[],
    );
    let (root, _) = cidgate::sample::build().unwrap();
    // Some traffic so every chart has data: cold first, then cache hits.
    for _ in 0..5 {
        let r = common::client()
            .get(format!("{}/ipfs/{}/verified-lines.txt", s.url, root.cid))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let url = format!("{}/", s.admin);
    let dom = tokio::task::spawn_blocking(move || run_chromium(&url, 3_000, &["--dump-dom"]))
        .await
        .unwrap();
    for chart in ["tiers", "hit-ratio", "top", "providers"] {
        assert!(
            dom.contains(&format!("data-chart=\"{chart}\"")),
            "no {chart} chart:\n{dom}"
        );
    }
    assert!(
        dom.contains("data-charts-rendered=\"4\""),
        "charts did not render:\n{dom}"
    );
    assert!(dom.contains(&root.cid.to_string()), "top content missing");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let png = target.join("status-page.png");
    let _ = std::fs::remove_file(&png);
    let url = format!("{}/", s.admin);
    let shot = format!("--screenshot={}", png.display());
    tokio::task::spawn_blocking(move || {
        run_chromium(&url, 3_000, &[&shot, "--window-size=1200,1400"])
    })
    .await
    .unwrap();
    assert!(png.exists() && std::fs::metadata(&png).unwrap().len() > 1000);
}
