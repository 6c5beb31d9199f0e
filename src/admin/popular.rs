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

use super::status::{render, PinEvent, PopularItem, ProviderHealth, StatusSnapshot, TierShare};
use super::{json, Admin};
use crate::gateway::body::{channel, BodyError};
use crate::gateway::Body;
use crate::popularity::promoter::PromoteError;
use crate::popularity::Popularity;
use crate::telemetry::TierName;

/// Largest `POST /admin/prewarm` body (a list of CIDs).
const MAX_PREWARM_BODY: usize = 1 << 20;
/// Most CIDs one prewarm request may name.
const MAX_PREWARM_CIDS: usize = 1000;
/// Hit-ratio samples kept for the status page (an hour at one per 10 s).
const HISTORY: usize = 360;

type Reply = Result<Response<Body>, (StatusCode, String)>;

fn bad(msg: impl Into<String>) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, msg.into())
}

fn parse_cid(s: &str) -> Result<Cid, (StatusCode, String)> {
    Cid::try_from(s.trim()).map_err(|e| bad(format!("invalid CID {s:?}: {e}")))
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

impl Admin {
    fn popularity(&self) -> Result<&Arc<Popularity>, (StatusCode, String)> {
        self.popularity.as_ref().ok_or((
            StatusCode::SERVICE_UNAVAILABLE,
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
        for pin in self.store.pins().map_err(super::internal)? {
            // One block read per pin; a root that records no size (or is unreadable) has none.
            let size = match Cid::try_from(pin.cid.as_str()) {
                Ok(cid) => crate::content::dag::dag_size(&self.store, &cid)
                    .await
                    .ok()
                    .flatten(),
                Err(_) => None,
            };
            let mut v = serde_json::to_value(&pin).map_err(super::internal)?;
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
            return Err((
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST to pin and DELETE to unpin".into(),
            ));
        }
        self.authorized(&req)?;
        let cid = parse_cid(cid)?;
        let p = self.popularity()?;
        if req.method() == Method::DELETE {
            let removed = p.promoter.unpin(cid).await.map_err(pin_failure)?;
            return Ok(json(
                StatusCode::OK,
                &json!({"cid": cid.to_string(), "unpinned": removed}),
            ));
        }
        let name = query_param(&req, "name").unwrap_or_default();
        if name.len() > 255 {
            return Err(bad("name is longer than 255 bytes"));
        }
        p.promoter
            .pin(cid, false, &name)
            .await
            .map_err(pin_failure)?;
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

    /// Samples the edge cache's hit ratio every 10 s for the status page.
    pub fn start_sampler(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            let (mut hits, mut misses) = (0u64, 0u64);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let (h, m) = (
                    this.metrics.cache_hits.get(),
                    this.metrics.cache_misses.get(),
                );
                let (dh, dm) = (h.saturating_sub(hits), m.saturating_sub(misses));
                (hits, misses) = (h, m);
                if dh + dm == 0 {
                    continue;
                }
                let now = crate::tiers::local::unix_now();
                if let Ok(mut hist) = this.history.lock() {
                    hist.push_back((now, dh as f64 / (dh + dm) as f64));
                    while hist.len() > HISTORY {
                        hist.pop_front();
                    }
                }
            }
        });
    }

    /// The status page.
    pub(super) fn status_page(&self) -> Response<Body> {
        let snapshot = self.snapshot();
        let mut r = Response::new(crate::gateway::body::full(render(&snapshot)));
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

    fn snapshot(&self) -> StatusSnapshot {
        let tiers = ["cache", "store", "hot", "cold"]
            .into_iter()
            .map(|t| TierShare {
                name: t.into(),
                requests: self
                    .metrics
                    .served_by
                    .get_or_create(&TierName { tier: t.into() })
                    .get(),
            })
            .collect();
        let (top, events) = match &self.popularity {
            Some(p) => (
                p.tracker
                    .top(20)
                    .into_iter()
                    .map(|d| {
                        let pinned = match self.store.pin_of(&d.cid) {
                            Ok(Some(rec)) => Some(format!("{:?}", rec.reason).to_lowercase()),
                            _ => p
                                .promoter
                                .record(&d.cid)
                                .filter(|r| {
                                    r.state == crate::popularity::promoter::PinState::Pinned
                                })
                                .map(|r| if r.auto { "auto" } else { "operator" }.to_string()),
                        };
                        PopularItem {
                            cid: d.cid.to_string(),
                            score: d.requests,
                            requests: d.requests,
                            bytes: d.bytes,
                            pinned,
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
                        url: p.url,
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
        StatusSnapshot {
            uptime_secs: self.started.elapsed().as_secs(),
            tiers,
            hit_ratio_history: self
                .history
                .lock()
                .map(|h| h.iter().copied().collect())
                .unwrap_or_default(),
            top,
            events,
            providers,
            spend_today,
            daily_budget,
        }
    }
}

fn pin_failure(e: PromoteError) -> (StatusCode, String) {
    match e {
        PromoteError::Busy(_) => (StatusCode::CONFLICT, e.to_string()),
        PromoteError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        PromoteError::Pin(_) => (StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// Reads a request body of at most `limit` bytes.
pub(super) async fn read_limited(
    req: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, (StatusCode, String)> {
    let mut body = req.into_body();
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bad(format!("reading the body: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > limit {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body larger than {limit} bytes"),
                ));
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out.freeze())
}
