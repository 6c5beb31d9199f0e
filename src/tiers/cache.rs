//! The edge cache: verified blocks in memory, bounded in bytes.
//!
//! quick_cache's CLOCK-Pro style admission keeps new entries in a small "cold" section and
//! remembers recently evicted keys, so the many CIDs requested only once pass through without
//! pushing out the popular ones (measured against a plain LRU in `benches/hit_ratio.rs`).
//! In front of it, [`Admission`] (TinyLFU) lets a block fetched from a remote tier in only if it
//! has been asked for about as often as what the cache currently lets go, which closes most of
//! the remaining gap to Belady's optimum on the same trace.
//! Keyed by multihash, so CIDv0 / CIDv1 and any codec share an entry; hits are not re-hashed
//! because only verified blocks get in. A large block read again is copied once into a
//! [`crate::zero_copy::Arena`] so that later responses can send it without another copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use multihash::Multihash;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

use crate::ipld::Block;
use crate::telemetry::Metrics;
use crate::zero_copy::{is_segment_slice, Arena, MIN_ZERO_COPY_BYTES};

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
    /// The evicted keys and sizes of one insert, handed to [`Admission::evicted`] after the
    /// shard lock is released (an empty Vec costs no allocation).
    type RequestState = Vec<(Multihash<64>, usize)>;

    fn on_evict(&self, state: &mut Self::RequestState, key: Multihash<64>, val: Bytes) {
        self.0.cache_evictions.inc();
        state.push((key, val.len()));
    }
}

/// Counters per sketch word (4 bits each).
const COUNTERS_PER_WORD: u64 = 16;
/// Largest value of a 4-bit counter.
const COUNTER_MAX: u64 = 15;
/// Every counter of a word halved at once: shift, then clear the bit each counter received
/// from its neighbour.
const HALVE_MASK: u64 = 0x7777_7777_7777_7777;
/// Block size at which the size factor of a score is 1.
const SCORE_UNIT_BYTES: f64 = 65536.0;
/// Multihash code of the identity "hash" (the digest is the data).
const IDENTITY: u64 = 0x00;
/// Weight of the newest victim in the running mean of victims' scores.
const VICTIM_MEAN_WEIGHT: f64 = 1.0 / 16.0;

/// Which fetched blocks enter the edge cache (TinyLFU): a count-min sketch of 4-bit counters
/// estimates how often each key was asked for lately (hits, fetches and store reads), halved
/// every few misses so that old popularity fades; a fetched block is admitted when its score
/// (estimate / (size / 64 KiB)^¼) reaches the running mean score of the entries the cache
/// evicted. quick_cache does not let a caller compare a newcomer with its next victim, so the
/// recent victims stand in for it. The quarter power favours small blocks a little: a
/// frequency-per-byte score wins more requests but loses byte hit ratio, which is what the
/// cold tier bills (`benches/hit_ratio.rs`; the candidates' figures are in docs/benchmarks.md).
pub struct Admission {
    /// 16 counters per word; the four counters of a key lie in 8 adjacent words (64 bytes,
    /// one or two cache lines), so that a hit touches little memory.
    words: Box<[AtomicU64]>,
    /// Misses recorded, for the periodic halving.
    misses: AtomicU64,
    /// Misses between two halvings: ten per 16 KiB of cache (TinyLFU's ten samples per entry).
    period: u64,
    /// Running mean of the scores of evicted entries, as f64 bits. Updates race (a lost
    /// update only delays the mean), which keeps the miss path free of locks.
    victim_mean: AtomicU64,
}

