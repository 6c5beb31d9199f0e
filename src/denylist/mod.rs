//! Content blocking with IPIP-383 compact denylists (ipfs/specs `compact-denylist-format.md`).
//!
//! A [`Denylist`] is an immutable, compiled set of rules from every configured list; a
//! [`DenylistHandle`] holds the current one and swaps it atomically when a list changes;
//! [`service::DenylistService`] reads local files and follows subscriptions.
//!
//! Three questions are asked of it, at the three places the spec names:
//!
//! - [`Denylist::check_cid`] — the block service: is this block blocked whatever path reached
//!   it? (`/ipfs/CID`, `/ipfs/CID/*`, double hashes of the CID). Asked before every fetch,
//!   cache admission and CAR emission, so a blocked block is never fetched, kept or sent.
//! - [`Denylist::check_ipfs_path`] — the path resolver: `/ipfs/{root}/{path}` before resolving.
//! - [`Denylist::check_ipns_path`] — the name system: `/ipns/{name}/{path}` before resolving.
//!
//! Matching follows the spec: CIDs match by multihash (any version, codec or base), rules are
//! evaluated last to first and the last matching one decides (a `!` rule unblocks), across all
//! lists in their configured order and across rule kinds (a `!/ipfs/…` exception can lift a
//! double-hashed block of the same content and the other way round).

pub mod service;

mod encode;
mod parse;
mod table;

use std::sync::Arc;

use arc_swap::ArcSwap;
use multihash_codetable::{Code, MultihashDigest};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use encode::{multihash_bytes, push_cidv1_base32, push_multihash_base58, Preimage, MAX_MH};
use parse::{NameKind, Target, SHA2_256};
use table::{DigestBuilder, DigestSet, KeyedBuilder, KeyedTable};

pub use parse::{DEFAULT_STATUS, STATUS_HINT};
pub use service::{DenylistError, DenylistService, DenylistStats, ListSource, ListStats};

/// Detailed warnings kept per list; beyond them one line counts the rest (a list of garbage
/// must not turn into a million log lines).
const MAX_WARNINGS_PER_LIST: usize = 100;

/// Why something is blocked: which list and line, and the HTTP status its hints ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// The list's name (a file path or a subscription URL).
    pub list: Arc<str>,
    /// The rule's line in that list, from 1.
    pub line: u64,
    /// 410 (the default) or 451, from the `gateway_status` hint of the rule or the header.
    pub status: u16,
}

/// Rules read from one list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListSummary {
    /// The list's name.
    pub name: Arc<str>,
    /// Rules compiled from it (exceptions included).
    pub rules: usize,
}

/// An immutable compiled set of rules from all configured lists.
#[derive(Default)]
pub struct Denylist {
    /// Every rule; its index is its precedence (the highest matching index decides).
    rules: Vec<Blocked>,
    /// Bit `i` set: rule `i` is a `!` exception.
    allow: Vec<u64>,
    /// `/ipfs/CID…` rules by binary multihash.
    ipfs: KeyedTable,
    /// `/ipns/KEY…` rules by binary multihash.
    ipns_keys: KeyedTable,
    /// `/ipns/DOMAIN…` rules by lower-case domain.
    ipns_domains: KeyedTable,
    /// Legacy `//HEX` anchors: sha2-256 of `CIDV1_BASE32/PATH` (or `domain/PATH`).
    legacy: DigestSet,
    /// Modern `//B58MH` anchors per hash function.
    modern: Vec<(Code, DigestSet)>,
    lists: Vec<ListSummary>,
}

impl std::fmt::Debug for Denylist {
    /// A summary: a million rules do not belong in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denylist")
            .field("rules", &self.rules.len())
            .field("lists", &self.lists)
            .finish_non_exhaustive()
    }
}

impl Denylist {
    /// A list that blocks nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Compiles lists (name, text); returns warnings for skipped lines.
    ///
    /// Later lists take precedence over earlier ones (the spec orders lists so that "rules
    /// from later denylists override rules from earlier denylists"). A line that cannot be
    /// read is skipped with a warning `name:line: reason`; nothing aborts a whole list.
    pub fn compile(lists: &[(String, String)]) -> (Self, Vec<String>) {
        Self::compile_lists(lists.iter().map(|(n, t)| (n.as_str(), t.as_str())))
    }

