//! One typed configuration: built-in defaults, then a TOML file, then `CIDGATE_<SECTION>__<KEY>`
//! environment variables, then CLI flags. Unknown keys and bad values stop the start with a
//! message naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key is unknown or has a bad value.
    #[error("config key `{key}`: {message}")]
    Key {
        /// Dotted key path (or environment variable).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The public gateway listener.
    pub server: ServerConfig,
    /// What the gateway serves.
    pub gateway: GatewayConfig,
    /// The admin listener (writes, import, metrics).
    pub admin: AdminConfig,
    /// The embedded store.
    pub store: StoreConfig,
    /// The in-memory edge cache.
    pub cache: CacheConfig,
    /// The hot pinning node.
    pub hot: HotConfig,
    /// The cold tier (Filecoin storage providers).
    pub cold: ColdConfig,
    /// Popularity tracking and promotion.
    pub popularity: PopularityConfig,
    /// Logs, metrics and traces.
    pub telemetry: TelemetryConfig,
    /// DNSLink sites.
    pub dnslink: DnslinkConfig,
    /// Content blocking (IPIP-383 compact denylists).
    pub denylist: DenylistConfig,
    /// Continuous checks that every pin can be retrieved, and repairs.
    pub retrieval_checks: RetrievalChecksConfig,
}

/// `[retrieval_checks]`: every pinned root is checked on a schedule (the store's blocks are
/// re-read and hashed, the hot layer asked, each storage provider sampled) and repaired where
/// possible.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalChecksConfig {
    /// Run the checks in the background.
    pub enabled: bool,
    /// How often each pinned root is checked.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Roots checked at the same time.
    pub max_concurrent: u32,
    /// Bytes per second of the store scrub and the sample walks, all roots at once.
    pub bytes_per_second: bytesize::ByteSize,
    /// Providers asked per root and check.
    pub max_providers: u32,
    /// Content retrievable from fewer providers than this is flagged.
    pub min_providers: u32,
    /// Bytes of a file asked for with `entity-bytes` when a provider is sampled.
    pub sample_bytes: bytesize::ByteSize,
    /// Checks kept per provider for its success rate.
    pub window: u32,
}

impl Default for RetrievalChecksConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(6 * 3600),
            max_concurrent: 2,
            bytes_per_second: bytesize::ByteSize::mib(8),
            max_providers: 8,
            min_providers: 1,
            sample_bytes: bytesize::ByteSize::kib(64),
            window: 100,
        }
    }
}

/// `[denylist]`: IPIP-383 compact denylists, from local files and subscriptions.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenylistConfig {
    /// Local `.deny` files, re-read when their modification time or size changes.
    pub files: Vec<PathBuf>,
    /// Subscriptions (http:// or https:// URLs), followed as they grow and kept on disk.
    pub urls: Vec<String>,
    /// How often subscriptions are fetched again.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    /// How often local files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// Deadline of one subscription request, body included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for DenylistConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            urls: Vec::new(),
            refresh: Duration::from_secs(300),
            poll: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
        }
    }
}

/// `[gateway]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Largest UnixFS file or directory DAG served deserialized (as a file, a listing's site,
    /// a TAR); larger ones get a cacheable 410 naming the cap (verifiable `?format=raw` and
    /// `?format=car` are not limited by it). A Range request counts the bytes it asks for.
    /// 0: no cap.
    pub max_deserialized_response_size: bytesize::ByteSize,
    /// Largest UnixFS DAG served in any format (deserialized, raw, CAR, TAR); larger ones get a
    /// cacheable 410 naming the cap. Ranges and `entity-bytes` count the bytes they ask for.
    /// 0: no cap.
    pub max_unixfs_dag_response_size: bytesize::ByteSize,
    /// Which content is served: `any` CID, or only what is reachable from this gateway's pins
    /// (`pinned`, a dedicated gateway; other CIDs get 403 without being fetched).
    pub serve: ServeMode,
    /// On a dedicated gateway, tokens whose holders may fetch any CID (`Authorization: Bearer
    /// …` or `?token=…`, for media tags that cannot send headers).
    pub access_tokens: Vec<String>,
}

/// Which content a gateway serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServeMode {
    /// Any CID (a public gateway).
    #[default]
    Any,
    /// Only content reachable from this gateway's pins (a dedicated gateway).
    Pinned,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_deserialized_response_size: bytesize::ByteSize::b(0),
            max_unixfs_dag_response_size: bytesize::ByteSize::b(0),
            serve: ServeMode::Any,
            access_tokens: Vec::new(),
        }
    }
}

/// `[dnslink]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnslinkConfig {
    /// Domain → content path (`/ipfs/{cid}[/path]` or `/ipns/{name}`), what the domain's
    /// `_dnslink` TXT record says. A request whose Host is such a domain is served that site;
    /// `/ipns/{domain}` resolves through the same table. Checked before DNS, and always served.
    pub names: std::collections::BTreeMap<String, String>,
    /// Domain suffix (`"."` for every domain) → resolver, `https://host[:port]/dns-query` (DNS
    /// over HTTPS) or `udp://IP:PORT`; the longest matching suffix wins, and domains no suffix
    /// matches use the system resolver (`/etc/resolv.conf`).
    pub resolvers: std::collections::BTreeMap<String, String>,
    /// Domains that may be served as DNSLink sites and looked up in DNS: `"*"` for all, exact
    /// domains, and `.suffix` entries for every domain below a suffix. Empty: no DNS lookups.
    pub allowed: Vec<String>,
    /// Deadline of one DNSLink lookup.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long "no DNSLink record" is remembered.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Longest a DNSLink answer is reused, whatever its TTL says.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Domains whose answers (DNSLink or none) are kept in memory.
    pub cache_entries: usize,
    /// PEM file of root certificates DNS-over-HTTPS resolvers may also chain to (a resolver
    /// with a private CA); empty: the web PKI roots only.
    pub tls_ca: String,
}

