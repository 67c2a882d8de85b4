//! Finding and opening a static file: the blocking part, run on a blocking thread
//! (`spawn_blocking`) so that a slow disk never stalls the sockets.
//!
//! Given the decoded segments (`path.rs`), the file is looked up under the mount's
//! directory (canonical since start-up). Unless `--static-follow-symlinks`, the path is
//! canonicalised and must still lie inside the directory, with no hidden component:
//! a symbolic link that leads out (or to a dotfile) is a missing file. A directory is
//! served through its `index.html` with `--static-index`, else it is missing. Only
//! regular files are opened, non-blocking (a FIFO swapped in at the last moment cannot
//! hang the thread) and checked again on the open descriptor, whose metadata then gives
//! the validators. A precompressed `.br` or `.gz` sibling is chosen when the client
//! accepts it.

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
    Found(Found),
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

/// `path` if it may be served: inside `root` once links are resolved, with no hidden
/// component; or as it is with `follow_symlinks`.
fn admissible(root: &Path, path: &Path, opts: &Options) -> Option<PathBuf> {
    if opts.follow_symlinks {
        return Some(path.to_path_buf());
    }
    let real = std::fs::canonicalize(path).ok()?;
    let inside = real.strip_prefix(root).ok()?;
    let hidden = inside
        .components()
        .any(|c| c.as_os_str().as_encoded_bytes().starts_with(b"."));
    (!hidden).then_some(real)
}

/// A regular file at `path` (following links), if admissible.
fn regular(root: &Path, path: &Path, opts: &Options) -> Option<(PathBuf, Metadata)> {
    let real = admissible(root, path, opts)?;
    let meta = std::fs::metadata(&real).ok()?;
    meta.is_file().then_some((real, meta))
}

fn open(path: &Path) -> Option<(File, Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    meta.is_file().then_some((file, meta))
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
    let Some(real) = admissible(root, &path, opts) else {
        return Lookup::Missing;
    };
    let Ok(meta) = std::fs::metadata(&real) else {
        return Lookup::Missing;
    };
    let (name, plain) = if meta.is_dir() {
        if !opts.index {
            return Lookup::Missing;
        }
        let index = path.join("index.html");
        let Some((real, _)) = regular(root, &index, opts) else {
            return Lookup::Missing;
        };
        if !trailing_slash {
            return Lookup::AddSlash;
        }
        (index, real)
    } else if meta.is_file() {
        (path, real)
    } else {
        return Lookup::Missing;
    };
    let sibling = |ext: &str| {
        let mut s = name.clone().into_os_string();
        s.push(ext);
        regular(root, Path::new(&s), opts)
    };
    let br = sibling(".br");
    let gz = sibling(".gz");
    let vary = br.is_some() || gz.is_some();
    let (chosen, encoding) = match (br, gz) {
        (Some((p, _)), _) if accepts.br => (p, Some("br")),
        (_, Some((p, _))) if accepts.gzip => (p, Some("gzip")),
        _ => (plain, None),
    };
    let Some((file, meta)) = open(&chosen) else {
        return Lookup::Missing;
    };
    let contents = if want_contents && meta.len() <= SMALL {
        match crate::http::file::read_exact_at(&file, 0, meta.len() as usize) {
            Ok(b) => Some(b),
            Err(_) => return Lookup::Missing,
        }
    } else {
        None
    };
    Lookup::Found(Found {
        file,
        meta,
        name,
        encoding,
        vary,
        contents,
    })
}
