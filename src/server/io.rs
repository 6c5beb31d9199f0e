//! A connection whose writes have a deadline: a client that stops reading (its receive window
//! full for `timeout`) is cut off instead of holding a connection, a permit and the response's
//! buffers for ever. Its writes also tell the connection watch that the connection is not idle
//! while a response is still leaving.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `inner` with a send deadline.
pub struct Deadlined<S> {
    inner: S,
    timeout: Duration,
    /// Allocated once, re-armed whenever a write starts waiting.
    sleep: Pin<Box<Sleep>>,
    armed: bool,
    /// Told of every write that moved bytes (HTTP/1 only).
    activity: Option<super::watch::Activity>,
    /// The first bytes were read (and told HTTP/2 from HTTP/1).
    sniffed: bool,
}

/// How an HTTP/2 connection (prior knowledge, or TLS after ALPN) begins.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

impl<S> Deadlined<S> {
    /// Wraps `inner`; a write that makes no progress for `timeout` fails with `TimedOut`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
            activity: None,
            sniffed: false,
        }
    }

    /// Reports every write that moved bytes to `activity` (see [`super::watch::Activity::wrote`]),
    /// on HTTP/1 connections: every byte HTTP/1 writes belongs to a response.
    pub fn reporting_to(mut self, activity: super::watch::Activity) -> Self {
        self.activity = Some(activity);
        self
    }

    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        if let (Poll::Ready(Ok(n)), Some(a)) = (r, &self.activity) {
            if *n > 0 {
                a.wrote();
            }
        }
    }

    /// After a write returned `Pending`: fails once it has waited `timeout` in a row.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.timeout;
            self.sleep.as_mut().reset(deadline);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client accepted no data within the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => self.pending(cx),
        }
    }
}

use std::future::Future;

impl<S: AsyncRead + Unpin> AsyncRead for Deadlined<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.activity.is_some() && !self.sniffed {
            let got = &buf.filled()[before..];
            if !got.is_empty() {
                self.sniffed = true;
                // HTTP/2 writes on its own (PING, SETTINGS acknowledgements), so its writes say
                // nothing about responses; an HTTP/2 connection is idle when no stream is open,
                // and a response still being sent survives GOAWAY anyway.
                let n = got.len().min(H2_PREFACE.len());
                if got[..n] == H2_PREFACE[..n] {
                    self.activity = None;
                }
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlined<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&r);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(r, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_reader_that_stops_is_cut_off() {
        let (a, _b) = tokio::io::duplex(1024);
        let mut w = Deadlined::new(a, Duration::from_millis(100));
        let started = std::time::Instant::now();
        let err = w.write_all(&[0u8; 1 << 20]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_slow_but_steady_reader_is_not() {
        let (a, mut b) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 512];
            let mut total = 0;
            while total < 16 * 1024 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                total += b.read(&mut buf).await.unwrap();
            }
        });
        let mut w = Deadlined::new(a, Duration::from_millis(100));
        // Takes far longer than the timeout in total, but never stalls that long.
        w.write_all(&[0u8; 16 * 1024]).await.unwrap();
        reader.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn http1_writes_count_as_activity_and_http2_ones_do_not() {
        use tokio::io::AsyncReadExt;
        for (first, counts) in [
            (&b"GET / HTTP/1.1\r\n"[..], true),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false),
            (b"PRI", false),
        ] {
            let set = std::sync::Arc::new(super::super::watch::Unproven::default());
            let activity = super::super::watch::Activity::new(set.enter());
            drop(activity.begin());
            let idle_from = tokio::time::Instant::now();
            let (a, mut b) = tokio::io::duplex(1024);
            let mut w = Deadlined::new(a, Duration::from_secs(5)).reporting_to(activity.clone());
            b.write_all(first).await.unwrap();
            let mut buf = [0u8; 64];
            let _ = w.read(&mut buf).await.unwrap();
            tokio::time::advance(Duration::from_millis(500)).await;
            w.write_all(b"bytes").await.unwrap();
            let idle = activity.idle_past(Duration::from_secs(5), Duration::from_secs(1));
            let start = tokio::time::Instant::now();
            idle.await;
            let waited = start.elapsed();
            let expected = if counts {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(1) - (start - idle_from)
            };
            assert_eq!(waited, expected, "{:?}", String::from_utf8_lossy(first));
        }
    }
}
