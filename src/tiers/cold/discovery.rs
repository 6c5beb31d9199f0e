//! Finding storage providers that serve a CID over the trustless gateway protocol: the static
//! list, IPNI indexers (`GET /cid/{cid}`) and Delegated Routing V1
//! (`GET /routing/v1/providers/{cid}`). Answers are cached with a TTL (empty ones for a shorter
//! time) and concurrent lookups of one CID share a single round of requests.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use cid::Cid;
use multiaddr::{Multiaddr, Protocol};
use serde::Deserialize;

use super::COLD;
use crate::coalesce::Coalescer;
use crate::config::{ColdConfig, StaticProvider};
use crate::telemetry::Metrics;
use crate::tiers::TierError;

type Mh = multihash::Multihash<64>;
type Lookup = Coalescer<Mh, Result<Arc<Vec<Candidate>>, TierError>>;
/// A cached discovery answer and when it expires.
type CachedAnswer = (Instant, Arc<Vec<Candidate>>);

/// Multicodec of the trustless HTTP gateway transport in IPNI metadata.
pub const TRANSPORT_IPFS_GATEWAY_HTTP: u64 = 0x0920;
/// Multicodec of the Filecoin graphsync transport (carries PieceCID, VerifiedDeal, FastRetrieval).
pub const TRANSPORT_GRAPHSYNC_FILECOINV1: u64 = 0x0910;
/// Multicodec of the bitswap transport.
pub const TRANSPORT_BITSWAP: u64 = 0x0900;

/// Where a candidate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The `cold.providers` list.
    Static,
    /// An IPNI indexer.
    Ipni,
    /// A Delegated Routing V1 endpoint.
    Routing,
}

/// A provider that may serve the CID, with what discovery said about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Base URL of its trustless gateway.
    pub url: String,
    /// Name for logs and metrics.
    pub label: String,
    /// Asking price in FIL per GiB.
    pub price_per_gib: f64,
    /// Where it was found.
    pub origin: Origin,
    /// Its peer ID, when discovery named one.
    pub peer_id: Option<String>,
    /// The data is in a verified (Filecoin Plus) deal.
    pub verified_deal: bool,
    /// The provider keeps an unsealed copy for fast retrieval.
    pub fast_retrieval: bool,
}

/// Transport entries decoded from IPNI metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transports {
    /// Speaks the trustless HTTP gateway protocol.
    pub http: bool,
    /// Speaks bitswap.
    pub bitswap: bool,
    /// Graphsync retrieval with its deal flags, when advertised.
    pub graphsync: Option<GraphsyncDeal>,
}

/// The payload of a graphsync-filecoinv1 metadata entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct GraphsyncDeal {
    /// The piece holding the data.
    #[serde(rename = "PieceCID")]
    pub piece_cid: Cid,
    /// Verified (Filecoin Plus) deal.
    #[serde(rename = "VerifiedDeal", default)]
    pub verified_deal: bool,
    /// An unsealed copy is kept.
    #[serde(rename = "FastRetrieval", default)]
    pub fast_retrieval: bool,
}

/// Decodes IPNI metadata: multicodec-prefixed transport entries, one after the other.
pub fn decode_metadata(bytes: &[u8]) -> Transports {
    let mut out = Transports::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Ok((code, after)) = unsigned_varint::decode::u64(rest) else {
            break;
        };
        rest = after;
        match code {
            TRANSPORT_IPFS_GATEWAY_HTTP => out.http = true,
            TRANSPORT_BITSWAP => out.bitswap = true,
            TRANSPORT_GRAPHSYNC_FILECOINV1 => {
                let mut cursor = Cursor::new(rest);
                match serde_ipld_dagcbor::de::from_reader_once::<GraphsyncDeal, _>(&mut cursor) {
                    Ok(deal) => out.graphsync = Some(deal),
                    Err(_) => break,
                }
                let used = cursor.position() as usize;
                rest = rest.get(used..).unwrap_or_default();
            }
            // An unknown entry's payload length is unknown: nothing after it can be read.
            _ => break,
        }
    }
    out
}

