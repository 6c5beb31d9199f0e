//! The tiered block source: edge cache → embedded store → remote hot node → cold tier (storage
//! providers), filling the edge cache on the way back.
//!
//! Two kinds of coalescing keep upstream traffic to one fetch per missing thing:
//! - **blocks**: concurrent misses for one multihash share a single upstream request;
//! - **DAGs**: a response that will read a DAG (a file, a CAR, a TAR) first asks the remote tier
//!   for all of it as one CAR stream ([`BlockSource::prefetch`]). Identical requests join the
//!   stream in flight. Each arriving block is verified, cached, and handed at once to whoever
//!   waits for it (a tee, not wait-for-whole); the links of arrived blocks tell which CIDs the
//!   stream is expected to bring, so only those waits are parked on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cid::Cid;
use multihash::Multihash;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::cache::EdgeCache;
use super::cold::walk::DagWalk;
use super::local::LocalStore;
use super::{identity_block, BlockSource, DagRequest, DagSink, Interest, TierError};
use crate::coalesce::Coalescer;
use crate::denylist::DenylistHandle;
use crate::ipld::Block;
use crate::telemetry::{in_current_trace, trace, Metrics};

type Mh = Multihash<64>;
/// What a DAG stream hands a parked waiter: the block and the tier that brought it, or the
/// stream's failure; `None` when the stream ended without it (fetch it alone).
type FlightItem = Option<Result<(Block, &'static str), TierError>>;

/// Trips after consecutive failures of the remote hot node and skips it for a while, so a dead
/// or overloaded node costs one timeout, not one per request.
pub struct CircuitBreaker {
    failures: AtomicU32,
    threshold: u32,
    cooldown: Duration,
    open_until: Mutex<Option<Instant>>,
}

impl CircuitBreaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            failures: AtomicU32::new(0),
            threshold: threshold.max(1),
            cooldown,
            open_until: Mutex::new(None),
        }
    }

    /// Whether a call may go through now (half-open after the cooldown: one probe at a time).
    pub fn allow(&self) -> bool {
        let Ok(mut guard) = self.open_until.lock() else {
            return true;
        };
        match *guard {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                // Let this probe through; keep others out until it reports back.
                *guard = Some(Instant::now() + self.cooldown);
                true
            }
            None => true,
        }
    }

    /// The node answered (found or not found).
    pub fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if let Ok(mut g) = self.open_until.lock() {
            *g = None;
        }
    }

    /// The node failed or timed out.
    pub fn failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold {
            if let Ok(mut g) = self.open_until.lock() {
                if g.is_none() {
                    tracing::warn!(failures = n, cooldown = ?self.cooldown, "hot node circuit open");
                }
                *g = Some(Instant::now() + self.cooldown);
            }
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// How much longer the circuit stays open, when it is open now.
    pub fn open_for(&self) -> Option<Duration> {
        let until = (*self.open_until.lock().ok()?)?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Whether the circuit is open now.
    pub fn is_open(&self) -> bool {
        self.open_until
            .lock()
            .map(|g| g.is_some_and(|u| Instant::now() < u))
            .unwrap_or(false)
    }
}

/// Bytes a DAG stream may deliver ahead of its readers before it waits for them.
const READ_AHEAD_BYTES: usize = 8 << 20;
/// Bytes all DAG streams together may hold for their readers; past it, a stream that is ahead
/// of its own readers at all waits for them.
const READY_TOTAL_BYTES: usize = 128 << 20;
/// A stream whose delivered blocks nobody took for this long stops (its client went away).
const ABANDON_AFTER: Duration = Duration::from_secs(10);
/// Delivered blocks of a finished stream that nobody took are dropped after this long.
const READY_TTL: Duration = Duration::from_secs(30);

/// Gauges of the DAG streams, so that leaks show (and tests can assert there are none).
#[derive(Default)]
struct FlightGauges {
    streams: Gauge,
    waiters: Gauge,
    ready_bytes: Gauge,
}

#[derive(Default)]
struct Flights {
    next_id: u64,
    active: HashMap<DagRequest, u64>,
    /// CIDs an active DAG stream is expected to bring, and which stream.
    expected: HashMap<Mh, u64>,
    by_flight: HashMap<u64, Vec<Mh>>,
    waiters: HashMap<Mh, Vec<oneshot::Sender<FlightItem>>>,
    /// Delivered blocks no reader has taken yet, with their stream and tier. They are in the
    /// cache too, but a small or busy cache may evict them before a lagging reader gets there.
    ready: HashMap<Mh, (u64, Block, &'static str)>,
    /// Bytes in `ready`.
    ready_total: usize,
    progress: HashMap<u64, Progress>,
    gauges: FlightGauges,
}

impl Flights {
    /// Mirrors the stream counts in the gauges.
    fn publish(&self) {
        let running = self
            .progress
            .values()
            .filter(|p| p.landed.is_none())
            .count();
        self.gauges.streams.set(running as i64);
        let parked: usize = self.waiters.values().map(Vec::len).sum();
        self.gauges.waiters.set(parked as i64);
        self.gauges.ready_bytes.set(self.ready_total as i64);
    }

    /// Drops the undelivered blocks of streams `ids` and forgets those streams.
    fn forget(&mut self, ids: &[u64], ready_count: &AtomicUsize) {
        if ids.is_empty() {
            return;
        }
        let before = self.ready.len();
        self.ready.retain(|_, (owner, _, _)| !ids.contains(owner));
        ready_count.fetch_sub(before - self.ready.len(), Ordering::AcqRel);
        self.ready_total = self.ready.values().map(|(_, b, _)| b.data().len()).sum();
        for id in ids {
            self.progress.remove(id);
        }
    }

    /// Forgets landed streams whose blocks waited longer than [`READY_TTL`] for readers.
    fn prune_stale(&mut self, ready_count: &AtomicUsize) {
        let now = Instant::now();
        let stale: Vec<u64> = self
            .progress
            .iter()
            .filter(|(_, p)| p.landed.is_some_and(|t| now.duration_since(t) >= READY_TTL))
            .map(|(id, _)| *id)
            .collect();
        self.forget(&stale, ready_count);
    }
}

/// A caller's interest in DAG stream `id` (see [`crate::tiers::Interest`]).
struct StreamInterest {
    flights: Arc<Mutex<Flights>>,
    ready_count: Arc<AtomicUsize>,
    id: u64,
}

impl Drop for StreamInterest {
    fn drop(&mut self) {
        let Ok(mut f) = self.flights.lock() else {
            return;
        };
        let Some(p) = f.progress.get_mut(&self.id) else {
            return;
        };
        p.interest = p.interest.saturating_sub(1);
        if p.interest > 0 {
            return;
        }
        if p.landed.is_none() {
            // Nobody reads this stream any more: stop it (its task lands it).
            p.cancel.cancel();
        } else {
            // Landed and nobody left to take what it delivered.
            f.forget(&[self.id], &self.ready_count);
        }
        f.publish();
    }
}

/// A reader parked on a DAG stream for one block; dropping it (answered, timed out or
/// cancelled) removes its closed slot, so readers that left are not counted or kept.
struct Parked<'a> {
    flights: &'a Mutex<Flights>,
    mh: Mh,
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        let Ok(mut f) = self.flights.lock() else {
            return;
        };
        if let Some(ws) = f.waiters.get_mut(&self.mh) {
            ws.retain(|w| !w.is_closed());
            if ws.is_empty() {
                f.waiters.remove(&self.mh);
            }
        }
        f.publish();
    }
}

