//! Listeners: HTTP/1.1 and HTTP/2 (h2c prior knowledge, or TLS with ALPN) on one port, and the
//! limits that keep one listener usable under hostile traffic (design invariants 8 and 10):
//!
//! - every connection has a deadline from accept until its first request head (protocol
//!   detection included) and an idle deadline between requests, for HTTP/1.1 and HTTP/2 alike
//!   ([`watch`]); a client that stops reading is cut after `send_timeout` ([`io::Deadlined`]);
//! - connections past `max_connections` (or past the per-client share) are answered with a
//!   503 and closed at once, without reading them; accept backs off while descriptors run out;
//! - requests past `max_concurrent_requests`, or past a client's concurrency or rate share, are
//!   answered 429 with `Retry-After` ([`admission`]);
//! - forwarding headers count only from trusted proxies ([`client`]);
//! - graceful shutdown drains in-flight responses up to a deadline.

pub mod admission;
pub mod client;
mod direct;
mod io;
mod streams;
mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::Either;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admission::{Admission, ClientLimits};
pub use client::{Client, TrustedProxies};

use crate::body::{self, Body};
use crate::telemetry::Metrics;

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the address failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
}

/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Something that answers requests (the gateway, the admin API).
pub trait Handler: Send + Sync + 'static {
    /// Answers one request from `client`; must not fail.
    fn call(&self, req: Request<Incoming>, client: Client) -> ResponseFuture;

    /// The answer to `req` when it is ready at once (a response kept in memory), without the
    /// future [`Handler::call`] builds; `None`: call it. Asked of admitted requests only.
    fn ready(&self, _req: &Request<Incoming>, _client: &Client) -> Option<Response<Body>> {
        None
    }

    /// [`Handler::ready`] for a `GET` or `HEAD` without a body that the server's own HTTP/1.1
    /// reader parsed (there is no hyper body for it); `None` gives the connection to hyper.
    fn ready_bodiless(&self, _req: &Request<()>, _client: &Client) -> Option<Ready> {
        None
    }

    /// [`Handler::call`] for a `GET` or `HEAD` without a body that the server's own HTTP/1.1
    /// reader parsed and [`Handler::ready_bodiless`] could not answer at once, so that the
    /// server writes its answer too; `None` gives the connection to hyper.
    fn call_bodiless(&self, _req: Request<()>, _client: Client) -> Option<ResponseFuture> {
        None
    }
}

/// An answer at hand for a request the server's own HTTP/1.1 reader parsed.
pub enum Ready {
    /// A response, to encode.
    Response(Response<Body>),
    /// A `200` whose HTTP/1.1 head was encoded before, once for every answer like it.
    Encoded {
        /// Its status line and header lines, framing included, without `Date` and the blank
        /// line ([`crate::http1::kept_head`]).
        head: bytes::Bytes,
        /// Its body: exactly as long as the head says.
        body: Body,
    },
}

/// Limits applied to every connection of one listener.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Concurrent connections; further ones get 503.
    pub max_connections: usize,
    /// Concurrent connections from one client (an IPv4 address or an IPv6 /64) that is not a
    /// trusted proxy; further ones get 503. 0: no per-client bound.
    pub max_connections_per_client: usize,
    /// Largest request head in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Longest request target in bytes (414 beyond).
    pub max_url_bytes: usize,
    /// Time allowed to send a request head, counted from accept for the first request.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress for this long is closed (keep-alive idle).
    pub idle_timeout: Duration,
    /// A client that accepts no bytes of a response for this long is cut off.
    pub send_timeout: Duration,
    /// Drain deadline at shutdown.
    pub shutdown_grace: Duration,
    /// Over-limit connections answered (503) at the same time; past it they are closed
    /// unanswered, so a flood of them cannot use up descriptors either.
    pub max_refusing: usize,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Plain-TCP connections send cache-arena and store-segment bytes with `sendfile`, counted here; `None` writes
    /// every byte (see [`crate::zero_copy`]).
    pub zero_copy_sent: Option<crate::zero_copy::ZeroCopySent>,
    /// The handler never reads request bodies (the read-only gateway): an HTTP/1.x request's
    /// body is read and dropped before it is answered, so that the requests behind it on the
    /// connection are not lost (see [`discard_body`]).
    pub discard_request_bodies: bool,
    /// HTTP/1.1 requests are read by the server itself first, and `GET`s and `HEAD`s without
    /// a body are answered without hyper ([`Handler::ready_bodiless`] at once, else
    /// [`Handler::call_bodiless`]; see [`direct`]).
    pub direct_http1: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_client: 0,
            max_header_bytes: 16 * 1024,
            max_url_bytes: 8 * 1024,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            max_refusing: 128,
            trusted_proxies: TrustedProxies::default(),
            zero_copy_sent: None,
            discard_request_bodies: false,
            direct_http1: false,
        }
    }
}

