//! HTTP/1.1 answers kept in memory, written by the server itself instead of by hyper.
//!
//! An HTTP/1.1 connection (plain TCP, or TLS without h2) starts here. Request heads are parsed
//! with httparse, hyper's own parser, and a `GET` or `HEAD` without a body that the handler
//! answers at once ([`Handler::ready_bodiless`]: the gateway's response cache) is written
//! straight to the connection, head and body in one vectored write. It skips hyper's
//! dispatcher, its request and body types and its head encoder, which are most of the time a
//! memory hit costs (docs/benchmarks.md, "The direct HTTP/1.1 path"). A kept answer's head is
//! not even encoded per answer: the response cache keeps it encoded ([`Ready::Encoded`]), and
//! only `Date` (and `Connection: close` at shutdown) is written fresh.
//!
//! A `GET` or `HEAD` the handler cannot answer at once is answered here too
//! ([`Handler::call_bodiless`]), its body streamed (by length, or chunked), so that one miss
//! does not cost the connection its direct path: a CDN's kept-alive connection carries hits
//! and misses mixed. While that answer is worked out and sent, the client is watched as hyper
//! watches it: with nothing of a next request read yet, the connection is read once, and a
//! client that closes its side ends the connection and drops the answer; bytes it sends (a
//! pipelined request) wait in the buffer for their turn. Two differences remain, both bounded:
//! the client is not watched while a write is blocked (one that stops reading is cut after
//! `send_timeout`), and an answer ready at once is written even when the client's close is
//! already queued behind its request (hyper reads first and drops it).
//!
//! Everything else goes to hyper, with every byte read so far, for the rest of the connection:
//! a method other than `GET` or `HEAD`, a request body, HTTP/1.0, `Connection` other than
//! `keep-alive`, `Expect`, `Upgrade`, h2c, anything the parser refuses, a head larger than the
//! limit, and a request of a handler that answers only kept requests itself. The answers
//! written here follow hyper's rules for framing (`Content-Length`, chunked, `HEAD`, 204 and
//! 304), `Date` and `Connection`, so a client cannot tell the two paths apart
//! (tests/direct_http1.rs compares them byte for byte).

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::admission::Ticket;
use super::watch::Activity;
use super::{admit, Ready, Shared};
use crate::body::Body;
use crate::http1::{encode_head, BodyLength, Framing};

/// Headers a request may have; more go to hyper (which answers 431). hyper's own bound.
const MAX_HEADERS: usize = 100;
/// Answers counted locally before they are added to the shared counter.
const COUNT_BATCH: u64 = 64;

/// How the direct part of a connection ended.
pub(super) enum End<I> {
    /// The connection is done (the client closed, an error, a `Connection: close` answer, or
    /// shutdown after an answer).
    Closed(io::Result<()>),
    /// hyper takes over: the connection, the bytes read from it that were not answered, and
    /// whether it has answered requests already (hyper then speaks HTTP/1.1 only: bytes that
    /// look like the HTTP/2 preface later on are a bad request, not a switch of protocol).
    Handoff(I, Bytes, bool),
}

/// Where a header's name and value lie in the request head.
#[derive(Clone, Default)]
struct HeaderIndex {
    name: Range<usize>,
    value: Range<usize>,
}

/// What parsing the start of the read buffer found.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request for hyper.
    Hyper,
    /// A whole `GET` or `HEAD` head of `len` bytes with `count` headers (in the indices).
    Head {
        len: usize,
        method: Method,
        target: Range<usize>,
        count: usize,
    },
}

