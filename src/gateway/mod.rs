//! The HTTP gateway: the path and trustless gateway specs on top of a block source.
//!
//! One file per response format (`block.rs` raw, `car.rs` CAR), one for request parsing, one for
//! the error → status mapping. Handlers talk only to [`BlockSource`].

pub mod block;
/// The response body type lives below the gateway (the server and the admin API send it too).
pub use crate::body;
pub mod car;
pub mod codec;
pub mod error;
pub mod headers;
pub mod ipns;
pub mod named;
pub mod range;
pub mod redirects;
pub mod request;
pub mod response_cache;
pub mod sniff;
pub mod subdomain;
pub mod tar;
pub mod unixfs_dir;
pub mod unixfs_file;
pub mod unixfs_redirects;

use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use http::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ALLOW,
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{Method, Request, Response, StatusCode};

pub use body::Body;
use error::GatewayError;
use headers::{set, IMMUTABLE, TIMING_ALLOW_ORIGIN, X_IPFS_PATH, X_IPFS_ROOTS};
use request::{GatewayRequest, ResponseFormat};
use response_cache::ResponseCache;

use crate::content::entity::UnixFsEntity;
use crate::content::resolve;
use crate::content::select::{DagRequest, DagScope, EntityBytes};
use crate::content::source::{BlockSource, Interest};
use crate::denylist::DenylistHandle;
use crate::ipld::{CBOR, DAG_CBOR, DAG_JSON, DAG_PB, JSON, RAW};
use crate::tiers::pinset::PinsetIndex;
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicU64, Ordering};

/// Gateway settings that come from the configuration.
#[derive(Clone, Debug, Default)]
pub struct GatewayOptions {
    /// Host names that act as subdomain gateways (`{cid}.ipfs.{host}`).
    pub subdomain_hosts: Vec<String>,
    /// The listener speaks TLS (redirects use `https`).
    pub tls: bool,
    /// Bytes of whole small responses kept for repeated plain requests (0: none).
    pub response_cache_bytes: u64,
    /// Largest UnixFS DAG (or requested range of one) served deserialized; 0: no cap.
    pub max_deserialized_response_size: u64,
    /// Largest UnixFS DAG (or requested range of one) served in any format; 0: no cap.
    pub max_unixfs_dag_response_size: u64,
}

/// A dedicated gateway's rule: the pinset it serves, and the tokens that open everything.
struct Dedicated {
    pinset: Arc<PinsetIndex>,
    tokens: Vec<String>,
}

/// Marks a response that only an access token made possible.
#[derive(Clone, Copy)]
struct TokenOnly;

/// How a response will read a UnixFS DAG, for the size caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// As a file, a page or a TAR.
    Deserialized,
    /// As verifiable blocks or a CAR.
    Verifiable,
}

/// The gateway's shared state.
#[derive(Clone)]
pub struct Gateway {
    source: Arc<dyn BlockSource>,
    names: Option<crate::ipns::NameResolver>,
    options: Arc<GatewayOptions>,
    responses: Option<Arc<ResponseCache>>,
    redirects: unixfs_redirects::RedirectsCache,
    /// Content that is never served (IPIP-383 denylists).
    denylist: DenylistHandle,
    /// The denylist generation the caches above were filled under.
    denylist_seen: Arc<AtomicU64>,
    /// Requests refused because of the denylist.
    blocked: Counter,
    /// On a dedicated gateway: what it serves, and who may fetch anything.
    dedicated: Option<Arc<Dedicated>>,
    /// The pinset generation the caches above were filled under.
    pinset_seen: Arc<AtomicU64>,
}

/// What a response carries, for the layers that count responses: set where the response is
/// made, so nobody has to guess it back from the headers the gateway wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseKind {
    /// A single raw block.
    Raw,
    /// A CAR stream.
    Car,
    /// A TAR of a UnixFS entity.
    Tar,
    /// A dag-json, dag-cbor, JSON or CBOR document (or its HTML view).
    Codec,
    /// The bytes of a UnixFS file or symlink.
    File,
    /// An HTML page of the gateway's own: a directory listing or the index.
    Html,
    /// A signed IPNS record.
    IpnsRecord,
}

impl ResponseKind {
    /// Every kind.
    pub const ALL: [ResponseKind; 7] = [
        ResponseKind::Raw,
        ResponseKind::Car,
        ResponseKind::Tar,
        ResponseKind::Codec,
        ResponseKind::File,
        ResponseKind::Html,
        ResponseKind::IpnsRecord,
    ];

    /// The `format` label of the request metrics.
    pub fn label(self) -> &'static str {
        match self {
            ResponseKind::Raw => "raw",
            ResponseKind::Car => "car",
            ResponseKind::Tar => "tar",
            ResponseKind::Codec => "codec",
            ResponseKind::File => "file",
            ResponseKind::Html => "html",
            ResponseKind::IpnsRecord => "ipns-record",
        }
    }

    /// The kind an explicit format names; `None` for the deserialized response, whose kind
    /// depends on what the path leads to.
    fn of_format(format: ResponseFormat) -> Option<Self> {
        match format {
            ResponseFormat::Raw => Some(ResponseKind::Raw),
            ResponseFormat::Car(_) => Some(ResponseKind::Car),
            ResponseFormat::Tar => Some(ResponseKind::Tar),
            ResponseFormat::IpnsRecord => Some(ResponseKind::IpnsRecord),
            ResponseFormat::DagJson
            | ResponseFormat::DagCbor
            | ResponseFormat::Json
            | ResponseFormat::Cbor
            | ResponseFormat::Deserialized => None,
        }
    }
}

