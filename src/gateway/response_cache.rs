//! Whole small responses kept for repeated plain requests: the head and the (already verified)
//! body of a `200` for immutable content, answered again without parsing, resolving or
//! rebuilding headers. Content addressing makes this safe — the bytes behind a path never
//! change — as long as the key holds everything the response depends on. So only `GET`
//! requests without headers that change the answer (ranges, conditionals, `Cache-Control`,
//! service workers, forwarding) are looked up or stored, keyed on host, path with query, and
//! `Accept`.

use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use http::header::{
    HeaderValue, ACCEPT, CACHE_CONTROL, HOST, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, RANGE,
};
use http::{HeaderMap, Method, Response, StatusCode};
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use super::{body, Body, ResponseKind, ServedContent};

/// Largest body kept.
pub const MAX_BODY: usize = 64 * 1024;

/// Request headers whose presence keeps a request away from the cache.
/// (Names made once: a lookup by `&str` parses the name on every request.)
const VARYING: [http::HeaderName; 3] = [
    http::HeaderName::from_static("service-worker"),
    http::HeaderName::from_static("x-forwarded-host"),
    http::HeaderName::from_static("x-forwarded-proto"),
];

/// Standard request headers whose presence keeps a request away from the cache.
const STANDARD_VARYING: [http::HeaderName; 7] = [
    RANGE,
    IF_RANGE,
    IF_NONE_MATCH,
    IF_MATCH,
    IF_MODIFIED_SINCE,
    IF_UNMODIFIED_SINCE,
    CACHE_CONTROL,
];

/// What a response depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    host: Bytes,
    target: String,
    accept: Option<Bytes>,
}

/// A [`Key`] borrowed from the request: a lookup allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRef<'a> {
    host: &'a [u8],
    target: &'a str,
    accept: Option<&'a [u8]>,
}

impl Key {
    fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            host: &self.host,
            target: &self.target,
            accept: self.accept.as_deref(),
        }
    }
}

impl KeyRef<'_> {
    /// The owned key, to store a response under.
    pub fn to_owned(self) -> Key {
        Key {
            host: Bytes::copy_from_slice(self.host),
            target: self.target.to_string(),
            accept: self.accept.map(Bytes::copy_from_slice),
        }
    }
}

// Both spellings hash alike, field by field, so a borrowed key finds an owned one.
impl std::hash::Hash for KeyRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.host.hash(state);
        self.target.hash(state);
        self.accept.hash(state);
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self == key.as_ref()
    }
}

/// Marks a response whose complete body is this buffer, so it may be kept.
#[derive(Clone, Debug)]
pub struct CompleteBody(pub Bytes);

struct Stored {
    /// The response's headers, with the tier headers of an answer from memory.
    headers: HeaderMap,
    /// The HTTP/1.1 head of these headers and body, encoded once ([`crate::http1::kept_head`]).
    http1_head: Option<Bytes>,
    body: Bytes,
    root: Cid,
    kind: Option<ResponseKind>,
}

/// A kept response: what every hit on it shares.
pub struct Hit(Arc<Stored>);

impl Hit {
    /// The response to send: status `200`, the kept headers (tier headers included) and body,
    /// no extensions (the caller has [`Hit::root`] and [`Hit::kind`]).
    pub fn response(&self) -> Response<Body> {
        let mut resp = Response::new(body::full(self.0.body.clone()));
        *resp.headers_mut() = self.0.headers.clone();
        resp
    }

    /// [`Hit::response`] with the extensions a handled response carries (its content and
    /// kind), for callers that read them there.
    pub fn handled_response(&self) -> Response<Body> {
        let mut resp = self.response();
        resp.extensions_mut().insert(ServedContent {
            root: self.root(),
            segments: None,
        });
        if let Some(kind) = self.kind() {
            resp.extensions_mut().insert(kind);
        }
        resp
    }

    /// Its HTTP/1.1 head without `Date` and the blank line ([`crate::http1::kept_head`]), when
    /// its headers allow one encoded once.
    pub fn http1_head(&self) -> Option<&Bytes> {
        self.0.http1_head.as_ref()
    }

    /// Its body.
    pub fn body(&self) -> Bytes {
        self.0.body.clone()
    }

    /// The content root it serves.
    pub fn root(&self) -> Cid {
        self.0.root
    }

    /// What it carries.
    pub fn kind(&self) -> Option<ResponseKind> {
        self.0.kind
    }
}

/// `X-Cidgate-Tier` of an answer from memory.
pub const CACHED_TIER: HeaderValue = HeaderValue::from_static(crate::telemetry::CACHE_TIER);
/// `Server-Timing` of an answer from memory: the cache tier and no time spent, as
/// [`crate::telemetry::RequestTrace::server_timing`] writes it.
pub const CACHED_TIMING: HeaderValue = HeaderValue::from_static("cache;dur=0.000");

#[derive(Clone)]
struct StoredWeight;

