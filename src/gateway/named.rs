//! How a response names the content path it answers: `Ipfs-Uri` (IPIP-548), one canonical URI
//! per content path, and the legacy `X-Ipfs-Path`, which the spec deprecates and which must be
//! left out when the path cannot be an HTTP field value.
//!
//! Both come from the decoded content path, never from the request's own spelling of it:
//! `/ipfs/{cid}/a%2Fb`, `/ipfs/{cid}/a/./b` and `/ipfs/{cid}/a/b` are one content path, and a
//! CIDv0 root and its CIDv1 are one root.

use cid::Cid;
use http::header::{HeaderName, HeaderValue};
use http::Response;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::error::GatewayError;
use crate::ipns::name::{IpnsName, NameError};

/// The `Ipfs-Uri` response header (IPIP-548).
pub const IPFS_URI: HeaderName = HeaderName::from_static("ipfs-uri");

/// RFC 3986 §2.3: everything but the unreserved characters is percent-encoded (uppercase hex,
/// which `percent_encoding` writes), sub-delimiters included, so that the value is one URI and
/// has one spelling.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Splits what follows `/ipfs/` or `/ipns/` into the still-encoded root (a CID or a name) and the
/// path below it (`""`, or `/` and the still-encoded rest). An encoded `%2F` ends the root as
/// `/` does, since the path is decoded once (see [`content_segments`]): `/ipfs/{cid}%2Fa` is
/// `/ipfs/{cid}/a`, as in gateways that route on the decoded path.
pub fn split_root(rest: &str) -> (&str, std::borrow::Cow<'_, str>) {
    let bytes = rest.as_bytes();
    let slash = rest.find('/').unwrap_or(rest.len());
    let encoded = (0..slash).find(|&i| {
        bytes[i] == b'%'
            && bytes.get(i + 1) == Some(&b'2')
            && matches!(bytes.get(i + 2), Some(b'F' | b'f'))
    });
    match encoded {
        Some(i) => (&rest[..i], format!("/{}", &rest[i + 3..]).into()),
        None => (&rest[..slash], rest[slash..].into()),
    }
}

/// Decodes the path below a content root (`""`, or `/` and the still-encoded rest) into its
/// segments, and whether it names a directory (ends with `/`).
///
/// The path is percent-decoded once, so an encoded `%2F` separates segments as `/` does (a
/// link whose name holds a `/` is not addressable), then dot segments are resolved (RFC 3986
/// §5.2.4): `.` names the directory it is in, `..` its parent. A path that climbs above its
/// content root names nothing and is refused.
pub fn content_segments(rest: &str) -> Result<(Vec<String>, bool), GatewayError> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    let decoded = percent_decode_str(rest).decode_utf8().map_err(|_| {
        GatewayError::BadRequest("path is not valid UTF-8 after percent-decoding".into())
    })?;
    let mut segments: Vec<String> = Vec::new();
    let mut directory = false;
    for part in decoded
        .split('/')
        .skip(usize::from(decoded.starts_with('/')))
    {
        match part {
            "" | "." => directory = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(GatewayError::BadRequest(
                        "the path climbs above its content root".into(),
                    ));
                }
                directory = true;
            }
            name => {
                segments.push(name.to_string());
                directory = false;
            }
        }
    }
    Ok((segments, directory))
}

/// A content path as responses name it.
#[derive(Clone, Debug, Default)]
pub struct NamedPath {
    /// `/ipfs/{cid}` or `/ipns/{name}`, the root as the request wrote it.
    prefix: String,
    /// `ipfs://{cid}` or `ipns://{name}`; `None` where no URI names the root (a DNSLink name
    /// without a dot, which may point at other content on every network).
    authority: Option<String>,
    /// Decoded segments below the root.
    segments: Vec<String>,
    /// The path ends with `/`.
    directory: bool,
}

impl NamedPath {
    /// `/ipfs/{written}/…` with root `root`: the URI's authority is the CIDv1 in base32, the
    /// one spelling every form of the CID has.
    pub fn ipfs(written: &str, root: &Cid, segments: &[String], directory: bool) -> Self {
        let v1 = root.into_v1().unwrap_or(*root);
        let authority = v1
            .to_string_of_base(multibase::Base::Base32Lower)
            .unwrap_or_else(|_| v1.to_string());
        Self {
            prefix: format!("/ipfs/{written}"),
            authority: Some(format!("ipfs://{authority}")),
            segments: segments.to_vec(),
            directory,
        }
    }

    /// `/ipns/{name}{rest}`, `rest` still encoded: a key's authority is its base36
    /// `libp2p-key` CID, a DNSLink name's is the name, if it has a dot.
    pub fn ipns(name: &str, rest: &str) -> Result<Self, GatewayError> {
        let (segments, directory) = content_segments(rest)?;
        let authority = match IpnsName::parse(name) {
            Ok(key) => Some(key.to_cid_string()),
            Err(NameError::WrongCodec { fixed, .. }) => Some(fixed.to_cid_string()),
            Err(_) => dnslink_authority(name),
        };
        Ok(Self {
            prefix: format!("/ipns/{name}"),
            authority: authority.map(|a| format!("ipns://{a}")),
            segments,
            directory,
        })
    }

