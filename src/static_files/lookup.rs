//! Finding and opening a static file without stalling the sockets on a slow disk.
//!
//! A lookup first runs on the I/O thread in [`Mode::Cached`]: path resolution only from
//! the kernel's dentry cache (`openat2` with `RESOLVE_CACHED`), a small file's bytes
//! only from the page cache (`preadv2` with `RWF_NOWAIT`). Whatever is not cached makes
//! it give up ([`WouldBlock`]), and the same lookup runs again in [`Mode::Blocking`] on a
//! blocking thread (`spawn_blocking`). Files served often are cached, so they cost no
//! thread switch; the first request for a cold file pays one.
//!
//! Given the decoded segments (`path.rs`), the file is opened under the mount's
//! directory (canonical since start-up), non-blocking (a FIFO cannot hang the thread),
//! first refusing symbolic links on the way (`RESOLVE_NO_SYMLINKS`): a file opened so is
//! the path asked for, inside the directory, nothing hidden. When a link is in the way,
//! it is opened following links and, unless `--static-follow-symlinks`, what the
//! descriptor really is must lie inside the directory with no hidden component: a
//! symbolic link that leads out (or to a dotfile) is a missing file. A directory is
//! served through its `index.html` with `--static-index`, else it is missing. Only
//! regular files are served; the metadata of the open descriptor gives the validators.
//! A precompressed `.br` or `.gz` sibling is chosen when the client accepts it.

use std::ffi::CString;
use std::fs::{File, Metadata, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};

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
    /// Everything looked at (the file, its directory's index, the siblings) was reached
    /// without a symbolic link: a change to any of it shows in the directories on the
    /// way, which is what the cache (`cache.rs`) watches.
    pub direct: bool,
}

/// How a lookup may touch the file system.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// On a blocking thread: anything goes.
    Blocking,
    /// On an I/O thread: only what the kernel answers from its caches, failing with
    /// [`WouldBlock`] where it would wait for a disk (see [`lookup`]).
    Cached,
}

/// Something was not in the kernel's caches: do the lookup again on a blocking thread.
#[derive(Debug)]
pub struct WouldBlock;

/// Set once `openat2` with `RESOLVE_CACHED` turned out unusable (an old kernel, a
/// seccomp filter): every lookup then goes to a blocking thread straight away.
static NO_CACHED_OPEN: AtomicBool = AtomicBool::new(false);
/// Set once `openat2` turned out unusable altogether: blocking lookups then open with
/// `open(2)` and always check the real path.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// `openat2(AT_FDCWD, path, flags, resolve)`, or the `errno`.
fn openat2(path: &CString, flags: i32, resolve: u64) -> Result<File, i32> {
    // SAFETY: `open_how` is plain data; zeroed is its "no options" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = resolve;
    // SAFETY: a valid NUL-terminated path and `open_how` of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a descriptor the kernel just gave us.
        Ok(unsafe { File::from_raw_fd(fd as i32) })
    } else {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    }
}

/// Whether an `openat2` error says the call (or one of its `resolve` flags) is not
/// available here, rather than anything about the path.
fn unsupported(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOSYS | libc::EPERM | libc::EINVAL | libc::E2BIG
    )
}

/// An open file, and whether it was reached without any symbolic link (`direct`): then
/// it is exactly the path asked for (the mount directory is canonical, the segments
/// hold no `.`), so it lies inside the directory and no component is hidden.
struct Opened {
    file: File,
    direct: bool,
}

/// Open `path` read-only and non-blocking (a FIFO cannot hang the thread), or as an
/// `O_PATH` handle (enough to `fstat`); `Ok(None)` when it cannot be opened.
///
/// First without following any symbolic link (`RESOLVE_NO_SYMLINKS`): the common case,
/// which needs no check of where the file really is. When a link is in the way, again
/// following links (the caller then checks the real path).
fn open(path: &Path, o_path: bool, mode: Mode) -> Result<Option<Opened>, WouldBlock> {
    let flags = if o_path {
        libc::O_PATH | libc::O_CLOEXEC
    } else {
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC
    };
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return Ok(None);
    };
    let cached = mode == Mode::Cached;
    if cached && NO_CACHED_OPEN.load(Ordering::Relaxed) {
        return Err(WouldBlock);
    }
    if cached || !NO_OPENAT2.load(Ordering::Relaxed) {
        let resolve = if cached {
            libc::RESOLVE_CACHED | libc::RESOLVE_NO_SYMLINKS
        } else {
            libc::RESOLVE_NO_SYMLINKS
        };
        match openat2(&c_path, flags, resolve) {
            Ok(file) => return Ok(Some(Opened { file, direct: true })),
            Err(libc::ELOOP) => {} // a symbolic link on the way: follow it below
            Err(libc::EAGAIN) if cached => return Err(WouldBlock),
            Err(e) if unsupported(e) && cached => {
                NO_CACHED_OPEN.store(true, Ordering::Relaxed);
                return Err(WouldBlock);
            }
            Err(e) if unsupported(e) => NO_OPENAT2.store(true, Ordering::Relaxed),
            Err(_) => return Ok(None),
        }
    }
    if !cached && NO_OPENAT2.load(Ordering::Relaxed) {
        // `is_file` asks for no `O_PATH` handle then.
        let mut opts = OpenOptions::new();
        opts.read(true).custom_flags(flags & !libc::O_CLOEXEC);
        return Ok(opts.open(path).ok().map(|file| Opened {
            file,
            direct: false,
        }));
    }
    let resolve = if cached { libc::RESOLVE_CACHED } else { 0 };
    match openat2(&c_path, flags, resolve) {
        Ok(file) => Ok(Some(Opened {
            file,
            direct: false,
        })),
        Err(libc::EAGAIN) if cached => Err(WouldBlock),
        Err(_) => Ok(None),
    }
}

