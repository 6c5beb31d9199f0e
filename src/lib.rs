//! cidgate: a caching HTTP retrieval gateway for IPFS content.
//!
//! Layers, top to bottom: [`server`] (listeners), [`gateway`] (HTTP semantics of the gateway
//! specs), [`content`] (paths, UnixFS, CAR selection), [`tiers`] (block sources) and [`ipld`]
//! (verification, codecs, CAR). Each layer uses only the ones below it.

pub mod admin;
pub mod admin_client;
pub mod app;
pub mod body;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod content;
pub mod denylist;
pub mod dns_syntax;
pub mod gateway;
pub mod http1;
pub mod ipld;
pub mod ipns;
pub mod path_encoding;
pub mod popularity;
pub mod retrievability;
pub mod sample;
pub mod server;
pub mod telemetry;
pub mod tiers;
pub mod zero_copy;

/// Compares secrets (tokens) in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
