//! IPNS records from Delegated Routing V1 (ipfs/specs `routing/http-routing-v1.md`, "IPNS"):
//! `GET {router}/routing/v1/ipns/{name}` with `Accept: application/vnd.ipfs.ipns-record` on
//! every router of `cold.routers` at once. A router is trusted with nothing: each answer is
//! verified exactly as an imported record is, and the valid record with the highest sequence
//! wins.
//!
//! This module fetches and remembers when each name was last checked; the name resolver
//! (`super::NameResolver`) decides when to ask, stores what verifies, and serves a stale record
//! while a refresh runs.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use lru::LruCache;

use super::name::IpnsName;
use super::record::{self, IpnsRecord, MAX_RECORD_BYTES};
use crate::coalesce::{ClaimSet, Coalescer};
use crate::telemetry::Metrics;

/// Media type of a signed IPNS record.
const RECORD_TYPE: &str = "application/vnd.ipfs.ipns-record";

/// How long a record without a `TTL` field is fresh (boxo's default for IPNS answers).
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Shortest freshness given to a fetched record, so a TTL of zero cannot turn every request
/// into a router request.
const MIN_TTL: Duration = Duration::from_secs(1);

/// Names whose last check is remembered (records themselves live in the store).
const CHECKED_NAMES: usize = 16 * 1024;

/// Why the routers gave no usable record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// Routers answered, but only with records that do not verify for the name.
    #[error("the routers' records for /ipns/{name} are not valid: {reason}")]
    Invalid {
        /// The name.
        name: String,
        /// Why the (last) record was refused.
        reason: String,
    },
    /// No router answered usefully (down, an error status); details go to the log.
    #[error("no delegated router answered for /ipns/{0}")]
    Failed(String),
    /// The routers did not answer within the deadline.
    #[error("the delegated routers did not answer in time for /ipns/{0}")]
    Timeout(String),
}

/// What one router said.
enum Said {
    Record(Bytes, IpnsRecord),
    Nothing,
    Invalid(String),
    Failed,
    TimedOut,
}

/// The last time the routers were asked about a name, and what they said.
#[derive(Clone, Copy, Debug)]
pub struct Check {
    /// Until when the answer stands (the record's TTL, or the negative TTL).
    pub until: Instant,
    /// Whether a valid record came back (or one was held when the routers failed).
    pub found: bool,
}

/// Fetches IPNS records from delegated routers; see the module documentation.
pub struct IpnsRouting {
    client: reqwest::Client,
    routers: Vec<String>,
    timeout: Duration,
    negative_ttl: Duration,
    checked: Mutex<LruCache<IpnsName, Check>>,
    /// One fetch per name at a time, shared by every asker.
    pub(super) inflight: Coalescer<IpnsName, Result<(), RoutingError>>,
    /// Names with a background refresh task, so a burst of stale hits spawns one task.
    pub(super) refreshing: ClaimSet<IpnsName>,
    metrics: Arc<Metrics>,
}

