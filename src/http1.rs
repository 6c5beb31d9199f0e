//! HTTP/1.1 response heads written as hyper's server writes them, for the answers the server
//! writes itself (`server::direct`) and for the heads the response cache encodes once per kept
//! answer (only `Date`, and `Connection: close` at shutdown, are added per answer).

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, StatusCode};

/// What the response body says of its length (hyper's `Option<BodyLength>`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BodyLength {
    /// Already at its end.
    Empty,
    /// Exactly this many bytes.
    Known(u64),
    /// Not known ahead.
    Unknown,
}

/// How the body follows the head.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body bytes at all (`HEAD`, 204, 304, an empty body).
    None,
    /// This many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the written head says about the body and the connection.
pub struct Declared {
    /// How the body follows.
    pub framing: Framing,
    /// `Connection: close`.
    pub close: bool,
}

/// Encodes the response head into `out` (cleared first) by hyper's rules: lowercase names in
/// the map's order; `Content-Length` trusted when the body's length is known, taken from the
/// header when not, dropped for an empty body (except on `HEAD`) and added when missing;
/// chunked when nothing tells the length; no body on `HEAD`, 1xx, 204 and 304; `Date` last.
/// `closing` adds `Connection: close` after the handler's headers.
pub fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    head: bool,
    length: BodyLength,
    closing: bool,
) -> Declared {
    out.clear();
    let (declared, wrote_date) = encode_lines(out, status, headers, head, length, closing);
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    declared
}

/// The head of a `200` to `GET` with a body of `length` bytes as [`encode_head`] writes it,
/// without `Date` and the blank line that end it ([`finish_kept`] adds them per answer).
/// `None` unless the headers say that length themselves, once and not 0, and have no say in
/// framing, the date or the connection: then the full encoder adds nothing after them, so the
/// two heads are the same bytes also when `Connection: close` ends one at shutdown.
pub fn kept_head(headers: &HeaderMap, length: u64) -> Option<Bytes> {
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let said = lengths.next().and_then(parse_length);
    if length == 0
        || said != Some(length)
        || lengths.next().is_some()
        || [TRANSFER_ENCODING, CONNECTION, DATE]
            .iter()
            .any(|n| headers.contains_key(n))
    {
        return None;
    }
    let mut out = Vec::with_capacity(512);
    let body = BodyLength::Known(length);
    let (declared, _) = encode_lines(&mut out, StatusCode::OK, headers, false, body, false);
    (declared.framing == Framing::Length(length) && !declared.close).then(|| Bytes::from(out))
}

/// The end of a [`kept_head`] into `out` (cleared first): `Connection: close` when `closing`,
/// `Date`, and the blank line.
pub fn finish_kept(out: &mut Vec<u8>, closing: bool) {
    out.clear();
    if closing {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"date: ");
    date::extend(out);
    out.extend_from_slice(b"\r\n\r\n");
}

