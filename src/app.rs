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

use crate::admin::{Admin, AdminHandler};
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

struct GatewayHandler {
    gateway: Gateway,
    deadlines: RequestDeadlines,
    metrics: Arc<Metrics>,
    popularity: Option<Arc<Popularity>>,
    /// `served_by` counters, created once: a label lookup per request costs an allocation.
    served_by: Arc<[(&'static str, prometheus_client::metrics::counter::Counter); 4]>,
}

impl GatewayHandler {
    fn new(
        gateway: Gateway,
        deadlines: RequestDeadlines,
        metrics: Arc<Metrics>,
        popularity: Option<Arc<Popularity>>,
    ) -> Self {
        let counter = |tier: &'static str| {
            (
                tier,
                metrics
                    .served_by
                    .get_or_create(&crate::telemetry::TierName { tier: tier.into() })
                    .clone(),
            )
        };
        let served_by = Arc::new(SERVED_ORDER.map(counter));
        Self {
            gateway,
            deadlines,
            metrics,
            popularity,
            served_by,
        }
    }
}

/// Tiers from slowest to fastest: a request is counted under the slowest one it needed.
const SERVED_ORDER: [&str; 4] = ["cold", "hot", "store", "cache"];

impl Handler for GatewayHandler {
    fn call(&self, req: http::Request<hyper::body::Incoming>, _client: Client) -> ResponseFuture {
        let gw = self.gateway.clone();
        let deadlines = self.deadlines;
        let metrics = self.metrics.clone();
        let popularity = self.popularity.clone();
        let served_by = self.served_by.clone();
        Box::pin(async move {
            let method = req.method().clone();
            let uri = req.uri().clone();
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
            let mut resp = match LazyTimeout::new(handled.instrument(span), deadlines.retrieval)
                .await
            {
                Ok(Ok(resp)) => resp,
                Ok(Err(_)) => {
                    tracing::error!(%method, %path, "request handler panicked");
                    let mut r = http::Response::new(crate::gateway::body::full("internal error\n"));
                    *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    r
                }
                Err(_) => {
                    // Dropping the handler releases whatever it waited for (invariant 7).
                    metrics.limit_hit("retrieval_timeout");
                    crate::gateway::error_response(&crate::gateway::error::GatewayError::Timeout(
                        format!(
                            "no response from the content tiers within {}",
                            humantime::format_duration(deadlines.retrieval)
                        ),
                    ))
                }
            };
            let ttfb = start.elapsed();
            metrics.ttfb.observe(ttfb.as_secs_f64());
            let tiers = trace.tiers();
            if let Some((_, counter)) = served_by
                .iter()
                .find(|(t, _)| tiers.split(',').any(|x| x == *t))
            {
                counter.inc();
            }
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
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    status: resp.status().as_u16(),
                    format,
                })
                .inc();
            tracing::debug!(%method, %path, status = resp.status().as_u16(), ttfb_us = ttfb.as_micros() as u64, %tiers, "response head");
            let demand = popularity.and_then(|p| demand_hook(p, &resp, tiers));
            let end = (!deadlines.total.is_zero())
                .then(|| tokio::time::Instant::from_std(start) + deadlines.total);
            resp.map(|body| {
                use http_body::Body as _;
                // A whole buffer cannot stall; a stream can.
                let body = if body.size_hint().exact().is_some() {
                    body
                } else {
                    crate::gateway::body::deadlined(body, deadlines.stall, end)
                };
                counted(body, metrics, start, demand, in_flight)
            })
        })
    }
}

/// What to tell the popularity tracker once the body is sent: demand for the content root
/// (successful and revalidated responses only), and where a range reader got to.
fn demand_hook(
    popularity: Arc<Popularity>,
    resp: &http::Response<crate::gateway::Body>,
    tiers: std::borrow::Cow<'static, str>,
) -> Option<Box<dyn FnOnce(u64) + Send + Sync>> {
    let status = resp.status().as_u16();
    if !matches!(status, 200 | 206 | 304) {
        return None;
    }
    let served = resp.extensions().get::<ServedContent>()?.clone();
    if let Some(segments) = &served.segments {
        let range = resp
            .headers()
            .get(http::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range);
        if let Some((start, end, size)) = range {
            popularity.observe_range(served.root, segments, start, end, size);
        }
    }
    Some(Box::new(move |bytes| {
        popularity.observe(served.root, bytes, &tiers)
    }))
}

/// `bytes START-END/SIZE` of a single-range response.
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, size.parse().ok()?))
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

