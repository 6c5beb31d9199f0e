//! Metrics (Prometheus text on the admin listener) and the per-request record of which tiers
//! served a response and how long each took (`Server-Timing`, `X-Cidgate-Tier`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Lock-free, per-thread-sharded Prometheus metrics for the request path.
pub mod sharded;

use sharded::{ShardedCounter, ShardedGauge, ShardedHistogram};

/// Labels of request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP status code.
    pub status: u16,
    /// What the response carried: raw, car, tar, codec, file, html, ipns-record, or none (errors, redirects).
    pub format: &'static str,
}

/// Labels of per-tier series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    /// Tier name.
    pub tier: String,
    /// ok, not_found, error, timeout, corrupt, skipped; for DAG retrievals also stopped (nobody read on) and cancelled (dropped mid-await).
    pub outcome: String,
}

/// Label of the store's space series: what the bytes are.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreKind {
    /// `pinned`, `cache`, `dead` (segment bytes nothing names) or `index`.
    pub kind: String,
}

/// Label of per-tier latency and verification series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierName {
    /// Tier name.
    pub tier: String,
}

/// Labels of per-provider series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// Provider label (or URL).
    pub provider: String,
    /// ok, not_found, timeout, error, corrupt, lie, declined.
    pub outcome: String,
}

/// Label of per-provider byte counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderName {
    /// Provider label (or URL).
    pub provider: String,
}

/// Label of discovery series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiscoveryLabel {
    /// ipni / routing for latency; hit / negative_hit / miss for the cache.
    pub source: String,
}

/// Labels of popularity actions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// prewarm, promote, demote, pin, unpin, prefetch.
    pub action: &'static str,
    /// ok, error, skipped.
    pub outcome: &'static str,
}

/// Labels of retrievability checks.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// store, hot, provider.
    pub place: &'static str,
    /// ok, failed, repaired.
    pub result: &'static str,
}

/// Label of a root's retrievability state, or of a repair's kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state (or kind).
    pub state: &'static str,
}

/// Label of the in-flight work gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkKind {
    /// block_flights, dag_streams, dag_waiters, dag_ready_bytes, discovery_lookups, prewarms,
    /// pins, connections, admin_connections, …
    pub kind: &'static str,
}

/// Label of per-denylist series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListName {
    /// The list's file path or subscription URL (without credentials or query).
    pub list: String,
}

/// Label of refusals by a limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitReason {
    /// connections, concurrency, client_rate, timeout, size, …
    pub reason: &'static str,
}

/// Label of the name-resolution series (DNSLink and IPNS over routing).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameOutcome {
    /// What happened: ok, not_found, failed, timeout, …; hit, miss, stale, … for caches.
    pub outcome: &'static str,
}

/// Labels of `cidgate_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate version.
    pub version: &'static str,
    /// `release` or `debug` (debug assertions on).
    pub profile: &'static str,
    /// Target operating system.
    pub os: &'static str,
    /// Target architecture.
    pub arch: &'static str,
}

impl BuildLabels {
    /// This binary's build.
    pub fn current() -> Self {
        BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        }
    }
}

/// Buckets of [`RequestStats`]: four per power of two of microseconds (a resolution of 25 %),
/// from 1 µs to past a day.
pub const LATENCY_BUCKETS: usize = 160;

/// Request counts and a fine-grained latency histogram that the admin sampler reads to draw
/// rates, error rates and percentiles over time (the Prometheus histograms have coarse buckets
/// and no public reader). One relaxed atomic add per request and per counter.
pub struct RequestStats {
    latency: [std::sync::atomic::AtomicU64; LATENCY_BUCKETS],
    /// Responses with a 4xx status.
    pub client_errors: std::sync::atomic::AtomicU64,
    /// Responses with a 5xx status.
    pub server_errors: std::sync::atomic::AtomicU64,
}

impl Default for RequestStats {
    fn default() -> Self {
        Self {
            latency: std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)),
            client_errors: Default::default(),
            server_errors: Default::default(),
        }
    }
}

/// The bucket of a latency of `micros`.
pub fn latency_bucket(micros: u64) -> usize {
    if micros < 4 {
        return micros as usize;
    }
    let e = 63 - micros.leading_zeros() as usize;
    let sub = ((micros >> (e - 2)) & 3) as usize;
    ((e - 1) * 4 + sub).min(LATENCY_BUCKETS - 1)
}

/// The middle of bucket `i`, in microseconds.
pub fn latency_bucket_mid(i: usize) -> f64 {
    if i < 4 {
        return i as f64 + 0.5;
    }
    let e = i / 4 + 1;
    let sub = (i % 4) as u64;
    let lower = (4 + sub) << (e - 2);
    let upper = (5 + sub) << (e - 2);
    (lower + upper) as f64 / 2.0
}

