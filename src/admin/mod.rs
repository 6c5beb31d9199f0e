//! The admin listener: import, pins and health, on a separate (loopback by default) port.
//! Every write needs `Authorization: Bearer <admin.token>`; without a configured token, writes
//! are accepted only when the listener is bound to loopback. On a listener that is not
//! loopback, reads (status page, metrics, pins, popular content, providers) need the token
//! too; only `/healthz` (liveness) and `/readyz` (readiness) stay open, for load balancers and
//! supervisors.

mod error;
pub use error::AdminError;
pub mod export;
mod ipns;
pub mod pinning;
mod pinning_service;
mod popular;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::io::StreamReader;

use crate::body::{self, Body};
use crate::popularity::Popularity;
use crate::server::{Client, Handler, ResponseFuture};
use crate::telemetry::Metrics;
use crate::tiers::cold::ColdTier;
use crate::tiers::import::{import_car_except, Roots};
use crate::tiers::local::{LocalStore, PinReason};
use crate::tiers::space::StoreSummary;

/// Admin API state.
pub struct Admin {
    store: LocalStore,
    token: String,
    loopback_only: bool,
    metrics: Arc<Metrics>,
    cold: Option<Arc<ColdTier>>,
    /// Retrievability checks, when on.
    checker: Option<Arc<crate::retrievability::Checker>>,
    popularity: Option<Arc<Popularity>>,
    started: std::time::Instant,
    /// Traffic samples for the status page (bounded: an hour at one per 10 s).
    history: std::sync::Mutex<std::collections::VecDeque<popular::Sample>>,
    /// The hot node as the status page and `/readyz` show it.
    hot: HotNode,
    /// Bytes the edge cache may hold (`cache.memory`).
    cache_capacity: u64,
    /// The public gateway, for links to content: scheme and address.
    public: Option<(&'static str, SocketAddr)>,
    /// Set when shutdown begins: `/readyz` answers 503 so load balancers stop sending.
    draining: std::sync::atomic::AtomicBool,
    /// How often the status page's traffic is sampled.
    sample_every: std::time::Duration,
    /// Pinning Service API requests (persisted in the store).
    pin_requests: tokio::sync::Mutex<Vec<pinning::PinRequest>>,
    /// Multiaddrs of this node, the Pinning Service API's `delegates`.
    delegates: Vec<String>,
    /// Content never imported or pinned.
    denylist: crate::denylist::DenylistHandle,
    /// The gateway's name resolver, so a stored record replaces the one it remembers.
    names: Option<crate::ipns::NameResolver>,
}

impl Admin {
    /// An admin API over `store`; `listen` decides whether tokenless writes are allowed.
    pub fn new(
        store: LocalStore,
        token: String,
        listen: SocketAddr,
        metrics: Arc<Metrics>,
    ) -> Self {
        let loopback_only = listen.ip().is_loopback();
        if token.is_empty() {
            if loopback_only {
                tracing::info!(
                    "admin writes accepted without a token: the admin listener is loopback-only"
                );
            } else {
                tracing::warn!("admin.token is empty and the admin listener is not loopback: everything but /healthz is refused");
            }
        }
        Self {
            store,
            token,
            loopback_only,
            metrics,
            cold: None,
            checker: None,
            popularity: None,
            started: std::time::Instant::now(),
            history: std::sync::Mutex::new(std::collections::VecDeque::new()),
            hot: HotNode::default(),
            cache_capacity: 0,
            public: None,
            draining: std::sync::atomic::AtomicBool::new(false),
            sample_every: std::time::Duration::from_secs(10),
            pin_requests: tokio::sync::Mutex::new(Vec::new()),
            denylist: Default::default(),
            names: None,
            delegates: vec![format!("/ip4/{}/tcp/{}/http", listen.ip(), listen.port())],
        }
    }

    /// Serves the popularity subsystem: `/admin/popular`, pin writes, prewarm, the status page
    /// and the Pinning Service API.
    pub fn with_popularity(
        mut self,
        popularity: Option<Arc<Popularity>>,
    ) -> Result<Self, crate::tiers::local::StoreError> {
        self.popularity = popularity;
        self.pin_requests = tokio::sync::Mutex::new(pinning_service::load(&self.store)?);
        Ok(self)
    }

