//! io_uring "software NIC": a registrar that pins memory exactly like an RDMA NIC driver and can
//! DMA into and out of its registrations, for machines without RDMA hardware.
//!
//! One io_uring ring with a sparse fixed-buffer table of up to 16384 slots (the kernel's
//! `IORING_MAX_REG_BUFFERS`). Registering a range takes a free slot and fills it with
//! `IORING_REGISTER_BUFFERS_UPDATE`, which makes the kernel pin the pages long-term (counted
//! against RLIMIT_MEMLOCK without CAP_IPC_LOCK), as `ibv_reg_mr` does. Deregistering empties the
//! slot (null iovec) and frees it. The kernel caps a fixed buffer at 1 GiB, so a larger range is
//! a chain of slots; lkey = rkey = the first slot's index, and `Registration::token` is a
//! never-reused handle into the NIC's table of chains (see `table`).
//!
//! Files: `ring` (the io_uring and its slot updates), `slots` (free-slot allocator), `table`
//! (token -> chain, per-slot splitting), `dma` (the NIC moving data through a registration).
//!
//! Trade-offs: everything sits behind one mutex. Registration, deregistration and DMA are on the
//! cache's miss and transfer paths, never on its hit path, and the kernel serialises buffer
//! updates of one ring on its own lock anyway; a long DMA does delay registrations meanwhile.
//! Access flags are accepted but not enforced: a fixed buffer is always readable and writable by
//! the kernel (pages are pinned for write, so read-only mappings fail with EFAULT).
//!
//! fork(): the ring's queues are MAP_SHARED mappings and its fd is inherited, so a child shares
//! the parent's ring and fixed-buffer table. The child must not use the SoftNic (the cache
//! disables itself in the child): a slot update from the child would change the parent's
//! registrations, and the child's address space no longer matches them anyway. Every entry point
//! checks the process id and returns `Error::ForkedChild` (deregistration does nothing) in a
//! child; dropping the SoftNic in the child only closes the child's references.

mod dma;
mod ring;
mod slots;
mod table;
#[cfg(test)]
mod tests;

use self::dma::Scratch;
use self::ring::Ring;
use self::slots::SlotAllocator;
use self::table::{pieces, slots_needed, Chain, Table};
use super::{Access, Registrar, Registration};
use crate::error::{Error, Result};
use crate::range::Range;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most fixed buffers one ring may hold (the kernel's `IORING_MAX_REG_BUFFERS`).
pub const MAX_SLOTS: u32 = 1 << 14;

/// Largest fixed buffer the kernel accepts (`SZ_1G` in io_uring/rsrc.c).
pub const MAX_SLOT_BYTES: usize = 1 << 30;

/// The io_uring software NIC. See the module documentation.
pub struct SoftNic {
    inner: Mutex<Inner>,
    /// Process that created the ring; any other process is a fork() child.
    owner_pid: u32,
    /// Bytes covered by one slot of a chain: `MAX_SLOT_BYTES`, smaller in tests.
    slot_bytes: usize,
}

/// Everything the mutex protects: the ring, which slots are free, what each registration holds,
/// and the DMA scratch file.
struct Inner {
    ring: Ring,
    slots: SlotAllocator,
    table: Table,
    scratch: Scratch,
}

impl SoftNic {
    /// A software NIC with a table of `slots` fixed buffers (1..=16384; 16384 is the kernel's
    /// maximum). Fails with a printable error naming the cause when io_uring is unavailable
    /// (ENOSYS: not built in; EPERM: `kernel.io_uring_disabled` or seccomp).
    pub fn new(slots: u32) -> Result<Self> {
        Self::with_slot_bytes(slots, MAX_SLOT_BYTES)
    }

    /// As `new`, with chains split every `slot_bytes` instead of every 1 GiB (tests use small
    /// values to exercise chaining cheaply).
    fn with_slot_bytes(slots: u32, slot_bytes: usize) -> Result<Self> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(Error::InvalidArgument(
                "slot count must be between 1 and 16384",
            ));
        }
        debug_assert!(slot_bytes > 0 && slot_bytes <= MAX_SLOT_BYTES);
        // Relaxed: only the uniqueness of the id matters; it publishes no other memory.
        static NEXT_NIC: AtomicU64 = AtomicU64::new(1);
        let nic_id = NEXT_NIC.fetch_add(1, Ordering::Relaxed);
        let inner = Inner {
            ring: Ring::new(slots)?,
            slots: SlotAllocator::new(slots),
            table: Table::new(nic_id),
            scratch: Scratch::new()?,
        };
        Ok(SoftNic {
            inner: Mutex::new(inner),
            owner_pid: std::process::id(),
            slot_bytes,
        })
    }

    /// Fixed-buffer slots held by live registrations (a chained registration holds several).
    pub fn slots_in_use(&self) -> usize {
        self.inner.lock().slots.in_use()
    }

    /// `Err(ForkedChild)` unless called in the process that created the ring.
    fn check_owner(&self) -> Result<()> {
        if std::process::id() == self.owner_pid {
            Ok(())
        } else {
            Err(Error::ForkedChild)
        }
    }
}

