//! The cold tier: Filecoin storage providers that serve retrievals over the trustless gateway
//! protocol (booster-http, Curio, Frisbii, another cidgate).
//!
//! A retrieval is DAG-shaped: discovery finds candidates ([`discovery`]), the deal policy quotes,
//! filters and ranks them ([`deal`]), and the best one is asked for a CAR of the request. Blocks
//! are accepted only when they hash to their CID and the walk of the request expects them
//! ([`walk`]); each one goes at once to the waiting responses. A provider that fails, stalls or
//! lies is scored down and the next one is asked only for what is still missing. When the first
//! provider is slower than its recent p90 to send anything, a second one is started (a hedge) and
//! the first to finish wins.

pub mod deal;
pub mod discovery;
pub mod provider;
pub mod walk;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Semaphore;

use self::deal::{DealPolicy, Declined, Plan};
use self::discovery::Discovery;
use self::provider::{
    status_failure, transport_failure, CarStream, Deadlines, Failure, Provider, ProviderBook,
    ProviderStats, Spend,
};
use self::walk::{Accepted, DagWalk};
use super::{BlockSource, DagRequest, DagSink, TierError};
use crate::config::ColdConfig;
use crate::ipld::{Block, MAX_BLOCK_SIZE};
use crate::telemetry::{trace, Metrics};
use crate::tiers::local::LocalStore;

/// The tier name in errors, metrics and `Server-Timing`.
pub const COLD: &str = "cold";

/// The cold tier.
pub struct ColdTier {
    client: reqwest::Client,
    discovery: Arc<Discovery>,
    book: ProviderBook,
    policy: DealPolicy,
    deadlines: Deadlines,
    hedge_after: Duration,
    deadline: Duration,
    overall: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    last_declined: std::sync::Mutex<Vec<Declined>>,
}

/// One provider in the admin API's report.
#[derive(Serialize)]
pub struct ProviderReport {
    /// Base URL.
    pub url: String,
    /// Ranking score (higher is better).
    pub score: f64,
    /// Requests in flight now.
    pub in_flight: usize,
    /// Recent p90 time to first block, in milliseconds.
    pub ttfb_p90_ms: Option<f64>,
    /// Everything observed.
    #[serde(flatten)]
    pub stats: ProviderStats,
}

/// The cold tier's state for the admin API.
#[derive(Serialize)]
pub struct ColdReport {
    /// Providers, best first.
    pub providers: Vec<ProviderReport>,
    /// Money spent.
    pub spend: Spend,
    /// The configured daily budget (FIL).
    pub daily_budget: f64,
    /// The configured per-request ceiling (FIL).
    pub request_ceiling: f64,
    /// Candidates declined by the last retrieval's deal decision.
    pub last_declined: Vec<Declined>,
    /// Provider records or addresses discovery found unusable (no HTTP).
    pub unusable_addresses: u64,
    /// The static provider list in force (`cold.providers`, reloaded on SIGHUP).
    pub static_providers: Vec<String>,
}

