//! Prometheus metrics for the per-request hot path: every thread adds into its own shard (a
//! cache line apart from the others), and a scrape sums the shards.
//!
//! `prometheus_client`'s `Histogram` takes one mutex per observation, and its counters and
//! gauges are one atomic shared by every thread. Observed by every
//! request on every runtime worker, that mutex and its cache line move between the cores on
//! each request; at ~100 000 small answers a second that is a measurable part of their cost
//! (`docs/benchmarks.md`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per histogram: more than the runtime's workers on any machine cidgate is sized for;
/// threads past that share a shard (still correct: every update is atomic).
pub const SHARDS: usize = 32;
/// Most buckets a histogram may have, `+Inf` included.
const MAX_BUCKETS: usize = 24;

/// A histogram of non-negative values (seconds), sharded by thread.
#[derive(Clone)]
pub struct ShardedHistogram(Arc<Inner>);

struct Inner {
    /// Upper bounds, ascending; the last is `+Inf`.
    bounds: Vec<f64>,
    shards: Box<[Shard]>,
}

/// One thread's counts, alone on its cache lines.
#[repr(align(128))]
struct Shard {
    buckets: [AtomicU64; MAX_BUCKETS],
    count: AtomicU64,
    /// The sum of the observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Default for Shard {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// The shard (below [`SHARDS`]) of the current thread, given out round-robin at its first
/// use; other per-thread state on the request path shares the numbering.
pub fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

impl ShardedHistogram {
    /// A histogram with these upper bounds (ascending, finite, at most `MAX_BUCKETS - 1` of
    /// them; others are dropped) and `+Inf`.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds
            .into_iter()
            .filter(|b| b.is_finite())
            .take(MAX_BUCKETS - 1)
            .chain(std::iter::once(f64::INFINITY))
            .collect();
        Self(Arc::new(Inner {
            bounds,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }))
    }

    /// Adds one observation of `v` (negative and NaN values count as zero).
    pub fn observe(&self, v: f64) {
        let v = if v.is_nan() { 0.0 } else { v.max(0.0) };
        // The last bound is +Inf: every value finds one.
        let last = self.0.bounds.len() - 1;
        let bucket = self.0.bounds.iter().position(|b| v <= *b).unwrap_or(last);
        let shard = &self.0.shards[shard_index()];
        shard.buckets[bucket].fetch_add(1, Relaxed);
        shard.count.fetch_add(1, Relaxed);
        // Capped at ~31 years per observation, so that the sum cannot wrap.
        shard
            .sum_nanos
            .fetch_add((v * 1e9).min(1e18) as u64, Relaxed);
    }

    /// Observations so far, summed over the shards.
    pub fn count(&self) -> u64 {
        self.0.shards.iter().map(|s| s.count.load(Relaxed)).sum()
    }

    /// The sum of the observations so far.
    pub fn sum(&self) -> f64 {
        let nanos: u64 = self
            .0
            .shards
            .iter()
            .map(|s| s.sum_nanos.load(Relaxed))
            .sum();
        nanos as f64 / 1e9
    }

    /// Per-bucket counts (not cumulative), with their upper bounds.
    fn buckets(&self) -> Vec<(f64, u64)> {
        self.0
            .bounds
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let n = self
                    .0
                    .shards
                    .iter()
                    .map(|s| s.buckets[i].load(Relaxed))
                    .sum();
                (*b, n)
            })
            .collect()
    }
}

impl std::fmt::Debug for ShardedHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedHistogram")
            .field("count", &self.count())
            .field("sum", &self.sum())
            .finish()
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The count is the sum of the buckets read here, so the exposition stays consistent
        // while other threads observe.
        let buckets = self.buckets();
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One thread's count, alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Cell(AtomicU64);

/// One value kept as a cell per shard: a thread adds to its own, a reader sums them.
#[derive(Clone)]
struct Cells(Arc<[Cell; SHARDS]>);

impl Default for Cells {
    fn default() -> Self {
        Self(Arc::new(std::array::from_fn(|_| Cell::default())))
    }
}

impl Cells {
    /// Adds `n` (wrapping) to this thread's cell.
    fn add(&self, n: u64) {
        self.0[shard_index()].0.fetch_add(n, Relaxed);
    }

    /// The cells summed (wrapping, so that a gauge's two's-complement steps add up).
    fn sum(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, c| sum.wrapping_add(c.0.load(Relaxed)))
    }
}

/// A Prometheus counter, sharded by thread like [`ShardedHistogram`].
#[derive(Clone, Default)]
pub struct ShardedCounter(Cells);

impl ShardedCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.add(1);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.0.add(n);
    }

    /// The count so far, summed over the shards.
    pub fn get(&self) -> u64 {
        self.0.sum()
    }
}

impl std::fmt::Debug for ShardedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ShardedCounter").field(&self.get()).finish()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A Prometheus gauge that goes up and down by one, sharded by thread: a shard may go
/// negative (a request counted in on one thread and out on another); the sum is right.
#[derive(Clone, Default)]
pub struct ShardedGauge(Cells);

impl ShardedGauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.add(1);
    }

    /// Takes one away.
    pub fn dec(&self) {
        // Two's complement: adding u64::MAX is subtracting one, and the sum wraps back.
        self.0.add(u64::MAX);
    }

    /// The value now, summed over the shards.
    pub fn get(&self) -> i64 {
        self.0.sum() as i64
    }
}

impl std::fmt::Debug for ShardedGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ShardedGauge").field(&self.get()).finish()
    }
}

impl TypedMetric for ShardedGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for ShardedGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::Histogram;

    fn exposition(name: &str, metric: impl prometheus_client::registry::Metric) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register(name, "help", metric);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn exposes_what_the_library_histogram_exposes() {
        let bounds = || prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.5, 15);
        let ours = ShardedHistogram::new(bounds());
        let theirs = Histogram::new(bounds());
        // Bucket edges, the overflow bucket, and observations from several threads.
        let values = [0.0, 0.0001, 0.00010001, 0.003, 0.5, 1.0, 7.0, 1e6];
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for v in values {
                        ours.observe(v);
                        theirs.observe(v);
                    }
                });
            }
        });
        assert_eq!(ours.count(), 32);
        let a = exposition("t", ours);
        let b = exposition("t", theirs);
        // The sums differ only in rounding to nanoseconds.
        let strip = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with("t_sum"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&a), strip(&b));
        let sum = |s: &str| -> f64 {
            let line = s.lines().find(|l| l.starts_with("t_sum")).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!((sum(&a) - sum(&b)).abs() < 1e-6, "{} {}", sum(&a), sum(&b));
    }

    #[test]
    fn counts_and_gauges_sum_over_threads() {
        let c = ShardedCounter::default();
        let g = ShardedGauge::default();
        std::thread::scope(|s| {
            for _ in 0..40 {
                s.spawn(|| {
                    c.inc();
                    c.inc_by(9);
                    g.inc();
                    g.inc();
                });
            }
        });
        // Counted in on one thread, out on another: that shard goes below zero.
        std::thread::scope(|s| {
            for _ in 0..30 {
                s.spawn(|| g.dec());
            }
        });
        assert_eq!(c.get(), 400);
        assert_eq!(g.get(), 50);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("c", "help", c);
        registry.register("g", "help", g);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("c_total 400\n"), "{out}");
        assert!(out.contains("g 50\n"), "{out}");
    }
}
