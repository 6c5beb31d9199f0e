//! The response body type: whole buffers or a stream of verified chunks.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

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

/// `body`, keeping `guard` alive until the body is dropped: finished, or abandoned by a client
/// that left. Work a response depends on (a DAG stream's [`crate::tiers::Interest`]) thus lives
/// exactly as long as the response.
pub fn holding(body: Body, guard: impl Send + Sync + 'static) -> Body {
    Holding {
        body,
        _guard: guard,
    }
    .boxed()
}

struct Holding<G> {
    body: Body,
    _guard: G,
}

impl<G: Send + Sync + 'static> http_body::Body for Holding<G> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<G> Unpin for Holding<G> {}

/// `body` with deadlines: it fails (ending the response without a clean end, so that no client
/// or CDN takes it for complete) when it produces nothing for `stall` while it is being read, or
/// when `end` passes.
pub fn deadlined(body: Body, stall: Duration, end: Option<tokio::time::Instant>) -> Body {
    Deadlined {
        body,
        stall,
        stall_sleep: Box::pin(tokio::time::sleep(stall)),
        waiting: false,
        end: end.map(|e| Box::pin(tokio::time::sleep_until(e))),
    }
    .boxed()
}

struct Deadlined {
    body: Body,
    stall: Duration,
    stall_sleep: Pin<Box<tokio::time::Sleep>>,
    /// The body itself is pending (not the client): the stall clock runs only then.
    waiting: bool,
    end: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for Deadlined {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(end) = &mut this.end {
            if end.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(
                    "response exceeded server.max_request_duration".into()
                )));
            }
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame)
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let until = tokio::time::Instant::now() + this.stall;
                    this.stall_sleep.as_mut().reset(until);
                }
                match this.stall_sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(
                        "response body stalled longer than server.stall_timeout".into(),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A body fed by a channel of chunks; an `Err` item aborts it.
pub fn channel(rx: mpsc::Receiver<Result<Bytes, BodyError>>) -> Body {
    StreamBody::new(ReceiverStream::new(rx).map(|r| r.map(Frame::data))).boxed()
}
