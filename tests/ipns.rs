//! `/ipns/`: signed IPNS records from the conformance fixtures (imported with `cidgate import`
//! or stored through `PUT /routing/v1/ipns/{name}`), DNSLink sites from the configuration, the
//! record itself as `application/vnd.ipfs.ipns-record`, and both on the subdomain gateway.

mod common;

use std::net::SocketAddr;

use common::{answer, cidgate, fixture, Answer, Server};

/// Points at gateway-cache's root `/root2`, TTL 30 min.
const ROOT2_NAME: &str = "k51qzi5uqu5djokp3m1keo36hoxtd6u3a1d2rg1camf6al7p3huy63dojlm57c";
/// Points at gateway-cache's root, TTL 876 600 h.
const ROOT_NAME: &str = "k51qzi5uqu5dlxdsdu5fpuu7h69wu4ohp32iwm9pdt9nq3y5rpn3ln9j12zfhe";
/// The Ed25519 key of subdomain_gateway as a peer ID, and as a libp2p-key CID.
const ED25519_PEER_ID: &str = "12D3KooWLQzUv2FHWGVPXTXSZpdHs7oHbXub2G5WC8Tx4NQhyd2d";
const ED25519_CID: &str = "k51qzi5uqu5dk3v4rmjber23h16xnr23bsggmqqil9z2gduiis5se8dht36dam";
/// The RSA key of subdomain_gateway (a sha2-256 peer ID).
const RSA_PEER_ID: &str = "QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3";
const RSA_CID: &str = "k2k4r8m7xvggw5pxxk3abrkwyer625hg01hfyggrai7lk1m63fuihi7w";
/// "hello\n", what both subdomain_gateway records point at.
const HELLO: &str = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am";

const GATEWAY_CACHE_RECORDS: [&str; 2] = [
    "gateway-cache/k51qzi5uqu5djokp3m1keo36hoxtd6u3a1d2rg1camf6al7p3huy63dojlm57c.ipns-record",
    "gateway-cache/k51qzi5uqu5dlxdsdu5fpuu7h69wu4ohp32iwm9pdt9nq3y5rpn3ln9j12zfhe.ipns-record",
];
const SUBDOMAIN_RECORDS: [&str; 2] = [
    "subdomain_gateway/12D3KooWLQzUv2FHWGVPXTXSZpdHs7oHbXub2G5WC8Tx4NQhyd2d.ipns-record",
    "subdomain_gateway/QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3.ipns-record",
];

fn path(rel: &str) -> String {
    fixture(rel).display().to_string()
}

/// A store with the gateway-cache and subdomain_gateway CARs and records, and a server on it.
fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![
        path("gateway-cache/fixtures.car"),
        path("subdomain_gateway/fixtures.car"),
    ];
    files.extend(GATEWAY_CACHE_RECORDS.iter().map(|f| path(f)));
    files.extend(SUBDOMAIN_RECORDS.iter().map(|f| path(f)));
    let mut args = vec!["import"];
    args.extend(files.iter().map(String::as_str));
    let out = cidgate(dir.path(), &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!(
        "/ipns/{ROOT2_NAME} -> /ipfs/bafybeib3ffl2teiqdncv3mkz4r23b5ctrwkzrrhctdbne6iboayxuxk5ui/root2"
    )));
    let config = dir.path().join("cidgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nsubdomain_hosts = [\"example.com\"]\n\n[dnslink.names]\n\
             \"dnslink-over-ipns.example.org\" = \"/ipns/{ED25519_PEER_ID}\"\n\
             \"dnslink-test.example.org\" = \"/ipfs/{HELLO}\"\n"
        ),
    )
    .unwrap();
    Server::spawn_with_config(dir, &config, &[])
}

async fn fetch(s: &Server, host: Option<&str>, path: &str, accept: Option<&str>) -> Answer {
    let addr: SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = client.get(format!("http://{addr}{path}"));
    if let Some(h) = host {
        req = req.header("host", h);
    }
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    answer(req).await
}

