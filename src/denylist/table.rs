//! The compiled lookup structures: rules keyed by a name (a multihash or a domain) with path
//! patterns, and compact sets of double-hash digests.
//!
//! Every rule has an index in the order it appears (lists in their configured order, lines in
//! file order); a check collects the matching rules and the highest index wins, which is the
//! spec's "last matching rule wins" across every kind of rule at once.

use std::collections::HashMap;

/// The path part of a rule, percent-decoded, without leading or trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PathPattern {
    /// The path (`""` for the bare CID or name).
    pub(crate) path: Box<str>,
    /// `true` for `PATH*` rules: any path that starts with `path` (as a string, so `/test*`
    /// matches `test2` and `test/x`; `/*` matches every path including the empty one).
    pub(crate) prefix: bool,
}

impl PathPattern {
    /// The bare CID or name with no path.
    pub(crate) fn empty() -> Self {
        Self {
            path: Box::from(""),
            prefix: false,
        }
    }

    /// Whether the request path made of the non-empty `segments` joined by `/` matches, without
    /// building the joined string.
    pub(crate) fn matches(&self, segments: &[String]) -> bool {
        let mut rest = self.path.as_bytes();
        let mut first = true;
        for seg in segments.iter().filter(|s| !s.is_empty()) {
            if !first {
                if rest.is_empty() {
                    return self.prefix;
                }
                if rest[0] != b'/' {
                    return false;
                }
                rest = &rest[1..];
            }
            first = false;
            let s = seg.as_bytes();
            if rest.len() >= s.len() {
                if &rest[..s.len()] != s {
                    return false;
                }
                rest = &rest[s.len()..];
            } else {
                return self.prefix && s.starts_with(rest);
            }
        }
        rest.is_empty()
    }
}

/// One keyed rule: a path pattern and the rule it belongs to.
#[derive(Debug)]
struct Keyed {
    path: PathPattern,
    rule: u32,
}

/// Rules keyed by exact bytes (a binary multihash, or a lower-case domain name).
#[derive(Debug, Default)]
pub(crate) struct KeyedTable {
    /// Key → range in `entries` (rules of one key, in ascending rule order).
    index: HashMap<Box<[u8]>, (u32, u32)>,
    entries: Vec<Keyed>,
}

/// Collects keyed rules before they are frozen into a [`KeyedTable`].
#[derive(Debug, Default)]
pub(crate) struct KeyedBuilder {
    items: Vec<(Box<[u8]>, Keyed)>,
}

impl KeyedBuilder {
    /// Adds rule `rule` for `key` and `path`.
    pub(crate) fn add(&mut self, key: Box<[u8]>, path: PathPattern, rule: u32) {
        self.items.push((key, Keyed { path, rule }));
    }

    /// Freezes the table: one map entry per key, its rules side by side.
    pub(crate) fn build(mut self) -> KeyedTable {
        // Stable: rules of one key stay in ascending order.
        self.items.sort_by(|a, b| a.0.cmp(&b.0));
        let mut index = HashMap::new();
        let mut entries = Vec::with_capacity(self.items.len());
        let mut items = self.items.into_iter().peekable();
        while let Some((key, first)) = items.next() {
            let start = entries.len() as u32;
            entries.push(first);
            while let Some((_, next)) = items.next_if(|(k, _)| *k == key) {
                entries.push(next);
            }
            index.insert(key, (start, entries.len() as u32 - start));
        }
        KeyedTable { index, entries }
    }
}

impl KeyedTable {
    /// Whether no rule is keyed here (checks skip the key computation then).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last rule for `key` whose pattern matches `segments`.
    pub(crate) fn best(&self, key: &[u8], segments: &[String]) -> Option<u32> {
        let &(start, len) = self.index.get(key)?;
        let rules = &self.entries[start as usize..(start + len) as usize];
        rules
            .iter()
            .rev()
            .find(|k| k.path.matches(segments))
            .map(|k| k.rule)
    }
}

/// Bytes of a digest kept as its key. 128 bits keep accidental collisions out of reach
/// (~2^-108 per check with a million entries) at half the memory of whole sha2-256 digests.
const KEY: usize = 16;

/// One digest of a set: its leading bytes and its rule.
#[derive(Clone, Copy, Debug)]
struct DigestEntry {
    key: [u8; KEY],
    rule: u32,
}

/// A compact set of double-hash digests (hash outputs, uniformly distributed): a sorted array
/// bucketed by the leading bits, so a lookup is one index read and about one key compare —
/// 20 bytes per entry plus 4 per bucket, about 24 MB for a million-entry list.
#[derive(Debug, Default)]
pub(crate) struct DigestSet {
    entries: Vec<DigestEntry>,
    /// `buckets[b]..buckets[b + 1]` is the range of entries whose top `bits` bits are `b`.
    buckets: Vec<u32>,
    bits: u32,
}

/// Collects digests before they are frozen into a [`DigestSet`].
#[derive(Debug, Default)]
pub(crate) struct DigestBuilder {
    entries: Vec<DigestEntry>,
}

