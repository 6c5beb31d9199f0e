//! Storage providers as cidgate sees them: observed scores (persisted across restarts), request
//! limits, and one verified CAR stream per request with connect, first-byte and idle deadlines.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::io::StreamReader;

use super::discovery::{Candidate, Origin};
use crate::ipld::car::{CarDecoder, CarItem};
use crate::ipld::MAX_BLOCK_SIZE;
use crate::path_encoding::encode_segment;
use crate::tiers::local::{unix_now, LocalStore, StoreError};
use crate::tiers::DagRequest;

/// Key of the provider book in the store's metadata table.
const BOOK_KEY: &str = "cold.providers";
/// TTFB samples kept per provider for its p90.
const RECENT: usize = 32;

/// How one provider request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The provider does not have it (404/410), or its stream ended before the DAG was complete.
    NotFound(String),
    /// Connect, first byte or an idle gap took too long.
    Timeout(String),
    /// Connection refused, reset, 5xx, malformed CAR.
    Error(String),
    /// A block did not hash to its CID.
    Corrupt(String),
    /// A block the DAG walk does not reach, or a CAR for another root.
    Lie(String),
    /// Our own limit (concurrency, price ceiling) stopped it; the provider is not to blame.
    Declined(String),
}

impl Failure {
    /// The metric outcome label.
    pub fn outcome(&self) -> &'static str {
        match self {
            Failure::NotFound(_) => "not_found",
            Failure::Timeout(_) => "timeout",
            Failure::Error(_) => "error",
            Failure::Corrupt(_) => "corrupt",
            Failure::Lie(_) => "lie",
            Failure::Declined(_) => "declined",
        }
    }

    /// The reason, for logs and error messages.
    /// What may be said of this failure in a public answer: the kind, and the HTTP status a
    /// provider answered, never its address.
    pub fn public(&self) -> String {
        match self {
            Failure::NotFound(_) => "not found".into(),
            Failure::Timeout(_) => "timed out".into(),
            Failure::Error(r) => match r.rsplit_once(" answered ") {
                Some((_, status)) => format!("answered {status}"),
                None => "failed".into(),
            },
            Failure::Corrupt(_) => "sent bytes that failed verification".into(),
            Failure::Lie(_) => "sent blocks outside the requested DAG".into(),
            Failure::Declined(_) => "not asked (price or concurrency limit)".into(),
        }
    }

    /// The full reason, naming the provider: for logs and the admin API only.
    pub fn reason(&self) -> &str {
        match self {
            Failure::NotFound(r)
            | Failure::Timeout(r)
            | Failure::Error(r)
            | Failure::Corrupt(r)
            | Failure::Lie(r)
            | Failure::Declined(r) => r,
        }
    }
}

/// What is known about one provider; persisted in the store.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProviderStats {
    /// Name for logs and metrics.
    pub label: String,
    /// Asking price in FIL per GiB.
    pub price_per_gib: f64,
    /// Where it was last found.
    pub origin: String,
    /// Requests that brought what was asked.
    pub successes: u64,
    /// Requests answered with "not here" or an incomplete DAG.
    pub not_found: u64,
    /// Requests that failed (errors, resets, 5xx).
    pub failures: u64,
    /// Requests that ran out of time.
    pub timeouts: u64,
    /// Blocks that did not hash to their CID.
    pub verify_failures: u64,
    /// Blocks or CARs that did not belong to the requested DAG.
    pub lies: u64,
    /// Verified bytes received.
    pub bytes: u64,
    /// Moving average of the time to first block, in milliseconds.
    pub ttfb_ms: Option<f64>,
    /// Moving average of throughput, in bytes per second.
    pub throughput: Option<f64>,
    /// Recent times to first block (ms), for the hedging threshold.
    pub recent_ttfb_ms: VecDeque<f64>,
    /// Penalty from recent failures; halves with each success.
    pub penalty: f64,
    /// The data is in a verified deal (seen in IPNI metadata).
    pub verified_deal: bool,
    /// The provider keeps an unsealed copy (seen in IPNI metadata).
    pub fast_retrieval: bool,
    /// The last failure.
    pub last_error: Option<String>,
    /// Unix time of the last request.
    pub last_used: u64,
}

