//! Reading a whole DAG (or a part of one) through a block source for its side effects: warming
//! the cache, or producing a CAR stream to push into a pinning node. Every block comes through
//! the source, which verifies it.

use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use tokio::sync::mpsc;

use super::selector::{walk, BlockSink, Selection};
use super::{resolve, ContentError};
use crate::ipld::car;
use crate::ipld::Block;
use crate::tiers::{BlockSource, DagRequest};

/// What a walk read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WalkReport {
    /// Blocks read.
    pub blocks: u64,
    /// Block bytes read.
    pub bytes: u64,
}

struct Counting<F: FnMut(WalkReport) + Send> {
    report: WalkReport,
    limit: u64,
    progress: F,
}

impl<F: FnMut(WalkReport) + Send> BlockSink for Counting<F> {
    async fn emit(&mut self, block: Block) -> bool {
        self.report.blocks += 1;
        self.report.bytes += block.data().len() as u64;
        (self.progress)(self.report);
        self.report.bytes <= self.limit
    }
}

/// Reads every block `req` selects (asking the source to stream it first), up to `limit` bytes;
/// `progress` sees the running totals.
pub async fn read_dag(
    src: &dyn BlockSource,
    req: &DagRequest,
    limit: u64,
    progress: impl FnMut(WalkReport) + Send,
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
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let result = async {
            let req = DagRequest {
                root,
                segments: Vec::new(),
                scope: crate::tiers::DagScope::All,
                entity_bytes: None,
            };
            let _stream = src.prefetch(&req).await;
            let resolved = resolve(src.as_ref(), root, &[]).await?;
            let header = car::header(&[root]).map_err(|e| ContentError::Malformed {
                cid: root,
                reason: e.to_string(),
            })?;
            if tx.send(Ok(header)).await.is_err() {
                return Ok(());
            }
            let mut frames = CarFrames {
                tx: tx.clone(),
                bytes: 0,
                limit,
            };
            let selection = Selection {
                scope: crate::tiers::DagScope::All,
                entity_bytes: None,
                dups: false,
            };
            walk(src.as_ref(), &resolved, &selection, &mut frames).await?;
            if frames.bytes > limit {
                return Err(ExportError::TooLarge(limit));
            }
            Ok::<(), ExportError>(())
        }
        .await;
        if let Err(e) = result {
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
