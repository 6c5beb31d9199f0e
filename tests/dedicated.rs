//! A dedicated gateway (`gateway.serve = "pinned"`): only content reachable from its pins is
//! served, on every route (path, subdomain, trustless, IPNS, DNSLink); other CIDs get 403
//! without being fetched; access tokens open everything, privately; pins and unpins take effect.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fault_proxy::{FaultProxy, ProxyFault};
use common::ipns_records::Key;
use common::{cidgate, client, noise, Server};

const TOKEN: &str = "tok-0123456789abcdef";

/// Adds a directory holding `index.html` and `big.bin` to the store in `dir`; its root CID.
fn add_site(dir: &std::path::Path, text: &str, seed: u64) -> String {
    let src = tempfile::tempdir().unwrap();
    let site = src.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), text).unwrap();
    // Two blocks, so that a child has a CID of its own.
    std::fs::write(site.join("big.bin"), noise(1536 * 1024, seed)).unwrap();
    let out = cidgate(dir, &["add", site.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A GET with `host` and extra headers; the status, `Cache-Control` and body.
async fn get(
    s: &Server,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = c.get(format!("{}{path}", s.url)).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let cc = r
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        status,
        cc,
        String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned(),
    )
}

#[tokio::test]
async fn a_dedicated_gateway_serves_only_its_pins_on_every_route() {
    // The cold tier holds a site nobody pinned here; its requests are counted.
    let far = tempfile::tempdir().unwrap();
    let far_root = add_site(far.path(), "far away\n", 3);
    let provider = Server::spawn(far, &[], &[]);
    let counted = FaultProxy::start(&provider.url, ProxyFault::None).await;

    let dir = tempfile::tempdir().unwrap();
    let pinned = add_site(dir.path(), "pinned site\n", 1);
    let dropped = add_site(dir.path(), "unpinned site\n", 2);
    let config = dir.path().join("cidgate.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nserve = \"pinned\"\naccess_tokens = [\"{TOKEN}\"]\n\n\
             [server]\nsubdomain_hosts = [\"localhost\"]\n\n\
             [popularity]\ninterval = \"200ms\"\nprewarm_threshold = 1.5\n\
             promote_threshold = 3.0\ndemote_threshold = 1.0\n\n\
             [cold]\nproviders = [\"{}\"]\n\n\
             [dnslink.names]\n\"pinned.example.org\" = \"/ipfs/{pinned}\"\n\
             \"dropped.example.org\" = \"/ipfs/{dropped}\"\n\
             \"deep.example.org\" = \"/ipfs/{far_root}/index.html\"\n",
            counted.url
        ),
    )
    .unwrap();
    let s = Server::spawn_with_config(dir, &config, &[]);
    let ip = "127.0.0.1";
    // Pins present at start are indexed within moments; one is dropped (its blocks stay).
    eventually(&s, &format!("/ipfs/{dropped}/index.html"), 200).await;
    let r = client()
        .delete(format!("{}/admin/pins/{dropped}", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(&s, &format!("/ipfs/{dropped}/index.html"), 403).await;

    // Path gateway: the pinned site and every block under it, by its own CID too.
    let (st, _, body) = get(&s, ip, &format!("/ipfs/{pinned}/index.html"), &[]).await;
    assert_eq!((st, body.as_str()), (200, "pinned site\n"));
    let (st, _, body) = get(&s, ip, &format!("/ipfs/{dropped}/index.html"), &[]).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("not pinned on this gateway"), "{body}");
    let car = client()
        .get(format!(
            "{}/ipfs/{pinned}/big.bin?format=car&dag-scope=block",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(car.status(), 200);
    let car = common::parse_car(&car.bytes().await.unwrap());
    // The path's blocks, then big.bin's root.
    let (file, data) = car.blocks.last().unwrap();
    let (st, _, _) = get(&s, ip, &format!("/ipfs/{file}?format=raw"), &[]).await;
    assert_eq!(st, 200, "a block under a pin, asked for by its own CID");
    let leaf = cidgate::ipld::codec::links(file, data).unwrap()[0];
    let (st, _, _) = get(&s, ip, &format!("/ipfs/{leaf}?format=raw"), &[]).await;
    assert_eq!(st, 200, "a leaf under a pin");

    // Trustless responses of unpinned content, and content only the cold tier has: refused
    // before anything is fetched.
    for path in [
        format!("/ipfs/{dropped}?format=car"),
        format!("/ipfs/{dropped}?format=raw"),
        format!("/ipfs/{far_root}/index.html"),
        format!("/ipfs/{far_root}?format=car"),
    ] {
        let (st, cc, body) = get(&s, ip, &path, &[]).await;
        assert_eq!(st, 403, "{path}: {body}");
        assert!(!cc.contains("immutable"), "{path}: {cc}");
    }
    // A DNSLink site inside an unpinned root: refused before its directory is resolved.
    let (st, _, body) = get(&s, "deep.example.org", "/", &[]).await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(
        counted.requests.load(Ordering::SeqCst),
        0,
        "nothing fetched"
    );

    // Subdomain gateway.
    let sub = |cid: &str| format!("{}.ipfs.localhost", cidgate_v1(cid));
    let (st, _, body) = get(&s, &sub(&pinned), "/index.html", &[]).await;
    assert_eq!((st, body.as_str()), (200, "pinned site\n"));
    let (st, _, _) = get(&s, &sub(&dropped), "/index.html", &[]).await;
    assert_eq!(st, 403);

    // DNSLink sites and /ipns/ names.
    let (st, _, body) = get(&s, "pinned.example.org", "/index.html", &[]).await;
    assert_eq!((st, body.as_str()), (200, "pinned site\n"));
    let (st, _, _) = get(&s, "dropped.example.org", "/index.html", &[]).await;
    assert_eq!(st, 403);
    let (st, _, _) = get(&s, ip, "/ipns/dropped.example.org/index.html", &[]).await;
    assert_eq!(st, 403);
    let (to_pinned, to_dropped) = (Key::new(7), Key::new(8));
    for (key, target) in [(&to_pinned, &pinned), (&to_dropped, &dropped)] {
        let put = client()
            .put(format!("{}/routing/v1/ipns/{}", s.admin, key.name))
            .header("content-type", "application/vnd.ipfs.ipns-record")
            .body(key.record(&format!("/ipfs/{target}"), 1, Duration::from_secs(60)))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200);
    }
    let (st, _, body) = get(&s, ip, &format!("/ipns/{}/index.html", to_pinned.name), &[]).await;
    assert_eq!((st, body.as_str()), (200, "pinned site\n"));
    let (st, _, _) = get(
        &s,
        ip,
        &format!("/ipns/{}/index.html", to_dropped.name),
        &[],
    )
    .await;
    assert_eq!(st, 403);
    let (st, _, _) = get(
        &s,
        &format!("{}.ipns.localhost", to_dropped.name),
        "/index.html",
        &[],
    )
    .await;
    assert_eq!(st, 403);
    // Records only of names that point at what is served here, or to token holders.
    let record = |name: &str| format!("/ipns/{name}?format=ipns-record");
    let (st, _, _) = get(&s, ip, &record(&to_pinned.name), &[]).await;
    assert_eq!(st, 200);
    let (st, _, body) = get(&s, ip, &record(&to_dropped.name), &[]).await;
    assert_eq!(st, 403, "{body}");
    let (st, _, _) = get(
        &s,
        ip,
        &format!("{}&token={TOKEN}", record(&to_dropped.name)),
        &[],
    )
    .await;
    assert_eq!(st, 200);

    // Access tokens, as a header or in the query, open any CID; the answer stays private.
    let bearer = format!("Bearer {TOKEN}");
    let by_header = get(
        &s,
        ip,
        &format!("/ipfs/{dropped}/index.html"),
        &[("authorization", bearer.as_str())],
    )
    .await;
    let by_query = get(
        &s,
        ip,
        &format!("/ipfs/{far_root}/index.html?token={TOKEN}"),
        &[],
    )
    .await;
    for ((st, cc, body), want) in [(by_header, "unpinned site\n"), (by_query, "far away\n")] {
        assert_eq!((st, body.as_str()), (200, want));
        assert_eq!(cc, "private, no-store");
    }
    assert!(
        counted.requests.load(Ordering::SeqCst) > 0,
        "fetched for the token holder"
    );
    let (st, _, body) = get(
        &s,
        ip,
        &format!("/ipfs/{dropped}/index.html"),
        &[("authorization", "Bearer tok-wrong-but-long-enough")],
    )
    .await;
    assert_eq!(st, 403);
    assert!(body.contains("not valid"), "{body}");
    // A token holder's demand promotes nothing into the pinset (promotions never widen it).
    for _ in 0..6 {
        let (st, _, _) = get(
            &s,
            ip,
            &format!("/ipfs/{dropped}/index.html"),
            &[("authorization", bearer.as_str())],
        )
        .await;
        assert_eq!(st, 200);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Without the token again: still refused (the token holder's answer was not cached).
    let (st, _, _) = get(&s, ip, &format!("/ipfs/{dropped}/index.html"), &[]).await;
    assert_eq!(st, 403);

    // Pinning makes content servable once its DAG is indexed; unpinning stops it at once.
    let r = client()
        .post(format!("{}/admin/pins/{dropped}", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    eventually(&s, &format!("/ipfs/{dropped}/index.html"), 200).await;
    let r = client()
        .delete(format!("{}/admin/pins/{pinned}", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(&s, &format!("/ipfs/{pinned}/index.html"), 403).await;
    // Its earlier demand does not bring it back by promotion.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (st, _, _) = get(&s, ip, &format!("/ipfs/{pinned}/index.html"), &[]).await;
    assert_eq!(st, 403, "an unpinned site stays unserved");
    let (st, _, _) = get(&s, "pinned.example.org", "/index.html", &[]).await;
    assert_eq!(st, 403, "the response cache forgot it too");
}

/// The CIDv1 base32 form of `cid` (subdomains need it).
fn cidgate_v1(cid: &str) -> String {
    let c: cid::Cid = cid.parse().unwrap();
    cid::Cid::new_v1(c.codec(), *c.hash()).to_string()
}

/// Waits until `path` answers `want`.
async fn eventually(s: &Server, path: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (st, _, _) = get(s, "127.0.0.1", path, &[]).await;
        if st == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {st}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
