//! UnixFS: files, directories, HAMT shards and symlinks on top of dag-pb (and raw leaves).

use bytes::Bytes;
use cid::Cid;
use prost::Message;

use super::dagpb::{DagPbError, PbLink, PbNode};
use super::{DAG_PB, RAW};

/// Why a block is not a usable UnixFS node.
#[derive(Debug, thiserror::Error)]
pub enum UnixFsError {
    /// The dag-pb layer is broken.
    #[error(transparent)]
    DagPb(#[from] DagPbError),
    /// The UnixFS `Data` protobuf is malformed or missing.
    #[error("malformed UnixFS data: {0}")]
    Data(String),
    /// The block's codec is not one UnixFS is built from.
    #[error("codec 0x{0:x} is not UnixFS")]
    NotUnixFs(u64),
}

/// The UnixFS `Data` message.
#[derive(Clone, PartialEq, Message)]
pub struct Data {
    /// Node type, a [`DataType`].
    #[prost(enumeration = "DataType", required, tag = "1")]
    pub r#type: i32,
    /// Inline bytes (file content, symlink target, HAMT bitfield).
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub data: Option<Bytes>,
    /// Total file size.
    #[prost(uint64, optional, tag = "3")]
    pub filesize: Option<u64>,
    /// Byte size of each child's content, in link order.
    #[prost(uint64, repeated, packed = "false", tag = "4")]
    pub blocksizes: Vec<u64>,
    /// HAMT hash function multicode.
    #[prost(uint64, optional, tag = "5")]
    pub hash_type: Option<u64>,
    /// HAMT fanout.
    #[prost(uint64, optional, tag = "6")]
    pub fanout: Option<u64>,
    /// POSIX mode bits.
    #[prost(uint32, optional, tag = "7")]
    pub mode: Option<u32>,
    /// Modification time.
    #[prost(message, optional, tag = "8")]
    pub mtime: Option<UnixTime>,
}

/// UnixFS modification time.
#[derive(Clone, PartialEq, Message)]
pub struct UnixTime {
    /// Seconds since the epoch.
    #[prost(int64, required, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds.
    #[prost(fixed32, optional, tag = "2")]
    pub fractional_nanoseconds: Option<u32>,
}

/// UnixFS node types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DataType {
    /// Raw bytes (legacy leaves).
    Raw = 0,
    /// A plain directory.
    Directory = 1,
    /// A file (root or inner node).
    File = 2,
    /// Metadata wrapper (obsolete).
    Metadata = 3,
    /// A symbolic link.
    Symlink = 4,
    /// A HAMT-sharded directory node.
    HamtShard = 5,
}

/// What a UnixFS node is, decoded from a raw or dag-pb block.
#[derive(Clone, Debug)]
pub enum FsNode {
    /// A file or file chunk. `data` is the inline part, which comes before the children's bytes.
    File {
        /// Inline content.
        data: Bytes,
        /// Total size of the file below this node.
        size: u64,
        /// Children with the number of content bytes each one holds.
        children: Vec<(Cid, u64)>,
    },
    /// A directory with named entries.
    Directory {
        /// Entries in stored order.
        links: Vec<PbLink>,
    },
    /// A HAMT shard (root or inner).
    HamtShard {
        /// Shard links; names carry the bucket prefix.
        links: Vec<PbLink>,
        /// Fanout (a power of two).
        fanout: u64,
        /// Hash function code.
        hash_type: u64,
    },
    /// A symbolic link to `target`.
    Symlink {
        /// Link target as stored.
        target: Bytes,
    },
}

impl FsNode {
    /// Decodes the UnixFS meaning of a block of codec `codec`.
    pub fn decode(codec: u64, block: &Bytes) -> Result<Self, UnixFsError> {
        match codec {
            RAW => Ok(FsNode::File {
                data: block.clone(),
                size: block.len() as u64,
                children: Vec::new(),
            }),
            DAG_PB => Self::decode_pb(PbNode::decode(block)?),
            other => Err(UnixFsError::NotUnixFs(other)),
        }
    }

