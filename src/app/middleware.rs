//! What wraps every public request: panic isolation, deadlines, timing, the tier headers,
//! metrics, the access log and demand for the popularity tracker.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use http_body_util::BodyExt;
use tracing::Instrument;

use crate::gateway::{Gateway, ResponseKind, ServedContent};
use crate::popularity::Popularity;
use crate::server::{Client, Handler, Ready, ResponseFuture};
use crate::telemetry::sharded::ShardedCounter;
use crate::telemetry::{Metrics, RequestLabels, RequestTrace, TRACE};

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
    accounting: Arc<Accounting>,
}

/// What every answer is counted into once its head is ready (one `Arc` per request).
struct Accounting {
    metrics: Arc<Metrics>,
    popularity: Option<Arc<Popularity>>,
    /// Per serving tier, its request and byte counters, created once: a label lookup per
    /// request costs an allocation.
    served_by: [TierCounters; 4],
    /// The request counters of `200` answers per kind (`None`: no representation), created
    /// once for the same reason.
    ok_requests: Vec<(Option<ResponseKind>, ShardedCounter)>,
}

/// The `served_by` and `served_bytes` counters of one tier.
struct TierCounters {
    tier: &'static str,
    requests: ShardedCounter,
    bytes: ShardedCounter,
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
        let served_by = SERVED_ORDER.map(counters);
        let ok_requests = std::iter::once(None)
            .chain(ResponseKind::ALL.into_iter().map(Some))
            .map(|kind| {
                let labels = RequestLabels {
                    status: 200,
                    format: kind.map_or("none", |k| k.label()),
                };
                (kind, metrics.requests.get_or_create(&labels).clone())
            })
            .collect();
        Self {
            gateway,
            live,
            accounting: Arc::new(Accounting {
                metrics,
                popularity,
                served_by,
                ok_requests,
            }),
        }
    }

    /// Handles one request from `client` (the same as [`Handler::call`], for any request body
    /// type, so benchmarks can drive it without sockets).
    pub fn handle<B: Send + 'static>(
        &self,
        req: http::Request<B>,
        client: Client,
    ) -> ResponseFuture {
        match self.ready(&req, &client) {
            Some(resp) => Box::pin(std::future::ready(resp)),
            None => self.handle_slow(req, client),
        }
    }

    /// The answer from the response cache, if it holds one: repeated small requests are
    /// answered here, without the future of a full request (hundreds of bytes to allocate and
    /// move), a task-local trace or a timer (docs/benchmarks.md, "the short path").
    pub fn ready<B>(
        &self,
        req: &http::Request<B>,
        client: &Client,
    ) -> Option<http::Response<crate::body::Body>> {
        self.kept(req, client, |hit| hit.response())
    }

    /// [`GatewayHandler::ready`] for the server's own HTTP/1.1 writer: a kept answer's head as
    /// it was encoded once, and its body (no header map copied, no head encoded per answer).
    pub fn ready_http1<B>(&self, req: &http::Request<B>, client: &Client) -> Option<Ready> {
        let mut encoded = None;
        let resp = self.kept(req, client, |hit| match hit.http1_head() {
            Some(head) => {
                encoded = Some(head.clone());
                // The head has the headers; the accounting reads none of a kept answer's.
                http::Response::new(crate::body::full(hit.body()))
            }
            None => hit.response(),
        })?;
        Some(match encoded {
            Some(head) => Ready::Encoded {
                head,
                body: resp.into_body(),
            },
            None => Ready::Response(resp),
        })
    }

    /// The answer kept for `req`, made by `respond` and accounted for.
    fn kept<B>(
        &self,
        req: &http::Request<B>,
        client: &Client,
        respond: impl FnOnce(&crate::gateway::response_cache::Hit) -> http::Response<crate::body::Body>,
    ) -> Option<http::Response<crate::body::Body>> {
        let start = Instant::now();
        // A panic here falls back to the full path, which isolates it.
        let hit = std::panic::catch_unwind(AssertUnwindSafe(|| self.gateway.cached(req)))
            .ok()
            .flatten()?;
        self.accounting.metrics.response_cache_hits.inc();
        let access = self
            .live
            .access_log()
            .then(|| AccessRecord::new(req, client));
        let in_flight = InFlight::new(self.accounting.clone());
        Some(in_flight.account(
            respond(&hit),
            Answered {
                method: req.method(),
                path: req.uri().path(),
                start,
                tiers: std::borrow::Cow::Borrowed(crate::telemetry::CACHE_TIER),
                // The kept headers hold them already.
                timing: None,
                kept: Some((hit.root(), hit.kind())),
            },
            access,
            **self.live.deadlines.load(),
        ))
    }

    /// [`GatewayHandler::handle`] past the response cache.
    fn handle_slow<B: Send + 'static>(
        &self,
        req: http::Request<B>,
        client: Client,
    ) -> ResponseFuture {
        let start = Instant::now();
        let deadlines = **self.live.deadlines.load();
        let access = self
            .live
            .access_log()
            .then(|| AccessRecord::new(&req, &client));
        let accounting = self.accounting.clone();
        let gw = self.gateway.clone();
        Box::pin(async move {
            let method = req.method().clone();
            let uri = req.uri().clone();
            let browser = crate::gateway::error::wants_html(req.headers());
            let path = uri.path();
            // Counted out when the response (body included) is done, or when the client
            // leaves first and this future is dropped at whatever await point.
            let in_flight = InFlight::new(accounting);
            let trace = RequestTrace::default();
            let span = tracing::debug_span!("request", %method, %path);
            // A panic is a bug; it must cost one response, not the connection or the process.
            let handled = TRACE.scope(
                trace.clone(),
                AssertUnwindSafe(gw.handle_uncached(req)).catch_unwind(),
            );
            let resp = match LazyTimeout::new(handled.instrument(span), deadlines.retrieval).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(_)) => {
                    tracing::error!(%method, %path, "request handler panicked");
                    let mut r = http::Response::new(crate::body::full("internal error\n"));
                    *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    r
                }
                Err(_) => {
                    // Dropping the handler releases whatever it waited for (invariant 7).
                    in_flight.0.metrics.limit_hit("retrieval_timeout");
                    crate::gateway::error::GatewayError::Timeout(format!(
                        "no response from the content tiers within {}",
                        humantime::format_duration(deadlines.retrieval)
                    ))
                    .response(browser.then_some(path))
                }
            };
            let tiers = trace.tiers();
            // Tier names and numbers: always valid header text.
            let timing = (!tiers.is_empty())
                .then(|| http::HeaderValue::try_from(trace.server_timing()).ok())
                .flatten();
            in_flight.account(
                resp,
                Answered {
                    method: &method,
                    path,
                    start,
                    tiers,
                    timing,
                    kept: None,
                },
                access,
                deadlines,
            )
        })
    }
}

