//! HTTP plumbing shared by the remote hot-node backends (`trustless.rs`, `kubo.rs`): error
//! mapping, size-bounded block bodies and verified CAR streams. Every block that leaves here has
//! been hashed against its CID; failures are counted and logged with the node's address.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures::{StreamExt, TryStreamExt};
use tokio_util::codec::FramedRead;
use tokio_util::io::StreamReader;

use super::{DagSink, TierError};
use crate::ipld::car::{CarDecoder, CarItem};
use crate::ipld::{Block, MAX_BLOCK_SIZE};
use crate::telemetry::{Metrics, TierName};

/// The tier name of remote hot nodes in errors and metrics.
pub const HOT: &str = "hot";

/// The HTTP client every remote tier uses: connect deadline, idle connections kept per host,
/// and never an environment proxy (remote nodes are reached directly).
pub fn http_client(
    connect_timeout: Duration,
    idle_per_host: usize,
) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_max_idle_per_host(idle_per_host)
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// A failure of the remote node.
pub fn upstream(reason: String) -> TierError {
    TierError::Upstream { tier: HOT, reason }
}

/// A transport error, telling time-outs from other failures.
pub fn request_error(e: reqwest::Error) -> TierError {
    if e.is_timeout() {
        TierError::Timeout(HOT)
    } else {
        upstream(e.to_string())
    }
}

/// The metric outcome label of a fetch result.
pub fn outcome<T>(r: &Result<T, TierError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(TierError::NotFound(_)) => "not_found",
        Err(TierError::Timeout(_)) => "timeout",
        Err(TierError::Corrupt { .. }) => "corrupt",
        Err(_) => "error",
    }
}

/// Runs one block fetch under the node's deadline and records its outcome and latency.
pub async fn timed_block_fetch(
    deadline: Duration,
    metrics: &Metrics,
    fetch: impl std::future::Future<Output = Result<Block, TierError>>,
) -> Result<Block, TierError> {
    let start = std::time::Instant::now();
    let result = tokio::time::timeout(deadline, fetch)
        .await
        .unwrap_or(Err(TierError::Timeout(HOT)));
    metrics.fetch(HOT, outcome(&result), start.elapsed());
    result
}

/// Verifies bytes a node sent for `cid`, counting and logging a mismatch.
pub fn verify(cid: Cid, data: Bytes, metrics: &Metrics, origin: &str) -> Result<Block, TierError> {
    Block::verified(cid, data).map_err(|error| {
        metrics.verify_failure(HOT);
        tracing::warn!(%cid, %error, %origin, "hot node sent a block that does not match its CID");
        TierError::Corrupt { tier: HOT, error }
    })
}

/// Reads one block from a response body, refusing more than the block size limit.
pub async fn read_block(
    resp: reqwest::Response,
    cid: &Cid,
    metrics: &Metrics,
    origin: &str,
) -> Result<Block, TierError> {
    let mut body = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(request_error)?;
        if body.len() + chunk.len() > MAX_BLOCK_SIZE {
            return Err(upstream(format!(
                "sent more than {MAX_BLOCK_SIZE} bytes for {cid}"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    metrics
        .tier_bytes
        .get_or_create(&TierName { tier: HOT.into() })
        .inc_by(body.len() as u64);
    verify(*cid, body.freeze(), metrics, origin)
}

/// Parses a CAR response as it streams and hands each verified block to `sink`. Each gap
/// between blocks gets the whole `idle` time-out, so a stalled node cannot hang a response.
pub async fn stream_car(
    resp: reqwest::Response,
    idle: Duration,
    metrics: &Arc<Metrics>,
    origin: &str,
    sink: &mut dyn DagSink,
) -> Result<(), TierError> {
    let reader = StreamReader::new(resp.bytes_stream().map_err(std::io::Error::other));
    let mut frames = FramedRead::new(reader, CarDecoder::new());
    let counter = metrics
        .tier_bytes
        .get_or_create(&TierName { tier: HOT.into() })
        .clone();
    loop {
        let item = match tokio::time::timeout(idle, frames.next()).await {
            Err(_) => return Err(TierError::Timeout(HOT)),
            Ok(None) => return Ok(()),
            Ok(Some(item)) => item.map_err(|e| upstream(format!("CAR stream: {e}")))?,
        };
        if let CarItem::Block(cid, data) = item {
            counter.inc_by(data.len() as u64);
            if !sink.accept(verify(cid, data, metrics, origin)?).await {
                return Ok(());
            }
        }
    }
}
