//! The edge cache: verified blocks in memory, bounded in bytes.
//!
//! quick_cache's CLOCK-Pro style admission keeps new entries in a small "cold" section and
//! remembers recently evicted keys, so the many CIDs requested only once pass through without
//! pushing out the popular ones (measured against a plain LRU in `benches/hit_ratio.rs`).
//! Keyed by multihash, so CIDv0 / CIDv1 and any codec share an entry; hits are not re-hashed
//! because only verified blocks get in. A large block read again is copied once into a
//! [`crate::zero_copy::Arena`] so that later responses can send it without another copy.

use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use multihash::Multihash;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

use crate::ipld::Block;
use crate::telemetry::Metrics;
use crate::zero_copy::{Arena, MIN_ZERO_COPY_BYTES};

/// Target bytes per cache shard.
const SHARD_BYTES: u64 = 32 * 1024 * 1024;
/// Share of the cache for entries seen more than once; the rest admits new entries. quick_cache's
/// default (97 %) leaves too little room for new 1 MiB blocks to survive until their second read;
/// the choice is measured in `benches/hit_ratio.rs` (docs/benchmarks.md).
const HOT_ALLOCATION: f64 = 0.8;

/// Fixed cost per entry besides its bytes (key, handle, bookkeeping).
pub const ENTRY_OVERHEAD: u64 = 128;

/// Arena room beyond the cache's own bound: evicted blocks stay in their slots while responses
/// still send them.
fn arena_bytes(cache_bytes: u64) -> u64 {
    cache_bytes + cache_bytes / 4 + 4 * crate::ipld::MAX_BLOCK_SIZE as u64
}

#[derive(Clone)]
struct BlockWeight;

impl Weighter<Multihash<64>, Bytes> for BlockWeight {
    fn weight(&self, _key: &Multihash<64>, val: &Bytes) -> u64 {
        val.len() as u64 + ENTRY_OVERHEAD
    }
}

#[derive(Clone)]
struct Evictions(Arc<Metrics>);

impl Lifecycle<Multihash<64>, Bytes> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: Multihash<64>, _val: Bytes) {
        self.0.cache_evictions.inc();
    }
}

/// The cache cannot be built with the configured sizes.
#[derive(Debug, thiserror::Error)]
#[error("edge cache options rejected: {0}")]
pub struct CacheError(String);

/// The quick_cache options of an edge cache of `bytes` (public so that `benches/hit_ratio.rs`
/// replays traces through exactly this policy).
pub fn cache_options(bytes: u64) -> Result<quick_cache::Options, CacheError> {
    // Few, large shards: each one's cold section must hold several of the largest blocks,
    // or a freshly fetched 1 MiB leaf would be evicted before its second read.
    let shards = (bytes / SHARD_BYTES)
        .clamp(1, 16)
        .next_power_of_two()
        .min(16);
    OptionsBuilder::new()
        .estimated_items_capacity((bytes / (16 * 1024)).max(64) as usize)
        .weight_capacity(bytes)
        .shards(shards as usize)
        .hot_allocation(HOT_ALLOCATION)
        .build()
        .map_err(|e| CacheError(format!("{e:?}")))
}

/// The in-memory edge cache.
#[derive(Clone)]
pub struct EdgeCache {
    cache: Arc<Cache<Multihash<64>, Bytes, BlockWeight, DefaultHashBuilder, Evictions>>,
    metrics: Arc<Metrics>,
    arena: Option<Arena>,
    /// Large heap blocks hit once (a bounded memory of recent keys, which may outlive an
    /// eviction); the next hit moves them to the arena.
    hit_once: Arc<Cache<Multihash<64>, ()>>,
    /// Where fetched blocks are also kept on disk (the store's cache entries).
    spill: Option<Arc<super::spill::CacheWriter>>,
}

impl EdgeCache {
    /// A cache holding up to `bytes` of blocks, all on the heap.
    pub fn new(bytes: u64, metrics: Arc<Metrics>) -> Result<Self, CacheError> {
        Self::build(bytes, metrics, None)
    }