impl Admission {
    /// The admission filter of an edge cache of `bytes`.
    pub fn new(bytes: u64) -> Self {
        // A counter for every 4 KiB of cache, so that keys the cache could hold rarely share
        // all four counters (32 KiB for 256 MiB, at most 8 MiB).
        let counters = (bytes / 4096).next_power_of_two().clamp(1 << 16, 1 << 24);
        let words = (0..counters / COUNTERS_PER_WORD)
            .map(|_| AtomicU64::new(0))
            .collect();
        Self {
            words,
            misses: AtomicU64::new(0),
            period: (bytes / (16 * 1024)).saturating_mul(10).max(10_000),
            victim_mean: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Word index and bit shift of the key's counter in each of the four rows.
    fn slots(&self, key: &Multihash<64>) -> [(usize, u32); 4] {
        let digest = key.digest();
        let h = match digest.first_chunk::<8>() {
            // A cryptographic digest is uniform already: its first bytes will do, once mixed.
            Some(head) if key.code() != IDENTITY => mix(u64::from_le_bytes(*head)),
            // Identity multihashes carry the data itself: mix every byte in.
            _ => digest.chunks(8).fold(key.code(), |h, chunk| {
                let mut w = [0u8; 8];
                w[..chunk.len()].copy_from_slice(chunk);
                mix(h ^ u64::from_le_bytes(w))
            }),
        };
        let lines = self.words.len() / 8;
        let line = (h as usize & (lines - 1)) * 8;
        let bits = h >> 32;
        std::array::from_fn(|row| {
            let b = bits >> (row * 8);
            // Row `row` uses word 2·row or 2·row + 1 of the line: rows never share a word.
            (
                line + 2 * row + (b & 1) as usize,
                ((b >> 1) & 15) as u32 * 4,
            )
        })
    }

    fn count(&self, (word, shift): (usize, u32)) -> u64 {
        (self.words[word].load(Ordering::Relaxed) >> shift) & COUNTER_MAX
    }

    /// How often `key` was asked for lately (an overestimate, never an underestimate, bar
    /// lost racing updates).
    pub fn estimate(&self, key: &Multihash<64>) -> u64 {
        self.slots(key)
            .into_iter()
            .map(|s| self.count(s))
            .min()
            .unwrap_or(0)
    }

    /// Counts a request for `key` (a cache hit): four loads and at most four stores in 64 bytes.
    pub fn record(&self, key: &Multihash<64>) {
        let slots = self.slots(key);
        let counts = slots.map(|s| self.count(s));
        let min = counts.into_iter().min().unwrap_or(COUNTER_MAX);
        if min >= COUNTER_MAX {
            return;
        }
        // Conservative update: only the counters at the minimum grow, which keeps the
        // estimates of keys that share the others accurate. Load and store rather than
        // compare-and-swap: a racing update may be lost, never overflow into a neighbour.
        for ((word, shift), c) in slots.into_iter().zip(counts) {
            if c == min {
                let w = &self.words[word];
                w.store(w.load(Ordering::Relaxed) + (1 << shift), Ordering::Relaxed);
            }
        }
    }

    /// Counts a miss for `key` (a fetch or a store read), halving every counter once per
    /// period.
    pub fn record_miss(&self, key: &Multihash<64>) {
        self.record(key);
        if (self.misses.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(self.period) {
            for w in self.words.iter() {
                w.store(
                    (w.load(Ordering::Relaxed) >> 1) & HALVE_MASK,
                    Ordering::Relaxed,
                );
            }
            // The victims' scores halve with the counters they came from.
            self.set_victim_mean(self.victim_mean() / 2.0);
        }
    }

    /// Whether a block of `len` bytes fetched for `key` should enter the cache; counts the
    /// miss. An empty cache evicts nothing, so it admits everything until it is full.
    pub fn admit_fetched(&self, key: &Multihash<64>, len: usize) -> bool {
        let admit = score(self.estimate(key), len) >= self.victim_mean();
        self.record_miss(key);
        admit
    }

    /// Tells the filter that the cache evicted `key` (`len` bytes).
    pub fn evicted(&self, key: &Multihash<64>, len: usize) {
        let mean = self.victim_mean();
        let s = score(self.estimate(key), len);
        self.set_victim_mean(mean + (s - mean) * VICTIM_MEAN_WEIGHT);
    }

    fn victim_mean(&self) -> f64 {
        f64::from_bits(self.victim_mean.load(Ordering::Relaxed))
    }

    fn set_victim_mean(&self, mean: f64) {
        self.victim_mean.store(mean.to_bits(), Ordering::Relaxed);
    }
}

/// The splitmix64 finaliser: spreads every input bit over the output.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Admission score: the frequency estimate over the fourth root of the size in 64 KiB units.
fn score(estimate: u64, len: usize) -> f64 {
    estimate as f64 / (len.max(1) as f64 / SCORE_UNIT_BYTES).sqrt().sqrt()
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
    /// Which fetched blocks get in.
    admission: Arc<Admission>,
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
            admission: Arc::new(Admission::new(bytes)),
            arena,
            hit_once: Arc::new(Cache::new(
                (bytes / MIN_ZERO_COPY_BYTES as u64).clamp(1024, 65536) as usize,
            )),
            spill: None,
        })
    }

