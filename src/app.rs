//! Wiring for `cidgate serve`: open the store, add the sample, start the public and admin
//! listeners, and shut down gracefully on SIGINT / SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures::FutureExt;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::admin::Admin;
use crate::config::Config;
use crate::config::HotBackend;
use crate::denylist::{DenylistHandle, DenylistService};
use crate::gateway::{Gateway, GatewayOptions, ServedContent};
use crate::popularity::tracker::SystemClock;
use crate::popularity::Popularity;
use crate::server::{self, Admission, Client, ClientLimits, Handler, Limits, ResponseFuture};
use crate::telemetry::{Metrics, RequestLabels, RequestTrace, TRACE};
use crate::tiers::cache::EdgeCache;
use crate::tiers::cold::ColdTier;
use crate::tiers::kubo::KuboBackend;
use crate::tiers::local::{LocalStore, PinReason};
use crate::tiers::pins::{ClusterPins, EmbeddedPins, HotPins, KuboPins};
use crate::tiers::tiered::{CircuitBreaker, TieredSource};
use crate::tiers::trustless::TrustlessBackend;
use crate::tiers::BlockSource;

/// File in the data directory that tells other cidgate commands where a running `serve`'s
/// admin listener is.
pub const ADMIN_ADDR_FILE: &str = "admin.addr";

/// Open files kept for the store, logs and connections to the hot node and the providers.
const FD_FOR_THE_PROCESS: u64 = 256;

/// Connections the admin listener takes at once.
const ADMIN_CONNECTIONS: usize = 64;

/// Over-limit connections answered with a 503 at once (see `server::Limits::max_refusing`).
const MAX_REFUSING: usize = 128;

/// The same for the admin listener.
const ADMIN_REFUSING: usize = 16;

