//! IPNS names (ipfs/specs `ipns/ipns-record.md`, "IPNS Name"): the multihash of a libp2p
//! public key (libp2p/specs `peer-ids/peer-ids.md`).
//!
//! A name reaches the gateway in one of two text forms: a CIDv1 with the libp2p-key codec in
//! some multibase (`k51…` base36 is canonical, `bafz…` base32 also occurs), or a legacy peer ID,
//! the bare multihash in base58btc (`12D3KooW…` for inlined Ed25519 keys, `Qm…` for sha2-256
//! hashes of larger keys). Both decode to the same multihash; the canonical text is the base36
//! CID because it is case-insensitive and an Ed25519 name fits in one DNS label.

use std::fmt;
use std::str::FromStr;

use multibase::Base;
use multihash::Multihash;
use sha2::{Digest, Sha256};

use crate::ipld::{Cid, IDENTITY, LIBP2P_KEY, SHA2_256};

/// Digest length of sha2-256, the only real hash libp2p names keys with.
const SHA2_256_LEN: usize = 32;

/// Why a string is not an IPNS name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Neither a base58btc peer ID nor a multibase string (a DNSLink domain lands here).
    #[error("not a peer ID or a multibase-encoded CID")]
    NotEncoded,
    /// The text decodes, but not to a well-formed multihash or CIDv1.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A CID of a key hash whose codec is not libp2p-key (0x72). Gateways redirect such CIDs
    /// (typically dag-pb, from older tools) to `fixed`, the same multihash as a libp2p-key CID.
    #[error("CID codec 0x{codec:x} is not libp2p-key (0x72)")]
    WrongCodec {
        /// The codec the CID carries.
        codec: u64,
        /// The name the CID's multihash stands for.
        fixed: IpnsName,
    },
    /// The multihash is neither identity nor a 32-byte sha2-256, so no public key can match it.
    #[error("multihash 0x{0:x} cannot name a public key (libp2p uses identity or sha2-256)")]
    UnsupportedHash(u64),
}

/// An IPNS name: the multihash of a libp2p public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpnsName {
    mh: Multihash<64>,
}

impl IpnsName {
    /// Parses a CIDv1 with the libp2p-key codec in any multibase (k51…, bafz…), or a base58btc peer ID (12D3Koo…, Qm…); anything else (e.g. a DNS name) is an error.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        // The peer-id spec's decoding rule: these two prefixes mean a bare base58btc multihash,
        // anything else must be a multibase CID. Neither '1' nor 'Q' is a multibase prefix, so
        // the two forms cannot be confused.
        if s.starts_with('1') || s.starts_with("Qm") {
            let bytes = Base::Base58Btc
                .decode(s)
                .map_err(|_| NameError::NotEncoded)?;
            let mh = Multihash::<64>::from_bytes(&bytes)
                .map_err(|_| NameError::Malformed("multihash"))?;
            return Self::from_multihash(mh);
        }
        let (_, bytes) = multibase::decode(s).map_err(|_| NameError::NotEncoded)?;
        let (version, rest) =
            unsigned_varint::decode::u64(&bytes).map_err(|_| NameError::Malformed("CID"))?;
        if version != 1 {
            return Err(NameError::Malformed("CID (not version 1)"));
        }
        let (codec, rest) =
            unsigned_varint::decode::u64(rest).map_err(|_| NameError::Malformed("CID"))?;
        // `from_bytes` refuses trailing bytes, so one name has exactly one binary form.
        let mh =
            Multihash::<64>::from_bytes(rest).map_err(|_| NameError::Malformed("multihash"))?;
        let name = Self::from_multihash(mh)?;
        if codec != LIBP2P_KEY {
            return Err(NameError::WrongCodec { codec, fixed: name });
        }
        Ok(name)
    }

    /// The name whose multihash is `mh`, if a public key can hash to it.
    pub fn from_multihash(mh: Multihash<64>) -> Result<Self, NameError> {
        match mh.code() {
            IDENTITY => Ok(Self { mh }),
            SHA2_256 if mh.digest().len() == SHA2_256_LEN => Ok(Self { mh }),
            other => Err(NameError::UnsupportedHash(other)),
        }
    }

    /// The canonical text form: CIDv1 libp2p-key in base36 (what subdomain gateways use).
    pub fn to_cid_string(&self) -> String {
        multibase::encode(
            Base::Base36Lower,
            Cid::new_v1(LIBP2P_KEY, self.mh).to_bytes(),
        )
    }

    /// The legacy peer-ID text form: the multihash in base58btc, without a multibase prefix.
    pub fn to_peer_id_string(&self) -> String {
        Base::Base58Btc.encode(self.mh.to_bytes())
    }

    /// The embedded public key (libp2p PublicKey protobuf bytes) when the multihash is identity.
    pub fn inline_public_key(&self) -> Option<&[u8]> {
        (self.mh.code() == IDENTITY).then(|| self.mh.digest())
    }

    /// The multihash bytes.
    pub fn multihash(&self) -> &Multihash<64> {
        &self.mh
    }

    /// Whether this name is the hash of `public_key` (libp2p PublicKey protobuf bytes).
    ///
    /// The name's own hash function decides, not the peer-id rule that keys up to 42 bytes are
    /// inlined: a sha2-256 name of a small key is still bound to that key, so it is accepted
    /// (boxo, which re-derives the peer ID, would refuse it).
    pub fn is_name_of(&self, public_key: &[u8]) -> bool {
        match self.mh.code() {
            IDENTITY => self.mh.digest() == public_key,
            SHA2_256 => Sha256::digest(public_key).as_slice() == self.mh.digest(),
            _ => false,
        }
    }
}

