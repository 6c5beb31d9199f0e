//! `/ipns/{name}[/path]`: content behind a mutable name (an IPNS record or a DNSLink domain),
//! and `?format=ipns-record` / `Accept: application/vnd.ipfs.ipns-record`, the signed record
//! itself (a trustless response: the client verifies it against the name).

use http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use http::request::Parts;
use http::{HeaderValue, Response};

use super::error::GatewayError;
use super::headers::{set, X_IPFS_PATH, X_IPFS_ROOTS};
use super::named::NamedPath;
use super::request::{self, wants_ipns_record};
use super::{body, cors, unixfs_redirects, Body, Gateway};
use crate::ipns::{DnslinkError, IpnsName, NameResolver, Resolution, ResolveError, RoutingError};

/// Media type of a signed IPNS record.
pub const IPNS_RECORD_TYPE: &str = "application/vnd.ipfs.ipns-record";

impl From<ResolveError> for GatewayError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Invalid(_) => GatewayError::BadRequest(e.to_string()),
            // A name is resolved or not; there is no "nothing at this path" for it. Gateways
            // answer an unresolvable name (no valid record anywhere) with a 5xx, so do we.
            ResolveError::Unknown(_) => GatewayError::BadGateway(e.to_string()),
            ResolveError::Record { .. }
            | ResolveError::BadValue { .. }
            | ResolveError::TooDeep(_) => GatewayError::BadGateway(e.to_string()),
            ResolveError::Stale { .. } => GatewayError::BadRequest(e.to_string()),
            ResolveError::Store(_) => GatewayError::Unavailable(e.to_string()),
            // A domain without DNSLink is no site: nothing is at that path. One this gateway
            // does not serve is refused the same way (it was not even looked up).
            ResolveError::Dnslink(DnslinkError::NotFound(_) | DnslinkError::NotAllowed(_)) => {
                GatewayError::NotFound(e.to_string())
            }
            ResolveError::Routing(RoutingError::Timeout(_)) => GatewayError::Timeout(e.to_string()),
            // A DNS server that is down does not refuse over UDP: it just never answers. So a
            // resolver silent for `dnslink.timeout` is a failed upstream, like one that errs.
            ResolveError::Dnslink(
                DnslinkError::Ambiguous(_) | DnslinkError::Failed(_) | DnslinkError::Timeout(_),
            )
            | ResolveError::Routing(RoutingError::Failed(_) | RoutingError::Invalid { .. }) => {
                GatewayError::BadGateway(e.to_string())
            }
        }
    }
}

/// Serves `/ipns/{name}{rest}`; `rest` is the still-encoded path after the name (empty or
/// starting with '/'). `isolated` is true where the name has an origin of its own (a subdomain
/// or DNSLink host), which is where a site's `_redirects` applies. `resolved` is what the name
/// points at when the caller has resolved it already (a DNSLink Host).
pub async fn respond(
    gw: &Gateway,
    names: &NameResolver,
    parts: &Parts,
    name: &str,
    rest: &str,
    isolated: bool,
    resolved: Option<Resolution>,
) -> Result<Response<Body>, GatewayError> {
    // A blocked name is refused before it is resolved (its record and its content too), under
    // the same decoding of its path as the content gets.
    let named = NamedPath::ipns(name, rest)?;
    let (segments, _) = super::named::content_segments(rest)?;
    gw.refuse_ipns(name, &segments)?;
    if wants_ipns_record(parts)? {
        if gw.is_dedicated() {
            // A dedicated gateway hands out records only of names that point at what it serves
            // (or to token holders): it is no relay of other names' records.
            let token = request::token_of(parts);
            let resolution = names.resolve(name).await?;
            let root = resolution
                .path
                .trim_start_matches("/ipfs/")
                .split('/')
                .next()
                .and_then(|c| cid::Cid::try_from(c).ok())
                .ok_or_else(|| {
                    GatewayError::Forbidden(format!(
                        "{name} does not point at content pinned on this gateway"
                    ))
                })?;
            gw.admit_cid(&root, token.as_deref())?;
        }
        let mut resp = record(names, parts, name, rest).await?;
        named.stamp(&mut resp);
        return Ok(resp);
    }
    if !isolated {
        // One spelling per key, the base36 CID (what subdomains need too): a peer ID or any
        // other CID of the same key moves there, with its path and query.
        let canonical = match IpnsName::parse(name) {
            Ok(n) => Some(n.to_cid_string()).filter(|c| c != name),
            Err(crate::ipns::name::NameError::WrongCodec { fixed, .. }) => {
                Some(fixed.to_cid_string())
            }
            Err(_) => None,
        };
        if let Some(canonical) = canonical {
            let query = parts
                .uri
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = http::StatusCode::FOUND;
            named.stamp(&mut resp);
            set(
                resp.headers_mut(),
                http::header::LOCATION,
                &super::headers::same_origin(&format!("/ipns/{canonical}{rest}{query}")),
            );
            return Ok(resp);
        }
    }
    let resolution = match resolved {
        Some(r) => r,
        None => names.resolve(name).await?,
    };
    let site = if isolated {
        // A site's `_redirects` and rewrites are relative to the site's own root, which may be
        // a directory inside the CID the name points at.
        site_root(gw, parts, &resolution.path).await?
    } else {
        resolution.path.clone()
    };
    // The request's own path decides about the trailing slash, not the value's.
    let content_path = format!("{}{rest}", site.trim_end_matches('/'));
    let mut req = request::parse_path(parts, &content_path, isolated)?;
    if isolated {
        req.cid_origin = gw.path_gateway_origin(parts);
    }
    // Headers name the path the client asked for; the CIDs behind it go in X-Ipfs-Roots.
    req.content_path = format!("/ipns/{name}{rest}");
    req.named = named;
    let mut resp = match gw.ipfs(&req).await {
        Err(e) if unixfs_redirects::applies(&req, &e) => {
            unixfs_redirects::respond(gw, &req, e).await?
        }
        other => other?,
    };
    // What a name points at changes: the answer is fresh for the record's TTL, not forever.
    let h = resp.headers_mut();
    if h.contains_key(CACHE_CONTROL) {
        match resolution.ttl {
            Some(ttl) => set(
                h,
                CACHE_CONTROL,
                &format!("public, max-age={}", ttl.as_secs()),
            ),
            None => {
                h.remove(CACHE_CONTROL);
            }
        }
    }
    Ok(resp)
}

