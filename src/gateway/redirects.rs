//! The IPFS Web `_redirects` file (ipfs/specs `http-gateways/web-redirects-file.md`): parsing
//! and rule matching, without I/O.
//!
//! The gateway consults the file only where each content root has an origin of its own
//! (subdomain and DNSLink hosts), only for implicit (deserialized, Web+UnixFS) responses, and only
//! after the requested path turned out to be missing from the DAG: rules never shadow existing
//! files. The first matching rule wins; 200 rewrites serve another path of the same root, 3xx
//! answer with `Location`, 404/410/451 serve a custom error page with that status. Behaviour
//! follows the reference parser (ipfs/go-ipfs-redirects-file) and gateway (ipfs/boxo), with the
//! differences noted where they are made.

use percent_encoding::percent_decode_str;

use crate::path_encoding::encode_segment;

/// Largest `_redirects` file the gateway reads (the spec's limit).
pub const MAX_REDIRECTS_FILE_BYTES: usize = 64 * 1024;

/// Statuses a rule may name; anything else makes the whole file invalid.
const STATUSES: [u16; 9] = [200, 301, 302, 303, 307, 308, 404, 410, 451];

/// The placeholder that receives what a trailing `*` in `from` matched.
const SPLAT: &str = "splat";

/// Schemes a redirect may point at when `to` is not a path.
const URL_SCHEMES: [&str; 4] = ["http", "https", "ipfs", "ipns"];

/// Why a `_redirects` file cannot be used. The gateway answers 500 with
/// `could not parse _redirects: {error}`: the conformance tests look for both phrases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectsError {
    /// The file is larger than [`MAX_REDIRECTS_FILE_BYTES`].
    #[error("redirects file size cannot exceed {max} bytes (this one has {size})", max = MAX_REDIRECTS_FILE_BYTES)]
    TooLarge {
        /// Size of the file in bytes.
        size: usize,
    },
    /// A line is not a valid rule.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number, counting comments and blank lines.
        line: usize,
        /// What is wrong with it.
        reason: LineError,
    },
}

/// What is wrong with one line of a `_redirects` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line is not UTF-8 (comments may be anything).
    #[error("not valid UTF-8")]
    NotUtf8,
    /// Only one field.
    #[error("missing 'to' path")]
    MissingTo,
    /// More than three fields.
    #[error("must match format 'from to [status]' (found {0} fields)")]
    Format(usize),
    /// `from` does not start with '/'.
    #[error("'from' path must begin with '/'")]
    FromNotPath,
    /// More than one `*`, or one that is not the last character of `from`.
    #[error("'from' path can only end with splat: a single '*' as its last character")]
    MisplacedSplat,
    /// A `:name` placeholder appears twice in `from` (the spec requires an error).
    #[error("placeholder ':{0}' is used more than once in 'from'")]
    DuplicatePlaceholder(String),
    /// The named field holds an ASCII control character.
    #[error("'{0}' contains a control character")]
    ControlCharacter(&'static str),
    /// The named field holds a `%` not followed by two hex digits, or escapes that are not UTF-8.
    #[error("'{0}' has an invalid percent-escape")]
    BadEscape(&'static str),
    /// `to` is neither a path nor an absolute URL with an allowed scheme.
    #[error(
        "'to' must be a path starting with '/' or an http, https, ipfs or ipns URL, not {0:?}"
    )]
    BadTo(String),
    /// The status ends with `!` (Netlify's forced rule, which would shadow existing files).
    #[error("forced redirects (or \"shadowing\") are not supported")]
    Forced,
    /// The status is not a number.
    #[error("status {0:?} is not a number")]
    BadStatus(String),
    /// The status is a number the spec does not allow.
    #[error("status code {0} is not supported")]
    UnsupportedStatus(u32),
    /// A 200, 404, 410 or 451 rule serves a file of the same root, so `to` must be a plain path.
    #[error("status {0} serves a file of this site, so 'to' must be a path starting with '/' without '?' or '#'")]
    ContentTargetNotPath(u16),
}

/// Parsed rules in file order.
#[derive(Debug, Clone)]
pub struct Redirects {
    rules: Vec<Rule>,
}

/// What a matching rule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// For 301, 302, 303, 307 and 308: the `Location` value, URI-escaped, with the request's query
    /// merged in. For 200, 404, 410 and 451: the percent-decoded path of the file to serve,
    /// relative to the content root and starting with '/'.
    pub to: String,
    /// 200 (rewrite), a 3xx redirect, or 404/410/451 (custom error page).
    pub status: u16,
}

#[derive(Debug, Clone)]
struct Rule {
    from: Pattern,
    to: Vec<Part>,
    /// `to` starts with '/' (otherwise it is an absolute URL).
    to_is_path: bool,
    status: u16,
}

