//! Mutable names: IPNS records (signed pointers kept in the embedded store, or fetched from
//! delegated routers) and DNSLink (domain names mapped to content paths by configuration or by
//! `_dnslink` TXT records in DNS), resolved to `/ipfs/` paths for the gateway.
//!
//! Records reach the store through `cidgate import NAME.ipns-record`, the Delegated Routing V1
//! endpoint `PUT /routing/v1/ipns/{name}` on the admin listener, or a fetch from `cold.routers`
//! ([`routing`]). Every record is verified when it is stored and again when it is used (it may
//! have expired since).

pub mod dnslink;
pub mod name;
pub mod record;
pub mod routing;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

pub use dnslink::{Dnslink, DnslinkError};
pub use name::IpnsName;
pub use record::IpnsRecord;
pub use routing::{IpnsRouting, RoutingError};

pub use crate::dns_syntax::is_dns_name;
use crate::telemetry::Metrics;
use crate::tiers::local::StoreError;
use crate::tiers::records::Records;

/// Longest chain of names pointing at names (`/ipns/a` → `/ipns/b` → …) that is followed.
const MAX_DEPTH: usize = 8;

/// Why a name could not be resolved or a record not stored.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The text is neither an IPNS name nor a DNS name.
    #[error("{0:?} is not an IPNS name (a libp2p-key CID or peer ID) or a DNSLink domain")]
    Invalid(String),
    /// No record (or DNSLink entry) is known for the name.
    #[error("no record for /ipns/{0}")]
    Unknown(String),
    /// The record is not valid for the name (bad signature, expired, malformed).
    #[error("record for /ipns/{name}: {source}")]
    Record {
        /// The name.
        name: String,
        /// What is wrong.
        source: record::RecordError,
    },
    /// A stored record is older than the one already held.
    #[error("record for /ipns/{name} has sequence {offered}, the stored one {held}")]
    Stale {
        /// The name.
        name: String,
        /// Sequence of the record offered.
        offered: u64,
        /// Sequence of the record held.
        held: u64,
    },
    /// Names point at names more than [`MAX_DEPTH`] times.
    #[error("/ipns/{0}: names point at names more than 8 times")]
    TooDeep(String),
    /// The value is not a `/ipfs/` or `/ipns/` path.
    #[error("/ipns/{name} points at {value:?}, which is not a content path")]
    BadValue {
        /// The name.
        name: String,
        /// Its value.
        value: String,
    },
    /// A DNSLink lookup in DNS failed or found nothing.
    #[error(transparent)]
    Dnslink(#[from] DnslinkError),
    /// Fetching the record from delegated routers failed.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a name points, and for how long that answer may be reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// An `/ipfs/{cid}[/path]` content path.
    pub path: String,
    /// The record's TTL (the shortest along a chain); `None` when it has none.
    pub ttl: Option<Duration>,
}

/// Resolves `/ipns/` names from records in the store (refreshed from delegated routers when
/// configured), configured DNSLink domains, and DNSLink in DNS.
#[derive(Clone)]
pub struct NameResolver {
    records: Records,
    /// Configured DNSLink domains (lower case, no trailing dot); replaced whole on SIGHUP.
    dnslink: Arc<arc_swap::ArcSwap<BTreeMap<String, String>>>,
    /// DNSLink over DNS; `None`: only the static table.
    dns: Option<Arc<Dnslink>>,
    /// IPNS over Delegated Routing V1; `None`: only stored records.
    routing: Option<Arc<IpnsRouting>>,
    /// Serialises storing records, so that two updates cannot both pass the sequence check.
    writing: Arc<Mutex<()>>,
    /// Records verified recently, so that a popular name is not read and its signature checked
    /// on every request; emptied of a name whenever a record for it is stored.
    verified: Arc<Mutex<LruCache<IpnsName, (Bytes, IpnsRecord)>>>,
}

/// Names whose verified records are kept in memory.
const VERIFIED_NAMES: usize = 1024;

fn meta_key(name: &IpnsName) -> String {
    format!("ipns/{}", name.to_cid_string())
}

