//! Validators and conditional requests for static files (RFC 9110 §8.8, §13).
//!
//! The ETag is strong, made of the file's inode, size and modification time in
//! nanoseconds: it changes whenever the content can have changed (a rewrite in place
//! moves the mtime, a replacement by rename changes the inode), and two encodings of one
//! file (`.br`, `.gz`, plain) are different files, so they get different tags, as a
//! strong validator must. `Last-Modified` is the mtime.
//!
//! [`evaluate`] applies the preconditions in the order of RFC 9110 §13.2.2: `If-Match`,
//! else `If-Unmodified-Since`; then `If-None-Match`, else `If-Modified-Since` (for
//! `GET`/`HEAD`). [`if_range`] decides whether a `Range` still applies.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE};
use http::HeaderMap;

/// A file's validators.
pub struct Validators {
    /// With its quotes.
    pub etag: String,
    /// Whole seconds since the epoch (what `Last-Modified` can say).
    pub modified: SystemTime,
}

impl Validators {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        let nanos = (meta.mtime() as i128) * 1_000_000_000 + meta.mtime_nsec() as i128;
        let secs = u64::try_from(meta.mtime()).unwrap_or(0);
        Validators {
            etag: format!("\"{:x}-{:x}-{:x}\"", meta.ino(), meta.size(), nanos),
            modified: UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(self.modified)
    }
}

/// What the preconditions say.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: a precondition failed.
    Failed,
}

/// The entity tags of an `If-Match` / `If-None-Match` list; `None` for `*`.
fn tags(headers: &HeaderMap, name: http::header::HeaderName) -> Option<Option<Vec<String>>> {
    let mut all = Vec::new();
    let mut present = false;
    for v in headers.get_all(name) {
        present = true;
        let Ok(v) = v.to_str() else { continue };
        for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if t == "*" {
                return Some(None);
            }
            all.push(t.to_string());
        }
    }
    present.then_some(Some(all))
}

fn date(headers: &HeaderMap, name: http::header::HeaderName) -> Option<SystemTime> {
    let v = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(v.trim()).ok()
}

/// Strong comparison: both strong and equal.
fn strong_eq(tag: &str, ours: &str) -> bool {
    !tag.starts_with("W/") && tag == ours
}

/// Weak comparison: equal once a `W/` is dropped.
fn weak_eq(tag: &str, ours: &str) -> bool {
    tag.strip_prefix("W/").unwrap_or(tag) == ours
}

/// Apply the preconditions of a `GET` or `HEAD` to a file with validators `v`.
pub fn evaluate(headers: &HeaderMap, v: &Validators) -> Outcome {
    match tags(headers, IF_MATCH) {
        Some(None) => {}
        Some(Some(list)) => {
            if !list.iter().any(|t| strong_eq(t, &v.etag)) {
                return Outcome::Failed;
            }
        }
        None => {
            if let Some(since) = date(headers, IF_UNMODIFIED_SINCE) {
                if v.modified > since {
                    return Outcome::Failed;
                }
            }
        }
    }
    match tags(headers, IF_NONE_MATCH) {
        Some(None) => Outcome::NotModified,
        Some(Some(list)) => {
            if list.iter().any(|t| weak_eq(t, &v.etag)) {
                Outcome::NotModified
            } else {
                Outcome::Proceed
            }
        }
        None => match date(headers, IF_MODIFIED_SINCE) {
            Some(since) if v.modified <= since => Outcome::NotModified,
            _ => Outcome::Proceed,
        },
    }
}

/// Whether a `Range` applies: no `If-Range`, or one that matches the current file (a
/// strong ETag, or exactly the `Last-Modified` date).
pub fn if_range(headers: &HeaderMap, v: &Validators) -> bool {
    let Some(value) = headers.get(IF_RANGE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return strong_eq(value, &v.etag);
    }
    httpdate::parse_http_date(value).is_ok_and(|d| d == v.modified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn v() -> Validators {
        Validators {
            etag: "\"1-2-3\"".into(),
            modified: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, val) in pairs {
            m.append(*k, HeaderValue::from_str(val).unwrap());
        }
        m
    }

    #[test]
    fn preconditions() {
        let lm = v().last_modified();
        assert_eq!(evaluate(&h(&[]), &v()), Outcome::Proceed);
        assert_eq!(
            evaluate(&h(&[("if-none-match", "\"1-2-3\"")]), &v()),
            Outcome::NotModified
        );
        assert_eq!(
            evaluate(&h(&[("if-none-match", "W/\"1-2-3\"")]), &v()),
            Outcome::NotModified
        );
        assert_eq!(
            evaluate(&h(&[("if-none-match", "\"x\", \"1-2-3\"")]), &v()),
            Outcome::NotModified
        );
        assert_eq!(
            evaluate(&h(&[("if-none-match", "*")]), &v()),
            Outcome::NotModified
        );
        assert_eq!(
            evaluate(&h(&[("if-none-match", "\"x\"")]), &v()),
            Outcome::Proceed
        );
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            evaluate(
                &h(&[("if-none-match", "\"x\""), ("if-modified-since", &lm)]),
                &v()
            ),
            Outcome::Proceed
        );
        assert_eq!(
            evaluate(&h(&[("if-modified-since", &lm)]), &v()),
            Outcome::NotModified
        );
        let before = httpdate::fmt_http_date(v().modified - Duration::from_secs(1));
        assert_eq!(
            evaluate(&h(&[("if-modified-since", &before)]), &v()),
            Outcome::Proceed
        );
        assert_eq!(
            evaluate(&h(&[("if-modified-since", "garbage")]), &v()),
            Outcome::Proceed
        );
        assert_eq!(
            evaluate(&h(&[("if-match", "\"x\"")]), &v()),
            Outcome::Failed
        );
        assert_eq!(
            evaluate(&h(&[("if-match", "W/\"1-2-3\"")]), &v()),
            Outcome::Failed
        );
        assert_eq!(
            evaluate(&h(&[("if-match", "\"1-2-3\"")]), &v()),
            Outcome::Proceed
        );
        assert_eq!(
            evaluate(&h(&[("if-unmodified-since", &before)]), &v()),
            Outcome::Failed
        );
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        let lm = v().last_modified();
        assert!(if_range(&h(&[]), &v()));
        assert!(if_range(&h(&[("if-range", "\"1-2-3\"")]), &v()));
        assert!(!if_range(&h(&[("if-range", "W/\"1-2-3\"")]), &v()));
        assert!(!if_range(&h(&[("if-range", "\"other\"")]), &v()));
        assert!(if_range(&h(&[("if-range", &lm)]), &v()));
        assert!(!if_range(
            &h(&[("if-range", "Mon, 01 Jan 2001 00:00:00 GMT")]),
            &v()
        ));
    }
}
