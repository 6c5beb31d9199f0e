//! Prewarming: reading popular DAGs into the edge cache in the background, and reading ahead of
//! files that clients read sequentially with ranges. Bounded concurrency keeps it from starving
//! client requests; a cancellation token stops it at shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cid::Cid;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::tracker::Clock;
use crate::coalesce::ClaimSet;
use crate::content::dag::{read_dag, WalkReport};
use crate::content::ContentError;
use crate::ipld::Block;
use crate::telemetry::Metrics;
use crate::tiers::cache::EdgeCache;
use crate::tiers::{BlockSource, DagRequest, DagScope, EntityBytes};

/// Blocks of one prewarm remembered to check afterwards which are still cached. Beyond this
/// the sample is thinned (every other entry dropped, the stride doubled), so memory stays
/// bounded (~6 MiB) whatever the DAG's size, and the cached share becomes an estimate.
const RESIDENCY_SAMPLE: usize = 65_536;

/// What a prewarm read, and how much of it the edge cache still holds afterwards: a DAG larger
/// than the cache (or than what its admission policy keeps of blocks read once) cannot be
/// warm as a whole, and callers must say so rather than report it warm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrewarmReport {
    /// Blocks read.
    pub blocks: u64,
    /// Block bytes read.
    pub bytes: u64,
    /// The walk stopped at `popularity.max_dag_bytes`: the DAG is larger, the rest was not read.
    pub truncated: bool,
    /// Size of the edge cache (`cache.memory`), when the prewarmer knows its cache.
    pub cache_capacity: Option<u64>,
    /// Of `bytes`, how many the cache still held when the walk ended (exact up to
    /// [`RESIDENCY_SAMPLE`] blocks, estimated from an even sample beyond).
    pub cached_bytes: Option<u64>,
}

impl PrewarmReport {
    /// Whether everything read is still in the cache and nothing was left unread.
    pub fn all_cached(&self) -> bool {
        !self.truncated && self.cached_bytes.is_none_or(|c| c >= self.bytes)
    }
}

/// An even sample of the blocks a walk read.
#[derive(Default)]
struct Residency {
    sample: Vec<(cid::Cid, u64)>,
    stride: u64,
    seen: u64,
}

impl Residency {
    fn note(&mut self, block: &Block) {
        if self.stride == 0 {
            self.stride = 1;
        }
        if self.seen.is_multiple_of(self.stride) {
            if self.sample.len() == RESIDENCY_SAMPLE {
                let mut i = 0;
                self.sample.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride *= 2;
            }
            if self.seen.is_multiple_of(self.stride) {
                self.sample.push((*block.cid(), block.len() as u64));
            }
        }
        self.seen += 1;
    }

    /// Bytes of `total` still held by `cache`, scaled from the sample.
    fn cached(&self, cache: &EdgeCache, total: u64) -> u64 {
        let sampled: u64 = self.sample.iter().map(|(_, n)| n).sum();
        if sampled == 0 {
            return total;
        }
        let held: u64 = self
            .sample
            .iter()
            .filter(|(c, _)| cache.contains(c))
            .map(|(_, n)| n)
            .sum();
        if held == sampled {
            total
        } else {
            (total as u128 * held as u128 / sampled as u128) as u64
        }
    }
}

/// Why a prewarm did not finish.
#[derive(Debug, thiserror::Error)]
pub enum PrewarmError {
    /// Reading the DAG failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// Shutting down.
    #[error("cancelled")]
    Cancelled,
}

/// The prewarmer.
pub struct Prewarmer {
    source: Arc<dyn BlockSource>,
    permits: Arc<Semaphore>,
    limit: u64,
    cancel: CancellationToken,
    clock: Arc<dyn Clock>,
    /// When each root was last prewarmed, so popular content is not re-read every tick.
    recent: Mutex<HashMap<Cid, f64>>,
    running: ClaimSet<Cid>,
    metrics: Arc<Metrics>,
    /// The edge cache the source fills, to report what stayed in it.
    cache: Option<EdgeCache>,
}

