//! A journal file mapped into memory, written by copying into the mapping: no system call
//! per write, and what is copied survives a crash of Airlock in the page cache.
//!
//! A write the file refuses (it was made immutable, or its file system turned read-only)
//! would raise SIGBUS in the copy. While a thread copies into a segment, a SIGBUS handler
//! that knows the segment's range puts anonymous memory under the faulting page and flags
//! the copy, which then fails as a `write` would: the statement is refused, not the process
//! killed. Any other SIGBUS goes to the handler that was there before (Rust's
//! stack-overflow report, or the default).

use std::cell::Cell;
use std::fs::File;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering, compiler_fence, fence};

use memmap2::MmapMut;

/// A journal file, mapped whole. Beyond its frames it holds zeros, or the stale frames of
/// its last use behind a zero length, where readers stop.
pub struct Segment {
    file: File,
    map: MmapMut,
}

impl Segment {
    /// Maps `file`, allocating `len` bytes of it first (blocks reserved, so that a full
    /// disk is an error here and never a fault when the mapping is written).
    pub fn map(file: File, len: usize) -> std::io::Result<Segment> {
        allocate(&file, len)?;
        install_handler();
        let map = map(&file)?;
        Ok(Segment { file, map })
    }

    /// Makes room for `len` bytes.
    fn reserve(&mut self, len: usize) -> std::io::Result<()> {
        if len <= self.map.len() {
            return Ok(());
        }
        let grown = len.max(self.map.len() * 2).next_multiple_of(1 << 20);
        allocate(&self.file, grown)?;
        self.map = map(&self.file)?;
        Ok(())
    }

    /// Writes `frames` (whole frames) at `at` so that a reader (or recovery after a crash
    /// at any instant) sees all of them or none: a zero length after them first, then all
    /// but the first frame's length, then that. `at` must hold a zero length already.
    pub fn put(&mut self, at: usize, frames: &[u8]) -> std::io::Result<()> {
        let end = at + frames.len();
        self.reserve(end + 4)?;
        self.guarded(|map| {
            map[end..end + 4].fill(0);
            map[at + 4..end].copy_from_slice(&frames[4..]);
        })?;
        // Only once the rest is in the file.
        fence(Ordering::Release);
        self.guarded(|map| map[at..at + 4].copy_from_slice(&frames[..4]))
    }

    /// Runs `f` on the first `end` bytes (which must be in the mapping).
    pub fn read<T>(&mut self, end: usize, f: impl FnOnce(&[u8]) -> T) -> std::io::Result<T> {
        let mut out = None;
        self.guarded(|map| out = Some(f(&map[..end])))?;
        Ok(out.expect("guarded runs its closure"))
    }

    /// Makes the segment read as empty.
    pub fn empty(&mut self) -> std::io::Result<()> {
        self.guarded(|map| map[..4].fill(0))
    }

    /// Runs `copy` on the mapping with SIGBUS caught: a fault fails it, and the segment is
    /// mapped afresh (the faulting page was replaced).
    fn guarded(&mut self, copy: impl FnOnce(&mut [u8])) -> std::io::Result<()> {
        let range = self.map.as_ptr() as usize..self.map.as_ptr() as usize + self.map.len();
        COPYING.set((range.start, range.end));
        compiler_fence(Ordering::SeqCst);
        copy(&mut self.map[..]);
        compiler_fence(Ordering::SeqCst);
        COPYING.set((0, 0));
        if !FAULTED.replace(false) {
            return Ok(());
        }
        self.map = map(&self.file)?;
        Err(std::io::Error::other(
            "its file refused the write (is the file system read-only, or the file immutable?)",
        ))
    }
}

fn map(file: &File) -> std::io::Result<MmapMut> {
    // SAFETY: the mapping is shared with the file, which only this process changes: the
    // journal is locked against another Airlock (`Journal::open`), readers use `read`, and
    // the file is never shortened while it is mapped. Its bytes are plain data; a write the
    // file refuses is caught (`Segment::guarded`).
    unsafe { MmapMut::map_mut(file) }
}

