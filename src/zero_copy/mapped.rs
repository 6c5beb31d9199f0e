//! Store segment files mapped read-only, so that large blocks in the page cache leave by
//! `sendfile` straight from the file, with no copy and no hash on the way.
//!
//! Why no hash: the bytes were verified when they were written, and the page cache holds what
//! this process wrote or what one of its hashed reads brought in (read-ahead is off on segment
//! files, and pages an earlier process left are dropped at open, or where they cannot be, as on
//! tmpfs, trusted only once hashed). Bytes that would have to come
//! from the disk are the ones a failing disk can change: for those the store reads and hashes
//! instead. The background scrub covers what slips through (a page a neighbour's hashed read
//! brought in, bytes that changed in memory).
//!
//! Why the residency check matters for more than speed: touching a mapped page that is not in
//! the page cache makes the kernel read it, and an I/O error there is a `SIGBUS`, not an error
//! return. Slices are handed out only over resident pages, and a cached slice whose pages left
//! the page cache is dropped ([`stale_segment_slice`]) rather than touched. A slice whose pages
//! left while its response waited is read again through the store, hashed ([`vouch`]).

use std::fs::File;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use rustix::mm::{MapFlags, ProtFlags};

use super::region::{locate, Region, SEGMENT_MAPPINGS};

/// Live segment mappings at most: half the kernel's default `vm.max_map_count`, 2 TiB of store
/// at the default 64 MiB segments. Past it, segments are read and hashed as without a mapping.
pub const MAX_SEGMENT_MAPPINGS: usize = 32 * 1024;

fn page() -> usize {
    rustix::param::page_size()
}

/// One segment file mapped read-only.
pub struct MappedFile {
    region: Arc<Region>,
}

impl MappedFile {
    /// Maps the first `len` bytes of `file`, which may still grow into them: only bytes already
    /// written are ever handed out. Refused past [`MAX_SEGMENT_MAPPINGS`] live mappings (the
    /// store then reads and hashes large blocks as it does small ones).
    pub fn new(file: Arc<File>, len: u64) -> io::Result<Self> {
        if SEGMENT_MAPPINGS.load(Ordering::Relaxed) >= MAX_SEGMENT_MAPPINGS {
            return Err(io::Error::other("too many segment mappings"));
        }
        let page = page();
        let len = usize::try_from(len.max(1))
            .ok()
            .and_then(|l| l.checked_next_multiple_of(page))
            .ok_or_else(|| io::Error::other("segment too large to map"))?;
        // SAFETY: a fresh read-only shared mapping at an address the kernel chooses. The file is
        // append-only while mapped (never truncated or rewritten in place), so the bytes of a
        // written range never change under a reader.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                &*file,
                0,
            )
        }
        .map_err(io::Error::from)?;
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        // The store's own descriptor: a segment costs no second one for being mapped.
        let region = Region::register(base, len, Box::new(file), true);
        // SAFETY: advice on the mapping just made; it changes how faults read, not what pages
        // hold. A fault maps its own page and reads nothing around it from the disk.
        if let Err(e) = unsafe { rustix::mm::madvise(ptr, len, rustix::mm::Advice::Random) } {
            tracing::debug!(error = %e, "madvise(MADV_RANDOM) on a segment mapping");
        }
        Ok(Self { region })
    }

    /// `off..off+len` as `Bytes` over the mapping when every page of it is in the page cache;
    /// `None` when reading it would go to the disk.
    pub fn resident(&self, off: u64, len: usize) -> io::Result<Option<Bytes>> {
        let off = usize::try_from(off).map_err(|_| io::Error::other("offset past the mapping"))?;
        if off.checked_add(len).is_none_or(|end| end > self.region.len) {
            return Err(io::Error::other("range past the segment mapping"));
        }
        if !pages_resident(&self.region, off, len) {
            return Ok(None);
        }
        Ok(Some(Bytes::from_owner(MappedSlice {
            region: self.region.clone(),
            off,
            len,
        })))
    }

    /// How a block of this segment is read again, hashed, should its pages leave the page
    /// cache while a response waits to send it (set once, when the segment is mapped).
    pub fn set_refetch(&self, refetch: super::Refetch) {
        let _ = self.region.refetch.set(refetch);
    }

    /// The segment was deleted: slices cached elsewhere are dropped when next found.
    pub fn retire(&self) {
        self.region.retired.store(true, Ordering::Release);
    }

    /// The bytes at `off..off+len` failed their hash: slices over them held elsewhere (a
    /// memory cache) are stale from now on, and none is handed out again.
    pub fn poison(&self, off: u64, len: usize) {
        let Ok(off) = usize::try_from(off) else {
            return;
        };
        if let Ok(mut p) = self.region.poisoned.lock() {
            p.insert((off, len));
        }
        self.region.any_poisoned.store(true, Ordering::Release);
    }
}

/// Bytes of a segment mapping; the mapping lives while any of them does.
struct MappedSlice {
    region: Arc<Region>,
    off: usize,
    len: usize,
}