/// A `from` path split into segments, as the reference matcher (ucarion/urlpath) sees it.
#[derive(Debug, Clone)]
struct Pattern {
    segments: Vec<Segment>,
    /// The last segment was `*`: one more '/' and anything after it must follow.
    splat: bool,
    /// Named placeholders in order; `Segment::Placeholder` indexes this.
    names: Vec<String>,
}

#[derive(Debug, Clone)]
enum Segment {
    /// Must equal the request segment (percent-decoded, like the request path).
    Literal(String),
    /// Matches any one segment; `None` for a bare `:`, which captures nothing.
    Placeholder(Option<usize>),
}

/// A piece of `to`: text as written, or a captured value.
#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Value(Slot),
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Named(usize),
    Splat,
}

/// Values captured by one successful match.
struct Captures<'p> {
    named: Vec<&'p str>,
    splat: &'p str,
}

impl Captures<'_> {
    fn get(&self, slot: Slot) -> &str {
        match slot {
            Slot::Named(i) => self.named.get(i).copied().unwrap_or(""),
            Slot::Splat => self.splat,
        }
    }
}

impl Redirects {
    /// Parses a whole file.
    pub fn parse(text: &[u8]) -> Result<Self, RedirectsError> {
        if text.len() > MAX_REDIRECTS_FILE_BYTES {
            return Err(RedirectsError::TooLarge { size: text.len() });
        }
        // Editors on Windows add a BOM; the reference would read it as part of the first `from`.
        let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        let mut rules = Vec::new();
        for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let Ok(s) = std::str::from_utf8(raw) else {
                if raw.trim_ascii_start().starts_with(b"#") {
                    continue;
                }
                return Err(RedirectsError::Line {
                    line,
                    reason: LineError::NotUtf8,
                });
            };
            let s = s.trim();
            if s.is_empty() || s.starts_with('#') {
                continue;
            }
            let rule = parse_rule(s).map_err(|reason| RedirectsError::Line { line, reason })?;
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    /// The first rule matching `path`, with placeholders and splat substituted into the target.
    ///
    /// `path` is the request path below the content root, percent-decoded (as boxo matches Go's
    /// decoded `URL.Path`) and starting with '/', e.g. `"/" + segments.join("/")`. One trailing
    /// '/' is ignored, as in the reference, so `/a/` matches rule `/a` but not `/a/*`, and the
    /// root never matches `/*`. `query` is the raw query string without '?': it never takes part
    /// in matching (the reference has no query conditions) and is merged into the `Location` of
    /// 3xx answers only.
    pub fn lookup(&self, path: &str, query: Option<&str>) -> Option<Redirect> {
        let path = path.strip_suffix('/').unwrap_or(path);
        self.rules.iter().find_map(|rule| {
            let captures = rule.from.capture(path)?;
            let to = if serves_content(rule.status) {
                rule.content_path(&captures)
            } else {
                rule.location(&captures, query)
            };
            Some(Redirect {
                to,
                status: rule.status,
            })
        })
    }
}

impl Rule {
    /// The target as a decoded content path, confined to the root.
    fn content_path(&self, captures: &Captures<'_>) -> String {
        let mut path = String::new();
        for part in &self.to {
            match part {
                Part::Text(text) => path.push_str(text),
                Part::Value(slot) => path.push_str(captures.get(*slot)),
            }
        }
        clean_path(&path)
    }

    /// The target as a `Location` value.
    fn location(&self, captures: &Captures<'_>, query: Option<&str>) -> String {
        let mut out = String::new();
        // Captured values are request data: escape them for where they land, so a '?' or '&'
        // from the request cannot start a query or a parameter of its own.
        let mut in_path = true;
        for part in &self.to {
            match part {
                Part::Text(text) => {
                    push_literal(&mut out, text);
                    if text.contains(['?', '#']) {
                        in_path = false;
                    }
                }
                Part::Value(slot) => {
                    let value = captures.get(*slot);
                    if in_path {
                        push_path_value(&mut out, value);
                    } else {
                        push_query_component(&mut out, value);
                    }
                }
            }
        }
        let cut = out.find(['?', '#']).unwrap_or(out.len());
        let (head, tail) = out.split_at(cut);
        // Go's http.Redirect cleans relative targets; without it a splat of `/evil.com` turns
        // `/:splat` into the protocol-relative `//evil.com`, an open redirect.
        let head = if self.to_is_path {
            clean_path(head)
        } else {
            head.to_string()
        };
        match query.filter(|q| !q.is_empty()) {
            Some(query) => merge_query(head, tail, query),
            None => head + tail,
        }
    }
}

impl Pattern {
    /// Matches `path` like urlpath: one request segment per pattern segment, and for a splat one
    /// more '/' followed by anything (possibly nothing).
    fn capture<'p>(&self, path: &'p str) -> Option<Captures<'p>> {
        let mut pieces = path.splitn(self.segments.len() + 1, '/');
        let mut named = vec![""; self.names.len()];
        for segment in &self.segments {
            let piece = pieces.next()?;
            match segment {
                Segment::Literal(literal) => {
                    if piece != literal.as_str() {
                        return None;
                    }
                }
                Segment::Placeholder(Some(i)) => {
                    if let Some(slot) = named.get_mut(*i) {
                        *slot = piece;
                    }
                }
                Segment::Placeholder(None) => {}
            }
        }
        let splat = match (self.splat, pieces.next()) {
            (true, Some(rest)) => rest,
            (false, None) => "",
            _ => return None,
        };
        Some(Captures { named, splat })
    }
}

