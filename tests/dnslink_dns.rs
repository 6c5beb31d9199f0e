//! DNSLink over DNS against a real DNS server on loopback (Debian's dnsmasq, started per test
//! with the conformance fixtures' DNSLink records as TXT records): sites by Host header, under
//! `/ipns/{domain}` and `{domain}.ipns.{host}`, chains through DNSLink and IPNS, TTL caching
//! (counted in dnsmasq's query log), the allowed list, the static table, and failures.
//!
//! Skipped with a message when dnsmasq is not installed; `.ci/run` installs it.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::dns::{fixture_dnslinks, Dnsmasq};
use common::{answer, cidgate, fixture, metric_sum, metrics, Answer, Server};

/// How long dnsmasq's query log may trail its answer (counts are read from the log).
const LOG_TRAIL: Duration = Duration::from_secs(3);

/// "hello\n", what the subdomain_gateway DNSLink and IPNS fixtures point at.
const HELLO: &str = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am";
/// Another small file of the fixtures (gateway-cache's root3/root4 index.html is also "hello").
const OTHER: &str = "bafybeib3ffl2teiqdncv3mkz4r23b5ctrwkzrrhctdbne6iboayxuxk5ui";
/// TTL dnsmasq gives its records.
const TTL: u32 = 300;

macro_rules! need_dnsmasq {
    () => {
        if common::dns::dnsmasq_binary().is_none() {
            eprintln!(
                "SKIPPED: dnsmasq is not installed (apt-get install -y dnsmasq); .ci/run installs it"
            );
            return;
        }
    };
}

/// The TXT records of the test zone: the conformance fixtures' DNSLinks and a few of our own.
fn records() -> Vec<(String, String)> {
    let mut txt: Vec<(String, String)> = Vec::new();
    for rel in [
        "dnslink_ipns/dnslink.yml",
        "subdomain_gateway/dnslink.yml",
        "gateway-cache/dnslink.yml",
    ] {
        for (domain, path) in fixture_dnslinks(rel) {
            txt.push((format!("_dnslink.{domain}"), format!("dnslink={path}")));
        }
    }
    txt.extend([
        // DNSLink → DNSLink → IPNS record.
        (
            "_dnslink.chain.example.org".to_string(),
            "dnslink=/ipns/dnslink-over-ipns.example.org".to_string(),
        ),
        // Two content paths: refused. Other TXT records beside a DNSLink are ignored.
        (
            "_dnslink.two.example.org".into(),
            format!("dnslink=/ipfs/{HELLO}"),
        ),
        (
            "_dnslink.two.example.org".into(),
            format!("dnslink=/ipfs/{OTHER}"),
        ),
        ("_dnslink.noise.example.org".into(), "v=spf1 -all".into()),
        (
            "_dnslink.noise.example.org".into(),
            format!("dnslink=/ipfs/{HELLO}"),
        ),
        // The static table says otherwise: DNS is never asked.
        (
            "_dnslink.static.example.org".into(),
            format!("dnslink=/ipfs/{OTHER}"),
        ),
        // A site outside the allowed list.
        (
            "_dnslink.site.example.net".into(),
            format!("dnslink=/ipfs/{HELLO}"),
        ),
    ]);
    txt
}

fn start_dns(ttl: u32) -> Option<Dnsmasq> {
    let txt = records();
    let pairs: Vec<(&str, &str)> = txt.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    Dnsmasq::start(&pairs, &["example.org", "example.net"], ttl)
}

/// A gateway holding the fixtures' content and IPNS records, resolving DNSLink through `dns`
/// (a `udp://` URL), serving `allowed`, with `extra` config lines under `[dnslink]`.
fn gateway(resolver: &str, allowed: &str, extra: &str) -> Server {
    gateway_with(&format!("{{ \".\" = \"{resolver}\" }}"), allowed, extra)
}