/// Where the data directory's running server listens, if one does.
pub fn running_admin_url(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(ADMIN_ADDR_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Time limits of public requests (see `[server]` in the configuration).
#[derive(Clone, Copy, Debug)]
pub struct RequestDeadlines {
    /// Until the response head.
    pub retrieval: std::time::Duration,
    /// Between body chunks.
    pub stall: std::time::Duration,
    /// For the whole response; zero: unbounded.
    pub total: std::time::Duration,
}

/// What SIGHUP may change on the request path: read once per request, without locks.
pub struct LiveSettings {
    deadlines: arc_swap::ArcSwap<RequestDeadlines>,
    access_log: std::sync::atomic::AtomicBool,
}

impl LiveSettings {
    /// Settings with these deadlines and access log switch.
    pub fn new(deadlines: RequestDeadlines, access_log: bool) -> Arc<Self> {
        Arc::new(Self {
            deadlines: arc_swap::ArcSwap::from_pointee(deadlines),
            access_log: std::sync::atomic::AtomicBool::new(access_log),
        })
    }

    /// Replaces the request deadlines (for requests that start from now on).
    pub fn set_deadlines(&self, deadlines: RequestDeadlines) {
        self.deadlines.store(Arc::new(deadlines));
    }

    /// Turns the access log on or off.
    pub fn set_access_log(&self, on: bool) {
        self.access_log
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this request gets an access log line: switched on, and the log filter lets
    /// `cidgate::access` info lines through. Costs two loads when off.
    fn access_log(&self) -> bool {
        self.access_log.load(std::sync::atomic::Ordering::Relaxed)
            && tracing::enabled!(target: crate::telemetry::ACCESS_TARGET, tracing::Level::INFO)
    }
}

/// The public listener's per-request middleware: deadlines, panics, metrics, `Server-Timing`
/// and `X-Cidgate-Tier`, demand for the popularity tracker, and the access log.
pub struct GatewayHandler {
    gateway: Gateway,
    live: Arc<LiveSettings>,
    metrics: Arc<Metrics>,
    popularity: Option<Arc<Popularity>>,
    /// Per serving tier, its request and byte counters, created once: a label lookup per
    /// request costs an allocation.
    served_by: Arc<[TierCounters; 4]>,
}

/// The `served_by` and `served_bytes` counters of one tier.
struct TierCounters {
    tier: &'static str,
    requests: prometheus_client::metrics::counter::Counter,
    bytes: prometheus_client::metrics::counter::Counter,
}

impl GatewayHandler {
    /// The middleware around `gateway`, with `live` settings (deadlines, access log).
    pub fn new(
        gateway: Gateway,
        live: Arc<LiveSettings>,
        metrics: Arc<Metrics>,
        popularity: Option<Arc<Popularity>>,
    ) -> Self {
        let counters = |tier: &'static str| {
            let label = crate::telemetry::TierName { tier: tier.into() };
            TierCounters {
                tier,
                requests: metrics.served_by.get_or_create(&label).clone(),
                bytes: metrics.served_bytes.get_or_create(&label).clone(),
            }
        };
        let served_by = Arc::new(SERVED_ORDER.map(counters));
        Self {
            gateway,
            live,
            metrics,
            popularity,
            served_by,
        }
    }

    /// Handles one request from `client` (the same as [`Handler::call`], for any request body
    /// type, so benchmarks can drive it without sockets).
    pub fn handle<B: Send + 'static>(
        &self,
        req: http::Request<B>,
        client: Client,
    ) -> ResponseFuture {
        let gw = self.gateway.clone();
        let deadlines = **self.live.deadlines.load();
        let access = self
            .live
            .access_log()
            .then(|| AccessRecord::new(&req, &client));
        let metrics = self.metrics.clone();
        let popularity = self.popularity.clone();
        let served_by = self.served_by.clone();
        Box::pin(async move {
            let method = req.method().clone();
            let uri = req.uri().clone();
            let browser = crate::gateway::error::wants_html(req.headers());
            let path = uri.path();
            let start = Instant::now();
            // Counted out when the response (body included) is done, or when the client
            // leaves first and this future is dropped at whatever await point.
            let in_flight = InFlight::new(&metrics);
            let trace = RequestTrace::default();
            let span = tracing::debug_span!("request", %method, %path);
            // A panic is a bug; it must cost one response, not the connection or the process.
            let handled = TRACE.scope(
                trace.clone(),
                AssertUnwindSafe(gw.handle(req)).catch_unwind(),
            );
            let mut resp =
                match LazyTimeout::new(handled.instrument(span), deadlines.retrieval).await {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(_)) => {
                        tracing::error!(%method, %path, "request handler panicked");
                        let mut r = http::Response::new(crate::body::full("internal error\n"));
                        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                        r
                    }
                    Err(_) => {
                        // Dropping the handler releases whatever it waited for (invariant 7).
                        metrics.limit_hit("retrieval_timeout");
                        crate::gateway::error::GatewayError::Timeout(format!(
                            "no response from the content tiers within {}",
                            humantime::format_duration(deadlines.retrieval)
                        ))
                        .response(browser.then_some(path))
                    }
                };
            let ttfb = start.elapsed();
            metrics.ttfb.observe(ttfb.as_secs_f64());
            let tiers = trace.tiers();
            let tier_bytes = served_by
                .iter()
                .find(|c| tiers.split(',').any(|x| x == c.tier))
                .map(|c| {
                    c.requests.inc();
                    c.bytes.clone()
                });
            if !tiers.is_empty() {
                let h = resp.headers_mut();
                match &tiers {
                    std::borrow::Cow::Borrowed(t) => {
                        h.insert(
                            crate::gateway::headers::X_CIDGATE_TIER,
                            http::HeaderValue::from_static(t),
                        );
                    }
                    std::borrow::Cow::Owned(t) => {
                        crate::gateway::headers::set(h, crate::gateway::headers::X_CIDGATE_TIER, t)
                    }
                }
                crate::gateway::headers::set(
                    h,
                    crate::gateway::headers::SERVER_TIMING,
                    &trace.server_timing(),
                );
            }
            let format = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(format_label)
                .unwrap_or("none");
            let status = resp.status().as_u16();
            metrics
                .requests
                .get_or_create(&RequestLabels { status, format })
                .inc();
            tracing::debug!(%method, %path, status, ttfb_us = ttfb.as_micros() as u64, %tiers, "response head");
            let access = access.map(|a| a.answered(status, ttfb, tiers.clone()));
            let demand = popularity.and_then(|p| demand_hook(p, &resp, tiers));
            let end = (!deadlines.total.is_zero())
                .then(|| tokio::time::Instant::from_std(start) + deadlines.total);
            resp.map(|body| {
                use http_body::Body as _;
                // A whole buffer cannot stall; a stream can.
                let body = if body.size_hint().exact().is_some() {
                    body
                } else {
                    crate::body::deadlined(body, deadlines.stall, end)
                };
                counted(
                    body,
                    Done {
                        metrics,
                        start,
                        status,
                        bytes: 0,
                        tier_bytes,
                        on_done: demand,
                        access,
                        _in_flight: in_flight,
                    },
                )
            })
        })
    }
}

/// Tiers from slowest to fastest: a request is counted under the slowest one it needed.
const SERVED_ORDER: [&str; 4] = ["cold", "hot", "store", "cache"];

impl Handler for GatewayHandler {
    fn call(&self, req: http::Request<hyper::body::Incoming>, client: Client) -> ResponseFuture {
        self.handle(req, client)
    }
}

/// One line of the access log, filled in as the request goes and written when its body is
/// done or dropped (a client that leaves mid-body still gets its line, with the bytes sent).
struct AccessRecord {
    client: std::net::IpAddr,
    host: Option<http::HeaderValue>,
    method: http::Method,
    uri: http::Uri,
    status: u16,
    ttfb: std::time::Duration,
    tiers: std::borrow::Cow<'static, str>,
}