/// `resp`, marked as carrying `kind` unless the handler that made it said more precisely
/// (a directory answered with its `index.html` is a file), or it is a redirect, which carries
/// no representation.
fn kind(mut resp: Response<Body>, kind: ResponseKind) -> Response<Body> {
    let redirect = resp.status().is_redirection() && resp.status() != StatusCode::NOT_MODIFIED;
    if !redirect && resp.extensions().get::<ResponseKind>().is_none() {
        resp.extensions_mut().insert(kind);
    }
    resp
}

/// Which content a response served, for the layers around the gateway that count demand.
#[derive(Clone, Debug)]
pub struct ServedContent {
    /// Root CID of the content path.
    pub root: Cid,
    /// The path below the root, on partial (206) responses only: readers of ranges often go on
    /// where they stopped.
    pub segments: Option<Vec<String>>,
}

impl Gateway {
    /// A gateway reading from `source`.
    pub fn new(source: Arc<dyn BlockSource>, options: GatewayOptions) -> Self {
        let responses = (options.response_cache_bytes > 0)
            .then(|| Arc::new(ResponseCache::new(options.response_cache_bytes)));
        Self {
            source,
            names: None,
            redirects: Default::default(),
            options: Arc::new(options),
            responses,
            denylist: DenylistHandle::default(),
            denylist_seen: Arc::new(AtomicU64::new(0)),
            blocked: Counter::default(),
            dedicated: None,
            pinset_seen: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Refuses what `denylist` blocks, counting refusals in `blocked`.
    pub fn with_denylist(mut self, denylist: DenylistHandle, blocked: Counter) -> Self {
        self.denylist_seen = Arc::new(AtomicU64::new(denylist.generation()));
        self.denylist = denylist;
        self.blocked = blocked;
        self
    }

    /// Serves only what `pinset` reaches, except to holders of one of `tokens` (a dedicated
    /// gateway, `gateway.serve = "pinned"`).
    pub fn dedicated(mut self, pinset: Arc<PinsetIndex>, tokens: Vec<String>) -> Self {
        self.pinset_seen = Arc::new(AtomicU64::new(pinset.generation()));
        self.dedicated = Some(Arc::new(Dedicated { pinset, tokens }));
        self
    }

    /// This gateway serves only its pins (`gateway.serve = "pinned"`).
    pub(crate) fn is_dedicated(&self) -> bool {
        self.dedicated.is_some()
    }

    /// On a dedicated gateway, the refusal of `req` when its CID is not reachable from the pins
    /// and it holds no access token; `Ok(true)` when only its token lets it through (the answer
    /// must then stay private). Nothing is fetched before this says yes.
    fn admit(&self, req: &GatewayRequest) -> Result<bool, GatewayError> {
        self.admit_cid(&req.root, req.access_token.as_deref())
    }

    /// [`Gateway::admit`] for `root` and the request's `token`, for readers that start before
    /// a request is parsed (the directory a name's value points into).
    pub(crate) fn admit_cid(&self, root: &Cid, token: Option<&str>) -> Result<bool, GatewayError> {
        let Some(d) = &self.dedicated else {
            return Ok(false);
        };
        let pinned = d.pinset.contains(root).map_err(|e| {
            tracing::warn!(error = %e, "pinset index unreadable");
            GatewayError::Unavailable("the pinset cannot be read right now".into())
        })?;
        if pinned {
            return Ok(false);
        }
        let token_ok = token.is_some_and(|t| {
            d.tokens
                .iter()
                .any(|k| crate::constant_time_eq(k.as_bytes(), t.as_bytes()))
        });
        if token_ok {
            return Ok(true);
        }
        Err(GatewayError::Forbidden(format!(
            "{root} is not pinned on this gateway, which serves only content pinned here{}",
            if token.is_some() {
                " (the access token is not valid)"
            } else {
                " (an access token lets its holder fetch any CID)"
            }
        )))
    }

    /// The refusal of `what` when the denylist blocks it (a content path, or a path from a
    /// resolved CID).
    fn refuse_ipfs(&self, root: &Cid, segments: &[String], what: &str) -> Result<(), GatewayError> {
        let list = self.denylist.load();
        if list.is_empty() {
            return Ok(());
        }
        match list.check_ipfs_path(root, segments) {
            Some(b) => {
                self.blocked.inc();
                Err(GatewayError::blocked(b.status, what))
            }
            None => Ok(()),
        }
    }

    /// The refusal of `/ipns/{name}/{segments}` when the denylist blocks it.
    pub(crate) fn refuse_ipns(&self, name: &str, segments: &[String]) -> Result<(), GatewayError> {
        let list = self.denylist.load();
        if list.is_empty() {
            return Ok(());
        }
        match list.check_ipns_path(name, segments) {
            Some(b) => {
                self.blocked.inc();
                Err(GatewayError::blocked(b.status, &format!("/ipns/{name}")))
            }
            None => Ok(()),
        }
    }

    /// Resolves `segments` from `root`, refusing the path when the denylist blocks it from any
    /// CID it passes through (`/ipfs/{dir}/*` blocks the directory however it is reached).
    pub async fn resolve(
        &self,
        root: Cid,
        segments: &[String],
    ) -> Result<crate::content::Resolved, GatewayError> {
        let resolved = resolve(self.source(), root, segments).await?;
        if !self.denylist.load().is_empty() {
            for (i, cid) in resolved.roots.iter().enumerate().skip(1) {
                let rest = segments.get(i..).unwrap_or(&[]);
                self.refuse_ipfs(cid, rest, &format!("/ipfs/{root}/{}", segments.join("/")))?;
            }
        }
        Ok(resolved)
    }

    /// Resolves `/ipns/` names (IPNS records and DNSLink domains) with `names`.
    pub fn with_names(mut self, names: crate::ipns::NameResolver) -> Self {
        self.names = Some(names);
        self
    }

    /// Tells the block source what a response will read, so a remote tier can stream it.
    pub async fn prefetch(
        &self,
        req: &GatewayRequest,
        scope: DagScope,
        entity_bytes: Option<EntityBytes>,
    ) -> Interest {
        self.source
            .prefetch(&DagRequest {
                root: req.root,
                segments: req.segments.clone(),
                scope,
                entity_bytes,
            })
            .await
    }

    /// The block source.
    pub fn source(&self) -> &dyn BlockSource {
        self.source.as_ref()
    }

    /// A shared handle to the block source, for streaming tasks.
    pub fn source_arc(&self) -> Arc<dyn BlockSource> {
        self.source.clone()
    }

    /// The denylist and pinset generations in force, after forgetting what was kept under
    /// older ones: responses kept in memory were checked against the lists of their time.
    fn rules_in_force(&self) -> (u64, u64) {
        let generation = self.denylist.generation();
        let pinset = self.dedicated.as_ref().map_or(0, |d| d.pinset.generation());
        if generation != self.denylist_seen.load(Ordering::Acquire)
            || pinset != self.pinset_seen.load(Ordering::Acquire)
        {
            self.denylist_seen.store(generation, Ordering::Release);
            self.pinset_seen.store(pinset, Ordering::Release);
            if let Some(cache) = &self.responses {
                cache.clear();
            }
            self.redirects.clear();
        }
        (generation, pinset)
    }

    /// The kept answer to `req` when the response cache has one, found without routing or
    /// awaiting anything: what [`Gateway::handle`] would answer, its tier headers included.
    /// The hot path of repeated small requests takes it before it builds the future of a full
    /// request.
    pub fn cached<B>(&self, req: &Request<B>) -> Option<response_cache::Hit> {
        let cache = self.responses.as_ref()?;
        self.rules_in_force();
        request::check_host_of(req.headers(), req.uri(), req.version()).ok()?;
        let key = ResponseCache::key(req.method(), req.uri(), req.headers())?;
        // A body kept by reference is read from the memory cache, which counts that hit.
        let mut in_block = false;
        let hit = cache.hit(&key, |cid| {
            in_block = true;
            self.source.cached_block(cid).map(|b| b.data().clone())
        })?;
        if !in_block {
            self.source.note_cache_hit();
        }
        Some(hit)
    }

    /// Answers one request. Never fails: errors become their status with a one-line reason.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        if let Some(hit) = self.cached(&req) {
            // Answered from memory like an edge-cache hit (and counted as one by `cached`).
            crate::telemetry::trace(crate::telemetry::CACHE_TIER, std::time::Duration::ZERO);
            return hit.handled_response();
        }
        self.handle_uncached(req).await
    }