impl AsRef<[u8]> for MappedSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range lies inside the mapping (checked in `resident`), which outlives this
        // slice (it holds the region); the bytes were written before the index named them and
        // the file is append-only, so they never change.
        unsafe { std::slice::from_raw_parts(self.region.base.as_ptr().add(self.off), self.len) }
    }
}

/// Whether every page under `off..off+len` of `region` is in the page cache. `mincore` reports
/// the page cache of a file mapping only to a process that may write the file (otherwise it
/// claims every page resident): the store opens its segments read-write.
pub(super) fn pages_resident(region: &Region, off: usize, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let page = page();
    let start = off - off % page;
    let end = (off + len).next_multiple_of(page).min(region.len);
    let mut pages = vec![0u8; (end - start) / page];
    // SAFETY: `start..end` is page-aligned and inside the mapping; `pages` has one byte per page.
    let rc = unsafe {
        libc::mincore(
            region.base.as_ptr().add(start).cast::<libc::c_void>(),
            end - start,
            pages.as_mut_ptr(),
        )
    };
    rc == 0 && pages.iter().all(|p| p & 1 == 1)
}

/// Whether the `len` bytes at `off` of segment region `region` must not be sent now: found
/// corrupt, or no longer all in the page cache (sending them would read the disk unhashed). A
/// segment deleted meanwhile is still sent: its unlinked file keeps the same bytes while open.
pub(super) fn unsendable(region: &Region, off: u64, len: usize) -> bool {
    let off = off as usize;
    region.is_poisoned(off, len) || !pages_resident(region, off, len)
}

/// Whether `data` is a slice of a segment mapping that must not be handed out again: its
/// segment was deleted (holding it would keep the file's disk space), or its pages left the
/// page cache (touching them would read the disk unhashed). Anything else is not stale.
pub fn stale_segment_slice(data: &[u8]) -> bool {
    match locate(data) {
        Some((region, off)) if region.segment => {
            region.is_retired() || unsendable(&region, off, data.len())
        }
        _ => false,
    }
}

/// Whether `data` is a slice of a segment mapping (already sent without a copy).
pub fn is_segment_slice(data: &[u8]) -> bool {
    locate(data).is_some_and(|(region, _)| region.segment)
}

/// Reads `buf.len()` bytes at `off` only if all of them are in the page cache (`RWF_NOWAIT`):
/// `Ok(true)` when `buf` was filled from memory, `Ok(false)` when the disk would be needed
/// (the caller reads and hashes as usual).
pub fn read_cached(file: &File, buf: &mut [u8], off: u64) -> io::Result<bool> {
    match rustix::io::preadv2(
        file,
        &mut [io::IoSliceMut::new(buf)],
        off,
        rustix::io::ReadWriteFlags::NOWAIT,
    ) {
        Ok(n) => Ok(n == buf.len()),
        // Not cached, or a kernel / file system without RWF_NOWAIT for reads.
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::OPNOTSUPP) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Drops `file`'s pages under `off..off+len` (whole pages, rounded outward) from the page cache
/// (clean ones; pages mapped by a process stay); `len` 0: the whole file. For reads that should
/// not displace what is hot, and for bytes that must be read from the disk again.
pub fn forget_pages(file: &File, off: u64, len: u64) {
    let page = page() as u64;
    let start = off - off % page;
    let len = match off.checked_add(len) {
        Some(end) if len > 0 => std::num::NonZeroU64::new(end.next_multiple_of(page) - start),
        _ => None,
    };
    if let Err(e) = rustix::fs::fadvise(file, start, len, rustix::fs::Advice::DontNeed) {
        tracing::debug!(error = %e, "fadvise(POSIX_FADV_DONTNEED) on a segment file");
    }
}

/// Whether any page of `file`'s first `len` bytes is in the page cache. Asked after
/// [`forget_pages`] at open: pages that survive it (a file system that keeps files in memory,
/// such as tmpfs, or pages another process holds mapped) were not hashed by this process.
/// `file` must be open for writing: `mincore` tells the page cache only to a process that may
/// write the file (to others it claims every page resident, which reads here as "kept").
pub fn any_page_resident(file: &File, len: u64) -> io::Result<bool> {
    // Mapped and asked in pieces, so a large file costs a bounded vector.
    const PIECE: u64 = 64 << 20;
    let page = page() as u64;
    let mut off = 0u64;
    let mut pages = Vec::new();
    while off < len {
        let piece = (len - off).min(PIECE);
        let map_len = usize::try_from(piece.next_multiple_of(page))
            .map_err(|_| io::Error::other("segment too large to map"))?;
        // SAFETY: a fresh read-only shared mapping at an address the kernel chooses, only
        // handed to `mincore` (never read) and unmapped below.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                map_len,
                ProtFlags::READ,
                MapFlags::SHARED,
                file,
                off,
            )
        }
        .map_err(io::Error::from)?;
        pages.clear();
        pages.resize(map_len / page as usize, 0u8);
        // SAFETY: `ptr..ptr+map_len` is the page-aligned mapping just made; `pages` has one
        // byte per page.
        let rc = unsafe { libc::mincore(ptr, map_len, pages.as_mut_ptr()) };
        let err = io::Error::last_os_error();
        // SAFETY: the mapping made above, used by nothing else.
        if let Err(e) = unsafe { rustix::mm::munmap(ptr, map_len) } {
            tracing::debug!(error = %e, "munmap of a residency probe");
        }
        if rc != 0 {
            return Err(err);
        }
        if pages.iter().any(|p| p & 1 == 1) {
            return Ok(true);
        }
        off += piece;
    }
    Ok(false)
}

