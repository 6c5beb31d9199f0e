//! Subdomain gateway (ipfs/specs subdomain-gateway.md): `{cid}.ipfs.{host}` serves the content
//! with an origin of its own, and path requests to such a host are redirected there.

use cid::Cid;
use multibase::Base;

use super::error::GatewayError;
use crate::ipld::DAG_PB;

/// Longest DNS label.
const MAX_LABEL: usize = 63;

/// What the Host header means for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum HostRoute {
    /// Not a subdomain gateway host: plain path gateway.
    Path,
    /// A path request on a subdomain gateway host, or a non-canonical label: go here instead.
    Redirect(String),
    /// `{cid}.ipfs.{host}`: the request path is inside this CID.
    Content(Cid),
    /// `{name}.ipns.{host}`: the request path is inside what this IPNS name or DNSLink domain
    /// (decoded from its label) points at.
    Name(String),
}

/// `{label}` of a host `{label}{kind}{gw}` (kind `.ipfs.` or `.ipns.`), compared without
/// allocating; `None` for any other host.
fn label_under<'h>(hostname: &'h str, kind: &str, gw: &str) -> Option<&'h str> {
    let suffix_len = gw.len() + kind.len();
    (hostname.len() > suffix_len
        && hostname.is_char_boundary(hostname.len() - suffix_len)
        && hostname.is_char_boundary(hostname.len() - gw.len())
        && hostname[hostname.len() - gw.len()..].eq_ignore_ascii_case(gw)
        && hostname[hostname.len() - suffix_len..hostname.len() - gw.len()]
            .eq_ignore_ascii_case(kind))
    .then(|| &hostname[..hostname.len() - suffix_len])
}

/// The DNS label of an IPNS name or DNSLink domain: a libp2p-key CID in base36, or the domain
/// with `-` doubled and `.` as `-`; `None` for anything else.
fn ipns_label(name: &str) -> Option<String> {
    match crate::ipns::IpnsName::parse(name) {
        Ok(n) => Some(n.to_cid_string()),
        Err(crate::ipns::name::NameError::WrongCodec { fixed, .. }) => Some(fixed.to_cid_string()),
        Err(_) if crate::ipns::is_dns_name(name) => {
            Some(crate::ipns::dns_label_of_domain(&name.to_ascii_lowercase()))
        }
        Err(_) => None,
    }
}