/// Parses the head at the start of `buf`, noting where its headers lie in `indices`.
fn parse(buf: &[u8], indices: &mut [HeaderIndex]) -> Parsed {
    // The h2c preface parses as an HTTP/2.0 request line; hyper serves it (as HTTP/2 only at
    // the start of the connection, see `End::Handoff`).
    if buf.starts_with(b"PRI ") {
        return Parsed::Hyper;
    }
    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Hyper,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Hyper,
    };
    if req.version != Some(1) {
        return Parsed::Hyper;
    }
    let base = buf.as_ptr() as usize;
    let within = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let target = match req.path {
        // Origin form only: hyper's rules for absolute-form and `*` apply to the rest.
        Some(p) if p.starts_with('/') => within(p.as_bytes()),
        _ => return Parsed::Hyper,
    };
    for (h, index) in req.headers.iter().zip(indices.iter_mut()) {
        let name = h.name.as_bytes();
        let framing = if name.eq_ignore_ascii_case(b"connection") {
            // `close`, `upgrade` and their mixtures are hyper's.
            !h.value.eq_ignore_ascii_case(b"keep-alive")
        } else if name.eq_ignore_ascii_case(b"content-length") {
            h.value != b"0"
        } else {
            name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"expect")
                || name.eq_ignore_ascii_case(b"upgrade")
        };
        if framing {
            return Parsed::Hyper;
        }
        *index = HeaderIndex {
            name: within(name),
            value: within(h.value),
        };
    }
    Parsed::Head {
        len,
        method,
        target,
        count: req.headers.len(),
    }
}

/// The request of a parsed head, its header values sharing `head`'s bytes; `None` when one
/// of its parts is refused by `http` (hyper then decides).
fn request(
    head: &Bytes,
    method: Method,
    target: Range<usize>,
    indices: &[HeaderIndex],
) -> Option<Request<()>> {
    let mut headers = HeaderMap::with_capacity(indices.len());
    for index in indices {
        let name = HeaderName::from_bytes(&head[index.name.clone()]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(index.value.clone())).ok()?;
        headers.append(name, value);
    }
    let uri = http::Uri::from_maybe_shared(head.slice(target)).ok()?;
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

/// The admission of the request the direct path read, admitted, and then handed to hyper (the
/// handler could not answer it at once): hyper's service takes it instead of admitting the
/// same request a second time, which a client's rate limit would count twice.
#[derive(Default)]
pub(super) struct Carried {
    set: AtomicBool,
    ticket: Mutex<Option<Option<Ticket>>>,
}

impl Carried {
    fn put(&self, ticket: Option<Ticket>) {
        if let Ok(mut t) = self.ticket.lock() {
            *t = Some(ticket);
            self.set.store(true, Ordering::Release);
        }
    }

    /// The carried admission, once; `None` when there is none (one atomic load for every
    /// request hyper serves).
    pub(super) fn take(&self) -> Option<Option<Ticket>> {
        if !self.set.load(Ordering::Acquire) || !self.set.swap(false, Ordering::AcqRel) {
            return None;
        }
        self.ticket.lock().ok()?.take()
    }
}

/// Serves the connection's requests while they can be answered here.
pub(super) async fn serve<I>(
    mut io: I,
    shared: &Shared,
    activity: &Activity,
    peer: SocketAddr,
    carried: &Carried,
) -> End<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let max_head = shared.limits.max_header_bytes.max(8192);
    let mut buf = BytesMut::with_capacity(8192);
    let mut indices = vec![HeaderIndex::default(); MAX_HEADERS];
    let mut out = Vec::with_capacity(1024);
    let mut answered = Answered {
        counter: &shared.metrics.direct_answers,
        pending: 0,
        any: false,
    };
    loop {
        let (len, method, target, count) = match parse(&buf, &mut indices) {
            Parsed::Head {
                len,
                method,
                target,
                count,
            } => (len, method, target, count),
            Parsed::Hyper => return End::Handoff(io, exact(&buf), answered.any),
            // hyper answers 431 (its buffer is bounded by the same limit).
            Parsed::Partial if buf.len() >= max_head => {
                return End::Handoff(io, exact(&buf), answered.any)
            }
            Parsed::Partial => {
                if buf.capacity() - buf.len() < 2048 {
                    buf.reserve(8192);
                }
                match io.read_buf(&mut buf).await {
                    Ok(0) => return End::Closed(Ok(())),
                    Ok(_) => continue,
                    Err(e) => return End::Closed(Err(e)),
                }
            }
        };
        if len > max_head {
            return End::Handoff(io, exact(&buf), answered.any);
        }
        let head = buf.split_to(len).freeze();
        let head_only = method == Method::HEAD;
        let Some(mut req) = request(&head, method, target, &indices[..count]) else {
            return End::Handoff(io, joined(&head, &buf), answered.any);
        };
        let busy = activity.begin();
        let client = shared
            .limits
            .trusted_proxies
            .client(peer, req.headers_mut());
        let (ready, ticket) = match admit(&req, &client, shared) {
            Err(refusal) => (Ready::Response(*refusal), None),
            Ok(ticket) => match shared.handler.ready_bodiless(&req, &client) {
                Some(ready) => (ready, ticket),
                None => match shared.handler.call_bodiless(req, client) {
                    // Worked out here, the client watched as hyper watches it.
                    Some(answer) => match awaited(answer, &mut io, &mut buf).await {
                        Ok(resp) => (Ready::Response(resp), ticket),
                        Err(e) => return End::Closed(Err(e)),
                    },
                    // hyper answers it, and the rest of the connection, with the admission it
                    // was given here. The busy mark goes; hyper's service takes its own.
                    None => {
                        carried.put(ticket);
                        return End::Handoff(io, joined(&head, &buf), answered.any);
                    }
                },
            },
        };
        // At shutdown the connection closes after the answer in progress, as hyper's would.
        let closing = activity.closing();
        let written = match ready {
            Ready::Response(resp) => {
                let watch = Some(&mut buf);
                write_response(&mut io, resp, head_only, closing, &mut out, watch).await
            }
            Ready::Encoded { head, body } => {
                write_encoded(&mut io, &head, body, head_only, closing, &mut out).await
            }
        };
        drop((busy, ticket));
        match written {
            // Shutdown may have begun while the answer was being written.
            Ok(true) if !activity.closing() => answered.one(),
            Ok(_) => {
                answered.one();
                // A clean end (TLS: close_notify), bounded by the send timeout.
                return End::Closed(io.shutdown().await);
            }
            Err(e) => return End::Closed(Err(e)),
        }
    }
}

