//! The stand-in where `memfd` and `sendfile` do not exist: no arena, blocks stay on the heap.

use bytes::Bytes;

use super::ArenaError;

/// No arena can be made here; the cache keeps blocks on the heap.
#[derive(Clone)]
pub struct Arena;

impl Arena {
    /// Always [`ArenaError::Unsupported`].
    pub fn new(_bytes: u64) -> Result<Self, ArenaError> {
        Err(ArenaError::Unsupported)
    }

    /// Never a copy.
    pub fn copy_in(&self, _data: &[u8]) -> Option<Bytes> {
        None
    }

    /// Nothing lives in an arena here.
    pub fn holds(&self, _data: &[u8]) -> bool {
        false
    }

    /// Always 0.
    pub fn used(&self) -> u64 {
        0
    }
}

/// No segment mappings here: store reads are copied and hashed.
pub struct MappedFile;

impl MappedFile {
    /// Always an error: nothing is mapped here.
    pub fn new(_file: std::sync::Arc<std::fs::File>, _len: u64) -> std::io::Result<Self> {
        Err(std::io::Error::other("segment mappings need Linux"))
    }

    /// Never resident.
    pub fn resident(&self, _off: u64, _len: usize) -> std::io::Result<Option<Bytes>> {
        Ok(None)
    }

    /// Nothing to retire.
    pub fn retire(&self) {}

    /// Nothing is sent from a mapping here.
    pub fn set_refetch(&self, _refetch: super::Refetch) {}

    /// Nothing to poison.
    pub fn poison(&self, _off: u64, _len: usize) {}
}

/// Nothing is a segment slice here.
pub fn stale_segment_slice(_data: &[u8]) -> bool {
    false
}

/// Nothing is a segment slice here.
pub fn is_segment_slice(_data: &[u8]) -> bool {
    false
}

/// Always `false`: the caller reads and hashes.
pub fn read_cached(_file: &std::fs::File, _buf: &mut [u8], _off: u64) -> std::io::Result<bool> {
    Ok(false)
}

/// Nothing to advise here.
pub fn no_readahead(_file: &std::fs::File) {}

/// Nothing to drop here.
pub fn forget_pages(_file: &std::fs::File, _off: u64, _len: u64) {}

/// Nothing is trusted from memory here, so nothing needs asking.
pub fn any_page_resident(_file: &std::fs::File, _len: u64) -> std::io::Result<bool> {
    Ok(false)
}