    /// [`Gateway::handle`] of a request that [`Gateway::cached`] has just missed: routed and
    /// answered, and the answer kept when it may be (the cache is not asked twice).
    pub async fn handle_uncached<B>(&self, req: Request<B>) -> Response<Body> {
        let (parts, _body) = req.into_parts();
        let (generation, pinset) = self.rules_in_force();
        // A missing or ambiguous Host is refused before anything reads it, the response cache
        // included.
        let host = request::check_host(&parts);
        let key = self
            .responses
            .as_ref()
            .filter(|_| host.is_ok())
            .and_then(|_| ResponseCache::key(&parts.method, &parts.uri, &parts.headers));
        let result = match host {
            Ok(()) => self.route(&parts).await,
            Err(e) => Err(e),
        };
        let mut resp = match result {
            Ok(r) => r,
            // Browsers navigating get a page; everyone else the one-line reason.
            Err(e) => e.response(error::wants_html(&parts.headers).then(|| parts.uri.path())),
        };
        // Every answer of the public gateway is readable cross-origin, redirects (subdomain
        // canonicalisation, trailing slashes, `_redirects`, ipfs/rainbow#289) and errors
        // included: a script that follows a redirect or reads an error status must not be
        // stopped by a missing header.
        cors(resp.headers_mut());
        if parts.method == Method::OPTIONS {
            // Browsers may keep a preflight answer this long instead of asking again.
            resp.headers_mut().insert(
                ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(CORS_MAX_AGE),
            );
        }
        if parts.method == Method::HEAD {
            without_content(&mut resp);
        }
        if resp.extensions().get::<TokenOnly>().is_some() {
            // Served to a token holder only: no shared cache (ours or a CDN) may keep it.
            resp.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
            return resp;
        }
        // An answer that raced a denylist or pinset change is not kept: it was admitted under
        // rules that may no longer hold, and the cache is consulted before any rule.
        let unchanged = self.denylist.generation() == generation
            && self.dedicated.as_ref().map_or(0, |d| d.pinset.generation()) == pinset;
        if let (Some(cache), Some(key), true) = (&self.responses, key, unchanged) {
            cache.put(key, &resp, |cid| self.source.holds_in_memory(cid));
        }
        resp
    }