/// Answers of one connection, added to the shared counter in batches (one contended atomic
/// per batch, not per answer) and when the connection's direct part ends, returned or dropped.
struct Answered<'a> {
    counter: &'a prometheus_client::metrics::counter::Counter,
    pending: u64,
    /// Any answer was written.
    any: bool,
}

impl Answered<'_> {
    fn one(&mut self) {
        self.any = true;
        self.pending += 1;
        if self.pending == COUNT_BATCH {
            self.counter.inc_by(COUNT_BATCH);
            self.pending = 0;
        }
    }
}

impl Drop for Answered<'_> {
    fn drop(&mut self) {
        if self.pending > 0 {
            self.counter.inc_by(self.pending);
        }
    }
}

/// `head` followed by `rest`: what hyper reads first, in a buffer of its own size (the read
/// buffer's allocation is not kept for the rest of the connection).
fn joined(head: &[u8], rest: &[u8]) -> Bytes {
    let mut all = BytesMut::with_capacity(head.len() + rest.len());
    all.extend_from_slice(head);
    all.extend_from_slice(rest);
    all.freeze()
}

/// The unanswered bytes, in a buffer of their own size.
fn exact(buf: &[u8]) -> Bytes {
    Bytes::copy_from_slice(buf)
}

/// Writes `resp` to a request (`HEAD` if `head_only`) as hyper's HTTP/1.1 server would; true when the
/// connection stays open. `closing`: it closes after this answer (shutdown has begun; hyper
/// then says `Connection: close`).
async fn write_response<I>(
    io: &mut I,
    resp: Response<Body>,
    head_only: bool,
    closing: bool,
    out: &mut Vec<u8>,
    mut watch: Option<&mut BytesMut>,
) -> io::Result<bool>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, mut body) = resp.into_parts();
    let length = if http_body::Body::is_end_stream(&body) {
        BodyLength::Empty
    } else {
        match http_body::Body::size_hint(&body).exact() {
            Some(n) => BodyLength::Known(n),
            None => BodyLength::Unknown,
        }
    };
    let declared = encode_head(
        out,
        parts.status,
        &parts.headers,
        head_only,
        length,
        closing,
    );
    let keep_alive = !declared.close;
    match declared.framing {
        Framing::None => {
            // No body goes out (HEAD, 204, 304, empty): it is done with before the head is
            // written, as hyper drops it, so that its end (the access log line, the request's
            // accounting) comes before the client can see the answer.
            drop(body);
            write_all(io, &mut [IoSlice::new(out)]).await?;
        }
        Framing::Length(expected) => write_sized(io, [out, &[]], body, expected, watch).await?,
        Framing::Chunked => {
            let mut batch = Batch::new();
            let mut head = Some(&out[..]);
            loop {
                let Some(ended) =
                    next_batch(&mut body, io, &mut watch, &mut batch, head.is_none()).await?
                else {
                    // Nothing ready yet: the head goes alone (hyper flushes it likewise).
                    if let Some(h) = head.take() {
                        write_all(io, &mut [IoSlice::new(h)]).await?;
                        io.flush().await?;
                    }
                    continue;
                };
                let mut lines = [[0u8; CHUNK_LINE]; BATCH_FRAMES];
                let mut slices = [IoSlice::new(&[]); 3 * BATCH_FRAMES + 2];
                let mut n = 0;
                if let Some(h) = head.take() {
                    slices[n] = IoSlice::new(h);
                    n += 1;
                }
                for (data, line) in batch.frames().iter().zip(lines.iter_mut()) {
                    let line = chunk_line(data.len(), line);
                    slices[n] = IoSlice::new(line);
                    slices[n + 1] = IoSlice::new(data);
                    slices[n + 2] = IoSlice::new(b"\r\n");
                    n += 3;
                }
                if ended {
                    slices[n] = IoSlice::new(b"0\r\n\r\n");
                    n += 1;
                }
                write_all(io, &mut slices[..n]).await?;
                if ended {
                    break;
                }
                // The body may make us wait next: what was written must not wait in a TLS
                // buffer meanwhile.
                io.flush().await?;
            }
        }
    }
    io.flush().await?;
    Ok(keep_alive)
}