impl AccessRecord {
    /// What is known when the request arrives; the client is the one behind trusted proxies.
    fn new<B>(req: &http::Request<B>, client: &Client) -> Self {
        Self {
            client: client.ip,
            host: req.headers().get(http::header::HOST).cloned(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            status: 0,
            ttfb: std::time::Duration::ZERO,
            tiers: std::borrow::Cow::Borrowed(""),
        }
    }

    /// What is known once the response head is ready.
    fn answered(
        mut self,
        status: u16,
        ttfb: std::time::Duration,
        tiers: std::borrow::Cow<'static, str>,
    ) -> Self {
        self.status = status;
        self.ttfb = ttfb;
        self.tiers = tiers;
        self
    }

    /// Writes the line: `bytes` of body sent in `took` since the request arrived.
    fn write(&self, bytes: u64, took: std::time::Duration) {
        let host = self
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .or_else(|| self.uri.authority().map(|a| a.as_str()))
            .unwrap_or("-");
        let path = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        // `?token=` of a dedicated gateway (and any credential in a query) stays out of logs.
        let path = crate::config::mask_query(path);
        let path = path.as_ref();
        let ms = |d: std::time::Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let tiers: &str = if self.tiers.is_empty() {
            "-"
        } else {
            &self.tiers
        };
        tracing::info!(
            target: crate::telemetry::ACCESS_TARGET,
            client = %self.client,
            host,
            method = %self.method,
            path,
            status = self.status,
            bytes,
            duration_ms = ms(took),
            ttfb_ms = ms(self.ttfb),
            tiers,
            cache = cache_result(&self.tiers),
            "request"
        );
    }
}

/// The edge cache's part in a response, from its tiers: `hit` (the cache alone), `partial`
/// (the cache and a slower tier), `miss` (slower tiers only) or `none` (no content read, e.g.
/// a redirect or a 400).
fn cache_result(tiers: &str) -> &'static str {
    if tiers.is_empty() {
        return "none";
    }
    let mut cache = false;
    let mut other = false;
    for t in tiers.split(',') {
        if t == "cache" {
            cache = true;
        } else {
            other = true;
        }
    }
    match (cache, other) {
        (true, false) => "hit",
        (true, true) => "partial",
        _ => "miss",
    }
}

/// What to tell the popularity tracker once the body is sent: demand for the content root
/// (successful and revalidated responses only), and where a range reader got to.
fn demand_hook(
    popularity: Arc<Popularity>,
    resp: &http::Response<crate::body::Body>,
    tiers: std::borrow::Cow<'static, str>,
) -> Option<Box<dyn FnOnce(u64) + Send + Sync>> {
    let status = resp.status().as_u16();
    if !matches!(status, 200 | 206 | 304) {
        return None;
    }
    let served = resp.extensions().get::<ServedContent>()?.clone();
    if let Some(segments) = &served.segments {
        if let Some(r) = resp.extensions().get::<crate::gateway::range::SentRange>() {
            popularity.observe_range(served.root, segments, r.start, r.end, r.size);
        }
    }
    Some(Box::new(move |bytes| {
        popularity.observe(served.root, bytes, &tiers)
    }))
}

/// A short label for the response's media type.
fn format_label(content_type: &str) -> &'static str {
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/vnd.ipld.raw" => "raw",
        "application/vnd.ipld.car" => "car",
        "application/x-tar" => "tar",
        "application/vnd.ipld.dag-json"
        | "application/vnd.ipld.dag-cbor"
        | "application/json"
        | "application/cbor" => "codec",
        "text/html" => "html",
        _ => "file",
    }
}

