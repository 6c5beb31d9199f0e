//! Mappings whose slices [`super::ZeroCopyStream`] sends with `sendfile` from the file beneath.

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::ffi::c_void;
use std::os::fd::{AsFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};

/// Every live mapping by base address, for [`locate`]; weak so that the registry does not keep
/// one alive. A map, not a list: a store maps one region per segment file, thousands of them.
static REGIONS: RwLock<BTreeMap<usize, (usize, Weak<Region>)>> = RwLock::new(BTreeMap::new());

/// Live mappings of store segments. Each is one kernel memory map entry, and the kernel allows
/// about 65 530 per process (`vm.max_map_count`), which ordinary allocations need too.
pub(super) static SEGMENT_MAPPINGS: AtomicUsize = AtomicUsize::new(0);

/// A file a region maps: the arena's memory file, or a segment file shared with the store.
pub(super) type MappedFd = Box<dyn AsFd + Send + Sync>;

/// One mapping of one file: the cache arena's memory file, or a store segment.
pub(super) struct Region {
    pub(super) base: NonNull<u8>,
    pub(super) len: usize,
    fd: MappedFd,
    /// A store segment file (read-only, its bytes in the page cache), not the arena.
    pub(super) segment: bool,
    /// The segment was deleted from the store: slices still held stay readable (the mapping
    /// keeps the unlinked file), but caches must stop handing them out, or they would keep the
    /// file's disk space taken.
    pub(super) retired: AtomicBool,
    /// Ranges (offset, length) of a segment found corrupt: slices over them are stale.
    pub(super) poisoned: std::sync::Mutex<HashSet<(usize, usize)>>,
    /// Whether `poisoned` holds anything (read without the lock on every check).
    pub(super) any_poisoned: AtomicBool,
    /// How to read a block of this segment again, hashed, when its pages leave the page cache
    /// before it is sent: one for the whole segment (the store finds the block by offset).
    pub(super) refetch: std::sync::OnceLock<super::Refetch>,
}

// SAFETY: the mapping is owned by this value until it drops. Arena slots are disjoint, each
// written once before any reader sees it; segment mappings are read-only and their files are
// append-only, so threads never race on the same bytes.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Takes ownership of the mapping `base..base+len` of `fd` and registers it for [`locate`].
    pub(super) fn register(
        base: NonNull<u8>,
        len: usize,
        fd: MappedFd,
        segment: bool,
    ) -> Arc<Self> {
        if segment {
            SEGMENT_MAPPINGS.fetch_add(1, Ordering::Relaxed);
        }
        let region = Arc::new(Region {
            base,
            len,
            fd,
            segment,
            retired: AtomicBool::new(false),
            poisoned: std::sync::Mutex::new(HashSet::new()),
            any_poisoned: AtomicBool::new(false),
            refetch: std::sync::OnceLock::new(),
        });
        if let Ok(mut regions) = REGIONS.write() {
            regions.retain(|_, (_, weak)| weak.strong_count() > 0);
            regions.insert(base.as_ptr() as usize, (len, Arc::downgrade(&region)));
        }
        region
    }

    /// The file, for `sendfile`.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether the region was retired.
    pub(super) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Whether `off..off+len` overlaps a range found corrupt.
    pub(super) fn is_poisoned(&self, off: usize, len: usize) -> bool {
        if !self.any_poisoned.load(Ordering::Acquire) {
            return false;
        }
        self.poisoned.lock().map_or(true, |p| {
            p.iter().any(|&(o, l)| off < o + l && o < off + len)
        })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let base = self.base.as_ptr() as usize;
        if let Ok(mut regions) = REGIONS.write() {
            regions.remove(&base);
        }
        if self.segment {
            SEGMENT_MAPPINGS.fetch_sub(1, Ordering::Relaxed);
        }
        // SAFETY: `base`/`len` are exactly the mapping this region took in `register`, and no
        // slice over it (the only readers) is alive: each holds an `Arc` to this region.
        if let Err(e) = unsafe { rustix::mm::munmap(self.base.as_ptr().cast::<c_void>(), self.len) }
        {
            tracing::warn!(error = %e, "unmapping a zero-copy region failed");
        }
    }
}

/// The region holding `slice`, with the slice's offset in its file.
pub(super) fn locate(slice: &[u8]) -> Option<(Arc<Region>, u64)> {
    let start = slice.as_ptr() as usize;
    let end = start.checked_add(slice.len())?;
    let regions = REGIONS.read().ok()?;
    let (base, (len, weak)) = regions.range(..=start).next_back()?;
    if end > base + len {
        return None;
    }
    weak.upgrade().map(|r| (r, (start - base) as u64))
}

/// Whether a region is registered at `base` (for tests).
#[cfg(test)]
pub(super) fn registered_at(base: usize) -> Option<usize> {
    REGIONS.read().ok()?.get(&base).map(|(len, _)| *len)
}
