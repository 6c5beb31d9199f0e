//! Pinning into the hot layer: the embedded store, a Kubo node (`/api/v0/dag/import`,
//! `/api/v0/pin/ls`, `/api/v0/pin/rm`) or an IPFS Cluster (`POST /add?format=car`,
//! `GET/DELETE /pins/{cid}`). Content is pushed as a verified CAR stream, so the pinning node
//! never has to go and fetch it again.
//!
//! In a fleet, gateways share one hot layer, and a Kubo node or a Cluster holds one pin per CID:
//! if promotions pinned the content itself, one gateway's demotion would remove what another
//! promoted or still wants. So a gateway with a name pins its promotion as a *claim*: a small
//! dag-cbor block naming the gateway and linking to the content, pinned recursively. Each
//! gateway pins and unpins only its own claims; the content stays in the hot layer as long as
//! any claim (or an operator's pin) reaches it.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use futures::stream::BoxStream;
use tokio_util::io::StreamReader;

use super::import::import_car;
use super::local::{LocalStore, PinReason};

/// A verified CARv1 byte stream of one DAG.
pub type CarBytes = BoxStream<'static, std::io::Result<Bytes>>;

/// Why pinning failed.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The pinning node refused or failed.
    #[error("{target}: {reason}")]
    Target {
        /// Which hot layer.
        target: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The DAG could not be read or was incomplete.
    #[error("DAG {0}")]
    Dag(String),
}

/// How a pin describes itself in the hot layer.
#[derive(Clone, Copy, Debug)]
pub struct PinLabel<'a> {
    /// Made by automation (may be demoted) rather than an operator.
    pub auto: bool,
    /// The name the hot layer shows.
    pub name: &'a str,
    /// For a claim: the gateway that made it and the content it keeps.
    pub claim: Option<(&'a str, Cid)>,
}

/// The claim block of `gateway` on `content`: dag-cbor
/// `{"cidgate": "claim", "gateway": …, "content": <link>}`, and its CID (CIDv1, sha2-256). The
/// same gateway and content always give the same CID, so a restart finds its claims again.
pub fn claim_block(gateway: &str, content: &Cid) -> Result<(Cid, Bytes), PinError> {
    use ipld_core::ipld::Ipld;
    use multihash_codetable::{Code, MultihashDigest};
    let doc = Ipld::Map(
        [
            ("cidgate".to_string(), Ipld::String("claim".into())),
            ("content".to_string(), Ipld::Link(*content)),
            ("gateway".to_string(), Ipld::String(gateway.to_string())),
        ]
        .into_iter()
        .collect(),
    );
    let bytes = serde_ipld_dagcbor::to_vec(&doc)
        .map_err(|e| PinError::Dag(format!("encoding the claim block: {e}")))?;
    let cid = Cid::new_v1(crate::ipld::DAG_CBOR, Code::Sha2_256.digest(&bytes));
    Ok((cid, Bytes::from(bytes)))
}

/// A hot layer that can hold pins.
#[async_trait]
pub trait HotPins: Send + Sync {
    /// Short name (`embedded`, `kubo`, `cluster`).
    fn name(&self) -> &'static str;

    /// Whether `root` is pinned there.
    async fn is_pinned(&self, root: &Cid) -> Result<bool, PinError>;

    /// Pins `root`, pushing its blocks from `car`, described by `label`.
    async fn pin(&self, root: &Cid, car: CarBytes, label: &PinLabel<'_>) -> Result<(), PinError>;

    /// Removes the pin of `root`; true if there was one.
    async fn unpin(&self, root: &Cid) -> Result<bool, PinError>;
}

/// The name a pin gets in the hot layer when the operator gives none (Kubo and Cluster show
/// it; the embedded store keeps only names an operator gave).
pub fn default_pin_name(root: &Cid, auto: bool) -> String {
    format!("cidgate {} {root}", if auto { "auto" } else { "pin" })
}

/// Pins in the embedded store.
pub struct EmbeddedPins(pub LocalStore);

fn embedded(reason: impl ToString) -> PinError {
    PinError::Target {
        target: "embedded",
        reason: reason.to_string(),
    }
}

#[async_trait]
impl HotPins for EmbeddedPins {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn is_pinned(&self, root: &Cid) -> Result<bool, PinError> {
        let store = self.0.clone();
        let root = *root;
        tokio::task::spawn_blocking(move || store.pin_of(&root))
            .await
            .map_err(embedded)?
            .map(|p| p.is_some())
            .map_err(embedded)
    }