/// One request in the `inflight_requests` gauge, until dropped.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn new(metrics: &Metrics) -> Self {
        metrics.inflight.inc();
        InFlight(metrics.inflight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pin_project_lite::pin_project! {
    /// `fut` with a deadline whose timer is armed only when `fut` is not ready at its first
    /// poll: most answers (cache hits) are, and skip registering a timer at all.
    struct LazyTimeout<F> {
        #[pin]
        fut: F,
        after: std::time::Duration,
        sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F> LazyTimeout<F> {
    fn new(fut: F, after: std::time::Duration) -> Self {
        Self {
            fut,
            after,
            sleep: None,
        }
    }
}

impl<F: std::future::Future> std::future::Future for LazyTimeout<F> {
    type Output = Result<F::Output, ()>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if let std::task::Poll::Ready(v) = this.fut.poll(cx) {
            return std::task::Poll::Ready(Ok(v));
        }
        let after = *this.after;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        sleep.as_mut().poll(cx).map(|()| Err(()))
    }
}

/// The end of a request: latency, status and byte counts, the access log line and the
/// popularity hook, all when the body is done or dropped.
struct Done {
    metrics: Arc<Metrics>,
    start: Instant,
    status: u16,
    bytes: u64,
    /// `served_bytes` of the slowest tier the response needed.
    tier_bytes: Option<prometheus_client::metrics::counter::Counter>,
    on_done: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
    access: Option<AccessRecord>,
    _in_flight: InFlight,
}

impl Done {
    fn finish(&mut self) {
        let took = self.start.elapsed();
        self.metrics.latency.observe(took.as_secs_f64());
        self.metrics.stats.record(took, self.status);
        if let Some(c) = &self.tier_bytes {
            c.inc_by(self.bytes);
        }
        if let Some(a) = &self.access {
            a.write(self.bytes, took);
        }
        if let Some(f) = self.on_done.take() {
            f(self.bytes);
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Counts body bytes; the request ends (see [`Done`]) when the body is dropped. A body whose
/// size is known (a whole buffer) is left as it is when there is no access log line to
/// write, so the request ends at once and nothing is allocated.
fn counted(body: crate::body::Body, mut done: Done) -> crate::body::Body {
    use http_body::Body as _;
    if done.access.is_none() {
        if let Some(n) = body.size_hint().exact() {
            done.metrics.bytes_served.inc_by(n);
            done.bytes = n;
            drop(done);
            return body;
        }
    }
    Counted { body, done }.boxed()
}

/// A body that counts what it sends into its [`Done`]; sizes pass through, so a whole buffer
/// keeps its `Content-Length`.
struct Counted {
    body: crate::body::Body,
    done: Done,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let n = data.len() as u64;
                this.done.bytes += n;
                this.done.metrics.bytes_served.inc_by(n);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The resolver of `/ipns/` names: records in the store (kept fresh from `cold.routers` when
/// any are configured), DNSLink domains from the config, then from DNS for allowed domains.
fn name_resolver(
    config: &Config,
    store: &LocalStore,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<crate::ipns::NameResolver> {
    let mut names = crate::ipns::NameResolver::new(store.clone(), config.dnslink.names.clone());
    let dns = crate::ipns::Dnslink::new(&config.dnslink, metrics.clone())
        .map_err(|e| anyhow::anyhow!("dnslink: {e}"))?;
    if dns.enabled() {
        names = names.with_dns(dns);
    }
    if !config.cold.routers.is_empty() {
        let client = crate::tiers::remote::http_client(config.cold.connect_timeout, 4)
            .map_err(|e| anyhow::anyhow!(e))?;
        names = names.with_routing(crate::ipns::IpnsRouting::new(
            client,
            &config.cold.routers,
            config.cold.discovery_timeout,
            config.cold.negative_ttl,
            metrics.clone(),
        ));
    }
    Ok(names)
}

/// Bytes of fetched blocks waiting to be written to the store's disk cache at most.
const SPILL_QUEUE_BYTES: u64 = 64 * 1024 * 1024;

/// Runs the store's garbage collection, eviction and compaction whenever they are due.
async fn maintain_store(store: LocalStore, every: std::time::Duration) {
    loop {
        store.maintenance_due(every).await;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.maintain()).await {
            Ok(Ok(r)) if r != crate::tiers::space::MaintenanceReport::default() => {
                tracing::info!(
                    evicted_bytes = r.evicted_bytes,
                    evicted_blocks = r.evicted_blocks,
                    reinserted_bytes = r.reinserted_bytes,
                    compacted_segments = r.compacted_segments,
                    gc = r.gc,
                    released_bytes = r.released_bytes,
                    over_budget = r.over_budget,
                    "store maintenance"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "store maintenance failed"),
            Err(e) => tracing::warn!(error = %e, "store maintenance task failed"),
        }
    }
}

/// The block source of `serve`: edge cache, embedded store, and the configured hot node, with
/// `denylist`'s blocks refused in front of all of them.
pub fn tiered_source(
    config: &Config,
    store: LocalStore,
    metrics: Arc<Metrics>,
    cold: Option<Arc<ColdTier>>,
    denylist: DenylistHandle,
) -> anyhow::Result<Arc<TieredSource>> {
    let cache = if config.cache.zero_copy {
        EdgeCache::with_zero_copy(config.cache.memory.as_u64(), metrics.clone())?
    } else {
        EdgeCache::new(config.cache.memory.as_u64(), metrics.clone())?
    };
    // Fetched blocks also go to the store's disk cache, behind the response; the queue holds
    // what a slow disk has not taken yet, bounded.
    let cache = if config.store.keep_fetched {
        cache.with_spill(crate::tiers::spill::CacheWriter::start(
            store.clone(),
            SPILL_QUEUE_BYTES,
        ))
    } else {
        cache
    };
    let hot = &config.hot;
    let remote: Option<Arc<dyn BlockSource>> = match hot.backend {
        HotBackend::Embedded => None,
        HotBackend::Trustless => Some(Arc::new(TrustlessBackend::new(
            &hot.url,
            hot.timeout,
            metrics.clone(),
        )?)),
        HotBackend::Kubo => Some(Arc::new(KuboBackend::new(
            &hot.url,
            hot.timeout,
            metrics.clone(),
        )?)),
    };
    if let Some(r) = &remote {
        tracing::info!(backend = ?hot.backend, url = %hot.url, tier = r.name(), "remote hot node configured");
    }
    Ok(Arc::new(
        TieredSource::with_cold(
            cache,
            Some(store),
            remote,
            cold.map(|c| {
                let deadline = c.deadline();
                (c as Arc<dyn BlockSource>, deadline)
            }),
            CircuitBreaker::new(hot.breaker_failures, hot.breaker_cooldown),
            hot.timeout,
            metrics,
        )
        .with_denylist(denylist),
    ))
}

/// Where promotions and operator pins go: the Cluster when configured, else the Kubo node
/// (backend `kubo`), else the embedded store (a trustless gateway cannot take pins).
pub fn hot_pins(config: &Config, store: &LocalStore) -> anyhow::Result<Arc<dyn HotPins>> {
    let hot = &config.hot;
    Ok(if !hot.cluster_url.is_empty() {
        Arc::new(ClusterPins::new(
            &hot.cluster_url,
            hot.timeout,
            hot.cluster_replication_min,
            hot.cluster_replication_max,
        )?)
    } else if hot.backend == HotBackend::Kubo {
        Arc::new(KuboPins::new(&hot.url, hot.timeout)?)
    } else {
        Arc::new(EmbeddedPins(store.clone()))
    })
}

/// The cold tier, when `[cold]` names any provider, indexer or router.
pub fn cold_tier(
    config: &Config,
    store: &LocalStore,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<Arc<ColdTier>>> {
    if !config.cold.enabled() {
        return Ok(None);
    }
    let cold = ColdTier::new(&config.cold, Some(store.clone()), metrics.clone())?;
    tracing::info!(
        providers = config.cold.providers.len(),
        indexers = config.cold.indexers.len(),
        routers = config.cold.routers.len(),
        "cold tier configured (storage providers)"
    );
    Ok(Some(cold))
}

/// Adds the bundled sample to a store that never had it; returns the sample root.
pub async fn ensure_sample(store: &LocalStore) -> anyhow::Result<cid::Cid> {
    let (root, blocks) = crate::sample::build()?;
    if store.meta_flag("sample_added")? {
        return Ok(root.cid);
    }
    let _guard = store.writer_lock().await;
    let s = store.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let batch = s.new_batch()?;
        s.put_staged(batch, &blocks, false)?;
        crate::tiers::import::finish_batch(&s, batch, &[root.cid], PinReason::Sample)?;
        s.set_meta_flag("sample_added")?;
        Ok(())
    })
    .await??;
    Ok(root.cid)
}

/// Where `serve`'s configuration came from, so that SIGHUP can read it again the same way.
#[derive(Default)]
pub struct ConfigSource {
    /// `--config`, if given.
    pub file: Option<PathBuf>,
    /// The command-line flags that override the file and the environment.
    pub overrides: crate::config::Overrides,
    /// The log filter's reload handle (absent when logging was set up elsewhere).
    pub log: Option<crate::telemetry::LogControl>,
}

/// Runs the gateway until a shutdown signal.
pub async fn serve(config: Config, source: ConfigSource) -> anyhow::Result<()> {
    // Taken over first: SIGHUP's default action ends the process, and the store may take
    // long to open. A SIGHUP that comes during the start is applied once the server runs.
    let hangup = Hangup::listen();
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new();
    // The admin listener is up first, so that `/healthz` and `/readyz` (503 "starting") answer
    // while the store opens, which may take long after an unclean stop.
    let admin_listener = server::bind(config.admin.listen).await?;
    let admin_addr = admin_listener.local_addr()?;
    let gate = crate::admin::AdminGate::new();
    let admin_limits = Limits {
        max_connections: ADMIN_CONNECTIONS,
        max_connections_per_client: 0,
        max_header_bytes: config.server.max_header_bytes,
        max_url_bytes: config.server.max_url_bytes,
        header_read_timeout: config.server.header_read_timeout,
        idle_timeout: config.server.idle_timeout,
        send_timeout: config.server.send_timeout,
        shutdown_grace: config.server.shutdown_grace,
        max_refusing: ADMIN_REFUSING,
        trusted_proxies: server::TrustedProxies::new(config.server.trusted_proxies.clone()),
        zero_copy_sent: None,
        discard_request_bodies: false,
    };
    // The admin listener has connection slots of its own, so a saturated public port does
    // not lock the operator out; it is not rate limited.
    let admin_task = tokio::spawn(server::serve(
        server::Listener {
            socket: admin_listener,
            tls: None,
            limits: admin_limits,
            admission: None,
            metrics: metrics.clone(),
            gauge: "admin_connections",
        },
        gate.clone(),
        shutdown.clone(),
    ));
    let result = serve_opened(
        config, source, metrics, admin_addr, &gate, &shutdown, hangup,
    )
    .await;
    if result.is_err() {
        shutdown.cancel();
    }
    shutdown.cancel();
    let _ = admin_task.await;
    result
}

/// The rest of `serve`, once the admin listener answers.
async fn serve_opened(
    config: Config,
    config_source: ConfigSource,
    metrics: Arc<Metrics>,
    admin_addr: std::net::SocketAddr,
    gate: &crate::admin::AdminGate,
    shutdown: &CancellationToken,
    hangup: Hangup,
) -> anyhow::Result<()> {
    let store = LocalStore::from_config(&config.store)?;
    let sample = if config.server.sample {
        Some(ensure_sample(&store).await?)
    } else {
        None
    };
    let tls = if config.server.tls_cert.is_empty() {
        None
    } else {
        Some(server::tls_acceptor(
            &config.server.tls_cert,
            &config.server.tls_key,
        )?)
    };
    let s = &config.server;
    // Descriptors for the admin listener, refused connections, the store and the remote tiers
    // stay free even when the public port is full: the public port can never run the process
    // out of files.
    let reserve = FD_FOR_THE_PROCESS + (ADMIN_CONNECTIONS + MAX_REFUSING + ADMIN_REFUSING) as u64;
    let max_connections = match server::raise_fd_limit() {
        Some(files) if (s.max_connections as u64).saturating_add(reserve) > files => {
            let clamped = files.saturating_sub(reserve).max(16) as usize;
            tracing::warn!(
                configured = s.max_connections,
                open_files_limit = files,
                max_connections = clamped,
                "server.max_connections lowered to fit the open-files limit (raise LimitNOFILE / ulimit -n)"
            );
            clamped
        }
        _ => s.max_connections,
    };
    let limits = Limits {
        max_connections,
        max_connections_per_client: s.max_connections_per_client,
        max_header_bytes: s.max_header_bytes,
        max_url_bytes: s.max_url_bytes,
        header_read_timeout: s.header_read_timeout,
        idle_timeout: s.idle_timeout,
        send_timeout: s.send_timeout,
        shutdown_grace: s.shutdown_grace,
        max_refusing: MAX_REFUSING,
        trusted_proxies: server::TrustedProxies::new(s.trusted_proxies.clone()),
        zero_copy_sent: None,
        discard_request_bodies: true,
    };
    let admission = Admission::new(
        s.max_concurrent_requests,
        ClientLimits {
            max_concurrent: s.max_requests_per_client,
            rate: s.client_rate,
            burst: s.client_burst,
        },
    );
    let live = LiveSettings::new(deadlines_of(&config), config.telemetry.access_log);
    let public = server::bind(config.server.listen).await?;
    let public_addr = public.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };

    let options = GatewayOptions {
        subdomain_hosts: config.server.subdomain_hosts.clone(),
        tls: tls.is_some(),
        response_cache_bytes: config.cache.responses.as_u64(),
        max_deserialized_response_size: config.gateway.max_deserialized_response_size.as_u64(),
        max_unixfs_dag_response_size: config.gateway.max_unixfs_dag_response_size.as_u64(),
    };
    let (denylists, denylist_task) =
        DenylistService::start(&config.denylist, &config.store.dir, shutdown.clone()).await?;
    let denylist = denylists.handle();
    if !denylist.load().is_empty() {
        tracing::info!(rules = denylist.load().rules(), "denylists loaded");
    }
    let cold = cold_tier(&config, &store, &metrics)?;
    let source = tiered_source(
        &config,
        store.clone(),
        metrics.clone(),
        cold.clone(),
        denylist.clone(),
    )?;
    let popularity = if config.popularity.enabled {
        Some(Popularity::new(
            config.popularity.clone(),
            store.clone(),
            source.clone(),
            Some(source.cache().clone()),
            hot_pins(&config, &store)?,
            Arc::new(SystemClock),
            metrics.clone(),
        )?)
    } else {
        None
    };
    let names = name_resolver(&config, &store, &metrics)?;
    let hot = crate::admin::HotNode {
        backend: format!("{:?}", config.hot.backend).to_lowercase(),
        url: crate::config::mask_url(&config.hot.url),
        breaker: source.hot_breaker(),
    };
    let checker = if config.retrieval_checks.enabled {
        let remote_pins = (config.hot.backend != crate::config::HotBackend::Embedded
            || !config.hot.cluster_url.is_empty())
        .then(|| hot_pins(&config, &store))
        .transpose()?;
        let checker = crate::retrievability::Checker::new(
            crate::retrievability::Places {
                store: store.clone(),
                source: source.clone(),
                upstreams: source.upstreams(),
                hot_node: source.hot_node(),
                hot_pins: remote_pins,
                promoter: popularity.as_ref().map(|p| p.promoter.clone()),
                cold: cold.clone(),
            },
            config.retrieval_checks.clone(),
            metrics.clone(),
        )?;
        checker.spawn(shutdown.clone());
        Some(checker)
    } else {
        None
    };
    let pinset = match config.gateway.serve {
        crate::config::ServeMode::Pinned => {
            let promoter = popularity.as_ref().map(|p| p.promoter.clone());
            let index = crate::tiers::pinset::PinsetIndex::new(
                store.clone(),
                source.clone(),
                Box::new(move || {
                    promoter
                        .as_ref()
                        .map(|p| p.operator_roots())
                        .unwrap_or_default()
                }),
            )?;
            // Pins already indexed are served at once; new ones as soon as they are walked.
            index.spawn(shutdown.clone());
            Some(index)
        }
        crate::config::ServeMode::Any => None,
    };
    let mut gateway = Gateway::new(source, options)
        .with_names(names.clone())
        .with_denylist(denylist.clone(), metrics.blocked.clone());
    if let Some(index) = pinset {
        tracing::info!(
            tokens = config.gateway.access_tokens.len(),
            "dedicated gateway: serving only content reachable from the pins"
        );
        gateway = gateway.dedicated(index, config.gateway.access_tokens.clone());
    }
    let public_limits = Limits {
        zero_copy_sent: config
            .cache
            .zero_copy
            .then(|| metrics.zero_copy_bytes.clone()),
        ..limits.clone()
    };
    let admin = Arc::new(
        Admin::new(
            store.clone(),
            config.admin.token.clone(),
            admin_addr,
            metrics.clone(),
        )
        .with_cold(cold.clone())
        .with_checker(checker.clone())
        .with_popularity(popularity.clone())?
        .with_gateway_addr(public_addr)
        .with_public(scheme, public_addr)
        .with_hot(hot)
        .with_cache_capacity(config.cache.memory.as_u64())
        .with_sample_interval(config.admin.status_interval)
        .with_denylist(denylist.clone())
        .with_names(names.clone()),
    );
    gate.open(admin.clone());
    admin.start_sampler(shutdown.clone());
    admin.resume_pin_requests();
    let addr_file: PathBuf = config.store.dir.join(ADMIN_ADDR_FILE);
    std::fs::write(&addr_file, format!("http://{admin_addr}\n"))?;

    let public_task = tokio::spawn(server::serve(
        server::Listener {
            socket: public,
            tls,
            limits: public_limits,
            admission: Some(admission.clone()),
            metrics: metrics.clone(),
            gauge: "connections",
        },
        Arc::new(GatewayHandler::new(
            gateway,
            live.clone(),
            metrics.clone(),
            popularity.clone(),
        )),
        shutdown.clone(),
    ));
    // Announced once the public listener serves (its handler, and the metrics series it
    // creates, exist). Machine-readable lines on stdout: tests and scripts read the bound ports
    // from them. A reader that went away (a closed pipe) must not end the server, as
    // `println!` would.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "cidgate: public {scheme}://{public_addr}")
            .and_then(|()| writeln!(out, "cidgate: admin http://{admin_addr}"))
            .and_then(|()| out.flush());
    }
    tracing::info!(%public_addr, %admin_addr, store = %config.store.dir.display(), "cidgate serving");
    if let Some(root) = sample {
        // The subdomain gateway gives the site its own origin, as browsers should see it.
        let subdomain = config.server.subdomain_hosts.first().and_then(|host| {
            let label = crate::gateway::subdomain::dns_label(&root).ok()?;
            Some(format!(
                "{scheme}://{label}.ipfs.{host}:{}/",
                public_addr.port()
            ))
        });
        if let Some(url) = subdomain {
            tracing::info!("sample site: {url}");
        }
        tracing::info!("sample site (path gateway): {scheme}://{public_addr}/ipfs/{root}/");
        tracing::info!("sample listing: {scheme}://{public_addr}/ipfs/{root}/docs/");
        tracing::info!("sample CAR: {scheme}://{public_addr}/ipfs/{root}?format=car");
    }

    let mut reloader = Reloader {
        started: config.clone(),
        source: config_source,
        live,
        admission,
        names,
        cold: cold.clone(),
        denylists: denylists.clone(),
    };
    let popularity_task = popularity.clone().map(|p| {
        if !config.popularity.prewarm_file.is_empty() {
            match p.prewarm_file(&config.popularity.prewarm_file) {
                Ok(n) => tracing::info!(file = %config.popularity.prewarm_file, cids = n, "prewarming at start"),
                Err(e) => tracing::warn!(file = %config.popularity.prewarm_file, error = %e, "cannot read the prewarm file"),
            }
        }
        tokio::spawn(p.run(shutdown.clone()))
    });
    // Provider scores survive restarts: saved every 30 s (when they moved) and at shutdown.
    let saver = cold.clone().map(|c| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tick.tick().await;
                let c = c.clone();
                let _ = tokio::task::spawn_blocking(move || c.save()).await;
            }
        })
    });
    let denylist_metrics = tokio::spawn(publish_denylist_stats(denylists.clone(), metrics.clone()));
    let maintenance = tokio::spawn(maintain_store(
        store.clone(),
        config.store.maintenance_interval,
    ));
    wait_for_shutdown(&mut reloader, hangup).await;
    admin.set_draining();
    let delay = config.server.drain_delay;
    if !delay.is_zero() {
        tracing::info!(
            delay = %humantime::format_duration(delay),
            "stopping: /readyz answers 503, serving on until the delay ends (a second signal stops now)"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wait_for_signal() => {}
        }
    }
    tracing::info!("shutting down: draining in-flight responses");
    shutdown.cancel();
    denylist_metrics.abort();
    // A pass in progress finishes on its blocking thread; each of its steps is crash-safe.
    maintenance.abort();
    let _ = denylist_task.await;
    let _ = public_task.await;
    if let Some(s) = saver {
        s.abort();
    }
    if let Some(t) = popularity_task {
        let _ = t.await;
    }
    if let Some(c) = cold {
        c.save();
    }
    let _ = std::fs::remove_file(&addr_file);
    tracing::info!("stopped");
    Ok(())
}

/// Mirrors the denylists' figures in metrics, every few seconds.
async fn publish_denylist_stats(denylists: DenylistService, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let stats = denylists.stats();
        metrics.denylist_rules.set(stats.rules as i64);
        for list in &stats.lists {
            let labels = crate::telemetry::ListName {
                list: list.name.to_string(),
            };
            metrics
                .denylist_list_rules
                .get_or_create(&labels)
                .set(list.rules as i64);
            metrics
                .denylist_failures
                .get_or_create(&labels)
                .set(list.failures as i64);
            if let Some(t) = list.last_success {
                metrics
                    .denylist_last_success
                    .get_or_create(&labels)
                    .set(t as i64);
            }
        }
    }
}

