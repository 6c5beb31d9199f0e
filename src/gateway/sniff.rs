//! Content-Type for file responses: from the file name's extension, else sniffed from the first
//! bytes following the WHATWG MIME Sniffing standard ("identifying an unknown MIME type").

/// The content type of a file named `name` (if any) whose content starts with `head`.
pub fn content_type(name: Option<&str>, head: &[u8]) -> String {
    if let Some(t) = name.and_then(by_extension) {
        return t;
    }
    sniff(head).to_string()
}

/// The type registered for the file name's extension, with `charset=utf-8` on text types.
pub fn by_extension(name: &str) -> Option<String> {
    let ext = std::path::Path::new(name).extension()?.to_str()?;
    let guess = mime_guess::from_ext(ext).first()?;
    let essence = guess.essence_str();
    Some(
        if guess.type_() == mime::TEXT || essence == "application/javascript" {
            format!("{essence}; charset=utf-8")
        } else {
            essence.to_string()
        },
    )
}

/// Whether a file named `name` (if any) starting with `head` holds JSON: by its `.json` name,
/// else by its bytes. `whole` says `head` is the entire file. Text that opens with `{` or `[`
/// must parse as JSON to the end of `head` (a longer file may end past it), so an INI file's
/// `[section]` or a script's `{` line is not JSON.
pub fn is_json(name: Option<&str>, head: &[u8], whole: bool) -> bool {
    if let Some(ext) = name.and_then(|n| std::path::Path::new(n).extension()) {
        return ext.eq_ignore_ascii_case("json");
    }
    let head = head.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(head);
    let start = head.iter().position(|b| !is_ws(*b)).unwrap_or(head.len());
    if !matches!(head.get(start), Some(b'{' | b'[')) {
        return false;
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(head) {
        Ok(_) => true,
        Err(e) => !whole && e.is_eof(),
    }
}

/// Bytes that never appear in text (WHATWG "binary data byte").
fn is_binary_byte(b: u8) -> bool {
    matches!(b, 0x00..=0x08 | 0x0B | 0x0E..=0x1A | 0x1C..=0x1F)
}

fn is_ws(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0C | b'\r' | b' ')
}