impl Default for DnslinkConfig {
    fn default() -> Self {
        Self {
            names: Default::default(),
            resolvers: Default::default(),
            allowed: vec!["*".to_string()],
            timeout: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(3600),
            cache_entries: 10_000,
            tls_ca: String::new(),
        }
    }
}

/// `[server]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Public listen address (HTTP/1.1, h2c and, with a certificate, TLS on one port).
    pub listen: SocketAddr,
    /// PEM certificate chain; TLS is on when both this and `tls_key` are set.
    pub tls_cert: String,
    /// PEM private key.
    pub tls_key: String,
    /// Concurrent connections; more are answered with 503.
    pub max_connections: usize,
    /// Concurrent connections from one client address (IPv4, or IPv6 /64) that is not a
    /// trusted proxy; more are answered with 503. 0: no per-client bound.
    pub max_connections_per_client: usize,
    /// Requests in progress on the public listener; more are answered 429 with `Retry-After`.
    /// 0: unbounded.
    pub max_concurrent_requests: usize,
    /// Requests in progress per client (IPv4, or IPv6 /64); more get 429. 0: unbounded.
    pub max_requests_per_client: usize,
    /// Sustained requests per second per client (token bucket); 0: no rate limit.
    pub client_rate: f64,
    /// Requests a client may send at once above `client_rate`.
    pub client_burst: u32,
    /// Networks of proxies whose `X-Forwarded-For`, `-Host` and `-Proto` are believed; the
    /// headers are removed from every other request.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest request head (request line and headers) in bytes; larger ones get 431.
    pub max_header_bytes: usize,
    /// Longest request target in bytes; longer ones get 414.
    pub max_url_bytes: usize,
    /// Time allowed to receive a request head (from accept for the first one).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection without a request in progress for this long is closed (HTTP/1.1
    /// keep-alive and HTTP/2 alike).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A client that accepts no response bytes for this long is cut off.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// A response whose head is not ready within this long is answered 504 (the upstream tiers
    /// sent nothing in time).
    #[serde(with = "humantime_serde")]
    pub retrieval_timeout: Duration,
    /// A streaming body that produces nothing for this long is cut short (no clean end).
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// Longest a response may take in total; longer ones are cut short. 0: unbounded.
    #[serde(with = "humantime_serde")]
    pub max_request_duration: Duration,
    /// How long shutdown waits for in-flight responses.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// After SIGTERM, keep serving this long while `/readyz` answers 503, so that a load
    /// balancer's health check takes the gateway out before its listener closes. 0: none.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Add the bundled sample site to a fresh store.
    pub sample: bool,
    /// Host names served as subdomain gateways: `{cid}.ipfs.{host}` (origin isolation).
    pub subdomain_hosts: Vec<String>,
    /// HTTP/1.1 `GET` and `HEAD` requests without a body are read and answered by the server
    /// itself, without hyper (kept answers at once, others streamed); false serves every
    /// request through hyper.
    pub direct_http1: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: String::new(),
            tls_key: String::new(),
            max_connections: 10_000,
            max_connections_per_client: 256,
            max_concurrent_requests: 4096,
            max_requests_per_client: 512,
            client_rate: 0.0,
            client_burst: 200,
            trusted_proxies: vec![
                ipnet::IpNet::from(ipnet::Ipv4Net::new_assert(
                    std::net::Ipv4Addr::new(127, 0, 0, 0),
                    8,
                )),
                ipnet::IpNet::from(ipnet::Ipv6Net::new_assert(
                    std::net::Ipv6Addr::LOCALHOST,
                    128,
                )),
            ],
            max_header_bytes: 16 * 1024,
            max_url_bytes: 8 * 1024,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            retrieval_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(60),
            max_request_duration: Duration::from_secs(4 * 3600),
            shutdown_grace: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            sample: true,
            subdomain_hosts: vec!["localhost".to_string()],
            direct_http1: true,
        }
    }
}

/// `[admin]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin listen address; loopback by default.
    pub listen: SocketAddr,
    /// Bearer token required for writes. Empty: writes only allowed on a loopback listener.
    pub token: String,
    /// How often the status page samples traffic (an hour of samples is kept).
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            token: String::new(),
            status_interval: Duration::from_secs(10),
        }
    }
}

