//! userfaultfd invalidation monitor: needs no kernel module, only Linux >= 5.7 (WP registration
//! of anonymous memory) with CONFIG_USERFAULTFD.
//!
//! A watched range is registered with our userfaultfd in write-protect mode
//! (`UFFDIO_REGISTER_MODE_WP`) and nothing is ever write-protected, so no page-fault messages
//! arise; the context only asks for the non-cooperative events `UNMAP` (munmap, mremap shrink,
//! mmap `MAP_FIXED` over, brk shrink), `REMOVE` (madvise `DONTNEED`/`REMOVE`) and `REMAP`
//! (mremap move). `EVENT_FORK` is never requested: a fork child's mappings are then not watched,
//! so its munmaps never wait for us.
//!
//! The kernel makes the changing thread sleep until the event is read. The reader thread
//! (`reader.rs`) reads it and publishes it as `Invalidation::Range` in a bounded queue and a
//! generation counter that is odd while an event has been read but not yet published. See
//! `reader.rs` for the protocol and why it meets the contract of [`crate::monitor`].
//!
//! # Known limitation: the cross-thread window after munmap/mremap
//!
//! For munmap, mremap and `MAP_FIXED`, the kernel queues the event only after it has released
//! the mmap lock (`userfaultfd_unmap_complete`). Another thread can map new memory at the same
//! address in between and look it up while the counter has not moved yet. The thread that
//! unmapped is covered (its call returns only after the event was read); `madvise(DONTNEED)` is
//! covered too (the event is read before the pages are zapped). Measured here (2 CPUs, a thread
//! spinning on `mmap(MAP_FIXED_NOREPLACE)` at the unmapped address): it saw the new mapping with
//! the counter unchanged in 12-65% of 2000 trials, for a median 2.4-25 µs (up to 12 ms when the
//! reader was not scheduled). [`UffdMonitor::event_in_flight`] closes the window (0 of 10000
//! trials stale) at the price of one ~0.3 µs system call per lookup; see its documentation.
//!
//! # fork()
//!
//! A child's mappings are not watched and its munmaps never wait. `Drop` in a child closes the
//! fds and does not join. `forkguard.rs` keeps a child from holding our context alive after the
//! parent dropped the monitor (the parent's munmaps would otherwise sleep until the child exits).
//!
//! # Known limitation: shared memory can change without an event
//!
//! Kernels with CONFIG_PTE_MARKER_UFFD_WP (6.18 here) accept WP registration of shmem and
//! hugetlbfs mappings (MAP_SHARED|MAP_ANONYMOUS, memfd, /dev/shm, hugetlbfs) without any feature
//! flag. Their munmap/mremap/madvise are reported like anonymous memory, but truncating or
//! punching a hole in the backing file (ftruncate, fallocate(PUNCH_HOLE), by this process or
//! another) replaces the pages with no event at all. Private file mappings are refused (EINVAL).

mod forkguard;
mod reader;
mod sys;
#[cfg(test)]
mod tests;

use super::{Invalidation, Monitor, MonitorKind, WatchError};
use crate::error::{Error, Result};
use crate::range::{page_size, Range};
use reader::Shared;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

/// Events requested from the kernel. Never `UFFD_FEATURE_EVENT_FORK`.
const FEATURES: u64 = sys::UFFD_FEATURE_EVENT_UNMAP
    | sys::UFFD_FEATURE_EVENT_REMOVE
    | sys::UFFD_FEATURE_EVENT_REMAP
    | sys::UFFD_FEATURE_PAGEFAULT_FLAG_WP;

/// Invalidations the queue holds before it overflows into `Invalidation::All` (~96 KiB).
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// Stack of the reader thread: it needs a 2 KiB message buffer and a few frames.
const READER_STACK: usize = 64 * 1024;

fn os_err(errno: i32) -> Error {
    Error::Io(io::Error::from_raw_os_error(errno))
}

fn getpid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Opens a userfaultfd and performs the API handshake with [`FEATURES`].
fn open_and_handshake() -> std::result::Result<RawFd, i32> {
    let fd = sys::open_userfaultfd()?;
    let checked = sys::api(fd, FEATURES).and_then(|a| {
        if a.features & FEATURES != FEATURES || a.ioctls & sys::UFFD_API_IOCTL_REGISTER == 0 {
            Err(libc::EOPNOTSUPP)
        } else {
            Ok(())
        }
    });
    match checked {
        Ok(()) => Ok(fd),
        Err(e) => {
            sys::close(fd);
            Err(e)
        }
    }
}