    async fn pin(&self, root: &Cid, car: CarBytes, label: &PinLabel<'_>) -> Result<(), PinError> {
        let (auto, name) = (label.auto, label.name);
        let reason = if auto {
            PinReason::Auto
        } else {
            PinReason::Operator
        };
        let report = import_car(&self.0, StreamReader::new(car), reason, |_, _| {})
            .await
            .map_err(|e| PinError::Dag(e.to_string()))?;
        let complete = report
            .roots
            .iter()
            .any(|r| r.cid == root.to_string() && r.complete);
        if !complete {
            return Err(PinError::Dag(format!(
                "{root} was not complete after import"
            )));
        }
        // The import pinned it unnamed; `cidgate pin ls` shows the name the operator gave.
        if !name.is_empty() && name != default_pin_name(root, auto) {
            let (store, root, name) = (self.0.clone(), *root, name.to_string());
            tokio::task::spawn_blocking(move || store.pin(&root, reason, Some(name)))
                .await
                .map_err(embedded)?
                .map_err(embedded)?;
        }
        Ok(())
    }

    async fn unpin(&self, root: &Cid) -> Result<bool, PinError> {
        let store = self.0.clone();
        let root = *root;
        tokio::task::spawn_blocking(move || store.unpin(&root))
            .await
            .map_err(embedded)?
            .map_err(embedded)
    }
}

/// A multipart body with the CAR as its one file part (Kubo insists on a part content type).
fn car_form(car: CarBytes, target: &'static str) -> Result<reqwest::multipart::Form, PinError> {
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(car))
        .file_name("dag.car")
        .mime_str("application/vnd.ipld.car")
        .map_err(|e| PinError::Target {
            target,
            reason: format!("multipart body: {e}"),
        })?;
    Ok(reqwest::multipart::Form::new().part("file", part))
}

/// Pins in a Kubo node through its RPC API.
pub struct KuboPins {
    client: reqwest::Client,
    base: String,
    timeout: Duration,
}

impl KuboPins {
    /// Pins through the RPC API at `base`; `timeout` bounds each call but the import.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, PinError> {
        let client = super::remote::http_client(timeout, 8).map_err(kubo)?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_string(),
            timeout,
        })
    }
}

fn kubo(reason: impl ToString) -> PinError {
    PinError::Target {
        target: "kubo",
        reason: reason.to_string(),
    }
}

#[async_trait]
impl HotPins for KuboPins {
    fn name(&self) -> &'static str {
        "kubo"
    }

    async fn is_pinned(&self, root: &Cid) -> Result<bool, PinError> {
        let resp = self
            .client
            .post(format!("{}/api/v0/pin/ls", self.base))
            .query(&[("arg", root.to_string().as_str()), ("type", "recursive")])
            .send()
            .await
            .map_err(kubo)?;
        let ok = resp.status().is_success();
        let body = resp.text().await.map_err(kubo)?;
        if !ok {
            // Kubo answers 500 "is not pinned" for a CID it does not pin.
            return if body.to_ascii_lowercase().contains("not pinned") {
                Ok(false)
            } else {
                Err(kubo(format!("pin/ls: {}", body.trim())))
            };
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| kubo(format!("pin/ls: {e}")))?;
        // Keys are printed in the node's own base: compare multihashes.
        Ok(v.get("Keys")
            .and_then(|k| k.as_object())
            .is_some_and(|keys| {
                keys.keys()
                    .filter_map(|k| Cid::try_from(k.as_str()).ok())
                    .any(|c| c.hash() == root.hash())
            }))
    }

    async fn pin(&self, root: &Cid, car: CarBytes, label: &PinLabel<'_>) -> Result<(), PinError> {
        // Imported unpinned, then pinned by `pin/add` with the name (Kubo keeps the first name
        // of a pin, and an import pins nameless); the blocks are on the node by then, so the
        // pin fetches nothing.
        let resp = self
            .client
            .post(format!("{}/api/v0/dag/import", self.base))
            .query(&[("pin-roots", "false")])
            .multipart(car_form(car, "kubo")?)
            .send()
            .await
            .map_err(kubo)?;
        if !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(kubo(format!("dag/import: {}", text.trim())));
        }
        let _ = resp.bytes().await;
        // offline: the blocks were just imported; if something (a GC) removed them in between,
        // fail now and retry later rather than search the network for them. Bounded either way.
        let timeout = self.timeout.max(Duration::from_secs(30));
        let node_timeout = format!("{}ms", timeout.as_millis());
        let resp = self
            .client
            .post(format!("{}/api/v0/pin/add", self.base))
            .query(&[
                ("arg", root.to_string().as_str()),
                ("name", label.name),
                ("offline", "true"),
                ("timeout", node_timeout.as_str()),
            ])
            .timeout(timeout + Duration::from_secs(5))
            .send()
            .await
            .map_err(kubo)?;
        if !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(kubo(format!("pin/add: {}", text.trim())));
        }
        let _ = resp.bytes().await;
        if !self.is_pinned(root).await? {
            return Err(kubo(format!("{root} not pinned after pin/add")));
        }
        Ok(())
    }

    async fn unpin(&self, root: &Cid) -> Result<bool, PinError> {
        if !self.is_pinned(root).await? {
            return Ok(false);
        }
        let resp = self
            .client
            .post(format!("{}/api/v0/pin/rm", self.base))
            .query(&[("arg", root.to_string())])
            .send()
            .await
            .map_err(kubo)?;
        if !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(kubo(format!("pin/rm: {}", text.trim())));
        }
        Ok(true)
    }
}

