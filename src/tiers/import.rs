//! Streaming CAR import into the embedded store: every block verified, all or nothing per CAR.

use bytes::Bytes;
use cid::Cid;
use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::codec::FramedRead;

use super::local::{LocalStore, PinReason, StoreError};
use super::TierError;
use crate::ipld::car::{CarDecoder, CarError, CarItem};
use crate::ipld::verify::VerifyError;
use crate::ipld::Block;

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
}

/// Completeness of one root after an import.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RootReport {
    /// The root CID (as in the CAR header).
    pub cid: String,
    /// Whether every block of its DAG is now stored.
    pub complete: bool,
    /// The first missing block, when incomplete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    /// Whether the root was pinned (only complete roots are).
    pub pinned: bool,
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
}

/// Imports one CARv1 stream: verifies every block, writes them in bounded batches, then pins
/// the header roots whose DAG is complete. On any error the blocks it added are removed.
pub async fn import_car<R>(
    store: &LocalStore,
    reader: R,
    reason: PinReason,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<ImportReport, ImportError>
where
    R: AsyncRead + Unpin + Send,
{
    let _guard = store.writer_lock().await;
    let batch = blocking(store, |s| s.new_batch()).await??;
    match import_inner(store, reader, batch, reason, &mut progress).await {
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
    progress: &mut (impl FnMut(u64, u64) + Send),
) -> Result<ImportReport, ImportError> {
    let mut frames = FramedRead::with_capacity(reader, CarDecoder::new(), 256 * 1024);
    let roots = match frames.next().await {
        Some(Ok(CarItem::Header(roots))) => roots,
        Some(Ok(CarItem::Block(..))) => return Err(CarError::Header("no header".into()).into()),
        Some(Err(e)) => return Err(e.into()),
        None => return Err(CarError::Header("empty stream".into()).into()),
    };
    let mut report = ImportReport::default();
    let mut pending: Vec<(Cid, Bytes)> = Vec::new();
    let mut pending_bytes = 0;
    while let Some(item) = frames.next().await {
        let CarItem::Block(cid, data) = item? else {
            return Err(CarError::Frame("second header".into()).into());
        };
        report.blocks += 1;
        report.bytes += data.len() as u64;
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

    let checked = blocking(store, move |s| {
        roots
            .into_iter()
            .map(|r| s.first_missing(&r).map(|m| (r, m)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    let to_pin: Vec<(Cid, PinReason)> = checked
        .iter()
        .filter(|(_, missing)| missing.is_none())
        .map(|(r, _)| (*r, reason))
        .collect();
    blocking(store, move |s| s.commit_batch(batch, &to_pin)).await??;
    report.roots = checked
        .into_iter()
        .map(|(r, missing)| RootReport {
            cid: r.to_string(),
            complete: missing.is_none(),
            missing: missing.map(|m| m.to_string()),
            pinned: missing.is_none(),
        })
        .collect();
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
