//! The data model and query semantics of the IPFS Pinning Service API
//! (<https://github.com/ipfs/pinning-services-api-spec>): pin requests, their `PinStatus` JSON,
//! validation of posted pins and the filters of `GET /pins`.
//!
//! Everything here is pure; HTTP wiring, auth, storage and the actual pinning live elsewhere.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cid::Cid;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Longest `Pin.name` and `name` filter, in characters (the spec's maxLength).
const MAX_NAME_CHARS: usize = 255;
/// Most `Pin.origins` entries (the spec's maxItems).
const MAX_ORIGINS: usize = 20;
/// Longest origin multiaddr, in bytes; real ones (with a /p2p/ peer id) stay well under 300.
const MAX_ORIGIN_BYTES: usize = 1024;
/// Most `Pin.meta` entries (the spec's maxProperties).
const MAX_META_ENTRIES: usize = 1000;
/// Longest `Pin.meta` key, in characters.
const MAX_META_KEY_CHARS: usize = 255;
/// Longest `Pin.meta` value, in characters.
const MAX_META_VALUE_CHARS: usize = 2048;
/// Most CIDs in one `cid` filter (the spec's maxItems).
const MAX_QUERY_CIDS: usize = 10;
/// `limit` when the query has none (the spec's default).
const DEFAULT_LIMIT: u32 = 10;
/// Largest accepted `limit` (the spec's maximum).
const MAX_LIMIT: u32 = 1000;
/// Last millisecond of year 9999: RFC 3339 has four-digit years, and humantime refuses to format
/// later times, so stored values beyond it are clamped rather than allowed to fail.
const MAX_RFC3339_MS: u64 = 253_402_300_799_999;
/// How much of a rejected client value is echoed back in an error.
const ECHO_CHARS: usize = 80;

/// Pin status values of the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting to be worked on.
    Queued,
    /// Being fetched.
    Pinning,
    /// Fully pinned.
    Pinned,
    /// Given up on; `info` may say why.
    Failed,
}

impl Status {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(Self::Queued),
            "pinning" => Some(Self::Pinning),
            "pinned" => Some(Self::Pinned),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// The `Pin` object (what the client asked for).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    /// Root CID to pin recursively, as the client wrote it.
    pub cid: String,
    /// Optional name, usable as a `GET /pins` filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Multiaddrs the client says provide the data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<String>,
    /// Free-form client metadata, usable as a `GET /pins` filter.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

/// One stored pin request (persisted by the caller as JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PinRequest {
    /// Opaque, URL-safe id handed to the client.
    pub requestid: String,
    /// Current state.
    pub status: Status,
    /// Unix milliseconds when the request was accepted; the spec paginates by it.
    pub created_ms: u64,
    /// What the client asked for.
    pub pin: Pin,
    /// Service-side details (e.g. `status_details`), returned as `PinStatus.info`.
    #[serde(default)]
    pub info: BTreeMap<String, String>,
}

impl PinRequest {
    /// A new queued request for `pin` created at `now_ms`, with a fresh random request id.
    pub fn new(pin: Pin, now_ms: u64) -> Self {
        Self {
            // 128 random bits: unguessable, so ids cannot be enumerated, and never collide.
            requestid: format!("{:032x}", rand::random::<u128>()),
            status: Status::Queued,
            created_ms: now_ms,
            pin,
            info: BTreeMap::new(),
        }
    }

    /// The `PinStatus` JSON object of the spec: requestid, status, created (RFC 3339 with ms,
    /// UTC), pin, delegates (the given list; the spec requires at least one multiaddr, so the
    /// caller passes its own), info.
    pub fn to_status(&self, delegates: &[String]) -> Value {
        json!({
            "requestid": self.requestid,
            "status": self.status,
            "created": rfc3339_millis(self.created_ms),
            "pin": self.pin,
            "delegates": delegates,
            "info": self.info,
        })
    }
}

