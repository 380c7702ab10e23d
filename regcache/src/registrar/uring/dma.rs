//! DMA through a registration: the software NIC moves data between a scratch memfd and the pages a
//! fixed-buffer slot pinned, never through the process's current page tables.
//!
//! `dma_write` (the NIC writes into memory) = `pwrite` the data into the scratch memfd, then
//! `IORING_OP_READ_FIXED` from the memfd into the slot. `dma_read` (the NIC reads memory) =
//! `IORING_OP_WRITE_FIXED` from the slot into the memfd, then `pread`. The kernel resolves the
//! target address against the slot's registered range and uses the pages it pinned at
//! registration time, which is exactly what a NIC does with an MR: if the application unmapped and
//! remapped the range since, the DMA reaches the old pages (the stale-registration corruption this
//! crate exists to prevent).
//!
//! Trade-offs: every transfer is copied twice (user buffer <-> memfd <-> pinned pages) and runs
//! under the NIC's mutex, one kernel operation at a time; this is a test NIC, not a data path. The
//! memfd keeps at most `SCRATCH_KEEP` bytes between transfers so a 64 MiB transfer does not hold
//! 64 MiB of shared memory forever.

use super::ring::Ring;
use super::table::pieces;
use super::SoftNic;
use crate::error::{Error, Result};
use crate::registrar::Registration;
use io_uring::{opcode, types};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

/// Scratch size kept between transfers; larger transfers truncate the memfd back to zero.
const SCRATCH_KEEP: usize = 4 << 20;

/// The memfd the NIC's "wire" side goes through.
pub(super) struct Scratch {
    file: File,
}

impl Scratch {
    pub(super) fn new() -> Result<Scratch> {
        // SAFETY: the name is a NUL-terminated literal; memfd_create has no other preconditions.
        let fd = unsafe { libc::memfd_create(c"regcache-softnic-dma".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            return Err(Error::from_register_errno(
                errno,
                "memfd_create for the software NIC",
            ));
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Scratch {
            file: File::from(fd),
        })
    }

    /// Writes all of `data` at offset 0 (std retries short writes and EINTR).
    fn write_all(&self, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, 0)
    }

    /// Fills all of `out` from offset 0.
    fn read_exact(&self, out: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(out, 0)
    }

    /// Gives back the memory of a large transfer. Failure only wastes memory, so it is ignored.
    fn shrink_after(&self, len: usize) {
        if len > SCRATCH_KEEP {
            let _ = self.file.set_len(0);
        }
    }
}

/// Which way the NIC moves data.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// memfd -> pinned pages (READ_FIXED): the NIC writes memory.
    IntoMemory,
    /// pinned pages -> memfd (WRITE_FIXED): the NIC reads memory.
    OutOfMemory,
}

impl SoftNic {
    /// The NIC writes `data` into `[addr, addr + data.len())` through `reg`: into the pages the
    /// registration pinned, whatever is mapped at those addresses now.
    ///
    /// Errors: `InvalidArgument` when `reg` is not live on this NIC (deregistered, or from
    /// another NIC) or the range is not inside it; `ForkedChild` in a fork() child; `Register` or
    /// `Io` when the kernel refuses the transfer.
    ///
    /// Like a real NIC, this writes memory behind the program's back: the caller must not hold
    /// Rust references to the target bytes across the call (treat registered memory as shared with
    /// a device, e.g. access it only through raw pointers or volatile/atomic reads).
    pub fn dma_write(&self, reg: &Registration, addr: usize, data: &[u8]) -> Result<()> {
        self.check_owner()?;
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let pieces = self.plan(&inner.table, reg, addr, data.len())?;
        inner.scratch.write_all(data)?;
        let res = transfer(&mut inner.ring, &inner.scratch, Dir::IntoMemory, &pieces);
        inner.scratch.shrink_after(data.len());
        res
    }

