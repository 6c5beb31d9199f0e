//! Parsing a gateway request: the content path, the response format (query beats `Accept`),
//! CAR parameters and the conditional / caching headers.

use cid::Cid;
use http::header::{ACCEPT, CACHE_CONTROL, HOST, IF_NONE_MATCH, IF_RANGE, RANGE};
use http::request::Parts;
use http::{Method, Version};
use percent_encoding::percent_decode_str;

use super::error::GatewayError;
use super::named::{self, NamedPath};
use crate::content::select::{DagScope, EntityBytes};
use crate::content::selector::Selection;

/// CAR response parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CarParams {
    /// `order=unk` was asked for (echoed; blocks still go depth-first).
    pub order_unk: bool,
    /// Blocks to include below the path.
    pub selection: Selection,
}

/// The representation a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFormat {
    /// A single raw block (`application/vnd.ipld.raw`).
    Raw,
    /// A CAR stream (`application/vnd.ipld.car`).
    Car(CarParams),
    /// A TAR of a UnixFS entity.
    Tar,
    /// dag-json.
    DagJson,
    /// dag-cbor.
    DagCbor,
    /// Plain JSON.
    Json,
    /// Plain CBOR.
    Cbor,
    /// A signed IPNS record.
    IpnsRecord,
    /// No explicit format: the deserialized (path gateway) response.
    Deserialized,
}

impl ResponseFormat {
    /// The short name used in metrics and `?format=`.
    pub fn name(&self) -> &'static str {
        match self {
            ResponseFormat::Raw => "raw",
            ResponseFormat::Car(_) => "car",
            ResponseFormat::Tar => "tar",
            ResponseFormat::DagJson => "dag-json",
            ResponseFormat::DagCbor => "dag-cbor",
            ResponseFormat::Json => "json",
            ResponseFormat::Cbor => "cbor",
            ResponseFormat::IpnsRecord => "ipns-record",
            ResponseFormat::Deserialized => "deserialized",
        }
    }
}

/// A parsed `/ipfs/{cid}[/path]` request.
#[derive(Clone, Debug)]
pub struct GatewayRequest {
    /// HEAD (no body).
    pub head: bool,
    /// The content path as the client wrote it (still percent-encoded), for messages, titles
    /// and the CAR `Etag` (headers take [`GatewayRequest::named`]).
    pub content_path: String,
    /// The content path as responses name it (`Ipfs-Uri`, `X-Ipfs-Path`).
    pub named: NamedPath,
    /// Root CID.
    pub root: Cid,
    /// Path segments after the CID, percent-decoded once (an encoded `/` separates segments
    /// too) and with dot segments resolved.
    pub segments: Vec<String>,
    /// The path ended with `/`.
    pub trailing_slash: bool,
    /// Requested representation.
    pub format: ResponseFormat,
    /// `?filename=`.
    pub filename: Option<String>,
    /// `?download=true`.
    pub download: bool,
    /// `Cache-Control: only-if-cached`.
    pub only_if_cached: bool,
    /// `If-None-Match` header value.
    pub if_none_match: Option<String>,
    /// `Range` header value.
    pub range: Option<String>,
    /// `If-Range` header value.
    pub if_range: Option<String>,
    /// The raw query string.
    pub query: Option<String>,
    /// The path as it appears in the client's URL (differs from `content_path` on a subdomain
    /// gateway, where `/a/b` stands for `/ipfs/{cid}/a/b`): the base of redirects and links.
    pub original_path: String,
    /// The request came to a `{cid}.ipfs.{host}` subdomain gateway.
    pub subdomain: bool,
    /// The format was named by `?format=` (not only by `Accept`).
    pub format_from_query: bool,
    /// `Accept` lists `text/html` (a browser navigating).
    pub accept_html: bool,
    /// Where `/ipfs/{cid}` links in generated pages work: `""` on the path gateway (this
    /// origin), `//{gateway host}` on a subdomain gateway (whose own paths are inside one CID),
    /// `None` on a DNSLink site, where no such host is known.
    pub cid_origin: Option<String>,
    /// An access token the client sent (`Authorization: Bearer …` or `?token=…`), for a
    /// dedicated gateway.
    pub access_token: Option<String>,
}

fn bad(msg: impl Into<String>) -> GatewayError {
    GatewayError::BadRequest(msg.into())
}

fn header_str(parts: &Parts, name: http::header::HeaderName) -> Result<Option<&str>, GatewayError> {
    match parts.headers.get(&name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| bad(format!("header {name} is not valid ASCII"))),
    }
}

