//! A small cache of static files' responses, kept exact by `inotify(7)`
//! (`--static-cache`, on by default).
//!
//! Looking a file up costs several system calls (opening it, its `.br`/`.gz` siblings,
//! `fstat`, reading it, closing it), more than the rest of answering a small file. So the
//! [`Representation`] of a small file (at most `lookup::SMALL` bytes, kept whole in
//! memory) is kept per mount, request path (as sent, after the prefix) and accepted
//! encodings, and a later request is answered from it without touching the file system.
//!
//! It is never stale, by construction:
//! - an `inotify` instance watches every directory a cached file was found through,
//!   from the mount directory down to the file's own (new files, removals, renames,
//!   writes, `chmod`/`touch` of anything in them), and each ancestor of the mount
//!   directory up to `/` for being moved or removed itself;
//! - every request first reads the instance's queue, without waiting: any event at all
//!   empties the cache. The kernel queues an event when the change is made, so a change
//!   finished before the request was read is always seen;
//! - a lookup's result is kept only when every directory on its way was already watched
//!   before the lookup began and no event came in meanwhile (a generation counter,
//!   moved by every event and every new watch, says so). The first lookup of a file
//!   only adds the watches; a later one fills the entry;
//! - only lookups that met no symbolic link are kept (`Found::direct`): a link's target
//!   may change in a directory nobody watches.
//!
//! What `inotify` does not report is not seen: writes through a shared `mmap`, through a
//! hard link in an unwatched directory, by another machine on a network file system, or
//! a mount over a watched directory. `--no-static-cache` turns the cache off for those.
//!
//! It is bounded: [`MAX_ENTRIES`] representations of at most [`MAX_BYTES`] in all (a full
//! cache is emptied and fills again), and at most [`MAX_WATCHES`] watched directories
//! (beyond them, files are simply not cached). Without `inotify` (a seccomp filter, no
//! watches left) there is no cache.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::Representation;

/// Representations kept at most (over all mounts, paths and encodings).
pub const MAX_ENTRIES: usize = 1024;
/// Bytes of content kept at most.
pub const MAX_BYTES: usize = 8 << 20;
/// Directories watched at most.
pub const MAX_WATCHES: usize = 128;

/// Changes to a directory's entries, or to the files in it, or to itself.
const CONTENT_EVENTS: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | SELF_EVENTS;
/// The directory itself moved or removed.
const SELF_EVENTS: u32 = libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;

/// Cached representations of one path: one per combination of accepted encodings.
type Slots = [Option<Arc<Representation>>; 4];

/// A lookup's permission to fill the cache: the generation it began in.
#[derive(Clone, Copy, Debug)]
pub struct Ticket(u64);

/// See the module docs.
pub struct Cache {
    inotify: OwnedFd,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Per mount: request path after the prefix -> representations.
    entries: Vec<HashMap<Box<str>, Slots>>,
    count: usize,
    bytes: usize,
    /// Watched directory -> (watch descriptor, events asked for).
    watched: HashMap<PathBuf, (i32, u32)>,
    /// Moved by every event and every new watch.
    generation: u64,
}

