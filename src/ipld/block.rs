//! A block whose bytes have been proven to hash to its CID.

use bytes::Bytes;
use cid::Cid;

use super::verify::{check, VerifyError};

/// A block whose bytes hash to its CID. The only way to make one from untrusted bytes is
/// [`Block::verified`]; [`Block::already_verified`] rebuilds one from bytes this process verified
/// before (cache hits, and large store blocks still in the page cache).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    cid: Cid,
    data: Bytes,
}

impl Block {
    /// Hashes `data` and returns a block if it matches `cid`.
    pub fn verified(cid: Cid, data: Bytes) -> Result<Self, VerifyError> {
        check(&cid, &data)?;
        Ok(Self { cid, data })
    }

    /// Rebuilds a block from bytes that were verified when they entered this process (the edge
    /// cache; the store's large blocks whose pages it holds in the page cache, see
    /// `tiers::segments`), so they are not hashed twice.
    pub(crate) fn already_verified(cid: Cid, data: Bytes) -> Self {
        Self { cid, data }
    }

    /// The block's CID.
    pub fn cid(&self) -> &Cid {
        &self.cid
    }

    /// The block's bytes (a cheap `Bytes` handle).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Splits the block into CID and bytes.
    pub fn into_parts(self) -> (Cid, Bytes) {
        (self.cid, self.data)
    }

    /// Block size in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for a zero-length block.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{cid_v1_sha256, RAW};

    #[test]
    fn verified_accepts_matching_and_rejects_other_bytes() {
        let cid = cid_v1_sha256(RAW, b"hello");
        assert!(Block::verified(cid, Bytes::from_static(b"hello")).is_ok());
        assert!(Block::verified(cid, Bytes::from_static(b"hellO")).is_err());
    }
}