/// Refuses requests whose host is missing or ambiguous: the host picks the site (subdomain
/// gateway, DNSLink), so a request that names two must not reach a cache or a router that might
/// read the other one. RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host header (400
/// otherwise). A Host that differs from the authority of the target (HTTP/1.1 absolute form,
/// HTTP/2 `:authority`) is refused too, as RFC 9113 §8.3.1 suggests.
pub fn check_host(parts: &Parts) -> Result<(), GatewayError> {
    check_host_of(&parts.headers, &parts.uri, parts.version)
}

/// [`check_host`] of a request given by its parts.
pub fn check_host_of(
    headers: &http::HeaderMap,
    uri: &http::Uri,
    version: Version,
) -> Result<(), GatewayError> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    match (host, uri.authority()) {
        (None, _) if version == Version::HTTP_11 => Err(bad("missing Host header")),
        (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) => Err(
            bad("the Host header and the request target name different hosts"),
        ),
        _ => Ok(()),
    }
}

/// Parses a `/ipfs/...` request.
pub fn parse(parts: &Parts) -> Result<GatewayRequest, GatewayError> {
    parse_path(parts, parts.uri.path(), false)
}

/// Parses a request whose content path is `path` (the URL's own path, or the `/ipfs/{cid}/...`
/// a subdomain host stands for).
pub fn parse_path(
    parts: &Parts,
    path: &str,
    subdomain: bool,
) -> Result<GatewayRequest, GatewayError> {
    let head = parts.method == Method::HEAD;
    let rest = path
        .strip_prefix("/ipfs/")
        .ok_or_else(|| bad("path must start with /ipfs/{cid}"))?;
    let (cid_str, below) = named::split_root(rest);
    if cid_str.is_empty() {
        return Err(bad("missing CID after /ipfs/"));
    }
    let cid_str = decode_segment(cid_str)?;
    let root = Cid::try_from(cid_str.as_str())
        .map_err(|e| bad(format!("invalid CID {cid_str:?}: {e}")))?;
    let (segments, trailing_slash) = named::content_segments(&below)?;

    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    let accept = header_str(parts, ACCEPT)?;
    let named_by_query = q("format").is_some();
    let accept_html = accept.is_some_and(|a| a.to_ascii_lowercase().contains("text/html"));
    let format = requested_format(q("format"), accept)?;
    let format = match format {
        ResponseFormat::Car(p) => ResponseFormat::Car(car_query_params(p, &q)?),
        other => other,
    };

    let cache_control = header_str(parts, CACHE_CONTROL)?.unwrap_or("");
    let only_if_cached = cache_control
        .split(',')
        .any(|d| d.trim().eq_ignore_ascii_case("only-if-cached"));

    Ok(GatewayRequest {
        head,
        content_path: path.to_string(),
        named: NamedPath::ipfs(&cid_str, &root, &segments, trailing_slash),
        root,
        segments,
        trailing_slash,
        format,
        filename: q("filename").map(listing_filename),
        download: q("download") == Some("true"),
        only_if_cached,
        if_none_match: header_str(parts, IF_NONE_MATCH)?.map(str::to_string),
        range: header_str(parts, RANGE)?.map(str::to_string),
        if_range: header_str(parts, IF_RANGE)?.map(str::to_string),
        query: parts.uri.query().map(str::to_string),
        original_path: parts.uri.path().to_string(),
        subdomain,
        format_from_query: named_by_query,
        accept_html,
        cid_origin: (!subdomain).then(String::new),
        access_token: access_token(parts, q("token")),
    })
}

/// The access token of a request read straight from its head (for checks made before the
/// request is parsed): `Authorization: Bearer …`, else `?token=…`.
pub fn token_of(parts: &Parts) -> Option<String> {
    let query: Option<String> = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    access_token(parts, query.as_deref())
}

/// The access token of a request: `Authorization: Bearer …`, else `?token=…`.
fn access_token(parts: &Parts, query: Option<&str>) -> Option<String> {
    let header = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once([' ', '\t']))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    header
        .or(query)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// `?filename=` as the client meant it. Directory listings (ours, and the reference gateway's,
/// which the conformance suite pins down as `?filename=file-%25C5%25BA…`) escape the name as a
/// path segment and then as a query value, so a once-decoded value may still be the escaped
/// name. It is decoded again only when it is exactly that escaping of some name (escaping
/// the decoded name gives it back), which a name typed by hand almost never is; otherwise the
/// `Content-Disposition` of a click in a listing would name `file-%C5%BA%C5%82.txt`.
fn listing_filename(value: &str) -> String {
    match percent_decode_str(value).decode_utf8() {
        Ok(name) if name != value && crate::path_encoding::encode_segment(&name) == value => {
            name.into_owned()
        }
        _ => value.to_string(),
    }
}

