//! IPNS names (`cidgate::ipns::name`) and signed records (`cidgate::ipns::record::verify`).
//!
//! The first byte picks a mode:
//! - 0: the rest is a record, verified against each fixture name and against the name of the
//!   public key it carries (so mutated records get past the key check);
//! - 1: the rest is a name as text, parsed and printed back;
//! - 2: the rest is the record's signed DAG-CBOR `data` (after one flags byte): the target signs
//!   it with a fixed Ed25519 key, so verification runs all the steps after the signature
//!   (V1 fields, validity type, RFC 3339 EOL, value, sequence, TTL).
//!
//! Properties: no panic; a parsed name prints to a canonical text that parses to the same name;
//! an accepted record is valid at `now`, points at a content path, and its `max_age` is within
//! both its TTL and its time left; a record signed by another key is never accepted.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cidgate::ipns::record::verify;
use cidgate::ipns::IpnsName;
use ipld_core::ipld::Ipld;
use libfuzzer_sys::fuzz_target;
use multihash::Multihash;
use prost::Message;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// The `IpnsEntry` protobuf, as the record module reads it.
#[derive(Clone, PartialEq, Message)]
struct Entry {
    #[prost(bytes = "vec", optional, tag = "1")]
    value: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    signature_v1: Option<Vec<u8>>,
    #[prost(int32, optional, tag = "3")]
    validity_type: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    validity: Option<Vec<u8>>,
    #[prost(uint64, optional, tag = "5")]
    sequence: Option<u64>,
    #[prost(uint64, optional, tag = "6")]
    ttl: Option<u64>,
    #[prost(bytes = "vec", optional, tag = "7")]
    pub_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "8")]
    signature_v2: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "9")]
    data: Option<Vec<u8>>,
}

/// Names of the conformance fixtures' records.
const NAMES: [&str; 6] = [
    "k51qzi5uqu5dlkw8pxuw9qmqayfdeh4kfebhmreauqdc6a7c3y7d5i9fi8mk9w",
    "k51qzi5uqu5dit2ku9mutlfgwyz8u730on38kd10m97m36bjt66my99hb6103f",
    "k51qzi5uqu5djokp3m1keo36hoxtd6u3a1d2rg1camf6al7p3huy63dojlm57c",
    "k51qzi5uqu5dghjous0agrwavl8vzl64xckoqzwqeqwudfr74kfd11zcyk3b7l",
    "12D3KooWLQzUv2FHWGVPXTXSZpdHs7oHbXub2G5WC8Tx4NQhyd2d",
    "QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3",
];

/// 2026-01-01T00:00:00Z: every fixture is valid then.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

fn name_of_key(key: &[u8], inline: bool) -> Option<IpnsName> {
    let mh = if inline && key.len() <= 42 {
        Multihash::<64>::wrap(0x00, key).ok()?
    } else {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(key);
        Multihash::<64>::wrap(0x12, &digest).ok()?
    };
    IpnsName::from_multihash(mh).ok()
}

fn check_accepted(name: &IpnsName, bytes: &[u8], now: SystemTime) -> bool {
    match verify(name, bytes, now) {
        Ok(r) => {
            assert!(r.validity > now, "accepted an expired record");
            assert!(
                r.value.starts_with("/ipfs/") || r.value.starts_with("/ipns/"),
                "{:?}",
                r.value
            );
            if let Some(age) = r.max_age(now) {
                assert!(Some(age) <= r.ttl);
                assert!(age <= r.validity.duration_since(now).unwrap_or_default());
            }
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    }
}

fn libp2p_ed25519_key(public: &[u8]) -> Vec<u8> {
    let mut k = vec![0x08, 0x01, 0x12, public.len() as u8];
    k.extend_from_slice(public);
    k
}

fn signed(flags: u8, data: &[u8]) {
    let Ok(pair) = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]) else {
        return;
    };
    let key = libp2p_ed25519_key(pair.public_key().as_ref());
    let inline = flags & 1 != 0;
    let Some(name) = name_of_key(&key, inline) else {
        return;
    };
    let mut message = b"ipns-signature:".to_vec();
    message.extend_from_slice(data);
    let mut entry = Entry {
        data: Some(data.to_vec()),
        signature_v2: Some(pair.sign(&message).as_ref().to_vec()),
        // An inlined key need not be repeated in the record.
        pub_key: (!inline || flags & 2 != 0).then(|| key.clone()),
        ..Default::default()
    };
    if flags & 4 != 0 {
        // V1 copies of the signed fields, as a V1+V2 record carries them.
        if let Ok(Ipld::Map(m)) = serde_ipld_dagcbor::from_slice::<Ipld>(data) {
            let bytes = |k: &str| match m.get(k) {
                Some(Ipld::Bytes(b)) => Some(b.clone()),
                _ => None,
            };
            let int = |k: &str| match m.get(k) {
                Some(Ipld::Integer(i)) => Some(*i),
                _ => None,
            };
            entry.value = bytes("Value");
            entry.validity = bytes("Validity");
            entry.validity_type = int("ValidityType").and_then(|i| i32::try_from(i).ok());
            entry.sequence = int("Sequence").and_then(|i| u64::try_from(i).ok());
            entry.ttl = int("TTL").and_then(|i| u64::try_from(i).ok());
            entry.signature_v1 = Some(vec![1; 64]);
        }
    }
    let bytes = entry.encode_to_vec();
    let secs = u64::from(flags >> 4) * 20 * 365 * 86_400;
    check_accepted(&name, &bytes, now());
    check_accepted(&name, &bytes, UNIX_EPOCH + Duration::from_secs(secs));
    // The same record presented for another key's name is refused.
    let other = Ed25519KeyPair::from_seed_unchecked(&[8u8; 32])
        .ok()
        .and_then(|p| name_of_key(&libp2p_ed25519_key(p.public_key().as_ref()), inline));
    if let Some(other) = other {
        assert!(
            verify(&other, &bytes, now()).is_err(),
            "accepted for another key's name"
        );
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            for n in NAMES {
                if let Ok(name) = IpnsName::parse(n) {
                    check_accepted(&name, rest, now());
                }
            }
            if let Ok(entry) = Entry::decode(rest) {
                if let Some(key) = entry.pub_key.as_deref() {
                    for inline in [true, false] {
                        if let Some(name) = name_of_key(key, inline) {
                            check_accepted(&name, rest, now());
                        }
                    }
                }
            }
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(name) = IpnsName::parse(text) {
                let canonical = name.to_cid_string();
                assert_eq!(IpnsName::parse(&canonical), Ok(name), "{canonical}");
                let peer = name.to_peer_id_string();
                assert_eq!(IpnsName::parse(&peer), Ok(name), "{peer}");
                let _ = name.inline_public_key();
            }
            let _ = cidgate::ipns::name_from_file_name(text);
            // The label form is unambiguous for DNS names (no label starts or ends with '-').
            let dns = text
                .split('.')
                .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
            if dns {
                let label = cidgate::ipns::dns_label_of_domain(text);
                assert_eq!(
                    cidgate::ipns::domain_of_dns_label(&label),
                    text,
                    "DNS label round trip"
                );
            }
        }
        _ => {
            let Some((&flags, data)) = rest.split_first() else {
                return;
            };
            signed(flags, data);
        }
    }
});
