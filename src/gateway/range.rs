//! Ranges (RFC 9110 §14) for every response that serves them: `Range: bytes=` parsing (single,
//! open, suffix and multiple ranges), `If-Range`, the `entity-bytes` a range becomes for a DAG
//! stream, and `multipart/byteranges` framing.

use bytes::Bytes;

use crate::content::select::EntityBytes;

/// The outcome of a `Range` header against a representation of known size.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeOutcome {
    /// No usable `Range` (absent, not `bytes`, or malformed: RFC 9110 lets a server ignore it).
    Full,
    /// Inclusive byte ranges to send, in request order.
    Partial(Vec<(u64, u64)>),
    /// No range overlaps the representation: 416.
    Unsatisfiable,
}

/// Upper bound on ranges per request; more is a denial-of-service pattern, served whole.
pub const MAX_RANGES: usize = 64;

/// One `bytes=` range spec, before the representation's size is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spec {
    /// `first-last` (`last` inclusive) or `first-` (`last: None`).
    From {
        /// First byte.
        first: u64,
        /// Last byte, inclusive; `None` for the end.
        last: Option<u64>,
    },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// The specs of a `Range` header; `None` when it is absent or not usable (not `bytes`,
/// malformed, more than [`MAX_RANGES`]): RFC 9110 lets a server ignore such a header.
pub fn specs(header: Option<&str>) -> Option<Vec<Spec>> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim) {
        if out.len() == MAX_RANGES {
            return None;
        }
        let (a, b) = part.split_once('-')?;
        out.push(match (a.trim(), b.trim()) {
            ("", "") => return None,
            ("", n) => Spec::Suffix(n.parse().ok()?),
            (first, last) => {
                let first: u64 = first.parse().ok()?;
                let last = match last {
                    "" => None,
                    l => Some(l.parse::<u64>().ok().filter(|l| *l >= first)?),
                };
                Spec::From { first, last }
            }
        });
    }
    Some(out)
}

/// Interprets a `Range` header for a body of `size` bytes.
pub fn parse(header: Option<&str>, size: u64) -> RangeOutcome {
    let Some(specs) = specs(header) else {
        return RangeOutcome::Full;
    };
    let out: Vec<(u64, u64)> = specs
        .iter()
        .filter_map(|spec| match *spec {
            Spec::Suffix(n) if n == 0 || size == 0 => None,
            Spec::Suffix(n) => Some((size.saturating_sub(n), size - 1)),
            Spec::From { first, last } => {
                (first < size).then(|| (first, last.unwrap_or(u64::MAX).min(size - 1)))
            }
        })
        .collect();
    if out.is_empty() {
        return RangeOutcome::Unsatisfiable;
    }
    // Ranges that together ask for more than the whole (`bytes=0-,0-,…`) would multiply the
    // response: serve the representation once instead, as nginx and Go's net/http do.
    let total = out
        .iter()
        .fold(0u64, |sum, (s, e)| sum.saturating_add(e - s + 1));
    if total > size {
        return RangeOutcome::Full;
    }
    RangeOutcome::Partial(out)
}

/// The ranges a response of `size` bytes whose entity tag is `etag` sends: `If-Range` must
/// name that tag, strongly (RFC 9110 §13.1.5: a weak tag or a date never matches here, as the
/// gateway's validators are entity tags), or the whole representation is sent.
pub fn choose(range: Option<&str>, if_range: Option<&str>, etag: &str, size: u64) -> RangeOutcome {
    let if_range_ok = if_range
        .is_none_or(|v| !v.trim_start().starts_with("W/") && super::headers::none_match(v, etag));
    if if_range_ok {
        parse(range, size)
    } else {
        RangeOutcome::Full
    }
}

/// A single range as the `entity-bytes` of a DAG request (which a remote tier can stream
/// before the size is known); `None` for none or several.
pub fn entity_bytes(range: Option<&str>) -> Option<EntityBytes> {
    match specs(range)?.as_slice() {
        [Spec::Suffix(n)] => (*n > 0).then(|| EntityBytes {
            from: -i64::try_from(*n).unwrap_or(i64::MAX),
            to: None,
        }),
        [Spec::From { first, last }] => Some(EntityBytes {
            from: i64::try_from(*first).ok()?,
            to: match last {
                None => None,
                Some(l) => Some(i64::try_from(*l).ok()?),
            },
        }),
        _ => None,
    }
}

/// The range a single-range response sent, carried in its extensions (for demand tracking of
/// range readers), so that nothing downstream parses the headers the gateway wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentRange {
    /// First byte sent.
    pub start: u64,
    /// Last byte sent, inclusive.
    pub end: u64,
    /// Size of the whole representation.
    pub size: u64,
}