/// `/ipfs/{cid}` of the directory an `/ipfs/{root}/a/b` value names.
async fn site_root(gw: &Gateway, head: &Parts, path: &str) -> Result<String, GatewayError> {
    let mut parts = path
        .trim_start_matches("/ipfs/")
        .split('/')
        .filter(|s| !s.is_empty());
    let root = parts.next().unwrap_or_default();
    let segments: Vec<String> = parts.map(str::to_string).collect();
    if segments.is_empty() {
        return Ok(path.to_string());
    }
    let root = cid::Cid::try_from(root)
        .map_err(|e| GatewayError::BadGateway(format!("the name points at {path:?}: {e}")))?;
    // A dedicated gateway reads nothing of a root it does not serve, not even to find a site.
    gw.admit_cid(&root, request::token_of(head).as_deref())?;
    let resolved = gw.resolve(root, &segments).await?;
    Ok(format!("/ipfs/{}", resolved.target))
}

/// The record of `name` (stored, or fetched from the routers), as is.
async fn record(
    names: &NameResolver,
    parts: &Parts,
    name: &str,
    rest: &str,
) -> Result<Response<Body>, GatewayError> {
    let ipns = IpnsName::parse(name).map_err(|e| {
        GatewayError::BadRequest(format!(
            "{name:?} has no IPNS record (only IPNS keys do, not DNSLink names): {e}"
        ))
    })?;
    if !rest.trim_matches('/').is_empty() {
        return Err(GatewayError::BadRequest(
            "an IPNS record is asked for by name alone: /ipns/{name}?format=ipns-record".into(),
        ));
    }
    let Some((bytes, record)) = names.current_record(&ipns).await? else {
        return Err(GatewayError::NotFound(format!(
            "no record for /ipns/{name}"
        )));
    };
    let mut resp = Response::new(if parts.method == http::Method::HEAD {
        body::empty()
    } else {
        body::full(bytes.clone())
    });
    resp.extensions_mut()
        .insert(super::ResponseKind::IpnsRecord);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(IPNS_RECORD_TYPE));
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    set(h, CONTENT_LENGTH, &bytes.len().to_string());
    let filename = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "filename")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| format!("{}.ipns-record", ipns.to_cid_string()));
    set(
        h,
        CONTENT_DISPOSITION,
        &super::headers::content_disposition("attachment", &filename),
    );
    // The record's own hash tells versions apart.
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let etag = format!("\"{hex}\"");
    set(h, ETAG, &etag);
    match record.max_age(std::time::SystemTime::now()) {
        Some(age) => set(
            h,
            CACHE_CONTROL,
            &format!("public, max-age={}", age.as_secs()),
        ),
        None => set(h, CACHE_CONTROL, "public, max-age=60"),
    }
    let unchanged = parts
        .headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| super::headers::none_match(v, &etag));
    if unchanged {
        *resp.status_mut() = http::StatusCode::NOT_MODIFIED;
        *resp.body_mut() = body::empty();
        resp.headers_mut().remove(CONTENT_LENGTH);
    }
    let h = resp.headers_mut();
    if let Some(v) = NamedPath::ipns(name, "")?.x_ipfs_path() {
        h.insert(X_IPFS_PATH, v);
    }
    // The same URL answers with the content unless Accept asks for the record.
    h.insert(http::header::VARY, HeaderValue::from_static("Accept"));
    h.remove(X_IPFS_ROOTS);
    cors(h);
    Ok(resp)
}
