//! A remote hot node reached through the trustless gateway protocol (a Kubo node's gateway port,
//! another cidgate, any trustless gateway). Blocks come as `?format=raw`, DAGs as a CAR stream;
//! `Cache-Control: only-if-cached` makes a node that lacks the content answer at once instead of
//! going to the network. Every block is verified before it is handed on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cid::Cid;
use http::StatusCode;

use super::remote::{
    read_block, request_error, stream_car, timed_block_fetch, upstream, HOT as TIER,
};
use super::{BlockSource, DagRequest, DagSink, TierError};
use crate::ipld::Block;
use crate::path_encoding::encode_segment;
use crate::telemetry::Metrics;

/// A trustless-gateway hot node.
pub struct TrustlessBackend {
    client: reqwest::Client,
    base: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl TrustlessBackend {
    /// A backend for the gateway at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, timeout: Duration, metrics: Arc<Metrics>) -> Result<Self, TierError> {
        let client = super::remote::http_client(timeout, 64).map_err(upstream)?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_string(),
            timeout,
            metrics,
        })
    }

    fn status_error(status: StatusCode, cid: &Cid) -> TierError {
        match status {
            StatusCode::NOT_FOUND | StatusCode::GONE | StatusCode::PRECONDITION_FAILED => {
                TierError::NotFound(*cid)
            }
            StatusCode::GATEWAY_TIMEOUT => TierError::Timeout(TIER),
            s => upstream(format!("answered {s}")),
        }
    }

    async fn fetch_block(&self, cid: &Cid) -> Result<Block, TierError> {
        let resp = self
            .client
            .get(format!("{}/ipfs/{cid}?format=raw", self.base))
            .header("accept", "application/vnd.ipld.raw")
            .header("cache-control", "only-if-cached")
            .send()
            .await
            .map_err(request_error)?;
        if !resp.status().is_success() {
            return Err(Self::status_error(resp.status(), cid));
        }
        read_block(resp, cid, &self.metrics, &self.base).await
    }

    fn dag_url(&self, req: &DagRequest) -> String {
        let mut url = format!("{}/ipfs/{}", self.base, req.root);
        for s in &req.segments {
            url.push('/');
            url.push_str(&encode_segment(s));
        }
        url.push_str(&format!("?format=car&dag-scope={}", req.scope.as_str()));
        if let Some(eb) = req.entity_bytes {
            let to = eb.to.map(|t| t.to_string()).unwrap_or_else(|| "*".into());
            url.push_str(&format!("&entity-bytes={}:{to}", eb.from));
        }
        url
    }
}

#[async_trait]
impl BlockSource for TrustlessBackend {
    async fn get(&self, cid: &Cid) -> Result<Block, TierError> {
        timed_block_fetch(self.timeout, &self.metrics, self.fetch_block(cid)).await
    }

    async fn has(&self, cid: &Cid) -> Result<bool, TierError> {
        let resp = tokio::time::timeout(
            self.timeout,
            self.client
                .head(format!("{}/ipfs/{cid}?format=raw", self.base))
                .header("accept", "application/vnd.ipld.raw")
                .header("cache-control", "only-if-cached")
                .send(),
        )
        .await
        .map_err(|_| TierError::Timeout(TIER))?
        .map_err(request_error)?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            s => match Self::status_error(s, cid) {
                TierError::NotFound(_) => Ok(false),
                e => Err(e),
            },
        }
    }

    fn name(&self) -> &'static str {
        TIER
    }

    async fn fetch_dag(&self, req: &DagRequest, sink: &mut dyn DagSink) -> Result<(), TierError> {
        self.request_car(req, sink).await
    }
}

impl TrustlessBackend {
    async fn request_car(&self, req: &DagRequest, sink: &mut dyn DagSink) -> Result<(), TierError> {
        let send = self
            .client
            .get(self.dag_url(req))
            .header(
                "accept",
                "application/vnd.ipld.car; version=1; order=dfs; dups=n",
            )
            .header("cache-control", "only-if-cached")
            .send();
        let resp = tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| TierError::Timeout(TIER))?
            .map_err(request_error)?;
        if !resp.status().is_success() {
            return Err(Self::status_error(resp.status(), &req.root));
        }
        stream_car(resp, self.timeout, &self.metrics, &self.base, sink).await
    }
}
