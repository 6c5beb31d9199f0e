//! dag-pb, UnixFS and HAMT decoding (`cidgate::ipld::{dagpb, unixfs, hamt}`), and HAMT shard
//! lookups driven with arbitrary nodes and names.
//!
//! Properties: no panic; canonical dag-pb round trip (`decode(encode(n)) == n`); the UnixFS
//! `Data` message round-trips; a file's size never overflows; a HAMT lookup only ever returns a
//! link whose name is the bucket prefix (descend) or the prefix followed by the name (found).
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use cidgate::ipld::dagpb::{PbLink, PbNode};
use cidgate::ipld::hamt::{self, ShardStep};
use cidgate::ipld::unixfs::{Data, FsNode};
use cidgate::ipld::{cid_v1_sha256, DAG_PB, RAW};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// A shard made of arbitrary link names (the odd-first-byte mode).
#[derive(Arbitrary, Debug)]
struct Shard<'a> {
    fanout: u64,
    hash_type: u64,
    names: Vec<&'a str>,
    name: &'a str,
    depth: u32,
}

/// Names every decoded shard is asked for (the fuzzer learns to write links that match them).
const NAMES: [&str; 6] = ["", "a", "index.html", "ascii.txt", "\u{1F30D}.txt", "x/y"];

fn check_step(links: &[PbLink], fanout: u64, hash_type: u64, name: &str, depth: u32) {
    let Ok(step) = hamt::step(links, fanout, hash_type, name, depth) else {
        return;
    };
    let width = hamt::prefix_len(fanout);
    match step {
        ShardStep::Found(l) => {
            assert!(l.name_str().len() > width);
            assert_eq!(&l.name_str()[width..], name);
            assert_eq!(
                hamt::entry_name(l.name_str(), fanout),
                Some(name).filter(|n| !n.is_empty())
            );
        }
        ShardStep::Descend(l) => {
            assert_eq!(l.name_str().len(), width);
            assert_eq!(hamt::entry_name(l.name_str(), fanout), None);
        }
        ShardStep::Absent => {}
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        block(rest, u32::from(mode / 2 % 4));
    } else if let Ok(shard) = Shard::arbitrary_take_rest(arbitrary::Unstructured::new(rest)) {
        let cid = cid_v1_sha256(RAW, b"");
        let links: Vec<PbLink> = shard
            .names
            .into_iter()
            .map(|n| PbLink {
                cid,
                name: Some(n.to_string()),
                tsize: None,
            })
            .collect();
        check_step(
            &links,
            shard.fanout,
            shard.hash_type,
            shard.name,
            shard.depth,
        );
        check_step(
            &links,
            shard.fanout,
            hamt::MURMUR3_X64_64,
            shard.name,
            shard.depth,
        );
        for l in &links {
            let _ = hamt::entry_name(l.name_str(), shard.fanout);
        }
    }
});

/// Decodes `block` every way cidgate does; shards are asked for each of [`NAMES`] at `depth`.
fn block(block: &[u8], depth: u32) {
    let block = Bytes::copy_from_slice(block);
    let _ = FsNode::decode(RAW, &block);
    let Ok(node) = PbNode::decode(&block) else {
        assert!(FsNode::decode(DAG_PB, &block).is_err());
        return;
    };
    let encoded = node.encode();
    let again = PbNode::decode(&encoded).expect("canonical dag-pb decodes");
    assert_eq!(again, node, "dag-pb round trip");
    assert_eq!(again.encode(), encoded, "canonical encoding is stable");
    if let Some(raw) = &node.data {
        if let Ok(d) = Data::decode(raw.clone()) {
            let re = Data::decode(d.encode_to_vec().as_slice()).expect("UnixFS Data re-decodes");
            assert_eq!(re, d, "UnixFS Data round trip");
        }
    }
    match FsNode::decode_pb(node) {
        Ok(FsNode::HamtShard {
            links,
            fanout,
            hash_type,
        }) => {
            for l in &links {
                let _ = hamt::entry_name(l.name_str(), fanout);
            }
            for name in NAMES {
                check_step(&links, fanout, hash_type, name, depth);
                check_step(&links, fanout, hamt::MURMUR3_X64_64, name, depth);
            }
            // And the names the shard itself holds: each must be found, or the lookup
            // follows another bucket.
            for l in &links {
                if let Some(entry) = hamt::entry_name(l.name_str(), fanout) {
                    check_step(&links, fanout, hamt::MURMUR3_X64_64, entry, depth);
                }
            }
        }
        Ok(FsNode::File {
            data,
            size,
            children,
        }) => {
            let _ = (data.len(), size, children.len());
        }
        Ok(_) | Err(_) => {}
    }
}
