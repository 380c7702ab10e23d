//! Registrars: what turns a virtual range into something a NIC can DMA to and from.
//!
//! A registrar pins the pages behind `[addr, addr+len)` and hands back keys. The cache calls it
//! only on a miss and on deregistration, so this trait favours clarity over speed (dynamic
//! dispatch is fine here). Implementations:
//! - [`uring::SoftNic`]: io_uring fixed buffers, a "software NIC" that pins pages exactly like an
//!   RDMA NIC and can DMA into and out of a registration, for machines without RDMA hardware;
//! - [`noop::NoopRegistrar`]: registers nothing, for benchmarks that compare caches only;
//! - the rdma-core verbs registrar (its own issue): `token` holds the `struct ibv_mr *`.

pub mod noop;
pub mod uring;
#[cfg(feature = "verbs")]
pub mod verbs;

use crate::error::Result;
use bitflags::bitflags;

bitflags! {
    /// Access rights of a registration; the bit values are rdma-core's `enum ibv_access_flags`,
    /// so the verbs registrar and the C ABI pass them through unchanged.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Access: u32 {
        const LOCAL_WRITE = 1 << 0;
        const REMOTE_WRITE = 1 << 1;
        const REMOTE_READ = 1 << 2;
        const REMOTE_ATOMIC = 1 << 3;
        const RELAXED_ORDERING = 1 << 20;
    }
}

impl Access {
    /// True when a registration made with `self` may serve a request for `wanted`.
    /// Relaxed ordering is a performance hint, not a right: it never blocks a hit.
    #[inline]
    pub fn covers(self, wanted: Access) -> bool {
        let rights = wanted.difference(Access::RELAXED_ORDERING);
        self.contains(rights)
    }
}

/// What a registrar returns for one registered range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Local key (verbs lkey; software NIC: the fixed-buffer slot).
    pub lkey: u32,
    /// Remote key (verbs rkey; software NIC: same as lkey).
    pub rkey: u32,
    /// Registrar-private handle (verbs: the `struct ibv_mr *`; software NIC: slot index).
    pub token: u64,
}

/// Registers and deregisters memory. Must be usable from any thread.
pub trait Registrar: Send + Sync {
    /// Short name for logs and statistics ("uring", "verbs", "noop").
    fn name(&self) -> &'static str;

    /// Pins `[addr, addr+len)` with `access`. `addr`/`len` are exactly what the cache decided to
    /// register (page-aligned by the cache). Errors from lack of lockable memory or slots must be
    /// `Error::OutOfResources` (see `Error::from_register_errno`) so the cache can evict and retry.
    fn register(&self, addr: usize, len: usize, access: Access) -> Result<Registration>;

    /// Releases a registration made by `register`. Called exactly once per registration, and only
    /// when no handle to it is left. Failures are logged by the implementation, never fatal: the
    /// memory may already be unmapped, which is normal for an invalidated entry.
    fn deregister(&self, reg: &Registration, addr: usize, len: usize);

    /// Largest range one registration can cover (`usize::MAX` when unlimited).
    fn max_len(&self) -> usize {
        usize::MAX
    }

    /// Called on a miss before the cache starts watching `[addr, addr+len)` to register it;
    /// paired with exactly one `settle` of the same range once that attempt is over (after
    /// `register` returned, either way, or when the watch failed). A registrar whose
    /// `register` changes the mapping's VMA flags does that here instead, so the VMA split
    /// happens before the watch: the kernel reports a split as a change of the whole 2 MiB
    /// block around it, which would otherwise strike the new registration while it is being
    /// made (issue 11; rdma-core's fork protection, `madvise(MADV_DONTFORK)` in `ibv_reg_mr`).
    /// Default: nothing.
    fn prepare(&self, _addr: usize, _len: usize) {}

    /// Ends what `prepare` started (see there). Default: nothing.
    fn settle(&self, _addr: usize, _len: usize) {}
}

/// One `Registrar::prepare`, settled when dropped: every path out of a miss attempt pairs them.
pub(crate) struct Prepared<'a> {
    registrar: &'a dyn Registrar,
    start: usize,
    len: usize,
}

impl<'a> Prepared<'a> {
    pub(crate) fn new(registrar: &'a dyn Registrar, r: crate::range::Range) -> Self {
        registrar.prepare(r.start, r.len());
        Prepared {
            registrar,
            start: r.start,
            len: r.len(),
        }
    }
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        self.registrar.settle(self.start, self.len);
    }
}
