//! fork() detection without a system call on the hit path.
//!
//! A pthread_atfork child handler bumps a process-wide generation; a cache remembers the value at
//! its creation and refuses service when it differs (it is then in a fork child, where the
//! parent's registrations must never be used: the child's pages are copies, the NIC's are not).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn in_child() {
    // Relaxed: the child has one thread at this point, the one that returns from fork().
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Installs the handler (once per process) and returns the current fork generation.
pub(crate) fn generation() -> u64 {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: registering a plain extern "C" function with no captured state; it only
        // performs an atomic add, which is async-signal-safe as a child handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
    current()
}

/// The fork generation, cheaply.
#[inline]
pub(crate) fn current() -> u64 {
    // Relaxed: the only writer runs in the child's sole thread before any other child thread
    // exists; those threads are created after it, which orders the write before their loads.
    FORKS.load(Ordering::Relaxed)
}
