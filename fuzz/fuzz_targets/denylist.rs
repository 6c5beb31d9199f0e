//! The IPIP-383 denylist parser and matcher (`cidgate::denylist`).
//!
//! Properties: compiling any text never panics; checks on the compiled list never panic; a
//! CID a list blocks stays blocked when an unrelated rule is appended after it (rules only
//! ever add to what is blocked, except `!` exceptions).
#![no_main]
use cidgate::denylist::Denylist;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str, Vec<String>)| {
    let (list, name, segments) = input;
    let (compiled, _warnings) = Denylist::compile(&[("fuzz.deny".to_string(), list.to_string())]);
    let probe = cid::Cid::try_from("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
        .expect("a valid CID");
    let blocked = compiled.check_cid(&probe).is_some();
    let _ = compiled.check_ipfs_path(&probe, &segments);
    let _ = compiled.check_ipns_path(name, &segments);
    if let Ok(cid) = cid::Cid::try_from(name) {
        let _ = compiled.check_cid(&cid);
        let _ = compiled.check_ipfs_path(&cid, &segments);
    }
    // An unrelated rule appended after every other one changes nothing about the probe.
    if !list.contains('!') {
        let more = format!("{list}\n/ipfs/bafkqaaa\n");
        let (again, _) = Denylist::compile(&[("fuzz.deny".to_string(), more)]);
        assert_eq!(again.check_cid(&probe).is_some(), blocked, "{list:?}");
    }
});
