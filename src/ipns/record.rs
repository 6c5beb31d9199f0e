//! Signed IPNS records (ipfs/specs `ipns/ipns-record.md`): parsing and verification, without
//! I/O.
//!
//! A record is an `IpnsEntry` protobuf whose `data` field holds a DAG-CBOR map (`Value`,
//! `Validity`, `ValidityType`, `Sequence`, `TTL`) signed with the name's key as
//! `signatureV2 = sign("ipns-signature:" || data)`. Only that CBOR is trusted. The protobuf's
//! own copies of the fields and `signatureV1` are the deprecated V1 format: the V1 signature is
//! never checked (it signs only value and validity, so it can be replayed onto other fields),
//! and when V1 fields are present they must equal the CBOR ones, so a legacy client reading
//! them sees what a V2 client sees (IPIP-428). Verification follows the spec's steps in order
//! and stops at the first failure; where the spec is silent it does what ipfs/boxo does.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ipld_core::ipld::Ipld;
use prost::Message;
use ring::signature::{UnparsedPublicKey, ED25519, RSA_PKCS1_2048_8192_SHA256};

use super::name::IpnsName;

/// Largest record accepted (spec: 10 KiB).
pub const MAX_RECORD_BYTES: usize = 10 * 1024;

/// What a V2 signature signs before the CBOR bytes, so the signature cannot be taken for one
/// over some other message of the same key.
const SIGNATURE_V2_PREFIX: &[u8] = b"ipns-signature:";

/// `ValidityType` EOL: `Validity` is an RFC 3339 expiry time. The only type defined.
const VALIDITY_EOL: i128 = 0;

/// libp2p `KeyType` values (peer-ids spec).
const KEY_RSA: i32 = 0;
const KEY_ED25519: i32 = 1;

/// Length of an Ed25519 public key.
const ED25519_KEY_LEN: usize = 32;

/// DER tags of the SubjectPublicKeyInfo walk.
const DER_SEQUENCE: u8 = 0x30;
const DER_OID: u8 = 0x06;
const DER_BIT_STRING: u8 = 0x03;
/// rsaEncryption, 1.2.840.113549.1.1.1, and its mandatory NULL parameters.
const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const DER_NULL: &[u8] = &[0x05, 0x00];

/// Why a record is not a valid record of a name.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record is larger than [`MAX_RECORD_BYTES`].
    #[error("record is {size} bytes, more than the {max} allowed", max = MAX_RECORD_BYTES)]
    TooLarge {
        /// Size of the record in bytes.
        size: usize,
    },
    /// The bytes are not an `IpnsEntry` protobuf.
    #[error("malformed record protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// No `signatureV2`: a V1-only record, which is never trusted (IPIP-428).
    #[error("record has no signatureV2 (V1-only records are not accepted)")]
    MissingSignatureV2,
    /// No `data`: the signed DAG-CBOR document is missing.
    #[error("record has no DAG-CBOR data")]
    MissingData,
    /// The record carries no public key and the name does not inline one.
    #[error("record has no public key and the name does not embed one")]
    NoPublicKey,
    /// The record's `pubKey` does not hash to the name.
    #[error("the record's public key does not match the name")]
    KeyMismatch,
    /// The public key is not a well-formed libp2p key of its type.
    #[error("malformed public key: {0}")]
    BadPublicKey(String),
    /// The key type is one cidgate does not verify (Secp256k1, ECDSA or unknown).
    #[error("unsupported key type {0} (only RSA and Ed25519 are verified)")]
    UnsupportedKeyType(i32),
    /// `data` is not a DAG-CBOR map.
    #[error("malformed record data: {0}")]
    BadCbor(String),
    /// `signatureV2` does not verify against the key.
    #[error("signatureV2 does not verify")]
    SignatureInvalid,
    /// A V1 protobuf field differs from its signed CBOR counterpart.
    #[error("V1 field {0} does not match the signed data")]
    V1Mismatch(&'static str),
    /// A CBOR field is missing or has the wrong type.
    #[error("record data field {field}: {problem}")]
    BadField {
        /// The CBOR key.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// `ValidityType` is not EOL (0), the only type defined.
    #[error("unsupported validity type {0}")]
    UnsupportedValidityType(i128),
    /// `Validity` is not an RFC 3339 time.
    #[error("validity {0:?} is not an RFC 3339 time")]
    BadValidity(String),
    /// The record's EOL has passed.
    #[error("record expired at {validity}")]
    Expired {
        /// The EOL as written in the record.
        validity: String,
        /// The EOL.
        eol: SystemTime,
    },
    /// `Value` is not an `/ipfs/{cid}…` or `/ipns/{name}…` path.
    #[error("value {0:?} is not a content path")]
    ValueNotPath(String),
}

/// A verified record's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpnsRecord {
    /// The content path the name points at, e.g. `/ipfs/bafy…/a` or `/ipns/{name}`.
    pub value: String,
    /// Version of the record: a higher sequence replaces a lower one.
    pub sequence: u64,
    /// How long resolvers may cache the answer; `None` when the record has no `TTL`. A negative
    /// TTL (possible in CBOR) reads as zero.
    pub ttl: Option<Duration>,
    /// The EOL: the record is invalid from this time on.
    pub validity: SystemTime,
}

impl IpnsRecord {
    /// The TTL bounded by the time left before the EOL (as boxo does for `Cache-Control`), so
    /// no cache keeps the answer past the point the record stops verifying; `None` when the
    /// record has no TTL.
    pub fn max_age(&self, now: SystemTime) -> Option<Duration> {
        let left = self.validity.duration_since(now).unwrap_or(Duration::ZERO);
        self.ttl.map(|ttl| ttl.min(left))
    }
}

