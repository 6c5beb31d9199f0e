//! Block bytes in append-only segment files; the redb index (in `local.rs`) says where each
//! block lies.
//!
//! Why: redb stores a value of a megabyte in pages rounded up to a power of two, so 1 MiB
//! blocks took twice their size on disk. Appending blocks back to back into files of
//! `segment_size` costs nothing per block (the index holds offset and length), and space
//! comes back by whole files: a segment is rewritten (its live blocks copied forward) or
//! dropped, as log-structured stores do.
//!
//! A segment holds one class of blocks, named in its file name (`{id}.pin.seg` /
//! `{id}.cache.seg`): blocks written for pins (imports, promotions, repairs) or cache entries
//! (blocks fetched from the hot node or the cold tier). Eviction takes cache segments only.
//!
//! Crash safety: bytes are appended before the index entry naming them is committed, and
//! synced before any durable commit that needs them; an index entry is the only thing that
//! makes bytes visible. Bytes appended by a write that never committed are dead space, which
//! compaction reclaims.
//!
//! Reads to serve ([`Segments::read_in_memory`]) trust a large block the page cache holds: this
//! process wrote it after verifying it, or brought it in by a read it hashed (read-ahead is off
//! on segment files, pages an earlier process left are dropped at open, and pages of a block
//! being read and hashed are not trusted before the hash has passed). Where pages survive the
//! drop at open (tmpfs keeps every page; another process may hold some mapped), that segment
//! trusts only blocks this process hashed or wrote. It comes back as a slice
//! of a read-only mapping of the file, which the public listener sends with `sendfile` from the
//! file itself. Small blocks and everything that must come from the disk are hashed by the
//! store on every read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::zero_copy::{
    any_page_resident, forget_pages, no_readahead, read_cached, MappedFile, MIN_ZERO_COPY_BYTES,
};

/// The two kinds of segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Blocks written for pins: never evicted, rewritten only to reclaim dead space or to
    /// hand blocks no pin reaches any more to the cache.
    Pinned,
    /// Blocks kept because they were fetched: evicted oldest segment first, keeping what was
    /// read again.
    Cache,
}

impl Class {
    fn suffix(self) -> &'static str {
        match self {
            Class::Pinned => "pin",
            Class::Cache => "cache",
        }
    }

    fn slot(self) -> usize {
        match self {
            Class::Pinned => 0,
            Class::Cache => 1,
        }
    }
}

/// Where a block's bytes lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    /// Segment id.
    pub seg: u32,
    /// Byte offset in the segment file.
    pub off: u64,
    /// Length in bytes.
    pub len: u32,
}

impl Loc {
    /// Where an empty block lies: nowhere. It takes no bytes and no place in any segment, so
    /// that it never shares an offset with the block appended after it.
    pub const EMPTY: Loc = Loc {
        seg: u32::MAX,
        off: 0,
        len: 0,
    };

    /// Whether this is [`Loc::EMPTY`].
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The 16-byte form kept in the index.
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&self.seg.to_be_bytes());
        out[4..12].copy_from_slice(&self.off.to_be_bytes());
        out[12..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    /// Reads the 16-byte form; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Loc> {
        if bytes.len() != 16 {
            return None;
        }
        Some(Loc {
            seg: u32::from_be_bytes(bytes[..4].try_into().ok()?),
            off: u64::from_be_bytes(bytes[4..12].try_into().ok()?),
            len: u32::from_be_bytes(bytes[12..].try_into().ok()?),
        })
    }
}

/// What bytes found in memory need before they are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing: a large block in the page cache, verified when it got there.
    Trusted,
    /// A hash: a small block (hashing a few KiB costs less than the doubt).
    MustHash,
}