/// A response head ready to go, and what the accounting needs to know about it.
struct Answered<'a> {
    method: &'a http::Method,
    path: &'a str,
    start: Instant,
    /// The tiers that served it; empty: no content read.
    tiers: std::borrow::Cow<'static, str>,
    /// Its `Server-Timing` value; `None`: the tier headers are in place already.
    timing: Option<http::HeaderValue>,
    /// A response kept whole in memory: its root and kind, which a handled response carries
    /// in its extensions instead.
    kept: Option<(cid::Cid, Option<ResponseKind>)>,
}

impl InFlight {
    /// Adds the tier headers to `resp`, counts it, and wraps its body so that the request ends
    /// (latency, bytes, popularity, access log) when the body is done or dropped.
    fn account(
        self,
        mut resp: http::Response<crate::body::Body>,
        answered: Answered<'_>,
        access: Option<AccessRecord>,
        deadlines: RequestDeadlines,
    ) -> http::Response<crate::body::Body> {
        let this = &*self.0;
        let Answered {
            method,
            path,
            start,
            tiers,
            timing,
            kept,
        } = answered;
        let ttfb = start.elapsed();
        this.metrics.ttfb.observe(ttfb.as_secs_f64());
        let tier = this
            .served_by
            .iter()
            .position(|c| tiers.split(',').any(|x| x == c.tier));
        if let Some(i) = tier {
            this.served_by[i].requests.inc();
        }
        if let (false, Some(timing)) = (tiers.is_empty(), timing) {
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
            h.insert(crate::gateway::headers::SERVER_TIMING, timing);
        }
        // Errors, redirects and preflights carry no representation.
        let kind = match kept {
            Some((_, kind)) => kind,
            None => resp.extensions().get::<ResponseKind>().copied(),
        };
        let status = resp.status().as_u16();
        match this
            .ok_requests
            .iter()
            .find(|(k, _)| status == 200 && *k == kind)
        {
            Some((_, counter)) => counter.inc(),
            None => {
                let format = kind.map_or("none", |k| k.label());
                this.metrics
                    .requests
                    .get_or_create(&RequestLabels { status, format })
                    .inc()
            }
        };
        tracing::debug!(%method, %path, status, ttfb_us = ttfb.as_micros() as u64, %tiers, "response head");
        let access = access.map(|a| a.answered(status, ttfb, tiers.clone()));
        let demand = this.popularity.as_ref().and_then(|p| match kept {
            Some((root, _)) => Some((root, tiers)),
            None => demand_hook(p, &resp, tiers),
        });
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
                    tier,
                    start,
                    ttfb,
                    ended: false,
                    status,
                    bytes: 0,
                    demand,
                    access,
                    in_flight: self,
                },
            )
        })
    }
}

