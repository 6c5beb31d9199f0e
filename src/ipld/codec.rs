//! Codec-generic views of blocks: the links a block holds, and pathing inside dag-cbor /
//! dag-json documents.

use bytes::Bytes;
use cid::Cid;
use ipld_core::ipld::Ipld;

use super::dagpb::PbNode;
use super::{CBOR, DAG_CBOR, DAG_JSON, DAG_PB, JSON, RAW};

/// Why a block's structure cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The block claims a codec whose bytes are malformed.
    #[error("malformed {codec} block: {reason}")]
    Malformed {
        /// Codec name.
        codec: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// cidgate does not decode this codec (it may still be served as raw bytes).
    #[error("codec 0x{0:x} is not supported")]
    Unsupported(u64),
}

/// Name of a multicodec cidgate knows, for messages and headers.
pub fn codec_name(codec: u64) -> &'static str {
    match codec {
        RAW => "raw",
        DAG_PB => "dag-pb",
        DAG_CBOR => "dag-cbor",
        DAG_JSON => "dag-json",
        JSON => "json",
        CBOR => "cbor",
        super::LIBP2P_KEY => "libp2p-key",
        _ => "unknown",
    }
}

/// Decodes a dag-cbor, dag-json, cbor or json block into the IPLD data model.
pub fn decode_ipld(codec: u64, data: &[u8]) -> Result<Ipld, CodecError> {
    let malformed = |reason: String| CodecError::Malformed {
        codec: codec_name(codec),
        reason,
    };
    match codec {
        DAG_CBOR | CBOR => {
            serde_ipld_dagcbor::from_slice::<Ipld>(data).map_err(|e| malformed(e.to_string()))
        }
        DAG_JSON => {
            serde_ipld_dagjson::from_slice::<Ipld>(data).map_err(|e| malformed(e.to_string()))
        }
        JSON => serde_json::from_slice::<serde_json::Value>(data)
            .map(json_to_ipld)
            .map_err(|e| malformed(e.to_string())),
        other => Err(CodecError::Unsupported(other)),
    }
}

fn json_to_ipld(v: serde_json::Value) -> Ipld {
    use serde_json::Value;
    match v {
        Value::Null => Ipld::Null,
        Value::Bool(b) => Ipld::Bool(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Ipld::Integer(i.into()),
            None => match n.as_u64() {
                Some(u) => Ipld::Integer(u.into()),
                None => Ipld::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        Value::String(s) => Ipld::String(s),
        Value::Array(a) => Ipld::List(a.into_iter().map(json_to_ipld).collect()),
        Value::Object(o) => Ipld::Map(o.into_iter().map(|(k, v)| (k, json_to_ipld(v))).collect()),
    }
}

/// The links of a block in traversal order (dag-pb link order; dag-cbor map keys in canonical
/// length-first order). Raw blocks have none.
pub fn links(cid: &Cid, data: &Bytes) -> Result<Vec<Cid>, CodecError> {
    match cid.codec() {
        RAW | JSON | CBOR => Ok(Vec::new()),
        DAG_PB => PbNode::decode(data)
            .map(|n| n.links.into_iter().map(|l| l.cid).collect())
            .map_err(|e| CodecError::Malformed {
                codec: "dag-pb",
                reason: e.to_string(),
            }),
        DAG_CBOR | DAG_JSON => {
            let ipld = decode_ipld(cid.codec(), data)?;
            let mut out = Vec::new();
            collect_links(&ipld, &mut out);
            Ok(out)
        }
        other => Err(CodecError::Unsupported(other)),
    }
}

/// Appends every link inside `ipld` in canonical order.
pub fn collect_links(ipld: &Ipld, out: &mut Vec<Cid>) {
    match ipld {
        Ipld::Link(c) => out.push(*c),
        Ipld::List(items) => items.iter().for_each(|i| collect_links(i, out)),
        Ipld::Map(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(b.0)));
            entries.into_iter().for_each(|(_, v)| collect_links(v, out));
        }
        _ => {}
    }
}

/// Where a path inside a document leads.
#[derive(Debug, PartialEq)]
pub enum DocStep {
    /// After `consumed` segments the path reached a link; resolution continues in that block.
    Link {
        /// Segments used inside this document.
        consumed: usize,
        /// The link target.
        cid: Cid,
    },
    /// All segments were consumed and ended on a value that is not a link.
    Value,
    /// Segment number `index` does not exist in the document.
    Missing {
        /// Index of the missing segment.
        index: usize,
    },
}

/// Follows `segments` inside a decoded document (map keys and list indexes).
pub fn walk_document(doc: &Ipld, segments: &[String]) -> DocStep {
    let mut node = doc;
    for (index, seg) in segments.iter().enumerate() {
        let next = match node {
            Ipld::Map(m) => m.get(seg.as_str()),
            Ipld::List(l) => seg.parse::<usize>().ok().and_then(|i| l.get(i)),
            _ => None,
        };
        match next {
            Some(Ipld::Link(cid)) => {
                return DocStep::Link {
                    consumed: index + 1,
                    cid: *cid,
                }
            }
            Some(v) => node = v,
            None => return DocStep::Missing { index },
        }
    }
    DocStep::Value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::cid_v1_sha256;
    use std::collections::BTreeMap;

    #[test]
    fn dag_cbor_links_in_canonical_key_order() {
        let a = cid_v1_sha256(RAW, b"a");
        let b = cid_v1_sha256(RAW, b"b");
        let mut m = BTreeMap::new();
        m.insert("zz".to_string(), Ipld::Link(a));
        m.insert("b".to_string(), Ipld::List(vec![Ipld::Link(b)]));
        let bytes = serde_ipld_dagcbor::to_vec(&Ipld::Map(m)).unwrap();
        let cid = cid_v1_sha256(DAG_CBOR, &bytes);
        assert_eq!(links(&cid, &Bytes::from(bytes)).unwrap(), vec![b, a]);
    }

    #[test]
    fn document_walk_stops_at_links() {
        let target = cid_v1_sha256(RAW, b"t");
        let doc: Ipld = serde_ipld_dagjson::from_slice(
            format!(r#"{{"files":{{"single":{{"/":"{target}"}},"n":[1,2]}}}}"#).as_bytes(),
        )
        .unwrap();
        let segs = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            walk_document(&doc, &segs(&["files", "single", "more"])),
            DocStep::Link {
                consumed: 2,
                cid: target
            }
        );
        assert_eq!(
            walk_document(&doc, &segs(&["files", "n", "1"])),
            DocStep::Value
        );
        assert_eq!(
            walk_document(&doc, &segs(&["files", "nope"])),
            DocStep::Missing { index: 1 }
        );
    }

    #[test]
    fn malformed_documents_are_errors() {
        let cid = cid_v1_sha256(DAG_CBOR, b"\xff");
        assert!(links(&cid, &Bytes::from_static(b"\xff")).is_err());
        assert!(decode_ipld(DAG_JSON, b"{").is_err());
    }
}
