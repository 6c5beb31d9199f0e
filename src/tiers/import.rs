//! Getting DAGs into the embedded store, all or nothing: streaming CAR import (every block
//! verified), and `cidgate add` (files chunked into UnixFS straight into the store, or into a
//! CAR stream for a running server's `POST /admin/import?root=last`).

use std::path::PathBuf;

use bytes::Bytes;
use cid::Cid;
use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use super::local::{LocalStore, PinReason, StoreError};
use super::TierError;
use crate::denylist::Denylist;
use crate::ipld::builder::{self, BuildError, Entry};
use crate::ipld::car::{self, CarDecoder, CarError, CarItem};
use crate::ipld::verify::VerifyError;
use crate::ipld::{Block, IDENTITY, RAW};

/// Blocks are written in transactions of about this many bytes, so memory stays bounded.
const BATCH_BYTES: usize = 16 * 1024 * 1024;
const BATCH_BLOCKS: usize = 4096;

/// Why a CAR was not imported (nothing from it was kept).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The CAR is malformed.
    #[error(transparent)]
    Car(#[from] CarError),
    /// A block does not hash to its CID.
    #[error("block #{index}: {error}")]
    Verify {
        /// Position of the block in the CAR (0-based).
        index: u64,
        /// What failed.
        error: VerifyError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Checking the DAG failed.
    #[error(transparent)]
    Tier(#[from] TierError),
    /// A background task died.
    #[error("import task failed: {0}")]
    Task(String),
    /// Building a DAG from files failed (`add`).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// [`Roots::LastBlock`] was asked for, but the CAR holds no block.
    #[error("the CAR holds no block, so it has no last block to pin")]
    NoBlocks,
    /// A DAG built from files is not complete in the store (`add`); nothing was kept.
    #[error("the DAG built for {root} is incomplete ({reason}); not pinned")]
    Incomplete {
        /// The root that was built.
        root: Cid,
        /// What the completeness check found.
        reason: String,
    },
}

/// Which CIDs an import checks for completeness and pins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Roots {
    /// The roots the CAR header names.
    #[default]
    Header,
    /// The CID of the last block, whatever the header says: a CAR written while its DAG is
    /// built (children before parents, as `cidgate add` streams to a running server) knows its
    /// root only at the end, after the header has gone out.
    LastBlock,
}

/// Completeness of one root after an import.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RootReport {
    /// The root CID (as in the CAR header).
    pub cid: String,
    /// Whether every block of its DAG is now stored and decodes under its codec.
    pub complete: bool,
    /// The first block that is missing or does not decode, when incomplete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    /// Why the root is incomplete ("block … is missing", "block … does not decode: …").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether the root was pinned (only complete roots are).
    pub pinned: bool,
}

/// Checks each of `roots` for completeness and, in one durable transaction, makes staged
/// `batch` permanent and pins (with `reason`) exactly the complete ones. Blocking: call it from
/// a blocking context. Imports, `add` and the sample all finish through here, so nothing is
/// pinned that a CAR of it could not be streamed to the end.
pub fn finish_batch(
    store: &LocalStore,
    batch: u64,
    roots: &[Cid],
    reason: PinReason,
) -> Result<Vec<RootReport>, ImportError> {
    let mut checked = Vec::with_capacity(roots.len());
    for root in roots {
        let gap = store.check_dag(root)?;
        if let Some(gap) = &gap {
            tracing::warn!(%root, %gap, "root is incomplete; not pinned");
        }
        checked.push((*root, gap));
    }
    let to_pin: Vec<(Cid, PinReason)> = checked
        .iter()
        .filter(|(_, gap)| gap.is_none())
        .map(|(r, _)| (*r, reason))
        .collect();
    // Blocks the new pins reach that were cached before (not in this CAR) become pinned too.
    for (root, _) in &to_pin {
        store.adopt_cached(batch, root)?;
    }
    store.commit_batch(batch, &to_pin)?;
    Ok(checked
        .into_iter()
        .map(|(r, gap)| RootReport {
            cid: r.to_string(),
            complete: gap.is_none(),
            missing: gap.as_ref().map(|g| g.cid().to_string()),
            reason: gap.as_ref().map(ToString::to_string),
            pinned: gap.is_none(),
        })
        .collect())
}

/// What an import did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    /// One entry per header root.
    pub roots: Vec<RootReport>,
    /// Blocks read from the CAR.
    pub blocks: u64,
    /// Blocks that were not already stored.
    pub new_blocks: u64,
    /// Block bytes read.
    pub bytes: u64,
    /// Blocks left out because a denylist blocks them (their roots stay incomplete).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub blocked: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Imports one CARv1 stream: verifies every block, writes them in bounded batches, then pins