    /// The multiaddr of the public gateway, advertised as the Pinning Service API's delegate.
    pub fn with_gateway_addr(mut self, addr: SocketAddr) -> Self {
        self.delegates = vec![format!("/ip4/{}/tcp/{}/http", addr.ip(), addr.port())];
        self
    }

    /// The public gateway's scheme (`http` or `https`) and address: the status page links
    /// content there.
    pub fn with_public(mut self, scheme: &'static str, addr: SocketAddr) -> Self {
        self.public = Some((scheme, addr));
        self
    }

    /// The hot node (for readiness, the status page and the breaker gauge).
    pub fn with_hot(mut self, hot: HotNode) -> Self {
        self.hot = hot;
        self
    }

    /// How often the status page samples traffic (`admin.status_interval`).
    pub fn with_sample_interval(mut self, every: std::time::Duration) -> Self {
        self.sample_every = every.max(std::time::Duration::from_millis(100));
        self
    }

    /// The edge cache's capacity in bytes, for the cache fill shown on the status page.
    pub fn with_cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = bytes;
        self
    }

    /// Shutdown began: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Why the gateway is not ready to serve, or nothing when it is. Not ready: while shutting
    /// down, while the store does not answer a read, and while a remote hot node's circuit is
    /// open (requests that need the hot node fail with 502 until its cooldown ends).
    pub fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            reasons.push("shutting down".to_string());
        }
        if let Err(e) = self.store.readable() {
            reasons.push(format!("store not readable: {e}"));
        }
        if let Some(b) = &self.hot.breaker {
            if let Some(left) = b.open_for() {
                reasons.push(format!(
                    "hot node circuit open after {} consecutive failures ({}); requests that need it fail for {} more",
                    b.failures(),
                    self.hot.url,
                    humantime::format_duration(std::time::Duration::from_secs(left.as_secs() + 1))
                ));
            }
        }
        reasons
    }

    /// `GET /readyz`: 200 `ready`, or 503 with one reason per line (and `Retry-After` when
    /// the hot node's circuit will close by itself).
    fn readyz(&self) -> Response<Body> {
        let reasons = self.not_ready();
        if reasons.is_empty() {
            return text(StatusCode::OK, "ready");
        }
        let mut r = text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("not ready: {}", reasons.join("\nnot ready: ")),
        );
        if let Some(left) = self.hot.breaker.as_ref().and_then(|b| b.open_for()) {
            if let Ok(v) = HeaderValue::from_str(&(left.as_secs() + 1).to_string()) {
                r.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
        }
        r
    }

    /// `GET /admin/store` (the space summary), `POST /admin/store/maintain` (garbage
    /// collection, eviction and compaction now; answers with what they did).
    async fn store_api(
        &self,
        req: &Request<Incoming>,
        path: &str,
    ) -> Result<Response<Body>, AdminError> {
        let json = |v: serde_json::Value| {
            let mut r = Response::new(body::full(v.to_string()));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        };
        match (req.method(), path) {
            (&Method::GET, "/admin/store") => {
                let store = self.store.clone();
                let summary = tokio::task::spawn_blocking(move || store.summary()).await?;
                Ok(json(serde_json::json!(summary)))
            }
            (&Method::POST, "/admin/store/maintain") => {
                self.authorized(req)?;
                let store = self.store.clone();
                let report = tokio::task::spawn_blocking(move || store.maintain()).await??;
                Ok(json(serde_json::json!(report)))
            }
            _ => Err(AdminError::MethodNotAllowed(
                "GET /admin/store or POST /admin/store/maintain".into(),
            )),
        }
    }

    /// `GET /metrics`, with the figures read at scrape time refreshed first.
    fn metrics_page(&self) -> Response<Body> {
        let m = &self.metrics;
        m.quarantined.set(self.store.quarantined() as i64);
        m.store_size.set(self.store.file_size() as i64);
        record_store(m, &self.store.summary());
        m.refresh_process();
        // The embedded store has no breaker: its circuit is never open (0, not absent, so
        // that dashboards and alerts need no special case).
        let open = self.hot.breaker.as_ref().is_some_and(|b| b.is_open());
        m.breaker_open
            .get_or_create(&crate::telemetry::TierName { tier: "hot".into() })
            .set(i64::from(open));
        let mut r = Response::new(body::full(m.encode()));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        r
    }

    /// Leaves blocked blocks out of imports (design invariant 9).
    pub fn with_denylist(mut self, denylist: crate::denylist::DenylistHandle) -> Self {
        self.denylist = denylist;
        self
    }

    /// Stores and reads IPNS records through the gateway's resolver: a record stored here is
    /// the one the gateway serves at once, not after its memory of the old one expires.
    pub fn with_names(mut self, names: crate::ipns::NameResolver) -> Self {
        self.names = Some(names);
        self
    }

    /// The name resolver records are stored through.
    pub(crate) fn names(&self) -> crate::ipns::NameResolver {
        self.names.clone().unwrap_or_else(|| {
            crate::ipns::NameResolver::new(
                crate::tiers::records::Records::of(&self.store),
                Default::default(),
            )
        })
    }

    /// Reports this cold tier's providers at `GET /admin/providers`.
    pub fn with_cold(mut self, cold: Option<Arc<ColdTier>>) -> Self {
        self.cold = cold;
        self
    }

    /// Answers `/admin/retrievability` with `checker`.
    pub fn with_checker(mut self, checker: Option<Arc<crate::retrievability::Checker>>) -> Self {
        self.checker = checker;
        self
    }

    /// The checker's report, optionally only what fails.
    pub fn retrievability(&self) -> Option<crate::retrievability::Report> {
        self.checker.as_ref().map(|c| c.report(false))
    }

    /// `GET /admin/retrievability[?failing=true]`, `POST /admin/retrievability/{cid}` (check now).
    async fn retrievability_api(
        &self,
        req: &Request<Incoming>,
        rest: Option<&str>,
    ) -> Result<Response<Body>, AdminError> {
        let Some(checker) = &self.checker else {
            return Err(AdminError::NotFound(
                "retrieval checks are off (retrieval_checks.enabled = false)".into(),
            ));
        };
        match (req.method(), rest) {
            (&Method::GET, None) => {
                let failing = req.uri().query().is_some_and(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .any(|(k, v)| k == "failing" && (v == "true" || v == "1"))
                });
                Ok(json(StatusCode::OK, &checker.report(failing)))
            }
            (&Method::POST, Some(cid)) => {
                // It fetches from every provider: an operator's act, as writes are.
                self.authorized(req)?;
                let cid = cid::Cid::try_from(cid)
                    .map_err(|e| AdminError::BadRequest(format!("invalid CID {cid:?}: {e}")))?;
                match checker.check(cid).await {
                    Ok(record) => Ok(json(StatusCode::OK, &record)),
                    Err(e @ crate::retrievability::CheckError::Busy(_)) => {
                        Err(AdminError::Conflict(e.to_string()))
                    }
                    Err(e) => Err(AdminError::unavailable(e)),
                }
            }
            _ => Err(AdminError::MethodNotAllowed("method not allowed".into())),
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> Result<(), AdminError> {
        if self.token.is_empty() {
            return if self.loopback_only {
                Ok(())
            } else {
                Err(AdminError::Forbidden(
                    "admin writes need admin.token when the admin listener is not loopback".into(),
                ))
            };
        }
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        match given {
            Some(t) if crate::constant_time_eq(t.as_bytes(), self.token.as_bytes()) => Ok(()),
            _ => Err(AdminError::Unauthorized(
                "missing or wrong bearer token".into(),
            )),
        }
    }

    async fn route(self: &Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, AdminError> {
        let path = req.uri().path().to_string();
        if !self.loopback_only && path != "/healthz" && path != "/readyz" {
            self.authorized(&req)?;
        }
        if path == "/pins" || path.starts_with("/pins/") {
            return Ok(self.pinning_service(req).await);
        }
        if let Some(name) = path.strip_prefix("/routing/v1/ipns/") {
            let name = name.to_string();
            return self.ipns_record(req, &name).await;
        }
        if let Some(rest) = path.strip_prefix("/admin/pins/") {
            let rest = rest.to_string();
            return self.pin_write(req, &rest).await;
        }
        if path == "/admin/retrievability" {
            return self.retrievability_api(&req, None).await;
        }
        if let Some(rest) = path.strip_prefix("/admin/retrievability/") {
            let rest = rest.to_string();
            return self.retrievability_api(&req, Some(&rest)).await;
        }
        if path == "/admin/store" || path == "/admin/store/maintain" {
            return self.store_api(&req, &path).await;
        }
        if let Some(rest) = path.strip_prefix("/admin/export/") {
            if req.method() != Method::GET {
                return Err(AdminError::MethodNotAllowed("use GET".into()));
            }
            // Reading the store's content whole is an operator's act, as writes are.
            self.authorized(&req)?;
            let rest = rest.to_string();
            return self.export(&rest).await;
        }
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/") => Ok(self.status_page(&req)),
            (Method::GET, "/admin/popular") => self.popular(&req),
            (Method::POST, "/admin/prewarm") => {
                self.authorized(&req)?;
                self.prewarm(req).await
            }
            (Method::GET, "/healthz") => Ok(text(StatusCode::OK, "ok")),
            (Method::GET, "/readyz") => Ok(self.readyz()),
            (Method::GET, "/metrics") => Ok(self.metrics_page()),
            (Method::GET, "/admin/pins") => self.pins().await,
            // Lets a client learn that its token is refused before it streams a large body
            // (a server answering 401 early and closing would otherwise look like a broken pipe).
            (Method::GET, "/admin/auth") => {
                self.authorized(&req)?;
                Ok(text(StatusCode::OK, "ok"))
            }
            (Method::GET, "/admin/providers") => match &self.cold {
                Some(cold) => Ok(json(StatusCode::OK, &cold.report())),
                None => Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({"providers": [], "cold_tier": "off: [cold] names no provider, indexer or router"}),
                )),
            },
            (Method::POST, "/admin/import") => {
                self.authorized(&req)?;
                let roots = match req.uri().query() {
                    None => Roots::Header,
                    Some(q) => match form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "root")
                        .map(|(_, v)| v.into_owned())
                        .as_deref()
                    {
                        None | Some("header") => Roots::Header,
                        Some("last") => Roots::LastBlock,
                        Some(other) => {
                            return Err(AdminError::BadRequest(format!(
                                "root must be \"header\" or \"last\", not {other:?}"
                            )))
                        }
                    },
                };
                let stream = req
                    .into_body()
                    .into_data_stream()
                    .map_err(std::io::Error::other);
                let reader = StreamReader::new(stream);
                let denylist = self.denylist.current();
                match import_car_except(
                    &self.store,
                    reader,
                    PinReason::Operator,
                    roots,
                    &denylist,
                    |_, _| {},
                )
                .await
                {
                    Ok(report) => Ok(json(StatusCode::OK, &report)),
                    Err(e) => Err(e.into()),
                }
            }
            (
                _,
                "/" | "/healthz" | "/readyz" | "/metrics" | "/admin/pins" | "/admin/import"
                | "/admin/providers" | "/admin/popular" | "/admin/prewarm" | "/admin/auth",
            ) => Err(AdminError::MethodNotAllowed("method not allowed".into())),
            _ => Err(AdminError::NotFound(format!("nothing at {path}"))),
        }
    }
}

