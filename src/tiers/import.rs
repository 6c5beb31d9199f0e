//! Streaming CAR import into the embedded store: every block verified, all or nothing per CAR.

use bytes::Bytes;
use cid::Cid;
use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::codec::FramedRead;

use super::local::{LocalStore, PinReason, StoreError};
use super::TierError;
use crate::denylist::Denylist;
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
    import_car_except(store, reader, reason, &Denylist::empty(), progress).await
}

/// [`import_car`], leaving out the blocks `denylist` blocks: blocked content is never stored
/// (design invariant 9), so a root that needs such a block stays unpinned.
pub async fn import_car_except<R>(
    store: &LocalStore,
    reader: R,
    reason: PinReason,
    denylist: &Denylist,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<ImportReport, ImportError>
where
    R: AsyncRead + Unpin + Send,
{
    let _guard = store.writer_lock().await;
    let batch = blocking(store, |s| s.new_batch()).await??;
    match import_inner(store, reader, batch, reason, denylist, &mut progress).await {
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
    denylist: &Denylist,
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
