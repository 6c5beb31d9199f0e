//! Fault injection for remote tiers: an HTTP server on 127.0.0.1:0 that misbehaves on purpose
//! (wrong bytes, stalls, errors) and counts what it was asked.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};

/// How the fake node misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Answers every block request with bytes that do not match the CID.
    WrongBytes,
    /// Accepts the request and never answers.
    Stall,
    /// Answers 500.
    ServerError,
}

/// A running fake node.
pub struct FaultyNode {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyNode {
    /// Starts a node with `fault`.
    pub async fn start(fault: Fault) -> FaultyNode {
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let (url, task) = super::serve_http(move |req: Request<hyper::body::Incoming>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let is_car = req.uri().query().unwrap_or("").contains("format=car");
                match fault {
                    Fault::Stall => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                    Fault::ServerError => {
                        let mut r = Response::new(Full::new(Bytes::from_static(b"boom")));
                        *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                        Ok(r)
                    }
                    Fault::WrongBytes if is_car => {
                        // A CAR whose block claims the requested root but carries other bytes.
                        let path = req.uri().path().trim_start_matches("/ipfs/");
                        let root: cidgate::ipld::Cid =
                            path.split('/').next().unwrap_or("").parse().unwrap();
                        let mut car = cidgate::ipld::car::header(&[root]).unwrap().to_vec();
                        let evil = b"these are not the bytes you are looking for";
                        car.extend_from_slice(&cidgate::ipld::car::frame_prefix(&root, evil.len()));
                        car.extend_from_slice(evil);
                        Ok(Response::new(Full::new(Bytes::from(car))))
                    }
                    Fault::WrongBytes => {
                        Ok(Response::new(Full::new(Bytes::from_static(b"evil bytes"))))
                    }
                }
                .unwrap_or_else(|e: Infallible| match e {})
            }
        })
        .await;
        FaultyNode {
            url,
            requests,
            task,
        }
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}