/// The userfaultfd monitor. See the module documentation.
pub struct UffdMonitor {
    /// Our userfaultfd. Owned by the reader thread once it runs (it closes it on exit); this copy
    /// of the number is used for ioctls, which only happen while the reader is alive.
    uffd: RawFd,
    /// Eventfd that `Drop` signals to wake the reader at once. Owned by the monitor.
    wake: RawFd,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    /// The process that created the monitor: in a fork() child the reader does not exist.
    pid: libc::pid_t,
    /// Our entry in the fork guard's table (see [`forkguard`]).
    fork_slot: Option<usize>,
}

impl UffdMonitor {
    /// Opens a userfaultfd and starts the reader thread, with the default queue capacity.
    ///
    /// Fails with [`Error::Io`] carrying the errno when userfaultfd cannot be used: ENOSYS
    /// (kernel without CONFIG_USERFAULTFD), EPERM (vm.unprivileged_userfaultfd=0, no
    /// `UFFD_USER_MODE_ONLY` support and no access to /dev/userfaultfd), EINVAL or EOPNOTSUPP
    /// (kernel without the UNMAP/REMOVE/REMAP events or WP registration, Linux < 5.7).
    pub fn new() -> Result<Self> {
        Self::with_queue_capacity(DEFAULT_QUEUE_CAPACITY)
    }

