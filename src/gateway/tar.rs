//! `application/x-tar`: a TAR of a UnixFS file or directory, streamed entry by entry. Entry
//! names that would escape the archive root are refused.

use bytes::{Bytes, BytesMut};
use cid::Cid;
use http::header::CONTENT_TYPE;
use http::{Response, StatusCode};
use tar::{EntryType, Header};
use tokio::sync::mpsc;

use super::body::{channel, BodyError};
use super::error::GatewayError;
use super::headers::set;
use super::request::GatewayRequest;
use super::unixfs_file::pump;
use super::{Body, Gateway};
use crate::content::{list_directory, ContentError};
use crate::ipld::unixfs::FsNode;
use crate::ipld::{Block, DAG_PB, RAW};
use crate::tiers::BlockSource;

/// The reference gateway's message for entries outside the root; clients match on it.
pub const OUTSIDE_ROOT: &str =
    "relative UnixFS paths outside the root are now allowed, use CAR instead";

/// Serves a TAR of the request's UnixFS entity.
pub async fn respond(gw: &Gateway, req: &GatewayRequest) -> Result<Response<Body>, GatewayError> {
    // The stream runs as long as the response body (see `body::holding` below).
    let interest = if req.head {
        crate::tiers::Interest::none()
    } else {
        gw.prefetch(req, crate::tiers::DagScope::All, None).await
    };
    let resolved = gw.resolve(req.root, &req.segments).await?;
    let target = resolved.target;
    if target.codec() != DAG_PB && target.codec() != RAW {
        return Err(GatewayError::BadRequest(format!(
            "{target} is not UnixFS; TAR needs a UnixFS file or directory"
        )));
    }
    let etag = format!("W/\"{target}.x-tar\"");
    let mut resp = gw.base_response(req, &resolved.roots, &etag);
    set(resp.headers_mut(), CONTENT_TYPE, "application/x-tar");
    gw.set_disposition(resp.headers_mut(), req, &format!("{target}.tar"), true);
    if gw.not_modified(req, &etag) {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    let root = gw.source().get(&target).await?;
    if let Some(size) = super::unixfs_dag_size(&root, true) {
        gw.check_size(size, super::Delivery::Deserialized)?;
    }
    // The root must be a UnixFS node: a block that is not (an identity CID the client made up,
    // say) is a 422 while the status can still say so, not a 200 cut after its headers.
    FsNode::decode(target.codec(), root.data()).map_err(|e| ContentError::from((target, e)))?;
    if req.head {
        return Ok(resp);
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, BodyError>>(8);
    let src = gw.source_arc();
    tokio::spawn(async move {
        match write_tree(&src, root, target, &tx).await {
            Ok(true) => {
                let _ = tx.send(Ok(Bytes::from_static(&[0u8; 1024]))).await;
            }
            Ok(false) => {}
            // A refused entry is refused every time: say why in the body, as the reference
            // gateway does (the archive is left without its end marker, so it cannot pass as
            // complete).
            Err(ContentError::Unsupported(msg)) => {
                tracing::info!(%target, reason = %msg, "TAR refused");
                let _ = tx.send(Ok(Bytes::from(format!("\n{msg}\n")))).await;
            }
            Err(e) => {
                tracing::warn!(%target, error = %e, "TAR stream cut short");
                let _ = tx.send(Err(Box::new(e))).await;
            }
        }
    });
    *resp.body_mut() = super::body::holding(channel(rx), interest);
    Ok(resp)
}

/// The archive path components of entry `name` inside the directory at `parent`, or `None`
/// when the name leads outside the archive root. Names may hold relative segments
/// (`../file` inside a subdirectory) as long as the result stays inside.
fn join_inside(parent: &[String], name: &str) -> Option<Vec<String>> {
    if name.is_empty() || name.contains('\0') || name.starts_with('/') {
        return None;
    }
    let mut out = parent.to_vec();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            p => out.push(p.to_string()),
        }
    }
    (!out.is_empty() && out != parent).then_some(out)
}

/// Whether a symlink target stays inside the archive when resolved from `dir_depth` levels deep.
fn safe_link(target: &str, dir_depth: usize) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth = dir_depth as isize;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