/// Turns read-ahead off for `file`: a read brings in only the pages it asked for, so the page
/// cache holds nothing of a segment that was not written or read (and hashed) by the store.
pub fn no_readahead(file: &File) {
    if let Err(e) = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::Random) {
        tracing::debug!(error = %e, "fadvise(POSIX_FADV_RANDOM) on a segment file");
    }
}

/// Whether files under `dir` live in memory (tmpfs, ramfs): their pages cannot be dropped, so
/// tests of what happens once pages left the page cache cannot run there.
#[cfg(test)]
pub(crate) fn keeps_files_in_memory(dir: &std::path::Path) -> bool {
    let fs = rustix::fs::statfs(dir).expect("statfs of a test directory");
    // `f_type` and the magic numbers differ in width and sign between targets.
    #[allow(clippy::unnecessary_cast)]
    let (kind, tmpfs) = (fs.f_type as i64, libc::TMPFS_MAGIC as i64);
    // ramfs: 0x858458f6 (linux/magic.h; not in the libc crate).
    kind == tmpfs || kind == 0x8584_58f6
}

/// A segment file for tests: `data` written (and synced) into `dir/seg`, opened read-write
/// (which `mincore` needs) with read-ahead off, as the store opens its segments.
#[cfg(test)]
pub(crate) fn test_segment(dir: &std::path::Path, data: &[u8]) -> File {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("seg"))
        .unwrap();
    no_readahead(&file);
    file.write_all(data).unwrap();
    file.sync_all().unwrap();
    file
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn evict(file: &File) {
        file.sync_all().unwrap();
        // Pages still on a CPU's LRU batch, or under writeback, survive one DONTNEED while
        // other tests load the machine: asked again until the first page is gone.
        for _ in 0..50 {
            rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
            if !read_cached(file, &mut [0u8; 1], 0).unwrap() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn resident_bytes_are_mapped_and_evicted_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        if keeps_files_in_memory(dir.path()) {
            eprintln!("skipped: {} keeps files in memory", dir.path().display());
            return;
        }
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let file = test_segment(dir.path(), &data);
        let file = Arc::new(file);
        let map = MappedFile::new(file.clone(), 1 << 20).unwrap();
        // Not touched before the eviction below: pages mapped into a process are not dropped.
        let got = map
            .resident(1000, 200_000)
            .unwrap()
            .expect("just written: resident");
        assert!(is_segment_slice(&got) && !stale_segment_slice(&got));
        let mut buf = vec![0u8; 5000];
        assert!(read_cached(&file, &mut buf, 7).unwrap());
        assert!(buf[..] == data[7..5007]);

        evict(&file);
        assert!(
            map.resident(1000, 200_000).unwrap().is_none(),
            "evicted: not mapped"
        );
        assert!(
            stale_segment_slice(&got),
            "a held slice over evicted pages is stale"
        );
        assert!(
            !read_cached(&file, &mut buf, 7).unwrap(),
            "evicted: the disk is needed"
        );
        // A plain read brings exactly its pages back.
        file.read_exact_at(&mut buf, 7).unwrap();
        assert!(read_cached(&file, &mut buf, 7).unwrap());
        assert!(map.resident(0, 4096).unwrap().is_some());
        assert!(
            map.resident(1000, 200_000).unwrap().is_none(),
            "read-ahead is off"
        );
        let mut all = vec![0u8; data.len()];
        file.read_exact_at(&mut all, 0).unwrap();
        assert!(got[..] == data[1000..201_000] && all == data);

        assert!(map.resident(1 << 20, 1).is_err(), "past the mapping");
        let head = map.resident(0, 4096).unwrap().unwrap();
        assert!(!stale_segment_slice(&head));
        map.poison(4000, 10);
        assert!(stale_segment_slice(&head), "over a range found corrupt");
        let after = map.resident(8192, 4096).unwrap().unwrap();
        assert!(!stale_segment_slice(&after), "elsewhere in the segment");
        map.retire();
        file.read_exact_at(&mut buf, 0).unwrap();
        let again = map.resident(0, 4096).unwrap().unwrap();
        assert!(stale_segment_slice(&again), "retired");
        assert!(!stale_segment_slice(&data[..100]) && !is_segment_slice(&data[..100]));
    }
}
