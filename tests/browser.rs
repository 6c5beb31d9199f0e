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

/// The fixtures the browser tests below read (from `../shared`, never copied).
const FIXTURES: &[&str] = &[
    "dir_listing/fixtures.car",
    "path_gateway_dag/gateway-json-cbor.car",
    "path_gateway_dag/dag-cbor-traversal.car",
];
/// `dir_listing/fixtures.car`: a directory with `ą/ę/file-źł.txt`.
const LISTING: &str = "bafybeig6ka5mlwkl4subqhaiatalkcleo4jgnr3hqwvpmsqfca27cijp3i";
/// The `t.json` file of `gateway-json-cbor.car`, stored as UnixFS (a raw leaf).
const JSON_FILE: &str = "bafkreibrppizs3g7axs2jdlnjua6vgpmltv7k72l7v7sa6mmht6mne3qqe";
/// The root of `dag-cbor-traversal.car`.
const DAG_CBOR: &str = "bafyreibs4utpgbn7uqegmd2goqz4bkyflre2ek2iwv743fhvylwi4zeeim";

/// The `href` of the first `<a>` whose attributes contain `marker` in a dumped DOM.
fn href_after(dom: &str, marker: &str) -> String {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in:\n{dom}"));
    let start = dom[..at].rfind("<a ").expect("an <a> before the marker");
    let tag = &dom[start..];
    let href = tag
        .split_once("href=\"")
        .and_then(|(_, r)| r.split_once('"'))
        .map(|(h, _)| h.replace("&amp;", "&"))
        .expect("an href");
    href
}

/// A directory listing on the subdomain gateway, in Chromium: following its name link and
/// its CID link (which goes through the path gateway host and is redirected to the file's own
/// subdomain) both show the file; the breadcrumbs lead back to the directory.
#[test]
#[ignore = "needs chromium (installed by .ci/run)"]
fn subdomain_listing_links_click_through_in_chromium() {
    let s = Server::start_with(
        FIXTURES,
        &[("CIDGATE_SERVER__SUBDOMAIN_HOSTS", "localhost")],
        &[],
    );
    let port = s.url.rsplit(':').next().unwrap().to_string();
    let cid = cidgate::ipld::Cid::try_from(LISTING).unwrap();
    let label = cidgate::gateway::subdomain::dns_label(&cid).unwrap();
    let page = url::Url::parse(&format!(
        "http://{label}.ipfs.localhost:{port}/%C4%85/%C4%99/"
    ))
    .unwrap();
    let dom = run_chromium(page.as_str(), 5_000, &["--dump-dom"]);
    assert!(dom.contains("Index of"), "listing did not render:\n{dom}");
    assert!(
        dom.contains(">Name</th>") && dom.contains(">Size</th>"),
        "{dom}"
    );
    for (what, marker) in [
        ("name link", ">file-źł.txt</a>"),
        ("CID link", "class=\"ipfs-hash\""),
    ] {
        let href = href_after(&dom, marker);
        let target = page.join(&href).unwrap();
        let file = run_chromium(target.as_str(), 5_000, &["--dump-dom"]);
        assert!(
            file.contains("I am a txt file on path with utf8"),
            "{what} {target} did not lead to the file:\n{file}"
        );
    }
    // The breadcrumb of the directory leads (through the path gateway) back to a listing.
    let crumb = page.join(&href_after(&dom, ">ę</a>")).unwrap();
    assert!(crumb
        .as_str()
        .starts_with(&format!("http://localhost:{port}/ipfs/")));
    let back = run_chromium(crumb.as_str(), 5_000, &["--dump-dom"]);
    assert!(back.contains(">file-źł.txt</a>"), "{crumb}:\n{back}");
}

/// A browser asking for something missing gets an HTML page naming the status and the path.
#[test]
#[ignore = "needs chromium (installed by .ci/run)"]
fn error_page_renders_in_chromium() {
    let s = Server::start(FIXTURES);
    let url = format!("{}/ipfs/{LISTING}/no-such-file.txt", s.url);
    let dom = run_chromium(&url, 5_000, &["--dump-dom"]);
    assert!(dom.contains("<title>404 Not Found</title>"), "{dom}");
    assert!(dom.contains("class=\"code\">404</span> Not Found"), "{dom}");
    assert!(
        dom.contains(&format!("/ipfs/{LISTING}/no-such-file.txt")),
        "{dom}"
    );
}

/// JSON on UnixFS reaches Chromium as JSON (rendered as its text), and the dag-cbor view shows
/// small values on one line with links to the path gateway.
#[test]
#[ignore = "needs chromium (installed by .ci/run)"]
fn json_renders_in_chromium() {
    let s = Server::start(FIXTURES);
    let url = format!("{}/ipfs/{JSON_FILE}", s.url);
    // Chromium shows a document it received as JSON as its text plus its JSON formatter
    // (text/plain gets no formatter).
    for url in [url.clone(), format!("{url}?format=json")] {
        let dom = run_chromium(&url, 5_000, &["--dump-dom"]);
        assert!(dom.contains("i am a plain json file"), "{url}:\n{dom}");
        assert!(
            dom.contains("json-formatter-container"),
            "{url} not rendered as JSON:\n{dom}"
        );
    }
    let view = run_chromium(
        &format!("{}/ipfs/{DAG_CBOR}", s.url),
        5_000,
        &["--dump-dom"],
    );
    assert!(view.contains("dag-cbor node"), "{view}");
    assert!(view.contains("class=\"compact\""), "{view}");
    assert!(view.contains("class=\"link\" href=\"/ipfs/bafy"), "{view}");
}