/// How far a stream is ahead of its readers.
struct Progress {
    ready_bytes: usize,
    last_take: Instant,
    landed: Option<Instant>,
    /// Callers holding an [`crate::tiers::Interest`] in this stream.
    interest: usize,
    /// Stops the stream when the last interest is dropped.
    cancel: CancellationToken,
}

/// The sink of one DAG stream: delivers to parked readers, the cache and the ready set, and
/// holds the stream back while its readers are more than [`READ_AHEAD_BYTES`] behind.
struct FlightSink {
    /// The walk of the stream's request: which children each block makes expected.
    walk: DagWalk,
    flights: Arc<Mutex<Flights>>,
    cache: EdgeCache,
    ready_count: Arc<AtomicUsize>,
    room: Arc<Notify>,
    id: u64,
    tier: &'static str,
    denylist: DenylistHandle,
}

#[async_trait]
impl DagSink for FlightSink {
    async fn accept(&mut self, block: Block) -> bool {
        // A remote may send a blocked block inside a CAR: it is neither cached nor handed to
        // a reader, and what it links to is not expected from this stream.
        {
            let list = self.denylist.load();
            if !list.is_empty() && list.check_cid(block.cid()).is_some() {
                return true;
            }
        }
        let mut children = Vec::new();
        // A block the walk does not reach (another stream already brought it, or a remote
        // that sends extra) is still verified and worth caching; it just expects nothing.
        let _ = self
            .walk
            .accept_expecting(block.cid(), block.data(), &mut children);
        TieredSource::deliver(
            &self.flights,
            &self.cache,
            &self.ready_count,
            self.id,
            block,
            &children,
            self.tier,
        );
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (ahead, total, last_take) = match self.flights.lock() {
                Ok(f) => match f.progress.get(&self.id) {
                    Some(p) => (p.ready_bytes, f.ready_total, p.last_take),
                    None => return true,
                },
                Err(_) => return true,
            };
            // A stream its readers have caught up with always goes on, so the global bound
            // cannot starve the stream a reader is waiting for.
            if ahead == 0 || (ahead <= READ_AHEAD_BYTES && total <= READY_TOTAL_BYTES) {
                return true;
            }
            let idle = last_take.elapsed();
            if idle >= ABANDON_AFTER {
                return false;
            }
            let _ = tokio::time::timeout(ABANDON_AFTER - idle, notified).await;
        }
    }
}