impl Cache {
    /// A cache for `mounts` mounts; `None` without `inotify`.
    pub fn new(mounts: usize) -> Option<Cache> {
        // SAFETY: no pointers; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        Some(Cache {
            // SAFETY: a descriptor the kernel just gave us.
            inotify: unsafe { OwnedFd::from_raw_fd(fd) },
            inner: Mutex::new(Inner {
                entries: (0..mounts).map(|_| HashMap::new()).collect(),
                count: 0,
                bytes: 0,
                watched: HashMap::new(),
                generation: 0,
            }),
        })
    }

    /// The representation of `rest` under mount `mount` for the encodings `variant`,
    /// or the [`Ticket`] to [`offer`](Self::offer) one after a lookup.
    pub fn get(
        &self,
        mount: usize,
        rest: &str,
        variant: usize,
    ) -> Result<Arc<Representation>, Ticket> {
        let mut inner = self.inner.lock();
        self.drain(&mut inner);
        match inner.entries[mount]
            .get(rest)
            .and_then(|s| s[variant].as_ref())
        {
            Some(rep) => Ok(rep.clone()),
            None => Err(Ticket(inner.generation)),
        }
    }

    /// Keep `rep`, found for `name` under `root` by a lookup that began with `ticket`,
    /// if nothing changed meanwhile and its directories were already watched; else
    /// watch them, for a later lookup to fill the entry.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &self,
        ticket: Ticket,
        mount: usize,
        rest: &str,
        variant: usize,
        root: &Path,
        name: &Path,
        rep: &Arc<Representation>,
    ) {
        let Some(len) = rep.contents_len() else {
            return;
        };
        let mut inner = self.inner.lock();
        self.drain(&mut inner);
        if inner.generation != ticket.0 {
            return;
        }
        let dirs = watch_list(root, name);
        let missing: Vec<_> = dirs
            .into_iter()
            .filter(|(d, mask)| inner.watched.get(d).is_none_or(|(_, m)| m & mask != *mask))
            .collect();
        if !missing.is_empty() {
            inner.generation += 1;
            for (dir, mask) in missing {
                if !inner.watched.contains_key(&dir) && inner.watched.len() >= MAX_WATCHES {
                    return;
                }
                let Some(wd) = self.watch(&dir, mask) else {
                    return;
                };
                let mask = mask | inner.watched.get(&dir).map_or(0, |(_, m)| *m);
                inner.watched.insert(dir, (wd, mask));
            }
            return;
        }
        if inner.count >= MAX_ENTRIES || inner.bytes + len > MAX_BYTES {
            inner.clear_entries();
        }
        let slots = inner.entries[mount].entry(rest.into()).or_default();
        let old = slots[variant].replace(rep.clone());
        let old_len = old.and_then(|o| o.contents_len());
        inner.count += usize::from(old_len.is_none());
        inner.bytes = inner.bytes + len - old_len.unwrap_or(0);
    }

    /// Watch `dir` for `mask` (added to what is watched already); its descriptor.
    fn watch(&self, dir: &Path, mask: u32) -> Option<i32> {
        let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mask = mask | libc::IN_MASK_ADD | libc::IN_ONLYDIR | libc::IN_DONT_FOLLOW;
        // SAFETY: a valid NUL-terminated path; the descriptor is ours.
        let wd = unsafe { libc::inotify_add_watch(self.inotify.as_raw_fd(), path.as_ptr(), mask) };
        (wd >= 0).then_some(wd)
    }

    /// Read every queued event without waiting; any (but the `IN_IGNORED` of a watch we
    /// removed, or of one whose removal was itself an event) empties the cache.
    fn drain(&self, inner: &mut Inner) {
        let mut buf = [0u8; 4096];
        let mut changed = false;
        loop {
            // SAFETY: reading into our own buffer of the length passed.
            let n =
                unsafe { libc::read(self.inotify.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break; // EAGAIN: nothing queued
            }
            let events = &buf[..n as usize];
            let mut at = 0;
            while at + 16 <= events.len() {
                let field =
                    |i: usize| u32::from_ne_bytes(events[at + i..at + i + 4].try_into().unwrap());
                if field(4) & libc::IN_IGNORED == 0 {
                    changed = true;
                }
                at += 16 + field(12) as usize;
            }
        }
        if changed {
            inner.clear_entries();
            for (_, (wd, _)) in inner.watched.drain() {
                // SAFETY: plain integers; a stale descriptor only fails.
                unsafe { libc::inotify_rm_watch(self.inotify.as_raw_fd(), wd) };
            }
            inner.generation += 1;
        }
    }
}

impl Inner {
    fn clear_entries(&mut self) {
        for map in &mut self.entries {
            map.clear();
        }
        self.count = 0;
        self.bytes = 0;
    }
}

/// What to watch for a file `name` found under `root`: each ancestor of `root` for
/// moving or removal, `root` and each directory down to `name`'s for any change.
fn watch_list(root: &Path, name: &Path) -> Vec<(PathBuf, u32)> {
    let mut dirs = Vec::new();
    let mut dir = name.parent();
    while let Some(d) = dir {
        if !d.starts_with(root) {
            break;
        }
        dirs.push((d.to_path_buf(), CONTENT_EVENTS));
        dir = d.parent();
    }
    let mut up = root.parent();
    while let Some(d) = up {
        dirs.push((d.to_path_buf(), SELF_EVENTS));
        up = d.parent();
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_the_way_down_and_the_ancestors() {
        let got = watch_list(Path::new("/srv/pub"), Path::new("/srv/pub/css/a/x.css"));
        let want = [
            ("/srv/pub/css/a", CONTENT_EVENTS),
            ("/srv/pub/css", CONTENT_EVENTS),
            ("/srv/pub", CONTENT_EVENTS),
            ("/srv", SELF_EVENTS),
            ("/", SELF_EVENTS),
        ];
        assert_eq!(got.len(), want.len());
        for ((d, m), (wd, wm)) in got.iter().zip(want) {
            assert_eq!((d.as_path(), *m), (Path::new(wd), wm));
        }
    }
}
