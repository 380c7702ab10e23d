//! The reader thread and the event ring it fills.
//!
//! The kernel delivers UNMAP and REMOVE events synchronously: the thread that unmaps sleeps until
//! somebody `read()`s its message. This thread is that somebody. It turns messages into the
//! counter + queue shape the cache expects ([`Shared`]):
//!
//! ```text
//! loop {
//!     poll(uffd, wake_fd)                 // sleeps; 100 ms timeout re-checks `stop` too
//!     seq += 1   (now odd: "reader busy") // SeqCst, before read(): see below
//!     read() messages, push ranges        // preallocated ArrayQueue; full -> overflow = true
//!     seq += 1   (now even)               // Release: publishes the pushes
//! }
//! ```
//!
//! Why odd before `read()`: `read()` is what wakes the unmapping thread (the kernel completes the
//! event while copying it out), so the unmapper's munmap may return before we have pushed
//! anything. Because `seq` was made odd first, any counter load that happens after that return
//! sees a value different from every (even) value `drain` has returned. The increment is ordered
//! before the wake-up by the kernel itself: it is sequenced before our `read()`, whose completion
//! of the event happens under `event_wqh.lock`, and the unmapper re-checks the event under the
//! same lock before returning. The unlock/lock pair carries everything we did before `read()`
//! (including the increment) to the unmapper, and from it to whatever happens after its munmap
//! returned. SeqCst (a full barrier on every architecture) is used on top of that so the argument
//! does not rest on the kernel's lock alone, and the syscall is a compiler barrier.
//!
//! # Never allocate, never lock
//!
//! An application thread may unmap a watched range while holding a lock: glibc's `free()` trims
//! the heap (munmap/madvise) with the arena lock held. If this thread then needed that lock (any
//! `malloc`/`free`), neither would progress (libfabric issue #5554). So once the loop runs, this
//! thread touches only its stack, the preallocated queue and atomics, and makes only
//! `poll`/`read`/`ioctl`/`close` system calls. Startup allocations of the Rust runtime happen
//! before `ready` is set (the creator waits for it, so before anything is watched). At shutdown
//! the thread closes the userfaultfd *before* returning, so any unmapper still waiting is released
//! by the kernel before the thread-exit path (which may `free()` thread-local state) runs.

use crate::range::Range;
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::sys;

/// How long `poll` sleeps before re-checking `stop` (the wake eventfd normally ends it sooner).
pub const POLL_TIMEOUT_MS: i32 = 100;
/// Messages read per `read()` call: 64 x 32 bytes = 2 KiB of the reader's stack.
const READ_BATCH: usize = 64;

/// State shared between the monitor (application threads) and the reader thread.
pub struct Shared {
    /// The generation counter the cache loads on every lookup. Odd while the reader is between
    /// `read()` and publishing what it read. Alone on its cache line: lookups read it constantly.
    pub seq: CachePadded<AtomicU64>,
    /// Invalidated ranges, bounded and preallocated. Never grows.
    pub queue: ArrayQueue<Range>,
    /// Set when a range did not fit in `queue`; `drain` then reports `Invalidation::All`.
    pub overflow: AtomicBool,
    /// Set by `Drop` to end the reader loop.
    pub stop: AtomicBool,
    /// Set by the reader once it is in its loop (all startup allocations done).
    pub ready: AtomicBool,
    /// Set by the reader on its way out (return or unwind), before it closes the userfaultfd:
    /// from then on nothing will ever be read, the fd number may be reused, and the monitor is
    /// broken (see `UffdMonitor::reader_gone`).
    pub gone: AtomicBool,
    /// Test builds only: makes the reader thread panic at the top of its loop (to test that a
    /// dead reader breaks the monitor instead of hanging it).
    #[cfg(test)]
    pub die: AtomicBool,
}

impl Shared {
    pub fn new(capacity: usize) -> Self {
        Shared {
            seq: CachePadded::new(AtomicU64::new(0)),
            queue: ArrayQueue::new(capacity.max(1)),
            overflow: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            #[cfg(test)]
            die: AtomicBool::new(false),
        }
    }

    /// Waits until the reader is not between `read()` and publishing, and returns that (even)
    /// generation. Acquire: it synchronizes with the Release increment that produced it, and, as
    /// every later increment is a read-modify-write continuing that release sequence, with every
    /// earlier one; so every push made before the returned generation is visible to the caller.
    /// `None` when the reader is gone (it may have died with the counter odd: never wait then).
    pub fn stable_generation(&self) -> Option<u64> {
        let mut spins = 0u32;
        loop {
            let g = self.seq.load(Ordering::Acquire);
            if g & 1 == 0 {
                return Some(g);
            }
            // SeqCst: see `gone`'s store in `ExitGuard`.
            if self.gone.load(Ordering::SeqCst) {
                return None;
            }
            // The reader holds `seq` odd for one read() and a few pushes: microseconds, unless
            // it was preempted; spin briefly, then give the CPU away.
            if spins < 256 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            spins = spins.saturating_add(1);
        }
    }
}