/// Waits for an answer the handler works out as hyper's HTTP/1.1 server waits for its
/// service: the client is watched ([`read_during`]), and one that leaves ends the connection
/// and drops the answer (which design invariant 7 makes safe at any await point).
async fn awaited<I: AsyncRead + Unpin>(
    mut answer: super::ResponseFuture,
    io: &mut I,
    buf: &mut BytesMut,
) -> io::Result<Response<Body>> {
    if buf.is_empty() {
        tokio::select! {
            biased;
            resp = &mut answer => return Ok(resp),
            read = read_during(io, buf) => read?,
        }
    }
    Ok(answer.await)
}

/// Most body frames gathered into one write.
const BATCH_FRAMES: usize = 16;
/// Bytes past which no more frames are gathered into one write.
const BATCH_BYTES: usize = 256 * 1024;
/// Room for a chunk's size line: 16 hex digits and CRLF.
const CHUNK_LINE: usize = 18;

/// The data frames of a body gathered for one write (on the stack: a kept answer's single
/// frame costs no allocation).
struct Batch {
    data: [Bytes; BATCH_FRAMES],
    len: usize,
}

impl Batch {
    fn new() -> Self {
        Self {
            data: std::array::from_fn(|_| Bytes::new()),
            len: 0,
        }
    }

    fn frames(&self) -> &[Bytes] {
        &self.data[..self.len]
    }

