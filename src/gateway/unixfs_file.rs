//! Deserialized UnixFS files: bytes streamed leaf by leaf as each block is verified, with
//! single and multiple byte ranges that read only the covering blocks.

use bytes::Bytes;
use cid::Cid;
use http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use http::{Response, StatusCode};
use tokio::sync::mpsc;

use super::body::{channel, BodyError};
use super::error::GatewayError;
use super::headers::set;
use super::range::{self, RangeOutcome};
use super::request::GatewayRequest;
use super::sniff;
use super::{Body, Gateway};
use crate::content::entity::single_block_content;
use crate::content::unixfs_reader::{head_bytes, read_range};
use crate::ipld::Block;

/// Chunks buffered between the file reader and the socket.
const CHANNEL_CHUNKS: usize = 8;

/// Bytes read from the start of a file to sniff its type (the WHATWG sniffing window).
const SNIFF_BYTES: usize = 1445;

/// Whether the file `block` (of `size` bytes, named `name` if known) holds JSON, by its name
/// or its first bytes (see [`sniff::is_json`]).
pub async fn holds_json(
    gw: &Gateway,
    name: Option<&str>,
    block: &Block,
    size: u64,
) -> Result<bool, GatewayError> {
    if name.is_some_and(|n| std::path::Path::new(n).extension().is_some()) {
        return Ok(sniff::is_json(name, &[], true));
    }
    let head = head_bytes(gw.source(), block, SNIFF_BYTES).await?;
    Ok(sniff::is_json(None, &head, size <= head.len() as u64))
}

/// How the caller wants a file served.
pub struct FileResponse<'a> {
    /// The file's root block (already verified).
    pub block: Block,
    /// Total file size (from the root block).
    pub size: u64,
    /// Name that decides the content type by extension, if any.
    pub name: Option<&'a str>,
    /// A fixed content type (e.g. `text/html` for a directory's index.html).
    pub content_type: Option<&'a str>,
    /// The `Etag` (strong).
    pub etag: String,
    /// `X-Ipfs-Roots`.
    pub roots: &'a [Cid],
}