fn key_of(digest: &[u8]) -> [u8; KEY] {
    let mut k = [0u8; KEY];
    let n = digest.len().min(KEY);
    k[..n].copy_from_slice(&digest[..n]);
    k
}

fn top_bits(key: &[u8; KEY], bits: u32) -> usize {
    if bits == 0 {
        return 0;
    }
    (u32::from_be_bytes([key[0], key[1], key[2], key[3]]) >> (32 - bits)) as usize
}

impl DigestBuilder {
    /// Adds `digest` for rule `rule`.
    pub(crate) fn add(&mut self, digest: &[u8], rule: u32) {
        self.entries.push(DigestEntry {
            key: key_of(digest),
            rule,
        });
    }

    /// Whether nothing was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sorts, keeps only the last rule of a repeated digest (it is the one that wins), and
    /// indexes the buckets.
    pub(crate) fn build(mut self) -> DigestSet {
        self.entries
            .sort_unstable_by(|a, b| a.key.cmp(&b.key).then(b.rule.cmp(&a.rule)));
        self.entries.dedup_by(|later, kept| later.key == kept.key);
        self.entries.shrink_to_fit();
        let n = self.entries.len();
        // About one entry per bucket, at most 2^24 buckets (64 MiB of index).
        let bits = if n < 2 {
            0
        } else {
            (usize::BITS - 1 - n.leading_zeros()).min(24)
        };
        let mut buckets = vec![0u32; (1usize << bits) + 1];
        for e in &self.entries {
            buckets[top_bits(&e.key, bits) + 1] += 1;
        }
        for i in 1..buckets.len() {
            buckets[i] += buckets[i - 1];
        }
        DigestSet {
            entries: self.entries,
            buckets,
            bits,
        }
    }
}

impl DigestSet {
    /// Whether the set holds no digest (checks skip hashing then).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of distinct digests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The rule of `digest`, if listed.
    pub(crate) fn get(&self, digest: &[u8]) -> Option<u32> {
        let key = key_of(digest);
        let b = top_bits(&key, self.bits);
        let (start, end) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        self.entries[start..end]
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn segs(p: &str) -> Vec<String> {
        p.split('/').map(str::to_string).collect()
    }

    fn pat(path: &str, prefix: bool) -> PathPattern {
        PathPattern {
            path: path.into(),
            prefix,
        }
    }

    #[test]
    fn exact_and_prefix_patterns() {
        let exact = pat("a/b", false);
        assert!(exact.matches(&segs("a/b")));
        assert!(exact.matches(&segs("/a/b/")), "empty segments are ignored");
        assert!(!exact.matches(&segs("a/bc")));
        assert!(!exact.matches(&segs("a/b/c")));
        assert!(!exact.matches(&segs("a")));
        assert!(!exact.matches(&[]));

        let prefix = pat("test", true);
        for p in ["test", "test2", "test/one", "test/"] {
            assert!(prefix.matches(&segs(p)), "{p}");
        }
        for p in ["tes", "", "one/test"] {
            assert!(!prefix.matches(&segs(p)), "{p}");
        }
        let all = pat("", true);
        assert!(all.matches(&[]));
        assert!(all.matches(&segs("x/y")));
        let root = PathPattern::empty();
        assert!(root.matches(&[]));
        assert!(root.matches(&segs("/")));
        assert!(!root.matches(&segs("x")));
        let deep = pat("a/b", true);
        assert!(deep.matches(&segs("a/b/c")));
        assert!(deep.matches(&segs("a/bc")));
        assert!(!deep.matches(&segs("a")));
    }

    #[test]
    fn keyed_table_returns_the_last_matching_rule() {
        let mut b = KeyedBuilder::default();
        b.add(Box::from(&b"k"[..]), pat("", true), 0);
        b.add(Box::from(&b"other"[..]), PathPattern::empty(), 1);
        b.add(Box::from(&b"k"[..]), pat("x", false), 2);
        let t = b.build();
        assert_eq!(t.best(b"k", &segs("x")), Some(2));
        assert_eq!(t.best(b"k", &segs("y")), Some(0));
        assert_eq!(t.best(b"other", &[]), Some(1));
        assert_eq!(t.best(b"other", &segs("y")), None);
        assert_eq!(t.best(b"nope", &[]), None);
    }

    #[test]
    fn digest_set_finds_every_member_and_keeps_the_last_duplicate() {
        for n in [0usize, 1, 2, 3, 100, 5000] {
            let mut b = DigestBuilder::default();
            let digests: Vec<_> = (0..n)
                .map(|i| Sha256::digest(i.to_le_bytes()).to_vec())
                .collect();
            for (i, d) in digests.iter().enumerate() {
                b.add(d, i as u32);
            }
            if n > 0 {
                b.add(&digests[0], n as u32);
            }
            let s = b.build();
            assert_eq!(s.len(), n);
            for (i, d) in digests.iter().enumerate() {
                let want = if i == 0 { n as u32 } else { i as u32 };
                assert_eq!(s.get(d), Some(want));
            }
            assert_eq!(s.get(&Sha256::digest(b"absent")), None);
        }
    }
}
