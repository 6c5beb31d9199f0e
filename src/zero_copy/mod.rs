//! Zero-copy sends of cached blocks.
//!
//! A cache hit for a large block costs the server one copy per response: `write(2)` copies the
//! bytes from the heap into the socket buffer. nginx serves the same bytes with `sendfile(2)`,
//! which hands page references to the socket instead; on a 1 MiB hit that copy is about half the
//! server's time. So large cached blocks that are read again move into an [`Arena`]: a memory
//! file (`memfd`) mapped into the process and carved into slots. Their `Bytes` are ordinary
//! slices of that mapping, so every reader (hashing, ranges, CAR frames, TLS) sees plain memory,
//! and [`ZeroCopyStream`], the plain-TCP connection type of the public listener, recognises a
//! slice of 64 KiB or more inside an arena when hyper writes it and sends it with `sendfile` from
//! the memory file at the same offset. HTTP/1.1 bodies qualify; HTTP/2 cuts bodies into frames
//! of the peer's frame size (16 KiB unless it asks for more), which are written as usual.
//!
//! Safety of the bytes in flight: once `sendfile` returns, the socket holds references to the
//! memory file's pages until the peer has read them. A slot is never rewritten in place: when
//! its last `Bytes` is dropped, its pages are punched out of the file first, which leaves the
//! old pages to the socket and gives the next slot fresh ones. That needs slots of whole base
//! pages and no huge pages under them: slots use the kernel's page size, the mapping is advised
//! `MADV_NOHUGEPAGE`, and no arena is made where the kernel forces huge pages on shared memory.
//! A slot whose pages cannot be punched out is never reused.

#[cfg(target_os = "linux")]
mod arena;
#[cfg(target_os = "linux")]
mod mapped;
#[cfg(target_os = "linux")]
mod region;
#[cfg(target_os = "linux")]
mod stream;

#[cfg(target_os = "linux")]
pub use arena::Arena;
#[cfg(target_os = "linux")]
pub use mapped::{
    any_page_resident, forget_pages, is_segment_slice, no_readahead, read_cached,
    stale_segment_slice, MappedFile,
};
#[cfg(all(test, target_os = "linux"))]
pub(crate) use mapped::{keeps_files_in_memory, test_segment};
#[cfg(target_os = "linux")]
pub use stream::ZeroCopyStream;

#[cfg(not(target_os = "linux"))]
mod portable;
#[cfg(not(target_os = "linux"))]
pub use portable::{
    any_page_resident, forget_pages, is_segment_slice, no_readahead, read_cached,
    stale_segment_slice, Arena, MappedFile,
};

/// Reads again from its segment file, and hashes, the store block holding `len` bytes at
/// offset `off` of one segment, for a slice whose pages left the page cache before it was
/// sent: the block's offset in that segment and its bytes; `Ok(None)` when the block is gone
/// or fails its hash.
pub type Refetch = std::sync::Arc<
    dyn Fn(u64, usize) -> std::io::Result<Option<(u64, bytes::Bytes)>> + Send + Sync,
>;

/// Counters of body bytes sent with `sendfile`, by where they were sent from.
#[derive(Clone, Debug, Default)]
pub struct ZeroCopySent {
    /// From the cache arena's memory file.
    pub arena: prometheus_client::metrics::counter::Counter,
    /// Straight from the store's segment files.
    pub store: prometheus_client::metrics::counter::Counter,
    /// Store blocks whose pages left the page cache before they were sent: read again from
    /// their segment file and hashed, then written from that copy.
    pub refetched: prometheus_client::metrics::counter::Counter,
}

/// Blocks at least this large go to the arena; below it a copy costs less than the extra
/// system call a separate `sendfile` takes.
pub const MIN_ZERO_COPY_BYTES: usize = 64 * 1024;

/// The arena could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ArenaError {
    /// The memory file or its mapping could not be made.
    #[error("memory file for the cache arena: {0}")]
    Os(#[from] std::io::Error),
    /// Larger than the allocator can address.
    #[error("cache arena of {0} bytes is too large")]
    TooLarge(u64),
    /// This platform has no `memfd` / `sendfile`.
    #[error("zero-copy sends need Linux")]
    Unsupported,
    /// The kernel forces huge pages on shared memory (`shmem_enabled` = `force`), which would
    /// let a freed slot's pages change under a socket still sending them.
    #[error("shared memory huge pages are forced (transparent_hugepage/shmem_enabled = force)")]
    HugePagesForced,
}