/// The `IpnsEntry` protobuf. Field 3 is an enum on the wire, a varint like `int32`.
#[derive(Clone, PartialEq, Message)]
struct RawEntry {
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

/// The libp2p `PublicKey` protobuf; both fields are `required` in its proto2 schema.
#[derive(Clone, PartialEq, Message)]
struct RawPublicKey {
    #[prost(int32, optional, tag = "1")]
    key_type: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "2")]
    data: Option<Vec<u8>>,
}

/// A public key in the form ring verifies with.
enum PublicKey {
    /// The 32-byte key.
    Ed25519(Vec<u8>),
    /// PKCS#1 `RSAPublicKey` DER, unwrapped from libp2p's SubjectPublicKeyInfo.
    Rsa(Vec<u8>),
}

/// Parses and verifies `bytes` as the record of `name` at time `now`, following the spec's validation steps (V2 signature over "ipns-signature:" || data; public key from the record's pubKey field (must hash to the name) or inlined in the name; CBOR data fields authoritative; V1 fields must not contradict data where the spec or boxo requires; EOL validity in RFC3339 with nanoseconds; reject expired).
pub fn verify(name: &IpnsName, bytes: &[u8], now: SystemTime) -> Result<IpnsRecord, RecordError> {
    // Step 1: the size limit comes before any parsing, so the limit bounds the work.
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge { size: bytes.len() });
    }
    let entry = RawEntry::decode(bytes)?;

    // Step 2.
    let signature = entry
        .signature_v2
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or(RecordError::MissingSignatureV2)?;
    let data = entry
        .data
        .as_deref()
        .filter(|d| !d.is_empty())
        .ok_or(RecordError::MissingData)?;

    // Step 3: an embedded key is only trusted once the name is shown to be its hash.
    let key_bytes = match entry.pub_key.as_deref().filter(|k| !k.is_empty()) {
        Some(key) if name.is_name_of(key) => key,
        Some(_) => return Err(RecordError::KeyMismatch),
        None => name.inline_public_key().ok_or(RecordError::NoPublicKey)?,
    };
    let key = decode_public_key(key_bytes)?;

    // Step 4. The decoder refuses duplicate keys, so every reader sees the same map.
    let fields = match serde_ipld_dagcbor::from_slice::<Ipld>(data) {
        Ok(Ipld::Map(m)) => m,
        Ok(_) => return Err(RecordError::BadCbor("not a map".into())),
        Err(e) => return Err(RecordError::BadCbor(e.to_string())),
    };

    // Steps 5 and 6.
    let mut message = Vec::with_capacity(SIGNATURE_V2_PREFIX.len() + data.len());
    message.extend_from_slice(SIGNATURE_V2_PREFIX);
    message.extend_from_slice(data);
    if !signature_verifies(&key, &message, signature) {
        return Err(RecordError::SignatureInvalid);
    }

    // Step 7: boxo compares all five fields, reading absent protobuf fields as their defaults.
    let has_v1 = entry.signature_v1.as_deref().is_some_and(|s| !s.is_empty())
        || entry.value.as_deref().is_some_and(|v| !v.is_empty());
    if has_v1 {
        check_v1(&entry, &fields)?;
    }

    // Step 8.
    let validity_type = int_field(&fields, "ValidityType")?;
    if validity_type != VALIDITY_EOL {
        return Err(RecordError::UnsupportedValidityType(validity_type));
    }
    let validity_bytes = bytes_field(&fields, "Validity")?;
    let validity_text = String::from_utf8_lossy(validity_bytes).into_owned();
    let eol = std::str::from_utf8(validity_bytes)
        .ok()
        .and_then(parse_rfc3339)
        .ok_or_else(|| RecordError::BadValidity(validity_text.clone()))?;
    // The spec wants the EOL "bigger than the current time": at the EOL it is already expired.
    if eol <= now {
        return Err(RecordError::Expired {
            validity: validity_text,
            eol,
        });
    }

    let value_bytes = bytes_field(&fields, "Value")?;
    let value = String::from_utf8(value_bytes.to_vec()).map_err(|_| {
        RecordError::ValueNotPath(String::from_utf8_lossy(value_bytes).into_owned())
    })?;
    if !is_content_path(&value) {
        return Err(RecordError::ValueNotPath(value));
    }
    let sequence =
        u64::try_from(int_field(&fields, "Sequence")?).map_err(|_| RecordError::BadField {
            field: "Sequence",
            problem: "not an unsigned 64-bit integer",
        })?;
    let ttl = match fields.get("TTL") {
        None => None,
        // Negative TTLs exist in the wild (CBOR integers are signed); boxo serves them as 0.
        Some(Ipld::Integer(n)) => Some(Duration::from_nanos(
            u64::try_from((*n).max(0)).unwrap_or(u64::MAX),
        )),
        Some(_) => {
            return Err(RecordError::BadField {
                field: "TTL",
                problem: "not an integer",
            })
        }
    };

    Ok(IpnsRecord {
        value,
        sequence,
        ttl,
        validity: eol,
    })
}