/// The tiered block source.
pub struct TieredSource {
    cache: EdgeCache,
    local: Option<LocalStore>,
    remote: Option<Arc<dyn BlockSource>>,
    cold: Option<Arc<dyn BlockSource>>,
    breaker: Arc<CircuitBreaker>,
    /// How long a request waits for a block a DAG stream is expected to bring.
    flight_wait: Duration,
    /// Block fetches outside DAG streams, one per multihash.
    inflight: Coalescer<Mh, Result<Block, TierError>>,
    flights: Arc<Mutex<Flights>>,
    /// Entries in `Flights::ready`, so that reads skip the lock when no stream is ahead.
    ready_count: Arc<AtomicUsize>,
    /// Signalled when a reader takes a ready block.
    room: Arc<Notify>,
    /// Blocked blocks are refused before any tier is asked (design invariant 9).
    denylist: DenylistHandle,
    metrics: Arc<Metrics>,
}

impl TieredSource {
    /// Cache in front of the local store and, optionally, a remote hot node.
    pub fn new(
        cache: EdgeCache,
        local: Option<LocalStore>,
        remote: Option<Arc<dyn BlockSource>>,
        breaker: CircuitBreaker,
        remote_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::with_cold(cache, local, remote, None, breaker, remote_timeout, metrics)
    }

    /// Like [`TieredSource::new`], with a cold tier asked after the hot node; a client waits
    /// for it up to `cold_deadline`.
    pub fn with_cold(
        cache: EdgeCache,
        local: Option<LocalStore>,
        remote: Option<Arc<dyn BlockSource>>,
        cold: Option<(Arc<dyn BlockSource>, Duration)>,
        breaker: CircuitBreaker,
        remote_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let flight_wait = match &cold {
            Some((_, d)) => remote_timeout.max(*d),
            None => remote_timeout,
        };
        Self {
            cache,
            local,
            remote,
            cold: cold.map(|(c, _)| c),
            breaker: Arc::new(breaker),
            flight_wait,
            inflight: Coalescer::with_gauge(Some(metrics.work("block_flights"))),
            flights: Arc::new(Mutex::new(Flights {
                gauges: FlightGauges {
                    streams: metrics.work("dag_streams"),
                    waiters: metrics.work("dag_waiters"),
                    ready_bytes: metrics.work("dag_ready_bytes"),
                },
                ..Flights::default()
            })),
            ready_count: Arc::new(AtomicUsize::new(0)),
            room: Arc::new(Notify::new()),
            denylist: DenylistHandle::default(),
            metrics,
        }
    }

    /// Refuses the blocks `denylist` blocks, whatever tier holds them.
    pub fn with_denylist(mut self, denylist: DenylistHandle) -> Self {
        self.denylist = denylist;
        self
    }

    /// The blocked-content error for `cid`, if the denylist blocks it.
    fn blocked(&self, cid: &Cid) -> Option<TierError> {
        let list = self.denylist.load();
        if list.is_empty() {
            return None;
        }
        list.check_cid(cid).map(|b| TierError::Blocked {
            cid: *cid,
            status: b.status,
        })
    }

    /// The edge cache.
    pub fn cache(&self) -> &EdgeCache {
        &self.cache
    }

    /// The remote hot node, if any (retrievability checks ask it directly).
    pub fn hot_node(&self) -> Option<Arc<dyn BlockSource>> {
        self.remote.clone()
    }

    /// Where a block can come from besides this machine: the hot node, then the cold tier.
    pub fn upstreams(&self) -> Vec<Arc<dyn BlockSource>> {
        self.remote
            .iter()
            .chain(self.cold.iter())
            .cloned()
            .collect()
    }

