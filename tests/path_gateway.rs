//! The path gateway (deserialized responses) against the conformance fixtures, over real HTTP.

mod common;

use common::{client, Server};

const FIXTURES: &[&str] = &[
    "path_gateway_unixfs/dir-with-files.car",
    "path_gateway_unixfs/dir-with-percent-encoded-filename.car",
    "path_gateway_unixfs/symlink.car",
    "dir_listing/fixtures.car",
    "gateway-cache/fixtures.car",
    "path_gateway_dag/gateway-json-cbor.car",
    "path_gateway_dag/dag-cbor-traversal.car",
    "path_gateway_dag/dag-json-traversal.car",
    "path_gateway_dag/dag-pb.car",
    "path_gateway_dag/plain-json.car",
    "path_gateway_dag/plain-cbor.car",
    "path_gateway_tar/inside-root.car",
    "path_gateway_tar/outside-root.car",
    "trustless_gateway_car/file-3k-and-3-blocks-missing-block.car",
    "trustless_gateway_car/single-layer-hamt-with-multi-block-files.car",
    "trustless_gateway_car/subdir-with-mixed-block-files.car",
    "subdomain_gateway/fixtures.car",
];

const DIR_WITH_FILES: &str = "bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy";
const LISTING: &str = "bafybeig6ka5mlwkl4subqhaiatalkcleo4jgnr3hqwvpmsqfca27cijp3i";
const LISTING_FILE: &str = "bafkreialihlqnf5uwo4byh4n3cmwlntwqzxxs2fg5vanqdi3d7tb2l5xkm";
const CACHE_R1: &str = "bafybeib3ffl2teiqdncv3mkz4r23b5ctrwkzrrhctdbne6iboayxuxk5ui";
const CACHE_R4: &str = "bafybeifq2rzpqnqrsdupncmkmhs3ckxxjhuvdcbvydkgvch3ms24k5lo7q";
const DAG_CBOR: &str = "bafyreibs4utpgbn7uqegmd2goqz4bkyflre2ek2iwv743fhvylwi4zeeim";
const DAG_JSON: &str = "baguqeeram5ujjqrwheyaty3w5gdsmoz6vittchvhk723jjqxk7hakxkd47xq";
const DAG_PB: &str = "bafybeiegxwlgmoh2cny7qlolykdf7aq7g6dlommarldrbm7c4hbckhfcke";
const PLAIN_JSON: &str = "bagaaierajjsnhsxqlgfrvknlt7z2heoljcgfv37cn45tu7mhmr23x3ekiboq";
const MISSING: &str = "QmYhmPjhFjYFyaoiuNzYv8WGavpSRDwdHWe5B4M5du5Rtk";
const HAMT: &str = "bafybeidbclfqleg2uojchspzd4bob56dqetqjsj27gy2cq3klkkgxtpn4i";