    /// Drops the frames held (their bytes may pin cache memory) and starts over.
    fn clear(&mut self) {
        for d in &mut self.data[..self.len] {
            *d = Bytes::new();
        }
        self.len = 0;
    }
}

/// Fills `batch` with the body's next data frames: the first awaited (the client watched
/// meanwhile, see [`next_frame`]) when `wait`, else only if it is ready (`None`: it is not),
/// then those the body has ready at once, up to [`BATCH_FRAMES`] or [`BATCH_BYTES`]. hyper
/// gathers what a body has ready before it writes likewise: a DAG streamed block by block goes
/// out in one system call (one TLS record) per batch, not one per block. `Some(true)`: the body
/// has ended.
async fn next_batch<I: AsyncRead + Unpin>(
    body: &mut Body,
    io: &mut I,
    watch: &mut Option<&mut BytesMut>,
    batch: &mut Batch,
    wait: bool,
) -> io::Result<Option<bool>> {
    use futures::FutureExt;
    batch.clear();
    let first = if wait {
        next_frame(body, io, watch).await?
    } else {
        match body.frame().now_or_never() {
            None => return Ok(None),
            Some(frame) => frame.transpose().map_err(io::Error::other)?,
        }
    };
    let Some(mut frame) = first else {
        return Ok(Some(true));
    };
    let mut bytes = 0;
    loop {
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                bytes += data.len();
                batch.data[batch.len] = data;
                batch.len += 1;
            }
        }
        if batch.len == BATCH_FRAMES || bytes >= BATCH_BYTES {
            return Ok(Some(false));
        }
        frame = match body.frame().now_or_never() {
            None => return Ok(Some(false)),
            Some(None) => return Ok(Some(true)),
            Some(Some(f)) => f.map_err(io::Error::other)?,
        };
    }
}

/// A chunk's size line (`len` in hex, CRLF) written into `buf`.
fn chunk_line(len: usize, buf: &mut [u8; CHUNK_LINE]) -> &[u8] {
    use std::io::Write;
    let mut rest = &mut buf[..];
    // At most 16 hex digits and CRLF: it fits.
    let _ = write!(rest, "{len:X}\r\n");
    let written = CHUNK_LINE - rest.len();
    &buf[..written]
}

/// The next frame of a body being sent; while it is awaited the client is watched as in
/// [`awaited`] (`watch`: the read buffer, for answers that may take their time).
async fn next_frame<I: AsyncRead + Unpin>(
    body: &mut Body,
    io: &mut I,
    watch: &mut Option<&mut BytesMut>,
) -> io::Result<Option<http_body::Frame<Bytes>>> {
    if let Some(buf) = watch.as_deref_mut().filter(|b| b.is_empty()) {
        tokio::select! {
            biased;
            frame = body.frame() => return frame.transpose().map_err(io::Error::other),
            read = read_during(io, buf) => read?,
        }
    }
    body.frame().await.transpose().map_err(io::Error::other)
}

/// One read while an answer is in progress and nothing of the next request has been read,
/// as hyper's server does (without `half_close`): the client closing its side is an error that
/// ends the connection; bytes it sends are kept for the next request, and then nothing more is
/// read until this answer is done (the buffer stays bounded).
async fn read_during<I: AsyncRead + Unpin>(io: &mut I, buf: &mut BytesMut) -> io::Result<()> {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(8192);
    }
    match io.read_buf(buf).await {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the client closed its side during the answer",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes a [`Ready::Encoded`] answer as [`write_response`] does: its head, the end of the head
/// made for this answer (`Date`; `Connection: close` when `closing`), then its body, unless the
/// request is `HEAD`.
async fn write_encoded<I>(
    io: &mut I,
    head: &[u8],
    body: Body,
    head_only: bool,
    closing: bool,
    out: &mut Vec<u8>,
) -> io::Result<bool>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    crate::http1::finish_kept(out, closing);
    if head_only {
        drop(body);
        write_all(io, &mut [IoSlice::new(head), IoSlice::new(out)]).await?;
    } else {
        let Some(expected) = http_body::Body::size_hint(&body).exact() else {
            return Err(io::Error::other(
                "an encoded head with a body of unknown length",
            ));
        };
        write_sized(io, [head, out], body, expected, None).await?;
    }
    io.flush().await?;
    Ok(!closing)
}

