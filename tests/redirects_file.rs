//! The `_redirects` file (ipfs/specs `web-redirects-file.md`) on the subdomain gateway, over the
//! conformance fixtures `redirects_file/redirects.car` and `redirects-spa.car`: rewrites,
//! redirects with placeholders and splats, custom 404 / 410 / 451 pages, invalid files, and the
//! places the file must not act (path requests, explicit formats, existing paths).

mod common;

use std::net::SocketAddr;

use common::{answer, Server};

/// `_redirects` with the spec's example rules.
const EXAMPLES: &str = "bafybeiesjgoros75o5meijhfvnxmy7kzkynhqijlzmypw3nry6nvsjqkzy";
/// The example rules with CRLF line ends.
const NEWLINES: &str = "bafybeie6hxr2huda5imzvblcwgxuddackbw5wi35elm3jzeuk4v2ul54kq";
/// `/a /b 301!`.
const FORCED: &str = "bafybeicv4452oppsenilwr54bcej2xxr5olcwu3y5xc2k3lemvrvtokljm";
/// 65 548 bytes of rules.
const TOO_LARGE: &str = "bafybeia7qpipssvt5ric7m2kuzgnj454njcz5q6vj3fqq67be2dm7r522m";
/// One rule per supported status.
const GOOD_CODES: &str = "bafybeidweedjvp3uvnnj63vdavdkmva76ogc3veurukknvpnmtumpfyhcm";
/// `/a /b 999`, next to an existing `found.html`.
const BAD_CODES: &str = "bafybeignwkoxmt6a2l3jyvph4m2pmfctvqlom7znwufpkpzgoxtuyjptea";
/// A single-page app: `/* /index.html 200`.
const SPA: &str = "bafybeib5lboymwd6p2eo4qb2lkueaine577flvsjjeuevmp2nlio72xv5q";

const IMMUTABLE: &str = "public, max-age=29030400, immutable";

struct Site {
    _server: Server,
    addr: SocketAddr,
    client: reqwest::Client,
}

impl Site {
    fn start() -> Site {
        let server = Server::start_with(
            &[
                "redirects_file/redirects.car",
                "redirects_file/redirects-spa.car",
            ],
            &[("CIDGATE_SERVER__SUBDOMAIN_HOSTS", "example.com,localhost")],
            &[],
        );
        let addr: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Site {
            _server: server,
            addr,
            client,
        }
    }

    /// A request for `path` on the subdomain host of `cid`.
    fn get(&self, cid: &str, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("http://{}{path}", self.addr))
            .header("host", format!("{cid}.ipfs.example.com"))
    }
}

#[tokio::test]
async fn rules_redirect_rewrite_and_serve_error_pages() {
    let site = Site::start();
    for (path, status, location) in [
        ("/redirect-one", 301, "/one.html"),
        ("/301-redirect-one", 301, "/one.html"),
        ("/302-redirect-two", 302, "/two.html"),
        (
            "/posts/2022/01/01/hello-world",
            301,
            "/articles/2022/01/01/hello-world",
        ),
        ("/splat/one.html", 301, "/redirected-splat/one.html"),
        ("/redirect-one?x=1", 301, "/one.html?x=1"),
    ] {
        let a = answer(site.get(EXAMPLES, path)).await;
        assert_eq!(a.status, status, "{path}");
        assert_eq!(a.header("location"), location, "{path}");
        assert!(a.text().contains(location), "{path}: a link for browsers");
        // IPIP-548: a redirect names the path asked for, without the query.
        let asked = path.split('?').next().unwrap();
        assert_eq!(a.header("ipfs-uri"), format!("ipfs://{EXAMPLES}{asked}"));
    }
    for path in ["/200-index", "/catch-all"] {
        let a = answer(site.get(EXAMPLES, path)).await;
        assert_eq!(a.status, 200, "{path}");
        assert!(
            a.text().contains("my index"),
            "{path}: rewritten to index.html"
        );
        // A rewrite's headers name what was resolved and served.
        assert_eq!(
            a.header("ipfs-uri"),
            format!("ipfs://{EXAMPLES}/index.html")
        );
        assert_eq!(
            a.header("x-ipfs-path"),
            format!("/ipfs/{EXAMPLES}/index.html")
        );
    }
    for (path, status, etag, text) in [
        (
            "/not-found/has-no-redirects-entry",
            404,
            "\"Qmd9GD7Bauh6N2ZLfNnYS3b7QVAijbud83b8GE8LPMNBBP\"",
            "my 404",
        ),
        (
            "/gone/has-no-redirects-entry",
            410,
            "\"QmSmR9NShZ89VEBrn9SBy7Xxvjw8Qe6XArD5GqtHvbtBM3\"",
            "my 410",
        ),
        (
            "/unavail/has-no-redirects-entry",
            451,
            "\"QmVQqj9oZig9tH3ENHo4bxV5pNgssUwFCXUjAJAVcZVbJG\"",
            "my 451",
        ),
    ] {
        let a = answer(site.get(EXAMPLES, path)).await;
        assert_eq!(a.status, status, "{path}");
        assert_eq!(a.header("etag"), etag, "{path}");
        assert_eq!(a.header("cache-control"), IMMUTABLE, "{path}");
        assert!(a.header("content-type").starts_with("text/html"), "{path}");
        assert!(a.text().contains(text), "{path}");
        // The page describes the missing path, not a content path of its own.
        assert_eq!(a.header("ipfs-uri"), "", "{path}");
        assert_eq!(a.header("x-ipfs-path"), "", "{path}");
    }
    let a = answer(site.get(NEWLINES, "/redirect-one")).await;
    assert_eq!(
        (a.status, a.header("location")),
        (301, "/one.html"),
        "CRLF lines"
    );
    let a = answer(site.get(GOOD_CODES, "/a301")).await;
    assert_eq!((a.status, a.header("location")), (301, "/b301"));
}