/// Weight of a new sample in the moving averages.
const EMA: f64 = 0.3;

impl ProviderStats {
    /// Ranking score, higher is better: success rate, time to first byte and throughput, divided
    /// by the penalty for recent failures (lies and bad bytes weigh four times a failure), with
    /// boosts for verified deals and fast retrieval. Unknown providers start from a neutral guess
    /// (500 ms, 10 MiB/s).
    pub fn score(&self) -> f64 {
        let tries =
            self.successes + self.failures + self.timeouts + self.lies + self.verify_failures;
        let success =
            (self.successes as f64 + 1.0) / (tries as f64 + self.not_found as f64 * 0.5 + 2.0);
        let ttfb_s = self.ttfb_ms.unwrap_or(500.0) / 1000.0;
        let mibps = self.throughput.unwrap_or(10.0 * 1048576.0) / 1048576.0;
        let boost = 1.0
            + if self.verified_deal { 0.25 } else { 0.0 }
            + if self.fast_retrieval { 0.25 } else { 0.0 };
        success / (1.0 + ttfb_s) * (1.0 + mibps.min(10_000.0).ln_1p()) * boost
            / (1.0 + self.penalty)
    }

    /// The 90th percentile of recent times to first block.
    pub fn ttfb_p90(&self) -> Option<Duration> {
        if self.recent_ttfb_ms.len() < 5 {
            return None;
        }
        let mut v: Vec<f64> = self.recent_ttfb_ms.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let i = ((v.len() as f64) * 0.9).ceil() as usize - 1;
        v.get(i.min(v.len() - 1))
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
    }

    fn ema(old: Option<f64>, new: f64) -> Option<f64> {
        Some(match old {
            Some(o) => o + EMA * (new - o),
            None => new,
        })
    }

    /// Records a first block after `ttfb`.
    pub fn first_byte(&mut self, ttfb: Duration) {
        let ms = ttfb.as_secs_f64() * 1000.0;
        self.ttfb_ms = Self::ema(self.ttfb_ms, ms);
        self.recent_ttfb_ms.push_back(ms);
        while self.recent_ttfb_ms.len() > RECENT {
            self.recent_ttfb_ms.pop_front();
        }
    }

    /// Records a request that brought `bytes` in `took`.
    pub fn success(&mut self, bytes: u64, took: Duration) {
        self.successes += 1;
        self.bytes += bytes;
        self.penalty /= 2.0;
        // Tiny transfers say little about bandwidth.
        if bytes >= 256 * 1024 && !took.is_zero() {
            self.throughput = Self::ema(self.throughput, bytes as f64 / took.as_secs_f64());
        }
    }

    /// Records a failed request.
    pub fn failure(&mut self, f: &Failure) {
        match f {
            Failure::NotFound(_) => self.not_found += 1,
            Failure::Timeout(_) => {
                self.timeouts += 1;
                self.penalty += 1.0;
            }
            Failure::Error(_) => {
                self.failures += 1;
                self.penalty += 1.0;
            }
            Failure::Corrupt(_) => {
                self.verify_failures += 1;
                self.penalty += 4.0;
            }
            Failure::Lie(_) => {
                self.lies += 1;
                self.penalty += 4.0;
            }
            Failure::Declined(_) => return,
        }
        self.last_error = Some(format!("{}: {}", f.outcome(), f.reason()));
    }
}

/// One storage provider.
pub struct Provider {
    /// Base URL of its trustless gateway.
    pub url: String,
    stats: Mutex<ProviderStats>,
    permits: Arc<Semaphore>,
}

impl Provider {
    /// A copy of its statistics.
    pub fn stats(&self) -> ProviderStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Updates its statistics.
    pub fn update(&self, f: impl FnOnce(&mut ProviderStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
            s.last_used = unix_now();
        }
    }

