//! Keeps fork() children from holding our userfaultfd open.
//!
//! A child made by fork() inherits a copy of every fd, and the kernel's userfaultfd context lives
//! as long as any copy does. If the parent then drops its monitor (the reader stops and closes
//! the parent's fd), the context and every registration on the parent's memory stay alive with
//! nobody reading: the parent's next munmap of a formerly watched range sleeps until the child
//! exits (measured: exactly as long as the child lived). So a `pthread_atfork` child handler
//! replaces, in the child only, each live monitor's userfaultfd with /dev/null (`dup3` keeps the
//! fd number valid, so the child's own `Drop` still closes "its" fd harmlessly).
//!
//! The table is a fixed array of atomics: the handler runs in the child right after fork(), where
//! only async-signal-safe calls are allowed (no allocation, no locks). Not covered: a fork that
//! does not run atfork handlers (a raw `clone` system call, `vfork`), a fork landing between
//! opening the fd and `register` (or between `unregister` and the close), and more than
//! [`SLOTS`] live monitors. These leave the hazard above, nothing worse.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

/// Live monitors covered at once.
const SLOTS: usize = 64;

static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
static INSTALL: Once = Once::new();

extern "C" fn in_child_after_fork() {
    let path = c"/dev/null";
    for slot in &FDS {
        // Relaxed: the child is single-threaded and fork copied memory as of the fork.
        let fd = slot.load(Ordering::Relaxed);
        if fd < 0 {
            continue;
        }
        // SAFETY: open, dup3 and close are async-signal-safe; `fd` is an fd of this process
        // (the child's copy of a live monitor's userfaultfd), replaced atomically by dup3.
        unsafe {
            let null = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if null >= 0 {
                libc::dup3(null, fd, libc::O_CLOEXEC);
                libc::close(null);
            }
        }
    }
}

/// Adds `fd` to the table (installing the handler on first use). Returns the slot, or `None`
/// when the table is full (the monitor then works without this protection).
pub fn register(fd: RawFd) -> Option<usize> {
    INSTALL.call_once(|| {
        // SAFETY: registers a handler that only makes async-signal-safe calls. A failure
        // (ENOMEM) just leaves children unprotected.
        unsafe { libc::pthread_atfork(None, None, Some(in_child_after_fork)) };
    });
    FDS.iter().position(|slot| {
        // AcqRel/Relaxed: the slot is claimed by exactly one monitor; the value itself is
        // read only by the handler in a child.
        slot.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

/// Removes the entry in `slot` (before its fd is closed, so no later child replaces an unrelated
/// fd that reused the number).
pub fn unregister(slot: Option<usize>) {
    if let Some(i) = slot {
        // Release: ordered before the close that follows in program order.
        FDS[i].store(-1, Ordering::Release);
    }
}