    /// [`Denylist::compile`] over borrowed (name, text) pairs, sparing a copy of big lists.
    pub fn compile_lists<'a>(
        lists: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (Self, Vec<String>) {
        let mut b = Builder::default();
        let mut warnings = Vec::new();
        for (name, text) in lists {
            b.add_list(name, text, &mut warnings);
        }
        (b.build(), warnings)
    }

    /// Whether no rule was compiled (checks return at once).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of rules (exceptions included).
    pub fn rules(&self) -> usize {
        self.rules.len()
    }

    /// Rules per list, in precedence order.
    pub fn lists(&self) -> &[ListSummary] {
        &self.lists
    }

    /// The block itself: rules that block this CID whatever path reaches it (used on every
    /// block fetch / cache admission / CAR emission).
    ///
    /// Matches `/ipfs/CID` and `/ipfs/CID/*` by multihash (any CID version, codec or base),
    /// legacy anchors of `CIDV1_BASE32/` and modern anchors of the base58 multihash.
    pub fn check_cid(&self, cid: &cid::Cid) -> Option<&Blocked> {
        if self.rules.is_empty() {
            return None;
        }
        let (root, _) = self.ipfs_best(cid, &[]);
        self.decide(root)
    }

    /// A content path /ipfs/{root}/{segments..} (root and every path prefix rule; double-hashed
    /// forms too).
    ///
    /// `segments` are the percent-decoded path segments; empty ones (`//`, a trailing `/`)
    /// are ignored. A root that [`Denylist::check_cid`] blocks blocks every path under it:
    /// the block service would refuse to fetch it anyway, and answering before resolving
    /// keeps the refusal uniform. Otherwise the last rule matching the whole path decides:
    /// exact rules (`/ipfs/CID/a/b`, legacy and modern anchors of `…/a/b`) and prefix rules
    /// (`/ipfs/CID/a*`); an exact rule for `a` does not block `a/b` (the spec blocks "the
    /// exact path"; the blocks met while resolving are checked one by one with `check_cid`).
    pub fn check_ipfs_path(&self, root: &cid::Cid, segments: &[String]) -> Option<&Blocked> {
        if self.rules.is_empty() {
            return None;
        }
        let (root_best, path_best) = self.ipfs_best(root, segments);
        self.decide(root_best).or_else(|| self.decide(path_best))
    }

    /// /ipns/{name}/{segments..}: IPNS keys (any CID/peer-ID spelling of the same key should
    /// match) and DNSLink domains.
    ///
    /// As the spec's test fixtures require, a rule for the bare name does not block paths
    /// under it (use `/ipns/NAME/*` for that); the content the name resolves to is checked
    /// again as `/ipfs/` paths and blocks. Domains match case-insensitively and also in the
    /// one-label form subdomain gateways inline them in (`my--site-example-org` for
    /// `my-site.example.org`).
    pub fn check_ipns_path(&self, name: &str, segments: &[String]) -> Option<&Blocked> {
        if self.rules.is_empty() {
            return None;
        }
        let best = match parse::name_kind(name) {
            NameKind::Key(mh) => self.ipns_key_best(&mh, segments),
            NameKind::Domain(d) => {
                let mut lower = Preimage::new();
                push_domain(d.as_bytes(), false, &mut lower);
                let mut best = self.domain_best(lower.as_bytes(), segments);
                if !d.contains('.') && d.contains('-') {
                    let mut inlined = Preimage::new();
                    push_domain(d.as_bytes(), true, &mut inlined);
                    best = best.max(self.domain_best(inlined.as_bytes(), segments));
                }
                best
            }
        };
        self.decide(best)
    }

