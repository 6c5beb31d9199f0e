//! The trustless gateway (raw blocks and CARs) against the conformance fixtures, over real HTTP.

mod common;

use common::{client, parse_car, Server};

const ALL: &[&str] = &[
    "gateway-raw-block.car",
    "gateway-cache/fixtures.car",
    "trustless_gateway_car/subdir-with-two-single-block-files.car",
    "trustless_gateway_car/subdir-with-mixed-block-files.car",
    "trustless_gateway_car/single-layer-hamt-with-multi-block-files.car",
    "trustless_gateway_car/dir-with-dag-cbor-with-links.car",
    "trustless_gateway_car/dir-with-duplicate-files.car",
    "trustless_gateway_car/file-3k-and-3-blocks-missing-block.car",
];

const RAW_ROOT: &str = "bafybeie72edlprgtlwwctzljf6gkn2wnlrddqjbkxo3jomh4n7omwblxly";
const ASCII: &str = "bafkreihhpc5y2pqvl5rbe5uuyhqjouybfs3rvlmisccgzue2kkt5zq6upq";
const TWO_ROOT: &str = "bafybeietjm63oynimmv5yyqay33nui4y4wx6u3peezwetxgiwvfmelutzu";
const TWO_SUBDIR: &str = "bafybeiggghzz6dlue3m6nb2dttnbrygxh3lrjl5764f2m4gq7dgzdt55o4";
const TWO_ASCII: &str = "bafkreifkam6ns4aoolg3wedr4uzrs3kvq66p4pecirz6y2vlrngla62mxm";
const MIXED_ROOT: &str = "bafybeidh6k2vzukelqtrjsmd4p52cpmltd2ufqrdtdg6yigi73in672fwu";
const MIXED_SUBDIR: &str = "bafybeicnmple4ehlz3ostv2sbojz3zhh5q7tz5r2qkfdpqfilgggeen7xm";
const MULTI: &str = "bafybeigcisqd7m5nf3qmuvjdbakl5bdnh4ocrmacaqkpuh77qjvggmt2sa";
const LEAVES: [&str; 5] = [
    "bafkreie5noke3mb7hqxukzcy73nl23k6lxszxi5w3dtmuwz62wnvkpsscm",
    "bafkreih4ephajybraj6wnxsbwjwa77fukurtpl7oj7t7pfq545duhot7cq",
    "bafkreigu7buvm3cfunb35766dn7tmqyh2um62zcio63en2btvxuybgcpue",
    "bafkreicll3huefkc3qnrzeony7zcfo7cr3nbx64hnxrqzsixpceg332fhe",
    "bafkreifst3pqztuvj57lycamoi7z34b4emf7gawxs74nwrc2c7jncmpaqm",
];
const HAMT_ROOT: &str = "bafybeidbclfqleg2uojchspzd4bob56dqetqjsj27gy2cq3klkkgxtpn4i";
const CBOR_DIR: &str = "bafybeia264q44a3kmfc2otctzu4egp2k235o3t7mslz2yjraymp4nv6asi";
const CBOR_DOC: &str = "bafyreidy4q6mmetut5jzc54ambsfnatbyoujmwbfzyyolqw24majazwgha";
const HELLO: &str = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4";
const DUPS_ROOT: &str = "bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy";
const MISSING_ROOT: &str = "QmYhmPjhFjYFyaoiuNzYv8WGavpSRDwdHWe5B4M5du5Rtk";