/// Serves a UnixFS file.
pub async fn respond(
    gw: &Gateway,
    req: &GatewayRequest,
    f: FileResponse<'_>,
) -> Result<Response<Body>, GatewayError> {
    let mut resp = gw.base_response(req, f.roots, &f.etag);
    if gw.not_modified(req, &f.etag) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    let size = f.size;
    // An empty file is sent whole, whatever range was asked (there is no byte to range over).
    let ranges = if size > 0 {
        range::choose(req.range.as_deref(), req.if_range.as_deref(), &f.etag, size)
    } else {
        RangeOutcome::Full
    };
    // Before anything is read for the body (sniffing included): the caps count what this
    // response would send, so a range of a large file is still served.
    let sending = match &ranges {
        RangeOutcome::Partial(r) => r.iter().map(|(s, e)| e - s + 1).sum(),
        _ => size,
    };
    gw.check_size(sending, super::Delivery::Deserialized)?;
    let ctype = match (f.content_type, size) {
        (Some(t), _) => t.to_string(),
        (None, 0) => "text/plain".to_string(),
        (None, _) => match f.name.and_then(sniff::by_extension) {
            Some(t) => t,
            None => {
                let head = head_bytes(gw.source(), &f.block, SNIFF_BYTES).await?;
                match sniff::sniff(&head) {
                    // JSON is text to the WHATWG sniffer, but scripts and browsers want
                    // `application/json` for the JSON that lives on UnixFS.
                    t if t.starts_with("text/plain")
                        && sniff::is_json(None, &head, size <= head.len() as u64) =>
                    {
                        "application/json".to_string()
                    }
                    t => t.to_string(),
                }
            }
        },
    };
    resp.headers_mut()
        .insert(ACCEPT_RANGES, http::HeaderValue::from_static("bytes"));
    if req.filename.is_some() || req.download {
        let fallback = f.name.unwrap_or("download");
        gw.set_disposition(resp.headers_mut(), req, fallback, false);
    }
    let parts: Vec<(u64, u64)> = match ranges {
        RangeOutcome::Unsatisfiable => {
            return Err(GatewayError::RangeNotSatisfiable {
                reason: format!("no requested range overlaps the {size}-byte file"),
                size,
            })
        }
        RangeOutcome::Full => {
            let h = resp.headers_mut();
            set(h, CONTENT_TYPE, &ctype);
            set(h, CONTENT_LENGTH, &size.to_string());
            if size == 0 {
                return Ok(resp);
            }
            vec![(0, size - 1)]
        }
        RangeOutcome::Partial(r) if r.len() == 1 => {
            let (s, e) = r[0];
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = resp.headers_mut();
            set(h, CONTENT_TYPE, &ctype);
            set(h, CONTENT_RANGE, &format!("bytes {s}-{e}/{size}"));
            set(h, CONTENT_LENGTH, &(e - s + 1).to_string());
            resp.extensions_mut().insert(range::SentRange {
                start: s,
                end: e,
                size,
            });
            r
        }
        RangeOutcome::Partial(r) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let boundary = range::boundary(&f.etag, &r);
            let total = range::multipart_len(&boundary, &ctype, &r, size);
            let h = resp.headers_mut();
            set(h, CONTENT_TYPE, &range::multipart_type(&boundary));
            set(h, CONTENT_LENGTH, &total.to_string());
            if !req.head {
                *resp.body_mut() = stream_multipart(gw, f.block, r, boundary, ctype, size);
            }
            return Ok(resp);
        }
    };
    if !req.head {
        *resp.body_mut() = match single_block_content(&f.block) {
            // A one-block file is already verified and in memory: send a slice of it, without
            // a streaming task (the common case of small files and 1 MiB leaves).
            Some(data) if parts.len() == 1 && parts[0].1 < data.len() as u64 => {
                let (s, e) = parts[0];
                let slice = data.slice(s as usize..=e as usize);
                resp.extensions_mut()
                    .insert(super::response_cache::CompleteBody(slice.clone()));
                if let Some(within) = super::response_cache::BlockBody::within(&f.block, &slice) {
                    resp.extensions_mut().insert(within);
                }
                super::body::full(slice)
            }
            _ => stream_parts(gw, f.block, parts),
        };
    }
    Ok(resp)
}

fn stream_parts(gw: &Gateway, root: Block, parts: Vec<(u64, u64)>) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, BodyError>>(CHANNEL_CHUNKS);
    let src = gw.source_arc();
    tokio::spawn(async move {
        for (s, e) in parts {
            if !pump(&src, &root, s, e, &tx).await {
                return;
            }
        }
    });
    channel(rx)
}

fn stream_multipart(
    gw: &Gateway,
    root: Block,
    parts: Vec<(u64, u64)>,
    boundary: String,
    ctype: String,
    size: u64,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, BodyError>>(CHANNEL_CHUNKS);
    let src = gw.source_arc();
    tokio::spawn(async move {
        for (s, e) in parts {
            if tx
                .send(Ok(range::part_header(&boundary, &ctype, s, e, size)))
                .await
                .is_err()
            {
                return;
            }
            if !pump(&src, &root, s, e, &tx).await {
                return;
            }
        }
        let _ = tx.send(Ok(range::closing(&boundary))).await;
    });
    channel(rx)
}

/// Reads one range into the body channel; false when the body ended (client gone or error).
pub(crate) async fn pump(
    src: &std::sync::Arc<dyn crate::content::source::BlockSource>,
    root: &Block,
    s: u64,
    e: u64,
    tx: &mpsc::Sender<Result<Bytes, BodyError>>,
) -> bool {
    let (btx, mut brx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let reader = tokio::spawn(read_range(src.clone(), root.clone(), s, e, btx));
    while let Some(chunk) = brx.recv().await {
        if tx.send(Ok(chunk)).await.is_err() {
            reader.abort();
            return false;
        }
    }
    match reader.await {
        Ok(Ok(true)) => true,
        Ok(Ok(false)) => false,
        Ok(Err(err)) => {
            tracing::warn!(root = %root.cid(), error = %err, "file stream cut short");
            let _ = tx.send(Err(Box::new(err))).await;
            false
        }
        Err(join) => {
            let _ = tx.send(Err(Box::new(join))).await;
            false
        }
    }
}
