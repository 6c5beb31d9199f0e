//! dag-cbor / dag-json / cbor / json decoding and link walking (`cidgate::ipld::codec`).
//!
//! Input: one byte choosing the codec, then the block. Properties: no panic (deep nesting
//! included); `links` agrees with `collect_links` over `decode_ipld`; dag-cbor and dag-json
//! documents re-encode to documents that decode to the same data; walking a document along
//! paths made of its own keys and indexes ends where the document says.
#![no_main]

use bytes::Bytes;
use cidgate::ipld::codec::{collect_links, decode_ipld, links, walk_document, DocStep};
use cidgate::ipld::{cid_v1_sha256, CBOR, DAG_CBOR, DAG_JSON, DAG_PB, JSON, RAW};
use ipld_core::ipld::Ipld;
use libfuzzer_sys::fuzz_target;

const CODECS: [u64; 6] = [DAG_CBOR, DAG_JSON, CBOR, JSON, DAG_PB, RAW];

fn has_float(ipld: &Ipld) -> bool {
    match ipld {
        Ipld::Float(_) => true,
        Ipld::List(l) => l.iter().any(has_float),
        Ipld::Map(m) => m.values().any(has_float),
        _ => false,
    }
}

/// A map with a "/" key among others. serde_ipld_dagjson 0.2 decodes `{"a":1,"/":[]}` but its
/// encoder sorts "/" first, and `{"/":[],"a":1}` is refused by its decoder (it reads the first
/// key "/" as the start of a link or bytes): no round trip. Not cidgate's code, so the
/// property skips such documents (found by this target; see docs/reliability.md).
fn has_slash_key(ipld: &Ipld) -> bool {
    match ipld {
        Ipld::List(l) => l.iter().any(has_slash_key),
        Ipld::Map(m) => m.contains_key("/") || m.values().any(has_slash_key),
        _ => false,
    }
}

/// Paths into `doc` that follow its own keys and indexes, one per depth (up to 8).
fn own_paths(doc: &Ipld) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    let mut node = doc;
    for _ in 0..8 {
        let next = match node {
            Ipld::Map(m) => m.iter().next_back().map(|(k, v)| (k.clone(), v)),
            Ipld::List(l) => l.last().map(|v| ((l.len() - 1).to_string(), v)),
            _ => None,
        };
        let Some((seg, v)) = next else { break };
        path.push(seg);
        out.push(path.clone());
        node = v;
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, data)) = input.split_first() else {
        return;
    };
    let codec = CODECS[usize::from(sel) % CODECS.len()];
    let bytes = Bytes::copy_from_slice(data);
    let cid = cid_v1_sha256(codec, data);
    let found = links(&cid, &bytes);
    let Ok(doc) = decode_ipld(codec, data) else {
        if matches!(codec, DAG_CBOR | DAG_JSON) {
            assert!(found.is_err(), "links of a document that does not decode");
        }
        return;
    };
    if matches!(codec, DAG_CBOR | DAG_JSON) {
        let mut want = Vec::new();
        collect_links(&doc, &mut want);
        assert_eq!(found.expect("links of a decodable document"), want);
    }

    // Re-encoding in the block's own codec gives back the same data model.
    if !has_float(&doc) {
        match codec {
            DAG_CBOR => {
                let re =
                    serde_ipld_dagcbor::to_vec(&doc).expect("dag-cbor encodes what it decoded");
                let again: Ipld =
                    serde_ipld_dagcbor::from_slice(&re).expect("re-encoded dag-cbor decodes");
                assert_eq!(again, doc, "dag-cbor round trip");
            }
            DAG_JSON if !has_slash_key(&doc) => {
                let re =
                    serde_ipld_dagjson::to_vec(&doc).expect("dag-json encodes what it decoded");
                let again: Ipld =
                    serde_ipld_dagjson::from_slice(&re).expect("re-encoded dag-json decodes");
                assert_eq!(again, doc, "dag-json round trip");
            }
            _ => {}
        }
    }

    let probes: [&[&str]; 4] = [&[], &["0"], &["a", "b"], &["/"]];
    for p in probes {
        let segs: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        let _ = walk_document(&doc, &segs);
    }
    for path in own_paths(&doc) {
        match walk_document(&doc, &path) {
            DocStep::Link { consumed, .. } => assert!(consumed >= 1 && consumed <= path.len()),
            DocStep::Missing { index } => panic!("own path {path:?} missing at {index}"),
            DocStep::Value => {}
        }
    }
});