/// Step 7 of the spec: every V1 protobuf field equals the signed CBOR one.
fn check_v1(entry: &RawEntry, fields: &BTreeMap<String, Ipld>) -> Result<(), RecordError> {
    let same_bytes = |field: &'static str, pb: Option<&[u8]>| -> Result<(), RecordError> {
        if bytes_field(fields, field)? == pb.unwrap_or_default() {
            Ok(())
        } else {
            Err(RecordError::V1Mismatch(field))
        }
    };
    let same_int = |field: &'static str, pb: i128| -> Result<(), RecordError> {
        if int_field(fields, field)? == pb {
            Ok(())
        } else {
            Err(RecordError::V1Mismatch(field))
        }
    };
    same_bytes("Value", entry.value.as_deref())?;
    same_bytes("Validity", entry.validity.as_deref())?;
    same_int("ValidityType", i128::from(entry.validity_type.unwrap_or(0)))?;
    same_int("Sequence", i128::from(entry.sequence.unwrap_or(0)))?;
    same_int("TTL", i128::from(entry.ttl.unwrap_or(0)))?;
    Ok(())
}

/// A CBOR field that must be a byte string (Value and Validity are bytes, not text).
fn bytes_field<'a>(
    fields: &'a BTreeMap<String, Ipld>,
    field: &'static str,
) -> Result<&'a [u8], RecordError> {
    match fields.get(field) {
        Some(Ipld::Bytes(b)) => Ok(b.as_slice()),
        Some(_) => Err(RecordError::BadField {
            field,
            problem: "not a byte string",
        }),
        None => Err(RecordError::BadField {
            field,
            problem: "missing",
        }),
    }
}

/// A CBOR field that must be an integer.
fn int_field(fields: &BTreeMap<String, Ipld>, field: &'static str) -> Result<i128, RecordError> {
    match fields.get(field) {
        Some(Ipld::Integer(n)) => Ok(*n),
        Some(_) => Err(RecordError::BadField {
            field,
            problem: "not an integer",
        }),
        None => Err(RecordError::BadField {
            field,
            problem: "missing",
        }),
    }
}

/// Decodes a libp2p `PublicKey` protobuf into a key ring can verify with.
fn decode_public_key(bytes: &[u8]) -> Result<PublicKey, RecordError> {
    let raw = RawPublicKey::decode(bytes).map_err(|e| RecordError::BadPublicKey(e.to_string()))?;
    let (Some(key_type), Some(data)) = (raw.key_type, raw.data) else {
        return Err(RecordError::BadPublicKey("missing Type or Data".into()));
    };
    match key_type {
        KEY_ED25519 if data.len() == ED25519_KEY_LEN => Ok(PublicKey::Ed25519(data)),
        KEY_ED25519 => Err(RecordError::BadPublicKey(format!(
            "Ed25519 key of {} bytes",
            data.len()
        ))),
        KEY_RSA => pkcs1_of_spki(&data)
            .map(|k| PublicKey::Rsa(k.to_vec()))
            .ok_or_else(|| {
                RecordError::BadPublicKey("RSA key is not a PKIX SubjectPublicKeyInfo".into())
            }),
        other => Err(RecordError::UnsupportedKeyType(other)),
    }
}

/// Whether `signature` is `key`'s signature of `message`. RSA is PKCS#1 v1.5 over SHA-256 with
/// 2048- to 8192-bit moduli: go-libp2p refuses smaller keys too.
fn signature_verifies(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    let result = match key {
        PublicKey::Ed25519(k) => UnparsedPublicKey::new(&ED25519, k).verify(message, signature),
        PublicKey::Rsa(k) => {
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, k).verify(message, signature)
        }
    };
    result.is_ok()
}

/// The PKCS#1 `RSAPublicKey` inside a DER SubjectPublicKeyInfo:
/// `SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING { 0 unused bits, RSAPublicKey } }`.
/// ring checks the inner key itself.
fn pkcs1_of_spki(spki: &[u8]) -> Option<&[u8]> {
    let (tag, body, after) = der_element(spki)?;
    if tag != DER_SEQUENCE || !after.is_empty() {
        return None;
    }
    let (tag, algorithm, rest) = der_element(body)?;
    if tag != DER_SEQUENCE {
        return None;
    }
    let (tag, oid, parameters) = der_element(algorithm)?;
    // Go's x509 parser, which produced and reads these keys, insists on the NULL parameters.
    if tag != DER_OID || oid != RSA_ENCRYPTION_OID || parameters != DER_NULL {
        return None;
    }
    let (tag, bits, after) = der_element(rest)?;
    if tag != DER_BIT_STRING || !after.is_empty() {
        return None;
    }
    match bits.split_first()? {
        (&0, key) => Some(key),
        _ => None,
    }
}

/// One DER element with a single-byte tag: its tag, its contents and the bytes after it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // 0x80 is BER's indefinite length; more than four length bytes cannot fit a record.
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(count);
        // DER lengths are minimal: no leading zero byte, no long form for short lengths.
        if len_bytes[0] == 0 {
            return None;
        }
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len < 0x80 {
            return None;
        }
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}

/// Whether a record value is a content path boxo would accept: `/ipfs/{cid}[/…]` or
/// `/ipns/{name}[/…]` (the name may be a DNSLink domain, so it is not checked further).
fn is_content_path(value: &str) -> bool {
    let (ipfs, rest) = if let Some(rest) = value.strip_prefix("/ipfs/") {
        (true, rest)
    } else if let Some(rest) = value.strip_prefix("/ipns/") {
        (false, rest)
    } else {
        return false;
    };
    let root = rest.split('/').next().unwrap_or_default();
    !root.is_empty() && (!ipfs || root.parse::<crate::ipld::Cid>().is_ok())
}

