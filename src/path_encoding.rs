//! Percent-encoding of URL path segments, shared by the gateway (links, redirects) and the
//! remote tiers (request URLs).

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// What a URL path segment must escape (RFC 3986 pchar, plus `%` itself).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Percent-encodes one path segment.
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reserved_and_non_ascii_are_escaped() {
        assert_eq!(super::encode_segment("a b/ą?#%"), "a%20b%2F%C4%85%3F%23%25");
    }
}