/// A file that may be served: what was opened, its metadata, and whether it was reached
/// without a symbolic link.
struct Admitted {
    file: File,
    meta: Metadata,
    direct: bool,
}

/// `path` opened (following links), with its metadata, if it may be served: unless
/// `follow_symlinks`, what the descriptor really is must lie inside `root` with no
/// hidden component. A file reached without links is that already; otherwise the real
/// path comes from `/proc/self/fd` (one `readlink`, and race-free: it is the file we
/// hold), or from `canonicalize` without `/proc`.
fn open_admissible(
    root: &Path,
    path: &Path,
    opts: &Options,
    mode: Mode,
) -> Result<Option<Admitted>, WouldBlock> {
    let Some(Opened { file, direct }) = open(path, false, mode)? else {
        return Ok(None);
    };
    if !direct && !opts.follow_symlinks {
        let real = match std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            Ok(real) => real,
            Err(_) if mode == Mode::Cached => return Err(WouldBlock),
            Err(_) => match std::fs::canonicalize(path) {
                Ok(real) => real,
                Err(_) => return Ok(None),
            },
        };
        let Ok(inside) = real.strip_prefix(root) else {
            return Ok(None);
        };
        let hidden = inside
            .components()
            .any(|c| c.as_os_str().as_encoded_bytes().starts_with(b"."));
        if hidden {
            return Ok(None);
        }
    }
    Ok(file
        .metadata()
        .ok()
        .map(|meta| Admitted { file, meta, direct }))
}

/// [`open_admissible`], for a regular file only.
fn open_regular(
    root: &Path,
    path: &Path,
    opts: &Options,
    mode: Mode,
) -> Result<Option<Admitted>, WouldBlock> {
    Ok(open_admissible(root, path, opts, mode)?.filter(|a| a.meta.is_file()))
}

/// Whether a regular file exists at `path` (following links): `Some(direct)`, where
/// `direct` says it was reached without a symbolic link.
fn is_file(path: &Path, mode: Mode) -> Result<Option<bool>, WouldBlock> {
    if mode == Mode::Blocking && NO_OPENAT2.load(Ordering::Relaxed) {
        return Ok(std::fs::metadata(path)
            .is_ok_and(|m| m.is_file())
            .then_some(false));
    }
    Ok(open(path, true, mode)?.and_then(|o| {
        o.file
            .metadata()
            .is_ok_and(|m| m.is_file())
            .then_some(o.direct)
    }))
}

/// The first `len` bytes of a small file: on an I/O thread only from the page cache
/// (`preadv2` with `RWF_NOWAIT`); `Ok(None)` when they are not all there (the body is
/// then sent from the file, like a large one).
fn read_small(file: &File, len: usize, mode: Mode) -> std::io::Result<Option<Bytes>> {
    if mode == Mode::Blocking {
        return crate::http::file::read_exact_at(file, 0, len).map(Some);
    }
    let mut buf = BytesMut::zeroed(len);
    let mut filled = 0;
    while filled < len {
        let iov = libc::iovec {
            iov_base: buf[filled..].as_mut_ptr().cast(),
            iov_len: len - filled,
        };
        // SAFETY: one iovec over our own buffer; the descriptor is open.
        let n = unsafe {
            libc::preadv2(
                file.as_raw_fd(),
                &iov,
                1,
                filled as libc::off_t,
                libc::RWF_NOWAIT,
            )
        };
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => filled += n as usize,
            _ => return Ok(None), // EAGAIN: not cached; EOPNOTSUPP: no RWF_NOWAIT here
        }
    }
    Ok(Some(buf.freeze()))
}

