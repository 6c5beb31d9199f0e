//! IPLD primitives: verified blocks, multihash checks, dag-pb / UnixFS / dag-cbor / dag-json
//! decoding, HAMT lookups, CAR framing and the UnixFS DAG builder. Pure code, no I/O.

pub mod block;
pub mod builder;
pub mod car;
pub mod codec;
pub mod dagpb;
pub mod hamt;
pub mod unixfs;
pub mod verify;

pub use block::Block;
pub use cid::Cid;

/// Multicodec of raw blocks (opaque bytes).
pub const RAW: u64 = 0x55;
/// Multicodec of dag-pb blocks (UnixFS).
pub const DAG_PB: u64 = 0x70;
/// Multicodec of dag-cbor blocks.
pub const DAG_CBOR: u64 = 0x71;
/// Multicodec of dag-json blocks.
pub const DAG_JSON: u64 = 0x0129;
/// Multicodec of plain JSON blocks.
pub const JSON: u64 = 0x0200;
/// Multicodec of plain CBOR blocks.
pub const CBOR: u64 = 0x51;
/// Multicodec of libp2p public keys (IPNS names); recognised only to give a clear answer.
pub const LIBP2P_KEY: u64 = 0x72;
/// Multihash code of the identity "hash" (the digest is the data itself).
pub const IDENTITY: u64 = 0x00;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;

/// The largest block cidgate accepts from any source (the trustless gateway spec's 2 MiB limit).
pub const MAX_BLOCK_SIZE: usize = 2 * 1024 * 1024;

/// Makes a CIDv1 with a sha2-256 multihash over `data`.
pub fn cid_v1_sha256(codec: u64, data: &[u8]) -> Cid {
    Cid::new_v1(codec, verify::sha2_256_multihash(data))
}