fn parse_rule(line: &str) -> Result<Rule, LineError> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (from, to, status) = match fields.as_slice() {
        [] | [_] => return Err(LineError::MissingTo),
        [from, to] => (*from, *to, None),
        [from, to, status] => (*from, *to, Some(*status)),
        _ => return Err(LineError::Format(fields.len())),
    };
    let from = parse_from(from)?;
    let to_is_path = check_to(to)?;
    let status = match status {
        Some(s) => parse_status(s)?,
        None => 301,
    };
    // The reference accepts these and fails only when the rule matches (500 on that path);
    // rejecting them here says what is wrong instead.
    if serves_content(status) && (!to_is_path || to.contains(['?', '#'])) {
        return Err(LineError::ContentTargetNotPath(status));
    }
    let mut parts = template(to, &from.names);
    if serves_content(status) {
        for part in &mut parts {
            if let Part::Text(text) = part {
                *text = decode(text, "to")?;
            }
        }
    }
    Ok(Rule {
        from,
        to: parts,
        to_is_path,
        status,
    })
}

fn parse_from(from: &str) -> Result<Pattern, LineError> {
    if !from.starts_with('/') {
        return Err(LineError::FromNotPath);
    }
    if from.chars().any(|c| c.is_ascii_control()) {
        return Err(LineError::ControlCharacter("from"));
    }
    let stars = from.matches('*').count();
    if stars > 1 || (stars == 1 && !from.ends_with('*')) {
        return Err(LineError::MisplacedSplat);
    }
    if !valid_escapes(from) {
        return Err(LineError::BadEscape("from"));
    }
    let trimmed = from.strip_suffix('/').unwrap_or(from);
    let mut pieces: Vec<&str> = trimmed.split('/').collect();
    // Like the reference, only a whole `*` segment is a splat: `/a*` is the literal name "a*".
    let splat = pieces.last() == Some(&"*");
    if splat {
        pieces.pop();
    }
    let mut names: Vec<String> = Vec::new();
    let mut segments = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match piece.strip_prefix(':') {
            Some("") => segments.push(Segment::Placeholder(None)),
            Some(name) => {
                let taken = names.iter().any(|n| n.as_str() == name) || (splat && name == SPLAT);
                if taken {
                    return Err(LineError::DuplicatePlaceholder(name.to_string()));
                }
                segments.push(Segment::Placeholder(Some(names.len())));
                names.push(name.to_string());
            }
            // Request paths arrive decoded, so `/caf%C3%A9` must match a request for `/café`.
            None => segments.push(Segment::Literal(decode(piece, "from")?)),
        }
    }
    Ok(Pattern {
        segments,
        splat,
        names,
    })
}

/// Checks `to`; true when it is a path, false when it is an absolute URL.
fn check_to(to: &str) -> Result<bool, LineError> {
    if to.chars().any(|c| c.is_ascii_control()) {
        return Err(LineError::ControlCharacter("to"));
    }
    if to.starts_with('/') {
        let path = to.split(['?', '#']).next().unwrap_or(to);
        if !valid_escapes(path) {
            return Err(LineError::BadEscape("to"));
        }
        return Ok(true);
    }
    // A relative `to` would be resolved against the request URL by the browser (and against
    // `/ipfs/{cid}/…` by boxo): never what the author meant.
    let is_url = to.split_once("://").is_some_and(|(scheme, rest)| {
        !rest.is_empty() && URL_SCHEMES.iter().any(|s| scheme.eq_ignore_ascii_case(s))
    });
    if is_url {
        Ok(false)
    } else {
        Err(LineError::BadTo(to.to_string()))
    }
}

fn parse_status(s: &str) -> Result<u16, LineError> {
    if s.ends_with('!') {
        return Err(LineError::Forced);
    }
    let code: u32 = s.parse().map_err(|_| LineError::BadStatus(s.to_string()))?;
    u16::try_from(code)
        .ok()
        .filter(|c| STATUSES.contains(c))
        .ok_or(LineError::UnsupportedStatus(code))
}

