//! Deserialized UnixFS directories (plain and HAMT-sharded): the trailing-slash redirect,
//! `index.html`, and a generated HTML listing.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use http::{Response, StatusCode};

use super::body::full;
use super::error::GatewayError;
use super::headers::set;
use super::request::GatewayRequest;
use super::unixfs_file::{self, FileResponse};
use super::{Body, Gateway};
use crate::content::entity::{Directory, UnixFsEntity};
use crate::content::listing::{list_page, DirPage};
use crate::content::{resolve, ContentError, Resolved};
use crate::path_encoding::encode_query_value;
pub use crate::path_encoding::encode_segment;

/// Changes whenever the listing's HTML changes, so cached listings are revalidated.
const LISTING_VERSION: &str = "cidgate-listing-2";

/// `Cache-Control` of generated listings: their HTML may change with cidgate versions.
const LISTING_CACHE: &str = "public, max-age=604800, stale-while-revalidate=2678400";

/// Serves `directory`, the entity at the end of `resolved`.
pub async fn respond(
    gw: &Gateway,
    req: &GatewayRequest,
    resolved: &Resolved,
    directory: Directory,
) -> Result<Response<Body>, GatewayError> {
    // The URL as sent decides, not the decoded path: relative links resolve against the URL,
    // and `dir%2F` (or `dir/.`) names the directory without ending the URL in `/`.
    if !req.original_path.ends_with('/') {
        let mut location = super::headers::same_origin(&format!("{}/", req.original_path));
        if let Some(q) = &req.query {
            location.push('?');
            location.push_str(q);
        }
        let mut resp = Response::new(super::body::empty());
        *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
        set(resp.headers_mut(), LOCATION, &location);
        return Ok(resp);
    }
    let dir = resolved.target;
    // index.html makes the directory a web site.
    match resolve(gw.source(), dir, &["index.html".to_string()]).await {
        Ok(index) => {
            if let UnixFsEntity::File { block, size } =
                UnixFsEntity::read(gw.source(), &index.target).await?
            {
                return unixfs_file::respond(
                    gw,
                    req,
                    FileResponse {
                        block,
                        size,
                        name: Some("index.html"),
                        content_type: Some("text/html"),
                        etag: format!("\"{dir}\""),
                        roots: &resolved.roots,
                    },
                )
                .await
                .map(|r| super::kind(r, super::ResponseKind::File));
            }
            return Err(GatewayError::Unprocessable(
                "index.html is not a file".into(),
            ));
        }
        Err(ContentError::NoLink { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // A bad page query is refused before anything is read.
    let page_query = PageQuery::parse(req.query.as_deref())?;
    let etag = format!("\"DirIndex-{}_CID-{dir}\"", listing_hash());
    let mut resp = gw.base_response(req, &resolved.roots, &etag);
    set(resp.headers_mut(), CACHE_CONTROL, LISTING_CACHE);
    set(resp.headers_mut(), CONTENT_TYPE, "text/html; charset=utf-8");
    // The directory's own CID validates its listing too, as on the reference gateway.
    if gw.not_modified(req, &etag) || gw.not_modified(req, &format!("\"{dir}\"")) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    if req.head {
        return Ok(resp);
    }
    let dag_size = crate::content::entity::unixfs_dag_size(&gw.source().get(&dir).await?, true);
    let page = list_page(
        gw.source(),
        directory,
        page_query.after.as_deref(),
        page_query.limit,
    )
    .await?;
    *resp.body_mut() = full(render(req, resolved, &page_query, &page, dag_size));
    Ok(resp)
}

/// Entries on a listing page unless `?limit=` says otherwise: enough for most directories
/// on one page, small enough that a page of a huge one renders at once.
pub const DEFAULT_PAGE_SIZE: usize = 1000;
/// The largest `?limit=` accepted.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// The page of a listing a request asks for: `?limit=N` entries `?after=NAME` (the last name
/// of the previous page).
#[derive(Debug, Default)]
struct PageQuery {
    /// Entries per page.
    limit: usize,
    /// `?limit=` was given (kept in the links to other pages).
    explicit_limit: bool,
    /// The page starts after this name.
    after: Option<String>,
}

impl PageQuery {
    fn parse(query: Option<&str>) -> Result<Self, GatewayError> {
        let mut q = PageQuery {
            limit: DEFAULT_PAGE_SIZE,
            ..Default::default()
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "limit" => {
                    q.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                        .ok_or_else(|| {
                            GatewayError::BadRequest(format!(
                                "invalid limit {v:?}: a directory listing page holds 1 to {MAX_PAGE_SIZE} entries"
                            ))
                        })?;
                    q.explicit_limit = true;
                }
                "after" => q.after = Some(v.into_owned()),
                _ => {}
            }
        }
        Ok(q)
    }

    /// The query of the page after the one ending with `last`.
    fn next(&self, last: &str) -> String {
        let after = encode_query_value(last);
        if self.explicit_limit {
            format!("?limit={}&after={after}", self.limit)
        } else {
            format!("?after={after}")
        }
    }

    /// The query of the first page.
    fn first(&self) -> String {
        if self.explicit_limit {
            format!("?limit={}", self.limit)
        } else {
            "?".to_string()
        }
    }
}

fn listing_hash() -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(LISTING_VERSION.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Escapes text for HTML content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn human_size(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// The CID column of an entry: a link to the entry alone, named by `?filename=`. The name is
/// escaped as a path segment and then as a query value, as the reference gateway's listing does
/// (the conformance suite expects `?filename=file-%25C5%25BA…`); the request parser undoes both
/// escapings. No link where no host serves `/ipfs/` (a DNSLink site).
fn cid_link(req: &GatewayRequest, cid: &cid::Cid, name: &str) -> String {
    match &req.cid_origin {
        Some(origin) => format!(
            "<a class=\"ipfs-hash\" translate=\"no\" href=\"{}/ipfs/{cid}?filename={}\">{cid}</a>",
            html_escape(origin),
            html_escape(&encode_query_value(&encode_segment(name))),
        ),
        None => format!("<span class=\"ipfs-hash\" translate=\"no\">{cid}</span>"),
    }
}

fn render(
    req: &GatewayRequest,
    resolved: &Resolved,
    query: &PageQuery,
    page: &DirPage,
    dag_size: Option<u64>,
) -> String {
    let root = resolved.root;
    // Links are relative to what the browser sees: `/ipfs/{cid}/…` or, on a subdomain, `/…`.
    let base = if req.subdomain {
        String::new()
    } else {
        format!("/ipfs/{root}")
    };
    // Breadcrumbs name `/ipfs/{root}/…`: on a subdomain they go through the path gateway host
    // (which redirects to the root's subdomain), as the reference gateway's do.
    let crumb_base = match (&req.cid_origin, req.subdomain) {
        (Some(origin), true) => format!("{origin}/ipfs/{root}"),
        _ => base.clone(),
    };
    let root_href = if crumb_base.is_empty() {
        "/".to_string()
    } else {
        crumb_base.clone()
    };
    let mut crumbs = format!("/ipfs/<a href=\"{}\">{}</a>", html_escape(&root_href), root);
    let mut acc = base.clone();
    let mut crumb = crumb_base;
    for seg in &req.segments {
        let enc = encode_segment(seg);
        acc.push('/');
        acc.push_str(&enc);
        crumb.push('/');
        crumb.push_str(&enc);
        crumbs.push_str(&format!(
            "/<a href=\"{}\">{}</a>",
            html_escape(&crumb),
            html_escape(seg)
        ));
    }
    let here = acc;
    let mut rows = String::new();
    if !req.segments.is_empty() {
        rows.push_str(&format!(
            "<tr><td class=\"name\"><a href=\"{}/..\">..</a></td><td class=\"cid\"></td><td class=\"size\"></td></tr>\n",
            html_escape(&here)
        ));
    }
    for e in &page.entries {
        let href = format!("{here}/{}", encode_segment(&e.name));
        // The link's Tsize: what the parent records, so no child is fetched for it.
        let size = e.size.map(human_size).unwrap_or_default();
        rows.push_str(&format!(
            "<tr><td class=\"name\"><a href=\"{}\">{}</a></td><td class=\"cid\">{}</td>\
<td class=\"size\">{}</td></tr>\n",
            html_escape(&href),
            html_escape(&e.name),
            cid_link(req, &e.cid, &e.name),
            size,
        ));
    }
    let mut summary = match (page.total, page.more, &query.after) {
        (Some(n), false, None) => format!("{n} {}", if n == 1 { "entry" } else { "entries" }),
        (Some(n), _, _) => format!("{} of {n} entries", page.entries.len()),
        (None, _, _) => format!("{} entries on this page", page.entries.len()),
    };
    if let Some(size) = dag_size {
        summary.push_str(&format!(", {} in all", human_size(size)));
    }
    let mut pager = String::new();
    if query.after.is_some() {
        pager.push_str(&format!(
            "<a class=\"first\" href=\"{}\">first page</a>",
            html_escape(&query.first())
        ));
    }
    if let (true, Some(last)) = (page.more, page.entries.last()) {
        if !pager.is_empty() {
            pager.push_str(" · ");
        }
        pager.push_str(&format!(
            "<a class=\"next\" rel=\"next\" href=\"{}\">next page</a>",
            html_escape(&query.next(&last.name))
        ));
    }
    let pager = if pager.is_empty() {
        String::new()
    } else {
        format!("<p class=\"pager\">{pager}</p>\n")
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Index of {title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;line-height:1.4}}
.crumbs{{word-break:break-all}} table{{border-collapse:collapse;width:100%}}
th{{text-align:left;font-weight:600;border-bottom:2px solid #ddd;padding:.35rem .5rem}}
td{{padding:.35rem .5rem;border-bottom:1px solid #eee;vertical-align:top}}
td.name{{word-break:break-word}} td.size,th.size{{white-space:nowrap;text-align:right;color:#555}}
td.cid{{font-family:monospace;font-size:.8rem;word-break:break-all;color:#555}}
.summary,.pager{{color:#555}}
@media (max-width:40rem){{td.cid,th.cid{{display:none}}}}
</style></head><body>
<h1>Index of</h1>
<p class="crumbs">{crumbs}</p>
<p class="cid">{target}</p>
<p class="summary">{summary} · download as <a class="car" href="?format=car">CAR</a> or <a class="tar" href="?format=tar">TAR</a></p>
<table>
<thead><tr><th class="name">Name</th><th class="cid">CID</th><th class="size">Size</th></tr></thead>
<tbody>
{rows}</tbody>
</table>
{pager}</body></html>
"#,
        title = html_escape(&req.content_path),
        target = resolved.target,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_html_are_escaped() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(human_size(10), "10 B");
        assert_eq!(human_size(1536), "1.5 KiB");
    }
}
