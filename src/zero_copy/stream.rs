//! A plain TCP connection that sends arena-resident bytes with `sendfile(2)`.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use super::region::{locate, Region};
use super::{ZeroCopySent, MIN_ZERO_COPY_BYTES};

/// A TCP stream whose writes send slices of a cache arena or of a store segment mapping from
/// their file instead of copying them; every other byte is written as usual.
pub struct ZeroCopyStream {
    inner: TcpStream,
    sent: ZeroCopySent,
    /// Where the rest of a segment slice partly sent by the last write starts (its region and
    /// address): the caller hands that rest back next, however short, and it gets the same
    /// checks (a short piece is not recognised by its size alone).
    rest: Option<(Arc<Region>, usize)>,
    /// The store block being sent from a hashed copy: its pages left the page cache between
    /// being handed out and being sent (a slow client kept them waiting).
    refetched: Option<Refetched>,
}

/// A store block read again from its segment file and hashed.
struct Refetched {
    region: Arc<Region>,
    state: RefetchState,
}

enum RefetchState {
    /// Being read and hashed on a blocking thread, for a write of the bytes at this offset.
    Reading {
        off: usize,
        task: tokio::task::JoinHandle<io::Result<Option<(u64, Bytes)>>>,
    },
    /// The block's offset in the region and its verified bytes.
    Ready { start: usize, bytes: Bytes },
}

impl Refetched {
    /// Whether this refetch is for (or holds) `len` bytes at `off` of `region`.
    fn covers(&self, region: &Arc<Region>, off: usize, len: usize) -> bool {
        Arc::ptr_eq(&self.region, region)
            && match &self.state {
                RefetchState::Reading { off: at, .. } => *at == off,
                RefetchState::Ready { start, bytes } => {
                    off >= *start && off + len <= *start + bytes.len()
                }
            }
    }
}

impl ZeroCopyStream {
    /// Wraps `inner`; bytes sent without a copy are added to `sent`.
    pub fn new(inner: TcpStream, sent: ZeroCopySent) -> Self {
        Self {
            inner,
            sent,
            rest: None,
            refetched: None,
        }
    }