    /// Interprets an already decoded dag-pb node.
    pub fn decode_pb(node: PbNode) -> Result<Self, UnixFsError> {
        let raw = node
            .data
            .as_ref()
            .ok_or_else(|| UnixFsError::Data("dag-pb node has no UnixFS data".into()))?;
        let data = Data::decode(raw.clone()).map_err(|e| UnixFsError::Data(e.to_string()))?;
        let kind = DataType::try_from(data.r#type)
            .map_err(|_| UnixFsError::Data(format!("unknown UnixFS type {}", data.r#type)))?;
        match kind {
            DataType::File | DataType::Raw => {
                if data.blocksizes.len() != node.links.len() {
                    return Err(UnixFsError::Data(format!(
                        "file node has {} links but {} blocksizes",
                        node.links.len(),
                        data.blocksizes.len()
                    )));
                }
                let inline = data.data.unwrap_or_default();
                let children: Vec<(Cid, u64)> = node
                    .links
                    .iter()
                    .zip(&data.blocksizes)
                    .map(|(l, s)| (l.cid, *s))
                    .collect();
                // Sizes are attacker-chosen: a sum past u64::MAX is no file (and would wrap
                // the offsets of every reader below this node).
                let computed = children
                    .iter()
                    .try_fold(inline.len() as u64, |total, c| total.checked_add(c.1))
                    .ok_or_else(|| {
                        UnixFsError::Data("file node blocksizes overflow a 64-bit size".into())
                    })?;
                Ok(FsNode::File {
                    data: inline,
                    size: data.filesize.unwrap_or(computed),
                    children,
                })
            }
            DataType::Directory => Ok(FsNode::Directory { links: node.links }),
            DataType::HamtShard => {
                let fanout = data.fanout.unwrap_or(256);
                if !fanout.is_power_of_two() || !(2..=4096).contains(&fanout) {
                    return Err(UnixFsError::Data(format!("bad HAMT fanout {fanout}")));
                }
                Ok(FsNode::HamtShard {
                    links: node.links,
                    fanout,
                    hash_type: data.hash_type.unwrap_or(0x22),
                })
            }
            DataType::Symlink => Ok(FsNode::Symlink {
                target: data.data.unwrap_or_default(),
            }),
            DataType::Metadata => Err(UnixFsError::Data(
                "UnixFS metadata nodes are not supported".into(),
            )),
        }
    }

    /// True for plain and sharded directories.
    pub fn is_dir(&self) -> bool {
        matches!(self, FsNode::Directory { .. } | FsNode::HamtShard { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_block_is_a_file() {
        let b = Bytes::from_static(b"abc");
        match FsNode::decode(RAW, &b).unwrap() {
            FsNode::File {
                data,
                size,
                children,
            } => {
                assert_eq!(&data[..], b"abc");
                assert_eq!(size, 3);
                assert!(children.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn file_with_mismatched_blocksizes_is_rejected() {
        let data = Data {
            r#type: DataType::File as i32,
            blocksizes: vec![1, 2],
            ..Default::default()
        };
        let node = PbNode {
            links: vec![],
            data: Some(Bytes::from(data.encode_to_vec())),
        };
        assert!(FsNode::decode(DAG_PB, &node.encode()).is_err());
    }

    #[test]
    fn blocksizes_that_overflow_are_an_error_not_a_panic() {
        // Found by the `provider_stream` fuzz target: the sum overflowed (a panic with overflow
        // checks, a wrapped size without).
        let cid = crate::ipld::cid_v1_sha256(RAW, b"x");
        let link = PbLink {
            cid,
            name: None,
            tsize: None,
        };
        let data = Data {
            r#type: DataType::File as i32,
            data: Some(Bytes::from_static(b"ab")),
            filesize: Some(10),
            blocksizes: vec![u64::MAX - 1, 1],
            ..Default::default()
        };
        let node = PbNode {
            links: vec![link.clone(), link],
            data: Some(Bytes::from(data.encode_to_vec())),
        };
        assert!(matches!(
            FsNode::decode(DAG_PB, &node.encode()),
            Err(UnixFsError::Data(_))
        ));
    }

    #[test]
    fn dag_pb_without_data_is_an_error() {
        assert!(FsNode::decode(DAG_PB, &PbNode::default().encode()).is_err());
        assert!(FsNode::decode(0x71, &Bytes::new()).is_err());
    }
}