async fn get(s: &Server, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = client().get(format!("{}{path}", s.url));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

async fn car_blocks(s: &Server, path: &str) -> Vec<String> {
    let resp = get(s, path, &[]).await;
    assert_eq!(resp.status(), 200, "{path}");
    parse_car(&resp.bytes().await.unwrap()).cids()
}

/// The same CAR request made with `?format=car` and with only the Accept header.
async fn car_both_ways(s: &Server, path_and_query: &str) -> Vec<String> {
    let sep = if path_and_query.contains('?') {
        '&'
    } else {
        '?'
    };
    let with_query = car_blocks(s, &format!("{path_and_query}{sep}format=car")).await;
    let resp = get(s, path_and_query, &[("accept", "application/vnd.ipld.car")]).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["accept-ranges"], "none");
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/vnd.ipld.car"));
    let cd = h["content-disposition"].to_str().unwrap();
    assert!(
        cd.starts_with("attachment; filename=\"") && cd.contains(".car\""),
        "{cd}"
    );
    let with_accept = parse_car(&resp.bytes().await.unwrap()).cids();
    assert_eq!(with_query, with_accept, "{path_and_query}");
    with_query
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn raw_block_headers_and_body() {
    let s = Server::start(ALL);
    for req in [
        (format!("/ipfs/{ASCII}?format=raw"), vec![]),
        (
            format!("/ipfs/{ASCII}"),
            vec![("accept", "application/vnd.ipld.raw")],
        ),
    ] {
        let resp = get(&s, &req.0, &req.1).await;
        assert_eq!(resp.status(), 200);
        let h = resp.headers().clone();
        assert_eq!(h["content-type"], "application/vnd.ipld.raw");
        assert_eq!(h["content-length"], "31");
        assert_eq!(h["etag"], format!("\"{ASCII}.raw\"").as_str());
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "public, max-age=29030400, immutable");
        assert_eq!(h["x-ipfs-path"], format!("/ipfs/{ASCII}").as_str());
        assert!(h["x-ipfs-roots"].to_str().unwrap().contains(ASCII));
        assert_eq!(
            h["content-disposition"],
            format!("attachment; filename=\"{ASCII}.bin\"; filename*=UTF-8''{ASCII}.bin").as_str()
        );
        assert!(h["vary"].to_str().unwrap().contains("Accept"));
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(
            &resp.bytes().await.unwrap()[..],
            b"hello application/vnd.ipld.raw\n"
        );
    }
    let resp = get(
        &s,
        &format!("/ipfs/{ASCII}?format=raw&filename=foobar.bin"),
        &[],
    )
    .await;
    assert!(resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename=\"foobar.bin\""));
    let head = client()
        .head(format!("{}/ipfs/{ASCII}?format=raw", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "31");
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn raw_block_at_the_end_of_a_path_and_of_a_directory() {
    let s = Server::start(ALL);
    let resp = get(
        &s,
        &format!("/ipfs/{RAW_ROOT}/dir/ascii.txt"),
        &[("accept", "application/vnd.ipld.raw")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], format!("\"{ASCII}.raw\"").as_str());
    assert_eq!(
        resp.headers()["x-ipfs-path"],
        format!("/ipfs/{RAW_ROOT}/dir/ascii.txt").as_str()
    );
    let roots = resp.headers()["x-ipfs-roots"].to_str().unwrap().to_string();
    assert_eq!(roots.split(',').count(), 3);
    assert!(roots.starts_with(RAW_ROOT) && roots.ends_with(ASCII));
    // The raw block of a directory is its dag-pb bytes.
    let resp = get(
        &s,
        "/ipfs/bafybeib3ffl2teiqdncv3mkz4r23b5ctrwkzrrhctdbne6iboayxuxk5ui/root2/root3/root4/?format=raw",
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), 58);
}