/// The hot pinning node as the admin listener reports it.
#[derive(Clone, Default)]
pub struct HotNode {
    /// `embedded`, `trustless` or `kubo`.
    pub backend: String,
    /// Its URL, credentials masked (empty for the embedded store).
    pub url: String,
    /// Its circuit breaker; `None` for the embedded store, which has none.
    pub breaker: Option<Arc<crate::tiers::tiered::CircuitBreaker>>,
}

/// The credentials of `Authorization: Bearer <token>`; the scheme name is case-insensitive
/// (RFC 9110 §11.1) and may be followed by more than one space.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(body::full(format!("{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut r = Response::new(body::full(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Adapter so the admin API runs on the shared server machinery.
pub struct AdminHandler(pub Arc<Admin>);

impl Handler for AdminHandler {
    fn call(&self, req: Request<Incoming>, _client: Client) -> ResponseFuture {
        let admin = self.0.clone();
        Box::pin(async move {
            match admin.route(req).await {
                Ok(r) => r,
                Err(e) => text(e.status(), &e.to_string()),
            }
        })
    }
}

/// The admin listener's handler from the moment it is bound, before the store is open:
/// `/healthz` answers 200 (the process lives), `/readyz` and everything else 503 until
/// [`AdminGate::open`] hands it the admin API.
#[derive(Default)]
pub struct AdminGate {
    admin: arc_swap::ArcSwapOption<Admin>,
}