/// the header roots whose DAG is complete. On any error the blocks it added are removed.
pub async fn import_car<R>(
    store: &LocalStore,
    reader: R,
    reason: PinReason,
    progress: impl FnMut(u64, u64) + Send,
) -> Result<ImportReport, ImportError>
where
    R: AsyncRead + Unpin + Send,
{
    import_car_except(
        store,
        reader,
        reason,
        Roots::Header,
        &Denylist::empty(),
        progress,
    )
    .await
}

/// [`import_car`] pinning `roots`, leaving out the blocks `denylist` blocks: blocked content is
/// never stored (design invariant 9), so a root that needs such a block stays unpinned.
pub async fn import_car_except<R>(
    store: &LocalStore,
    reader: R,
    reason: PinReason,
    roots: Roots,
    denylist: &Denylist,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<ImportReport, ImportError>
where
    R: AsyncRead + Unpin + Send,
{
    let _guard = store.writer_lock().await;
    let batch = blocking(store, |s| s.new_batch()).await??;
    let result = import_inner(store, reader, batch, reason, roots, denylist, &mut progress).await;
    match result {
        Ok(report) => Ok(report),
        Err(e) => {
            if let Err(rb) = blocking(store, move |s| s.rollback_batch(batch)).await {
                tracing::error!(error = %rb, "rollback of failed import did not run; it runs at next open");
            }
            Err(e)
        }
    }
}

async fn blocking<T: Send + 'static>(
    store: &LocalStore,
    f: impl FnOnce(&LocalStore) -> T + Send + 'static,
) -> Result<T, ImportError> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|e| ImportError::Task(e.to_string()))
}

async fn import_inner<R: AsyncRead + Unpin + Send>(
    store: &LocalStore,
    reader: R,
    batch: u64,
    reason: PinReason,
    which_roots: Roots,
    denylist: &Denylist,
    progress: &mut (impl FnMut(u64, u64) + Send),
) -> Result<ImportReport, ImportError> {
    let mut frames = FramedRead::with_capacity(reader, CarDecoder::new(), 256 * 1024);
    let header_roots = match frames.next().await {
        Some(Ok(CarItem::Header(roots))) => roots,
        Some(Ok(CarItem::Block(..))) => return Err(CarError::Header("no header".into()).into()),
        Some(Err(e)) => return Err(e.into()),
        None => return Err(CarError::Header("empty stream".into()).into()),
    };
    let mut report = ImportReport::default();
    let mut pending: Vec<(Cid, Bytes)> = Vec::new();
    let mut pending_bytes = 0;
    let mut last = None;
    while let Some(item) = frames.next().await {
        let CarItem::Block(cid, data) = item? else {
            return Err(CarError::Frame("second header".into()).into());
        };
        report.blocks += 1;
        report.bytes += data.len() as u64;
        last = Some(cid);
        if !denylist.is_empty() && denylist.check_cid(&cid).is_some() {
            report.blocked += 1;
            continue;
        }
        pending_bytes += data.len();
        pending.push((cid, data));
        if pending_bytes >= BATCH_BYTES || pending.len() >= BATCH_BLOCKS {
            let first = report.blocks - pending.len() as u64;
            report.new_blocks +=
                write_batch(store, batch, std::mem::take(&mut pending), first).await?;
            pending_bytes = 0;
            progress(report.blocks, report.bytes);
        }
    }
    let first = report.blocks - pending.len() as u64;
    report.new_blocks += write_batch(store, batch, pending, first).await?;
    progress(report.blocks, report.bytes);

    let roots = match which_roots {
        Roots::Header => header_roots,
        Roots::LastBlock => vec![last.ok_or(ImportError::NoBlocks)?],
    };
    report.roots = blocking(store, move |s| finish_batch(s, batch, &roots, reason)).await??;
    Ok(report)
}

async fn write_batch(
    store: &LocalStore,
    batch: u64,
    items: Vec<(Cid, Bytes)>,
    first_index: u64,
) -> Result<u64, ImportError> {
    if items.is_empty() {
        return Ok(0);
    }
    // Hashing and writing happen off the async workers.
    blocking(store, move |s| {
        let mut blocks = Vec::with_capacity(items.len());
        for (i, (cid, data)) in items.into_iter().enumerate() {
            let block = Block::verified(cid, data).map_err(|error| ImportError::Verify {
                index: first_index + i as u64,
                error,
            })?;
            blocks.push(block);
        }
        Ok(s.put_staged(batch, &blocks, false)?)
    })
    .await?
}

/// What `add` built and stored.
#[derive(Clone, Copy, Debug)]
pub struct AddReport {
    /// The root, with its content and DAG sizes.
    pub root: Entry,
    /// Blocks built.
    pub blocks: u64,
    /// Blocks that were not already stored.
    pub new_blocks: u64,
}