impl RequestStats {
    /// Counts one finished request that took `took` and answered `status`.
    pub fn record(&self, took: Duration, status: u16) {
        use std::sync::atomic::Ordering::Relaxed;
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency[latency_bucket(micros)].fetch_add(1, Relaxed);
        match status {
            400..=499 => self.client_errors.fetch_add(1, Relaxed),
            500..=599 => self.server_errors.fetch_add(1, Relaxed),
            _ => 0,
        };
    }

    /// The latency histogram now (counts per bucket).
    pub fn latency_counts(&self) -> Vec<u64> {
        self.latency
            .iter()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }
}

/// The `q` quantile (0..=1) in milliseconds of a bucket histogram (e.g. the difference of two
/// [`RequestStats::latency_counts`]); `None` when it is empty.
pub fn latency_quantile_ms(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(latency_bucket_mid(i) / 1000.0);
        }
    }
    None
}

/// Every metric cidgate exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by status and format.
    pub requests: Family<RequestLabels, ShardedCounter>,
    /// Time until the response head was ready (observed by every request: sharded).
    pub ttfb: ShardedHistogram,
    /// Time until the handler returned or the body finished, whichever is later.
    pub latency: ShardedHistogram,
    /// Body bytes sent.
    pub bytes_served: ShardedCounter,
    /// Requests being handled now.
    pub inflight: ShardedGauge,
    /// Block lookups answered by the edge cache.
    pub cache_hits: ShardedCounter,
    /// Requests answered from the gateway's response cache (answers kept whole, or by
    /// reference to a cached block), without the full request path.
    pub response_cache_hits: ShardedCounter,
    /// Block lookups the edge cache could not answer.
    pub cache_misses: Counter,
    /// Blocks evicted from the edge cache.
    pub cache_evictions: Counter,
    /// Bytes held by the edge cache.
    pub cache_bytes: Gauge,
    /// Bytes of cached blocks in the zero-copy arena (whole pages).
    pub cache_arena_bytes: Gauge,
    /// Large blocks cached on the heap because the arena had no room.
    pub cache_arena_full: Counter,
    /// Body bytes sent with `sendfile` from the arena instead of copied.
    pub zero_copy_bytes: Counter,
    /// Body bytes sent with `sendfile` straight from the store's segment files.
    pub zero_copy_store_bytes: Counter,
    /// Store blocks read again and hashed because their pages left the page cache between
    /// being handed out and being sent.
    pub zero_copy_store_refetches: Counter,
    /// HTTP/1.1 requests read and answered by the server itself, without hyper.
    pub direct_answers: Counter,
    /// Fetches per tier and outcome.
    pub tier_fetches: Family<TierLabels, Counter>,
    /// Fetch latency per tier.
    pub tier_latency: Family<TierName, Histogram>,
    /// Blocks that failed verification, per tier.
    pub verify_failures: Family<TierName, Counter>,
    /// Requests that joined a fetch already in flight instead of starting one.
    pub coalesced_waiters: Counter,
    /// Bytes received from remote tiers.
    pub tier_bytes: Family<TierName, Counter>,
    /// Cold-tier provider requests by provider and outcome.
    pub cold_fetches: Family<ProviderLabels, Counter>,
    /// Block bytes received per storage provider.
    pub cold_provider_bytes: Family<ProviderName, Counter>,
    /// Second providers started because the first was slow.
    pub cold_hedges: Counter,
    /// Retrievals continued with another provider after a failure.
    pub cold_resumes: Counter,
    /// Discovery lookup latency per source.
    pub discovery_latency: Family<DiscoveryLabel, Histogram>,
    /// Discovery answers by cache outcome.
    pub discovery_lookups: Family<DiscoveryLabel, Counter>,
    /// Provider records or addresses discovery could not use (no HTTP transport).
    pub cold_unusable: Counter,
    /// Deal decisions per candidate: accepted or declined.
    pub cold_deals: Family<DiscoveryLabel, Counter>,
    /// Requests by the slowest tier that served them (cache, store, hot, cold).
    pub served_by: Family<TierName, ShardedCounter>,
    /// Popularity actions by outcome.
    pub popularity_actions: Family<ActionLabels, Counter>,
    /// Retrievability checks by place and result.
    pub retrieval_checks: Family<CheckLabels, Counter>,
    /// Pinned roots by retrievability state.
    pub retrievability_roots: Family<StateLabel, Gauge>,
    /// Per provider, the share of checks it passed over the window.
    pub provider_check_success: Family<ProviderName, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Repairs by kind (store_block, hot_pin).
    pub repairs: Family<StateLabel, Counter>,
    /// CIDs the popularity tracker holds.
    pub popularity_tracked: Gauge,
    /// FIL spent on retrievals.
    pub cold_spend: Counter<f64, std::sync::atomic::AtomicU64>,
    /// FIL left in today's budget.
    pub cold_budget_remaining: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Shared in-flight work by kind; every kind returns to zero when the gateway is idle, which
    /// is how tests (and operators) see that nothing was left behind by clients that left.
    pub inflight_work: Family<WorkKind, Gauge>,
    /// Connections and requests refused or cut by a limit, by reason.
    pub limited: Family<LimitReason, Counter>,
    /// Denylist rules in force.
    pub denylist_rules: Gauge,
    /// Rules per denylist.
    pub denylist_list_rules: Family<ListName, Gauge>,
    /// Failed reads or fetches per denylist since start.
    pub denylist_failures: Family<ListName, Gauge>,
    /// Unix time of each denylist's last successful read or fetch.
    pub denylist_last_success: Family<ListName, Gauge>,
    /// Requests and blocks refused because a denylist blocks them.
    pub blocked: Counter,
    /// Stored records found unreadable and moved aside by this process.
    pub quarantined: Gauge,
    /// DNSLink TXT lookups sent to DNS, by outcome.
    pub dnslink_lookups: Family<NameOutcome, Counter>,
    /// DNSLink answers by cache outcome (hit, negative_hit, miss, coalesced).
    pub dnslink_cache: Family<NameOutcome, Counter>,
    /// Time of DNSLink TXT lookups sent to DNS.
    pub dnslink_latency: Histogram,
    /// IPNS record fetches from Delegated Routing V1 endpoints, by outcome.
    pub ipns_fetches: Family<NameOutcome, Counter>,
    /// IPNS names resolved with routing, by freshness (fresh, stale, miss, negative_hit).
    pub ipns_routing_answers: Family<NameOutcome, Counter>,
    /// Body bytes sent, by the slowest tier the response needed.
    pub served_bytes: Family<TierName, ShardedCounter>,
    /// 1 while a tier's circuit breaker is open (requests that need it fail fast).
    pub breaker_open: Family<TierName, Gauge>,
    /// Always 1; the labels say which build runs.
    pub build_info: Family<BuildLabels, Gauge>,
    /// Resident memory of the process (Linux, read at scrape time).
    pub resident_memory: Gauge,
    /// Open file descriptors of the process (Linux, read at scrape time).
    pub open_fds: Gauge,
    /// Log lines dropped because stderr could not keep up (read at scrape time).
    pub log_lines_dropped: Counter,
    /// The open-files limit of the process.
    pub max_fds: Gauge,
    /// Bytes of the store's files on disk (read at scrape time).
    pub store_size: Gauge,
    /// Bytes of the store by kind (read at scrape time).
    pub store_bytes: Family<StoreKind, Gauge>,
    /// `store.max_size` (0: no budget).
    pub store_max_size: Gauge,
    /// Cache entries evicted from the store.
    pub store_evicted_blocks: Counter,
    /// Bytes of cache entries evicted from the store.
    pub store_evicted_bytes: Counter,
    /// Bytes eviction kept because they were read again.
    pub store_reinserted_bytes: Counter,
    /// Bytes copied by compaction.
    pub store_compacted_bytes: Counter,
    /// Garbage collections of the store.
    pub store_gc_runs: Counter,
    /// Bytes garbage collection handed from pins to the cache.
    pub store_released_bytes: Counter,
    /// Bytes of fetched blocks not kept on disk (no room in the budget, or the writer was behind).
    pub store_cache_skipped_bytes: Counter,
    /// Bytes the store scrub hashed.
    pub store_scrubbed_bytes: Counter,
    /// Blocks the store scrub found corrupt.
    pub store_scrub_corrupt: Counter,
    /// Store scrub passes that ran to the end.
    pub store_scrub_passes: Counter,
    /// Counts and latencies for the status page's charts (not exported).
    pub stats: RequestStats,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(seconds_buckets())
}

