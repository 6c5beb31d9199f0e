//! dag-json, dag-cbor, json and cbor responses (IPIP-328, IPIP-524): a block is served in its
//! own codec; asking for another codec is 406. Browsers asking for HTML get a readable view of
//! a dag-json / dag-cbor node with its links.

use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};
use ipld_core::ipld::Ipld;

use super::body::full;
use super::error::GatewayError;
use super::headers::set;
use super::request::{GatewayRequest, ResponseFormat};
use super::unixfs_dir::html_escape;
use super::{Body, Gateway};
use crate::content::Resolved;
use crate::ipld::{CBOR, DAG_CBOR, DAG_JSON, JSON};

/// Media type and file extension of a document codec.
pub fn media_type(codec: u64) -> Option<(&'static str, &'static str)> {
    Some(match codec {
        DAG_JSON => ("application/vnd.ipld.dag-json", "json"),
        DAG_CBOR => ("application/vnd.ipld.dag-cbor", "cbor"),
        JSON => ("application/json", "json"),
        CBOR => ("application/cbor", "cbor"),
        _ => return None,
    })
}

fn codec_of(format: ResponseFormat) -> Option<u64> {
    Some(match format {
        ResponseFormat::DagJson => DAG_JSON,
        ResponseFormat::DagCbor => DAG_CBOR,
        ResponseFormat::Json => JSON,
        ResponseFormat::Cbor => CBOR,
        _ => return None,
    })
}

/// Serves the document at the end of `resolved`.
pub async fn respond(
    gw: &Gateway,
    req: &GatewayRequest,
    resolved: &Resolved,
) -> Result<Response<Body>, GatewayError> {
    let cid = resolved.target;
    let codec = cid.codec();
    let Some((native, ext)) = media_type(codec) else {
        return Err(GatewayError::NotImplemented(format!(
            "codec 0x{codec:x} has no document view"
        )));
    };
    // dag-json is JSON and dag-cbor is CBOR: asking for the plain type relabels the same bytes
    // (the conformance suite's "same payload … but with plain Content-Type"); anything else
    // would be a conversion.
    let relabel = matches!(
        (req.format, codec),
        (ResponseFormat::Json, DAG_JSON) | (ResponseFormat::Cbor, DAG_CBOR)
    );
    if let Some(wanted) = codec_of(req.format).filter(|_| !relabel) {
        if wanted != codec {
            return Err(GatewayError::NotAcceptable(format!(
                "{cid} is {}; converting it to {} is not supported (IPIP-524): ask for ?format=raw or its own codec",
                crate::ipld::codec::codec_name(codec),
                req.format.name()
            )));
        }
    }
    let browser_view = req.format == ResponseFormat::Deserialized
        && req.accept_html
        && !req.download
        && (codec == DAG_JSON || codec == DAG_CBOR);
    if browser_view {
        let etag = format!("\"DagIndex-cidgate-1_CID-{cid}\"");
        let mut resp = gw.base_response(req, &resolved.roots, &etag);
        resp.headers_mut().remove(CACHE_CONTROL);
        set(resp.headers_mut(), CONTENT_TYPE, "text/html; charset=utf-8");
        if gw.not_modified(req, &etag) {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            return Ok(resp);
        }
        let doc = crate::content::entity::document(gw.source(), &cid).await?;
        if !req.head {
            *resp.body_mut() = full(render(req, &cid.to_string(), native, &doc));
        }
        return Ok(resp);
    }
    let native = if relabel {
        media_type(if codec == DAG_JSON { JSON } else { CBOR }).map_or(native, |(t, _)| t)
    } else {
        native
    };
    let short = native.rsplit(['/', '.']).next().unwrap_or("bin");
    let etag = format!("\"{cid}.{short}\"");
    let mut resp = gw.base_response(req, &resolved.roots, &etag);
    if gw.not_modified(req, &etag) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    let block = gw.source().get(&cid).await?;
    let h = resp.headers_mut();
    set(h, CONTENT_TYPE, native);
    set(h, CONTENT_LENGTH, &block.len().to_string());
    gw.set_disposition(h, req, &format!("{cid}.{ext}"), ext == "cbor");
    if !req.head {
        *resp.body_mut() = full(block.data().clone());
    }
    Ok(resp)
}

fn render(req: &GatewayRequest, cid: &str, native: &str, doc: &Ipld) -> String {
    let mut body = String::new();
    value(doc, req.cid_origin.as_deref(), &mut body);
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{cid}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:0 auto;padding:1rem}}
dl{{margin:.2rem 0 .2rem 1rem}} dt{{font-weight:600}} dd{{margin-left:1rem}} code{{word-break:break-all}}</style>
</head><body>
<h1>{kind} node</h1>
<p><code>{path}</code></p>
<p>Download as <a href="?format=raw">raw block</a>, <a href="?format=car">CAR</a> or <a href="?format={fmt}">{native}</a>.</p>
<div class="node">{body}</div>
</body></html>
"#,
        kind = if native.ends_with("dag-json") {
            "dag-json"
        } else {
            "dag-cbor"
        },
        path = html_escape(&req.content_path),
        fmt = if native.ends_with("dag-json") {
            "dag-json"
        } else {
            "dag-cbor"
        },
    )
}

/// Characters of text up to which a list or map is shown on one line, as JSON would write it.
const COMPACT_CHARS: usize = 64;