/// Loads a rustls acceptor (ALPN h2, http/1.1) from PEM files.
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, ServerError> {
    let certs = {
        let mut r = std::io::BufReader::new(
            std::fs::File::open(cert)
                .map_err(|e| ServerError::Tls(format!("opening {cert}: {e}")))?,
        );
        rustls_pemfile::certs(&mut r)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServerError::Tls(format!("reading {cert}: {e}")))?
    };
    let key = {
        let mut r = std::io::BufReader::new(
            std::fs::File::open(key)
                .map_err(|e| ServerError::Tls(format!("opening {key}: {e}")))?,
        );
        rustls_pemfile::private_key(&mut r)
            .map_err(|e| ServerError::Tls(format!("reading {key}: {e}")))?
            .ok_or_else(|| ServerError::Tls(format!("no private key in {key}")))?
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds a listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// A plain-text response with `status`.
pub fn plain_response(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(body::full(format!("{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn builder(limits: &Limits) -> auto::Builder<streams::StreamExecutor> {
    let mut b = auto::Builder::new(streams::StreamExecutor);
    // No head timer of hyper's: the connection watch bounds the wait for every head, the
    // first (`header_read_timeout` from accept) and each next one (`idle_timeout` from the end
    // of the previous response, a head trickled in byte by byte included). hyper's would
    // allocate, arm and drop a timer for every request.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(256)
        // Dead peers are found by pings; idle live ones by the connection watch.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Raises the soft limit on open files to the hard limit and returns it, so that
/// `max_connections` can be checked against what the process may really open.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let lim = getrlimit(Resource::Nofile);
        let hard = lim.maximum;
        if lim.current != hard {
            let _ = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: hard,
                    maximum: hard,
                },
            );
        }
        getrlimit(Resource::Nofile).current
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// One listener and what applies to it.
pub struct Listener {
    /// The bound socket.
    pub socket: TcpListener,
    /// TLS, when configured.
    pub tls: Option<TlsAcceptor>,
    /// Connection limits and deadlines.
    pub limits: Limits,
    /// Bounds on requests in progress (public listener only).
    pub admission: Option<Arc<Admission>>,
    /// Where refusals and open connections are counted.
    pub metrics: Arc<Metrics>,
    /// The `inflight_work` kind its open connections are counted under.
    pub gauge: &'static str,
}

/// What every connection task of one listener shares.
struct Shared {
    handler: Arc<dyn Handler>,
    builder: Arc<auto::Builder<streams::StreamExecutor>>,
    /// The same, HTTP/1.1 only: for connections the direct path has answered on.
    http1_builder: Arc<auto::Builder<streams::StreamExecutor>>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    limits: Arc<Limits>,
    admission: Option<Arc<Admission>>,
    metrics: Arc<Metrics>,
    /// Open connections (the `inflight_work` gauge of this listener).
    open: prometheus_client::metrics::gauge::Gauge,
    /// Connections that have not sent a request yet, oldest first.
    unproven: Arc<watch::Unproven>,
    refusing: Arc<AtomicUsize>,
}

/// Serves `handler` on `listener` until `shutdown` fires, then drains for up to the grace
/// period.
pub async fn serve(listener: Listener, handler: Arc<dyn Handler>, shutdown: CancellationToken) {
    let Listener {
        socket: listener,
        tls,
        limits,
        admission,
        metrics,
        gauge: gauge_kind,
    } = listener;
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(admission::Counts::default());
    let shared = Arc::new(Shared {
        handler,
        builder: Arc::new(builder(&limits)),
        http1_builder: Arc::new(builder(&limits).http1_only()),
        tls,
        shutdown: shutdown.clone(),
        limits: Arc::new(limits),
        admission,
        open: metrics.work(gauge_kind),
        metrics,
        unproven: Arc::new(watch::Unproven::default()),
        refusing: Arc::new(AtomicUsize::new(0)),
    });
    let limits = shared.limits.clone();
    let metrics = shared.metrics.clone();
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => {
                    backoff = Duration::ZERO;
                    x
                }
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) and similar: back off, doubling up to a
                    // second, instead of spinning; connections that end free descriptors.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    if backoff == Duration::from_millis(10) {
                        tracing::warn!(error = %e, "accept failed; backing off");
                    }
                    metrics.limit_hit("accept_error");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let trusted_peer = limits.trusted_proxies.contains(peer.ip());
        let client_slot = if trusted_peer || limits.max_connections_per_client == 0 {
            Some(None)
        } else {
            per_client
                .try_acquire(peer.ip(), limits.max_connections_per_client)
                .map(Some)
        };
        let Some(client_slot) = client_slot else {
            metrics.limit_hit("client_connections");
            refuse(stream, &shared);
            continue;
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                // The place among unproven connections is taken here, in accept order, not when
                // the spawned task first runs: eviction then takes the oldest connection indeed.
                let unproven = shared.unproven.enter();
                tracker.spawn(connection(
                    shared.clone(),
                    stream,
                    peer,
                    (permit, unproven),
                    client_slot,
                ));
            }
            // Full: a connection that never sent a request (a silent or slow-loris one) gives
            // its place to the newcomer, oldest first, instead of the newcomer being refused.
            Err(_) if shared.unproven.evict_oldest() => {
                metrics.limit_hit("evicted_unproven");
                let (shared, slots) = (shared.clone(), slots.clone());
                tracker.spawn(async move {
                    let waited =
                        tokio::time::timeout(Duration::from_secs(1), slots.acquire_owned()).await;
                    match waited {
                        Ok(Ok(permit)) => {
                            let unproven = shared.unproven.enter();
                            connection(shared, stream, peer, (permit, unproven), client_slot).await
                        }
                        _ => {
                            shared.metrics.limit_hit("connections");
                            refuse(stream, &shared);
                        }
                    }
                });
            }
            Err(_) => {
                metrics.limit_hit("connections");
                refuse(stream, &shared);
            }
        }
    }
    drop(listener);
    // Every connection was asked to finish by the same token and is dropped after the grace
    // period (see `watch`); the margin covers the last writes.
    tracker.close();
    if tokio::time::timeout(
        limits.shutdown_grace + Duration::from_secs(2),
        tracker.wait(),
    )
    .await
    .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

