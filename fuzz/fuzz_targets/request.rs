//! Request parsing: the content path, query and `Accept` (`cidgate::gateway::request`) and
//! subdomain / `{name}.ipns` host routing (`cidgate::gateway::subdomain`).
//!
//! Input: a request head as text, `METHOD TARGET` on the first line and `name: value` headers
//! after it (the corpus stays readable and hand-written seeds are easy). The head is turned into
//! `http::request::Parts` the way hyper would (heads that hyper would refuse are skipped).
//!
//! Properties: no panic; every error is a 4xx (invariant: bad input gets a clear 4xx); a parsed
//! request has no empty, `.` or `..` segment and its root CID round-trips through text; every
//! redirect `Location` is a valid header value on the same gateway (no open redirect).
#![no_main]

use cidgate::gateway::request::{parse, parse_path, wants_ipns_record};
use cidgate::gateway::subdomain::{route, HostRoute};
use libfuzzer_sys::fuzz_target;

/// The configured subdomain gateway hosts.
fn hosts() -> Vec<String> {
    vec!["localhost".into(), "example.com".into()]
}

fn parts_of(text: &str) -> Option<http::request::Parts> {
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next()?;
    let (method, target) = first.split_once(' ').unwrap_or(("GET", first));
    let mut b = http::Request::builder()
        .method(http::Method::from_bytes(method.as_bytes()).ok()?)
        .uri(http::Uri::try_from(target).ok()?);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = http::header::HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
        let value = http::header::HeaderValue::from_bytes(value.trim().as_bytes()).ok()?;
        b = b.header(name, value);
    }
    Some(b.body(()).ok()?.into_parts().0)
}

fn check_request(r: &cidgate::gateway::request::GatewayRequest) {
    for s in &r.segments {
        assert!(!s.is_empty() && s != "." && s != "..", "segment {s:?}");
    }
    let text = r.root.to_string();
    assert_eq!(
        cid::Cid::try_from(text.as_str()).ok(),
        Some(r.root),
        "root {text}"
    );
}

fn check_location(loc: &str, scheme: &str) {
    assert!(
        http::HeaderValue::from_str(loc).is_ok(),
        "Location {loc:?} is not a header value"
    );
    let rest = loc
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .unwrap_or_else(|| panic!("Location {loc:?} does not start with {scheme}://"));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once(':').map_or(authority, |(h, p)| {
        assert!(
            p.bytes().all(|b| b.is_ascii_digit()),
            "port {p:?} in {loc:?}"
        );
        h
    });
    let on_gateway = hosts().iter().any(|gw| {
        host.strip_suffix(gw.as_str())
            .and_then(|l| {
                l.strip_suffix(".ipfs.")
                    .or_else(|| l.strip_suffix(".ipns."))
            })
            .is_some_and(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    });
    assert!(on_gateway, "Location {loc:?} leaves the gateway");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(parts) = parts_of(text) else { return };
    let path = parts.uri.path();

    if path.starts_with("/ipfs/") {
        match parse(&parts) {
            Ok(r) => check_request(&r),
            Err(e) => assert!(e.status().is_client_error(), "{e} is {}", e.status()),
        }
    }
    if let Err(e) = wants_ipns_record(&parts) {
        assert!(e.status().is_client_error(), "{e} is {}", e.status());
    }

    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let host = header("host").or_else(|| parts.uri.authority().map(|a| a.as_str()));
    let Some(host) = host else { return };
    for scheme in ["http", "https"] {
        match route(&hosts(), host, scheme, path, parts.uri.query()) {
            Ok(HostRoute::Path) => {}
            Ok(HostRoute::Redirect(loc)) => check_location(&loc, scheme),
            Ok(HostRoute::Content(cid)) => {
                let content_path = format!("/ipfs/{cid}{path}");
                match parse_path(&parts, &content_path, true) {
                    Ok(r) => {
                        check_request(&r);
                        assert_eq!(r.root, cid);
                    }
                    Err(e) => assert!(e.status().is_client_error(), "{e} is {}", e.status()),
                }
            }
            Ok(HostRoute::Name(name)) => assert!(!name.is_empty()),
            Err(e) => assert!(e.status().is_client_error(), "{e} is {}", e.status()),
        }
    }
});