#[tokio::test]
async fn names_resolve_to_content_fresh_for_their_ttl() {
    let s = start();
    let a = fetch(
        &s,
        None,
        &format!("/ipns/{ROOT_NAME}/root2/root3/root4/index.html"),
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], b"hello\n");
    // The TTL is 100 years, capped at what is left of the record's validity.
    let max_age: u64 = a
        .header("cache-control")
        .strip_prefix("public, max-age=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{}", a.header("cache-control")));
    assert!(
        max_age > 365 * 86400 && max_age <= 3_155_760_000,
        "{max_age}"
    );
    assert_eq!(
        a.header("x-ipfs-path"),
        format!("/ipns/{ROOT_NAME}/root2/root3/root4/index.html")
    );
    // IPIP-548: the name's canonical (base36) form is the URI's authority.
    assert_eq!(
        a.header("ipfs-uri"),
        format!("ipns://{ROOT_NAME}/root2/root3/root4/index.html")
    );
    assert!(a
        .header("x-ipfs-roots")
        .starts_with("bafybeib3ffl2teiqdncv3mkz4r23b5ctrwkzrrhctdbne6iboayxuxk5ui,"));
    assert_eq!(a.header("etag"), format!("\"{HELLO}\""));

    // A record pointing below a root, and a directory with index.html.
    let a = fetch(&s, None, &format!("/ipns/{ROOT2_NAME}/root3/root4/"), None).await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], b"hello\n");
    assert_eq!(a.header("cache-control"), "public, max-age=1800");
    // An encoded separator after the name separates it as `/` does.
    let a = fetch(
        &s,
        None,
        &format!("/ipns/{ROOT2_NAME}%2Froot3%2Froot4/"),
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], b"hello\n");

    // Peer IDs name keys too, Ed25519 (identity multihash) and RSA (sha2-256); each key has one
    // spelling on the gateway, its base36 CID.
    for (peer_id, cid) in [(ED25519_PEER_ID, ED25519_CID), (RSA_PEER_ID, RSA_CID)] {
        let a = fetch(&s, None, &format!("/ipns/{peer_id}/?x=1"), None).await;
        assert_eq!(a.status, 302, "{peer_id}");
        assert_eq!(a.header("location"), format!("/ipns/{cid}/?x=1"));
        let a = fetch(&s, None, &format!("/ipns/{cid}"), None).await;
        assert_eq!(a.status, 200, "{cid}");
        assert_eq!(&a.body[..], b"hello\n", "{cid}");
    }

    let a = fetch(&s, None, "/ipns/notaname", None).await;
    assert_eq!(a.status, 400);
    let unknown = "k51qzi5uqu5dm4tm0wt8srkg9h9suud4wuiwjimndrkydqm81cqtlb5ak6p7ku";
    let a = fetch(&s, None, &format!("/ipns/{unknown}"), None).await;
    assert_eq!(
        a.status, 502,
        "a name without a valid record cannot be resolved"
    );
}

#[tokio::test]
async fn the_signed_record_is_served_as_is() {
    let s = start();
    let want = std::fs::read(fixture(GATEWAY_CACHE_RECORDS[0])).unwrap();
    for (path, accept) in [
        (format!("/ipns/{ROOT2_NAME}?format=ipns-record"), None),
        (
            format!("/ipns/{ROOT2_NAME}"),
            Some("application/vnd.ipfs.ipns-record"),
        ),
    ] {
        let a = fetch(&s, None, &path, accept).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.header("content-type"), "application/vnd.ipfs.ipns-record");
        assert!(a.body == want[..], "the stored bytes");
        assert!(a
            .header("content-disposition")
            .contains(&format!("{ROOT2_NAME}.ipns-record")));
        assert_eq!(a.header("cache-control"), "public, max-age=1800");
        assert_eq!(a.header("x-content-type-options"), "nosniff");
        let etag = a.header("etag").to_string();
        let client = common::client();
        let again = client
            .get(format!("{}{path}", s.url))
            .header("accept", accept.unwrap_or("*/*"))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
    }
    let a = fetch(
        &s,
        None,
        &format!("/ipns/{ROOT2_NAME}?format=ipns-record&filename=test%D1%82%D0%B5%D1%81%D1%82.ipns-record"),
        None,
    )
    .await;
    assert!(
        a.header("content-disposition").contains(
            "attachment; filename=\"test____.ipns-record\"; filename*=UTF-8''test%D1%82%D0%B5%D1%81%D1%82.ipns-record"
        ),
        "{}",
        a.header("content-disposition")
    );
    // A DNSLink name has no record.
    let a = fetch(
        &s,
        None,
        "/ipns/dnslink-test.example.org?format=ipns-record",
        None,
    )
    .await;
    assert_eq!(a.status, 400);
    // Nor has immutable content (boxo answers 400 too).
    let a = fetch(&s, None, &format!("/ipfs/{HELLO}?format=ipns-record"), None).await;
    assert_eq!(a.status, 400);
    let a = fetch(
        &s,
        None,
        &format!("/ipfs/{HELLO}"),
        Some("application/vnd.ipfs.ipns-record"),
    )
    .await;
    assert_eq!(a.status, 400);
}