/// `v` on one line (HTML), when its text fits in `budget` characters; `None` when it does not.
fn inline(v: &Ipld, origin: Option<&str>, budget: &mut usize) -> Option<String> {
    fn spend(budget: &mut usize, text_len: usize) -> Option<()> {
        *budget = budget.checked_sub(text_len)?;
        Some(())
    }
    Some(match v {
        Ipld::List(items) => {
            spend(budget, 2)?;
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                parts.push(inline(item, origin, budget)?);
            }
            spend(budget, parts.len().saturating_sub(1) * 2)?;
            format!("[{}]", parts.join(", "))
        }
        Ipld::Map(m) => {
            spend(budget, 2)?;
            let mut parts = Vec::with_capacity(m.len());
            for (k, item) in m {
                let key = format!("{k:?}");
                spend(budget, key.chars().count() + 2)?;
                parts.push(format!(
                    "{}: {}",
                    html_escape(&key),
                    inline(item, origin, budget)?
                ));
            }
            spend(budget, parts.len().saturating_sub(1) * 2)?;
            format!("{{{}}}", parts.join(", "))
        }
        Ipld::Link(c) => {
            let text = c.to_string();
            spend(budget, text.len())?;
            match origin {
                Some(o) => format!(
                    "<a class=\"link\" href=\"{}/ipfs/{text}/\">{text}</a>",
                    html_escape(o)
                ),
                None => text,
            }
        }
        scalar => {
            let text = scalar_text(scalar);
            spend(budget, text.chars().count())?;
            html_escape(&text)
        }
    })
}

/// The text of a value that is neither a list, a map nor a link.
fn scalar_text(v: &Ipld) -> String {
    match v {
        Ipld::Null => "null".into(),
        Ipld::Bool(b) => b.to_string(),
        Ipld::Integer(i) => i.to_string(),
        Ipld::Float(f) => f.to_string(),
        Ipld::String(s) => format!("{s:?}"),
        Ipld::Bytes(b) => format!("bytes ({} B)", b.len()),
        Ipld::Link(c) => c.to_string(),
        Ipld::List(_) => "[…]".into(),
        Ipld::Map(_) => "{…}".into(),
    }
}

/// Renders `v`; links go to `{origin}/ipfs/{cid}/` (plain text where no origin serves
/// `/ipfs/`, a DNSLink site). Small lists and maps stay on one line, as JSON would write them;
/// larger ones become nested definition lists.
fn value(v: &Ipld, origin: Option<&str>, out: &mut String) {
    if matches!(v, Ipld::List(_) | Ipld::Map(_)) {
        let mut budget = COMPACT_CHARS;
        if let Some(html) = inline(v, origin, &mut budget) {
            out.push_str(&format!("<code class=\"compact\">{html}</code>"));
            return;
        }
    }
    match v {
        Ipld::Null => out.push_str("<code>null</code>"),
        Ipld::Bool(b) => out.push_str(&format!("<code>{b}</code>")),
        Ipld::Integer(i) => out.push_str(&format!("<code>{i}</code>")),
        Ipld::Float(f) => out.push_str(&format!("<code>{f}</code>")),
        Ipld::String(s) => {
            out.push_str(&format!("<code>{}</code>", html_escape(&format!("{s:?}"))))
        }
        Ipld::Bytes(b) => out.push_str(&format!("<code>bytes ({} B)</code>", b.len())),
        Ipld::Link(c) => match origin {
            Some(o) => out.push_str(&format!(
                "<a class=\"link\" href=\"{}/ipfs/{c}/\">{c}</a>",
                html_escape(o)
            )),
            None => out.push_str(&format!("<code class=\"link\">{c}</code>")),
        },
        Ipld::List(items) => {
            out.push_str("<dl>");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&format!("<dt>{i}</dt><dd>"));
                value(item, origin, out);
                out.push_str("</dd>");
            }
            out.push_str("</dl>");
        }
        Ipld::Map(m) => {
            out.push_str("<dl>");
            for (k, item) in m {
                out.push_str(&format!("<dt>{}</dt><dd>", html_escape(k)));
                value(item, origin, out);
                out.push_str("</dd>");
            }
            out.push_str("</dl>");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn html(v: &Ipld) -> String {
        let mut out = String::new();
        value(v, Some(""), &mut out);
        out
    }

    #[test]
    fn small_values_stay_on_one_line() {
        let small = Ipld::Map(BTreeMap::from([
            (
                "a".to_string(),
                Ipld::List(vec![1.into(), 2.into(), 3.into()]),
            ),
            ("b".to_string(), Ipld::String("x<y".into())),
        ]));
        assert_eq!(
            html(&small),
            "<code class=\"compact\">{&quot;a&quot;: [1, 2, 3], &quot;b&quot;: &quot;x&lt;y&quot;}</code>"
        );
        assert_eq!(
            html(&Ipld::List(vec![])),
            "<code class=\"compact\">[]</code>"
        );
        // Too long for a line: a list of its items, each small one compact again.
        let big = Ipld::Map(BTreeMap::from([
            (
                "list".to_string(),
                Ipld::List((0..40).map(Ipld::from).collect()),
            ),
            (
                "pair".to_string(),
                Ipld::List(vec![true.into(), Ipld::Null]),
            ),
        ]));
        let out = html(&big);
        assert!(out.starts_with("<dl><dt>list</dt><dd><dl>"), "{out}");
        assert!(
            out.contains("<dt>pair</dt><dd><code class=\"compact\">[true, null]</code>"),
            "{out}"
        );
    }
}
