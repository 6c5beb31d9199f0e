//! A fake IPFS Cluster REST API on 127.0.0.1:0: `POST /add?format=car` (multipart CAR upload),
//! `GET /pins/{cid}`, `DELETE /pins/{cid}`. It parses the uploaded CAR (every block verified),
//! records the pin options it was given, and answers like a cluster that pinned it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use super::parse_car;

/// One pin the fake cluster holds.
#[derive(Clone, Debug)]
pub struct ClusterPin {
    /// Query parameters of the add (name, replication-min/max, meta-*).
    pub options: HashMap<String, String>,
    /// Blocks the uploaded CAR carried.
    pub blocks: usize,
    /// Their CIDs, in order (a real cluster keeps every block a pin reaches).
    pub cids: Vec<String>,
}

/// A running fake cluster.
pub struct FakeCluster {
    pub url: String,
    pins: Arc<Mutex<HashMap<String, ClusterPin>>>,
    deletes: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeCluster {
    /// Starts it.
    pub async fn start() -> FakeCluster {
        let pins: Arc<Mutex<HashMap<String, ClusterPin>>> = Arc::default();
        let deletes: Arc<Mutex<Vec<String>>> = Arc::default();
        let (p, d) = (pins.clone(), deletes.clone());
        let (url, task) = super::serve_http(move |req: Request<Incoming>| {
            let (p, d) = (p.clone(), d.clone());
            async move { handle(req, &p, &d).await }
        })
        .await;
        FakeCluster {
            url,
            pins,
            deletes,
            task,
        }
    }

    /// The pin of `cid`, if held.
    pub fn pin(&self, cid: &str) -> Option<ClusterPin> {
        self.pins.lock().unwrap().get(cid).cloned()
    }

    /// Whether some pin keeps the block `cid` (a cluster would garbage-collect it otherwise).
    pub fn keeps(&self, cid: &str) -> bool {
        self.pins
            .lock()
            .unwrap()
            .values()
            .any(|p| p.cids.iter().any(|c| c == cid))
    }

    /// CIDs unpinned so far.
    pub fn deletes(&self) -> Vec<String> {
        self.deletes.lock().unwrap().clone()
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

async fn handle(
    req: Request<Incoming>,
    pins: &Mutex<HashMap<String, ClusterPin>>,
    deletes: &Mutex<Vec<String>>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/add") => {
            let boundary = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split("boundary=").nth(1))
                .map(|b| b.trim_matches('"').to_string());
            let Some(boundary) = boundary else {
                return reply(StatusCode::BAD_REQUEST, "not multipart".into());
            };
            if query.get("format").map(String::as_str) != Some("car") {
                return reply(StatusCode::BAD_REQUEST, "format=car expected".into());
            }
            let body = req.into_body().collect().await.unwrap().to_bytes();
            // The one part: headers end at the first blank line, data ends at the boundary.
            let start = find(&body, b"\r\n\r\n").map(|i| i + 4).unwrap();
            let end = find(&body[start..], format!("\r\n--{boundary}").as_bytes())
                .map(|i| start + i)
                .unwrap();
            let car = parse_car(&body[start..end]);
            let root = car.roots[0].to_string();
            pins.lock().unwrap().insert(
                root.clone(),
                ClusterPin {
                    options: query,
                    blocks: car.blocks.len(),
                    cids: car.cids(),
                },
            );
            reply(
                StatusCode::OK,
                format!(
                    "{{\"name\":\"dag.car\",\"cid\":\"{root}\",\"bytes\":{}}}\n",
                    end - start
                ),
            )
        }
        (method, p) if p.starts_with("/pins/") => {
            let cid = p["/pins/".len()..].to_string();
            let held = pins.lock().unwrap().contains_key(&cid);
            match (method, held) {
                (Method::GET, true) => reply(StatusCode::OK, format!("{{\"cid\":\"{cid}\"}}")),
                (Method::DELETE, true) => {
                    pins.lock().unwrap().remove(&cid);
                    deletes.lock().unwrap().push(cid.clone());
                    reply(StatusCode::OK, format!("{{\"cid\":\"{cid}\"}}"))
                }
                (_, false) => reply(StatusCode::NOT_FOUND, "{\"message\":\"not found\"}".into()),
                _ => reply(StatusCode::METHOD_NOT_ALLOWED, String::new()),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, String::new()),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