/// Tiers from slowest to fastest: a request is counted under the slowest one it needed.
const SERVED_ORDER: [&str; 4] = ["cold", "hot", "store", "cache"];

impl Handler for GatewayHandler {
    /// The server asked [`Handler::ready`] first (requests with a stray body skip the response
    /// cache, which keeps answers to plain `GET`s).
    fn call(&self, req: http::Request<hyper::body::Incoming>, client: Client) -> ResponseFuture {
        self.handle_slow(req, client)
    }

    fn ready(
        &self,
        req: &http::Request<hyper::body::Incoming>,
        client: &Client,
    ) -> Option<http::Response<crate::body::Body>> {
        GatewayHandler::ready(self, req, client)
    }

    fn ready_bodiless(&self, req: &http::Request<()>, client: &Client) -> Option<Ready> {
        GatewayHandler::ready_http1(self, req, client)
    }

    fn call_bodiless(&self, req: http::Request<()>, client: Client) -> Option<ResponseFuture> {
        Some(self.handle_slow(req, client))
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
    popularity: &Popularity,
    resp: &http::Response<crate::body::Body>,
    tiers: std::borrow::Cow<'static, str>,
) -> Option<(cid::Cid, std::borrow::Cow<'static, str>)> {
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
    Some((served.root, tiers))
}

/// One request in the `inflight_requests` gauge, until dropped; it holds the request's one
/// handle on the accounting, so that nothing else per request clones a shared `Arc`.
struct InFlight(Arc<Accounting>);

impl InFlight {
    fn new(accounting: Arc<Accounting>) -> Self {
        accounting.metrics.inflight.inc();
        InFlight(accounting)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.inflight.dec();
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
    start: Instant,
    /// The time to the response head.
    ttfb: std::time::Duration,
    /// The body was whole when the head was ready: the request took its `ttfb` (no second
    /// reading of the clock).
    ended: bool,
    status: u16,
    bytes: u64,
    /// The slowest tier the response needed (its place in `served_by`).
    tier: Option<usize>,
    /// Demand to tell the popularity tracker of: the content root and the tiers.
    demand: Option<(cid::Cid, std::borrow::Cow<'static, str>)>,
    access: Option<AccessRecord>,
    in_flight: InFlight,
}

impl Done {
    fn finish(&mut self) {
        let this = &*self.in_flight.0;
        let took = if self.ended {
            self.ttfb
        } else {
            self.start.elapsed()
        };
        this.metrics.latency.observe(took.as_secs_f64());
        this.metrics.stats.record(took, self.status);
        if let Some(i) = self.tier {
            this.served_by[i].bytes.inc_by(self.bytes);
        }
        if let Some(a) = &self.access {
            a.write(self.bytes, took);
        }
        if let (Some(p), Some((root, tiers))) = (&this.popularity, self.demand.take()) {
            p.observe(root, self.bytes, &tiers);
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
            done.in_flight.0.metrics.bytes_served.inc_by(n);
            done.bytes = n;
            done.ended = true;
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
                this.done.in_flight.0.metrics.bytes_served.inc_by(n);
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
