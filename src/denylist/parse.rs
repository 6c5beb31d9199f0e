//! The compact denylist text format (ipfs/specs `compact-denylist-format.md`, IPIP-383): the
//! optional YAML header, block items, `!` exceptions and hints.
//!
//! Parsing is line by line and never fails as a whole: a line that is not a rule this parser
//! understands becomes a warning with its line number and is skipped, so one typo (or one rule
//! kind from a future version) cannot unblock the rest of a list.

use std::collections::HashMap;

use multihash::Multihash;
use multihash_codetable::{Code, MultihashDigest};
use percent_encoding::percent_decode_str;

use super::table::PathPattern;
use crate::ipns::name::{IpnsName, NameError};

/// Largest header the spec allows; a `---` further down is not a header end.
pub(crate) const MAX_HEADER: usize = 1 << 20;
/// Longest line the spec allows (2 MiB including the newline).
pub(crate) const MAX_LINE: usize = 2 << 20;
/// The status blocked content gets unless a hint asks for another.
pub const DEFAULT_STATUS: u16 = 410;
/// The hint (header `hints:` map or per rule) choosing the HTTP status of blocked content.
pub const STATUS_HINT: &str = "gateway_status";

/// sha2-256's multihash code: the legacy double-hash function and the common modern one.
pub(crate) const SHA2_256: u64 = 0x12;

/// What a rule names.
#[derive(Debug)]
pub(crate) enum Target {
    /// `/ipfs/CID[/PATH[*]]`: the CID's binary multihash and a path pattern.
    Ipfs(Vec<u8>, PathPattern),
    /// `/ipns/KEY[/PATH[*]]`: the key's binary multihash.
    IpnsKey(Vec<u8>, PathPattern),
    /// `/ipns/DOMAIN[/PATH[*]]`: a DNSLink name, lower case.
    IpnsDomain(String, PathPattern),
    /// `//HEX`: sha2-256 of `CIDV1_BASE32/PATH` (Bad Bits anchors), or of `domain/`.
    Legacy([u8; 32]),
    /// `//B58-MULTIHASH`: the hash (function `code`) of `B58-MULTIHASH-OF-CID/PATH` or
    /// `/ipns/DOMAIN`.
    Modern(u64, Vec<u8>),
}

/// One parsed rule line.
#[derive(Debug)]
pub(crate) struct Line {
    /// `!` rule: an exception that unblocks what it matches.
    pub(crate) allow: bool,
    /// What it matches (two targets only for a double hash that reads both as hex and as a
    /// base58 multihash: the spec asks for a rule of each kind then).
    pub(crate) targets: Vec<Target>,
    /// The status its own hints ask for.
    pub(crate) status: Option<u16>,
}

/// The list-wide settings from the header.
#[derive(Debug, Default)]
pub(crate) struct Header {
    /// `gateway_status` from the header's `hints` map.
    pub(crate) status: Option<u16>,
    /// Number of lines taken by the header including its `---` (rules start after them).
    pub(crate) lines: u64,
    /// Byte offset where the rules start.
    pub(crate) body_start: usize,
}

/// Finds the header (lines before a `---` line within the first MiB) and parses it.
pub(crate) fn header(text: &str, warn: &mut dyn FnMut(u64, String)) -> Header {
    let mut offset = 0usize;
    let mut number = 0u64;
    for raw in text.split_inclusive('\n') {
        if offset + raw.len() > MAX_HEADER {
            break;
        }
        number += 1;
        offset += raw.len();
        if raw.trim_end_matches(['\n', '\r']) == "---" {
            let mut h = parse_header(&text[..offset - raw.len()], warn);
            h.lines = number;
            h.body_start = offset;
            return h;
        }
    }
    Header::default()
}