impl ColdTier {
    /// The cold tier configured in `[cold]`; scores persist in `store`.
    pub fn new(
        config: &ColdConfig,
        store: Option<LocalStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, TierError> {
        let client =
            super::remote::http_client(config.connect_timeout, config.per_provider as usize)
                .map_err(|reason| TierError::Unavailable { tier: COLD, reason })?;
        let book = ProviderBook::load(store, config.per_provider as usize)?;
        let tier = Arc::new(Self {
            discovery: Discovery::new(config, client.clone(), metrics.clone()),
            client,
            book,
            policy: DealPolicy::new(config),
            deadlines: Deadlines {
                first_byte: config.first_byte_timeout,
                idle: config.idle_timeout,
            },
            hedge_after: config.hedge_after,
            deadline: config.deadline,
            overall: Arc::new(Semaphore::new(config.max_concurrent as usize)),
            metrics,
            last_declined: std::sync::Mutex::new(Vec::new()),
        });
        tier.publish_budget();
        Ok(tier)
    }

    /// Longest a client should wait for this tier.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Replaces the static provider list (SIGHUP); discovery sources and limits stay.
    pub fn set_static_providers(&self, providers: &[crate::config::StaticProvider]) {
        self.discovery.set_static_providers(providers);
    }

    /// The providers discovery names for `cid` (static list, IPNI, routing v1).
    pub async fn candidates(&self, cid: &Cid) -> Result<Vec<discovery::Candidate>, TierError> {
        Ok(self.discovery.find(cid).await?.as_ref().clone())
    }

    /// The HTTP client providers are asked with.
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// Saves provider scores and spend (periodically and at shutdown).
    pub fn save(&self) {
        self.book.save();
    }

    /// Providers, scores and spend for the admin API.
    pub fn report(&self) -> ColdReport {
        let per = self.book.per_provider();
        ColdReport {
            providers: self
                .book
                .all()
                .into_iter()
                .map(|p| {
                    let stats = p.stats();
                    ProviderReport {
                        url: p.url.clone(),
                        score: stats.score(),
                        in_flight: p.in_flight(per),
                        ttfb_p90_ms: stats.ttfb_p90().map(|d| d.as_secs_f64() * 1000.0),
                        stats,
                    }
                })
                .collect(),
            spend: self.book.spend(),
            daily_budget: self.policy.daily_budget,
            request_ceiling: self.policy.request_ceiling,
            last_declined: self
                .last_declined
                .lock()
                .map(|d| d.clone())
                .unwrap_or_default(),
            unusable_addresses: self.discovery.unusable(),
            static_providers: self.discovery.static_urls(),
        }
    }

    fn publish_budget(&self) {
        let spend = self.book.spend();
        self.metrics
            .cold_budget_remaining
            .set((self.policy.daily_budget - spend.today).max(0.0));
    }

    /// Discovery and the deal decision for `cid`.
    async fn plan(&self, cid: &Cid) -> Result<Plan, TierError> {
        let start = Instant::now();
        let candidates = self.discovery.find(cid).await;
        trace("cold-discovery", start.elapsed());
        let candidates = candidates?;
        let plan = self.policy.plan(&candidates, &self.book);
        for (decision, n) in [
            ("accepted", plan.ranked.len()),
            ("declined", plan.declined.len()),
        ] {
            if n > 0 {
                self.metrics
                    .cold_deals
                    .get_or_create(&crate::telemetry::DiscoveryLabel {
                        source: decision.into(),
                    })
                    .inc_by(n as u64);
            }
        }
        if let Ok(mut d) = self.last_declined.lock() {
            d.clone_from(&plan.declined);
        }
        if plan.ranked.is_empty() {
            let reasons: Vec<String> = plan
                .declined
                .iter()
                .map(|d| format!("{}: {}", d.url, d.reason))
                .collect();
            return Err(TierError::Upstream {
                tier: COLD,
                reason: format!("no provider acceptable: {}", reasons.join("; ")),
            });
        }
        Ok(plan)
    }

    fn record(&self, p: &Provider, result: &Result<(u64, Duration), Failure>) {
        let label = p.label();
        match result {
            Ok((bytes, took)) => p.update(|s| s.success(*bytes, *took)),
            Err(f) => {
                if !matches!(f, Failure::Declined(_)) {
                    tracing::info!(provider = %label, outcome = f.outcome(), reason = f.reason(), "storage provider request failed");
                }
                p.update(|s| s.failure(f));
                if matches!(f, Failure::Corrupt(_)) {
                    self.metrics.verify_failure(COLD);
                }
            }
        }
        let outcome = match result {
            Ok(_) => "ok",
            Err(f) => f.outcome(),
        };
        self.metrics.cold_fetch(&label, outcome);
        self.book.touch();
    }

    /// Fetches one block from the ranked providers in turn.
    async fn get_block(&self, cid: &Cid) -> Result<Block, TierError> {
        let plan = self.plan(cid).await?;
        let start = Instant::now();
        let mut failures = Vec::new();
        for p in &plan.ranked {
            let begun = Instant::now();
            let r = self.block_from(p, cid).await;
            let rec = r.as_ref().map(|b| (b.data().len() as u64, begun.elapsed()));
            self.record(p, &rec.map_err(Clone::clone));
            match r {
                Ok(block) => {
                    self.metrics.fetch(COLD, "ok", start.elapsed());
                    self.charge(p, block.data().len() as u64);
                    trace(COLD, start.elapsed());
                    return Ok(block);
                }
                Err(f) => failures.push((p.label(), f)),
            }
        }
        let err = summarize(cid, &failures);
        self.metrics.fetch(
            COLD,
            super::remote::outcome::<()>(&Err(err.clone())),
            start.elapsed(),
        );
        trace(COLD, start.elapsed());
        Err(err)
    }

    async fn block_from(&self, p: &Arc<Provider>, cid: &Cid) -> Result<Block, Failure> {
        let url = format!("{}/ipfs/{cid}?format=raw", p.url);
        let started = Instant::now();
        let attempt = async {
            let _slot = p
                .slot(self.overall.clone(), self.deadlines.first_byte)
                .await?;
            let resp = self
                .client
                .get(&url)
                .header("accept", "application/vnd.ipld.raw")
                .send()
                .await
                .map_err(|e| transport_failure(&e, &url))?;
            if !resp.status().is_success() {
                return Err(status_failure(resp.status(), &url));
            }
            p.update(|s| s.first_byte(started.elapsed()));
            let mut body = BytesMut::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = tokio::time::timeout(self.deadlines.idle, stream.next())
                .await
                .map_err(|_| Failure::Timeout(format!("{url}: stalled")))?
            {
                let chunk = chunk.map_err(|e| transport_failure(&e, &url))?;
                if body.len() + chunk.len() > MAX_BLOCK_SIZE {
                    return Err(Failure::Error(format!(
                        "{url}: block over {MAX_BLOCK_SIZE} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body.freeze())
        };
        let data = tokio::time::timeout(self.deadlines.first_byte + self.deadlines.idle, attempt)
            .await
            .map_err(|_| Failure::Timeout(format!("{url}: no answer in time")))??;
        self.metrics.cold_bytes(&p.label(), data.len() as u64);
        Block::verified(*cid, data).map_err(|e| Failure::Corrupt(format!("{url}: {e}")))
    }

    fn charge(&self, p: &Provider, bytes: u64) -> f64 {
        let cost = DealPolicy::cost(p.price(), bytes);
        if cost > 0.0 {
            self.book.charge(cost);
            self.metrics.cold_spend.inc_by(cost);
            self.publish_budget();
        }
        cost
    }

    /// Retrieves `req` into `sink`, failing over and resuming across providers.
    async fn retrieve(&self, req: &DagRequest, sink: &mut dyn DagSink) -> Result<(), TierError> {
        let plan = self.plan(&req.root).await?;
        let start = Instant::now();
        // Counted however the retrieval ends: a client that leaves drops it mid-await.
        let mut counted = DagFetchCount {
            metrics: &self.metrics,
            start,
            outcome: "cancelled",
        };
        let mut walk = DagWalk::new(req.clone());
        let mut failures: Vec<(String, Failure)> = Vec::new();
        let mut next = 0;
        while !walk.complete() {
            let Some(primary) = plan.ranked.get(next).cloned() else {
                break;
            };
            next += 1;
            let backup = plan.ranked.get(next).cloned();
            let subs = if walk.received() == 0 {
                vec![req.clone()]
            } else {
                self.metrics.cold_resumes.inc();
                let subs = walk.resume_requests();
                tracing::debug!(root = %req.root, provider = %primary.label(), requests = subs.len(), have = walk.received(), "resuming retrieval with the next provider");
                subs
            };
            let (hedged, stopped) = self
                .attempt(
                    &primary,
                    backup.as_ref(),
                    &subs,
                    &mut walk,
                    sink,
                    &mut failures,
                )
                .await;
            if stopped {
                tracing::debug!(root = %req.root, "retrieval stopped: nobody reads it any more");
                counted.outcome = "stopped";
                return Ok(());
            }
            if hedged {
                next += 1;
            }
        }
        let took = start.elapsed();
        trace(COLD, took);
        if walk.complete() {
            counted.outcome = "ok";
            return Ok(());
        }
        let err = summarize(&req.root, &failures);
        counted.outcome = super::remote::outcome::<()>(&Err(err.clone()));
        Err(err)
    }

    /// Streams `subs` from `primary` (and, if it is slow to start, from `backup` too). Returns
    /// whether the backup was used and whether the sink asked to stop.
    async fn attempt(
        &self,
        primary: &Arc<Provider>,
        backup: Option<&Arc<Provider>>,
        subs: &[DagRequest],
        walk: &mut DagWalk,
        sink: &mut dyn DagSink,
        failures: &mut Vec<(String, Failure)>,
    ) -> (bool, bool) {
        let mut hedged = false;
        let mut current = primary.clone();
        let mut spent = 0.0;
        // A stream that completed the walk is counted as a success when it ends, or when this
        // retrieval is dropped first (handing on the last block may end the response and,
        // with it, the retrieval, before the end of the CAR is read).
        let mut completed = CountOnDrop {
            tier: self,
            pending: None,
        };
        for (i, sub) in subs.iter().enumerate() {
            let mut a = Some(self.stream(&current, sub));
            let mut b: Option<CarStream> = None;
            // Only the first request of an attempt is hedged; later ones follow the winner.
            let hedge_delay = current
                .stats()
                .ttfb_p90()
                .unwrap_or(self.hedge_after)
                .max(Duration::from_millis(10));
            let hedge_at = tokio::time::sleep(hedge_delay);
            tokio::pin!(hedge_at);
            let can_hedge = i == 0 && backup.is_some();
            let mut winner: Option<Arc<Provider>> = None;
            loop {
                let a_started = a.as_ref().is_some_and(|s| s.ttfb.is_some());
                let step = tokio::select! {
                    item = next_of(&mut a) => (self.step(&mut a, item, walk, failures, &mut spent, &mut completed.pending), false),
                    item = next_of(&mut b) => (self.step(&mut b, item, walk, failures, &mut spent, &mut completed.pending), true),
                    _ = &mut hedge_at, if can_hedge && b.is_none() && !hedged && !a_started && a.is_some() => {
                        if let Some(bp) = backup {
                            tracing::debug!(slow = %current.label(), hedge = %bp.label(), after = ?hedge_delay, "hedging a slow storage provider");
                            self.metrics.cold_hedges.inc();
                            hedged = true;
                            b = Some(self.stream(bp, sub));
                        }
                        (Step::Continue, false)
                    }
                };
                match step {
                    (Step::Deliver(block), _) => {
                        if !sink.accept(block).await {
                            return (hedged, true);
                        }
                    }
                    (Step::Won, from_backup) => {
                        winner = if from_backup {
                            backup.cloned()
                        } else {
                            Some(current.clone())
                        };
                        break;
                    }
                    (Step::Continue | Step::Failed, _) => {}
                }
                if a.is_none() && b.is_none() {
                    break;
                }
            }
            // The loser of a hedge is dropped here: its request is cancelled.
            match winner {
                Some(w) => current = w,
                None => return (hedged, false),
            }
            if walk.complete() {
                return (hedged, false);
            }
        }
        if !walk.complete() {
            let f = Failure::NotFound(format!(
                "{}: the CAR ended before the DAG was complete",
                current.url
            ));
            self.record(&current, &Err(f.clone()));
            failures.push((current.label(), f));
        }
        (hedged, false)
    }

    fn stream(&self, p: &Arc<Provider>, sub: &DagRequest) -> CarStream {
        CarStream::new(
            self.client.clone(),
            p.clone(),
            sub,
            self.deadlines,
            self.overall.clone(),
        )
    }

    /// Handles one item of a stream.
    fn step(
        &self,
        slot: &mut Option<CarStream>,
        item: Result<Option<(Cid, Bytes)>, Failure>,
        walk: &mut DagWalk,
        failures: &mut Vec<(String, Failure)>,
        spent: &mut f64,
        completed: &mut Option<Completed>,
    ) -> Step {
        let Some(stream) = slot.as_mut() else {
            return Step::Continue;
        };
        let p = stream.provider.clone();
        // This stream's end (or failure) is recorded below: no longer on drop.
        if completed
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.provider, &p))
            && !matches!(item, Ok(Some(_)))
        {
            *completed = None;
        }
        let outcome = match item {
            Ok(None) => {
                let took = stream.started().elapsed();
                let bytes = stream.bytes;
                if let Some(t) = stream.ttfb {
                    p.update(|s| s.first_byte(t));
                }
                self.record(&p, &Ok((bytes, took)));
                *slot = None;
                return Step::Won;
            }
            Ok(Some((cid, data))) => self.take(&p, walk, cid, data, spent),
            Err(f) => Err(f),
        };
        match outcome {
            Ok(Some(block)) => {
                if walk.complete() {
                    *completed = Some(Completed {
                        provider: p,
                        bytes: stream.bytes,
                        took: stream.started().elapsed(),
                        ttfb: stream.ttfb,
                    });
                }
                Step::Deliver(block)
            }
            Ok(None) => Step::Continue,
            Err(f) => {
                if let Some(t) = stream.ttfb {
                    p.update(|s| s.first_byte(t));
                }
                self.record(&p, &Err(f.clone()));
                failures.push((p.label(), f));
                *slot = None;
                Step::Failed
            }
        }
    }

    /// Checks and verifies one block of a provider's stream; the block to hand on, if new.
    fn take(
        &self,
        p: &Arc<Provider>,
        walk: &mut DagWalk,
        cid: Cid,
        data: Bytes,
        spent: &mut f64,
    ) -> Result<Option<Block>, Failure> {
        match walk.check(&cid) {
            Err(e) => return Err(Failure::Lie(format!("{}: {e}", p.url))),
            Ok(Accepted::Duplicate) => return Ok(None),
            Ok(Accepted::New) => {}
        }
        self.metrics.cold_bytes(&p.label(), data.len() as u64);
        let block =
            Block::verified(cid, data).map_err(|e| Failure::Corrupt(format!("{}: {e}", p.url)))?;
        let price = p.price();
        let allowance = if price > 0.0 {
            self.policy.allowance(price, self.book.spend().today)
        } else {
            None
        };
        if let Some(allowed) = allowance {
            let cost = DealPolicy::cost(price, block.data().len() as u64);
            if *spent + cost > allowed {
                return Err(Failure::Declined(format!(
                    "{}: retrieval would exceed its allowance of {allowed} FIL",
                    p.url
                )));
            }
        }
        *spent += self.charge(p, block.data().len() as u64);
        walk.accept(block.cid(), block.data())
            .map_err(|e| Failure::Lie(format!("{}: {e}", p.url)))?;
        Ok(Some(block))
    }
}

/// The stream that completed a walk, until its end is read.
struct Completed {
    provider: Arc<Provider>,
    bytes: u64,
    took: Duration,
    ttfb: Option<Duration>,
}

/// Records the stream that completed the walk as a success if the retrieval is dropped before
/// that stream's end was read (the end, or a lie after the last block, is recorded by
/// [`ColdTier::step`], which clears `pending`).
struct CountOnDrop<'a> {
    tier: &'a ColdTier,
    pending: Option<Completed>,
}

impl Drop for CountOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.pending.take() {
            if let Some(t) = c.ttfb {
                c.provider.update(|s| s.first_byte(t));
            }
            self.tier.record(&c.provider, &Ok((c.bytes, c.took)));
        }
    }
}

/// Records one DAG retrieval in the `cold-dag` fetch metrics when it ends, with the outcome
/// it set last: "cancelled" if it was dropped before saying (the client left mid-await).
struct DagFetchCount<'a> {
    metrics: &'a Metrics,
    start: Instant,
    outcome: &'static str,
}