/// 100 µs … ~50 s.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.5, 15)
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("cidgate");
        let m = Metrics {
            requests: Family::default(),
            ttfb: ShardedHistogram::new(seconds_buckets()),
            latency: ShardedHistogram::new(seconds_buckets()),
            bytes_served: ShardedCounter::default(),
            inflight: ShardedGauge::default(),
            cache_hits: ShardedCounter::default(),
            response_cache_hits: ShardedCounter::default(),
            cache_misses: Counter::default(),
            cache_evictions: Counter::default(),
            cache_bytes: Gauge::default(),
            cache_arena_bytes: Gauge::default(),
            cache_arena_full: Counter::default(),
            zero_copy_bytes: Counter::default(),
            zero_copy_store_bytes: Counter::default(),
            zero_copy_store_refetches: Counter::default(),
            direct_answers: Counter::default(),
            tier_fetches: Family::default(),
            tier_latency: Family::new_with_constructor(seconds_histogram),
            verify_failures: Family::default(),
            coalesced_waiters: Counter::default(),
            tier_bytes: Family::default(),
            cold_fetches: Family::default(),
            cold_provider_bytes: Family::default(),
            cold_hedges: Counter::default(),
            cold_resumes: Counter::default(),
            discovery_latency: Family::new_with_constructor(seconds_histogram),
            discovery_lookups: Family::default(),
            cold_unusable: Counter::default(),
            cold_deals: Family::default(),
            served_by: Family::default(),
            popularity_actions: Family::default(),
            retrieval_checks: Family::default(),
            retrievability_roots: Family::default(),
            provider_check_success: Family::default(),
            repairs: Family::default(),
            popularity_tracked: Gauge::default(),
            cold_spend: Counter::default(),
            cold_budget_remaining: Gauge::default(),
            inflight_work: Family::default(),
            limited: Family::default(),
            denylist_rules: Gauge::default(),
            denylist_list_rules: Family::default(),
            denylist_failures: Family::default(),
            denylist_last_success: Family::default(),
            blocked: Counter::default(),
            quarantined: Gauge::default(),
            dnslink_lookups: Family::default(),
            dnslink_cache: Family::default(),
            dnslink_latency: seconds_histogram(),
            ipns_fetches: Family::default(),
            ipns_routing_answers: Family::default(),
            served_bytes: Family::default(),
            breaker_open: Family::default(),
            build_info: Family::default(),
            resident_memory: Gauge::default(),
            open_fds: Gauge::default(),
            log_lines_dropped: Counter::default(),
            max_fds: Gauge::default(),
            store_size: Gauge::default(),
            store_bytes: Family::default(),
            store_max_size: Gauge::default(),
            store_evicted_blocks: Counter::default(),
            store_evicted_bytes: Counter::default(),
            store_reinserted_bytes: Counter::default(),
            store_compacted_bytes: Counter::default(),
            store_gc_runs: Counter::default(),
            store_released_bytes: Counter::default(),
            store_cache_skipped_bytes: Counter::default(),
            store_scrubbed_bytes: Counter::default(),
            store_scrub_corrupt: Counter::default(),
            store_scrub_passes: Counter::default(),
            stats: RequestStats::default(),
            registry: Registry::default(),
        };
        m.build_info.get_or_create(&BuildLabels::current()).set(1);
        registry.register(
            "served_bytes",
            "Body bytes sent, by the slowest tier the response needed",
            m.served_bytes.clone(),
        );
        registry.register(
            "breaker_open",
            "1 while a tier's circuit breaker is open and requests that need it fail fast",
            m.breaker_open.clone(),
        );
        registry.register(
            "build_info",
            "Build of the running binary (always 1)",
            m.build_info.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            m.resident_memory.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors of the process",
            m.open_fds.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stderr could not keep up",
            m.log_lines_dropped.clone(),
        );
        registry.register(
            "process_max_fds",
            "Open-files limit of the process",
            m.max_fds.clone(),
        );
        registry.register(
            "store_size_bytes",
            "Bytes of the embedded store's files on disk",
            m.store_size.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes of the store by kind: pinned and cache blocks, dead segment bytes, the index",
            m.store_bytes.clone(),
        );
        registry.register(
            "store_max_size_bytes",
            "The store's disk budget (store.max_size; 0: none)",
            m.store_max_size.clone(),
        );
        for (name, help, c) in [
            (
                "store_evicted_blocks",
                "Cache entries evicted from the store",
                &m.store_evicted_blocks,
            ),
            (
                "store_evicted_bytes",
                "Bytes of cache entries evicted from the store",
                &m.store_evicted_bytes,
            ),
            (
                "store_reinserted_bytes",
                "Bytes eviction kept because they were read again",
                &m.store_reinserted_bytes,
            ),
            (
                "store_compacted_bytes",
                "Bytes copied by compaction of the store's segments",
                &m.store_compacted_bytes,
            ),
            (
                "store_gc_runs",
                "Garbage collections of the store",
                &m.store_gc_runs,
            ),
            (
                "store_released_bytes",
                "Bytes no pin reaches any more, handed to the cache by garbage collection",
                &m.store_released_bytes,
            ),
            (
                "store_cache_skipped_bytes",
                "Bytes of fetched blocks not kept on disk",
                &m.store_cache_skipped_bytes,
            ),
            (
                "store_scrubbed_bytes",
                "Bytes the store scrub read and hashed again",
                &m.store_scrubbed_bytes,
            ),
            (
                "store_scrub_corrupt",
                "Blocks the store scrub found corrupt or unreadable",
                &m.store_scrub_corrupt,
            ),
            (
                "store_scrub_passes",
                "Store scrub passes over every block that ran to the end",
                &m.store_scrub_passes,
            ),
        ] {
            registry.register(name, help, c.clone());
        }
        registry.register(
            "requests",
            "HTTP requests by status and format",
            m.requests.clone(),
        );
        registry.register(
            "ttfb_seconds",
            "Time until the response head was ready",
            m.ttfb.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Total request time including the body",
            m.latency.clone(),
        );
        registry.register("response_bytes", "Body bytes sent", m.bytes_served.clone());
        registry.register(
            "inflight_requests",
            "Requests being handled",
            m.inflight.clone(),
        );
        registry.register(
            "cache_hits",
            "Block lookups answered by the edge cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "response_cache_hits",
            "Requests answered from the response cache, without the full request path",
            m.response_cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Block lookups the edge cache could not answer",
            m.cache_misses.clone(),
        );
        registry.register(
            "cache_evictions",
            "Blocks evicted from the edge cache",
            m.cache_evictions.clone(),
        );
        registry.register(
            "cache_bytes",
            "Bytes held by the edge cache",
            m.cache_bytes.clone(),
        );
        registry.register(
            "cache_arena_bytes",
            "Bytes of cached blocks in the zero-copy arena",
            m.cache_arena_bytes.clone(),
        );
        registry.register(
            "cache_arena_full",
            "Large blocks cached on the heap because the arena had no room",
            m.cache_arena_full.clone(),
        );
        registry.register(
            "zero_copy_response_bytes",
            "Body bytes sent with sendfile from the cache arena",
            m.zero_copy_bytes.clone(),
        );
        registry.register(
            "zero_copy_store_response_bytes",
            "Body bytes sent with sendfile straight from the store's segment files",
            m.zero_copy_store_bytes.clone(),
        );
        registry.register(
            "zero_copy_store_refetches",
            "Store blocks read again and hashed because their pages left the page cache before they were sent",
            m.zero_copy_store_refetches.clone(),
        );
        registry.register(
            "http1_direct_answers",
            "HTTP/1.1 requests read and answered by the server itself, without hyper",
            m.direct_answers.clone(),
        );
        registry.register(
            "tier_fetches",
            "Block and DAG fetches per tier and outcome",
            m.tier_fetches.clone(),
        );
        registry.register(
            "tier_fetch_duration_seconds",
            "Fetch latency per tier",
            m.tier_latency.clone(),
        );
        registry.register(
            "tier_verification_failures",
            "Blocks from a tier that did not hash to their CID",
            m.verify_failures.clone(),
        );
        registry.register(
            "coalesced_waiters",
            "Requests that joined a fetch already in flight",
            m.coalesced_waiters.clone(),
        );
        registry.register(
            "tier_bytes",
            "Block bytes received per tier",
            m.tier_bytes.clone(),
        );
        registry.register(
            "cold_fetches",
            "Storage provider requests by provider and outcome",
            m.cold_fetches.clone(),
        );
        registry.register(
            "cold_provider_bytes",
            "Block bytes received per storage provider",
            m.cold_provider_bytes.clone(),
        );
        registry.register(
            "cold_hedges",
            "Second providers started because the first was slow",
            m.cold_hedges.clone(),
        );
        registry.register(
            "cold_resumes",
            "Retrievals continued with another provider after a failure",
            m.cold_resumes.clone(),
        );
        registry.register(
            "discovery_duration_seconds",
            "Provider discovery latency per source",
            m.discovery_latency.clone(),
        );
        registry.register(
            "discovery_lookups",
            "Provider discovery answers by cache outcome",
            m.discovery_lookups.clone(),
        );
        registry.register(
            "discovery_unusable_addresses",
            "Provider records or addresses without a usable HTTP transport",
            m.cold_unusable.clone(),
        );
        registry.register(
            "cold_deal_decisions",
            "Retrieval deal decisions per candidate (source=accepted|declined)",
            m.cold_deals.clone(),
        );
        registry.register(
            "served_by",
            "Requests by the slowest tier that served them",
            m.served_by.clone(),
        );
        registry.register(
            "popularity_actions",
            "Prewarms, promotions, demotions, pins and prefetches by outcome",
            m.popularity_actions.clone(),
        );
        registry.register(
            "retrieval_checks",
            "Retrievability checks by place (store, hot, provider) and result",
            m.retrieval_checks.clone(),
        );
        registry.register(
            "retrievability_roots",
            "Pinned roots by retrievability state",
            m.retrievability_roots.clone(),
        );
        registry.register(
            "provider_check_success_ratio",
            "Share of retrievability checks each storage provider passed over the window",
            m.provider_check_success.clone(),
        );
        registry.register(
            "repairs",
            "Repairs by kind: store blocks rewritten, hot-layer pins pushed again",
            m.repairs.clone(),
        );
        registry.register(
            "popularity_tracked",
            "CIDs the popularity tracker holds",
            m.popularity_tracked.clone(),
        );
        registry.register(
            "cold_spend_fil",
            "FIL spent on retrievals",
            m.cold_spend.clone(),
        );
        registry.register(
            "cold_budget_remaining_fil",
            "FIL left in today's retrieval budget",
            m.cold_budget_remaining.clone(),
        );
        registry.register(
            "inflight_work",
            "Shared in-flight work by kind (block flights, DAG streams, parked waiters, permits, connections)",
            m.inflight_work.clone(),
        );
        registry.register(
            "limited",
            "Connections and requests refused or cut by a limit, by reason",
            m.limited.clone(),
        );
        registry.register(
            "denylist_rules",
            "Denylist rules in force",
            m.denylist_rules.clone(),
        );
        registry.register(
            "denylist_list_rules",
            "Rules per denylist",
            m.denylist_list_rules.clone(),
        );
        registry.register(
            "denylist_failures",
            "Failed reads or fetches per denylist since start",
            m.denylist_failures.clone(),
        );
        registry.register(
            "denylist_last_success_timestamp_seconds",
            "Unix time of each denylist's last successful read or fetch",
            m.denylist_last_success.clone(),
        );
        registry.register(
            "store_quarantined_records",
            "Stored records found unreadable and moved aside (kept, never overwritten)",
            m.quarantined.clone(),
        );
        registry.register(
            "blocked_requests",
            "Requests refused because a denylist blocks their content",
            m.blocked.clone(),
        );
        registry.register(
            "dnslink_lookups",
            "DNSLink TXT lookups sent to DNS by outcome (ok, not_found, ambiguous, failed, timeout)",
            m.dnslink_lookups.clone(),
        );
        registry.register(
            "dnslink_cache",
            "DNSLink answers by cache outcome (hit, negative_hit, miss, coalesced)",
            m.dnslink_cache.clone(),
        );
        registry.register(
            "dnslink_lookup_duration_seconds",
            "Time of DNSLink TXT lookups sent to DNS",
            m.dnslink_latency.clone(),
        );
        registry.register(
            "ipns_routing_fetches",
            "IPNS record fetches from Delegated Routing V1 endpoints by outcome (ok, not_found, invalid, failed, timeout)",
            m.ipns_fetches.clone(),
        );
        registry.register(
            "ipns_routing_answers",
            "IPNS names resolved with routing by freshness (fresh, stale, miss, negative_hit, coalesced)",
            m.ipns_routing_answers.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// Counts one name-resolution event in `family`.
    pub fn name_event(family: &Family<NameOutcome, Counter>, outcome: &'static str) {
        family.get_or_create(&NameOutcome { outcome }).inc();
    }

    /// The in-flight gauge of `kind`.
    pub fn work(&self, kind: &'static str) -> Gauge {
        self.inflight_work.get_or_create(&WorkKind { kind }).clone()
    }

    /// Counts one refusal or cut by a limit.
    pub fn limit_hit(&self, reason: &'static str) {
        self.limited.get_or_create(&LimitReason { reason }).inc();
    }

    /// Counts a fetch from `tier`.
    pub fn fetch(&self, tier: &str, outcome: &str, took: Duration) {
        self.tier_fetches
            .get_or_create(&TierLabels {
                tier: tier.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.tier_latency
            .get_or_create(&TierName {
                tier: tier.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a verification failure from `tier`.
    pub fn verify_failure(&self, tier: &str) {
        self.verify_failures
            .get_or_create(&TierName {
                tier: tier.to_string(),
            })
            .inc();
    }

    /// Counts a storage provider request.
    pub fn cold_fetch(&self, provider: &str, outcome: &str) {
        self.cold_fetches
            .get_or_create(&ProviderLabels {
                provider: provider.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts block bytes from a storage provider.
    pub fn cold_bytes(&self, provider: &str, n: u64) {
        self.cold_provider_bytes
            .get_or_create(&ProviderName {
                provider: provider.to_string(),
            })
            .inc_by(n);
        self.tier_bytes
            .get_or_create(&TierName {
                tier: "cold".to_string(),
            })
            .inc_by(n);
    }

    /// Records a discovery lookup's latency.
    pub fn discovery(&self, source: &str, took: Duration) {
        self.discovery_latency
            .get_or_create(&DiscoveryLabel {
                source: source.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a popularity action.
    pub fn action(&self, action: &'static str, outcome: &'static str) {
        self.popularity_actions
            .get_or_create(&ActionLabels { action, outcome })
            .inc();
    }

    /// Counts a discovery answer by cache outcome.
    pub fn discovery_cache(&self, outcome: &str) {
        self.discovery_lookups
            .get_or_create(&DiscoveryLabel {
                source: outcome.to_string(),
            })
            .inc();
    }

    /// Reads the process figures (resident memory, open and allowed descriptors) into their
    /// gauges; called at scrape time. Figures that cannot be read keep their last value.
    pub fn refresh_process(&self) {
        let dropped = dropped_log_lines();
        let counted = self.log_lines_dropped.get();
        if dropped > counted {
            self.log_lines_dropped.inc_by(dropped - counted);
        }
        if let Some(p) = process_figures() {
            self.resident_memory.set(p.resident_bytes as i64);
            self.open_fds.set(p.open_fds as i64);
            if let Some(max) = p.max_fds {
                self.max_fds.set(max as i64);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// What the process holds now.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProcessFigures {
    /// Resident memory in bytes.
    pub resident_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft open-files limit, when known.
    pub max_fds: Option<u64>,
}

/// Resident memory from `/proc/self/statm` and descriptors from `/proc/self/fd`; `None` off
/// Linux or when `/proc` is not mounted.
pub fn process_figures() -> Option<ProcessFigures> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let page = rustix::param::page_size() as u64;
        // `read_dir` holds one descriptor of its own while it counts: not counted.
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        Some(ProcessFigures {
            resident_bytes: pages.saturating_mul(page),
            open_fds: open_fds.saturating_sub(1),
            max_fds,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The tier name (`X-Cidgate-Tier`, `Server-Timing`) of answers from memory.
pub const CACHE_TIER: &str = "cache";

/// Which tiers served one request and for how long (before its head was sent).
#[derive(Clone, Default)]
pub struct RequestTrace {
    inner: Arc<Mutex<Vec<(&'static str, Duration)>>>,
}

impl RequestTrace {
    /// Adds time spent in `tier`.
    pub fn record(&self, tier: &'static str, took: Duration) {
        if let Ok(mut v) = self.inner.lock() {
            match v.iter_mut().find(|(t, _)| *t == tier) {
                Some((_, d)) => *d += took,
                None => v.push((tier, took)),
            }
        }
    }

    /// `Server-Timing` value: one metric per tier with its total duration in milliseconds.
    pub fn server_timing(&self) -> String {
        self.inner
            .lock()
            .map(|v| {
                v.iter()
                    .map(|(t, d)| format!("{t};dur={:.3}", d.as_secs_f64() * 1000.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }

    /// The tiers, fastest first as recorded, for `X-Cidgate-Tier` (no allocation for the
    /// common case of one tier).
    pub fn tiers(&self) -> std::borrow::Cow<'static, str> {
        self.inner
            .lock()
            .map(|v| match v.as_slice() {
                [] => std::borrow::Cow::Borrowed(""),
                [(t, _)] => std::borrow::Cow::Borrowed(*t),
                many => std::borrow::Cow::Owned(
                    many.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(","),
                ),
            })
            .unwrap_or_default()
    }
}

tokio::task_local! {
    /// The trace of the request being handled on this task.
    pub static TRACE: RequestTrace;
}

/// Records tier time into the current request's trace, if there is one.
/// `fut`, recording into the current request's trace wherever it runs: work a request starts
/// in a task of its own (a coalesced fetch, a DAG stream) still shows in that request's
/// `Server-Timing` and `X-Cidgate-Tier`.
pub fn in_current_trace<F>(fut: F) -> futures::future::BoxFuture<'static, F::Output>
where
    F: std::future::Future + Send + 'static,
{
    use futures::FutureExt;
    match TRACE.try_with(|t| t.clone()) {
        Ok(t) => TRACE.scope(t, fut).boxed(),
        Err(_) => fut.boxed(),
    }
}

/// Records time spent in `tier` for the current request, if any.
pub fn trace(tier: &'static str, took: Duration) {
    let _ = TRACE.try_with(|t| t.record(tier, took));
}

/// Why logging or tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A log filter does not parse; `origin` is `RUST_LOG` or `telemetry.log`.
    #[error("{origin}: invalid log filter {filter:?}: {message}")]
    Filter {
        /// Where the filter came from.
        origin: &'static str,
        /// The filter as given.
        filter: String,
        /// The parser's message.
        message: String,
    },
    /// The subscriber or the trace exporter could not be installed.
    #[error("telemetry: {0}")]
    Setup(String),
}

impl TelemetryError {
    /// A usage error (a bad filter): the process exits with code 2, like for a bad config.
    pub fn is_usage(&self) -> bool {
        matches!(self, TelemetryError::Filter { .. })
    }
}

/// Parses a log filter in `EnvFilter` syntax, refusing what does not parse (instead of
/// silently falling back, which would hide every log line an operator asked for).
pub fn parse_filter(filter: &str) -> Result<tracing_subscriber::EnvFilter, TelemetryError> {
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map_err(|e| TelemetryError::Filter {
            origin: "telemetry.log",
            filter: filter.to_string(),
            message: e.to_string(),
        })
}

/// The target of access log lines (`telemetry.access_log`); filters can name it, e.g.
/// `info,cidgate::access=off`.
pub const ACCESS_TARGET: &str = "cidgate::access";

type FilterHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Changes the log filter of the running process (on SIGHUP).
#[derive(Clone)]
pub struct LogControl {
    handle: FilterHandle,
    /// `RUST_LOG` was set at start: it wins over `telemetry.log`, at start and on reload.
    from_env: bool,
}

impl LogControl {
    /// Installs `filter` (`telemetry.log`) in place of the current one; `Ok(false)` when
    /// `RUST_LOG` is set and so stays in force.
    pub fn set_filter(&self, filter: &str) -> Result<bool, TelemetryError> {
        if self.from_env {
            return Ok(false);
        }
        let parsed = parse_filter(filter)?;
        self.handle
            .reload(parsed)
            .map_err(|e| TelemetryError::Setup(e.to_string()))?;
        Ok(true)
    }
}

/// Installed logging and tracing; [`Telemetry::shutdown`] flushes the last spans at exit.
pub struct Telemetry {
    /// Changes the log filter later.
    pub log: LogControl,
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    /// Flushes the log writer's last lines when dropped.
    _log_writer: tracing_appender::non_blocking::WorkerGuard,
}

/// Lines the log writer dropped because its buffer was full (see [`init`]).
static DROPPED_LOG_LINES: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Log lines dropped so far because stderr could not keep up.
pub fn dropped_log_lines() -> u64 {
    DROPPED_LOG_LINES
        .get()
        .map_or(0, |c| c.dropped_lines() as u64)
}

/// Log lines held for the writer thread before new ones are dropped (about 16 MiB of
/// access-log lines).
const LOG_BUFFER_LINES: usize = 65_536;

impl Telemetry {
    /// Flushes the log and stops the trace exporter, if there is one.
    pub fn shutdown(self) -> Result<(), TelemetryError> {
        drop(self._log_writer);
        match self.provider {
            Some(p) => p
                .shutdown()
                .map_err(|e| TelemetryError::Setup(format!("flushing traces: {e}"))),
            None => Ok(()),
        }
    }
}

/// Installs logging to stderr (`RUST_LOG` when set, else `config.log`; text or JSON lines;
/// colours only on a terminal) and, when `config.otlp_endpoint` is set, OTLP/HTTP export of
/// the request spans. A filter that does not parse is an error, not a silent default.
pub fn init(config: &crate::config::TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, Registry};

    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match &env {
        Some(v) => parse_filter(v).map_err(|e| match e {
            TelemetryError::Filter {
                filter, message, ..
            } => TelemetryError::Filter {
                origin: "RUST_LOG",
                filter,
                message,
            },
            other => other,
        })?,
        None => parse_filter(&config.log)?,
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    // Lines are formatted where they happen and written by a thread of their own, in batches:
    // an access-log line per request written to stderr on the request's thread cost a fifth of
    // the cache-hit throughput (docs/benchmarks.md). When stderr cannot keep up, lines are
    // dropped and counted (`cidgate_log_lines_dropped_total`) rather than stalling requests.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("cidgate-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let _ = DROPPED_LOG_LINES.set(writer.error_counter());
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match config.log_format {
        crate::config::LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer.clone())
            .with_ansi(ansi)
            .boxed(),
        crate::config::LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    };
    let log = LogControl {
        handle,
        from_env: env.is_some(),
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    if config.otlp_endpoint.is_empty() {
        registry
            .try_init()
            .map_err(|e| TelemetryError::Setup(e.to_string()))?;
        return Ok(Telemetry {
            log,
            provider: None,
            _log_writer: guard,
        });
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!(
            "{}/v1/traces",
            config.otlp_endpoint.trim_end_matches('/')
        ))
        .build()
        .map_err(|e| TelemetryError::Setup(e.to_string()))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("cidgate")
                .build(),
        )
        .build();
    let tracer = provider.tracer("cidgate");
    // Request spans are debug-level so they cost nothing unless this exporter wants them.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(EnvFilter::new("cidgate=debug"));
    registry
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::Setup(e.to_string()))?;
    Ok(Telemetry {
        log,
        provider: Some(provider),
        _log_writer: guard,
    })
}