impl Weighter<Key, Arc<Stored>> for StoredWeight {
    fn weight(&self, key: &Key, val: &Arc<Stored>) -> u64 {
        let headers: usize = val
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        let head = val.http1_head.as_ref().map_or(0, |h| h.len());
        (key.target.len() + val.body.len() + headers + head + 128) as u64
    }
}

/// The cache.
pub struct ResponseCache {
    cache: Cache<Key, Arc<Stored>, StoredWeight>,
}

impl ResponseCache {
    /// A cache holding up to `bytes` of responses.
    pub fn new(bytes: u64) -> Self {
        let items = (bytes / 4096).max(16) as usize;
        Self {
            cache: Cache::with_weighter(items, bytes, StoredWeight),
        }
    }

    /// Forgets every response (the rules about what may be served changed).
    pub fn clear(&self) {
        self.cache.clear();
    }

    /// The key of a request that may be answered from the cache, or `None`.
    pub fn key<'a>(method: &Method, uri: &'a http::Uri, h: &'a HeaderMap) -> Option<KeyRef<'a>> {
        if method != Method::GET {
            return None;
        }
        // One pass over the request's (few) headers, comparing names, rather than a hashed
        // lookup per name: this runs on every hit.
        let (mut host, mut accept) = (None, None);
        for (name, value) in h {
            if *name == HOST {
                host.get_or_insert(value);
            } else if *name == ACCEPT {
                accept.get_or_insert(value);
            } else if STANDARD_VARYING.contains(name) || VARYING.contains(name) {
                return None;
            }
        }
        // HTTP/2 carries the host in `:authority` (the URI), not in a Host header; routing reads
        // either, so the key must too, or one site's page would answer for another.
        let host = match host {
            Some(v) => v.as_bytes(),
            None => uri.authority()?.as_str().as_bytes(),
        };
        Some(KeyRef {
            host,
            target: uri.path_and_query()?.as_str(),
            accept: accept.map(|v| v.as_bytes()),
        })
    }

    /// The kept response for `key`.
    pub fn hit(&self, key: &KeyRef<'_>) -> Option<Hit> {
        self.cache.get(key).map(Hit)
    }

