//! Rule semantics, checked against expectations derived from the spec (ipfs/specs
//! `compact-denylist-format.md`) and the behaviour nopfs's test suite describes. Every
//! double-hash anchor is computed here from first principles.

use super::*;
use multibase::Base;

fn cid(s: &str) -> cid::Cid {
    cid::Cid::try_from(s).unwrap()
}

fn segs(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn one(text: &str) -> (Denylist, Vec<String>) {
    Denylist::compile(&[("test.deny".to_string(), text.to_string())])
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The modern anchor: base58btc of the sha2-256 multihash of `s`.
fn sha256_b58mh(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    Base::Base58Btc.encode(
        multihash::Multihash::<64>::wrap(0x12, &d)
            .unwrap()
            .to_bytes(),
    )
}

fn v1_base32(c: &cid::Cid) -> String {
    cid::Cid::new_v1(c.codec(), *c.hash())
        .to_string_of_base(Base::Base32Lower)
        .unwrap()
}

fn b58mh(c: &cid::Cid) -> String {
    Base::Base58Btc.encode(c.hash().to_bytes())
}

impl Denylist {
    fn path_blocked(&self, p: &str) -> bool {
        let mut parts = p.trim_start_matches('/').splitn(3, '/');
        let ns = parts.next().unwrap();
        let name = parts.next().unwrap();
        let rest = segs(parts.next().unwrap_or(""));
        match ns {
            "ipfs" => self.check_ipfs_path(&cid(name), &rest).is_some(),
            "ipns" => self.check_ipns_path(name, &rest).is_some(),
            _ => panic!("{p}"),
        }
    }
}

// Three spellings of one multihash (dag-pb v1, raw v1, v0).
const RULE1_V1: &str = "bafybeihvvulpp4evxj7x7armbqcyg6uezzuig6jp3lktpbovlqfkuqeuoq";
const RULE1_RAW: &str = "bafkreihvvulpp4evxj7x7armbqcyg6uezzuig6jp3lktpbovlqfkuqeuoq";
const RULE1_V0: &str = "QmesfgDQ3q6prBy2Kg2gKbW4MAGuWiRP2DVuGA5MZSERLo";

#[test]
fn an_empty_list_blocks_nothing() {
    for d in [Denylist::empty(), one("# only comments\n\n").0] {
        assert!(d.is_empty());
        assert_eq!(d.rules(), 0);
        assert!(d.check_cid(&cid(RULE1_V0)).is_none());
        assert!(d.check_ipfs_path(&cid(RULE1_V0), &segs("a")).is_none());
        assert!(d.check_ipns_path("example.org", &[]).is_none());
    }
}

#[test]
fn cid_rules_match_by_multihash() {
    let (d, w) = one(&format!("/ipfs/{RULE1_V1}\n"));
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(d.rules(), 1);
    for s in [RULE1_V1, RULE1_RAW, RULE1_V0] {
        let b = d.check_cid(&cid(s)).expect(s);
        assert_eq!((&*b.list, b.line, b.status), ("test.deny", 1, 410));
        assert!(d.path_blocked(&format!("/ipfs/{s}")));
        // The root cannot be fetched, so no path through it can be served either.
        assert!(d.path_blocked(&format!("/ipfs/{s}/sub")));
    }
    // The same CID in base36 and base16.
    let c = cid(RULE1_V1);
    for base in [Base::Base36Lower, Base::Base16Lower, Base::Base58Btc] {
        assert!(d
            .check_cid(&cid(&c.to_string_of_base(base).unwrap()))
            .is_some());
    }
    assert!(d.check_cid(&cid("bafkqaaa")).is_none());
    assert!(d
        .check_cid(&cid("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"))
        .is_none());
}

#[test]
fn exact_paths_block_only_themselves() {
    let root = "QmVTF1yEejXd9iMgoRTFDxBv7HAz9kuZcQNBzHrceuK9HR";
    let (d, _) = one(&format!("/ipfs/{root}/a/b\n/ipfs/{root}/c%20d/\n"));
    assert!(d.check_cid(&cid(root)).is_none());
    assert!(d.path_blocked(&format!("/ipfs/{root}/a/b")));
    assert!(d.path_blocked(&format!("/ipfs/{root}/a/b/")));
    assert!(d.path_blocked(&format!("/ipfs/{}/a//b", v1_base32(&cid(root)))));
    assert!(
        d.path_blocked(&format!("/ipfs/{root}/c d")),
        "percent-decoded rule"
    );
    for allowed in ["", "a", "a/b/c", "a/bc", "c%20d"] {
        assert!(
            !d.path_blocked(&format!("/ipfs/{root}/{allowed}")),
            "{allowed}"
        );
    }
}

#[test]
fn path_prefixes() {
    let all = "QmdWFA9FL52hx3j9EJZPQP1ZUH8Ygi5tLCX2cRDs6knSf8";
    let star = "Qmah2YDTfrox4watLCr3YgKyBwvjq8FJZEFdWY6WtJ3Xt2";
    let slash_star = "QmTuvSQbEDR3sarFAN9kAeXBpiBCyYYNxdxciazBba11eC";
    let (d, w) = one(&format!(
        "/ipfs/{all}/*\n/ipfs/{star}/test*\n/ipfs/{slash_star}/test/*\n"
    ));
    assert!(w.is_empty(), "{w:?}");
    // `/*` blocks the CID itself and every path.
    assert!(d.check_cid(&cid(all)).is_some());
    for p in ["", "a/b", "z/", "z"] {
        assert!(d.path_blocked(&format!("/ipfs/{all}/{p}")), "{p}");
    }
    // `test*` and `test/*` are the same rule: a string prefix.
    for root in [star, slash_star] {
        assert!(d.check_cid(&cid(root)).is_none());
        for p in ["test", "test2", "test/one"] {
            assert!(d.path_blocked(&format!("/ipfs/{root}/{p}")), "{root}/{p}");
        }
        for p in ["tes", "", "one/test"] {
            assert!(!d.path_blocked(&format!("/ipfs/{root}/{p}")), "{root}/{p}");
        }
    }
}

#[test]
fn exceptions_last_match_wins() {
    let r = "QmUboz9UsQBDeS6Tug1U8jgoFkgYxyYood9NDyVURAY9pK";
    let (d, _) = one(&format!(
        "/ipfs/{r}/blocked*\n!/ipfs/{r}/blockednot\n!/ipfs/{r}/blocked/not\n!/ipfs/{r}/blocked/exceptions*\n"
    ));
    for p in ["blocked", "blocked2", "blocked/x"] {
        assert!(d.path_blocked(&format!("/ipfs/{r}/{p}")), "{p}");
    }
    for p in [
        "blockednot",
        "blocked/not",
        "blocked/exceptions",
        "blocked/exceptions2",
        "blocked/exceptions/one",
    ] {
        assert!(!d.path_blocked(&format!("/ipfs/{r}/{p}")), "{p}");
    }

    // An exception before the rule it would lift does nothing.
    let (d, _) = one("!/ipns/my.domain\n/ipns/my.domain\n");
    let b = d.check_ipns_path("my.domain", &[]).unwrap();
    assert_eq!(b.line, 2);
    let (d, _) = one("/ipns/my.domain\n!/ipns/my.domain\n");
    assert!(d.check_ipns_path("my.domain", &[]).is_none());

    // `/*` then an exception for the bare root: the root is served, paths are not.
    let (d, _) = one(&format!("/ipfs/{r}/*\n!/ipfs/{r}\n"));
    assert!(d.check_cid(&cid(r)).is_none());
    assert!(d.path_blocked(&format!("/ipfs/{r}/x")));
    // A blocked root is not made reachable by an exception for one of its paths.
    let (d, _) = one(&format!("/ipfs/{r}\n!/ipfs/{r}/x\n"));
    assert!(d.path_blocked(&format!("/ipfs/{r}/x")));
}

#[test]
fn later_lists_override_earlier_ones_and_kinds_mix() {
    let c = cid(RULE1_V1);
    let deny = format!("//{}\n", sha256_hex(&format!("{}/", v1_base32(&c))));
    let allow = format!("!/ipfs/{RULE1_V0}\n");
    let lists =
        |a: &str, b: &str| Denylist::compile(&[("a".into(), a.into()), ("b".into(), b.into())]).0;
    assert!(lists(&deny, &allow).check_cid(&c).is_none());
    let d = lists(&allow, &deny);
    let b = d.check_cid(&c).unwrap();
    assert_eq!((&*b.list, b.line), ("b", 1));
    assert_eq!(
        d.lists(),
        &[
            ListSummary {
                name: "a".into(),
                rules: 1
            },
            ListSummary {
                name: "b".into(),
                rules: 1
            }
        ]
    );
}

#[test]
fn hints_choose_the_status() {
    let text = format!(
        "version: 1\nname: legal\nhints:\n  gateway_status: 451\n---\n/ipfs/{RULE1_V0}\n/ipfs/bafkqaaa gateway_status:410\n/ipns/a.example gateway_status=302\n"
    );
    let (d, w) = one(&text);
    let b = d.check_cid(&cid(RULE1_V0)).unwrap();
    assert_eq!((b.line, b.status), (6, 451));
    assert_eq!(d.check_cid(&cid("bafkqaaa")).unwrap().status, 410);
    // An unusable hint is a warning; the rule still blocks with the list's status.
    assert_eq!(d.check_ipns_path("a.example", &[]).unwrap().status, 451);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("test.deny:8: "), "{w:?}");
    let (d, _) = one(&format!("/ipfs/{RULE1_V0}\n"));
    assert_eq!(d.check_cid(&cid(RULE1_V0)).unwrap().status, DEFAULT_STATUS);
}

#[test]
fn legacy_double_hashes_use_the_cidv1_base32_string() {
    // The spec's own vectors, recomputed.
    let c = cid("bafybeiefwqslmf6zyyrxodaxx4vwqircuxpza5ri45ws3y5a62ypxti42e");
    let root = sha256_hex(&format!("{}/", v1_base32(&c)));
    let path = sha256_hex(&format!("{}/path", v1_base32(&c)));
    assert_eq!(
        root,
        "d9d295bde21f422d471a90f2a37ec53049fdf3e5fa3ee2e8f20e10003da429e7"
    );
    assert_eq!(
        path,
        "3f8b9febd851873b3774b937cce126910699ceac56e72e64b866f8e258d09572"
    );

    let (d, w) = one(&format!("//{root}\n"));
    assert!(w.is_empty(), "{w:?}");
    let v0 = cid::Cid::new_v0(*c.hash()).unwrap();
    for x in [c, v0] {
        assert!(d.check_cid(&x).is_some());
        assert!(d.check_ipfs_path(&x, &[]).is_some());
        assert!(d.check_ipfs_path(&x, &segs("any/path")).is_some());
    }
    // The legacy form names the codec: the raw CID of the same bytes is another anchor.
    assert!(d.check_cid(&cid::Cid::new_v1(0x55, *c.hash())).is_none());

    let (d, _) = one(&format!("//{}\n", path.to_uppercase()));
    assert!(d.check_cid(&c).is_none());
    assert!(d.check_ipfs_path(&c, &segs("path")).is_some());
    assert!(d.check_ipfs_path(&v0, &segs("/path/")).is_some());
    assert!(d.check_ipfs_path(&c, &segs("path2")).is_none());
    assert!(d.check_ipfs_path(&c, &segs("path/x")).is_none());
}

#[test]
fn modern_double_hashes_use_the_base58_multihash() {
    // Spec: //QmX9dh… = base58btc(sha2-256 multihash of "QmVTF1…").
    let v0 = "QmVTF1yEejXd9iMgoRTFDxBv7HAz9kuZcQNBzHrceuK9HR";
    assert_eq!(
        sha256_b58mh(v0),
        "QmX9dhRcQcKUw3Ws8485T5a9dtjrSCQaUAHnG4iK9i4ceM"
    );
    let (d, _) = one("//QmX9dhRcQcKUw3Ws8485T5a9dtjrSCQaUAHnG4iK9i4ceM\n");
    for s in [
        v0,
        "bafybeidjwik6im54nrpfg7osdvmx7zojl5oaxqel5cmsz46iuelwf5acja",
    ] {
        assert!(d.check_cid(&cid(s)).is_some(), "{s}");
    }
    let raw = cid::Cid::new_v1(0x55, *cid(v0).hash());
    assert!(
        d.check_cid(&raw).is_some(),
        "any codec: it is the multihash"
    );

    // Spec: a path under a CID, hashed as `{b58 multihash}/my/path`.
    let c = cid("bafybeihrw75yfhdx5qsqgesdnxejtjybscwuclpusvxkuttep6h7pkgmze");
    assert_eq!(b58mh(&c), "QmecDgNqCRirkc3Cjz9eoRBNwXGckJ9WvTdmY16HP88768");
    let anchor = sha256_b58mh(&format!("{}/my/path", b58mh(&c)));
    assert_eq!(anchor, "QmSju6XPmYLG611rmK7rEeCMFVuL6EHpqyvmEU6oGx3GR8");
    let (d, _) = one(&format!("//{anchor}\n"));
    assert!(d.check_ipfs_path(&c, &segs("my/path")).is_some());
    assert!(d.check_ipfs_path(&c, &segs("my")).is_none());
    assert!(d.check_cid(&c).is_none());
}

#[test]
fn modern_double_hashes_with_another_function() {
    // A blake3 CID, and a blake3 double hash of one of its paths.
    let c = cid("bafyb4ieqht3b2rssdmc7sjv2cy2gfdilxkfh7623nvndziyqnawkmo266a");
    let pre = format!("{}/path", b58mh(&c));
    assert_eq!(pre, "gW7Nhu4HrfDtphEivm3Z9NNE7gpdh5Tga8g6JNZc1S8E47/path");
    // nopfs's test list anchors this path with sha2-256 …
    assert_eq!(
        sha256_b58mh(&pre),
        "QmbK7LDv5NNBvYQzNfm2eED17SNLt1yNMapcUhSuNLgkqz"
    );
    // … and here it is anchored with blake3, both in one list.
    let anchor = Base::Base58Btc.encode(Code::Blake3_256.digest(pre.as_bytes()).to_bytes());
    let (d, w) = one(&format!(
        "//{anchor}\n//QmbK7LDv5NNBvYQzNfm2eED17SNLt1yNMapcUhSuNLgkqz\n"
    ));
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(d.modern.len(), 2);
    let hex = format!("f{}", hex_of(&c.to_bytes()));
    for root in [c, cid(&hex), cid::Cid::new_v1(0x55, *c.hash())] {
        assert!(d.check_ipfs_path(&root, &segs("path")).is_some());
        assert!(d.check_ipfs_path(&root, &segs("path2")).is_none());
        assert!(d.check_ipfs_path(&root, &[]).is_none());
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const KEY_B36: &str = "k51qzi5uqu5dhmzyv3zac033i7rl9hkgczxyl81lwoukda2htteop7d3x0y1mf";
const KEY_B32: &str = "bafzaajaiaejcaotjfs57kieazxny5japcmy5p2pgv2cic77tu6ogghttvurnrufx";
const KEY_PEER: &str = "12D3KooWDkNqEJNmreF3NYYFK1ws7Ra2fuW6cHBTu567SPV3LdYA";

#[test]
fn ipns_keys_match_in_every_spelling() {
    for rule in [KEY_B36, KEY_B32, KEY_PEER] {
        let (d, w) = one(&format!("/ipns/{rule}\n"));
        assert!(w.is_empty(), "{w:?}");
        for name in [KEY_B36, KEY_B32, KEY_PEER, &KEY_B36.to_uppercase()] {
            assert!(d.check_ipns_path(name, &[]).is_some(), "{rule} / {name}");
            assert!(d.check_ipns_path(name, &segs("path")).is_none());
        }
        // A key rule is not a content rule.
        let mh = *crate::ipns::name::IpnsName::parse(KEY_PEER)
            .unwrap()
            .multihash();
        assert!(d.check_cid(&cid::Cid::new_v1(0x72, mh)).is_none());
    }
    let (d, _) = one(&format!("/ipns/{KEY_PEER}/*\n!/ipns/{KEY_B36}/ok\n"));
    assert!(d.check_ipns_path(KEY_B32, &segs("x/y")).is_some());
    assert!(d.check_ipns_path(KEY_B32, &segs("ok")).is_none());
}

#[test]
fn dnslink_domains() {
    let (d, w) =
        one("/ipns/domain.example\n/ipns/domain2.example/path\n/ipns/site.example/private*\n");
    assert!(w.is_empty(), "{w:?}");
    for blocked in [
        "/ipns/domain.example",
        "/ipns/DOMAIN.Example",
        "/ipns/domain.example.",
        "/ipns/domain-example",
        "/ipns/domain2.example/path",
        "/ipns/site.example/private",
        "/ipns/site.example/private2/x",
    ] {
        assert!(d.path_blocked(blocked), "{blocked}");
    }
    for allowed in [
        "/ipns/domainaefa.example",
        "/ipns/domain.example/path",
        "/ipns/domain--example",
        "/ipns/domain2.example",
        "/ipns/domain2.example/path2",
        "/ipns/site.example",
        "/ipns/site.example/public",
    ] {
        assert!(!d.path_blocked(allowed), "{allowed}");
    }
    // Inlined labels undo `--` to `-`.
    let (d, _) = one("/ipns/my-site.example.org\n");
    assert!(d.check_ipns_path("my--site-example-org", &[]).is_some());
}

#[test]
fn ipns_double_hashes() {
    // Legacy: sha256("domain/") (spec vector) and sha256("{libp2p-key CIDv1 base32}/").
    let domain = sha256_hex("bad-domain-name.tld/");
    assert_eq!(
        domain,
        "c555c4de78827ba42527dd3dc5398db38d6c0a8c345a88e0158b2d100f317e50"
    );
    let key = sha256_hex(&format!("{KEY_B32}/"));
    let key_path = sha256_hex(&format!("{KEY_B32}/a/b"));
    // Modern: sha256("/ipns/{domain}") and of the key's base58 multihash.
    let mh = *crate::ipns::name::IpnsName::parse(KEY_PEER)
        .unwrap()
        .multihash();
    let modern_domain = sha256_b58mh("/ipns/other.example");
    let modern_key = sha256_b58mh(&Base::Base58Btc.encode(mh.to_bytes()));
    let (d, w) = one(&format!(
        "//{domain}\n//{key}\n//{key_path}\n//{modern_domain}\n//{modern_key}\n"
    ));
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        d.check_ipns_path("bad-domain-name.tld", &[]).unwrap().line,
        1
    );
    assert_eq!(
        d.check_ipns_path("Bad-Domain-Name.TLD", &[]).unwrap().line,
        1
    );
    assert!(d
        .check_ipns_path("bad-domain-name.tld", &segs("x"))
        .is_none());
    // Both anchors match the key; the last one listed is reported.
    assert_eq!(d.check_ipns_path(KEY_PEER, &[]).unwrap().line, 5);
    assert_eq!(d.check_ipns_path(KEY_B36, &segs("a/b")).unwrap().line, 3);
    assert!(d.check_ipns_path(KEY_B36, &segs("a")).is_none());
    assert_eq!(d.check_ipns_path("other.example", &[]).unwrap().line, 4);
    // The modern key anchor is the multihash's anchor: content with that multihash too.
    assert!(d.check_cid(&cid::Cid::new_v1(0x72, mh)).is_some());
}

#[test]
fn malformed_lines_are_skipped_with_their_line_numbers() {
    let text = format!(
        "version: 1\n---\n# fine\n/ipfs/notacid\n\n/ipfs/{RULE1_V0}\r\n  /ipns/spaced.example  \n//zzzz\n/bare/path\n!\nhello\n/ipfs/bafkqaaa/%ff\n{}\n/ipns/last.example",
        "x".repeat(parse::MAX_LINE)
    );
    let (d, w) = one(&text);
    let lines: Vec<&str> = w.iter().map(|m| m.split(':').nth(1).unwrap()).collect();
    assert_eq!(lines, ["4", "8", "9", "10", "11", "12", "13"], "{w:#?}");
    assert_eq!(d.rules(), 3);
    assert_eq!(d.check_cid(&cid(RULE1_V0)).unwrap().line, 6);
    assert_eq!(d.check_ipns_path("spaced.example", &[]).unwrap().line, 7);
    assert_eq!(
        d.check_ipns_path("last.example", &[]).unwrap().line,
        14,
        "no final newline"
    );
}

#[test]
fn warnings_are_capped_per_list() {
    let text = "garbage\n".repeat(1000);
    let (d, w) = one(&text);
    assert_eq!(d.rules(), 0);
    assert_eq!(w.len(), MAX_WARNINGS_PER_LIST + 1);
    assert!(w.last().unwrap().contains("900 more"), "{:?}", w.last());
}

#[test]
fn handle_swaps_and_counts_generations() {
    let h = DenylistHandle::default();
    assert!(h.current().is_empty());
    assert_eq!(h.generation(), 0);
    let mut rx = h.subscribe();
    let (d, _) = one(&format!("/ipfs/{RULE1_V0}\n"));
    assert_eq!(h.replace(d), 1);
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 1);
    assert!(h.clone().load().check_cid(&cid(RULE1_V1)).is_some());
    assert_eq!(h.generation(), 1);
}

#[test]
fn a_large_double_hashed_list_compiles_and_matches() {
    let n = 20_000;
    let cids: Vec<cid::Cid> = (0..n)
        .map(|i: u32| crate::ipld::cid_v1_sha256(crate::ipld::RAW, &i.to_le_bytes()))
        .collect();
    let mut text = String::from("version: 1\nhints:\n  gateway_status: 410\n---\n");
    for c in &cids {
        text.push_str("//");
        text.push_str(&sha256_hex(&format!("{}/", v1_base32(c))));
        text.push('\n');
    }
    let (d, w) = one(&text);
    assert!(w.is_empty());
    assert_eq!(d.rules(), n as usize);
    assert_eq!(d.legacy.len(), n as usize);
    for (i, c) in cids.iter().enumerate() {
        assert_eq!(d.check_cid(c).unwrap().line, i as u64 + 5);
    }
    let other = crate::ipld::cid_v1_sha256(crate::ipld::RAW, b"not listed");
    assert!(d.check_cid(&other).is_none());
}
