//! Mutable names: IPNS records (signed pointers kept in the embedded store) and DNSLink
//! (domain names mapped to content paths by configuration), resolved to `/ipfs/` paths for the
//! gateway.
//!
//! Records reach the store through `cidgate import NAME.ipns-record` or the Delegated Routing
//! V1 endpoint `PUT /routing/v1/ipns/{name}` on the admin listener. Every record is verified
//! when it is stored and again when it is used (it may have expired since).

pub mod name;
pub mod record;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

pub use name::IpnsName;
pub use record::IpnsRecord;

use crate::tiers::local::{LocalStore, StoreError};

/// Longest chain of names pointing at names (`/ipns/a` → `/ipns/b` → …) that is followed.
const MAX_DEPTH: usize = 8;

/// Why a name could not be resolved or a record not stored.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The text is neither an IPNS name nor a configured DNSLink domain.
    #[error("{0:?} is not an IPNS name (a libp2p-key CID or peer ID) or a known DNSLink domain")]
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

/// Resolves `/ipns/` names from records in the store and configured DNSLink domains.
#[derive(Clone)]
pub struct NameResolver {
    store: LocalStore,
    /// Configured DNSLink domains (lower case, no trailing dot); replaced whole on SIGHUP.
    dnslink: Arc<arc_swap::ArcSwap<BTreeMap<String, String>>>,
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

impl NameResolver {
    /// A resolver over records in `store` and the DNSLink `domain → /ipfs|ipns/...` map.
    pub fn new(store: LocalStore, dnslink: BTreeMap<String, String>) -> Self {
        Self {
            store,
            dnslink: Arc::new(arc_swap::ArcSwap::from_pointee(normalize_dnslink(dnslink))),
            writing: Default::default(),
            verified: Arc::new(Mutex::new(LruCache::new(
                NonZeroUsize::new(VERIFIED_NAMES).unwrap_or(NonZeroUsize::MIN),
            ))),
        }
    }

    /// Replaces the DNSLink table (`dnslink.names` re-read on SIGHUP), for every clone of
    /// this resolver.
    pub fn set_dnslink(&self, dnslink: BTreeMap<String, String>) {
        self.dnslink.store(Arc::new(normalize_dnslink(dnslink)));
    }

    /// Whether `domain` has a configured DNSLink (a DNSLink gateway host).
    pub fn has_dnslink(&self, domain: &str) -> bool {
        let table = self.dnslink.load();
        if table.is_empty() {
            return false;
        }
        let domain = domain.trim_end_matches('.');
        if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            table.contains_key(&domain.to_ascii_lowercase())
        } else {
            table.contains_key(domain)
        }
    }

    /// Whether any DNSLink domain is configured (so that Host headers are worth looking at).
    pub fn any_dnslink(&self) -> bool {
        !self.dnslink.load().is_empty()
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
        self.store.save_with(&meta_key(name), bytes, |old| {
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
        let Some((bytes, verified)) = self.store.load_with(&meta_key(name), |b| {
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

    /// The `/ipfs/` path `name` (an IPNS name or DNSLink domain) points at, following chains.
    pub fn resolve(&self, name: &str) -> Result<Resolution, ResolveError> {
        self.resolve_at(name, 0)
    }

    fn resolve_at(&self, name: &str, depth: usize) -> Result<Resolution, ResolveError> {
        if depth >= MAX_DEPTH {
            return Err(ResolveError::TooDeep(name.to_string()));
        }
        let (value, ttl) = self.lookup(name)?;
        if value.starts_with("/ipfs/") {
            return Ok(Resolution { path: value, ttl });
        }
        let Some(rest) = value.strip_prefix("/ipns/") else {
            return Err(ResolveError::BadValue {
                name: name.to_string(),
                value,
            });
        };
        // Whatever follows the next name is appended once that name resolves.
        let (next, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let resolved = self.resolve_at(next, depth + 1)?;
        let path = if tail.is_empty() {
            resolved.path
        } else {
            format!("{}/{tail}", resolved.path.trim_end_matches('/'))
        };
        let ttl = match (ttl, resolved.ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Resolution { path, ttl })
    }

    /// One hop: the value and TTL behind `name`.
    fn lookup(&self, name: &str) -> Result<(String, Option<Duration>), ResolveError> {
        match IpnsName::parse(name) {
            Ok(ipns) => match self.record(&ipns)? {
                // Never fresh past the record's own end of validity.
                Some((_, record)) => {
                    let max_age = record.max_age(SystemTime::now());
                    Ok((record.value, max_age))
                }
                None => Err(ResolveError::Unknown(name.to_string())),
            },
            Err(_) => {
                let domain = name.trim_end_matches('.').to_ascii_lowercase();
                if !is_dns_name(&domain) {
                    return Err(ResolveError::Invalid(name.to_string()));
                }
                match self.dnslink.load().get(&domain) {
                    Some(path) => Ok((path.clone(), None)),
                    None => Err(ResolveError::Unknown(name.to_string())),
                }
            }
        }
    }
}

/// Domains as looked up: lower case, without a trailing dot.
fn normalize_dnslink(dnslink: BTreeMap<String, String>) -> BTreeMap<String, String> {
    dnslink
        .into_iter()
        .map(|(d, p)| (d.trim_end_matches('.').to_ascii_lowercase(), p))
        .collect()
}

/// A DNS name of letters, digits and hyphens in dot-separated labels of 1 to 63 characters,
/// with at least one dot and a top-level label that is not all digits (an IPv4 address is not
/// a name). Anything else (`\`, `:`, `@`, `..`, non-ASCII) is refused before it is looked up
/// or turned into a redirect that could lead to another host.
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
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

    #[test]
    fn dnslink_chains_and_unknown_names() {
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
        let r = NameResolver::new(store, map);
        assert!(r.has_dnslink("b.example.org"));
        assert_eq!(
            r.resolve("b.example.org").unwrap().path,
            format!("/ipfs/{cid}/x/y")
        );
        assert!(matches!(
            r.resolve("nope.example.org"),
            Err(ResolveError::Unknown(_))
        ));
        assert!(matches!(r.resolve("nodots"), Err(ResolveError::Invalid(_))));
        assert!(r.resolve("loop.example.org").is_err());
        assert!(matches!(
            r.resolve("bad.example.org"),
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

        let names = NameResolver::new(store.clone(), BTreeMap::new());
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
        let fresh = NameResolver::new(store.clone(), BTreeMap::new());
        fresh.put_record(&name, &good).unwrap();
        assert_eq!(store.quarantine_list().unwrap().len(), 2);
    }
}
