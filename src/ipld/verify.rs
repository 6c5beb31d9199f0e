//! Multihash verification: proves that bytes hash to a CID.

use cid::Cid;
use multihash::Multihash;
use multihash_codetable::{Code, MultihashDigest};
use sha2::Digest;

use super::{IDENTITY, MAX_BLOCK_SIZE, SHA2_256};

const SHA2_512: u64 = 0x13;
const BLAKE3: u64 = 0x1e;

/// Why bytes were not accepted as the block of a CID.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The multihash function is one cidgate cannot compute, so the bytes cannot be proven.
    #[error("unsupported multihash function 0x{0:x}")]
    UnsupportedHash(u64),
    /// The bytes hash to something else: the source sent wrong data.
    #[error("block bytes do not hash to {0}")]
    Mismatch(Cid),
    /// The block is larger than any block cidgate will handle.
    #[error("block {cid} is {size} bytes, over the {MAX_BLOCK_SIZE}-byte limit")]
    TooLarge {
        /// The block's CID.
        cid: Cid,
        /// Its size.
        size: usize,
    },
}

/// Checks that `data` is the block of `cid`.
pub fn check(cid: &Cid, data: &[u8]) -> Result<(), VerifyError> {
    let mh = cid.hash();
    let want = mh.digest();
    let code = mh.code();
    if code != IDENTITY && data.len() > MAX_BLOCK_SIZE {
        return Err(VerifyError::TooLarge {
            cid: *cid,
            size: data.len(),
        });
    }
    let ok = match code {
        IDENTITY => want == data,
        SHA2_256 => prefix_eq(&sha2::Sha256::digest(data), want),
        SHA2_512 => prefix_eq(&sha2::Sha512::digest(data), want),
        BLAKE3 => {
            // blake3 is an XOF: the digest length is whatever the multihash says.
            let mut out = vec![0u8; want.len()];
            blake3::Hasher::new()
                .update(data)
                .finalize_xof()
                .fill(&mut out);
            out == want
        }
        other => {
            let table = Code::try_from(other).map_err(|_| VerifyError::UnsupportedHash(other))?;
            prefix_eq(table.digest(data).digest(), want)
        }
    };
    if ok {
        Ok(())
    } else {
        Err(VerifyError::Mismatch(*cid))
    }
}

/// Multihashes may be truncated: the CID's digest must be a non-empty prefix of the full one.
fn prefix_eq(full: &[u8], want: &[u8]) -> bool {
    !want.is_empty() && want.len() <= full.len() && &full[..want.len()] == want
}

/// The sha2-256 multihash of `data`.
pub fn sha2_256_multihash(data: &[u8]) -> Multihash<64> {
    let digest = sha2::Sha256::digest(data);
    // A 32-byte digest always fits a 64-byte multihash.
    Multihash::wrap(SHA2_256, &digest).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{cid_v1_sha256, RAW};

    fn mh(code: u64, digest: &[u8]) -> Cid {
        Cid::new_v1(RAW, Multihash::wrap(code, digest).unwrap())
    }

    #[test]
    fn sha256_matches_and_mismatches() {
        let cid = cid_v1_sha256(RAW, b"abc");
        assert_eq!(check(&cid, b"abc"), Ok(()));
        assert_eq!(check(&cid, b"abd"), Err(VerifyError::Mismatch(cid)));
    }

    #[test]
    fn identity_compares_bytes() {
        let cid = mh(IDENTITY, b"inline");
        assert!(check(&cid, b"inline").is_ok());
        assert!(check(&cid, b"inlinf").is_err());
        let empty: Cid = "bafkqaaa".parse().unwrap();
        assert!(check(&empty, b"").is_ok());
    }

    #[test]
    fn sha512_and_blake3() {
        let d512 = sha2::Sha512::digest(b"x");
        assert!(check(&mh(SHA2_512, &d512), b"x").is_ok());
        let b3 = blake3::hash(b"x");
        assert!(check(&mh(BLAKE3, b3.as_bytes()), b"x").is_ok());
        assert!(check(&mh(BLAKE3, b3.as_bytes()), b"y").is_err());
    }

    #[test]
    fn sha3_via_table_and_unknown_codes() {
        let d = Code::Sha3_256.digest(b"q");
        assert!(check(&Cid::new_v1(RAW, d), b"q").is_ok());
        assert_eq!(
            check(&mh(0x9999, &[1, 2, 3]), b"q"),
            Err(VerifyError::UnsupportedHash(0x9999))
        );
    }

    #[test]
    fn truncated_digest_is_a_prefix() {
        let full = sha2::Sha256::digest(b"t");
        assert!(check(&mh(SHA2_256, &full[..20]), b"t").is_ok());
        assert!(check(&mh(SHA2_256, &[]), b"t").is_err());
    }

    #[test]
    fn oversized_blocks_are_refused() {
        let big = vec![0u8; MAX_BLOCK_SIZE + 1];
        let cid = cid_v1_sha256(RAW, &big);
        assert!(matches!(
            check(&cid, &big),
            Err(VerifyError::TooLarge { .. })
        ));
    }
}