async fn get(s: &Server, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = client().get(format!("{}{path}", s.url));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

fn hv(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn files_stream_with_type_length_and_etag() {
    let s = Server::start(FIXTURES);
    let r = get(&s, &format!("/ipfs/{DIR_WITH_FILES}/ascii.txt"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(hv(&r, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(hv(&r, "content-length"), "31");
    assert_eq!(hv(&r, "accept-ranges"), "bytes");
    assert_eq!(
        hv(&r, "cache-control"),
        "public, max-age=29030400, immutable"
    );
    let etag = hv(&r, "etag");
    assert!(etag.starts_with("\"bafkrei") && etag.ends_with('"'));
    assert_eq!(r.text().await.unwrap(), "hello application/vnd.ipld.car\n");
    // A multi-block file, verified leaf by leaf.
    let r = get(&s, &format!("/ipfs/{DIR_WITH_FILES}/multiblock.txt"), &[]).await;
    assert_eq!(hv(&r, "content-length"), "1026");
    assert_eq!(r.bytes().await.unwrap().len(), 1026);
    // No name: the type is sniffed from the bytes.
    let r = get(&s, &format!("/ipfs/{LISTING_FILE}"), &[]).await;
    assert_eq!(hv(&r, "content-type"), "text/plain; charset=utf-8");
    // X-Ipfs-Roots lists one CID per path segment.
    let r = get(
        &s,
        &format!("/ipfs/{CACHE_R1}/root2/root3/root4/index.html"),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let roots = hv(&r, "x-ipfs-roots");
    assert_eq!(roots.split(',').count(), 5);
    assert!(roots.starts_with(CACHE_R1) && roots.contains(CACHE_R4));
    assert_eq!(
        hv(&r, "x-ipfs-path"),
        format!("/ipfs/{CACHE_R1}/root2/root3/root4/index.html")
    );
    // HEAD gives the same headers and no body.
    let r = client()
        .head(format!("{}/ipfs/{DIR_WITH_FILES}/multiblock.txt", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(hv(&r, "content-length"), "1026");
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn ranges_read_only_the_covering_blocks() {
    let s = Server::start(FIXTURES);
    let f = format!("/ipfs/{DIR_WITH_FILES}/ascii.txt");
    let r = get(&s, &f, &[("range", "bytes=6-16")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(hv(&r, "content-range"), "bytes 6-16/31");
    assert_eq!(r.text().await.unwrap(), "application");
    let r = get(&s, &f, &[("range", "bytes=-3")]).await;
    assert_eq!(hv(&r, "content-range"), "bytes 28-30/31");
    let r = get(&s, &f, &[("range", "bytes=0-4,6-16")]).await;
    assert_eq!(r.status(), 206);
    let ct = hv(&r, "content-type");
    assert!(ct.starts_with("multipart/byteranges; boundary="));
    let len: usize = hv(&r, "content-length").parse().unwrap();
    let body = r.text().await.unwrap();
    assert_eq!(
        body.len(),
        len,
        "Content-Length of a multipart body is exact"
    );
    assert!(body.contains("Content-Range: bytes 0-4/31\r\n\r\nhello"));
    assert!(body.contains("Content-Range: bytes 6-16/31\r\n\r\napplication"));
    assert!(body.ends_with("--\r\n"));
    let r = get(&s, &f, &[("range", "bytes=31-40")]).await;
    assert_eq!(r.status(), 416);
    assert_eq!(hv(&r, "content-range"), "bytes */31");
    let etag = get(&s, &f, &[]).await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_string();
    let r = get(&s, &f, &[("range", "bytes=0-4"), ("if-range", &etag)]).await;
    assert_eq!(r.status(), 206);
    let r = get(&s, &f, &[("range", "bytes=0-4"), ("if-range", "\"stale\"")]).await;
    assert_eq!(r.status(), 200);
    // The middle block of this file is missing: ranges that avoid it still work.
    let m = format!("/ipfs/{MISSING}");
    let r = get(&s, &m, &[("range", "bytes=997-1000")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(hv(&r, "content-range"), "bytes 997-1000/3072");
    assert_eq!(r.bytes().await.unwrap().len(), 4);
    let r = get(&s, &m, &[("range", "bytes=2200-2201")]).await;
    assert_eq!(hv(&r, "content-range"), "bytes 2200-2201/3072");
    // The whole file cannot be served: the stream is cut, never completed with wrong bytes.
    let r = get(&s, &m, &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err());
}

#[tokio::test]
async fn directories_redirect_index_and_list() {
    let s = Server::start(FIXTURES);
    let r = get(&s, &format!("/ipfs/{LISTING}/%C4%85/%C4%99?x=1"), &[]).await;
    assert_eq!(r.status(), 301);
    assert_eq!(
        hv(&r, "location"),
        format!("/ipfs/{LISTING}/%C4%85/%C4%99/?x=1")
    );
    let r = get(&s, &format!("/ipfs/{LISTING}/%C4%85/%C4%99/"), &[]).await;
    assert_eq!(r.status(), 200);
    assert!(hv(&r, "content-type").starts_with("text/html"));
    let etag = hv(&r, "etag");
    assert!(
        etag.starts_with("\"DirIndex-") && etag.contains("_CID-bafy"),
        "{etag}"
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("Index of"));
    assert!(html.contains(&format!("<a href=\"/ipfs/{LISTING}/%C4%85\">ą</a>")));
    assert!(html.contains(&format!(
        "<a href=\"/ipfs/{LISTING}/%C4%85/%C4%99/..\">..</a>"
    )));
    assert!(html.contains(&format!(
        "<a href=\"/ipfs/{LISTING}/%C4%85/%C4%99/file-%C5%BA%C5%82.txt\">file-źł.txt</a>"
    )));
    assert!(html.contains(&format!(
        "href=\"/ipfs/{LISTING_FILE}?filename=file-%25C5%25BA%25C5%2582.txt\""
    )));
    let r = get(
        &s,
        &format!("/ipfs/{LISTING}/%C4%85/%C4%99/"),
        &[("if-none-match", &format!("W/{etag}"))],
    )
    .await;
    assert_eq!(r.status(), 304);
    // The directory CID itself (weak or strong) validates the listing as well.
    let r = get(&s, &format!("/ipfs/{CACHE_R1}/root2/root3/"), &[]).await;
    assert!(hv(&r, "etag").starts_with("\"DirIndex-"));
    let root3 = hv(&r, "x-ipfs-roots")
        .rsplit(',')
        .next()
        .unwrap()
        .to_string();
    let inm = format!("W/\"{root3}\"");
    let r = get(
        &s,
        &format!("/ipfs/{CACHE_R1}/root2/root3/"),
        &[("if-none-match", &inm)],
    )
    .await;
    assert_eq!(r.status(), 304);
    // index.html turns a directory into a site; its Etag is the directory's.
    let r = get(&s, &format!("/ipfs/{CACHE_R1}/root2/root3/root4/"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(hv(&r, "etag"), format!("\"{CACHE_R4}\""));
    assert!(hv(&r, "content-type").starts_with("text/html"));
    assert!(hv(&r, "x-ipfs-roots").ends_with(CACHE_R4));
    // HAMT: listing reads every shard; lookups hash the name.
    let r = get(&s, &format!("/ipfs/{HAMT}/"), &[]).await;
    let html = r.text().await.unwrap();
    assert!(html.contains(">685.txt<") && html.contains(">1.txt<"));
    let r = get(&s, &format!("/ipfs/{HAMT}/685.txt"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        get(&s, &format!("/ipfs/{LISTING}/i-do-not-exist"), &[])
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn names_symlinks_and_dispositions() {
    let s = Server::start(FIXTURES);
    let r = get(
        &s,
        "/ipfs/bafybeig675grnxcmshiuzdaz2xalm6ef4thxxds6o6ypakpghm5kghpc34/Portugal%252C+Espa%C3%B1a=Peninsula%20Ib%C3%A9rica.txt",
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = get(
        &s,
        "/ipfs/QmWvY6FaqFMS89YAQ9NAPjVP4WZKA1qbHbicc9HeSKQTgt/bar",
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(hv(&r, "content-type"), "inode/symlink");
    assert_eq!(r.text().await.unwrap(), "foo");
    let f = format!("/ipfs/{DIR_WITH_FILES}/ascii.txt");
    let r = get(&s, &format!("{f}?filename=testтест.pdf"), &[]).await;
    assert_eq!(
        hv(&r, "content-disposition"),
        "inline; filename=\"test____.pdf\"; filename*=UTF-8''test%D1%82%D0%B5%D1%81%D1%82.pdf"
    );
    assert_eq!(
        hv(&r, "content-type"),
        "application/pdf",
        "?filename decides the type"
    );
    let r = get(&s, &format!("{f}?filename=a.txt&download=true"), &[]).await;
    assert!(hv(&r, "content-disposition").starts_with("attachment; filename=\"a.txt\""));
}

#[tokio::test]
async fn conditional_requests() {
    let s = Server::start(FIXTURES);
    let f = format!("/ipfs/{CACHE_R1}/root2/root3/root4/index.html");
    let etag = hv(&get(&s, &f, &[]).await, "etag");
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"fakeEtag1\", \"fakeEtag2\", {etag}"),
        "*".into(),
    ] {
        assert_eq!(
            get(&s, &f, &[("if-none-match", &inm)]).await.status(),
            304,
            "{inm}"
        );
    }
    assert_eq!(
        get(&s, &f, &[("if-none-match", "\"nope\"")]).await.status(),
        200
    );
    let cc = [("cache-control", "only-if-cached")];
    assert_eq!(get(&s, &f, &cc).await.status(), 200);
    assert_eq!(
        get(
            &s,
            "/ipfs/QmYzfKSE55XCjD1MW128RfciAf2DViABhEiXfgVFMabSjN/x",
            &cc
        )
        .await
        .status(),
        412
    );
}

#[tokio::test]
async fn documents_in_their_own_codec_406_otherwise() {
    let s = Server::start(FIXTURES);
    let r = get(&s, &format!("/ipfs/{DAG_CBOR}"), &[]).await;
    assert_eq!(hv(&r, "content-type"), "application/vnd.ipld.dag-cbor");
    assert_eq!(hv(&r, "etag"), format!("\"{DAG_CBOR}.dag-cbor\""));
    let r = get(&s, &format!("/ipfs/{DAG_CBOR}?format=dag-cbor"), &[]).await;
    assert_eq!(r.status(), 200);
    assert!(hv(&r, "content-disposition")
        .starts_with(&format!("attachment; filename=\"{DAG_CBOR}.cbor\"")));
    let r = get(
        &s,
        &format!("/ipfs/{DAG_JSON}"),
        &[("accept", "application/vnd.ipld.dag-json")],
    )
    .await;
    assert_eq!(hv(&r, "content-type"), "application/vnd.ipld.dag-json");
    assert!(hv(&r, "content-disposition").starts_with("inline"));
    for (path, accept) in [
        (format!("/ipfs/{DAG_CBOR}?format=dag-json"), ""),
        (format!("/ipfs/{DAG_JSON}"), "application/vnd.ipld.dag-cbor"),
        (format!("/ipfs/{DAG_PB}?format=dag-json"), ""),
        (format!("/ipfs/{DAG_PB}?format=json"), ""),
        (format!("/ipfs/{PLAIN_JSON}?format=dag-json"), ""),
    ] {
        let h: Vec<(&str, &str)> = if accept.is_empty() {
            vec![]
        } else {
            vec![("accept", accept)]
        };
        assert_eq!(get(&s, &path, &h).await.status(), 406, "{path} {accept}");
    }
    let r = get(&s, &format!("/ipfs/{PLAIN_JSON}"), &[]).await;
    assert_eq!(hv(&r, "content-type"), "application/json");
    // Pathing through links works; into a non-link value is 501.
    let r = get(&s, &format!("/ipfs/{DAG_CBOR}/foo/link"), &[]).await;
    assert_eq!(r.status(), 200);
    let r = get(&s, &format!("/ipfs/{DAG_CBOR}/foo/object/banana"), &[]).await;
    assert_eq!(r.status(), 501);
    // Browsers get an HTML view with links.
    let r = get(
        &s,
        &format!("/ipfs/{DAG_CBOR}/"),
        &[("accept", "text/html,*/*")],
    )
    .await;
    assert!(hv(&r, "content-type").starts_with("text/html"));
    assert!(hv(&r, "etag").starts_with("\"DagIndex-"));
    let html = r.text().await.unwrap();
    assert!(html.contains("class=\"link\" href=\"/ipfs/bafyreig5alecq2l2akgajxywgnv22kuxh6xcagsnelepylqovt4t5jxt6u/\""));
    // A JSON file inside UnixFS is a file, also for fetch() callers asking for JSON.
    let r = get(
        &s,
        "/ipfs/bafybeiafyvqlazbbbtjnn6how5d6h6l6rxbqc4qgpbmteaiskjrffmyy4a/%C4%85/%C4%99/t.json",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(hv(&r, "content-type"), "application/json");
}

#[tokio::test]
async fn tar_streams_and_refuses_escapes() {
    let s = Server::start(FIXTURES);
    let r = get(&s, &format!("/ipfs/{LISTING}?format=tar"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(hv(&r, "content-type"), "application/x-tar");
    assert_eq!(hv(&r, "etag"), format!("W/\"{LISTING}.x-tar\""));
    assert!(hv(&r, "content-disposition")
        .starts_with(&format!("attachment; filename=\"{LISTING}.tar\"")));
    let bytes = r.bytes().await.unwrap();
    let mut archive = tar::Archive::new(&bytes[..]);
    let mut names = Vec::new();
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        names.push(e.path().unwrap().display().to_string());
    }
    assert!(
        names.contains(&format!("{LISTING}/ą/ę/file-źł.txt")),
        "{names:?}"
    );
    let r = get(
        &s,
        "/ipfs/bafybeibfevfxlvxp5vxobr5oapczpf7resxnleb7tkqmdorc4gl5cdva3y",
        &[("accept", "application/x-tar")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let names: Vec<String> = tar::Archive::new(&bytes[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("foobar/file")),
        "{names:?}"
    );
    let r = get(
        &s,
        "/ipfs/bafybeicaj7kvxpcv4neaqzwhrqqmdstu4dhrwfpknrgebq6nzcecfucvyu?format=tar",
        &[],
    )
    .await;
    let body = r.bytes().await.unwrap();
    assert!(String::from_utf8_lossy(&body)
        .contains("relative UnixFS paths outside the root are now allowed"));
    assert!(
        !body.ends_with(&[0u8; 1024]),
        "a refused archive has no end marker"
    );
    assert_eq!(
        get(&s, &format!("/ipfs/{DAG_CBOR}?format=tar"), &[])
            .await
            .status(),
        400
    );
}

#[tokio::test]
async fn cors_and_preflight() {
    let s = Server::start(FIXTURES);
    let r = client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/ipfs/{DIR_WITH_FILES}/ascii.txt", s.url),
        )
        .header("origin", "https://example.net")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "range")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hv(&r, "access-control-allow-origin"), "*");
    assert!(hv(&r, "access-control-allow-methods").contains("GET"));
    assert!(hv(&r, "access-control-allow-headers").contains("Range"));
    let r = get(
        &s,
        &format!("/ipfs/{DIR_WITH_FILES}/ascii.txt"),
        &[("origin", "https://example.net")],
    )
    .await;
    let expose = hv(&r, "access-control-expose-headers");
    for h in [
        "Content-Range",
        "Etag",
        "X-Ipfs-Path",
        "X-Ipfs-Roots",
        "X-Cidgate-Tier",
        "Server-Timing",
    ] {
        assert!(expose.contains(h), "{h} exposed");
    }
    assert_eq!(hv(&r, "timing-allow-origin"), "*");
}

/// IPIP-548: every answer names its content path by one canonical `ipfs://` URI, whatever the
/// request's spelling; an encoded `/` separates segments and dot segments resolve; the legacy
/// `X-Ipfs-Path` is decoded, and left out where it cannot be a field value.
#[tokio::test]
async fn ipfs_uri_names_the_content_path() {
    let s = Server::start(FIXTURES);
    let dir = "bafybeig675grnxcmshiuzdaz2xalm6ef4thxxds6o6ypakpghm5kghpc34";
    let canonical = "Portugal%252C%2BEspa%C3%B1a%3DPeninsula%20Ib%C3%A9rica.txt";
    for spelling in [
        canonical,
        "Portugal%252C+Espa%C3%B1a=Peninsula%20Ib%C3%A9rica.txt",
        "Portugal%252C%2bEspa%c3%b1a%3dPeninsula%20Ib%c3%a9rica%2etxt",
    ] {
        let r = get(&s, &format!("/ipfs/{dir}/{spelling}"), &[]).await;
        assert_eq!(r.status(), 200, "{spelling}");
        assert_eq!(hv(&r, "ipfs-uri"), format!("ipfs://{dir}/{canonical}"));
        assert!(r.headers().get("x-ipfs-path").is_none(), "{spelling}");
    }
    // A CIDv0 root is named by its base32 CIDv1; the legacy header keeps the request's CID.
    let v1 = cid::Cid::try_from(DIR_WITH_FILES).unwrap();
    let v0 = cid::Cid::new_v0(*v1.hash()).unwrap();
    let r = get(&s, &format!("/ipfs/{v0}/ascii.txt"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        hv(&r, "ipfs-uri"),
        format!("ipfs://{DIR_WITH_FILES}/ascii.txt")
    );
    assert_eq!(hv(&r, "x-ipfs-path"), format!("/ipfs/{v0}/ascii.txt"));
    // Encoded separators and dot segments are the path they spell; climbing out is refused.
    let r = get(
        &s,
        &format!("/ipfs/{DIR_WITH_FILES}/x%2F..%2Fascii%2Etxt"),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        hv(&r, "ipfs-uri"),
        format!("ipfs://{DIR_WITH_FILES}/ascii.txt")
    );
    // An encoded separator right after the root separates it too.
    let r = get(&s, &format!("/ipfs/{DIR_WITH_FILES}%2fascii.txt"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello application/vnd.ipld.car\n");
    let r = get(&s, &format!("/ipfs/{LISTING}/%C4%85%2F%C4%99%2F"), &[]).await;
    assert_eq!(
        r.status(),
        301,
        "the URL, not the decoded path, decides on the slash"
    );
    let r = get(&s, &format!("/ipfs/{LISTING}/%C4%85%2F%C4%99/"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        hv(&r, "ipfs-uri"),
        format!("ipfs://{LISTING}/%C4%85/%C4%99/")
    );
    // (One encoded segment: a client's URL parser resolves a `%2E%2E` segment itself.)
    let r = get(&s, &format!("/ipfs/{DIR_WITH_FILES}/%2E%2E%2Fx"), &[]).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("climbs above"));
    // Redirects name the path asked for, before the slash is added; no query in the URI.
    let r = get(&s, &format!("/ipfs/{LISTING}/%C4%85/%C4%99?x=1"), &[]).await;
    assert_eq!(r.status(), 301);
    assert_eq!(
        hv(&r, "ipfs-uri"),
        format!("ipfs://{LISTING}/%C4%85/%C4%99")
    );
    let r = get(
        &s,
        &format!("/ipfs/{DIR_WITH_FILES}?format=raw&filename=x.bin"),
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(hv(&r, "ipfs-uri"), format!("ipfs://{DIR_WITH_FILES}"));
    // Cross-origin scripts may read it.
    assert!(hv(&r, "access-control-expose-headers").contains("Ipfs-Uri"));
}

/// The preflight is cacheable, and every answer is readable cross-origin: redirects of the
/// subdomain gateway (ipfs/rainbow#289), of directories, and errors.
#[tokio::test]
async fn cors_on_preflights_redirects_and_errors() {
    let s = Server::start_with(
        FIXTURES,
        &[("CIDGATE_SERVER__SUBDOMAIN_HOSTS", "localhost")],
        &[],
    );
    let addr: std::net::SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    let port = addr.port();
    let v1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am";
    let sub = |host: &str| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(host, addr)
            .build()
            .unwrap()
    };
    let check = |r: &reqwest::Response, what: &str| {
        assert_eq!(hv(r, "access-control-allow-origin"), "*", "{what}");
        assert_eq!(hv(r, "timing-allow-origin"), "*", "{what}");
        assert!(
            hv(r, "access-control-expose-headers").contains("X-Cidgate-Tier"),
            "{what}"
        );
    };
    for (host, url) in [
        ("localhost", format!("http://localhost:{port}/ipfs/{v1}/")),
        (
            "localhost",
            format!("http://localhost:{port}/ipfs/{v1}/a.txt"),
        ),
    ] {
        let r = sub(host)
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", "https://example.net")
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{url}");
        check(&r, &url);
        assert_eq!(hv(&r, "access-control-max-age"), "86400", "{url}");
        assert!(hv(&r, "access-control-allow-methods").contains("GET"));
    }
    // Path gateway → subdomain.
    let r = sub("localhost")
        .get(format!("http://localhost:{port}/ipfs/{v1}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    check(&r, "path to subdomain");
    // A non-canonical subdomain label (base36) → the canonical one.
    let b36 = cid::Cid::try_from(v1)
        .unwrap()
        .to_string_of_base(cid::multibase::Base::Base36Lower)
        .unwrap();
    let upper = format!("{b36}.ipfs.localhost");
    let r = sub(&upper)
        .get(format!("http://{upper}:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301, "{}", hv(&r, "location"));
    check(&r, "canonical label");
    // A directory without its trailing slash, on a subdomain and on the path gateway.
    let dir = {
        let cid = cid::Cid::try_from(LISTING).unwrap();
        cidgate::gateway::subdomain::dns_label(&cid).unwrap()
    };
    let host = format!("{dir}.ipfs.localhost");
    let r = sub(&host)
        .get(format!("http://{host}:{port}/%C4%85"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    check(&r, "subdomain directory");
    let r = get(&s, &format!("/ipfs/{LISTING}/%C4%85"), &[]).await;
    assert_eq!(r.status(), 301);
    check(&r, "path directory");
    // Errors.
    let r = get(&s, "/ipfs/not-a-cid", &[]).await;
    assert_eq!(r.status(), 400);
    check(&r, "error");
}

#[tokio::test]
async fn subdomain_gateway() {
    let s = Server::start_with(
        FIXTURES,
        &[("CIDGATE_SERVER__SUBDOMAIN_HOSTS", "localhost,example.com")],
        &[],
    );
    let addr: std::net::SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    let port = addr.port();
    let v1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am";
    let dir = "bafybeiffndsajwhk3lwjewwdxqntmjm4b5wxaaanokonsggenkbw6slwk4";
    let sub = |host: &str| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(host, addr)
            .build()
            .unwrap()
    };
    // A path request on the gateway host goes to the subdomain (CIDv0 as base32 CIDv1).
    let r = sub("localhost")
        .get(format!("http://localhost:{port}/ipfs/{v1}/?a=b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        hv(&r, "location"),
        format!("http://{v1}.ipfs.localhost:{port}/?a=b")
    );
    assert_eq!(hv(&r, "ipfs-uri"), format!("ipfs://{v1}/"));
    let r = sub("localhost")
        .get(format!(
            "http://localhost:{port}/ipfs/QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN/"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        hv(&r, "location"),
        format!("http://{dir}.ipfs.localhost:{port}/")
    );
    let r = sub("localhost")
        .get(format!("http://localhost:{port}/ipfs/{v1}"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(hv(&r, "location").starts_with("https://"));
    let too_long = "bafkrgqhhyivzstcz3hhswshfjgy6ertgmnqeleynhwt4dlfsthi4hn7zgh4uvlsb5xncykzapi3ocd4lzogukir6ksdy6wzrnz6ohnv4aglcs";
    let r = sub("localhost")
        .get(format!("http://localhost:{port}/ipfs/{too_long}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("DNS label length limit of 63"));

    // The subdomain serves the content at its own root.
    let host = format!("{v1}.ipfs.localhost");
    let r = sub(&host)
        .get(format!("http://{host}:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The content path, not the URL, is what `Ipfs-Uri` names.
    assert_eq!(hv(&r, "ipfs-uri"), format!("ipfs://{v1}/"));
    assert_eq!(r.text().await.unwrap(), "hello\n");
    // Behind a proxy the forwarded host decides.
    let r = client()
        .get(format!("{}/", s.url))
        .header("x-forwarded-host", format!("{v1}.ipfs.example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello\n");
    // IP hosts stay path gateways.
    assert_eq!(get(&s, &format!("/ipfs/{v1}"), &[]).await.status(), 200);
}

#[tokio::test]
async fn protocol_handler_and_namespace_mistakes() {
    let s = Server::start(&[]);
    let r = get(
        &s,
        "/ipfs/?uri=ipfs%3A%2F%2Fbafkqaaa%2Fwiki%2Fx%3Fa%3Db",
        &[],
    )
    .await;
    assert_eq!(r.status(), 301);
    assert_eq!(hv(&r, "location"), "/ipfs/bafkqaaa/wiki/x?a=b");
    assert_eq!(
        get(&s, "/ipfs/?uri=https%3A%2F%2Fexample.com", &[])
            .await
            .status(),
        400
    );
    assert_eq!(get(&s, "/ipfs/ipfs/bafkqaaa", &[]).await.status(), 400);
    assert_eq!(
        get(&s, "/ipfs/bafkqaaa", &[("service-worker", "script")])
            .await
            .status(),
        400
    );
    assert_eq!(get(&s, "/ipfs/bafkqaaa", &[]).await.status(), 200);
}

/// On a subdomain gateway, `/ipfs/{cid}` paths are inside the root CID, so a listing (and the
/// dag-json view) must link other CIDs through the path gateway host, whose `/ipfs/` redirects
/// to the CID's own subdomain; the strings are the upstream conformance suite's. Following the
/// CID link of a non-ASCII name names the download once-escaped in `Content-Disposition`.
#[tokio::test]
async fn subdomain_listing_links_work_and_name_downloads_once() {
    let s = Server::start_with(
        FIXTURES,
        &[("CIDGATE_SERVER__SUBDOMAIN_HOSTS", "localhost")],
        &[],
    );
    let addr: std::net::SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    let port = addr.port();
    let root_label = {
        let cid = cid::Cid::try_from(LISTING).unwrap();
        cidgate::gateway::subdomain::dns_label(&cid).unwrap()
    };
    let host = format!("{root_label}.ipfs.localhost");
    let sub = |host: &str| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(host, addr)
            .build()
            .unwrap()
    };
    let r = sub(&host)
        .get(format!("http://{host}:{port}/%C4%85/%C4%99/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let gw = format!("localhost:{port}");
    for want in [
        "<a href=\"/%C4%85/%C4%99/..\">..</a>".to_string(),
        format!(
            "/ipfs/<a href=\"//{gw}/ipfs/{root_label}\">{root_label}</a>/<a href=\"//{gw}/ipfs/{root_label}/%C4%85\">ą</a>/<a href=\"//{gw}/ipfs/{root_label}/%C4%85/%C4%99\">ę</a>"
        ),
        "<a href=\"/%C4%85/%C4%99/file-%C5%BA%C5%82.txt\">file-źł.txt</a>".to_string(),
        format!(
            "<a class=\"ipfs-hash\" translate=\"no\" href=\"//{gw}/ipfs/{LISTING_FILE}?filename=file-%25C5%25BA%25C5%2582.txt\">"
        ),
    ] {
        assert!(html.contains(&want), "{want}\n{html}");
    }
    // The CID link redirects to the file's subdomain, keeping the query…
    let r = sub("localhost")
        .get(format!(
            "http://{gw}/ipfs/{LISTING_FILE}?filename=file-%25C5%25BA%25C5%2582.txt"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    let location = hv(&r, "location");
    assert_eq!(
        location,
        format!(
            "http://{LISTING_FILE}.ipfs.localhost:{port}/?filename=file-%25C5%25BA%25C5%2582.txt"
        )
    );
    // … where the file is served, named once-escaped (RFC 6266 / 8187).
    let r = sub(&format!("{LISTING_FILE}.ipfs.localhost"))
        .get(location)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        hv(&r, "content-disposition"),
        "inline; filename=\"file-__.txt\"; filename*=UTF-8''file-%C5%BA%C5%82.txt"
    );
    // The dag-cbor / dag-json view links its CIDs through the path gateway too.
    let dag_label = {
        let cid = cid::Cid::try_from(DAG_CBOR).unwrap();
        cidgate::gateway::subdomain::dns_label(&cid).unwrap()
    };
    let host = format!("{dag_label}.ipfs.localhost");
    let r = sub(&host)
        .get(format!("http://{host}:{port}/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains(&format!("class=\"link\" href=\"//{gw}/ipfs/bafy")),
        "{html}"
    );
    assert!(!html.contains("href=\"/ipfs/"), "{html}");
}

/// JSON on UnixFS is `application/json` with no hint, with `Accept: application/json` and with
/// `?format=json` (IPIP-524's UnixFS exception; the conformance suite's "GET UnixFS file with
/// JSON bytes"); `?format=json` on anything else on UnixFS is still 406, and dag-json asked
/// for as JSON (dag-cbor as CBOR) is the same bytes with the plain type.
#[tokio::test]
async fn json_on_unixfs_is_application_json() {
    const JSON_FILE: &str = "bafkreibrppizs3g7axs2jdlnjua6vgpmltv7k72l7v7sa6mmht6mne3qqe";
    const JSON_DIR: &str = "bafybeiafyvqlazbbbtjnn6how5d6h6l6rxbqc4qgpbmteaiskjrffmyy4a";
    let s = Server::start(FIXTURES);
    let plain = get(&s, &format!("/ipfs/{JSON_FILE}"), &[]).await;
    assert_eq!(plain.status(), 200);
    assert_eq!(hv(&plain, "content-type"), "application/json");
    let body = plain.bytes().await.unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
    for (path, accept) in [
        (format!("/ipfs/{JSON_FILE}"), "application/json"),
        (format!("/ipfs/{JSON_FILE}?format=json"), ""),
        (
            format!("/ipfs/{JSON_FILE}?format=json"),
            "application/vnd.ipld.raw",
        ),
        (
            format!("/ipfs/{JSON_DIR}/%C4%85/%C4%99/t.json?format=json"),
            "",
        ),
        (
            format!("/ipfs/{JSON_DIR}/%C4%85/%C4%99/t.json"),
            "application/json",
        ),
    ] {
        let h: Vec<(&str, &str)> = if accept.is_empty() {
            vec![]
        } else {
            vec![("accept", accept)]
        };
        let r = get(&s, &path, &h).await;
        assert_eq!(r.status(), 200, "{path} {accept}");
        assert_eq!(
            hv(&r, "content-type"),
            "application/json",
            "{path} {accept}"
        );
        assert_eq!(r.bytes().await.unwrap(), body, "{path} {accept}");
    }
    // Not JSON: `?format=json` is 406; `Accept: application/json` alone gets the file.
    let r = get(&s, &format!("/ipfs/{LISTING_FILE}?format=json"), &[]).await;
    assert_eq!(r.status(), 406);
    let r = get(
        &s,
        &format!("/ipfs/{LISTING_FILE}"),
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(hv(&r, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(
        get(&s, &format!("/ipfs/{JSON_DIR}/?format=json"), &[])
            .await
            .status(),
        406
    );
    // dag-json as JSON, dag-cbor as CBOR: the block as is, with the plain type.
    let raw = get(&s, &format!("/ipfs/{DAG_JSON}?format=raw"), &[])
        .await
        .bytes()
        .await
        .unwrap();
    let r = get(&s, &format!("/ipfs/{DAG_JSON}?format=json"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(hv(&r, "content-type"), "application/json");
    assert_eq!(hv(&r, "etag"), format!("\"{DAG_JSON}.json\""));
    assert_eq!(r.bytes().await.unwrap(), raw);
    let r = get(&s, &format!("/ipfs/{DAG_CBOR}?format=cbor"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(hv(&r, "content-type"), "application/cbor");
    assert_eq!(
        get(&s, &format!("/ipfs/{DAG_CBOR}?format=json"), &[])
            .await
            .status(),
        406
    );
    assert_eq!(
        get(&s, &format!("/ipfs/{DAG_JSON}?format=cbor"), &[])
            .await
            .status(),
        406
    );
}

/// Browsers (Accept lists text/html) get an HTML error page with the status, the reason and
/// the path; everyone else the one-line reason.
#[tokio::test]
async fn error_pages_for_browsers_plain_text_otherwise() {
    let s = Server::start(FIXTURES);
    let path = format!("/ipfs/{LISTING}/i-do-not-exist");
    let r = get(
        &s,
        &path,
        &[(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )],
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(hv(&r, "content-type"), "text/html; charset=utf-8");
    let page = r.text().await.unwrap();
    assert!(page.contains("<title>404 Not Found</title>"), "{page}");
    assert!(page.contains(&format!("<code>{path}</code>")), "{page}");
    assert!(page.contains("i-do-not-exist"), "{page}");
    let r = get(&s, &path, &[]).await;
    assert_eq!(r.status(), 404);
    assert_eq!(hv(&r, "content-type"), "text/plain; charset=utf-8");
    let text = r.text().await.unwrap();
    assert!(!text.contains('<') && text.ends_with('\n') && text.lines().count() == 1);
    let r = get(&s, "/ipfs/not-a-cid", &[("accept", "text/html")]).await;
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("<title>400 Bad Request</title>"));
}

/// The listing page: a header row, sizes from the links, CAR and TAR downloads, and pages of
/// `?limit=` entries after `?after=` with a link to the next one.
#[tokio::test]
async fn listing_pages_with_header_sizes_and_downloads() {
    let s = Server::start(FIXTURES);
    let html = get(&s, &format!("/ipfs/{DIR_WITH_FILES}/"), &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(
            "<th class=\"name\">Name</th><th class=\"cid\">CID</th><th class=\"size\">Size</th>"
        ),
        "{html}"
    );
    assert!(html.contains("href=\"?format=car\">CAR</a>"), "{html}");
    assert!(html.contains("href=\"?format=tar\">TAR</a>"), "{html}");
    assert!(html.contains("<td class=\"size\">1.2 KiB</td>"), "{html}");
    assert!(html.contains("4 entries, 1.5 KiB in all"), "{html}");
    assert!(!html.contains("next page"), "{html}");
    let names = |html: &str| -> Vec<String> {
        html.split("<td class=\"name\"><a href=\"")
            .skip(1)
            .filter_map(|r| Some(r.split_once("\">")?.1.split_once("</a>")?.0.to_string()))
            .filter(|n| n != "..")
            .collect()
    };
    let all = names(&html);
    assert!(all.len() >= 3, "{all:?}");
    // One entry a page: every entry once, in order, each page linking the next.
    let mut seen = Vec::new();
    let mut next = format!("/ipfs/{DIR_WITH_FILES}/?limit=1");
    loop {
        let r = get(&s, &next, &[]).await;
        assert_eq!(r.status(), 200, "{next}");
        let page = r.text().await.unwrap();
        let got = names(&page);
        assert_eq!(got.len(), 1, "{next}: {page}");
        seen.extend(got);
        let Some(href) = page
            .split("rel=\"next\" href=\"")
            .nth(1)
            .and_then(|r| r.split_once('"'))
            .map(|(h, _)| h.replace("&amp;", "&"))
        else {
            break;
        };
        assert!(href.starts_with("?limit=1&after="), "{href}");
        next = format!("/ipfs/{DIR_WITH_FILES}/{href}");
    }
    assert_eq!(seen, all);
    for bad in ["?limit=0", "?limit=x", "?limit=10001"] {
        let r = get(&s, &format!("/ipfs/{DIR_WITH_FILES}/{bad}"), &[]).await;
        assert_eq!(r.status(), 400, "{bad}");
    }
}

/// A 100 000-entry HAMT directory lists its first page in well under a second: the walk over
/// its shards stops when the page is full instead of reading every shard of the directory.
#[tokio::test]
async fn first_page_of_a_huge_hamt_directory_is_fast() {
    use cidgate::ipld::builder::{self, Entry, FileBuilder};
    use cidgate::ipld::{car, Block};
    use std::io::Write;

    let mut blocks: Vec<Block> = Vec::new();
    let mut fb = FileBuilder::new();
    fb.write(b"one small file under 100 000 names\n", &mut blocks)
        .unwrap();
    let file = fb.finish(&mut blocks).unwrap();
    let entries: Vec<(String, Entry)> = (0..100_000)
        .map(|i| (format!("entry-{i:06}.txt"), file))
        .collect();
    let root = builder::directory(entries, &mut blocks).unwrap();
    let shards = blocks.len() - 1;
    let dir = tempfile::tempdir().unwrap();
    let car_path = dir.path().join("hamt.car");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&car_path).unwrap());
        f.write_all(&car::header(&[root.cid]).unwrap()).unwrap();
        for b in &blocks {
            f.write_all(&car::frame_prefix(b.cid(), b.len())).unwrap();
            f.write_all(b.data()).unwrap();
        }
    }
    let data = tempfile::tempdir().unwrap();
    let out = common::cidgate(data.path(), &["import", car_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = Server::spawn(data, &[], &[]);
    let url = format!("/ipfs/{}/", root.cid);
    let start = std::time::Instant::now();
    let r = get(&s, &url, &[]).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let elapsed = start.elapsed();
    eprintln!(
        "first page of a 100 000-entry HAMT ({shards} shards): {:.1} ms",
        elapsed.as_secs_f64() * 1000.0
    );
    assert!(
        elapsed < std::time::Duration::from_millis(500),
        "first page took {elapsed:?}"
    );
    let rows = page.matches("<td class=\"name\">").count();
    assert_eq!(rows, 1000, "the default page size");
    assert!(page.contains("rel=\"next\""));
    // The next page starts where the first ended, with none of its names.
    let href = page
        .split("rel=\"next\" href=\"")
        .nth(1)
        .and_then(|r| r.split_once('"'))
        .map(|(h, _)| h.replace("&amp;", "&"))
        .unwrap();
    let start = std::time::Instant::now();
    let next = get(&s, &format!("{url}{href}"), &[])
        .await
        .text()
        .await
        .unwrap();
    eprintln!(
        "a later page: {:.1} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    let first_names: std::collections::HashSet<&str> = page
        .split("<td class=\"name\"><a href=\"")
        .skip(1)
        .filter_map(|r| {
            r.split_once("\">")
                .map(|(_, n)| n.split_once('<').map(|x| x.0))
        })
        .flatten()
        .collect();
    let next_names: Vec<&str> = next
        .split("<td class=\"name\"><a href=\"")
        .skip(1)
        .filter_map(|r| {
            r.split_once("\">")
                .map(|(_, n)| n.split_once('<').map(|x| x.0))
        })
        .flatten()
        .collect();
    assert_eq!(next_names.len(), 1000);
    assert!(next_names.iter().all(|n| !first_names.contains(n)));
}
