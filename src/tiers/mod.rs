//! Block sources, fastest first: the edge cache, the hot pinning node (the embedded store by
//! default) and, later, the cold tier of Filecoin storage providers.
//!
//! Every source hands out [`Block`]s, which exist only once their bytes were hashed against their
//! CID (or came from the cache, which admits only such blocks).

pub mod cache;
pub mod cold;
pub mod import;
pub mod kubo;
pub mod local;
pub mod pins;
pub mod pinset;
pub mod records;
pub mod remote;
pub mod segments;
pub mod space;
pub mod spill;
pub mod tiered;
pub mod trustless;

use async_trait::async_trait;
use cid::Cid;

use crate::ipld::verify::VerifyError;
use crate::ipld::{Block, IDENTITY};

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

/// The `dag-scope` of a CAR request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DagScope {
    /// Only the terminal block.
    Block,
    /// What is needed to use the terminal entity (a whole file, a directory's own blocks).
    Entity,
    /// The whole DAG under the terminal element.
    #[default]
    All,
}

impl DagScope {
    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            DagScope::Block => "block",
            DagScope::Entity => "entity",
            DagScope::All => "all",
        }
    }
}

/// An `entity-bytes=from:to` range; negative values count from the end, `to: None` is `*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntityBytes {
    /// First byte (inclusive).
    pub from: i64,
    /// Last byte (inclusive), or `None` for the end.
    pub to: Option<i64>,
}

impl EntityBytes {
    /// Inclusive byte range within a file of `size` bytes, or `None` when it selects nothing.
    pub fn resolve(&self, size: u64) -> Option<(u64, u64)> {
        let size = size as i128;
        let from = if self.from < 0 {
            (size + self.from as i128).max(0)
        } else {
            self.from as i128
        };
        let to = match self.to {
            None => size - 1,
            Some(t) if t < 0 => size + t as i128,
            Some(t) => (t as i128).min(size - 1),
        };
        (from <= to && from < size && to >= 0).then_some((from as u64, to as u64))
    }
}

/// A DAG-shaped request: what a response will read below a root, so that a remote tier can
/// be asked for all of it as one CAR stream instead of block by block.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DagRequest {
    /// Root CID of the content path.
    pub root: Cid,
    /// Path segments below the root.
    pub segments: Vec<String>,
    /// The dag-scope the response needs.
    pub scope: DagScope,
    /// The entity-bytes range, if any.
    pub entity_bytes: Option<EntityBytes>,
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

/// The block of an identity CID, whose bytes are inside the CID itself.
pub fn identity_block(cid: &Cid) -> Option<Block> {
    (cid.hash().code() == IDENTITY)
        .then(|| Block::already_verified(*cid, bytes::Bytes::copy_from_slice(cid.hash().digest())))
}