/// `[store]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Data directory of the embedded store.
    pub dir: PathBuf,
    /// Page cache of the store (bounds its resident memory).
    pub cache: bytesize::ByteSize,
    /// Disk budget of the block bytes: pinned blocks plus the disk cache. Cache entries are
    /// evicted past `high_watermark` of it down to `low_watermark`; pinned blocks are never
    /// evicted, and an import that would take them past it is refused. 0: no budget.
    pub max_size: bytesize::ByteSize,
    /// Keep blocks fetched from the hot node and the cold tier in the store as cache entries.
    pub keep_fetched: bool,
    /// Share of `max_size` where eviction starts.
    pub high_watermark: f64,
    /// Share of `max_size` where eviction stops.
    pub low_watermark: f64,
    /// Size of one segment file of block bytes (the unit of eviction and compaction).
    pub segment_size: bytesize::ByteSize,
    /// How often garbage collection, eviction and compaction look for work (a write past the
    /// high watermark starts them at once).
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// Bytes per second the scrub reads and hashes again, every block in turn (large blocks in
    /// the page cache leave unhashed; this is the check behind that). 0: no scrub.
    pub scrub_rate: bytesize::ByteSize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("cidgate-data"),
            cache: bytesize::ByteSize::mib(16),
            max_size: bytesize::ByteSize::gib(10),
            keep_fetched: true,
            high_watermark: 0.95,
            low_watermark: 0.85,
            segment_size: bytesize::ByteSize::mib(64),
            maintenance_interval: Duration::from_secs(30),
            scrub_rate: bytesize::ByteSize::mib(8),
        }
    }
}

/// `[cache]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bytes of verified blocks the in-memory edge cache may hold.
    pub memory: bytesize::ByteSize,
    /// Bytes of whole small responses (≤ 64 KiB bodies, immutable content) kept for repeated
    /// plain requests (a larger one-block body is kept by reference to the memory cache and
    /// not counted here); 0 turns it off.
    pub responses: bytesize::ByteSize,
    /// Move cached blocks of 64 KiB and more into a memory file once read twice and send them
    /// to plain-TCP clients with `sendfile(2)`, skipping one copy per response (Linux only).
    pub zero_copy: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory: bytesize::ByteSize::mib(256),
            responses: bytesize::ByteSize::mib(16),
            zero_copy: true,
        }
    }
}

/// Which hot pinning node backs the gateway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HotBackend {
    /// The embedded store in `store.dir`.
    #[default]
    Embedded,
    /// Any trustless gateway (e.g. a Kubo node's gateway port, another cidgate).
    Trustless,
    /// A Kubo node's RPC API.
    Kubo,
}

/// `[hot]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotConfig {
    /// `embedded`, `trustless` or `kubo`.
    pub backend: HotBackend,
    /// Base URL of the remote node (gateway or RPC API) for `trustless` / `kubo`.
    pub url: String,
    /// Deadline for one remote call, and for each gap between blocks of a stream.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open circuit skips the node.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// IPFS Cluster REST API; when set, promotions and operator pins go to the cluster.
    pub cluster_url: String,
    /// Cluster replication factors of those pins (-1: every peer).
    pub cluster_replication_min: i32,
    /// See `cluster_replication_min`.
    pub cluster_replication_max: i32,
}

impl Default for HotConfig {
    fn default() -> Self {
        Self {
            backend: HotBackend::Embedded,
            url: String::new(),
            timeout: Duration::from_secs(10),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            cluster_url: String::new(),
            cluster_replication_min: -1,
            cluster_replication_max: -1,
        }
    }
}

/// One statically configured storage provider: a bare base URL or a table with a price and label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StaticProvider {
    /// Just the base URL of its trustless gateway (free, labelled by host).
    Url(String),
    /// Base URL with a price and a label.
    Priced {
        /// Base URL of the provider's trustless gateway.
        url: String,
        /// Name shown in logs, metrics and the admin API.
        #[serde(default)]
        label: String,
        /// Asking price in FIL per GiB retrieved (0: free).
        #[serde(default)]
        price_per_gib: f64,
    },
}

impl StaticProvider {
    /// The provider's base URL.
    pub fn url(&self) -> &str {
        match self {
            StaticProvider::Url(u) | StaticProvider::Priced { url: u, .. } => u,
        }
    }
}

/// `[cold]`: Filecoin storage providers reached over the trustless gateway protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColdConfig {
    /// Static provider list (base URLs, optionally with price and label).
    pub providers: Vec<StaticProvider>,
    /// IPNI indexers asked `GET {indexer}/cid/{cid}`.
    pub indexers: Vec<String>,
    /// Delegated Routing V1 endpoints asked `GET {router}/routing/v1/providers/{cid}`.
    pub routers: Vec<String>,
    /// How long a discovery answer is reused.
    #[serde(with = "humantime_serde")]
    pub discovery_ttl: Duration,
    /// How long an empty discovery answer is reused.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Deadline of one indexer or router lookup.
    #[serde(with = "humantime_serde")]
    pub discovery_timeout: Duration,
    /// Deadline for connecting to a provider.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline from request to the first block of a provider's answer.
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// Longest gap between two blocks of a provider's stream.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest a client waits for the cold tier to bring a block before a 504.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Provider requests in flight at once, all providers together.
    pub max_concurrent: u32,
    /// Requests in flight at once to one provider.
    pub per_provider: u32,
    /// Hedge delay for a provider without latency history (with history: its recent p90 TTFB).
    #[serde(with = "humantime_serde")]
    pub hedge_after: Duration,
    /// Quotes above this price (FIL per GiB) are declined.
    pub max_price_per_gib: f64,
    /// Most one retrieval may spend (FIL).
    pub request_ceiling: f64,
    /// Most all retrievals may spend per UTC day (FIL); 0 disables paid retrieval.
    pub daily_budget: f64,
}