impl Registrar for SoftNic {
    fn name(&self) -> &'static str {
        "uring"
    }

    fn register(&self, addr: usize, len: usize, _access: Access) -> Result<Registration> {
        self.check_owner()?;
        let range = Range::new(addr, len)?;
        let needed = slots_needed(range.len(), self.slot_bytes);
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let capacity = inner.slots.capacity();
        if needed > capacity {
            // Evicting cannot help: even an empty table is too small.
            return Err(Error::TooLarge {
                len,
                max: capacity.saturating_mul(self.slot_bytes),
            });
        }
        let slots = inner.slots.alloc(needed).ok_or_else(|| {
            Error::from_register_errno(
                libc::ENOSPC,
                format!(
                    "{needed} fixed-buffer slot(s) needed, {} of {capacity} free",
                    capacity - inner.slots.in_use()
                ),
            )
        })?;
        for piece in pieces(addr, self.slot_bytes, addr, len) {
            let slot = slots[piece.index];
            if let Err(e) = inner.ring.set_slot(slot, piece.addr, piece.len) {
                // Undo the slots already filled, so that a failure pins nothing.
                for &done in &slots[..piece.index] {
                    if let Err(e) = inner.ring.clear_slot(done) {
                        eprintln!("regcache: uring: emptying slot {done} after a failure: {e}");
                    }
                }
                inner.slots.release(&slots);
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                return Err(Error::from_register_errno(
                    errno,
                    format!(
                        "IORING_REGISTER_BUFFERS_UPDATE slot {slot} <- [{:#x}, +{:#x})",
                        piece.addr, piece.len
                    ),
                ));
            }
        }
        let key = u32::from(slots[0]);
        let token = inner.table.insert(Chain { addr, len, slots });
        Ok(Registration {
            lkey: key,
            rkey: key,
            token,
        })
    }

    fn deregister(&self, reg: &Registration, addr: usize, len: usize) {
        if self.check_owner().is_err() {
            // The ring is shared with the parent: emptying a slot here would deregister the
            // parent's memory. The child's references go away when it exits.
            return;
        }
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let Some(chain) = inner.table.remove(reg.token) else {
            eprintln!(
                "regcache: uring: deregistering unknown registration (token {:#x}, [{addr:#x}, \
                 +{len:#x}))",
                reg.token
            );
            return;
        };
        if chain.addr != addr || chain.len != len {
            eprintln!(
                "regcache: uring: deregistration of [{addr:#x}, +{len:#x}) names a registration of \
                 [{:#x}, +{:#x}); releasing the registration",
                chain.addr, chain.len
            );
        }
        for &slot in &chain.slots {
            if let Err(e) = inner.ring.clear_slot(slot) {
                // The slot is still released: the next registration that takes it replaces the
                // stale buffer in the same update.
                eprintln!("regcache: uring: emptying slot {slot}: {e}");
            }
        }
        if !inner.slots.release(&chain.slots) {
            eprintln!(
                "regcache: uring: slot table inconsistent while releasing {:?}",
                chain.slots
            );
        }
    }

    /// Unlimited: ranges above 1 GiB are chained over several slots (a range needing more slots
    /// than the table has fails with `TooLarge`).
    fn max_len(&self) -> usize {
        usize::MAX
    }
}

impl Drop for SoftNic {
    fn drop(&mut self) {
        let owner = std::process::id() == self.owner_pid;
        // get_mut: no lock needed with `&mut self` (and none could be taken in a fork() child
        // if another parent thread held the mutex at fork time).
        let inner = self.inner.get_mut();
        if owner {
            // Unregistering now unpins every buffer at once instead of waiting for the kernel's
            // asynchronous ring teardown; in a fork() child it would unpin the parent's buffers,
            // so there the ring is only closed (the child's reference goes away).
            if let Err(e) = inner.ring.unregister_all() {
                // ENXIO: no table registered any more; anything else is only logged, the ring's
                // close below releases everything anyway.
                if e.raw_os_error() != Some(libc::ENXIO) {
                    eprintln!("regcache: uring: unregistering buffers: {e}");
                }
            }
        }
        // Dropping `inner` closes the ring fd, unmaps its queues and closes the scratch memfd.
    }
}
