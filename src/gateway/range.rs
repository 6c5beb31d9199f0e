//! `Range: bytes=` parsing (RFC 9110 §14): single, open, suffix and multiple ranges.

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

/// Interprets a `Range` header for a body of `size` bytes.
pub fn parse(header: Option<&str>, size: u64) -> RangeOutcome {
    let Some(h) = header else {
        return RangeOutcome::Full;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeOutcome::Full;
    };
    let mut out = Vec::new();
    let mut parts = 0;
    for part in spec.split(',').map(str::trim) {
        parts += 1;
        if parts > MAX_RANGES {
            return RangeOutcome::Full;
        }
        let Some((a, b)) = part.split_once('-') else {
            return RangeOutcome::Full;
        };
        let range = match (a.trim(), b.trim()) {
            ("", "") => return RangeOutcome::Full,
            ("", n) => {
                let Ok(n) = n.parse::<u64>() else {
                    return RangeOutcome::Full;
                };
                if n == 0 || size == 0 {
                    None
                } else {
                    Some((size.saturating_sub(n), size - 1))
                }
            }
            (s, e) => {
                let Ok(s) = s.parse::<u64>() else {
                    return RangeOutcome::Full;
                };
                let e = if e.is_empty() {
                    u64::MAX
                } else {
                    match e.parse::<u64>() {
                        Ok(e) if e >= s => e,
                        _ => return RangeOutcome::Full,
                    }
                };
                (s < size).then(|| (s, e.min(size - 1)))
            }
        };
        if let Some(r) = range {
            out.push(r);
        }
    }
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
}
