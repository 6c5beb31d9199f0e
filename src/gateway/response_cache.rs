//! Whole small responses kept for repeated plain requests: the head and the (already verified)
//! body of a `200` for immutable content, answered again without parsing, resolving or
//! rebuilding headers. Content addressing makes this safe — the bytes behind a path never
//! change — as long as the key holds everything the response depends on. So only `GET`
//! requests without headers that change the answer (ranges, conditionals, `Cache-Control`,
//! service workers, forwarding) are looked up or stored, keyed on host, path with query, and
//! `Accept`.
//!
//! A body up to [`MAX_BODY`] is kept with the response. A larger one is kept only when it is a
//! block's bytes (a raw block, a one-block file: [`BlockBody`]), as a reference to that block:
//! each hit reads it from the memory cache, which holds, counts and evicts it, and a block no
//! longer there makes the hit a miss.

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

/// Largest body kept by value.
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

/// Marks a [`CompleteBody`] that is `len` bytes of one block's data from `offset` (a raw block,
/// or a one-block file): a body larger than [`MAX_BODY`] is kept as this reference, and read
/// from the memory cache on each hit.
#[derive(Clone, Copy, Debug)]
pub struct BlockBody {
    /// The block.
    pub cid: Cid,
    /// Where the body starts in the block's data.
    pub offset: usize,
}

impl BlockBody {
    /// `body` as a part of `block`'s data, when it is one (it shares the block's buffer).
    pub fn within(block: &crate::ipld::Block, body: &[u8]) -> Option<BlockBody> {
        let data = block.data();
        let start = (body.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
        (start.checked_add(body.len())? <= data.len()).then_some(BlockBody {
            cid: *block.cid(),
            offset: start,
        })
    }
}

/// The body of a kept response.
enum KeptBody {
    /// The bytes themselves (at most [`MAX_BODY`]).
    Whole(Bytes),
    /// Bytes of a block, while the memory cache holds it.
    InBlock { cid: Cid, offset: usize, len: usize },
}

impl KeptBody {
    fn len(&self) -> usize {
        match self {
            KeptBody::Whole(b) => b.len(),
            KeptBody::InBlock { len, .. } => *len,
        }
    }

    /// The bytes it counts against the cache's budget.
    fn weight(&self) -> usize {
        match self {
            KeptBody::Whole(b) => b.len(),
            // Held, and counted, by the memory cache.
            KeptBody::InBlock { .. } => 0,
        }
    }
}

struct Stored {
    /// The response's headers, with the tier headers of an answer from memory.
    headers: HeaderMap,
    /// The HTTP/1.1 head of these headers and body, encoded once ([`crate::http1::kept_head`]).
    http1_head: Option<Bytes>,
    body: KeptBody,
    root: Cid,
    kind: Option<ResponseKind>,
}

/// A kept response: what every hit on it shares, and its body.
pub struct Hit {
    stored: Arc<Stored>,
    body: Bytes,
}

impl Hit {
    /// The response to send: status `200`, the kept headers (tier headers included) and body,
    /// no extensions (the caller has [`Hit::root`] and [`Hit::kind`]).
    pub fn response(&self) -> Response<Body> {
        let mut resp = Response::new(body::full(self.body.clone()));
        *resp.headers_mut() = self.stored.headers.clone();
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
        self.stored.http1_head.as_ref()
    }

    /// Its body.
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }

    /// The content root it serves.
    pub fn root(&self) -> Cid {
        self.stored.root
    }

