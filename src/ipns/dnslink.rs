//! DNSLink over DNS (dnslink.dev; ipfs/specs `http-gateways/dnslink-gateway.md`): the
//! `dnslink=/ipfs/…` or `dnslink=/ipns/…` TXT record at `_dnslink.{domain}`, looked up with
//! hickory-resolver over the system resolver or resolvers chosen by domain suffix (plain DNS
//! over UDP, or DNS over HTTPS).
//!
//! Only `_dnslink.{domain}` is asked. A record on the domain itself is a legacy form the DNSLink
//! spec never defined and boxo stopped reading in 2023; asking for it would double the queries
//! and return unrelated TXT records (SPF, site verification). As in boxo, TXT values of other
//! namespaces are ignored, the same value twice counts once, and two different `/ipfs/` or
//! `/ipns/` values are an error (the site's owner must pick one).
//!
//! Answers are cached for their TTL (at most `max_ttl`) and "no record" for `negative_ttl`, in a
//! bounded LRU. Resolver failures are not cached, but concurrent lookups of a domain share one
//! query (a [`Coalescer`] flight, which stops when every asker has left). Domains outside
//! `dnslink.allowed` are never looked up.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use lru::LruCache;
use tokio::sync::OnceCell;

use crate::coalesce::Coalescer;
use crate::config::DnslinkConfig;
pub use crate::dns_syntax::Allowed;
use crate::dns_syntax::{parse_resolver, Transport};
use crate::telemetry::Metrics;

type DnsResolver = hickory_resolver::Resolver<TokioRuntimeProvider>;

/// Longest DNSLink value accepted; longer TXT strings are ignored like any other non-DNSLink text.
const MAX_VALUE: usize = 4096;

/// Why a domain's DNSLink could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnslinkError {
    /// DNS answered: no DNSLink TXT record (NXDOMAIN, no TXT, or TXT without a DNSLink).
    #[error(
        "{0:?} has no DNSLink: no dnslink=/ipfs/… or dnslink=/ipns/… TXT record at _dnslink.{0}"
    )]
    NotFound(String),
    /// The domain is not in `dnslink.allowed`: it was not looked up.
    #[error("{0:?} is not served as a DNSLink site by this gateway")]
    NotAllowed(String),
    /// `_dnslink.{domain}` holds two different content paths.
    #[error("_dnslink.{0} holds more than one content path: its owner must remove the extra TXT records")]
    Ambiguous(String),
    /// The resolver failed; the details (which name resolver addresses) go to the log only.
    #[error("the DNS lookup of _dnslink.{0} failed")]
    Failed(String),
    /// The resolver did not answer within `dnslink.timeout`.
    #[error("the DNS lookup of _dnslink.{0} timed out")]
    Timeout(String),
}

/// A DNSLink value and how much longer it may be reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The content path, `/ipfs/{cid}[/path]` or `/ipns/{name}[/path]`.
    pub value: String,
    /// What is left of the record's TTL (bounded by `max_ttl`).
    pub ttl: Duration,
}

/// One configured resolver: a domain suffix and where its queries go; the hickory resolver is
/// built on first use (a DoH host name is resolved then).
pub struct Upstream {
    /// Lowercase suffix without dots at either end; empty for the root (`"."`).
    suffix: String,
    transport: Transport,
    resolver: OnceCell<DnsResolver>,
}

impl Upstream {
    /// Parses a `dnslink.resolvers` entry: `suffix` (`"."`, `eth`, `.example.org.`) and
    /// `https://host[:port][/path]` or `udp://IP[:PORT]`.
    pub fn parse(suffix: &str, url: &str) -> Result<Self, String> {
        let (trimmed, transport) = parse_resolver(suffix, url)?;
        Ok(Self {
            suffix: trimmed,
            transport,
            resolver: OnceCell::new(),
        })
    }

    fn system() -> Self {
        Self {
            suffix: String::new(),
            transport: Transport::System,
            resolver: OnceCell::new(),
        }
    }

    /// Whether this resolver serves `domain`.
    fn serves(&self, domain: &str) -> bool {
        self.suffix.is_empty()
            || domain == self.suffix
            || (domain.len() > self.suffix.len()
                && domain.ends_with(self.suffix.as_str())
                && domain.as_bytes()[domain.len() - self.suffix.len() - 1] == b'.')
    }