/// One segment file and what the index says of it.
struct Segment {
    file: Arc<File>,
    /// The read-only mapping large reads are served from, made at the first one.
    map: Option<Arc<MappedFile>>,
    class: Class,
    /// Bytes appended (reserved) so far: the file's logical end.
    size: u64,
    /// Bytes of blocks the index names in it (signed: a removal may be counted before the
    /// addition it undoes, when two commits race to report).
    live: i64,
    /// Blocks the index names in it.
    blocks: i64,
    /// `Some` when pages an earlier process left in the page cache survived being dropped at
    /// open (a file system that keeps files in memory, such as tmpfs): only the offsets of
    /// large blocks this process hashed or wrote are trusted from memory then.
    hashed_only: Option<HashSet<u64>>,
}

/// A segment as the space manager sees it.
#[derive(Clone, Copy, Debug)]
pub struct SegmentInfo {
    /// Segment id (ids grow with age).
    pub id: u32,
    /// Its class.
    pub class: Class,
    /// Bytes in the file.
    pub size: u64,
    /// Bytes the index still names.
    pub live: u64,
    /// Whether appends go to it now.
    pub active: bool,
}

#[derive(Default)]
struct State {
    segments: BTreeMap<u32, Segment>,
    active: [Option<u32>; 2],
    next_id: u32,
    /// Segments written to since they were last synced.
    dirty: HashSet<u32>,
    /// Blocks (segment, offset) found corrupt on the disk: the read that found them left their
    /// bad bytes in the page cache, so they are never trusted from there. Bounded: past the
    /// bound, trust in the page cache ends for the whole store until a restart.
    corrupt: HashSet<(u32, u64)>,
    /// Set once `corrupt` was full: no large block is trusted from memory any more.
    distrust_all: bool,
    /// Blocks being read from the disk and hashed: their pages may be in the page cache before
    /// the hash has passed, so they are not trusted from there until it has.
    /// How many readers each one has (two may read one block at once).
    verifying: HashMap<(u32, u64), u32>,
}

/// How many corrupt blocks are remembered before every read is hashed instead.
const MAX_CORRUPT: usize = 1 << 16;

/// Totals over all segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes of all segment files.
    pub file_bytes: u64,
    /// Live bytes in pinned segments.
    pub pinned_bytes: u64,
    /// Live bytes in cache segments.
    pub cache_bytes: u64,
    /// Blocks the index names.
    pub blocks: u64,
    /// Number of segment files.
    pub segments: u64,
}

/// The segment files of one store.
pub struct Segments {
    dir: PathBuf,
    segment_size: u64,
    state: Mutex<State>,
    /// Held while a segment is created, so that appenders that find no room make one, not one
    /// each.
    creating: Mutex<()>,
    /// Held across a sync: a caller whose bytes another caller's sync took waits for that
    /// sync to end instead of returning before its bytes are durable.
    syncing: Mutex<()>,
    /// Whether large blocks are served as slices of a mapping: only where something sends them
    /// with `sendfile` (plain-TCP HTTP/1.1 with zero-copy on); elsewhere a mapping would only
    /// expose reads of evicted pages to `SIGBUS`.
    map_large: std::sync::atomic::AtomicBool,
    /// Makes, for a segment being mapped, how its blocks are read again (hashed) when their
    /// pages leave the page cache while a response waits (set by the store, which has the
    /// index).
    refetcher: std::sync::OnceLock<Box<dyn Fn(u32) -> crate::zero_copy::Refetch + Send + Sync>>,
}

/// Marks a block as being read and hashed until dropped (see `State::verifying`).
pub struct Verifying<'a> {
    segments: &'a Segments,
    at: (u32, u64),
}

impl Verifying<'_> {
    /// The bytes read passed their hash: where pages an earlier process left are not trusted
    /// (see `Segment::hashed_only`), these are from now on.
    pub fn passed(&self) {
        if let Ok(mut s) = self.segments.state.lock() {
            if s.corrupt.contains(&self.at) {
                return;
            }
            if let Some(hashed) = s
                .segments
                .get_mut(&self.at.0)
                .and_then(|seg| seg.hashed_only.as_mut())
            {
                hashed.insert(self.at.1);
            }
        }
    }
}

impl Drop for Verifying<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.segments.state.lock() {
            if let Some(n) = s.verifying.get_mut(&self.at) {
                *n -= 1;
                if *n == 0 {
                    s.verifying.remove(&self.at);
                }
            }
        }
    }
}