/// A deliberately small YAML reader: top-level `key: value` pairs and the `hints` map (block
/// or flow style). Anything else in a header is ignored, not an error: only `version` and
/// `hints` change how rules are read.
fn parse_header(text: &str, warn: &mut dyn FnMut(u64, String)) -> Header {
    let mut hints: HashMap<String, (String, u64)> = HashMap::new();
    let mut section = String::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i as u64 + 1;
        let line = strip_yaml_comment(raw);
        if line.trim().is_empty() || line.trim() == "..." {
            continue;
        }
        let indented = line.starts_with([' ', '\t']);
        let line = line.trim();
        if indented {
            // Continuation of the current key: map entries of `hints`, or the body of a
            // multi-line scalar / list of another key (ignored).
            if section == "hints" {
                match line.split_once(':') {
                    Some((k, v)) => {
                        hints.insert(unquote(k.trim()).into(), (unquote(v.trim()).into(), number));
                    }
                    None => warn(number, format!("header: hint {line:?} is not `key: value`")),
                }
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            if line.starts_with('-') {
                continue; // a top-level list item of some custom field
            }
            warn(number, format!("header: {line:?} is not `key: value`"));
            continue;
        };
        section = key.trim().to_string();
        let value = value.trim();
        match section.as_str() {
            // The spec says to reject other versions; reading what can be read still blocks
            // more than dropping the list would, and every unreadable line is reported.
            "version" if unquote(value) != "1" => warn(
                number,
                format!(
                    "header: denylist version {value} is not supported (1 is); \
                     reading its rules as version 1"
                ),
            ),
            "hints" if value.starts_with('{') => {
                let inner = value.trim_start_matches('{').trim_end_matches('}');
                for pair in inner.split(',').filter(|p| !p.trim().is_empty()) {
                    match pair.split_once(':') {
                        Some((k, v)) => {
                            hints.insert(
                                unquote(k.trim()).into(),
                                (unquote(v.trim()).into(), number),
                            );
                        }
                        None => warn(number, format!("header: hint {pair:?} is not `key: value`")),
                    }
                }
            }
            _ => {}
        }
    }
    let status = hints
        .get(STATUS_HINT)
        .and_then(|(v, number)| match status_of(v) {
            Ok(s) => Some(s),
            Err(e) => {
                warn(*number, format!("header: {e}"));
                None
            }
        });
    Header {
        status,
        ..Header::default()
    }
}

fn strip_yaml_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    match line.find(" #") {
        Some(i) if !line[..i].contains(['"', '\'']) => &line[..i],
        _ => line,
    }
}

fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// The statuses a hint may ask for: 410 Gone (the default) and 451 Unavailable For Legal
/// Reasons. Anything else would turn a block into a redirect, an error or a success.
fn status_of(v: &str) -> Result<u16, String> {
    match v.trim() {
        "410" => Ok(410),
        "451" => Ok(451),
        other => Err(format!(
            "{STATUS_HINT} {other:?} is not 410 or 451; using the default"
        )),
    }
}

/// Parses one rule line (already known not to be blank or a comment). `Err` is the warning.
pub(crate) fn line(text: &str, warn_hint: &mut dyn FnMut(String)) -> Result<Line, String> {
    let mut fields = text.split_ascii_whitespace();
    let Some(mut rule) = fields.next() else {
        return Err("empty rule".into());
    };
    let mut status = None;
    for hint in fields {
        // The spec writes hints `key:value`; nopfs reads `key=value`. Both are accepted.
        let Some((k, v)) = hint.split_once([':', '=']) else {
            warn_hint(format!("hint {hint:?} is not key:value; ignored"));
            continue;
        };
        if k == STATUS_HINT {
            match status_of(v) {
                Ok(s) => status = Some(s),
                Err(e) => warn_hint(e),
            }
        }
    }
    let allow = match rule.strip_prefix('!') {
        Some(r) => {
            rule = r;
            true
        }
        None => false,
    };
    let targets = if let Some(hash) = rule.strip_prefix("//") {
        double_hash(hash)?
    } else if let Some(rest) = rule
        .strip_prefix("/ipfs/")
        .or_else(|| rule.strip_prefix("/ipld/"))
    {
        let (cid, path) = split_path(rest)?;
        let cid = cid::Cid::try_from(cid).map_err(|e| format!("{cid:?} is not a CID: {e}"))?;
        vec![Target::Ipfs(cid.hash().to_bytes(), path)]
    } else if let Some(rest) = rule.strip_prefix("/ipns/") {
        let (name, path) = split_path(rest)?;
        if name.is_empty() {
            return Err("/ipns/ rule without a name".into());
        }
        match name_kind(name) {
            NameKind::Key(mh) => vec![Target::IpnsKey(mh.to_bytes(), path)],
            NameKind::Domain(d) => vec![Target::IpnsDomain(normalise_domain(d), path)],
        }
    } else if rule.starts_with('/') {
        // Bare `/PATH` rules are commented out of the spec (ambiguous with new namespaces).
        return Err(format!(
            "{rule:?}: only /ipfs/, /ipns/ and // rules are supported"
        ));
    } else {
        return Err(format!("{rule:?} is not a rule"));
    };
    Ok(Line {
        allow,
        targets,
        status,
    })
}

fn split_path(rest: &str) -> Result<(&str, PathPattern), String> {
    match rest.split_once('/') {
        None => Ok((rest, PathPattern::empty())),
        Some((name, raw)) => Ok((name, path_pattern(raw)?)),
    }
}