/// Counts body bytes; the request's latency and in-flight count end when the body is dropped.
/// A body whose size is known (a whole buffer) is left as it is, so hyper can write head and
/// body together.
fn counted(
    body: crate::gateway::Body,
    metrics: Arc<Metrics>,
    start: Instant,
    on_done: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
    in_flight: InFlight,
) -> crate::gateway::Body {
    use http_body::Body as _;
    if let Some(n) = body.size_hint().exact() {
        metrics.bytes_served.inc_by(n);
        metrics.latency.observe(start.elapsed().as_secs_f64());
        drop(in_flight);
        if let Some(f) = on_done {
            f(n);
        }
        return body;
    }
    struct Done {
        metrics: Arc<Metrics>,
        start: Instant,
        bytes: u64,
        on_done: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
        _in_flight: InFlight,
    }
    impl Drop for Done {
        fn drop(&mut self) {
            self.metrics
                .latency
                .observe(self.start.elapsed().as_secs_f64());
            if let Some(f) = self.on_done.take() {
                f(self.bytes);
            }
        }
    }
    let mut done = Done {
        metrics: metrics.clone(),
        start,
        bytes: 0,
        on_done,
        _in_flight: in_flight,
    };
    body.map_frame(move |frame| {
        // Borrow the whole struct: capturing only the field would drop `done` right away.
        let done: &mut Done = &mut done;
        if let Some(data) = frame.data_ref() {
            done.bytes += data.len() as u64;
            metrics.bytes_served.inc_by(data.len() as u64);
        }
        frame
    })
    .boxed()
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

/// Runs the gateway until a shutdown signal.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let store = config.store.open()?;
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
    };
    let admission = Admission::new(
        s.max_concurrent_requests,
        ClientLimits {
            max_concurrent: s.max_requests_per_client,
            rate: s.client_rate,
            burst: s.client_burst,
        },
    );
    let deadlines = RequestDeadlines {
        retrieval: s.retrieval_timeout,
        stall: s.stall_timeout,
        total: s.max_request_duration,
    };
    let public = server::bind(config.server.listen).await?;
    let admin_listener = server::bind(config.admin.listen).await?;
    let public_addr = public.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };

    let options = GatewayOptions {
        subdomain_hosts: config.server.subdomain_hosts.clone(),
        tls: tls.is_some(),
        response_cache_bytes: config.cache.responses.as_u64(),
        max_deserialized_response_size: config.gateway.max_deserialized_response_size.as_u64(),
        max_unixfs_dag_response_size: config.gateway.max_unixfs_dag_response_size.as_u64(),
    };
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
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
    let gateway = Gateway::new(source, options)
        .with_names(names.clone())
        .with_denylist(denylist.clone(), metrics.blocked.clone());
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
        .with_popularity(popularity.clone())?
        .with_gateway_addr(public_addr)
        .with_denylist(denylist.clone())
        .with_names(names),
    );
    admin.start_sampler(shutdown.clone());
    admin.resume_pin_requests();
    let addr_file: PathBuf = config.store.dir.join(ADMIN_ADDR_FILE);
    std::fs::write(&addr_file, format!("http://{admin_addr}\n"))?;

    // Machine-readable lines on stdout: tests and scripts read the bound ports from them.
    println!("cidgate: public {scheme}://{public_addr}");
    println!("cidgate: admin http://{admin_addr}");
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

    let public_task = tokio::spawn(server::serve(
        server::Listener {
            socket: public,
            tls,
            limits: public_limits,
            admission: Some(admission),
            metrics: metrics.clone(),
            gauge: "connections",
        },
        Arc::new(GatewayHandler::new(
            gateway,
            deadlines,
            metrics.clone(),
            popularity.clone(),
        )),
        shutdown.clone(),
    ));
    // The admin listener has connection slots of its own, so a saturated public port does
    // not lock the operator out; it is not rate limited.
    let admin_limits = Limits {
        max_connections: ADMIN_CONNECTIONS,
        max_connections_per_client: 0,
        max_refusing: ADMIN_REFUSING,
        ..limits
    };
    let admin_task = tokio::spawn(server::serve(
        server::Listener {
            socket: admin_listener,
            tls: None,
            limits: admin_limits,
            admission: None,
            metrics: metrics.clone(),
            gauge: "admin_connections",
        },
        Arc::new(AdminHandler(admin)),
        shutdown.clone(),
    ));
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
    wait_for_shutdown(&denylists).await;
    tracing::info!("shutting down: draining in-flight responses");
    shutdown.cancel();
    denylist_metrics.abort();
    let _ = denylist_task.await;
    let _ = tokio::join!(public_task, admin_task);
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

/// Runs until SIGINT or SIGTERM; SIGHUP reloads what can change without a restart.
async fn wait_for_shutdown(denylists: &DenylistService) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            let stop = wait_for_signal();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading denylists");
                        match denylists.reload_now().await {
                            Ok(()) => tracing::info!(rules = denylists.stats().rules, "denylists reloaded"),
                            Err(e) => tracing::warn!(error = %e, "denylist reload failed; the previous lists stay in force"),
                        }
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = denylists;
    wait_for_signal().await;
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
