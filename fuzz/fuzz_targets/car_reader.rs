//! The CARv1 reader (`cidgate::ipld::car::CarDecoder`), as imports, the hot tier's CAR streams
//! and the cold tier's provider streams drive it through `FramedRead`.
//!
//! Properties: no panic; the same items and the same error whatever the chunking of the stream;
//! what decodes re-encodes (`car::header` + `car::frame_prefix`) to a stream that decodes to the
//! same items; block verification never panics and agrees with an independent sha2-256.
#![no_main]

use cidgate::ipld::car::{frame_prefix, header, CarItem};
use cidgate::ipld::{Block, SHA2_256};
use cidgate_fuzz::{decode_chunked, error_kind};
use libfuzzer_sys::fuzz_target;
use sha2::Digest;

fuzz_target!(|data: &[u8]| {
    let (items, err) = decode_chunked(data, data.len().max(1));
    let kind = err.as_ref().map(error_kind);

    // Chunking must not change what the stream means.
    let chunk = [1, 7, 64, 4096][data.len() % 4];
    if chunk > 1 || data.len() < 4096 {
        let (items2, err2) = decode_chunked(data, chunk);
        assert_eq!(items, items2, "chunk size {chunk} changed the items");
        assert_eq!(
            kind,
            err2.as_ref().map(error_kind),
            "chunk size {chunk} changed the error"
        );
    }

    let mut roots = None;
    for (i, item) in items.iter().enumerate() {
        match item {
            CarItem::Header(r) => {
                assert_eq!(i, 0, "a header item after the first");
                roots = Some(r.clone());
            }
            CarItem::Block(cid, bytes) => {
                assert!(i > 0, "a block before the header");
                let verified = Block::verified(*cid, bytes.clone());
                if cid.hash().code() == SHA2_256 {
                    let full = sha2::Sha256::digest(bytes);
                    let want = cid.hash().digest();
                    let matches =
                        !want.is_empty() && want.len() <= 32 && full[..want.len()] == *want;
                    assert_eq!(
                        verified.is_ok(),
                        matches && bytes.len() <= cidgate::ipld::MAX_BLOCK_SIZE
                    );
                }
            }
        }
    }

    // Round trip: re-encode what was decoded and decode it again.
    let Some(roots) = roots else { return };
    let Ok(head) = header(&roots) else { return };
    let mut out = head.to_vec();
    for item in &items[1..] {
        if let CarItem::Block(cid, bytes) = item {
            out.extend_from_slice(&frame_prefix(cid, bytes.len()));
            out.extend_from_slice(bytes);
        }
    }
    let (again, err3) = decode_chunked(&out, out.len().max(1));
    assert!(err3.is_none(), "re-encoded CAR does not decode: {err3:?}");
    assert_eq!(again, items, "re-encoded CAR decodes to other items");
});