impl Default for ColdConfig {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            indexers: Vec::new(),
            routers: Vec::new(),
            discovery_ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(30),
            discovery_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(15),
            deadline: Duration::from_secs(60),
            max_concurrent: 64,
            per_provider: 8,
            hedge_after: Duration::from_secs(2),
            max_price_per_gib: 1.0,
            request_ceiling: 0.1,
            daily_budget: 0.0,
        }
    }
}

impl ColdConfig {
    /// Whether any discovery source is configured (otherwise the cold tier is off).
    pub fn enabled(&self) -> bool {
        !(self.providers.is_empty() && self.indexers.is_empty() && self.routers.is_empty())
    }
}

/// `[popularity]`: demand tracking, prewarming, promotion and demotion.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PopularityConfig {
    /// Track demand and act on it.
    pub enabled: bool,
    /// Time for a CID's demand counter to halve.
    #[serde(with = "humantime_serde")]
    pub half_life: Duration,
    /// CIDs tracked at most (Space-Saving slots).
    pub top_k: u32,
    /// Decayed requests above which a DAG is prewarmed into the edge cache.
    pub prewarm_threshold: f64,
    /// Decayed requests above which content is pinned into the hot layer.
    pub promote_threshold: f64,
    /// Decayed requests below which an automatic pin counts as cold ...
    pub demote_threshold: f64,
    /// ... and for how long it must stay cold before it is unpinned.
    #[serde(with = "humantime_serde")]
    pub demote_after: Duration,
    /// How often prewarm, promotion and demotion decisions run.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// DAGs prewarmed at once (background work never takes more).
    pub prewarm_concurrency: u32,
    /// Largest DAG prewarmed or promoted automatically.
    pub max_dag_bytes: bytesize::ByteSize,
    /// File of CIDs (one per line, `#` comments) prewarmed at start.
    pub prewarm_file: String,
    /// Bytes read ahead of a file that is being read sequentially with ranges (0: off).
    pub sequential_prefetch: bytesize::ByteSize,
    /// How often the tracker and the promotion records are saved (also at shutdown).
    #[serde(with = "humantime_serde")]
    pub save_every: Duration,
    /// This gateway's name in a fleet sharing one Kubo node or Cluster (unique per gateway):
    /// promotions are pinned there as this gateway's claims, and its demotions remove only those.
    /// Empty: this gateway owns the hot layer's automatic pins alone.
    pub gateway_name: String,
}

impl Default for PopularityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            half_life: Duration::from_secs(600),
            top_k: 1024,
            prewarm_threshold: 4.0,
            promote_threshold: 16.0,
            demote_threshold: 2.0,
            demote_after: Duration::from_secs(3600),
            interval: Duration::from_secs(10),
            prewarm_concurrency: 2,
            max_dag_bytes: bytesize::ByteSize::gib(1),
            prewarm_file: String::new(),
            sequential_prefetch: bytesize::ByteSize::mib(8),
            save_every: Duration::from_secs(60),
            gateway_name: String::new(),
        }
    }
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (colours only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, fields at the top level (for log shippers).
    Json,
}

/// `[telemetry]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` wins when set.
    pub log: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// One line per public request at info level, target `cidgate::access`.
    pub access_log: bool,
    /// OTLP/HTTP endpoint for traces (e.g. `http://127.0.0.1:4318`); empty: no export.
    pub otlp_endpoint: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log: "info".into(),
            log_format: LogFormat::Text,
            access_log: true,
            otlp_endpoint: String::new(),
        }
    }
}

const ENV_PREFIX: &str = "CIDGATE_";

/// What command-line flags set over the file and the environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--data-dir` (store.dir).
    pub data_dir: Option<PathBuf>,
    /// `serve --listen` (server.listen).
    pub listen: Option<SocketAddr>,
    /// `serve --admin-listen` (admin.listen).
    pub admin_listen: Option<SocketAddr>,
}

impl Overrides {
    /// Sets what the flags name in `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(d) = &self.data_dir {
            config.store.dir = d.clone();
        }
        if let Some(l) = self.listen {
            config.server.listen = l;
        }
        if let Some(l) = self.admin_listen {
            config.admin.listen = l;
        }
    }
}

/// What a masked secret is shown as.
pub const MASK: &str = "****";

/// Key names whose values are secrets wherever they appear.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "token"
        || k.ends_with("_token")
        || k.ends_with("_tokens")
        || k.contains("password")
        || k.contains("secret")
        || k == "api_key"
}

/// `path?query` with the values of credential parameters (`?token=`, …) masked; borrowed when
/// there are none (the common case costs one scan).
pub fn mask_query(path_and_query: &str) -> std::borrow::Cow<'_, str> {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.into();
    };
    let secret =
        |k: &str| is_secret_param(&percent_encoding::percent_decode_str(k).decode_utf8_lossy());
    if !query
        .split('&')
        .any(|pair| secret(pair.split('=').next().unwrap_or("")))
    {
        return path_and_query.into();
    }
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if secret(k) => format!("{k}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", masked.join("&")).into()
}

/// Query parameters that carry credentials in URLs (`?token=`, `?api_key=`, signatures).
fn is_secret_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "token",
        "key",
        "secret",
        "password",
        "passwd",
        "auth",
        "sig",
        "credential",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// `s` with the credentials of a URL masked (user info and secret query parameters); other
