//! The one client of the admin listener, as the `cidgate` commands use it against the running
//! server of the data directory (or `--admin URL`), with the configured bearer token: pins,
//! prewarm, CAR import (also of DAGs built on the fly by `add`), export and IPNS records. It
//! returns data; printing it is the command's business.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;

use crate::config::Config;
use crate::tiers::import::ImportReport;

/// Why a call to the admin listener failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No `--admin URL` and no running server announced itself in the data directory.
    #[error("no running server announced its admin address in {} (start `cidgate serve` or pass --admin URL)", .0.display())]
    NoServer(PathBuf),
    /// The listener wants a (different) bearer token.
    #[error(
        "the admin listener refused the token (401): pass --token or set CIDGATE_ADMIN__TOKEN"
    )]
    Unauthorized,
    /// The listener answered with an error status; `message` is its one-line reason.
    #[error("the admin listener answered {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The body of the answer, trimmed.
        message: String,
    },
    /// Nothing answers at the listener's address.
    #[error("cannot connect to the admin listener at {url} (is its `cidgate serve` running?)")]
    NotListening {
        /// The listener's base URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The exchange with the listener broke off.
    #[error("talking to the admin listener at {url}")]
    Unreachable {
        /// The listener's base URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The answer is not what the API documents.
    #[error("the admin listener's answer does not parse: {0}")]
    Answer(String),
    /// The HTTP client could not be built.
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// A pin in the embedded store, as `GET /admin/pins` lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct StorePin {
    /// Root CID.
    pub cid: String,
    /// Who pinned it: operator, auto, sample.
    pub reason: String,
    /// The name given to the pin, if any.
    #[serde(default)]
    pub name: Option<String>,
    /// Unix seconds when it was pinned.
    #[serde(default)]
    pub created: u64,
    /// Bytes of the DAG as its root records them, when it does.
    #[serde(default)]
    pub size: Option<u64>,
}

/// A pin cidgate made (or tried to make) in the hot layer.
#[derive(Clone, Debug, Deserialize)]
pub struct HotPin {
    /// Root CID.
    pub cid: String,
    /// Which hot layer.
    pub target: String,
    /// Made by the popularity tracker rather than an operator.
    pub auto: bool,
    /// pinning, pinned, failed, unpinned.
    pub state: String,
    /// The pin's name.
    #[serde(default)]
    pub name: String,
    /// Unix seconds of the last state change.
    #[serde(default)]
    pub since: f64,
}

/// `GET /admin/pins`.
#[derive(Clone, Debug, Deserialize)]
pub struct PinList {
    /// The hot layer pins go to: embedded, kubo, cluster.
    pub target: String,
    /// Pins in the embedded store.
    #[serde(default)]
    pub store: Vec<StorePin>,
    /// Pins cidgate made in the hot layer.
    #[serde(default)]
    pub made_by_cidgate: Vec<HotPin>,
}

/// One NDJSON line of `POST /admin/prewarm`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PrewarmEvent {
    /// The root being prewarmed.
    pub cid: String,
    /// Whether this root is finished (then `error` or the totals are final).
    #[serde(default)]
    pub done: bool,
    /// Blocks read so far.
    #[serde(default)]
    pub blocks: u64,
    /// Block bytes read so far.
    #[serde(default)]
    pub bytes: u64,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// The walk stopped at `max_dag_bytes`; the rest of the DAG was not read.
    #[serde(default)]
    pub truncated: bool,
    /// `popularity.max_dag_bytes`.
    #[serde(default)]
    pub max_dag_bytes: Option<u64>,
    /// Size of the edge cache.
    #[serde(default)]
    pub cache_capacity: Option<u64>,
    /// Of `bytes`, how many are still in the edge cache.
    #[serde(default)]
    pub cached_bytes: Option<u64>,
}

/// The progress lines of a running prewarm.
pub struct PrewarmProgress {
    body: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    buf: Vec<u8>,
    url: String,
}

impl PrewarmProgress {
    /// The next event; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<PrewarmEvent, ClientError>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(
                    serde_json::from_slice(&line).map_err(|e| ClientError::Answer(e.to_string())),
                );
            }
            match self.body.next().await? {
                Ok(chunk) => self.buf.extend_from_slice(&chunk),
                Err(source) => {
                    return Some(Err(ClientError::Unreachable {
                        url: self.url.clone(),
                        source,
                    }))
                }
            }
        }
    }
}

/// A CAR being exported by the server.
pub struct Export {
    /// What the DAG's root records as its size in block bytes, when it does.
    pub dag_size: Option<u64>,
    /// The CAR's bytes; an error instead of a clean end if the server could not finish it.
    pub body: futures::stream::BoxStream<'static, Result<Bytes, ClientError>>,
}

