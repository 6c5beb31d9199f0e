//! The parts of a gateway built from the configuration: block sources (edge cache, store, hot
//! node, cold tier), the hot layer's pins, the name resolver, the store's maintenance.

use std::sync::Arc;

use crate::config::{Config, HotBackend};
use crate::denylist::DenylistHandle;
use crate::telemetry::Metrics;
use crate::tiers::cache::EdgeCache;
use crate::tiers::cold::ColdTier;
use crate::tiers::kubo::KuboBackend;
use crate::tiers::local::{LocalStore, PinReason};
use crate::tiers::pins::{ClusterPins, EmbeddedPins, HotPins, KuboPins};
use crate::tiers::tiered::{CircuitBreaker, TieredSource};
use crate::tiers::trustless::TrustlessBackend;
use crate::tiers::BlockSource;

/// The resolver of `/ipns/` names: records in the store (kept fresh from `cold.routers` when
/// any are configured), DNSLink domains from the config, then from DNS for allowed domains.
pub(super) fn name_resolver(
    config: &Config,
    store: &LocalStore,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<crate::ipns::NameResolver> {
    let mut names = crate::ipns::NameResolver::new(
        crate::tiers::records::Records::of(store),
        config.dnslink.names.clone(),
    );
    let dns = crate::ipns::Dnslink::new(&config.dnslink, metrics.clone())
        .map_err(|e| anyhow::anyhow!("dnslink: {e}"))?;
    if dns.enabled() {
        names = names.with_dns(dns);
    }
    if !config.cold.routers.is_empty() {
        let client = crate::tiers::remote::http_client(config.cold.connect_timeout, 4)
            .map_err(|e| anyhow::anyhow!(e))?;
        names = names.with_routing(crate::ipns::IpnsRouting::new(
            client,
            &config.cold.routers,
            config.cold.discovery_timeout,
            config.cold.negative_ttl,
            metrics.clone(),
        ));
    }
    Ok(names)
}

/// Bytes of fetched blocks waiting to be written to the store's disk cache at most.
const SPILL_QUEUE_BYTES: u64 = 64 * 1024 * 1024;

/// Runs the store's garbage collection, eviction and compaction whenever they are due.
pub(super) async fn maintain_store(store: LocalStore, every: std::time::Duration) {
    loop {
        store.maintenance_due(every).await;
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.maintain_scheduled()).await {
            Ok(Ok(r)) if r != crate::tiers::space::MaintenanceReport::default() => {
                tracing::info!(
                    evicted_bytes = r.evicted_bytes,
                    evicted_blocks = r.evicted_blocks,
                    reinserted_bytes = r.reinserted_bytes,
                    compacted_segments = r.compacted_segments,
                    gc = r.gc,
                    released_bytes = r.released_bytes,
                    over_budget = r.over_budget,
                    "store maintenance"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "store maintenance failed"),
            Err(e) => tracing::warn!(error = %e, "store maintenance task failed"),
        }
    }
}

/// The block source of `serve`: edge cache, embedded store, and the configured hot node, with
/// `denylist`'s blocks refused in front of all of them.
pub fn tiered_source(
    config: &Config,
    store: LocalStore,
    metrics: Arc<Metrics>,
    cold: Option<Arc<ColdTier>>,
    denylist: DenylistHandle,
) -> anyhow::Result<Arc<TieredSource>> {
    let cache = if config.cache.zero_copy {
        EdgeCache::with_zero_copy(config.cache.memory.as_u64(), metrics.clone())?
    } else {
        EdgeCache::new(config.cache.memory.as_u64(), metrics.clone())?
    };
    // Fetched blocks also go to the store's disk cache, behind the response; the queue holds
    // what a slow disk has not taken yet, bounded.
    let cache = if config.store.keep_fetched {
        cache.with_spill(crate::tiers::spill::CacheWriter::start(
            store.clone(),
            SPILL_QUEUE_BYTES,
        ))
    } else {
        cache
    };
    let hot = &config.hot;
    let remote: Option<Arc<dyn BlockSource>> = match hot.backend {
        HotBackend::Embedded => None,
        HotBackend::Trustless => Some(Arc::new(TrustlessBackend::new(
            &hot.url,
            hot.timeout,
            metrics.clone(),
        )?)),
        HotBackend::Kubo => Some(Arc::new(KuboBackend::new(
            &hot.url,
            hot.timeout,
            metrics.clone(),
        )?)),
    };
    if let Some(r) = &remote {
        tracing::info!(backend = ?hot.backend, url = %hot.url, tier = r.name(), "remote hot node configured");
    }
    Ok(Arc::new(
        TieredSource::with_cold(
            cache,
            Some(store),
            remote,
            cold.map(|c| {
                let deadline = c.deadline();
                (c as Arc<dyn BlockSource>, deadline)
            }),
            CircuitBreaker::new(hot.breaker_failures, hot.breaker_cooldown),
            hot.timeout,
            metrics,
        )
        .with_denylist(denylist),
    ))
}

/// Where promotions and operator pins go: the Cluster when configured, else the Kubo node
/// (backend `kubo`), else the embedded store (a trustless gateway cannot take pins).
pub fn hot_pins(config: &Config, store: &LocalStore) -> anyhow::Result<Arc<dyn HotPins>> {
    let hot = &config.hot;
    Ok(if !hot.cluster_url.is_empty() {
        Arc::new(ClusterPins::new(
            &hot.cluster_url,
            hot.timeout,
            hot.cluster_replication_min,
            hot.cluster_replication_max,
        )?)
    } else if hot.backend == HotBackend::Kubo {
        Arc::new(KuboPins::new(&hot.url, hot.timeout)?)
    } else {
        Arc::new(EmbeddedPins(store.clone()))
    })
}

/// The cold tier, when `[cold]` names any provider, indexer or router.
pub fn cold_tier(
    config: &Config,
    store: &LocalStore,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<Arc<ColdTier>>> {
    if !config.cold.enabled() {
        return Ok(None);
    }
    let cold = ColdTier::new(&config.cold, Some(store.clone()), metrics.clone())?;
    tracing::info!(
        providers = config.cold.providers.len(),
        indexers = config.cold.indexers.len(),
        routers = config.cold.routers.len(),
        "cold tier configured (storage providers)"
    );
    Ok(Some(cold))
}

/// Adds the bundled sample to a store that never had it; returns the sample root.
pub async fn ensure_sample(store: &LocalStore) -> anyhow::Result<cid::Cid> {
    let (root, blocks) = crate::sample::build()?;
    if store.meta_flag("sample_added")? {
        return Ok(root.cid);
    }
    let _guard = store.writer_lock().await;
    let s = store.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let batch = s.new_batch()?;
        s.put_staged(batch, &blocks, false)?;
        crate::tiers::import::finish_batch(&s, batch, &[root.cid], PinReason::Sample)?;
        s.set_meta_flag("sample_added")?;
        Ok(())
    })
    .await??;
    Ok(root.cid)
}
