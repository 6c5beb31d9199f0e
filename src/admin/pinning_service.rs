//! The IPFS Pinning Service API on the admin listener (`GET/POST /pins`,
//! `GET/POST/DELETE /pins/{requestid}`), so existing tools (`ipfs pin remote`, clients of the
//! spec) can use cidgate as a remote pinning service. Pins go to the hot layer as operator pins
//! through the promoter; requests are kept in the store.

use std::sync::Arc;

use cid::Cid;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::pinning::{list, validate, ListQuery, Pin, PinRequest, PinningError, Status};
use super::popular::read_limited;
use super::{json, Admin};
use crate::body::Body;
use crate::popularity::promoter::PromoteError;
use crate::tiers::local::{LocalStore, StoreError};

const REQUESTS_KEY: &str = "pinning.requests";
const MAX_BODY: usize = 1 << 20;
/// How often a request whose root is being pinned by someone else checks again.
const BUSY_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// Pin requests saved in `store` (none when they were unreadable: those are quarantined). A
/// store that cannot be read is an error rather than an empty list, which a later save would
/// write over the requests.
pub(super) fn load(store: &LocalStore) -> Result<Vec<PinRequest>, StoreError> {
    Ok(store.load(REQUESTS_KEY)?.unwrap_or_default())
}

fn failure(status: StatusCode, reason: &str, details: impl Into<String>) -> Response<Body> {
    json(
        status,
        &json!({"error": {"reason": reason, "details": details.into()}}),
    )
}