/// Look `segments` up under `root`; `trailing_slash` says the request path ended in `/`.
///
/// [`Mode::Cached`] is for the I/O thread: the path is resolved only from the kernel's
/// dentry cache (`openat2` with `RESOLVE_CACHED`) and a small file is read only from the
/// page cache, so nothing waits for a disk; where that is not enough it answers
/// [`WouldBlock`] and the caller repeats the lookup with [`Mode::Blocking`] on a
/// blocking thread. A file served a moment ago is in both caches: the common case costs
/// no thread switch.
pub fn lookup(
    root: &Path,
    segments: &[String],
    trailing_slash: bool,
    accepts: Accepts,
    want_contents: bool,
    opts: &Options,
    mode: Mode,
) -> Result<Lookup, WouldBlock> {
    let mut path = root.to_path_buf();
    path.extend(segments);
    let Some(first) = open_admissible(root, &path, opts, mode)? else {
        return Ok(Lookup::Missing);
    };
    let (name, plain) = if first.meta.is_dir() {
        if !opts.index {
            return Ok(Lookup::Missing);
        }
        let index = path.join("index.html");
        let Some(mut found) = open_regular(root, &index, opts, mode)? else {
            return Ok(Lookup::Missing);
        };
        if !trailing_slash {
            return Ok(Lookup::AddSlash);
        }
        found.direct &= first.direct;
        (index, found)
    } else if first.meta.is_file() {
        (path, first)
    } else {
        return Ok(Lookup::Missing);
    };
    let mut direct = plain.direct;
    // Precompressed siblings: whether each exists says whether the answer varies; only
    // the one chosen is opened (and checked like any file).
    let mut sibling = |ext: &str| -> Result<Option<PathBuf>, WouldBlock> {
        let mut s = name.clone().into_os_string();
        s.push(ext);
        let p = PathBuf::from(s);
        Ok(match is_file(&p, mode)? {
            Some(d) => {
                direct &= d;
                Some(p)
            }
            None => None,
        })
    };
    let (br, gz) = (sibling(".br")?, sibling(".gz")?);
    let vary = br.is_some() || gz.is_some();
    let mut chosen = None;
    for (ok, p, enc) in [(accepts.br, br, "br"), (accepts.gzip, gz, "gzip")] {
        if let (true, Some(p)) = (ok, p) {
            if let Some(found) = open_regular(root, &p, opts, mode)? {
                chosen = Some((found, enc));
                break;
            }
        }
    }
    let (Admitted { file, meta, .. }, encoding) = match chosen {
        Some((found, enc)) => {
            direct &= found.direct;
            (found, Some(enc))
        }
        None => (plain, None),
    };
    let contents = if want_contents && meta.len() <= SMALL {
        match read_small(&file, meta.len() as usize, mode) {
            Ok(b) => b,
            Err(_) => return Ok(Lookup::Missing),
        }
    } else {
        None
    };
    Ok(Lookup::Found(Box::new(Found {
        file,
        meta,
        name,
        encoding,
        vary,
        contents,
        direct,
    })))
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

    /// Both modes find the same things (the cached one may give up, never differ).
    #[test]
    fn lookups_in_both_modes() {
        let base = std::env::temp_dir().join(format!("gm-lookup-{}", std::process::id()));
        let root = base.join("pub");
        std::fs::create_dir_all(root.join("dir")).unwrap();
        std::fs::write(root.join("a.txt"), b"aaa").unwrap();
        std::fs::write(root.join("a.txt.gz"), b"gz").unwrap();
        std::fs::write(root.join(".hidden"), b"h").unwrap();
        std::fs::write(root.join("dir/index.html"), b"<i>").unwrap();
        std::fs::write(base.join("secret"), b"s").unwrap();
        let _ = std::os::unix::fs::symlink(base.join("secret"), root.join("out"));
        let _ = std::os::unix::fs::symlink(root.join(".hidden"), root.join("to-hidden"));
        let root = std::fs::canonicalize(&root).unwrap();
        let opts = Options {
            index: true,
            follow_symlinks: false,
        };
        let gzip = Accepts {
            br: false,
            gzip: true,
        };
        let seg = |s: &str| -> Vec<String> { s.split('/').map(String::from).collect() };
        for mode in [Mode::Blocking, Mode::Cached] {
            let look = |path: &str, slash: bool, acc: Accepts| {
                let mut tries = 0;
                loop {
                    match lookup(&root, &seg(path), slash, acc, true, &opts, mode) {
                        Ok(l) => return l,
                        Err(WouldBlock) if tries < 3 => tries += 1, // caches warm up
                        Err(WouldBlock) => {
                            return lookup(
                                &root,
                                &seg(path),
                                slash,
                                acc,
                                true,
                                &opts,
                                Mode::Blocking,
                            )
                            .unwrap()
                        }
                    }
                }
            };
            let Lookup::Found(f) = look("a.txt", false, Accepts::default()) else {
                panic!("a.txt not found ({mode:?})");
            };
            assert_eq!(f.contents.as_deref(), Some(&b"aaa"[..]));
            assert!(f.vary && f.encoding.is_none());
            let Lookup::Found(f) = look("a.txt", false, gzip) else {
                panic!("a.txt.gz not found ({mode:?})");
            };
            assert_eq!(f.encoding, Some("gzip"));
            assert_eq!(f.contents.as_deref(), Some(&b"gz"[..]));
            assert!(matches!(look("dir", false, gzip), Lookup::AddSlash));
            assert!(matches!(look("dir", true, gzip), Lookup::Found(_)));
            for missing in ["nope", "out", "to-hidden"] {
                assert!(
                    matches!(look(missing, false, gzip), Lookup::Missing),
                    "{missing} ({mode:?})"
                );
            }
        }
        let _ = std::fs::remove_dir_all(&base);
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
