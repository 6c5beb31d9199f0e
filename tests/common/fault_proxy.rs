//! Fault injection between cidgate and an honest storage provider: an HTTP reverse proxy on
//! 127.0.0.1:0 that forwards to an upstream trustless gateway and, on demand, delays, cuts,
//! corrupts or extends what it relays, and records every request it received.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderName, ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// How the proxy misbehaves.
#[derive(Clone, Debug)]
pub enum ProxyFault {
    /// Forwards faithfully.
    None,
    /// Waits this long before answering (before contacting upstream).
    SlowFirstByte(Duration),
    /// Forwards `after` body bytes, then aborts the connection without ending the chunked body.
    /// A body shorter than `after` is aborted at its end all the same.
    ResetMidBody { after: usize },
    /// Forwards the body with byte `at` XORed with 0x01 (unchanged when the body is shorter).
    FlipByte { at: usize },
    /// For CAR responses: forwards the CAR, then appends one well-formed block section whose
    /// raw sha2-256 CID is not part of the DAG.
    ExtraBlock,
    /// Rewrites `/ipfs/<cid>...` to ask upstream for this CID instead (an answer for another root).
    WrongRoot(String),
    /// Answers this status with a short body, never contacting upstream.
    Status(u16),
    /// Forwards `after` body bytes, then sends nothing more while keeping the connection open.
    /// A body shorter than `after` stalls at its end all the same.
    StallBody { after: usize },
    /// Waits `wait`, then answers `status` without contacting upstream (a node that fails
    /// slowly).
    SlowStatus { wait: Duration, status: u16 },
    /// Forwards the body `chunk` bytes at a time, one piece every `every`: a node that never
    /// stalls long enough to be cut for it, but takes its time over a big body.
    Trickle { chunk: usize, every: Duration },
    /// Each request gets one of the faults above (or none), chosen by a generator seeded with
    /// `seed` and the request's number: a flaky node, the same way in every run.
    Chaos { seed: u64 },
}

/// The fault request number `n` of a [`ProxyFault::Chaos`] proxy gets.
fn chaos_fault(seed: u64, n: usize) -> ProxyFault {
    use rand::{Rng, SeedableRng};
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    match rng.random_range(0..10) {
        0..=3 => ProxyFault::None,
        4 => ProxyFault::SlowFirstByte(Duration::from_millis(rng.random_range(0..1500))),
        5 => ProxyFault::ResetMidBody {
            after: rng.random_range(0..600_000),
        },
        6 => ProxyFault::StallBody {
            after: rng.random_range(0..600_000),
        },
        7 => ProxyFault::Status([500, 502, 503, 504][rng.random_range(0..4)]),
        8 => ProxyFault::SlowStatus {
            wait: Duration::from_millis(rng.random_range(0..2000)),
            status: 502,
        },
        _ => ProxyFault::FlipByte {
            at: rng.random_range(0..400_000),
        },
    }
}

/// The body of every proxy response.
type ProxyBody = BoxBody<Bytes, io::Error>;

type FrameResult = Result<Frame<Bytes>, io::Error>;

/// Bytes of the block that [`ProxyFault::ExtraBlock`] appends.
pub const INJECTED_BLOCK: &[u8] = b"injected block";

/// The CID of the block that [`ProxyFault::ExtraBlock`] appends (raw codec, sha2-256).
pub fn injected_cid() -> cidgate::ipld::Cid {
    cidgate::ipld::cid_v1_sha256(cidgate::ipld::RAW, INJECTED_BLOCK)
}

/// The CAR block section that [`ProxyFault::ExtraBlock`] appends:
/// `uvarint(len(cid) + len(data)) || cid || data`.
pub fn injected_section() -> Bytes {
    let cid = injected_cid();
    let mut section = cidgate::ipld::car::frame_prefix(&cid, INJECTED_BLOCK.len()).to_vec();
    section.extend_from_slice(INJECTED_BLOCK);
    Bytes::from(section)
}

/// State shared by every connection of one proxy.
struct Shared {
    upstream: String,
    client: reqwest::Client,
    fault: Arc<Mutex<ProxyFault>>,
    requests: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
}