    /// The remote hot node's circuit breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The remote hot node's circuit breaker, to watch from elsewhere (readiness, metrics);
    /// `None` without a remote hot node (the embedded store has no breaker).
    pub fn hot_breaker(&self) -> Option<Arc<CircuitBreaker>> {
        self.remote.as_ref().map(|_| self.breaker.clone())
    }

    async fn read_local(&self, cid: &Cid) -> Option<Block> {
        let store = self.local.as_ref()?;
        let start = Instant::now();
        let r = store.get(cid).await;
        let took = start.elapsed();
        self.metrics
            .fetch("store", super::remote::outcome(&r), took);
        match r {
            Ok(b) => {
                trace("store", took);
                Some(b)
            }
            Err(TierError::NotFound(_)) => None,
            Err(e) => {
                // A corrupt or unreadable local block is not fatal: a remote tier may have it.
                tracing::warn!(%cid, error = %e, "store read failed");
                None
            }
        }
    }

    /// The blocks `req` selects that neither the cache nor the store holds, as far as the
    /// local blocks show (children of a missing block are unknown until it arrives).
    async fn missing_locally(&self, req: &DagRequest) -> Vec<Cid> {
        let mut walk = DagWalk::new(req.clone());
        let mut missing = Vec::new();
        // Bounded: a range selects a few inner nodes and the leaves it covers.
        for _ in 0..4096 {
            let pending: Vec<Cid> = walk
                .pending()
                .into_iter()
                .filter(|c| !missing.contains(c))
                .collect();
            if pending.is_empty() {
                break;
            }
            for cid in pending {
                let block = match self.cache.get_uncounted(&cid) {
                    Some(b) => b,
                    None => match self.read_local(&cid).await {
                        Some(b) => b,
                        None => {
                            missing.push(cid);
                            continue;
                        }
                    },
                };
                if walk.accept(&cid, block.data()).is_err() {
                    missing.push(cid);
                }
            }
        }
        missing
    }

    /// A block a DAG stream delivered ahead of this reader, with the tier that brought it.
    fn take_ready(&self, cid: &Cid) -> Option<(Block, &'static str)> {
        if self.ready_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let taken = {
            let mut f = self.flights.lock().ok()?;
            self.take_ready_locked(&mut f, cid)
        };
        if taken.is_some() {
            self.room.notify_waiters();
        }
        taken
    }

    fn take_ready_locked(&self, f: &mut Flights, cid: &Cid) -> Option<(Block, &'static str)> {
        let (id, block, tier) = f.ready.remove(cid.hash())?;
        self.ready_count.fetch_sub(1, Ordering::AcqRel);
        f.ready_total = f.ready_total.saturating_sub(block.data().len());
        f.gauges.ready_bytes.set(f.ready_total as i64);
        if let Some(p) = f.progress.get_mut(&id) {
            p.ready_bytes = p.ready_bytes.saturating_sub(block.data().len());
            p.last_take = Instant::now();
        }
        Some((block, tier))
    }

