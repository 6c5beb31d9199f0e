//! The store scrub: every block the store holds is read and hashed again, at a bounded rate.
//!
//! Why: reads to serve trust large blocks the page cache holds (`segments.rs`): they were
//! verified when written, or brought in by a read that hashed them. What that leaves unchecked
//! is a page that a neighbouring block's read brought in with it, and bytes that changed in
//! memory. The scrub is the background check the design's first invariant asks for in exchange:
//! it walks the index in (segment, offset) order, and a block found corrupt is never trusted
//! from memory again. A cache entry is dropped (the next request fetches it anew); a pinned block stays for
//! the retrievability checker to repair and fails its hash on every read until then, so it is
//! served from another tier.
//!
//! The scrub reads what is in memory from memory (that is what would be served) and reads the
//! rest from the disk without leaving it in the page cache, so a pass does not push the hot set
//! out.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cid::multihash::Multihash;
use cid::Cid;
use redb::ReadableDatabase;

use super::local::{LocalStore, StoreError, BY_SEGMENT};
use super::segments::{Class, Loc};
use crate::ipld::{verify, RAW};

/// What one step of the scrub checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubStep {
    /// Where the next step starts; `None` when this one reached the end of the store.
    pub next: Option<(u32, u64)>,
    /// Blocks hashed.
    pub blocks: u64,
    /// Bytes hashed.
    pub bytes: u64,
    /// Blocks that failed their hash or could not be read.
    pub corrupt: u64,
}