/// Serves one accepted connection holding its listener place (the permit and its entry among
/// unproven connections) and its client's `client_slot`.
async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    place: (tokio::sync::OwnedSemaphorePermit, watch::Entry),
    client_slot: Option<admission::CountGuard>,
) {
    let (_permit, unproven) = place;
    let _client_slot = client_slot;
    shared.open.inc();
    let activity = watch::Activity::new(unproven.clone());
    let carried = Arc::new(direct::Carried::default());
    let service = {
        let activity = activity.clone();
        let shared = shared.clone();
        let carried = carried.clone();
        service_fn(move |mut req: Request<Incoming>| {
            let h2 = req.version() == http::Version::HTTP_2;
            let busy = activity.begin();
            let client = shared
                .limits
                .trusted_proxies
                .client(peer, req.headers_mut());
            // The connection counts as busy, and the request as admitted, until a streamed
            // body is done or dropped; a whole buffer is as good as sent.
            let done = |resp: Response<Body>, busy, ticket| {
                Ok::<_, std::convert::Infallible>(resp.map(|b| {
                    if http_body::Body::size_hint(&b).exact().is_some() {
                        b
                    } else {
                        body::holding(b, (busy, ticket))
                    }
                }))
            };
            // A request without a body is checked and admitted here, and one answered from
            // memory goes back without a future (docs/benchmarks.md); over HTTP/2 its stream
            // is then answered on the connection task, not a task of its own ([`streams`]).
            let slow = if http_body::Body::is_end_stream(req.body()) {
                let admitted = match carried.take() {
                    Some(ticket) => Ok(ticket),
                    None => admit(&req, &client, &shared),
                };
                match admitted {
                    Err(refusal) => {
                        streams::mark_answered_at_once(h2);
                        return Either::Left(std::future::ready(done(*refusal, busy, None)));
                    }
                    Ok(ticket) => match shared.handler.ready(&req, &client) {
                        Some(resp) => {
                            streams::mark_answered_at_once(h2);
                            return Either::Left(std::future::ready(done(resp, busy, ticket)));
                        }
                        None => Slow::Call(ticket),
                    },
                }
            } else {
                Slow::Answer
            };
            streams::mark_answered_at_once(false);
            let shared = shared.clone();
            Either::Right(async move {
                let (resp, ticket) = match slow {
                    Slow::Answer => answer(req, client, &shared).await,
                    Slow::Call(ticket) => (shared.handler.call(req, client).await, ticket),
                };
                done(resp, busy, ticket)
            })
        })
    };
    let limits = shared.limits.clone();
    let result = match shared.tls.clone() {
        Some(acceptor) => {
            match tokio::time::timeout(
                limits.header_read_timeout.min(Duration::from_secs(10)),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(tls_stream)) => {
                    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let io = io::Deadlined::new(tls_stream, limits.send_timeout)
                        .reporting_to(activity.clone());
                    run(&shared, io, service, (activity, &carried), peer, !h2).await
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    Ok(())
                }
                Err(_) => Ok(()),
            }
        }
        None => match limits.zero_copy_sent.clone() {
            #[cfg(target_os = "linux")]
            Some(sent) => {
                let stream = crate::zero_copy::ZeroCopyStream::new(stream, sent);
                let io =
                    io::Deadlined::new(stream, limits.send_timeout).reporting_to(activity.clone());
                run(&shared, io, service, (activity, &carried), peer, true).await
            }
            _ => {
                let io =
                    io::Deadlined::new(stream, limits.send_timeout).reporting_to(activity.clone());
                run(&shared, io, service, (activity, &carried), peer, true).await
            }
        },
    };
    shared.unproven.leave(&unproven);
    shared.open.dec();
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Serves one connection under the connection watch (first-request and idle deadlines,
/// eviction while it has sent no request): its HTTP/1.1 requests answered by the server itself
/// while they can be (`http1`, and [`Limits::direct_http1`]), then by hyper.
async fn run<I, S>(
    shared: &Shared,
    io: I,
    service: S,
    (activity, carried): (watch::Activity, &direct::Carried),
    peer: SocketAddr,
    http1: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = &shared.limits;
    let deadlines = watch::Deadlines {
        first: limits.header_read_timeout,
        idle: limits.idle_timeout,
        grace: limits.shutdown_grace,
    };
    let io = if http1 && limits.direct_http1 {
        let served = direct::serve(io, shared, &activity, peer, carried);
        match watch::watched(served, &activity, &shared.shutdown, deadlines).await {
            None | Some(direct::End::Closed(Ok(()))) => return Ok(()),
            Some(direct::End::Closed(Err(e))) => return Err(e.into()),
            Some(direct::End::Handoff(io, read, answered)) => {
                (direct::Prefixed::new(io, read), answered)
            }
        }
    } else {
        (direct::Prefixed::new(io, bytes::Bytes::new()), false)
    };
    let (io, http1_only) = io;
    let builder = if http1_only {
        &shared.http1_builder
    } else {
        &shared.builder
    };
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    watch::serve_watched(conn, activity, shared.shutdown.clone(), deadlines).await
}

/// A stray body drained, then admission, then the handler; refusals are answered here. The
/// admission ticket is returned for the caller to keep as long as the response body.
async fn answer(
    mut req: Request<Incoming>,
    client: Client,
    shared: &Shared,
) -> (Response<Body>, Option<admission::Ticket>) {
    // hyper drops an unread HTTP/1 body only if it has fully arrived already; otherwise it
    // closes the connection after the answer without saying so, and a request pipelined (or
    // sent on the kept-alive connection) behind it is lost. Read small bodies to their end
    // (before any answer, refusals included, and before admission, so that a slow body holds
    // no request slot); for anything else, announce the close.
    let mut close = false;
    if shared.limits.discard_request_bodies
        && req.version() <= http::Version::HTTP_11
        && !http_body::Body::is_end_stream(req.body())
    {
        let deadline =
            tokio::time::Instant::now() + shared.limits.header_read_timeout.min(MAX_DISCARD_TIME);
        close = !discard_body(&mut req, MAX_DISCARDED_BODY, deadline).await;
    }
    let (mut resp, ticket) = admit_and_call(req, client, shared).await;
    if close {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    (resp, ticket)
}

/// What a request the service did not answer at once still needs.
enum Slow {
    /// All of [`answer`]: a stray body to read first.
    Answer,
    /// The handler, the request admitted under this ticket.
    Call(Option<admission::Ticket>),
}

/// The size checks and admission, then the handler.
async fn admit_and_call(
    req: Request<Incoming>,
    client: Client,
    shared: &Shared,
) -> (Response<Body>, Option<admission::Ticket>) {
    match admit(&req, &client, shared) {
        Ok(ticket) => (shared.handler.call(req, client).await, ticket),
        Err(refusal) => (*refusal, None),
    }
}

/// The size checks and admission: the request's ticket, or the answer that refuses it.
fn admit<B>(
    req: &Request<B>,
    client: &Client,
    shared: &Shared,
) -> Result<Option<admission::Ticket>, Box<Response<Body>>> {
    let target_len = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(0);
    let (max_url, max_head) = (shared.limits.max_url_bytes, shared.limits.max_header_bytes);
    if target_len > max_url {
        return Err(Box::new(plain_response(
            StatusCode::URI_TOO_LONG,
            "request target too long",
        )));
    }
    // hyper bounds its read buffer, not the head: on a kept-alive connection whose buffer grew,
    // a head up to twice the limit can get through; count it here so the limit is exact.
    let head: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + target_len
        + req.method().as_str().len();
    if head > max_head {
        return Err(Box::new(plain_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request head too large",
        )));
    }
    Ok(match &shared.admission {
        Some(a) => match a.admit(client.ip) {
            Ok(t) => Some(t),
            Err(refusal) => {
                shared.metrics.limit_hit(refusal.reason());
                let mut r = plain_response(StatusCode::TOO_MANY_REQUESTS, &refusal.to_string());
                let secs = refusal.retry_after().as_secs().max(1).to_string();
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    r.headers_mut().insert(RETRY_AFTER, v);
                }
                return Err(Box::new(r));
            }
        },
        None => None,
    })
}

