//! A fake content-routing server on 127.0.0.1:0 answering IPNI (`/cid/{cid}`) and Delegated
//! Routing V1 (`/routing/v1/providers/{cid}`) lookups from a table of fake providers, and
//! recording what it was asked.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// Multicodec of the trustless HTTP gateway transport.
pub const TRANSPORT_IPFS_GATEWAY_HTTP: u64 = 0x0920;
/// Multicodec of the Bitswap transport.
pub const TRANSPORT_BITSWAP: u64 = 0x0900;
/// Multicodec of the Filecoin graphsync transport.
pub const TRANSPORT_GRAPHSYNC_FILECOINV1: u64 = 0x0910;

/// A provider the server announces.
#[derive(Clone, Debug)]
pub struct FakeProvider {
    pub peer_id: String,
    /// Multiaddrs, e.g. `/ip4/127.0.0.1/tcp/PORT/http`.
    pub addrs: Vec<String>,
    pub http: bool,
    pub bitswap: bool,
    /// `(verified_deal, fast_retrieval)` when the provider offers graphsync retrieval.
    pub graphsync: Option<(bool, bool)>,
}

impl FakeProvider {
    /// An HTTP-only provider serving the trustless gateway at `url` (`http://127.0.0.1:PORT`).
    pub fn http_only(peer_id: &str, url: &str) -> FakeProvider {
        FakeProvider {
            peer_id: peer_id.to_string(),
            addrs: vec![http_multiaddr(url)],
            http: true,
            bitswap: false,
            graphsync: None,
        }
    }

    /// The Delegated Routing protocol names this provider speaks.
    pub fn protocols(&self) -> Vec<&'static str> {
        let mut p = Vec::new();
        if self.http {
            p.push("transport-ipfs-gateway-http");
        }
        if self.bitswap {
            p.push("transport-bitswap");
        }
        if self.graphsync.is_some() {
            p.push("transport-graphsync-filecoinv1");
        }
        p
    }
}

/// The `/ip4/HOST/tcp/PORT/http` multiaddr of an `http://HOST:PORT` base URL.
pub fn http_multiaddr(url: &str) -> String {
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (host, port) = hostport
        .rsplit_once(':')
        .unwrap_or((hostport.as_str(), "80"));
    format!("/ip4/{host}/tcp/{port}/http")
}

/// The graphsync-filecoinv1 metadata payload (a DAG-CBOR map).
#[derive(serde::Serialize)]
struct GraphsyncFilecoinV1 {
    #[serde(rename = "PieceCID")]
    piece_cid: cid::Cid,
    #[serde(rename = "VerifiedDeal")]
    verified_deal: bool,
    #[serde(rename = "FastRetrieval")]
    fast_retrieval: bool,
}

fn put_varint(buf: &mut Vec<u8>, n: u64) {
    let mut tmp = unsigned_varint::encode::u64_buffer();
    buf.extend_from_slice(unsigned_varint::encode::u64(n, &mut tmp));
}

/// IPNI metadata of `provider` for `cid`: each protocol's varint code and payload, concatenated.
pub fn ipni_metadata(provider: &FakeProvider, cid: &cid::Cid) -> Vec<u8> {
    let mut buf = Vec::new();
    if provider.http {
        put_varint(&mut buf, TRANSPORT_IPFS_GATEWAY_HTTP);
    }
    if provider.bitswap {
        put_varint(&mut buf, TRANSPORT_BITSWAP);
    }
    if let Some((verified_deal, fast_retrieval)) = provider.graphsync {
        put_varint(&mut buf, TRANSPORT_GRAPHSYNC_FILECOINV1);
        let payload = GraphsyncFilecoinV1 {
            piece_cid: *cid,
            verified_deal,
            fast_retrieval,
        };
        buf.extend_from_slice(&serde_ipld_dagcbor::to_vec(&payload).expect("encoding metadata"));
    }
    buf
}