impl LocalStore {
    /// Hashes the blocks from `from` (segment, offset) on, about `budget` bytes of them (at
    /// least one block). Blocking.
    pub fn scrub_step(&self, from: (u32, u64), budget: u64) -> Result<ScrubStep, StoreError> {
        let mut entries = Vec::new();
        let mut next = None;
        {
            let tx = self.db.begin_read()?;
            let by_segment = tx.open_table(BY_SEGMENT)?;
            let mut taken = 0u64;
            for item in by_segment.range(from..)? {
                let (k, v) = item?;
                let (seg, off) = k.value();
                if taken >= budget.max(1) {
                    next = Some((seg, off));
                    break;
                }
                let v = v.value();
                if v.len() < 4 {
                    continue;
                }
                let len = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                taken += u64::from(len).max(1);
                entries.push((Loc { seg, off, len }, v[4..].to_vec()));
            }
        }
        let mut step = ScrubStep {
            next,
            ..ScrubStep::default()
        };
        for (loc, key) in entries {
            let Ok(mh) = Multihash::<64>::from_bytes(&key) else {
                continue;
            };
            // The hash depends on the multihash alone; the codec is any.
            let cid = Cid::new_v1(RAW, mh);
            // Marked as being verified until the hash is done (a read to serve does not trust
            // the pages this read brings in before then).
            let read = match self.segments.read_verifying(&loc, true) {
                Ok(Some(r)) => Ok(r),
                // The segment went (evicted or rewritten) since the index was read.
                Ok(None) => continue,
                Err(e) => Err(e.to_string()),
            };
            let failure = match &read {
                Ok((data, _, _)) => {
                    step.blocks += 1;
                    step.bytes += data.len() as u64;
                    verify::check(&cid, data).err().map(|e| e.to_string())
                }
                Err(e) => Some(e.clone()),
            };
            // A block that passes is not marked as hashed (`Verifying::passed`): the scrub drops
            // what it read from the page cache, and where it cannot (tmpfs) the next read to
            // serve hashes the block as it would after a real drop.
            let Some(error) = failure else { continue };
            step.corrupt += 1;
            self.segments.mark_corrupt(&loc);
            let class = match &read {
                Ok((_, c, _)) => Some(*c),
                Err(_) => self.segments.class_of(loc.seg),
            };
            drop(read);
            tracing::error!(%cid, segment = loc.seg, offset = loc.off, %error, "scrub: the store holds a corrupt block");
            if class == Some(Class::Cache) {
                // Only a copy: dropped, so that the next request fetches it anew.
                if let Err(e) = self.drop_entry(&key, loc) {
                    tracing::warn!(%cid, error = %e, "scrub: dropping a corrupt cache entry failed");
                }
            }
        }
        self.space
            .scrubbed_bytes
            .fetch_add(step.bytes, Ordering::Relaxed);
        self.space
            .scrub_corrupt
            .fetch_add(step.corrupt, Ordering::Relaxed);
        if step.next.is_none() {
            self.space.scrub_passes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(step)
    }
}

/// How long one step's share of the rate takes: small steps keep the rate smooth.
const STEP: Duration = Duration::from_millis(250);

/// Scrubs the store for ever at `bytes_per_second` (one pass after another, starting over at
/// the first segment); waits `idle` between passes.
pub async fn run(store: LocalStore, bytes_per_second: u64, idle: Duration) {
    let budget = (bytes_per_second as f64 * STEP.as_secs_f64()).max(1.0) as u64;
    let mut from = (0u32, 0u64);
    let mut failures_here = 0u32;
    loop {
        let started = Instant::now();
        let s = store.clone();
        let step = match tokio::task::spawn_blocking(move || s.scrub_step(from, budget)).await {
            Ok(Ok(step)) => step,
            failed => {
                match failed {
                    Ok(Err(e)) => tracing::warn!(error = %e, "store scrub step failed"),
                    Err(e) => tracing::warn!(error = %e, "store scrub task failed"),
                    Ok(Ok(_)) => {}
                }
                // Tried again from the same place, after a pause: not from the start, which a
                // lasting failure would turn into a loop over the first blocks. A place that
                // keeps failing is stepped over.
                failures_here += 1;
                if failures_here >= 3 {
                    failures_here = 0;
                    from.1 = from.1.saturating_add(1);
                }
                tokio::time::sleep(idle).await;
                continue;
            }
        };
        failures_here = 0;
        // Paid after the fact: the next step waits until these bytes fit the rate.
        let due = Duration::from_secs_f64(step.bytes as f64 / bytes_per_second.max(1) as f64);
        tokio::time::sleep(
            due.saturating_sub(started.elapsed())
                .max(Duration::from_millis(1)),
        )
        .await;
        match step.next {
            Some(next) => from = next,
            None => {
                from = (0, 0);
                tokio::time::sleep(idle).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{cid_v1_sha256, Block};
    use crate::tiers::local::StoreOptions;
    use bytes::Bytes;
    use std::os::unix::fs::FileExt;

    fn block(seed: u8, len: usize) -> Block {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        Block::verified(cid_v1_sha256(RAW, &data), Bytes::from(data)).unwrap()
    }

    /// Flips a byte at `at` of every segment file of `class` through the page cache: bytes that
    /// changed in memory, which a read to serve trusts.
    fn flip_in_memory(dir: &std::path::Path, class: &str, at: u64) {
        for entry in std::fs::read_dir(dir.join("blocks")).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().contains(class) {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .unwrap();
                let mut b = [0u8; 1];
                f.read_exact_at(&mut b, at).unwrap();
                f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
            }
        }
    }

    #[test]
    fn the_scrub_hashes_every_block_within_its_budget_and_corrupt_ones_are_never_trusted_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open_with(
            dir.path(),
            StoreOptions {
                max_size: 0,
                segment_size: 1 << 20,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        store.set_zero_copy(true);
        let cached = [block(1, 4096), block(2, 256 << 10)];
        store.put_cached(&cached).unwrap();
        let pinned = block(3, 256 << 10);
        crate::tiers::space::pin_dag(&store, std::slice::from_ref(&pinned), pinned.cid());

        // A clean store: one block per step with a budget of one byte, then the whole pass.
        let first = store.scrub_step((0, 0), 1).unwrap();
        assert_eq!((first.blocks, first.corrupt), (1, 0));
        assert!(first.next.is_some());
        let rest = store.scrub_step(first.next.unwrap(), u64::MAX).unwrap();
        assert_eq!((rest.blocks, rest.corrupt, rest.next), (2, 0, None));
        assert_eq!(first.bytes + rest.bytes, 4096 + 2 * (256 << 10));
        assert_eq!(store.summary().scrub_passes, 1);

        // Bytes that change in memory are trusted by reads to serve until the scrub sees them,
        // for large blocks: the second cache entry (after the 4 KiB one) and the pinned block.
        flip_in_memory(dir.path(), ".cache.", 4096 + 10);
        flip_in_memory(dir.path(), ".pin.", 10);
        let trusted = store.serve_sync(cached[1].cid()).unwrap().unwrap();
        assert!(
            trusted.data() != cached[1].data(),
            "trusted from the page cache"
        );
        let pass = store.scrub_step((0, 0), u64::MAX).unwrap();
        assert_eq!((pass.blocks, pass.corrupt), (3, 2));
        assert_eq!(store.summary().scrub_corrupt, 2);
        // The held slice is stale now (a memory cache drops it); the cache entry is dropped:
        // the next request fetches it anew.
        assert!(crate::zero_copy::stale_segment_slice(trusted.data()));
        assert!(store.serve_sync(cached[1].cid()).unwrap().is_none());
        assert!(!store.has_sync(cached[1].cid()).unwrap());
        // The pinned block stays for its repair, and fails its hash on every read meanwhile.
        assert!(store.has_sync(pinned.cid()).unwrap());
        for _ in 0..2 {
            assert!(matches!(
                store.serve_sync(pinned.cid()),
                Err(crate::tiers::TierError::Corrupt { .. })
            ));
        }
        // The small cache entry was never trusted unhashed, and is still served.
        assert!(store.serve_sync(cached[0].cid()).unwrap().unwrap() == cached[0]);
        // A small block that changed in memory is caught by the hash of every read.
        flip_in_memory(dir.path(), ".cache.", 10);
        assert!(matches!(
            store.serve_sync(cached[0].cid()),
            Err(crate::tiers::TierError::Corrupt { .. })
        ));
    }
}