#[tokio::test]
async fn invalid_files_fail_missing_paths_only() {
    let site = Site::start();
    let a = answer(site.get(FORCED, "/not-found")).await;
    assert_eq!(a.status, 500);
    assert!(
        a.text().contains("could not parse _redirects:"),
        "{}",
        a.text()
    );
    assert!(a
        .text()
        .contains("forced redirects (or \"shadowing\") are not supported"));
    let a = answer(site.get(TOO_LARGE, "/not-found")).await;
    assert_eq!(a.status, 500);
    assert!(
        a.text().contains("could not parse _redirects:"),
        "{}",
        a.text()
    );
    assert!(a.text().contains("redirects file size cannot exceed"));
    // Rules never shadow existing files, valid or not.
    let a = answer(site.get(BAD_CODES, "/found.html")).await;
    assert_eq!(a.status, 200);
    assert!(a.text().contains("my found"));
    assert!(!a.text().contains("unsupported redirect status"));
}

#[tokio::test]
async fn single_page_app_rewrites_answer_conditional_requests() {
    let site = Site::start();
    let a = answer(site.get(SPA, "/missing-page").header("accept", "text/html")).await;
    assert_eq!(a.status, 200);
    assert!(a.text().contains("hello world"));
    let etag = a.header("etag").to_string();
    assert!(!etag.is_empty());
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let resp = site
            .client
            .request(method.clone(), format!("http://{}/missing-page", site.addr))
            .header("host", format!("{SPA}.ipfs.localhost"))
            .header("accept", "text/html")
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 304, "{method}");
    }
}

#[tokio::test]
async fn the_file_does_not_act_outside_its_origin_or_for_explicit_formats() {
    let site = Site::start();
    // A path gateway shares one origin between all sites: no rules there.
    let a = answer(
        site.client
            .get(format!("http://{}/ipfs/{EXAMPLES}/redirect-one", site.addr)),
    )
    .await;
    assert_eq!(a.status, 404);
    // An explicit format is answered as asked.
    let a = answer(site.get(EXAMPLES, "/redirect-one?format=raw")).await;
    assert_eq!(a.status, 404);
    // No rule matches: the ordinary 404.
    let a = answer(site.get(GOOD_CODES, "/no-rule-for-this")).await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn dnslink_sites_use_their_own_redirects_even_below_a_root() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::cidgate(
        dir.path(),
        &[
            "import",
            common::fixture("redirects_file/redirects.car")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(out.status.success());
    let config = dir.path().join("cidgate.toml");
    // The conformance DNSLink points at the examples directory's CID; a site may also be a
    // directory below a root, and its `_redirects` is then that directory's.
    std::fs::write(
        &config,
        "[dnslink.names]\n\
         \"dnslink-redirects-examples.example.org\" = \"/ipfs/QmYBhLYDwVFvxos9h8CGU2ibaY66QNgv8hpfewxaQrPiZj\"\n\
         \"below-a-root.example.org\" = \"/ipfs/QmQyqMY5vUBSbSxyitJqthgwZunCQjDVtNd8ggVCxzuPQ4/examples\"\n",
    )
    .unwrap();
    let s = Server::spawn_with_config(dir, &config, &[]);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for host in [
        "dnslink-redirects-examples.example.org",
        "below-a-root.example.org",
    ] {
        let get = |path: &str| client.get(format!("{}{path}", s.url)).header("host", host);
        let a = answer(get("/redirect-one")).await;
        assert_eq!(
            (a.status, a.header("location")),
            (301, "/one.html"),
            "{host}"
        );
        let a = answer(get("/not-found/has-no-redirects-entry")).await;
        assert_eq!(a.status, 404, "{host}");
        assert_eq!(
            a.header("etag"),
            "\"Qmd9GD7Bauh6N2ZLfNnYS3b7QVAijbud83b8GE8LPMNBBP\""
        );
        assert!(
            !a.header("cache-control").contains("immutable"),
            "a DNSLink site can change: {host}"
        );
        assert!(a.text().contains("my 404"));
        let a = answer(get("/200-index")).await;
        assert_eq!(a.status, 200, "{host}");
        assert!(a.text().contains("my index"), "{host}");
    }
}
