//! Allocation-free text forms of CIDs and multihashes for double-hash preimages.
//!
//! A double-hashed rule is matched by hashing a text (`{cidv1-base32}/{path}` or
//! `{base58btc multihash}/{path}`) that has to be built for every check. The multibase crate
//! returns a fresh `String` per encoding; these encoders write into a stack buffer instead, so a
//! check with a million-entry list loaded costs a few hashes and no heap allocation.

use multihash::Multihash;

/// Bytes kept on the stack before a preimage spills to the heap: a CID's text form (~60
/// characters for sha2-256) and a path of typical depth. Kept small because the buffer is
/// zeroed and may be moved on every check.
const INLINE: usize = 256;

/// A byte buffer that lives on the stack until it outgrows [`INLINE`].
pub(crate) struct Preimage {
    inline: [u8; INLINE],
    len: usize,
    spill: Option<Vec<u8>>,
}

impl Preimage {
    /// An empty buffer.
    #[inline]
    pub(crate) fn new() -> Self {
        Self {
            inline: [0; INLINE],
            len: 0,
            spill: None,
        }
    }

    /// The bytes written so far.
    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.spill {
            Some(v) => v,
            None => &self.inline[..self.len],
        }
    }

    /// Current length (a mark to [`Preimage::truncate`] back to).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match &self.spill {
            Some(v) => v.len(),
            None => self.len,
        }
    }

    /// Drops everything after `len` bytes.
    #[inline]
    pub(crate) fn truncate(&mut self, len: usize) {
        match &mut self.spill {
            Some(v) => v.truncate(len),
            None => self.len = self.len.min(len),
        }
    }

    /// Appends bytes.
    #[inline]
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if let Some(v) = &mut self.spill {
            v.extend_from_slice(bytes);
            return;
        }
        let end = self.len + bytes.len();
        if end <= INLINE {
            self.inline[self.len..end].copy_from_slice(bytes);
            self.len = end;
        } else {
            let mut v = Vec::with_capacity(end * 2);
            v.extend_from_slice(&self.inline[..self.len]);
            v.extend_from_slice(bytes);
            self.spill = Some(v);
        }
    }

    /// Appends `/seg1/seg2…` for the non-empty segments (a request path, normalised).
    pub(crate) fn push_path(&mut self, segments: &[String]) {
        for s in segments.iter().filter(|s| !s.is_empty()) {
            self.push(b"/");
            self.push(s.as_bytes());
        }
    }
}

/// Largest binary multihash: code and length varints (≤ 10 bytes each) and a 64-byte digest.
pub(crate) const MAX_MH: usize = 84;

/// Writes the binary multihash into `out`; returns its length.
pub(crate) fn multihash_bytes(mh: &Multihash<64>, out: &mut [u8; MAX_MH]) -> usize {
    let mut n = write_varint(mh.code(), out);
    n += write_varint(u64::from(mh.size()), &mut out[n..]);
    let d = mh.digest();
    out[n..n + d.len()].copy_from_slice(d);
    n + d.len()
}

/// Appends the CIDv1 form of (`codec`, `mh`) in lower-case base32 with its `b` multibase prefix,
/// as the legacy Bad Bits anchors spell CIDs (a CIDv0 becomes its dag-pb CIDv1).
pub(crate) fn push_cidv1_base32(codec: u64, mh: &Multihash<64>, out: &mut Preimage) {
    let mut bin = [0u8; 1 + 10 + MAX_MH];
    bin[0] = 1;
    let mut n = 1 + write_varint(codec, &mut bin[1..]);
    n += write_varint(mh.code(), &mut bin[n..]);
    n += write_varint(u64::from(mh.size()), &mut bin[n..]);
    let d = mh.digest();
    bin[n..n + d.len()].copy_from_slice(d);
    n += d.len();
    push_base32_lower(&bin[..n], b"b", out);
}

