//! From a request path to a file under a static directory, safely.
//!
//! The request path is matched against the mount prefixes after percent-decoding
//! ([`strip_prefix`]), so `/st%61tic/x` is under `/static` as the application would see
//! it. The rest is split on literal `/` first and each segment decoded once
//! ([`segments`]); what a decoded segment may not hold is refused with a 404, which
//! says no more about the directory than a missing file does:
//! - a `/` or `\` that was percent-encoded (`%2f`, `%5c`), or a literal `\`: a second
//!   separator that some layer might honour;
//! - NUL, or bytes that are not UTF-8 (overlong encodings such as `%c0%ae` are not);
//! - `.` and `..` (also as `%2e%2e`), and any other name starting with a dot: dotfiles
//!   are hidden.
//!
//! A malformed escape (`%zz`, `%4`) is a 400. What remains can only name a path inside
//! the directory; symbolic links are checked where the file is opened (`mod.rs`).

/// Why a path is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a file we would ever serve: 404.
    NotFound,
    /// A malformed percent escape: 400.
    BadRequest,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The next decoded byte of `raw` at `i`, and how many raw bytes it took.
fn decode_at(raw: &[u8], i: usize) -> Option<(u8, usize)> {
    if raw[i] != b'%' {
        return Some((raw[i], 1));
    }
    let h = hex(*raw.get(i + 1)?)?;
    let l = hex(*raw.get(i + 2)?)?;
    Some((h << 4 | l, 3))
}

/// The raw rest of `path` after `prefix` (a plain path without escapes or a trailing
/// slash, or `/`), matched on the decoded path and ending at a segment boundary; `None`
/// when the path is not under the prefix. The rest is empty or starts with a `/` (or
/// with an escape that decodes to one, which [`segments`] refuses).
pub fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix == "/" {
        return Some(path);
    }
    let raw = path.as_bytes();
    let mut i = 0;
    for &want in prefix.as_bytes() {
        if i >= raw.len() {
            return None;
        }
        let (got, took) = decode_at(raw, i)?;
        if got != want {
            return None;
        }
        i += took;
    }
    let rest = &path[i..];
    if rest.is_empty() {
        return Some(rest);
    }
    match decode_at(raw, i) {
        Some((b'/', _)) => Some(rest),
        _ => None,
    }
}

/// The decoded segments of `rest` (empty ones dropped), and whether it ends with `/`.
pub fn segments(rest: &str) -> Result<(Vec<String>, bool), Refused> {
    let mut out = Vec::new();
    for raw in rest.split('/') {
        if raw.is_empty() {
            continue;
        }
        let bytes = raw.as_bytes();
        let mut seg = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let (b, took) = decode_at(bytes, i).ok_or(Refused::BadRequest)?;
            if matches!(b, b'/' | b'\\' | 0) {
                return Err(Refused::NotFound);
            }
            seg.push(b);
            i += took;
        }
        let seg = String::from_utf8(seg).map_err(|_| Refused::NotFound)?;
        if seg.starts_with('.') || seg.chars().any(char::is_control) {
            return Err(Refused::NotFound);
        }
        out.push(seg);
    }
    Ok((out, rest.ends_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert_eq!(strip_prefix("/static/a.css", "/static"), Some("/a.css"));
        assert_eq!(strip_prefix("/static", "/static"), Some(""));
        assert_eq!(strip_prefix("/st%61tic/a", "/static"), Some("/a"));
        assert_eq!(strip_prefix("/static%2fa", "/static"), Some("%2fa"));
        assert_eq!(strip_prefix("/staticx/a", "/static"), None);
        assert_eq!(strip_prefix("/stat", "/static"), None);
        assert_eq!(strip_prefix("/st%zztic", "/static"), None);
        assert_eq!(strip_prefix("/anything", "/"), Some("/anything"));
    }

    #[test]
    fn segments_refuse_escapes() {
        let ok = |s: &str| segments(s).unwrap();
        assert_eq!(
            ok("/a/b%20c.txt"),
            (vec!["a".into(), "b c.txt".into()], false)
        );
        assert_eq!(ok("/dir/"), (vec!["dir".into()], true));
        assert_eq!(ok("//a//b"), (vec!["a".into(), "b".into()], false));
        assert_eq!(ok("/caf%C3%A9"), (vec!["café".into()], false));
        for bad in [
            "/../etc/passwd",
            "/%2e%2e/x",
            "/%2E%2E%2Fx",
            "/a%2fb",
            "/a%5cb",
            "/a\\b",
            "/a%00b",
            "/%c0%ae%c0%ae/x",
            "/.env",
            "/.",
            "/a/.git/config",
            "/%ff",
        ] {
            assert_eq!(segments(bad), Err(Refused::NotFound), "{bad}");
        }
        assert_eq!(segments("/a%zz"), Err(Refused::BadRequest));
        assert_eq!(segments("/a%4"), Err(Refused::BadRequest));
    }
}