fn spec_error(e: &PinningError) -> Response<Body> {
    json(e.status(), &e.body())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Admin {
    /// Answers one Pinning Service API request.
    pub(super) async fn pinning_service(
        self: &Arc<Self>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        if let Err(e) = self.authorized(&req) {
            return failure(e.status(), "UNAUTHORIZED", e.to_string());
        }
        if self.popularity.is_none() {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "pinning needs popularity.enabled = true",
            );
        }
        let path = req.uri().path().to_string();
        let id = path.strip_prefix("/pins/").map(str::to_string);
        match (req.method().clone(), id) {
            (Method::GET, None) => {
                let q = match ListQuery::parse(req.uri().query()) {
                    Ok(q) => q,
                    Err(e) => return spec_error(&e),
                };
                let reqs = self.pin_requests.lock().await;
                json(StatusCode::OK, &list(&reqs, &q, &self.delegates))
            }
            (Method::POST, None) => match self.read_pin(req).await {
                Ok(pin) => self.add_request(pin, None).await,
                Err(r) => r,
            },
            (Method::GET, Some(id)) => {
                let reqs = self.pin_requests.lock().await;
                match reqs.iter().find(|r| r.requestid == id) {
                    Some(r) => json(StatusCode::OK, &r.to_status(&self.delegates)),
                    None => spec_error(&PinningError::NotFound(id)),
                }
            }
            (Method::POST, Some(id)) => {
                if !self
                    .pin_requests
                    .lock()
                    .await
                    .iter()
                    .any(|r| r.requestid == id)
                {
                    return spec_error(&PinningError::NotFound(id));
                }
                match self.read_pin(req).await {
                    Ok(pin) => self.add_request(pin, Some(id)).await,
                    Err(r) => r,
                }
            }
            (Method::DELETE, Some(id)) => {
                let removed = {
                    let mut reqs = self.pin_requests.lock().await;
                    let Some(pos) = reqs.iter().position(|r| r.requestid == id) else {
                        return spec_error(&PinningError::NotFound(id));
                    };
                    let removed = reqs.remove(pos);
                    self.save_requests(&reqs);
                    removed
                };
                self.release(&removed.pin.cid).await;
                Response::builder()
                    .status(StatusCode::ACCEPTED)
                    .body(crate::body::empty())
                    .unwrap_or_else(|_| Response::new(crate::body::empty()))
            }
            _ => failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "see the Pinning Service API",
            ),
        }
    }

    async fn read_pin(&self, req: Request<Incoming>) -> Result<Pin, Response<Body>> {
        let body = read_limited(req, MAX_BODY)
            .await
            .map_err(|e| failure(e.status(), "BAD_REQUEST", e.to_string()))?;
        let pin: Pin = serde_json::from_slice(&body).map_err(|e| {
            failure(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!("Pin object: {e}"),
            )
        })?;
        validate(&pin).map_err(|e| spec_error(&e))?;
        Ok(pin)
    }

    /// Records a new request (replacing `replaces`) and starts pinning it.
    async fn add_request(self: &Arc<Self>, pin: Pin, replaces: Option<String>) -> Response<Body> {
        let (status, old_cid, request) = {
            let mut reqs = self.pin_requests.lock().await;
            // `created` pages the listing, so every request gets a distinct one.
            let newest = reqs.iter().map(|r| r.created_ms).max().unwrap_or(0);
            let request = PinRequest::new(pin, now_ms().max(newest + 1));
            let mut old_cid = None;
            if let Some(id) = &replaces {
                if let Some(pos) = reqs.iter().position(|r| &r.requestid == id) {
                    old_cid = Some(reqs.remove(pos).pin.cid);
                }
            }
            reqs.push(request.clone());
            self.save_requests(&reqs);
            (request.to_status(&self.delegates), old_cid, request)
        };
        if let Some(old) = old_cid.filter(|c| *c != request.pin.cid) {
            self.release(&old).await;
        }
        let this = self.clone();
        tokio::spawn(async move { this.run_request(request).await });
        json(StatusCode::ACCEPTED, &status)
    }

    async fn set_status(&self, id: &str, status: Status, details: Option<String>) {
        let mut reqs = self.pin_requests.lock().await;
        if let Some(r) = reqs.iter_mut().find(|r| r.requestid == id) {
            r.status = status;
            match details {
                Some(d) => {
                    r.info.insert("status_details".into(), d);
                }
                None => {
                    r.info.remove("status_details");
                }
            }
        }
        self.save_requests(&reqs);
    }

    async fn run_request(self: Arc<Self>, request: PinRequest) {
        let Some(p) = self.popularity.clone() else {
            return;
        };
        let Ok(cid) = Cid::try_from(request.pin.cid.as_str()) else {
            return;
        };
        self.set_status(&request.requestid, Status::Pinning, None)
            .await;
        let name = request.pin.name.clone().unwrap_or_default();
        // Another pin of the same root (a second request, or the promoter resuming a pin a
        // restart interrupted) is no failure of this one: it is waited for and then repeated,
        // which finds the blocks in place.
        let result = loop {
            match p.promoter.pin(cid, false, &name).await {
                Err(PromoteError::Busy(_)) => tokio::time::sleep(BUSY_RETRY).await,
                other => break other,
            }
        };
        match result {
            Ok(()) => {
                self.set_status(&request.requestid, Status::Pinned, None)
                    .await
            }
            Err(e) => {
                self.set_status(&request.requestid, Status::Failed, Some(e.to_string()))
                    .await
            }
        }
    }

    /// Restarts the requests a restart interrupted (queued or pinning when the process
    /// stopped), so that no request waits for ever on work that no task is doing.
    pub fn resume_pin_requests(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let pending: Vec<PinRequest> = this
                .pin_requests
                .lock()
                .await
                .iter()
                .filter(|r| matches!(r.status, Status::Queued | Status::Pinning))
                .cloned()
                .collect();
            for request in pending {
                tracing::info!(requestid = %request.requestid, cid = %request.pin.cid, "resuming a pin request a restart interrupted");
                tokio::spawn(this.clone().run_request(request));
            }
        });
    }

    /// Unpins `cid` unless another request still wants it.
    async fn release(&self, cid: &str) {
        let wanted = self
            .pin_requests
            .lock()
            .await
            .iter()
            .any(|r| r.pin.cid == cid);
        if wanted {
            return;
        }
        let (Some(p), Ok(cid)) = (&self.popularity, Cid::try_from(cid)) else {
            return;
        };
        if let Err(e) = p.promoter.unpin(cid).await {
            tracing::warn!(%cid, error = %e, "unpinning a deleted pin request failed");
        }
    }

    fn save_requests(&self, reqs: &[PinRequest]) {
        if let Err(error) = self.store.save(REQUESTS_KEY, reqs) {
            tracing::warn!(%error, "cannot save pin requests");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;

    #[tokio::test]
    async fn unreadable_pin_requests_are_quarantined_and_the_admin_starts() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        store
            .meta_put(REQUESTS_KEY, b"[{\"requestid\": \"abc\", \"status\": 3}]")
            .unwrap();
        let admin = Admin::new(
            store.clone(),
            String::new(),
            "127.0.0.1:0".parse().unwrap(),
            Metrics::new(),
        )
        .with_popularity(None)
        .unwrap();
        assert!(admin.pin_requests.lock().await.is_empty());
        let q = store.quarantine_list().unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].key, REQUESTS_KEY);
        assert_eq!(q[0].bytes, b"[{\"requestid\": \"abc\", \"status\": 3}]");
        let pin = Pin {
            cid: "bafkqaaa".into(),
            name: None,
            origins: Vec::new(),
            meta: Default::default(),
        };
        admin.save_requests(&[PinRequest::new(pin, 1)]);
        assert_eq!(
            store.quarantine_list().unwrap(),
            q,
            "the save left it alone"
        );
        assert_eq!(load(&store).unwrap().len(), 1);
    }
}
