//! fork() safety of registered memory.
//!
//! Kernels since 5.13 copy pinned pages into a fork child eagerly, and rdma-core then reports
//! `IBV_FORK_UNNEEDED`. On older kernels `ibv_fork_init` makes every registration
//! MADV_DONTFORK, so the child does not share (and corrupt) the parent's pinned pages. Either
//! way the cache itself refuses service in the child (`Error::ForkedChild`).

use rdma_sys::{
    ibv_fork_init, ibv_is_fork_initialized, IBV_FORK_DISABLED, IBV_FORK_ENABLED, IBV_FORK_UNNEEDED,
};

/// How fork() is made safe for registrations in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForkSafety {
    /// The kernel copies pinned pages at fork (rdma-core: IBV_FORK_UNNEEDED).
    Kernel,
    /// `ibv_fork_init` is in effect (registrations are MADV_DONTFORK).
    ForkInit,
    /// Neither: `ibv_fork_init` failed (devices were already in use); fork() with live
    /// registrations is unsafe in this process.
    Unsafe,
}

/// The current fork safety, without changing it.
pub fn status() -> ForkSafety {
    // SAFETY: ibv_is_fork_initialized takes no arguments and only reads library/kernel state.
    match unsafe { ibv_is_fork_initialized() } {
        IBV_FORK_UNNEEDED => ForkSafety::Kernel,
        IBV_FORK_ENABLED => ForkSafety::ForkInit,
        IBV_FORK_DISABLED => ForkSafety::Unsafe,
        _ => ForkSafety::Unsafe,
    }
}

/// Makes fork() safe if the kernel does not already: calls `ibv_fork_init` when needed. Must run
/// before the process opens a device to be effective.
pub fn ensure() -> ForkSafety {
    match status() {
        ForkSafety::Unsafe => {
            // SAFETY: ibv_fork_init takes no arguments; it fails (non-zero) rather than
            // misbehaves when called too late.
            let rc = unsafe { ibv_fork_init() };
            if rc == 0 {
                ForkSafety::ForkInit
            } else {
                ForkSafety::Unsafe
            }
        }
        s => s,
    }
}