/// Splits `to` into text and placeholders. `:splat` always names the splat (empty when `from`
/// has none, as in the reference) unless `from` has a placeholder of that name.
fn template(to: &str, names: &[String]) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = to;
    while let Some(colon) = rest.find(':') {
        text.push_str(&rest[..colon]);
        let after = &rest[colon + 1..];
        // The longest name wins, so `:ab` is never read as `:a` followed by "b" (the reference
        // substitutes in map order, which makes that a coin toss).
        let mut best: Option<(Slot, usize)> = None;
        for (i, name) in names.iter().enumerate() {
            if after.starts_with(name.as_str()) && best.is_none_or(|(_, len)| name.len() > len) {
                best = Some((Slot::Named(i), name.len()));
            }
        }
        if after.starts_with(SPLAT) && best.is_none_or(|(_, len)| SPLAT.len() > len) {
            best = Some((Slot::Splat, SPLAT.len()));
        }
        match best {
            Some((slot, len)) => {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Value(slot));
                rest = &after[len..];
            }
            // Not a placeholder (`https:`, or a name `from` does not have): kept as written.
            None => {
                text.push(':');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    parts
}

fn serves_content(status: u16) -> bool {
    matches!(status, 200 | 404 | 410 | 451)
}

fn decode(s: &str, field: &'static str) -> Result<String, LineError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|d| d.into_owned())
        .map_err(|_| LineError::BadEscape(field))
}

fn hex_at(bytes: &[u8], i: usize) -> bool {
    bytes.get(i).is_some_and(u8::is_ascii_hexdigit)
}

/// Every '%' starts a two-digit escape (what Go's url.Parse demands of the reference).
fn valid_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .enumerate()
        .all(|(i, &c)| c != b'%' || (hex_at(b, i + 1) && hex_at(b, i + 2)))
}

fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0x0f)]));
}

/// Author-written text of a `Location`: kept as written (escapes included), except what cannot
/// appear in a URI at all.
fn push_literal(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let keep = match b {
            b'%' => hex_at(bytes, i + 1) && hex_at(bytes, i + 2),
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' => false,
            0x21..=0x7e => true,
            _ => false,
        };
        if keep {
            out.push(char::from(b));
        } else {
            push_hex(out, b);
        }
    }
}

/// A captured value in the path of a `Location`; a splat keeps its '/' separators.
fn push_path_value(out: &mut String, value: &str) {
    for (i, piece) in value.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&encode_segment(piece));
    }
}

/// Query-component escaping as Go's `url.QueryEscape`, which encodes boxo's merged queries.
fn push_query_component(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => push_hex(out, b),
        }
    }
}

