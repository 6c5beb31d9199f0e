//! `application/vnd.ipld.raw`: one verified block, with byte ranges.

use bytes::{BufMut, Bytes, BytesMut};
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
    let if_range_ok = req
        .if_range
        .as_deref()
        .is_none_or(|v| super::headers::none_match(v, &etag) && !v.starts_with("W/"));
    let ranges = if if_range_ok {
        range::parse(req.range.as_deref(), size)
    } else {
        RangeOutcome::Full
    };
    let body = match ranges {
        RangeOutcome::Full => {
            set(resp.headers_mut(), CONTENT_LENGTH, &size.to_string());
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
                data.slice(s as usize..=e as usize)
            } else {
                let (ctype, body) = multipart(&data, &ranges, RAW_TYPE);
                set(resp.headers_mut(), CONTENT_TYPE, &ctype);
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

/// Builds a `multipart/byteranges` body from an in-memory representation.
pub fn multipart(data: &Bytes, ranges: &[(u64, u64)], part_type: &str) -> (String, Bytes) {
    let boundary = format!("cidgate-{:016x}", rand_boundary(data, ranges));
    let size = data.len();
    let mut out = BytesMut::new();
    for (s, e) in ranges {
        out.put_slice(
            format!("\r\n--{boundary}\r\nContent-Type: {part_type}\r\nContent-Range: bytes {s}-{e}/{size}\r\n\r\n")
                .as_bytes(),
        );
        out.put_slice(&data[*s as usize..=*e as usize]);
    }
    out.put_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/byteranges; boundary={boundary}"),
        out.freeze(),
    )
}

/// A boundary that cannot appear by chance in the parts: derived from their hash.
fn rand_boundary(data: &Bytes, ranges: &[(u64, u64)]) -> u64 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(data);
    for (s, e) in ranges {
        h.update(s.to_le_bytes());
        h.update(e.to_le_bytes());
    }
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}