/// Drops every page of `file` from the page cache; `true` when some stayed (after a sync and
/// a second try: dirty pages and pages under writeback are not dropped).
fn forget_all_pages(file: &File, size: u64) -> bool {
    forget_pages(file, 0, 0);
    let kept = |file: &File| {
        any_page_resident(file, size).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "residency of a segment file unknown");
            true
        })
    };
    if !kept(file) {
        return false;
    }
    if let Err(e) = file.sync_data() {
        tracing::debug!(error = %e, "sync of a segment file before dropping its pages");
    }
    forget_pages(file, 0, 0);
    kept(file)
}

fn lock_err() -> std::io::Error {
    std::io::Error::other("segment table lock poisoned")
}

impl Segments {
    /// Opens the segment files in `dir` (creating it). Live byte counts start at zero: the
    /// store tells them from its index with [`Segments::count_live`].
    pub fn open(dir: &Path, segment_size: u64) -> std::io::Result<Segments> {
        std::fs::create_dir_all(dir)?;
        let mut state = State::default();
        let mut kept_pages = 0u32;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((id, class)) = parse_name(name) else {
                continue;
            };
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(entry.path())?;
            let size = file.metadata()?.len();
            no_readahead(&file);
            // Pages left in the page cache by an earlier process (or another one) were not
            // hashed by this one, and bytes found corrupt before a restart may sit there: a
            // fresh process trusts only what it reads and hashes, or writes, itself.
            let hashed_only = forget_all_pages(&file, size).then(HashSet::new);
            kept_pages += u32::from(hashed_only.is_some());
            state.next_id = state.next_id.max(id + 1);
            state.segments.insert(
                id,
                Segment {
                    file: Arc::new(file),
                    map: None,
                    class,
                    size,
                    live: 0,
                    blocks: 0,
                    hashed_only,
                },
            );
        }
        if kept_pages > 0 {
            tracing::info!(
                segments = kept_pages,
                "segment pages an earlier process left in memory could not be dropped (a file \
                 system in memory?): their large blocks are hashed once before memory serves them"
            );
        }
        Ok(Segments {
            dir: dir.to_path_buf(),
            segment_size: segment_size.max(1),
            state: Mutex::new(state),
            creating: Mutex::new(()),
            syncing: Mutex::new(()),
            map_large: std::sync::atomic::AtomicBool::new(false),
            refetcher: std::sync::OnceLock::new(),
        })
    }

    /// Counts a live block found in the index at open.
    pub fn count_live(&self, loc: &Loc) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(seg) = s.segments.get_mut(&loc.seg) {
                seg.live += loc.len as i64;
                seg.blocks += 1;
            }
        }
    }

    /// Whether segment `id` exists.
    pub fn exists(&self, id: u32) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| s.segments.contains_key(&id))
    }

    /// Makes sure new segments get ids above `id` (one the index still names).
    pub fn reserve_ids_through(&self, id: u32) {
        if let Ok(mut s) = self.state.lock() {
            s.next_id = s.next_id.max(id.saturating_add(1));
        }
    }

    /// After open: appends continue in the newest segment of each class that has room.
    pub fn resume(&self) {
        let Ok(mut s) = self.state.lock() else { return };
        for class in [Class::Pinned, Class::Cache] {
            let newest = s
                .segments
                .iter()
                .rev()
                .find(|(_, seg)| seg.class == class)
                .map(|(id, seg)| (*id, seg.size));
            if let Some((id, size)) = newest {
                if size < self.segment_size {
                    s.active[class.slot()] = Some(id);
                }
            }
        }
    }

    /// Appends `data` to the active segment of `class` and returns where it lies. The bytes
    /// are not durable until [`Segments::sync_dirty`].
    pub fn append(&self, class: Class, data: &[u8]) -> std::io::Result<Loc> {
        let len = u32::try_from(data.len())
            .map_err(|_| std::io::Error::other("block larger than 4 GiB"))?;
        if len == 0 {
            return Ok(Loc::EMPTY);
        }
        let (file, loc) = match self.reserve(class, len)? {
            Some(found) => found,
            None => self.reserve_in_new(class, len)?,
        };
        // Written outside the lock: appends reserve disjoint ranges. The segment is marked for
        // syncing once its bytes are written, so that a sync never runs ahead of them.
        file.write_all_at(data, loc.off)?;
        if let Ok(mut s) = self.state.lock() {
            s.dirty.insert(loc.seg);
            // Written by this process from verified bytes: trusted like any block it writes.
            if let Some(hashed) = s
                .segments
                .get_mut(&loc.seg)
                .and_then(|seg| seg.hashed_only.as_mut())
            {
                hashed.insert(loc.off);
            }
        }
        Ok(loc)
    }

    /// Reserves `len` bytes at the end of the active segment of `class`, if it has room.
    fn reserve(&self, class: Class, len: u32) -> std::io::Result<Option<(Arc<File>, Loc)>> {
        let mut s = self.state.lock().map_err(|_| lock_err())?;
        let Some(id) = s.active[class.slot()] else {
            return Ok(None);
        };
        let Some(seg) = s.segments.get_mut(&id) else {
            return Ok(None);
        };
        // A block larger than a segment gets an empty one of its own.
        if seg.size != 0 && seg.size + u64::from(len) > self.segment_size {
            return Ok(None);
        }
        let loc = Loc {
            seg: id,
            off: seg.size,
            len,
        };
        seg.size += u64::from(len);
        Ok(Some((seg.file.clone(), loc)))
    }

    /// Reserves `len` bytes in a new segment of `class`, made outside the table's lock
    /// (creating a file and syncing its directory take disk time, which reads to serve must not
    /// wait for); in the active one instead when another appender made it meanwhile.
    fn reserve_in_new(&self, class: Class, len: u32) -> std::io::Result<(Arc<File>, Loc)> {
        let _one = self.creating.lock().map_err(|_| lock_err())?;
        if let Some(found) = self.reserve(class, len)? {
            return Ok(found);
        }
        let id = {
            let mut s = self.state.lock().map_err(|_| lock_err())?;
            let id = s.next_id;
            // Taken even if creating fails: a file left behind never blocks the next id.
            s.next_id = id + 1;
            id
        };
        let file = Arc::new(self.create(id, class)?);
        let mut s = self.state.lock().map_err(|_| lock_err())?;
        s.segments.insert(
            id,
            Segment {
                file: file.clone(),
                map: None,
                class,
                size: u64::from(len),
                live: 0,
                blocks: 0,
                hashed_only: None,
            },
        );
        s.active[class.slot()] = Some(id);
        Ok((
            file,
            Loc {
                seg: id,
                off: 0,
                len,
            },
        ))
    }

    /// Creates the file of segment `id`, its name durable.
    fn create(&self, id: u32, class: Class) -> std::io::Result<File> {
        let path = self.dir.join(file_name(id, class));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // The new name must survive a crash once blocks in it are committed.
        File::open(&self.dir)?.sync_all()?;
        no_readahead(&file);
        Ok(file)
    }

    /// Makes every appended byte durable (before a durable index commit that names it).
    pub fn sync_dirty(&self) -> std::io::Result<()> {
        let _one = self.syncing.lock().map_err(|_| lock_err())?;
        let files: Vec<(u32, Arc<File>)> = {
            let mut s = self.state.lock().map_err(|_| lock_err())?;
            let ids: Vec<u32> = s.dirty.drain().collect();
            ids.iter()
                .filter_map(|id| s.segments.get(id).map(|seg| (*id, seg.file.clone())))
                .collect()
        };
        for (i, (_, f)) in files.iter().enumerate() {
            if let Err(e) = f.sync_data() {
                // Not durable: whoever syncs next tries these again.
                if let Ok(mut s) = self.state.lock() {
                    s.dirty.extend(files[i..].iter().map(|(id, _)| *id));
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// The file and class of segment `id`; `None` when it is gone.
    fn file_of(&self, id: u32) -> std::io::Result<Option<(Arc<File>, Class)>> {
        let s = self.state.lock().map_err(|_| lock_err())?;
        Ok(s.segments.get(&id).map(|seg| (seg.file.clone(), seg.class)))
    }

    /// Reads the bytes at `loc`; `Ok(None)` when the segment is gone (it was dropped after the
    /// caller read the index; reading the index again finds the block's new place).
    pub fn read(&self, loc: &Loc) -> std::io::Result<Option<(Bytes, Class)>> {
        if loc.is_empty() {
            return Ok(Some((Bytes::new(), Class::Pinned)));
        }
        let Some((file, class)) = self.file_of(loc.seg)? else {
            return Ok(None);
        };
        let mut buf = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut buf, loc.off)?;
        Ok(Some((Bytes::from(buf), class)))
    }

    /// Sets how mapped segments' blocks are read again (see `refetcher`).
    pub fn set_refetcher(&self, make: Box<dyn Fn(u32) -> crate::zero_copy::Refetch + Send + Sync>) {
        let _ = self.refetcher.set(make);
    }

    /// Serves large blocks from segment mappings (see `map_large`).
    pub fn set_map_large(&self, on: bool) {
        self.map_large
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The bytes at `loc` if the page cache holds them all, without waiting for the disk (so
    /// it may run on an async worker); `Ok(None)` otherwise, or when the segment is gone. `Found::Trusted`: a large block as a slice of the segment's mapping, its
    /// pages resident and not under suspicion, served without a hash. `Found::MustHash`: a
    /// copy of a small block, which the caller hashes.
    pub fn read_in_memory(&self, loc: &Loc) -> std::io::Result<Option<(Bytes, Class, Found)>> {
        if loc.is_empty() {
            return Ok(Some((Bytes::new(), Class::Pinned, Found::Trusted)));
        }
        let len = loc.len as usize;
        let large = len >= MIN_ZERO_COPY_BYTES;
        if large && !self.map_large.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
        }
        // Waited for on the async worker: the table's lock covers bookkeeping only (no file
        // is created, synced or read under it). Giving up when it was busy sent large blocks
        // to hashed copies under load, where they should leave by `sendfile`.
        let guard = self.state.lock().map_err(|_| lock_err())?;
        let at = (loc.seg, loc.off);
        let suspect =
            guard.distrust_all || guard.corrupt.contains(&at) || guard.verifying.contains_key(&at);
        if large && suspect {
            return Ok(None);
        }
        let Some(seg) = guard.segments.get(&loc.seg) else {
            return Ok(None);
        };
        if large
            && seg
                .hashed_only
                .as_ref()
                .is_some_and(|h| !h.contains(&loc.off))
        {
            return Ok(None);
        }
        let (file, map, class, size) = (seg.file.clone(), seg.map.clone(), seg.class, seg.size);
        drop(guard);
        if !large {
            let mut buf = vec![0u8; len];
            return Ok(read_cached(&file, &mut buf, loc.off)?
                .then(|| (Bytes::from(buf), class, Found::MustHash)));
        }
        let map = match map {
            Some(m) => m,
            None => match self.map_segment(loc.seg, file, size) {
                Some(m) => m,
                None => return Ok(None),
            },
        };
        let Some(bytes) = map.resident(loc.off, len)? else {
            return Ok(None);
        };
        // Asked again after the pages were found resident: a hashed read that brought them in
        // registers before it reads, so a block it is still hashing (or found corrupt) is seen
        // here, however the two interleave.
        let still_trusted = {
            let s = self.state.lock().map_err(|_| lock_err())?;
            !(s.distrust_all || s.corrupt.contains(&at) || s.verifying.contains_key(&at))
        };
        Ok(still_trusted.then_some((bytes, class, Found::Trusted)))
    }

    /// Maps segment `id` (outside the table's lock: mapping takes system calls) and keeps the
    /// mapping unless another reader made one meanwhile.
    fn map_segment(&self, id: u32, file: Arc<File>, size: u64) -> Option<Arc<MappedFile>> {
        // Large enough for every byte the segment will ever hold: it grows up to the segment
        // size, or holds one block larger than that.
        let made = match MappedFile::new(file, self.segment_size.max(size)) {
            Ok(m) => {
                if let Some(make) = self.refetcher.get() {
                    m.set_refetch(make(id));
                }
                Arc::new(m)
            }
            Err(e) => {
                tracing::debug!(error = %e, segment = id, "segment not mapped");
                return None;
            }
        };
        let mut s = self.state.lock().ok()?;
        let seg = s.segments.get_mut(&id)?;
        Some(seg.map.get_or_insert(made).clone())
    }

    /// Reads the bytes at `loc` from wherever they are, marking them as being verified until
    /// the returned guard drops: the caller hashes them meanwhile. `forget`: drop the pages the
    /// read brought in from the disk (the scrub, which must not push the hot set out).
    pub fn read_verifying(
        &self,
        loc: &Loc,
        forget: bool,
    ) -> std::io::Result<Option<(Bytes, Class, Verifying<'_>)>> {
        let at = (loc.seg, loc.off);
        if loc.is_empty() {
            // Nothing to read, so nothing to mark: the guard removes an entry never made.
            return Ok(Some((
                Bytes::new(),
                Class::Pinned,
                Verifying { segments: self, at },
            )));
        }
        let (file, class) = {
            let mut s = self.state.lock().map_err(|_| lock_err())?;
            let Some(found) = s
                .segments
                .get(&loc.seg)
                .map(|seg| (seg.file.clone(), seg.class))
            else {
                return Ok(None);
            };
            *s.verifying.entry(at).or_insert(0) += 1;
            found
        };
        let guard = Verifying { segments: self, at };
        let mut buf = vec![0u8; loc.len as usize];
        if !(forget && read_cached(&file, &mut buf, loc.off)?) {
            file.read_exact_at(&mut buf, loc.off)?;
            if forget {
                forget_pages(&file, loc.off, loc.len.into());
            }
        }
        Ok(Some((Bytes::from(buf), class, guard)))
    }

    /// Remembers that the bytes at `loc` failed their hash: reads to serve hash them from now on,
    /// and slices of them cached in memory are dropped when next found.
    pub fn mark_corrupt(&self, loc: &Loc) {
        let Ok(mut s) = self.state.lock() else { return };
        if s.corrupt.contains(&(loc.seg, loc.off)) {
            return;
        }
        let mut file = None;
        if let Some(seg) = s.segments.get_mut(&loc.seg) {
            if let Some(map) = &seg.map {
                map.poison(loc.off, loc.len as usize);
            }
            if let Some(hashed) = seg.hashed_only.as_mut() {
                hashed.remove(&loc.off);
            }
            file = Some(seg.file.clone());
        }
        Self::note_corrupt(&mut s, loc);
        drop(s);
        // The next read goes to the disk (and fails its hash) rather than to the bad bytes the
        // failed read left in memory, in this process or the next. Outside the table's lock:
        // dropping pages may wait for the kernel.
        if let Some(file) = file {
            forget_pages(&file, loc.off, loc.len.into());
        }
    }

    /// Remembers `loc` as corrupt, or distrusts every page once too many are.
    fn note_corrupt(s: &mut State, loc: &Loc) {
        if s.corrupt.len() < MAX_CORRUPT {
            s.corrupt.insert((loc.seg, loc.off));
        } else if !s.distrust_all {
            s.distrust_all = true;
            tracing::error!(
                "too many corrupt blocks: no block is trusted from memory any more until a restart"
            );
        }
    }

    /// The class of segment `id`, if it exists.
    pub fn class_of(&self, id: u32) -> Option<Class> {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.segments.get(&id).map(|seg| seg.class))
    }

    /// Applies index changes that committed: `+1` a block now named at `loc`, `-1` one no
    /// longer named there.
    pub fn account(&self, changes: &[(Loc, i8)]) {
        let Ok(mut s) = self.state.lock() else { return };
        for (loc, sign) in changes {
            if let Some(seg) = s.segments.get_mut(&loc.seg) {
                seg.live += loc.len as i64 * *sign as i64;
                seg.blocks += *sign as i64;
            }
        }
    }

    /// Totals over all segments.
    pub fn totals(&self) -> Totals {
        let Ok(s) = self.state.lock() else {
            return Totals::default();
        };
        let mut t = Totals::default();
        for seg in s.segments.values() {
            t.file_bytes += seg.size;
            t.blocks += seg.blocks.max(0) as u64;
            t.segments += 1;
            match seg.class {
                Class::Pinned => t.pinned_bytes += seg.live.max(0) as u64,
                Class::Cache => t.cache_bytes += seg.live.max(0) as u64,
            }
        }
        t
    }

    /// Every segment, oldest first.
    pub fn list(&self) -> Vec<SegmentInfo> {
        let Ok(s) = self.state.lock() else {
            return Vec::new();
        };
        s.segments
            .iter()
            .map(|(id, seg)| SegmentInfo {
                id: *id,
                class: seg.class,
                size: seg.size,
                live: seg.live.max(0) as u64,
                active: s.active[seg.class.slot()] == Some(*id),
            })
            .collect()
    }

    /// Stops appending to segment `id` (before it is rewritten).
    pub fn seal(&self, id: u32) {
        if let Ok(mut s) = self.state.lock() {
            for slot in s.active.iter_mut() {
                if *slot == Some(id) {
                    *slot = None;
                }
            }
        }
    }

    /// Deletes segment `id`: the index names nothing in it any more. Readers that still hold
    /// its file finish their read (an unlinked file stays readable while open).
    pub fn remove(&self, id: u32) -> std::io::Result<()> {
        let segment = {
            let mut s = self.state.lock().map_err(|_| lock_err())?;
            for slot in s.active.iter_mut() {
                if *slot == Some(id) {
                    *slot = None;
                }
            }
            s.dirty.remove(&id);
            s.corrupt.retain(|(seg, _)| *seg != id);
            match s.segments.remove(&id) {
                Some(seg) => seg,
                None => return Ok(()),
            }
        };
        if let Some(map) = &segment.map {
            map.retire();
        }
        let class = segment.class;
        // Dropped outside the table's lock: it may unmap the segment and close its file.
        drop(segment);
        match std::fs::remove_file(self.dir.join(file_name(id, class))) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn file_name(id: u32, class: Class) -> String {
    format!("{id:010}.{}.seg", class.suffix())
}

fn parse_name(name: &str) -> Option<(u32, Class)> {
    let stem = name.strip_suffix(".seg")?;
    let (id, class) = stem.split_once('.')?;
    let class = match class {
        "pin" => Class::Pinned,
        "cache" => Class::Cache,
        _ => return None,
    };
    Some((id.parse().ok()?, class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_roll_over_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let segs = Segments::open(dir.path(), 10).unwrap();
        let a = segs.append(Class::Pinned, b"0123456").unwrap();
        let b = segs.append(Class::Pinned, b"abcdef").unwrap();
        let c = segs.append(Class::Cache, b"cache").unwrap();
        assert_eq!((a.seg, a.off), (0, 0));
        assert_ne!(b.seg, a.seg, "did not fit: a new segment");
        assert_ne!(c.seg, b.seg, "classes never share a segment");
        // A block larger than a segment gets one of its own.
        let big = segs.append(Class::Pinned, &[7u8; 25]).unwrap();
        assert_eq!(big.off, 0);
        segs.sync_dirty().unwrap();
        segs.account(&[(a, 1), (b, 1), (c, 1), (big, 1)]);
        let t = segs.totals();
        assert_eq!(t.file_bytes, 7 + 6 + 5 + 25);
        assert_eq!((t.pinned_bytes, t.cache_bytes, t.blocks), (38, 5, 4));
        drop(segs);
        let segs = Segments::open(dir.path(), 10).unwrap();
        assert_eq!(&segs.read(&b).unwrap().unwrap().0[..], b"abcdef");
        assert_eq!(segs.append(Class::Cache, b"").unwrap(), Loc::EMPTY);
        assert_eq!(segs.read(&Loc::EMPTY).unwrap().unwrap().0.len(), 0);
        assert_eq!(segs.class_of(c.seg), Some(Class::Cache));
        segs.remove(a.seg).unwrap();
        assert_eq!(segs.read(&a).unwrap(), None);
        assert_eq!(Loc::decode(&big.encode()), Some(big));
    }

    /// Appenders racing across roll-overs (segments made outside the table's lock) get
    /// disjoint places in segments no larger than the segment size, and every block reads back.
    #[test]
    fn appends_from_many_threads_share_new_segments() {
        let dir = tempfile::tempdir().unwrap();
        let segs = Arc::new(Segments::open(dir.path(), 4096).unwrap());
        let block = |t: usize, i: usize| vec![(t * 31 + i) as u8; 100 + (t * 97 + i * 13) % 900];
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let segs = segs.clone();
                std::thread::spawn(move || {
                    (0..150)
                        .map(|i| (t, i, segs.append(Class::Cache, &block(t, i)).unwrap()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        segs.sync_dirty().unwrap();
        for (t, i, loc) in &all {
            assert!(segs.read(loc).unwrap().unwrap().0 == block(*t, *i));
        }
        all.sort_by_key(|(_, _, l)| (l.seg, l.off));
        for pair in all.windows(2) {
            let (a, b) = (pair[0].2, pair[1].2);
            assert!(
                a.seg != b.seg || a.off + u64::from(a.len) <= b.off,
                "{a:?} {b:?}"
            );
        }
        let mut files = 0;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let len = entry.unwrap().metadata().unwrap().len();
            assert!(len > 0 && len <= 4096, "a segment of {len} bytes");
            files += 1;
        }
        assert_eq!(files, segs.totals().segments);
    }

    fn trusted(segs: &Segments, loc: &Loc) -> bool {
        matches!(
            segs.read_in_memory(loc).unwrap(),
            Some((_, _, Found::Trusted))
        )
    }

    /// Pages an earlier process left that cannot be dropped at open (here: held mapped by
    /// another holder, which `POSIX_FADV_DONTNEED` leaves alone, as tmpfs leaves every page)
    /// are not trusted before this process hashed them; blocks it hashes or writes are.
    #[cfg(target_os = "linux")]
    #[test]
    fn pages_an_earlier_process_left_are_trusted_only_once_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..256u32 << 10).map(|i| (i % 251) as u8).collect();
        let segs = Segments::open(dir.path(), 4 << 20).unwrap();
        segs.set_map_large(true);
        let a = segs.append(Class::Pinned, &data).unwrap();
        let b = segs.append(Class::Pinned, &data).unwrap();
        segs.sync_dirty().unwrap();
        assert!(trusted(&segs, &a), "written by this process");
        drop(segs);

        // Another holder maps the segment and touches every page of it.
        let path = dir.path().join(file_name(a.seg, Class::Pinned));
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        let held = MappedFile::new(file, 2 * data.len() as u64).unwrap();
        let touched = held.resident(0, 2 * data.len()).unwrap().unwrap();
        std::hint::black_box(touched.iter().map(|&x| u64::from(x)).sum::<u64>());

        let segs = Segments::open(dir.path(), 4 << 20).unwrap();
        segs.set_map_large(true);
        segs.resume();
        assert!(
            !trusted(&segs, &a) && !trusted(&segs, &b),
            "left by another"
        );
        // Hashed by this process: trusted from then on; the other block still is not.
        let (bytes, _, verifying) = segs.read_verifying(&a, false).unwrap().unwrap();
        assert!(bytes == data);
        verifying.passed();
        drop(verifying);
        assert!(trusted(&segs, &a) && !trusted(&segs, &b));
        // A block found corrupt is not trusted again, whatever passed before.
        segs.mark_corrupt(&a);
        assert!(!trusted(&segs, &a));
        // Appended by this process into the same segment: trusted.
        let c = segs.append(Class::Pinned, &data).unwrap();
        assert_eq!(c.seg, a.seg, "appends resume in the segment");
        assert!(trusted(&segs, &c));
    }
}