/// Writes the head (in two parts) and a body of exactly `expected` bytes; the head goes with
/// the first bytes in one write (one segment for a small answer).
async fn write_sized<I>(
    io: &mut I,
    head: [&[u8]; 2],
    mut body: Body,
    expected: u64,
    mut watch: Option<&mut BytesMut>,
) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut sent = 0u64;
    let mut head_pending = true;
    let mut batch = Batch::new();
    loop {
        let Some(ended) = next_batch(&mut body, io, &mut watch, &mut batch, !head_pending).await?
        else {
            // Nothing ready yet: the head goes alone (hyper flushes it likewise).
            write_all(io, &mut [IoSlice::new(head[0]), IoSlice::new(head[1])]).await?;
            io.flush().await?;
            head_pending = false;
            continue;
        };
        let frames = batch.frames();
        sent += frames.iter().map(|d| d.len() as u64).sum::<u64>();
        if sent > expected {
            return Err(io::Error::other("response body longer than its length"));
        }
        let last = ended || sent == expected;
        if last {
            // Done with before its last bytes go, as hyper drops a body whose length is
            // written: its end (the access log line) precedes what the client sees, and a
            // stream's producer need not end first.
            drop(std::mem::replace(&mut body, crate::body::empty()));
        }
        let mut slices = [IoSlice::new(&[]); BATCH_FRAMES + 2];
        let mut n = 0;
        if head_pending {
            slices[0] = IoSlice::new(head[0]);
            slices[1] = IoSlice::new(head[1]);
            n = 2;
            head_pending = false;
        }
        for data in frames {
            slices[n] = IoSlice::new(data);
            n += 1;
        }
        if n > 0 {
            write_all(io, &mut slices[..n]).await?;
        }
        if last {
            break;
        }
        // The body may make us wait next: what was written must not wait in a TLS buffer
        // meanwhile.
        io.flush().await?;
    }
    if sent != expected {
        return Err(io::Error::other("response body shorter than its length"));
    }
    Ok(())
}

