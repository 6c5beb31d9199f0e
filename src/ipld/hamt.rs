//! UnixFS HAMT-sharded directories: which shard link leads to a name.
//!
//! Link names in a shard start with the bucket index in upper-case hex, padded to the width of
//! `fanout - 1`. A name that is only the prefix points at a sub-shard; a longer one is an entry.
//! Lookups follow the prefixes rather than the bitfield, so a shard with a bad bitfield still
//! resolves what its links say.

use std::io::Cursor;

use super::dagpb::PbLink;

/// The only HAMT hash function UnixFS uses: murmur3-x64-64.
pub const MURMUR3_X64_64: u64 = 0x22;

/// Why a HAMT lookup cannot proceed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HamtError {
    /// The shard uses a hash function other than murmur3-x64-64.
    #[error("unsupported HAMT hash function 0x{0:x}")]
    UnsupportedHash(u64),
    /// The shard is deeper than the 64-bit hash allows.
    #[error("HAMT deeper than its hash allows")]
    TooDeep,
    /// The fanout is not a power of two of at least 2.
    #[error("bad HAMT fanout {0}")]
    BadFanout(u64),
}

/// What one shard says about a name.
#[derive(Debug, PartialEq, Eq)]
pub enum ShardStep<'a> {
    /// The entry itself.
    Found(&'a PbLink),
    /// The name is in this sub-shard, one level down.
    Descend(&'a PbLink),
    /// The name is not in the directory.
    Absent,
}

/// The 64-bit murmur3 hash of a name, as the HAMT consumes it (most significant bit first).
pub fn hash_name(name: &str) -> u64 {
    // Reading from an in-memory cursor cannot fail.
    let h = murmur3::murmur3_x64_128(&mut Cursor::new(name.as_bytes()), 0).unwrap_or_default();
    h as u64
}

/// Hex width of bucket prefixes for `fanout`.
pub fn prefix_len(fanout: u64) -> usize {
    format!("{:X}", fanout.saturating_sub(1)).len()
}

/// Looks `name` up in one shard at `depth` (0 for the root shard).
pub fn step<'a>(
    links: &'a [PbLink],
    fanout: u64,
    hash_type: u64,
    name: &str,
    depth: u32,
) -> Result<ShardStep<'a>, HamtError> {
    if hash_type != MURMUR3_X64_64 {
        return Err(HamtError::UnsupportedHash(hash_type));
    }
    // Decoded shards are checked, but a fanout of 0 would make the bucket mask underflow.
    if fanout < 2 || !fanout.is_power_of_two() {
        return Err(HamtError::BadFanout(fanout));
    }
    let bits = fanout.trailing_zeros();
    let used = depth
        .checked_add(1)
        .and_then(|levels| bits.checked_mul(levels))
        .ok_or(HamtError::TooDeep)?;
    if bits == 0 || used > 64 {
        return Err(HamtError::TooDeep);
    }
    let index = (hash_name(name) >> (64 - used)) & (fanout - 1);
    let width = prefix_len(fanout);
    let prefix = format!("{index:0width$X}");
    for link in links {
        let link_name = link.name_str();
        if !link_name.starts_with(&prefix) {
            continue;
        }
        if link_name.len() == width {
            return Ok(ShardStep::Descend(link));
        }
        if &link_name[width..] == name {
            return Ok(ShardStep::Found(link));
        }
    }
    Ok(ShardStep::Absent)
}

/// Splits a shard link name into the entry name, or `None` for a sub-shard link.
pub fn entry_name(link_name: &str, fanout: u64) -> Option<&str> {
    let width = prefix_len(fanout);
    link_name.get(width..).filter(|rest| !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_width_follows_fanout() {
        assert_eq!(prefix_len(256), 2);
        assert_eq!(prefix_len(16), 1);
        assert_eq!(prefix_len(4096), 3);
    }

    #[test]
    fn entry_names_strip_the_prefix() {
        assert_eq!(entry_name("A1file.txt", 256), Some("file.txt"));
        assert_eq!(entry_name("A1", 256), None);
    }

    #[test]
    fn other_hash_functions_are_refused() {
        assert_eq!(
            step(&[], 256, 0x12, "x", 0),
            Err(HamtError::UnsupportedHash(0x12))
        );
        assert_eq!(
            step(&[], 256, MURMUR3_X64_64, "x", 8),
            Err(HamtError::TooDeep)
        );
    }

    #[test]
    fn fanouts_that_are_not_powers_of_two_are_errors_not_panics() {
        // Found by the `unixfs` fuzz target: fanout 0 underflowed the bucket mask.
        for fanout in [0, 1, 3, 255, u64::MAX] {
            assert_eq!(
                step(&[], fanout, MURMUR3_X64_64, "x", 0),
                Err(HamtError::BadFanout(fanout))
            );
        }
        assert_eq!(
            step(&[], 1 << 63, MURMUR3_X64_64, "x", 0),
            Ok(ShardStep::Absent)
        );
        // Found by the same target: the depth itself overflowed.
        assert_eq!(
            step(&[], 256, MURMUR3_X64_64, "x", u32::MAX),
            Err(HamtError::TooDeep)
        );
    }
}