/// Resolves `.` and `..`, drops empty segments, keeps a trailing '/' (Go's `path.Clean` as
/// `http.Redirect` applies it). The result never climbs above the root.
fn clean_path(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    if kept.is_empty() {
        return "/".to_string();
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if path.ends_with('/') {
        out.push('/');
    }
    out
}

/// Adds the request's query parameters to those `to` already has, as boxo does (ipfs/boxo#886,
/// specs#498): all values kept, keys sorted, static values before the request's for a shared key.
fn merge_query(head: String, tail: &str, query: &str) -> String {
    let (before_fragment, fragment) = tail.split_at(tail.find('#').unwrap_or(tail.len()));
    let existing = before_fragment.strip_prefix('?').unwrap_or(before_fragment);
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(existing.as_bytes())
        .into_owned()
        .collect();
    pairs.extend(form_urlencoded::parse(query.as_bytes()).into_owned());
    // Stable: values of one key keep their order.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = head;
    for (i, (key, value)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        push_query_component(&mut out, key);
        out.push('=');
        push_query_component(&mut out, value);
    }
    out.push_str(fragment);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `examples/_redirects` from the conformance fixture `redirects_file/redirects.car`
    /// (QmYBhLYDwVFvxos9h8CGU2ibaY66QNgv8hpfewxaQrPiZj), also the spec's example.
    const EXAMPLES: &str = "/redirect-one /one.html\n\
        /301-redirect-one /one.html 301\n\
        /302-redirect-two /two.html 302\n\
        /200-index /index.html 200\n\
        /posts/:year/:month/:day/:title /articles/:year/:month/:day/:title 301\n\
        /splat/* /redirected-splat/:splat 301\n\
        /not-found/* /404.html 404\n\
        /gone/* /410.html 410\n\
        /unavail/* /451.html 451\n\
        /* /index.html 200\n";

    /// `good-codes/_redirects` (QmWHn2TunA1g7gQ7q9rwAoWuot2hMpojZ6cZ9ERsNKm5gE).
    const GOOD_CODES: &str = "/a200 /b200 200\n/a301 /b301 301\n/a302 /b302 302\n\
        /a303 /b303 303\n/a307 /b307 307\n/a308 /b308 308\n/a404 /b404 404\n\
        /a410 /b410 410\n/a451 /b451 451\n";

    /// `redirects-spa.car` (bafybeib5lboymwd6p2eo4qb2lkueaine577flvsjjeuevmp2nlio72xv5q).
    const SPA: &str = "# Map SPA routes to the main index HTML file.\n/* /index.html 200\n";

    /// Modeled on boxo's `redirects-query-params.car` tests (ipfs/boxo#886).
    const QUERY: &str = "/source1/source-file /target-file?static-query1=static-val1&static-query2=static-val2 301\n\
        /source2/:code/:name /target-file?code=:code&name=:name 301\n\
        /source3/* https://example.net/target3/:splat 301\n";

    fn parse(file: &str) -> Redirects {
        Redirects::parse(file.as_bytes()).expect("file parses")
    }

    fn get(file: &str, path: &str) -> Option<(u16, String)> {
        parse(file).lookup(path, None).map(|r| (r.status, r.to))
    }

    fn get_q(file: &str, path: &str, query: &str) -> Option<(u16, String)> {
        parse(file)
            .lookup(path, Some(query))
            .map(|r| (r.status, r.to))
    }

    fn hit(status: u16, to: &str) -> Option<(u16, String)> {
        Some((status, to.to_string()))
    }

    fn bad(file: &str) -> (usize, LineError) {
        match Redirects::parse(file.as_bytes()) {
            Err(RedirectsError::Line { line, reason }) => (line, reason),
            other => panic!("expected a bad line, got {other:?}"),
        }
    }

    #[test]
    fn conformance_examples() {
        assert_eq!(get(EXAMPLES, "/redirect-one"), hit(301, "/one.html"));
        assert_eq!(get(EXAMPLES, "/301-redirect-one"), hit(301, "/one.html"));
        assert_eq!(get(EXAMPLES, "/302-redirect-two"), hit(302, "/two.html"));
        assert_eq!(get(EXAMPLES, "/200-index"), hit(200, "/index.html"));
        assert_eq!(
            get(EXAMPLES, "/posts/2022/01/01/hello-world"),
            hit(301, "/articles/2022/01/01/hello-world")
        );
        assert_eq!(
            get(EXAMPLES, "/splat/one.html"),
            hit(301, "/redirected-splat/one.html")
        );
        assert_eq!(
            get(EXAMPLES, "/not-found/has-no-redirects-entry"),
            hit(404, "/404.html")
        );
        assert_eq!(
            get(EXAMPLES, "/gone/has-no-redirects-entry"),
            hit(410, "/410.html")
        );
        assert_eq!(
            get(EXAMPLES, "/unavail/has-no-redirects-entry"),
            hit(451, "/451.html")
        );
        assert_eq!(get(EXAMPLES, "/catch-all"), hit(200, "/index.html"));
    }

    #[test]
    fn spec_placeholder_and_splat_examples() {
        let placeholders = "/posts/:month/:day/:year/:slug  /articles/:year/:month/:day/:slug";
        assert_eq!(
            get(placeholders, "/posts/06/15/2022/hello-world"),
            hit(301, "/articles/2022/06/15/hello-world")
        );
        let splat = "/posts/* /articles/:splat";
        assert_eq!(
            get(splat, "/posts/2022/06/15/hello-world"),
            hit(301, "/articles/2022/06/15/hello-world")
        );
    }

    #[test]
    fn comments_and_blank_lines_are_ignored() {
        let file =
            "# Redirect home to index.html\n\n   \n  # indented comment\n/home /index.html 301\n";
        assert_eq!(get(file, "/home"), hit(301, "/index.html"));
        assert!(parse("").lookup("/home", None).is_none());
        assert!(parse("# only a comment\n\n")
            .lookup("/home", None)
            .is_none());
    }

    #[test]
    fn crlf_and_unterminated_last_line() {
        // `newlines/_redirects` (QmYzMrtPyBv7LKiEAGLLRPtvqm3SjQYLWxwWQ2vnpxQwRd).
        let crlf = "/redirect-one /one.html\r\n/200-index /index.html 200\r\n";
        assert_eq!(get(crlf, "/redirect-one"), hit(301, "/one.html"));
        assert_eq!(get(crlf, "/200-index"), hit(200, "/index.html"));
        assert_eq!(get("/a /b 302", "/a"), hit(302, "/b"));
    }

    #[test]
    fn any_whitespace_separates_fields_and_a_bom_is_skipped() {
        assert_eq!(get("  /a\t\t/b   302  \n", "/a"), hit(302, "/b"));
        assert_eq!(get("\u{feff}/a /b\n", "/a"), hit(301, "/b"));
    }

    #[test]
    fn default_status_is_301_and_all_spec_statuses_parse() {
        assert_eq!(get("/a /b", "/a"), hit(301, "/b"));
        for status in STATUSES {
            let from = format!("/a{status}");
            let to = format!("/b{status}");
            assert_eq!(get(GOOD_CODES, &from), hit(status, &to));
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let file = "/a /first 302\n/a /second 301\n/* /all 200\n";
        assert_eq!(get(file, "/a"), hit(302, "/first"));
        assert_eq!(get(file, "/b"), hit(200, "/all"));
    }

    #[test]
    fn spa_catch_all() {
        assert_eq!(get(SPA, "/missing-page"), hit(200, "/index.html"));
        assert_eq!(get(SPA, "/deep/route/x"), hit(200, "/index.html"));
        // The root always exists, and the reference never matches it against `/*` anyway.
        assert_eq!(get(SPA, "/"), None);
    }

    #[test]
    fn one_trailing_slash_is_ignored() {
        assert_eq!(get(EXAMPLES, "/redirect-one/"), hit(301, "/one.html"));
        assert_eq!(get("/foo/ /bar", "/foo"), hit(301, "/bar"));
        assert_eq!(get("/foo/ /bar", "/foo/"), hit(301, "/bar"));
        // A splat needs one more segment: `/splat` and `/splat/` fall through to the catch-all.
        assert_eq!(get(EXAMPLES, "/splat"), hit(200, "/index.html"));
        assert_eq!(get(EXAMPLES, "/splat/"), hit(200, "/index.html"));
        assert_eq!(get("/splat/* /s/:splat", "/splat/"), None);
    }

    #[test]
    fn placeholders_match_exactly_one_segment() {
        let file = "/p/:id /item/:id 302\n";
        assert_eq!(get(file, "/p/7"), hit(302, "/item/7"));
        assert_eq!(get(file, "/p/7/extra"), None);
        assert_eq!(get(file, "/p"), None);
        assert_eq!(get("/:/x /y 302", "/anything/x"), hit(302, "/y"));
        assert_eq!(get("/Case /y", "/case"), None);
    }

    #[test]
    fn placeholder_names_are_substituted_longest_first() {
        assert_eq!(get("/:a/:ab /x/:ab/:a", "/1/2"), hit(301, "/x/2/1"));
        assert_eq!(get("/:a /x/:a/:a.html", "/v"), hit(301, "/x/v/v.html"));
        // Names `from` does not define stay as written; `:splat` without `*` is empty.
        assert_eq!(get("/a /b/:nope", "/a"), hit(301, "/b/:nope"));
        assert_eq!(get("/a /b/:splat", "/a"), hit(301, "/b/"));
        // A named placeholder called `splat` is an ordinary placeholder.
        assert_eq!(get("/p/:splat /q/:splat", "/p/v"), hit(301, "/q/v"));
    }

    #[test]
    fn absolute_url_targets() {
        let file = "/blog/* https://blog.example.com/:splat 301\n/gh https://github.com/ipfs 302\n";
        assert_eq!(
            get(file, "/blog/2024/post"),
            hit(301, "https://blog.example.com/2024/post")
        );
        assert_eq!(get(file, "/gh"), hit(302, "https://github.com/ipfs"));
        assert_eq!(
            get("/a HTTPS://X.example/", "/a"),
            hit(301, "HTTPS://X.example/")
        );
        assert_eq!(
            get("/a ipns://en.wikipedia-on-ipfs.org/ 302", "/a"),
            hit(302, "ipns://en.wikipedia-on-ipfs.org/")
        );
    }

    #[test]
    fn location_escapes_captured_values() {
        assert_eq!(
            get(EXAMPLES, "/splat/a b/ą"),
            hit(301, "/redirected-splat/a%20b/%C4%85")
        );
        // A '?' or '#' decoded from the request stays inside its segment.
        assert_eq!(get("/p/:x /q/:x", "/p/a?b#c"), hit(301, "/q/a%3Fb%23c"));
        // In the query part, values are query-escaped.
        assert_eq!(
            get("/s/* /search?term=:splat 302", "/s/a b&c"),
            hit(302, "/search?term=a+b%26c")
        );
        // Text as written keeps its escapes; what cannot be in a URI is escaped.
        assert_eq!(get("/x /caf%C3%A9", "/x"), hit(301, "/caf%C3%A9"));
        assert_eq!(get("/y /café", "/y"), hit(301, "/caf%C3%A9"));
    }

    #[test]
    fn location_paths_are_cleaned() {
        let file = "/go/* /:splat 302\n/docs/* /d/:splat 301\n";
        // Without cleaning this would be `//evil.com/x`, which browsers read as another host.
        assert_eq!(get(file, "/go//evil.com/x"), hit(302, "/evil.com/x"));
        assert_eq!(get(file, "/docs/../../secret"), hit(301, "/secret"));
        assert_eq!(get(file, "/docs/a/"), hit(301, "/d/a"));
        assert_eq!(get("/a /b/./c/ 301", "/a"), hit(301, "/b/c/"));
    }

    #[test]
    fn content_targets_are_decoded_paths_inside_the_root() {
        assert_eq!(get("/x /caf%C3%A9.html 200", "/x"), hit(200, "/café.html"));
        assert_eq!(
            get("/old/* /new/:splat 404", "/old/a b/ą"),
            hit(404, "/new/a b/ą")
        );
        assert_eq!(
            get("/old/* /new/:splat 200", "/old/../../x"),
            hit(200, "/x")
        );
    }

    #[test]
    fn from_literals_match_decoded_request_paths() {
        assert_eq!(
            get("/caf%C3%A9 /menu.html", "/café"),
            hit(301, "/menu.html")
        );
        assert_eq!(get("/café /menu.html", "/café"), hit(301, "/menu.html"));
    }

    #[test]
    fn query_is_merged_into_redirects_only() {
        let dynamic = "dynamic-query1=dynamic-value1&dynamic-query2=dynamic-value2";
        assert_eq!(
            get_q(QUERY, "/source1/source-file", dynamic),
            hit(301, "/target-file?dynamic-query1=dynamic-value1&dynamic-query2=dynamic-value2&static-query1=static-val1&static-query2=static-val2")
        );
        assert_eq!(
            get_q(QUERY, "/source2/codeA/nameA", dynamic),
            hit(301, "/target-file?code=codeA&dynamic-query1=dynamic-value1&dynamic-query2=dynamic-value2&name=nameA")
        );
        assert_eq!(
            get_q(QUERY, "/source3/this/is/catch-all/splat-with", dynamic),
            hit(301, "https://example.net/target3/this/is/catch-all/splat-with?dynamic-query1=dynamic-value1&dynamic-query2=dynamic-value2")
        );
        assert_eq!(
            get_q(EXAMPLES, "/redirect-one", "x=1"),
            hit(301, "/one.html?x=1")
        );
        // Decoded and re-encoded like Go's url.Values; a bare key gets '='.
        assert_eq!(
            get_q(EXAMPLES, "/redirect-one", "q=a+b&z=%2F&e"),
            hit(301, "/one.html?e=&q=a+b&z=%2F")
        );
        // Static values come first for a shared key; the fragment stays last.
        assert_eq!(
            get_q("/f /b?k=1#top 302", "/f", "k=2&a=0"),
            hit(302, "/b?a=0&k=1&k=2#top")
        );
        // An empty query changes nothing, and 200/4xx targets are paths: the query is the
        // gateway's to keep.
        assert_eq!(get_q(EXAMPLES, "/redirect-one", ""), hit(301, "/one.html"));
        assert_eq!(
            get_q(EXAMPLES, "/200-index", "a=b"),
            hit(200, "/index.html")
        );
        assert_eq!(
            get_q(EXAMPLES, "/not-found/x", "a=b"),
            hit(404, "/404.html")
        );
    }

    #[test]
    fn query_conditions_are_not_matched() {
        // Netlify's `from key=value to [status]` syntax is not supported: such lines are
        // rejected rather than matched without their condition.
        assert_eq!(
            bad("/shop id=:id /blog/:id 301\n"),
            (1, LineError::Format(4))
        );
        assert_eq!(
            bad("/shop id=:id /blog/:id\n"),
            (1, LineError::BadTo("id=:id".to_string()))
        );
    }

    #[test]
    fn forced_rules_are_rejected() {
        // `forced/_redirects` (QmU7ysGXwAtiV7aBarZASJsxKoKyKmd9Xrz2FFamSCbg8S).
        let err = Redirects::parse(b"/a /b 301!\n").expect_err("forced");
        assert_eq!(
            err,
            RedirectsError::Line {
                line: 1,
                reason: LineError::Forced
            }
        );
        assert!(err
            .to_string()
            .contains("forced redirects (or \"shadowing\") are not supported"));
        assert_eq!(bad("/a /b 200!"), (1, LineError::Forced));
    }

    #[test]
    fn unsupported_statuses_are_rejected() {
        // `bad-codes/_redirects` (QmcBcFnKKqgpCVMxxGsriw9ByTVF6uDdKDMuEBq3m6f1bm).
        assert_eq!(bad("/a /b 999\n"), (1, LineError::UnsupportedStatus(999)));
        assert_eq!(bad("/a /b 300"), (1, LineError::UnsupportedStatus(300)));
        assert_eq!(bad("/a /b 304"), (1, LineError::UnsupportedStatus(304)));
        assert_eq!(
            bad("/a /b 99999999"),
            (1, LineError::UnsupportedStatus(99_999_999))
        );
        assert_eq!(
            bad("/a /b abc"),
            (1, LineError::BadStatus("abc".to_string()))
        );
    }

    #[test]
    fn malformed_lines_are_rejected_with_their_number() {
        // `invalid/_redirects` (QmRgpzYQESidTtTojN8zRWjiNs9Cy6o7KHRxh7kDpJm3KH).
        assert_eq!(bad("hello\n"), (1, LineError::MissingTo));
        assert_eq!(bad("# c\n\n/a /b\n/bad\n"), (4, LineError::MissingTo));
        assert_eq!(bad("/a /b 200 extra"), (1, LineError::Format(4)));
        assert_eq!(bad("a /b"), (1, LineError::FromNotPath));
        assert_eq!(bad("* /b"), (1, LineError::FromNotPath));
        assert_eq!(bad("/a/*/b /c"), (1, LineError::MisplacedSplat));
        assert_eq!(bad("/a/*/* /c"), (1, LineError::MisplacedSplat));
        assert_eq!(bad("/a/*/ /c"), (1, LineError::MisplacedSplat));
        assert_eq!(
            bad("/:a/:a /c"),
            (1, LineError::DuplicatePlaceholder("a".to_string()))
        );
        assert_eq!(
            bad("/:splat/* /c"),
            (1, LineError::DuplicatePlaceholder("splat".to_string()))
        );
        assert_eq!(bad("/a%zz /b"), (1, LineError::BadEscape("from")));
        assert_eq!(bad("/a /b%2"), (1, LineError::BadEscape("to")));
        assert_eq!(bad("/a /b%FF 200"), (1, LineError::BadEscape("to")));
        assert_eq!(bad("/a\u{1}b /c"), (1, LineError::ControlCharacter("from")));
        assert_eq!(bad("/a /c\u{7f}"), (1, LineError::ControlCharacter("to")));
        assert_eq!(
            bad("/a ftp://x.example/"),
            (1, LineError::BadTo("ftp://x.example/".to_string()))
        );
        assert_eq!(
            bad("/a one.html"),
            (1, LineError::BadTo("one.html".to_string()))
        );
        assert_eq!(
            bad("/a https://"),
            (1, LineError::BadTo("https://".to_string()))
        );
        assert!(bad("/a one.html")
            .1
            .to_string()
            .contains("'to' must be a path"));
    }

    #[test]
    fn content_statuses_need_a_plain_path() {
        assert_eq!(
            bad("/api/* https://api.example.com/:splat 200"),
            (1, LineError::ContentTargetNotPath(200))
        );
        assert_eq!(
            bad("/x https://example.com/404.html 404"),
            (1, LineError::ContentTargetNotPath(404))
        );
        assert_eq!(
            bad("/x /index.html?a=1 200"),
            (1, LineError::ContentTargetNotPath(200))
        );
        assert_eq!(
            bad("/x /gone.html#top 410"),
            (1, LineError::ContentTargetNotPath(410))
        );
    }

    #[test]
    fn non_utf8_is_allowed_in_comments_only() {
        assert_eq!(
            Redirects::parse(b"# caf\xe9\n/a /b\n")
                .expect("parses")
                .lookup("/a", None),
            Some(Redirect {
                to: "/b".to_string(),
                status: 301
            })
        );
        assert_eq!(
            Redirects::parse(b"/a /b\n/caf\xe9 /b\n").expect_err("not UTF-8"),
            RedirectsError::Line {
                line: 2,
                reason: LineError::NotUtf8
            }
        );
    }

    #[test]
    fn size_limit() {
        // `too-large/_redirects` (QmQTfvjGmvTfxFpUcZNLdTLuKV227KJkGiN6xooHVeVZAS): 4682 such
        // lines, 65548 bytes.
        let too_large = "/from /to 301\n".repeat(4682);
        assert_eq!(too_large.len(), 65_548);
        let err = Redirects::parse(too_large.as_bytes()).expect_err("too large");
        assert_eq!(err, RedirectsError::TooLarge { size: 65_548 });
        assert!(err
            .to_string()
            .contains("redirects file size cannot exceed 65536 bytes"));

        let mut at_limit = "/a /b\n".to_string();
        at_limit.push_str(&"#".repeat(MAX_REDIRECTS_FILE_BYTES - at_limit.len()));
        assert_eq!(at_limit.len(), MAX_REDIRECTS_FILE_BYTES);
        assert_eq!(get(&at_limit, "/a"), hit(301, "/b"));
        at_limit.push('\n');
        assert!(matches!(
            Redirects::parse(at_limit.as_bytes()),
            Err(RedirectsError::TooLarge { .. })
        ));
    }

    #[test]
    fn error_messages_name_the_line() {
        let err = Redirects::parse(b"/a /b\n\n/c /d 418\n").expect_err("bad status");
        assert_eq!(err.to_string(), "line 3: status code 418 is not supported");
    }
}
