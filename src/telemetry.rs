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

/// Labels of request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP status code.
    pub status: u16,
    /// Response format (raw, car, deserialized, …).
    pub format: &'static str,
}

/// Labels of per-tier series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    /// Tier name.
    pub tier: String,
    /// ok, not_found, error, timeout, corrupt, skipped.
    pub outcome: String,
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

/// Every metric cidgate exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by status and format.
    pub requests: Family<RequestLabels, Counter>,
    /// Time until the response head was ready.
    pub ttfb: Histogram,
    /// Time until the handler returned or the body finished, whichever is later.
    pub latency: Histogram,
    /// Body bytes sent.
    pub bytes_served: Counter,
    /// Requests being handled now.
    pub inflight: Gauge,
    /// Block lookups answered by the edge cache.
    pub cache_hits: Counter,
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
    pub served_by: Family<TierName, Counter>,
    /// Popularity actions by outcome.
    pub popularity_actions: Family<ActionLabels, Counter>,
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
}

fn seconds_histogram() -> Histogram {
    // 100 µs … ~50 s
    Histogram::new(exponential_buckets(0.0001, 2.5, 15))
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("cidgate");
        let m = Metrics {
            requests: Family::default(),
            ttfb: seconds_histogram(),
            latency: seconds_histogram(),
            bytes_served: Counter::default(),
            inflight: Gauge::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_evictions: Counter::default(),
            cache_bytes: Gauge::default(),
            cache_arena_bytes: Gauge::default(),
            cache_arena_full: Counter::default(),
            zero_copy_bytes: Counter::default(),
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
            registry: Registry::default(),
        };
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

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

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

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("telemetry: {0}")]
pub struct TelemetryError(String);

/// Installs logging (to stderr, filtered by `RUST_LOG` or `log_filter`) and, when
/// `otlp_endpoint` is set, OTLP/HTTP export of the request spans. Returns the tracer provider,
/// which must be shut down at exit to flush the last spans.
pub fn init(
    log_filter: &str,
    otlp_endpoint: &str,
) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>, TelemetryError> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    if otlp_endpoint.is_empty() {
        tracing_subscriber::registry()
            .with(fmt)
            .try_init()
            .map_err(|e| TelemetryError(e.to_string()))?;
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", otlp_endpoint.trim_end_matches('/')))
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
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
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError(e.to_string()))?;
    Ok(Some(provider))
}