/// A running proxy.
pub struct FaultProxy {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    fault: Arc<Mutex<ProxyFault>>,
    paths: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (a base URL such as `http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str, fault: ProxyFault) -> FaultProxy {
        let requests = Arc::new(AtomicUsize::new(0));
        let fault = Arc::new(Mutex::new(fault));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            fault: fault.clone(),
            requests: requests.clone(),
            paths: paths.clone(),
        });
        let (url, task) = super::serve_http(move |req: Request<Incoming>| {
            let shared = shared.clone();
            async move { handle(&shared, req).await }
        })
        .await;
        FaultProxy {
            url,
            requests,
            fault,
            paths,
            task,
        }
    }

    /// Changes the behaviour for the requests that follow.
    pub fn set_fault(&self, fault: ProxyFault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Requests received so far.
    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Path and query of every request received, in order (as received, before any rewrite).
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A complete body.
fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// No body.
fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A short plain-text answer.
fn answer(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    resp
}

/// Replaces the CID segment of `/ipfs/<cid>...` with `root`; other paths are left alone.
fn rewrite_root(path: &str, root: &str) -> String {
    match path.strip_prefix("/ipfs/") {
        Some(rest) => {
            let tail = rest.find(['/', '?']).map(|i| &rest[i..]).unwrap_or("");
            format!("/ipfs/{root}{tail}")
        }
        None => path.to_string(),
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let n = shared.requests.fetch_add(1, Ordering::SeqCst);
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    shared.paths.lock().unwrap().push(path_and_query.clone());
    let fault = match shared.fault.lock().unwrap().clone() {
        ProxyFault::Chaos { seed } => chaos_fault(seed, n),
        f => f,
    };

    let target = match &fault {
        ProxyFault::Status(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return answer(status, format!("fault proxy: status {code}\n"));
        }
        ProxyFault::SlowStatus { wait, status } => {
            tokio::time::sleep(*wait).await;
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return answer(
                code,
                format!("fault proxy: status {status} after {wait:?}\n"),
            );
        }
        ProxyFault::SlowFirstByte(delay) => {
            tokio::time::sleep(*delay).await;
            path_and_query
        }
        ProxyFault::WrongRoot(root) => rewrite_root(&path_and_query, root),
        _ => path_and_query,
    };

    let mut upstream_req = shared.client.request(
        req.method().clone(),
        format!("{}{}", shared.upstream, target),
    );
    for name in [ACCEPT, CACHE_CONTROL, RANGE] {
        for value in req.headers().get_all(&name) {
            upstream_req = upstream_req.header(name.clone(), value.clone());
        }
    }
    let upstream = match upstream_req.send().await {
        Ok(r) => r,
        Err(e) => {
            return answer(
                StatusCode::BAD_GATEWAY,
                format!("fault proxy: upstream failed: {e}\n"),
            )
        }
    };

    let status = upstream.status();
    let is_car = upstream
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/vnd.ipld.car"));
    let no_body = *req.method() == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let hop_by_hop = [
        HeaderName::from_static("connection"),
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("transfer-encoding"),
    ];

    let mut headers = hyper::HeaderMap::new();
    for (name, value) in upstream.headers() {
        if hop_by_hop.contains(name) {
            continue;
        }
        // The body is re-streamed (and maybe altered) with chunked encoding: drop the length,
        // except for answers without a body, whose length describes the resource.
        if *name == CONTENT_LENGTH && !no_body {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }

    let body = if no_body {
        empty()
    } else {
        let (tx, rx) = mpsc::channel::<FrameResult>(16);
        tokio::spawn(pump(upstream, fault, is_car && status.is_success(), tx));
        BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx)))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// Relays the upstream body into `tx`, applying `fault`. Offsets count across chunks.
async fn pump(
    upstream: reqwest::Response,
    fault: ProxyFault,
    is_car: bool,
    tx: mpsc::Sender<FrameResult>,
) {
    let mut stream = Box::pin(upstream.bytes_stream());
    let cut_at = match fault {
        ProxyFault::ResetMidBody { after } | ProxyFault::StallBody { after } => Some(after),
        _ => None,
    };
    let mut sent: usize = 0;
    let mut trickled = bytes::BytesMut::new();
    if cut_at == Some(0) {
        cut(&fault, &tx).await;
        return;
    }
    while let Some(chunk) = stream.next().await {
        let mut chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(io::Error::other(e))).await;
                return;
            }
        };
        if let Some(after) = cut_at {
            let room = after.saturating_sub(sent);
            if chunk.len() >= room {
                let head = chunk.slice(..room);
                if !head.is_empty() && tx.send(Ok(Frame::data(head))).await.is_err() {
                    return;
                }
                cut(&fault, &tx).await;
                return;
            }
        }
        if let ProxyFault::FlipByte { at } = fault {
            if at >= sent && at < sent + chunk.len() {
                let mut v = chunk.to_vec();
                v[at - sent] ^= 0x01;
                chunk = Bytes::from(v);
            }
        }
        if let ProxyFault::Trickle {
            chunk: piece,
            every,
        } = fault
        {
            // Upstream chunks come in any size: the pace is set on what is relayed.
            trickled.extend_from_slice(&chunk);
            while trickled.len() >= piece.max(1) {
                tokio::time::sleep(every).await;
                let head = trickled.split_to(piece.max(1)).freeze();
                if tx.send(Ok(Frame::data(head))).await.is_err() {
                    return;
                }
            }
            continue;
        }
        sent += chunk.len();
        if tx.send(Ok(Frame::data(chunk))).await.is_err() {
            return;
        }
    }
    match fault {
        ProxyFault::Trickle { every, .. } if !trickled.is_empty() => {
            tokio::time::sleep(every).await;
            let _ = tx.send(Ok(Frame::data(trickled.freeze()))).await;
        }
        ProxyFault::ResetMidBody { .. } | ProxyFault::StallBody { .. } => cut(&fault, &tx).await,
        ProxyFault::ExtraBlock if is_car => {
            let _ = tx.send(Ok(Frame::data(injected_section()))).await;
        }
        _ => {}
    }
}

/// Ends a body abnormally: an error (hyper then aborts the connection) or a stall until the
/// client goes away.
async fn cut(fault: &ProxyFault, tx: &mpsc::Sender<FrameResult>) {
    // hyper drops its write buffer when the body fails: give it time to flush what was relayed.
    tokio::time::sleep(Duration::from_millis(50)).await;
    match fault {
        ProxyFault::ResetMidBody { .. } => {
            let _ = tx
                .send(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "fault proxy: connection reset mid-body",
                )))
                .await;
        }
        ProxyFault::StallBody { .. } => tx.closed().await,
        _ => {}
    }
}
