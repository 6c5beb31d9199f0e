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
