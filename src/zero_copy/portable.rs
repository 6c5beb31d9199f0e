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