    async fn route(&self, parts: &http::request::Parts) -> Result<Response<Body>, GatewayError> {
        let path = parts.uri.path();
        // A preflight is answered where it is asked: browsers do not follow a redirect of a
        // preflight, so a subdomain redirect here would fail the script's real request.
        if parts.method == Method::OPTIONS {
            let mut r = Response::new(body::empty());
            set(r.headers_mut(), ALLOW, "GET, HEAD, OPTIONS");
            return Ok(r);
        }
        if !self.options.subdomain_hosts.is_empty() {
            if let Some(resp) = self.subdomain(parts).await? {
                return Ok(resp);
            }
        }
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Err(GatewayError::MethodNotAllowed(parts.method.to_string()));
        }
        if let Some(names) = self.names.as_ref().filter(|n| n.any_dnslink()) {
            // A DNSLink gateway: the Host is a site, and every path is inside it. The gateway's
            // own hosts and IP addresses are never looked up.
            if let Some(host) = request_host(parts).filter(|h| !self.own_host(h)) {
                if let Some(site) = names.site(host).await? {
                    return ipns::respond(self, names, parts, host, path, true, Some(site)).await;
                }
            }
        }
        if path == "/" {
            return Ok(kind(html_page(INDEX_HTML), ResponseKind::Html));
        }
        if path == "/ipfs/" || path == "/ipns/" {
            if let Some(resp) = protocol_handler_redirect(parts)? {
                return Ok(resp);
            }
        }
        if let Some(rest) = path.strip_prefix("/ipfs/") {
            if rest.starts_with("ipfs/") || rest.starts_with("ipns/") {
                return Err(GatewayError::BadRequest(format!(
                    "superfluous namespace in {path:?}: did you mean {:?}?",
                    &path["/ipfs".len()..]
                )));
            }
            // A service worker registered at a content root would control every page under it.
            let is_root = !rest.is_empty() && !rest.contains('/');
            if is_root
                && parts
                    .headers
                    .get("service-worker")
                    .is_some_and(|v| v == "script")
            {
                return Err(GatewayError::BadRequest(
                    "navigator.serviceWorker: registration is not allowed for this scope".into(),
                ));
            }
        }
        if path == "/ipfs" || path.starts_with("/ipfs/") {
            let req = request::parse(parts)?;
            return self.ipfs(&req).await;
        }
        if let Some(rest) = path.strip_prefix("/ipns/") {
            let Some(names) = &self.names else {
                return Err(GatewayError::NotImplemented(
                    "IPNS names are not resolved by this gateway".into(),
                ));
            };
            let (raw_name, tail) = named::split_root(rest);
            let name = percent_encoding::percent_decode_str(raw_name)
                .decode_utf8()
                .map_err(|_| GatewayError::BadRequest("name is not valid UTF-8".into()))?;
            return ipns::respond(self, names, parts, &name, &tail, false, None).await;
        }
        Err(GatewayError::NotFound(format!("nothing at {path}")))
    }

    /// Serves one parsed `/ipfs/` request (also a request rewritten by `_redirects`).
    pub(crate) async fn ipfs(&self, req: &GatewayRequest) -> Result<Response<Body>, GatewayError> {
        self.refuse_ipfs(&req.root, &req.segments, &req.content_path)?;
        let token_only = self.admit(req)?;
        let mut resp = self.ipfs_format(req).await?;
        req.named.stamp(&mut resp);
        if let Some(k) = ResponseKind::of_format(req.format) {
            resp = kind(resp, k);
        }
        if token_only {
            // Not counted as demand either: a token holder's interest must not get content
            // promoted into the pins, which would open it to everyone.
            resp.extensions_mut().insert(TokenOnly);
            return Ok(resp);
        }
        let segments = (resp.status() == StatusCode::PARTIAL_CONTENT).then(|| req.segments.clone());
        resp.extensions_mut().insert(ServedContent {
            root: req.root,
            segments,
        });
        Ok(resp)
    }

    async fn ipfs_format(&self, req: &GatewayRequest) -> Result<Response<Body>, GatewayError> {
        if req.only_if_cached {
            let held = self.source.holds_locally(&req.root).await?;
            if !held {
                return Err(GatewayError::NotCached(format!("\"{}\"", req.content_path)));
            }
        }
        match req.format {
            ResponseFormat::Raw => block::respond(self, req).await,
            ResponseFormat::Car(params) => car::respond(self, req, params).await,
            ResponseFormat::Tar => tar::respond(self, req).await,
            // Only names have records: as boxo, a bad request rather than a missing feature.
            ResponseFormat::IpnsRecord => Err(GatewayError::BadRequest(
                "an IPNS record is served for /ipns/{name}, not for /ipfs/ content".into(),
            )),
            ResponseFormat::Deserialized
            | ResponseFormat::DagJson
            | ResponseFormat::DagCbor
            | ResponseFormat::Json
            | ResponseFormat::Cbor => self.deserialized(req).await,
        }
    }

    /// The path gateway: UnixFS files and directories, symlinks, and documents. A remote tier
    /// streams what the response reads for as long as its body lives.
    async fn deserialized(&self, req: &GatewayRequest) -> Result<Response<Body>, GatewayError> {
        if req.head {
            return self.deserialized_entity(req).await;
        }
        let interest = self
            .prefetch(
                req,
                DagScope::Entity,
                range::entity_bytes(req.range.as_deref()),
            )
            .await;
        let resp = self.deserialized_entity(req).await?;
        Ok(if interest.is_held() {
            resp.map(|b| body::holding(b, interest))
        } else {
            resp
        })
    }

    async fn deserialized_entity(
        &self,
        req: &GatewayRequest,
    ) -> Result<Response<Body>, GatewayError> {
        let resolved = self.resolve(req.root, &req.segments).await?;
        if !resolved.remainder.is_empty() {
            let rem = resolved.remainder.join("/");
            let done = req.segments.len() - resolved.remainder.len();
            let prefix = format!("/ipfs/{}/{}", req.root, req.segments[..done].join("/"));
            return Err(GatewayError::NotImplemented(format!(
                "{rem:?} of {:?} could not be returned: reading IPLD Kinds other than Links (CBOR Tag 42) is not implemented: try reading {:?} instead",
                req.content_path,
                prefix.trim_end_matches('/')
            )));
        }
        let target = resolved.target;
        match target.codec() {
            DAG_PB | RAW => {
                let not_acceptable = || {
                    GatewayError::NotAcceptable(format!(
                        "{target} is {}; converting it to {} is not supported (IPIP-524): ask for ?format=raw or ?format=car",
                        crate::ipld::codec::codec_name(target.codec()),
                        req.format.name()
                    ))
                };
                // `?format=json` names JSON: a UnixFS file holding JSON is served as it is
                // (IPIP-524's UnixFS exception; most such requests on public gateways are for
                // JSON files on UnixFS), anything else is 406. `Accept: application/json` alone
                // comes from scripts fetching files: they get the file whatever it holds.
                let json_query = req.format == ResponseFormat::Json && req.format_from_query;
                let explicit_doc = match req.format {
                    ResponseFormat::DagJson | ResponseFormat::DagCbor => true,
                    ResponseFormat::Cbor => req.format_from_query,
                    _ => false,
                };
                if explicit_doc {
                    return Err(not_acceptable());
                }
                let entity = UnixFsEntity::decode(self.source().get(&target).await?)?;
                if json_query && !entity.is_file() {
                    return Err(not_acceptable());
                }
                match entity {
                    UnixFsEntity::File { block, size } => {
                        let name = req
                            .filename
                            .as_deref()
                            .or(req.segments.last().map(String::as_str));
                        let content_type = if req.format == ResponseFormat::Json {
                            if unixfs_file::holds_json(self, name, &block, size).await? {
                                Some("application/json")
                            } else if json_query {
                                return Err(not_acceptable());
                            } else {
                                None
                            }
                        } else {
                            None
                        };
                        unixfs_file::respond(
                            self,
                            req,
                            unixfs_file::FileResponse {
                                block,
                                size,
                                name,
                                content_type,
                                etag: format!("\"{target}\""),
                                roots: &resolved.roots,
                            },
                        )
                        .await
                        .map(|r| kind(r, ResponseKind::File))
                    }
                    UnixFsEntity::Symlink(link) => {
                        let etag = format!("\"{target}\"");
                        let mut resp = self.base_response(req, &resolved.roots, &etag);
                        if self.not_modified(req, &etag) {
                            *resp.status_mut() = StatusCode::NOT_MODIFIED;
                            return Ok(resp);
                        }
                        set(resp.headers_mut(), CONTENT_TYPE, "inode/symlink");
                        set(resp.headers_mut(), CONTENT_LENGTH, &link.len().to_string());
                        if !req.head {
                            *resp.body_mut() = body::full(link);
                        }
                        Ok(kind(resp, ResponseKind::File))
                    }
                    UnixFsEntity::Directory(dir) => unixfs_dir::respond(self, req, &resolved, dir)
                        .await
                        .map(|r| kind(r, ResponseKind::Html)),
                }
            }
            DAG_JSON | DAG_CBOR | JSON | CBOR => codec::respond(self, req, &resolved)
                .await
                .map(|r| kind(r, ResponseKind::Codec)),
            other => Err(GatewayError::NotImplemented(format!(
                "codec 0x{other:x} has no deserialized view; ask for ?format=raw or ?format=car"
            ))),
        }
    }

    /// Subdomain gateway routing; `None` when the request is a plain path request.
    async fn subdomain(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Option<Response<Body>>, GatewayError> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let Some(host) = header("x-forwarded-host")
            .or_else(|| header("host"))
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        else {
            return Ok(None);
        };
        let proto = header("x-forwarded-proto").map(str::to_ascii_lowercase);
        let scheme = match proto.as_deref() {
            Some("https") => "https",
            Some("http") => "http",
            _ if self.options.tls => "https",
            _ => "http",
        };
        let path = parts.uri.path();
        match subdomain::route(
            &self.options.subdomain_hosts,
            host,
            scheme,
            path,
            parts.uri.query(),
        )? {
            subdomain::HostRoute::Path => Ok(None),
            subdomain::HostRoute::Redirect(location) => {
                let mut resp = Response::new(body::empty());
                *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
                set(resp.headers_mut(), http::header::LOCATION, &location);
                // A path request sent on to its subdomain names its content path too.
                if let Some(named) = named::NamedPath::of_url_path(path) {
                    named.stamp(&mut resp);
                }
                Ok(Some(resp))
            }
            subdomain::HostRoute::Name(name) => {
                if let Some(r) = preflight(parts)? {
                    return Ok(Some(r));
                }
                let Some(names) = &self.names else {
                    return Err(GatewayError::NotImplemented(
                        "IPNS names are not resolved by this gateway".into(),
                    ));
                };
                let resp = ipns::respond(self, names, parts, &name, path, true, None).await?;
                Ok(Some(resp))
            }
            subdomain::HostRoute::Content(cid) => {
                if let Some(r) = preflight(parts)? {
                    return Ok(Some(r));
                }
                let content_path = format!("/ipfs/{cid}{path}");
                let mut req = request::parse_path(parts, &content_path, true)?;
                req.cid_origin = self.path_gateway_origin(parts);
                let resp = match self.ipfs(&req).await {
                    Err(e) if unixfs_redirects::applies(&req, &e) => {
                        unixfs_redirects::respond(self, &req, e).await?
                    }
                    other => other?,
                };
                Ok(Some(resp))
            }
        }
    }

    /// `//{gateway host}` when the request came to a `{label}.ipfs.{gw}` or `{label}.ipns.{gw}`
    /// host: generated pages link other CIDs there, as `/ipfs/{cid}` means nothing inside a
    /// subdomain's own origin.
    pub(crate) fn path_gateway_origin(&self, parts: &http::request::Parts) -> Option<String> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let host = header("x-forwarded-host")
            .or_else(|| header("host"))
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))?;
        subdomain::gateway_of(&self.options.subdomain_hosts, host).map(|gw| format!("//{gw}"))
    }

    /// Whether `host` (a Host header without port) is an IP address or one of the gateway's own
    /// subdomain-gateway hosts or a name below one: never a DNSLink site, never looked up.
    fn own_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        host.starts_with('[')
            || host.parse::<std::net::IpAddr>().is_ok()
            || self.options.subdomain_hosts.iter().any(|gw| {
                let (h, g) = (host.as_bytes(), gw.as_bytes());
                h.eq_ignore_ascii_case(g)
                    || (h.len() > g.len() + 1
                        && h[h.len() - g.len()..].eq_ignore_ascii_case(g)
                        && h[h.len() - g.len() - 1] == b'.')
            })
    }

    /// A 200 response with the headers every `/ipfs/` representation carries.
    pub fn base_response(&self, req: &GatewayRequest, roots: &[Cid], etag: &str) -> Response<Body> {
        let mut resp = Response::new(body::empty());
        // A content response carries ~18 headers (spec, CORS, timing): size the map once
        // instead of growing and rehashing it three times.
        *resp.headers_mut() = HeaderMap::with_capacity(32);
        let h = resp.headers_mut();
        set(h, ETAG, etag);
        h.insert(CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
        if let Some(v) = req.named.x_ipfs_path() {
            h.insert(X_IPFS_PATH, v);
        }
        set(h, X_IPFS_ROOTS, &roots_header(roots));
        h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
        resp
    }

    /// Whether `If-None-Match` makes this a 304.
    pub fn not_modified(&self, req: &GatewayRequest, etag: &str) -> bool {
        req.if_none_match
            .as_deref()
            .is_some_and(|h| headers::none_match(h, etag))
    }

    /// Refuses (410) a response of `bytes` bytes read from a UnixFS DAG when it passes a
    /// configured cap for `delivery`; the answer names the cap.
    pub fn check_size(&self, bytes: u64, delivery: Delivery) -> Result<(), GatewayError> {
        let o = &self.options;
        let over = |cap: u64| cap > 0 && bytes > cap;
        let (cap, key) =
            if delivery == Delivery::Deserialized && over(o.max_deserialized_response_size) {
                (
                    o.max_deserialized_response_size,
                    "gateway.max_deserialized_response_size",
                )
            } else if over(o.max_unixfs_dag_response_size) {
                (
                    o.max_unixfs_dag_response_size,
                    "gateway.max_unixfs_dag_response_size",
                )
            } else {
                return Ok(());
            };
        let size = |b: u64| bytesize::ByteSize::b(b).display().iec().to_string();
        let hint = match delivery {
            Delivery::Deserialized => {
                "; fetch it as verifiable blocks (?format=raw) or a CAR (?format=car), or ask for a byte range"
            }
            Delivery::Verifiable => "; ask for a part of it (a byte range or entity-bytes), or run your own IPFS node",
        };
        Err(GatewayError::Gone(format!(
            "this response would be {}, over this gateway's limit of {} ({key}){hint}",
            size(bytes),
            size(cap)
        )))
    }

    /// Sets `Content-Disposition` from `?filename=` / `?download=` or `default_name`.
    pub fn set_disposition(
        &self,
        h: &mut HeaderMap,
        req: &GatewayRequest,
        default_name: &str,
        attachment: bool,
    ) {
        let kind = if attachment || req.download {
            "attachment"
        } else {
            "inline"
        };
        let name = req.filename.as_deref().unwrap_or(default_name);
        set(
            h,
            CONTENT_DISPOSITION,
            &headers::content_disposition(kind, name),
        );
    }
}