    /// Its label.
    pub fn label(&self) -> String {
        self.stats
            .lock()
            .map(|s| s.label.clone())
            .unwrap_or_default()
    }

    /// Its asking price in FIL per GiB.
    pub fn price(&self) -> f64 {
        self.stats.lock().map(|s| s.price_per_gib).unwrap_or(0.0)
    }

    /// Requests to it in flight.
    pub fn in_flight(&self, per_provider: usize) -> usize {
        per_provider.saturating_sub(self.permits.available_permits())
    }

    /// A request slot: one of all providers' and one of this provider's, waited for up to
    /// `wait` (our own limits, so running out is [`Failure::Declined`], not the provider's fault).
    pub async fn slot(&self, overall: Arc<Semaphore>, wait: Duration) -> Result<Slot, Failure> {
        let permits = self.permits.clone();
        let got = tokio::time::timeout(wait, async {
            let a = overall.acquire_owned().await;
            let b = permits.acquire_owned().await;
            (a, b)
        })
        .await
        .map_err(|_| Failure::Declined("no request slot free in time".into()))?;
        match got {
            (Ok(a), Ok(b)) => Ok(Slot {
                _all: a,
                _provider: b,
            }),
            _ => Err(Failure::Declined("request slots closed".into())),
        }
    }
}

/// Held while a request to a provider is in flight.
pub struct Slot {
    _all: OwnedSemaphorePermit,
    _provider: OwnedSemaphorePermit,
}

/// Money spent on retrievals.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Spend {
    /// UTC day number (days since the epoch) of `today`.
    pub day: u64,
    /// FIL spent on that day.
    pub today: f64,
    /// FIL spent since the book was created.
    pub total: f64,
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Saved {
    providers: HashMap<String, ProviderStats>,
    spend: Spend,
}

/// Every provider seen, with scores persisted in the store.
pub struct ProviderBook {
    providers: Mutex<HashMap<String, Arc<Provider>>>,
    per_provider: usize,
    store: Option<LocalStore>,
    spend: Mutex<Spend>,
    dirty: AtomicBool,
}

impl ProviderBook {
    /// A book loaded from `store` (if any), limiting each provider to `per_provider` requests.
    /// An unreadable saved book is quarantined and the book starts empty; a store that cannot
    /// be read is an error (the next save would write over the scores and the spend).
    pub fn load(store: Option<LocalStore>, per_provider: usize) -> Result<Self, StoreError> {
        let saved: Saved = match &store {
            Some(s) => s.load(BOOK_KEY)?.unwrap_or_default(),
            None => Saved::default(),
        };
        let providers = saved
            .providers
            .into_iter()
            .map(|(url, stats)| {
                let p = Arc::new(Provider {
                    url: url.clone(),
                    stats: Mutex::new(stats),
                    permits: Arc::new(Semaphore::new(per_provider)),
                });
                (url, p)
            })
            .collect();
        Ok(Self {
            providers: Mutex::new(providers),
            per_provider,
            store,
            spend: Mutex::new(saved.spend),
            dirty: AtomicBool::new(false),
        })
    }

    /// The provider for a discovery candidate, refreshing what discovery said about it.
    pub fn provider(&self, c: &Candidate) -> Arc<Provider> {
        self.dirty.store(true, Ordering::Relaxed);
        let mut map = match self.providers.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let p = map
            .entry(c.url.clone())
            .or_insert_with(|| {
                Arc::new(Provider {
                    url: c.url.clone(),
                    stats: Mutex::new(ProviderStats::default()),
                    permits: Arc::new(Semaphore::new(self.per_provider)),
                })
            })
            .clone();
        if let Ok(mut s) = p.stats.lock() {
            s.label = c.label.clone();
            s.price_per_gib = c.price_per_gib;
            s.origin = match c.origin {
                Origin::Static => "static",
                Origin::Ipni => "ipni",
                Origin::Routing => "routing",
            }
            .into();
            s.verified_deal |= c.verified_deal;
            s.fast_retrieval |= c.fast_retrieval;
        }
        p
    }