/// strings unchanged. Only a URL that had something to mask is re-serialised.
pub fn mask_url(s: &str) -> String {
    if !s.contains("://") {
        return s.to_string();
    }
    let Ok(mut url) = url::Url::parse(s) else {
        return s.to_string();
    };
    let mut masked = false;
    if url.password().is_some() {
        masked |= url.set_password(Some(MASK)).is_ok();
    } else if !url.username().is_empty() {
        // A lone user name is often a token (`https://TOKEN@host/`).
        masked |= url.set_username(MASK).is_ok();
    }
    if url.query_pairs().any(|(k, _)| is_secret_param(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) {
                    MASK.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        masked = true;
    }
    if masked {
        url.to_string()
    } else {
        s.to_string()
    }
}

/// Masks secrets in a configuration tree: values of secret keys and credentials in URLs.
fn mask_value(value: &mut toml::Value, key: &str) {
    match value {
        toml::Value::String(s) if is_secret_key(key) && !s.is_empty() => *s = MASK.to_string(),
        toml::Value::String(_) if is_secret_key(key) => {}
        toml::Value::String(s) => *s = mask_url(s),
        toml::Value::Array(items) => items.iter_mut().for_each(|v| mask_value(v, key)),
        toml::Value::Table(t) => t.iter_mut().for_each(|(k, v)| mask_value(v, k)),
        _ => {}
    }
}

impl Config {
    /// Loads defaults, then `file` (if any), then the environment given as `(name, value)` pairs.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut value = toml::Value::try_from(Config::default()).map_err(|e| ConfigError::Key {
            key: "(defaults)".into(),
            message: e.to_string(),
        })?;
        let defaults = value.clone();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let file_value: toml::Value =
                toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            merge(&mut value, file_value, "")?;
        }
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .collect();
        env.sort();
        for (name, raw) in env {
            apply_env(&mut value, &defaults, &name, &raw)?;
        }
        let config: Config =
            serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Key {
                key: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Defaults, `file`, the environment and then the command-line `overrides`, validated.
    pub fn effective(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut config = Self::load(file, env)?;
        overrides.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML, with secrets masked (`admin.token`, any key named like a
    /// token, password or secret, and credentials in URLs).
    pub fn to_masked_toml(&self) -> Result<String, ConfigError> {
        let internal = |e: &dyn std::fmt::Display| ConfigError::Key {
            key: "(output)".into(),
            message: e.to_string(),
        };
        let mut value = toml::Value::try_from(self).map_err(|e| internal(&e))?;
        mask_value(&mut value, "");
        toml::to_string_pretty(&value).map_err(|e| internal(&e))
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Key {
                key: key.into(),
                message: message.into(),
            })
        };
        for (domain, path) in &self.dnslink.names {
            if !domain.contains('.') || domain.starts_with('.') {
                return bad(
                    "dnslink.names",
                    &format!("{domain:?} is not a domain name (it needs a dot)"),
                );
            }
            if !(path.starts_with("/ipfs/") || path.starts_with("/ipns/")) || path.len() < 7 {
                return bad(
                    "dnslink.names",
                    &format!("{domain:?} maps to {path:?}: not an /ipfs/ or /ipns/ path"),
                );
            }
            if let Some(rest) = path.strip_prefix("/ipfs/") {
                let root = rest.split('/').next().unwrap_or_default();
                if let Err(e) = cid::Cid::try_from(root) {
                    return bad(
                        "dnslink.names",
                        &format!("{domain:?} maps to {path:?}: {root:?} is not a CID: {e}"),
                    );
                }
            }
        }
        for (suffix, url) in &self.dnslink.resolvers {
            if let Err(e) = crate::dns_syntax::parse_resolver(suffix, url) {
                return bad("dnslink.resolvers", &e);
            }
        }
        if let Err(e) = crate::dns_syntax::Allowed::parse(&self.dnslink.allowed) {
            return bad("dnslink.allowed", &e);
        }
        if self.dnslink.timeout.is_zero() {
            return bad("dnslink.timeout", "must be more than zero");
        }
        if self.dnslink.cache_entries == 0 {
            return bad("dnslink.cache_entries", "must be at least 1");
        }
        if self.server.tls_cert.is_empty() != self.server.tls_key.is_empty() {
            return bad(
                "server.tls_cert",
                "tls_cert and tls_key must be set together",
            );
        }
        if self.admin.status_interval < Duration::from_millis(100) {
            return bad("admin.status_interval", "must be at least 100ms");
        }
        if self.server.max_connections == 0 {
            return bad("server.max_connections", "must be at least 1");
        }
        for (key, d) in [
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.idle_timeout", self.server.idle_timeout),
            ("server.send_timeout", self.server.send_timeout),
            ("server.retrieval_timeout", self.server.retrieval_timeout),
            ("server.stall_timeout", self.server.stall_timeout),
        ] {
            if d.is_zero() {
                return bad(key, "must be more than zero");
            }
        }
        if self
            .gateway
            .access_tokens
            .iter()
            .any(|t| t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return bad(
                "gateway.access_tokens",
                "each token must be at least 16 printable characters without spaces",
            );
        }
        let rc = &self.retrieval_checks;
        if rc.interval.is_zero()
            || rc.max_concurrent == 0
            || rc.bytes_per_second.as_u64() == 0
            || rc.window == 0
        {
            return bad(
                "retrieval_checks.interval",
                "interval, max_concurrent, bytes_per_second and window must be more than zero",
            );
        }
        if self.server.drain_delay > Duration::from_secs(600) {
            return bad("server.drain_delay", "must be at most 10 minutes");
        }
        if !(self.server.client_rate.is_finite() && self.server.client_rate >= 0.0) {
            return bad("server.client_rate", "must be a non-negative number");
        }
        if self.server.max_header_bytes < 8192 {
            return bad("server.max_header_bytes", "must be at least 8192");
        }
        if self.server.max_url_bytes < 256 {
            return bad("server.max_url_bytes", "must be at least 256");
        }
        if self.cache.memory.as_u64() < 8 * 1024 * 1024 {
            return bad(
                "cache.memory",
                "must be at least 8 MiB (blocks are up to 2 MiB)",
            );
        }
        let remote = self.hot.backend != HotBackend::Embedded;
        if remote && !(self.hot.url.starts_with("http://") || self.hot.url.starts_with("https://"))
        {
            return bad(
                "hot.url",
                "must be an http:// or https:// URL for the trustless and kubo backends",
            );
        }
        // The same parse as telemetry's, so a filter it would refuse stops the load here.
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.telemetry.log) {
            return bad(
                "telemetry.log",
                &format!("invalid log filter {:?}: {e}", self.telemetry.log),
            );
        }
        if !self.telemetry.otlp_endpoint.is_empty()
            && !self.telemetry.otlp_endpoint.starts_with("http://")
        {
            return bad(
                "telemetry.otlp_endpoint",
                "must be an http:// URL of an OTLP/HTTP collector (e.g. http://127.0.0.1:4318)",
            );
        }
        if self.hot.timeout.is_zero() {
            return bad("hot.timeout", "must be more than zero");
        }
        let http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        for p in &self.cold.providers {
            if !http(p.url()) {
                return bad(
                    "cold.providers",
                    "each provider must be an http:// or https:// URL",
                );
            }
        }
        if !self
            .cold
            .indexers
            .iter()
            .chain(&self.cold.routers)
            .all(|u| http(u))
        {
            return bad(
                "cold.indexers",
                "indexers and routers must be http:// or https:// URLs",
            );
        }
        for (key, d) in [
            ("cold.connect_timeout", self.cold.connect_timeout),
            ("cold.first_byte_timeout", self.cold.first_byte_timeout),
            ("cold.idle_timeout", self.cold.idle_timeout),
            ("cold.deadline", self.cold.deadline),
            ("cold.discovery_timeout", self.cold.discovery_timeout),
        ] {
            if d.is_zero() {
                return bad(key, "must be more than zero");
            }
        }
        if self.cold.max_concurrent == 0 || self.cold.per_provider == 0 {
            return bad("cold.per_provider", "concurrency limits must be at least 1");
        }
        for (key, v) in [
            ("cold.max_price_per_gib", self.cold.max_price_per_gib),
            ("cold.request_ceiling", self.cold.request_ceiling),
            ("cold.daily_budget", self.cold.daily_budget),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(key, "must be a non-negative number");
            }
        }
        let p = &self.popularity;
        if !(p.demote_threshold >= 0.0
            && p.prewarm_threshold > 0.0
            && p.promote_threshold > p.demote_threshold)
        {
            return bad(
                "popularity.promote_threshold",
                "thresholds must be positive and promote_threshold above demote_threshold (hysteresis)",
            );
        }
        if p.top_k == 0 || p.half_life.is_zero() || p.interval.is_zero() {
            return bad(
                "popularity.top_k",
                "top_k, half_life and interval must be more than zero",
            );
        }
        let name = &p.gateway_name;
        if name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return bad(
                "popularity.gateway_name",
                "at most 64 letters, digits, '.', '_' or '-'",
            );
        }
        if !self.hot.cluster_url.is_empty() && !http(&self.hot.cluster_url) {
            return bad("hot.cluster_url", "must be an http:// or https:// URL");
        }
        if self.store.cache.as_u64() < 1024 * 1024 {
            return bad("store.cache", "must be at least 1 MiB");
        }
        if self.store.dir.as_os_str().is_empty() {
            return bad("store.dir", "must not be empty");
        }
        let (low, high) = (self.store.low_watermark, self.store.high_watermark);
        if !(0.0 < low && low < high && high <= 1.0) {
            return bad(
                "store.low_watermark",
                "0 < store.low_watermark < store.high_watermark <= 1",
            );
        }
        // Blocks are at most 2 MiB: a smaller segment would hold one block per file.
        if self.store.segment_size.as_u64() < 1024 * 1024 {
            return bad("store.segment_size", "must be at least 1 MiB");
        }
        let max = self.store.max_size.as_u64();
        if max != 0 && max < 4 * self.store.segment_size.as_u64() {
            return bad(
                "store.max_size",
                "must be 0 (no budget) or at least 4 segments (store.segment_size)",
            );
        }
        if self.store.maintenance_interval.is_zero() {
            return bad("store.maintenance_interval", "must not be zero");
        }
        if !self.denylist.urls.iter().all(|u| http(u)) {
            return bad("denylist.urls", "each must be an http:// or https:// URL");
        }
        if self.denylist.files.iter().any(|f| f.as_os_str().is_empty()) {
            return bad("denylist.files", "a file name must not be empty");
        }
        for (key, d) in [
            ("denylist.refresh", self.denylist.refresh),
            ("denylist.poll", self.denylist.poll),
            ("denylist.timeout", self.denylist.timeout),
        ] {
            if d.is_zero() {
                return bad(key, "must be more than zero");
            }
        }
        Ok(())
    }
}