    /// The cached block for `cid`, counted as a hit or a miss.
    pub fn get(&self, cid: &Cid) -> Option<Block> {
        let block = self.get_if_held(cid);
        if block.is_none() {
            self.metrics.cache_misses.inc();
        }
        block
    }

    /// [`EdgeCache::get`] that counts a hit but not a miss (the caller goes on to a lookup
    /// that counts it).
    pub fn get_if_held(&self, cid: &Cid) -> Option<Block> {
        let data = self.cache.get(cid.hash())?;
        self.metrics.cache_hits.inc();
        self.admission.record(cid.hash());
        let data = self.zero_copy(cid.hash(), data);
        Some(Block::already_verified(*cid, data))
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

    /// Caches a block fetched from the hot node or the cold tier: in memory if [`Admission`]
    /// lets it in, and on disk when the store keeps fetched blocks (the store has its own
    /// budget and eviction, and a block read from it again enters memory as a store read).
    pub fn insert_fetched(&self, block: &Block) {
        let key = block.cid().hash();
        // Not counted again when already there (delivered by two streams): one request.
        if !self.cache.contains_key(key) && self.admission.admit_fetched(key, block.data().len()) {
            self.admit(block);
        }
        if let Some(w) = &self.spill {
            w.offer(block);
        }
    }

    /// Caches a verified block read from the local store (or prewarmed), without asking
    /// [`Admission`]: reading it cost no remote fetch, and pinned content belongs in memory.
    /// Not a slice of a store segment: it is trusted only while its pages stay in the page
    /// cache, which is checked on every store read and cannot be here; the store serves it
    /// again from its mapping at about the cost of a hit, and the memory cache would keep the
    /// segment file (and its disk space) open after eviction deleted it.
    pub fn insert(&self, block: &Block) {
        if block.len() >= MIN_ZERO_COPY_BYTES && is_segment_slice(block.data()) {
            return;
        }
        // A block delivered again (another stream, a store read racing a stream) has the same
        // bytes, since the key is their hash: keep what is there, which may be an arena copy.
        // Replacing it would also count as an eviction (quick_cache reports replaced values).
        if self.cache.contains_key(block.cid().hash()) {
            return;
        }
        self.admission.record_miss(block.cid().hash());
        self.admit(block);
    }

    /// Puts a block that is not cached yet into the cache, and tells [`Admission`] what left.
    fn admit(&self, block: &Block) {
        let mut evicted = Vec::new();
        self.cache
            .insert_with_lifecycle(*block.cid().hash(), block.data().clone(), &mut evicted);
        for (key, len) in &evicted {
            self.admission.evicted(key, *len);
        }
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
                // Same key, same weight: a replacement, which evicts nothing.
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

    /// A 4 MiB cache filled past its size with blocks fetched once: evictions have taught
    /// admission what a typical victim is worth.
    fn full_cache() -> EdgeCache {
        let cache = EdgeCache::new(4 * 1024 * 1024, Metrics::new()).unwrap();
        for i in 0..200 {
            cache.insert_fetched(&block(10_000 + i, 64 * 1024));
        }
        assert!(cache.admission.victim_mean() > 0.0, "the cache has evicted");
        cache
    }

    #[test]
    fn an_empty_cache_admits_what_it_fetches() {
        let cache = EdgeCache::new(4 * 1024 * 1024, Metrics::new()).unwrap();
        let b = block(1, 256 * 1024);
        cache.insert_fetched(&b);
        assert!(cache.contains(b.cid()));
    }

    #[test]
    fn a_fetched_block_asked_twice_is_admitted() {
        let cache = full_cache();
        let b = block(1, 64 * 1024);
        cache.insert_fetched(&b);
        assert!(
            !cache.contains(b.cid()),
            "one request is no better than a victim"
        );
        assert!(cache.get(b.cid()).is_none());
        cache.insert_fetched(&b);
        assert!(cache.contains(b.cid()), "the second request gets it in");
    }

    #[test]
    fn store_reads_are_admitted_without_asking() {
        let cache = full_cache();
        let b = block(1, 64 * 1024);
        cache.insert(&b);
        assert!(cache.contains(b.cid()));
    }

    #[test]
    fn one_hit_blocks_do_not_displace_a_popular_working_set() {
        let cache = full_cache();
        let popular: Vec<Block> = (0..16).map(|i| block(i, 64 * 1024)).collect();
        for _ in 0..3 {
            for b in &popular {
                if cache.get(b.cid()).is_none() {
                    cache.insert_fetched(b);
                }
            }
        }
        for b in &popular {
            assert!(cache.get(b.cid()).is_some(), "the working set is in");
        }
        let one_hit: Vec<Block> = (0..300).map(|i| block(1_000 + i, 64 * 1024)).collect();
        for b in &one_hit {
            assert!(cache.get(b.cid()).is_none());
            cache.insert_fetched(b);
        }
        for b in &popular {
            assert!(
                cache.contains(b.cid()),
                "a one-hit scan evicted a popular block"
            );
        }
        let admitted = one_hit.iter().filter(|b| cache.contains(b.cid())).count();
        assert_eq!(admitted, 0, "blocks asked once stay out of a full cache");
    }

    #[test]
    fn sketch_counts_saturate_and_halve() {
        let a = Admission::new(4 * 1024 * 1024);
        let key = *block(1, 10).cid().hash();
        let other = *block(2, 10).cid().hash();
        for _ in 0..40 {
            a.record(&key);
        }
        assert_eq!(a.estimate(&key), COUNTER_MAX, "4-bit counters stop at 15");
        assert_eq!(a.estimate(&other), 0);
        for i in 0..a.period {
            a.record_miss(block(100 + i as u32, 10).cid().hash());
        }
        assert_eq!(
            a.estimate(&key),
            COUNTER_MAX / 2,
            "a period halves every counter"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn slices_of_store_segments_are_never_kept() {
        use crate::zero_copy::MappedFile;
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 128 * 1024];
        let file = crate::zero_copy::test_segment(dir.path(), &data);
        let map = MappedFile::new(std::sync::Arc::new(file), 1 << 20).unwrap();
        let slice = map.resident(0, data.len()).unwrap().expect("just written");
        let cid = crate::ipld::cid_v1_sha256(crate::ipld::RAW, &data);
        let cache = EdgeCache::new(16 * 1024 * 1024, Metrics::new()).unwrap();
        cache.insert(&Block::already_verified(cid, slice));
        assert!(
            cache.get(&cid).is_none(),
            "trusted only while the store checks its pages"
        );
        let heap = Block::verified(cid, bytes::Bytes::from(data)).unwrap();
        cache.insert(&heap);
        assert!(cache.get(&cid).is_some(), "a copy is kept");
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
