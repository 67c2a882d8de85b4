//! Finding and opening a static file: the blocking part, run on a blocking thread
//! (`spawn_blocking`) so that a slow disk never stalls the sockets.
//!
//! Given the decoded segments (`path.rs`), the file is opened under the mount's
//! directory (canonical since start-up), non-blocking (a FIFO cannot hang the thread).
//! Unless `--static-follow-symlinks`, what the descriptor really is must lie inside the
//! directory with no hidden component: a symbolic link that leads out (or to a
//! dotfile) is a missing file. A directory is served through its `index.html` with
//! `--static-index`, else it is missing. Only regular files are served; the metadata of
//! the open descriptor gives the validators. A precompressed `.br` or `.gz` sibling is
//! chosen when the client accepts it.

use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Files up to this size are read whole on the blocking thread that opened them, and
/// sent from memory: one trip to the blocking pool per request.
pub const SMALL: u64 = 16 * 1024;

/// Content codings the client accepts, of those we look for.
#[derive(Clone, Copy, Default, Debug)]
pub struct Accepts {
    pub br: bool,
    pub gzip: bool,
}

impl Accepts {
    /// From `Accept-Encoding` (RFC 9110 §12.5.3): a coding is accepted when it is
    /// listed (or `*` is) with a q-value above 0.
    pub fn parse(headers: &http::HeaderMap) -> Self {
        let mut br = None;
        let mut gzip = None;
        let mut star = None;
        for v in headers.get_all(http::header::ACCEPT_ENCODING) {
            let Ok(v) = v.to_str() else { continue };
            for item in v.split(',') {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                    .filter_map(|q| q.trim().parse::<f32>().ok())
                    .next()
                    .unwrap_or(1.0);
                let ok = q > 0.0;
                match coding.as_str() {
                    "br" => br = Some(ok),
                    "gzip" | "x-gzip" => gzip = Some(ok),
                    "*" => star = Some(ok),
                    _ => {}
                }
            }
        }
        let star = star.unwrap_or(false);
        Accepts {
            br: br.unwrap_or(star),
            gzip: gzip.unwrap_or(star),
        }
    }
}

/// The options of a lookup.
pub struct Options {
    pub index: bool,
    pub follow_symlinks: bool,
}

/// What was found.
pub enum Lookup {
    Missing,
    /// A directory asked for without its trailing slash (and it has an index).
    AddSlash,
    Found(Box<Found>),
}

/// An open file, ready to send.
pub struct Found {
    pub file: File,
    pub meta: Metadata,
    /// The name its type is guessed from (the file asked for, not its `.br`/`.gz`).
    pub name: PathBuf,
    /// `br` or `gzip` when a precompressed sibling is sent.
    pub encoding: Option<&'static str>,
    /// A sibling exists: the answer depends on `Accept-Encoding`.
    pub vary: bool,
    /// The whole content, for a small file.
    pub contents: Option<Bytes>,
}

/// `path` opened (following links), with its metadata, if it may be served: unless
/// `follow_symlinks`, what the descriptor really is must lie inside `root` with no
/// hidden component. The real path comes from `/proc/self/fd` (one `readlink`, and
/// race-free: it is the file we hold), or from `canonicalize` without `/proc`.
fn open_admissible(root: &Path, path: &Path, opts: &Options) -> Option<(File, Metadata)> {
    use std::os::fd::AsRawFd;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !opts.follow_symlinks {
        let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .or_else(|_| std::fs::canonicalize(path))
            .ok()?;
        let inside = real.strip_prefix(root).ok()?;
        let hidden = inside
            .components()
            .any(|c| c.as_os_str().as_encoded_bytes().starts_with(b"."));
        if hidden {
            return None;
        }
    }
    let meta = file.metadata().ok()?;
    Some((file, meta))
}

/// [`open_admissible`], for a regular file only.
fn open_regular(root: &Path, path: &Path, opts: &Options) -> Option<(File, Metadata)> {
    open_admissible(root, path, opts).filter(|(_, meta)| meta.is_file())
}

/// Look `segments` up under `root`; `trailing_slash` says the request path ended in `/`.
pub fn lookup(
    root: &Path,
    segments: &[String],
    trailing_slash: bool,
    accepts: Accepts,
    want_contents: bool,
    opts: &Options,
) -> Lookup {
    let mut path = root.to_path_buf();
    path.extend(segments);
    let Some((file, meta)) = open_admissible(root, &path, opts) else {
        return Lookup::Missing;
    };
    let (name, plain) = if meta.is_dir() {
        if !opts.index {
            return Lookup::Missing;
        }
        let index = path.join("index.html");
        let Some(found) = open_regular(root, &index, opts) else {
            return Lookup::Missing;
        };
        if !trailing_slash {
            return Lookup::AddSlash;
        }
        (index, found)
    } else if meta.is_file() {
        (path, (file, meta))
    } else {
        return Lookup::Missing;
    };
    // Precompressed siblings: a `stat` each says whether the answer varies; only the one
    // chosen is opened (and checked like any file).
    let sibling = |ext: &str| {
        let mut s = name.clone().into_os_string();
        s.push(ext);
        let p = PathBuf::from(s);
        std::fs::metadata(&p)
            .is_ok_and(|m| m.is_file())
            .then_some(p)
    };
    let (br, gz) = (sibling(".br"), sibling(".gz"));
    let vary = br.is_some() || gz.is_some();
    let compressed = [(accepts.br, br, "br"), (accepts.gzip, gz, "gzip")]
        .into_iter()
        .filter_map(|(ok, p, enc)| Some((p.filter(|_| ok)?, enc)))
        .find_map(|(p, enc)| Some((open_regular(root, &p, opts)?, enc)));
    let ((file, meta), encoding) = match compressed {
        Some((found, enc)) => (found, Some(enc)),
        None => (plain, None),
    };
    let contents = if want_contents && meta.len() <= SMALL {
        match crate::http::file::read_exact_at(&file, 0, meta.len() as usize) {
            Ok(b) => Some(b),
            Err(_) => return Lookup::Missing,
        }
    } else {
        None
    };
    Lookup::Found(Box::new(Found {
        file,
        meta,
        name,
        encoding,
        vary,
        contents,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn accepts(value: &str) -> (bool, bool) {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        let a = Accepts::parse(&h);
        (a.br, a.gzip)
    }

    #[test]
    fn accept_encoding() {
        assert_eq!(accepts("gzip, deflate, br"), (true, true));
        assert_eq!(accepts("gzip;q=0.5"), (false, true));
        assert_eq!(accepts("br;q=0, gzip"), (false, true));
        assert_eq!(accepts("*"), (true, true));
        assert_eq!(accepts("*;q=0, br"), (true, false));
        assert_eq!(accepts("identity"), (false, false));
        assert_eq!(accepts("GZIP;Q=1"), (false, true));
        assert!(!Accepts::parse(&HeaderMap::new()).gzip);
    }
}