    fn decide(&self, rule: Option<u32>) -> Option<&Blocked> {
        let i = rule? as usize;
        let allowed = self
            .allow
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0);
        if allowed {
            return None;
        }
        self.rules.get(i)
    }

    /// The last rule matching the root alone, and the last matching root + `segments` (None
    /// when there is no path).
    fn ipfs_best(&self, cid: &cid::Cid, segments: &[String]) -> (Option<u32>, Option<u32>) {
        let has_path = segments.iter().any(|s| !s.is_empty());
        let mh = cid.hash();
        let (mut root, mut path) = (None, None);
        if !self.ipfs.is_empty() {
            let mut key = [0u8; MAX_MH];
            let n = multihash_bytes(mh, &mut key);
            root = self.ipfs.best(&key[..n], &[]);
            if has_path {
                path = self.ipfs.best(&key[..n], segments);
            }
        }
        if !self.legacy.is_empty() {
            let mut p = Preimage::new();
            push_cidv1_base32(cid.codec(), mh, &mut p);
            let (r, q) = self.legacy_pair(&mut p, segments, has_path);
            root = root.max(r);
            path = path.max(q);
        }
        if !self.modern.is_empty() {
            let mut p = Preimage::new();
            push_multihash_base58(mh, &mut p);
            let (r, q) = self.modern_pair(&mut p, segments, has_path);
            root = root.max(r);
            path = path.max(q);
        }
        (root, path)
    }

    /// Legacy anchors of `{name}/` and, with a path, `{name}/{path}`; `p` holds `{name}`.
    fn legacy_pair(
        &self,
        p: &mut Preimage,
        segments: &[String],
        has_path: bool,
    ) -> (Option<u32>, Option<u32>) {
        let mark = p.len();
        p.push(b"/");
        let root = self.legacy.get(&Sha256::digest(p.as_bytes()));
        let mut path = None;
        if has_path {
            p.truncate(mark);
            p.push_path(segments);
            path = self.legacy.get(&Sha256::digest(p.as_bytes()));
        }
        (root, path)
    }

    /// Modern anchors of `{name}` and, with a path, `{name}/{path}`; `p` holds `{name}`.
    fn modern_pair(
        &self,
        p: &mut Preimage,
        segments: &[String],
        has_path: bool,
    ) -> (Option<u32>, Option<u32>) {
        let (mut root, mut path) = (None, None);
        for (code, set) in &self.modern {
            root = root.max(set.get(hash(*code, p.as_bytes()).digest()));
        }
        if has_path {
            p.push_path(segments);
            for (code, set) in &self.modern {
                path = path.max(set.get(hash(*code, p.as_bytes()).digest()));
            }
        }
        (root, path)
    }

    /// The anchors of a name at one path: legacy `{name}/{path}` (`{name}/` without a path) and
    /// modern `{name}[/{path}]`, where `{name}` is `legacy_name` / `modern_name`.
    fn name_anchors(
        &self,
        legacy_name: &[u8],
        modern_name: &[u8],
        segments: &[String],
    ) -> Option<u32> {
        let has_path = segments.iter().any(|s| !s.is_empty());
        let mut best = None;
        if !self.legacy.is_empty() {
            let mut p = Preimage::new();
            p.push(legacy_name);
            if has_path {
                p.push_path(segments);
            } else {
                p.push(b"/");
            }
            best = best.max(self.legacy.get(&Sha256::digest(p.as_bytes())));
        }
        if !self.modern.is_empty() {
            let mut p = Preimage::new();
            p.push(modern_name);
            p.push_path(segments);
            for (code, set) in &self.modern {
                best = best.max(set.get(hash(*code, p.as_bytes()).digest()));
            }
        }
        best
    }

    fn ipns_key_best(&self, mh: &multihash::Multihash<64>, segments: &[String]) -> Option<u32> {
        let mut best = None;
        if !self.ipns_keys.is_empty() {
            let mut key = [0u8; MAX_MH];
            let n = multihash_bytes(mh, &mut key);
            best = self.ipns_keys.best(&key[..n], segments);
        }
        if self.legacy.is_empty() && self.modern.is_empty() {
            return best;
        }
        // Legacy: the key as a libp2p-key CIDv1 in base32; modern: its base58 multihash.
        let mut legacy = Preimage::new();
        if !self.legacy.is_empty() {
            push_cidv1_base32(crate::ipld::LIBP2P_KEY, mh, &mut legacy);
        }
        let mut modern = Preimage::new();
        if !self.modern.is_empty() {
            push_multihash_base58(mh, &mut modern);
        }
        best.max(self.name_anchors(legacy.as_bytes(), modern.as_bytes(), segments))
    }

    fn domain_best(&self, domain: &[u8], segments: &[String]) -> Option<u32> {
        let mut best = None;
        if !self.ipns_domains.is_empty() {
            best = self.ipns_domains.best(domain, segments);
        }
        if self.legacy.is_empty() && self.modern.is_empty() {
            return best;
        }
        // Legacy: `domain/`; modern: `/ipns/domain`.
        let mut modern = Preimage::new();
        modern.push(b"/ipns/");
        modern.push(domain);
        best.max(self.name_anchors(domain, modern.as_bytes(), segments))
    }
}