/// A path segment percent-decoded, as the router will read it (`None` if not UTF-8).
fn decoded(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The DNS label form of a CID: CIDv1 in base32, or base36 when base32 is too long.
pub fn dns_label(cid: &Cid) -> Result<String, GatewayError> {
    let v1 = if cid.version() == cid::Version::V0 {
        Cid::new_v1(DAG_PB, *cid.hash())
    } else {
        *cid
    };
    let b32 = v1
        .to_string_of_base(Base::Base32Lower)
        .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    if b32.len() <= MAX_LABEL {
        return Ok(b32);
    }
    let b36 = v1
        .to_string_of_base(Base::Base36Lower)
        .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    if b36.len() <= MAX_LABEL {
        return Ok(b36);
    }
    Err(GatewayError::BadRequest(format!(
        "CID incompatible with DNS label length limit of 63: {cid}"
    )))
}

/// The path gateway behind a subdomain host: `{gw}[:port]` of a `{label}.ipfs.{gw}[:port]` or
/// `{label}.ipns.{gw}[:port]` host, where `/ipfs/{cid}` links work (they redirect to the CID's
/// own subdomain); `None` for any other host.
pub fn gateway_of(hosts: &[String], host: &str) -> Option<String> {
    let hostname = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let port = &host[hostname.len()..];
    hosts.iter().find_map(|gw| {
        let under =
            label_under(hostname, ".ipfs.", gw).or_else(|| label_under(hostname, ".ipns.", gw));
        under.map(|_| format!("{}{port}", &hostname[hostname.len() - gw.len()..]))
    })
}

/// Routes a request by its host. `host` may carry a port; `path` and `query` are the URL's.
pub fn route(
    hosts: &[String],
    host: &str,
    scheme: &str,
    path: &str,
    query: Option<&str>,
) -> Result<HostRoute, GatewayError> {
    let hostname = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    // IP hosts are always path gateways; this is also the hot path, so no allocation before it.
    // So is a target that is no path (`*`, authority form): a redirect would glue it to the
    // port (`http://{cid}.ipfs.localhost:*`), and there is no content path inside it.
    if hostname.parse::<std::net::IpAddr>().is_ok()
        || hostname.starts_with('[')
        || !path.starts_with('/')
    {
        return Ok(HostRoute::Path);
    }
    let q = || query.map(|q| format!("?{q}")).unwrap_or_default();
    for gw in hosts {
        if hostname.eq_ignore_ascii_case(gw) {
            if let Some(rest) = path.strip_prefix("/ipns/") {
                let (name, tail) = super::named::split_root(rest);
                let tail = tail.strip_prefix('/').unwrap_or(&tail);
                let Some(label) = decoded(name).and_then(|n| ipns_label(&n)) else {
                    return Ok(HostRoute::Path);
                };
                let port = &host[hostname.len()..];
                let gw = gw.to_ascii_lowercase();
                return Ok(HostRoute::Redirect(format!(
                    "{scheme}://{label}.ipns.{gw}{port}/{tail}{}",
                    q()
                )));
            }
            let Some(rest) = path.strip_prefix("/ipfs/") else {
                return Ok(HostRoute::Path);
            };
            let (cid_str, tail) = super::named::split_root(rest);
            let tail = tail.strip_prefix('/').unwrap_or(&tail);
            let Some(Ok(cid)) = decoded(cid_str).map(|c| Cid::try_from(c.as_str())) else {
                return Ok(HostRoute::Path);
            };
            let label = dns_label(&cid)?;
            let port = &host[hostname.len()..];
            let gw = gw.to_ascii_lowercase();
            return Ok(HostRoute::Redirect(format!(
                "{scheme}://{label}.ipfs.{gw}{port}/{tail}{}",
                q()
            )));
        }
        if let Some(raw) = label_under(hostname, ".ipns.", gw) {
            let label = raw.to_ascii_lowercase();
            // A name with dots is the DNSLink domain itself (`docs.ipfs.tech.ipns.{gw}`, fine
            // without TLS); only a single label is an IPNS key or an inlined domain.
            if label.contains('.') {
                if !crate::ipns::is_dns_name(&label) {
                    return Err(GatewayError::BadRequest(format!(
                        "{raw:?} in the host is neither an IPNS name nor a DNSLink domain"
                    )));
                }
                return Ok(HostRoute::Name(label.trim_end_matches('.').to_string()));
            }
            return Ok(match crate::ipns::IpnsName::parse(&label) {
                Ok(name) => {
                    let canonical = name.to_cid_string();
                    if canonical != raw {
                        let port = &host[hostname.len()..];
                        let gw = gw.to_ascii_lowercase();
                        HostRoute::Redirect(format!(
                            "{scheme}://{canonical}.ipns.{gw}{port}{path}{}",
                            q()
                        ))
                    } else {
                        HostRoute::Name(canonical)
                    }
                }
                // Older tools wrote keys as dag-pb CIDs: the same key, one spelling.
                Err(crate::ipns::name::NameError::WrongCodec { fixed, .. }) => {
                    let port = &host[hostname.len()..];
                    let gw = gw.to_ascii_lowercase();
                    HostRoute::Redirect(format!(
                        "{scheme}://{}.ipns.{gw}{port}{path}{}",
                        fixed.to_cid_string(),
                        q()
                    ))
                }
                Err(_) => HostRoute::Name(crate::ipns::domain_of_dns_label(&label)),
            });
        }
        if let Some(raw) = label_under(hostname, ".ipfs.", gw) {
            let label = raw.to_ascii_lowercase();
            let cid = Cid::try_from(label.as_str()).map_err(|e| {
                GatewayError::BadRequest(format!("invalid CID in host {label:?}: {e}"))
            })?;
            let canonical = dns_label(&cid)?;
            if canonical != label || raw != label {
                let port = &host[hostname.len()..];
                let gw = gw.to_ascii_lowercase();
                return Ok(HostRoute::Redirect(format!(
                    "{scheme}://{canonical}.ipfs.{gw}{port}{path}{}",
                    q()
                )));
            }
            return Ok(HostRoute::Content(cid));
        }
    }
    Ok(HostRoute::Path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_gateway_of_a_subdomain_host_keeps_its_port() {
        let hosts = vec!["localhost".to_string(), "example.com".to_string()];
        assert_eq!(
            gateway_of(&hosts, "bafy.ipfs.localhost:8080").as_deref(),
            Some("localhost:8080")
        );
        assert_eq!(
            gateway_of(&hosts, "k51.ipns.example.com").as_deref(),
            Some("example.com")
        );
        assert_eq!(gateway_of(&hosts, "localhost:8080"), None);
        assert_eq!(gateway_of(&hosts, "docs.example.org"), None);
    }

    fn hosts() -> Vec<String> {
        vec!["localhost".into(), "example.com".into()]
    }

    #[test]
    fn path_requests_redirect_to_the_subdomain() {
        let v1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am";
        assert_eq!(
            route(
                &hosts(),
                "example.com",
                "http",
                &format!("/ipfs/{v1}/a/b"),
                Some("x=1")
            )
            .unwrap(),
            HostRoute::Redirect(format!("http://{v1}.ipfs.example.com/a/b?x=1"))
        );
        assert_eq!(
            route(
                &hosts(),
                "localhost:8080",
                "https",
                &format!("/ipfs/{v1}"),
                None
            )
            .unwrap(),
            HostRoute::Redirect(format!("https://{v1}.ipfs.localhost:8080/"))
        );
        // CIDv0 becomes base32 CIDv1 (dag-pb).
        let r = route(
            &hosts(),
            "example.com",
            "http",
            "/ipfs/QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN/",
            None,
        )
        .unwrap();
        assert_eq!(
            r,
            HostRoute::Redirect("http://bafybeiffndsajwhk3lwjewwdxqntmjm4b5wxaaanokonsggenkbw6slwk4.ipfs.example.com/".into())
        );
        assert_eq!(
            route(
                &hosts(),
                "127.0.0.1:8080",
                "http",
                &format!("/ipfs/{v1}"),
                None
            )
            .unwrap(),
            HostRoute::Path
        );
    }

    #[test]
    fn subdomain_hosts_serve_content_and_canonicalise() {
        let v1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am";
        match route(
            &hosts(),
            &format!("{v1}.ipfs.example.com"),
            "http",
            "/",
            None,
        )
        .unwrap()
        {
            HostRoute::Content(c) => assert_eq!(c.to_string(), v1),
            other => panic!("{other:?}"),
        }
        let too_long = "bafkrgqhhyivzstcz3hhswshfjgy6ertgmnqeleynhwt4dlfsthi4hn7zgh4uvlsb5xncykzapi3ocd4lzogukir6ksdy6wzrnz6ohnv4aglcs";
        let e = route(
            &hosts(),
            "example.com",
            "http",
            &format!("/ipfs/{too_long}"),
            None,
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("DNS label length limit of 63"));
    }

    #[test]
    fn targets_that_are_not_paths_are_not_routed() {
        // Found by the `request` fuzz target: `GET *` with a subdomain host redirected to
        // `http://{cid}.ipfs.localhost:*`.
        let v1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am";
        for host in [format!("{v1}.ipfs.localhost:"), "localhost".to_string()] {
            assert_eq!(
                route(&hosts(), &host, "http", "*", None).unwrap(),
                HostRoute::Path
            );
        }
    }

    #[test]
    fn dnslink_names_with_dots_are_themselves() {
        // The upstream conformance suite asks for `{fqdn}.ipns.{gw}` as well as the inlined label.
        assert_eq!(
            route(
                &hosts(),
                "dnslink-test.example.org.ipns.localhost:8080",
                "http",
                "/",
                None
            )
            .unwrap(),
            HostRoute::Name("dnslink-test.example.org".into())
        );
        assert_eq!(
            route(
                &hosts(),
                "dnslink--test-example-org.ipns.localhost",
                "http",
                "/",
                None
            )
            .unwrap(),
            HostRoute::Name("dnslink-test.example.org".into())
        );
        assert_eq!(
            route(&hosts(), "a..b.ipns.localhost", "http", "/", None)
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn ipns_names_are_redirected_only_as_dns_names() {
        // A backslash would make browsers read the text before it as the host.
        for name in [
            "3627730126\\.a",
            "evil.com:8080\\.a",
            "a@b.c",
            "-a.b",
            "no-dot",
        ] {
            assert_eq!(
                route(
                    &hosts(),
                    "example.com",
                    "http",
                    &format!("/ipns/{name}/x"),
                    None
                )
                .unwrap(),
                HostRoute::Path,
                "{name}"
            );
        }
        assert_eq!(
            route(
                &hosts(),
                "example.com",
                "http",
                "/ipns/en.wikipedia-on-ipfs.org/",
                None
            )
            .unwrap(),
            HostRoute::Redirect("http://en-wikipedia--on--ipfs-org.ipns.example.com/".into())
        );
        // Percent-encoding does not hide a name from its own origin.
        assert_eq!(
            route(
                &hosts(),
                "example.com",
                "http",
                "/ipns/example%2Eorg/",
                None
            )
            .unwrap(),
            HostRoute::Redirect("http://example-org.ipns.example.com/".into())
        );
    }
}