    /// The content path a URL path names (`/ipfs/{cid}/…` or `/ipns/{name}/…`), for answers
    /// that do not parse a request (redirects to a subdomain); `None` for anything else.
    pub fn of_url_path(path: &str) -> Option<Self> {
        let (namespace, rest) = path
            .strip_prefix("/ipfs/")
            .map(|r| ("ipfs", r))
            .or_else(|| path.strip_prefix("/ipns/").map(|r| ("ipns", r)))?;
        let (root, below) = split_root(rest);
        let root = percent_decode_str(root).decode_utf8().ok()?;
        if namespace == "ipns" {
            return Self::ipns(&root, &below).ok();
        }
        let cid = Cid::try_from(root.as_ref()).ok()?;
        let (segments, directory) = content_segments(&below).ok()?;
        Some(Self::ipfs(&root, &cid, &segments, directory))
    }

    /// The same root with another path below it (a `_redirects` rewrite's target).
    pub fn with_path(&self, segments: &[String], directory: bool) -> Self {
        Self {
            segments: segments.to_vec(),
            directory,
            ..self.clone()
        }
    }

    /// The `Ipfs-Uri` value; `None` where no URI names the root.
    pub fn ipfs_uri(&self) -> Option<HeaderValue> {
        let mut uri = self.authority.clone()?;
        for s in &self.segments {
            uri.push('/');
            uri.extend(utf8_percent_encode(s, NOT_UNRESERVED));
        }
        if self.directory {
            uri.push('/');
        }
        // Only unreserved characters and escapes: always a valid value.
        HeaderValue::try_from(uri).ok()
    }

    /// The legacy `X-Ipfs-Path` value, decoded; `None` where it cannot be a field value
    /// (bytes outside visible ASCII, or trailing whitespace a recipient would strip).
    pub fn x_ipfs_path(&self) -> Option<HeaderValue> {
        let mut path = self.prefix.clone();
        for s in &self.segments {
            path.push('/');
            path.push_str(s);
        }
        if self.directory {
            path.push('/');
        }
        // RFC 9110 §5.5: HTAB, SP and visible ASCII survive a field value; `HeaderValue`
        // would take bytes past ASCII too, which recipients read in whatever charset.
        let field_safe = path
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
        if !field_safe || path.ends_with([' ', '\t']) {
            return None;
        }
        HeaderValue::from_str(&path).ok()
    }

    /// Sets `Ipfs-Uri` on `resp` unless it holds one already or no URI names the root.
    pub fn stamp<B>(&self, resp: &mut Response<B>) {
        if resp.headers().contains_key(IPFS_URI) {
            return;
        }
        if let Some(v) = self.ipfs_uri() {
            resp.headers_mut().insert(IPFS_URI, v);
        }
    }
}

