//! The response body type: whole buffers or a stream of verified chunks.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

/// Error that ends a streamed body early; the connection is then cut so that no client or CDN
/// mistakes the partial body for a complete one.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body of the gateway.
pub type Body = BoxBody<Bytes, BodyError>;

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// No body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body fed by a channel of chunks; an `Err` item aborts it.
pub fn channel(rx: mpsc::Receiver<Result<Bytes, BodyError>>) -> Body {
    StreamBody::new(ReceiverStream::new(rx).map(|r| r.map(Frame::data))).boxed()
}