/// WHATWG MIME sniffing of a resource with no type, over at most its first 1445 bytes.
pub fn sniff(head: &[u8]) -> &'static str {
    let head = &head[..head.len().min(1445)];
    // Scriptable types (HTML, XML, PDF) first: a browser must not be surprised by them.
    let trimmed = {
        let start = head.iter().position(|b| !is_ws(*b)).unwrap_or(head.len());
        &head[start..]
    };
    const HTML_TAGS: &[&[u8]] = &[
        b"<!DOCTYPE HTML",
        b"<HTML",
        b"<HEAD",
        b"<SCRIPT",
        b"<IFRAME",
        b"<H1",
        b"<DIV",
        b"<FONT",
        b"<TABLE",
        b"<A",
        b"<STYLE",
        b"<TITLE",
        b"<B",
        b"<BODY",
        b"<BR",
        b"<P",
        b"<!--",
    ];
    for tag in HTML_TAGS {
        if trimmed.len() > tag.len() && trimmed[..tag.len()].eq_ignore_ascii_case(tag) {
            let next = trimmed[tag.len()];
            // Comments need no tag-terminating byte.
            if next == b' ' || next == b'>' || *tag == b"<!--" {
                return "text/html; charset=utf-8";
            }
        }
    }
    if trimmed.starts_with(b"<?xml") {
        return "text/xml; charset=utf-8";
    }
    if head.starts_with(b"%PDF-") {
        return "application/pdf";
    }
    if head.starts_with(b"%!PS-Adobe-") {
        return "application/postscript";
    }
    // Byte-order marks mean text.
    if head.starts_with(&[0xFE, 0xFF])
        || head.starts_with(&[0xFF, 0xFE])
        || head.starts_with(&[0xEF, 0xBB, 0xBF])
    {
        return "text/plain; charset=utf-8";
    }
    if let Some(t) = magic(head) {
        return t;
    }
    if head.iter().any(|b| is_binary_byte(*b)) {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// Image, audio/video, font and archive signatures.
fn magic(h: &[u8]) -> Option<&'static str> {
    let starts = |p: &[u8]| h.starts_with(p);
    Some(match () {
        _ if starts(b"\x89PNG\r\n\x1a\n") => "image/png",
        _ if starts(b"\xFF\xD8\xFF") => "image/jpeg",
        _ if starts(b"GIF87a") || starts(b"GIF89a") => "image/gif",
        _ if h.len() >= 12 && &h[..4] == b"RIFF" && &h[8..12] == b"WEBP" => "image/webp",
        _ if h.len() >= 12 && &h[..4] == b"RIFF" && &h[8..12] == b"WAVE" => "audio/wave",
        _ if h.len() >= 12 && &h[..4] == b"RIFF" && &h[8..12] == b"AVI " => "video/avi",
        _ if starts(b"BM") && h.len() > 14 => "image/bmp",
        _ if starts(&[0, 0, 1, 0]) || starts(&[0, 0, 2, 0]) => "image/x-icon",
        _ if h.len() >= 12 && &h[4..8] == b"ftyp" => {
            if &h[8..11] == b"avi" {
                "image/avif"
            } else {
                "video/mp4"
            }
        }
        _ if starts(&[0x1A, 0x45, 0xDF, 0xA3]) => "video/webm",
        _ if starts(b"OggS\0") => "application/ogg",
        _ if starts(b"ID3") => "audio/mpeg",
        _ if starts(b"fLaC") => "audio/flac",
        _ if starts(b"\0asm") => "application/wasm",
        _ if starts(b"wOFF") => "font/woff",
        _ if starts(b"wOF2") => "font/woff2",
        _ if starts(&[0x1F, 0x8B, 0x08]) => "application/gzip",
        _ if starts(b"PK\x03\x04") => "application/zip",
        _ if starts(b"Rar!\x1A\x07") => "application/x-rar-compressed",
        _ if starts(b"7z\xBC\xAF\x27\x1C") => "application/x-7z-compressed",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_wins_and_text_gets_a_charset() {
        assert_eq!(
            content_type(Some("a.txt"), b"\x00\x01"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type(Some("x.png"), b"hello"), "image/png");
        assert_eq!(
            content_type(Some("index.html"), b""),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Some("app.js"), b""),
            "text/javascript; charset=utf-8"
        );
    }

    #[test]
    fn json_by_name_or_by_bytes_that_parse() {
        assert!(is_json(Some("t.json"), b"", true));
        assert!(is_json(Some("T.JSON"), b"not json", true));
        assert!(!is_json(Some("t.txt"), b"{}", true));
        assert!(is_json(None, b" {\"a\": [1, 2]}\n", true));
        assert!(is_json(Some("noext"), b"[1,2,3]", true));
        // A longer file that is JSON as far as the head goes.
        assert!(is_json(None, b"{\"a\": [1, 2", false));
        assert!(!is_json(None, b"{\"a\": [1, 2", true));
        assert!(!is_json(None, b"[core]\nbare = true\n", false));
        assert!(!is_json(None, b"{ not json }", false));
        assert!(!is_json(None, b"\"a string\"", true));
        assert!(!is_json(None, b"hello", true));
        assert!(!is_json(None, b"", true));
    }

    #[test]
    fn sniffing_without_a_name() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), "image/png");
        assert_eq!(
            sniff(b"  <!doctype html><html>"),
            "text/html; charset=utf-8"
        );
        assert_eq!(sniff(b"hello world\n"), "text/plain; charset=utf-8");
        assert_eq!(sniff(b"\x00\x01\x02binary"), "application/octet-stream");
        assert_eq!(sniff(b"%PDF-1.7"), "application/pdf");
        assert_eq!(sniff(b""), "text/plain; charset=utf-8");
        assert_eq!(
            content_type(Some("noext"), b"plain"),
            "text/plain; charset=utf-8"
        );
    }
}