/// Writes all of `bufs`.
async fn write_all<I: AsyncWrite + Unpin>(
    io: &mut I,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !bufs.is_empty() {
        let n = io.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

/// A connection whose first reads return bytes read from it before: hyper reads what the
/// direct path read but did not answer.
pub(super) struct Prefixed<I> {
    read: Bytes,
    io: I,
}

impl<I> Prefixed<I> {
    /// `io`, `read` coming first.
    pub(super) fn new(io: I, read: Bytes) -> Self {
        Self { read, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            if self.read.is_empty() {
                self.read = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> Parsed {
        let mut indices = vec![HeaderIndex::default(); MAX_HEADERS];
        parse(raw.as_bytes(), &mut indices)
    }

    fn is_head(p: &Parsed) -> bool {
        matches!(p, Parsed::Head { .. })
    }

    #[test]
    fn plain_gets_and_heads_are_read_here_and_the_rest_goes_to_hyper() {
        assert!(is_head(&parsed("GET /ipfs/x HTTP/1.1\r\nHost: a\r\n\r\n")));
        assert!(is_head(&parsed(
            "HEAD /ipfs/x HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
        )));
        assert!(matches!(
            parsed("GET /ipfs/x HTTP/1.1\r\nHost: a\r\n"),
            Parsed::Partial
        ));
        assert!(matches!(parsed("GET /ipfs/x HT"), Parsed::Partial));
        for hyper in [
            "POST /ipfs/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "OPTIONS /ipfs/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /ipfs/x HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET http://a/ipfs/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /ipfs/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "GET /ipfs/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /ipfs/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            "GET /ipfs/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /ipfs/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            "GET /ipfs/x HTTP/1.1\r\nHo st: a\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "PRI ",
        ] {
            assert!(matches!(parsed(hyper), Parsed::Hyper), "{hyper:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert!(matches!(
            parsed(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Parsed::Hyper
        ));
    }

    #[test]
    fn the_request_shares_the_head_bytes() {
        let raw = Bytes::from_static(
            b"GET /ipfs/x?format=raw HTTP/1.1\r\nHost: gw.example\r\nX-Two: a\r\nx-two: b\r\n\r\nrest",
        );
        let mut indices = vec![HeaderIndex::default(); MAX_HEADERS];
        let Parsed::Head {
            len,
            method,
            target,
            count,
        } = parse(&raw, &mut indices)
        else {
            panic!("not parsed");
        };
        assert_eq!(&raw[len..], b"rest");
        let head = raw.slice(..len);
        let req = request(&head, method, target, &indices[..count]).unwrap();
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/ipfs/x");
        assert_eq!(req.uri().query(), Some("format=raw"));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "gw.example");
        let two: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(two, ["a", "b"]);
    }

    /// A connection that records each write and never has anything to read.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len();
            self.writes.push(all);
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn chunk_lines_are_hex_sizes() {
        let mut buf = [0u8; CHUNK_LINE];
        assert_eq!(chunk_line(0, &mut buf), b"0\r\n");
        assert_eq!(chunk_line(0x1a2b, &mut buf), b"1A2B\r\n");
        assert_eq!(chunk_line(usize::MAX, &mut buf), b"FFFFFFFFFFFFFFFF\r\n");
    }

    /// A streamed body: the head goes at once while nothing is ready, then what the body has
    /// ready is gathered, [`BATCH_FRAMES`] frames to a write, the last with the end chunk.
    #[tokio::test]
    async fn a_streamed_body_goes_out_in_batches_of_what_is_ready() {
        use futures::StreamExt;
        let (tx, rx) = futures::channel::mpsc::unbounded::<Bytes>();
        let body: Body = BodyExt::boxed(http_body_util::StreamBody::new(
            rx.map(|b| Ok::<_, crate::body::BodyError>(http_body::Frame::data(b))),
        ));
        let mut io = Recorder::default();
        let (mut out, mut buf) = (Vec::new(), BytesMut::new());
        let writing = write_response(
            &mut io,
            Response::new(body),
            false,
            false,
            &mut out,
            Some(&mut buf),
        );
        let frames: Vec<Bytes> = (0..40u8)
            .map(|i| Bytes::from(vec![b'a' + i % 26; 10]))
            .collect();
        let sending = async {
            tokio::task::yield_now().await;
            for f in &frames {
                tx.unbounded_send(f.clone()).unwrap();
            }
            drop(tx);
        };
        let (kept_alive, ()) = tokio::join!(writing, sending);
        assert!(kept_alive.unwrap());
        let head = String::from_utf8(io.writes[0].clone()).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let chunked = |fs: &[Bytes]| -> Vec<u8> {
            fs.iter()
                .flat_map(|f| [b"A\r\n".to_vec(), f.to_vec(), b"\r\n".to_vec()].concat())
                .collect()
        };
        assert_eq!(io.writes.len(), 4, "head, then 16 + 16 + 8 frames");
        assert_eq!(io.writes[1], chunked(&frames[..16]));
        assert_eq!(io.writes[2], chunked(&frames[16..32]));
        assert_eq!(
            io.writes[3],
            [chunked(&frames[32..]), b"0\r\n\r\n".to_vec()].concat()
        );
    }

    #[tokio::test]
    async fn prefixed_reads_come_first_then_the_connection() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut p = Prefixed::new(a, Bytes::from_static(b"GET / HT"));
        b.write_all(b"TP/1.1\r\n").await.unwrap();
        drop(b);
        let mut all = Vec::new();
        p.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\n");
    }
}