/// The answer to an `OPTIONS` on a content origin, or the refusal of a method other than GET
/// and HEAD; `None` for GET and HEAD.
fn preflight(parts: &http::request::Parts) -> Result<Option<Response<Body>>, GatewayError> {
    if parts.method == Method::OPTIONS {
        let mut r = Response::new(body::empty());
        set(r.headers_mut(), ALLOW, "GET, HEAD, OPTIONS");
        return Ok(Some(r));
    }
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return Err(GatewayError::MethodNotAllowed(parts.method.to_string()));
    }
    Ok(None)
}

/// The host the client asked for (behind a proxy, `X-Forwarded-Host`), without its port.
fn request_host(parts: &http::request::Parts) -> Option<&str> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))?;
    Some(match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    })
}

/// `/ipfs/?uri=ipfs://{cid}/path` (a browser's protocol handler) redirects to the gateway path.
fn protocol_handler_redirect(
    parts: &http::request::Parts,
) -> Result<Option<Response<Body>>, GatewayError> {
    let Some(uri) = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "uri")
            .map(|(_, v)| v.into_owned())
    }) else {
        return Ok(None);
    };
    let target = if let Some(rest) = uri.strip_prefix("ipfs://") {
        format!("/ipfs/{rest}")
    } else if let Some(rest) = uri.strip_prefix("ipns://") {
        format!("/ipns/{rest}")
    } else {
        return Err(GatewayError::BadRequest(format!(
            "uri query parameter {uri:?} must be an ipfs:// or ipns:// URL"
        )));
    };
    if target.contains(['\r', '\n']) || target.starts_with("//") {
        return Err(GatewayError::BadRequest(
            "invalid uri query parameter".into(),
        ));
    }
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    set(resp.headers_mut(), http::header::LOCATION, &target);
    Ok(Some(resp))
}

