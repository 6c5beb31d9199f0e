//! Demand per root CID in bounded memory: a Space-Saving top-K over exponentially decayed
//! counters.
//!
//! Decay without touching every counter: a hit at time `t` adds `2^((t - epoch) / half_life)`
//! to a raw counter, and a counter's decayed value at `now` is `raw * 2^(-(now - epoch) /
//! half_life)`. Every counter decays at the same rate, so their order never changes with time
//! and the Space-Saving minimum stays the minimum. When the weights grow large the epoch moves
//! forward and every raw value is rescaled once.
//!
//! **Error bound** (Space-Saving, Metwally et al. 2005, which carries over to decayed weights
//! because decay scales every counter alike): with `k` slots and a total decayed demand `N`, every
//! tracked CID's estimate overcounts its true decayed demand by at most its recorded `error`,
//! and `error <= N / k`; a CID whose true demand exceeds `N / k` is always tracked. Bytes and
//! per-tier counts are kept only while a CID is tracked (they start at zero when it takes over a
//! slot), so they undercount rather than overcount.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use cid::Cid;
use serde::{Deserialize, Serialize};

use crate::telemetry::sharded::{shard_index, SHARDS};

/// Time source (seconds since the Unix epoch, fractional); injectable for tests.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> f64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// A clock the caller moves (tests, simulations).
#[derive(Default)]
pub struct ManualClock(Mutex<f64>);

impl ManualClock {
    /// A clock showing `t`.
    pub fn new(t: f64) -> Self {
        Self(Mutex::new(t))
    }

    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: f64) {
        if let Ok(mut t) = self.0.lock() {
            *t += secs;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        self.0.lock().map(|t| *t).unwrap_or(0.0)
    }
}

/// The tier that served a request, as counted per CID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServedBy {
    /// The edge cache.
    Cache,
    /// The embedded store or the remote hot node.
    Hot,
    /// Storage providers.
    Cold,
}

impl ServedBy {
    fn index(self) -> usize {
        self as usize
    }
}

/// Rescale when weights pass 2^this (far below f64's range, far above any count).
const RESCALE_EXPONENT: f64 = 64.0;

#[derive(Clone, Debug)]
struct Counter {
    requests: f64,
    bytes: f64,
    by_tier: [f64; 3],
    error: f64,
}

#[derive(Default)]
struct Inner {
    epoch: f64,
    counters: HashMap<Cid, Counter>,
    /// (raw request count as ordered bits, CID): the Space-Saving minimum is the first.
    order: BTreeSet<(u64, Cid)>,
    total: f64,
}

/// One CID's decayed demand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Demand {
    /// Root CID.
    pub cid: Cid,
    /// Decayed request count (an overestimate by at most `error`).
    pub requests: f64,
    /// Decayed bytes served while tracked.
    pub bytes: f64,
    /// Decayed requests served by the cache, hot and cold tiers while tracked.
    pub cache: f64,
    /// See `cache`.
    pub hot: f64,
    /// See `cache`.
    pub cold: f64,
    /// Most the request count may overcount.
    pub error: f64,
}

/// Saved tracker state.
#[derive(Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was taken (Unix seconds).
    pub at: f64,
    /// Every tracked CID's demand at that time.
    pub demand: Vec<Demand>,
}

/// Requests one thread recorded and the tracker has not counted yet. Counting takes the
/// tracker's one lock and reorders its Space-Saving set; per answer from memory that lock's
/// cache line moved between the cores on every request (docs/benchmarks.md). A batch takes it
/// once for up to [`BATCH`] requests, and repeated roots in it are one update.
#[repr(align(128))]
#[derive(Default)]
struct Pending {
    /// When the first request in the batch was recorded: weights are relative to it.
    since: f64,
    /// Requests recorded.
    requests: usize,
    /// Per root: (requests, bytes, per-tier requests), weighted from `since`.
    roots: Vec<(Cid, Counter)>,
}

/// Most requests a batch holds before it is counted.
const BATCH: usize = 64;
/// Most seconds between a batch's first request and its last (readers count every batch
/// first anyway, so this bounds weights, not staleness).
const BATCH_AGE: f64 = 1.0;

/// The tracker.
pub struct Tracker {
    inner: Mutex<Inner>,
    /// Per-thread batches (`telemetry::sharded` numbering).
    pending: Box<[Mutex<Pending>]>,
    k: usize,
    half_life: f64,
    clock: Arc<dyn Clock>,
}

