//! Request and byte hit ratio of the edge cache (its TinyLFU admission in front of quick_cache)
//! against quick_cache alone (the edge cache before admission), a plain LRU of the same byte size
//! and Belady's offline optimum (the upper bound), on a Zipf workload where half of the distinct
//! CIDs are requested exactly once (as on public gateways).
//!
//! `cargo bench --bench hit_ratio`; figures are recorded in docs/benchmarks.md.

use cidgate::ipld::{cid_v1_sha256, Cid, RAW};
use cidgate::tiers::cache::{cache_options, Admission, ENTRY_OVERHEAD};
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// One object of the catalogue: a CID and its block size.
#[derive(Clone, Copy)]
struct Obj {
    cid: Cid,
    size: usize,
}

/// The edge cache's weighing: block size plus per-entry overhead.
#[derive(Clone)]
struct SizeWeight;

impl Weighter<Cid, u32> for SizeWeight {
    fn weight(&self, _key: &Cid, size: &u32) -> u64 {
        *size as u64 + ENTRY_OVERHEAD
    }
}

/// A byte-bounded LRU (the classic baseline).
struct ByteLru {
    lru: lru::LruCache<Cid, usize>,
    bytes: usize,
    capacity: usize,
}

impl ByteLru {
    fn new(capacity: usize) -> Self {
        Self {
            lru: lru::LruCache::unbounded(),
            bytes: 0,
            capacity,
        }
    }
    fn get(&mut self, cid: &Cid) -> bool {
        self.lru.get(cid).is_some()
    }
    fn insert(&mut self, cid: Cid, size: usize) {
        self.bytes += size;
        self.lru.put(cid, size);
        while self.bytes > self.capacity {
            match self.lru.pop_lru() {
                Some((_, s)) => self.bytes -= s,
                None => break,
            }
        }
    }
}

/// Belady's offline policy with sizes: on a miss, the object is admitted only if it is used
/// again and is not itself the one used furthest in the future; to make room, the cached
/// object whose next use is furthest goes first. With unequal sizes this is the classic
/// approximation of the optimum (exact OPT with sizes is NP-hard), and the usual upper bound.
fn belady(trace: &[Obj], capacity: usize) -> Outcome {
    use std::collections::{BTreeSet, HashMap};
    // Next position of the same CID, or usize::MAX.
    let mut next = vec![usize::MAX; trace.len()];
    let mut last: HashMap<Cid, usize> = HashMap::new();
    for (i, o) in trace.iter().enumerate().rev() {
        if let Some(&j) = last.get(&o.cid) {
            next[i] = j;
        }
        last.insert(o.cid, i);
    }
    let mut cached: HashMap<Cid, (usize, usize)> = HashMap::new(); // cid -> (next use, size)
    let mut by_next: BTreeSet<(usize, Cid)> = BTreeSet::new();
    let mut bytes = 0usize;
    let mut out = Outcome::default();
    for (i, o) in trace.iter().enumerate() {
        let weight = o.size + ENTRY_OVERHEAD as usize;
        if let Some((n, size)) = cached.remove(&o.cid) {
            out.record(true, o.size);
            by_next.remove(&(n, o.cid));
            if next[i] == usize::MAX {
                bytes -= size;
            } else {
                cached.insert(o.cid, (next[i], size));
                by_next.insert((next[i], o.cid));
            }
            continue;
        }
        out.record(false, o.size);
        if next[i] == usize::MAX || weight > capacity {
            continue;
        }
        while bytes + weight > capacity {
            let Some(&(n, victim)) = by_next.iter().next_back() else {
                break;
            };
            if n < next[i] {
                break;
            }
            by_next.remove(&(n, victim));
            if let Some((_, size)) = cached.remove(&victim) {
                bytes -= size;
            }
        }
        if bytes + weight <= capacity {
            bytes += weight;
            cached.insert(o.cid, (next[i], weight));
            by_next.insert((next[i], o.cid));
        }
    }
    out
}

/// The edge cache's lifecycle for the bench: collects what an insert evicted, for
/// [`Admission::evicted`] (as `EdgeCache` does).
#[derive(Clone, Default)]
struct Evicted;

impl Lifecycle<Cid, u32> for Evicted {
    type RequestState = Vec<(Cid, u32)>;
    fn on_evict(&self, state: &mut Self::RequestState, key: Cid, size: u32) {
        state.push((key, size));
    }
}

/// `EdgeCache` on sizes instead of bytes: quick_cache with the edge cache's options behind its
/// [`Admission`], called in the same order as `EdgeCache::get` and `EdgeCache::insert_fetched`.
struct Edge {
    cache: Cache<Cid, u32, SizeWeight, DefaultHashBuilder, Evicted>,
    admission: Admission,
}

impl Edge {
    fn new(cap: u64) -> Self {
        Self {
            cache: Cache::with_options(
                cache_options(cap).unwrap_or_else(|e| panic!("{e}")),
                SizeWeight,
                DefaultHashBuilder::default(),
                Evicted,
            ),
            admission: Admission::new(cap),
        }
    }

    /// One request; true on a hit. A miss is fetched and offered to the cache.
    fn request(&self, o: &Obj) -> bool {
        if self.cache.get(&o.cid).is_some() {
            self.admission.record(o.cid.hash());
            return true;
        }
        if self.admission.admit_fetched(o.cid.hash(), o.size) {
            let mut evicted = Vec::new();
            self.cache
                .insert_with_lifecycle(o.cid, o.size as u32, &mut evicted);
            for (key, size) in &evicted {
                self.admission.evicted(key.hash(), *size as usize);
            }
        }
        false
    }
}