/// A DNSLink name as an `ipns://` authority: a DNS name with at least one dot, in lowercase;
/// `None` for anything else.
fn dnslink_authority(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = name.contains('.')
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    valid.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "bafybeiflhd5aimv4xavauidbetge3v3uadbqfibu5lfo4b26yyieqvnvae";

    #[test]
    fn an_encoded_slash_ends_the_root_as_a_slash_does() {
        let split = |rest| {
            let (root, below) = split_root(rest);
            (root.to_string(), below.into_owned())
        };
        assert_eq!(split("cid"), ("cid".into(), "".into()));
        assert_eq!(split("cid/"), ("cid".into(), "/".into()));
        assert_eq!(split("cid/a%2Fb"), ("cid".into(), "/a%2Fb".into()));
        assert_eq!(split("cid%2Fa/b"), ("cid".into(), "/a/b".into()));
        assert_eq!(split("cid%2f"), ("cid".into(), "/".into()));
        assert_eq!(split("ci%2"), ("ci%2".into(), "".into()));
        assert_eq!(split("ci%"), ("ci%".into(), "".into()));
        assert_eq!(
            split("%C3%A9x.org%2F%2E%2E"),
            ("%C3%A9x.org".into(), "/%2E%2E".into())
        );
        let (segments, _) = content_segments(&split("cid%2Fa%2Fb").1).unwrap();
        assert_eq!(segments, ["a", "b"]);
    }

    fn uri(rest: &str) -> String {
        let root = Cid::try_from(DIR).unwrap();
        let (segments, directory) = content_segments(rest).unwrap();
        let named = NamedPath::ipfs(DIR, &root, &segments, directory);
        named.ipfs_uri().unwrap().to_str().unwrap().to_string()
    }

    #[test]
    fn ipip_0548_names_are_encoded_strictly() {
        // The IPIP's fixture table, as the request would spell each name.
        for (name, encoded) in [
            ("plain.txt", "plain.txt"),
            ("with space.txt", "with%20space.txt"),
            ("100% sure.txt", "100%25%20sure.txt"),
            ("a#b?c.txt", "a%23b%3Fc.txt"),
            ("łódź.txt", "%C5%82%C3%B3d%C5%BA.txt"),
            ("emoji🚀.txt", "emoji%F0%9F%9A%80.txt"),
            ("файл.txt", "%D1%84%D0%B0%D0%B9%D0%BB.txt"),
            (
                "Portugal%2C+España=Peninsula Ibérica.txt",
                "Portugal%252C%2BEspa%C3%B1a%3DPeninsula%20Ib%C3%A9rica.txt",
            ),
            ("file!'()*~.txt", "file%21%27%28%29%2A~.txt"),
        ] {
            let request = format!("/{}", utf8_percent_encode(name, NOT_UNRESERVED));
            assert_eq!(uri(&request), format!("ipfs://{DIR}/{encoded}"), "{name}");
        }
    }

    #[test]
    fn the_uri_depends_on_the_content_path_not_its_spelling() {
        let want =
            format!("ipfs://{DIR}/Portugal%252C%2BEspa%C3%B1a%3DPeninsula%20Ib%C3%A9rica.txt");
        for spelling in [
            "/Portugal%252C+Espa%C3%B1a=Peninsula%20Ib%C3%A9rica.txt",
            "/Portugal%252C%2bEspa%c3%b1a%3dPeninsula%20Ib%c3%a9rica%2etxt",
        ] {
            assert_eq!(uri(spelling), want, "{spelling}");
        }
        assert_eq!(
            uri("/a%2F..%2Fplain%2Etxt"),
            format!("ipfs://{DIR}/plain.txt")
        );
        assert_eq!(uri("/a%2Fb.txt"), format!("ipfs://{DIR}/a/b.txt"));
        assert_eq!(uri("/sub%20dir/"), format!("ipfs://{DIR}/sub%20dir/"));
        assert_eq!(uri("/a/./b/."), format!("ipfs://{DIR}/a/b/"));
        assert_eq!(uri(""), format!("ipfs://{DIR}"));
        assert_eq!(uri("/"), format!("ipfs://{DIR}/"));
    }

    #[test]
    fn a_cidv0_root_is_named_by_its_base32_cidv1() {
        let v1 = Cid::try_from(DIR).unwrap();
        let v0 = Cid::new_v0(*v1.hash()).unwrap();
        let named = NamedPath::ipfs(&v0.to_string(), &v0, &["plain.txt".into()], false);
        assert_eq!(
            named.ipfs_uri().unwrap(),
            format!("ipfs://{DIR}/plain.txt").as_str()
        );
        // The legacy header keeps the request's spelling of the root.
        assert_eq!(
            named.x_ipfs_path().unwrap(),
            format!("/ipfs/{v0}/plain.txt").as_str()
        );
    }

    #[test]
    fn paths_above_the_root_and_bad_utf8_are_refused() {
        for rest in ["/..", "/a/../..", "/%2E%2E", "/%FF"] {
            assert!(content_segments(rest).is_err(), "{rest}");
        }
    }

    #[test]
    fn the_legacy_header_is_decoded_or_left_out() {
        let root = Cid::try_from(DIR).unwrap();
        let named = |rest: &str| {
            let (s, d) = content_segments(rest).unwrap();
            NamedPath::ipfs(DIR, &root, &s, d)
        };
        assert_eq!(
            named("/a%23b%3Fc.txt").x_ipfs_path().unwrap(),
            format!("/ipfs/{DIR}/a#b?c.txt").as_str()
        );
        assert!(named("/emoji%F0%9F%9A%80.txt").x_ipfs_path().is_none());
        assert!(named("/line%0Abreak").x_ipfs_path().is_none());
        assert!(named("/trailing%20").x_ipfs_path().is_none());
    }

    #[test]
    fn url_paths_name_their_content() {
        let uri = |p: &str| NamedPath::of_url_path(p).and_then(|n| n.ipfs_uri());
        assert_eq!(
            uri(&format!("/ipfs/{DIR}/a%20b/")).unwrap(),
            format!("ipfs://{DIR}/a%20b/").as_str()
        );
        assert_eq!(uri("/ipns/example.org/x").unwrap(), "ipns://example.org/x");
        assert!(uri("/ipfs/not-a-cid/x").is_none());
        assert!(uri("/other").is_none());
    }

    #[test]
    fn ipns_authorities() {
        let key = "k51qzi5uqu5dlxdsdu5fpuu7h69wu4ohp32iwm9pdt9nq3y5rpn3ln9j12zfhe";
        let n = NamedPath::ipns(key, "/root2/root3/").unwrap();
        assert_eq!(
            n.ipfs_uri().unwrap(),
            format!("ipns://{key}/root2/root3/").as_str()
        );
        let n = NamedPath::ipns("Example.COM", "/").unwrap();
        assert_eq!(n.ipfs_uri().unwrap(), "ipns://example.com/");
        assert!(NamedPath::ipns("localhost", "/")
            .unwrap()
            .ipfs_uri()
            .is_none());
    }
}