    /// For logs (the addresses never reach a client).
    fn describe(&self) -> String {
        match &self.transport {
            Transport::System => "system resolver".into(),
            Transport::Udp(a) => format!("udp://{a}"),
            Transport::Https { host, port, path } => format!("https://{host}:{port}{path}"),
        }
    }

    /// The resolver, built on first use; a failure to build is not remembered.
    async fn resolver(
        &self,
        timeout: Duration,
        tls: &Option<rustls::ClientConfig>,
    ) -> Result<&DnsResolver, String> {
        self.resolver
            .get_or_try_init(|| self.build(timeout, tls))
            .await
    }

    async fn build(
        &self,
        timeout: Duration,
        tls: &Option<rustls::ClientConfig>,
    ) -> Result<DnsResolver, String> {
        let provider = TokioRuntimeProvider::default();
        let name_server = |ip: IpAddr, connections: Vec<ConnectionConfig>| {
            ResolverConfig::from_parts(
                None,
                vec![],
                vec![NameServerConfig::new(ip, true, connections)],
            )
        };
        let mut builder = match &self.transport {
            Transport::System => DnsResolver::builder(provider)
                .map_err(|e| format!("reading the system resolver configuration: {e}"))?,
            Transport::Udp(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                DnsResolver::builder_with_config(name_server(addr.ip(), vec![udp, tcp]), provider)
            }
            Transport::Https { host, port, path } => {
                let ip = match host.parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => tokio::net::lookup_host((host.as_str(), *port))
                        .await
                        .map_err(|e| format!("resolving the DoH server {host}: {e}"))?
                        .map(|a| a.ip())
                        .next()
                        .ok_or_else(|| format!("the DoH server {host} has no address"))?,
                };
                let mut https = ConnectionConfig::https(
                    Arc::from(host.as_str()),
                    Some(Arc::from(path.as_str())),
                );
                https.port = *port;
                DnsResolver::builder_with_config(name_server(ip, vec![https]), provider)
            }
        };
        if let (Transport::Https { .. }, Some(tls)) = (&self.transport, tls) {
            builder = builder.with_tls_config(tls.clone());
        }
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = timeout;
        // One try per server within the deadline: a retry would only outlive it.
        options.attempts = 1;
        // Answers are cached here, by domain, with negative entries and a bound of our own.
        options.cache_size = 0;
        options.use_hosts_file = ResolveHosts::Never;
        // `_dnslink.{domain}.` is absolute: no search domain is ever appended.
        options.ndots = 0;
        builder
            .build()
            .map_err(|e| format!("building the resolver: {e}"))
    }
}

/// A remembered answer and when it stops being valid.
#[derive(Clone)]
struct Cached {
    until: Instant,
    answer: Result<Arc<str>, DnslinkError>,
}

/// DNSLink lookups: resolvers by suffix, the allowed list, a cache and coalescing.
pub struct Dnslink {
    /// Configured resolvers, longest suffix first.
    upstreams: Vec<Upstream>,
    system: Upstream,
    allowed: Allowed,
    timeout: Duration,
    negative_ttl: Duration,
    max_ttl: Duration,
    cache: Mutex<LruCache<String, Cached>>,
    inflight: Coalescer<String, Result<Answer, DnslinkError>>,
    metrics: Arc<Metrics>,
    /// TLS for DNS over HTTPS when `tls_ca` adds roots; `None`: hickory's web PKI roots.
    tls: Option<rustls::ClientConfig>,
}