    /// Every provider, best score first.
    pub fn all(&self) -> Vec<Arc<Provider>> {
        let mut v: Vec<Arc<Provider>> = self
            .providers
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| b.stats().score().total_cmp(&a.stats().score()));
        v
    }

    /// The limit of requests in flight per provider.
    pub fn per_provider(&self) -> usize {
        self.per_provider
    }

    /// Marks the book as changed (scores moved).
    pub fn touch(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// The spend record, rolled over to today.
    pub fn spend(&self) -> Spend {
        let mut s = match self.spend.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let today = unix_now() / 86_400;
        if s.day != today {
            s.day = today;
            s.today = 0.0;
        }
        s.clone()
    }

    /// Adds `amount` FIL to today's spend.
    pub fn charge(&self, amount: f64) {
        if amount <= 0.0 {
            return;
        }
        self.spend();
        if let Ok(mut s) = self.spend.lock() {
            s.today += amount;
            s.total += amount;
        }
        self.touch();
    }

    /// Writes the book to the store if it changed since the last save.
    pub fn save(&self) {
        let Some(store) = &self.store else { return };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let saved = Saved {
            providers: self
                .providers
                .lock()
                .map(|m| m.iter().map(|(k, p)| (k.clone(), p.stats())).collect())
                .unwrap_or_default(),
            spend: self.spend(),
        };
        if let Err(error) = store.save(BOOK_KEY, &saved) {
            self.dirty.store(true, Ordering::Relaxed);
            tracing::warn!(%error, "cannot save provider scores");
        }
    }
}

/// Deadlines of one provider request.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// From sending the request to the first block.
    pub first_byte: Duration,
    /// Between two blocks.
    pub idle: Duration,
}

type Frames = FramedRead<
    StreamReader<futures::stream::BoxStream<'static, std::io::Result<Bytes>>, Bytes>,
    CarDecoder,
>;

/// Blocks parsed ahead of verification: socket reads and CAR parsing run in their own task so
/// that the provider keeps sending while the previous blocks are hashed.
const PARSE_AHEAD: usize = 4;