/// Validation errors, each with the spec's Failure reason (e.g. "BAD_REQUEST") and a details text.
#[derive(Debug, thiserror::Error)]
pub enum PinningError {
    /// `Pin.cid` does not parse as a CID.
    #[error("{cid:?} is not a CID: {reason}")]
    BadCid {
        /// The offending value (shortened).
        cid: String,
        /// Why the CID parser refused it.
        reason: String,
    },
    /// A `Pin` field breaks a documented limit.
    #[error("invalid pin {field}: {details}")]
    BadPin {
        /// The field at fault (`name`, `origins` or `meta`).
        field: &'static str,
        /// What is wrong with it.
        details: String,
    },
    /// A `GET /pins` query parameter is malformed or out of range.
    #[error("invalid query parameter {param}: {details}")]
    BadQuery {
        /// The parameter at fault.
        param: &'static str,
        /// What is wrong with it.
        details: String,
    },
    /// No stored pin request has this id.
    #[error("no pin request with id {0:?}")]
    NotFound(String),
}

impl PinningError {
    /// The HTTP status (400 for bad input, 404 for unknown request id).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadCid { .. } | Self::BadPin { .. } | Self::BadQuery { .. } => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// The spec's machine-readable `Failure.error.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "NOT_FOUND",
            Self::BadCid { .. } | Self::BadPin { .. } | Self::BadQuery { .. } => "BAD_REQUEST",
        }
    }

    /// The spec's Failure body: {"error": {"reason": "...", "details": "..."}}.
    pub fn body(&self) -> Value {
        json!({"error": {"reason": self.reason(), "details": self.to_string()}})
    }
}

fn bad_pin(field: &'static str, details: String) -> PinningError {
    PinningError::BadPin { field, details }
}

fn bad_query(param: &'static str, details: String) -> PinningError {
    PinningError::BadQuery { param, details }
}

/// Validates a Pin posted by a client: `cid` must parse as a CID; `name` ≤ 255 characters;
/// ≤ 20 distinct `origins`, each starting with '/' and ≤ 1024 bytes; `meta` ≤ 1000 entries with
/// non-empty keys ≤ 255 characters and values ≤ 2048 characters.
pub fn validate(pin: &Pin) -> Result<(), PinningError> {
    Cid::try_from(pin.cid.as_str()).map_err(|e| PinningError::BadCid {
        cid: excerpt(&pin.cid),
        reason: e.to_string(),
    })?;
    if let Some(name) = &pin.name {
        let n = name.chars().count();
        if n > MAX_NAME_CHARS {
            return Err(bad_pin(
                "name",
                format!("{n} characters, at most {MAX_NAME_CHARS} allowed"),
            ));
        }
    }
    if pin.origins.len() > MAX_ORIGINS {
        return Err(bad_pin(
            "origins",
            format!(
                "{} entries, at most {MAX_ORIGINS} allowed",
                pin.origins.len()
            ),
        ));
    }
    for (i, origin) in pin.origins.iter().enumerate() {
        // Only a plausibility check: origins are hints, and a bad one costs at most a failed dial.
        if !origin.starts_with('/') {
            return Err(bad_pin(
                "origins",
                format!("{:?} is not a multiaddr", excerpt(origin)),
            ));
        }
        if origin.len() > MAX_ORIGIN_BYTES {
            return Err(bad_pin(
                "origins",
                format!("an entry is longer than {MAX_ORIGIN_BYTES} bytes"),
            ));
        }
        if pin.origins[..i].contains(origin) {
            return Err(bad_pin(
                "origins",
                format!("{:?} is listed twice", excerpt(origin)),
            ));
        }
    }
    if pin.meta.len() > MAX_META_ENTRIES {
        return Err(bad_pin(
            "meta",
            format!(
                "{} entries, at most {MAX_META_ENTRIES} allowed",
                pin.meta.len()
            ),
        ));
    }
    for (key, value) in &pin.meta {
        if key.is_empty() || key.chars().count() > MAX_META_KEY_CHARS {
            return Err(bad_pin(
                "meta",
                format!("keys must be 1 to {MAX_META_KEY_CHARS} characters"),
            ));
        }
        if value.chars().count() > MAX_META_VALUE_CHARS {
            return Err(bad_pin(
                "meta",
                format!(
                    "the value of {:?} is longer than {MAX_META_VALUE_CHARS} characters",
                    excerpt(key)
                ),
            ));
        }
    }
    Ok(())
}

/// How the `name` filter compares (the spec's TextMatchingStrategy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TextMatch {
    /// Whole name, case-sensitive.
    #[default]
    Exact,
    /// Whole name, case-insensitive.
    IExact,
    /// Substring, case-sensitive.
    Partial,
    /// Substring, case-insensitive.
    IPartial,
}