/// `PATH`, `PATH*` or `PATH/*` → a decoded, slash-trimmed pattern. The `*` is looked at before
/// percent-decoding so that an encoded `%2A` stays a literal star.
pub(crate) fn path_pattern(raw: &str) -> Result<PathPattern, String> {
    let (raw, prefix) = match raw.strip_suffix("/*").or_else(|| raw.strip_suffix('*')) {
        Some(r) => (r, true),
        None => (raw, false),
    };
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| format!("path {raw:?} is not UTF-8 once percent-decoded"))?;
    // Empty segments (`a//b`, a trailing `/`) are dropped here and in requests alike.
    let mut path = String::with_capacity(decoded.len());
    for seg in decoded.split('/').filter(|s| !s.is_empty()) {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(seg);
    }
    Ok(PathPattern {
        path: path.into_boxed_str(),
        prefix,
    })
}

fn double_hash(s: &str) -> Result<Vec<Target>, String> {
    let mut targets = Vec::with_capacity(1);
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut d = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            d[i] = (hex_val(pair[0]) << 4) | hex_val(pair[1]);
        }
        targets.push(Target::Legacy(d));
        // Hex digits include '0', which base58 lacks: most anchors cannot be both.
        if s.contains('0') {
            return Ok(targets);
        }
    }
    match modern(s) {
        Ok(t) => targets.push(t),
        Err(e) if targets.is_empty() => return Err(e),
        Err(_) => {}
    }
    Ok(targets)
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

fn modern(s: &str) -> Result<Target, String> {
    let bytes = multibase::Base::Base58Btc.decode(s).map_err(|_| {
        format!("double hash {s:?} is neither a base58btc multihash nor 64 hex digits")
    })?;
    let mh = Multihash::<64>::from_bytes(&bytes)
        .map_err(|_| format!("double hash {s:?} is not a multihash"))?;
    if !hash_supported(mh.code(), mh.size()) {
        return Err(format!(
            "double hash {s:?} uses hash function 0x{:x} with {} bytes, which is not supported",
            mh.code(),
            mh.size()
        ));
    }
    Ok(Target::Modern(mh.code(), mh.digest().to_vec()))
}

/// Whether the double-hash function `code` can be computed here with that digest size.
/// Identity and other non-cryptographic codes are refused: they would publish the very
/// addresses a double-hashed list exists to hide, and are not hash functions anyway.
fn hash_supported(code: u64, size: u8) -> bool {
    match Code::try_from(code) {
        Ok(c) => usize::from(size) == c.digest(b"").digest().len(),
        Err(_) => false,
    }
}

/// How a name under `/ipns/` is read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NameKind<'a> {
    /// An IPNS key in any spelling (CIDv1 in any base and codec, or a base58 peer ID): its
    /// multihash.
    Key(Multihash<64>),
    /// Anything else: a DNSLink domain name.
    Domain(&'a str),
}

/// Reads a name as the spec says: a CID (or peer ID) names a key by its multihash, anything
/// else is a domain. A name with a dot is always a domain (no key spelling has one), which
/// spares the base36 decoding for DNSLink names.
pub(crate) fn name_kind(name: &str) -> NameKind<'_> {
    if name.contains('.') {
        return NameKind::Domain(name);
    }
    match IpnsName::parse(name) {
        Ok(n) => return NameKind::Key(*n.multihash()),
        // A dag-pb (or other codec) CID of a key names the same key.
        Err(NameError::WrongCodec { fixed, .. }) => return NameKind::Key(*fixed.multihash()),
        Err(_) => {}
    }
    match cid::Cid::try_from(name) {
        Ok(c) => NameKind::Key(*c.hash()),
        Err(_) => NameKind::Domain(name),
    }
}