enum State {
    Opening(BoxFuture<'static, Result<Frames, Failure>>),
    Streaming(tokio::sync::mpsc::Receiver<Result<CarItem, String>>),
    Done,
}

/// Reads `frames` into `tx` until the stream ends, fails, or the receiver goes away.
async fn parse_ahead(mut frames: Frames, tx: tokio::sync::mpsc::Sender<Result<CarItem, String>>) {
    loop {
        // A provider that stalls mid-body never ends `next`: stop as soon as the reader has
        // gone (timed out, failed over, or its client left), which releases the request's
        // permits and connection with it.
        let item = tokio::select! {
            _ = tx.closed() => return,
            item = frames.next() => item,
        };
        let Some(item) = item else { return };
        let failed = item.is_err();
        if tx.send(item.map_err(|e| e.to_string())).await.is_err() || failed {
            return;
        }
    }
}

/// The URL of a trustless CAR request for `req` at `base`.
pub fn car_url(base: &str, req: &DagRequest) -> String {
    let mut url = format!("{base}/ipfs/{}", req.root);
    for s in &req.segments {
        url.push('/');
        url.push_str(&encode_segment(s));
    }
    url.push_str("?format=car&dag-scope=");
    url.push_str(req.scope.as_str());
    if let Some(eb) = req.entity_bytes {
        let to = eb.to.map(|t| t.to_string()).unwrap_or_else(|| "*".into());
        url.push_str(&format!("&entity-bytes={}:{to}", eb.from));
    }
    url
}

/// Maps a provider's non-success status.
pub fn status_failure(status: http::StatusCode, url: &str) -> Failure {
    match status.as_u16() {
        404 | 410 => Failure::NotFound(format!("{url} answered {status}")),
        408 | 504 => Failure::Timeout(format!("{url} answered {status}")),
        _ => Failure::Error(format!("{url} answered {status}")),
    }
}

/// A transport error.
pub fn transport_failure(e: &reqwest::Error, url: &str) -> Failure {
    if e.is_timeout() {
        Failure::Timeout(format!("{url}: {e}"))
    } else {
        Failure::Error(format!("{url}: {e}"))
    }
}

/// One CAR response from one provider, parsed as it streams (blocks are not verified here).
pub struct CarStream {
    /// The provider asked.
    pub provider: Arc<Provider>,
    state: State,
    deadlines: Deadlines,
    started: Instant,
    root: Cid,
    /// Time to the first block, once it came.
    pub ttfb: Option<Duration>,
    /// Block bytes received.
    pub bytes: u64,
}

impl CarStream {
    /// Starts the request (lazily: nothing is sent until [`CarStream::next`] is polled).
    pub fn new(
        client: reqwest::Client,
        provider: Arc<Provider>,
        req: &DagRequest,
        deadlines: Deadlines,
        overall: Arc<Semaphore>,
    ) -> Self {
        let url = car_url(&provider.url, req);
        let p = provider.clone();
        let open = async move {
            let permits = p.slot(overall, deadlines.first_byte).await?;
            let resp = client
                .get(&url)
                .header(
                    "accept",
                    "application/vnd.ipld.car;version=1;order=dfs;dups=y",
                )
                .send()
                .await
                .map_err(|e| transport_failure(&e, &url))?;
            if !resp.status().is_success() {
                return Err(status_failure(resp.status(), &url));
            }
            let body = resp
                .bytes_stream()
                .map_err(std::io::Error::other)
                .map(move |chunk| {
                    // The permits live as long as the body is read.
                    let _held = &permits;
                    chunk
                })
                .boxed();
            Ok(FramedRead::new(StreamReader::new(body), CarDecoder::new()))
        };
        Self {
            provider,
            state: State::Opening(open.boxed()),
            deadlines,
            started: Instant::now(),
            root: req.root,
            ttfb: None,
            bytes: 0,
        }
    }