    /// Waits for `cid` if an active DAG stream is expected to bring it.
    async fn await_flight(&self, cid: &Cid) -> Option<Result<Block, TierError>> {
        // Declared before the receiver, so dropped after it: the slot is closed by then.
        let _parked = Parked {
            flights: &self.flights,
            mh: *cid.hash(),
        };
        let rx = {
            let mut f = self.flights.lock().ok()?;
            if let Some((block, tier)) = self.take_ready_locked(&mut f, cid) {
                drop(f);
                self.room.notify_waiters();
                trace(tier, Duration::ZERO);
                return Some(Ok(block));
            }
            if !f.expected.contains_key(cid.hash()) {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            f.waiters.entry(*cid.hash()).or_default().push(tx);
            f.publish();
            rx
        };
        // It may have arrived between the cache miss and registering.
        if let Some(b) = self.cache.get_uncounted(cid) {
            return Some(Ok(b));
        }
        self.metrics.coalesced_waiters.inc();
        let start = Instant::now();
        let tier = if self.remote.is_some() { "hot" } else { "cold" };
        let got = match tokio::time::timeout(self.flight_wait, rx).await {
            Err(_) => return Some(Err(TierError::Timeout(tier))),
            Ok(Err(_)) => return None,
            Ok(Ok(item)) => item?,
        };
        match got {
            Ok((block, tier)) => {
                trace(tier, start.elapsed());
                Some(Ok(Block::already_verified(*cid, block.data().clone())))
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// One upstream block fetch per multihash (hot node, then cold tier), shared by every
    /// concurrent caller. The fetch runs in a task of its own ([`Coalescer`]): it leaves the
    /// in-flight map when it ends, whoever still waits, so its failure is never the answer to
    /// a later request; and it is aborted when every caller has left.
    async fn fetch_remote(&self, cid: &Cid) -> Result<Block, TierError> {
        if self.remote.is_none() && self.cold.is_none() {
            return Err(TierError::NotFound(*cid));
        }
        let remote = self.remote.clone();
        let cold = self.cold.clone();
        let breaker = self.breaker.clone();
        let cache = self.cache.clone();
        let deadline = self.flight_wait;
        // Providers are asked one after another; the client waits at most the cold deadline.
        let ask_cold = move |cold: Arc<dyn BlockSource>, c: Cid| async move {
            tokio::time::timeout(deadline, cold.get(&c))
                .await
                .unwrap_or(Err(TierError::Timeout("cold")))
        };
        let c = *cid;
        let start = Instant::now();
        let (result, joined) = self
            .inflight
            .run(*cid.hash(), move || in_current_trace(async move {
                tracing::debug!(cid = %c, "block fetch outside any DAG stream");
                let hot = match &remote {
                    Some(r) => Some(hot_block(r.as_ref(), &breaker, &c).await),
                    None => None,
                };
                let result = match (hot, cold) {
                    (Some(Ok(b)), _) => Ok(b),
                    (None, Some(cold)) => ask_cold(cold, c).await,
                    (Some(Err(e)), Some(cold)) => {
                        if !e.is_not_found() {
                            tracing::debug!(cid = %c, error = %e, "hot node failed; asking the cold tier");
                        }
                        ask_cold(cold, c).await
                    }
                    (Some(Err(e)), None) => Err(e),
                    (None, None) => Err(TierError::NotFound(c)),
                };
                if let Ok(b) = &result {
                    cache.insert_fetched(b);
                }
                result
            }))
            .await;
        if joined {
            self.metrics.coalesced_waiters.inc();
            if self.remote.is_some() {
                trace("hot", start.elapsed());
            }
        }
        let block = result.map_err(|_| TierError::Unavailable {
            tier: "hot",
            reason: "the fetch ended without a result".into(),
        })??;
        Ok(Block::already_verified(*cid, block.data().clone()))
    }

    fn deliver(
        flights: &Mutex<Flights>,
        cache: &EdgeCache,
        ready_count: &AtomicUsize,
        id: u64,
        block: Block,
        children: &[Cid],
        tier: &'static str,
    ) {
        let Ok(mut f) = flights.lock() else {
            cache.insert_fetched(&block);
            return;
        };
        // Children are registered before the block becomes visible in the cache: a reader that
        // sees the parent must find its children expected, or it would fetch them alone. Only
        // the children this stream's request selects are claimed (a byte range brings a few of
        // a file's leaves); a child another stream claimed stays with it.
        for l in children {
            if cache.contains(l) {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(v) = f.expected.entry(*l.hash()) {
                v.insert(id);
                f.by_flight.entry(id).or_default().push(*l.hash());
            }
        }
        cache.insert_fetched(&block);
        let mh = *block.cid().hash();
        if f.expected.get(&mh) == Some(&id) {
            f.expected.remove(&mh);
        }
        match f.waiters.remove(&mh) {
            Some(ws) => {
                f.gauges.waiters.dec_by(ws.len() as i64);
                for w in ws {
                    let _ = w.send(Some(Ok((block.clone(), tier))));
                }
                if let Some(p) = f.progress.get_mut(&id) {
                    p.last_take = Instant::now();
                }
            }
            None if !f.ready.contains_key(&mh) => {
                if let Some(p) = f.progress.get_mut(&id) {
                    p.ready_bytes += block.data().len();
                }
                f.ready_total += block.data().len();
                f.gauges.ready_bytes.set(f.ready_total as i64);
                f.ready.insert(mh, (id, block, tier));
                ready_count.fetch_add(1, Ordering::AcqRel);
            }
            None => {}
        }
    }

    /// Ends flight `id`: its remaining waiters get `error`, or fall back to block fetches.
    /// What it delivered stays for its readers while some caller still holds an interest in it,
    /// at most [`READY_TTL`].
    fn land(
        flights: &Arc<Mutex<Flights>>,
        ready_count: &Arc<AtomicUsize>,
        req: &DagRequest,
        id: u64,
        error: Option<TierError>,
    ) {
        let Ok(mut f) = flights.lock() else { return };
        let interested = match f.progress.get_mut(&id) {
            Some(p) => {
                p.landed = Some(Instant::now());
                p.interest > 0
            }
            None => false,
        };
        f.prune_stale(ready_count);
        if !interested {
            f.forget(&[id], ready_count);
        }
        if f.active.get(req) == Some(&id) {
            f.active.remove(req);
        }
        for mh in f.by_flight.remove(&id).unwrap_or_default() {
            if f.expected.get(&mh) == Some(&id) {
                f.expected.remove(&mh);
                // Nothing else will bring it: the waiters get the stream's failure, or fall
                // back to a block fetch when it simply did not include this block.
                if let Some(ws) = f.waiters.remove(&mh) {
                    for w in ws {
                        let _ = w.send(error.clone().map(Err));
                    }
                }
            }
        }
        f.publish();
        drop(f);
        if interested {
            // Blocks nobody came for are dropped once they are stale, even if no other
            // stream lands to prune them.
            let (flights, ready_count) = (flights.clone(), ready_count.clone());
            tokio::spawn(async move {
                tokio::time::sleep(READY_TTL).await;
                if let Ok(mut f) = flights.lock() {
                    f.prune_stale(&ready_count);
                    f.publish();
                }
            });
        }
    }
}

#[async_trait]
impl BlockSource for TieredSource {
    async fn get(&self, cid: &Cid) -> Result<Block, TierError> {
        if let Some(b) = identity_block(cid) {
            return Ok(b);
        }
        if let Some(e) = self.blocked(cid) {
            return Err(e);
        }
        let start = Instant::now();
        if let Some((b, tier)) = self.take_ready(cid) {
            trace(tier, start.elapsed());
            return Ok(Block::already_verified(*cid, b.data().clone()));
        }
        if let Some(b) = self.cache.get(cid) {
            trace(crate::telemetry::CACHE_TIER, start.elapsed());
            return Ok(b);
        }
        if let Some(b) = self.read_local(cid).await {
            self.cache.insert(&b);
            return Ok(b);
        }
        if let Some(r) = self.await_flight(cid).await {
            return r;
        }
        // A DAG stream may have brought it (and ended) while the store was asked.
        if let Some((b, tier)) = self.take_ready(cid) {
            trace(tier, start.elapsed());
            return Ok(b);
        }
        if let Some(b) = self.cache.get_uncounted(cid) {
            trace(crate::telemetry::CACHE_TIER, start.elapsed());
            return Ok(b);
        }
        self.fetch_remote(cid).await
    }

    async fn has(&self, cid: &Cid) -> Result<bool, TierError> {
        if identity_block(cid).is_some() || self.cache.contains(cid) {
            return Ok(true);
        }
        if let Some(store) = &self.local {
            if store.has(cid).await? {
                return Ok(true);
            }
        }
        match &self.remote {
            Some(r) if self.breaker.allow() => match r.has(cid).await {
                Ok(h) => {
                    self.breaker.success();
                    Ok(h)
                }
                Err(e) => {
                    self.breaker.failure();
                    Err(e)
                }
            },
            Some(_) => Err(TierError::CircuitOpen("hot")),
            None => Ok(false),
        }
    }

    fn name(&self) -> &'static str {
        "tiered"
    }

    fn note_cache_hit(&self) {
        self.metrics.cache_hits.inc();
    }

    fn cached_block(&self, cid: &Cid) -> Option<Block> {
        // A block that is not there counts no miss: the full path that follows asks again and
        // counts it.
        self.cache.get_if_held(cid)
    }

    fn holds_in_memory(&self, cid: &Cid) -> bool {
        self.cache.contains(cid)
    }

    async fn holds_locally(&self, cid: &Cid) -> Result<bool, TierError> {
        if identity_block(cid).is_some() || self.cache.contains(cid) {
            return Ok(true);
        }
        match &self.local {
            Some(store) => store.has(cid).await,
            None => Ok(false),
        }
    }

    async fn prefetch(&self, req: &DagRequest) -> Interest {
        if self.remote.is_none() && self.cold.is_none() || self.blocked(&req.root).is_some() {
            return Interest::none();
        }
        let root_local = self.cache.contains(&req.root)
            || match &self.local {
                Some(store) => store.has(&req.root).await.unwrap_or(false),
                None => false,
            };
        // Content rooted here needs no stream (a missing block deeper down is fetched alone),
        // except for a byte range, whose blocks are checked: a range read of a large file whose
        // root is cached would otherwise fetch every missing block on its own.
        let missing = match (root_local, req.entity_bytes.is_some()) {
            (false, _) => Vec::new(),
            (true, false) => return Interest::none(),
            (true, true) => {
                let m = self.missing_locally(req).await;
                if m.is_empty() {
                    return Interest::none();
                }
                m
            }
        };
        let interest = |id| {
            Interest::new(StreamInterest {
                flights: self.flights.clone(),
                ready_count: self.ready_count.clone(),
                id,
            })
        };
        let (id, cancel) = {
            let Ok(mut f) = self.flights.lock() else {
                return Interest::none();
            };
            if let Some(id) = f.active.get(req).copied() {
                if let Some(p) = f.progress.get_mut(&id) {
                    p.interest += 1;
                    self.metrics.coalesced_waiters.inc();
                    return interest(id);
                }
            }
            // The store was asked outside the lock: a stream for the same request may have
            // delivered the root and landed meanwhile (streams cache under this lock).
            if !root_local && req.entity_bytes.is_none() && self.cache.contains(&req.root) {
                return Interest::none();
            }
            // Likewise for a locally rooted range: what was missing may have landed since.
            if !missing.is_empty() && missing.iter().all(|c| self.cache.contains(c)) {
                return Interest::none();
            }
            f.next_id += 1;
            let id = f.next_id;
            f.active.insert(req.clone(), id);
            f.expected.insert(*req.root.hash(), id);
            f.by_flight.entry(id).or_default().push(*req.root.hash());
            // Readers of a locally rooted range get past the root at once: what they will miss
            // must be known to be coming before the stream's first block arrives.
            for cid in &missing {
                let mh = *cid.hash();
                if let std::collections::hash_map::Entry::Vacant(v) = f.expected.entry(mh) {
                    v.insert(id);
                    f.by_flight.entry(id).or_default().push(mh);
                }
            }
            let cancel = CancellationToken::new();
            f.progress.insert(
                id,
                Progress {
                    ready_bytes: 0,
                    last_take: Instant::now(),
                    landed: None,
                    interest: 1,
                    cancel: cancel.clone(),
                },
            );
            f.publish();
            (id, cancel)
        };
        // Ask the breaker only once the flight is really started: a half-open breaker lets
        // exactly one probe through.
        let remote = self.remote.clone().filter(|_| self.breaker.allow());
        let cold = self.cold.clone();
        let flights = self.flights.clone();
        let ready_count = self.ready_count.clone();
        let sink = |tier| FlightSink {
            walk: DagWalk::new(req.clone()),
            flights: self.flights.clone(),
            cache: self.cache.clone(),
            ready_count: self.ready_count.clone(),
            room: self.room.clone(),
            id,
            tier,
            denylist: self.denylist.clone(),
        };
        let (mut hot_sink, mut cold_sink) = (sink("hot"), sink("cold"));
        let req = req.clone();
        let metrics = self.metrics.clone();
        let breaker = self.breaker.clone();
        let fetch = {
            let req = req.clone();
            async move {
                let mut result = Err(TierError::NotFound(req.root));
                if let Some(remote) = remote {
                    let start = Instant::now();
                    result = remote.fetch_dag(&req, &mut hot_sink).await;
                    match &result {
                        Ok(()) | Err(TierError::NotFound(_)) => breaker.success(),
                        Err(e) => {
                            tracing::debug!(root = %req.root, error = %e, "DAG stream from the hot node ended early");
                            if matches!(
                                e,
                                TierError::Upstream { .. }
                                    | TierError::Timeout(_)
                                    | TierError::Corrupt { .. }
                            ) {
                                breaker.failure();
                            }
                        }
                    }
                    metrics.fetch("hot-dag", super::remote::outcome(&result), start.elapsed());
                }
                if let (Err(_), Some(cold)) = (&result, cold) {
                    result = cold.fetch_dag(&req, &mut cold_sink).await;
                }
                match result {
                    Ok(()) | Err(TierError::NotFound(_)) => None,
                    Err(e) => Some(e),
                }
            }
        };
        let flight = async move {
            // Cancelled when the last interest is dropped: parked readers then fetch alone.
            let error = tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                e = fetch => e,
            };
            TieredSource::land(&flights, &ready_count, &req, id, error);
        };
        // Discovery and retrieval time show in the Server-Timing of the request that started it.
        tokio::spawn(in_current_trace(flight));
        interest(id)
    }
}

/// One block from the hot node, through its circuit breaker.
async fn hot_block(
    remote: &dyn BlockSource,
    breaker: &CircuitBreaker,
    cid: &Cid,
) -> Result<Block, TierError> {
    if !breaker.allow() {
        return Err(TierError::CircuitOpen("hot"));
    }
    let start = Instant::now();
    let result = remote.get(cid).await;
    match &result {
        Ok(_) | Err(TierError::NotFound(_)) => breaker.success(),
        Err(_) => breaker.failure(),
    }
    trace("hot", start.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{cid_v1_sha256, RAW};
    use bytes::Bytes;

    #[test]
    fn the_breaker_opens_after_its_threshold_and_a_success_closes_it() {
        let b = CircuitBreaker::new(2, Duration::from_secs(3600));
        assert!(b.allow());
        b.failure();
        assert!(b.allow() && !b.is_open(), "one failure is not enough");
        b.failure();
        assert!(b.is_open() && !b.allow());
        assert!(b.open_for().is_some_and(|d| d > Duration::from_secs(3000)));
        b.success();
        assert!(b.allow() && !b.is_open() && b.failures() == 0);
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_through_at_a_time() {
        let b = CircuitBreaker::new(1, Duration::from_millis(200));
        b.failure();
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(250));
        assert!(b.allow(), "the cooldown is over: a probe");
        assert!(!b.allow(), "a second caller waits for the probe's outcome");
        b.failure();
        assert!(!b.allow(), "a failed probe opens the circuit again");
    }

    /// A hot node that holds one block, counts requests, answers only when released, and
    /// fails its first `fail_first` requests.
    struct GatedNode {
        block: Block,
        requests: AtomicU32,
        fail_first: u32,
        gate: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl BlockSource for GatedNode {
        async fn get(&self, cid: &Cid) -> Result<Block, TierError> {
            let n = self.requests.fetch_add(1, Ordering::SeqCst);
            let _pass = self.gate.acquire().await;
            if n < self.fail_first {
                return Err(TierError::Upstream {
                    tier: "hot",
                    reason: "502".into(),
                });
            }
            if cid == self.block.cid() {
                Ok(self.block.clone())
            } else {
                Err(TierError::NotFound(*cid))
            }
        }
        async fn has(&self, cid: &Cid) -> Result<bool, TierError> {
            Ok(cid == self.block.cid())
        }
        fn name(&self) -> &'static str {
            "gated"
        }
    }

    fn source(fail_first: u32) -> (Arc<GatedNode>, Arc<TieredSource>, Cid) {
        let data = Bytes::from_static(b"a block behind a slow hot node");
        let cid = cid_v1_sha256(RAW, &data);
        let node = Arc::new(GatedNode {
            block: Block::verified(cid, data).unwrap(),
            requests: AtomicU32::new(0),
            fail_first,
            gate: tokio::sync::Semaphore::new(0),
        });
        let metrics = Metrics::new();
        let tiered = TieredSource::new(
            EdgeCache::new(8 << 20, metrics.clone()).unwrap(),
            None,
            Some(node.clone() as Arc<dyn BlockSource>),
            CircuitBreaker::new(100, Duration::from_secs(60)),
            Duration::from_secs(30),
            metrics,
        );
        (node, Arc::new(tiered), cid)
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_upstream_request() {
        let (node, tiered, cid) = source(0);
        let callers: Vec<_> = (0..20)
            .map(|_| {
                let t = tiered.clone();
                tokio::spawn(async move { t.get(&cid).await })
            })
            .collect();
        while node.requests.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        node.gate.add_permits(100);
        for c in callers {
            assert_eq!(c.await.unwrap().unwrap().cid(), &cid);
        }
        assert_eq!(node.requests.load(Ordering::SeqCst), 1);
        // Now cached: no further request.
        tiered.get(&cid).await.unwrap();
        assert_eq!(node.requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failure_is_the_answer_of_its_own_flight_only() {
        let (node, tiered, cid) = source(1);
        node.gate.add_permits(100);
        assert!(tiered.get(&cid).await.is_err());
        assert_eq!(tiered.get(&cid).await.unwrap().cid(), &cid);
        assert_eq!(node.requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_flight_whose_callers_all_left_stops_and_leaves_nothing_behind() {
        let (node, tiered, cid) = source(0);
        let t = tiered.clone();
        let caller = tokio::spawn(async move { t.get(&cid).await });
        while node.requests.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        caller.abort();
        let _ = caller.await;
        node.gate.add_permits(100);
        // The next caller starts a flight of its own (the old one was dropped with its
        // caller), and gets the block.
        assert_eq!(tiered.get(&cid).await.unwrap().cid(), &cid);
        assert_eq!(node.requests.load(Ordering::SeqCst), 2);
    }
}
