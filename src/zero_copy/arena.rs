//! The arena: a mapped memory file whose slots hold cached blocks.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use offset_allocator::{Allocation, Allocator};
use rustix::fs::{FallocateFlags, MemfdFlags};
use rustix::mm::{MapFlags, ProtFlags};

use super::region::Region;
use super::ArenaError;

/// Where the kernel says whether shared memory may use huge pages.
const SHMEM_HUGE_SETTINGS: &str = "/sys/kernel/mm/transparent_hugepage";

/// Slots are whole pages of this size (the kernel's base page), so a freed slot can be punched
/// out without touching a neighbour: punching part of a page would zero it in place, under a
/// socket that may still be sending it.
fn page() -> usize {
    rustix::param::page_size()
}

/// Whether some setting forces huge pages on all shared memory. A huge page cannot be split
/// while a socket holds it, so punching a slot out of it would zero bytes in flight; `force`
/// overrides the `MADV_NOHUGEPAGE` the arena asks for.
fn shmem_huge_pages_forced() -> bool {
    let mut files = vec![std::path::PathBuf::from(SHMEM_HUGE_SETTINGS).join("shmem_enabled")];
    if let Ok(dir) = std::fs::read_dir(SHMEM_HUGE_SETTINGS) {
        files.extend(dir.flatten().map(|e| e.path().join("shmem_enabled")));
    }
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .any(|setting| setting.contains("[force]"))
}

struct Shared {
    region: Arc<Region>,
    allocator: Mutex<Allocator>,
    /// The kernel's base page size: the unit of slots.
    page: usize,
    used: AtomicU64,
}

/// Memory for cached blocks that [`super::ZeroCopyStream`] can send with `sendfile`.
#[derive(Clone)]
pub struct Arena {
    shared: Arc<Shared>,
}

impl Arena {
    /// An arena of `bytes` (rounded up to whole pages); memory is taken only as slots fill.
    pub fn new(bytes: u64) -> Result<Self, ArenaError> {
        if shmem_huge_pages_forced() {
            return Err(ArenaError::HugePagesForced);
        }
        let page = page();
        let pages = bytes.div_ceil(page as u64).max(1);
        let pages32 = u32::try_from(pages).map_err(|_| ArenaError::TooLarge(bytes))?;
        let len = usize::try_from(pages * page as u64).map_err(|_| ArenaError::TooLarge(bytes))?;
        let fd = rustix::fs::memfd_create("cidgate-cache", MemfdFlags::CLOEXEC)
            .map_err(std::io::Error::from)?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(std::io::Error::from)?;
        // SAFETY: a fresh shared mapping of a file of exactly `len` bytes, at an address the
        // kernel chooses; nothing else maps or truncates this file.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(std::io::Error::from)?;
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| ArenaError::Os(std::io::Error::other("mmap returned a null mapping")))?;
        let region = Region::register(base, len, Box::new(fd), false);
        // SAFETY: advice on the mapping just made (unmapped by `region` if this fails); it
        // changes how pages are backed, not what they hold. Base pages only, for the reason in
        // `shmem_huge_pages_forced`.
        unsafe { rustix::mm::madvise(ptr, len, rustix::mm::Advice::LinuxNoHugepage) }
            .map_err(std::io::Error::from)?;
        Ok(Self {
            shared: Arc::new(Shared {
                region,
                // Room for as many slots as blocks of the smallest size the arena takes.
                allocator: Mutex::new(Allocator::with_max_allocs(
                    pages32,
                    (bytes / super::MIN_ZERO_COPY_BYTES as u64).clamp(1024, 1 << 24) as u32,
                )),
                page,
                used: AtomicU64::new(0),
            }),
        })
    }

    /// A copy of `data` in a fresh slot, or `None` when no slot of that size is free.
    pub fn copy_in(&self, data: &[u8]) -> Option<Bytes> {
        let page = self.shared.page;
        let pages = data.len().div_ceil(page).max(1);
        let allocation = self
            .shared
            .allocator
            .lock()
            .ok()?
            .allocate(u32::try_from(pages).ok()?)?;
        let offset = allocation.offset as usize * page;
        // SAFETY: the allocator gave these pages to this slot alone and they lie inside the
        // mapping; no `Bytes` over them exists yet, so nothing reads them while they are written.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.shared.region.base.as_ptr().add(offset),
                data.len(),
            );
        }
        let span = (pages * page) as u64;
        self.shared.used.fetch_add(span, Ordering::Relaxed);
        Some(Bytes::from_owner(Slot {
            shared: self.shared.clone(),
            allocation,
            offset,
            len: data.len(),
            span,
        }))
    }

    /// Whether `data` already lives in this arena.
    pub fn holds(&self, data: &[u8]) -> bool {
        let base = self.shared.region.base.as_ptr() as usize;
        let start = data.as_ptr() as usize;
        start >= base && start + data.len() <= base + self.shared.region.len
    }

    /// Bytes of slots in use (whole pages).
    pub fn used(&self) -> u64 {
        self.shared.used.load(Ordering::Relaxed)
    }
}