/// Turns a provider multiaddr into the base URL of its HTTP endpoint, or `None` when it is not
/// an HTTP(S) address.
pub fn http_url(addr: &str) -> Option<String> {
    let ma: Multiaddr = addr.parse().ok()?;
    let mut host: Option<String> = None;
    let mut port: Option<u16> = None;
    let mut tls = false;
    let mut http = false;
    for p in ma.iter() {
        match p {
            Protocol::Ip4(ip) => host = Some(ip.to_string()),
            Protocol::Ip6(ip) => host = Some(format!("[{ip}]")),
            Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h) => host = Some(h.to_string()),
            Protocol::Tcp(p) => port = Some(p),
            Protocol::Tls => tls = true,
            Protocol::Sni(h) => host = host.or(Some(h.to_string())),
            Protocol::Https => {
                tls = true;
                http = true;
            }
            Protocol::Http => http = true,
            Protocol::P2p(_) => {}
            _ => return None,
        }
    }
    if !http {
        return None;
    }
    let host = host?;
    let scheme = if tls { "https" } else { "http" };
    Some(match (port, tls) {
        (None, _) | (Some(443), true) | (Some(80), false) => format!("{scheme}://{host}"),
        (Some(p), _) => format!("{scheme}://{host}:{p}"),
    })
}

#[derive(Deserialize)]
struct IpniResponse {
    #[serde(rename = "MultihashResults", default)]
    multihash_results: Vec<IpniMultihashResult>,
}

#[derive(Deserialize)]
struct IpniMultihashResult {
    #[serde(rename = "ProviderResults", default)]
    provider_results: Vec<IpniProviderResult>,
}

#[derive(Deserialize)]
struct IpniProviderResult {
    #[serde(rename = "Metadata", default)]
    metadata: Option<String>,
    #[serde(rename = "Provider")]
    provider: IpniAddrInfo,
}

#[derive(Deserialize)]
struct IpniAddrInfo {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Addrs", default)]
    addrs: Vec<String>,
}

#[derive(Deserialize)]
struct RoutingResponse {
    #[serde(rename = "Providers", default)]
    providers: Option<Vec<RoutingRecord>>,
}

#[derive(Deserialize)]
struct RoutingRecord {
    #[serde(rename = "Schema", default)]
    schema: String,
    #[serde(rename = "ID", default)]
    id: Option<String>,
    #[serde(rename = "Addrs", default)]
    addrs: Vec<String>,
    #[serde(rename = "Protocols", default)]
    protocols: Vec<String>,
}

/// What one discovery source answered.
#[derive(Debug, Default)]
pub struct SourceAnswer {
    /// Usable HTTP providers.
    pub candidates: Vec<Candidate>,
    /// Provider records or addresses that were not usable (no HTTP transport or address).
    pub unusable: u64,
}

/// Parses an IPNI `/cid/{cid}` answer.
pub fn parse_ipni(body: &[u8]) -> Result<SourceAnswer, String> {
    let resp: IpniResponse = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut out = SourceAnswer::default();
    for result in resp.multihash_results {
        for pr in result.provider_results {
            let meta = pr
                .metadata
                .as_deref()
                .and_then(|m| base64::engine::general_purpose::STANDARD.decode(m).ok())
                .map(|m| decode_metadata(&m))
                .unwrap_or_default();
            if !meta.http {
                out.unusable += 1;
                continue;
            }
            let deal = meta.graphsync.clone();
            add_addrs(
                &mut out,
                &pr.provider.id,
                &pr.provider.addrs,
                Origin::Ipni,
                deal,
            );
        }
    }
    Ok(out)
}

