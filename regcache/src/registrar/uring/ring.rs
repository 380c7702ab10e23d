//! The io_uring instance behind the software NIC: setup with a sparse fixed-buffer table, turning
//! one slot on (pin pages) or off (unpin), and running one operation to completion.
//!
//! Trade-offs: the ring is tiny (4 entries) and runs exactly one operation at a time, waiting for
//! its completion before returning. That makes every CQE unambiguous and leaves no operation in
//! flight when a call returns, at the cost of no overlap between operations, which a test NIC does
//! not need. If the kernel ever refuses `io_uring_enter` for a reason other than a signal, a queued
//! entry might be left behind; the ring is then marked poisoned and refuses further operations
//! instead of guessing what the kernel consumed (slot updates use `io_uring_register`, which does
//! not go through the queue, and keep working).

use crate::error::{Error, Result};
use io_uring::{squeue, IoUring};
use std::io;

/// `user_data` of the one operation in flight, to tell its completion from anything unexpected.
const OP_TAG: u64 = 0x5e17_d0a1;

/// An io_uring with a sparse table of fixed buffers.
pub(super) struct Ring {
    uring: IoUring,
    /// Set when a submission failed in a way that may have left an entry in the queue.
    poisoned: bool,
}

impl Ring {
    /// Creates the ring and its empty table of `slots` fixed buffers. The errors name the usual
    /// reasons io_uring is unavailable, so that callers can print them as they are.
    pub(super) fn new(slots: u32) -> Result<Ring> {
        let uring = IoUring::new(4).map_err(|e| setup_error(&e))?;
        uring
            .submitter()
            .register_buffers_sparse(slots)
            .map_err(|e| {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                let what = if errno == libc::EINVAL {
                    format!(
                    "IORING_REGISTER_BUFFERS2 (sparse table of {slots} slots): refused; sparse \
                     buffer tables need Linux 5.19 or newer and at most 16384 slots"
                )
                } else {
                    format!("IORING_REGISTER_BUFFERS2 (sparse table of {slots} slots)")
                };
                Error::from_register_errno(errno, what)
            })?;
        Ok(Ring {
            uring,
            poisoned: false,
        })
    }

    /// Puts `[addr, addr+len)` in `slot`: the kernel pins the pages, faulting them in first (write
    /// access, so copy-on-write pages are broken now, as an RDMA NIC driver does). Returns the
    /// kernel's error; EFAULT when part of the range is not mapped or not writable.
    pub(super) fn set_slot(&self, slot: u16, addr: usize, len: usize) -> io::Result<()> {
        let iov = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        };
        // SAFETY: the crate asks that the iovec stay valid while registered because the kernel
        // would otherwise access memory the program no longer owns. That cannot happen here: the
        // kernel validates the range itself (EFAULT if unmapped) and takes its own references on
        // the pages, so unmapping them later leaves the kernel with the old pages, never with freed
        // memory. The only kernel accesses through the slot are the DMA operations this module
        // issues on request of the caller who registered the range. `iov` lives across the call.
        unsafe {
            self.uring
                .submitter()
                .register_buffers_update(u32::from(slot), &[iov], None)
        }
    }

    /// Empties `slot` (null base, zero length): the kernel drops its page references once no
    /// operation uses the old buffer any more (none does: operations run to completion).
    pub(super) fn clear_slot(&self, slot: u16) -> io::Result<()> {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: an empty iovec registers no memory; the kernel accepts it as "no buffer here".
        unsafe {
            self.uring
                .submitter()
                .register_buffers_update(u32::from(slot), &[iov], None)
        }
    }

    /// Unregisters the whole table (all slots at once). Used by `Drop` in the creating process.
    pub(super) fn unregister_all(&self) -> io::Result<()> {
        self.uring.submitter().unregister_buffers()
    }

    /// Submits `entry` and waits for its completion. Returns the operation's non-negative result,
    /// or its negated errno as an `io::Error`. The outer `Result` reports a ring that cannot run
    /// operations at all.
    ///
    /// # Safety
    /// Every buffer and file the entry refers to must stay valid until this function returns (it
    /// does not return while the operation is in flight, except on a poisoning failure, in which
    /// case the entry is never submitted afterwards: the ring refuses further submissions).
    pub(super) unsafe fn run(&mut self, entry: squeue::Entry) -> Result<io::Result<u32>> {
        if self.poisoned {
            return Err(Error::Register {
                errno: libc::EIO,
                what: "io_uring ring unusable after an earlier submission failure".into(),
            });
        }
        let entry = entry.user_data(OP_TAG);
        // SAFETY: the caller guarantees the entry's buffers and files outlive the operation; we
        // wait for its completion below before returning.
        if unsafe { self.uring.submission().push(&entry) }.is_err() {
            // The queue holds at most one of our entries at a time and is reaped before returning,
            // so it can only be full if an earlier failure left entries behind.
            self.poisoned = true;
            return Err(Error::Register {
                errno: libc::EBUSY,
                what: "io_uring submission queue unexpectedly full".into(),
            });
        }
        loop {
            match self.uring.submit_and_wait(1) {
                Ok(_) => {}
                // A signal interrupted the wait. The kernel submits before it waits and reports
                // EINTR only when it submitted nothing, so entering again is correct either way.
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    self.poisoned = true;
                    return Err(Error::Io(e));
                }
            }
            if let Some(cqe) = self.uring.completion().next() {
                if cqe.user_data() != OP_TAG {
                    // Nothing else is ever submitted on this ring; ignore and keep waiting.
                    continue;
                }
                let res = cqe.result();
                return Ok(if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    Ok(res as u32)
                });
            }
        }
    }
}

/// The error for a failed `io_uring_setup`, explaining the common causes.
fn setup_error(e: &io::Error) -> Error {
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    let what = match errno {
        libc::ENOSYS => "io_uring_setup: io_uring is not available (kernel older than 5.1 or \
                         built without CONFIG_IO_URING)"
            .to_string(),
        libc::EPERM => "io_uring_setup: io_uring is disabled for this process (sysctl \
                        kernel.io_uring_disabled=2, or =1 and the process is neither privileged \
                        nor in kernel.io_uring_group), or a seccomp policy blocks it"
            .to_string(),
        _ => "io_uring_setup".to_string(),
    };
    Error::from_register_errno(errno, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_name_the_cause() {
        let e = setup_error(&io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(e.errno(), libc::EPERM);
        assert!(e.to_string().contains("io_uring_disabled"), "{e}");
        let e = setup_error(&io::Error::from_raw_os_error(libc::ENOSYS));
        assert_eq!(e.errno(), libc::ENOSYS);
        assert!(e.to_string().contains("not available"), "{e}");
        // Lack of memory for the rings is a resource problem like any other.
        assert!(setup_error(&io::Error::from_raw_os_error(libc::ENOMEM)).is_resource_exhaustion());
    }
}