/// One block's pages; dropped with the last `Bytes` over them.
struct Slot {
    shared: Arc<Shared>,
    allocation: Allocation,
    offset: usize,
    len: usize,
    span: u64,
}

impl AsRef<[u8]> for Slot {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the slot's pages were filled in `copy_in` before this slot existed, are never
        // written again while it lives, and the mapping outlives it (it holds the region).
        unsafe {
            std::slice::from_raw_parts(self.shared.region.base.as_ptr().add(self.offset), self.len)
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Sockets may still hold these pages from a `sendfile`; punching them out of the file
        // leaves those pages to the sockets and gives the next slot here fresh ones.
        let punched = rustix::fs::fallocate(
            self.shared.region.fd(),
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            self.offset as u64,
            self.span,
        );
        if let Err(e) = punched {
            // Reusing the pages could change bytes a socket has not sent yet: leak them instead.
            tracing::warn!(error = %e, "cache arena slot could not be released; left unused");
            return;
        }
        self.shared.used.fetch_sub(self.span, Ordering::Relaxed);
        if let Ok(mut allocator) = self.shared.allocator.lock() {
            allocator.free(self.allocation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zero_copy::region::locate;

    #[test]
    fn slots_hold_their_bytes_and_are_located() {
        let arena = Arena::new(1 << 20).unwrap();
        let a = arena.copy_in(&[1u8; 100_000]).unwrap();
        let b = arena.copy_in(&[2u8; 5000]).unwrap();
        assert!(a.iter().all(|&x| x == 1) && a.len() == 100_000);
        assert!(b.iter().all(|&x| x == 2) && b.len() == 5000);
        assert!(arena.holds(&a) && arena.holds(&b[10..20]));
        assert!(!arena.holds(&[0u8; 10]));
        let (_, offset_a) = locate(&a[..]).unwrap();
        let (_, offset_b) = locate(&b[..]).unwrap();
        assert_ne!(offset_a, offset_b);
        assert_eq!(locate(&a[4096..8192]).unwrap().1, offset_a + 4096);
        assert!(locate(&[0u8; 100]).is_none());
        let p = page() as u64;
        assert_eq!(
            arena.used(),
            100_000u64.div_ceil(p) * p + 5000u64.div_ceil(p) * p
        );
    }

    #[test]
    fn full_arena_refuses_and_freed_slots_are_reused() {
        let arena = Arena::new(256 * 1024).unwrap();
        let first = arena.copy_in(&[7u8; 200 * 1024]).unwrap();
        assert!(
            arena.copy_in(&[8u8; 200 * 1024]).is_none(),
            "no room for a second"
        );
        let clone = first.clone();
        drop(first);
        assert!(
            arena.copy_in(&[8u8; 200 * 1024]).is_none(),
            "a clone holds it"
        );
        drop(clone);
        assert_eq!(arena.used(), 0);
        let again = arena.copy_in(&[9u8; 200 * 1024]).unwrap();
        assert!(again.iter().all(|&x| x == 9));
    }

    #[test]
    fn a_dropped_arena_is_no_longer_located() {
        let arena = Arena::new(64 * 1024).unwrap();
        let bytes = arena.copy_in(&[3u8; 10]).unwrap();
        let addr = bytes.as_ptr() as usize;
        drop(arena);
        assert!(locate(&bytes).is_some(), "slots keep the mapping alive");
        drop(bytes);
        assert!(super::super::region::registered_at(addr & !(page() - 1)).is_none());
    }
}