    /// A cache holding up to `bytes` of blocks, the large ones in a zero-copy arena when this
    /// platform has one (otherwise on the heap, with a warning).
    pub fn with_zero_copy(bytes: u64, metrics: Arc<Metrics>) -> Result<Self, CacheError> {
        let arena = match Arena::new(arena_bytes(bytes)) {
            Ok(arena) => Some(arena),
            Err(e) => {
                match e {
                    crate::zero_copy::ArenaError::Unsupported => {
                        tracing::info!(error = %e, "cached blocks stay on the heap")
                    }
                    _ => tracing::warn!(error = %e, "cached blocks stay on the heap"),
                }
                None
            }
        };
        Self::build(bytes, metrics, arena)
    }

    fn build(bytes: u64, metrics: Arc<Metrics>, arena: Option<Arena>) -> Result<Self, CacheError> {
        let cache = Cache::with_options(
            cache_options(bytes)?,
            BlockWeight,
            DefaultHashBuilder::default(),
            Evictions(metrics.clone()),
        );
        Ok(Self {
            cache: Arc::new(cache),
            metrics,
            arena,
            hit_once: Arc::new(Cache::new(
                (bytes / MIN_ZERO_COPY_BYTES as u64).clamp(1024, 65536) as usize,
            )),
            spill: None,
        })
    }

    /// The cached block for `cid`, counted as a hit or a miss.
    pub fn get(&self, cid: &Cid) -> Option<Block> {
        match self.cache.get(cid.hash()) {
            Some(data) => {
                self.metrics.cache_hits.inc();
                let data = self.zero_copy(cid.hash(), data);
                Some(Block::already_verified(*cid, data))
            }
            None => {
                self.metrics.cache_misses.inc();
                None
            }
        }
    }

    /// The cached block without counting a hit or miss (for re-checks after a wait).
    pub fn get_uncounted(&self, cid: &Cid) -> Option<Block> {
        self.cache
            .peek(cid.hash())
            .map(|data| Block::already_verified(*cid, data))
    }