/// The status line and header lines of [`encode_head`], appended to `out`; also whether the
/// headers held a `Date`.
fn encode_lines(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    head: bool,
    length: BodyLength,
    closing: bool,
) -> (Declared, bool) {
    // hyper's `can_have_content_length` and `can_have_body`.
    let may_have_length = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    let sends_body = may_have_length && !head;
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // The length the head declared, once a `Content-Length` was written.
    let mut declared_length: Option<u64> = None;
    let mut wrote_date = false;
    let mut close = false;
    for (name, value) in headers {
        if name == CONTENT_LENGTH {
            if declared_length.is_some() {
                continue;
            }
            declared_length = Some(match length {
                BodyLength::Known(n) => n,
                BodyLength::Unknown => match parse_length(value) {
                    Some(n) => n,
                    None => continue,
                },
                // Kept on HEAD (the length of what GET would send); otherwise there is
                // nothing to measure, and `content-length: 0` is added below.
                BodyLength::Empty if head => 0,
                BodyLength::Empty => continue,
            });
        } else if name == TRANSFER_ENCODING {
            // The gateway never sets it; the framing is chosen here.
            continue;
        } else if name == CONNECTION {
            close |= value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name == DATE {
            wrote_date = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if closing && !close {
        out.extend_from_slice(b"connection: close\r\n");
        close = true;
    }
    let framing = match (declared_length, length) {
        (Some(n), _) => Framing::Length(n),
        (None, BodyLength::Unknown) if sends_body => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        }
        (None, BodyLength::Unknown) => Framing::None,
        (None, BodyLength::Empty | BodyLength::Known(0)) => {
            if sends_body {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            Framing::Length(0)
        }
        (None, BodyLength::Known(n)) => {
            if may_have_length {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Framing::Length(n)
        }
    };
    let declared = Declared {
        framing: if sends_body { framing } else { Framing::None },
        close,
    };
    (declared, wrote_date)
}

/// A `Content-Length` value: digits only (no sign), as hyper reads it.
fn parse_length(value: &HeaderValue) -> Option<u64> {
    let digits = value.as_bytes().trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The `Date` value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    /// Appends the current `Date` value to `out`.
    pub fn extend(out: &mut Vec<u8>) {
        let now = SystemTime::now();
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        CACHED.with_borrow_mut(|(at, text)| {
            if *at != secs {
                *at = secs;
                *text = httpdate::fmt_http_date(now);
            }
            out.extend_from_slice(text.as_bytes());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, Response};

    fn encoded(
        status: StatusCode,
        headers: &[(&str, &str)],
        head: bool,
        length: BodyLength,
    ) -> (String, Framing, bool) {
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        for (n, v) in headers {
            resp.headers_mut().append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut out = Vec::new();
        let declared = encode_head(&mut out, resp.status(), resp.headers(), head, length, false);
        let text = String::from_utf8(out).unwrap();
        // The date line is checked once, then left out.
        let date = text.lines().find(|l| l.starts_with("date: ")).unwrap();
        assert_eq!(date.len(), "date: Mon, 07 Dec 2026 01:05:41 GMT".len());
        let text = text
            .lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n");
        (text, declared.framing, declared.close)
    }

    #[test]
    fn heads_follow_hyper_framing_rules() {
        use BodyLength::*;
        // A known length: the header is trusted, or added.
        let (t, f, _) = encoded(StatusCode::OK, &[("content-length", "5")], false, Known(5));
        assert_eq!(t, "HTTP/1.1 200 OK\ncontent-length: 5\n");
        assert_eq!(f, Framing::Length(5));
        let (t, f, _) = encoded(StatusCode::OK, &[("etag", "\"x\"")], false, Known(5));
        assert_eq!(t, "HTTP/1.1 200 OK\netag: \"x\"\ncontent-length: 5\n");
        assert_eq!(f, Framing::Length(5));
        // An empty body: its header is dropped and `content-length: 0` added, except on HEAD,
        // where the header keeps the length GET would send.
        let (t, f, _) = encoded(StatusCode::OK, &[("content-length", "7")], false, Empty);
        assert_eq!(t, "HTTP/1.1 200 OK\ncontent-length: 0\n");
        assert_eq!(f, Framing::Length(0));
        let (t, f, _) = encoded(StatusCode::OK, &[("content-length", "7")], true, Empty);
        assert_eq!(t, "HTTP/1.1 200 OK\ncontent-length: 7\n");
        assert_eq!(f, Framing::None);
        let (t, _, _) = encoded(StatusCode::OK, &[], true, Empty);
        assert_eq!(t, "HTTP/1.1 200 OK\n");
        // HEAD with a body: its length is said, nothing is sent.
        let (t, f, _) = encoded(StatusCode::OK, &[], true, Known(9));
        assert_eq!(t, "HTTP/1.1 200 OK\ncontent-length: 9\n");
        assert_eq!(f, Framing::None);
        // 304 and 204 never carry a body, nor an added length.
        let (t, f, _) = encoded(StatusCode::NOT_MODIFIED, &[("etag", "\"x\"")], false, Empty);
        assert_eq!(t, "HTTP/1.1 304 Not Modified\netag: \"x\"\n");
        assert_eq!(f, Framing::None);
        let (t, f, _) = encoded(StatusCode::NO_CONTENT, &[], false, Known(3));
        assert_eq!(t, "HTTP/1.1 204 No Content\n");
        assert_eq!(f, Framing::None);
        // No length known: chunked, or the header's value.
        let (t, f, _) = encoded(
            StatusCode::OK,
            &[("transfer-encoding", "gzip")],
            false,
            Unknown,
        );
        assert_eq!(t, "HTTP/1.1 200 OK\ntransfer-encoding: chunked\n");
        assert_eq!(f, Framing::Chunked);
        let (t, f, _) = encoded(StatusCode::OK, &[("content-length", "12")], false, Unknown);
        assert_eq!(t, "HTTP/1.1 200 OK\ncontent-length: 12\n");
        assert_eq!(f, Framing::Length(12));
        let (t, f, _) = encoded(StatusCode::OK, &[("content-length", "+12")], false, Unknown);
        assert_eq!(t, "HTTP/1.1 200 OK\ntransfer-encoding: chunked\n");
        assert_eq!(f, Framing::Chunked);
        // `Connection: close` is kept and honoured; a status without a reason gets `<none>`.
        let (t, _, close) = encoded(
            StatusCode::from_u16(599).unwrap(),
            &[("connection", "keep-alive, Close")],
            false,
            Empty,
        );
        assert_eq!(
            t,
            "HTTP/1.1 599 <none>\nconnection: keep-alive, Close\ncontent-length: 0\n"
        );
        assert!(close);
    }

    #[test]
    fn an_answer_at_shutdown_says_the_connection_closes() {
        let mut resp = Response::new(());
        resp.headers_mut()
            .insert(http::header::ETAG, HeaderValue::from_static("\"x\""));
        let mut out = Vec::new();
        let declared = encode_head(
            &mut out,
            resp.status(),
            resp.headers(),
            false,
            BodyLength::Known(3),
            true,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "HTTP/1.1 200 OK\r\netag: \"x\"\r\nconnection: close\r\ncontent-length: 3\r\ndate: "
            ),
            "{text}"
        );
        assert!(declared.close);
    }

    #[test]
    fn a_date_of_the_handler_is_kept() {
        let mut resp = Response::new(());
        resp.headers_mut().insert(
            DATE,
            HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
        );
        let mut out = Vec::new();
        encode_head(
            &mut out,
            resp.status(),
            resp.headers(),
            false,
            BodyLength::Empty,
            false,
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("date: ").count(), 1);
        assert!(text.contains("date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    /// The head without its `Date` line (the second may turn between two encodings).
    fn undated(head: &[u8]) -> String {
        let text = String::from_utf8(head.to_vec()).unwrap();
        assert_eq!(text.matches("\r\ndate: ").count(), 1, "{text}");
        text.split("\r\n")
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    #[test]
    fn a_kept_head_is_the_full_head_without_its_end() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ETAG, HeaderValue::from_static("\"x\""));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("4096"));
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("public"),
        );
        let kept = kept_head(&headers, 4096).unwrap();
        assert_eq!(
            &kept[..],
            b"HTTP/1.1 200 OK\r\netag: \"x\"\r\ncontent-length: 4096\r\ncache-control: public\r\n"
        );
        // The same bytes as the full head, at shutdown too.
        for closing in [false, true] {
            let mut end = Vec::new();
            finish_kept(&mut end, closing);
            let mut full = Vec::new();
            encode_head(
                &mut full,
                StatusCode::OK,
                &headers,
                false,
                BodyLength::Known(4096),
                closing,
            );
            assert_eq!(undated(&[&kept[..], &end[..]].concat()), undated(&full));
            assert_eq!(end.starts_with(b"connection: close\r\n"), closing);
            assert!(end.ends_with(b" GMT\r\n\r\n"));
        }
        // Headers with a say in framing, date or connection, a length that is not said once
        // or differs, and an empty body: encoded per answer.
        for name in [TRANSFER_ENCODING, CONNECTION, DATE] {
            let mut h = headers.clone();
            h.insert(name, HeaderValue::from_static("1"));
            assert!(kept_head(&h, 4096).is_none());
        }
        assert!(kept_head(&headers, 4095).is_none());
        let mut h = headers.clone();
        h.remove(CONTENT_LENGTH);
        assert!(kept_head(&h, 4096).is_none());
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(kept_head(&h, 0).is_none());
        let mut h = headers.clone();
        h.append(CONTENT_LENGTH, HeaderValue::from_static("4096"));
        assert!(kept_head(&h, 4096).is_none());
    }
}
