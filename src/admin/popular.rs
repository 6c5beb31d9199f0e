//! Admin endpoints of the popularity subsystem: `GET /admin/popular`, `GET /admin/pins`,
//! `POST` / `DELETE /admin/pins/{cid}`, `POST /admin/prewarm` (progress streamed as NDJSON), and
//! the status page at `GET /`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tokio::sync::mpsc;

use super::status::{
    render, HotHealth, PinEvent, PinRow, PopularItem, ProviderHealth, StatusSnapshot, TierShare,
    TrafficSample,
};
use super::{json, Admin, AdminError};
use crate::body::Body;
use crate::body::{channel, BodyError};
use crate::popularity::Popularity;
use crate::telemetry::TierName;

/// Largest `POST /admin/prewarm` body (a list of CIDs).
const MAX_PREWARM_BODY: usize = 1 << 20;
/// Most CIDs one prewarm request may name.
const MAX_PREWARM_CIDS: usize = 1000;
/// Traffic samples kept for the status page (an hour at the default of one per 10 s).
const HISTORY: usize = 360;
/// Pins listed on the status page (`GET /admin/pins` lists all).
const MAX_PINS_SHOWN: usize = 50;

type Reply = Result<Response<Body>, AdminError>;

fn bad(msg: impl Into<String>) -> AdminError {
    AdminError::BadRequest(msg.into())
}

