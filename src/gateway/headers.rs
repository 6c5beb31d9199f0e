//! Header values shared by the response formats: caching, `Etag` matching, file names.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// `Cache-Control` of immutable `/ipfs/` responses.
pub const IMMUTABLE: &str = "public, max-age=29030400, immutable";

/// Header naming the roots of each path segment.
pub const X_IPFS_ROOTS: HeaderName = HeaderName::from_static("x-ipfs-roots");
/// Header naming the tiers that served a response (`cache`, `store`, `hot`, …).
pub const X_CIDGATE_TIER: HeaderName = HeaderName::from_static("x-cidgate-tier");
/// Time spent per tier, in the W3C Server-Timing format.
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
/// Lets any origin read a response's timing (Resource Timing API, `Server-Timing`).
pub const TIMING_ALLOW_ORIGIN: HeaderName = HeaderName::from_static("timing-allow-origin");
/// Header echoing the content path.
pub const X_IPFS_PATH: HeaderName = HeaderName::from_static("x-ipfs-path");

/// What Go's `url.PathEscape` leaves alone besides alphanumerics, so file names look the same
/// as on the reference gateway.
const PATH_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// `Content-Disposition` with an ASCII fallback and the RFC 5987 UTF-8 name.
pub fn content_disposition(kind: &str, name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| if c.is_ascii() { c } else { '_' })
        .collect();
    format!(
        "{kind}; filename=\"{}\"; filename*=UTF-8''{}",
        utf8_percent_encode(&ascii, PATH_ESCAPE),
        utf8_percent_encode(name, PATH_ESCAPE)
    )
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, lists, `*`).
pub fn none_match(header: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let want = strip(etag);
    header.split(',').any(|t| {
        let t = t.trim();
        t == "*" || (!t.is_empty() && strip(t) == want)
    })
}

/// A same-origin redirect target built from a request path: a run of leading slashes (or
/// backslashes, which browsers read as slashes) becomes one, so that a path like
/// `//evil.example` can never turn into a protocol-relative URL that leaves the origin.
pub fn same_origin(location: &str) -> String {
    let rest = location.trim_start_matches(['/', '\\']);
    if rest.len() == location.len() {
        return location.to_string();
    }
    format!("/{rest}")
}

/// Inserts a header from a string. A value that is not valid header text (content can put
/// anything in a file name or a `_redirects` rule) is left out and logged: the response goes
/// without it rather than fail, but an operator can see why a header is missing.
pub fn set(headers: &mut HeaderMap, name: impl Into<HeaderName>, value: &str) {
    let name = name.into();
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            tracing::warn!(header = %name, value = %value.escape_debug(), "header value cannot be sent; left out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets_stay_on_the_origin() {
        assert_eq!(same_origin("//evil.example/"), "/evil.example/");
        assert_eq!(same_origin("/\\evil.example/"), "/evil.example/");
        assert_eq!(same_origin("///a/b/"), "/a/b/");
        assert_eq!(same_origin("/ipfs/x/"), "/ipfs/x/");
        assert_eq!(same_origin("rel/"), "rel/");
    }

    #[test]
    fn disposition_escapes_like_the_reference_gateway() {
        assert_eq!(
            content_disposition("attachment", "bafy.car"),
            "attachment; filename=\"bafy.car\"; filename*=UTF-8''bafy.car"
        );
        assert_eq!(
            content_disposition("inline", "Ñandú \"x\".txt"),
            "inline; filename=\"_and_%20%22x%22.txt\"; filename*=UTF-8''%C3%91and%C3%BA%20%22x%22.txt"
        );
    }

    #[test]
    fn etag_matching_is_weak_and_takes_lists() {
        assert!(none_match("\"a.raw\"", "\"a.raw\""));
        assert!(none_match("W/\"a.raw\"", "\"a.raw\""));
        assert!(none_match("\"x\", \"a.raw\"", "\"a.raw\""));
        assert!(none_match("*", "\"a.raw\""));
        assert!(!none_match("\"b.raw\"", "\"a.raw\""));
        assert!(!none_match("", "\"a.raw\""));
    }
}