/// The table key of a CID: its multihash bytes in lowercase hex.
fn key(cid: &cid::Cid) -> String {
    cid.hash()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

type Requests = Arc<Mutex<Vec<(String, String)>>>;
type Providers = Arc<Mutex<HashMap<String, Vec<FakeProvider>>>>;
type IpnsRecords = Arc<Mutex<HashMap<String, Bytes>>>;

/// A running routing server.
pub struct RoutingServer {
    pub url: String,
    requests: Requests,
    providers: Providers,
    ipns: IpnsRecords,
    ipns_delay: Arc<Mutex<std::time::Duration>>,
    task: JoinHandle<()>,
}

impl RoutingServer {
    /// Starts a server with no providers.
    pub async fn start() -> RoutingServer {
        let requests: Requests = Arc::new(Mutex::new(Vec::new()));
        let providers: Providers = Arc::new(Mutex::new(HashMap::new()));
        let ipns: IpnsRecords = Arc::new(Mutex::new(HashMap::new()));
        let ipns_delay = Arc::new(Mutex::new(std::time::Duration::ZERO));
        let (req_log, table, records, delay) = (
            requests.clone(),
            providers.clone(),
            ipns.clone(),
            ipns_delay.clone(),
        );
        let (url, task) = super::serve_http(move |req: Request<Incoming>| {
            let ipns = req.uri().path().starts_with("/routing/v1/ipns/");
            let wait = if ipns {
                *delay.lock().unwrap()
            } else {
                std::time::Duration::ZERO
            };
            let resp = if ipns {
                ipns_answer(&req_log, &records, &req)
            } else {
                handle(&req_log, &table, &req)
            };
            async move {
                tokio::time::sleep(wait).await;
                resp
            }
        })
        .await;
        RoutingServer {
            url,
            requests,
            providers,
            ipns,
            ipns_delay,
            task,
        }
    }

    /// Serves `record` for `GET /routing/v1/ipns/{name}` (`name` as the client spells it).
    pub fn set_ipns(&self, name: &str, record: Bytes) {
        self.ipns.lock().unwrap().insert(name.to_string(), record);
    }

    /// Delays every IPNS answer by `delay` (a slow router).
    pub fn set_ipns_delay(&self, delay: std::time::Duration) {
        *self.ipns_delay.lock().unwrap() = delay;
    }

    /// Announces `provider` for `cid` (keyed by multihash: CIDv0/v1 and any base match).
    pub fn add(&self, cid: &cid::Cid, provider: FakeProvider) {
        self.providers
            .lock()
            .unwrap()
            .entry(key(cid))
            .or_default()
            .push(provider);
    }

    /// `(path and query, Accept header)` of every request received, in order.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .count()
    }
}

impl Drop for RoutingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain", format!("{msg}\n"))
}

/// `GET /routing/v1/ipns/{name}`: the record set for the name, as
/// `application/vnd.ipfs.ipns-record`, or 404.
fn ipns_answer(
    req_log: &Requests,
    records: &IpnsRecords,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let accept = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    req_log
        .lock()
        .unwrap()
        .push((req.uri().path().to_string(), accept));
    let name = req.uri().path().trim_start_matches("/routing/v1/ipns/");
    match records.lock().unwrap().get(name) {
        Some(bytes) => {
            let mut resp = Response::new(Full::new(bytes.clone()));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.ipfs.ipns-record"),
            );
            resp
        }
        None => text(StatusCode::NOT_FOUND, "no record"),
    }
}

fn handle(req_log: &Requests, table: &Providers, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let accept = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    req_log
        .lock()
        .unwrap()
        .push((path_and_query, accept.clone()));

    if *req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET");
    }
    let path = req.uri().path();
    let (ipni, segment) = if let Some(s) = path.strip_prefix("/cid/") {
        (true, s)
    } else if let Some(s) = path.strip_prefix("/routing/v1/providers/") {
        (false, s)
    } else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let cid = match cid::Cid::try_from(segment) {
        Ok(c) => c,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("invalid CID: {e}")),
    };
    let providers = table
        .lock()
        .unwrap()
        .get(&key(&cid))
        .cloned()
        .unwrap_or_default();

    if ipni {
        ipni_answer(&cid, &providers)
    } else {
        let filter: Option<Vec<String>> = req.uri().query().and_then(|q| {
            let values: Vec<String> = form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "filter-protocols")
                .flat_map(|(_, v)| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                })
                .collect();
            (!values.is_empty()).then_some(values)
        });
        routing_answer(&providers, filter.as_deref(), &accept)
    }
}

fn ipni_answer(cid: &cid::Cid, providers: &[FakeProvider]) -> Response<Full<Bytes>> {
    if providers.is_empty() {
        return text(StatusCode::NOT_FOUND, "no providers");
    }
    let results: Vec<Value> = providers
        .iter()
        .map(|p| {
            json!({
                "ContextID": STANDARD.encode(format!("cidgate-test/{}", p.peer_id)),
                "Metadata": STANDARD.encode(ipni_metadata(p, cid)),
                "Provider": { "ID": p.peer_id, "Addrs": p.addrs },
            })
        })
        .collect();
    let body = json!({
        "MultihashResults": [{
            "Multihash": STANDARD.encode(cid.hash().to_bytes()),
            "ProviderResults": results,
        }]
    });
    respond(StatusCode::OK, "application/json", body.to_string())
}

fn routing_answer(
    providers: &[FakeProvider],
    filter: Option<&[String]>,
    accept: &str,
) -> Response<Full<Bytes>> {
    let records: Vec<Value> = providers
        .iter()
        .filter(|p| match filter {
            None => true,
            Some(wanted) => {
                let protocols = p.protocols();
                protocols
                    .iter()
                    .any(|proto| wanted.iter().any(|w| w == proto))
                    || (protocols.is_empty() && wanted.iter().any(|w| w == "unknown"))
            }
        })
        .map(|p| {
            json!({
                "Schema": "peer",
                "ID": p.peer_id,
                "Addrs": p.addrs,
                "Protocols": p.protocols(),
            })
        })
        .collect();
    if records.is_empty() {
        return text(StatusCode::NOT_FOUND, "no providers");
    }
    if accept.contains("application/x-ndjson") {
        let mut body = String::new();
        for r in &records {
            body.push_str(&r.to_string());
            body.push('\n');
        }
        respond(StatusCode::OK, "application/x-ndjson", body)
    } else {
        let body = json!({ "Providers": records });
        respond(StatusCode::OK, "application/json", body.to_string())
    }
}