    /// Keeps `resp` if it is a complete `200` for immutable content with a small body.
    pub fn put(&self, key: KeyRef<'_>, resp: &Response<Body>) {
        if resp.status() != StatusCode::OK {
            return;
        }
        let immutable = resp
            .headers()
            .get(CACHE_CONTROL)
            .is_some_and(|v| v.as_bytes().ends_with(b"immutable"));
        let (Some(CompleteBody(body)), Some(served)) = (
            resp.extensions().get::<CompleteBody>(),
            resp.extensions().get::<ServedContent>(),
        ) else {
            return;
        };
        // A slice of a store segment is trusted only while its pages stay in memory (see
        // `zero_copy::stale_segment_slice`): not for as long as a cached response lives.
        if !immutable || body.len() > MAX_BODY || crate::zero_copy::is_segment_slice(body) {
            return;
        }
        let mut headers = resp.headers().clone();
        headers.insert(super::headers::X_CIDGATE_TIER, CACHED_TIER);
        headers.insert(super::headers::SERVER_TIMING, CACHED_TIMING);
        self.cache.insert(
            key.to_owned(),
            Arc::new(Stored {
                http1_head: crate::http1::kept_head(&headers, body.len() as u64),
                headers,
                body: body.clone(),
                root: served.root,
                kind: resp.extensions().get::<ResponseKind>().copied(),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{cid_v1_sha256, RAW};

    fn key_of(p: &http::request::Parts) -> Option<Key> {
        ResponseCache::key(&p.method, &p.uri, &p.headers).map(KeyRef::to_owned)
    }

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn response(status: u16, cache_control: &str, body: &[u8]) -> Response<Body> {
        let data = Bytes::copy_from_slice(body);
        let mut r = Response::new(body::full(data.clone()));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_str(cache_control).unwrap());
        r.extensions_mut().insert(CompleteBody(data));
        r.extensions_mut().insert(ServedContent {
            root: cid_v1_sha256(RAW, body),
            segments: None,
        });
        r
    }

    #[test]
    fn http2_requests_are_keyed_on_their_authority() {
        // HTTP/2 has no Host header: `:authority` is in the URI, and it routes the request.
        let a = key_of(&parts("GET", "http://a.ipfs.example.com/", &[])).unwrap();
        let b = key_of(&parts("GET", "http://b.ipfs.example.com/", &[])).unwrap();
        assert_ne!(a, b, "two sites never share an entry");
        assert!(
            key_of(&parts("GET", "/", &[])).is_none(),
            "no host at all: not cached"
        );
    }

    #[test]
    fn only_plain_gets_are_looked_up() {
        assert!(key_of(&parts("GET", "/ipfs/x", &[("host", "a")])).is_some());
        assert!(key_of(&parts("HEAD", "/ipfs/x", &[])).is_none());
        for h in [
            "range",
            "if-none-match",
            "if-match",
            "if-range",
            "if-modified-since",
            "if-unmodified-since",
            "cache-control",
            "service-worker",
            "x-forwarded-host",
            "x-forwarded-proto",
        ] {
            assert!(
                key_of(&parts("GET", "/ipfs/x", &[("host", "a"), (h, "1")])).is_none(),
                "{h}"
            );
            assert!(
                key_of(&parts("GET", "/ipfs/x", &[(h, "1"), ("host", "a")])).is_none(),
                "{h}"
            );
        }
        // Other headers do not matter; the first Accept is the key's, as `get` reads it.
        let key = key_of(&parts(
            "GET",
            "/ipfs/x",
            &[
                ("user-agent", "u"),
                ("accept", "application/vnd.ipld.raw"),
                ("host", "a"),
                ("accept", "*/*"),
            ],
        ))
        .unwrap();
        assert_eq!(
            key.accept.as_deref(),
            Some(&b"application/vnd.ipld.raw"[..])
        );
        assert_eq!(&key.host[..], b"a");
        // Host, query and Accept are part of the key.
        let k = |uri, host, accept| {
            key_of(&parts("GET", uri, &[("host", host), ("accept", accept)])).unwrap()
        };
        assert_ne!(k("/ipfs/x", "a", "*/*"), k("/ipfs/x", "b", "*/*"));
        assert_ne!(
            k("/ipfs/x", "a", "*/*"),
            k("/ipfs/x?format=raw", "a", "*/*")
        );
        assert_ne!(
            k("/ipfs/x", "a", "*/*"),
            k("/ipfs/x", "a", "application/vnd.ipld.raw")
        );
    }

    #[test]
    fn a_borrowed_key_finds_what_an_owned_one_stored_and_hits_carry_the_tier_headers() {
        let cache = ResponseCache::new(1 << 20);
        let stored = parts("GET", "/ipfs/x?a=1", &[("host", "a"), ("accept", "*/*")]);
        let key = ResponseCache::key(&stored.method, &stored.uri, &stored.headers).unwrap();
        cache.put(key, &response(200, "public, immutable", b"hi"));
        // The same request again, parsed anew: nothing shared with the stored key.
        let again = parts("GET", "/ipfs/x?a=1", &[("host", "a"), ("accept", "*/*")]);
        let key = ResponseCache::key(&again.method, &again.uri, &again.headers).unwrap();
        let hit = cache.hit(&key).expect("found by a borrowed key");
        let resp = hit.response();
        assert_eq!(resp.headers()["x-cidgate-tier"], "cache");
        assert_eq!(resp.headers()["server-timing"], "cache;dur=0.000");
        assert_eq!(hit.root(), cid_v1_sha256(RAW, b"hi"));
        // Its HTTP/1.1 head is encoded once, tier headers and length included.
        let head = std::str::from_utf8(hit.http1_head().expect("encoded")).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        for line in [
            "x-cidgate-tier: cache\r\n",
            "server-timing: cache;dur=0.000\r\n",
            "content-length: 2\r\n",
        ] {
            assert!(head.contains(line), "{head}");
        }
        assert_eq!(hit.body(), &b"hi"[..]);
        // Any part of the key that differs misses.
        for (uri, host, accept) in [
            ("/ipfs/x?a=2", "a", "*/*"),
            ("/ipfs/x?a=1", "b", "*/*"),
            ("/ipfs/x?a=1", "a", "text/html"),
        ] {
            let p = parts("GET", uri, &[("host", host), ("accept", accept)]);
            let key = ResponseCache::key(&p.method, &p.uri, &p.headers).unwrap();
            assert!(cache.hit(&key).is_none(), "{uri} {host} {accept}");
        }
        let no_accept = parts("GET", "/ipfs/x?a=1", &[("host", "a")]);
        let key = ResponseCache::key(&no_accept.method, &no_accept.uri, &no_accept.headers);
        assert!(cache.hit(&key.unwrap()).is_none(), "no Accept is not */*");
    }

    #[test]
    fn keeps_complete_immutable_200s_only() {
        let cache = ResponseCache::new(1 << 20);
        let key = |p: &str| key_of(&parts("GET", p, &[("host", "a")])).unwrap();
        cache.put(
            key("/a").as_ref(),
            &response(200, "public, max-age=29030400, immutable", b"hi"),
        );
        cache.put(
            key("/b").as_ref(),
            &response(206, "public, max-age=29030400, immutable", b"hi"),
        );
        cache.put(key("/c").as_ref(), &response(200, "no-cache", b"hi"));
        let mut no_body = response(200, "public, immutable", b"hi");
        no_body.extensions_mut().remove::<CompleteBody>();
        cache.put(key("/d").as_ref(), &no_body);
        let big = vec![0u8; MAX_BODY + 1];
        cache.put(
            key("/e").as_ref(),
            &response(200, "public, immutable", &big),
        );
        let hit = cache.hit(&key("/a").as_ref()).unwrap().handled_response();
        assert_eq!(hit.status(), 200);
        assert!(hit.extensions().get::<ServedContent>().is_some());
        for p in ["/b", "/c", "/d", "/e"] {
            assert!(cache.hit(&key(p).as_ref()).is_none(), "{p}");
        }
    }
}