    /// Writes `len` bytes at `off` of segment `region` from a hashed copy of their block: a
    /// slice whose pages left the page cache is read again through the store (which hashes it)
    /// rather than sent from the disk unhashed. The response ends when the block is gone or
    /// fails its hash.
    fn poll_refetched(
        &mut self,
        cx: &mut Context<'_>,
        region: Arc<Region>,
        off: usize,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        if !self
            .refetched
            .as_ref()
            .is_some_and(|r| r.covers(&region, off, len))
        {
            let Some(refetch) = region.refetch.get().cloned() else {
                return Poll::Ready(Err(io::Error::other(
                    "store block left the page cache before it was sent",
                )));
            };
            self.sent.refetched.inc();
            let task = tokio::task::spawn_blocking(move || refetch(off as u64, len));
            self.refetched = Some(Refetched {
                region,
                state: RefetchState::Reading { off, task },
            });
        }
        let Some(r) = self.refetched.as_mut() else {
            return Poll::Ready(Err(io::Error::other("refetch lost")));
        };
        if let RefetchState::Reading { task, .. } = &mut r.state {
            let read = match ready!(Pin::new(task).poll(cx)) {
                Ok(Ok(Some((start, bytes)))) => usize::try_from(start)
                    .map(|start| RefetchState::Ready { start, bytes })
                    .map_err(io::Error::other),
                Ok(Ok(None)) => Err(io::Error::other(
                    "store block gone or found corrupt when read again before it was sent",
                )),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(io::Error::other(e)),
            };
            match read {
                Ok(ready) => r.state = ready,
                Err(e) => {
                    self.refetched = None;
                    return Poll::Ready(Err(e));
                }
            }
        }
        let RefetchState::Ready { start, bytes } = &r.state else {
            return Poll::Ready(Err(io::Error::other("refetch lost")));
        };
        // The refetch named the block holding these bytes; anything else is refused rather
        // than sliced out of range.
        let Some(from) = off.checked_sub(*start).filter(|f| f + len <= bytes.len()) else {
            self.refetched = None;
            return Poll::Ready(Err(io::Error::other(
                "store block read again does not hold the bytes to send",
            )));
        };
        let (bytes, block_end) = (bytes.clone(), *start + bytes.len());
        let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[from..from + len]))?;
        if off + n == block_end {
            // The block is out: its copy (and the segment it keeps open) goes.
            self.refetched = None;
        }
        Poll::Ready(Ok(n))
    }

    /// Runs one non-blocking socket call once the socket is writable.
    fn poll_socket(
        &self,
        cx: &mut Context<'_>,
        mut call: impl FnMut(&TcpStream) -> rustix::io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            match self.inner.try_io(Interest::WRITABLE, || {
                call(&self.inner).map_err(io::Error::from)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut rest = None;
        let result = self.poll_send_once(cx, bufs, &mut rest);
        // Kept across a pending write: the caller hands the same bytes back.
        if result.is_ready() {
            self.rest = rest;
        }
        result
    }

    /// One write of `bufs`; `rest` is set where the rest of a segment slice starts when only
    /// part of it was written.
    fn poll_send_once(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
        rest: &mut Option<(Arc<Region>, usize)>,
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().position(|b| !b.is_empty());
        let continued = match (&self.rest, first) {
            (Some((region, at)), Some(i)) if bufs[i].as_ptr() as usize == *at => {
                let off = at - region.base.as_ptr() as usize;
                (off + bufs[i].len() <= region.len).then(|| (i, region.clone(), off as u64))
            }
            _ => None,
        };
        let found = continued.or_else(|| {
            bufs.iter().enumerate().find_map(|(i, buf)| {
                (buf.len() >= MIN_ZERO_COPY_BYTES)
                    .then(|| locate(buf))
                    .flatten()
                    .map(|(region, offset)| (i, region, offset))
            })
        });
        match found {
            None => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            // The slice comes first (or only empty buffers precede it): send it from the file.
            Some((i, region, offset)) if bufs[..i].iter().all(|b| b.is_empty()) => {
                let slice = &bufs[i];
                // A store segment's bytes are trusted only while its pages are in memory and
                // not found corrupt: asked again right before the kernel reads them, since a
                // slow client may have kept them waiting. Bytes found corrupt end the response
                // (the client sees it cut); a block whose pages left is read again and hashed,
                // never sent from the disk unhashed.
                if region.segment {
                    let off = offset as usize;
                    if region.is_poisoned(off, slice.len()) {
                        return Poll::Ready(Err(io::Error::other(
                            "store block found corrupt before it was sent",
                        )));
                    }
                    let refetching = self
                        .refetched
                        .as_ref()
                        .is_some_and(|r| r.covers(&region, off, slice.len()));
                    if refetching || !super::mapped::pages_resident(&region, off, slice.len()) {
                        let at = slice.as_ptr() as usize;
                        let written =
                            ready!(self.poll_refetched(cx, region.clone(), off, slice.len()))?;
                        if written < slice.len() {
                            *rest = Some((region, at + written));
                        }
                        return Poll::Ready(Ok(written));
                    }
                }
                let sent = ready!(self.poll_socket(cx, |socket| {
                    let mut at = offset;
                    rustix::fs::sendfile(socket, region.fd(), Some(&mut at), slice.len())
                }));
                match sent {
                    // A segment file shorter than the slice (cut by something else): its pages
                    // past the end must not be touched here.
                    Ok(0) if region.segment => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "segment file shorter than the block",
                    ))),
                    // Cannot happen for a live arena slot; write the bytes instead of reporting
                    // a zero-length write, which hyper would treat as a dead connection.
                    Ok(0) => Pin::new(&mut self.inner).poll_write(cx, slice),
                    Ok(n) => {
                        let counter = if region.segment {
                            if n < slice.len() {
                                *rest = Some((region.clone(), slice.as_ptr() as usize + n));
                            }
                            &self.sent.store
                        } else {
                            &self.sent.arena
                        };
                        counter.inc_by(n as u64);
                        Poll::Ready(Ok(n))
                    }
                    Err(e) => Poll::Ready(Err(e)),
                }
            }
            Some((i, _, _)) => {
                // The bytes before the slice (a response head, a frame header) go first, held
                // back with MSG_MORE so that they leave in the same segment as the slice.
                let head = &bufs[..i];
                self.poll_socket(cx, |socket| {
                    rustix::net::sendmsg(
                        socket,
                        head,
                        &mut SendAncillaryBuffer::default(),
                        SendFlags::MORE | SendFlags::NOSIGNAL,
                    )
                })
            }
        }
    }
}

