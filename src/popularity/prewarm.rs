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
use crate::telemetry::Metrics;
use crate::tiers::{BlockSource, DagRequest, DagScope, EntityBytes};

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
}

impl Prewarmer {
    /// At most `concurrency` DAGs at once, each read up to `limit` bytes.
    pub fn new(
        source: Arc<dyn BlockSource>,
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
        })
    }

    /// Reads `req` through the tiered source (filling the cache), waiting for a slot first.
    pub async fn warm(
        &self,
        req: &DagRequest,
        progress: impl FnMut(WalkReport) + Send,
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

    /// Prewarms the whole DAG under `root`.
    pub async fn prewarm(
        &self,
        root: Cid,
        progress: impl FnMut(WalkReport) + Send,
    ) -> Result<WalkReport, PrewarmError> {
        let req = DagRequest {
            root,
            segments: Vec::new(),
            scope: DagScope::All,
            entity_bytes: None,
        };
        let result = self.warm(&req, progress).await;
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
            let outcome = match this.warm(&req, |_| {}).await {
                Ok(_) => "ok",
                Err(_) => "error",
            };
            this.metrics.action("prefetch", outcome);
        });
    }
}