/// A domain as the tables and caches key it: lowercase, without the root's trailing dot.
fn normalize_domain(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

impl NameResolver {
    /// A resolver over the IPNS `records` of the store and the DNSLink `domain → /ipfs|ipns/...` map.
    pub fn new(records: Records, dnslink: BTreeMap<String, String>) -> Self {
        Self {
            records,
            dnslink: Arc::new(arc_swap::ArcSwap::from_pointee(normalize_dnslink(dnslink))),
            dns: None,
            routing: None,
            writing: Default::default(),
            verified: Arc::new(Mutex::new(LruCache::new(
                NonZeroUsize::new(VERIFIED_NAMES).unwrap_or(NonZeroUsize::MIN),
            ))),
        }
    }

    /// Also looks up DNSLink in DNS for domains the static table does not hold.
    pub fn with_dns(mut self, dns: Arc<Dnslink>) -> Self {
        self.dns = Some(dns);
        self
    }

    /// Replaces the DNSLink table (`dnslink.names` re-read on SIGHUP), for every clone of
    /// this resolver.
    pub fn set_dnslink(&self, dnslink: BTreeMap<String, String>) {
        self.dnslink.store(Arc::new(normalize_dnslink(dnslink)));
    }

    /// Also resolves IPNS names through delegated routers (records are stored when they verify).
    pub fn with_routing(mut self, routing: Arc<IpnsRouting>) -> Self {
        self.routing = Some(routing);
        self
    }

    /// Whether `domain` has a configured DNSLink in the static table.
    pub fn has_dnslink(&self, domain: &str) -> bool {
        let table = self.dnslink.load();
        !table.is_empty() && table.contains_key(&normalize_domain(domain))
    }

    /// Whether any Host header can be a DNSLink site (a static entry, or DNS lookups allowed).
    pub fn any_dnslink(&self) -> bool {
        !self.dnslink.load().is_empty() || self.dns.as_ref().is_some_and(|d| d.enabled())
    }

    /// What the DNSLink site `host` (a Host header without port) points at: `None` when it is
    /// no site (not a DNS name, not allowed, or no DNSLink record), an error when DNS failed.
    /// The caller has ruled out the gateway's own hosts.
    pub async fn site(&self, host: &str) -> Result<Option<Resolution>, ResolveError> {
        let domain = normalize_domain(host);
        let configured = self.dnslink.load().get(&domain).cloned();
        if let Some(value) = configured {
            let first = (value, None);
            return self.resolve_from(&domain, first).await.map(Some);
        }
        let Some(dns) = &self.dns else {
            return Ok(None);
        };
        // Checked here too so that a Host that may not be a site never costs a DNS query.
        if !is_dns_name(&domain) || !dns.allows(&domain) {
            return Ok(None);
        }
        match dns.lookup(&domain).await {
            Ok(answer) => {
                let first = (answer.value, Some(answer.ttl));
                self.resolve_from(&domain, first).await.map(Some)
            }
            Err(DnslinkError::NotFound(_) | DnslinkError::NotAllowed(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Verifies `bytes` as the record of `name` and stores it, unless the store holds a record
    /// with a higher sequence number.
    pub fn put_record(&self, name: &IpnsName, bytes: &[u8]) -> Result<IpnsRecord, ResolveError> {
        let record = verify(name, bytes)?;
        let _writing = self
            .writing
            .lock()
            .map_err(|_| ResolveError::Invalid("record store lock poisoned".into()))?;
        // A held record that no longer verifies (expired) never blocks its successor.
        if let Ok(Some((_, held))) = self.record(name) {
            if held.sequence > record.sequence {
                return Err(ResolveError::Stale {
                    name: name.to_cid_string(),
                    offered: record.sequence,
                    held: held.sequence,
                });
            }
        }
        // An unreadable record held for the name is quarantined, not written over.
        self.records.save_with(&meta_key(name), bytes, |old| {
            readable(name, old).map(|_| ())
        })?;
        if let Ok(mut verified) = self.verified.lock() {
            verified.pop(name);
        }
        Ok(record)
    }

    /// The stored record of `name` (raw bytes and contents), if one is held and still valid.
    pub fn record(&self, name: &IpnsName) -> Result<Option<(Bytes, IpnsRecord)>, ResolveError> {
        let remembered = self
            .verified
            .lock()
            .ok()
            .and_then(|mut v| v.get(name).cloned());
        if let Some((bytes, record)) = remembered {
            // Its signature was checked; only its end of validity can have passed since.
            if record.validity > SystemTime::now() {
                return Ok(Some((bytes, record)));
            }
        }
        let Some((bytes, verified)) = self.records.load_with(&meta_key(name), |b| {
            readable(name, b).map(|v| (Bytes::copy_from_slice(b), v))
        })?
        else {
            return Ok(None);
        };
        let record = verified.map_err(|source| ResolveError::Record {
            name: name.to_cid_string(),
            source,
        })?;
        if let Ok(mut verified) = self.verified.lock() {
            verified.put(*name, (bytes.clone(), record.clone()));
        }
        Ok(Some((bytes, record)))
    }

    /// The record of `name` for `?format=ipns-record`: the stored one, or (with routing) one
    /// fetched from the routers and stored.
    pub async fn current_record(
        &self,
        name: &IpnsName,
    ) -> Result<Option<(Bytes, IpnsRecord)>, ResolveError> {
        let Some(routing) = &self.routing else {
            return self.record(name);
        };
        match self.held(name)? {
            Some(held) => Ok(Some(held)),
            None => {
                let fresh = routing
                    .check(name)
                    .is_some_and(|c| c.until > Instant::now() && !c.found);
                if !fresh {
                    self.refresh(name).await?;
                }
                self.held(name)
            }
        }
    }

    /// The stored record, an expired one counting as none when routers can bring its successor.
    fn held(&self, name: &IpnsName) -> Result<Option<(Bytes, IpnsRecord)>, ResolveError> {
        match self.record(name) {
            Err(ResolveError::Record {
                source: record::RecordError::Expired { .. },
                ..
            }) if self.routing.is_some() => Ok(None),
            other => other,
        }
    }

    /// The `/ipfs/` path `name` (an IPNS name or DNSLink domain) points at, following chains.
    pub async fn resolve(&self, name: &str) -> Result<Resolution, ResolveError> {
        let first = self.lookup(name).await?;
        self.resolve_from(name, first).await
    }

    /// Follows the chain from `name`, whose own value and TTL are `first`.
    async fn resolve_from(
        &self,
        name: &str,
        first: (String, Option<Duration>),
    ) -> Result<Resolution, ResolveError> {
        let (mut value, mut ttl) = first;
        let mut current = name.to_string();
        // Whatever follows each next name is appended, innermost last, once the chain ends.
        let mut tails: Vec<String> = Vec::new();
        for depth in 0..MAX_DEPTH {
            if depth > 0 {
                let (v, t) = self.lookup(&current).await?;
                value = v;
                ttl = match (ttl, t) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            if value.starts_with("/ipfs/") {
                let mut path = value;
                for tail in tails.iter().rev() {
                    path = format!("{}/{tail}", path.trim_end_matches('/'));
                }
                return Ok(Resolution { path, ttl });
            }
            let Some(rest) = value.strip_prefix("/ipns/") else {
                return Err(ResolveError::BadValue {
                    name: current,
                    value,
                });
            };
            let (next, tail) = rest.split_once('/').unwrap_or((rest, ""));
            if !tail.is_empty() {
                tails.push(tail.to_string());
            }
            current = next.to_string();
            value = String::new();
        }
        Err(ResolveError::TooDeep(name.to_string()))
    }

    /// One hop: the value and TTL behind `name`.
    async fn lookup(&self, name: &str) -> Result<(String, Option<Duration>), ResolveError> {
        match IpnsName::parse(name) {
            Ok(ipns) => self.lookup_ipns(&ipns, name).await,
            Err(_) => {
                let domain = normalize_domain(name);
                if !is_dns_name(&domain) {
                    return Err(ResolveError::Invalid(name.to_string()));
                }
                if let Some(path) = self.dnslink.load().get(&domain).cloned() {
                    return Ok((path, None));
                }
                match &self.dns {
                    Some(dns) => {
                        let answer = dns.lookup(&domain).await?;
                        Ok((answer.value, Some(answer.ttl)))
                    }
                    None => Err(ResolveError::Unknown(name.to_string())),
                }
            }
        }
    }

    /// The value and TTL of an IPNS name: the stored record, kept fresh from the routers when
    /// they are configured. A held record whose TTL has passed is answered at once (with no
    /// freshness left) while one background refresh asks the routers (stale-while-revalidate).
    async fn lookup_ipns(
        &self,
        name: &IpnsName,
        text: &str,
    ) -> Result<(String, Option<Duration>), ResolveError> {
        let now = SystemTime::now();
        let Some(routing) = &self.routing else {
            return match self.record(name)? {
                // Never fresh past the record's own end of validity.
                Some((_, record)) => Ok((record.value.clone(), record.max_age(now))),
                None => Err(ResolveError::Unknown(text.to_string())),
            };
        };
        let held = self.held(name)?;
        let check = routing.check(name);
        let instant = Instant::now();
        let answers = &routing.metrics().ipns_routing_answers;
        match (check, held) {
            (Some(c), Some((_, record))) if c.until > instant => {
                Metrics::name_event(answers, "fresh");
                let left = record
                    .validity
                    .duration_since(now)
                    .unwrap_or(Duration::ZERO);
                Ok((record.value, Some((c.until - instant).min(left))))
            }
            (Some(c), None) if c.until > instant && !c.found => {
                Metrics::name_event(answers, "negative_hit");
                Err(ResolveError::Unknown(text.to_string()))
            }
            (check, Some((_, record))) => {
                Metrics::name_event(answers, "stale");
                self.refresh_in_background(name);
                // Never checked in this process (imported, or stored by an earlier run): as
                // fresh as the record says. Checked and expired: fresh no longer.
                let ttl = match check {
                    None => record.max_age(now),
                    Some(_) => Some(Duration::ZERO),
                };
                Ok((record.value, ttl))
            }
            (_, None) => {
                Metrics::name_event(answers, "miss");
                self.refresh(name).await?;
                match (self.held(name)?, routing.check(name)) {
                    (Some((_, record)), Some(c)) => {
                        let left = record
                            .validity
                            .duration_since(now)
                            .unwrap_or(Duration::ZERO);
                        let fresh = c.until.saturating_duration_since(Instant::now());
                        Ok((record.value, Some(fresh.min(left))))
                    }
                    (Some((_, record)), None) => Ok((record.value.clone(), record.max_age(now))),
                    (None, _) => Err(ResolveError::Unknown(text.to_string())),
                }
            }
        }
    }

    /// Asks the routers about `name` (joining a fetch in flight), storing what verifies.
    async fn refresh(&self, name: &IpnsName) -> Result<(), ResolveError> {
        let Some(routing) = &self.routing else {
            return Ok(());
        };
        let this = self.clone();
        let key = *name;
        let (result, _) = routing
            .inflight
            .run(*name, move || {
                crate::telemetry::in_current_trace(async move { this.refresh_now(&key).await })
            })
            .await;
        result
            .unwrap_or_else(|_| Err(RoutingError::Failed(name.to_cid_string())))
            .map_err(ResolveError::from)
    }

    /// Starts one background refresh of `name` unless one is running; it runs to its end (within
    /// the routers' deadline) whether or not the request that started it is still there.
    fn refresh_in_background(&self, name: &IpnsName) {
        let Some(routing) = &self.routing else {
            return;
        };
        let Some(claim) = routing.refreshing.claim(*name) else {
            return;
        };
        let this = self.clone();
        let name = *name;
        tokio::spawn(async move {
            let _claim = claim;
            if let Err(error) = this.refresh(&name).await {
                tracing::debug!(%name, %error, "background IPNS refresh failed; the held record stays");
            }
        });
    }

    /// The work of one fetch flight: ask, store what verifies, remember when to ask again.
    async fn refresh_now(&self, name: &IpnsName) -> Result<(), RoutingError> {
        let Some(routing) = &self.routing else {
            return Ok(());
        };
        match routing.fetch(name).await {
            Ok(Some((bytes, record))) => {
                match self.put_record(name, &bytes) {
                    // The store holds a newer record than the routers: it stays.
                    Ok(_) | Err(ResolveError::Stale { .. }) => {}
                    Err(error) => {
                        tracing::warn!(%name, %error, "storing a record fetched from routing failed");
                    }
                }
                let fresh = IpnsRouting::freshness(&record, SystemTime::now());
                routing.mark(name, true, fresh);
                Ok(())
            }
            Ok(None) => {
                let held = matches!(self.held(name), Ok(Some(_)));
                routing.mark(name, held, routing.negative_ttl());
                Ok(())
            }
            Err(e) => {
                // A held record keeps being served; the routers are asked again after a pause,
                // not on every request. Without one, the next request asks at once.
                if matches!(self.held(name), Ok(Some(_))) {
                    routing.mark(name, true, routing.negative_ttl());
                }
                Err(e)
            }
        }
    }
}

/// Domains as looked up: lower case, without a trailing dot.
fn normalize_dnslink(dnslink: BTreeMap<String, String>) -> BTreeMap<String, String> {
    dnslink
        .into_iter()
        .map(|(d, p)| (normalize_domain(&d), p))
        .collect()
}

fn verify(name: &IpnsName, bytes: &[u8]) -> Result<IpnsRecord, ResolveError> {
    record::verify(name, bytes, SystemTime::now()).map_err(|source| ResolveError::Record {
        name: name.to_cid_string(),
        source,
    })
}

/// Reads stored record bytes: the record, or `Err(Expired)` for one that was valid when it was
/// stored and has expired since (kept: it still holds its sequence number). Any other failure
/// means the stored bytes are not a record of `name` any more (damaged, or written by a version
/// that accepted what this one refuses), and the store quarantines them.
fn readable(
    name: &IpnsName,
    bytes: &[u8],
) -> Result<Result<IpnsRecord, record::RecordError>, String> {
    match record::verify(name, bytes, SystemTime::now()) {
        Ok(r) => Ok(Ok(r)),
        Err(e @ record::RecordError::Expired { .. }) => Ok(Err(e)),
        Err(e) => Err(e.to_string()),
    }
}

/// The IPNS name a record file is for, from its file name: `{name}.ipns-record` or
/// `{name}_{anything}.ipns-record` (the conformance fixtures' convention).
pub fn name_from_file_name(file: &str) -> Option<IpnsName> {
    let base = file.rsplit('/').next()?;
    let stem = base.strip_suffix(".ipns-record")?;
    let name = stem.split('_').next()?;
    IpnsName::parse(name).ok()
}

/// A DNSLink domain as one subdomain-gateway label: `.` becomes `-` and `-` becomes `--`.
pub fn dns_label_of_domain(domain: &str) -> String {
    domain.replace('-', "--").replace('.', "-")
}

/// The domain a subdomain-gateway label stands for (the inverse of [`dns_label_of_domain`]).
pub fn domain_of_dns_label(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    let mut chars = label.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '-' {
            if chars.peek() == Some(&'-') {
                chars.next();
                out.push('-');
            } else {
                out.push('.');
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiers::local::LocalStore;

    #[test]
    fn only_dns_names_are_looked_up() {
        for ok in ["example.org", "a.b-c.example", "docs.ipfs.tech.", "x1.io"] {
            assert!(is_dns_name(ok), "{ok}");
        }
        for bad in [
            "a..b",
            "127.0.0.1",
            "\u{2603}.example.org",
            "-a.example",
            "localhost",
            "a\\b.example",
            "a:1.example",
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn dnslink_labels_round_trip() {
        for domain in [
            "en.wikipedia-on-ipfs.org",
            "a.b",
            "dnslink-over-ipns.example.org",
        ] {
            let label = dns_label_of_domain(domain);
            assert!(!label.contains('.'));
            assert_eq!(domain_of_dns_label(&label), domain);
        }
        assert_eq!(
            dns_label_of_domain("en.wikipedia-on-ipfs.org"),
            "en-wikipedia--on--ipfs-org"
        );
    }

    #[test]
    fn record_files_name_their_key() {
        let k = "k51qzi5uqu5dit2ku9mutlfgwyz8u730on38kd10m97m36bjt66my99hb6103f";
        assert!(name_from_file_name(&format!("/x/{k}_v2.ipns-record")).is_some());
        assert!(name_from_file_name(&format!("{k}.ipns-record")).is_some());
        assert!(name_from_file_name(&format!("{k}.car")).is_none());
        assert!(name_from_file_name("example.org.ipns-record").is_none());
    }

    #[tokio::test]
    async fn dnslink_chains_and_unknown_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let cid = "bafkqaddwgevxmmraojswg33smq";
        let mut map = BTreeMap::new();
        map.insert("a.example.org".to_string(), format!("/ipfs/{cid}/x"));
        map.insert(
            "B.example.org.".to_string(),
            "/ipns/a.example.org/y".to_string(),
        );
        map.insert(
            "loop.example.org".to_string(),
            "/ipns/loop.example.org".to_string(),
        );
        map.insert(
            "bad.example.org".to_string(),
            "https://example.org".to_string(),
        );
        let r = NameResolver::new(Records::of(&store), map);
        assert!(r.has_dnslink("b.example.org"));
        assert_eq!(
            r.resolve("b.example.org").await.unwrap().path,
            format!("/ipfs/{cid}/x/y")
        );
        assert!(matches!(
            r.resolve("nope.example.org").await,
            Err(ResolveError::Unknown(_))
        ));
        assert!(matches!(
            r.resolve("nodots").await,
            Err(ResolveError::Invalid(_))
        ));
        // Each hop's path is kept, the innermost hop's last.
        let mut map = BTreeMap::new();
        map.insert("a.example.org".to_string(), format!("/ipfs/{cid}/x"));
        map.insert(
            "b.example.org".to_string(),
            "/ipns/a.example.org/y".to_string(),
        );
        map.insert(
            "c.example.org".to_string(),
            "/ipns/b.example.org/z".to_string(),
        );
        let dir2 = tempfile::tempdir().unwrap();
        let r2 = NameResolver::new(Records::of(&LocalStore::open(dir2.path()).unwrap()), map);
        assert_eq!(
            r2.resolve("c.example.org").await.unwrap().path,
            format!("/ipfs/{cid}/x/y/z")
        );
        assert!(r.resolve("loop.example.org").await.is_err());
        assert!(matches!(
            r.resolve("bad.example.org").await,
            Err(ResolveError::BadValue { .. })
        ));
    }

    #[test]
    fn an_unreadable_stored_record_is_quarantined_and_a_new_one_stored_beside_it() {
        let file = "k51qzi5uqu5dit2ku9mutlfgwyz8u730on38kd10m97m36bjt66my99hb6103f_v2.ipns-record";
        let good = std::fs::read(format!(
            "{}/../shared/conformance/fixtures/ipns_records/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let name = name_from_file_name(file).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let mut damaged = good.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x40;
        store.meta_put(&meta_key(&name), &damaged).unwrap();

        let names = NameResolver::new(Records::of(&store), BTreeMap::new());
        assert!(names.record(&name).unwrap().is_none(), "starts without it");
        let q = store.quarantine_list().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].bytes, damaged);
        names.put_record(&name, &good).unwrap();
        assert_eq!(
            store.quarantine_list().unwrap(),
            q,
            "the save left it alone"
        );
        assert!(names.record(&name).unwrap().is_some());

        // Damaged again behind the resolver's back: a store never writes over it.
        store.meta_put(&meta_key(&name), &damaged).unwrap();
        let fresh = NameResolver::new(Records::of(&store), BTreeMap::new());
        fresh.put_record(&name, &good).unwrap();
        assert_eq!(store.quarantine_list().unwrap().len(), 2);
    }
}
