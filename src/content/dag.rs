//! Reading a whole DAG (or a part of one) through a block source for its side effects: warming
//! the cache, or producing a CAR stream to push into a pinning node. Every block comes through
//! the source, which verifies it.

use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use tokio::sync::mpsc;

use super::select::DagRequest;
use super::selector::{walk, BlockSink, Selection};
use super::source::BlockSource;
use super::{resolve, ContentError, Resolved};
use crate::ipld::car;
use crate::ipld::Block;

/// What a walk read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WalkReport {
    /// Blocks read.
    pub blocks: u64,
    /// Block bytes read.
    pub bytes: u64,
}

struct Counting<F: FnMut(&Block, WalkReport) + Send> {
    report: WalkReport,
    limit: u64,
    progress: F,
}

impl<F: FnMut(&Block, WalkReport) + Send> BlockSink for Counting<F> {
    async fn emit(&mut self, block: Block) -> bool {
        self.report.blocks += 1;
        self.report.bytes += block.data().len() as u64;
        (self.progress)(&block, self.report);
        self.report.bytes <= self.limit
    }
}

/// Reads every block `req` selects (asking the source to stream it first), up to `limit` bytes
/// (a report with more bytes than `limit` means the walk stopped there); `progress` sees each
/// block and the running totals.
pub async fn read_dag(
    src: &dyn BlockSource,
    req: &DagRequest,
    limit: u64,
    progress: impl FnMut(&Block, WalkReport) + Send,
) -> Result<WalkReport, ContentError> {
    let _stream = src.prefetch(req).await;
    let resolved = resolve(src, req.root, &req.segments).await?;
    let selection = Selection {
        scope: req.scope,
        entity_bytes: req.entity_bytes,
        dups: false,
    };
    let mut sink = Counting {
        report: WalkReport::default(),
        limit,
        progress,
    };
    walk(src, &resolved, &selection, &mut sink).await?;
    Ok(sink.report)
}

/// The bytes of every block of the DAG under `cid` as its root block records them (a raw
/// block's length; a dag-pb node's length plus its links' cumulative sizes), without reading
/// the rest of the DAG; `None` when the root does not record it. Progress bars and listings
/// use it; nothing relies on it being true.
pub async fn dag_size(src: &dyn BlockSource, cid: &Cid) -> Result<Option<u64>, ContentError> {
    match cid.codec() {
        crate::ipld::RAW => Ok(Some(src.get(cid).await?.len() as u64)),
        crate::ipld::DAG_PB => {
            let block = src.get(cid).await?;
            let node = crate::ipld::dagpb::PbNode::decode(block.data())
                .map_err(|e| ContentError::malformed(cid, e))?;
            Ok(node
                .links
                .iter()
                .map(|l| l.tsize)
                .sum::<Option<u64>>()
                .map(|links| links + block.len() as u64))
        }
        _ => Ok(None),
    }
}

/// Why a DAG could not be turned into a CAR.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the DAG failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The DAG is larger than allowed.
    #[error("DAG is larger than {0} bytes")]
    TooLarge(u64),
}

/// A sink that sends each block as a CAR section (length prefix and CID, then the bytes,
/// shared without copying) down a channel, stopping after `limit` block bytes.
pub struct CarFrames<E> {
    /// Where the sections go.
    pub tx: mpsc::Sender<Result<Bytes, E>>,
    /// Block bytes sent so far.
    pub bytes: u64,
    /// Most block bytes to send.
    pub limit: u64,
}

impl<E: Send> BlockSink for CarFrames<E> {
    async fn emit(&mut self, block: Block) -> bool {
        self.bytes += block.data().len() as u64;
        if self.bytes > self.limit {
            return false;
        }
        let (cid, data) = block.into_parts();
        self.tx
            .send(Ok(car::frame_prefix(&cid, data.len())))
            .await
            .is_ok()
            && self.tx.send(Ok(data)).await.is_ok()
    }
}

/// A CARv1 stream (header, then every block of the DAG under `root`, depth first, no
/// duplicates). It ends with an error instead of a clean end if the DAG cannot be read
/// completely or is larger than `limit` bytes, so a consumer never takes a partial DAG for whole.
pub fn car_stream(
    src: Arc<dyn BlockSource>,
    root: Cid,
    limit: u64,
) -> futures::stream::BoxStream<'static, std::io::Result<Bytes>> {
    car_stream_under(src, None, root, limit)
}

/// Like [`car_stream`], with `head` (a block that links to `root`, such as a fleet gateway's
/// claim) as the CAR's root and first block.
pub fn car_stream_under(
    src: Arc<dyn BlockSource>,
    head: Option<(Cid, Bytes)>,
    root: Cid,
    limit: u64,
) -> futures::stream::BoxStream<'static, std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let result = async {
            let req = DagRequest {
                root,
                segments: Vec::new(),
                scope: super::select::DagScope::All,
                entity_bytes: None,
            };
            let _stream = src.prefetch(&req).await;
            let resolved = resolve(src.as_ref(), root, &[]).await?;
            send_car(src.as_ref(), head, &resolved, limit, &tx).await
        }
        .await;
        if let Err(e) = result {
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The CARv1 of a path already resolved (`cidgate export CID/path`), as a channel of chunks:
/// the header names the path's root, then come the blocks of the path and every block of the
/// DAG it ends at, depth first, no duplicates; an error instead of a clean end as in
/// [`car_stream`]. Resolving first lets a caller answer "not found" before it commits to a
/// response; the channel's few chunks bound the memory.
pub fn resolved_car<E: From<std::io::Error> + Send + 'static>(
    src: Arc<dyn BlockSource>,
    resolved: Resolved,
    limit: u64,
) -> mpsc::Receiver<Result<Bytes, E>> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        if let Err(e) = send_car(src.as_ref(), None, &resolved, limit, &tx).await {
            let _ = tx
                .send(Err(std::io::Error::other(e.to_string()).into()))
                .await;
        }
    });
    rx
}

/// Sends the header and the frames of `resolved`'s CAR down `tx`; stops quietly when the
/// receiver goes away.
async fn send_car<E: Send>(
    src: &dyn BlockSource,
    head: Option<(Cid, Bytes)>,
    resolved: &Resolved,
    limit: u64,
    tx: &mpsc::Sender<Result<Bytes, E>>,
) -> Result<(), ExportError> {
    let car_root = head.as_ref().map_or(resolved.root, |(cid, _)| *cid);
    let header = car::header(&[car_root]).map_err(|e| ContentError::Malformed {
        cid: car_root,
        reason: e.to_string(),
    })?;
    if tx.send(Ok(header)).await.is_err() {
        return Ok(());
    }
    if let Some((cid, data)) = head {
        if tx
            .send(Ok(car::frame_prefix(&cid, data.len())))
            .await
            .is_err()
            || tx.send(Ok(data)).await.is_err()
        {
            return Ok(());
        }
    }
    let mut frames = CarFrames {
        tx: tx.clone(),
        bytes: 0,
        limit,
    };
    let selection = Selection {
        scope: super::select::DagScope::All,
        entity_bytes: None,
        dups: false,
    };
    walk(src, resolved, &selection, &mut frames).await?;
    if frames.bytes > limit {
        return Err(ExportError::TooLarge(limit));
    }
    Ok(())
}