/// Counts what the builder makes: file content is exactly the bytes of the raw leaves, which is
/// what progress is measured against (the sum of the input files' sizes).
struct Tally<F: FnMut(u64)> {
    content: u64,
    blocks: u64,
    progress: F,
}

impl<F: FnMut(u64)> Tally<F> {
    fn count(&mut self, block: &Block) {
        self.blocks += 1;
        if block.cid().codec() == RAW {
            self.content += block.len() as u64;
            (self.progress)(self.content);
        }
    }
}

/// Stages built blocks in the store in bounded transactions.
struct StoreSink<F: FnMut(u64)> {
    store: LocalStore,
    batch: u64,
    pending: Vec<Block>,
    pending_bytes: usize,
    new_blocks: u64,
    tally: Tally<F>,
}

impl<F: FnMut(u64)> StoreSink<F> {
    fn flush(&mut self) -> Result<(), BuildError> {
        let blocks = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.new_blocks += self
            .store
            .put_staged(self.batch, &blocks, false)
            .map_err(|e| BuildError::Sink(e.to_string()))?;
        Ok(())
    }
}

impl<F: FnMut(u64)> builder::BlockSink for StoreSink<F> {
    fn put(&mut self, block: Block) -> Result<(), BuildError> {
        self.tally.count(&block);
        self.pending_bytes += block.len();
        self.pending.push(block);
        if self.pending_bytes >= BATCH_BYTES || self.pending.len() >= BATCH_BLOCKS {
            self.flush()?;
        }
        Ok(())
    }
}

/// `cidgate add` into a store this process holds: chunks `paths` into a UnixFS DAG (as
/// [`builder::add_paths`]), stages its blocks in bounded transactions and pins the root as an
/// operator pin, all or nothing. `progress` sees the file content bytes read so far.
pub async fn add_paths(
    store: &LocalStore,
    paths: Vec<PathBuf>,
    hidden: bool,
    progress: impl FnMut(u64) + Send + 'static,
) -> Result<AddReport, ImportError> {
    let _guard = store.writer_lock().await;
    let batch = blocking(store, |s| s.new_batch()).await??;
    let s = store.clone();
    let built = tokio::task::spawn_blocking(move || {
        let mut sink = StoreSink {
            store: s.clone(),
            batch,
            pending: Vec::new(),
            pending_bytes: 0,
            new_blocks: 0,
            tally: Tally {
                content: 0,
                blocks: 0,
                progress,
            },
        };
        let refs: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
        let root = builder::add_paths(&refs, hidden, &mut sink)?;
        sink.flush()?;
        // The builder made every block itself, but the pin is checked like any import's.
        let report = finish_batch(&s, batch, &[root.cid], PinReason::Operator)?;
        if let Some(reason) = report.first().and_then(|r| r.reason.clone()) {
            return Err(ImportError::Incomplete {
                root: root.cid,
                reason,
            });
        }
        Ok(AddReport {
            root,
            blocks: sink.tally.blocks,
            new_blocks: sink.new_blocks,
        })
    })
    .await
    .map_err(|e| ImportError::Task(e.to_string()))
    .and_then(|r| r);
    if built.is_err() {
        // A failed build leaves its blocks staged; an incomplete DAG (which the builder cannot
        // make) was committed unpinned by `finish_batch`, like an import's.
        if let Err(rb) = blocking(store, move |s| s.rollback_batch(batch)).await {
            tracing::error!(error = %rb, "rollback of failed add did not run; it runs at next open");
        }
    }
    built
}

/// Sends built blocks down a channel as CAR sections; the receiver going away stops the build.
struct CarSink<F: FnMut(u64)> {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    tally: Tally<F>,
}

impl<F: FnMut(u64)> builder::BlockSink for CarSink<F> {
    fn put(&mut self, block: Block) -> Result<(), BuildError> {
        self.tally.count(&block);
        let (cid, data) = block.into_parts();
        let gone = |_| BuildError::Sink("the receiver of the CAR stream went away".into());
        self.tx
            .blocking_send(Ok(car::frame_prefix(&cid, data.len())))
            .map_err(gone)?;
        self.tx.blocking_send(Ok(data)).map_err(gone)
    }
}

/// The header root of a CAR whose root is its last block (an identity CID of no bytes: the
/// header must name one, and this one claims nothing).
pub fn placeholder_root() -> Cid {
    Cid::new_v1(
        RAW,
        multihash::Multihash::wrap(IDENTITY, &[]).unwrap_or_default(),
    )
}