/// Reserves the first `len` bytes of `file` on disk, extending it with zeros.
fn allocate(file: &File, len: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: a plain system call on an open descriptor.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

thread_local! {
    /// The mapping this thread is copying into (start, end), or (0, 0).
    static COPYING: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    /// Whether a copy into it faulted.
    static FAULTED: Cell<bool> = const { Cell::new(false) };
}

/// The SIGBUS action before ours, for faults not in a segment.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static PAGE: AtomicUsize = AtomicUsize::new(4096);

fn install_handler() {
    PREVIOUS.get_or_init(|| {
        // SAFETY: plain calls; the handler only reads and writes this thread's `Cell`s
        // (const-initialized, without destructors), reads PREVIOUS and PAGE (set before it
        // is installed), and calls mmap and sigaction.
        unsafe {
            PAGE.store(
                libc::sysconf(libc::_SC_PAGESIZE) as usize,
                Ordering::Relaxed,
            );
            let mut previous: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            // Should this fail, a refused write kills the process: still nothing unrecorded.
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
            previous
        }
    });
}

extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo; see `install_handler`.
    unsafe {
        let addr = (*info).si_addr() as usize;
        let (start, end) = COPYING.get();
        if (start..end).contains(&addr) {
            let page = PAGE.load(Ordering::Relaxed);
            let anon = libc::mmap(
                (addr & !(page - 1)) as *mut libc::c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            if anon != libc::MAP_FAILED {
                FAULTED.set(true);
                return;
            }
        }
        // Not ours: returning re-raises the fault under the action that was there before.
        match PREVIOUS.get() {
            Some(previous) => libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut()),
            None => libc::signal(libc::SIGBUS, libc::SIG_DFL) as libc::c_int,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn chattr(flag: &str, path: &std::path::Path) {
        let out = Command::new("chattr").arg(flag).arg(path).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// A SIGBUS outside a segment's copy is not swallowed: the process dies of it, as it
    /// would without the handler. (Run in a child process: this test binary again.)
    #[test]
    fn any_other_sigbus_still_kills_the_process() {
        const CHILD: &str = "AIRLOCK_TEST_SIGBUS_CHILD";
        if std::env::var_os(CHILD).is_some() {
            // SAFETY: setrlimit, then reads of a mapping whose file is cut short under it.
            unsafe {
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                let dir = tempfile::tempdir().unwrap();
                let open = |name: &str| {
                    File::options()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(dir.path().join(name))
                        .unwrap()
                };
                let _segment = Segment::map(open("segment"), 4096).unwrap();
                let other = open("other");
                other.set_len(8192).unwrap();
                let map = memmap2::Mmap::map(&other).unwrap();
                other.set_len(0).unwrap();
                let byte = std::ptr::read_volatile(&map[4096]);
                println!("survived a SIGBUS ({byte})");
            }
            return;
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "audit::segment::tests::any_other_sigbus_still_kills_the_process",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{out:?}");
    }

    /// A write the file refuses fails like a `write` and publishes nothing; once the file
    /// takes writes again, so does the segment.
    #[test]
    fn a_refused_write_fails_and_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let mut segment = Segment::map(file, 1 << 20).unwrap();
        let frame = |n: u8| [&[5, 0, 0, 0][..], &[n; 5]].concat();
        segment.put(0, &frame(1)).unwrap();
        chattr("+i", &path);
        let refused = segment.put(9, &frame(2));
        chattr("-i", &path);
        let e = refused.unwrap_err().to_string();
        assert!(e.contains("refused the write"), "{e}");
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..13], &[5, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0]);
        segment.put(9, &frame(3)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[9..22], &[5, 0, 0, 0, 3, 3, 3, 3, 3, 0, 0, 0, 0]);
    }
}
