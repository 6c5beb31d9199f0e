//! Signs IPNS records for the tests (ipfs/specs `ipns/ipns-record.md`, V2 only): an Ed25519 key
//! from a seed, its name (the key inlined in an identity multihash), and records with the value,
//! sequence and TTL a test needs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use ipld_core::ipld::Ipld;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// A signing key and its IPNS name.
pub struct Key {
    pair: Ed25519KeyPair,
    /// The name's base36 CID (`k51…`).
    pub name: String,
}

/// The libp2p `PublicKey` protobuf of an Ed25519 key: Type = 1, Data = the 32 bytes.
fn libp2p_public_key(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0x08, 0x01, 0x12, raw.len() as u8];
    out.extend_from_slice(raw);
    out
}

impl Key {
    /// The key whose seed is 32 copies of `seed`.
    pub fn new(seed: u8) -> Key {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap();
        let public = libp2p_public_key(pair.public_key().as_ref());
        let mh = multihash::Multihash::<64>::wrap(0x00, &public).unwrap();
        let name = cidgate::ipns::IpnsName::from_multihash(mh)
            .unwrap()
            .to_cid_string();
        Key { pair, name }
    }

    /// A V2 record pointing at `value`, valid for years, with `sequence` and `ttl`.
    pub fn record(&self, value: &str, sequence: u64, ttl: Duration) -> Bytes {
        self.record_valid_to(value, sequence, ttl, "2099-01-01T00:00:00.000000000Z")
    }

    /// Like [`Key::record`], valid until `until` (its end of life, past which no one may use it).
    pub fn record_until(
        &self,
        value: &str,
        sequence: u64,
        ttl: Duration,
        until: std::time::SystemTime,
    ) -> Bytes {
        let validity = humantime::format_rfc3339_nanos(until).to_string();
        self.record_valid_to(value, sequence, ttl, &validity)
    }

    fn record_valid_to(&self, value: &str, sequence: u64, ttl: Duration, validity: &str) -> Bytes {
        let mut fields = BTreeMap::new();
        fields.insert("Value".to_string(), Ipld::Bytes(value.as_bytes().to_vec()));
        fields.insert(
            "Validity".to_string(),
            Ipld::Bytes(validity.as_bytes().to_vec()),
        );
        fields.insert("ValidityType".to_string(), Ipld::Integer(0));
        fields.insert("Sequence".to_string(), Ipld::Integer(i128::from(sequence)));
        fields.insert("TTL".to_string(), Ipld::Integer(ttl.as_nanos() as i128));
        let data = serde_ipld_dagcbor::to_vec(&Ipld::Map(fields)).unwrap();
        let mut signed = b"ipns-signature:".to_vec();
        signed.extend_from_slice(&data);
        let signature = self.pair.sign(&signed);
        let mut entry = Vec::new();
        put_bytes(&mut entry, 8, signature.as_ref());
        put_bytes(&mut entry, 9, &data);
        Bytes::from(entry)
    }
}

/// A length-delimited protobuf field.
fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The `/ipfs/` path of an identity CID holding `text` (the content travels in the CID).
pub fn inline_path(text: &str) -> String {
    let mh = multihash::Multihash::<64>::wrap(0x00, text.as_bytes()).unwrap();
    format!("/ipfs/{}", cid::Cid::new_v1(0x55, mh))
}
