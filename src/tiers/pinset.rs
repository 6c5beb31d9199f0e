//! The pinset index: which blocks are reachable from this gateway's pins, for a dedicated
//! gateway (`gateway.serve = "pinned"`) that serves nothing else.
//!
//! A pinned root's DAG is walked once when the pin appears and every block is recorded with its
//! root, in the store's database, by multihash *and codec*: the same bytes read with another
//! codec are another node with other links (a raw leaf holding `{"/": "bafy…"}` read as
//! dag-json links anywhere), so only the codec the DAG reached it with is allowed, and `raw`
//! (bytes, no links) for any block under a pin; when the pin goes, its entries go (by root,
//! without walking again). A request asks one question of the index: one B-tree lookup, and
//! positive answers are kept in memory until a pin is removed.
//! The index follows the pins (embedded store pins, and pins cidgate made in a remote hot
//! layer) by reconciling: at start, whenever pins change, and every half minute; a root whose
//! DAG cannot be read completely yet is retried at the next round, so a pin becomes servable
//! once its whole DAG has been seen.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tokio_util::sync::CancellationToken;

use super::local::{LocalStore, StoreError};
use super::BlockSource;

/// `(block key, root CID)`: the block is reachable from that pinned root. A block key is its
/// multihash followed by its codec (8 bytes, big-endian), see [`block_key`].
const REACH: TableDefinition<(&[u8], &[u8]), ()> = TableDefinition::new("pinset2_reach");
/// `(root CID, block key)`: the same entries by root, to drop a root without a walk.
const ROOT_BLOCKS: TableDefinition<(&[u8], &[u8]), ()> =
    TableDefinition::new("pinset2_root_blocks");
/// Roots whose DAG is indexed, with their block count.
const INDEXED: TableDefinition<&[u8], u64> = TableDefinition::new("pinset2_roots");

/// A block's key in the index: multihash, then codec. A multihash is never a prefix of another
/// (its length is encoded in it), so the entries of one multihash are one key range.
fn block_key(cid: &Cid) -> Vec<u8> {
    let mut key = cid.hash().to_bytes();
    key.extend_from_slice(&cid.codec().to_be_bytes());
    key
}

/// How often the index is reconciled with the pins when nothing announced a change.
const RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// CIDs whose membership is kept in memory.
const MEMORY_ENTRIES: usize = 100_000;

/// Lists the roots an operator pinned outside the embedded store (in a remote hot layer).
pub type ExtraRoots = Box<dyn Fn() -> Vec<Cid> + Send + Sync>;

/// Why the index could not be read or updated.
#[derive(Debug, thiserror::Error)]
pub enum PinsetError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A pinned DAG could not be read completely (it is retried).
    #[error("walking {root}: {reason}")]
    Walk {
        /// The pinned root.
        root: Cid,
        /// What failed.
        reason: String,
    },
}

fn db<E: Into<StoreError>>(e: E) -> PinsetError {
    PinsetError::Store(e.into())
}

/// What one reconciliation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Roots newly indexed.
    pub added: usize,
    /// Roots dropped from the index.
    pub dropped: usize,
    /// Roots that could not be indexed yet.
    pub failed: usize,
    /// Roots left for the next round (at most [`ROOTS_PER_ROUND`] are indexed per round).
    pub pending: usize,
}

/// The index and what keeps it current.
pub struct PinsetIndex {
    store: LocalStore,
    source: Arc<dyn BlockSource>,
    extra_roots: ExtraRoots,
    /// CIDs known to be reachable, until a root is dropped.
    known: quick_cache::sync::Cache<Cid, ()>,
    /// Bumped whenever a root is dropped: what was allowed may not be any more.
    generation: AtomicU64,
    /// Roots that could not be indexed: failures so far, and when to try again.
    retry: std::sync::Mutex<std::collections::HashMap<Cid, (u32, std::time::Instant)>>,
}

/// Roots indexed per round at most, so that an unpin waits for a few walks, never for all.
const ROOTS_PER_ROUND: usize = 8;