impl Tracker {
    /// Tracks at most `k` CIDs with counters halving every `half_life` seconds.
    pub fn new(k: usize, half_life: f64, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        Self {
            inner: Mutex::new(Inner {
                epoch: now,
                ..Inner::default()
            }),
            pending: (0..SHARDS).map(|_| Mutex::default()).collect(),
            k: k.max(1),
            half_life: half_life.max(1e-3),
            clock,
        }
    }

    /// The clock in use.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Counts one request for `cid` that sent `bytes`, served by `tier`.
    pub fn record(&self, cid: Cid, bytes: u64, tier: ServedBy) {
        self.record_weighted(cid, 1.0, bytes as f64, Some(tier));
    }

    /// Adds a request to this thread's batch, and counts the batch when it is full or old.
    fn record_weighted(&self, cid: Cid, requests: f64, bytes: f64, tier: Option<ServedBy>) {
        let now = self.clock.now();
        let Ok(mut p) = self.pending[shard_index()].lock() else {
            return;
        };
        if !p.roots.is_empty() && !(0.0..=BATCH_AGE).contains(&(now - p.since)) {
            // Counted first, so that weights within a batch stay near 1 (and the clock going
            // back cannot make them odd). Shard lock, then the tracker's: the one order.
            let old = std::mem::take(&mut *p);
            self.count(old);
        }
        if p.roots.is_empty() {
            p.since = now;
        }
        let w = ((now - p.since) / self.half_life).exp2();
        let mut add = Counter {
            requests: requests * w,
            bytes: bytes * w,
            by_tier: [0.0; 3],
            error: 0.0,
        };
        if let Some(t) = tier {
            add.by_tier[t.index()] = requests * w;
        }
        match p.roots.iter_mut().find(|(c, _)| *c == cid) {
            Some((_, c)) => {
                c.requests += add.requests;
                c.bytes += add.bytes;
                for (sum, x) in c.by_tier.iter_mut().zip(add.by_tier) {
                    *sum += x;
                }
            }
            None => p.roots.push((cid, add)),
        }
        p.requests += 1;
        if p.requests >= BATCH {
            let batch = std::mem::take(&mut *p);
            drop(p);
            self.count(batch);
        }
    }

    /// Counts every thread's batch: what readers see includes every request recorded.
    fn count_pending(&self) {
        for shard in self.pending.iter() {
            let batch = match shard.lock() {
                Ok(mut p) if !p.roots.is_empty() => std::mem::take(&mut *p),
                _ => continue,
            };
            self.count(batch);
        }
    }

    /// Adds a batch to the counters.
    fn count(&self, batch: Pending) {
        let Ok(mut g) = self.inner.lock() else { return };
        let inner = &mut *g;
        let mut exponent = (batch.since - inner.epoch) / self.half_life;
        if exponent > RESCALE_EXPONENT {
            Self::rescale(inner, batch.since, self.half_life);
            exponent = 0.0;
        }
        let w = exponent.exp2();
        for (cid, add) in batch.roots {
            Self::add(inner, self.k, cid, &add, w);
        }
    }

    /// Adds `add` weighted by `w` to `cid`'s counter, taking the Space-Saving minimum's slot
    /// when `cid` is not tracked and every slot is taken.
    fn add(inner: &mut Inner, k: usize, cid: Cid, add: &Counter, w: f64) {
        inner.total += add.requests * w;
        if let Some(c) = inner.counters.get_mut(&cid) {
            inner.order.remove(&(c.requests.to_bits(), cid));
            c.requests += add.requests * w;
            c.bytes += add.bytes * w;
            for (sum, x) in c.by_tier.iter_mut().zip(add.by_tier) {
                *sum += x * w;
            }
            inner.order.insert((c.requests.to_bits(), cid));
            return;
        }
        let mut counter = Counter {
            requests: add.requests * w,
            bytes: add.bytes * w,
            by_tier: add.by_tier.map(|x| x * w),
            error: 0.0,
        };
        if inner.counters.len() >= k {
            // Space-Saving: the newcomer takes the minimum's slot and inherits its count as error.
            if let Some(&(bits, victim)) = inner.order.iter().next() {
                inner.order.remove(&(bits, victim));
                inner.counters.remove(&victim);
                let min = f64::from_bits(bits);
                counter.requests += min;
                counter.error = min;
            }
        }
        inner.order.insert((counter.requests.to_bits(), cid));
        inner.counters.insert(cid, counter);
    }