    /// The NIC reads `[addr, addr + out.len())` through `reg` into `out`: from the pages the
    /// registration pinned, whatever is mapped at those addresses now. Errors as for
    /// [`dma_write`](Self::dma_write).
    pub fn dma_read(&self, reg: &Registration, addr: usize, out: &mut [u8]) -> Result<()> {
        self.check_owner()?;
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let pieces = self.plan(&inner.table, reg, addr, out.len())?;
        let res = transfer(&mut inner.ring, &inner.scratch, Dir::OutOfMemory, &pieces)
            .and_then(|()| inner.scratch.read_exact(out).map_err(Error::from));
        inner.scratch.shrink_after(out.len());
        res
    }

    /// Checks that `reg` is live and covers `[addr, addr+len)`, and splits the range into
    /// (slot, address, length, offset) pieces, one per slot it crosses.
    fn plan(
        &self,
        table: &super::table::Table,
        reg: &Registration,
        addr: usize,
        len: usize,
    ) -> Result<Vec<(u16, usize, usize, usize)>> {
        let chain = table.get(reg.token).ok_or(Error::InvalidArgument(
            "DMA through a registration that is not live on this NIC (deregistered?)",
        ))?;
        if chain.slots.first().map(|&s| u32::from(s)) != Some(reg.lkey) {
            return Err(Error::InvalidArgument(
                "DMA with a registration whose key does not match",
            ));
        }
        let end = addr
            .checked_add(len)
            .ok_or(Error::InvalidArgument("DMA address + length overflows"))?;
        if addr < chain.addr || end > chain.addr + chain.len {
            return Err(Error::InvalidArgument(
                "DMA range is not inside the registration",
            ));
        }
        Ok(pieces(chain.addr, self.slot_bytes, addr, len)
            .map(|p| (chain.slots[p.index], p.addr, p.len, p.offset))
            .collect())
    }
}

/// Runs the fixed-buffer operations for `pieces`, looping on short transfers. Piece offsets are
/// also the memfd offsets (the data sits at offset 0 of the memfd).
fn transfer(
    ring: &mut Ring,
    scratch: &Scratch,
    dir: Dir,
    pieces: &[(u16, usize, usize, usize)],
) -> Result<()> {
    let fd = types::Fd(scratch.file.as_raw_fd());
    for &(slot, addr, len, offset) in pieces {
        let mut done = 0usize;
        while done < len {
            // A piece is at most one slot, and a slot at most 1 GiB: the length fits in a u32.
            let chunk = (len - done).min(u32::MAX as usize) as u32;
            let buf = (addr + done) as *mut u8;
            let file_off = (offset + done) as u64;
            let entry = match dir {
                Dir::IntoMemory => opcode::ReadFixed::new(fd, buf, chunk, slot)
                    .offset(file_off)
                    .build(),
                Dir::OutOfMemory => opcode::WriteFixed::new(fd, buf, chunk, slot)
                    .offset(file_off)
                    .build(),
            };
            // SAFETY: the buffer address is resolved by the kernel inside the fixed buffer `slot`
            // (pages the kernel pinned and holds references to; an address outside the slot fails
            // with EFAULT), not through our page tables, so the kernel touches no memory other
            // than those pinned pages and the memfd. `plan` checked that the range lies in the
            // caller's live registration, which the caller made for this purpose. The memfd
            // stays open for the whole call, which waits for the completion.
            let n = match unsafe { ring.run(entry) }? {
                Ok(n) => n as usize,
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    let op = if dir == Dir::IntoMemory {
                        "READ_FIXED"
                    } else {
                        "WRITE_FIXED"
                    };
                    return Err(Error::Register {
                        errno,
                        what: format!(
                            "{op} of {chunk} bytes at {:#x} via slot {slot}",
                            addr + done
                        ),
                    });
                }
            };
            if n == 0 {
                let what = if dir == Dir::IntoMemory {
                    "READ_FIXED hit the end of the scratch file"
                } else {
                    "WRITE_FIXED wrote nothing"
                };
                return Err(Error::Register {
                    errno: libc::EIO,
                    what: what.into(),
                });
            }
            done += n;
        }
    }
    Ok(())
}
