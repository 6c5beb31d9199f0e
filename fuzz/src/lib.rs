//! Helpers shared by the fuzz targets: feeding a byte stream through cidgate's CAR decoder the
//! way `FramedRead` does, chunk by chunk.

use bytes::BytesMut;
use cidgate::ipld::car::{CarDecoder, CarError, CarItem};
use tokio_util::codec::Decoder;

/// Decodes `data` as a CAR stream delivered in chunks of `chunk` bytes, calling the decoder
/// exactly as `tokio_util::codec::FramedRead` does (decode until it needs more, then read;
/// `decode_eof` at the end). Returns the items and the error that stopped the stream, if any.
pub fn decode_chunked(data: &[u8], chunk: usize) -> (Vec<CarItem>, Option<CarError>) {
    let chunk = chunk.max(1);
    let mut dec = CarDecoder::new();
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut pos = 0;
    loop {
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(e) => return (items, Some(e)),
            }
        }
        if pos >= data.len() {
            loop {
                match dec.decode_eof(&mut buf) {
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => return (items, None),
                    Err(e) => return (items, Some(e)),
                }
            }
        }
        let end = (pos + chunk).min(data.len());
        buf.extend_from_slice(&data[pos..end]);
        pos = end;
    }
}

/// A short, comparable description of a CAR error (its variant).
pub fn error_kind(e: &CarError) -> &'static str {
    match e {
        CarError::Header(_) => "header",
        CarError::Frame(_) => "frame",
        CarError::TooLarge(_) => "too-large",
        CarError::Truncated => "truncated",
        CarError::Io(_) => "io",
    }
}