/// Writes `v` as an unsigned varint at the start of `out` (which has room); returns its length.
#[inline]
fn write_varint(mut v: u64, out: &mut [u8]) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        out[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    out[i] = v as u8;
    i + 1
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Appends `prefix` and RFC 4648 base32 (lower case, no padding) of at most
/// `1 + 10 + MAX_MH` bytes, in one write (one copy per check instead of one per group).
pub(crate) fn push_base32_lower(data: &[u8], prefix: &[u8], out: &mut Preimage) {
    debug_assert!(data.len() <= 1 + 10 + MAX_MH && prefix.len() <= 8);
    let mut text = [0u8; 8 + (1 + 10 + MAX_MH).div_ceil(5) * 8];
    text[..prefix.len()].copy_from_slice(prefix);
    let mut n = prefix.len();
    for group in data.chunks(5) {
        let mut b = [0u8; 5];
        b[..group.len()].copy_from_slice(group);
        let v = u64::from(b[0]) << 32
            | u64::from(b[1]) << 24
            | u64::from(b[2]) << 16
            | u64::from(b[3]) << 8
            | u64::from(b[4]);
        for i in 0..8 {
            text[n + i] = BASE32[((v >> (35 - 5 * i)) & 31) as usize];
        }
        // 1..5 input bytes give 2, 4, 5, 7, 8 characters.
        n += (group.len() * 8).div_ceil(5);
    }
    out.push(&text[..n]);
}

const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
/// 58^5: the largest power of 58 whose limb times 2^32 still fits in a u64.
const LIMB: u64 = 58 * 58 * 58 * 58 * 58;

/// Appends base58btc (Bitcoin alphabet, no multibase prefix) of at most [`MAX_MH`] bytes.
///
/// Works in limbs of 58^5 and eats four input bytes per step, about ten times fewer
/// divisions than the textbook byte-by-digit loop (which alone would cost ~1 µs per CID).
pub(crate) fn push_base58(data: &[u8], out: &mut Preimage) {
    debug_assert!(data.len() <= MAX_MH);
    let zeros = data.iter().take_while(|b| **b == 0).count();
    // ceil(84 * log(256) / log(58^5)) = 24 limbs.
    let mut limbs = [0u32; 24];
    let mut used = 0usize;
    let rest = &data[zeros..];
    let head = rest.len() % 4;
    let mut feed = |word: u64, shift: u32| {
        let mut carry = word;
        for limb in limbs.iter_mut().take(used) {
            let x = (u64::from(*limb) << shift) | carry;
            *limb = (x % LIMB) as u32;
            carry = x / LIMB;
        }
        while carry > 0 {
            limbs[used] = (carry % LIMB) as u32;
            carry /= LIMB;
            used += 1;
        }
    };
    if head > 0 {
        let w = rest[..head]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        feed(w, 8 * head as u32);
    }
    for w in rest[head..].chunks_exact(4) {
        feed(u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])), 32);
    }
    for _ in 0..zeros {
        out.push(b"1");
    }
    // Digits, most significant first, without the leading zeros of the top limb.
    let mut digits = [0u8; 24 * 5];
    let mut n = 0;
    for (i, limb) in limbs[..used].iter().rev().enumerate() {
        let mut v = *limb;
        let mut five = [0u8; 5];
        for d in five.iter_mut().rev() {
            *d = BASE58[(v % 58) as usize];
            v /= 58;
        }
        let skip = if i == 0 {
            five.iter().take_while(|c| **c == b'1').count()
        } else {
            0
        };
        digits[n..n + 5 - skip].copy_from_slice(&five[skip..]);
        n += 5 - skip;
    }
    out.push(&digits[..n]);
}

/// Appends the base58btc form of a multihash (a CIDv0-style string for sha2-256 ones).
pub(crate) fn push_multihash_base58(mh: &Multihash<64>, out: &mut Preimage) {
    let mut m = [0u8; MAX_MH];
    let n = multihash_bytes(mh, &mut m);
    push_base58(&m[..n], out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use multibase::Base;

    fn b58(data: &[u8]) -> String {
        let mut p = Preimage::new();
        push_base58(data, &mut p);
        String::from_utf8(p.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn base58_matches_the_reference_encoder() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..=MAX_MH {
            for zeros in [0usize, 1, 3] {
                let mut data: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                for b in data.iter_mut().take(zeros) {
                    *b = 0;
                }
                assert_eq!(b58(&data), Base::Base58Btc.encode(&data), "len {len}");
            }
        }
        assert_eq!(b58(&[0xff; 4]), Base::Base58Btc.encode([0xff; 4]));
    }

    #[test]
    fn base32_and_cid_forms_match_the_cid_crate() {
        for s in [
            "QmVTF1yEejXd9iMgoRTFDxBv7HAz9kuZcQNBzHrceuK9HR",
            "bafkqaaa",
            "bafyb4ieqht3b2rssdmc7sjv2cy2gfdilxkfh7623nvndziyqnawkmo266a",
            "bafkreihvvulpp4evxj7x7armbqcyg6uezzuig6jp3lktpbovlqfkuqeuoq",
        ] {
            let cid = cid::Cid::try_from(s).unwrap();
            let v1 = cid::Cid::new_v1(cid.codec(), *cid.hash());
            let mut p = Preimage::new();
            push_cidv1_base32(cid.codec(), cid.hash(), &mut p);
            assert_eq!(
                std::str::from_utf8(p.as_bytes()).unwrap(),
                v1.to_string_of_base(Base::Base32Lower).unwrap()
            );
            let mut p = Preimage::new();
            push_multihash_base58(cid.hash(), &mut p);
            assert_eq!(
                p.as_bytes(),
                Base::Base58Btc.encode(cid.hash().to_bytes()).as_bytes()
            );
        }
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            let mut p = Preimage::new();
            push_base32_lower(&data, b"", &mut p);
            assert_eq!(p.as_bytes(), Base::Base32Lower.encode(&data).as_bytes());
        }
    }

    #[test]
    fn preimage_spills_to_the_heap_and_truncates() {
        let mut p = Preimage::new();
        p.push(b"abc");
        let mark = p.len();
        let long = vec![b'x'; INLINE * 2];
        p.push(&long);
        assert_eq!(p.len(), 3 + long.len());
        p.truncate(mark);
        assert_eq!(p.as_bytes(), b"abc");
        p.push_path(&["".into(), "a".into(), "b".into()]);
        assert_eq!(p.as_bytes(), b"abc/a/b");
    }
}