/// Parses an RFC 3339 time (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, what boxo writes with
/// Go's `time.RFC3339Nano`).
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use multihash::Multihash;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use std::time::UNIX_EPOCH;

    const FIXTURES: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/conformance/fixtures"
    );

    /// 2026-01-01T00:00:00Z: every fixture is valid then (their EOLs are in 2123-2126).
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn fixture(path: &str) -> Vec<u8> {
        let full = format!("{FIXTURES}/{path}");
        std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
    }

    /// Verifies a fixture against the name its file name starts with.
    fn verify_fixture(path: &str) -> Result<IpnsRecord, RecordError> {
        let file = path.rsplit('/').next().unwrap();
        let name = file
            .strip_suffix(".ipns-record")
            .unwrap()
            .split('_')
            .next()
            .unwrap();
        verify(&IpnsName::parse(name).unwrap(), &fixture(path), now())
    }

    const HUNDRED_YEARS: Duration = Duration::from_secs(3_155_760_000);
    const HALF_HOUR: Duration = Duration::from_secs(1800);
    /// 2123-08-14T12:17:03.694052Z, the EOL of the ipns_records vectors.
    fn vectors_eol() -> SystemTime {
        at(4_847_689_023) + Duration::from_nanos(694_052_000)
    }

    #[test]
    fn spec_vectors_that_must_verify() {
        let cases = [
            (
                "ipns_records/k51qzi5uqu5dlkw8pxuw9qmqayfdeh4kfebhmreauqdc6a7c3y7d5i9fi8mk9w_v1-v2.ipns-record",
                "/ipfs/bafkqaddwgevxmmraojswg33smq",
            ),
            (
                "ipns_records/k51qzi5uqu5dilgf7gorsh9vcqqq4myo6jd4zmqkuy9pxyxi5fua3uf7axph4y_v1-v2-broken-signature-v1.ipns-record",
                "/ipfs/bafkqahtwgevxmmrao5uxi2bamjzg623fnyqhg2lhnzqxi5lsmuqhmmi",
            ),
            (
                "ipns_records/k51qzi5uqu5dit2ku9mutlfgwyz8u730on38kd10m97m36bjt66my99hb6103f_v2.ipns-record",
                "/ipfs/bafkqadtwgiww63tmpeqhezldn5zgi",
            ),
        ];
        for (path, value) in cases {
            let record = verify_fixture(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(
                record,
                IpnsRecord {
                    value: value.into(),
                    sequence: 0,
                    ttl: Some(HALF_HOUR),
                    validity: vectors_eol(),
                },
                "{path}"
            );
        }
    }

    #[test]
    fn v1_only_record_is_refused() {
        // Its V1 signature is valid, but nothing signs a CBOR document.
        let e = verify_fixture(
            "ipns_records/k51qzi5uqu5dm4tm0wt8srkg9h9suud4wuiwjimndrkydqm81cqtlb5ak6p7ku_v1.ipns-record",
        )
        .unwrap_err();
        assert!(matches!(e, RecordError::MissingSignatureV2), "{e}");
    }

    #[test]
    fn v1_value_contradicting_the_signed_value_is_refused() {
        // Both signatures are valid; the protobuf value points elsewhere than the CBOR one.
        let e = verify_fixture(
            "ipns_records/k51qzi5uqu5dlmit2tuwdvnx4sbnyqgmvbxftl0eo3f33wwtb9gr7yozae9kpw_v1-v2-broken-v1-value.ipns-record",
        )
        .unwrap_err();
        assert!(matches!(e, RecordError::V1Mismatch("Value")), "{e}");
    }

    #[test]
    fn broken_v2_signature_is_refused_whatever_v1_says() {
        let e = verify_fixture(
            "ipns_records/k51qzi5uqu5diamp7qnnvs1p1gzmku3eijkeijs3418j23j077zrkok63xdm8c_v1-v2-broken-signature-v2.ipns-record",
        )
        .unwrap_err();
        assert!(matches!(e, RecordError::SignatureInvalid), "{e}");
    }

    #[test]
    fn gateway_fixtures_verify() {
        let hello = "/ipfs/bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am";
        let root1 = "/ipfs/bafybeib3ffl2teiqdncv3mkz4r23b5ctrwkzrrhctdbne6iboayxuxk5ui";
        let cases = [
            // Ed25519, named by a base58 peer ID, key inlined in the name.
            (
                "subdomain_gateway/12D3KooWLQzUv2FHWGVPXTXSZpdHs7oHbXub2G5WC8Tx4NQhyd2d.ipns-record",
                hello.to_string(),
                HUNDRED_YEARS,
            ),
            // RSA, named by a sha2-256 peer ID, key in the record.
            (
                "subdomain_gateway/QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3.ipns-record",
                hello.to_string(),
                HUNDRED_YEARS,
            ),
            (
                "path_gateway_dag/k51qzi5uqu5dghjous0agrwavl8vzl64xckoqzwqeqwudfr74kfd11zcyk3b7l.ipns-record",
                "/ipfs/bafyreibs4utpgbn7uqegmd2goqz4bkyflre2ek2iwv743fhvylwi4zeeim".into(),
                HUNDRED_YEARS,
            ),
            (
                "path_gateway_dag/k51qzi5uqu5dhjghbwdvbo6mi40htrq6e2z4pwgp15pgv3ho1azvidttzh8yy2.ipns-record",
                "/ipfs/baguqeeram5ujjqrwheyaty3w5gdsmoz6vittchvhk723jjqxk7hakxkd47xq".into(),
                HUNDRED_YEARS,
            ),
            (
                "gateway-cache/k51qzi5uqu5dlxdsdu5fpuu7h69wu4ohp32iwm9pdt9nq3y5rpn3ln9j12zfhe.ipns-record",
                root1.to_string(),
                HUNDRED_YEARS,
            ),
            // A value with a sub-path.
            (
                "gateway-cache/k51qzi5uqu5djokp3m1keo36hoxtd6u3a1d2rg1camf6al7p3huy63dojlm57c.ipns-record",
                format!("{root1}/root2"),
                HALF_HOUR,
            ),
        ];
        for (path, value, ttl) in cases {
            let record = verify_fixture(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(record.value, value, "{path}");
            assert_eq!(record.ttl, Some(ttl), "{path}");
            assert_eq!(record.sequence, 0, "{path}");
        }
    }

    #[test]
    fn names_in_any_spelling_verify_the_same_record() {
        let bytes = fixture(
            "subdomain_gateway/12D3KooWLQzUv2FHWGVPXTXSZpdHs7oHbXub2G5WC8Tx4NQhyd2d.ipns-record",
        );
        let b36 = IpnsName::parse("k51qzi5uqu5dk3v4rmjber23h16xnr23bsggmqqil9z2gduiis5se8dht36dam")
            .unwrap();
        assert!(verify(&b36, &bytes, now()).is_ok());
        let rsa =
            fixture("subdomain_gateway/QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3.ipns-record");
        let b36 =
            IpnsName::parse("k2k4r8m7xvggw5pxxk3abrkwyer625hg01hfyggrai7lk1m63fuihi7w").unwrap();
        assert!(verify(&b36, &rsa, now()).is_ok());
    }

    #[test]
    fn eols_are_read_to_the_nanosecond() {
        let record = verify_fixture(
            "gateway-cache/k51qzi5uqu5djokp3m1keo36hoxtd6u3a1d2rg1camf6al7p3huy63dojlm57c.ipns-record",
        )
        .unwrap();
        // 2126-01-31T15:56:12.714899293Z
        assert_eq!(
            record.validity,
            at(4_925_548_572) + Duration::from_nanos(714_899_293)
        );
        let rsa = verify_fixture(
            "subdomain_gateway/QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3.ipns-record",
        )
        .unwrap();
        // 2123-04-12T13:43:57.238038Z
        assert_eq!(
            rsa.validity,
            at(4_836_980_637) + Duration::from_nanos(238_038_000)
        );
    }

    #[test]
    fn fixtures_expire_at_their_eol() {
        let path = "ipns_records/k51qzi5uqu5dit2ku9mutlfgwyz8u730on38kd10m97m36bjt66my99hb6103f_v2.ipns-record";
        let name =
            IpnsName::parse("k51qzi5uqu5dit2ku9mutlfgwyz8u730on38kd10m97m36bjt66my99hb6103f")
                .unwrap();
        let bytes = fixture(path);
        let eol = vectors_eol();
        assert!(verify(&name, &bytes, eol - Duration::from_nanos(1)).is_ok());
        match verify(&name, &bytes, eol) {
            Err(RecordError::Expired { validity, eol: e }) => {
                assert_eq!(validity, "2123-08-14T12:17:03.694052Z");
                assert_eq!(e, eol);
            }
            other => panic!("{other:?}"),
        }
        // 2130-01-01.
        assert!(matches!(
            verify(&name, &bytes, at(5_049_129_600)),
            Err(RecordError::Expired { .. })
        ));
    }

    #[test]
    fn a_record_does_not_verify_for_another_name() {
        let v2 = fixture(
            "ipns_records/k51qzi5uqu5dit2ku9mutlfgwyz8u730on38kd10m97m36bjt66my99hb6103f_v2.ipns-record",
        );
        let other =
            IpnsName::parse("k51qzi5uqu5dlkw8pxuw9qmqayfdeh4kfebhmreauqdc6a7c3y7d5i9fi8mk9w")
                .unwrap();
        // The other name's inlined key does not verify the signature.
        assert!(matches!(
            verify(&other, &v2, now()),
            Err(RecordError::SignatureInvalid)
        ));
        // The RSA record's embedded key does not hash to an Ed25519 name, nor to another RSA one.
        let rsa =
            fixture("subdomain_gateway/QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3.ipns-record");
        assert!(matches!(
            verify(&other, &rsa, now()),
            Err(RecordError::KeyMismatch)
        ));
        let other_rsa = IpnsName::parse("QmcJM7PRfkSbcM5cf1QugM5R37TLRKyJGgBEhXjLTB8uA2").unwrap();
        assert!(matches!(
            verify(&other_rsa, &rsa, now()),
            Err(RecordError::KeyMismatch)
        ));
        // Without its key, a sha2-256 name cannot verify anything.
        assert!(matches!(
            verify(&other_rsa, &v2, now()),
            Err(RecordError::NoPublicKey)
        ));
    }

    #[test]
    fn tampering_is_detected() {
        let name = IpnsName::parse("QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3").unwrap();
        let good =
            fixture("subdomain_gateway/QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3.ipns-record");
        let mut entry = RawEntry::decode(good.as_slice()).unwrap();
        let mut sig = entry.signature_v2.clone().unwrap();
        sig[10] ^= 1;
        entry.signature_v2 = Some(sig);
        assert!(matches!(
            verify(&name, &entry.encode_to_vec(), now()),
            Err(RecordError::SignatureInvalid)
        ));

        let mut entry = RawEntry::decode(good.as_slice()).unwrap();
        let mut data = entry.data.clone().unwrap();
        // Same length, still valid CBOR: one base32 character of the CID in Value.
        let i = data.windows(4).position(|w| w == b"bafk").unwrap() + 10;
        data[i] = if data[i] == b'a' { b'b' } else { b'a' };
        entry.data = Some(data);
        entry.value = None;
        entry.signature_v1 = None;
        assert!(matches!(
            verify(&name, &entry.encode_to_vec(), now()),
            Err(RecordError::SignatureInvalid)
        ));
    }

    #[test]
    fn size_limit_comes_first() {
        let name = IpnsName::parse("QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3").unwrap();
        let mut big =
            fixture("subdomain_gateway/QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3.ipns-record");
        // An unknown field pads the valid record past the limit.
        let pad = MAX_RECORD_BYTES - big.len() + 1;
        big.extend_from_slice(&[0x52, 0x80 | (pad & 0x7f) as u8, (pad >> 7) as u8]);
        big.extend(std::iter::repeat_n(0, pad));
        assert!(matches!(
            verify(&name, &big, now()),
            Err(RecordError::TooLarge { .. })
        ));
        assert!(matches!(
            verify(&name, &[0xff; 20], now()),
            Err(RecordError::Protobuf(_))
        ));
    }

    /// A deterministic Ed25519 key and the identity name that inlines it.
    fn ed25519(seed: u8) -> (Ed25519KeyPair, Vec<u8>, IpnsName) {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap();
        let public = RawPublicKey {
            key_type: Some(KEY_ED25519),
            data: Some(pair.public_key().as_ref().to_vec()),
        }
        .encode_to_vec();
        let name = IpnsName::from_multihash(Multihash::wrap(0x00, &public).unwrap()).unwrap();
        (pair, public, name)
    }

    /// The standard CBOR fields, to be edited by each test.
    fn fields(value: &str, validity: &str) -> BTreeMap<String, Ipld> {
        let mut m = BTreeMap::new();
        m.insert("Value".into(), Ipld::Bytes(value.as_bytes().to_vec()));
        m.insert("Validity".into(), Ipld::Bytes(validity.as_bytes().to_vec()));
        m.insert("ValidityType".into(), Ipld::Integer(0));
        m.insert("Sequence".into(), Ipld::Integer(7));
        m.insert("TTL".into(), Ipld::Integer(60_000_000_000));
        m
    }

    /// A V2-only entry over `fields`, signed by `pair`.
    fn signed(pair: &Ed25519KeyPair, fields: BTreeMap<String, Ipld>) -> RawEntry {
        let data = serde_ipld_dagcbor::to_vec(&Ipld::Map(fields)).unwrap();
        let mut message = SIGNATURE_V2_PREFIX.to_vec();
        message.extend_from_slice(&data);
        RawEntry {
            signature_v2: Some(pair.sign(&message).as_ref().to_vec()),
            data: Some(data),
            ..Default::default()
        }
    }

    const CID: &str = "bafkqaddwgevxmmraojswg33smq";
    const FUTURE: &str = "2100-01-01T00:00:00Z";

    #[test]
    fn crafted_record_round_trips() {
        let (pair, _, name) = ed25519(1);
        let value = format!("/ipfs/{CID}/a/b");
        let entry = signed(&pair, fields(&value, "2100-01-01T01:30:00.5+01:30"));
        let record = verify(&name, &entry.encode_to_vec(), now()).unwrap();
        assert_eq!(record.value, value);
        assert_eq!(record.sequence, 7);
        assert_eq!(record.ttl, Some(Duration::from_secs(60)));
        // 2100-01-01T00:00:00Z is 4102444800.
        assert_eq!(
            record.validity,
            at(4_102_444_800) + Duration::from_millis(500)
        );
    }

    #[test]
    fn expired_records_are_refused() {
        let (pair, _, name) = ed25519(1);
        let entry = signed(
            &pair,
            fields(&format!("/ipfs/{CID}"), "2000-02-29T23:59:59Z"),
        );
        match verify(&name, &entry.encode_to_vec(), now()) {
            Err(RecordError::Expired { eol, .. }) => assert_eq!(eol, at(951_868_799)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn embedded_key_must_hash_to_the_name() {
        let (pair, public, name) = ed25519(1);
        let (_, other_public, _) = ed25519(2);
        let mut entry = signed(&pair, fields(&format!("/ipfs/{CID}"), FUTURE));
        entry.pub_key = Some(public);
        assert!(verify(&name, &entry.encode_to_vec(), now()).is_ok());
        entry.pub_key = Some(other_public);
        assert!(matches!(
            verify(&name, &entry.encode_to_vec(), now()),
            Err(RecordError::KeyMismatch)
        ));
    }

    #[test]
    fn sha256_names_verify_with_the_key_in_the_record() {
        let (pair, public, _) = ed25519(3);
        let digest = ring::digest::digest(&ring::digest::SHA256, &public);
        let name =
            IpnsName::from_multihash(Multihash::wrap(0x12, digest.as_ref()).unwrap()).unwrap();
        let mut entry = signed(&pair, fields(&format!("/ipfs/{CID}"), FUTURE));
        assert!(matches!(
            verify(&name, &entry.encode_to_vec(), now()),
            Err(RecordError::NoPublicKey)
        ));
        entry.pub_key = Some(public);
        assert!(verify(&name, &entry.encode_to_vec(), now()).is_ok());
    }

    #[test]
    fn matching_v1_fields_are_accepted_and_contradicting_ones_refused() {
        let (pair, _, name) = ed25519(1);
        let value = format!("/ipfs/{CID}");
        let base = signed(&pair, fields(&value, FUTURE));
        let v1 = RawEntry {
            value: Some(value.clone().into_bytes()),
            signature_v1: Some(b"not checked".to_vec()),
            validity_type: Some(0),
            validity: Some(FUTURE.as_bytes().to_vec()),
            sequence: Some(7),
            ttl: Some(60_000_000_000),
            ..base.clone()
        };
        assert!(verify(&name, &v1.encode_to_vec(), now()).is_ok());

        let cases: [(&str, RawEntry); 4] = [
            (
                "Sequence",
                RawEntry {
                    sequence: Some(8),
                    ..v1.clone()
                },
            ),
            (
                "TTL",
                RawEntry {
                    ttl: None,
                    ..v1.clone()
                },
            ),
            (
                "Validity",
                RawEntry {
                    validity: Some(b"2200-01-01T00:00:00Z".to_vec()),
                    ..v1.clone()
                },
            ),
            // A V1 signature alone makes the (absent) V1 value count as empty.
            (
                "Value",
                RawEntry {
                    value: None,
                    ..v1.clone()
                },
            ),
        ];
        for (field, entry) in cases {
            match verify(&name, &entry.encode_to_vec(), now()) {
                Err(RecordError::V1Mismatch(f)) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        // V1 copies without a V1 signature or value are ignored, as the spec says.
        let stray = RawEntry {
            sequence: Some(99),
            ..base
        };
        assert!(verify(&name, &stray.encode_to_vec(), now()).is_ok());
    }

    #[test]
    fn missing_v2_parts_are_refused() {
        let (pair, _, name) = ed25519(1);
        let entry = signed(&pair, fields(&format!("/ipfs/{CID}"), FUTURE));
        let no_data = RawEntry {
            data: Some(Vec::new()),
            ..entry.clone()
        };
        assert!(matches!(
            verify(&name, &no_data.encode_to_vec(), now()),
            Err(RecordError::MissingData)
        ));
        let no_sig = RawEntry {
            signature_v2: None,
            ..entry
        };
        assert!(matches!(
            verify(&name, &no_sig.encode_to_vec(), now()),
            Err(RecordError::MissingSignatureV2)
        ));
    }

    #[test]
    fn signed_but_unusable_data_is_refused() {
        let (pair, _, name) = ed25519(1);
        let check =
            |f: BTreeMap<String, Ipld>| verify(&name, &signed(&pair, f).encode_to_vec(), now());
        let good = || fields(&format!("/ipfs/{CID}"), FUTURE);

        let mut f = good();
        f.insert("ValidityType".into(), Ipld::Integer(1));
        assert!(matches!(
            check(f),
            Err(RecordError::UnsupportedValidityType(1))
        ));

        for bad in [
            "2100-01-01",
            "2100-13-01T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2100-01-01T00:00:00",
            "2100-01-01T00:00:00.Z",
        ] {
            let f = fields(&format!("/ipfs/{CID}"), bad);
            assert!(
                matches!(check(f), Err(RecordError::BadValidity(_))),
                "{bad}"
            );
        }

        for bad in [
            "https://example.org",
            "/ipfs/",
            "/ipfs/not-a-cid/x",
            "ipfs/x",
            "/ipns/",
        ] {
            let f = fields(bad, FUTURE);
            assert!(
                matches!(check(f), Err(RecordError::ValueNotPath(_))),
                "{bad}"
            );
        }
        let f = fields("/ipns/example.org/x", FUTURE);
        assert_eq!(check(f).unwrap().value, "/ipns/example.org/x");

        let mut f = good();
        f.insert("Value".into(), Ipld::String(format!("/ipfs/{CID}")));
        assert!(matches!(
            check(f),
            Err(RecordError::BadField { field: "Value", .. })
        ));

        let mut f = good();
        f.remove("Sequence");
        assert!(matches!(
            check(f),
            Err(RecordError::BadField {
                field: "Sequence",
                ..
            })
        ));

        let mut f = good();
        f.insert("Sequence".into(), Ipld::Integer(-1));
        assert!(matches!(
            check(f),
            Err(RecordError::BadField {
                field: "Sequence",
                ..
            })
        ));

        // Unknown fields are ignored (the spec reserves `_`-prefixed keys for extensions).
        let mut f = good();
        f.insert("_custom".into(), Ipld::String("x".into()));
        assert!(check(f).is_ok());
    }

    #[test]
    fn ttl_is_optional_and_never_negative() {
        let (pair, _, name) = ed25519(1);
        let check =
            |f: BTreeMap<String, Ipld>| verify(&name, &signed(&pair, f).encode_to_vec(), now());
        let mut f = fields(&format!("/ipfs/{CID}"), FUTURE);
        f.remove("TTL");
        assert_eq!(check(f).unwrap().ttl, None);
        let mut f = fields(&format!("/ipfs/{CID}"), FUTURE);
        f.insert("TTL".into(), Ipld::Integer(-5));
        assert_eq!(check(f).unwrap().ttl, Some(Duration::ZERO));
    }

    #[test]
    fn max_age_is_bounded_by_the_eol() {
        let record = IpnsRecord {
            value: format!("/ipfs/{CID}"),
            sequence: 0,
            ttl: Some(Duration::from_secs(3600)),
            validity: at(1000),
        };
        assert_eq!(record.max_age(at(0)), Some(Duration::from_secs(1000)));
        assert_eq!(record.max_age(at(999)), Some(Duration::from_secs(1)));
        assert_eq!(record.max_age(at(2000)), Some(Duration::ZERO));
        let long = IpnsRecord {
            validity: at(100_000),
            ..record.clone()
        };
        assert_eq!(long.max_age(at(0)), Some(Duration::from_secs(3600)));
        let none = IpnsRecord {
            ttl: None,
            ..record
        };
        assert_eq!(none.max_age(at(0)), None);
    }

    #[test]
    fn other_key_types_are_reported_as_unsupported() {
        // A Secp256k1 key (33-byte compressed point), inlined in its name.
        let public = RawPublicKey {
            key_type: Some(2),
            data: Some(vec![2; 33]),
        }
        .encode_to_vec();
        let name = IpnsName::from_multihash(Multihash::wrap(0x00, &public).unwrap()).unwrap();
        let (pair, _, _) = ed25519(1);
        let entry = signed(&pair, fields(&format!("/ipfs/{CID}"), FUTURE));
        assert!(matches!(
            verify(&name, &entry.encode_to_vec(), now()),
            Err(RecordError::UnsupportedKeyType(2))
        ));
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(matches!(
            decode_public_key(&[0x08, 0x01]),
            Err(RecordError::BadPublicKey(_))
        ));
        let short = RawPublicKey {
            key_type: Some(KEY_ED25519),
            data: Some(vec![1; 31]),
        }
        .encode_to_vec();
        assert!(matches!(
            decode_public_key(&short),
            Err(RecordError::BadPublicKey(_))
        ));
        let not_der = RawPublicKey {
            key_type: Some(KEY_RSA),
            data: Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
        }
        .encode_to_vec();
        assert!(matches!(
            decode_public_key(&not_der),
            Err(RecordError::BadPublicKey(_))
        ));
    }

    #[test]
    fn spki_walk_finds_the_rsa_key_and_nothing_else() {
        let record =
            fixture("subdomain_gateway/QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3.ipns-record");
        let entry = RawEntry::decode(record.as_slice()).unwrap();
        let key = RawPublicKey::decode(entry.pub_key.unwrap().as_slice()).unwrap();
        let spki = key.data.unwrap();
        let pkcs1 = pkcs1_of_spki(&spki).unwrap();
        // RSAPublicKey ::= SEQUENCE { modulus, publicExponent }, 270 bytes for 2048 bits.
        assert_eq!(&pkcs1[..4], &[0x30, 0x82, 0x01, 0x0a]);
        assert_eq!(pkcs1.len(), 270);

        // Every truncation fails cleanly.
        for len in 0..spki.len() {
            assert!(pkcs1_of_spki(&spki[..len]).is_none(), "{len}");
        }
        let mut trailing = spki.clone();
        trailing.push(0);
        assert!(pkcs1_of_spki(&trailing).is_none());
        // Another algorithm (the last OID byte changed).
        let mut other = spki.clone();
        let oid_end = spki
            .windows(RSA_ENCRYPTION_OID.len())
            .position(|w| w == RSA_ENCRYPTION_OID)
            .unwrap()
            + RSA_ENCRYPTION_OID.len()
            - 1;
        other[oid_end] = 0x0b;
        assert!(pkcs1_of_spki(&other).is_none());
    }

    #[test]
    fn der_lengths() {
        assert_eq!(
            der_element(&[0x04, 0x01, 0xaa, 0xbb]),
            Some((0x04, &[0xaa][..], &[0xbb][..]))
        );
        // Indefinite, non-minimal and overlong lengths.
        assert_eq!(der_element(&[0x04, 0x80, 0x00, 0x00]), None);
        assert_eq!(der_element(&[0x04, 0x81, 0x05, 0, 0, 0, 0, 0]), None);
        assert_eq!(der_element(&[0x04, 0x82, 0x00, 0x80]), None);
        assert_eq!(der_element(&[0x04, 0x85, 1, 0, 0, 0, 0]), None);
        assert_eq!(der_element(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        let long: Vec<u8> = [0x04, 0x81, 0x80].into_iter().chain([7; 0x80]).collect();
        assert_eq!(der_element(&long).map(|(_, c, _)| c.len()), Some(0x80));
    }

    #[test]
    fn rfc3339_parsing() {
        let t = |s: &str| parse_rfc3339(s);
        assert_eq!(t("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(t("2025-01-01T00:00:00Z"), Some(at(1_735_689_600)));
        assert_eq!(
            t("1970-01-01T00:00:00.000000001Z"),
            Some(UNIX_EPOCH + Duration::from_nanos(1))
        );
        // Digits past the ninth are ignored, as in Go.
        assert_eq!(
            t("1970-01-01T00:00:00.1234567899Z"),
            Some(UNIX_EPOCH + Duration::from_nanos(123_456_789))
        );
        assert_eq!(t("1970-01-01T01:00:00+01:00"), Some(UNIX_EPOCH));
        assert_eq!(
            t("2025-01-01T00:00:00-01:00"),
            Some(at(1_735_689_600 + 3600))
        );
        assert_eq!(
            t("1969-12-31T23:59:59.5Z"),
            Some(UNIX_EPOCH - Duration::from_millis(500))
        );
        assert_eq!(t("2000-02-29T23:59:59Z"), Some(at(951_868_799)));
        // RFC 3339 allows lower-case separators.
        assert_eq!(t("2000-02-29t23:59:59z"), Some(at(951_868_799)));
        for bad in [
            "",
            "2000-02-30T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2000-01-01T24:00:00Z",
            "2000-01-01T00:60:00Z",
            "2000-01-01T00:00:00+0100",
            "2000-01-01T00:00:00+24:00",
            "2000-01-01T00:00:00.5",
            "+2000-01-01T00:00:00Z",
            "2000-1-01T00:00:00Z",
            "2000-01-01T00:00:00ZZ",
        ] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }
}