impl AdminGate {
    /// A gate that is still closed.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Serves `admin` from now on.
    pub fn open(&self, admin: Arc<Admin>) {
        self.admin.store(Some(admin));
    }
}

impl Handler for AdminGate {
    fn call(&self, req: Request<Incoming>, client: Client) -> ResponseFuture {
        match self.admin.load_full() {
            Some(admin) => AdminHandler(admin).call(req, client),
            None => {
                let reply = match req.uri().path() {
                    "/healthz" => text(StatusCode::OK, "ok"),
                    "/readyz" => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: starting (opening the store)",
                    ),
                    _ => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "starting: the admin API is not up yet",
                    ),
                };
                Box::pin(async move { reply })
            }
        }
    }
}

/// Publishes the store's space summary (read at scrape time) in the metrics: gauges set,
/// counters moved up to the summary's totals. Done here, above both, so that telemetry names no
/// layer it measures.
fn record_store(m: &Metrics, s: &StoreSummary) {
    // Two scrapes at once must not both add the same difference.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock();
    for (kind, v) in [
        ("pinned", s.pinned_bytes),
        ("cache", s.cache_bytes),
        ("dead", s.dead_bytes),
        ("index", s.index_bytes),
    ] {
        m.store_bytes
            .get_or_create(&crate::telemetry::StoreKind { kind: kind.into() })
            .set(v as i64);
    }
    m.store_max_size.set(s.max_size as i64);
    for (c, v) in [
        (&m.store_evicted_blocks, s.evicted_blocks),
        (&m.store_evicted_bytes, s.evicted_bytes),
        (&m.store_reinserted_bytes, s.reinserted_bytes),
        (&m.store_compacted_bytes, s.compacted_bytes),
        (&m.store_gc_runs, s.gc_runs),
        (&m.store_released_bytes, s.released_bytes),
        (&m.store_cache_skipped_bytes, s.cache_skipped_bytes),
        (&m.store_scrubbed_bytes, s.scrubbed_bytes),
        (&m.store_scrub_corrupt, s.scrub_corrupt),
        (&m.store_scrub_passes, s.scrub_passes),
    ] {
        let seen = c.get();
        if v > seen {
            c.inc_by(v - seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer  "), None);
    }

    /// While the store opens (the gate is closed), the admin listener already answers: alive,
    /// not ready.
    #[tokio::test]
    async fn a_closed_gate_is_alive_but_not_ready() {
        let socket = crate::server::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(crate::server::serve(
            crate::server::Listener {
                socket,
                tls: None,
                limits: crate::server::Limits::default(),
                admission: None,
                metrics: Metrics::new(),
                gauge: "admin_connections",
            },
            AdminGate::new(),
            shutdown.clone(),
        ));
        let client = reqwest::Client::new();
        let get = |path: &str| client.get(format!("http://{addr}{path}")).send();
        let r = get("/healthz").await.unwrap();
        assert_eq!(r.status(), 200);
        let r = get("/readyz").await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.text().await.unwrap().contains("starting"));
        assert_eq!(get("/admin/pins").await.unwrap().status(), 503);
        shutdown.cancel();
        let _ = task.await;
    }
}