impl TextMatch {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "exact" => Some(Self::Exact),
            "iexact" => Some(Self::IExact),
            "partial" => Some(Self::Partial),
            "ipartial" => Some(Self::IPartial),
            _ => None,
        }
    }

    fn accepts(self, name: &str, wanted: &str) -> bool {
        // Full Unicode lowercasing, since names are free text (file names in any script).
        match self {
            Self::Exact => name == wanted,
            Self::IExact => name.to_lowercase() == wanted.to_lowercase(),
            Self::Partial => name.contains(wanted),
            Self::IPartial => name.to_lowercase().contains(&wanted.to_lowercase()),
        }
    }
}

/// Query of `GET /pins`, parsed from the URL query string per the spec: cid (comma-separated,
/// max 10), name, match (exact|iexact|partial|ipartial, default exact), status (comma-separated
/// list; default "pinned"), before / after (RFC 3339 timestamps), limit (1..=1000, default 10),
/// meta (JSON object of string→string, matched as a subset).
#[derive(Clone, Debug, PartialEq)]
pub struct ListQuery {
    /// Only pins of one of these CIDs (compared by codec and multihash, so CIDv0 and CIDv1 or
    /// different multibases of one DAG match); empty means any.
    pub cids: Vec<Cid>,
    /// Only pins whose name matches this under `name_match`; `None` means any, named or not.
    pub name: Option<String>,
    /// How `name` is compared.
    pub name_match: TextMatch,
    /// Only requests in one of these states; empty means any.
    pub statuses: Vec<Status>,
    /// Only requests created strictly before this instant.
    pub before: Option<SystemTime>,
    /// Only requests created strictly after this instant.
    pub after: Option<SystemTime>,
    /// At most this many results.
    pub limit: u32,
    /// Only pins whose meta contains every one of these entries.
    pub meta: BTreeMap<String, String>,
}

impl Default for ListQuery {
    /// The query of a bare `GET /pins`: the 10 newest pinned requests.
    fn default() -> Self {
        Self {
            cids: Vec::new(),
            name: None,
            name_match: TextMatch::Exact,
            statuses: vec![Status::Pinned],
            before: None,
            after: None,
            limit: DEFAULT_LIMIT,
            meta: BTreeMap::new(),
        }
    }
}

impl ListQuery {
    /// Parses a URL query string (without the '?'). `cid` and `status` may be comma-separated
    /// and/or repeated; other parameters may appear once; unknown parameters are ignored, and an
    /// empty `name` means no name filter.
    pub fn parse(query: Option<&str>) -> Result<Self, PinningError> {
        let mut q = Self::default();
        let mut cid_count = 0usize;
        let mut statuses: Vec<Status> = Vec::new();
        let mut seen: Vec<&'static str> = Vec::new();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "cid" => {
                    for part in list_items(&value) {
                        cid_count += 1;
                        // Checked as we go, so that a huge list is refused before it is parsed.
                        if cid_count > MAX_QUERY_CIDS {
                            return Err(bad_query(
                                "cid",
                                format!("more than {MAX_QUERY_CIDS} CIDs"),
                            ));
                        }
                        let cid = Cid::try_from(part).map_err(|e| {
                            bad_query("cid", format!("{:?} is not a CID: {e}", excerpt(part)))
                        })?;
                        if !q.cids.contains(&cid) {
                            q.cids.push(cid);
                        }
                    }
                }
                "status" => {
                    for part in list_items(&value) {
                        let status = Status::parse(part).ok_or_else(|| {
                            bad_query(
                                "status",
                                format!(
                                    "{:?} is not one of queued, pinning, pinned, failed",
                                    excerpt(part)
                                ),
                            )
                        })?;
                        if !statuses.contains(&status) {
                            statuses.push(status);
                        }
                    }
                }
                "name" => {
                    once(&mut seen, "name")?;
                    let n = value.chars().count();
                    if n > MAX_NAME_CHARS {
                        return Err(bad_query(
                            "name",
                            format!("{n} characters, at most {MAX_NAME_CHARS} allowed"),
                        ));
                    }
                    q.name = (!value.is_empty()).then(|| value.into_owned());
                }
                "match" => {
                    once(&mut seen, "match")?;
                    q.name_match = TextMatch::parse(&value).ok_or_else(|| {
                        bad_query(
                            "match",
                            format!(
                                "{:?} is not one of exact, iexact, partial, ipartial",
                                excerpt(&value)
                            ),
                        )
                    })?;
                }
                "before" => {
                    once(&mut seen, "before")?;
                    q.before = Some(parse_timestamp("before", &value)?);
                }
                "after" => {
                    once(&mut seen, "after")?;
                    q.after = Some(parse_timestamp("after", &value)?);
                }
                "limit" => {
                    once(&mut seen, "limit")?;
                    q.limit = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            bad_query(
                                "limit",
                                format!(
                                    "{:?} is not an integer from 1 to {MAX_LIMIT}",
                                    excerpt(&value)
                                ),
                            )
                        })?;
                }
                "meta" => {
                    once(&mut seen, "meta")?;
                    q.meta = serde_json::from_str(&value).map_err(|e| {
                        bad_query("meta", format!("not a JSON object of string values: {e}"))
                    })?;
                }
                _ => {}
            }
        }
        if !statuses.is_empty() {
            q.statuses = statuses;
        }
        Ok(q)
    }

    /// Whether `request` passes every filter of this query (the limit aside).
    pub fn matches(&self, request: &PinRequest) -> bool {
        if !self.statuses.is_empty() && !self.statuses.contains(&request.status) {
            return false;
        }
        let created = ms_to_time(request.created_ms);
        if self.before.is_some_and(|before| created >= before)
            || self.after.is_some_and(|after| created <= after)
        {
            return false;
        }
        if !self.cids.is_empty() {
            let Ok(cid) = Cid::try_from(request.pin.cid.as_str()) else {
                return false;
            };
            if !self.cids.iter().any(|c| same_dag(c, &cid)) {
                return false;
            }
        }
        if let Some(wanted) = &self.name {
            match &request.pin.name {
                Some(name) if self.name_match.accepts(name, wanted) => {}
                _ => return false,
            }
        }
        self.meta
            .iter()
            .all(|(k, v)| request.pin.meta.get(k) == Some(v))
    }
}