/// `X-Ipfs-Roots`: comma-separated, no spaces.
pub fn roots_header(roots: &[Cid]) -> String {
    roots
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Seconds a browser may cache a preflight answer (one day; Chromium caps it at two hours).
const CORS_MAX_AGE: &str = "86400";

/// The CORS headers of every public answer: any origin may read it, see its timing (Resource
/// Timing, `Server-Timing`) and read the headers scripts ask about, cidgate's tier header too.
fn cors(h: &mut HeaderMap) {
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(TIMING_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Content-Type, Range, If-Range, User-Agent, X-Requested-With, If-None-Match, Cache-Control",
        ),
    );
    h.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Content-Range, Content-Length, Content-Type, Content-Disposition, Etag, Ipfs-Uri, X-Ipfs-Path, X-Ipfs-Roots, X-Stream-Output, X-Chunked-Output, Server-Timing, X-Cidgate-Tier, Retry-After",
        ),
    );
}

/// Drops the content of a response to HEAD (RFC 9110 §9.3.2), keeping the `Content-Length` a GET
/// would get. HTTP/1.1 never writes it, but HTTP/2 would send it as DATA frames, which clients
/// reject as a protocol error: error responses and other complete bodies built for GET and HEAD
/// alike must lose it here.
fn without_content(resp: &mut Response<Body>) {
    use http_body::Body as _;
    let hint = resp.body().size_hint();
    if hint.exact() == Some(0) {
        return;
    }
    if let Some(len) = hint.exact() {
        if !resp.headers().contains_key(CONTENT_LENGTH) {
            set(resp.headers_mut(), CONTENT_LENGTH, &len.to_string());
        }
    }
    *resp.body_mut() = body::empty();
}

