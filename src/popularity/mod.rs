//! Popularity: counting demand per root CID and acting on it — prewarming popular DAGs into the
//! edge cache, promoting (pinning) hot content into the hot layer, demoting automatic pins that
//! cooled down, and reading ahead of sequential readers. Knows nothing of HTTP: the layers
//! around the gateway report what was served.

pub mod prewarm;
pub mod promoter;
pub mod tracker;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cid::Cid;
use tokio_util::sync::CancellationToken;

use self::prewarm::Prewarmer;
use self::promoter::{Promoter, Thresholds};
use self::tracker::{Clock, ServedBy, Snapshot, Tracker};
use crate::config::PopularityConfig;
use crate::telemetry::Metrics;
use crate::tiers::local::{LocalStore, StoreError};
use crate::tiers::pins::HotPins;
use crate::tiers::records::Records;
use crate::tiers::BlockSource;

const TRACKER_KEY: &str = "popularity.tracker";
/// How many of the most popular CIDs each decision round looks at.
const CONSIDER: usize = 256;

/// The popularity subsystem.
pub struct Popularity {
    /// Demand counters.
    pub tracker: Arc<Tracker>,
    /// Background cache warming.
    pub prewarmer: Arc<Prewarmer>,
    /// Pins into the hot layer.
    pub promoter: Arc<Promoter>,
    config: PopularityConfig,
    /// Where the demand is saved: the tracker needs nothing else of the store.
    records: Records,
    /// Where each file being read with ranges was last read up to.
    sequential: Mutex<lru::LruCache<(Cid, String), u64>>,
    cancel: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Popularity {
    /// The subsystem over `source` (the tiered source, filling `cache` when it has one),
    /// pinning into `target`; demand saved earlier in `store` is restored.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: PopularityConfig,
        store: LocalStore,
        source: Arc<dyn BlockSource>,
        cache: Option<crate::tiers::cache::EdgeCache>,
        target: Arc<dyn HotPins>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, StoreError> {
        let tracker = Arc::new(Tracker::new(
            config.top_k as usize,
            config.half_life.as_secs_f64(),
            clock.clone(),
        ));
        // Unreadable demand is quarantined and counting starts fresh; a store that cannot be
        // read stops the start, since the next save would write over what it holds.
        if let Some(snapshot) = store.load::<Snapshot>(TRACKER_KEY)? {
            tracker.restore(&snapshot);
        }
        let cancel = CancellationToken::new();
        let limit = config.max_dag_bytes.as_u64();
        let prewarmer = Prewarmer::new(
            source.clone(),
            cache,
            config.prewarm_concurrency as usize,
            limit,
            clock.clone(),
            cancel.clone(),
            metrics.clone(),
        );
        let promoter = Promoter::new(
            target,
            source,
            store.clone(),
            limit,
            clock,
            metrics.clone(),
            Some(config.gateway_name.clone()),
        )?;
        Ok(Arc::new(Self {
            tracker,
            prewarmer,
            promoter,
            config,
            records: Records::of(&store),
            sequential: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN),
            )),
            cancel,
            metrics,
        }))
    }

    /// Counts a response for `root` that sent `bytes`; `tiers` is its `X-Cidgate-Tier` list.
    pub fn observe(&self, root: Cid, bytes: u64, tiers: &str) {
        let by = if tiers.contains("cold") {
            ServedBy::Cold
        } else if tiers.contains("hot") || tiers.contains("store") {
            ServedBy::Hot
        } else {
            ServedBy::Cache
        };
        self.tracker.record(root, bytes, by);
    }

    /// A range `start..=end` of the file at `root/segments` was served: when it continues where
    /// the last range ended, the next bytes are read ahead (media players read this way).
    pub fn observe_range(&self, root: Cid, segments: &[String], start: u64, end: u64, size: u64) {
        let window = self.config.sequential_prefetch.as_u64();
        if window == 0 || end + 1 >= size {
            return;
        }
        let key = (root, segments.join("/"));
        let sequential = {
            let Ok(mut seq) = self.sequential.lock() else {
                return;
            };
            let previous = seq.put(key, end);
            previous.is_some_and(|last| start == last + 1)
        };
        if sequential {
            let to = (end + window).min(size - 1);
            self.prewarmer
                .read_ahead(root, segments.to_vec(), end + 1, to);
        }
    }

    /// One round of decisions: prewarm what passed the prewarm threshold, promote what passed
    /// the promotion threshold, demote automatic pins that stayed cold.
    pub async fn tick(self: &Arc<Self>) {
        let top = self.tracker.top(CONSIDER);
        self.metrics.popularity_tracked.set(top.len() as i64);
        let half_life = self.config.half_life.as_secs_f64();
        for d in &top {
            if d.requests >= self.config.promote_threshold && !self.promoter.handled(&d.cid) {
                let this = self.clone();
                let cid = d.cid;
                tokio::spawn(async move {
                    if let Err(e) = this.promoter.pin(cid, true, "").await {
                        tracing::debug!(%cid, error = %e, "promotion did not happen");
                    }
                });
            } else if d.requests >= self.config.prewarm_threshold
                && !self.prewarmer.warmed_within(&d.cid, half_life)
            {
                // A cached root says nothing about the rest of its DAG; walking blocks that are
                // cached already costs no network, so popular DAGs are simply walked again once
                // per half-life.
                self.prewarmer.spawn(d.cid);
            }
        }
        let thresholds = Thresholds {
            promote: self.config.promote_threshold,
            demote: self.config.demote_threshold,
            demote_after: self.config.demote_after.as_secs_f64(),
        };
        self.promoter.demote_cold(&self.tracker, thresholds).await;
    }

    /// Saves the demand counters.
    pub fn save(&self) {
        let snap = self.tracker.snapshot();
        if let Err(e) = self.records.save(TRACKER_KEY, &snap) {
            tracing::warn!(error = %e, "cannot save demand");
        }
    }

    /// Runs decisions every `interval` and saves every `save_every` until `shutdown`; then
    /// cancels background work and saves once more.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        for (cid, auto, name) in self.promoter.interrupted() {
            let this = self.clone();
            tokio::spawn(async move {
                tracing::info!(%cid, "resuming a pin a restart interrupted");
                let _ = this.promoter.pin(cid, auto, &name).await;
            });
        }
        let mut tick = tokio::time::interval(self.config.interval);
        let mut save = tokio::time::interval(self.config.save_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.tick().await,
                _ = save.tick() => {
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.save()).await;
                }
            }
        }
        self.cancel.cancel();
        self.save();
    }

    /// Prewarms the CIDs listed in `path` (one per line, `#` comments), in the background.
    pub fn prewarm_file(self: &Arc<Self>, path: &str) -> std::io::Result<usize> {
        let text = std::fs::read_to_string(path)?;
        let mut n = 0;
        for line in text.lines() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            match Cid::try_from(entry) {
                Ok(cid) => {
                    let this = self.clone();
                    n += 1;
                    tokio::spawn(async move {
                        match this.prewarmer.prewarm(cid, |_| {}).await {
                            Ok(r) => {
                                tracing::info!(%cid, blocks = r.blocks, bytes = r.bytes, all_cached = r.all_cached(), cached_bytes = r.cached_bytes, "prewarmed from the prewarm file")
                            }
                            Err(e) => {
                                tracing::warn!(%cid, error = %e, "prewarm from the prewarm file failed")
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(%path, %entry, error = %e, "not a CID in the prewarm file")
                }
            }
        }
        Ok(n)
    }

    /// How long demand takes to halve.
    pub fn half_life(&self) -> Duration {
        self.config.half_life
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::popularity::tracker::ManualClock;
    use crate::tiers::pins::EmbeddedPins;

    #[test]
    fn unreadable_demand_is_quarantined_and_never_saved_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store
            .meta_put(TRACKER_KEY, b"{\"at\": \"yesterday\"}")
            .unwrap();
        let p = Popularity::new(
            PopularityConfig::default(),
            store.clone(),
            Arc::new(store.clone()),
            None,
            Arc::new(EmbeddedPins(store.clone())),
            Arc::new(ManualClock::new(1_000.0)),
            Metrics::new(),
        )
        .unwrap();
        let q = store.quarantine_list().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].bytes, b"{\"at\": \"yesterday\"}");
        let cid = crate::ipld::cid_v1_sha256(crate::ipld::RAW, b"x");
        p.tracker.record(cid, 10, ServedBy::Cold);
        p.save();
        assert_eq!(
            store.quarantine_list().unwrap(),
            q,
            "the save left it alone"
        );
        assert!(store.load::<Snapshot>(TRACKER_KEY).unwrap().is_some());
    }
}
