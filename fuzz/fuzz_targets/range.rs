//! `Range: bytes=` parsing (`cidgate::gateway::range::parse`) for a representation of any size.
//!
//! Properties: no panic; every returned range has start <= end < size; 1 to 64 ranges; the
//! ranges together never ask for more than the representation (no amplification).
#![no_main]
use cidgate::gateway::range::{parse, RangeOutcome};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, &str)| {
    let (size, header) = input;
    match parse(Some(header), size) {
        RangeOutcome::Partial(ranges) => {
            assert!(
                !ranges.is_empty() && ranges.len() <= 64,
                "{} ranges",
                ranges.len()
            );
            let mut total: u64 = 0;
            for (s, e) in ranges {
                assert!(s <= e, "start after end: {s}-{e} for {header:?}");
                assert!(e < size, "range {s}-{e} outside size {size} for {header:?}");
                total = total.saturating_add(e - s + 1);
            }
            assert!(total <= size, "ranges total {total} > size {size} for {header:?}");
        }
        RangeOutcome::Unsatisfiable | RangeOutcome::Full => {}
    }
});