/// A `multipart/byteranges` boundary derived from the representation's entity tag and the
/// ranges: stable for identical requests, and not guessable into the content.
pub fn boundary(etag: &str, ranges: &[(u64, u64)]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(etag.as_bytes());
    for (s, e) in ranges {
        h.update(s.to_le_bytes());
        h.update(e.to_le_bytes());
    }
    let d = h.finalize();
    format!(
        "cidgate-{}",
        d[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// The header of one part of a `multipart/byteranges` body.
pub fn part_header(boundary: &str, ctype: &str, s: u64, e: u64, size: u64) -> Bytes {
    Bytes::from(format!(
        "\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {s}-{e}/{size}\r\n\r\n"
    ))
}

/// The end of a `multipart/byteranges` body.
pub fn closing(boundary: &str) -> Bytes {
    Bytes::from(format!("\r\n--{boundary}--\r\n"))
}

/// Bytes of a `multipart/byteranges` body of `ranges` of a `size`-byte representation.
pub fn multipart_len(boundary: &str, ctype: &str, ranges: &[(u64, u64)], size: u64) -> u64 {
    ranges
        .iter()
        .map(|(s, e)| part_header(boundary, ctype, *s, *e, size).len() as u64 + (e - s + 1))
        .sum::<u64>()
        + closing(boundary).len() as u64
}

/// The `Content-Type` of a multipart response with this boundary.
pub fn multipart_type(boundary: &str) -> String {
    format!("multipart/byteranges; boundary={boundary}")
}

/// A whole `multipart/byteranges` body built from a representation in memory.
pub fn multipart(data: &Bytes, ranges: &[(u64, u64)], ctype: &str, boundary: &str) -> Bytes {
    let size = data.len() as u64;
    let mut out =
        bytes::BytesMut::with_capacity(multipart_len(boundary, ctype, ranges, size) as usize);
    for (s, e) in ranges {
        out.extend_from_slice(&part_header(boundary, ctype, *s, *e, size));
        out.extend_from_slice(&data[*s as usize..=*e as usize]);
    }
    out.extend_from_slice(&closing(boundary));
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse(None, 10), RangeOutcome::Full);
        assert_eq!(
            parse(Some("bytes=6-16"), 31),
            RangeOutcome::Partial(vec![(6, 16)])
        );
        assert_eq!(
            parse(Some("bytes=5-"), 10),
            RangeOutcome::Partial(vec![(5, 9)])
        );
        assert_eq!(
            parse(Some("bytes=-3"), 10),
            RangeOutcome::Partial(vec![(7, 9)])
        );
        assert_eq!(
            parse(Some("bytes=-30"), 10),
            RangeOutcome::Partial(vec![(0, 9)])
        );
        assert_eq!(
            parse(Some("bytes=0-4, 6-100"), 10),
            RangeOutcome::Partial(vec![(0, 4), (6, 9)])
        );
        assert_eq!(parse(Some("bytes=20-30"), 10), RangeOutcome::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-0"), 0), RangeOutcome::Unsatisfiable);
        assert_eq!(parse(Some("bytes=5-2"), 10), RangeOutcome::Full);
        assert_eq!(parse(Some("items=1-2"), 10), RangeOutcome::Full);
        assert_eq!(parse(Some("bytes=x-2"), 10), RangeOutcome::Full);
    }

    #[test]
    fn ranges_that_ask_for_more_than_the_whole_are_served_whole() {
        let size = 64 << 20;
        let many = format!("bytes={}", vec!["0-"; 64].join(","));
        assert_eq!(parse(Some(&many), size), RangeOutcome::Full);
        assert_eq!(parse(Some("bytes=0-5,3-9"), 10), RangeOutcome::Full);
        assert_eq!(
            parse(Some("bytes=0-4,5-9"), 10),
            RangeOutcome::Partial(vec![(0, 4), (5, 9)])
        );
        let too_many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(parse(Some(&too_many), size), RangeOutcome::Full);
        // Every returned range lies inside the representation.
        if let RangeOutcome::Partial(r) = parse(Some("bytes=-5,8-,2-3"), 10) {
            assert!(r.iter().all(|(s, e)| s <= e && *e < 10));
        }
    }

    #[test]
    fn if_range_must_name_the_entity_tag_strongly() {
        let etag = "\"bafy.raw\"";
        let r = Some("bytes=0-1");
        assert_eq!(
            choose(r, Some("\"bafy.raw\""), etag, 10),
            RangeOutcome::Partial(vec![(0, 1)])
        );
        assert_eq!(
            choose(r, None, etag, 10),
            RangeOutcome::Partial(vec![(0, 1)])
        );
        for other in [
            "W/\"bafy.raw\"",
            " W/\"bafy.raw\"",
            "\"other\"",
            "Tue, 15 Nov 1994 08:12:31 GMT",
        ] {
            assert_eq!(
                choose(r, Some(other), etag, 10),
                RangeOutcome::Full,
                "{other}"
            );
        }
    }

    #[test]
    fn a_single_range_becomes_entity_bytes() {
        let eb = |from, to| Some(EntityBytes { from, to });
        assert_eq!(entity_bytes(Some("bytes=5-9")), eb(5, Some(9)));
        assert_eq!(entity_bytes(Some("bytes=5-")), eb(5, None));
        assert_eq!(entity_bytes(Some("bytes=-3")), eb(-3, None));
        assert_eq!(entity_bytes(Some("bytes=-0")), None);
        assert_eq!(entity_bytes(Some("bytes=0-1,3-4")), None);
        assert_eq!(entity_bytes(Some("bytes=9-5")), None);
        assert_eq!(entity_bytes(Some("items=0-1")), None);
        assert_eq!(entity_bytes(None), None);
    }

    #[test]
    fn a_multipart_body_is_as_long_as_announced() {
        let data = Bytes::from_static(b"0123456789");
        let ranges = [(0, 1), (5, 9)];
        let b = boundary("\"x\"", &ranges);
        let body = multipart(&data, &ranges, "text/plain", &b);
        assert_eq!(
            body.len() as u64,
            multipart_len(&b, "text/plain", &ranges, 10)
        );
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains("Content-Range: bytes 5-9/10\r\n\r\n56789"));
        assert!(text.ends_with(&format!("--{b}--\r\n")));
        assert_ne!(
            b,
            boundary("\"x\"", &[(0, 1)]),
            "the boundary follows the ranges"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// One range spec: `a-b`, `a-` or `-n`.
        #[derive(Clone, Debug)]
        enum Spec {
            Closed(u64, u64),
            From(u64),
            Suffix(u64),
        }

        fn spec() -> impl Strategy<Value = Spec> {
            prop_oneof![
                (0u64..200, 0u64..200).prop_map(|(a, b)| Spec::Closed(a.min(b), a.max(b))),
                (0u64..200).prop_map(Spec::From),
                (0u64..200).prop_map(Spec::Suffix),
            ]
        }

        fn text(specs: &[Spec]) -> String {
            let parts: Vec<String> = specs
                .iter()
                .map(|s| match s {
                    Spec::Closed(a, b) => format!("{a}-{b}"),
                    Spec::From(a) => format!("{a}-"),
                    Spec::Suffix(n) => format!("-{n}"),
                })
                .collect();
            format!("bytes={}", parts.join(", "))
        }

        /// What RFC 9110 says each spec selects of `size` bytes (None: nothing).
        fn model(spec: &Spec, size: u64) -> Option<(u64, u64)> {
            match *spec {
                Spec::Closed(a, b) => (a < size).then(|| (a, b.min(size - 1))),
                Spec::From(a) => (a < size).then(|| (a, size - 1)),
                Spec::Suffix(n) => (n > 0 && size > 0).then(|| (size - n.min(size), size - 1)),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 2000,
                rng_seed: proptest::test_runner::RngSeed::Fixed(0x7a4e),
                failure_persistence: None,
                ..ProptestConfig::default()
            })]
            #[test]
            fn a_range_set_is_served_as_asked_whole_or_refused(
                specs in proptest::collection::vec(spec(), 1..80),
                size in 0u64..300,
            ) {
                let selected: Vec<(u64, u64)> =
                    specs.iter().filter_map(|s| model(s, size)).collect();
                let asked: u64 = selected.iter().map(|(s, e)| e - s + 1).sum();
                match parse(Some(&text(&specs)), size) {
                    RangeOutcome::Partial(ranges) => {
                        prop_assert!(specs.len() <= MAX_RANGES);
                        prop_assert_eq!(&ranges, &selected);
                        prop_assert!(asked <= size, "never more bytes than the whole");
                    }
                    RangeOutcome::Unsatisfiable => prop_assert!(selected.is_empty()),
                    RangeOutcome::Full => prop_assert!(
                        specs.len() > MAX_RANGES || asked > size,
                        "a valid, small set is not ignored"
                    ),
                }
            }

            #[test]
            fn any_header_is_answered(header in ".{0,120}", size in any::<u64>()) {
                if let RangeOutcome::Partial(ranges) = parse(Some(&header), size) {
                    for (s, e) in ranges {
                        prop_assert!(s <= e && e < size);
                    }
                }
            }
        }
    }
}