    /// What it carries.
    pub fn kind(&self) -> Option<ResponseKind> {
        self.stored.kind
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
        (key.target.len() + val.body.weight() + headers + head + 128) as u64
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

    /// The kept response for `key`; `cached_block` gives the bytes of a block the memory
    /// cache holds, for a body kept by reference (without them, the hit is a miss).
    pub fn hit(
        &self,
        key: &KeyRef<'_>,
        cached_block: impl FnOnce(&Cid) -> Option<Bytes>,
    ) -> Option<Hit> {
        let stored = self.cache.get(key)?;
        let body = match &stored.body {
            KeptBody::Whole(b) => b.clone(),
            KeptBody::InBlock { cid, offset, len } => {
                // The same CID is the same bytes; the length check only guards the slice.
                let found = cached_block(cid).and_then(|data| {
                    let end = offset.checked_add(*len).filter(|e| *e <= data.len())?;
                    Some(data.slice(*offset..end))
                });
                match found {
                    Some(body) => body,
                    None => {
                        // The block left the memory cache: the entry goes too, rather than
                        // look used on every miss (the full path keeps the answer again once
                        // the block is back).
                        self.cache.remove(key);
                        return None;
                    }
                }
            }
        };
        Some(Hit { stored, body })
    }

    /// Keeps `resp` if it is a complete `200` for immutable content: a small body with it, a
    /// larger one as a reference to its block while `in_memory` says the memory cache holds
    /// that block.
    pub fn put(
        &self,
        key: KeyRef<'_>,
        resp: &Response<Body>,
        in_memory: impl FnOnce(&Cid) -> bool,
    ) {
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
        if !immutable {
            return;
        }
        let kept = if body.len() <= MAX_BODY {
            // A slice of a store segment is trusted only while its pages stay in memory (see
            // `zero_copy::stale_segment_slice`): not for as long as a cached response lives.
            if crate::zero_copy::is_segment_slice(body) {
                return;
            }
            KeptBody::Whole(body.clone())
        } else {
            // A larger body is kept only as a reference to the block it is part of: its bytes
            // stay the memory cache's to hold, evict and count.
            let Some(block) = resp
                .extensions()
                .get::<BlockBody>()
                .filter(|b| in_memory(&b.cid))
            else {
                return;
            };
            KeptBody::InBlock {
                cid: block.cid,
                offset: block.offset,
                len: body.len(),
            }
        };
        let mut headers = resp.headers().clone();
        headers.insert(super::headers::X_CIDGATE_TIER, CACHED_TIER);
        headers.insert(super::headers::SERVER_TIMING, CACHED_TIMING);
        self.cache.insert(
            key.to_owned(),
            Arc::new(Stored {
                http1_head: crate::http1::kept_head(&headers, kept.len() as u64),
                headers,
                body: kept,
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
        r.headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
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
        cache.put(key, &response(200, "public, immutable", b"hi"), |_| true);
        // The same request again, parsed anew: nothing shared with the stored key.
        let again = parts("GET", "/ipfs/x?a=1", &[("host", "a"), ("accept", "*/*")]);
        let key = ResponseCache::key(&again.method, &again.uri, &again.headers).unwrap();
        let hit = cache.hit(&key, |_| None).expect("found by a borrowed key");
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
            assert!(cache.hit(&key, |_| None).is_none(), "{uri} {host} {accept}");
        }
        let no_accept = parts("GET", "/ipfs/x?a=1", &[("host", "a")]);
        let key = ResponseCache::key(&no_accept.method, &no_accept.uri, &no_accept.headers);
        assert!(
            cache.hit(&key.unwrap(), |_| None).is_none(),
            "no Accept is not */*"
        );
    }

    #[test]
    fn keeps_complete_immutable_200s_only() {
        let cache = ResponseCache::new(1 << 20);
        let key = |p: &str| key_of(&parts("GET", p, &[("host", "a")])).unwrap();
        cache.put(
            key("/a").as_ref(),
            &response(200, "public, max-age=29030400, immutable", b"hi"),
            |_| true,
        );
        cache.put(
            key("/b").as_ref(),
            &response(206, "public, max-age=29030400, immutable", b"hi"),
            |_| true,
        );
        cache.put(
            key("/c").as_ref(),
            &response(200, "no-cache", b"hi"),
            |_| true,
        );
        let mut no_body = response(200, "public, immutable", b"hi");
        no_body.extensions_mut().remove::<CompleteBody>();
        cache.put(key("/d").as_ref(), &no_body, |_| true);
        let big = vec![0u8; MAX_BODY + 1];
        cache.put(
            key("/e").as_ref(),
            &response(200, "public, immutable", &big),
            |_| true,
        );
        let hit = cache
            .hit(&key("/a").as_ref(), |_| None)
            .unwrap()
            .handled_response();
        assert_eq!(hit.status(), 200);
        assert!(hit.extensions().get::<ServedContent>().is_some());
        for p in ["/b", "/c", "/d", "/e"] {
            assert!(cache.hit(&key(p).as_ref(), |_| None).is_none(), "{p}");
        }
    }

    #[test]
    fn a_large_body_is_kept_as_a_reference_to_its_block() {
        // A cache far smaller than the body: the bytes are the memory cache's, not its own.
        let cache = ResponseCache::new(64 * 1024);
        let key = |p: &str| key_of(&parts("GET", p, &[("host", "a")])).unwrap();
        let block: Bytes = (0..3 * MAX_BODY).map(|i| (i * 31 % 251) as u8).collect();
        let cid = cid_v1_sha256(RAW, &block);
        let body = block.slice(100..100 + 2 * MAX_BODY);
        let mut resp = response(200, "public, max-age=29030400, immutable", &body);
        resp.extensions_mut().insert(BlockBody { cid, offset: 100 });
        // Kept only while the memory cache holds the block.
        cache.put(key("/big").as_ref(), &resp, |c| {
            assert_eq!(*c, cid);
            false
        });
        assert!(cache
            .hit(&key("/big").as_ref(), |_| Some(block.clone()))
            .is_none());
        cache.put(key("/big").as_ref(), &resp, |_| true);
        // Without a block reference a large body is not kept.
        resp.extensions_mut().remove::<BlockBody>();
        cache.put(key("/plain").as_ref(), &resp, |_| true);
        assert!(cache
            .hit(&key("/plain").as_ref(), |_| Some(block.clone()))
            .is_none());
        // Found while the memory cache holds the block: the right slice of it.
        let mut asked = None;
        let hit = cache
            .hit(&key("/big").as_ref(), |c| {
                asked = Some(*c);
                Some(block.clone())
            })
            .expect("kept by reference");
        assert_eq!(asked, Some(cid));
        assert_eq!(hit.body(), body);
        let head = std::str::from_utf8(hit.http1_head().unwrap()).unwrap();
        assert!(
            head.contains(&format!("content-length: {}\r\n", body.len())),
            "{head}"
        );
        // Gone from the memory cache, or not the bytes it should be: a miss, and the entry
        // goes (it is not found when the block is back).
        assert!(cache.hit(&key("/big").as_ref(), |_| None).is_none());
        assert!(cache
            .hit(&key("/big").as_ref(), |_| Some(block.clone()))
            .is_none());
        cache.put(key("/big").as_ref(), &resp, |_| true);
        assert!(cache
            .hit(&key("/big").as_ref(), |_| Some(block.slice(..MAX_BODY)))
            .is_none());
        assert!(cache
            .hit(&key("/big").as_ref(), |_| Some(block.clone()))
            .is_none());
    }
}