    fn rescale(inner: &mut Inner, now: f64, half_life: f64) {
        let f = (-(now - inner.epoch) / half_life).exp2();
        inner.epoch = now;
        inner.total *= f;
        inner.order.clear();
        for (cid, c) in inner.counters.iter_mut() {
            c.requests *= f;
            c.bytes *= f;
            c.error *= f;
            for t in &mut c.by_tier {
                *t *= f;
            }
            inner.order.insert((c.requests.to_bits(), *cid));
        }
    }

    fn decay(&self, inner: &Inner) -> f64 {
        (-(self.clock.now() - inner.epoch) / self.half_life).exp2()
    }

    fn demand(cid: Cid, c: &Counter, f: f64) -> Demand {
        Demand {
            cid,
            requests: c.requests * f,
            bytes: c.bytes * f,
            cache: c.by_tier[0] * f,
            hot: c.by_tier[1] * f,
            cold: c.by_tier[2] * f,
            error: c.error * f,
        }
    }

    /// The `limit` CIDs in most demand now, highest first.
    pub fn top(&self, limit: usize) -> Vec<Demand> {
        self.count_pending();
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        let f = self.decay(&inner);
        inner
            .order
            .iter()
            .rev()
            .take(limit)
            .filter_map(|(_, cid)| inner.counters.get(cid).map(|c| Self::demand(*cid, c, f)))
            .collect()
    }

    /// The demand for `cid` now, if tracked.
    pub fn get(&self, cid: &Cid) -> Option<Demand> {
        self.count_pending();
        let inner = self.inner.lock().ok()?;
        let f = self.decay(&inner);
        inner.counters.get(cid).map(|c| Self::demand(*cid, c, f))
    }

    /// Total decayed demand (all requests, tracked or not).
    pub fn total(&self) -> f64 {
        self.count_pending();
        self.inner
            .lock()
            .map(|i| i.total * self.decay(&i))
            .unwrap_or(0.0)
    }

    /// The bound on any estimate's overcount: total demand / k.
    pub fn error_bound(&self) -> f64 {
        self.total() / self.k as f64
    }