/// The plain-text error response of `e` (see [`GatewayError::response`]).
pub fn error_response(e: &GatewayError) -> Response<Body> {
    e.response(None)
}

fn html_page(html: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from_static(html.as_bytes())));
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    set(h, CONTENT_LENGTH, &html.len().to_string());
    *resp.status_mut() = StatusCode::OK;
    resp
}

const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>cidgate</title>
<style>body{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;line-height:1.5}code{background:#f3f3f3;padding:0 .2em}</style>
</head><body>
<h1>cidgate</h1>
<p>A caching HTTP retrieval gateway for IPFS content. Every byte it serves is verified against its CID.</p>
<ul>
<li><code>GET /ipfs/{cid}[/path]?format=raw</code> — one block (<code>application/vnd.ipld.raw</code>)</li>
<li><code>GET /ipfs/{cid}[/path]?format=car</code> — a verifiable CAR stream (<code>dag-scope</code>, <code>entity-bytes</code>)</li>
</ul>
<p>Specs: <a href="https://specs.ipfs.tech/http-gateways/trustless-gateway/">trustless gateway</a>,
<a href="https://specs.ipfs.tech/http-gateways/path-gateway/">path gateway</a>.</p>
</body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn gateway(dir: &std::path::Path) -> Gateway {
        let store = crate::tiers::local::LocalStore::open(dir).unwrap();
        Gateway::new(Arc::new(store), GatewayOptions::default())
    }

    fn request(method: &str, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(()).unwrap()
    }

    #[tokio::test]
    async fn head_answers_carry_no_content_on_any_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway(dir.path());
        for uri in [
            "/",
            "/ipfs/notacid",
            "/nothing-here",
            "/ipfs/bafkqaaa?format=zip",
        ] {
            let get = gw.handle(request("GET", uri, &["a"])).await;
            let head = gw.handle(request("HEAD", uri, &["a"])).await;
            assert_eq!(head.status(), get.status(), "{uri}");
            let get_body = get.into_body().collect().await.unwrap().to_bytes();
            assert!(!get_body.is_empty(), "{uri}");
            // What a GET would get is still announced, but nothing is sent (HTTP/2 would send
            // it as DATA frames, and clients reset the stream).
            assert_eq!(
                head.headers()[CONTENT_LENGTH],
                get_body.len().to_string().as_str(),
                "{uri}"
            );
            let head_body = head.into_body().collect().await.unwrap().to_bytes();
            assert!(head_body.is_empty(), "{uri}");
        }
    }

    #[tokio::test]
    async fn a_missing_or_second_host_is_refused_before_routing() {
        let dir = tempfile::tempdir().unwrap();
        let gw = gateway(dir.path());
        assert_eq!(gw.handle(request("GET", "/", &["a"])).await.status(), 200);
        for hosts in [&[][..], &["a", "b"][..]] {
            let resp = gw.handle(request("GET", "/", hosts)).await;
            assert_eq!(resp.status(), 400, "{hosts:?}");
        }
    }

    #[tokio::test]
    async fn responses_say_what_they_carry_for_the_metrics() {
        use crate::ipld::builder::{directory, FileBuilder};
        let mut blocks: Vec<crate::ipld::Block> = Vec::new();
        let file = |bytes: &[u8], blocks: &mut Vec<crate::ipld::Block>| {
            let mut f = FileBuilder::new();
            f.write(bytes, blocks).unwrap();
            f.finish(blocks).unwrap()
        };
        let page = file(b"<p>hi</p>", &mut blocks);
        let text = file(b"hello", &mut blocks);
        let site = directory(vec![("index.html".into(), page)], &mut blocks).unwrap();
        let root = directory(
            vec![("a.txt".into(), text), ("site".into(), site)],
            &mut blocks,
        )
        .unwrap();
        let doc = crate::ipld::Block::verified(
            crate::ipld::cid_v1_sha256(DAG_JSON, b"{}"),
            Bytes::from_static(b"{}"),
        )
        .unwrap();
        let doc_cid = *doc.cid();
        blocks.push(doc);
        let gw = Gateway::new(
            Arc::new(crate::content::source::MemorySource::new(blocks)),
            GatewayOptions::default(),
        );
        let root = root.cid;
        for (uri, want) in [
            (format!("/ipfs/{root}/a.txt"), Some(ResponseKind::File)),
            (format!("/ipfs/{root}/"), Some(ResponseKind::Html)),
            // A directory with an index.html is a web site: its page is a file.
            (format!("/ipfs/{root}/site/"), Some(ResponseKind::File)),
            (format!("/ipfs/{root}?format=raw"), Some(ResponseKind::Raw)),
            (format!("/ipfs/{root}?format=car"), Some(ResponseKind::Car)),
            (format!("/ipfs/{root}?format=tar"), Some(ResponseKind::Tar)),
            (format!("/ipfs/{doc_cid}"), Some(ResponseKind::Codec)),
            ("/".to_string(), Some(ResponseKind::Html)),
            // Errors and redirects carry no representation.
            ("/ipfs/not-a-cid".to_string(), None),
            (format!("/ipfs/{root}/site"), None),
        ] {
            let resp = gw.handle(request("GET", &uri, &["a"])).await;
            assert_eq!(
                resp.extensions().get::<ResponseKind>().copied(),
                want,
                "{uri}"
            );
        }
    }
}