/// The representation asked for by `?format=` (which wins) and `Accept`.
fn requested_format(
    query_format: Option<&str>,
    accept: Option<&str>,
) -> Result<ResponseFormat, GatewayError> {
    let from_accept = match accept {
        Some(a) => format_from_accept(a)?,
        None => None,
    };
    Ok(match query_format {
        Some(f) => {
            let wanted = format_from_query(f)?;
            // The query names the format; CAR parameters still come from an Accept that agrees.
            match (&wanted, &from_accept) {
                (ResponseFormat::Car(_), Some(ResponseFormat::Car(p))) => ResponseFormat::Car(*p),
                _ => wanted,
            }
        }
        None => from_accept.unwrap_or(ResponseFormat::Deserialized),
    })
}

/// Whether the request asks for the signed IPNS record itself rather than what it points at.
pub fn wants_ipns_record(parts: &Parts) -> Result<bool, GatewayError> {
    let query_format = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "format")
            .map(|(_, v)| v.into_owned())
    });
    let format = requested_format(query_format.as_deref(), header_str(parts, ACCEPT)?)?;
    Ok(format == ResponseFormat::IpnsRecord)
}

fn decode_segment(s: &str) -> Result<String, GatewayError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| bad("path is not valid UTF-8 after percent-decoding"))
}

fn format_from_query(f: &str) -> Result<ResponseFormat, GatewayError> {
    Ok(match f {
        "raw" => ResponseFormat::Raw,
        "car" => ResponseFormat::Car(CarParams::default()),
        "tar" => ResponseFormat::Tar,
        "dag-json" => ResponseFormat::DagJson,
        "dag-cbor" => ResponseFormat::DagCbor,
        "json" => ResponseFormat::Json,
        "cbor" => ResponseFormat::Cbor,
        "ipns-record" => ResponseFormat::IpnsRecord,
        other => return Err(bad(format!("unsupported format {other:?}"))),
    })
}

/// Picks the first explicit gateway media type from `Accept`. Browser types (`text/html`,
/// `*/*`, images …) mean "the deserialized response"; a list made only of unknown IPLD / IPFS
/// vendor types cannot be served at all (406).
fn format_from_accept(accept: &str) -> Result<Option<ResponseFormat>, GatewayError> {
    let mut vendor_only = true;
    let mut any = false;
    for entry in accept.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mime: mime::Mime = entry.parse().map_err(|e| {
            bad(format!(
                "error while processing the Accept header: {entry:?}: {e}"
            ))
        })?;
        if mime
            .get_param("q")
            .map(|q| q.as_str().trim())
            .is_some_and(|q| q.parse::<f32>() == Ok(0.0))
        {
            continue;
        }
        any = true;
        let essence = mime.essence_str().to_ascii_lowercase();
        let format = match essence.as_str() {
            "application/vnd.ipld.raw" => ResponseFormat::Raw,
            "application/vnd.ipld.car" => ResponseFormat::Car(car_accept_params(&mime)?),
            "application/x-tar" => ResponseFormat::Tar,
            "application/vnd.ipld.dag-json" => ResponseFormat::DagJson,
            "application/vnd.ipld.dag-cbor" => ResponseFormat::DagCbor,
            "application/json" => ResponseFormat::Json,
            "application/cbor" => ResponseFormat::Cbor,
            "application/vnd.ipfs.ipns-record" => ResponseFormat::IpnsRecord,
            other => {
                if !(other.starts_with("application/vnd.ipld.")
                    || other.starts_with("application/vnd.ipfs."))
                {
                    vendor_only = false;
                }
                continue;
            }
        };
        return Ok(Some(format));
    }
    if any && vendor_only {
        return Err(GatewayError::NotAcceptable(format!(
            "none of the media types in Accept ({accept}) can be produced"
        )));
    }
    Ok(None)
}

fn car_accept_params(mime: &mime::Mime) -> Result<CarParams, GatewayError> {
    let mut p = CarParams::default();
    let get = |name: &str| mime.get_param(name).map(|v| v.as_str().to_string());
    apply_car_param(&mut p, "version", get("version").as_deref())?;
    apply_car_param(&mut p, "order", get("order").as_deref())?;
    apply_car_param(&mut p, "dups", get("dups").as_deref())?;
    Ok(p)
}