fn object(i: u64, rng: &mut StdRng) -> Obj {
    // Half small blocks (4–64 KiB), half 256 KiB – 1 MiB leaves.
    let size = if rng.random_bool(0.5) {
        rng.random_range(4 * 1024..64 * 1024)
    } else {
        rng.random_range(256 * 1024..1024 * 1024)
    };
    Obj {
        cid: cid_v1_sha256(RAW, &i.to_le_bytes()),
        size,
    }
}

#[derive(Default)]
struct Outcome {
    hits: u64,
    requests: u64,
    hit_bytes: u64,
    bytes: u64,
}

impl Outcome {
    /// Counts one request of `size` bytes; `hit` says whether the cache had it.
    fn record(&mut self, hit: bool, size: usize) -> bool {
        self.requests += 1;
        self.bytes += size as u64;
        if hit {
            self.hits += 1;
            self.hit_bytes += size as u64;
        }
        hit
    }
    fn ratio(&self) -> f64 {
        self.hits as f64 / self.requests as f64
    }
    fn byte_ratio(&self) -> f64 {
        self.hit_bytes as f64 / self.bytes as f64
    }
}

fn main() {
    let mut rng = StdRng::seed_from_u64(42);
    let popular_n = 20_000u64;
    let requests = 400_000usize;
    let popular: Vec<Obj> = (0..popular_n).map(|i| object(i, &mut rng)).collect();
    let zipf = Zipf::new(popular_n as f64, 0.9).unwrap_or_else(|e| panic!("zipf: {e}"));

    // The popular stream, then as many one-hit CIDs as there are distinct popular ones, mixed in.
    let mut trace: Vec<Obj> = (0..requests)
        .map(|_| popular[(zipf.sample(&mut rng) as u64 - 1) as usize])
        .collect();
    let distinct = {
        let mut seen = std::collections::HashSet::new();
        trace.iter().filter(|o| seen.insert(o.cid)).count()
    };
    for k in 0..distinct {
        let at = rng.random_range(0..=trace.len());
        trace.insert(at, object(1_000_000 + k as u64, &mut rng));
    }
    let total_distinct_bytes: usize = {
        let mut seen = std::collections::HashMap::new();
        for o in &trace {
            seen.insert(o.cid, o.size);
        }
        seen.values().sum()
    };

    println!(
        "trace: {} requests, {} distinct CIDs ({} one-hit, {:.0} %), {:.1} GiB distinct",
        trace.len(),
        distinct * 2,
        distinct,
        50.0,
        total_distinct_bytes as f64 / (1u64 << 30) as f64
    );
    println!("| cache size | edge cache (admission + quick_cache) | quick_cache alone, 80 % hot (before) | quick_cache default (97 % hot) | plain LRU | Belady (OPT) | edge / OPT | gap to OPT closed | byte hit ratio edge / before / LRU / OPT |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for mib in [256u64, 1024, 2048] {
        let cap = mib * 1024 * 1024;
        let edge = Edge::new(cap);
        // The edge cache before admission: its quick_cache options alone.
        let before: Cache<Cid, u32, SizeWeight> = Cache::with_options(
            cache_options(cap).unwrap_or_else(|e| panic!("{e}")),
            SizeWeight,
            DefaultHashBuilder::default(),
            Default::default(),
        );
        let default_policy: Cache<Cid, u32, SizeWeight> = Cache::with_options(
            quick_cache::OptionsBuilder::new()
                .estimated_items_capacity((cap / (16 * 1024)) as usize)
                .weight_capacity(cap)
                .shards((cap / (32 << 20)).clamp(1, 16) as usize)
                .build()
                .unwrap_or_else(|e| panic!("{e:?}")),
            SizeWeight,
            DefaultHashBuilder::default(),
            Default::default(),
        );
        let mut d = Outcome::default();
        let mut b = Outcome::default();
        let mut lru = ByteLru::new(cap as usize);
        let mut e = Outcome::default();
        let mut l = Outcome::default();
        for o in &trace {
            e.record(edge.request(o), o.size);
            if !b.record(before.get(&o.cid).is_some(), o.size) {
                before.insert(o.cid, o.size as u32);
            }
            if !d.record(default_policy.get(&o.cid).is_some(), o.size) {
                default_policy.insert(o.cid, o.size as u32);
            }
            if !l.record(lru.get(&o.cid), o.size) {
                lru.insert(o.cid, o.size);
            }
        }
        let opt = belady(&trace, cap as usize);
        println!(
            "| {mib} MiB | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:.2}× | {:.0} % | {:.1} % / {:.1} % / {:.1} % / {:.1} % |",
            e.ratio() * 100.0,
            b.ratio() * 100.0,
            d.ratio() * 100.0,
            l.ratio() * 100.0,
            opt.ratio() * 100.0,
            e.ratio() / opt.ratio(),
            (e.ratio() - b.ratio()) / (opt.ratio() - b.ratio()) * 100.0,
            e.byte_ratio() * 100.0,
            b.byte_ratio() * 100.0,
            l.byte_ratio() * 100.0,
            opt.byte_ratio() * 100.0
        );
    }
}