fn header(
    path: &str,
    kind: EntryType,
    size: u64,
    link: Option<&str>,
) -> Result<Bytes, ContentError> {
    let mut out = BytesMut::new();
    let mut h = Header::new_gnu();
    let bytes = path.as_bytes();
    if bytes.len() > 100 {
        // GNU long-name entry: the real name travels as the data of a preceding entry.
        let mut long = Header::new_gnu();
        long.set_entry_type(EntryType::GNULongName);
        long.set_size(bytes.len() as u64 + 1);
        long.set_mode(0o644);
        if let Some(gnu) = long.as_gnu_mut() {
            gnu.name[..13].copy_from_slice(b"././@LongLink");
        }
        long.set_cksum();
        out.extend_from_slice(long.as_bytes());
        out.extend_from_slice(bytes);
        out.extend_from_slice(&[0u8]);
        out.extend_from_slice(&vec![0u8; pad(bytes.len() as u64 + 1)]);
    }
    if let Some(gnu) = h.as_gnu_mut() {
        let n = bytes.len().min(100);
        gnu.name[..n].copy_from_slice(&bytes[..n]);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    if let Some(l) = link {
        h.set_link_name(l)
            .map_err(|e| ContentError::Unsupported(format!("symlink {path}: {e}")))?;
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    Ok(out.freeze())
}

fn pad(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// Writes `root` (named `name`) and everything below it; false when the client went away.
async fn write_tree(
    src: &std::sync::Arc<dyn BlockSource>,
    root: Block,
    name: Cid,
    tx: &mpsc::Sender<Result<Bytes, BodyError>>,
) -> Result<bool, ContentError> {
    // (components below the root, CID); children are fetched when their turn comes, so a wide
    // directory costs a CID per entry, not a block.
    let mut first = Some(root);
    let mut stack: Vec<(Vec<String>, Cid)> = vec![(Vec::new(), name)];
    while let Some((parts, cid)) = stack.pop() {
        let path = std::iter::once(name.to_string())
            .chain(parts.iter().cloned())
            .collect::<Vec<_>>()
            .join("/");
        let block = match first.take() {
            Some(b) => b,
            None => src.get(&cid).await?,
        };
        match FsNode::decode(cid.codec(), block.data()).map_err(|e| (cid, e))? {
            FsNode::File { size, .. } => {
                if tx
                    .send(Ok(header(&path, EntryType::Regular, size, None)?))
                    .await
                    .is_err()
                {
                    return Ok(false);
                }
                if size > 0 && !pump(src, &block, 0, size - 1, tx).await {
                    return Ok(false);
                }
                if pad(size) > 0
                    && tx
                        .send(Ok(Bytes::from(vec![0u8; pad(size)])))
                        .await
                        .is_err()
                {
                    return Ok(false);
                }
            }
            FsNode::Symlink { target } => {
                let target = String::from_utf8_lossy(&target).into_owned();
                if !safe_link(&target, parts.len().saturating_sub(1)) {
                    return Err(ContentError::Unsupported(OUTSIDE_ROOT.into()));
                }
                if tx
                    .send(Ok(header(&path, EntryType::Symlink, 0, Some(&target))?))
                    .await
                    .is_err()
                {
                    return Ok(false);
                }
            }
            node @ (FsNode::Directory { .. } | FsNode::HamtShard { .. }) => {
                if tx
                    .send(Ok(header(
                        &format!("{path}/"),
                        EntryType::Directory,
                        0,
                        None,
                    )?))
                    .await
                    .is_err()
                {
                    return Ok(false);
                }
                let entries = list_directory(src.as_ref(), node).await?;
                // Pushed in reverse so entries come out in directory order.
                for e in entries.into_iter().rev() {
                    let Some(child) = join_inside(&parts, &e.name) else {
                        return Err(ContentError::Unsupported(OUTSIDE_ROOT.into()));
                    };
                    stack.push((child, e.cid));
                }
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_links_that_escape_are_refused() {
        let dir = vec!["foobar".to_string(), "directory".to_string()];
        assert_eq!(
            join_inside(&dir, "../file").unwrap(),
            vec!["foobar", "file"]
        );
        assert_eq!(join_inside(&[], "a.txt").unwrap(), vec!["a.txt"]);
        for bad in ["", ".", "..", "../x", "/abs", "x\0"] {
            assert!(join_inside(&[], bad).is_none(), "{bad:?}");
        }
        assert!(safe_link("a/b", 0));
        assert!(safe_link("../x", 1));
        assert!(!safe_link("../x", 0));
        assert!(!safe_link("/etc/passwd", 3));
        assert!(!safe_link("a/../../b", 0));
    }

    #[tokio::test]
    async fn roots_that_are_not_unixfs_are_refused_before_the_stream_starts() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::tiers::local::LocalStore::open(dir.path()).unwrap();
        let gw = Gateway::new(std::sync::Arc::new(store), Default::default());
        let identity = |codec, data: &[u8]| {
            let mh = cid::multihash::Multihash::<64>::wrap(crate::ipld::IDENTITY, data).unwrap();
            Cid::new_v1(codec, mh)
        };
        // Not dag-pb at all, and a dag-pb node without UnixFS data.
        for root in [identity(DAG_PB, &[0xff, 0xfe, 0x00]), identity(DAG_PB, &[])] {
            for method in ["GET", "HEAD"] {
                let req = http::Request::builder()
                    .method(method)
                    .uri(format!("/ipfs/{root}?format=tar"))
                    .header("host", "a")
                    .body(())
                    .unwrap();
                assert_eq!(gw.handle(req).await.status(), 422, "{method} {root}");
            }
        }
    }

    #[test]
    fn long_names_use_a_gnu_long_name_entry() {
        let name = "d/".repeat(80);
        let h = header(&name, EntryType::Regular, 5, None).unwrap();
        assert_eq!(h.len() % 512, 0);
        assert!(h.len() >= 1536);
    }
}