/// The digest of `data` with hash function `code` (sha2-256 without the table dispatch).
fn hash(code: Code, data: &[u8]) -> multihash::Multihash<64> {
    if code == Code::Sha2_256 {
        let d = Sha256::digest(data);
        // A 32-byte digest always fits a 64-byte multihash.
        return multihash::Multihash::wrap(SHA2_256, &d).unwrap_or_default();
    }
    code.digest(data)
}

/// Appends a domain in lower case without the trailing root dot; `inlined` also undoes the
/// subdomain gateway's DNS-label form (`-` → `.`, `--` → `-`).
fn push_domain(d: &[u8], inlined: bool, out: &mut Preimage) {
    let d = d.strip_suffix(b".").unwrap_or(d);
    let mut i = 0;
    let mut chunk = [0u8; 64];
    let mut n = 0;
    while i < d.len() {
        let mut c = d[i].to_ascii_lowercase();
        if inlined && c == b'-' {
            if d.get(i + 1) == Some(&b'-') {
                i += 1;
            } else {
                c = b'.';
            }
        }
        chunk[n] = c;
        n += 1;
        i += 1;
        if n == chunk.len() {
            out.push(&chunk);
            n = 0;
        }
    }
    out.push(&chunk[..n]);
}

/// Whether `text` holds at least one rule this parser reads, looking no further than a
/// thousand non-comment lines (an error page or a binary has none; a list has one early).
pub(crate) fn has_rules(text: &str) -> bool {
    let header = parse::header(text, &mut |_, _| {});
    text[header.body_start..]
        .split('\n')
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.starts_with('#'))
        .take(1000)
        .any(|t| t.len() < parse::MAX_LINE && parse::line(t, &mut |_| {}).is_ok())
}

/// Accumulates rules of all lists before they are frozen into a [`Denylist`].
#[derive(Default)]
struct Builder {
    rules: Vec<Blocked>,
    allow: Vec<u64>,
    ipfs: KeyedBuilder,
    ipns_keys: KeyedBuilder,
    ipns_domains: KeyedBuilder,
    legacy: DigestBuilder,
    modern: Vec<(u64, DigestBuilder)>,
    lists: Vec<ListSummary>,
}

/// Warnings of one list: counted, the first [`MAX_WARNINGS_PER_LIST`] kept in full.
struct Warnings<'a> {
    name: &'a str,
    out: &'a mut Vec<String>,
    count: usize,
}

impl Warnings<'_> {
    fn warn(&mut self, line: u64, message: String) {
        self.count += 1;
        if self.count <= MAX_WARNINGS_PER_LIST {
            self.out.push(format!("{}:{line}: {message}", self.name));
        }
    }

    fn finish(self) {
        if self.count > MAX_WARNINGS_PER_LIST {
            self.out.push(format!(
                "{}: {} more lines skipped or with ignored hints",
                self.name,
                self.count - MAX_WARNINGS_PER_LIST
            ));
        }
    }
}