/// Tables whose keys are data (domain names), not settings: taken whole, never checked key by key.
const FREE_FORM_TABLES: &[&str] = &["dnslink.names", "dnslink.resolvers"];

/// Overlays `from` onto `into`, refusing tables and keys the defaults do not have.
fn merge(into: &mut toml::Value, from: toml::Value, prefix: &str) -> Result<(), ConfigError> {
    match (into, from) {
        (toml::Value::Table(dst), toml::Value::Table(src)) => {
            for (k, v) in src {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match dst.get_mut(&k) {
                    Some(slot @ toml::Value::Table(_))
                        if FREE_FORM_TABLES.contains(&key.as_str()) =>
                    {
                        if !v.is_table() {
                            return Err(ConfigError::Key {
                                key,
                                message: "expected a table".into(),
                            });
                        }
                        *slot = v
                    }
                    Some(slot @ toml::Value::Table(_)) => merge(slot, v, &key)?,
                    Some(slot) => *slot = v,
                    None => {
                        return Err(ConfigError::Key {
                            key,
                            message: "unknown key".into(),
                        })
                    }
                }
            }
            Ok(())
        }
        (_, _) => Err(ConfigError::Key {
            key: prefix.into(),
            message: "expected a table".into(),
        }),
    }
}

/// Applies `CIDGATE_SECTION__KEY=value`, typed by the default's type (lists comma-separated).
fn apply_env(
    value: &mut toml::Value,
    defaults: &toml::Value,
    name: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let rest = &name[ENV_PREFIX.len()..];
    let unknown = || ConfigError::Key {
        key: name.into(),
        message: "unknown configuration variable".into(),
    };
    let (section, key) = rest.split_once("__").ok_or_else(unknown)?;
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    let default = defaults
        .get(&section)
        .and_then(|s| s.get(&key))
        .ok_or_else(unknown)?;
    let typed = typed_value(default, raw).map_err(|message| ConfigError::Key {
        key: name.into(),
        message,
    })?;
    if let Some(toml::Value::Table(t)) = value.get_mut(&section) {
        t.insert(key, typed);
    }
    Ok(())
}