    /// As [`UffdMonitor::new`], with a queue of `capacity` invalidations (at least 1). When more
    /// are pending than fit, the next drain reports [`Invalidation::All`].
    pub fn with_queue_capacity(capacity: usize) -> Result<Self> {
        let page = page_size();
        let uffd = open_and_handshake().map_err(os_err)?;
        let fork_slot = forkguard::register(uffd);
        let wake = match sys::eventfd() {
            Ok(fd) => fd,
            Err(e) => {
                forkguard::unregister(fork_slot);
                sys::close(uffd);
                return Err(os_err(e));
            }
        };
        // The queue is allocated here, in the creating thread, once.
        let shared = Arc::new(Shared::new(capacity));
        let for_reader = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("regcache-uffd".into())
            .stack_size(READER_STACK)
            .spawn(move || reader::run(uffd, wake, page, &for_reader));
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                // The closure never ran: the fds are still ours.
                forkguard::unregister(fork_slot);
                sys::close(uffd);
                sys::close(wake);
                return Err(Error::Io(e));
            }
        };
        // Wait until the reader is in its loop, so the runtime's thread-start allocations are
        // over before the first range can be watched (see `reader`). Acquire pairs with the
        // reader's Release store.
        while !shared.ready.load(Ordering::Acquire) {
            if handle.is_finished() {
                // Cannot happen (the loop only ends on `stop`), but never wait forever. The
                // reader closed the userfaultfd on its way out.
                forkguard::unregister(fork_slot);
                sys::close(wake);
                let _ = handle.join();
                return Err(os_err(libc::ECHILD));
            }
            std::thread::yield_now();
        }
        Ok(UffdMonitor {
            uffd,
            wake,
            shared,
            reader: Some(handle),
            pid: getpid(),
            fork_slot,
        })
    }

    /// Whether a userfaultfd with the needed events can be opened here (checked once, cached).
    pub fn is_available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| match open_and_handshake() {
            Ok(fd) => {
                sys::close(fd);
                true
            }
            Err(_) => false,
        })
    }

    /// The queue's fixed capacity.
    pub fn queue_capacity(&self) -> usize {
        self.shared.queue.capacity()
    }

    /// Whether an unmap/mremap/madvise event of a watched range has been prepared by the kernel
    /// and not yet read by the reader. One `ioctl` (UFFDIO_WRITEPROTECT with an empty range,
    /// which has no effect: the kernel answers EAGAIN while its `mmap_changing` count is raised,
    /// EINVAL otherwise).
    ///
    /// This closes the cross-thread window described in the module documentation: the kernel
    /// raises the count under the mmap lock, before the old mapping disappears, and lowers it
    /// only after our reader has read the event (that is, after the counter went odd). A lookup
    /// that calls this FIRST and then loads the counter is therefore safe: if this says `false`,
    /// either no event is pending or its counter increment is already visible. Loading the
    /// counter first and probing after is NOT safe. When it says `true`, treat the lookup as a
    /// miss (or wait for it to turn `false`, then drain).
    pub fn event_in_flight(&self) -> Result<bool> {
        let r = sys::event_in_flight(self.uffd).map_err(os_err);
        // Order the kernel's read of its count before our later counter load (the syscall is a
        // full barrier on x86; this makes it explicit elsewhere).
        std::sync::atomic::fence(Ordering::SeqCst);
        r
    }

    /// Test builds only: makes the reader thread panic and waits until it has exited.
    #[cfg(test)]
    pub(crate) fn kill_reader_for_test(&self) {
        self.shared.die.store(true, Ordering::Relaxed);
        sys::eventfd_signal(self.wake);
        let reader = self.reader.as_ref().expect("the reader runs");
        while !reader.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn in_forked_child(&self) -> bool {
        getpid() != self.pid
    }

    /// Whether the reader thread has exited (it only does so on `Drop`, or by dying): its
    /// userfaultfd is closed (the number may already name another file), no event will ever be
    /// read again, and unmappers are no longer made to wait. The monitor is then broken: every
    /// lookup is "not settled" and `drain` fails, so the cache flushes and stops caching.
    #[inline]
    fn reader_gone(&self) -> bool {
        // SeqCst: pairs with the reader's store before it closes the fd (reader.rs).
        self.shared.gone.load(Ordering::SeqCst)
    }

    fn reader_gone_error() -> Error {
        Error::Io(io::Error::other(
            "the userfaultfd reader thread has exited: invalidations can no longer be read",
        ))
    }

    /// Maps a failed UFFDIO_REGISTER to a `WatchError`.
    fn classify(errno: i32, range: Range) -> WatchError {
        match errno {
            // Another userfaultfd owns a VMA in the range; a VMA that cannot be registered in WP
            // mode (file-backed, shmem, hugetlbfs, VM_PFNMAP...).
            libc::EBUSY | libc::EINVAL => WatchError::Unwatchable(errno),
            // Either (part of) the range is not mapped, which never passes, or splitting the
            // VMA hit vm.max_map_count / kernel memory, which may. Tell them apart.
            libc::ENOMEM if !range_is_mapped(range) => WatchError::Unwatchable(errno),
            _ => WatchError::Failed(os_err(errno)),
        }
    }
}

/// Whether every page of `range` is mapped: msync(MS_ASYNC) does nothing on Linux but fails with
/// ENOMEM when part of the range is unmapped.
fn range_is_mapped(range: Range) -> bool {
    // SAFETY: msync with MS_ASYNC only inspects the mappings; the range is page-aligned.
    unsafe {
        libc::msync(
            range.start as *mut libc::c_void,
            range.len(),
            libc::MS_ASYNC,
        ) == 0
    }
}

impl Monitor for UffdMonitor {
    fn kind(&self) -> MonitorKind {
        MonitorKind::Uffd
    }

    fn counter(&self) -> &AtomicU64 {
        &self.shared.seq
    }

    /// UFFDIO_REGISTER in WP mode. Registering a range that is (partly) registered with our
    /// context already succeeds; the cookie is not needed (events report addresses).
    fn watch(&self, range: Range, _cookie: u64) -> std::result::Result<(), WatchError> {
        if self.in_forked_child() {
            // Our context belongs to the parent's address space: registering would watch the
            // parent's memory, and there is no reader here.
            return Err(WatchError::Unwatchable(libc::ECHILD));
        }
        if self.reader_gone() {
            // The fd is closed (or another file's by now): never ioctl it.
            return Err(WatchError::Failed(Self::reader_gone_error()));
        }
        let r = range
            .page_aligned()
            .ok_or(WatchError::Unwatchable(libc::EINVAL))?;
        sys::register(
            self.uffd,
            r.start as u64,
            r.len() as u64,
            sys::UFFDIO_REGISTER_MODE_WP,
        )
        .map_err(|e| Self::classify(e, r))?;
        // The kernel registers the VMAs it finds and skips holes (6.18 does): a hole would be
        // unwatched, and whatever is mapped there later too. Refuse ranges with holes (the
        // pages registered meanwhile stay registered: a later event is a false positive).
        if !range_is_mapped(r) {
            return Err(WatchError::Unwatchable(libc::ENOMEM));
        }
        Ok(())
    }