/// A client of one server's admin listener.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// The admin listener at `url`, or the one the data directory's running server announced;
    /// the token is `admin.token` (from the file, `CIDGATE_ADMIN__TOKEN` or `--token`).
    pub fn new(config: &Config, url: Option<&str>) -> Result<Self, ClientError> {
        let base = match url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => crate::app::running_admin_url(&config.store.dir)
                .ok_or_else(|| ClientError::NoServer(config.store.dir.clone()))?,
        };
        Ok(Self {
            base,
            token: config.admin.token.clone(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .map_err(ClientError::Client)?,
        })
    }

    /// The listener's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        if self.token.is_empty() {
            r
        } else {
            r.bearer_auth(&self.token)
        }
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        let url = self.base.clone();
        if source.is_connect() {
            ClientError::NotListening { url, source }
        } else {
            ClientError::Unreachable { url, source }
        }
    }

    /// Sends `req`; a successful response, or the error its status means.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized);
        }
        let message = resp.text().await.unwrap_or_default().trim().to_string();
        Err(ClientError::Refused {
            status: status.as_u16(),
            message,
        })
    }

    async fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let bytes = self
            .send(req)
            .await?
            .bytes()
            .await
            .map_err(|e| self.unreachable(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Answer(e.to_string()))
    }

    /// Checks that the listener accepts this client's writes, before a body is streamed: a
    /// server that refuses the token answers early and closes, which the sender would
    /// otherwise see only as a broken pipe. A server without `/admin/auth` (older) is let be.
    pub async fn check_token(&self) -> Result<(), ClientError> {
        match self
            .send(self.request(reqwest::Method::GET, "/admin/auth"))
            .await
        {
            Ok(_) | Err(ClientError::Refused { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// After a transport error while streaming a body: the refused token when that was the
    /// cause, the transport error otherwise.
    async fn explain(&self, e: ClientError) -> ClientError {
        match (&e, self.check_token().await) {
            (
                ClientError::Unreachable { .. } | ClientError::NotListening { .. },
                Err(ClientError::Unauthorized),
            ) => ClientError::Unauthorized,
            _ => e,
        }
    }

    /// `GET /admin/pins`.
    pub async fn pins(&self) -> Result<PinList, ClientError> {
        self.send_json(self.request(reqwest::Method::GET, "/admin/pins"))
            .await
    }

    /// `POST /admin/pins/{cid}[?name=]`: pins as an operator; the hot layer it went to.
    pub async fn pin_add(&self, cid: &str, name: Option<&str>) -> Result<String, ClientError> {
        let mut req = self.request(reqwest::Method::POST, &format!("/admin/pins/{cid}"));
        if let Some(n) = name {
            req = req.query(&[("name", n)]);
        }
        let v: serde_json::Value = self.send_json(req).await?;
        Ok(v["target"].as_str().unwrap_or("the hot layer").to_string())
    }

    /// `POST /admin/retrievability/{cid}`: checks (and repairs) the root now.
    pub async fn check(&self, cid: &str) -> Result<crate::retrievability::RootRecord, ClientError> {
        self.send_json(self.request(
            reqwest::Method::POST,
            &format!("/admin/retrievability/{cid}"),
        ))
        .await
    }

    /// `GET /admin/store`.
    pub async fn store_summary(&self) -> Result<crate::tiers::space::StoreSummary, ClientError> {
        self.send_json(self.request(reqwest::Method::GET, "/admin/store"))
            .await
    }

    /// `POST /admin/store/maintain`.
    pub async fn store_maintain(
        &self,
    ) -> Result<crate::tiers::space::MaintenanceReport, ClientError> {
        self.send_json(self.request(reqwest::Method::POST, "/admin/store/maintain"))
            .await
    }

    /// `DELETE /admin/pins/{cid}`: whether something was unpinned.
    pub async fn pin_rm(&self, cid: &str) -> Result<bool, ClientError> {
        let v: serde_json::Value = self
            .send_json(self.request(reqwest::Method::DELETE, &format!("/admin/pins/{cid}")))
            .await?;
        Ok(v["unpinned"] == true)
    }

    /// `POST /admin/prewarm`: the progress lines as the server reads the DAGs.
    pub async fn prewarm(&self, cids: &[String]) -> Result<PrewarmProgress, ClientError> {
        let resp = self
            .send(
                self.request(reqwest::Method::POST, "/admin/prewarm")
                    .body(cids.join("\n")),
            )
            .await?;
        Ok(PrewarmProgress {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
            url: self.base.clone(),
        })
    }

    /// `POST /admin/import[?root=last]`: streams a CAR into the server's store (verified, all
    /// or nothing there); with `root_is_last` the server pins the last block instead of the
    /// header's roots (a DAG built while it streams).
    pub async fn import_car(
        &self,
        body: reqwest::Body,
        root_is_last: bool,
    ) -> Result<ImportReport, ClientError> {
        self.check_token().await?;
        let path = if root_is_last {
            "/admin/import?root=last"
        } else {
            "/admin/import"
        };
        match self
            .send_json(self.request(reqwest::Method::POST, path).body(body))
            .await
        {
            Ok(r) => Ok(r),
            Err(e) => Err(self.explain(e).await),
        }
    }

    /// `PUT /routing/v1/ipns/{name}`: stores a signed IPNS record; the path it points to.
    pub async fn put_ipns_record(
        &self,
        name: &str,
        record: Vec<u8>,
    ) -> Result<String, ClientError> {
        let v: serde_json::Value = self
            .send_json(
                self.request(reqwest::Method::PUT, &format!("/routing/v1/ipns/{name}"))
                    .header("content-type", "application/vnd.ipfs.ipns-record")
                    .body(record),
            )
            .await?;
        Ok(v["value"].as_str().unwrap_or_default().to_string())
    }

    /// `GET /admin/export/{cid}[/path]`: a CAR of a DAG in the server's store. `target` is
    /// `CID[/path]`, path segments as they are named (they are percent-encoded here).
    pub async fn export(&self, target: &str) -> Result<Export, ClientError> {
        let encoded: Vec<String> = target
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .collect();
        let resp = self
            .send(self.request(
                reqwest::Method::GET,
                &format!("/admin/export/{}", encoded.join("/")),
            ))
            .await?;
        let dag_size = resp
            .headers()
            .get(crate::admin::export::DAG_SIZE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let url = self.base.clone();
        Ok(Export {
            dag_size,
            body: resp
                .bytes_stream()
                .map(move |r| {
                    r.map_err(|source| ClientError::Unreachable {
                        url: url.clone(),
                        source,
                    })
                })
                .boxed(),
        })
    }
}