impl Drop for DagFetchCount<'_> {
    fn drop(&mut self) {
        self.metrics
            .fetch("cold-dag", self.outcome, self.start.elapsed());
    }
}

/// What one stream item means for the attempt.
enum Step {
    /// A new verified block for the sink.
    Deliver(Block),
    /// Nothing to do (a duplicate, a hedge started, a finished slot).
    Continue,
    /// The stream ended cleanly: it won.
    Won,
    /// The stream failed and was dropped.
    Failed,
}

async fn next_of(slot: &mut Option<CarStream>) -> Result<Option<(Cid, Bytes)>, Failure> {
    match slot {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// The error for a retrieval every provider failed: 404 when all said "not here", 504 when
/// time-outs were all that went wrong, else 502 with the reasons.
fn summarize(cid: &Cid, failures: &[(String, Failure)]) -> TierError {
    if failures.is_empty() {
        return TierError::Upstream {
            tier: COLD,
            reason: format!("no provider could be asked for {cid}"),
        };
    }
    if failures
        .iter()
        .all(|(_, f)| matches!(f, Failure::NotFound(_)))
    {
        return TierError::NotFound(*cid);
    }
    if failures.iter().all(|(_, f)| {
        matches!(
            f,
            Failure::Timeout(_) | Failure::NotFound(_) | Failure::Declined(_)
        )
    }) {
        return TierError::Timeout(COLD);
    }
    TierError::Providers {
        failures: failures
            .iter()
            .map(|(label, f)| {
                (
                    f.public(),
                    format!("{label}: {} ({})", f.outcome(), f.reason()),
                )
            })
            .collect(),
    }
}

#[async_trait]
impl BlockSource for ColdTier {
    async fn get(&self, cid: &Cid) -> Result<Block, TierError> {
        self.get_block(cid).await
    }

    /// Whether some provider is known for `cid` (without transferring it).
    async fn has(&self, cid: &Cid) -> Result<bool, TierError> {
        match self.discovery.find(cid).await {
            Ok(c) => Ok(!c.is_empty()),
            Err(TierError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn name(&self) -> &'static str {
        COLD
    }

    async fn holds_locally(&self, _cid: &Cid) -> Result<bool, TierError> {
        Ok(false)
    }

    async fn fetch_dag(&self, req: &DagRequest, sink: &mut dyn DagSink) -> Result<(), TierError> {
        self.retrieve(req, sink).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StaticProvider;
    use crate::ipld::{cid_v1_sha256, RAW};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A provider on loopback that answers every request with `status` and `body`, counting
    /// requests: enough HTTP/1.1 for the cold tier's raw block fetch.
    async fn provider(status: u16, body: &'static [u8]) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/vnd.ipld.raw\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                    let _ = conn.write_all(body).await;
                });
            }
        });
        (url, asked)
    }

    fn tier(providers: &[&str]) -> Arc<ColdTier> {
        let config = ColdConfig {
            providers: providers
                .iter()
                .map(|u| StaticProvider::Url((*u).to_string()))
                .collect(),
            ..ColdConfig::default()
        };
        ColdTier::new(&config, None, Metrics::new()).unwrap()
    }

    #[tokio::test]
    async fn a_block_is_taken_from_the_first_provider_that_serves_it_verified() {
        let cid = cid_v1_sha256(RAW, b"cold block");
        let (missing, _) = provider(404, b"not here").await;
        let (liar, _) = provider(200, b"other bytes").await;
        let (honest, honest_asked) = provider(200, b"cold block").await;
        let cold = tier(&[&missing, &liar, &honest]);
        let block = cold.get(&cid).await.unwrap();
        assert_eq!(block.data().as_ref(), b"cold block");
        assert_eq!(honest_asked.load(Ordering::SeqCst), 1);
        // The others may come first or not at all, as the tier ranks them; that a liar's
        // bytes are refused is checked where no honest provider answers (below).
    }

    #[tokio::test]
    async fn failures_of_every_provider_are_summarised_without_their_addresses() {
        let cid = cid_v1_sha256(RAW, b"nowhere");
        let (a, _) = provider(404, b"").await;
        let (b, _) = provider(410, b"").await;
        assert!(matches!(
            tier(&[&a, &b]).get(&cid).await,
            Err(TierError::NotFound(c)) if c == cid
        ));
        let (liar, _) = provider(200, b"not the block").await;
        let (broken, _) = provider(503, b"").await;
        match tier(&[&liar, &broken]).get(&cid).await {
            Err(TierError::Providers { failures }) => {
                assert_eq!(failures.len(), 2, "{failures:?}");
                for (public, _private) in &failures {
                    assert!(!public.contains("127.0.0.1"), "{public}");
                }
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_retrieval_dropped_mid_await_is_still_counted() {
        // A provider that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                conns.push(conn);
            }
        });
        let cold = tier(&[&url]);
        let req = DagRequest {
            root: cid_v1_sha256(RAW, b"never sent"),
            segments: Vec::new(),
            scope: crate::content::select::DagScope::All,
            entity_bytes: None,
        };
        let mut sink: Vec<Block> = Vec::new();
        let fetch = cold.fetch_dag(&req, &mut sink);
        assert!(tokio::time::timeout(Duration::from_millis(300), fetch)
            .await
            .is_err());
        let counted = |outcome: &str| {
            cold.metrics
                .tier_fetches
                .get_or_create(&crate::telemetry::TierLabels {
                    tier: "cold-dag".into(),
                    outcome: outcome.into(),
                })
                .get()
        };
        assert_eq!(counted("cancelled"), 1);
        assert_eq!(counted("ok"), 0);
        held.abort();
    }

    #[test]
    fn a_retrieval_nobody_could_be_asked_for_or_only_timed_out_is_not_a_not_found() {
        let cid = cid_v1_sha256(RAW, b"x");
        assert!(matches!(summarize(&cid, &[]), TierError::Upstream { .. }));
        let slow = [
            ("a".to_string(), Failure::Timeout("a: stalled".into())),
            ("b".to_string(), Failure::NotFound("b: 404".into())),
            ("c".to_string(), Failure::Declined("c: price".into())),
        ];
        assert!(matches!(summarize(&cid, &slow), TierError::Timeout(COLD)));
        let lied = [
            ("a".to_string(), Failure::NotFound("a: 404".into())),
            ("b".to_string(), Failure::Lie("b: extra block".into())),
        ];
        assert!(matches!(
            summarize(&cid, &lied),
            TierError::Providers { .. }
        ));
    }
}
