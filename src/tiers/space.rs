//! Space management of the store: the disk budget (`store.max_size`), eviction of cache
//! entries, garbage collection, and compaction of dead space.
//!
//! - Every block a pin reaches lives in a pinned segment: imports and promotions write there,
//!   and move a block they find in a cache segment there. Eviction therefore takes cache
//!   segments only, oldest first, and keeps (copies forward) what was read since it was written
//!   (a FIFO with reinsertion, which comes close to LRU without a write per read).
//! - Garbage collection marks what the pins reach; blocks in pinned segments that no pin reaches
//!   (unpinned or demoted DAGs) move to cache segments, where eviction takes them in turn. The
//!   mark holds no lock (writers go on); the sweep runs under the writer lock, first marking the
//!   pins made during the mark, and each move commits only when no pin changed since, so a crash
//!   or a pin made meanwhile never costs a pinned block.
//! - Compaction rewrites the segment with the most dead bytes (blocks dropped or moved, writes
//!   that never committed) until dead bytes are under `max_dead_ratio` of the live ones.
//!
//! Every rewrite appends the blocks it keeps, syncs them, then switches the index in one
//! durable transaction, then deletes the old file: a crash at any point leaves each block
//! named in exactly one place that holds it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use cid::Cid;
use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;

use super::local::{read_key, LocalStore, StoreError, BY_SEGMENT, INDEX};
use super::segments::{Class, Loc, SegmentInfo};
use crate::ipld::{codec, Block, CBOR, JSON, RAW};

/// Meta key of the "collected" mark: `[1]` when the last garbage collection saw the pins as
/// they are now.
pub(super) const COLLECTED_KEY: &str = "gc.collected";

/// Counters and the wake-up of the maintenance task.
#[derive(Default)]
pub struct SpaceState {
    wake: tokio::sync::Notify,
    /// Cache entries evicted.
    pub evicted_blocks: AtomicU64,
    /// Bytes of cache entries evicted.
    pub evicted_bytes: AtomicU64,
    /// Bytes copied forward by eviction because they were read again.
    pub reinserted_bytes: AtomicU64,
    /// Bytes copied by compaction.
    pub compacted_bytes: AtomicU64,
    /// Garbage collections that ran to the end.
    pub gc_runs: AtomicU64,
    /// Bytes garbage collection handed from pins to the cache.
    pub released_bytes: AtomicU64,
    /// Bytes of fetched blocks not kept because the budget had no room.
    pub cache_skipped_bytes: AtomicU64,
    /// Bytes the scrub hashed.
    pub scrubbed_bytes: AtomicU64,
    /// Blocks the scrub found corrupt or unreadable.
    pub scrub_corrupt: AtomicU64,
    /// Scrub passes over the whole store that ran to the end.
    pub scrub_passes: AtomicU64,
    /// The pin generation of the last garbage collection (`None`: none yet).
    pub(super) gc_generation: std::sync::Mutex<Option<u64>>,
    /// Mirrors the store's persisted "collected" mark: the last collection saw the pins as
    /// they are (so a restart need not mark everything again). Cleared, durably, before any
    /// change that could leave a pinned-class block unreached. A mutex, not an atomic: a
    /// second change must wait until the first one's clearing is on disk.
    pub(super) collected: std::sync::Mutex<bool>,
    /// One rewrite of segments at a time (the maintenance task, and the cache writer making
    /// room).
    rewriting: std::sync::Mutex<()>,
    /// One garbage collection mark at a time (they share the scratch file).
    marking: std::sync::Mutex<()>,
    /// Marks begun.
    pub(super) marks: AtomicU64,
    /// After a mark that could not read a pinned block: the pin generation it failed at, when
    /// scheduled passes may mark again, and the wait after the next failure.
    mark_backoff: std::sync::Mutex<Option<(u64, std::time::Instant, std::time::Duration)>>,
}

/// The first wait before marking again after a mark failed on an unreadable pinned block, and
/// the longest (doubling in between): a mark reads every pinned block, so retrying it every
/// pass would keep the disk busy for nothing until the block is repaired or unpinned.
const MARK_RETRY: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_secs(60),
    std::time::Duration::from_secs(3600),
);

impl SpaceState {
    /// A pinned block was repaired: a collection waiting after a mark that could not read one
    /// may mark again at once.
    pub(super) fn repaired(&self) {
        if let Ok(mut b) = self.mark_backoff.lock() {
            *b = None;
        }
    }

    /// Wakes the maintenance task when the segment files pass the high watermark.
    pub fn wake_if_over(&self, store: &LocalStore) {
        let o = store.options();
        if o.max_size > 0 && store.totals().file_bytes as f64 > o.max_size as f64 * o.high_watermark
        {
            self.wake.notify_one();
        }
    }

    /// A fetched block was not kept: no room in the budget.
    pub fn note_cache_skip(&self, bytes: u64) {
        self.cache_skipped_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Resolves when a write passed the high watermark.
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

/// What one maintenance pass did.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Cache segments evicted.
    pub evicted_segments: u64,
    /// Cache entries dropped.
    pub evicted_blocks: u64,
    /// Bytes dropped.
    pub evicted_bytes: u64,
    /// Bytes kept by eviction because they were read again.
    pub reinserted_bytes: u64,
    /// Segments rewritten to reclaim dead bytes.
    pub compacted_segments: u64,
    /// Whether a garbage collection ran.
    pub gc: bool,
    /// Bytes no pin reaches that went to the cache.
    pub released_bytes: u64,
    /// Whether pinned blocks alone keep the store over its high watermark.
    pub over_budget: bool,
}

fn lock_poisoned() -> StoreError {
    StoreError::Db("a store lock was poisoned".into())
}

/// What happens to one block of a segment being rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Copied to a segment of this class.
    Keep(Class),
    /// Left where it is (the segment stays while anything is left in it).
    Stay,
    /// Forgotten.
    Drop,
}

/// A block of a segment, per the `BY_SEGMENT` table.
struct Entry {
    loc: Loc,
    key: Vec<u8>,
}

impl LocalStore {
    /// One maintenance pass (blocking): garbage collection when the pins changed, eviction
    /// down to the low watermark when over the high one, then compaction.
    pub fn maintain(&self) -> Result<MaintenanceReport, StoreError> {
        self.maintain_with(false)
    }

    /// [`Self::maintain`] as the maintenance task runs it: a collection whose last mark failed
    /// on an unreadable pinned block waits (`MARK_RETRY`, doubling) before it marks again,
    /// unless the pins changed. An operator's `store maintain` always marks.
    pub fn maintain_scheduled(&self) -> Result<MaintenanceReport, StoreError> {
        self.maintain_with(true)
    }