impl AsyncRead for ZeroCopyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZeroCopyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zero_copy::{Arena, MappedFile, Refetch};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair(sent: ZeroCopySent) -> (ZeroCopyStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (ZeroCopyStream::new(server, sent), client)
    }

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[tokio::test]
    async fn mixed_writes_arrive_in_order_and_arena_bytes_skip_the_copy() {
        let arena = Arena::new(8 << 20).unwrap();
        let big = arena.copy_in(&pattern(1, 3 << 20)).unwrap();
        let sent = ZeroCopySent::default();
        let (mut server, mut client) = pair(sent.clone()).await;
        let head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let tail = b"trailer".to_vec();
        let writer = tokio::spawn({
            let big = big.clone();
            async move {
                let mut bufs: Vec<&[u8]> = vec![&head, &big, &tail];
                while !bufs.is_empty() {
                    let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
                    let mut n = server.write_vectored(&slices).await.unwrap();
                    while n > 0 {
                        let take = n.min(bufs[0].len());
                        bufs[0] = &bufs[0][take..];
                        n -= take;
                        if bufs[0].is_empty() {
                            bufs.remove(0);
                        }
                    }
                    while bufs.first().is_some_and(|b| b.is_empty()) {
                        bufs.remove(0);
                    }
                }
                server.shutdown().await.unwrap();
            }
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        let mut want = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"trailer");
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes differ");
        assert_eq!(
            sent.arena.get(),
            big.len() as u64,
            "the arena slice went by sendfile"
        );
    }

    #[tokio::test]
    async fn bytes_in_flight_survive_their_slot_being_reused() {
        let arena = Arena::new(128 * 1024).unwrap();
        let first = pattern(5, 96 * 1024);
        let slot = arena.copy_in(&first).unwrap();
        let (mut server, mut client) = pair(ZeroCopySent::default()).await;
        // Small enough to sit whole in the socket buffers while nobody reads.
        let n = server.write(&slot).await.unwrap();
        assert_eq!(n, slot.len());
        let addr = slot.as_ptr() as usize;
        drop(slot);
        let reused = arena.copy_in(&pattern(9, 96 * 1024)).unwrap();
        assert_eq!(
            reused.as_ptr() as usize,
            addr,
            "the allocator hands the same pages out again"
        );
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(got == first, "the bytes already sent were not overwritten");
    }

    #[tokio::test]
    async fn a_segment_slice_whose_pages_left_memory_is_not_sent() {
        use crate::zero_copy::MappedFile;
        let dir = tempfile::tempdir().unwrap();
        if crate::zero_copy::keeps_files_in_memory(dir.path()) {
            eprintln!("skipped: {} keeps files in memory", dir.path().display());
            return;
        }
        let data = pattern(4, 512 * 1024);
        let file = crate::zero_copy::test_segment(dir.path(), &data);
        let file = std::sync::Arc::new(file);
        let map = MappedFile::new(file.clone(), 1 << 20).unwrap();
        let sent = ZeroCopySent::default();
        // Resident: sent from the file. Its bytes are never touched by this process.
        let slice = map.resident(0, 256 * 1024).unwrap().expect("just written");
        let (mut server, mut client) = pair(sent.clone()).await;
        let (read_first, first_read) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 256 * 1024];
            client.read_exact(&mut got).await.unwrap();
            let _ = read_first.send(());
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        server.write_all(&slice).await.unwrap();
        assert_eq!(sent.store.get(), 256 * 1024);
        // Read by the client, so that no socket holds the file's pages (a large folio can
        // cover both halves).
        first_read.await.unwrap();
        drop(slice);
        // Its pages leave the page cache before the next write: not sent, the response ends.
        let later = map
            .resident(256 * 1024, 256 * 1024)
            .unwrap()
            .expect("just written");
        crate::zero_copy::forget_pages(&file, 0, 0);
        assert!(map.resident(256 * 1024, 256 * 1024).unwrap().is_none());
        let err = server.write_all(&later).await.unwrap_err();
        assert!(err.to_string().contains("left the page cache"), "{err}");
        assert_eq!(sent.store.get(), 256 * 1024, "nothing more went out");
        drop(server);
        let got = reader.await.unwrap();
        assert!(got[..] == data[..256 * 1024]);
    }

    /// A refetch for a test segment holding `data` as one block at offset 0, counting its
    /// calls; it finds nothing when `finds` is false.
    fn test_refetch(
        data: &[u8],
        finds: bool,
        calls: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> Refetch {
        let (data, calls) = (Bytes::copy_from_slice(data), calls.clone());
        Arc::new(move |off, len| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert!(off as usize + len <= data.len(), "asked within the block");
            Ok(finds.then(|| (0, data.clone())))
        })
    }

    /// Drops `file`'s pages until the page at `off` is gone (a loaded machine may keep one on
    /// a CPU's LRU batch for a moment).
    async fn evict_from(file: &std::fs::File, map: &MappedFile, off: u64) {
        for _ in 0..100 {
            crate::zero_copy::forget_pages(file, 0, 0);
            if map.resident(off, 4096).unwrap().is_none() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the pages did not leave the page cache");
    }

    /// A store block whose pages leave the page cache while its response waits for a slow
    /// client is read again through its segment's refetch (which hashes) and the rest is sent
    /// from that copy, byte for byte; a refetch that finds the block gone or corrupt ends the
    /// response.
    #[tokio::test]
    async fn a_block_whose_pages_left_memory_is_sent_from_a_hashed_copy() {
        use crate::zero_copy::MappedFile;
        let dir = tempfile::tempdir().unwrap();
        if crate::zero_copy::keeps_files_in_memory(dir.path()) {
            eprintln!("skipped: {} keeps files in memory", dir.path().display());
            return;
        }
        for refetch_finds_it in [true, false] {
            let data = pattern(7, 1 << 20);
            let file = crate::zero_copy::test_segment(dir.path(), &data);
            let file = std::sync::Arc::new(file);
            let map = MappedFile::new(file.clone(), 2 << 20).unwrap();
            let block = map.resident(0, data.len()).unwrap().expect("just written");
            let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            map.set_refetch(test_refetch(&data, refetch_finds_it, &calls));
            let sent = ZeroCopySent::default();
            let (mut server, mut client) = pair(sent.clone()).await;
            // The first part leaves from the file and is read by the client, so that no socket
            // holds the file's pages (a large folio may cover the whole block).
            let split = 300 * 1024;
            let (first, rest) = (block.slice(..split), block.slice(split..));
            drop(block);
            let mut got = vec![0u8; split];
            let (written, read) =
                tokio::join!(server.write_all(&first), client.read_exact(&mut got));
            written.unwrap();
            read.unwrap();
            assert_eq!(sent.store.get() as usize, split);
            // Then the pages leave before the rest is sent.
            evict_from(&file, &map, split as u64).await;
            let writer = tokio::spawn(async move {
                let r = server.write_all(&rest).await;
                let _ = server.shutdown().await;
                r
            });
            let mut tail = Vec::new();
            let _ = client.read_to_end(&mut tail).await;
            got.extend_from_slice(&tail);
            let written = writer.await.unwrap();
            assert_eq!(
                sent.store.get() as usize,
                split,
                "nothing more from the file"
            );
            assert_eq!(
                calls.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "read again once"
            );
            assert_eq!(sent.refetched.get(), 1);
            if refetch_finds_it {
                written.unwrap();
                assert_eq!(got.len(), data.len());
                assert!(got == data, "every byte right");
            } else {
                let err = written.unwrap_err();
                assert!(err.to_string().contains("read again"), "{err}");
                assert_eq!(got.len(), split, "nothing unhashed after the first part");
                assert!(got[..] == data[..split]);
            }
            drop((first, map));
            std::fs::remove_file(dir.path().join("seg")).unwrap();
        }
    }

    /// The rest of a segment slice that a write sent only part of is checked like the slice,
    /// however short: here under 64 KiB, whose pages left meanwhile, it is sent from the
    /// refetched copy rather than read from the disk unhashed.
    #[tokio::test]
    async fn a_short_rest_of_a_partly_sent_slice_is_checked_too() {
        use crate::zero_copy::MappedFile;
        let dir = tempfile::tempdir().unwrap();
        if crate::zero_copy::keeps_files_in_memory(dir.path()) {
            eprintln!("skipped: {} keeps files in memory", dir.path().display());
            return;
        }
        // Just over the size sent from the file: whatever the first write sends (the socket
        // buffers hold about 10 KiB), the rest is shorter than that.
        let data = pattern(9, MIN_ZERO_COPY_BYTES + 4096);
        let file = std::sync::Arc::new(crate::zero_copy::test_segment(dir.path(), &data));
        let map = MappedFile::new(file.clone(), 1 << 20).unwrap();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        map.set_refetch(test_refetch(&data, true, &calls));
        let block = map.resident(0, data.len()).unwrap().expect("just written");
        // Small socket buffers, and a client that reads nothing yet: one write sends part.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut client = socket
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        rustix::net::sockopt::set_socket_send_buffer_size(&server, 4096).unwrap();
        let sent = ZeroCopySent::default();
        let mut server = ZeroCopyStream::new(server, sent.clone());
        let n = server.write(&block).await.unwrap();
        let rest_len = data.len() - n;
        assert!(
            rest_len > 0 && rest_len < MIN_ZERO_COPY_BYTES,
            "a short rest: {n} of {} sent",
            data.len()
        );
        let mut got = vec![0u8; n];
        client.read_exact(&mut got).await.unwrap();
        evict_from(&file, &map, n as u64 - n as u64 % 4096).await;
        let writer = tokio::spawn(async move {
            server.write_all(&block[n..]).await.unwrap();
            server.shutdown().await.unwrap();
            drop(block);
        });
        let mut tail = Vec::new();
        client.read_to_end(&mut tail).await.unwrap();
        writer.await.unwrap();
        got.extend_from_slice(&tail);
        assert!(got == data, "every byte right");
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the rest was refetched"
        );
        assert_eq!(
            sent.store.get() as usize,
            n,
            "the rest not sent from the file"
        );
    }

    #[tokio::test]
    async fn small_and_foreign_slices_are_written_normally() {
        let sent = ZeroCopySent::default();
        let (mut server, mut client) = pair(sent.clone()).await;
        let heap = pattern(3, 200 * 1024);
        server.write_all(&heap).await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert!(got == heap);
        assert_eq!(sent.arena.get() + sent.store.get(), 0);
    }
}