    /// Whether the block is cached, without counting or promoting it.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.cache.peek(cid.hash()).is_some()
    }

    /// Keeps fetched blocks in the store too (written behind, never delaying a response).
    pub fn with_spill(mut self, writer: Arc<super::spill::CacheWriter>) -> Self {
        self.spill = Some(writer);
        self
    }

    /// Caches a block fetched from the hot node or the cold tier: in memory, and on disk when
    /// the store keeps fetched blocks.
    pub fn insert_fetched(&self, block: &Block) {
        self.insert(block);
        if let Some(w) = &self.spill {
            w.offer(block);
        }
    }

    /// Admits a verified block.
    pub fn insert(&self, block: &Block) {
        // A block delivered again (another stream, a store read racing a stream) has the same
        // bytes, since the key is their hash: keep what is there, which may be an arena copy.
        // Replacing it would also count as an eviction (quick_cache reports replaced values).
        if self.cache.contains_key(block.cid().hash()) {
            return;
        }
        self.cache.insert(*block.cid().hash(), block.data().clone());
        self.metrics.cache_bytes.set(self.cache.weight() as i64);
        if let Some(arena) = &self.arena {
            // Evicted blocks leave the arena when their last reader lets go, not at eviction.
            self.metrics.cache_arena_bytes.set(arena.used() as i64);
        }
    }

    /// The arena copy of a large block read for the second time since admission, replacing the
    /// heap copy in the cache; otherwise the block itself. Not on admission, nor on the first
    /// hit: a file streamed once is admitted by read-ahead and hit once by its reader, and
    /// copying it would cost time and, until the heap copy is reused, twice its memory.
    fn zero_copy(&self, key: &Multihash<64>, data: Bytes) -> Bytes {
        let Some(arena) = &self.arena else {
            return data;
        };
        if data.len() < MIN_ZERO_COPY_BYTES || arena.holds(&data) {
            return data;
        }
        if self.hit_once.remove(key).is_none() {
            self.hit_once.insert(*key, ());
            return data;
        }
        match arena.copy_in(&data) {
            Some(copy) => {
                self.cache.insert(*key, copy.clone());
                self.metrics.cache_arena_bytes.set(arena.used() as i64);
                copy
            }
            None => {
                self.metrics.cache_arena_full.inc();
                data
            }
        }
    }

    /// Bytes it may hold (`cache.memory`).
    pub fn capacity(&self) -> u64 {
        self.cache.capacity()
    }

    /// Bytes held (including per-entry overhead).
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{cid_v1_sha256, RAW};

    fn block(i: u32, size: usize) -> Block {
        let mut data = vec![0u8; size];
        data[..4].copy_from_slice(&i.to_le_bytes());
        let cid = cid_v1_sha256(RAW, &data);
        Block::verified(cid, Bytes::from(data)).unwrap()
    }

    #[test]
    fn two_mib_blocks_fit_and_bytes_stay_bounded() {
        let cache = EdgeCache::new(16 * 1024 * 1024, Metrics::new()).unwrap();
        let big = block(1, crate::ipld::MAX_BLOCK_SIZE);
        cache.insert(&big);
        assert!(cache.get(big.cid()).is_some(), "a 2 MiB block is cacheable");
        for i in 0..200 {
            cache.insert(&block(i + 10, 256 * 1024));
        }
        assert!(cache.weight() <= 16 * 1024 * 1024);
    }

    #[test]
    fn fresh_large_blocks_survive_until_read_again() {
        let cache = EdgeCache::new(256 * 1024 * 1024, Metrics::new()).unwrap();
        let blocks: Vec<Block> = (0..20).map(|i| block(i, 1024 * 1024)).collect();
        for b in &blocks {
            cache.insert(b);
        }
        for b in &blocks {
            assert!(
                cache.get(b.cid()).is_some(),
                "a 20 MiB working set fits a 256 MiB cache"
            );
        }
    }

    #[test]
    fn a_block_delivered_again_is_not_an_eviction() {
        let metrics = Metrics::new();
        let cache = EdgeCache::new(8 * 1024 * 1024, metrics.clone()).unwrap();
        let b = block(3, 4096);
        cache.insert(&b);
        cache.insert(&b);
        cache.insert_fetched(&b);
        assert_eq!(metrics.cache_evictions.get(), 0);
        assert!(cache.get(b.cid()).is_some());
    }

    #[test]
    fn cidv0_and_v1_share_an_entry() {
        let cache = EdgeCache::new(8 * 1024 * 1024, Metrics::new()).unwrap();
        let b = block(7, 100);
        cache.insert(&b);
        let other_codec = Cid::new_v1(crate::ipld::DAG_PB, *b.cid().hash());
        let hit = cache.get(&other_codec).unwrap();
        assert_eq!(hit.cid(), &other_codec);
        assert_eq!(hit.data(), b.data());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn large_blocks_move_to_the_arena_on_their_second_hit() {
        let metrics = Metrics::new();
        let cache = EdgeCache::with_zero_copy(16 * 1024 * 1024, metrics.clone()).unwrap();
        let arena = cache.arena.clone().unwrap();
        let big = block(1, 256 * 1024);
        let small = block(2, 4096);
        cache.insert(&big);
        cache.insert(&small);
        assert_eq!(arena.used(), 0, "admission copies nothing");
        let first = cache.get(big.cid()).unwrap();
        assert!(!arena.holds(first.data()), "nor does the first hit");
        let second = cache.get(big.cid()).unwrap();
        assert!(arena.holds(second.data()) && !arena.holds(big.data()));
        assert_eq!(second.data(), big.data());
        let third = cache.get(big.cid()).unwrap();
        assert_eq!(third.data().as_ptr(), second.data().as_ptr(), "moved once");
        assert!(!arena.holds(cache.get(small.cid()).unwrap().data()));
        assert_eq!(arena.used(), 256 * 1024);
        assert_eq!(metrics.cache_arena_bytes.get(), 256 * 1024);
        drop((first, second, third));
        cache.insert(&block(3, 300));
        assert_eq!(
            arena.used(),
            256 * 1024,
            "the cache still holds the arena copy"
        );
    }
}