impl PinsetIndex {
    /// The index in `store`, walking new pins through `source`; `extra_roots` lists pins held
    /// elsewhere (a Kubo node or a Cluster) that count as this gateway's.
    pub fn new(
        store: LocalStore,
        source: Arc<dyn BlockSource>,
        extra_roots: ExtraRoots,
    ) -> Result<Arc<Self>, PinsetError> {
        let tx = store.db.begin_write().map_err(db)?;
        tx.open_table(REACH).map_err(db)?;
        tx.open_table(ROOT_BLOCKS).map_err(db)?;
        tx.open_table(INDEXED).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Arc::new(Self {
            store,
            source,
            extra_roots,
            known: quick_cache::sync::Cache::new(MEMORY_ENTRIES),
            generation: AtomicU64::new(0),
            retry: std::sync::Mutex::new(std::collections::HashMap::new()),
        }))
    }

    /// Whether the block `cid` names is reachable from a pin: the same multihash and codec
    /// (CIDv0 and v1 alike), or `raw` of a block reachable with any codec.
    pub fn contains(&self, cid: &Cid) -> Result<bool, PinsetError> {
        if self.known.get(cid).is_some() {
            return Ok(true);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let (prefix, exact) = if cid.codec() == crate::ipld::RAW {
            (cid.hash().to_bytes(), false)
        } else {
            (block_key(cid), true)
        };
        let found = {
            let tx = self.store.db.begin_read().map_err(db)?;
            let reach = tx.open_table(REACH).map_err(db)?;
            let mut range = reach.range((prefix.as_slice(), &[][..])..).map_err(db)?;
            match range.next() {
                Some(entry) => {
                    let key = entry.map_err(db)?.0;
                    let k = key.value().0;
                    if exact {
                        k == prefix.as_slice()
                    } else {
                        k.len() == prefix.len() + 8 && k.starts_with(&prefix)
                    }
                }
                None => false,
            }
        };
        if found {
            self.known.insert(*cid, ());
            // A root dropped meanwhile may have removed it: keep only an answer no drop raced.
            if self.generation.load(Ordering::Acquire) != generation {
                self.known.remove(cid);
            }
        }
        Ok(found)
    }

    /// Changes whenever something that was reachable may have stopped being so.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The roots indexed now.
    pub fn indexed(&self) -> Result<Vec<Cid>, PinsetError> {
        let tx = self.store.db.begin_read().map_err(db)?;
        let t = tx.open_table(INDEXED).map_err(db)?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(db)? {
            if let Ok(cid) = Cid::try_from(entry.map_err(db)?.0.value()) {
                out.push(cid);
            }
        }
        Ok(out)
    }

    /// Indexes the pins that are new and drops the ones that are gone.
    pub async fn reconcile(&self) -> Result<Reconciled, PinsetError> {
        let store = self.store.clone();
        let mut pinned: BTreeSet<Vec<u8>> = tokio::task::spawn_blocking(move || store.pins())
            .await
            .map_err(|e| db(StoreError::Db(e.to_string())))??
            .into_iter()
            // What automation pinned (promotions) does not widen what a dedicated gateway
            // serves: that is the operator's pins alone.
            .filter(|p| p.reason != super::local::PinReason::Auto)
            .filter_map(|p| Cid::try_from(p.cid.as_str()).ok())
            .map(|c| c.to_bytes())
            .collect();
        pinned.extend((self.extra_roots)().iter().map(Cid::to_bytes));
        let indexed: BTreeSet<Vec<u8>> = self.indexed()?.iter().map(Cid::to_bytes).collect();
        let mut done = Reconciled::default();
        for root in indexed.difference(&pinned) {
            self.drop_root(root)?;
            done.dropped += 1;
        }
        if done.dropped > 0 {
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.known.clear();
        }
        let now = std::time::Instant::now();
        let due: Vec<Cid> = pinned
            .difference(&indexed)
            .filter_map(|r| Cid::try_from(r.as_slice()).ok())
            .filter(|c| {
                self.retry
                    .lock()
                    .map(|r| r.get(c).is_none_or(|(_, at)| *at <= now))
                    .unwrap_or(true)
            })
            .collect();
        done.pending = due.len().saturating_sub(ROOTS_PER_ROUND);
        for cid in due.into_iter().take(ROOTS_PER_ROUND) {
            match self.index_root(cid).await {
                Ok(()) => {
                    done.added += 1;
                    if let Ok(mut r) = self.retry.lock() {
                        r.remove(&cid);
                    }
                }
                Err(e) => {
                    // Backing off: a DAG that cannot be read now is not walked every round.
                    let tries = self
                        .retry
                        .lock()
                        .map(|mut r| {
                            let entry = r.entry(cid).or_insert((0, now));
                            entry.0 += 1;
                            entry.1 = std::time::Instant::now()
                                + Duration::from_secs(2u64.pow(entry.0.min(9)));
                            entry.0
                        })
                        .unwrap_or(1);
                    tracing::warn!(error = %e, tries, "pinset: a pinned DAG is not indexed yet (retried later)");
                    done.failed += 1;
                }
            }
        }
        Ok(done)
    }

    /// Walks `root`'s DAG and records every block under it, in one transaction.
    async fn index_root(&self, root: Cid) -> Result<(), PinsetError> {
        let mut seen: HashSet<Cid> = HashSet::new();
        let mut stack = vec![root];
        let mut keys: BTreeSet<Vec<u8>> = BTreeSet::new();
        while let Some(cid) = stack.pop() {
            if !seen.insert(cid) {
                continue;
            }
            let block = self.source.get(&cid).await.map_err(|e| PinsetError::Walk {
                root,
                reason: format!("{cid}: {e}"),
            })?;
            keys.insert(block_key(&cid));
            // A codec whose links cidgate cannot read (dag-jose, git, …) is a leaf here: its
            // bytes are served as they are, and nothing under it can be reached through it.
            match crate::ipld::codec::links(&cid, block.data()) {
                Ok(links) => stack.extend(links),
                Err(e) => {
                    tracing::debug!(%root, %cid, error = %e, "pinset: a block read as a leaf")
                }
            }
        }
        let key = root.to_bytes();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || -> Result<(), PinsetError> {
            let tx = store.db.begin_write().map_err(db)?;
            {
                let mut reach = tx.open_table(REACH).map_err(db)?;
                let mut by_root = tx.open_table(ROOT_BLOCKS).map_err(db)?;
                for block in &keys {
                    reach
                        .insert((block.as_slice(), key.as_slice()), ())
                        .map_err(db)?;
                    by_root
                        .insert((key.as_slice(), block.as_slice()), ())
                        .map_err(db)?;
                }
                let mut roots = tx.open_table(INDEXED).map_err(db)?;
                roots
                    .insert(key.as_slice(), keys.len() as u64)
                    .map_err(db)?;
            }
            tx.commit().map_err(db)?;
            Ok(())
        })
        .await
        .map_err(|e| db(StoreError::Db(e.to_string())))?
    }

    /// Removes `root` (CID bytes) and the entries it added.
    fn drop_root(&self, root: &[u8]) -> Result<(), PinsetError> {
        let tx = self.store.db.begin_write().map_err(db)?;
        {
            let mut by_root = tx.open_table(ROOT_BLOCKS).map_err(db)?;
            let mut reach = tx.open_table(REACH).map_err(db)?;
            let mut hashes = Vec::new();
            let end = {
                let mut e = root.to_vec();
                e.push(0xff);
                e
            };
            for entry in by_root
                .range((root, &[][..])..(end.as_slice(), &[][..]))
                .map_err(db)?
            {
                let (k, _) = entry.map_err(db)?;
                let (r, mh) = k.value();
                if r == root {
                    hashes.push(mh.to_vec());
                }
            }
            for mh in &hashes {
                reach.remove((mh.as_slice(), root)).map_err(db)?;
                by_root.remove((root, mh.as_slice())).map_err(db)?;
            }
            tx.open_table(INDEXED)
                .map_err(db)?
                .remove(root)
                .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(())
    }

    /// Keeps the index current until `cancel`: a round at start, whenever the store announces a
    /// pin change, and every half minute (pins in a remote hot layer announce nothing).
    pub fn spawn(self: &Arc<Self>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let changed = self.store.pin_changes();
        tokio::spawn(async move {
            loop {
                let mut more = false;
                match this.reconcile().await {
                    Ok(r) if r != Reconciled::default() => {
                        more = r.pending > 0;
                        tracing::info!(
                            added = r.added,
                            dropped = r.dropped,
                            failed = r.failed,
                            "pinset index updated"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "pinset index: reconciling failed"),
                }
                if more {
                    // Drops come first in every round: more walks wait for the next one.
                    continue;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = changed.notified() => {}
                    _ = tokio::time::sleep(RECONCILE_EVERY) => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiers::local::PinReason;

    fn store_with_sample() -> (LocalStore, Cid, Vec<Cid>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let (root, blocks) = crate::sample::build().unwrap();
        let batch = store.new_batch().unwrap();
        store.put_staged(batch, &blocks, false).unwrap();
        store.commit_batch(batch, &[]).unwrap();
        let cids = blocks.iter().map(|b| *b.cid()).collect();
        (store, root.cid, cids, dir)
    }

    #[tokio::test]
    async fn pinned_dags_are_indexed_and_unpinned_ones_dropped() {
        let (store, root, cids, _dir) = store_with_sample();
        let index =
            PinsetIndex::new(store.clone(), Arc::new(store.clone()), Box::new(Vec::new)).unwrap();
        assert!(!index.contains(&root).unwrap(), "nothing pinned yet");
        assert_eq!(index.reconcile().await.unwrap(), Reconciled::default());

        store.pin(&root, PinReason::Operator, None).unwrap();
        let r = index.reconcile().await.unwrap();
        assert_eq!((r.added, r.dropped, r.failed), (1, 0, 0));
        for cid in &cids {
            assert!(index.contains(cid).unwrap(), "{cid} is under the pin");
        }
        // The same bytes as raw (no links) are fine; read with another codec they are another
        // node, with links the walk never followed.
        let raw = Cid::new_v1(crate::ipld::RAW, *root.hash());
        assert!(index.contains(&raw).unwrap());
        let as_json = Cid::new_v1(crate::ipld::DAG_JSON, *root.hash());
        assert!(!index.contains(&as_json).unwrap());
        let leaf = cids
            .iter()
            .find(|c| c.codec() == crate::ipld::RAW)
            .expect("the sample has raw leaves");
        let leaf_as_cbor = Cid::new_v1(crate::ipld::DAG_CBOR, *leaf.hash());
        assert!(
            !index.contains(&leaf_as_cbor).unwrap(),
            "a raw leaf read as dag-cbor"
        );
        let v0 = Cid::new_v0(*root.hash()).unwrap();
        assert!(index.contains(&v0).unwrap(), "CIDv0 of a dag-pb block");
        let other = Cid::new_v1(
            crate::ipld::RAW,
            multihash_codetable::MultihashDigest::digest(
                &multihash_codetable::Code::Sha2_256,
                b"x",
            ),
        );
        assert!(!index.contains(&other).unwrap());

        let before = index.generation();
        assert!(store.unpin(&root).unwrap());
        let r = index.reconcile().await.unwrap();
        assert_eq!((r.added, r.dropped), (0, 1));
        assert_ne!(index.generation(), before);
        for cid in &cids {
            assert!(!index.contains(cid).unwrap(), "{cid} dropped with its pin");
        }
    }

    #[tokio::test]
    async fn a_dag_that_cannot_be_read_whole_is_retried_and_extra_roots_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let (root, blocks) = crate::sample::build().unwrap();
        // Only the root block: its children are missing.
        let batch = store.new_batch().unwrap();
        let root_block: Vec<_> = blocks
            .iter()
            .filter(|b| *b.cid() == root.cid)
            .cloned()
            .collect();
        store.put_staged(batch, &root_block, false).unwrap();
        store.commit_batch(batch, &[]).unwrap();
        let extra = root.cid;
        let index = PinsetIndex::new(
            store.clone(),
            Arc::new(store.clone()),
            Box::new(move || vec![extra]),
        )
        .unwrap();
        let r = index.reconcile().await.unwrap();
        assert_eq!((r.added, r.failed), (0, 1));
        assert!(
            !index.contains(&root.cid).unwrap(),
            "not servable half-indexed"
        );
        let batch = store.new_batch().unwrap();
        store.put_staged(batch, &blocks, false).unwrap();
        store.commit_batch(batch, &[]).unwrap();
        // Backing off: not walked again at once...
        let r = index.reconcile().await.unwrap();
        assert_eq!((r.added, r.failed), (0, 0));
        // ... but once its time has come.
        index.retry.lock().unwrap().clear();
        let r = index.reconcile().await.unwrap();
        assert_eq!((r.added, r.failed), (1, 0));
        assert!(index.contains(&root.cid).unwrap());
        assert_eq!(index.indexed().unwrap(), vec![root.cid]);
    }

    #[tokio::test]
    async fn a_block_of_a_codec_without_readable_links_is_a_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let data = bytes::Bytes::from_static(b"not a link in sight");
        let cid = Cid::new_v1(
            0x85, // dag-jose
            multihash_codetable::MultihashDigest::digest(
                &multihash_codetable::Code::Sha2_256,
                &data,
            ),
        );
        let block = crate::ipld::block::Block::verified(cid, data).unwrap();
        let batch = store.new_batch().unwrap();
        store.put_staged(batch, &[block], false).unwrap();
        store
            .commit_batch(batch, &[(cid, PinReason::Operator)])
            .unwrap();
        let index =
            PinsetIndex::new(store.clone(), Arc::new(store.clone()), Box::new(Vec::new)).unwrap();
        let r = index.reconcile().await.unwrap();
        assert_eq!((r.added, r.failed), (1, 0));
        assert!(index.contains(&cid).unwrap());
    }
}
