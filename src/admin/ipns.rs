//! `GET` / `PUT /routing/v1/ipns/{name}` (Delegated Routing V1, IPNS): the signed records the
//! gateway resolves `/ipns/` names with. `PUT` verifies the record against the name before it
//! is stored and keeps the one with the highest sequence number.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::popular::read_limited;
use super::{Admin, AdminError};
use crate::body::{self, Body};
use crate::gateway::ipns::IPNS_RECORD_TYPE;
use crate::ipns::record::MAX_RECORD_BYTES;
use crate::ipns::{IpnsName, NameResolver};

type Reply = Result<Response<Body>, AdminError>;

impl Admin {
    /// `/routing/v1/ipns/{name}`.
    pub(super) async fn ipns_record(&self, req: Request<Incoming>, name: &str) -> Reply {
        let name =
            IpnsName::parse(name).map_err(|e| AdminError::BadRequest(format!("{name:?}: {e}")))?;
        let names: NameResolver = self.names();
        match *req.method() {
            Method::GET | Method::HEAD => {
                let Some((bytes, record)) = names.record(&name)? else {
                    return Err(AdminError::NotFound(format!(
                        "no record for /ipns/{}",
                        name.to_cid_string()
                    )));
                };
                let mut r = Response::new(if req.method() == Method::HEAD {
                    body::empty()
                } else {
                    body::full(bytes)
                });
                let h = r.headers_mut();
                h.insert(CONTENT_TYPE, HeaderValue::from_static(IPNS_RECORD_TYPE));
                let max_age = record
                    .max_age(std::time::SystemTime::now())
                    .map_or(60, |t| t.as_secs());
                if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
                    h.insert(CACHE_CONTROL, v);
                }
                Ok(r)
            }
            Method::PUT => {
                self.authorized(&req)?;
                let bytes = read_limited(req, MAX_RECORD_BYTES).await?;
                let record = names.put_record(&name, &bytes)?;
                Ok(super::json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "name": name.to_cid_string(),
                        "value": record.value,
                        "sequence": record.sequence,
                        "ttl_seconds": record.ttl.map(|t| t.as_secs()),
                    }),
                ))
            }
            _ => Err(AdminError::MethodNotAllowed(
                "use GET to read a record and PUT to store one".into(),
            )),
        }
    }
}
