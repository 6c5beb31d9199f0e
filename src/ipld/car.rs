//! CARv1 framing: a header (dag-cbor `{roots, version}`) then `varint(len) || cid || bytes` frames.
//!
//! Writing is split so response bodies never copy block bytes: [`header`] and [`frame_prefix`]
//! produce small buffers and the block's own `Bytes` handle follows. Reading is a
//! `tokio_util` [`Decoder`] that slices frames out of the read buffer without copying; the header
//! itself is decoded with iroh-car. `benches/ipld.rs` compares both against iroh-car's
//! reader and writer (see docs/benchmarks.md).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cid::Cid;
use iroh_car::CarHeader;
use tokio_util::codec::Decoder;

use super::MAX_BLOCK_SIZE;

/// Largest CAR header accepted (a header is only a list of roots).
pub const MAX_HEADER_SIZE: usize = 1024 * 1024;

/// Why a byte stream is not a valid CARv1.
#[derive(Debug, thiserror::Error)]
pub enum CarError {
    /// The header is not a CARv1 header.
    #[error("bad CAR header: {0}")]
    Header(String),
    /// A frame is malformed.
    #[error("bad CAR frame: {0}")]
    Frame(String),
    /// A length prefix announces more than cidgate will buffer.
    #[error("CAR section of {0} bytes is over the limit")]
    TooLarge(u64),
    /// The stream ended inside a frame.
    #[error("CAR stream ended in the middle of a frame")]
    Truncated,
    /// Reading the underlying stream failed.
    #[error("reading CAR: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes the CARv1 header for `roots`, length prefix included.
pub fn header(roots: &[Cid]) -> Result<Bytes, CarError> {
    let body = CarHeader::new_v1(roots.to_vec())
        .encode()
        .map_err(|e| CarError::Header(e.to_string()))?;
    let mut buf = BytesMut::with_capacity(body.len() + 10);
    put_varint(&mut buf, body.len() as u64);
    buf.put_slice(&body);
    Ok(buf.freeze())
}

/// The bytes that precede a block's data in a CAR frame: `varint(len(cid) + len(data)) || cid`.
pub fn frame_prefix(cid: &Cid, data_len: usize) -> Bytes {
    let cid_bytes = cid.to_bytes();
    let mut buf = BytesMut::with_capacity(cid_bytes.len() + 10);
    put_varint(&mut buf, (cid_bytes.len() + data_len) as u64);
    buf.put_slice(&cid_bytes);
    buf.freeze()
}

fn put_varint(buf: &mut BytesMut, n: u64) {
    let mut tmp = unsigned_varint::encode::u64_buffer();
    buf.put_slice(unsigned_varint::encode::u64(n, &mut tmp));
}

/// One item of a CAR stream.
#[derive(Debug, Clone, PartialEq)]
pub enum CarItem {
    /// The header's roots (always the first item).
    Header(Vec<Cid>),
    /// A block as it appears in the stream: not yet verified.
    Block(Cid, Bytes),
}

/// Streaming CARv1 decoder for `FramedRead`.
#[derive(Debug, Default)]
pub struct CarDecoder {
    header_done: bool,
}

impl CarDecoder {
    /// A decoder positioned at the start of a CAR.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Reads a length prefix; `Ok(None)` when more bytes are needed.
fn read_len(src: &BytesMut, limit: usize) -> Result<Option<(usize, usize)>, CarError> {
    match unsigned_varint::decode::u64(src) {
        Ok((n, rest)) => {
            if n > limit as u64 {
                return Err(CarError::TooLarge(n));
            }
            Ok(Some((n as usize, src.len() - rest.len())))
        }
        Err(unsigned_varint::decode::Error::Insufficient) => Ok(None),
        Err(e) => Err(CarError::Frame(e.to_string())),
    }
}

impl Decoder for CarDecoder {
    type Item = CarItem;
    type Error = CarError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<CarItem>, CarError> {
        let limit = if self.header_done {
            MAX_BLOCK_SIZE + 256
        } else {
            MAX_HEADER_SIZE
        };
        let Some((len, prefix)) = read_len(src, limit)? else {
            return Ok(None);
        };
        if src.len() < prefix + len {
            src.reserve(prefix + len - src.len());
            return Ok(None);
        }
        src.advance(prefix);
        let frame = src.split_to(len).freeze();
        if !self.header_done {
            self.header_done = true;
            let header = CarHeader::decode(&frame).map_err(|e| CarError::Header(e.to_string()))?;
            if header.version() != 1 {
                return Err(CarError::Header(format!(
                    "version {} is not 1",
                    header.version()
                )));
            }
            return Ok(Some(CarItem::Header(header.roots().to_vec())));
        }
        let mut cursor = std::io::Cursor::new(&frame[..]);
        let cid = Cid::read_bytes(&mut cursor).map_err(|e| CarError::Frame(e.to_string()))?;
        let at = cursor.position() as usize;
        Ok(Some(CarItem::Block(cid, frame.slice(at..))))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<CarItem>, CarError> {
        match self.decode(src)? {
            Some(item) => Ok(Some(item)),
            None if src.is_empty() => {
                if self.header_done {
                    Ok(None)
                } else {
                    Err(CarError::Header("empty stream".into()))
                }
            }
            None => Err(CarError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{cid_v1_sha256, RAW};
    use futures::StreamExt;
    use tokio_util::codec::FramedRead;

    fn car_of(blocks: &[&[u8]]) -> (Vec<Cid>, Vec<u8>) {
        let cids: Vec<Cid> = blocks.iter().map(|b| cid_v1_sha256(RAW, b)).collect();
        let mut out = header(&cids[..1]).unwrap().to_vec();
        for (c, b) in cids.iter().zip(blocks) {
            out.extend_from_slice(&frame_prefix(c, b.len()));
            out.extend_from_slice(b);
        }
        (cids, out)
    }

    #[tokio::test]
    async fn decodes_what_it_encodes_and_iroh_car_agrees() {
        let (cids, bytes) = car_of(&[b"one", b"two", b""]);
        let mut framed = FramedRead::new(&bytes[..], CarDecoder::new());
        assert_eq!(
            framed.next().await.unwrap().unwrap(),
            CarItem::Header(vec![cids[0]])
        );
        let mut got = Vec::new();
        while let Some(item) = framed.next().await {
            got.push(item.unwrap());
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], CarItem::Block(cids[1], Bytes::from_static(b"two")));

        let mut reader = iroh_car::CarReader::new(&bytes[..]).await.unwrap();
        assert_eq!(reader.header().roots(), &cids[..1]);
        let (c, d) = reader.next_block().await.unwrap().unwrap();
        assert_eq!((c, d.as_slice()), (cids[0], &b"one"[..]));
    }

    #[tokio::test]
    async fn truncated_stream_is_an_error() {
        let (_, bytes) = car_of(&[b"one", b"two"]);
        let cut = &bytes[..bytes.len() - 1];
        let mut framed = FramedRead::new(cut, CarDecoder::new());
        let mut last = None;
        while let Some(item) = framed.next().await {
            last = Some(item);
        }
        assert!(matches!(last, Some(Err(CarError::Truncated))));
    }

    #[tokio::test]
    async fn garbage_is_rejected() {
        let mut framed = FramedRead::new(&b"\x05hello"[..], CarDecoder::new());
        assert!(matches!(
            framed.next().await,
            Some(Err(CarError::Header(_)))
        ));
        let mut framed = FramedRead::new(&b"\xff\xff\xff\xff\x0f"[..], CarDecoder::new());
        assert!(matches!(
            framed.next().await,
            Some(Err(CarError::TooLarge(_)))
        ));
    }
}