/// Parses a Delegated Routing V1 providers answer, JSON or NDJSON.
pub fn parse_routing(body: &[u8], ndjson: bool) -> Result<SourceAnswer, String> {
    let records: Vec<RoutingRecord> = if ndjson {
        body.split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(|l| serde_json::from_slice(l).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?
    } else {
        let r: RoutingResponse = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        r.providers.unwrap_or_default()
    };
    let mut out = SourceAnswer::default();
    for rec in records {
        let http = rec
            .protocols
            .iter()
            .any(|p| p == "transport-ipfs-gateway-http");
        if rec.schema != "peer" || !http {
            out.unusable += 1;
            continue;
        }
        let id = rec.id.unwrap_or_default();
        add_addrs(&mut out, &id, &rec.addrs, Origin::Routing, None);
    }
    Ok(out)
}

fn add_addrs(
    out: &mut SourceAnswer,
    id: &str,
    addrs: &[String],
    origin: Origin,
    deal: Option<GraphsyncDeal>,
) {
    let mut any = false;
    for a in addrs {
        match http_url(a) {
            Some(url) => {
                any = true;
                if out.candidates.iter().any(|c| c.url == url) {
                    continue;
                }
                out.candidates.push(Candidate {
                    label: if id.is_empty() {
                        url.clone()
                    } else {
                        id.to_string()
                    },
                    url,
                    price_per_gib: 0.0,
                    origin,
                    peer_id: (!id.is_empty()).then(|| id.to_string()),
                    verified_deal: deal.as_ref().is_some_and(|d| d.verified_deal),
                    fast_retrieval: deal.as_ref().is_some_and(|d| d.fast_retrieval),
                });
            }
            None => out.unusable += 1,
        }
    }
    if !any && addrs.is_empty() {
        out.unusable += 1;
    }
}

/// A provider from the static list.
pub fn static_candidate(p: &StaticProvider) -> Candidate {
    let (url, label, price) = match p {
        StaticProvider::Url(u) => (u.clone(), String::new(), 0.0),
        StaticProvider::Priced {
            url,
            label,
            price_per_gib,
        } => (url.clone(), label.clone(), *price_per_gib),
    };
    let url = url.trim_end_matches('/').to_string();
    Candidate {
        label: if label.is_empty() { url.clone() } else { label },
        url,
        price_per_gib: price,
        origin: Origin::Static,
        peer_id: None,
        verified_deal: false,
        fast_retrieval: false,
    }
}

/// Discovery with caching and coalescing.
pub struct Discovery {
    client: reqwest::Client,
    /// The static list (`cold.providers`), replaced whole on SIGHUP.
    statics: arc_swap::ArcSwap<Vec<Candidate>>,
    indexers: Vec<String>,
    routers: Vec<String>,
    ttl: Duration,
    negative_ttl: Duration,
    timeout: Duration,
    cache: Mutex<HashMap<Mh, CachedAnswer>>,
    inflight: Lookup,
    metrics: Arc<Metrics>,
    unusable: AtomicU64,
}

impl Discovery {
    /// Discovery as configured in `[cold]`.
    pub fn new(config: &ColdConfig, client: reqwest::Client, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            client,
            statics: arc_swap::ArcSwap::from_pointee(
                config.providers.iter().map(static_candidate).collect(),
            ),
            indexers: trimmed(&config.indexers),
            routers: trimmed(&config.routers),
            ttl: config.discovery_ttl,
            negative_ttl: config.negative_ttl,
            timeout: config.discovery_timeout,
            cache: Mutex::new(HashMap::new()),
            inflight: Coalescer::with_gauge(Some(metrics.work("discovery_lookups"))),
            metrics,
            unusable: AtomicU64::new(0),
        })
    }

    /// Replaces the static provider list (`cold.providers` re-read on SIGHUP); lookups that
    /// already started keep the list they had.
    pub fn set_static_providers(&self, providers: &[StaticProvider]) {
        self.statics
            .store(Arc::new(providers.iter().map(static_candidate).collect()));
    }

    /// The base URLs of the static provider list.
    pub fn static_urls(&self) -> Vec<String> {
        self.statics.load().iter().map(|c| c.url.clone()).collect()
    }

    /// Provider records or addresses found unusable so far.
    pub fn unusable(&self) -> u64 {
        self.unusable.load(Ordering::Relaxed)
    }

    /// Candidates for `cid`: the static list plus what indexers and routers report.
    /// [`TierError::NotFound`] when every lookup positively reported no provider.
    pub async fn find(self: &Arc<Self>, cid: &Cid) -> Result<Arc<Vec<Candidate>>, TierError> {
        if self.indexers.is_empty() && self.routers.is_empty() {
            return Ok(self.statics.load_full());
        }
        let mh = *cid.hash();
        if let Ok(cache) = self.cache.lock() {
            if let Some((until, found)) = cache.get(&mh) {
                if Instant::now() < *until {
                    self.metrics.discovery_cache(if found.is_empty() {
                        "negative_hit"
                    } else {
                        "hit"
                    });
                    return self.with_statics(cid, found.clone());
                }
            }
        }
        // One lookup per multihash, in a task of its own: it caches its answer and leaves when
        // it ends, whoever still waits, and stops when every asker has gone.
        let this = self.clone();
        let c = *cid;
        let (result, joined) = self
            .inflight
            .run(mh, move || {
                crate::telemetry::in_current_trace(async move {
                    let result = this.lookup(&c).await;
                    if let (Ok(found), Ok(mut cache)) = (&result, this.cache.lock()) {
                        let ttl = if found.is_empty() {
                            this.negative_ttl
                        } else {
                            this.ttl
                        };
                        if cache.len() > 100_000 {
                            let now = Instant::now();
                            cache.retain(|_, (until, _)| *until > now);
                        }
                        cache.insert(c.hash().to_owned(), (Instant::now() + ttl, found.clone()));
                    }
                    result
                })
            })
            .await;
        if !joined {
            self.metrics.discovery_cache("miss");
        }
        let result = result.map_err(|_| TierError::Unavailable {
            tier: COLD,
            reason: "discovery lookup ended without an answer".into(),
        })?;
        match result {
            Ok(found) => self.with_statics(cid, found),
            Err(e) if !self.statics.load().is_empty() => {
                tracing::debug!(%cid, error = %e, "discovery failed; using the static providers");
                Ok(self.statics.load_full())
            }
            Err(e) => Err(e),
        }
    }

    fn with_statics(
        &self,
        cid: &Cid,
        found: Arc<Vec<Candidate>>,
    ) -> Result<Arc<Vec<Candidate>>, TierError> {
        let statics = self.statics.load_full();
        if statics.is_empty() {
            if found.is_empty() {
                return Err(TierError::NotFound(*cid));
            }
            return Ok(found);
        }
        let mut all = (*statics).clone();
        all.extend(
            found
                .iter()
                .filter(|c| !statics.iter().any(|s| s.url == c.url))
                .cloned(),
        );
        Ok(Arc::new(all))
    }

    /// Asks every indexer and router at once and merges what they say.
    async fn lookup(&self, cid: &Cid) -> Result<Arc<Vec<Candidate>>, TierError> {
        let start = Instant::now();
        let ipni = self.indexers.iter().map(|base| self.ask_ipni(base, cid));
        let routing = self.routers.iter().map(|base| self.ask_router(base, cid));
        let (a, b) = futures::future::join(
            futures::future::join_all(ipni),
            futures::future::join_all(routing),
        )
        .await;
        let mut merged: Vec<Candidate> = Vec::new();
        let mut errors = Vec::new();
        for answer in a.into_iter().chain(b) {
            match answer {
                Ok(ans) => {
                    self.unusable.fetch_add(ans.unusable, Ordering::Relaxed);
                    self.metrics.cold_unusable.inc_by(ans.unusable);
                    for c in ans.candidates {
                        match merged.iter_mut().find(|m| m.url == c.url) {
                            Some(m) => {
                                m.verified_deal |= c.verified_deal;
                                m.fast_retrieval |= c.fast_retrieval;
                            }
                            None => merged.push(c),
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        tracing::debug!(%cid, found = merged.len(), errors = errors.len(), took = ?start.elapsed(), "provider discovery");
        if merged.is_empty() && !errors.is_empty() {
            return Err(TierError::Upstream {
                tier: COLD,
                reason: format!("provider discovery failed: {}", errors.join("; ")),
            });
        }
        Ok(Arc::new(merged))
    }

    async fn ask_ipni(&self, base: &str, cid: &Cid) -> Result<SourceAnswer, String> {
        let start = Instant::now();
        let url = format!("{base}/cid/{cid}");
        let r = self.get(&url, "application/json").await;
        self.metrics.discovery("ipni", start.elapsed());
        match r? {
            None => Ok(SourceAnswer::default()),
            Some((body, _)) => parse_ipni(&body).map_err(|e| format!("{base}: {e}")),
        }
    }

    async fn ask_router(&self, base: &str, cid: &Cid) -> Result<SourceAnswer, String> {
        let start = Instant::now();
        let url = format!(
            "{base}/routing/v1/providers/{cid}?filter-protocols=transport-ipfs-gateway-http"
        );
        let r = self
            .get(&url, "application/x-ndjson, application/json;q=0.9")
            .await;
        self.metrics.discovery("routing", start.elapsed());
        match r? {
            None => Ok(SourceAnswer::default()),
            Some((body, content_type)) => parse_routing(&body, content_type.contains("ndjson"))
                .map_err(|e| format!("{base}: {e}")),
        }
    }

    /// GET with the lookup deadline; `None` for 404 (no provider known).
    async fn get(&self, url: &str, accept: &str) -> Result<Option<(bytes::Bytes, String)>, String> {
        let send = self.client.get(url).header("accept", accept).send();
        let resp = tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| format!("{url}: timed out"))?
            .map_err(|e| format!("{url}: {e}"))?;
        if resp.status() == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(format!("{url}: answered {}", resp.status()));
        }
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = tokio::time::timeout(self.timeout, resp.bytes())
            .await
            .map_err(|_| format!("{url}: timed out"))?
            .map_err(|e| format!("{url}: {e}"))?;
        Ok(Some((body, content_type)))
    }
}

fn trimmed(urls: &[String]) -> Vec<String> {
    urls.iter()
        .map(|u| u.trim_end_matches('/').to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiaddrs_become_base_urls() {
        assert_eq!(
            http_url("/ip4/127.0.0.1/tcp/8080/http").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            http_url("/dns4/sp.example.com/tcp/443/https").as_deref(),
            Some("https://sp.example.com")
        );
        assert_eq!(
            http_url("/dns/sp.example.com/tcp/8443/tls/http").as_deref(),
            Some("https://sp.example.com:8443")
        );
        assert_eq!(
            http_url("/ip6/::1/tcp/80/http").as_deref(),
            Some("http://[::1]")
        );
        assert_eq!(
            http_url("/ip4/1.2.3.4/tcp/443/tls/sni/sp.example/http").as_deref(),
            Some("https://1.2.3.4")
        );
        assert_eq!(http_url("/ip4/1.2.3.4/tcp/4001"), None);
        assert_eq!(http_url("/ip4/1.2.3.4/udp/4001/quic-v1"), None);
        assert_eq!(http_url("not a multiaddr"), None);
    }

    fn metadata(entries: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (code, payload) in entries {
            let mut buf = unsigned_varint::encode::u64_buffer();
            out.extend_from_slice(unsigned_varint::encode::u64(*code, &mut buf));
            out.extend_from_slice(payload);
        }
        out
    }

    fn graphsync_payload(verified: bool, fast: bool) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct P {
            #[serde(rename = "PieceCID")]
            piece: Cid,
            #[serde(rename = "VerifiedDeal")]
            verified: bool,
            #[serde(rename = "FastRetrieval")]
            fast: bool,
        }
        let piece = crate::ipld::cid_v1_sha256(crate::ipld::RAW, b"piece");
        serde_ipld_dagcbor::to_vec(&P {
            piece,
            verified,
            fast,
        })
        .unwrap()
    }

    #[test]
    fn metadata_lists_every_transport() {
        let m = metadata(&[
            (
                TRANSPORT_GRAPHSYNC_FILECOINV1,
                graphsync_payload(true, false),
            ),
            (TRANSPORT_IPFS_GATEWAY_HTTP, vec![]),
            (TRANSPORT_BITSWAP, vec![]),
        ]);
        let t = decode_metadata(&m);
        assert!(t.http && t.bitswap);
        let g = t.graphsync.unwrap();
        assert!(g.verified_deal && !g.fast_retrieval);
        let only_bitswap = decode_metadata(&metadata(&[(TRANSPORT_BITSWAP, vec![])]));
        assert!(!only_bitswap.http && only_bitswap.bitswap);
        // Garbage stops the decoding without a panic.
        assert_eq!(decode_metadata(&[0xff]), Transports::default());
    }

    #[test]
    fn ipni_answers_keep_http_providers_with_deal_flags() {
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        let http_meta = metadata(&[
            (TRANSPORT_IPFS_GATEWAY_HTTP, vec![]),
            (
                TRANSPORT_GRAPHSYNC_FILECOINV1,
                graphsync_payload(true, true),
            ),
        ]);
        let body = serde_json::json!({
            "MultihashResults": [{
                "Multihash": "EiA=",
                "ProviderResults": [
                    {"ContextID": "AA==", "Metadata": b64(&http_meta),
                     "Provider": {"ID": "12D3KooWA", "Addrs": ["/ip4/127.0.0.1/tcp/9000/http", "/ip4/127.0.0.1/tcp/4001"]}},
                    {"ContextID": "AA==", "Metadata": b64(&metadata(&[(TRANSPORT_BITSWAP, vec![])])),
                     "Provider": {"ID": "12D3KooWB", "Addrs": ["/ip4/127.0.0.1/tcp/4001"]}}
                ]
            }]
        });
        let ans = parse_ipni(body.to_string().as_bytes()).unwrap();
        assert_eq!(ans.candidates.len(), 1);
        let c = &ans.candidates[0];
        assert_eq!(c.url, "http://127.0.0.1:9000");
        assert_eq!(c.peer_id.as_deref(), Some("12D3KooWA"));
        assert!(c.verified_deal && c.fast_retrieval);
        // The bitswap-only provider and the TCP address are both unusable.
        assert_eq!(ans.unusable, 2);
        assert!(parse_ipni(b"{not json").is_err());
    }

    #[test]
    fn routing_answers_in_json_and_ndjson() {
        let rec = |id: &str, port: u16, proto: &str| {
            serde_json::json!({"Schema": "peer", "ID": id,
                "Addrs": [format!("/ip4/127.0.0.1/tcp/{port}/http")], "Protocols": [proto]})
        };
        let json = serde_json::json!({"Providers": [
            rec("a", 1, "transport-ipfs-gateway-http"),
            rec("b", 2, "transport-bitswap"),
        ]});
        let ans = parse_routing(json.to_string().as_bytes(), false).unwrap();
        assert_eq!(ans.candidates.len(), 1);
        assert_eq!(ans.candidates[0].url, "http://127.0.0.1:1");
        assert_eq!(ans.unusable, 1);
        let nd = format!(
            "{}\n{}\n\n",
            rec("a", 1, "transport-ipfs-gateway-http"),
            rec("c", 3, "transport-ipfs-gateway-http")
        );
        let ans = parse_routing(nd.as_bytes(), true).unwrap();
        assert_eq!(ans.candidates.len(), 2);
        let empty = parse_routing(br#"{"Providers": null}"#, false).unwrap();
        assert!(empty.candidates.is_empty());
    }
}
