//! One shared-memory metrics segment: a file (on tmpfs, `/dev/shm` when there is one)
//! mapped `MAP_SHARED`, read as an array of `AtomicU64`.
//!
//! Layout (native-endian u64 words):
//!
//! | word | meaning |
//! | --- | --- |
//! | 0 | magic `GRSTMTRX` (written last, so a half-made segment is never read) |
//! | 1 | layout version ([`VERSION`]); a reader refuses another |
//! | 2 | number of metric slots that follow the header |
//! | 3 | pid of the writer |
//! | 4 | interface: 0 unknown, 1 WSGI, 2 ASGI |
//! | 5 | state: [`LIVE`], [`FOLDED`] (counted in the retired segment already), [`RETIRED`] |
//! | 6 | sequence number of the retired segment (a seqlock, see [`Segment::fold`]) |
//! | 7 | reserved |
//!
//! then one word per slot, at the indexes `super::layout` gives. A counter is added to
//! with a relaxed `fetch_add` (one instruction, no lock); a gauge is a counter that also
//! goes down (wrapping, read as `i64`). Only one process writes a worker's segment; the
//! supervisor writes the retired one; the metrics process only reads.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// `GRSTMTRX` as a word.
pub const MAGIC: u64 = u64::from_le_bytes(*b"GRSTMTRX");
/// Bumped whenever the slot layout changes.
pub const VERSION: u64 = 1;
const HEADER_WORDS: usize = 8;

pub const LIVE: u64 = 0;
pub const FOLDED: u64 = 1;
pub const RETIRED: u64 = 2;

const H_MAGIC: usize = 0;
const H_VERSION: usize = 1;
const H_SLOTS: usize = 2;
const H_PID: usize = 3;
const H_INTERFACE: usize = 4;
const H_STATE: usize = 5;
const H_SEQ: usize = 6;

/// A mapped segment. The mapping lives as long as this value.
pub struct Segment {
    base: NonNull<AtomicU64>,
    words: usize,
}

// SAFETY: the mapping is only ever accessed through atomics.
unsafe impl Send for Segment {}
unsafe impl Sync for Segment {}

impl Segment {
    /// Create (or truncate) the segment at `path` with `slots` zeroed slots, stamped
    /// with this process's pid, `interface` and `state`.
    pub fn create(path: &Path, slots: usize, interface: u64, state: u64) -> io::Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let words = HEADER_WORDS + slots;
        file.set_len((words * 8) as u64)?;
        let seg = Segment::map(&file, words)?;
        seg.word(H_VERSION).store(VERSION, Ordering::Relaxed);
        seg.word(H_SLOTS).store(slots as u64, Ordering::Relaxed);
        seg.word(H_PID)
            .store(u64::from(std::process::id()), Ordering::Relaxed);
        seg.word(H_INTERFACE).store(interface, Ordering::Relaxed);
        seg.word(H_STATE).store(state, Ordering::Relaxed);
        seg.word(H_MAGIC).store(MAGIC, Ordering::Release);
        Ok(seg)
    }

    /// Map an existing segment; fails unless it is complete and of this layout.
    pub fn open(path: &Path, slots: usize) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len() as usize;
        let words = HEADER_WORDS + slots;
        if len != words * 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {len} bytes, expected {}", path.display(), words * 8),
            ));
        }
        let seg = Segment::map(&file, words)?;
        if seg.word(H_MAGIC).load(Ordering::Acquire) != MAGIC
            || seg.word(H_VERSION).load(Ordering::Relaxed) != VERSION
            || seg.word(H_SLOTS).load(Ordering::Relaxed) != slots as u64
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not a gristmill metrics segment of version {VERSION}",
                    path.display()
                ),
            ));
        }
        Ok(seg)
    }

    fn map(file: &std::fs::File, words: usize) -> io::Result<Segment> {
        // SAFETY: a fresh shared mapping of the whole file, which is `words * 8` bytes
        // long; the file may be closed afterwards (the mapping keeps it).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                words * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Segment {
            base: NonNull::new(ptr.cast()).expect("mmap returned null"),
            words,
        })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words);
        // SAFETY: in bounds (checked); the mapping is page-aligned and lives with self.
        unsafe { &*self.base.as_ptr().add(i) }
    }

    /// The metric slot `i` (see `super::layout`).
    #[inline]
    pub fn slot(&self, i: usize) -> &AtomicU64 {
        self.word(HEADER_WORDS + i)
    }

    #[inline]
    pub fn add(&self, i: usize, n: u64) {
        self.slot(i).fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn sub(&self, i: usize, n: u64) {
        self.slot(i).fetch_sub(n, Ordering::Relaxed);
    }

    pub fn slots(&self) -> usize {
        self.words - HEADER_WORDS
    }

    pub fn pid(&self) -> u64 {
        self.word(H_PID).load(Ordering::Relaxed)
    }

    pub fn interface(&self) -> u64 {
        self.word(H_INTERFACE).load(Ordering::Relaxed)
    }

    pub fn set_interface(&self, interface: u64) {
        self.word(H_INTERFACE).store(interface, Ordering::Relaxed);
    }

    pub fn state(&self) -> u64 {
        self.word(H_STATE).load(Ordering::Acquire)
    }

    /// The retired segment's sequence number: odd while a fold is under way.
    pub fn seq(&self) -> u64 {
        self.word(H_SEQ).load(Ordering::Acquire)
    }

    /// Every slot's value, then an acquire fence so that a following [`seq`](Self::seq)
    /// is ordered after these reads (the reader's half of the seqlock).
    pub fn values(&self) -> Vec<u64> {
        let out = (0..self.slots())
            .map(|i| self.slot(i).load(Ordering::Relaxed))
            .collect();
        fence(Ordering::Acquire);
        out
    }

    /// Add the counters (`is_counter(slot)`) of `worker`, a segment whose writer has
    /// exited, into this retired segment, and mark `worker` folded; a reader that sees
    /// the sequence number unchanged and even around its reads counted it exactly once.
    pub fn fold(&self, worker: &Segment, is_counter: impl Fn(usize) -> bool) {
        if worker.state() != LIVE {
            return;
        }
        let seq = self.word(H_SEQ);
        seq.fetch_add(1, Ordering::AcqRel);
        fence(Ordering::Release);
        for i in (0..self.slots().min(worker.slots())).filter(|&i| is_counter(i)) {
            self.add(i, worker.slot(i).load(Ordering::Relaxed));
        }
        if self.interface() == 0 {
            self.set_interface(worker.interface());
        }
        worker.word(H_STATE).store(FOLDED, Ordering::Release);
        seq.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.words * 8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_open_fold() {
        let dir = std::env::temp_dir().join(format!("gm-shm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w = Segment::create(&dir.join("w"), 4, 1, LIVE).unwrap();
        w.add(0, 5);
        w.add(3, 2);
        w.sub(3, 1);
        let r = Segment::create(&dir.join("r"), 4, 0, RETIRED).unwrap();
        let again = Segment::open(&dir.join("w"), 4).unwrap();
        assert_eq!(again.values(), vec![5, 0, 0, 1]);
        assert!(Segment::open(&dir.join("w"), 5).is_err());
        r.fold(&again, |i| i != 3);
        r.fold(&again, |i| i != 3); // once only
        assert_eq!(r.values(), vec![5, 0, 0, 0]);
        assert_eq!(w.state(), FOLDED);
        assert_eq!(r.interface(), 1);
        assert_eq!(r.seq(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
