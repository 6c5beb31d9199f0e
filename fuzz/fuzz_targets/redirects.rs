//! The `_redirects` parser and matcher (`cidgate::gateway::redirects`).
//!
//! Input: the file, optionally followed by a NUL byte and request paths (one per line, with an
//! optional `?query`); a fixed set of probe paths is always looked up too.
//!
//! Properties: no panic; a rewrite or custom error page (200, 404, 410, 451) names a path that
//! starts with '/' and never climbs out of the root; a redirect's `Location` is a valid header
//! value, and when it is a path it is not protocol-relative (`//host` or `/\host`: an open
//! redirect); statuses are only those the spec allows.
#![no_main]

use cidgate::gateway::redirects::Redirects;
use libfuzzer_sys::fuzz_target;

const PROBES: [&str; 10] = [
    "/",
    "/a",
    "/a/b",
    "/a/b/c/d",
    "/missing.html",
    "/evil.example",
    "//evil.example",
    "/\\evil.example",
    "/caf\u{e9}/x y",
    "/..",
];

fn check(rules: &Redirects, path: &str, query: Option<&str>) {
    let Some(hit) = rules.lookup(path, query) else {
        return;
    };
    match hit.status {
        200 | 404 | 410 | 451 => {
            assert!(hit.to.starts_with('/'), "content target {:?}", hit.to);
            assert!(
                !hit.to.split('/').any(|s| s == ".." || s == "."),
                "content target {:?} leaves the root",
                hit.to
            );
        }
        301 | 302 | 303 | 307 | 308 => {
            assert!(
                http::HeaderValue::from_str(&hit.to).is_ok(),
                "Location {:?} is not a header value",
                hit.to
            );
            if hit.to.starts_with('/') {
                let second = hit.to.as_bytes().get(1).copied();
                assert!(
                    second != Some(b'/') && second != Some(b'\\'),
                    "Location {:?} leaves the origin",
                    hit.to
                );
            }
        }
        other => panic!("status {other}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let (file, requests) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(rules) = Redirects::parse(file) else {
        return;
    };
    for p in PROBES {
        check(&rules, p, None);
        check(&rules, p, Some("x=1&y=%2F"));
    }
    // Request paths arrive decoded; queries arrive as the raw (valid URI) query string.
    for line in String::from_utf8_lossy(requests).lines() {
        let (path, query) = match line.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (line, None),
        };
        let query = query.filter(|q| http::uri::PathAndQuery::try_from(format!("/?{q}")).is_ok());
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        check(&rules, &path, query);
    }
});