impl IpnsRouting {
    /// Routing over `routers` (base URLs), each asked within `timeout`; names no router knows
    /// (and failed refreshes of held records) are asked again after `negative_ttl`.
    pub fn new(
        client: reqwest::Client,
        routers: &[String],
        timeout: Duration,
        negative_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            routers: routers
                .iter()
                .map(|r| r.trim_end_matches('/').to_string())
                .collect(),
            timeout,
            negative_ttl,
            checked: Mutex::new(LruCache::new(
                NonZeroUsize::new(CHECKED_NAMES).unwrap_or(NonZeroUsize::MIN),
            )),
            inflight: Coalescer::with_gauge(Some(metrics.work("ipns_fetches"))),
            refreshing: ClaimSet::with_gauge(metrics.work("ipns_refreshes")),
            metrics,
        })
    }

    /// The metrics this routing counts in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// When `name` was last checked, if that is remembered.
    pub fn check(&self, name: &IpnsName) -> Option<Check> {
        self.checked.lock().ok()?.get(name).copied()
    }

    /// Remembers that `name` was found (its record fresh for `ttl`) or not.
    pub fn mark(&self, name: &IpnsName, found: bool, ttl: Duration) {
        if let Ok(mut checked) = self.checked.lock() {
            checked.put(
                *name,
                Check {
                    until: Instant::now() + ttl,
                    found,
                },
            );
        }
    }

    /// How long to wait before asking again about a name the routers do not know, or whose
    /// refresh failed while a record is held.
    pub fn negative_ttl(&self) -> Duration {
        self.negative_ttl
    }

    /// How long a verified record is fresh: its TTL (60 s without one, at least 1 s), never past
    /// its end of validity.
    pub fn freshness(record: &IpnsRecord, now: SystemTime) -> Duration {
        let left = record
            .validity
            .duration_since(now)
            .unwrap_or(Duration::ZERO);
        record.ttl.unwrap_or(DEFAULT_TTL).max(MIN_TTL).min(left)
    }

    /// Asks every router for `name`: the valid record with the highest sequence, `None` when
    /// every router answered that it has none.
    pub async fn fetch(
        &self,
        name: &IpnsName,
    ) -> Result<Option<(Bytes, IpnsRecord)>, RoutingError> {
        let answers =
            futures::future::join_all(self.routers.iter().map(|r| self.ask(r, name))).await;
        let text = name.to_cid_string();
        let mut best: Option<(Bytes, IpnsRecord)> = None;
        let (mut invalid, mut failed, mut timed_out) = (None, false, false);
        for said in answers {
            match said {
                Said::Record(bytes, record) => {
                    if best
                        .as_ref()
                        .is_none_or(|(_, b)| record.sequence > b.sequence)
                    {
                        best = Some((bytes, record));
                    }
                }
                Said::Nothing => {}
                Said::Invalid(reason) => invalid = Some(reason),
                Said::Failed => failed = true,
                Said::TimedOut => timed_out = true,
            }
        }
        match (best, invalid) {
            (Some(found), _) => Ok(Some(found)),
            (None, Some(reason)) => Err(RoutingError::Invalid { name: text, reason }),
            (None, None) if failed => Err(RoutingError::Failed(text)),
            (None, None) if timed_out => Err(RoutingError::Timeout(text)),
            (None, None) => Ok(None),
        }
    }

    /// One router's answer, within the deadline, counted by outcome.
    async fn ask(&self, router: &str, name: &IpnsName) -> Said {
        let url = format!("{router}/routing/v1/ipns/{}", name.to_cid_string());
        let said = tokio::time::timeout(self.timeout, self.ask_inner(&url, name))
            .await
            .unwrap_or(Said::TimedOut);
        let outcome = match &said {
            Said::Record(..) => "ok",
            Said::Nothing => "not_found",
            Said::Invalid(reason) => {
                tracing::warn!(%url, %reason, "a delegated router sent an IPNS record that does not verify");
                "invalid"
            }
            Said::Failed => "failed",
            Said::TimedOut => {
                tracing::debug!(%url, "delegated router timed out");
                "timeout"
            }
        };
        Metrics::name_event(&self.metrics.ipns_fetches, outcome);
        said
    }

    async fn ask_inner(&self, url: &str, name: &IpnsName) -> Said {
        let resp = match self
            .client
            .get(url)
            .header(http::header::ACCEPT, RECORD_TYPE)
            .send()
            .await
        {
            Ok(r) => r,
            Err(error) => {
                tracing::debug!(%url, %error, "delegated router unreachable");
                return if error.is_timeout() {
                    Said::TimedOut
                } else {
                    Said::Failed
                };
            }
        };
        match resp.status() {
            http::StatusCode::OK => {}
            http::StatusCode::NOT_FOUND => return Said::Nothing,
            status => {
                tracing::debug!(%url, %status, "delegated router refused an IPNS lookup");
                return Said::Failed;
            }
        }
        // The record size limit bounds what is read, whatever the router sends.
        let mut body = BytesMut::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return Said::Failed;
            };
            if body.len() + chunk.len() > MAX_RECORD_BYTES {
                return Said::Invalid(format!("more than {MAX_RECORD_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let bytes = body.freeze();
        match record::verify(name, &bytes, SystemTime::now()) {
            Ok(record) => Said::Record(bytes, record),
            Err(e) => Said::Invalid(e.to_string()),
        }
    }
}