#[tokio::test]
async fn subdomains_and_dnslink_hosts() {
    let s = start();
    // A path request on the gateway host moves to the name's own origin, as a base36 CID.
    let a = fetch(
        &s,
        Some("example.com"),
        &format!("/ipns/{ED25519_PEER_ID}/a?b=c"),
        None,
    )
    .await;
    assert_eq!(a.status, 301);
    assert_eq!(
        a.header("location"),
        format!("http://{ED25519_CID}.ipns.example.com/a?b=c")
    );
    let host = format!("{ED25519_CID}.ipns.example.com");
    let a = fetch(&s, Some(&host), "/", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], b"hello\n");
    // The same key written as a dag-pb CID (older tools) moves to its libp2p-key label.
    let key = cid::Cid::try_from(ED25519_CID).unwrap();
    let dag_pb = cid::Cid::new_v1(0x70, *key.hash())
        .to_string_of_base(multibase::Base::Base36Lower)
        .unwrap();
    let a = fetch(&s, Some(&format!("{dag_pb}.ipns.example.com")), "/x", None).await;
    assert_eq!(a.status, 301);
    assert_eq!(a.header("location"), format!("http://{host}/x"));

    // DNSLink: the Host is the site; a chain through an IPNS name keeps the record's TTL.
    let a = fetch(&s, Some("dnslink-over-ipns.example.org"), "/", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], b"hello\n");
    assert_eq!(
        a.header("x-ipfs-path"),
        "/ipns/dnslink-over-ipns.example.org/"
    );
    assert_eq!(
        a.header("ipfs-uri"),
        "ipns://dnslink-over-ipns.example.org/"
    );
    let a = fetch(&s, None, "/ipns/dnslink-test.example.org", None).await;
    assert_eq!(a.status, 200);
    assert!(
        !a.header("cache-control").contains("immutable"),
        "a DNSLink can change"
    );
    // DNSLink names on the subdomain gateway: dots become dashes, dashes double.
    let a = fetch(
        &s,
        Some("example.com"),
        "/ipns/dnslink-test.example.org/",
        None,
    )
    .await;
    assert_eq!(a.status, 301);
    assert_eq!(
        a.header("location"),
        "http://dnslink--test-example-org.ipns.example.com/"
    );
    let a = fetch(
        &s,
        Some("dnslink--test-example-org.ipns.example.com"),
        "/",
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], b"hello\n");
    // A name that keeps its dots is that name, not an inlined label (upstream conformance).
    let a = fetch(
        &s,
        Some("dnslink-test.example.org.ipns.example.com"),
        "/",
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(&a.body[..], b"hello\n");
    assert_eq!(a.header("x-ipfs-path"), "/ipns/dnslink-test.example.org/");
}

#[tokio::test]
async fn broken_records_are_refused_and_good_ones_stored_through_routing_v1() {
    let dir = tempfile::tempdir().unwrap();
    for (file, ok) in [
        ("k51qzi5uqu5dm4tm0wt8srkg9h9suud4wuiwjimndrkydqm81cqtlb5ak6p7ku_v1.ipns-record", false),
        (
            "k51qzi5uqu5diamp7qnnvs1p1gzmku3eijkeijs3418j23j077zrkok63xdm8c_v1-v2-broken-signature-v2.ipns-record",
            false,
        ),
        ("k51qzi5uqu5dlkw8pxuw9qmqayfdeh4kfebhmreauqdc6a7c3y7d5i9fi8mk9w_v1-v2.ipns-record", true),
        ("k51qzi5uqu5dit2ku9mutlfgwyz8u730on38kd10m97m36bjt66my99hb6103f_v2.ipns-record", true),
    ] {
        let out = cidgate(
            dir.path(),
            &["import", &path(&format!("ipns_records/{file}"))],
        );
        assert_eq!(out.status.success(), ok, "{file}: {out:?}");
    }
    let s = Server::spawn(dir, &[], &[]);
    let v2 = "k51qzi5uqu5dit2ku9mutlfgwyz8u730on38kd10m97m36bjt66my99hb6103f";
    // What it points at is an identity CID: the content is inside the CID itself.
    let a = fetch(&s, None, &format!("/ipns/{v2}"), None).await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], b"v2-only record");

    // A second key through the routing API of the admin listener.
    let name = "k51qzi5uqu5dilgf7gorsh9vcqqq4myo6jd4zmqkuy9pxyxi5fua3uf7axph4y";
    let bytes = std::fs::read(fixture(&format!(
        "ipns_records/{name}_v1-v2-broken-signature-v1.ipns-record"
    )))
    .unwrap();
    let client = common::client();
    let put = client
        .put(format!("{}/routing/v1/ipns/{name}", s.admin))
        .header("content-type", "application/vnd.ipfs.ipns-record")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "{:?}", put.text().await);
    let got = client
        .get(format!("{}/routing/v1/ipns/{name}", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap() == bytes[..]);
    let a = fetch(&s, None, &format!("/ipns/{name}"), None).await;
    assert_eq!(a.status, 200);
    // A record signed for another name is refused.
    let other = client
        .put(format!("{}/routing/v1/ipns/{v2}", s.admin))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 400);
}