/// Like [`gateway`], with `resolvers` as the TOML inline table of `[dnslink] resolvers`.
fn gateway_with(resolvers: &str, allowed: &str, extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = [
        "gateway-cache/fixtures.car",
        "subdomain_gateway/fixtures.car",
        "subdomain_gateway/12D3KooWLQzUv2FHWGVPXTXSZpdHs7oHbXub2G5WC8Tx4NQhyd2d.ipns-record",
    ]
    .iter()
    .map(|f| fixture(f).display().to_string())
    .collect();
    let mut args = vec!["import"];
    args.extend(files.iter().map(String::as_str));
    let out = cidgate(dir.path(), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("cidgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nsubdomain_hosts = [\"localhost\", \"example.com\"]\n\n\
             [dnslink]\nresolvers = {resolvers}\n{extra}\n\
             [dnslink.names]\n\"static.example.org\" = \"/ipfs/{HELLO}\"\n"
        ),
    )
    .unwrap();
    // The environment wins over the file: the test harness turns DNS off by default.
    Server::spawn_with_config(dir, &config, &[("CIDGATE_DNSLINK__ALLOWED", allowed)])
}

async fn get(s: &Server, host: Option<&str>, path: &str) -> Answer {
    let addr: SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    let mut req = common::client().get(format!("http://{addr}{path}"));
    if let Some(h) = host {
        req = req.header("host", h);
    }
    answer(req).await
}

fn max_age(a: &Answer) -> u64 {
    a.header("cache-control")
        .strip_prefix("public, max-age=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cache-control {:?}", a.header("cache-control")))
}