/// The SIGHUP listener of `serve`, registered before anything slow starts.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGHUP: no reloads");
                    None
                }
            };
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }
}

/// Runs until SIGINT or SIGTERM; SIGHUP reloads what can change without a restart.
async fn wait_for_shutdown(reloader: &mut Reloader, hangup: Hangup) {
    #[cfg(unix)]
    if let Some(mut hup) = hangup.signal {
        let stop = wait_for_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = hup.recv() => reloader.reload().await,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (reloader, hangup);
    wait_for_signal().await;
}

/// The request deadlines `config` sets.
fn deadlines_of(config: &Config) -> RequestDeadlines {
    RequestDeadlines {
        retrieval: config.server.retrieval_timeout,
        stall: config.server.stall_timeout,
        total: config.server.max_request_duration,
    }
}

/// Keys SIGHUP applies to the running process; a change to any other key needs a restart.
pub const RELOADABLE: &[&str] = &[
    "telemetry.log",
    "telemetry.access_log",
    "server.max_concurrent_requests",
    "server.max_requests_per_client",
    "server.client_rate",
    "server.client_burst",
    "server.retrieval_timeout",
    "server.stall_timeout",
    "server.max_request_duration",
    "cold.providers",
    "dnslink.names",
];

/// Re-reads the configuration on SIGHUP and applies what can change while running.
struct Reloader {
    /// The configuration the process started with (keys that need a restart keep its values).
    started: Config,
    source: ConfigSource,
    live: Arc<LiveSettings>,
    admission: Arc<Admission>,
    names: crate::ipns::NameResolver,
    cold: Option<Arc<ColdTier>>,
    denylists: DenylistService,
}

impl Reloader {
    /// Reads and validates the configuration again and applies it; a configuration that does
    /// not load is logged and the running one stays. Never ends the process.
    async fn reload(&mut self) {
        tracing::info!("SIGHUP: reloading the configuration and the denylists");
        match Config::effective(
            self.source.file.as_deref(),
            std::env::vars(),
            &self.source.overrides,
        ) {
            Ok(new) => self.apply(&new),
            Err(e) => tracing::error!(
                error = %e,
                "configuration reload failed; the running configuration stays in force"
            ),
        }
        match self.denylists.reload_now().await {
            Ok(()) => {
                tracing::info!(rules = self.denylists.stats().rules, "denylists reloaded")
            }
            Err(e) => {
                tracing::warn!(error = %e, "denylist reload failed; the previous lists stay in force")
            }
        }
    }

    fn apply(&mut self, new: &Config) {
        if let Some(log) = &self.source.log {
            match log.set_filter(&new.telemetry.log) {
                Ok(true) => {}
                Ok(false) => tracing::info!("RUST_LOG is set: it stays the log filter"),
                Err(e) => tracing::error!(error = %e, "log filter not changed"),
            }
        }
        self.live.set_access_log(new.telemetry.access_log);
        self.live.set_deadlines(deadlines_of(new));
        let s = &new.server;
        self.admission.set_limits(
            s.max_concurrent_requests,
            ClientLimits {
                max_concurrent: s.max_requests_per_client,
                rate: s.client_rate,
                burst: s.client_burst,
            },
        );
        match &self.cold {
            Some(cold) => cold.set_static_providers(&new.cold.providers),
            None if !new.cold.providers.is_empty() => tracing::warn!(
                "cold.providers is set but the cold tier was off at start: restart to turn it on"
            ),
            None => {}
        }
        self.names.set_dnslink(new.dnslink.names.clone());
        let restart = changed_keys(&self.started, new)
            .into_iter()
            .filter(|k| !RELOADABLE.contains(&k.as_str()))
            .collect::<Vec<_>>();
        if !restart.is_empty() {
            tracing::warn!(
                keys = %restart.join(", "),
                "changed keys that apply only after a restart; their running values stay"
            );
        }
        tracing::info!(
            log = %new.telemetry.log,
            access_log = new.telemetry.access_log,
            max_concurrent_requests = s.max_concurrent_requests,
            client_rate = s.client_rate,
            providers = new.cold.providers.len(),
            dnslink_names = new.dnslink.names.len(),
            "configuration reloaded"
        );
    }
}

/// Dotted keys whose values differ between `a` and `b` (lists and free-form tables compared
/// whole).
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    fn leaves(
        v: &toml::Value,
        prefix: &str,
        out: &mut std::collections::BTreeMap<String, toml::Value>,
    ) {
        match v {
            toml::Value::Table(t) if prefix != "dnslink.names" => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(v, &key, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let (mut la, mut lb) = (Default::default(), Default::default());
    if let (Ok(va), Ok(vb)) = (toml::Value::try_from(a), toml::Value::try_from(b)) {
        leaves(&va, "", &mut la);
        leaves(&vb, "", &mut lb);
    }
    la.keys()
        .chain(lb.keys())
        .filter(|k| la.get(*k) != lb.get(*k))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