#[tokio::test]
async fn raw_ranges() {
    let s = Server::start(ALL);
    let url = format!("/ipfs/{ASCII}?format=raw");
    let resp = get(&s, &url, &[("range", "bytes=6-16")]).await;
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], "bytes 6-16/31");
    assert_eq!(&resp.bytes().await.unwrap()[..], b"application");
    let resp = get(&s, &url, &[("range", "bytes=6-16,0-4")]).await;
    assert_eq!(resp.status(), 206);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("multipart/byteranges; boundary="));
    let body = String::from_utf8(resp.bytes().await.unwrap().to_vec()).unwrap();
    assert!(body.contains("Content-Range: bytes 6-16/31\r\n\r\napplication"));
    assert!(body.contains("Content-Range: bytes 0-4/31\r\n\r\nhello"));
    let resp = get(&s, &url, &[("range", "bytes=100-200")]).await;
    assert_eq!(resp.status(), 416);
    assert_eq!(resp.headers()["content-range"], "bytes */31");
    // If-Range with another validator: the whole block.
    let resp = get(
        &s,
        &url,
        &[("range", "bytes=0-4"), ("if-range", "\"other\"")],
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn car_of_a_path_starts_with_the_path_blocks() {
    let s = Server::start(ALL);
    let got = car_both_ways(&s, &format!("/ipfs/{TWO_ROOT}/subdir/ascii.txt")).await;
    assert_eq!(got, strs(&[TWO_ROOT, TWO_SUBDIR, TWO_ASCII]));
    let got = car_both_ways(&s, &format!("/ipfs/{TWO_ROOT}/subdir?dag-scope=block")).await;
    assert_eq!(got, strs(&[TWO_ROOT, TWO_SUBDIR]));
    let got = car_both_ways(&s, &format!("/ipfs/{TWO_ROOT}?dag-scope=entity")).await;
    assert_eq!(got, strs(&[TWO_ROOT]));
    let resp = get(
        &s,
        &format!("/ipfs/{TWO_ROOT}/subdir/i-do-not-exist?format=car"),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn car_scopes_of_files() {
    let s = Server::start(ALL);
    let file = format!("/ipfs/{MIXED_ROOT}/subdir/multiblock.txt");
    let mut whole = strs(&[MIXED_ROOT, MIXED_SUBDIR, MULTI]);
    whole.extend(strs(&LEAVES));
    assert_eq!(
        car_both_ways(&s, &format!("{file}?dag-scope=entity")).await,
        whole
    );
    assert_eq!(car_both_ways(&s, &file).await, whole);
    assert_eq!(
        car_both_ways(&s, &format!("{file}?dag-scope=block")).await,
        strs(&[MIXED_ROOT, MIXED_SUBDIR, MULTI])
    );
    // dag-scope=all of the directory: everything below it, depth-first.
    let all = car_both_ways(&s, &format!("/ipfs/{MIXED_ROOT}/subdir")).await;
    assert_eq!(&all[..2], &strs(&[MIXED_ROOT, MIXED_SUBDIR])[..]);
    assert!(all.contains(&MULTI.to_string()) && all.ends_with(&strs(&LEAVES)));
}

#[tokio::test]
async fn entity_bytes_select_only_the_covering_leaves() {
    let s = Server::start(ALL);
    let path = [MIXED_ROOT, MIXED_SUBDIR, MULTI];
    let cases: &[(&str, &[usize])] = &[
        ("0:*", &[0, 1, 2, 3, 4]),
        ("512:*", &[2, 3, 4]),
        ("512:1023", &[2, 3]),
        ("512:-256", &[2, 3]),
        ("-5:*", &[3, 4]),
        ("-9999:*", &[0, 1, 2, 3, 4]),
        ("-9999:-3", &[0, 1, 2, 3]),
        ("0:0", &[0]),
    ];
    for (range, leaves) in cases {
        let mut want = strs(&path);
        want.extend(leaves.iter().map(|i| LEAVES[*i].to_string()));
        let got = car_both_ways(
            &s,
            &format!(
                "/ipfs/{MIXED_ROOT}/subdir/multiblock.txt?dag-scope=entity&entity-bytes={range}"
            ),
        )
        .await;
        assert_eq!(got, want, "entity-bytes={range}");
    }
    // Beyond the end: just the file root, as dag-scope=block.
    let got = car_blocks(
        &s,
        &format!("/ipfs/{MIXED_ROOT}/subdir/multiblock.txt?format=car&entity-bytes=5000:*"),
    )
    .await;
    assert_eq!(got, strs(&path));
}

#[tokio::test]
async fn entity_bytes_do_not_need_blocks_outside_the_range() {
    let s = Server::start(ALL);
    let got = car_blocks(
        &s,
        &format!("/ipfs/{MISSING_ROOT}?format=car&dag-scope=entity&entity-bytes=0:1000"),
    )
    .await;
    assert_eq!(
        got,
        strs(&[
            MISSING_ROOT,
            "QmPKt7ptM2ZYSGPUc8PmPT2VBkLDK3iqpG9TBJY7PCE9rF"
        ])
    );
    let got = car_blocks(
        &s,
        &format!("/ipfs/{MISSING_ROOT}?format=car&dag-scope=entity&entity-bytes=2200:*"),
    )
    .await;
    assert_eq!(
        got,
        strs(&[
            MISSING_ROOT,
            "QmWXY482zQdwecnfBsj78poUUuPXvyw2JAFAEMw4tzTavV"
        ])
    );
    // The whole file needs the missing block: the stream is cut, never completed.
    let resp = get(&s, &format!("/ipfs/{MISSING_ROOT}?format=car"), &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.bytes().await.is_err(),
        "a CAR missing a block must not end cleanly"
    );
}

#[tokio::test]
async fn duplicates_follow_dups_parameter() {
    let s = Server::start(ALL);
    let with = |dups: &str| format!("application/vnd.ipld.car; version=1; order=dfs; dups={dups}");
    let resp = get(&s, &format!("/ipfs/{DUPS_ROOT}"), &[("accept", &with("y"))]).await;
    assert_eq!(resp.headers()["content-type"], with("y").as_str());
    let y = parse_car(&resp.bytes().await.unwrap()).cids();
    let resp = get(&s, &format!("/ipfs/{DUPS_ROOT}"), &[("accept", &with("n"))]).await;
    assert_eq!(resp.headers()["content-type"], with("n").as_str());
    let n = parse_car(&resp.bytes().await.unwrap()).cids();
    assert_eq!(y.len(), 10);
    assert_eq!(n.len(), 9);
    assert_eq!(
        y[1], y[2],
        "the duplicate file appears twice in a row with dups=y"
    );
    // ?format=car with a CAR Accept keeps the Accept's parameters.
    let resp = get(
        &s,
        &format!("/ipfs/{DUPS_ROOT}?format=car"),
        &[("accept", &with("y"))],
    )
    .await;
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("dups=y"));
    // Default is dfs without duplicates; order=unk is echoed.
    let resp = get(&s, &format!("/ipfs/{DUPS_ROOT}?format=car"), &[]).await;
    assert_eq!(resp.headers()["content-type"], with("n").as_str());
    let resp = get(
        &s,
        &format!("/ipfs/{DUPS_ROOT}"),
        &[("accept", "application/vnd.ipld.car; order=unk")],
    )
    .await;
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("order=unk"));
    assert_eq!(parse_car(&resp.bytes().await.unwrap()).blocks.len(), 9);
}

#[tokio::test]
async fn hamt_paths_and_entity() {
    let s = Server::start(ALL);
    let got = car_blocks(
        &s,
        &format!("/ipfs/{HAMT_ROOT}/1.txt?format=car&dag-scope=block"),
    )
    .await;
    assert_eq!(got[0], HAMT_ROOT);
    assert!(got.len() >= 2);
    let file = car_blocks(&s, &format!("/ipfs/{HAMT_ROOT}/685.txt?format=car")).await;
    assert_eq!(file[0], HAMT_ROOT);
    // The entity of a HAMT directory is all of its shards and none of its entries.
    let entity = car_blocks(
        &s,
        &format!("/ipfs/{HAMT_ROOT}?format=car&dag-scope=entity"),
    )
    .await;
    let same = car_blocks(
        &s,
        &format!("/ipfs/{HAMT_ROOT}?format=car&entity-bytes=0:*"),
    )
    .await;
    assert_eq!(entity, same);
    let all = car_blocks(&s, &format!("/ipfs/{HAMT_ROOT}?format=car")).await;
    assert!(all.len() > entity.len());
    assert!(
        !entity.iter().any(|c| c.starts_with("bafkrei")),
        "no file leaves in a HAMT entity"
    );
    let resp = get(
        &s,
        &format!("/ipfs/{HAMT_ROOT}/no-such-name.txt?format=raw"),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn paths_through_dag_cbor() {
    let s = Server::start(ALL);
    let got = car_both_ways(&s, &format!("/ipfs/{CBOR_DOC}/files/single")).await;
    assert_eq!(got, strs(&[CBOR_DOC, HELLO]));
    let got = car_both_ways(&s, &format!("/ipfs/{CBOR_DIR}/document?dag-scope=entity")).await;
    assert_eq!(got, strs(&[CBOR_DIR, CBOR_DOC]));
}

#[tokio::test]
async fn identity_cids_and_the_probe() {
    let s = Server::start(&[]);
    let resp = get(&s, "/ipfs/bafkqaaa?format=raw", &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = get(&s, "/ipfs/bafkqaaa?format=car", &[]).await;
    assert_eq!(resp.status(), 200);
    let car = parse_car(&resp.bytes().await.unwrap());
    assert_eq!(car.roots[0].to_string(), "bafkqaaa");
    let resp = get(
        &s,
        "/ipfs/bafkqaf3imvwgy3zaneqgc3janfxgy2lomvscay3jmqfa",
        &[("accept", "application/vnd.ipld.car; dups=y")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("dups=y"));
    assert!(
        parse_car(&resp.bytes().await.unwrap()).blocks.is_empty(),
        "identity blocks are never sent"
    );
}

#[tokio::test]
async fn only_if_cached() {
    let s = Server::start(ALL);
    let missing = "/ipfs/QmYzfKSE55XCjD1MW128RfciAf2DViABhEiXfgVFMabSjN?format=raw";
    let cc = [("cache-control", "only-if-cached")];
    assert_eq!(get(&s, missing, &cc).await.status(), 412);
    let head = client()
        .head(format!("{}{missing}", s.url))
        .header("cache-control", "only-if-cached")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 412);
    let held = "/ipfs/bafybeib3ffl2teiqdncv3mkz4r23b5ctrwkzrrhctdbne6iboayxuxk5ui/root2/root3/root4/?format=raw";
    let resp = get(&s, held, &cc).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert_eq!(
        get(&s, &format!("/ipfs/{DUPS_ROOT}?format=car"), &cc)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn if_none_match_gives_304() {
    let s = Server::start(ALL);
    let etag = format!("\"{ASCII}.raw\"");
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"x\", {etag}"),
        "*".to_string(),
    ] {
        let resp = get(
            &s,
            &format!("/ipfs/{ASCII}?format=raw"),
            &[("if-none-match", &inm)],
        )
        .await;
        assert_eq!(resp.status(), 304, "{inm}");
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    let url = format!("/ipfs/{DUPS_ROOT}?format=car");
    let car_etag = get(&s, &url, &[]).await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(car_etag.starts_with("W/\""));
    assert_eq!(
        get(&s, &url, &[("if-none-match", &car_etag)])
            .await
            .status(),
        304
    );
    let other = get(&s, &format!("{url}&dag-scope=entity"), &[])
        .await
        .headers()["etag"]
        .clone();
    assert_ne!(other.to_str().unwrap(), car_etag, "etags differ per scope");
}

#[tokio::test]
async fn bad_requests_get_clear_4xx() {
    let s = Server::start(ALL);
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16);
    let cases: &[Case] = &[
        ("/ipfs/not-a-cid?format=raw", &[], 400),
        ("/ipfs/?format=raw", &[], 400),
        ("/ipfs/bafkqaaa?format=zip", &[], 400),
        ("/ipfs/bafkqaaa?format=car&dag-scope=deep", &[], 400),
        ("/ipfs/bafkqaaa?format=car&entity-bytes=9:1", &[], 400),
        ("/ipfs/bafkqaaa?format=car&entity-bytes=x", &[], 400),
        (
            "/ipfs/bafkqaaa",
            &[("accept", "application/vnd.ipld.car; version=2")],
            400,
        ),
        (
            "/ipfs/bafkqaaa",
            &[("accept", "application/vnd.ipld.car; dups=maybe")],
            400,
        ),
        (
            "/ipfs/bafkqaaa",
            &[("accept", "application/vnd.ipld.nope")],
            406,
        ),
        (
            "/ipfs/QmYzfKSE55XCjD1MW128RfciAf2DViABhEiXfgVFMabSjN?format=raw",
            &[],
            404,
        ),
        (
            "/ipfs/QmYzfKSE55XCjD1MW128RfciAf2DViABhEiXfgVFMabSjN?format=car",
            &[],
            404,
        ),
        ("/nothing-here", &[], 404),
    ];
    for (path, headers, status) in cases {
        let resp = get(&s, path, headers).await;
        assert_eq!(resp.status().as_u16(), *status, "{path} {headers:?}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let body = resp.text().await.unwrap();
        assert_eq!(
            body.trim_end().lines().count(),
            1,
            "one-line reason: {body:?}"
        );
    }
    let resp = client()
        .post(format!("{}/ipfs/bafkqaaa", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert!(resp.headers()["allow"].to_str().unwrap().contains("GET"));
    let resp = client()
        .request(reqwest::Method::OPTIONS, format!("{}/ipfs/bafkqaaa", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let home = get(&s, "/", &[]).await;
    assert_eq!(home.status(), 200);
    assert!(home.text().await.unwrap().contains("cidgate"));
}