impl Prewarmer {
    /// At most `concurrency` DAGs at once, each read up to `limit` bytes into `cache` (the
    /// source's edge cache, when known: reports then say how much of a DAG stayed there).
    pub fn new(
        source: Arc<dyn BlockSource>,
        cache: Option<EdgeCache>,
        concurrency: usize,
        limit: u64,
        clock: Arc<dyn Clock>,
        cancel: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            source,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            limit,
            cancel,
            clock,
            recent: Mutex::new(HashMap::new()),
            running: ClaimSet::with_gauge(metrics.work("prewarms")),
            metrics,
            cache,
        })
    }

    /// Reads `req` through the tiered source (filling the cache), waiting for a slot first.
    pub async fn warm(
        &self,
        req: &DagRequest,
        progress: impl FnMut(&Block, WalkReport) + Send,
    ) -> Result<WalkReport, PrewarmError> {
        let _permit = tokio::select! {
            p = self.permits.acquire() => p.map_err(|_| PrewarmError::Cancelled)?,
            _ = self.cancel.cancelled() => return Err(PrewarmError::Cancelled),
        };
        tokio::select! {
            r = read_dag(self.source.as_ref(), req, self.limit, progress) => Ok(r?),
            _ = self.cancel.cancelled() => Err(PrewarmError::Cancelled),
        }
    }

    /// Prewarms the whole DAG under `root`; the report says how much of it stayed cached.
    pub async fn prewarm(
        &self,
        root: Cid,
        mut progress: impl FnMut(WalkReport) + Send,
    ) -> Result<PrewarmReport, PrewarmError> {
        let req = DagRequest {
            root,
            segments: Vec::new(),
            scope: DagScope::All,
            entity_bytes: None,
        };
        let mut residency = Residency::default();
        let result = self
            .warm(&req, |block, r| {
                residency.note(block);
                progress(r)
            })
            .await
            .map(|r| PrewarmReport {
                blocks: r.blocks,
                bytes: r.bytes,
                truncated: r.bytes > self.limit,
                cache_capacity: self.cache.as_ref().map(EdgeCache::capacity),
                cached_bytes: self.cache.as_ref().map(|c| residency.cached(c, r.bytes)),
            });
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics.action("prewarm", outcome);
        if result.is_ok() {
            if let Ok(mut r) = self.recent.lock() {
                if r.len() > 100_000 {
                    r.clear();
                }
                r.insert(root, self.clock.now());
            }
        }
        result
    }

    /// Most bytes one prewarm reads (`popularity.max_dag_bytes`).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether `root` was prewarmed within the last `within` seconds.
    pub fn warmed_within(&self, root: &Cid, within: f64) -> bool {
        let now = self.clock.now();
        self.recent
            .lock()
            .map(|r| r.get(root).is_some_and(|t| now - t < within))
            .unwrap_or(false)
    }

    /// Starts prewarming `root` in the background unless it is already running.
    pub fn spawn(self: &Arc<Self>, root: Cid) -> bool {
        // Released when the task ends in any way (a panic included).
        let Some(claim) = self.running.claim(root) else {
            return false;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let _claim = claim;
            match this.prewarm(root, |_| {}).await {
                Ok(r) => {
                    tracing::debug!(%root, blocks = r.blocks, bytes = r.bytes, "prewarmed")
                }
                Err(e) => tracing::debug!(%root, error = %e, "prewarm failed"),
            }
        });
        true
    }

    /// Reads bytes `from..=to` of the file at `root/segments` ahead of a sequential reader.
    pub fn read_ahead(self: &Arc<Self>, root: Cid, segments: Vec<String>, from: u64, to: u64) {
        let this = self.clone();
        tokio::spawn(async move {
            let req = DagRequest {
                root,
                segments,
                scope: DagScope::Entity,
                entity_bytes: Some(EntityBytes {
                    from: from as i64,
                    to: Some(to as i64),
                }),
            };
            let outcome = match this.warm(&req, |_, _| {}).await {
                Ok(_) => "ok",
                Err(_) => "error",
            };
            this.metrics.action("prefetch", outcome);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{cid_v1_sha256, RAW};

    fn block(i: u64) -> Block {
        let data = bytes::Bytes::from(i.to_le_bytes().to_vec());
        Block::already_verified(cid_v1_sha256(RAW, &data), data)
    }

    /// The sample stays bounded and even however many blocks a walk reads, and what it finds
    /// in the cache scales to the whole walk.
    #[test]
    fn residency_is_measured_from_a_bounded_even_sample() {
        let cache = EdgeCache::new(64 << 20, Metrics::new()).unwrap();
        let mut r = Residency::default();
        let n = RESIDENCY_SAMPLE as u64 * 3;
        for i in 0..n {
            let b = block(i);
            // Every other block is cached.
            if i % 2 == 0 {
                cache.insert(&b);
            }
            r.note(&b);
        }
        assert!(r.sample.len() <= RESIDENCY_SAMPLE);
        assert!(r.stride >= 4);
        // Strides are even, so the sample holds only cached blocks: all of it looks cached.
        assert_eq!(r.cached(&cache, 1000), 1000);

        let mut r = Residency::default();
        for i in 0..1000 {
            r.note(&block(i + n));
        }
        assert_eq!(r.sample.len(), 1000, "exact below the bound");
        assert_eq!(r.cached(&cache, 8000), 0);
    }
}