#[tokio::test]
async fn sites_by_host_path_and_subdomain_resolve_once_per_ttl() {
    need_dnsmasq!();
    let dns = start_dns(TTL).unwrap();
    let s = gateway(&dns.url(), ".example.org", "");

    // The DNSLink gateway: the Host is the site.
    let a = get(&s, Some("dnslink-test.example.org"), "/").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(&a.body[..], b"hello\n");
    let age = max_age(&a);
    assert!(age > 0 && age <= u64::from(TTL), "fresh for the TTL: {age}");
    assert_eq!(a.header("x-ipfs-path"), "/ipns/dnslink-test.example.org/");

    // The same site under /ipns/ and on the subdomain gateway, the name inlined or not.
    for (host, path) in [
        (None, "/ipns/dnslink-test.example.org"),
        (Some("dnslink-test.example.org.ipns.localhost"), "/"),
        (Some("dnslink--test-example-org.ipns.localhost"), "/"),
        (Some("DNSLINK-TEST.example.org."), "/"),
    ] {
        let a = get(&s, host, path).await;
        assert_eq!(a.status, 200, "{host:?} {path}: {}", a.text());
        assert_eq!(&a.body[..], b"hello\n", "{host:?} {path}");
        assert!(!a.header("cache-control").contains("immutable"));
    }
    // Five requests, one query: the answer was reused for its TTL.
    assert_eq!(
        dns.wait_queries("_dnslink.dnslink-test.example.org", 1, LOG_TRAIL),
        1
    );

    // DNSLink → IPNS (the conformance fixtures, peer ID and CID forms), and a DNSLink chain
    // through it, and a DNSLink to a path below a root.
    for host in [
        "dnslink-over-ipns.example.org",
        "dnslink-over-ipns-cidv1.example.org",
        "chain.example.org",
    ] {
        let a = get(&s, Some(host), "/").await;
        assert_eq!(a.status, 200, "{host}: {}", a.text());
        assert_eq!(&a.body[..], b"hello\n", "{host}");
        let a = get(&s, None, &format!("/ipns/{host}/")).await;
        assert_eq!(a.status, 200, "{host}: {}", a.text());
    }
    let a = get(
        &s,
        None,
        "/ipns/dnslink-subpath.example.org/root3/root4/index.html",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(&a.body[..], b"hello\n");
    for name in [
        "_dnslink.dnslink-over-ipns.example.org",
        "_dnslink.chain.example.org",
        "_dnslink.dnslink-subpath.example.org",
    ] {
        assert_eq!(dns.wait_queries(name, 1, LOG_TRAIL), 1, "{name}");
    }
    // A DNSLink beside other TXT records.
    let a = get(&s, Some("noise.example.org"), "/").await;
    assert_eq!(a.status, 200, "{}", a.text());

    let m = metrics(&s).await;
    assert!(metric_sum(&m, "cidgate_dnslink_cache_total", "outcome=\"hit\"") >= 4.0);
    assert!(metric_sum(&m, "cidgate_dnslink_lookups_total", "outcome=\"ok\"") >= 5.0);
    assert!(m.contains("cidgate_dnslink_lookup_duration_seconds"));
}

#[tokio::test]
async fn no_dnslink_two_dnslinks_the_allowed_list_and_the_static_table() {
    need_dnsmasq!();
    let dns = start_dns(TTL).unwrap();
    let s = gateway(&dns.url(), ".example.org", "");

    // No DNSLink: no site. Under /ipns/ nothing is there; as a Host it is the path gateway.
    let a = get(&s, None, "/ipns/nope.example.org/").await;
    assert_eq!(a.status, 404, "{}", a.text());
    assert!(a.text().contains("nope.example.org"), "{}", a.text());
    let a = get(&s, Some("nope.example.org"), &format!("/ipfs/{HELLO}")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(&a.body[..], b"hello\n");
    // "No DNSLink" is remembered too.
    assert_eq!(
        dns.wait_queries("_dnslink.nope.example.org", 1, LOG_TRAIL),
        1
    );

    // Two different content paths: the owner must fix the zone.
    let a = get(&s, None, "/ipns/two.example.org").await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert!(a.text().contains("more than one"), "{}", a.text());
    let a = get(&s, Some("two.example.org"), "/").await;
    assert_eq!(a.status, 502);

    // Not allowed: never looked up, never a site, whatever DNS holds.
    let a = get(&s, Some("site.example.net"), &format!("/ipfs/{HELLO}")).await;
    assert_eq!(a.status, 200, "the path gateway: {}", a.text());
    let a = get(&s, Some("site.example.net"), "/").await;
    assert_eq!(a.status, 200);
    assert!(!a.text().starts_with("hello"), "not the site: {}", a.text());
    let a = get(&s, None, "/ipns/site.example.net/").await;
    assert_eq!(a.status, 404, "{}", a.text());
    let a = get(&s, Some("site-example-net.ipns.localhost"), "/").await;
    assert_eq!(a.status, 404, "{}", a.text());
    // The gateway's own hosts and IP addresses are not looked up either.
    for host in [
        "localhost",
        "example.com",
        "x.example.com",
        "127.0.0.1",
        "[::1]",
    ] {
        let a = get(&s, Some(host), &format!("/ipfs/{HELLO}")).await;
        assert!(a.status == 200 || a.status == 301, "{host}: {}", a.status);
    }
    assert_eq!(dns.queries("_dnslink.site.example.net"), 0);
    assert!(
        dns.all_queries()
            .iter()
            .all(|q| q.contains(".example.org from")),
        "only allowed names were asked: {:?}",
        dns.all_queries()
    );

    // The static table wins over DNS, and DNS is not asked.
    let a = get(&s, Some("static.example.org"), "/").await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], b"hello\n");
    let a = get(&s, None, "/ipns/static.example.org").await;
    assert_eq!(&a.body[..], b"hello\n");
    assert_eq!(dns.queries("_dnslink.static.example.org"), 0);

    let m = metrics(&s).await;
    assert!(metric_sum(&m, "cidgate_dnslink_lookups_total", "outcome=\"not_found\"") >= 1.0);
    assert!(metric_sum(&m, "cidgate_dnslink_lookups_total", "outcome=\"ambiguous\"") >= 1.0);
    assert!(
        metric_sum(
            &m,
            "cidgate_dnslink_cache_total",
            "outcome=\"negative_hit\""
        ) >= 1.0
    );
}

#[tokio::test]
async fn answers_expire_with_their_ttl() {
    need_dnsmasq!();
    let dns = start_dns(1).unwrap();
    let s = gateway(&dns.url(), ".example.org", "");
    let a = get(&s, None, "/ipns/dnslink-test.example.org").await;
    assert_eq!(a.status, 200, "{}: {:?}", a.text(), dns.all_queries());
    assert!(max_age(&a) <= 1, "{}", a.header("cache-control"));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let a = get(&s, None, "/ipns/dnslink-test.example.org").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        dns.wait_queries("_dnslink.dnslink-test.example.org", 2, LOG_TRAIL),
        2
    );
}

