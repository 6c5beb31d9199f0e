//! A Kubo node (or anything speaking the Kubo RPC API) as the hot pinning node: blocks through
//! `/api/v0/block/get`, presence through `/api/v0/block/stat`, whole DAGs through
//! `/api/v0/dag/export`. Nodes print CIDs in other bases, so only multihashes are compared.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cid::Cid;

use super::remote::{
    read_block, request_error, stream_car, timed_block_fetch, upstream, HOT as TIER,
};
use super::{BlockSource, DagRequest, DagScope, DagSink, TierError};
use crate::ipld::Block;
use crate::telemetry::Metrics;

/// A Kubo RPC hot node.
pub struct KuboBackend {
    client: reqwest::Client,
    base: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

/// Kubo answers a missing block with 500 and a JSON message; tell "missing" from "broken".
fn missing_message(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    b.contains("not found")
        || b.contains("could not find")
        || b.contains("no such")
        || b.contains("not available")
}

impl KuboBackend {
    /// A backend for the RPC API at `base` (e.g. `http://127.0.0.1:5001`).
    pub fn new(base: &str, timeout: Duration, metrics: Arc<Metrics>) -> Result<Self, TierError> {
        let client = super::remote::http_client(timeout, 32).map_err(upstream)?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_string(),
            timeout,
            metrics,
        })
    }

    async fn rpc(&self, command: &str, arg: &str) -> Result<reqwest::Response, TierError> {
        // offline=true: a Kubo node must answer from its own store, not search the network;
        // timeout: the node itself gives up too (some nodes wait for a missing block).
        let url = format!("{}/api/v0/{command}", self.base);
        let timeout = format!("{}ms", self.timeout.as_millis());
        let resp = self
            .client
            .post(url)
            .query(&[
                ("arg", arg),
                ("offline", "true"),
                ("timeout", timeout.as_str()),
            ])
            .send()
            .await
            .map_err(request_error)?;
        Ok(resp)
    }

    async fn fetch_block(&self, cid: &Cid) -> Result<Block, TierError> {
        let resp = self.rpc("block/get", &cid.to_string()).await?;
        if !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(if missing_message(&text) {
                TierError::NotFound(*cid)
            } else {
                upstream(format!("block/get: {}", text.trim()))
            });
        }
        read_block(resp, cid, &self.metrics, &self.base).await
    }

    /// The CID a content path resolves to on the node.
    async fn resolve(&self, req: &DagRequest) -> Result<Cid, TierError> {
        if req.segments.is_empty() {
            return Ok(req.root);
        }
        let path = format!("/ipfs/{}/{}", req.root, req.segments.join("/"));
        let resp = self.rpc("dag/resolve", &path).await?;
        if !resp.status().is_success() {
            return Err(TierError::NotFound(req.root));
        }
        let body = resp.bytes().await.map_err(request_error)?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| upstream(format!("dag/resolve answer: {e}")))?;
        let rem = v.get("RemPath").and_then(|r| r.as_str()).unwrap_or("");
        let cid = v
            .get("Cid")
            .and_then(|c| c.get("/"))
            .and_then(|c| c.as_str())
            .and_then(|c| Cid::try_from(c).ok())
            .ok_or_else(|| upstream("dag/resolve answered without a CID".into()))?;
        if !rem.is_empty() {
            return Err(upstream(format!("dag/resolve left {rem:?} unresolved")));
        }
        Ok(cid)
    }

    async fn export(&self, req: &DagRequest, sink: &mut dyn DagSink) -> Result<(), TierError> {
        let target = self.resolve(req).await?;
        let resp = self.rpc("dag/export", &target.to_string()).await?;
        if !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(if missing_message(&text) {
                TierError::NotFound(target)
            } else {
                upstream(format!("dag/export: {}", text.trim()))
            });
        }
        stream_car(resp, self.timeout, &self.metrics, &self.base, sink).await
    }
}

#[async_trait]
impl BlockSource for KuboBackend {
    async fn get(&self, cid: &Cid) -> Result<Block, TierError> {
        timed_block_fetch(self.timeout, &self.metrics, self.fetch_block(cid)).await
    }

    async fn has(&self, cid: &Cid) -> Result<bool, TierError> {
        let resp = tokio::time::timeout(self.timeout, self.rpc("block/stat", &cid.to_string()))
            .await
            .map_err(|_| TierError::Timeout(TIER))??;
        if resp.status().is_success() {
            return Ok(true);
        }
        let text = resp.text().await.unwrap_or_default();
        if missing_message(&text) {
            Ok(false)
        } else {
            Err(upstream(format!("block/stat: {}", text.trim())))
        }
    }

    fn name(&self) -> &'static str {
        TIER
    }

    async fn fetch_dag(&self, req: &DagRequest, sink: &mut dyn DagSink) -> Result<(), TierError> {
        // dag/export sends a whole DAG: right for whole files and CARs, wasteful for a byte
        // range or a single block, which are fetched block by block instead.
        if req.entity_bytes.is_some() || req.scope == DagScope::Block {
            return Err(upstream("dag/export cannot select a part of a DAG".into()));
        }
        self.export(req, sink).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn missing_blocks_are_told_from_failures() {
        assert!(super::missing_message(
            r#"{"Message":"block was not found locally (offline): ipld: could not find QmX","Code":0}"#
        ));
        assert!(!super::missing_message(
            r#"{"Message":"context deadline exceeded"}"#
        ));
    }
}
