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
const VARYING: [&str; 3] = ["service-worker", "x-forwarded-host", "x-forwarded-proto"];

/// What a response depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    host: Option<HeaderValue>,
    target: String,
    accept: Option<HeaderValue>,
}

/// Marks a response whose complete body is this buffer, so it may be kept.
#[derive(Clone, Debug)]
pub struct CompleteBody(pub Bytes);

struct Stored {
    headers: HeaderMap,
    body: Bytes,
    root: Cid,
    kind: Option<ResponseKind>,
}

#[derive(Clone)]
struct StoredWeight;

impl Weighter<Key, Arc<Stored>> for StoredWeight {
    fn weight(&self, key: &Key, val: &Arc<Stored>) -> u64 {
        let headers: usize = val
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        (key.target.len() + val.body.len() + headers + 128) as u64
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
    pub fn key(parts: &http::request::Parts) -> Option<Key> {
        if parts.method != Method::GET {
            return None;
        }
        let h = &parts.headers;
        let varies = [
            RANGE,
            IF_RANGE,
            IF_NONE_MATCH,
            IF_MATCH,
            IF_MODIFIED_SINCE,
            IF_UNMODIFIED_SINCE,
            CACHE_CONTROL,
        ]
        .iter()
        .any(|n| h.contains_key(n))
            || VARYING.iter().any(|n| h.contains_key(*n));
        if varies {
            return None;
        }
        // HTTP/2 carries the host in `:authority` (the URI), not in a Host header; routing reads
        // either, so the key must too, or one site's page would answer for another.
        let host = match h.get(HOST) {
            Some(v) => v.clone(),
            None => http::HeaderValue::from_str(parts.uri.authority()?.as_str()).ok()?,
        };
        Some(Key {
            host: Some(host),
            target: parts.uri.path_and_query()?.as_str().to_string(),
            accept: h.get(ACCEPT).cloned(),
        })
    }

    /// The stored response for `key`.
    pub fn get(&self, key: &Key) -> Option<Response<Body>> {
        let stored = self.cache.get(key)?;
        let mut resp = Response::new(body::full(stored.body.clone()));
        *resp.headers_mut() = stored.headers.clone();
        resp.extensions_mut().insert(ServedContent {
            root: stored.root,
            segments: None,
        });
        if let Some(kind) = stored.kind {
            resp.extensions_mut().insert(kind);
        }
        Some(resp)
    }

    /// Keeps `resp` if it is a complete `200` for immutable content with a small body.
    pub fn put(&self, key: Key, resp: &Response<Body>) {
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
        self.cache.insert(
            key,
            Arc::new(Stored {
                headers: resp.headers().clone(),
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
        let a = ResponseCache::key(&parts("GET", "http://a.ipfs.example.com/", &[])).unwrap();
        let b = ResponseCache::key(&parts("GET", "http://b.ipfs.example.com/", &[])).unwrap();
        assert_ne!(a, b, "two sites never share an entry");
        assert!(
            ResponseCache::key(&parts("GET", "/", &[])).is_none(),
            "no host at all: not cached"
        );
    }

    #[test]
    fn only_plain_gets_are_looked_up() {
        assert!(ResponseCache::key(&parts("GET", "/ipfs/x", &[("host", "a")])).is_some());
        assert!(ResponseCache::key(&parts("HEAD", "/ipfs/x", &[])).is_none());
        for h in [
            "range",
            "if-none-match",
            "if-range",
            "cache-control",
            "service-worker",
            "x-forwarded-host",
            "x-forwarded-proto",
        ] {
            assert!(
                ResponseCache::key(&parts("GET", "/ipfs/x", &[("host", "a"), (h, "1")])).is_none(),
                "{h}"
            );
        }
        // Host, query and Accept are part of the key.
        let k = |uri, host, accept| {
            ResponseCache::key(&parts("GET", uri, &[("host", host), ("accept", accept)])).unwrap()
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
    fn keeps_complete_immutable_200s_only() {
        let cache = ResponseCache::new(1 << 20);
        let key = |p: &str| ResponseCache::key(&parts("GET", p, &[("host", "a")])).unwrap();
        cache.put(
            key("/a"),
            &response(200, "public, max-age=29030400, immutable", b"hi"),
        );
        cache.put(
            key("/b"),
            &response(206, "public, max-age=29030400, immutable", b"hi"),
        );
        cache.put(key("/c"), &response(200, "no-cache", b"hi"));
        let mut no_body = response(200, "public, immutable", b"hi");
        no_body.extensions_mut().remove::<CompleteBody>();
        cache.put(key("/d"), &no_body);
        let big = vec![0u8; MAX_BODY + 1];
        cache.put(key("/e"), &response(200, "public, immutable", &big));
        let hit = cache.get(&key("/a")).unwrap();
        assert_eq!(hit.status(), 200);
        assert!(hit.extensions().get::<ServedContent>().is_some());
        for p in ["/b", "/c", "/d", "/e"] {
            assert!(cache.get(&key(p)).is_none(), "{p}");
        }
    }
}
