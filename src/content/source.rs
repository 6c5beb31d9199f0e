//! The interface content reads blocks through, declared here and implemented by the tiers
//! (edge cache, store, hot node, storage providers): content depends on what it needs, never
//! on where blocks come from.
//!
//! Every source hands out [`Block`]s, which exist only once their bytes were hashed against their
//! CID (or came from the cache, which admits only such blocks), with one exception: the store
//! hands out a large block whose pages this process holds in the page cache without hashing it
//! again (it was hashed when written or read in; the store's scrub checks behind that).

use async_trait::async_trait;
use cid::Cid;

use super::select::DagRequest;
use crate::ipld::verify::VerifyError;
use crate::ipld::Block;

/// Why a source could not hand out a block.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TierError {
    /// The source does not have the block.
    #[error("block {0} not found")]
    NotFound(Cid),
    /// The source returned bytes that do not hash to the CID; they were discarded.
    #[error("{tier} gave bad bytes: {error}")]
    Corrupt {
        /// Which source lied.
        tier: &'static str,
        /// The verification failure.
        error: VerifyError,
    },
    /// The source took too long.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The source cannot be used right now (disk error, overload).
    #[error("{tier} unavailable: {reason}")]
    Unavailable {
        /// Which source.
        tier: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// Every storage provider asked failed. Each entry is what may be said in public (the kind
    /// of failure) and the detail for the log (which names the provider).
    #[error("all storage providers failed: {}", .failures.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>().join("; "))]
    Providers {
        /// (public, detail) per provider, in the order they were asked.
        failures: Vec<(String, String)>,
    },
    /// The block is on a denylist: it is neither fetched, stored, cached nor served.
    #[error("{cid} is blocked on this gateway")]
    Blocked {
        /// The blocked block.
        cid: Cid,
        /// 410, or 451 when the list asks for it.
        status: u16,
    },
    /// A remote tier failed so often that it is skipped for a while (its circuit is open).
    #[error("{0} circuit open after repeated failures; retry later")]
    CircuitOpen(&'static str),
    /// A remote tier failed (connection refused, 5xx).
    #[error("{tier} failed: {reason}")]
    Upstream {
        /// Which source.
        tier: &'static str,
        /// What went wrong.
        reason: String,
    },
}

impl TierError {
    /// True when the block simply is not there (as opposed to a failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, TierError::NotFound(_))
    }
}

/// Receives the verified blocks of a DAG stream in stream order. Awaiting [`DagSink::accept`] is
/// the stream's backpressure: a producer reads no further than its consumer lets it.
#[async_trait]
pub trait DagSink: Send {
    /// Takes one verified block; `false` when nobody wants the rest (stop the stream).
    async fn accept(&mut self, block: Block) -> bool;
}

#[async_trait]
impl DagSink for Vec<Block> {
    async fn accept(&mut self, block: Block) -> bool {
        self.push(block);
        true
    }
}

/// A place blocks come from.
#[async_trait]
pub trait BlockSource: Send + Sync + 'static {
    /// The verified block for `cid`; [`TierError::NotFound`] when this source lacks it.
    async fn get(&self, cid: &Cid) -> Result<Block, TierError>;

    /// Whether the block is held here, without transferring it.
    async fn has(&self, cid: &Cid) -> Result<bool, TierError>;

    /// Short name for logs, metrics and the `Server-Timing` header.
    fn name(&self) -> &'static str;

    /// Whether the block is held by this process (cache or local store) — what
    /// `Cache-Control: only-if-cached` asks. Remote tiers do not count.
    async fn holds_locally(&self, cid: &Cid) -> Result<bool, TierError> {
        self.has(cid).await
    }

    /// Counts a request answered from memory above the block level (a whole cached response)
    /// as an edge-cache hit.
    fn note_cache_hit(&self) {}

    /// The block when the memory cache holds it, counted as a hit there; `None` otherwise,
    /// without counting a miss or reading any slower tier (a kept response that refers to a
    /// block's bytes asks this, and goes the full way when it is not there).
    fn cached_block(&self, _cid: &Cid) -> Option<Block> {
        None
    }

    /// Whether the memory cache holds the block now, without counting or promoting it.
    fn holds_in_memory(&self, _cid: &Cid) -> bool {
        false
    }

    /// Hints that a response is about to read `req`; a tiered source starts fetching it from a
    /// remote tier as one stream (or joins the stream already fetching it). The stream runs
    /// while some caller holds the returned [`Interest`]: keep it until the response that reads
    /// `req` is done. Sources that hold everything locally ignore it.
    async fn prefetch(&self, _req: &DagRequest) -> Interest {
        Interest::none()
    }

    /// Streams the verified blocks of `req` from this source to `sink` (remote tiers only).
    async fn fetch_dag(&self, req: &DagRequest, _sink: &mut dyn DagSink) -> Result<(), TierError> {
        Err(TierError::Unavailable {
            tier: self.name(),
            reason: format!("no DAG retrieval for {}", req.root),
        })
    }
}

/// A caller's stake in a DAG stream started or joined by [`BlockSource::prefetch`]. When the
/// last one is dropped, a stream that is still fetching stops: a client that left must not keep
/// an upstream transfer running for nobody.
#[must_use = "the stream stops when its last Interest is dropped"]
pub struct Interest(Option<Box<dyn Send + Sync>>);

impl Interest {
    /// No stream to keep alive.
    pub fn none() -> Self {
        Interest(None)
    }

    /// Keeps `guard` alive as long as this interest; its `Drop` releases the stream.
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        Interest(Some(Box::new(guard)))
    }

    /// Whether a stream is held.
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Interest").field(&self.is_held()).finish()
    }
}

/// Blocks held in memory: a complete source for content that is all at hand (tests, benches,
/// a DAG just built).
#[derive(Debug, Default, Clone)]
pub struct MemorySource(std::collections::HashMap<Cid, Block>);

impl MemorySource {
    /// A source of these blocks.
    pub fn new(blocks: impl IntoIterator<Item = Block>) -> Self {
        Self(blocks.into_iter().map(|b| (*b.cid(), b)).collect())
    }
}

#[async_trait]
impl BlockSource for MemorySource {
    async fn get(&self, cid: &Cid) -> Result<Block, TierError> {
        self.0.get(cid).cloned().ok_or(TierError::NotFound(*cid))
    }

    async fn has(&self, cid: &Cid) -> Result<bool, TierError> {
        Ok(self.0.contains_key(cid))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