fn apply_car_param(p: &mut CarParams, name: &str, value: Option<&str>) -> Result<(), GatewayError> {
    let Some(v) = value else { return Ok(()) };
    match (name, v) {
        ("version", "1") => {}
        ("version", _) => {
            return Err(bad(
                "unsupported application/vnd.ipld.car version: only version=1 is supported",
            ))
        }
        ("order", "dfs") => p.order_unk = false,
        ("order", "unk") => p.order_unk = true,
        ("dups", "y") => p.selection.dups = true,
        ("dups", "n") => p.selection.dups = false,
        _ => {
            return Err(bad(format!(
                "unsupported application/vnd.ipld.car {name} parameter: {v:?}"
            )))
        }
    }
    Ok(())
}

fn car_query_params<'a>(
    mut p: CarParams,
    q: &impl Fn(&str) -> Option<&'a str>,
) -> Result<CarParams, GatewayError> {
    apply_car_param(&mut p, "version", q("car-version"))?;
    apply_car_param(&mut p, "order", q("car-order"))?;
    apply_car_param(&mut p, "dups", q("car-dups"))?;
    if let Some(scope) = q("dag-scope") {
        p.selection.scope = match scope {
            "block" => DagScope::Block,
            "entity" => DagScope::Entity,
            "all" => DagScope::All,
            other => {
                return Err(bad(format!(
                    "unsupported application/vnd.ipld.car dag-scope URL parameter: {other:?}"
                )))
            }
        };
    }
    if let Some(eb) = q("entity-bytes") {
        p.selection.entity_bytes = Some(parse_entity_bytes(eb)?);
    }
    Ok(p)
}