/// The largest request body read and dropped to keep a connection (Go's server drains 256 KiB;
/// the gateway's clients send none, so only stray small bodies matter).
const MAX_DISCARDED_BODY: u64 = 64 * 1024;
/// The longest a request waits for its stray body to arrive.
const MAX_DISCARD_TIME: Duration = Duration::from_secs(5);

/// Reads `req`'s body to its end and drops it; false (the connection must close) when it is
/// larger than `max`, does not end by `deadline`, fails, or waits for `100 Continue` (the client
/// has not sent it, and asking for it only to drop it is wasted bytes).
async fn discard_body(
    req: &mut Request<Incoming>,
    max: u64,
    deadline: tokio::time::Instant,
) -> bool {
    use http_body_util::BodyExt;
    if req.headers().contains_key(http::header::EXPECT) {
        return false;
    }
    // A declared Content-Length past the bound is refused unread.
    if http_body::Body::size_hint(req.body()).lower() > max {
        return false;
    }
    let mut read = 0u64;
    loop {
        match tokio::time::timeout_at(deadline, req.body_mut().frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    read += data.len() as u64;
                    if read > max {
                        return false;
                    }
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

/// Answers an over-limit connection with a 503 and closes it, without reading its request (a
/// TLS one is only closed): bounded in number and in time, so refusing costs almost nothing.
fn refuse(stream: TcpStream, shared: &Shared) {
    if shared.tls.is_some() {
        return;
    }
    let refusing = shared.refusing.clone();
    if refusing.fetch_add(1, Ordering::AcqRel) >= shared.limits.max_refusing {
        refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const BODY: &str = "too many connections, retry later\n";
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(head.as_bytes()).await?;
            stream.shutdown().await?;
            // Read what the client sent so that closing does not reset the connection before
            // it has read the answer.
            let mut sink = [0u8; 4096];
            let mut total = 0usize;
            while total < 64 * 1024 {
                match stream.read(&mut sink).await? {
                    0 => break,
                    n => total += n,
                }
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
        refusing.fetch_sub(1, Ordering::AcqRel);
    });
}