impl fmt::Display for IpnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_cid_string())
    }
}

impl FromStr for IpnsName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ed25519 key of the subdomain-gateway fixtures, in its three spellings.
    const ED_PEER_ID: &str = "12D3KooWLQzUv2FHWGVPXTXSZpdHs7oHbXub2G5WC8Tx4NQhyd2d";
    const ED_BASE36: &str = "k51qzi5uqu5dk3v4rmjber23h16xnr23bsggmqqil9z2gduiis5se8dht36dam";
    const ED_BASE32: &str = "bafzaajaiaejcbhltvusd6q2t7tm3lmke4vu4lieeerm25eihikbh3ncjntnm6t6o";
    /// The same multihash as a dag-pb CIDv1 (what `ipfs cid format --mc dag-pb` produces).
    const ED_DAG_PB: &str = "bafyaajaiaejcbhltvusd6q2t7tm3lmke4vu4lieeerm25eihikbh3ncjntnm6t6o";

    /// RSA key of the subdomain-gateway fixtures (a sha2-256 name).
    const RSA_PEER_ID: &str = "QmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3";
    const RSA_BASE36: &str = "k2k4r8m7xvggw5pxxk3abrkwyer625hg01hfyggrai7lk1m63fuihi7w";
    const RSA_BASE32: &str = "bafzbeidqpod5usytqwxqfg4h4dm6lwlccqswirauz7j2le3syzaiq45qpq";

    #[test]
    fn every_spelling_of_a_key_is_one_name() {
        let name = IpnsName::parse(ED_PEER_ID).unwrap();
        assert_eq!(IpnsName::parse(ED_BASE36).unwrap(), name);
        assert_eq!(IpnsName::parse(ED_BASE32).unwrap(), name);
        assert_eq!(name.to_cid_string(), ED_BASE36);
        assert_eq!(name.to_peer_id_string(), ED_PEER_ID);
        assert_eq!(name.to_string(), ED_BASE36);

        let rsa = IpnsName::parse(RSA_PEER_ID).unwrap();
        assert_eq!(IpnsName::parse(RSA_BASE36).unwrap(), rsa);
        assert_eq!(IpnsName::parse(RSA_BASE32).unwrap(), rsa);
        assert_eq!(rsa.to_cid_string(), RSA_BASE36);
        assert_eq!(rsa.to_peer_id_string(), RSA_PEER_ID);
    }

    #[test]
    fn base36_is_case_insensitive() {
        let upper = format!("K{}", ED_BASE36[1..].to_ascii_uppercase());
        assert_eq!(
            IpnsName::parse(&upper).unwrap(),
            IpnsName::parse(ED_BASE36).unwrap()
        );
    }

    #[test]
    fn canonical_forms_match_the_conformance_redirects() {
        // TestRedirectCanonicalIPNS: /ipns/{peer ID}/root2/ answers 302 to these.
        let cases = [
            (
                "12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK",
                "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8",
            ),
            (
                "QmcJM7PRfkSbcM5cf1QugM5R37TLRKyJGgBEhXjLTB8uA2",
                "k2k4r8ol4m8kkcqz509c1rcjwunebj02gcnm5excpx842u736nja8ger",
            ),
        ];
        for (peer_id, cid) in cases {
            assert_eq!(IpnsName::parse(peer_id).unwrap().to_cid_string(), cid);
        }
    }

    #[test]
    fn ed25519_names_inline_their_key() {
        let name = IpnsName::parse(ED_BASE36).unwrap();
        let key = name.inline_public_key().unwrap();
        // PublicKey { Type: Ed25519, Data: 32 bytes }.
        assert_eq!(&key[..4], &[0x08, 0x01, 0x12, 0x20]);
        assert_eq!(key.len(), 36);
        assert!(name.is_name_of(key));
        assert!(!name.is_name_of(&key[1..]));
        assert_eq!(name.multihash().code(), IDENTITY);

        let rsa = IpnsName::parse(RSA_PEER_ID).unwrap();
        assert_eq!(rsa.inline_public_key(), None);
        assert_eq!(rsa.multihash().code(), SHA2_256);
        assert!(!rsa.is_name_of(key));
    }

    #[test]
    fn other_codecs_are_refused_with_the_name_they_stand_for() {
        let name = IpnsName::parse(ED_BASE36).unwrap();
        assert_eq!(
            IpnsName::parse(ED_DAG_PB),
            Err(NameError::WrongCodec {
                codec: 0x70,
                fixed: name
            })
        );
        // A file CID (raw, sha2-256) is not a key either.
        assert!(matches!(
            IpnsName::parse("bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"),
            Err(NameError::WrongCodec { codec: 0x55, .. })
        ));
    }

    #[test]
    fn hashes_no_key_can_match_are_refused() {
        let sha512 = Multihash::<64>::wrap(0x13, &[7; 64]).unwrap();
        let text = multibase::encode(
            Base::Base36Lower,
            Cid::new_v1(LIBP2P_KEY, sha512).to_bytes(),
        );
        assert_eq!(
            IpnsName::parse(&text),
            Err(NameError::UnsupportedHash(0x13))
        );
        let short = Multihash::<64>::wrap(SHA2_256, &[7; 20]).unwrap();
        assert_eq!(
            IpnsName::from_multihash(short),
            Err(NameError::UnsupportedHash(SHA2_256))
        );
    }

    #[test]
    fn domains_and_garbage_are_not_names() {
        for s in [
            "",
            "en.wikipedia-on-ipfs.org",
            "example.com",
            "localhost",
            "1password.com",
            "Qmfoo",
            "k51",
            // CIDv0 text is a peer ID only with the Qm prefix; as multibase it is not a CIDv1.
            "zQmVujd5Vb7moysJj8itnGufN7MEtPRCNHkKpNuA4onsRa3",
        ] {
            assert!(IpnsName::parse(s).is_err(), "{s:?} parsed");
        }
        // Trailing bytes after the multihash.
        let mut bytes =
            Cid::new_v1(LIBP2P_KEY, *IpnsName::parse(ED_BASE36).unwrap().multihash()).to_bytes();
        bytes.push(0);
        let text = multibase::encode(Base::Base36Lower, bytes);
        assert_eq!(
            IpnsName::parse(&text),
            Err(NameError::Malformed("multihash"))
        );
    }

    #[test]
    fn from_str_parses() {
        let name: IpnsName = ED_PEER_ID.parse().unwrap();
        assert_eq!(name.to_cid_string(), ED_BASE36);
    }
}