/// Parses `from:to` where `from` is an integer and `to` an integer or `*`.
pub fn parse_entity_bytes(s: &str) -> Result<EntityBytes, GatewayError> {
    let err = || {
        bad(format!(
            "invalid application/vnd.ipld.car entity-bytes URL parameter: {s:?}"
        ))
    };
    let (from, to) = s.split_once(':').ok_or_else(err)?;
    let from: i64 = from.parse().map_err(|_| err())?;
    let to = match to {
        "*" => None,
        t => Some(t.parse::<i64>().map_err(|_| err())?),
    };
    if let Some(t) = to {
        // Both bounds on the same side of zero must be in order; mixed signs depend on the size.
        if (from >= 0) == (t >= 0) && from > t {
            return Err(err());
        }
    }
    Ok(EntityBytes { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const CID: &str = "bafkreihhpc5y2pqvl5rbe5uuyhqjouybfs3rvlmisccgzue2kkt5zq6upq";

    #[test]
    fn query_format_wins_but_car_params_come_from_agreeing_accept() {
        let r = parse(&parts(
            &format!("/ipfs/{CID}?format=car"),
            &[(
                "accept",
                "application/vnd.ipld.car; version=1; order=dfs; dups=y",
            )],
        ))
        .unwrap();
        match r.format {
            ResponseFormat::Car(p) => assert!(p.selection.dups),
            f => panic!("{f:?}"),
        }
        let r = parse(&parts(
            &format!("/ipfs/{CID}?format=raw"),
            &[("accept", "application/vnd.ipld.car")],
        ))
        .unwrap();
        assert_eq!(r.format, ResponseFormat::Raw);
    }

    #[test]
    fn accept_picks_first_explicit_type() {
        let r = parse(&parts(
            &format!("/ipfs/{CID}"),
            &[("accept", "text/html, application/vnd.ipld.raw;q=0.9")],
        ))
        .unwrap();
        assert_eq!(r.format, ResponseFormat::Raw);
        let r = parse(&parts(
            &format!("/ipfs/{CID}"),
            &[("accept", "text/html,*/*;q=0.8")],
        ))
        .unwrap();
        assert_eq!(r.format, ResponseFormat::Deserialized);
        let e = parse(&parts(
            &format!("/ipfs/{CID}"),
            &[("accept", "application/vnd.ipld.foo")],
        ))
        .unwrap_err();
        assert_eq!(e.status(), 406);
    }

    #[test]
    fn bad_inputs_are_400() {
        for (uri, accept) in [
            ("/ipfs/notacid", ""),
            ("/ipfs/", ""),
            (&*format!("/ipfs/{CID}?format=zip"), ""),
            (&*format!("/ipfs/{CID}?format=car&dag-scope=nope"), ""),
            (&*format!("/ipfs/{CID}?format=car&dag-scope="), ""),
            (&*format!("/ipfs/{CID}?format=car&entity-bytes=5:2"), ""),
            (&*format!("/ipfs/{CID}?format=car&entity-bytes=*:2"), ""),
            (&*format!("/ipfs/{CID}/a/../.."), ""),
            (&*format!("/ipfs/{CID}/%2e%2e"), ""),
            (&*format!("/ipfs/{CID}/%ff"), ""),
            (
                &*format!("/ipfs/{CID}"),
                "application/vnd.ipld.car; version=2",
            ),
            (
                &*format!("/ipfs/{CID}"),
                "application/vnd.ipld.car; order=bfs",
            ),
        ] {
            let h: Vec<(&str, &str)> = if accept.is_empty() {
                vec![]
            } else {
                vec![("accept", accept)]
            };
            let e = parse(&parts(uri, &h)).unwrap_err();
            assert_eq!(e.status(), 400, "{uri} {accept}");
        }
    }

    #[test]
    fn segments_are_decoded_and_flags_read() {
        let r = parse(&parts(
            &format!("/ipfs/{CID}/a%20b/c/?filename=x.bin&download=true"),
            &[("cache-control", "max-age=0, only-if-cached")],
        ))
        .unwrap();
        assert_eq!(r.segments, vec!["a b", "c"]);
        assert!(r.trailing_slash && r.download && r.only_if_cached);
        assert_eq!(r.filename.as_deref(), Some("x.bin"));
        assert_eq!(r.content_path, format!("/ipfs/{CID}/a%20b/c/"));
    }

    #[test]
    fn listing_filenames_escaped_twice_are_decoded_once_more() {
        let filename = |q: &str| {
            parse(&parts(&format!("/ipfs/{CID}?filename={q}"), &[]))
                .unwrap()
                .filename
                .unwrap()
        };
        // What a listing link sends (escaped as a segment, then as a query value).
        assert_eq!(filename("file-%25C5%25BA%25C5%2582.txt"), "file-źł.txt");
        assert_eq!(filename("100%2525.txt"), "100%.txt");
        assert_eq!(filename("a%2Bb%20c.txt"), "a+b c.txt");
        // Escaped once, or not an escaping at all: as decoded.
        assert_eq!(filename("file-%C5%BA.txt"), "file-ź.txt");
        assert_eq!(filename("100%25.txt"), "100%.txt");
        assert_eq!(filename("%2541%2B"), "%41+");
    }

    #[test]
    fn hosts_must_be_one_and_agree_with_the_target() {
        let req = |uri: &str, version: Version, hosts: &[&str]| {
            let mut b = http::Request::builder().uri(uri).version(version);
            for h in hosts {
                b = b.header("host", *h);
            }
            b.body(()).unwrap().into_parts().0
        };
        let v11 = Version::HTTP_11;
        assert!(check_host(&req("/ipfs/x", v11, &["a"])).is_ok());
        assert!(check_host(&req("/ipfs/x", Version::HTTP_10, &[])).is_ok());
        assert!(check_host(&req("http://A:80/ipfs/x", v11, &["a:80"])).is_ok());
        // HTTP/2: the authority alone, or a Host that agrees with it.
        assert!(check_host(&req("http://a/", Version::HTTP_2, &[])).is_ok());
        assert!(check_host(&req("http://a/", Version::HTTP_2, &["a"])).is_ok());
        for (uri, version, hosts) in [
            ("/ipfs/x", v11, &[][..]),
            ("http://a/ipfs/x", v11, &[][..]),
            ("/ipfs/x", v11, &["a", "b"][..]),
            ("/ipfs/x", v11, &["a", "a"][..]),
            ("http://evil.example/ipfs/x", v11, &["a"][..]),
            ("http://a/", Version::HTTP_2, &["b.ipfs.localhost"][..]),
        ] {
            let e = check_host(&req(uri, version, hosts)).unwrap_err();
            assert_eq!(e.status(), 400, "{uri} {version:?} {hosts:?}");
        }
    }

    #[test]
    fn entity_bytes_forms() {
        assert_eq!(
            parse_entity_bytes("0:*").unwrap(),
            EntityBytes { from: 0, to: None }
        );
        assert_eq!(
            parse_entity_bytes("-5:-1").unwrap(),
            EntityBytes {
                from: -5,
                to: Some(-1)
            }
        );
        assert!(parse_entity_bytes("1").is_err());
        assert!(parse_entity_bytes("-1:-5").is_err());
    }
}