/// A TLS client trusting the web PKI roots and the certificates of the PEM file `path`.
fn tls_with_roots(path: &str) -> Result<rustls::ClientConfig, String> {
    let pem = std::fs::read(path).map_err(|e| format!("tls_ca {path}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut added = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("tls_ca {path}: {e}"))?;
        roots.add(cert).map_err(|e| format!("tls_ca {path}: {e}"))?;
        added += 1;
    }
    if added == 0 {
        return Err(format!("tls_ca {path}: no PEM certificate in it"));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}

impl Dnslink {
    /// Lookups as `[dnslink]` configures them (already validated).
    pub fn new(config: &DnslinkConfig, metrics: Arc<Metrics>) -> Result<Arc<Self>, String> {
        let mut upstreams = config
            .resolvers
            .iter()
            .map(|(suffix, url)| Upstream::parse(suffix, url))
            .collect::<Result<Vec<_>, _>>()?;
        upstreams.sort_by_key(|u| std::cmp::Reverse(u.suffix.len()));
        Ok(Arc::new(Self {
            upstreams,
            system: Upstream::system(),
            allowed: Allowed::parse(&config.allowed)?,
            timeout: config.timeout,
            negative_ttl: config.negative_ttl,
            max_ttl: config.max_ttl,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(config.cache_entries).unwrap_or(NonZeroUsize::MIN),
            )),
            inflight: Coalescer::with_gauge(Some(metrics.work("dnslink_lookups"))),
            metrics,
            tls: match config.tls_ca.as_str() {
                "" => None,
                path => Some(tls_with_roots(path)?),
            },
        }))
    }

    /// Whether any domain may be looked up at all.
    pub fn enabled(&self) -> bool {
        !self.allowed.is_empty()
    }

    /// Whether `domain` (lowercase, without a trailing dot) may be served and looked up.
    pub fn allows(&self, domain: &str) -> bool {
        self.allowed.allows(domain)
    }

    /// The DNSLink of `domain`, from the cache or DNS. A domain that is not allowed is refused
    /// without a query.
    pub async fn lookup(self: &Arc<Self>, domain: &str) -> Result<Answer, DnslinkError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !crate::dns_syntax::is_dns_name(&domain) {
            return Err(DnslinkError::NotFound(domain));
        }
        if !self.allowed.allows(&domain) {
            return Err(DnslinkError::NotAllowed(domain));
        }
        if let Some(answer) = self.cached(&domain) {
            return answer;
        }
        let this = self.clone();
        let key = domain.clone();
        let (result, joined) = self
            .inflight
            .run(domain.clone(), move || {
                crate::telemetry::in_current_trace(async move { this.query_and_cache(key).await })
            })
            .await;
        Metrics::name_event(
            &self.metrics.dnslink_cache,
            if joined { "coalesced" } else { "miss" },
        );
        result.unwrap_or(Err(DnslinkError::Failed(domain)))
    }

    /// A cached answer that is still valid, counted as a hit.
    fn cached(&self, domain: &str) -> Option<Result<Answer, DnslinkError>> {
        let mut cache = self.cache.lock().ok()?;
        let entry = cache.get(domain)?.clone();
        let now = Instant::now();
        if entry.until <= now {
            cache.pop(domain);
            return None;
        }
        drop(cache);
        Some(match entry.answer {
            Ok(value) => {
                Metrics::name_event(&self.metrics.dnslink_cache, "hit");
                Ok(Answer {
                    value: value.to_string(),
                    ttl: entry.until - now,
                })
            }
            Err(e) => {
                Metrics::name_event(&self.metrics.dnslink_cache, "negative_hit");
                Err(e)
            }
        })
    }

    /// One query under the deadline; its answer (or the absence of one) is remembered.
    async fn query_and_cache(&self, domain: String) -> Result<Answer, DnslinkError> {
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.query(&domain))
            .await
            .unwrap_or_else(|_| Err(DnslinkError::Timeout(domain.clone())));
        self.metrics
            .dnslink_latency
            .observe(start.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "ok",
            Err(DnslinkError::NotFound(_)) => "not_found",
            Err(DnslinkError::Ambiguous(_)) => "ambiguous",
            Err(DnslinkError::Timeout(_)) => "timeout",
            Err(_) => "failed",
        };
        Metrics::name_event(&self.metrics.dnslink_lookups, outcome);
        let cached = match &result {
            Ok(a) => Some((a.ttl, Ok(Arc::from(a.value.as_str())))),
            Err(e @ (DnslinkError::NotFound(_) | DnslinkError::Ambiguous(_))) => {
                Some((self.negative_ttl, Err(e.clone())))
            }
            // A failing resolver may be back for the next request.
            Err(_) => None,
        };
        if let (Some((ttl, answer)), Ok(mut cache)) = (cached, self.cache.lock()) {
            if !ttl.is_zero() {
                cache.put(
                    domain,
                    Cached {
                        until: Instant::now() + ttl,
                        answer,
                    },
                );
            }
        }
        result
    }

    /// Asks the resolver for `domain` for the TXT records of `_dnslink.{domain}`.
    async fn query(&self, domain: &str) -> Result<Answer, DnslinkError> {
        let upstream = self
            .upstreams
            .iter()
            .find(|u| u.serves(domain))
            .unwrap_or(&self.system);
        let resolver = upstream.resolver(self.timeout, &self.tls).await.map_err(|error| {
            tracing::warn!(%domain, %error, resolver = %upstream.describe(), "DNSLink resolver unavailable");
            DnslinkError::Failed(domain.to_string())
        })?;
        let lookup = match resolver.txt_lookup(format!("_dnslink.{domain}.")).await {
            Ok(lookup) => lookup,
            Err(e) if no_records(&e) => return Err(DnslinkError::NotFound(domain.to_string())),
            Err(error) => {
                tracing::warn!(%domain, %error, resolver = %upstream.describe(), "DNSLink lookup failed");
                return Err(match error {
                    NetError::Timeout => DnslinkError::Timeout(domain.to_string()),
                    _ => DnslinkError::Failed(domain.to_string()),
                });
            }
        };
        let mut values = BTreeSet::new();
        let mut ttl = self.max_ttl;
        for record in lookup.answers() {
            if let RData::TXT(txt) = &record.data {
                // A TXT record's strings are one value cut in 255-byte pieces.
                let text: Vec<u8> = txt
                    .txt_data
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                if let Some(value) = parse_txt(&text) {
                    values.insert(value);
                    ttl = ttl.min(Duration::from_secs(u64::from(record.ttl)));
                }
            }
        }
        let mut values = values.into_iter();
        match (values.next(), values.next()) {
            (Some(value), None) => Ok(Answer { value, ttl }),
            (None, _) => Err(DnslinkError::NotFound(domain.to_string())),
            (Some(_), Some(_)) => Err(DnslinkError::Ambiguous(domain.to_string())),
        }
    }
}

