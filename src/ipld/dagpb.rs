//! dag-pb: the protobuf node format under UnixFS.
//!
//! Decoding uses prost with `Bytes` fields, so a node's data is a slice of the block, not a copy.
//! Encoding is assembled by hand from prost's wire helpers because dag-pb's canonical form puts
//! `Links` (field 2) before `Data` (field 1), and prost always writes fields in tag order.

use bytes::{BufMut, Bytes, BytesMut};
use cid::Cid;
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;

/// Why a block is not valid dag-pb.
#[derive(Debug, thiserror::Error)]
pub enum DagPbError {
    /// The protobuf is malformed.
    #[error("malformed dag-pb: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A link has no hash or a hash that is not a CID.
    #[error("dag-pb link {index} has no valid CID")]
    BadLink {
        /// Position of the link in the node.
        index: usize,
    },
}

#[derive(Clone, PartialEq, Message)]
struct RawLink {
    #[prost(bytes = "bytes", optional, tag = "1")]
    hash: Option<Bytes>,
    #[prost(string, optional, tag = "2")]
    name: Option<String>,
    #[prost(uint64, optional, tag = "3")]
    tsize: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct RawNode {
    #[prost(bytes = "bytes", optional, tag = "1")]
    data: Option<Bytes>,
    #[prost(message, repeated, tag = "2")]
    links: Vec<RawLink>,
}

/// A link of a dag-pb node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PbLink {
    /// Target of the link.
    pub cid: Cid,
    /// Name (a file name in UnixFS directories); `None` when the field is absent.
    pub name: Option<String>,
    /// Cumulative size of the target DAG, when the encoder recorded it.
    pub tsize: Option<u64>,
}

impl PbLink {
    /// The link's name, empty when absent.
    pub fn name_str(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// A decoded dag-pb node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PbNode {
    /// Links in stored order.
    pub links: Vec<PbLink>,
    /// The opaque data field (UnixFS metadata), sliced from the block.
    pub data: Option<Bytes>,
}

impl PbNode {
    /// Decodes a dag-pb block.
    pub fn decode(block: &Bytes) -> Result<Self, DagPbError> {
        let raw = RawNode::decode(block.clone())?;
        let mut links = Vec::with_capacity(raw.links.len());
        for (index, l) in raw.links.into_iter().enumerate() {
            let hash = l.hash.ok_or(DagPbError::BadLink { index })?;
            let cid = Cid::try_from(hash.as_ref()).map_err(|_| DagPbError::BadLink { index })?;
            links.push(PbLink {
                cid,
                name: l.name,
                tsize: l.tsize,
            });
        }
        Ok(Self {
            links,
            data: raw.data,
        })
    }

    /// Encodes the node in canonical dag-pb form (links, then data).
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64 + self.links.len() * 48);
        for link in &self.links {
            let raw = RawLink {
                hash: Some(Bytes::from(link.cid.to_bytes())),
                name: link.name.clone(),
                tsize: link.tsize,
            };
            encode_key(2, WireType::LengthDelimited, &mut buf);
            encode_varint(raw.encoded_len() as u64, &mut buf);
            // Writing into a growable BytesMut cannot run out of space.
            let _ = raw.encode(&mut buf);
        }
        if let Some(data) = &self.data {
            encode_key(1, WireType::LengthDelimited, &mut buf);
            encode_varint(data.len() as u64, &mut buf);
            buf.put_slice(data);
        }
        buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{cid_v1_sha256, RAW};

    #[test]
    fn round_trip_puts_links_before_data() {
        let node = PbNode {
            links: vec![PbLink {
                cid: cid_v1_sha256(RAW, b"x"),
                name: Some("x".into()),
                tsize: Some(1),
            }],
            data: Some(Bytes::from_static(&[8, 1])),
        };
        let enc = node.encode();
        assert_eq!(enc[0], 0x12, "links come first in canonical dag-pb");
        assert_eq!(PbNode::decode(&enc).unwrap(), node);
    }

    #[test]
    fn empty_node_is_empty_bytes() {
        assert!(PbNode::default().encode().is_empty());
        assert_eq!(PbNode::decode(&Bytes::new()).unwrap(), PbNode::default());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(PbNode::decode(&Bytes::from_static(&[0x12, 0x05, 0x0a])).is_err());
        assert!(PbNode::decode(&Bytes::from_static(&[0x12, 0x02, 0x0a, 0x00])).is_err());
    }
}
