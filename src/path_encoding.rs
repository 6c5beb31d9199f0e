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

/// What a query value must escape besides a segment's: the separators a form decoder reads
/// (`&`, `=`, `+` as space, `;`).
const QUERY_VALUE: &AsciiSet = &SEGMENT.add(b'&').add(b'=').add(b'+').add(b';');

/// Percent-encodes one path segment.
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// Percent-encodes one query value (`?name=value`).
pub fn encode_query_value(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reserved_and_non_ascii_are_escaped() {
        assert_eq!(super::encode_segment("a b/ą?#%"), "a%20b%2F%C4%85%3F%23%25");
        assert_eq!(
            super::encode_query_value("a+b&c=d;ą"),
            "a%2Bb%26c%3Dd%3B%C4%85"
        );
    }
}