    /// Every tracked CID's demand now, for saving.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: self.clock.now(),
            demand: self.top(self.k),
        }
    }

    /// Loads a saved state, decayed by the time since it was taken.
    pub fn restore(&self, s: &Snapshot) {
        let age = (self.clock.now() - s.at).max(0.0);
        let f = (-age / self.half_life).exp2();
        let now = self.clock.now();
        // Requests recorded before the state they would add to is replaced go with it.
        for shard in self.pending.iter() {
            if let Ok(mut p) = shard.lock() {
                *p = Pending::default();
            }
        }
        let Ok(mut g) = self.inner.lock() else { return };
        let inner = &mut *g;
        *inner = Inner {
            epoch: now,
            ..Inner::default()
        };
        for d in s.demand.iter().take(self.k) {
            let c = Counter {
                requests: d.requests * f,
                bytes: d.bytes * f,
                by_tier: [d.cache * f, d.hot * f, d.cold * f],
                error: d.error * f,
            };
            inner.total += c.requests;
            inner.order.insert((c.requests.to_bits(), d.cid));
            inner.counters.insert(d.cid, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{cid_v1_sha256, RAW};
    use rand::{Rng, SeedableRng};
    use rand_distr::Distribution;

    fn cid(i: u64) -> Cid {
        cid_v1_sha256(RAW, &i.to_le_bytes())
    }

    #[test]
    fn counters_halve_every_half_life() {
        let clock = Arc::new(ManualClock::new(1000.0));
        let t = Tracker::new(8, 60.0, clock.clone());
        for _ in 0..8 {
            t.record(cid(1), 100, ServedBy::Cold);
        }
        let d = t.get(&cid(1)).unwrap();
        assert!((d.requests - 8.0).abs() < 1e-9);
        assert!((d.bytes - 800.0).abs() < 1e-9);
        assert!((d.cold - 8.0).abs() < 1e-9 && d.cache == 0.0);
        clock.advance(60.0);
        assert!((t.get(&cid(1)).unwrap().requests - 4.0).abs() < 1e-9);
        clock.advance(120.0);
        t.record(cid(1), 0, ServedBy::Cache);
        let d = t.get(&cid(1)).unwrap();
        assert!((d.requests - 2.0).abs() < 1e-9, "{d:?}");
        // Far in the future the weights are rescaled instead of overflowing.
        clock.advance(60.0 * 200.0);
        t.record(cid(2), 0, ServedBy::Hot);
        assert!((t.get(&cid(2)).unwrap().requests - 1.0).abs() < 1e-9);
        assert!(t.get(&cid(1)).unwrap().requests < 1e-9);
    }

    /// Zipf demand with a long tail of one-off CIDs: the top items are found, and every
    /// estimate stays within the documented bound of the exact decayed count.
    #[test]
    fn space_saving_error_stays_within_total_over_k() {
        let clock = Arc::new(ManualClock::new(0.0));
        let k = 64;
        let t = Tracker::new(k, 300.0, clock.clone());
        let mut exact: HashMap<Cid, f64> = HashMap::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let zipf = rand_distr::Zipf::new(1000.0, 1.1).unwrap();
        let mut next_one_off = 1_000_000u64;
        let half_life = 300.0;
        for _ in 0..20_000u64 {
            clock.advance(0.05);
            let now = clock.now();
            let c = if rng.random_bool(0.5) {
                next_one_off += 1;
                cid(next_one_off)
            } else {
                cid(zipf.sample(&mut rng) as u64)
            };
            t.record(c, 1, ServedBy::Cache);
            // Exact decayed counts, relative to time 0.
            *exact.entry(c).or_default() += (now / half_life).exp2();
        }
        let f = (-clock.now() / half_life).exp2();
        let bound = t.error_bound();
        let top = t.top(k);
        assert_eq!(top.len(), k);
        for d in &top {
            let truth = exact[&d.cid] * f;
            let tolerance = 1e-9 * truth.max(1.0);
            assert!(
                d.requests + tolerance >= truth,
                "undercount {d:?} vs {truth}"
            );
            assert!(
                d.requests - truth <= d.error + tolerance,
                "overcount beyond error {d:?}"
            );
            assert!(
                d.error <= bound + 1e-6,
                "error {} over bound {bound}",
                d.error
            );
        }
        // The three most requested Zipf ranks are the top three.
        let mut truth: Vec<(Cid, f64)> = exact.iter().map(|(c, v)| (*c, *v)).collect();
        truth.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top3: Vec<Cid> = top.iter().take(3).map(|d| d.cid).collect();
        for (c, _) in &truth[..3] {
            assert!(top3.contains(c));
        }
    }

    #[test]
    fn snapshots_restore_decayed() {
        let clock = Arc::new(ManualClock::new(0.0));
        let t = Tracker::new(4, 10.0, clock.clone());
        for i in 0..6u64 {
            for _ in 0..=i {
                t.record(cid(i), 10, ServedBy::Hot);
            }
        }
        let snap = t.snapshot();
        assert_eq!(snap.demand.len(), 4);
        let json = serde_json::to_string(&snap).unwrap();
        clock.advance(10.0);
        let again = Tracker::new(4, 10.0, clock.clone());
        again.restore(&serde_json::from_str(&json).unwrap());
        let before = snap.demand[0].requests;
        let after = again.top(1)[0].requests;
        assert!((after - before / 2.0).abs() < 1e-9, "{before} -> {after}");
        assert_eq!(again.top(1)[0].cid, cid(5));
    }

    #[test]
    fn batches_count_exactly_what_was_recorded() {
        // Several threads, batches left part-full, and time passing between and within them:
        // readers see every request, decayed as if each had been counted on arrival.
        let clock = Arc::new(ManualClock::new(5000.0));
        let t = Arc::new(Tracker::new(64, 10.0, clock.clone()));
        std::thread::scope(|scope| {
            for th in 0..4u64 {
                let t = t.clone();
                scope.spawn(move || {
                    for i in 0..(BATCH as u64 * 3 + 7) {
                        t.record(cid(i % 5 + th), 10, ServedBy::Hot);
                    }
                });
            }
        });
        let n = 4.0 * (BATCH as f64 * 3.0 + 7.0);
        assert!((t.total() - n).abs() < 1e-6, "{}", t.total());
        let bytes: f64 = t.top(64).iter().map(|d| d.bytes).sum();
        assert!((bytes - 10.0 * n).abs() < 1e-6);
        // One request now, one after a half-life, in one thread's batch: 1 and 0.5 now.
        t.record(cid(100), 1, ServedBy::Cold);
        clock.advance(10.0);
        t.record(cid(100), 1, ServedBy::Cold);
        let d = t.get(&cid(100)).unwrap();
        assert!((d.requests - 1.5).abs() < 1e-9, "{}", d.requests);
        assert!((d.cold - 1.5).abs() < 1e-9);
        assert!((t.total() - (n / 2.0 + 1.5)).abs() < 1e-6);
    }
}