fn typed_value(like: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    Ok(match like {
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("{raw:?} is not an integer"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(format!("{raw:?} is not a boolean")),
        }),
        toml::Value::Float(_) => toml::Value::Float(
            raw.trim()
                .parse()
                .map_err(|_| format!("{raw:?} is not a number"))?,
        ),
        toml::Value::Array(items) => {
            let elem = items
                .first()
                .cloned()
                .unwrap_or(toml::Value::String(String::new()));
            let parts = raw.split(',').map(str::trim).filter(|p| !p.is_empty());
            toml::Value::Array(
                parts
                    .map(|p| typed_value(&elem, p))
                    .collect::<Result<_, _>>()?,
            )
        }
        // `key=value,key=value` (DNSLink domains and their paths).
        toml::Value::Table(_) => {
            let mut table = toml::map::Map::new();
            for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{pair:?} is not key=value"))?;
                table.insert(k.trim().to_string(), toml::Value::String(v.trim().into()));
            }
            toml::Value::Table(table)
        }
        _ => toml::Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_toml_documents_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let from_file = Config::load(Some(&path), vec![]).unwrap();
        assert_eq!(
            toml::Value::try_from(&from_file).unwrap(),
            toml::Value::try_from(Config::default()).unwrap()
        );
    }

    #[test]
    fn env_overrides_file_and_names_bad_keys() {
        let c = Config::load(
            None,
            env(&[
                ("CIDGATE_SERVER__LISTEN", "127.0.0.1:9999"),
                ("CIDGATE_SERVER__MAX_CONNECTIONS", "7"),
                ("CIDGATE_PEERS", "/ignored/no/double/underscore"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9999);
        assert_eq!(c.server.max_connections, 7);

        let err = Config::load(None, env(&[("CIDGATE_SERVER__NOPE", "1")])).unwrap_err();
        assert!(err.to_string().contains("CIDGATE_SERVER__NOPE"), "{err}");
        let err =
            Config::load(None, env(&[("CIDGATE_SERVER__MAX_CONNECTIONS", "many")])).unwrap_err();
        assert!(err.to_string().contains("MAX_CONNECTIONS"), "{err}");
        let err = Config::load(None, env(&[("CIDGATE_SERVER__LISTEN", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("server.listen"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap();
        let err = Config::load(Some(&p), vec![]).unwrap_err();
        assert!(err.to_string().contains("server.bogus"), "{err}");
        std::fs::write(&p, "[cache]\nmemory = 5\n").unwrap();
        assert!(Config::load(Some(&p), vec![])
            .unwrap_err()
            .to_string()
            .contains("cache.memory"));
        std::fs::write(&p, "[server]\nshutdown_grace = \"soon\"\n").unwrap();
        assert!(Config::load(Some(&p), vec![])
            .unwrap_err()
            .to_string()
            .contains("server.shutdown_grace"));
    }

    #[test]
    fn denylist_section_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[denylist]\nfiles = [\"/etc/ipfs/denylists/a.deny\"]\nurls = [\"https://badbits.example/deny\"]\nrefresh = \"1h\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&p), vec![]).unwrap();
        assert_eq!(
            c.denylist.files,
            [PathBuf::from("/etc/ipfs/denylists/a.deny")]
        );
        assert_eq!(c.denylist.refresh, Duration::from_secs(3600));
        let c = Config::load(None, env(&[("CIDGATE_DENYLIST__FILES", "a.deny, b.deny")])).unwrap();
        assert_eq!(c.denylist.files.len(), 2);
        for (k, v) in [
            ("CIDGATE_DENYLIST__URLS", "ftp://x/deny"),
            ("CIDGATE_DENYLIST__REFRESH", "0s"),
            ("CIDGATE_DENYLIST__BOGUS", "1"),
        ] {
            let err = Config::load(None, env(&[(k, v)])).unwrap_err();
            assert!(
                err.to_string().to_lowercase().contains("denylist"),
                "{k}: {err}"
            );
        }
    }

    #[test]
    fn tls_needs_both_halves() {
        let err = Config::load(None, env(&[("CIDGATE_SERVER__TLS_CERT", "/x.pem")])).unwrap_err();
        assert!(err.to_string().contains("tls_cert"));
    }

    #[test]
    fn dnslink_resolvers_and_allowed_domains_are_checked() {
        let c = Config::load(
            None,
            env(&[
                (
                    "CIDGATE_DNSLINK__RESOLVERS",
                    ".=udp://127.0.0.1:5353, eth.=https://dns.eth.limo/dns-query",
                ),
                ("CIDGATE_DNSLINK__ALLOWED", "docs.example.org, .eth"),
                ("CIDGATE_DNSLINK__TIMEOUT", "2s"),
            ]),
        )
        .unwrap();
        assert_eq!(c.dnslink.resolvers["."], "udp://127.0.0.1:5353");
        assert_eq!(
            c.dnslink.resolvers["eth."],
            "https://dns.eth.limo/dns-query"
        );
        assert_eq!(c.dnslink.allowed, ["docs.example.org", ".eth"]);
        assert_eq!(c.dnslink.timeout, Duration::from_secs(2));
        // Empty: no DNS lookups at all.
        let c = Config::load(None, env(&[("CIDGATE_DNSLINK__ALLOWED", "")])).unwrap();
        assert!(c.dnslink.allowed.is_empty());
        assert_eq!(Config::default().dnslink.allowed, ["*"]);
        for (k, v) in [
            ("CIDGATE_DNSLINK__RESOLVERS", ".=tcp://127.0.0.1:53"),
            ("CIDGATE_DNSLINK__RESOLVERS", ".=udp://resolver.example:53"),
            ("CIDGATE_DNSLINK__RESOLVERS", "a..b=udp://127.0.0.1:53"),
            ("CIDGATE_DNSLINK__ALLOWED", "http://x.org"),
            ("CIDGATE_DNSLINK__TIMEOUT", "0s"),
            ("CIDGATE_DNSLINK__CACHE_ENTRIES", "0"),
        ] {
            let err = Config::load(None, env(&[(k, v)])).unwrap_err();
            assert!(err.to_string().contains("dnslink"), "{k}={v}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[dnslink]\nallowed = [\"*\"]\nresolvers = { \".\" = \"https://1.1.1.1/dns-query\" }\n",
        )
        .unwrap();
        let c = Config::load(Some(&p), vec![]).unwrap();
        assert_eq!(c.dnslink.resolvers.len(), 1);
    }

    #[test]
    fn dnslink_names_come_from_file_or_env_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[dnslink.names]\n\"a.example.org\" = \"/ipfs/bafkqaaa\"\n\"b.example.org\" = \"/ipns/a.example.org\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&p), vec![]).unwrap();
        assert_eq!(c.dnslink.names.len(), 2);
        assert_eq!(c.dnslink.names["a.example.org"], "/ipfs/bafkqaaa");
        let c = Config::load(
            None,
            env(&[(
                "CIDGATE_DNSLINK__NAMES",
                "x.example.org=/ipfs/bafkqaaa, y.example.org=/ipns/x.example.org",
            )]),
        )
        .unwrap();
        assert_eq!(c.dnslink.names["y.example.org"], "/ipns/x.example.org");
        for bad in [
            "nodot=/ipfs/bafkqaaa",
            "a.example.org=https://x",
            "a.example.org=/ipfs/notacid/x",
            "a.example.org",
        ] {
            let err = Config::load(None, env(&[("CIDGATE_DNSLINK__NAMES", bad)])).unwrap_err();
            assert!(
                err.to_string().contains("DNSLINK") || err.to_string().contains("dnslink"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn credentials_in_a_query_are_masked_and_the_rest_kept() {
        assert_eq!(mask_query("/ipfs/x?filename=a"), "/ipfs/x?filename=a");
        assert_eq!(mask_query("/ipfs/x"), "/ipfs/x");
        assert_eq!(
            mask_query("/ipfs/x?token=s3cret&filename=a&api_key=k"),
            "/ipfs/x?token=****&filename=a&api_key=****"
        );
        assert_eq!(mask_query("/ipfs/x?%74oken=s3cret"), "/ipfs/x?%74oken=****");
    }
}