    fn maintain_with(&self, back_off: bool) -> Result<MaintenanceReport, StoreError> {
        // The mark, the long part of a collection (~8 s per million pinned blocks), holds
        // neither the writer lock nor the rewrite lock: imports, promotions and the cache
        // writer's evictions go on while it runs.
        let marked = self.mark_for_collection(back_off).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "garbage collection's mark failed; the next pass tries again");
            None
        });
        let _one = self.space.rewriting.lock().map_err(|_| lock_poisoned())?;
        let mut report = MaintenanceReport::default();
        // A collection that fails (its scratch mark cannot be written on a full disk) does not
        // keep compaction and eviction, which free space, from running.
        if let Some(marked) = marked {
            if let Err(e) = self.collect_garbage(marked, &mut report) {
                tracing::warn!(error = %e, "garbage collection failed; the next pass tries again");
            }
        }
        // Dead bytes first: reclaiming them may be all the budget needs.
        self.compact(&mut report)?;
        if self.over(self.options.high_watermark) {
            let low = (self.options.max_size as f64 * self.options.low_watermark) as u64;
            self.evict_down_to(low, &mut report)?;
        }
        Ok(report)
    }

    /// Makes room for `incoming` bytes of cache entries when they would pass the high
    /// watermark: evicts down to the low watermark (or lower, for a large batch). Run by the
    /// cache writer, behind the responses.
    pub fn make_room(&self, incoming: u64) -> Result<(), StoreError> {
        let o = &self.options;
        if o.max_size == 0 {
            return Ok(());
        }
        let high = (o.max_size as f64 * o.high_watermark) as u64;
        if self.totals().file_bytes + incoming <= high {
            return Ok(());
        }
        // While the maintenance task rewrites (it may wait for an import), the writer does not
        // wait for it: blocks that do not fit are not kept this time.
        let Ok(_one) = self.space.rewriting.try_lock() else {
            return Ok(());
        };
        // Down to the low watermark, lower for a batch that would not fit there, but never
        // below half the budget for one batch.
        let low = ((o.max_size as f64 * o.low_watermark) as u64)
            .min(o.max_size.saturating_sub(incoming))
            .max(o.max_size / 2);
        let mut report = MaintenanceReport::default();
        self.evict_down_to(low, &mut report)
    }

    /// Waits for a reason to run [`Self::maintain`]: a write past the high watermark, or
    /// `every`.
    pub async fn maintenance_due(&self, every: std::time::Duration) {
        tokio::select! {
            _ = self.space.woken() => {}
            _ = tokio::time::sleep(every) => {}
        }
    }

    /// The counters of space management.
    pub fn space(&self) -> &SpaceState {
        &self.space
    }

    fn entries_of(&self, seg: u32) -> Result<Vec<Entry>, StoreError> {
        let tx = self.db.begin_read()?;
        let by_segment = tx.open_table(BY_SEGMENT)?;
        let mut out = Vec::new();
        for item in by_segment.range((seg, 0)..(seg.saturating_add(1), 0))? {
            let (k, v) = item?;
            let (seg, off) = k.value();
            let v = v.value();
            if v.len() < 4 {
                continue;
            }
            let len = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
            out.push(Entry {
                loc: Loc { seg, off, len },
                key: v[4..].to_vec(),
            });
        }
        Ok(out)
    }

    /// Rewrites segment `seg`: each block gets its fate; kept blocks are copied to a segment
    /// of their class, the index switched durably, and the file deleted once nothing in it is
    /// named. `guard` runs inside the commit (under the pin generation lock when the caller
    /// needs it) and may refuse the commit. Returns (bytes kept, blocks and bytes dropped),
    /// or `None` when the commit was refused.
    fn rewrite(
        &self,
        seg: u32,
        fate: &mut dyn FnMut(&Entry) -> Fate,
        guard: Option<u64>,
    ) -> Result<Option<(u64, u64, u64)>, StoreError> {
        let entries = self.entries_of(seg)?;
        let fates: Vec<Fate> = entries.iter().map(&mut *fate).collect();
        // A segment that empties goes: nothing more is appended to it.
        if !fates.contains(&Fate::Stay) {
            self.segments.seal(seg);
        }
        let mut moves: Vec<(Vec<u8>, Loc, Loc)> = Vec::new();
        let mut drops: Vec<(Vec<u8>, Loc)> = Vec::new();
        for (e, fate) in entries.iter().zip(fates) {
            match fate {
                Fate::Stay => {}
                Fate::Drop => drops.push((e.key.clone(), e.loc)),
                Fate::Keep(class) => {
                    // Marked as being verified until the hash below: pages this read brings
                    // in are not trusted by a read to serve before then.
                    let (data, _verifying) = match self.segments.read_verifying(&e.loc, true) {
                        Ok(Some((data, _, verifying))) => (data, verifying),
                        Ok(None) => continue,
                        // A cache entry that cannot be read is only a copy: it goes.
                        Err(err) if self.segments.class_of(seg) == Some(Class::Cache) => {
                            tracing::warn!(segment = seg, error = %err, "dropping an unreadable cache entry");
                            drops.push((e.key.clone(), e.loc));
                            continue;
                        }
                        // A pinned one stays where it is (the scrub finds and repairs it); this
                        // segment is left for another time.
                        Err(err) => {
                            tracing::error!(segment = seg, error = %err, "a pinned block cannot be read; the segment is not rewritten");
                            return Ok(None);
                        }
                    };
                    // Only verified bytes are copied: a corrupt block is dropped here rather
                    // than carried forward (a read would refuse it anyway).
                    let Ok(mh) = cid::multihash::Multihash::<64>::from_bytes(&e.key) else {
                        drops.push((e.key.clone(), e.loc));
                        continue;
                    };
                    if Block::verified(Cid::new_v1(RAW, mh), data.clone()).is_err() {
                        self.segments.mark_corrupt(&e.loc);
                        tracing::error!(
                            segment = seg,
                            offset = e.loc.off,
                            "dropping a corrupt block during a segment rewrite"
                        );
                        drops.push((e.key.clone(), e.loc));
                        continue;
                    }
                    let new = self.segments.append(class, &data).map_err(StoreError::Io)?;
                    moves.push((e.key.clone(), e.loc, new));
                }
            }
        }
        self.segments.sync_dirty()?;
        let commit = || -> Result<Vec<(Loc, i8)>, StoreError> {
            let tx = self.db.begin_write()?;
            let mut changes = Vec::new();
            for (key, old, new) in &moves {
                let current = {
                    let index = tx.open_table(INDEX)?;
                    let v = index
                        .get(key.as_slice())?
                        .and_then(|v| Loc::decode(v.value()));
                    v
                };
                // Moved or dropped meanwhile: the copy is dead space.
                if current != Some(*old) {
                    continue;
                }
                let (placed, replaced) = self.relink(&tx, key, *new)?;
                changes.push((placed, 1));
                if let Some(r) = replaced {
                    changes.push((r, -1));
                }
            }
            for (key, old) in &drops {
                if let Some(l) = self.unplace(&tx, key, Some(*old))? {
                    changes.push((l, -1));
                }
            }
            tx.commit()?;
            Ok(changes)
        };
        let changes = match guard {
            Some(generation) => {
                let current = self.pin_generation.lock().map_err(|_| lock_poisoned())?;
                if *current != generation {
                    return Ok(None);
                }
                commit()?
            }
            None => commit()?,
        };
        self.segments.account(&changes);
        if self.entries_of(seg)?.is_empty() {
            self.segments.remove(seg)?;
        }
        let kept = moves.iter().map(|(_, _, n)| n.len as u64).sum();
        let dropped_bytes = drops.iter().map(|(_, l)| l.len as u64).sum();
        Ok(Some((kept, drops.len() as u64, dropped_bytes)))
    }

    /// Points the index entry of `key` at `new` (bytes already appended there).
    fn relink(
        &self,
        tx: &redb::WriteTransaction,
        key: &[u8],
        new: Loc,
    ) -> Result<(Loc, Option<Loc>), StoreError> {
        let mut index = tx.open_table(INDEX)?;
        let mut by_segment = tx.open_table(BY_SEGMENT)?;
        let old = index
            .insert(key, new.encode().as_slice())?
            .and_then(|v| Loc::decode(v.value()));
        if let Some(old) = old {
            by_segment.remove((old.seg, old.off))?;
        }
        let mut entry = new.len.to_be_bytes().to_vec();
        entry.extend_from_slice(key);
        by_segment.insert((new.seg, new.off), entry.as_slice())?;
        Ok((new, old))
    }

    fn over(&self, share: f64) -> bool {
        let max = self.options.max_size;
        max > 0 && self.totals().file_bytes as f64 > max as f64 * share
    }

    /// Evicts cache segments, oldest first, until the segment files take at most `target`.
    fn evict_down_to(&self, target: u64, report: &mut MaintenanceReport) -> Result<(), StoreError> {
        while self.totals().file_bytes > target {
            // The oldest cache segment; the one being written only when no other is left.
            let cache: Vec<SegmentInfo> = self
                .segments
                .list()
                .into_iter()
                .filter(|s| s.class == Class::Cache)
                .collect();
            let victim = cache.iter().find(|s| !s.active).or(cache.first()).copied();
            let Some(victim) = victim else {
                // Pinned blocks alone (and dead bytes compaction will take) fill the budget.
                report.over_budget = true;
                tracing::warn!(
                    max_size = self.options.max_size,
                    "the store is over its high watermark with no cache entries left to evict"
                );
                return Ok(());
            };
            // Keep at most half of a segment, so that every eviction frees space.
            let mut keep_budget = victim.size / 2;
            let reads = &self.reads;
            let mut fate = |e: &Entry| {
                let k = read_key(&e.key);
                let mut reads = match reads.lock() {
                    Ok(r) => r,
                    Err(_) => return Fate::Drop,
                };
                match reads.get_mut(&k) {
                    Some(n) if *n > 0 && (e.loc.len as u64) <= keep_budget => {
                        *n -= 1;
                        keep_budget -= e.loc.len as u64;
                        Fate::Keep(Class::Cache)
                    }
                    _ => {
                        reads.remove(&k);
                        Fate::Drop
                    }
                }
            };
            if let Some((kept, blocks, bytes)) = self.rewrite(victim.id, &mut fate, None)? {
                report.evicted_segments += 1;
                report.evicted_blocks += blocks;
                report.evicted_bytes += bytes;
                report.reinserted_bytes += kept;
                self.space
                    .evicted_blocks
                    .fetch_add(blocks, Ordering::Relaxed);
                self.space.evicted_bytes.fetch_add(bytes, Ordering::Relaxed);
                self.space
                    .reinserted_bytes
                    .fetch_add(kept, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Rewrites segments with the most dead bytes until dead bytes are under
    /// `max_dead_ratio` of the live ones.
    fn compact(&self, report: &mut MaintenanceReport) -> Result<(), StoreError> {
        // Each segment at most once per pass: a rewrite that kept everything must not loop.
        let mut done = HashSet::new();
        // Files that hold nothing (left by a crash before their first commit) just go.
        for s in self.segments.list() {
            if s.size == 0 && !s.active && self.entries_of(s.id)?.is_empty() {
                self.segments.remove(s.id)?;
            }
        }
        loop {
            let segs = self.segments.list();
            let (size, live): (u64, u64) = segs
                .iter()
                .fold((0, 0), |(s, l), x| (s + x.size, l + x.live));
            let dead = size.saturating_sub(live);
            if dead == 0 || (dead as f64) <= live as f64 * self.options.max_dead_ratio {
                return Ok(());
            }
            let victim: Option<&SegmentInfo> = segs
                .iter()
                .filter(|s| !done.contains(&s.id) && s.size > s.live)
                .max_by_key(|s| s.size - s.live);
            let Some(victim) = victim else { return Ok(()) };
            done.insert(victim.id);
            let class = victim.class;
            let mut fate = |_: &Entry| Fate::Keep(class);
            if let Some((kept, _, _)) = self.rewrite(victim.id, &mut fate, None)? {
                report.compacted_segments += 1;
                self.space
                    .compacted_bytes
                    .fetch_add(kept, Ordering::Relaxed);
            }
        }
    }

    /// The mark of a collection, when the pins changed since the last one: what the pins
    /// reach as they were when it began. Holds no writer lock; [`Self::collect_garbage`]
    /// catches up with what changed meanwhile. `None`: nothing to collect, another mark
    /// running, or a pinned block unreadable.
    fn mark_for_collection(&self, back_off: bool) -> Result<Option<Marked<'_>>, StoreError> {
        let Ok(one) = self.space.marking.try_lock() else {
            return Ok(None);
        };
        // The generation first, then the pins: a pin made after this read shows as a
        // generation change at the sweep.
        let generation = *self.pin_generation.lock().map_err(|_| lock_poisoned())?;
        let last = *self
            .space
            .gc_generation
            .lock()
            .map_err(|_| lock_poisoned())?;
        if last == Some(generation) {
            return Ok(None);
        }
        let mut backoff = self
            .space
            .mark_backoff
            .lock()
            .map_err(|_| lock_poisoned())?;
        let now = std::time::Instant::now();
        let failed_here = backoff.filter(|(g, _, _)| *g == generation);
        if back_off && failed_here.is_some_and(|(_, retry_at, _)| now < retry_at) {
            return Ok(None);
        }
        self.space.marks.fetch_add(1, Ordering::Relaxed);
        let pins: HashSet<String> = self.pins()?.into_iter().map(|p| p.cid).collect();
        let mut mark = Mark::create(&self.dir().join(MARK_FILE))?;
        let mut missing = Vec::new();
        let roots = pins.iter().filter_map(|c| c.parse().ok());
        if !self.mark_from(&mut mark, roots, &mut missing)? {
            let wait = failed_here.map_or(MARK_RETRY.0, |(_, _, w)| w);
            *backoff = Some((generation, now + wait, (wait * 2).min(MARK_RETRY.1)));
            return Ok(None);
        }
        *backoff = None;
        drop(backoff);
        Ok(Some(Marked {
            _one: one,
            mark,
            generation,
            pins,
            missing,
        }))
    }

    /// Hands blocks of pinned segments that no pin reaches to the cache, and cached blocks a
    /// pin reaches to the pins, on `marked`, brought up to date with the pins made since.
    fn collect_garbage(
        &self,
        marked: Marked<'_>,
        report: &mut MaintenanceReport,
    ) -> Result<(), StoreError> {
        let Marked {
            _one,
            mark: mut reached,
            generation: marked_generation,
            pins: marked_pins,
            missing,
        } = marked;
        // Imports hold the writer lock from their first block to their pin: holding it, no
        // staged block is in flight, and every pin made since the mark is in the pins table.
        // A short wait lets a promotion finish; behind a long import, collection waits for a
        // later pass (eviction and compaction do not).
        let Some(_writer) = self.writer_within(WRITER_WAIT) else {
            return Ok(());
        };
        let generation = *self.pin_generation.lock().map_err(|_| lock_poisoned())?;
        // Whether the mark is exactly what the pins reach now: blocks of a pin removed during
        // the mark stay marked (kept) this time, and the next pass marks again.
        let mut exact = true;
        if generation != marked_generation {
            let now: HashSet<String> = self.pins()?.into_iter().map(|p| p.cid).collect();
            exact = marked_pins.is_subset(&now);
            // Pins made during the mark: their DAGs are marked now, under the writer lock
            // (their blocks may be ones the first mark saw unreached). So are the links of
            // blocks the mark found missing and an import has brought since.
            let mut roots: Vec<Cid> = now
                .difference(&marked_pins)
                .filter_map(|c| c.parse().ok())
                .collect();
            for cid in &missing {
                match self.get_sync(cid) {
                    Ok(Some(block)) => {
                        roots.extend(codec::links(block.cid(), block.data()).unwrap_or_default())
                    }
                    Ok(None) => {}
                    Err(_) => return Ok(()),
                }
            }
            if !self.mark_from(&mut reached, roots.into_iter(), &mut Vec::new())? {
                return Ok(());
            }
        }
        // Which blocks change class: a pinned block no pin reaches goes to the cache, a cached
        // one a pin reaches goes to the pins. A block the mark cannot answer for stays put, and
        // the collection then does not count as done (the next pass marks again), since a
        // cached block a pin reaches could otherwise stay evictable.
        let unsure = std::cell::Cell::new(false);
        let fate_of = |class: Class, e: &Entry| match (class, reached.contains(&e.key)) {
            (Class::Pinned, Some(false)) => Fate::Keep(Class::Cache),
            (Class::Cache, Some(true)) => Fate::Keep(Class::Pinned),
            (_, None) => {
                unsure.set(true);
                Fate::Stay
            }
            _ => Fate::Stay,
        };
        for seg in self.segments.list() {
            let entries = self.entries_of(seg.id)?;
            let moving: u64 = entries
                .iter()
                .filter(|e| fate_of(seg.class, e) != Fate::Stay)
                .map(|e| e.loc.len as u64)
                .sum();
            // Pinned segments hand what no pin reaches to the cache; cache segments hand what
            // a pin reaches to the pins (a pin made of blocks cached before).
            if moving == 0 {
                continue;
            }
            let unreached = if seg.class == Class::Pinned {
                moving
            } else {
                0
            };
            // Only the blocks that change class move; the rest stays, and the dead bytes the
            // moves leave are compaction's (a rewrite of the whole segment would cost I/O in
            // proportion to the segment, not to the change).
            let class = seg.class;
            let mut fate = |e: &Entry| fate_of(class, e);
            match self.rewrite(seg.id, &mut fate, Some(generation))? {
                Some(_) => {
                    report.released_bytes += unreached;
                    self.space
                        .released_bytes
                        .fetch_add(unreached, Ordering::Relaxed);
                }
                // Pins changed meanwhile: the next pass marks again.
                None => return Ok(()),
            }
        }
        if unsure.get() {
            tracing::warn!("the garbage collection's mark could not answer for every block; the next pass marks again");
            return Ok(());
        }
        report.gc = true;
        self.space.gc_runs.fetch_add(1, Ordering::Relaxed);
        if !exact {
            return Ok(());
        }
        if let Ok(mut g) = self.space.gc_generation.lock() {
            *g = Some(generation);
        }
        // Still holding the writer lock (no import in flight); the pin generation lock keeps a
        // pin change from slipping in between the check and the mark.
        let current = self.pin_generation.lock().map_err(|_| lock_poisoned())?;
        let mut collected = self.space.collected.lock().map_err(|_| lock_poisoned())?;
        if *current == generation && !*collected {
            match self.meta_put(COLLECTED_KEY, &[1]) {
                Ok(()) => *collected = true,
                Err(e) => {
                    tracing::warn!(error = %e, "recording the finished collection failed; the next start marks again")
                }
            }
        }
        Ok(())
    }

    /// Adds to `mark` the multihashes `roots` reach (blocks missing from the store end their
    /// branch), and opens it for lookups; `false` when a block that is stored could not be
    /// read, so the mark is incomplete and nothing may be released on it.
    /// Blocks a pin names that the store does not hold are added to `missing` (up to
    /// [`MAX_MISSING`]; `false` past that): their links were not followed.
    fn mark_from(
        &self,
        mark: &mut Mark,
        roots: impl Iterator<Item = Cid>,
        missing: &mut Vec<Cid>,
    ) -> Result<bool, StoreError> {
        let mut stack: Vec<Cid> = roots.collect();
        while let Some(cid) = stack.pop() {
            if !mark.insert(&cid.hash().to_bytes())? || cid.codec() == RAW {
                continue;
            }
            if matches!(cid.codec(), JSON | CBOR) {
                continue;
            }
            let block = match self.get_sync(&cid) {
                Ok(Some(b)) => b,
                Ok(None) if !self.has_sync(&cid)? => {
                    if missing.len() >= MAX_MISSING {
                        tracing::warn!(
                            "pins name too many blocks the store lacks; garbage collection waits"
                        );
                        return Ok(false);
                    }
                    missing.push(cid);
                    continue;
                }
                Ok(None) | Err(_) => {
                    tracing::warn!(%cid, "a pinned block could not be read; garbage collection waits");
                    return Ok(false);
                }
            };
            if let Ok(links) = codec::links(block.cid(), block.data()) {
                stack.extend(links);
            }
        }
        mark.finish()?;
        Ok(true)
    }

    /// The writer lock, if it comes free within `wait` (polled: this runs on a blocking
    /// thread, and holds the rewrite lock the cache writer's evictions try for).
    fn writer_within(&self, wait: std::time::Duration) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let until = std::time::Instant::now() + wait;
        loop {
            if let Ok(g) = self.writer.try_lock() {
                return Some(g);
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// How long the sweep waits for an import or promotion in flight to finish.
const WRITER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Most blocks named by pins but absent from the store that one mark remembers (to follow
/// them at the sweep, should an import have brought them meanwhile).
const MAX_MISSING: usize = 100_000;

/// A finished mark and what it was made from.
struct Marked<'a> {
    /// The one mark at a time, held until its scratch file is gone.
    _one: std::sync::MutexGuard<'a, ()>,
    mark: Mark,
    /// The pin generation when it began.
    generation: u64,
    /// The pins it started from.
    pins: HashSet<String>,
    /// Blocks the pins named that the store did not hold: their links were not followed.
    missing: Vec<Cid>,
}

/// The scratch database of a mark, beside the store's own.
const MARK_FILE: &str = "gc-mark.redb";

/// The multihashes a mark reached.
const MARKED: redb::TableDefinition<&[u8], ()> = redb::TableDefinition::new("marked");

/// Memory of the scratch database (its page cache and write buffer): what a mark costs in
/// memory whatever the number of pinned blocks. Smaller makes a mark slower (its B-tree pages
/// go to and from the file): 1 million blocks took 10 s with 8 MiB, and 1.1 s with the old
/// in-memory set of ~100 MB.
const MARK_CACHE: usize = 32 << 20;

/// Inserts per scratch transaction: each one's dirty pages stay within the scratch cache.
const MARK_BATCH: usize = 16 * 1024;

/// The set of blocks the pins reach, kept in a scratch database on disk: memory stays bounded
/// by its cache whatever the number of pinned blocks (an in-memory set took ~100 bytes per
/// block, 400 MB for 4 million). Nothing in it needs to survive a crash: commits are not
/// synced, and the file is replaced at the next mark and deleted when the mark is dropped.
struct Mark {
    /// `None` only while dropping: closed before its file is deleted.
    db: Option<redb::Database>,
    path: std::path::PathBuf,
    tx: Option<redb::WriteTransaction>,
    pending: usize,
    /// The marked set as [`Mark::finish`] left it, for the sweep's lookups (one read
    /// transaction for all of them). `None` when nothing was marked.
    reader: Option<redb::ReadOnlyTable<&'static [u8], ()>>,
}

impl Mark {
    fn create(path: &std::path::Path) -> Result<Self, StoreError> {
        // A mark left by a crash is stale.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io(e)),
        }
        let db = redb::Database::builder()
            .set_cache_size(MARK_CACHE)
            .create(path)
            .map_err(|e| StoreError::Db(e.to_string()))?;
        Ok(Self {
            db: Some(db),
            path: path.to_path_buf(),
            tx: None,
            pending: 0,
            reader: None,
        })
    }

    /// Adds `key`; `false` when it was there already.
    fn insert(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        if self.tx.is_none() {
            let Some(db) = &self.db else {
                return Ok(false);
            };
            let mut tx = db.begin_write()?;
            tx.set_durability(redb::Durability::None)?;
            self.tx = Some(tx);
        }
        let Some(tx) = &self.tx else {
            return Ok(false);
        };
        let fresh = tx.open_table(MARKED)?.insert(key, ())?.is_none();
        self.pending += 1;
        if self.pending >= MARK_BATCH {
            self.pending = 0;
            if let Some(tx) = self.tx.take() {
                tx.commit()?;
            }
        }
        Ok(fresh)
    }

    /// Commits what was inserted, and opens the set for [`Mark::contains`].
    fn finish(&mut self) -> Result<(), StoreError> {
        self.pending = 0;
        if let Some(tx) = self.tx.take() {
            tx.commit()?;
        }
        let Some(db) = &self.db else {
            return Ok(());
        };
        self.reader = match db.begin_read()?.open_table(MARKED) {
            Ok(t) => Some(t),
            // Nothing was marked: no pins.
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(())
    }

    /// Whether the mark reached `key`; `None` when the scratch database cannot say.
    fn contains(&self, key: &[u8]) -> Option<bool> {
        match &self.reader {
            Some(table) => table.get(key).ok().map(|v| v.is_some()),
            None => Some(false),
        }
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        // Closed first: closing writes to the file, which would be wasted on a deleted one.
        self.reader = None;
        self.tx = None;
        self.db = None;
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!(error = %e, "removing the garbage collection's scratch mark");
        }
    }
}

/// What the store holds and what space management did: `GET /admin/store`, `cidgate store`.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct StoreSummary {
    /// Data directory.
    pub dir: String,
    /// `store.max_size` (0: no budget).
    pub max_size: u64,
    /// Bytes on disk: segment files and the database.
    pub disk_bytes: u64,
    /// Bytes of pinned blocks (never evicted).
    pub pinned_bytes: u64,
    /// Bytes of cache entries (evictable).
    pub cache_bytes: u64,
    /// Bytes in segment files that nothing names (reclaimed by compaction).
    pub dead_bytes: u64,
    /// Bytes of the database: block index, pins, records.
    pub index_bytes: u64,
    /// Blocks stored.
    pub blocks: u64,
    /// Segment files.
    pub segments: u64,
    /// Pins.
    pub pins: u64,
    /// Cache entries evicted since start.
    pub evicted_blocks: u64,
    /// Bytes evicted since start.
    pub evicted_bytes: u64,
    /// Bytes eviction kept because they were read again.
    pub reinserted_bytes: u64,
    /// Bytes copied by compaction since start.
    pub compacted_bytes: u64,
    /// Garbage collections since start.
    pub gc_runs: u64,
    /// Bytes garbage collection handed from pins to the cache since start.
    pub released_bytes: u64,
    /// Bytes of fetched blocks not kept on disk since start.
    pub cache_skipped_bytes: u64,
    /// Bytes the scrub hashed since start.
    #[serde(default)]
    pub scrubbed_bytes: u64,
    /// Blocks the scrub found corrupt since start.
    #[serde(default)]
    pub scrub_corrupt: u64,
    /// Scrub passes over the whole store since start.
    #[serde(default)]
    pub scrub_passes: u64,
}

impl LocalStore {
    /// The store's space in one summary.
    pub fn summary(&self) -> StoreSummary {
        let t = self.totals();
        let s = &self.space;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let live = t.pinned_bytes + t.cache_bytes;
        let index_bytes = self.index_size();
        StoreSummary {
            dir: self.dir().display().to_string(),
            max_size: self.options.max_size,
            disk_bytes: t.file_bytes + index_bytes,
            pinned_bytes: t.pinned_bytes,
            cache_bytes: t.cache_bytes,
            dead_bytes: t.file_bytes.saturating_sub(live),
            index_bytes,
            blocks: t.blocks,
            segments: t.segments,
            pins: self.pin_count().unwrap_or(0),
            evicted_blocks: get(&s.evicted_blocks),
            evicted_bytes: get(&s.evicted_bytes),
            reinserted_bytes: get(&s.reinserted_bytes),
            compacted_bytes: get(&s.compacted_bytes),
            gc_runs: get(&s.gc_runs),
            released_bytes: get(&s.released_bytes),
            cache_skipped_bytes: get(&s.cache_skipped_bytes),
            scrubbed_bytes: get(&s.scrubbed_bytes),
            scrub_corrupt: get(&s.scrub_corrupt),
            scrub_passes: get(&s.scrub_passes),
        }
    }
}

impl std::fmt::Display for StoreSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = |n: u64| bytesize::ByteSize::b(n).to_string();
        let budget = if self.max_size == 0 {
            "no budget".to_string()
        } else {
            format!(
                "{} of {} ({:.0} %)",
                b(self.disk_bytes - self.index_bytes),
                b(self.max_size),
                (self.disk_bytes - self.index_bytes) as f64 * 100.0 / self.max_size as f64
            )
        };
        writeln!(f, "store        {}", self.dir)?;
        writeln!(f, "budget       {budget}")?;
        writeln!(f, "on disk      {}", b(self.disk_bytes))?;
        writeln!(f, "  pinned     {} (never evicted)", b(self.pinned_bytes))?;
        writeln!(f, "  cache      {} (evictable)", b(self.cache_bytes))?;
        writeln!(
            f,
            "  dead       {} (reclaimed by compaction)",
            b(self.dead_bytes)
        )?;
        writeln!(f, "  index      {}", b(self.index_bytes))?;
        writeln!(
            f,
            "blocks       {} in {} segment files",
            self.blocks, self.segments
        )?;
        writeln!(f, "pins         {}", self.pins)?;
        writeln!(
            f,
            "evicted      {} blocks, {} (kept {} read again)",
            self.evicted_blocks,
            b(self.evicted_bytes),
            b(self.reinserted_bytes)
        )?;
        writeln!(
            f,
            "collected    {} runs, {} released to the cache; {} compacted",
            self.gc_runs,
            b(self.released_bytes),
            b(self.compacted_bytes)
        )?;
        writeln!(
            f,
            "not kept     {} of fetched blocks",
            b(self.cache_skipped_bytes)
        )?;
        writeln!(
            f,
            "scrubbed     {} in {} whole passes; {} corrupt blocks found",
            b(self.scrubbed_bytes),
            self.scrub_passes,
            self.scrub_corrupt
        )
    }
}

/// Stores `blocks` and pins `root` as an operator pin, in one import (for tests).
#[cfg(test)]
pub(super) fn pin_dag(store: &LocalStore, blocks: &[Block], root: &Cid) {
    let batch = store.new_batch().unwrap();
    store.put_staged(batch, blocks, false).unwrap();
    store
        .commit_batch(batch, &[(*root, super::local::PinReason::Operator)])
        .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{cid_v1_sha256, DAG_PB};
    use crate::tiers::local::{PinReason, StoreOptions};
    use bytes::Bytes;

    fn raw(seed: u64, len: usize) -> Block {
        let mut data = vec![0u8; len];
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let data = Bytes::from(data);
        Block::verified(cid_v1_sha256(RAW, &data), data).unwrap()
    }

    /// A dag-pb node linking `children` (a directory in shape; enough for the mark).
    fn node(children: &[&Block]) -> Block {
        use crate::ipld::dagpb::{PbLink, PbNode};
        let node = PbNode {
            links: children
                .iter()
                .enumerate()
                .map(|(i, c)| PbLink {
                    cid: *c.cid(),
                    name: Some(format!("f{i}")),
                    tsize: Some(c.data().len() as u64),
                })
                .collect(),
            data: Some(Bytes::from_static(&[8, 1])),
        };
        let data = node.encode();
        Block::verified(cid_v1_sha256(DAG_PB, &data), data).unwrap()
    }

    /// The first segment file whose name holds `class` (`.pin.` or `.cache.`).
    fn segment_file(dir: &std::path::Path, class: &str) -> std::path::PathBuf {
        std::fs::read_dir(dir.join("blocks"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains(class))
            .unwrap()
    }

    /// Flips a byte of a file, as a failing disk would.
    fn flip_byte(path: &std::path::Path, at: usize) {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[at] ^= 0x55;
        std::fs::write(path, &bytes).unwrap();
    }

    fn open(dir: &std::path::Path, max_size: u64, segment_size: u64) -> LocalStore {
        LocalStore::open_with(
            dir,
            StoreOptions {
                max_size,
                segment_size,
                ..StoreOptions::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn block_bytes_take_their_size_on_disk_whatever_the_block_size() {
        for (size, count) in [
            (100usize, 2000u64),
            (4096, 512),
            (256 << 10, 16),
            (1 << 20, 6),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), 0, 4 << 20);
            let blocks: Vec<Block> = (0..count).map(|i| raw(i + 1, size)).collect();
            let content: u64 = blocks.iter().map(|b| b.data().len() as u64).sum();
            let batch = store.new_batch().unwrap();
            store.put_staged(batch, &blocks, false).unwrap();
            store.commit_batch(batch, &[]).unwrap();
            let on_disk: u64 = std::fs::read_dir(dir.path().join("blocks"))
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            assert_eq!(on_disk, content, "{size}-byte blocks: segment bytes");
            let t = store.totals();
            assert_eq!((t.pinned_bytes, t.blocks), (content, count));
            drop(store);
            // Reopened, the counts come back from the index and every block reads back.
            let store = open(dir.path(), 0, 4 << 20);
            assert_eq!(store.totals().pinned_bytes, content);
            for b in blocks.iter().step_by(7) {
                assert_eq!(store.get_sync(b.cid()).unwrap().unwrap().data(), b.data());
            }
        }
    }

    #[test]
    fn blocks_of_the_older_layout_move_into_segments() {
        let dir = tempfile::tempdir().unwrap();
        let blocks: Vec<Block> = (0..20).map(|i| raw(i + 1, 5000)).collect();
        {
            let db = redb::Database::create(dir.path().join("cidgate.redb")).unwrap();
            let legacy: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("blocks");
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(legacy).unwrap();
                for b in &blocks {
                    t.insert(b.cid().hash().to_bytes().as_slice(), b.data().as_ref())
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let store = open(dir.path(), 0, 1 << 20);
        for b in &blocks {
            assert_eq!(store.get_sync(b.cid()).unwrap().unwrap().data(), b.data());
        }
        assert_eq!(store.totals().pinned_bytes, 20 * 5000);
        drop(store);
        let store = open(dir.path(), 0, 1 << 20);
        assert_eq!(store.totals().blocks, 20, "moved once");
    }

    #[test]
    fn eviction_keeps_pins_and_what_was_read_again() {
        let dir = tempfile::tempdir().unwrap();
        // 8 segments of 64 KiB; eviction from 95 % down to 85 % of 512 KiB.
        let store = open(dir.path(), 512 << 10, 64 << 10);
        let leaves: Vec<Block> = (0..4).map(|i| raw(1000 + i, 16 << 10)).collect();
        let root = node(&leaves.iter().collect::<Vec<_>>());
        let mut dag = leaves.clone();
        dag.push(root.clone());
        pin_dag(&store, &dag, root.cid());
        // The cache writer's batches: up to just under the high watermark, nothing goes.
        let cached: Vec<Block> = (0..60).map(|i| raw(i + 1, 16 << 10)).collect();
        for chunk in cached[..26].chunks(2) {
            store.put_cached(chunk).unwrap();
        }
        assert_eq!(store.summary().evicted_blocks, 0);
        assert_eq!(store.totals().cache_bytes, 26 * (16 << 10));
        // The first cache entry is read before eviction reaches it.
        assert!(store.get_sync(cached[0].cid()).unwrap().is_some());
        // The next batches pass the high watermark: the oldest cache segment goes, again and
        // again; the first entry stays hot (read between batches).
        for chunk in cached[26..].chunks(2) {
            store.put_cached(chunk).unwrap();
            assert!(store.totals().file_bytes <= 512 << 10, "within the budget");
            assert!(
                store.get_sync(cached[0].cid()).unwrap().is_some(),
                "hot: kept"
            );
        }
        let summary = store.summary();
        assert!(summary.evicted_blocks > 0, "{summary:?}");
        assert!(summary.reinserted_bytes >= 16 << 10, "{summary:?}");
        assert_eq!(summary.cache_skipped_bytes, 0, "room was made: {summary:?}");
        for b in &dag {
            assert!(store.get_sync(b.cid()).unwrap().is_some(), "pinned kept");
        }
        assert_eq!(store.check_dag(root.cid()).unwrap(), None);
        assert!(
            store.get_sync(cached[0].cid()).unwrap().is_some(),
            "read again: kept"
        );
        assert!(
            store.get_sync(cached[1].cid()).unwrap().is_none(),
            "oldest unread: evicted"
        );
        assert!(
            store.get_sync(cached[59].cid()).unwrap().is_some(),
            "newest kept"
        );
        // A maintenance pass finds nothing over the watermark.
        let report = store.maintain().unwrap();
        assert_eq!(report.evicted_blocks, 0, "{report:?}");
        assert!(!report.over_budget);
    }

    #[test]
    fn pinned_content_past_the_budget_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 256 << 10, 64 << 10);
        let blocks: Vec<Block> = (0..20).map(|i| raw(i + 1, 16 << 10)).collect();
        let batch = store.new_batch().unwrap();
        let err = store.put_staged(batch, &blocks, false).unwrap_err();
        assert!(matches!(err, StoreError::Full(_)), "{err}");
        assert!(err.to_string().contains("store.max_size"), "{err}");
        store.rollback_batch(batch).unwrap();
        // Reads go on.
        let small = raw(99, 100);
        pin_dag(&store, std::slice::from_ref(&small), small.cid());
        assert!(store.get_sync(small.cid()).unwrap().is_some());
    }

    #[test]
    fn the_mark_lives_on_disk_across_batches_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MARK_FILE);
        // What a crash in the middle of a mark leaves: not even a database.
        std::fs::write(&path, b"half a mark").unwrap();
        let mut mark = Mark::create(&path).unwrap();
        let n = MARK_BATCH as u64 * 2 + 17;
        for i in 0..n {
            assert!(mark.insert(&i.to_be_bytes()).unwrap(), "{i} is new");
        }
        assert!(!mark.insert(&5u64.to_be_bytes()).unwrap(), "seen before");
        mark.finish().unwrap();
        assert_eq!(mark.contains(&(n - 1).to_be_bytes()), Some(true));
        assert_eq!(mark.contains(&0u64.to_be_bytes()), Some(true));
        assert_eq!(mark.contains(&n.to_be_bytes()), Some(false));
        drop(mark);
        assert!(!path.exists(), "the scratch file goes with the mark");

        // A collection over a stale file left behind marks afresh and leaves nothing.
        let store = open(dir.path(), 0, 64 << 10);
        let leaves: Vec<Block> = (0..3).map(|i| raw(60 + i, 16 << 10)).collect();
        let root = node(&leaves.iter().collect::<Vec<_>>());
        let mut all = leaves.clone();
        all.push(root.clone());
        pin_dag(&store, &all, root.cid());
        store.maintain().unwrap();
        assert!(store.unpin(root.cid()).unwrap());
        std::fs::write(&path, b"stale").unwrap();
        let report = store.maintain().unwrap();
        assert!(report.gc);
        assert_eq!(store.totals().pinned_bytes, 0, "{report:?}");
        assert!(!path.exists());
    }

    #[test]
    fn unpinned_dags_become_cache_entries_and_dead_bytes_are_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 0, 64 << 10);
        let keep_leaves: Vec<Block> = (0..4).map(|i| raw(10 + i, 16 << 10)).collect();
        let keep = node(&keep_leaves.iter().collect::<Vec<_>>());
        let drop_leaves: Vec<Block> = (0..8).map(|i| raw(20 + i, 16 << 10)).collect();
        let dropped = node(&drop_leaves.iter().collect::<Vec<_>>());
        let mut a = keep_leaves.clone();
        a.push(keep.clone());
        let mut b = drop_leaves.clone();
        b.push(dropped.clone());
        pin_dag(&store, &a, keep.cid());
        pin_dag(&store, &b, dropped.cid());
        let pinned_before = store.totals().pinned_bytes;
        assert!(store.unpin(dropped.cid()).unwrap());
        let report = store.maintain().unwrap();
        assert!(report.gc);
        let t = store.totals();
        let released = 8 * (16 << 10) + dropped.data().len() as u64;
        assert_eq!(report.released_bytes, released);
        assert_eq!(t.pinned_bytes, pinned_before - released);
        assert_eq!(t.cache_bytes, released, "still served, now evictable");
        assert_eq!(store.check_dag(keep.cid()).unwrap(), None);
        assert!(store.get_sync(drop_leaves[3].cid()).unwrap().is_some());
        // Nothing changed since: the next pass does not mark again.
        assert!(!store.maintain().unwrap().gc);
        // Pinning it again moves its blocks back out of the cache.
        pin_dag(&store, &b, dropped.cid());
        assert_eq!(store.totals().pinned_bytes, pinned_before);
        assert_eq!(store.totals().cache_bytes, 0);
        // The moves left dead bytes; compaction brings the files back to their content.
        store.maintain().unwrap();
        let t = store.totals();
        let live = t.pinned_bytes + t.cache_bytes;
        assert!(
            t.file_bytes as f64 <= live as f64 * 1.05,
            "dead bytes reclaimed: {t:?}"
        );
        for blk in a.iter().chain(&b) {
            assert!(store.get_sync(blk.cid()).unwrap().is_some());
        }
    }

    #[test]
    fn the_mark_holds_no_lock_and_the_sweep_catches_up_with_pins_made_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 0, 64 << 10);
        let dag = |seeds: std::ops::Range<u64>| {
            let leaves: Vec<Block> = seeds.map(|i| raw(i, 16 << 10)).collect();
            let root = node(&leaves.iter().collect::<Vec<_>>());
            let mut all = leaves;
            all.push(root.clone());
            (root, all)
        };
        let (keep, keep_blocks) = dag(100..102);
        let (dropped, dropped_blocks) = dag(110..114);
        let (later_unpinned, later_blocks) = dag(120..122);
        for (root, blocks) in [
            (&keep, &keep_blocks),
            (&dropped, &dropped_blocks),
            (&later_unpinned, &later_blocks),
        ] {
            pin_dag(&store, blocks, root.cid());
        }
        assert!(store.unpin(dropped.cid()).unwrap());
        let pinned_before = store.totals().pinned_bytes;

        let marked = store
            .mark_for_collection(false)
            .unwrap()
            .expect("pins changed");
        // Between the mark and the sweep: writers are not held up...
        assert!(
            store.writer.try_lock().is_ok(),
            "imports do not wait for a mark"
        );
        assert!(
            store.space.rewriting.try_lock().is_ok(),
            "nor does eviction"
        );
        // ...a new pin reaches a block the mark saw unreached (a leaf of the unpinned DAG),
        // and a pin the mark started from goes away.
        let shared_leaf = dropped_blocks[0].clone();
        let fresh = raw(130, 16 << 10);
        let newer = node(&[&shared_leaf, &fresh]);
        pin_dag(
            &store,
            &[shared_leaf.clone(), fresh.clone(), newer.clone()],
            newer.cid(),
        );
        assert!(store.unpin(later_unpinned.cid()).unwrap());

        let mut report = MaintenanceReport::default();
        store.collect_garbage(marked, &mut report).unwrap();
        assert!(report.gc);
        // What the unpinned DAG does not share with the new pin went to the cache; the shared
        // leaf stayed pinned, and so (for this pass) did the DAG unpinned during the mark.
        let released: u64 = dropped_blocks[1..]
            .iter()
            .map(|b| b.data().len() as u64)
            .sum();
        assert_eq!(report.released_bytes, released, "{report:?}");
        let added = (fresh.data().len() + newer.data().len()) as u64;
        assert_eq!(
            store.totals().pinned_bytes,
            pinned_before + added - released
        );
        for root in [keep.cid(), newer.cid()] {
            assert_eq!(store.check_dag(root).unwrap(), None);
        }
        // That pass did not count as seeing the pins as they are: the next one marks again
        // and releases the DAG unpinned during the first mark.
        let report = store.maintain().unwrap();
        assert!(report.gc);
        let later: u64 = later_blocks.iter().map(|b| b.data().len() as u64).sum();
        assert_eq!(report.released_bytes, later, "{report:?}");
        assert!(!store.maintain().unwrap().gc, "nothing changed since");
    }

    #[test]
    fn blocks_a_mark_found_missing_and_an_import_brought_are_followed_at_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 0, 64 << 10);
        // A pin whose DAG lacks a node (an older store, a pin recovered from its record):
        // the mark reaches the node's hash but cannot follow its links.
        let leaf = raw(150, 16 << 10);
        let inner = node(&[&leaf]);
        let root = node(&[&inner]);
        pin_dag(&store, std::slice::from_ref(&root), root.cid());
        // Something else makes the pins change, so that a collection runs.
        let other = raw(151, 4096);
        pin_dag(&store, std::slice::from_ref(&other), other.cid());
        let marked = store
            .mark_for_collection(false)
            .unwrap()
            .expect("pins changed");
        // During the mark, an import brings the missing node and its leaf, pinned again under
        // the same root (no new pin to mark).
        pin_dag(&store, &[inner.clone(), leaf.clone()], root.cid());
        let pinned = store.totals().pinned_bytes;
        let mut report = MaintenanceReport::default();
        store.collect_garbage(marked, &mut report).unwrap();
        assert_eq!(report.released_bytes, 0, "{report:?}");
        assert_eq!(store.totals().pinned_bytes, pinned);
        assert_eq!(store.check_dag(root.cid()).unwrap(), None);
    }

    #[test]
    fn a_mark_that_cannot_read_a_pinned_block_is_not_retried_every_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 0, 1 << 20);
        let leaf = raw(140, 8192);
        let root = node(&[&leaf]);
        pin_dag(&store, &[leaf.clone(), root.clone()], root.cid());
        // The root's bytes (last in the segment; the mark reads dag-pb nodes, not raw leaves)
        // go bad on the disk.
        let seg = segment_file(dir.path(), ".pin.");
        let len = std::fs::metadata(&seg).unwrap().len() as usize;
        flip_byte(&seg, len - 3);
        assert!(store.get_sync(root.cid()).is_err());
        let marks = || store.space.marks.load(Ordering::Relaxed);
        assert!(!store.maintain_scheduled().unwrap().gc);
        assert_eq!(marks(), 1);
        // Scheduled passes wait before they read every pinned block again...
        assert!(!store.maintain_scheduled().unwrap().gc);
        assert_eq!(marks(), 1, "backed off");
        // ...an operator's pass does not, and a pin change ends the wait.
        assert!(!store.maintain().unwrap().gc);
        assert_eq!(marks(), 2);
        let other = raw(141, 4096);
        pin_dag(&store, std::slice::from_ref(&other), other.cid());
        store.maintain_scheduled().unwrap();
        assert_eq!(marks(), 3);
    }

    #[test]
    fn a_restart_marks_again_only_when_pins_changed_since_the_last_collection() {
        let dir = tempfile::tempdir().unwrap();
        let leaves: Vec<Block> = (0..3).map(|i| raw(40 + i, 4 << 10)).collect();
        let root = node(&leaves.iter().collect::<Vec<_>>());
        let mut blocks = leaves.clone();
        blocks.push(root.clone());
        {
            let store = open(dir.path(), 0, 64 << 10);
            pin_dag(&store, &blocks, root.cid());
            assert!(store.maintain().unwrap().gc, "a new store marks");
        }
        {
            // Nothing changed since that collection: a restart does not mark everything again.
            let store = open(dir.path(), 0, 64 << 10);
            assert!(!store.maintain().unwrap().gc);
            // A change, then a stop before any collection (a crash or a quick restart).
            assert!(store.unpin(root.cid()).unwrap());
        }
        {
            // The mark was cleared before the unpin: this start marks, and releases the DAG.
            let store = open(dir.path(), 0, 64 << 10);
            let report = store.maintain().unwrap();
            assert!(report.gc);
            assert!(report.released_bytes > 0);
            assert_eq!(store.totals().pinned_bytes, 0);
        }
        {
            // An import cut before its commit is rolled back at open: marked again too.
            let store = open(dir.path(), 0, 64 << 10);
            assert!(!store.maintain().unwrap().gc);
            let batch = store.new_batch().unwrap();
            store.put_staged(batch, &[raw(60, 4 << 10)], true).unwrap();
        }
        let store = open(dir.path(), 0, 64 << 10);
        // Stale from the moment of this open, whatever happens before its collection.
        assert_eq!(
            store.meta_get(COLLECTED_KEY).unwrap().as_deref(),
            Some(&[0][..])
        );
        assert!(store.maintain().unwrap().gc);
        assert_eq!(
            store.meta_get(COLLECTED_KEY).unwrap().as_deref(),
            Some(&[1][..])
        );
    }

    #[test]
    fn empty_blocks_take_no_place_and_never_collide_with_the_next_block() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 0, 64 << 10);
        let empty = raw(0, 0);
        let next = raw(1, 1000);
        let root = node(&[&empty, &next]);
        pin_dag(
            &store,
            &[empty.clone(), next.clone(), root.clone()],
            root.cid(),
        );
        // The same empty block cached, then fetched again with another block behind it.
        let cached = raw(2, 3000);
        store.put_cached(&[empty.clone(), cached.clone()]).unwrap();
        assert!(store.unpin(root.cid()).unwrap());
        store.maintain().unwrap();
        pin_dag(
            &store,
            &[empty.clone(), next.clone(), root.clone()],
            root.cid(),
        );
        store.maintain().unwrap();
        for b in [&empty, &next, &root, &cached] {
            let got = store.get_sync(b.cid()).unwrap().expect("still stored");
            assert_eq!(got.data(), b.data());
        }
        assert_eq!(store.check_dag(root.cid()).unwrap(), None);
        drop(store);
        let store = open(dir.path(), 0, 64 << 10);
        assert_eq!(
            store.get_sync(empty.cid()).unwrap().unwrap().data().len(),
            0
        );
        assert!(store.get_sync(cached.cid()).unwrap().is_some());
    }

    #[test]
    fn a_pin_made_of_cached_blocks_takes_them_out_of_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 512 << 10, 64 << 10);
        let leaves: Vec<Block> = (0..3).map(|i| raw(50 + i, 16 << 10)).collect();
        let root = node(&leaves.iter().collect::<Vec<_>>());
        // The leaves were fetched and cached; a partial CAR (just the root) pins the DAG.
        store.put_cached(&leaves).unwrap();
        let batch = store.new_batch().unwrap();
        store
            .put_staged(batch, std::slice::from_ref(&root), false)
            .unwrap();
        let reports =
            crate::tiers::import::finish_batch(&store, batch, &[*root.cid()], PinReason::Operator)
                .unwrap();
        assert!(reports[0].pinned);
        assert_eq!(store.totals().cache_bytes, 0, "{:?}", store.totals());
        // Eviction of everything cached cannot touch them now.
        let churn: Vec<Block> = (0..60).map(|i| raw(500 + i, 16 << 10)).collect();
        for chunk in churn.chunks(2) {
            store.put_cached(chunk).unwrap();
        }
        assert!(store.summary().evicted_blocks > 0);
        assert_eq!(store.check_dag(root.cid()).unwrap(), None);
    }

    #[test]
    fn garbage_collection_moves_cached_blocks_a_pin_reaches_to_the_pins() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 0, 64 << 10);
        let leaf = raw(70, 16 << 10);
        let root = node(&[&leaf]);
        // Pinned without the writer path that adopts cached blocks (an older store).
        store.put_cached(std::slice::from_ref(&leaf)).unwrap();
        let batch = store.new_batch().unwrap();
        store
            .put_staged(batch, std::slice::from_ref(&root), false)
            .unwrap();
        store
            .commit_batch(batch, &[(*root.cid(), PinReason::Operator)])
            .unwrap();
        assert_eq!(store.totals().cache_bytes, 16 << 10);
        let report = store.maintain().unwrap();
        assert!(report.gc);
        assert_eq!(store.totals().cache_bytes, 0, "{report:?}");
        assert!(store.get_sync(leaf.cid()).unwrap().is_some());
    }

    /// Writes `bytes` over the start of every segment file of `class` and drops the files' pages
    /// from the page cache: what a disk that went bad under the store looks like.
    #[cfg(target_os = "linux")]
    fn corrupt_on_disk(dir: &std::path::Path, class: &str) {
        for entry in std::fs::read_dir(dir.join("blocks")).unwrap() {
            let path = entry.unwrap().path();
            if !path.to_string_lossy().contains(class) {
                continue;
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            use std::os::unix::fs::FileExt;
            let mut b = [0u8; 1];
            file.read_exact_at(&mut b, 100).unwrap();
            file.write_all_at(&[b[0] ^ 0x55], 100).unwrap();
            file.sync_all().unwrap();
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        }
    }

    /// A store block handed out as a slice of its segment file whose pages leave the page
    /// cache before it is sent is read again through the store and hashed: sent whole when its
    /// bytes are right; when they changed on the disk, the response ends and the block is
    /// marked corrupt.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_served_block_whose_pages_left_before_it_was_sent_is_read_again_and_hashed() {
        use crate::zero_copy::{is_segment_slice, ZeroCopySent, ZeroCopyStream};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let probe = tempfile::tempdir().unwrap();
        if crate::zero_copy::keeps_files_in_memory(probe.path()) {
            eprintln!("skipped: {} keeps files in memory", probe.path().display());
            return;
        }
        for bad_disk in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), 0, 4 << 20);
            store.set_zero_copy(true);
            let block = raw(300, 1 << 20);
            pin_dag(&store, std::slice::from_ref(&block), block.cid());
            let served = store.serve_sync(block.cid()).unwrap().unwrap();
            assert!(
                is_segment_slice(served.data()),
                "written here: trusted in memory"
            );
            if bad_disk {
                corrupt_on_disk(dir.path(), ".pin.");
            }
            // Asked again while a loaded machine keeps a page (on a CPU's LRU batch).
            for entry in std::fs::read_dir(dir.path().join("blocks")).unwrap() {
                // Read-write: `mincore` tells the page cache only to a process that may write.
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(entry.unwrap().path())
                    .unwrap();
                let len = file.metadata().unwrap().len();
                let mut gone = false;
                for _ in 0..100 {
                    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
                    if !crate::zero_copy::any_page_resident(&file, len).unwrap() {
                        gone = true;
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                assert!(gone, "the segment's pages did not leave the page cache");
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let sent = ZeroCopySent::default();
            let mut server = ZeroCopyStream::new(listener.accept().await.unwrap().0, sent.clone());
            let data = served.data().clone();
            let writer = tokio::spawn(async move {
                let r = server.write_all(&data).await;
                let _ = server.shutdown().await;
                r
            });
            let mut got = Vec::new();
            let _ = client.read_to_end(&mut got).await;
            let written = writer.await.unwrap();
            assert_eq!(sent.store.get(), 0, "nothing sent from the file unhashed");
            assert_eq!(sent.refetched.get(), 1);
            if bad_disk {
                assert!(
                    written.is_err() && got.is_empty(),
                    "{written:?} {}",
                    got.len()
                );
                assert!(matches!(
                    store.serve_sync(block.cid()),
                    Err(crate::tiers::TierError::Corrupt { .. })
                ));
            } else {
                written.unwrap();
                assert!(got == block.data()[..], "every byte right");
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn blocks_in_the_page_cache_are_served_from_their_mapping_and_ones_from_the_disk_are_hashed() {
        use crate::content::source::BlockSource;
        use crate::zero_copy::is_segment_slice;
        // Bytes changed on a disk under the page cache cannot be told from bytes changed in
        // memory where the files live in memory (what the scrub covers).
        let probe = tempfile::tempdir().unwrap();
        if crate::zero_copy::keeps_files_in_memory(probe.path()) {
            eprintln!("skipped: {} keeps files in memory", probe.path().display());
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (len, class, zero_copy) in [
            (256 << 10, ".cache.", true),
            (4096, ".cache.", true),
            (256 << 10, ".pin.", true),
            (256 << 10, ".pin.", false),
            (4096, ".pin.", true),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), 0, 1 << 20);
            store.set_zero_copy(zero_copy);
            let block = raw(90 + len as u64, len);
            if class == ".pin." {
                pin_dag(&store, std::slice::from_ref(&block), block.cid());
            } else {
                store.put_cached(std::slice::from_ref(&block)).unwrap();
            }
            // Just written, so in the page cache: served without a copy when large (and where
            // sendfile can send it). Its bytes are not touched here: pages mapped into a process
            // stay in the page cache.
            let served = store.serve_sync(block.cid()).unwrap().unwrap();
            assert_eq!(served.len(), len);
            assert_eq!(
                is_segment_slice(served.data()),
                len >= 64 << 10 && zero_copy,
                "{len} {zero_copy}"
            );
            // Reads for anything but serving copy and hash.
            let read = store.get_sync(block.cid()).unwrap().unwrap();
            assert!(!is_segment_slice(read.data()) && read == block);
            drop(served);

            corrupt_on_disk(dir.path(), class);
            // Out of the page cache, the bytes come from the disk and are hashed: never served.
            // The async path first tries memory without waiting, which starts the disk read
            // (RWF_NOWAIT does) and falls back to a hashed read.
            assert!(
                matches!(
                    rt.block_on(store.get(block.cid())),
                    Err(crate::tiers::TierError::Corrupt { .. })
                ),
                "{len} {class}"
            );
            // A cache entry is dropped (fetched anew); a pinned block stays for the repair, and
            // its bad bytes, which that read brought into the page cache, are not trusted from
            // there, whichever way it is read.
            assert_eq!(store.has_sync(block.cid()).unwrap(), class == ".pin.");
            if class == ".pin." {
                for _ in 0..2 {
                    assert!(matches!(
                        rt.block_on(store.get(block.cid())),
                        Err(crate::tiers::TierError::Corrupt { .. })
                    ));
                    assert!(matches!(
                        store.serve_sync(block.cid()),
                        Err(crate::tiers::TierError::Corrupt { .. })
                    ));
                }
            }
        }
    }

    #[test]
    fn a_corrupt_or_unreadable_cache_entry_is_dropped_and_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 0, 64 << 10);
        let good = raw(80, 4096);
        store.put_cached(std::slice::from_ref(&good)).unwrap();
        // Flip a byte in the segment file.
        let seg = segment_file(dir.path(), ".cache.");
        flip_byte(&seg, 100);
        assert!(matches!(
            store.get_sync(good.cid()),
            Err(crate::tiers::TierError::Corrupt { .. })
        ));
        assert!(!store.has_sync(good.cid()).unwrap(), "dropped");
        // Cut short (a power loss before the bytes reached the disk): absent, not an error.
        let other = raw(81, 4096);
        store.put_cached(std::slice::from_ref(&other)).unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        assert!(store.get_sync(other.cid()).unwrap().is_none());
        assert!(!store.has_sync(other.cid()).unwrap());
    }

    #[test]
    fn a_rolled_back_import_leaves_no_visible_block_and_its_bytes_are_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 0, 64 << 10);
        let blocks: Vec<Block> = (0..12).map(|i| raw(i + 1, 16 << 10)).collect();
        let batch = store.new_batch().unwrap();
        store.put_staged(batch, &blocks, false).unwrap();
        store.rollback_batch(batch).unwrap();
        assert!(store.get_sync(blocks[0].cid()).unwrap().is_none());
        let t = store.totals();
        assert_eq!(t.blocks, 0);
        store.maintain().unwrap();
        assert_eq!(store.totals().file_bytes, 0, "{:?}", store.totals());
    }
}
