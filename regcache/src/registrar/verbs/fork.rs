//! fork() safety of registered memory.
//!
//! Kernels since 5.13 copy pinned pages into a fork child eagerly, and rdma-core then reports
//! `IBV_FORK_UNNEEDED`. On older kernels `ibv_fork_init` makes every registration
//! MADV_DONTFORK, so the child does not share (and corrupt) the parent's pinned pages. Either
//! way the cache itself refuses service in the child (`Error::ForkedChild`).

use rdma_sys::{
    ibv_fork_init, ibv_is_fork_initialized, IBV_FORK_DISABLED, IBV_FORK_ENABLED, IBV_FORK_UNNEEDED,
};

// In libibverbs (verbs.h) since rdma-core's first release; rdma-sys does not bind them.
extern "C" {
    fn ibv_dontfork_range(base: *mut libc::c_void, size: usize) -> libc::c_int;
    fn ibv_dofork_range(base: *mut libc::c_void, size: usize) -> libc::c_int;
}

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

/// Takes one reference on rdma-core's MADV_DONTFORK of `[addr, addr+len)` before the cache
/// watches it (`Registrar::prepare`). When fork protection is on in this process (whoever
/// called `ibv_fork_init`: UCX does by default, and rdma-core 44 then madvises even on a
/// fork-safe kernel) the madvise, and the VMA split the kernel reports as a change of the whole
/// 2 MiB around it, happens now rather than inside `ibv_reg_mr`, whose own reference then
/// finds the range already DONTFORK. When it is off, rdma-core does nothing (it only notes that
/// `ibv_fork_init` is now too late, which the registration itself would note anyway).
pub(super) fn hold_dontfork(addr: usize, len: usize) {
    // SAFETY: rdma-core only records the range and madvises it (it never touches the memory);
    // an unmapped range makes madvise fail, which it reports and we ignore (ibv_reg_mr fails
    // on it next).
    unsafe { ibv_dontfork_range(addr as *mut libc::c_void, len) };
}

/// Drops the reference `hold_dontfork` took (`Registrar::settle`). After a successful
/// `ibv_reg_mr`, the registration holds its own, so nothing is madvised; after a failed one,
/// the range is DOFORK again as before.
pub(super) fn release_dontfork(addr: usize, len: usize) {
    // SAFETY: as in hold_dontfork.
    unsafe { ibv_dofork_range(addr as *mut libc::c_void, len) };
}