fn parse_cid(s: &str) -> Result<Cid, AdminError> {
    Cid::try_from(s.trim()).map_err(|e| bad(format!("invalid CID {s:?}: {e}")))
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

impl Admin {
    fn popularity(&self) -> Result<&Arc<Popularity>, AdminError> {
        self.popularity.as_ref().ok_or(AdminError::Unavailable(
            "popularity tracking is off (popularity.enabled = false)".into(),
        ))
    }

    /// `GET /admin/popular?limit=N`: the most requested roots with their decayed demand.
    pub(super) fn popular(&self, req: &Request<Incoming>) -> Reply {
        let limit = match query_param(req, "limit") {
            None => 20,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => return Err(bad(format!("limit must be 1..=1000, not {l:?}"))),
            },
        };
        let p = self.popularity()?;
        let items: Vec<serde_json::Value> = p
            .tracker
            .top(limit)
            .into_iter()
            .map(|d| {
                let record = p.promoter.record(&d.cid);
                json!({
                    "cid": d.cid.to_string(),
                    "requests": d.requests,
                    "bytes": d.bytes,
                    "served_by": {"cache": d.cache, "hot": d.hot, "cold": d.cold},
                    "error": d.error,
                    "pin": record.map(|r| json!({"state": r.state, "auto": r.auto, "target": r.target})),
                })
            })
            .collect();
        Ok(json(
            StatusCode::OK,
            &json!({
                "half_life_secs": p.half_life().as_secs_f64(),
                "total_demand": p.tracker.total(),
                "error_bound": p.tracker.error_bound(),
                "items": items,
            }),
        ))
    }

    /// `GET /admin/pins`: pins in the embedded store (with the size of each DAG as its root
    /// records it) and the pins cidgate made in the hot layer.
    pub(super) async fn pins(&self) -> Reply {
        let mut store = Vec::new();
        for pin in self.store.pins()? {
            // One block read per pin; a root that records no size (or is unreadable) has none.
            let size = match Cid::try_from(pin.cid.as_str()) {
                Ok(cid) => crate::content::dag::dag_size(&self.store, &cid)
                    .await
                    .ok()
                    .flatten(),
                Err(_) => None,
            };
            let mut v = serde_json::to_value(&pin).map_err(AdminError::unavailable)?;
            v["size"] = json!(size);
            store.push(v);
        }
        let (target, made) = match &self.popularity {
            Some(p) => (p.promoter.target(), p.promoter.records()),
            None => ("embedded", Vec::new()),
        };
        Ok(json(
            StatusCode::OK,
            &json!({"target": target, "store": store, "made_by_cidgate": made}),
        ))
    }

    /// `POST /admin/pins/{cid}` (operator pin, `?name=`), `DELETE /admin/pins/{cid}`.
    pub(super) async fn pin_write(&self, req: Request<Incoming>, cid: &str) -> Reply {
        let is_write = matches!(*req.method(), Method::POST | Method::DELETE);
        if !is_write {
            return Err(AdminError::MethodNotAllowed(
                "use POST to pin and DELETE to unpin".into(),
            ));
        }
        self.authorized(&req)?;
        let cid = parse_cid(cid)?;
        let p = self.popularity()?;
        if req.method() == Method::DELETE {
            let removed = p.promoter.unpin(cid).await?;
            return Ok(json(
                StatusCode::OK,
                &json!({"cid": cid.to_string(), "unpinned": removed}),
            ));
        }
        let name = query_param(&req, "name").unwrap_or_default();
        if name.len() > 255 {
            return Err(bad("name is longer than 255 bytes"));
        }
        p.promoter.pin(cid, false, &name).await?;
        Ok(json(
            StatusCode::OK,
            &json!({"cid": cid.to_string(), "pinned": true, "target": p.promoter.target()}),
        ))
    }

    /// `POST /admin/prewarm`: CIDs (whitespace or comma separated, or a JSON array) are read
    /// into the edge cache one after another; progress is streamed as NDJSON lines.
    pub(super) async fn prewarm(&self, req: Request<Incoming>) -> Reply {
        let p = self.popularity()?.clone();
        let body = read_limited(req, MAX_PREWARM_BODY).await?;
        let text = std::str::from_utf8(&body).map_err(|_| bad("body is not UTF-8"))?;
        let items: Vec<String> = if text.trim_start().starts_with('[') {
            serde_json::from_str(text).map_err(|e| bad(format!("JSON array of CIDs: {e}")))?
        } else {
            text.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        if items.is_empty() {
            return Err(bad("no CIDs given"));
        }
        if items.len() > MAX_PREWARM_CIDS {
            return Err(bad(format!("at most {MAX_PREWARM_CIDS} CIDs per request")));
        }
        let cids = items
            .iter()
            .map(|s| parse_cid(s))
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel::<Result<Bytes, BodyError>>(16);
        tokio::spawn(async move {
            for cid in cids {
                let progress_tx = tx.clone();
                let mut last = std::time::Instant::now();
                let line = |v: serde_json::Value| Ok(Bytes::from(format!("{v}\n")));
                let result = p
                    .prewarmer
                    .prewarm(cid, |r| {
                        // Progress at most every 200 ms; never wait on a slow reader here.
                        if last.elapsed() >= Duration::from_millis(200) {
                            last = std::time::Instant::now();
                            let _ = progress_tx.try_send(line(json!({
                                "cid": cid.to_string(), "blocks": r.blocks, "bytes": r.bytes,
                            })));
                        }
                    })
                    .await;
                let done = match result {
                    // What stayed cached is part of the answer: a DAG larger than the cache is
                    // read, but only part of it is warm afterwards.
                    Ok(r) => json!({
                        "cid": cid.to_string(), "done": true, "blocks": r.blocks, "bytes": r.bytes,
                        "truncated": r.truncated, "max_dag_bytes": p.prewarmer.limit(),
                        "cache_capacity": r.cache_capacity, "cached_bytes": r.cached_bytes,
                    }),
                    Err(e) => json!({"cid": cid.to_string(), "done": true, "error": e.to_string()}),
                };
                if tx.send(line(done)).await.is_err() {
                    return;
                }
            }
        });
        let mut resp = Response::new(channel(rx));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-ndjson"),
        );
        Ok(resp)
    }

    /// Samples traffic every `admin.status_interval` for the status page: request rate, error rates,
    /// latency percentiles and the edge-cache hit ratio over the interval, keeping the last
    /// [`HISTORY`] samples.
    pub fn start_sampler(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.sample_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate; the first sample covers a whole interval.
            tick.tick().await;
            let mut last = Counters::read(&this.metrics);
            let mut last_at = std::time::Instant::now();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = Counters::read(&this.metrics);
                let secs = last_at.elapsed().as_secs_f64().max(1e-3);
                last_at = std::time::Instant::now();
                let sample = now.since(&last, secs, crate::tiers::local::unix_now());
                last = now;
                if let Ok(mut hist) = this.history.lock() {
                    hist.push_back(sample);
                    while hist.len() > HISTORY {
                        hist.pop_front();
                    }
                }
            }
        });
    }

    /// The status page; links to content go to the public gateway, reached at the host the
    /// operator used for this page when the gateway listens on every address.
    pub(super) fn status_page(&self, req: &Request<Incoming>) -> Response<Body> {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host());
        let snapshot = self.snapshot(host);
        let mut r = Response::new(crate::body::full(render(&snapshot)));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        r
    }

    /// `scheme://host:port` of the public gateway as seen from a browser that reached the
    /// admin listener with `Host: admin_host`.
    fn public_base(&self, admin_host: Option<&str>) -> Option<String> {
        let (scheme, addr) = self.public?;
        if !addr.ip().is_unspecified() {
            return Some(format!("{scheme}://{addr}"));
        }
        // Listening on every address: the admin page's host name (without its port) most
        // likely reaches the gateway too.
        let host = admin_host
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .map(|a| a.host().to_string())
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        Some(format!("{scheme}://{host}:{}", addr.port()))
    }

    fn snapshot(&self, admin_host: Option<&str>) -> StatusSnapshot {
        let tiers = ["cache", "store", "hot", "cold"]
            .into_iter()
            .map(|t| {
                let label = TierName { tier: t.into() };
                TierShare {
                    name: t.into(),
                    requests: self.metrics.served_by.get_or_create(&label).get(),
                    bytes: self.metrics.served_bytes.get_or_create(&label).get(),
                }
            })
            .collect();
        let store_pins = self.store.pins().unwrap_or_default();
        let (top, events) = match &self.popularity {
            Some(p) => (
                p.tracker
                    .top(20)
                    .into_iter()
                    .map(|d| {
                        let stored = store_pins.iter().find(|r| r.cid == d.cid.to_string());
                        let record = p
                            .promoter
                            .record(&d.cid)
                            .filter(|r| r.state == crate::popularity::promoter::PinState::Pinned);
                        let pinned = match (stored, &record) {
                            (Some(rec), _) => Some(format!("{:?}", rec.reason).to_lowercase()),
                            (None, Some(r)) => {
                                Some(if r.auto { "auto" } else { "operator" }.to_string())
                            }
                            (None, None) => None,
                        };
                        let pin_name = stored
                            .and_then(|r| r.name.clone())
                            .or_else(|| record.map(|r| r.name))
                            .filter(|n| !n.is_empty());
                        PopularItem {
                            cid: d.cid.to_string(),
                            score: d.requests,
                            requests: d.requests,
                            bytes: d.bytes,
                            pinned,
                            pin_name,
                        }
                    })
                    .collect(),
                p.promoter
                    .events()
                    .into_iter()
                    .take(30)
                    .map(|e| PinEvent {
                        at: e.at.max(0.0) as u64,
                        cid: e.cid,
                        kind: e.kind.into(),
                        backend: e.target.into(),
                        detail: e.detail,
                    })
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let (providers, spend_today, daily_budget) = match &self.cold {
            Some(c) => {
                let r = c.report();
                let providers = r
                    .providers
                    .into_iter()
                    .map(|p| ProviderHealth {
                        label: p.stats.label.clone(),
                        url: crate::config::mask_url(&p.url),
                        score: p.score,
                        successes: p.stats.successes,
                        failures: p.stats.failures
                            + p.stats.timeouts
                            + p.stats.lies
                            + p.stats.verify_failures,
                        ttfb_ms: p.stats.ttfb_ms,
                        last_error: p.stats.last_error,
                    })
                    .collect();
                (providers, r.spend.today, r.daily_budget)
            }
            None => (Vec::new(), 0.0, 0.0),
        };
        let mut pins: Vec<PinRow> = store_pins
            .iter()
            .map(|p| PinRow {
                cid: p.cid.clone(),
                reason: format!("{:?}", p.reason).to_lowercase(),
                // An operator pin made through the admin API keeps its name in the promoter's
                // record; a pin made by `add` or `import` has none.
                name: p.name.clone().filter(|n| !n.is_empty()).or_else(|| {
                    let cid = cid::Cid::try_from(p.cid.as_str()).ok()?;
                    let record = self.popularity.as_ref()?.promoter.record(&cid)?;
                    Some(record.name).filter(|n| !n.is_empty())
                }),
                created: p.created,
            })
            .collect();
        pins.sort_by_key(|p| std::cmp::Reverse(p.created));
        let pins_total = pins.len();
        pins.truncate(MAX_PINS_SHOWN);
        let process = crate::telemetry::process_figures();
        let breaker = self.hot.breaker.as_ref();
        StatusSnapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            public_base: self.public_base(admin_host),
            not_ready: self.not_ready(),
            hot: HotHealth {
                backend: self.hot.backend.clone(),
                url: self.hot.url.clone(),
                has_breaker: breaker.is_some(),
                open_for_secs: breaker.and_then(|b| b.open_for()).map(|d| d.as_secs() + 1),
                failures: breaker.map(|b| b.failures()).unwrap_or(0),
            },
            cache_bytes: self.metrics.cache_bytes.get().max(0) as u64,
            cache_capacity: self.cache_capacity,
            store_bytes: self.store.file_size(),
            store: self.store.summary(),
            resident_bytes: process.map(|p| p.resident_bytes),
            open_fds: process.map(|p| (p.open_fds, p.max_fds)),
            traffic: self
                .history
                .lock()
                .map(|h| h.iter().cloned().collect())
                .unwrap_or_default(),
            tiers,
            top,
            pins,
            pins_total,
            events,
            providers,
            spend_today,
            daily_budget,
            retrievability: self.retrievability(),
        }
    }
}