#[tokio::test]
async fn each_domain_is_asked_of_the_resolver_of_its_longest_suffix() {
    need_dnsmasq!();
    let dns = start_dns(TTL).unwrap();
    // Nothing listens there: a domain sent to it fails.
    let dead = "udp://127.0.0.1:9";
    // The root goes nowhere; example.org has a resolver of its own.
    let s = gateway_with(
        &format!(
            "{{ \".\" = \"{dead}\", \"example.org\" = \"{}\" }}",
            dns.url()
        ),
        "*",
        "timeout = \"2s\"",
    );
    let a = get(&s, None, "/ipns/dnslink-test.example.org").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let a = get(&s, None, "/ipns/site.example.net/").await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert_eq!(dns.queries("_dnslink.site.example.net"), 0);
    drop(s);
    // The other way round: the root resolves, example.net goes nowhere, and the root's
    // resolver is never asked for what a longer suffix serves.
    let s = gateway_with(
        &format!(
            "{{ \".\" = \"{}\", \".example.net.\" = \"{dead}\" }}",
            dns.url()
        ),
        "*",
        "timeout = \"2s\"",
    );
    let a = get(&s, None, "/ipns/dnslink-over-ipns.example.org/").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let a = get(&s, None, "/ipns/site.example.net/").await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert_eq!(dns.queries("_dnslink.site.example.net"), 0);
}

#[tokio::test]
async fn a_resolver_that_is_down_answers_502() {
    need_dnsmasq!();
    let mut dns = start_dns(TTL).unwrap();
    let s = gateway(&dns.url(), "*", "timeout = \"2s\"");
    // Up: resolved and cached.
    let a = get(&s, None, "/ipns/dnslink-test.example.org").await;
    assert_eq!(a.status, 200);
    dns.stop();
    // Down: what is cached still answers; anything else is a bad gateway, quickly.
    let a = get(&s, None, "/ipns/dnslink-test.example.org").await;
    assert_eq!(a.status, 200);
    let start = Instant::now();
    let a = get(&s, None, "/ipns/dnslink-over-ipns.example.org/").await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert!(
        !a.text().contains("127.0.0.1"),
        "no internal address: {}",
        a.text()
    );
    let a = get(&s, Some("other.example.org"), "/").await;
    assert_eq!(a.status, 502, "a Host that may be a site: {}", a.text());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let m = metrics(&s).await;
    let failed = metric_sum(&m, "cidgate_dnslink_lookups_total", "outcome=\"failed\"")
        + metric_sum(&m, "cidgate_dnslink_lookups_total", "outcome=\"timeout\"");
    assert!(failed >= 2.0, "{failed}");
}

#[tokio::test]
async fn dns_over_https_with_a_private_ca() {
    let doh = common::dns::FakeDoh::start(
        vec![(
            "_dnslink.doh.example.org".to_string(),
            format!("dnslink=/ipfs/{HELLO}"),
        )],
        TTL,
    )
    .await;
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = ca_dir.path().join("ca.pem");
    std::fs::write(&ca, &doh.ca_pem).unwrap();
    let s = gateway(
        &doh.url,
        "*",
        &format!("tls_ca = {:?}", ca.display().to_string()),
    );
    let a = get(&s, Some("doh.example.org"), "/").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(&a.body[..], b"hello\n");
    let a = get(&s, None, "/ipns/doh.example.org").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        doh.count("_dnslink.doh.example.org"),
        1,
        "{:?}",
        doh.queries
    );
    let a = get(&s, None, "/ipns/missing.example.org").await;
    assert_eq!(a.status, 404, "{}", a.text());

    // Without the CA the server is not trusted: a failed resolver, never an answer.
    let s = gateway(&doh.url, "*", "");
    let a = get(&s, None, "/ipns/doh.example.org").await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert_eq!(doh.count("_dnslink.doh.example.org"), 1);
}