/// `cidgate add` for a store a running server holds: builds the DAG of `paths` on a blocking
/// thread and streams it as CAR bytes, children before parents, so the root is the last block
/// (send it to `POST /admin/import?root=last`). Memory stays at a few blocks: the build waits
/// for the stream to be read. The handle gives the root, or why the build failed (the stream
/// then ends with an error, so the server keeps nothing).
pub fn add_car_stream(
    paths: Vec<PathBuf>,
    hidden: bool,
    progress: impl FnMut(u64) + Send + 'static,
) -> (
    futures::stream::BoxStream<'static, std::io::Result<Bytes>>,
    tokio::task::JoinHandle<Result<Entry, BuildError>>,
) {
    let (tx, rx) = mpsc::channel(8);
    let task = tokio::task::spawn_blocking(move || {
        let header = car::header(&[placeholder_root()])
            .map_err(|e| BuildError::Unsupported(format!("CAR header: {e}")))?;
        let failed = |tx: &mpsc::Sender<std::io::Result<Bytes>>, e: &BuildError| {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        };
        if tx.blocking_send(Ok(header)).is_err() {
            return Err(BuildError::Sink(
                "the receiver of the CAR stream went away".into(),
            ));
        }
        let mut sink = CarSink {
            tx: tx.clone(),
            tally: Tally {
                content: 0,
                blocks: 0,
                progress,
            },
        };
        let refs: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
        let built = builder::add_paths(&refs, hidden, &mut sink);
        if let Err(e) = &built {
            failed(&tx, e);
        }
        built
    });
    (
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
        task,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::car::{frame_prefix, header};
    use crate::ipld::dagpb::{PbLink, PbNode};
    use crate::ipld::{cid_v1_sha256, DAG_PB, RAW};

    fn raw(data: &'static [u8]) -> (Cid, Bytes) {
        (cid_v1_sha256(RAW, data), Bytes::from_static(data))
    }

    fn node(links: &[Cid]) -> (Cid, Bytes) {
        let data = PbNode {
            links: links
                .iter()
                .enumerate()
                .map(|(i, c)| PbLink {
                    cid: *c,
                    name: Some(format!("f{i}")),
                    tsize: Some(1),
                })
                .collect(),
            data: Some(Bytes::from_static(&[8, 1])),
        }
        .encode();
        (cid_v1_sha256(DAG_PB, &data), data)
    }

    /// Valid hash, bytes that are no protobuf (wire type 6).
    fn garbage_pb(tag: &'static [u8]) -> (Cid, Bytes) {
        (cid_v1_sha256(DAG_PB, tag), Bytes::from_static(tag))
    }

    fn car(root: Cid, blocks: &[(Cid, Bytes)]) -> Vec<u8> {
        let mut out = header(&[root]).unwrap().to_vec();
        for (c, d) in blocks {
            out.extend_from_slice(&frame_prefix(c, d.len()));
            out.extend_from_slice(d);
        }
        out
    }

    async fn import(store: &LocalStore, bytes: Vec<u8>) -> RootReport {
        let report = import_car(store, &bytes[..], PinReason::Operator, |_, _| {})
            .await
            .unwrap();
        report.roots.into_iter().next().unwrap()
    }

    #[tokio::test]
    async fn undecodable_or_incomplete_roots_are_not_pinned_and_the_report_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();

        let bad_root = garbage_pb(b"not protobuf: root");
        let r = import(&store, car(bad_root.0, std::slice::from_ref(&bad_root))).await;
        assert!(!r.complete && !r.pinned, "{r:?}");
        assert_eq!(r.missing.as_deref(), Some(bad_root.0.to_string().as_str()));
        assert!(
            r.reason.as_deref().unwrap().contains("does not decode"),
            "{r:?}"
        );
        assert!(store.pin_of(&bad_root.0).unwrap().is_none());

        let leaf = raw(b"leaf");
        let bad_inner = garbage_pb(b"not protobuf: inner");
        let root = node(&[leaf.0, bad_inner.0]);
        let r = import(
            &store,
            car(root.0, &[root.clone(), leaf.clone(), bad_inner.clone()]),
        )
        .await;
        assert!(!r.pinned, "{r:?}");
        assert_eq!(r.missing.as_deref(), Some(bad_inner.0.to_string().as_str()));
        assert!(store.pin_of(&root.0).unwrap().is_none());

        let absent = raw(b"absent");
        let root = node(&[leaf.0, absent.0]);
        let r = import(&store, car(root.0, &[root.clone(), leaf.clone()])).await;
        assert!(!r.pinned, "{r:?}");
        assert_eq!(
            r.reason.as_deref(),
            Some(format!("block {} is missing", absent.0).as_str())
        );

        // The same root once the child arrives: complete and pinned.
        let r = import(&store, car(root.0, &[root.clone(), leaf, absent])).await;
        assert!(r.complete && r.pinned && r.reason.is_none(), "{r:?}");
        assert!(store.pin_of(&root.0).unwrap().is_some());
    }
}