/// Pins in an IPFS Cluster through its REST API, with replication factors.
pub struct ClusterPins {
    client: reqwest::Client,
    base: String,
    replication_min: i32,
    replication_max: i32,
}

impl ClusterPins {
    /// Pins through the Cluster REST API at `base` with these replication factors (-1: all peers).
    pub fn new(
        base: &str,
        timeout: Duration,
        replication_min: i32,
        replication_max: i32,
    ) -> Result<Self, PinError> {
        let client = super::remote::http_client(timeout, 8).map_err(cluster)?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_string(),
            replication_min,
            replication_max,
        })
    }

    /// Query parameters of an add: CAR format, replication, a name and metadata saying who pinned
    /// (and, for a claim, which gateway and what content).
    pub fn add_query(&self, label: &PinLabel<'_>) -> Vec<(String, String)> {
        let mut q = vec![
            ("format".into(), "car".into()),
            ("name".into(), label.name.into()),
            ("replication-min".into(), self.replication_min.to_string()),
            ("replication-max".into(), self.replication_max.to_string()),
            (
                "meta-cidgate-pin".into(),
                if label.auto { "auto" } else { "operator" }.into(),
            ),
        ];
        if let Some((gateway, content)) = label.claim {
            q.push(("meta-cidgate-gateway".into(), gateway.into()));
            q.push(("meta-cidgate-content".into(), content.to_string()));
        }
        q
    }
}

fn cluster(reason: impl ToString) -> PinError {
    PinError::Target {
        target: "cluster",
        reason: reason.to_string(),
    }
}

#[async_trait]
impl HotPins for ClusterPins {
    fn name(&self) -> &'static str {
        "cluster"
    }

    async fn is_pinned(&self, root: &Cid) -> Result<bool, PinError> {
        let resp = self
            .client
            .get(format!("{}/pins/{root}", self.base))
            .send()
            .await
            .map_err(cluster)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            s => Err(cluster(format!("GET /pins answered {s}"))),
        }
    }

    async fn pin(&self, root: &Cid, car: CarBytes, label: &PinLabel<'_>) -> Result<(), PinError> {
        let resp = self
            .client
            .post(format!("{}/add", self.base))
            .query(&self.add_query(label))
            .multipart(car_form(car, "cluster")?)
            .send()
            .await
            .map_err(cluster)?;
        if !resp.status().is_success() {
            let s = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(cluster(format!("add answered {s}: {}", text.trim())));
        }
        let _ = resp.bytes().await;
        if !self.is_pinned(root).await? {
            return Err(cluster(format!("{root} not pinned after add")));
        }
        Ok(())
    }

    async fn unpin(&self, root: &Cid) -> Result<bool, PinError> {
        let resp = self
            .client
            .delete(format!("{}/pins/{root}", self.base))
            .send()
            .await
            .map_err(cluster)?;
        match resp.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            s => Err(cluster(format!("DELETE /pins answered {s}"))),
        }
    }
}

/// Turns an in-memory CAR into [`CarBytes`] (tests, small imports).
pub fn car_bytes(bytes: Bytes) -> CarBytes {
    Box::pin(futures::stream::once(futures::future::ready(Ok(bytes))))
}