    /// When the stream started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The next block (unverified), `None` at a clean end.
    pub async fn next(&mut self) -> Result<Option<(Cid, Bytes)>, Failure> {
        let url = self.provider.url.clone();
        loop {
            match &mut self.state {
                State::Done => return Ok(None),
                State::Opening(fut) => {
                    let left = self
                        .deadlines
                        .first_byte
                        .saturating_sub(self.started.elapsed());
                    let frames = match tokio::time::timeout(left, fut).await {
                        Err(_) => Err(Failure::Timeout(format!("{url}: no answer in time"))),
                        Ok(r) => r,
                    };
                    match frames {
                        Ok(f) => {
                            let (tx, rx) = tokio::sync::mpsc::channel(PARSE_AHEAD);
                            tokio::spawn(parse_ahead(f, tx));
                            self.state = State::Streaming(rx);
                        }
                        Err(e) => {
                            self.state = State::Done;
                            return Err(e);
                        }
                    }
                }
                State::Streaming(items) => {
                    let wait = if self.ttfb.is_none() {
                        self.deadlines
                            .first_byte
                            .saturating_sub(self.started.elapsed())
                    } else {
                        self.deadlines.idle
                    };
                    let item = match tokio::time::timeout(wait, items.recv()).await {
                        Err(_) => {
                            self.state = State::Done;
                            return Err(Failure::Timeout(format!("{url}: stalled")));
                        }
                        Ok(None) => {
                            self.state = State::Done;
                            return Ok(None);
                        }
                        Ok(Some(Err(e))) => {
                            self.state = State::Done;
                            return Err(Failure::Error(format!("{url}: CAR stream: {e}")));
                        }
                        Ok(Some(Ok(item))) => item,
                    };
                    match item {
                        CarItem::Header(roots) => {
                            if !roots.is_empty()
                                && !roots.iter().any(|r| r.hash() == self.root.hash())
                            {
                                self.state = State::Done;
                                return Err(Failure::Lie(format!(
                                    "{url}: CAR for another root {}",
                                    roots[0]
                                )));
                            }
                        }
                        CarItem::Block(cid, data) => {
                            if data.len() > MAX_BLOCK_SIZE {
                                self.state = State::Done;
                                return Err(Failure::Error(format!("{url}: oversized block")));
                            }
                            if self.ttfb.is_none() {
                                self.ttfb = Some(self.started.elapsed());
                            }
                            self.bytes += data.len() as u64;
                            return Ok(Some((cid, data)));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_reward_speed_and_punish_lies() {
        let mut fast = ProviderStats::default();
        let mut slow = ProviderStats::default();
        for _ in 0..5 {
            fast.first_byte(Duration::from_millis(10));
            fast.success(1 << 20, Duration::from_millis(20));
            slow.first_byte(Duration::from_millis(900));
            slow.success(1 << 20, Duration::from_secs(2));
        }
        assert!(fast.score() > slow.score());
        let before = fast.score();
        fast.failure(&Failure::Lie("x".into()));
        assert!(fast.score() < before / 4.0);
        assert!(fast.last_error.as_deref().unwrap().starts_with("lie"));
        let mut declined = ProviderStats::default();
        let neutral = declined.score();
        declined.failure(&Failure::Declined("ours".into()));
        assert_eq!(declined.score(), neutral);
        let mut boosted = ProviderStats {
            verified_deal: true,
            fast_retrieval: true,
            ..Default::default()
        };
        assert!(boosted.score() > neutral);
        boosted.failure(&Failure::NotFound("no".into()));
        assert!(boosted.score() < 1.5 * neutral);
    }

    #[test]
    fn p90_needs_history() {
        let mut s = ProviderStats::default();
        assert_eq!(s.ttfb_p90(), None);
        for ms in 1..=10 {
            s.first_byte(Duration::from_millis(ms * 10));
        }
        assert_eq!(s.ttfb_p90(), Some(Duration::from_millis(90)));
    }

    #[test]
    fn book_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let c = Candidate {
            url: "http://127.0.0.1:1".into(),
            label: "sp1".into(),
            price_per_gib: 0.5,
            origin: Origin::Static,
            peer_id: None,
            verified_deal: true,
            fast_retrieval: false,
        };
        let book = ProviderBook::load(Some(store.clone()), 4).unwrap();
        book.provider(&c)
            .update(|s| s.failure(&Failure::Corrupt("bad".into())));
        book.charge(0.25);
        book.save();
        drop(book);
        let again = ProviderBook::load(Some(store), 4).unwrap();
        let all = again.all();
        assert_eq!(all.len(), 1);
        let s = all[0].stats();
        assert_eq!((s.verify_failures, s.label.as_str()), (1, "sp1"));
        assert!(s.verified_deal);
        assert_eq!(again.spend().today, 0.25);
        assert_eq!(
            car_url(
                "http://p",
                &DagRequest {
                    root: c_root(),
                    segments: vec!["a b".into()],
                    scope: crate::tiers::DagScope::Entity,
                    entity_bytes: Some(crate::tiers::EntityBytes { from: 5, to: None }),
                }
            ),
            format!(
                "http://p/ipfs/{}/a%20b?format=car&dag-scope=entity&entity-bytes=5:*",
                c_root()
            )
        );
    }

    fn c_root() -> Cid {
        crate::ipld::cid_v1_sha256(crate::ipld::RAW, b"root")
    }

    #[test]
    fn an_unreadable_book_is_quarantined_and_never_saved_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store
            .meta_put(BOOK_KEY, b"{\"spend\": {\"total\": \"lots\"}}")
            .unwrap();
        let book = ProviderBook::load(Some(store.clone()), 4).unwrap();
        assert!(book.all().is_empty());
        assert_eq!(book.spend().total, 0.0);
        let q = store.quarantine_list().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].key, BOOK_KEY);
        book.charge(0.5);
        book.save();
        assert_eq!(store.quarantine_list().unwrap(), q);
        let again = ProviderBook::load(Some(store), 4).unwrap();
        assert_eq!(again.spend().total, 0.5);
    }
}
