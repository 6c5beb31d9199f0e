//! `application/vnd.ipld.raw`: one verified block, with byte ranges.

use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use http::{Response, StatusCode};

use super::body::{full, Body};
use super::error::GatewayError;
use super::headers::set;
use super::range::{self, RangeOutcome};
use super::request::GatewayRequest;
use super::Gateway;

/// Media type of raw blocks.
pub const RAW_TYPE: &str = "application/vnd.ipld.raw";

/// Serves the block at the end of the request's path.
pub async fn respond(gw: &Gateway, req: &GatewayRequest) -> Result<Response<Body>, GatewayError> {
    let resolved = gw.resolve(req.root, &req.segments).await?;
    if !resolved.remainder.is_empty() {
        return Err(GatewayError::NotImplemented(format!(
            "the path ends inside a document at {:?}, not on a block",
            resolved.remainder.join("/")
        )));
    }
    let target = resolved.target;
    let etag = format!("\"{target}.raw\"");
    let mut resp = gw.base_response(req, &resolved.roots, &etag);
    if gw.not_modified(req, &etag) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    let block = gw.source().get(&target).await?;
    gw.check_size(block.data().len() as u64, super::Delivery::Verifiable)?;
    let data = block.data().clone();
    let headers = resp.headers_mut();
    set(headers, CONTENT_TYPE, RAW_TYPE);
    set(headers, ACCEPT_RANGES, "bytes");
    gw.set_disposition(headers, req, &format!("{target}.bin"), true);
    let size = data.len() as u64;
    let ranges = range::choose(req.range.as_deref(), req.if_range.as_deref(), &etag, size);
    let body = match ranges {
        RangeOutcome::Full => {
            set(resp.headers_mut(), CONTENT_LENGTH, &size.to_string());
            resp.extensions_mut()
                .insert(super::response_cache::BlockBody {
                    cid: target,
                    offset: 0,
                });
            data
        }
        RangeOutcome::Unsatisfiable => {
            return Err(GatewayError::RangeNotSatisfiable {
                reason: format!("no requested range overlaps the {size}-byte block"),
                size,
            })
        }
        RangeOutcome::Partial(ranges) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let [(s, e)] = ranges[..] {
                set(
                    resp.headers_mut(),
                    CONTENT_RANGE,
                    &format!("bytes {s}-{e}/{size}"),
                );
                set(resp.headers_mut(), CONTENT_LENGTH, &(e - s + 1).to_string());
                resp.extensions_mut().insert(range::SentRange {
                    start: s,
                    end: e,
                    size,
                });
                data.slice(s as usize..=e as usize)
            } else {
                let boundary = range::boundary(&etag, &ranges);
                let body = range::multipart(&data, &ranges, RAW_TYPE, &boundary);
                set(
                    resp.headers_mut(),
                    CONTENT_TYPE,
                    &range::multipart_type(&boundary),
                );
                set(resp.headers_mut(), CONTENT_LENGTH, &body.len().to_string());
                body
            }
        }
    };
    if !req.head {
        resp.extensions_mut()
            .insert(super::response_cache::CompleteBody(body.clone()));
        *resp.body_mut() = full(body);
    }
    Ok(resp)
}
