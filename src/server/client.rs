//! Who a request comes from. Forwarding headers (`X-Forwarded-For`, `-Host`, `-Proto`,
//! `Forwarded`) are believed only from peers in `server.trusted_proxies` and removed from every
//! other request before anything reads them (design invariant 10: untrusted headers choose
//! nothing — not the client address, not the DNSLink site, not the cache key).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderMap;
use ipnet::IpNet;

/// The headers a proxy sets about the original request.
// Names made once: a lookup by `&str` parses the name on every request.
const FORWARDING: [http::HeaderName; 5] = [
    http::HeaderName::from_static("x-forwarded-for"),
    http::HeaderName::from_static("x-forwarded-host"),
    http::HeaderName::from_static("x-forwarded-proto"),
    http::header::FORWARDED,
    http::HeaderName::from_static("x-real-ip"),
];

/// Who sent a request, as far as the server can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client: the peer, or the address a trusted proxy reports in `X-Forwarded-For`.
    pub ip: IpAddr,
    /// The peer is a trusted proxy (its forwarding headers were kept).
    pub via_proxy: bool,
}

impl Client {
    /// A client connected directly.
    pub fn direct(peer: SocketAddr) -> Self {
        Client {
            peer,
            ip: peer.ip(),
            via_proxy: false,
        }
    }
}

/// The networks of trusted proxies.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Arc<Vec<IpNet>>);

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl TrustedProxies {
    /// Proxies in `nets`.
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(Arc::new(nets))
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request from `peer`. Forwarding headers a trusted proxy did not set are
    /// removed from `headers`; behind trusted proxies the client is the last address in
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client(&self, peer: SocketAddr, headers: &mut HeaderMap) -> Client {
        if !self.contains(peer.ip()) {
            if FORWARDING.iter().any(|h| headers.contains_key(h)) {
                for h in &FORWARDING {
                    headers.remove(h);
                }
            }
            return Client::direct(peer);
        }
        let mut hops: Vec<IpAddr> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            let Ok(s) = v.to_str() else { continue };
            hops.extend(s.split(',').filter_map(|h| parse_hop(h.trim())));
        }
        let ip = hops
            .iter()
            .rev()
            .copied()
            .find(|ip| !self.contains(*ip))
            .or_else(|| hops.first().copied())
            .unwrap_or_else(|| peer.ip());
        Client {
            peer,
            ip: canonical(ip),
            via_proxy: true,
        }
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(h: &str) -> Option<IpAddr> {
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = h.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    h.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn untrusted_peers_lose_their_forwarding_headers() {
        let mut h = headers(&[
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "1.2.3.4"),
            ("host", "gw.example"),
        ]);
        let peer: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let c = proxies().client(peer, &mut h);
        assert_eq!(c, Client::direct(peer));
        assert!(h.get("x-forwarded-host").is_none());
        assert!(h.get("x-forwarded-proto").is_none());
        assert!(h.get("x-forwarded-for").is_none());
        assert_eq!(h["host"], "gw.example");
    }

    #[test]
    fn trusted_proxies_name_the_client() {
        let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        // A client cannot hide behind an address it prepends itself: the rightmost address
        // that is not a proxy is the one our proxy saw.
        let mut h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-host", "site.example"),
        ]);
        let c = proxies().client(peer, &mut h);
        assert_eq!(c.ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert!(c.via_proxy);
        assert_eq!(h["x-forwarded-host"], "site.example");
        let mut h = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        let c = proxies().client("[::1]:1".parse().unwrap(), &mut h);
        assert_eq!(c.ip, "2001:db8::1".parse::<IpAddr>().unwrap());
        let mut h = headers(&[("x-forwarded-for", "garbage")]);
        assert_eq!(proxies().client(peer, &mut h).ip, peer.ip());
    }

    #[test]
    fn mapped_addresses_match_their_ipv4_network() {
        let ip: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(proxies().contains(ip));
    }
}