/// When the reader returns (or unwinds), before the thread exits: marks it gone, then closes
/// the userfaultfd.
struct ExitGuard<'a> {
    uffd: RawFd,
    sh: &'a Shared,
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        // SeqCst, before the close: a thread whose ioctl on the fd failed because of the close
        // (the kernel's fd table lock orders the two) then sees the flag, and a thread that
        // loads it before its ioctl and finds it clear used the fd while it was still ours.
        self.sh.gone.store(true, Ordering::SeqCst);
        sys::close(self.uffd);
    }
}

/// The reader thread's body. Owns `uffd` and closes it before returning; `wake` (an eventfd that
/// `Drop` signals after setting `stop`) stays owned by the monitor.
pub fn run(uffd: RawFd, wake: RawFd, page: usize, sh: &Shared) {
    let _exit = ExitGuard { uffd, sh };
    let mut buf = [sys::UffdMsg::zeroed(); READ_BATCH];
    // Relaxed would do for the creator's spin, but Release/Acquire makes "the reader is running"
    // a proper happens-before edge for anyone who reasons about it.
    sh.ready.store(true, Ordering::Release);
    // Acquire pairs with the Release store in `Drop`; nothing is published through it, it is
    // just a flag, but there is no cost to being strict here.
    while !sh.stop.load(Ordering::Acquire) {
        #[cfg(test)]
        if sh.die.load(Ordering::Relaxed) {
            panic!("test: the uffd reader thread dies");
        }
        let revents = match sys::poll_in([uffd, wake], POLL_TIMEOUT_MS) {
            Ok(r) => r,
            Err(libc::EINTR) => continue, // a signal
            Err(_) => {
                // ENOMEM (kernel poll table): unexpected; retry without spinning hot.
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
        };
        if revents[1] != 0 {
            continue; // shutdown request: the loop condition sees `stop`
        }
        if revents[0] & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            // Not expected while we own the fd; do not spin on it.
            std::thread::sleep(std::time::Duration::from_millis(POLL_TIMEOUT_MS as u64));
            continue;
        }
        if revents[0] & libc::POLLIN == 0 {
            continue; // timeout
        }

        // Odd: "reader busy". SeqCst and before read(): see the module comment.
        sh.seq.fetch_add(1, Ordering::SeqCst);
        loop {
            match sys::read_msgs(uffd, &mut buf) {
                Ok(n) => {
                    for m in &buf[..n] {
                        handle(uffd, page, m, sh);
                    }
                    if n < READ_BATCH {
                        break;
                    }
                }
                Err(libc::EINTR) => continue,
                Err(_) => break, // EAGAIN: nothing (more) to read
            }
        }
        // Even again. Release: every push above (and an `overflow` store) happens-before any
        // Acquire load that reads this value or a later one.
        sh.seq.fetch_add(1, Ordering::Release);
    }
}

fn handle(uffd: RawFd, page: usize, m: &sys::UffdMsg, sh: &Shared) {
    let (start, end) = match m.event {
        sys::UFFD_EVENT_UNMAP | sys::UFFD_EVENT_REMOVE => m.remove_range(),
        // mremap moved [from, from+len) to `to`: the source pages are gone from `from`.
        sys::UFFD_EVENT_REMAP => {
            let (from, _to, len) = m.remap();
            (from, from.saturating_add(len))
        }
        sys::UFFD_EVENT_PAGEFAULT => {
            // Cannot happen: we register in WP mode and never write-protect. Should someone write
            // protect a page through our fd anyway, the faulting thread would sleep until we
            // answered, so answer: remove the protection (which wakes it), or wake it.
            let (flags, addr) = m.pagefault();
            let p = addr & !(page as u64 - 1);
            if flags & sys::UFFD_PAGEFAULT_FLAG_WP != 0 {
                let _ = sys::writeprotect(uffd, p, page as u64, false);
            } else {
                let _ = sys::wake(uffd, p, page as u64);
            }
            return;
        }
        sys::UFFD_EVENT_FORK => {
            // Never requested; if it came anyway, do not leak the child's context fd.
            sys::close(m.fork_ufd() as RawFd);
            return;
        }
        _ => return,
    };
    if end <= start {
        return;
    }
    let range = Range {
        start: start as usize,
        end: end as usize,
    };
    if sh.queue.push(range).is_err() {
        // Relaxed: published by the Release increment that ends this busy period.
        sh.overflow.store(true, Ordering::Relaxed);
    }
}
