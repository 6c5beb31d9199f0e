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

/// The admin status page renders every inline SVG chart in a real browser (the page's own
/// script counts the charts whose boxes have a size and writes the count into the DOM), with
/// traffic sampled every second so the time-series charts have lines, CIDs linked to the public
/// gateway and pin names shown. The page refreshes every 5 s, so Chromium gets 3 s of virtual
/// time.
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
        &[
            ("CIDGATE_COLD__PROVIDERS", provider.url.as_str()),
            ("CIDGATE_ADMIN__STATUS_INTERVAL", "1s"),
        ],
        &[],
    );
    let (root, _) = cidgate::sample::build().unwrap();
    // A named operator pin (fetched from the provider through the cold tier).
    let pin = common::client()
        .post(format!(
            "{}/admin/pins/{}?name=sample%20site",
            s.admin, root.cid
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(pin.status(), 200, "{}", pin.text().await.unwrap());
    // Traffic over a few sampling intervals so every chart has data: cold first, then cache
    // hits, and some errors.
    for round in 0..4 {
        for _ in 0..5 {
            let r = common::client()
                .get(format!("{}/ipfs/{}/verified-lines.txt", s.url, root.cid))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
        let r = common::client()
            .get(format!("{}/ipfs/not-a-cid", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        if round < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let url = format!("{}/", s.admin);
    let dom = tokio::task::spawn_blocking(move || run_chromium(&url, 3_000, &["--dump-dom"]))
        .await
        .unwrap();
    for chart in cidgate::admin::status::CHARTS {
        assert!(
            dom.contains(&format!("data-chart=\"{chart}\"")),
            "no {chart} chart:\n{dom}"
        );
    }
    assert!(
        dom.contains(&format!(
            "data-charts-rendered=\"{}\"",
            cidgate::admin::status::CHARTS.len()
        )),
        "charts did not render:\n{dom}"
    );
    assert!(dom.contains("<polyline"), "no time series drawn:\n{dom}");
    let link = format!("href=\"{}/ipfs/{}/\"", s.url, root.cid);
    assert!(
        dom.contains(&link),
        "CIDs link to the gateway ({link}):\n{dom}"
    );
    assert_eq!(
        dom.matches("<strong>sample site</strong>").count(),
        2,
        "pin name shown in popular content and pins:\n{dom}"
    );
    assert!(dom.contains(">ready<"), "readiness shown:\n{dom}");
    for heading in ["Health", "Traffic", "Popular content", "Pins", "Pin events"] {
        assert_eq!(
            dom.matches(&format!("<h2>{heading}</h2>")).count(),
            1,
            "{heading} once"
        );
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let png = target.join("status-page.png");
    let _ = std::fs::remove_file(&png);
    let url = format!("{}/", s.admin);
    let shot = format!("--screenshot={}", png.display());
    tokio::task::spawn_blocking(move || {
        run_chromium(&url, 3_000, &[&shot, "--window-size=1200,2200"])
    })
    .await
    .unwrap();
    assert!(png.exists() && std::fs::metadata(&png).unwrap().len() > 1000);
}