/// Applies `q` to `requests`: filters, newest first (by created), `count` = number matching before
/// the limit, `results` = first `limit` as PinStatus values. Returns the spec's PinResults JSON:
/// {"count": n, "results": [...]}.
pub fn list(requests: &[PinRequest], q: &ListQuery, delegates: &[String]) -> Value {
    let mut matching: Vec<&PinRequest> = requests.iter().filter(|r| q.matches(r)).collect();
    // The request id only breaks ties, so that equal timestamps still give a stable order.
    matching.sort_by(|a, b| {
        b.created_ms
            .cmp(&a.created_ms)
            .then_with(|| a.requestid.cmp(&b.requestid))
    });
    let results: Vec<Value> = matching
        .iter()
        .take(q.limit as usize)
        .map(|r| r.to_status(delegates))
        .collect();
    json!({"count": matching.len(), "results": results})
}

/// Refuses a second occurrence of a single-valued parameter rather than guessing which one the
/// client meant.
fn once(seen: &mut Vec<&'static str>, param: &'static str) -> Result<(), PinningError> {
    if seen.contains(&param) {
        return Err(bad_query(param, "given more than once".into()));
    }
    seen.push(param);
    Ok(())
}

/// The items of a comma-separated list, tolerating spaces and empty items (`a,,b`, trailing `,`).
fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Same codec and multihash: the same DAG, whatever the CID version or multibase.
fn same_dag(a: &Cid, b: &Cid) -> bool {
    a.codec() == b.codec() && a.hash() == b.hash()
}

fn ms_to_time(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms.min(MAX_RFC3339_MS)))
        .unwrap_or(UNIX_EPOCH)
}

fn rfc3339_millis(ms: u64) -> String {
    // ms_to_time clamps to year 9999, the range in which humantime's Display cannot fail.
    humantime::format_rfc3339_millis(ms_to_time(ms)).to_string()
}

/// Parses an RFC 3339 timestamp with any UTC offset. humantime alone only takes `Z` / `+00:00`,
/// but clients in other time zones may send e.g. `-05:00`.
fn parse_timestamp(param: &'static str, raw: &str) -> Result<SystemTime, PinningError> {
    let bad = || {
        bad_query(
            param,
            format!("{:?} is not an RFC 3339 timestamp", excerpt(raw)),
        )
    };
    // RFC 3339 allows lowercase `t` and `z`; humantime does not.
    let s = raw.trim().to_ascii_uppercase();
    let (local, offset_secs) = split_offset(&s).unwrap_or((s.as_str(), 0));
    let local = local.strip_suffix('Z').unwrap_or(local);
    let wall = humantime::parse_rfc3339_weak(local).map_err(|_| bad())?;
    // The wall-clock reading is `offset` ahead of UTC.
    let utc = if offset_secs >= 0 {
        wall.checked_sub(Duration::from_secs(offset_secs.unsigned_abs()))
    } else {
        wall.checked_add(Duration::from_secs(offset_secs.unsigned_abs()))
    };
    utc.ok_or_else(bad)
}