/// Whether DNS said "no such record" (NXDOMAIN or no TXT), as opposed to failing.
fn no_records(e: &NetError) -> bool {
    matches!(e, NetError::Dns(DnsError::NoRecordsFound(nr))
        if matches!(nr.response_code, ResponseCode::NXDomain | ResponseCode::NoError))
}

/// The content path of a DNSLink TXT string, `None` for any other text (other namespaces, SPF,
/// verification tokens). A bare CID after `dnslink=` is the legacy form of `/ipfs/{cid}`.
pub fn parse_txt(text: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let value = text.strip_prefix("dnslink=")?.trim();
    if value.len() > MAX_VALUE || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let content_path = ["/ipfs/", "/ipns/"]
        .iter()
        .any(|ns| value.len() > ns.len() && value.starts_with(ns));
    if content_path {
        return Some(value.to_string());
    }
    let cid = cid::Cid::try_from(value).ok()?;
    Some(format!("/ipfs/{cid}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns_syntax::DOH_PATH;

    #[test]
    fn only_dnslink_content_paths_are_read() {
        let cid = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am";
        assert_eq!(
            parse_txt(format!("dnslink=/ipfs/{cid}/a").as_bytes()),
            Some(format!("/ipfs/{cid}/a"))
        );
        assert_eq!(
            parse_txt(b" dnslink=/ipns/example.org "),
            Some("/ipns/example.org".into())
        );
        assert_eq!(
            parse_txt(format!("dnslink={cid}").as_bytes()),
            Some(format!("/ipfs/{cid}"))
        );
        for other in [
            &b"v=spf1 -all"[..],
            b"dnslink=/foo/bar",
            b"dnslink=/ipfs/",
            b"dnslink=",
            b"DNSLINK=/ipfs/x",
            b"dnslink=/ipfs/a b",
            b"\xff",
        ] {
            assert_eq!(parse_txt(other), None, "{other:?}");
        }
    }

    #[test]
    fn allowed_lists_domains_and_suffixes() {
        let a = Allowed::parse(&[
            "docs.example.org".into(),
            ".eth".into(),
            ".ipfs.tech.".into(),
        ])
        .unwrap();
        assert!(a.allows("docs.example.org"));
        assert!(!a.allows("example.org"));
        assert!(!a.allows("xdocs.example.org"));
        assert!(a.allows("vitalik.eth"));
        assert!(a.allows("blog.ipfs.tech"));
        assert!(!a.allows("ipfs.tech"));
        assert!(!a.allows("notipfs.tech"));
        assert!(Allowed::parse(&["*".into()])
            .unwrap()
            .allows("anything.example"));
        assert!(Allowed::parse(&[]).unwrap().is_empty());
        for bad in ["", "a..b", "-x.org", ".", "http://x.org", "x"] {
            assert!(Allowed::parse(&[bad.into()]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resolvers_are_chosen_by_longest_suffix() {
        let root = Upstream::parse(".", "udp://127.0.0.1:5353").unwrap();
        assert_eq!(
            root.transport,
            Transport::Udp("127.0.0.1:5353".parse().unwrap())
        );
        assert!(root.serves("example.org"));
        let eth = Upstream::parse("eth.", "https://dns.eth.limo/dns-query").unwrap();
        assert!(eth.serves("vitalik.eth") && eth.serves("eth") && !eth.serves("beth"));
        assert_eq!(
            eth.transport,
            Transport::Https {
                host: "dns.eth.limo".into(),
                port: 443,
                path: "/dns-query".into()
            }
        );
        let doh = Upstream::parse(".", "https://[::1]:8443").unwrap();
        assert_eq!(
            doh.transport,
            Transport::Https {
                host: "::1".into(),
                port: 8443,
                path: DOH_PATH.into()
            }
        );
        assert_eq!(
            Upstream::parse(".", "udp://10.0.0.1").unwrap().transport,
            Transport::Udp("10.0.0.1:53".parse().unwrap())
        );
        for (suffix, url) in [
            (".", "tcp://127.0.0.1:53"),
            (".", "udp://dns.example:53"),
            (".", "https://"),
            ("a..b", "udp://127.0.0.1"),
        ] {
            assert!(Upstream::parse(suffix, url).is_err(), "{suffix} {url}");
        }
    }

    #[tokio::test]
    async fn domains_that_are_not_allowed_are_never_asked() {
        let config = DnslinkConfig {
            allowed: vec![".example.org".into()],
            // Nothing listens there: a query would fail, not answer NotAllowed.
            resolvers: [(".".to_string(), "udp://127.0.0.1:9".to_string())].into(),
            timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let metrics = Metrics::new();
        let dns = Dnslink::new(&config, metrics.clone()).unwrap();
        assert_eq!(
            dns.lookup("evil.example.com").await,
            Err(DnslinkError::NotAllowed("evil.example.com".into()))
        );
        assert!(
            dns.upstreams[0].resolver.get().is_none(),
            "no resolver was even built"
        );
        assert!(matches!(
            dns.lookup("Site.Example.org.").await,
            Err(DnslinkError::Failed(d) | DnslinkError::Timeout(d)) if d == "site.example.org"
        ));
        assert!(dns.inflight.is_empty());
    }

    #[tokio::test]
    async fn a_lookup_nobody_waits_for_stops() {
        // A DNS server that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let config = DnslinkConfig {
            resolvers: [(
                ".".to_string(),
                format!("udp://{}", silent.local_addr().unwrap()),
            )]
            .into(),
            timeout: Duration::from_secs(30),
            ..Default::default()
        };
        let dns = Dnslink::new(&config, Metrics::new()).unwrap();
        let (a, b) = (dns.clone(), dns.clone());
        let both =
            async move { tokio::join!(a.lookup("slow.example.org"), b.lookup("slow.example.org")) };
        assert!(tokio::time::timeout(Duration::from_millis(200), both)
            .await
            .is_err());
        assert!(
            dns.inflight.is_empty(),
            "the shared query was dropped with its askers"
        );
        // Nothing was cached: the next asker starts afresh.
        assert!(dns.cached("slow.example.org").is_none());
    }
}