/// DNS names compare case-insensitively and without the root's trailing dot.
pub(crate) fn normalise_domain(d: &str) -> String {
    d.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warnings(text: &str) -> (Header, Vec<(u64, String)>) {
        let mut w = Vec::new();
        let h = header(text, &mut |n, m| w.push((n, m)));
        (h, w)
    }

    #[test]
    fn header_is_found_and_its_status_hint_read() {
        let text = "version: 1\nname: \"Bad Bits\" # comment\ndescription: |\n  multi\n  line\nhints:\n  gateway_status: 451\n  other: x\n---\n//abc\n";
        let (h, w) = warnings(text);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(h.status, Some(451));
        assert_eq!(h.lines, 9);
        assert_eq!(&text[h.body_start..], "//abc\n");

        let (h, _) = warnings("hints: {gateway_status: '410', a: b}\n---\n");
        assert_eq!(h.status, Some(410));
        let (h, w) = warnings("---\n/ipfs/x\n");
        assert!(w.is_empty());
        assert_eq!((h.lines, h.body_start), (1, 4));
        let (h, _) = warnings("/ipfs/x\n/ipfs/y\n");
        assert_eq!((h.lines, h.body_start, h.status), (0, 0, None));
    }

    #[test]
    fn header_problems_are_warnings_not_failures() {
        let (h, w) = warnings("version: 2\nnot yaml at all\nhints:\n  gateway_status: 302\n---\n");
        assert_eq!(h.status, None);
        assert_eq!(h.lines, 5);
        let lines: Vec<u64> = w.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, vec![1, 2, 4], "{w:?}");
    }

    #[test]
    fn a_separator_past_one_mib_is_not_a_header_end() {
        let mut text = "/ipfs/bafkqaaa\n".repeat(MAX_HEADER / 15 + 1);
        text.push_str("---\n");
        let (h, _) = warnings(&text);
        assert_eq!(h.lines, 0);
    }

    #[test]
    fn rule_kinds_and_hints() {
        let mut hw = Vec::new();
        let l = line(
            "!/ipfs/QmVTF1yEejXd9iMgoRTFDxBv7HAz9kuZcQNBzHrceuK9HR/a%20b/*  gateway_status:451 x=y bare",
            &mut |m| hw.push(m),
        )
        .unwrap();
        assert!(l.allow);
        assert_eq!(l.status, Some(451));
        assert_eq!(hw.len(), 1, "{hw:?}");
        match &l.targets[..] {
            [Target::Ipfs(_, p)] => assert_eq!((&*p.path, p.prefix), ("a b", true)),
            t => panic!("{t:?}"),
        }
        let l = line("/ipfs/bafkqaaa gateway_status=410", &mut |_| {}).unwrap();
        assert_eq!(l.status, Some(410));
        let l = line("/ipns/Example.COM./x/", &mut |_| {}).unwrap();
        match &l.targets[..] {
            [Target::IpnsDomain(d, p)] => {
                assert_eq!(d, "example.com");
                assert_eq!((&*p.path, p.prefix), ("x", false));
            }
            t => panic!("{t:?}"),
        }
        let l = line(
            "/ipns/12D3KooWDkNqEJNmreF3NYYFK1ws7Ra2fuW6cHBTu567SPV3LdYA",
            &mut |_| {},
        )
        .unwrap();
        assert!(matches!(&l.targets[..], [Target::IpnsKey(..)]));
        assert!(matches!(
            &line("/ipfs/bafkqaaa/%2A", &mut |_| {}).unwrap().targets[..],
            [Target::Ipfs(_, p)] if &*p.path == "*" && !p.prefix
        ));
    }

    #[test]
    fn double_hash_forms() {
        let legacy = "d9d295bde21f422d471a90f2a37ec53049fdf3e5fa3ee2e8f20e10003da429e7";
        assert!(matches!(
            &line(&format!("//{legacy}"), &mut |_| {}).unwrap().targets[..],
            [Target::Legacy(_)]
        ));
        assert!(matches!(
            &line("//QmX9dhRcQcKUw3Ws8485T5a9dtjrSCQaUAHnG4iK9i4ceM", &mut |_| {})
                .unwrap()
                .targets[..],
            [Target::Modern(SHA2_256, d)] if d.len() == 32
        ));
        for bad in [
            "//nothex",
            "//abcd",
            // base58 of an identity multihash: not a hash function
            &format!("//{}", multibase::Base::Base58Btc.encode([0u8, 3, 1, 2, 3])),
        ] {
            assert!(line(bad, &mut |_| {}).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_rules_are_errors() {
        for bad in [
            "/ipfs/notacid",
            "/ipfs/",
            "/ipns/",
            "/some/path",
            "ipfs/bafkqaaa",
            "/ipfs/bafkqaaa/%ff",
        ] {
            assert!(line(bad, &mut |_| {}).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_keys_or_domains() {
        let k = "k51qzi5uqu5dhmzyv3zac033i7rl9hkgczxyl81lwoukda2htteop7d3x0y1mf";
        let NameKind::Key(mh) = name_kind(k) else {
            panic!()
        };
        for spelling in [
            "bafzaajaiaejcaotjfs57kieazxny5japcmy5p2pgv2cic77tu6ogghttvurnrufx",
            "12D3KooWDkNqEJNmreF3NYYFK1ws7Ra2fuW6cHBTu567SPV3LdYA",
            // the same multihash as a dag-pb CIDv1
            "bafyaajaiaejcaotjfs57kieazxny5japcmy5p2pgv2cic77tu6ogghttvurnrufx",
        ] {
            assert_eq!(name_kind(spelling), NameKind::Key(mh), "{spelling}");
        }
        assert_eq!(
            name_kind("en.wikipedia-on-ipfs.org"),
            NameKind::Domain("en.wikipedia-on-ipfs.org")
        );
        assert_eq!(
            name_kind("domain-example"),
            NameKind::Domain("domain-example")
        );
    }
}