/// Splits a trailing `±HH:MM` offset off `s`, returning the rest and the offset in seconds. A
/// space stands for `+`, since an unencoded `+` in a query string is decoded as one.
fn split_offset(s: &str) -> Option<(&str, i64)> {
    let cut = s.len().checked_sub(6)?;
    let (local, tail) = (s.get(..cut)?, s.get(cut..)?.as_bytes());
    let sign = match tail[0] {
        b'+' | b' ' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = [tail[1], tail[2], tail[4], tail[5]];
    if tail[3] != b':' || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let [h1, h2, m1, m2] = digits.map(|d| i64::from(d - b'0'));
    let (hours, minutes) = (h1 * 10 + h2, m1 * 10 + m2);
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((local, sign * (hours * 3600 + minutes * 60)))
}

/// A prefix of a client-supplied value, so that errors never echo megabytes back.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(ECHO_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CIDS: [&str; 11] = [
        "bafkreicc3nbszwj54mywpofl7sesph4byd36axcaislcyqyn74qudnotsu",
        "bafkreibtt6y4tzyxqo4qv2juldradruuvedqy7g35bp5xsv5uo2ciljcli",
        "bafkreifjxwgt5plogbvlqsxphhs5cxm7e6smn5pmgkxtnk5ux2n6tvaxn4",
        "bafkreianlop4rdmw2ytdoyj5ctjqfuewlujsafvvgsea6zy6zbhhtnb524",
        "bafkreiax5dah5jcl4227sh6m6mvdkiklfkxaiq4lahg4bqmnda7mi42cmu",
        "bafkreihvydjvvsc5hwxkkhqfe6mpp6miapkamkcmvhgb5st4agxqw27zfa",
        "bafkreibmv7gbdbzvrlbkfokv3lwi6j2kqglchws3b3shvhugp4gdxofqoi",
        "bafkreigexfwtrtabrbxircgjccwsxef5mtluapbebcbhtgobdcrzlaicwq",
        "bafkreifpsw7kryrfuji3obc5sglpbtadqicg2pd7wndlmajoc4n4lfctqe",
        "bafkreie4iygb5jqmrdqbnhzcmhuc7ctbipu2oaclxfoh4sxopdsenfd53m",
        "bafkreibjqbh4iw4pv37pqka4tek3plu4wos4ygjagu65szfchjsuhbtike",
    ];
    /// One dag-pb DAG as CIDv0 and as CIDv1 (base32).
    const DAG_PB_V0: &str = "QmdhhqWwKWMVik82Gv7v4rZATvmwF9hXHizMdjX8b3s4hp";
    const DAG_PB_V1: &str = "bafybeiheiqezn7c6igccyzjzfejvbko34qwhqwe3gih4tmppgemm6gpgtm";

    fn pin(cid: &str) -> Pin {
        Pin {
            cid: cid.to_string(),
            name: None,
            origins: Vec::new(),
            meta: BTreeMap::new(),
        }
    }

    fn request(id: &str, status: Status, created_ms: u64, pin: Pin) -> PinRequest {
        PinRequest {
            requestid: id.to_string(),
            status,
            created_ms,
            pin,
            info: BTreeMap::new(),
        }
    }

    fn named(id: &str, name: Option<&str>) -> PinRequest {
        let mut p = pin(CIDS[0]);
        p.name = name.map(str::to_string);
        request(id, Status::Pinned, 1, p)
    }

    fn query(pairs: &[(&str, &str)]) -> Result<ListQuery, PinningError> {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k, v);
        }
        ListQuery::parse(Some(&s.finish()))
    }

    /// The request ids `list` returns, in order.
    fn ids(requests: &[PinRequest], q: &ListQuery) -> Vec<String> {
        let v = list(requests, q, &["/dnsaddr/pin.example".to_string()]);
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["requestid"].as_str().unwrap().to_string())
            .collect()
    }

    fn bad_param(r: Result<ListQuery, PinningError>) -> &'static str {
        match r {
            Err(PinningError::BadQuery { param, .. }) => param,
            other => panic!("expected BadQuery, got {other:?}"),
        }
    }

    #[test]
    fn parse_defaults() {
        let q = ListQuery::parse(None).unwrap();
        assert_eq!(q, ListQuery::default());
        assert!(q.cids.is_empty());
        assert_eq!(q.name, None);
        assert_eq!(q.name_match, TextMatch::Exact);
        assert_eq!(q.statuses, vec![Status::Pinned]);
        assert_eq!((q.before, q.after), (None, None));
        assert_eq!(q.limit, 10);
        assert!(q.meta.is_empty());
        assert_eq!(ListQuery::parse(Some("")).unwrap(), q);
        assert_eq!(ListQuery::parse(Some("vendor=x&name=")).unwrap(), q);
    }

    #[test]
    fn match_modes() {
        let reqs = [
            named("a", Some("Precious.PDF")),
            named("b", Some("precious.pdf")),
            named("c", Some("other.txt")),
            named("d", None),
        ];
        let check = |mode: &str, name: &str, want: &[&str]| {
            let q = query(&[("name", name), ("match", mode)]).unwrap();
            assert_eq!(ids(&reqs, &q), want, "match={mode} name={name}");
        };
        check("exact", "precious.pdf", &["b"]);
        check("exact", "precious", &[]);
        check("iexact", "PRECIOUS.pdf", &["a", "b"]);
        check("partial", "cious", &["a", "b"]);
        check("partial", "CIOUS", &[]);
        check("ipartial", "CIOUS", &["a", "b"]);
        check("ipartial", "t", &["c"]);
        // No match parameter means exact.
        let q = query(&[("name", "precious.pdf")]).unwrap();
        assert_eq!(ids(&reqs, &q), ["b"]);
        assert_eq!(bad_param(query(&[("match", "fuzzy")])), "match");
    }

    #[test]
    fn status_filter() {
        let reqs = [
            request("q", Status::Queued, 4, pin(CIDS[0])),
            request("p", Status::Pinning, 3, pin(CIDS[0])),
            request("d", Status::Pinned, 2, pin(CIDS[0])),
            request("f", Status::Failed, 1, pin(CIDS[0])),
        ];
        assert_eq!(ids(&reqs, &ListQuery::default()), ["d"]);
        let q = query(&[("status", "queued,failed")]).unwrap();
        assert_eq!(q.statuses, vec![Status::Queued, Status::Failed]);
        assert_eq!(ids(&reqs, &q), ["q", "f"]);
        let repeated = ListQuery::parse(Some("status=queued&status=failed,queued")).unwrap();
        assert_eq!(repeated, q);
        let all = query(&[("status", "queued,pinning,pinned,failed")]).unwrap();
        assert_eq!(ids(&reqs, &all), ["q", "p", "d", "f"]);
        assert_eq!(bad_param(query(&[("status", "pinned,gone")])), "status");
    }

    #[test]
    fn before_and_after() {
        let reqs = [
            request("one", Status::Pinned, 1_000, pin(CIDS[0])),
            request("two", Status::Pinned, 2_000, pin(CIDS[0])),
            request("three", Status::Pinned, 3_000, pin(CIDS[0])),
        ];
        let q = query(&[("before", "1970-01-01T00:00:02Z")]).unwrap();
        assert_eq!(ids(&reqs, &q), ["one"], "before is exclusive");
        let q = query(&[("after", "1970-01-01T00:00:01.000Z")]).unwrap();
        assert_eq!(ids(&reqs, &q), ["three", "two"], "after is exclusive");
        let q = query(&[
            ("after", "1970-01-01T00:00:01.5Z"),
            ("before", "1970-01-01T00:00:02.5Z"),
        ])
        .unwrap();
        assert_eq!(ids(&reqs, &q), ["two"]);
        // Offsets other than UTC, lowercase separators and an unencoded '+' (decoded as space).
        let q = query(&[("before", "1970-01-01T01:00:02+01:00")]).unwrap();
        assert_eq!(ids(&reqs, &q), ["one"]);
        let q = ListQuery::parse(Some("before=1970-01-01t01:00:02+01:00")).unwrap();
        assert_eq!(ids(&reqs, &q), ["one"]);
        // 2020-07-27T17:32:28Z, seen from other time zones.
        let summer = [request(
            "s",
            Status::Pinned,
            1_595_871_148_000,
            pin(CIDS[0]),
        )];
        let check = |param: &str, at: &str, want: &[&str]| {
            let q = query(&[(param, at)]).unwrap();
            assert_eq!(ids(&summer, &q), want, "{param}={at}");
        };
        check("after", "2020-07-27T12:32:27.999-05:00", &["s"]);
        check("after", "2020-07-27T12:32:28-05:00", &[]);
        check("before", "2020-07-27T19:32:28.001+02:00", &["s"]);
        check("before", "2020-07-27T17:32:28+00:00", &[]);
        check("before", "2020-07-27 17:32:28.5z", &["s"]);
        // Paginating with the created value of the oldest result resumes right after it.
        let first = list(&reqs, &query(&[("limit", "2")]).unwrap(), &[]);
        let oldest = first["results"][1]["created"].as_str().unwrap();
        let q = query(&[("before", oldest)]).unwrap();
        assert_eq!(ids(&reqs, &q), ["one"]);
        assert_eq!(bad_param(query(&[("before", "yesterday")])), "before");
        assert_eq!(
            bad_param(query(&[("after", "2020-13-01T00:00:00Z")])),
            "after"
        );
        assert_eq!(
            bad_param(query(&[
                ("after", "2020-01-01T00:00:00Z"),
                ("after", "2021-01-01T00:00:00Z")
            ])),
            "after"
        );
    }

    #[test]
    fn limit_bounds_and_count() {
        assert_eq!(bad_param(query(&[("limit", "0")])), "limit");
        assert_eq!(bad_param(query(&[("limit", "1001")])), "limit");
        assert_eq!(bad_param(query(&[("limit", "-1")])), "limit");
        assert_eq!(bad_param(query(&[("limit", "ten")])), "limit");
        assert_eq!(query(&[("limit", "1")]).unwrap().limit, 1);
        assert_eq!(query(&[("limit", "1000")]).unwrap().limit, 1000);

        let reqs: Vec<PinRequest> = (0..5)
            .map(|i| request(&format!("r{i}"), Status::Pinned, i, pin(CIDS[0])))
            .collect();
        let v = list(&reqs, &query(&[("limit", "2")]).unwrap(), &[]);
        assert_eq!(v["count"], 5);
        assert_eq!(v["results"].as_array().unwrap().len(), 2);
        assert_eq!(ids(&reqs, &query(&[("limit", "2")]).unwrap()), ["r4", "r3"]);
    }

    #[test]
    fn cid_filter() {
        let ten = CIDS[..10].join(",");
        assert_eq!(query(&[("cid", ten.as_str())]).unwrap().cids.len(), 10);
        let eleven = CIDS.join(",");
        assert_eq!(bad_param(query(&[("cid", eleven.as_str())])), "cid");
        // The limit counts repeated parameters too.
        let split = format!("cid={}&cid={}", CIDS[..6].join(","), CIDS[6..].join(","));
        assert_eq!(bad_param(ListQuery::parse(Some(&split))), "cid");
        assert_eq!(bad_param(query(&[("cid", "not-a-cid")])), "cid");

        let reqs = [
            request("a", Status::Pinned, 3, pin(CIDS[0])),
            request("b", Status::Pinned, 2, pin(CIDS[1])),
            request("v0", Status::Pinned, 1, pin(DAG_PB_V0)),
        ];
        let two = format!("{},{}", CIDS[1], CIDS[2]);
        let q = query(&[("cid", two.as_str())]).unwrap();
        assert_eq!(ids(&reqs, &q), ["b"]);
        // A CIDv1 filter finds the same DAG pinned by its CIDv0.
        let q = query(&[("cid", DAG_PB_V1)]).unwrap();
        assert_eq!(ids(&reqs, &q), ["v0"]);
    }

    #[test]
    fn meta_subset_match() {
        let mut p = pin(CIDS[0]);
        p.meta.insert("app_id".into(), "99".into());
        p.meta.insert("env".into(), "prod".into());
        let reqs = [
            request("m", Status::Pinned, 2, p),
            request("plain", Status::Pinned, 1, pin(CIDS[0])),
        ];
        let check = |meta: &str, want: &[&str]| {
            let q = query(&[("meta", meta)]).unwrap();
            assert_eq!(ids(&reqs, &q), want, "meta={meta}");
        };
        check(r#"{"app_id":"99"}"#, &["m"]);
        check(r#"{"app_id":"99","env":"prod"}"#, &["m"]);
        check(r#"{"app_id":"99","env":"dev"}"#, &[]);
        check(r#"{"other":"x"}"#, &[]);
        check("{}", &["m", "plain"]);
    }

    #[test]
    fn bad_meta_json_rejected() {
        for meta in ["{app_id", r#"["a"]"#, r#"{"a":1}"#, "null", ""] {
            assert_eq!(bad_param(query(&[("meta", meta)])), "meta", "meta={meta}");
        }
    }

    #[test]
    fn validate_pins() {
        let mut good = pin(DAG_PB_V0);
        good.name = Some("n".repeat(255));
        good.origins = vec!["/p2p/QmSourcePeerId".into()];
        good.meta.insert("app_id".into(), "x".repeat(2048));
        validate(&good).unwrap();

        assert!(matches!(
            validate(&pin("QmNotACid")),
            Err(PinningError::BadCid { .. })
        ));
        let mut long_name = good.clone();
        long_name.name = Some("é".repeat(256));
        assert!(matches!(
            validate(&long_name),
            Err(PinningError::BadPin { field: "name", .. })
        ));
        let mut many = good.clone();
        many.origins = (0..21)
            .map(|i| format!("/ip4/10.0.0.{i}/tcp/4001"))
            .collect();
        assert!(matches!(
            validate(&many),
            Err(PinningError::BadPin {
                field: "origins",
                ..
            })
        ));
        let mut relative = good.clone();
        relative.origins = vec!["ip4/1.2.3.4".into()];
        assert!(validate(&relative).is_err());
        let mut twice = good.clone();
        twice.origins = vec!["/dns/a".into(), "/dns/a".into()];
        assert!(validate(&twice).is_err());
        let mut long_value = good.clone();
        long_value.meta.insert("k".into(), "x".repeat(2049));
        assert!(matches!(
            validate(&long_value),
            Err(PinningError::BadPin { field: "meta", .. })
        ));
    }

    #[test]
    fn to_status_shape() {
        let mut r = PinRequest::new(pin(CIDS[0]), 1_500);
        r.info
            .insert("status_details".into(), "queue position: 1".into());
        let delegates = vec!["/dnsaddr/pin.example".to_string()];
        let v = r.to_status(&delegates);
        assert_eq!(v["requestid"], r.requestid.as_str());
        assert_eq!(v["status"], "queued");
        let created = v["created"].as_str().unwrap();
        assert!(created.ends_with('Z'), "{created}");
        assert_eq!(created, "1970-01-01T00:00:01.500Z");
        assert_eq!(v["pin"], json!({"cid": CIDS[0]}));
        assert_eq!(v["delegates"], json!(delegates));
        assert_eq!(v["info"]["status_details"], "queue position: 1");
        // Far-future garbage in a stored record must not panic the formatter.
        r.created_ms = u64::MAX;
        assert_eq!(
            r.to_status(&delegates)["created"],
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn new_requests_get_distinct_hex_ids() {
        let a = PinRequest::new(pin(CIDS[0]), 7);
        let b = PinRequest::new(pin(CIDS[0]), 7);
        assert_eq!(a.status, Status::Queued);
        assert_eq!(a.created_ms, 7);
        assert_eq!(a.requestid.len(), 32);
        assert!(a
            .requestid
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a.requestid, b.requestid);
    }

    #[test]
    fn stored_json_round_trips() {
        let mut p = pin(CIDS[0]);
        p.name = Some("n".into());
        let r = PinRequest::new(p, 42);
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<PinRequest>(&text).unwrap(), r);
        let posted: Pin = serde_json::from_str(&format!(r#"{{"cid":"{}"}}"#, CIDS[0])).unwrap();
        assert_eq!(posted, pin(CIDS[0]));
    }

    #[test]
    fn failure_bodies() {
        let e = bad_param_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["error"]["reason"], "BAD_REQUEST");
        assert!(e.body()["error"]["details"]
            .as_str()
            .unwrap()
            .contains("limit"));
        let nf = PinningError::NotFound("abc".into());
        assert_eq!(nf.status(), StatusCode::NOT_FOUND);
        assert_eq!(nf.body()["error"]["reason"], "NOT_FOUND");
    }

    fn bad_param_err() -> PinningError {
        query(&[("limit", "0")]).unwrap_err()
    }
}
