//! DNS names, domain suffixes and resolver URLs as an operator writes them: pure parsing, with
//! nothing of cidgate above it, shared by the configuration (which names a bad value when it is
//! loaded) and the DNSLink resolver (which uses the parsed values).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

/// Path of DNS-over-HTTPS queries when the URL names none (RFC 8484's example).
pub const DOH_PATH: &str = "/dns-query";

/// Dot-separated labels of 1 to 63 letters, digits and inner hyphens, 253 characters at most
/// (no dot required).
pub fn valid_labels(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A DNS name of letters, digits and hyphens in dot-separated labels of 1 to 63 characters,
/// with at least one dot and a top-level label that is not all digits (an IPv4 address is not
/// a name). Anything else (`\`, `:`, `@`, `..`, non-ASCII) is refused before it is looked up
/// or turned into a redirect that could lead to another host.
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.contains('.')
        && valid_labels(name)
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

/// The domains that may be served as DNSLink sites (`dnslink.allowed`).
#[derive(Clone, Debug, Default)]
pub struct Allowed {
    all: bool,
    domains: HashSet<String>,
    /// Suffixes with their leading dot (`.example.org`).
    suffixes: Vec<String>,
}

impl Allowed {
    /// Parses `"*"`, domains and `.suffix` entries; an error names the bad entry.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut out = Allowed::default();
        for entry in entries {
            let e = entry.trim().trim_end_matches('.').to_ascii_lowercase();
            if e == "*" {
                out.all = true;
            } else if let Some(suffix) = e.strip_prefix('.') {
                if !valid_labels(suffix) {
                    return Err(format!("{entry:?} is not a .suffix of DNS labels"));
                }
                out.suffixes.push(format!(".{suffix}"));
            } else if is_dns_name(&e) {
                out.domains.insert(e);
            } else {
                return Err(format!(
                    "{entry:?} is neither \"*\", a domain name nor a .suffix"
                ));
            }
        }
        Ok(out)
    }

    /// Whether nothing is allowed (DNSLink over DNS is off).
    pub fn is_empty(&self) -> bool {
        !self.all && self.domains.is_empty() && self.suffixes.is_empty()
    }

    /// Whether `domain` (lowercase, without a trailing dot) may be served and looked up.
    pub fn allows(&self, domain: &str) -> bool {
        self.all
            || self.domains.contains(domain)
            || self.suffixes.iter().any(|s| domain.ends_with(s.as_str()))
    }
}

/// Where the queries of one suffix go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `/etc/resolv.conf`.
    System,
    /// Plain DNS over UDP (TCP when an answer is truncated).
    Udp(SocketAddr),
    /// DNS over HTTPS (RFC 8484) on HTTP/2.
    Https {
        /// Host of the URL: the TLS server name, and resolved once if it is not an IP.
        host: String,
        port: u16,
        path: String,
    },
}

/// Parses a `dnslink.resolvers` entry: `suffix` (`"."`, `eth`, `.example.org.`) and
/// `https://host[:port][/path]` or `udp://IP[:PORT]`. Returns the suffix, lowercase and without
/// dots at either end (empty for the root), and where its queries go.
pub fn parse_resolver(suffix: &str, url: &str) -> Result<(String, Transport), String> {
    let trimmed = suffix.trim().trim_matches('.').to_ascii_lowercase();
    if !trimmed.is_empty() && !valid_labels(&trimmed) {
        return Err(format!(
            "{suffix:?} is not a domain suffix (\".\" stands for every domain)"
        ));
    }
    let transport = if let Some(rest) = url.strip_prefix("udp://") {
        let rest = rest.trim_end_matches('/');
        let addr = rest
            .parse::<SocketAddr>()
            .or_else(|_| rest.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| format!("{url:?}: a udp:// resolver is an IP address and port"))?;
        Transport::Udp(addr)
    } else if url.starts_with("https://") {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{url:?} has no host"))?;
        let path = match uri.path() {
            "" | "/" => DOH_PATH.to_string(),
            p => p.to_string(),
        };
        Transport::Https {
            host,
            port: uri.port_u16().unwrap_or(443),
            path,
        }
    } else {
        return Err(format!(
            "{url:?}: a resolver is https://host/dns-query (DNS over HTTPS) or udp://IP:PORT"
        ));
    };
    Ok((trimmed, transport))
}