    /// Leaves the range registered (allowed by the trait): UFFDIO_UNREGISTER costs ~23 µs and
    /// would also unwatch the pages of any overlapping entry still cached, which would then be a
    /// false negative. A registration left behind only costs a false-positive event when the
    /// memory is later unmapped, and dies with the mapping.
    fn unwatch(&self, _range: Range, _cookie: u64) {}

    /// Waits while the reader is between `read()` and publishing (counter odd), takes that even
    /// generation `g` (Acquire), then pops the queue. Every range pushed in a busy period that
    /// ended at or before `g` was pushed before the Release increment that ended the period,
    /// and our Acquire load of `g` (or a later value of the same chain of read-modify-writes)
    /// synchronizes with it, so those pushes are visible and the pops below find them (or an
    /// earlier drain did). Waiting is required, not an optimisation: returning `g - 1` while the
    /// reader is busy would let the cache trust an entry whose unmapper has already returned.
    fn needs_settle_check(&self) -> bool {
        true
    }

    fn settled(&self) -> bool {
        // A dead reader: never settled (the lookup goes to the slow path, whose drain fails and
        // breaks the cache). Checked first: its fd may be closed or reused.
        if self.reader_gone() {
            return false;
        }
        // Another error (not expected) is treated as "an event may be pending": safe, slower;
        // `drain` tells the transient ones from a broken fd.
        !self.event_in_flight().unwrap_or(true)
    }

    fn drain(&self, out: &mut Vec<Invalidation>) -> Result<u64> {
        if self.in_forked_child() {
            return Err(Error::ForkedChild);
        }
        // An unmap whose event the kernel has prepared but our reader not yet read must be in
        // this drain: wait for the reader (it never blocks on anything we hold).
        let mut spins = 0u32;
        loop {
            if self.reader_gone() {
                return Err(Self::reader_gone_error());
            }
            match self.event_in_flight() {
                Ok(false) => break,
                Ok(true) => {}
                // Transient (not expected from this ioctl): ask again.
                Err(Error::Io(e))
                    if matches!(e.raw_os_error(), Some(libc::EINTR | libc::ENOMEM)) => {}
                // EBADF, ENOTTY...: the fd is not our userfaultfd any more. Never spin on it.
                Err(e) => return Err(e),
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let g = self
            .shared
            .stable_generation()
            .ok_or_else(Self::reader_gone_error)?;
        while let Some(r) = self.shared.queue.pop() {
            out.push(Invalidation::Range(r));
        }
        // A read-modify-write sees the latest value; an overflow flagged before `g` is visible
        // through the Acquire load above. Acquire also covers one set after `g` (harmless).
        if self.shared.overflow.swap(false, Ordering::Acquire) {
            out.push(Invalidation::All);
        }
        Ok(g)
    }
}

impl Drop for UffdMonitor {
    fn drop(&mut self) {
        let Some(handle) = self.reader.take() else {
            return;
        };
        // Before the userfaultfd is closed (here or by the reader): see `forkguard`.
        forkguard::unregister(self.fork_slot);
        if self.in_forked_child() {
            // fork() copied the fds but not the reader thread (and the fork guard replaced the
            // userfaultfd copy with /dev/null): just close our copies. Joining or detaching a
            // thread that does not exist here would be wrong.
            sys::close(self.uffd);
            sys::close(self.wake);
            std::mem::forget(handle);
            return;
        }
        // Release: nothing to publish, pairs with the reader's Acquire load for form's sake.
        self.shared.stop.store(true, Ordering::Release);
        sys::eventfd_signal(self.wake);
        // The reader closes the userfaultfd before exiting (which releases any thread still
        // waiting on an event and drops every registration of the context).
        let _ = handle.join();
        sys::close(self.wake);
    }
}