/// One traffic sample: the sampler's view of the counters at one moment.
pub(super) type Sample = TrafficSample;

/// The counters the sampler differentiates.
struct Counters {
    latency: Vec<u64>,
    client_errors: u64,
    server_errors: u64,
    hits: u64,
    misses: u64,
}

impl Counters {
    fn read(m: &crate::telemetry::Metrics) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        Self {
            latency: m.stats.latency_counts(),
            client_errors: m.stats.client_errors.load(Relaxed),
            server_errors: m.stats.server_errors.load(Relaxed),
            hits: m.cache_hits.get(),
            misses: m.cache_misses.get(),
        }
    }

    /// The sample of the `secs` between `before` and these counters, stamped `at`.
    fn since(&self, before: &Counters, secs: f64, at: u64) -> TrafficSample {
        let latency: Vec<u64> = self
            .latency
            .iter()
            .zip(&before.latency)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let requests: u64 = latency.iter().sum();
        let share = |n: u64| (requests > 0).then(|| n as f64 / requests as f64);
        let (hits, misses) = (
            self.hits.saturating_sub(before.hits),
            self.misses.saturating_sub(before.misses),
        );
        TrafficSample {
            at,
            requests_per_s: requests as f64 / secs,
            server_errors: share(self.server_errors.saturating_sub(before.server_errors)),
            client_errors: share(self.client_errors.saturating_sub(before.client_errors)),
            p50_ms: crate::telemetry::latency_quantile_ms(&latency, 0.50),
            p95_ms: crate::telemetry::latency_quantile_ms(&latency, 0.95),
            p99_ms: crate::telemetry::latency_quantile_ms(&latency, 0.99),
            hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
        }
    }
}

/// Reads a request body of at most `limit` bytes.
pub(super) async fn read_limited(
    req: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, AdminError> {
    let mut body = req.into_body();
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bad(format!("reading the body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > limit {
                return Err(AdminError::TooLarge(format!(
                    "body larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out.freeze())
}