impl Builder {
    fn add_list(&mut self, name: &str, text: &str, out: &mut Vec<String>) {
        let list: Arc<str> = Arc::from(name);
        let before = self.rules.len();
        let mut w = Warnings {
            name,
            out,
            count: 0,
        };
        let header = parse::header(text, &mut |n, m| w.warn(n, m));
        let default_status = header.status.unwrap_or(DEFAULT_STATUS);
        let mut number = header.lines;
        for raw in text[header.body_start..].split('\n') {
            number += 1;
            if raw.len() >= parse::MAX_LINE {
                w.warn(number, "line longer than 2 MiB".into());
                continue;
            }
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let mut hint_warnings = Vec::new();
            let parsed = parse::line(t, &mut |m| hint_warnings.push(m));
            for m in hint_warnings {
                w.warn(number, m);
            }
            match parsed {
                Ok(l) => self.add_rule(&list, number, l, default_status),
                Err(m) => w.warn(number, m),
            }
        }
        w.finish();
        self.lists.push(ListSummary {
            name: list,
            rules: self.rules.len() - before,
        });
    }

    fn add_rule(&mut self, list: &Arc<str>, line: u64, l: parse::Line, default_status: u16) {
        let Ok(i) = u32::try_from(self.rules.len()) else {
            return; // four billion rules: the rest cannot be indexed (and would not fit anyway)
        };
        self.rules.push(Blocked {
            list: list.clone(),
            line,
            status: l.status.unwrap_or(default_status),
        });
        if (i as usize) / 64 >= self.allow.len() {
            self.allow.push(0);
        }
        if l.allow {
            self.allow[i as usize / 64] |= 1 << (i % 64);
        }
        for t in l.targets {
            match t {
                Target::Ipfs(mh, path) => self.ipfs.add(mh.into_boxed_slice(), path, i),
                Target::IpnsKey(mh, path) => self.ipns_keys.add(mh.into_boxed_slice(), path, i),
                Target::IpnsDomain(d, path) => {
                    self.ipns_domains
                        .add(d.into_bytes().into_boxed_slice(), path, i)
                }
                Target::Legacy(d) => self.legacy.add(&d, i),
                Target::Modern(code, d) => match self.modern.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, b)) => b.add(&d, i),
                    None => {
                        let mut b = DigestBuilder::default();
                        b.add(&d, i);
                        self.modern.push((code, b));
                    }
                },
            }
        }
    }

    fn build(self) -> Denylist {
        Denylist {
            rules: self.rules,
            allow: self.allow,
            ipfs: self.ipfs.build(),
            ipns_keys: self.ipns_keys.build(),
            ipns_domains: self.ipns_domains.build(),
            legacy: self.legacy.build(),
            modern: self
                .modern
                .into_iter()
                .filter(|(_, b)| !b.is_empty())
                // Codes were checked when the rule was parsed.
                .filter_map(|(c, b)| Some((Code::try_from(c).ok()?, b.build())))
                .collect(),
            lists: self.lists,
        }
    }
}

/// A cheap-to-clone handle to the current list, swapped atomically on reload, with a
/// generation counter other caches can watch to invalidate themselves.
#[derive(Clone, Debug)]
pub struct DenylistHandle {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    current: ArcSwap<Denylist>,
    generation: watch::Sender<u64>,
}

impl Default for DenylistHandle {
    fn default() -> Self {
        Self::new(Denylist::empty())
    }
}

impl DenylistHandle {
    /// A handle holding `list`, at generation 0.
    pub fn new(list: Denylist) -> Self {
        Self {
            inner: Arc::new(Shared {
                current: ArcSwap::from_pointee(list),
                generation: watch::Sender::new(0),
            }),
        }
    }

    /// The current list (an `Arc` clone; on the hottest paths prefer [`DenylistHandle::load`]).
    pub fn current(&self) -> Arc<Denylist> {
        self.inner.current.load_full()
    }

    /// The current list without touching its reference count (arc-swap's guard: cheap, but
    /// hold it only for the duration of a check, not across awaits).
    pub fn load(&self) -> arc_swap::Guard<Arc<Denylist>> {
        self.inner.current.load()
    }

    /// How many times the list has been replaced.
    pub fn generation(&self) -> u64 {
        *self.inner.generation.borrow()
    }

    /// Wakes on every replacement with the new generation.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Installs `list` (after it is visible, the generation is bumped); returns the new
    /// generation.
    pub fn replace(&self, list: Denylist) -> u64 {
        self.inner.current.store(Arc::new(list));
        let mut g = 0;
        self.inner.generation.send_modify(|v| {
            *v += 1;
            g = *v;
        });
        g
    }
}

#[cfg(test)]
mod tests;
