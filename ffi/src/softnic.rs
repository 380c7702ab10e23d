//! DMA through a registration of the software NIC: what lets a C test show that a stale
//! registration would corrupt memory (the NIC uses the pages pinned at registration time, not
//! what is mapped at the address now).

use crate::guard::{guard, mr_ref, Fail};
use crate::types::regcache_mr;
use regcache_core::registrar::uring::SoftNic;
use std::ffi::c_void;
use std::os::raw::c_int;

/// The software NIC behind `m`, or -EOPNOTSUPP.
fn nic(m: &regcache_mr) -> Result<&SoftNic, Fail> {
    match m.nic {
        // SAFETY: the NIC is owned by the cache's registrar `Arc` for the cache's whole life, and
        // `m.handle` keeps that cache alive while `m` exists (see regcache_mr).
        Some(p) => Ok(unsafe { p.as_ref() }),
        None => Err(Fail::new(
            libc::EOPNOTSUPP,
            "the cache's registrar is not the software NIC",
        )),
    }
}

/// The software NIC writes `length` bytes from `src` to `[addr, addr + length)` through `mr`,
/// like an RDMA write arriving: into the pages `mr` pinned when it was registered, whatever is
/// mapped at those addresses now. The range must lie inside the registration
/// (regcache_mr_query). Returns 0, -EINVAL (NULL or invalid arguments, length 0, range outside
/// the registration), -EOPNOTSUPP when the cache's registrar is not REGCACHE_REGISTRAR_SOFTNIC,
/// -ECHILD in a fork() child, or the kernel's errno.
///
/// For tests and machines without RDMA hardware. Thread-safe (transfers are serialised).
///
/// # Safety
/// `mr` is NULL or a live handle; `src` is NULL or points to `length` readable bytes. `addr` is
/// not dereferenced by the CPU (the kernel writes the pinned pages).
#[no_mangle]
pub unsafe extern "C" fn regcache_softnic_dma_write(
    mr: *const regcache_mr,
    addr: *mut c_void,
    src: *const c_void,
    length: usize,
) -> c_int {
    guard("regcache_softnic_dma_write", || {
        // SAFETY: forwarded contract.
        let m = unsafe { mr_ref(mr) }?;
        if src.is_null() || addr.is_null() {
            return Err(Fail::inval("addr or src is NULL"));
        }
        if length == 0 || length > isize::MAX as usize {
            return Err(Fail::inval(
                "length is zero or larger than the address space",
            ));
        }
        let n = nic(m)?;
        // SAFETY: non-null, `length` readable bytes per the contract.
        let data = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), length) };
        n.dma_write(&m.handle.registration(), addr as usize, data)?;
        Ok(0)
    })
}

/// The software NIC reads `length` bytes at `[addr, addr + length)` through `mr` into `dst`,
/// like an RDMA read: from the pages `mr` pinned. Returns as regcache_softnic_dma_write().
///
/// # Safety
/// `mr` is NULL or a live handle; `dst` is NULL or points to `length` writable bytes not
/// overlapping the source pages. `addr` is not dereferenced by the CPU.
#[no_mangle]
pub unsafe extern "C" fn regcache_softnic_dma_read(
    mr: *const regcache_mr,
    addr: *const c_void,
    dst: *mut c_void,
    length: usize,
) -> c_int {
    guard("regcache_softnic_dma_read", || {
        // SAFETY: forwarded contract.
        let m = unsafe { mr_ref(mr) }?;
        if dst.is_null() || addr.is_null() {
            return Err(Fail::inval("addr or dst is NULL"));
        }
        if length == 0 || length > isize::MAX as usize {
            return Err(Fail::inval(
                "length is zero or larger than the address space",
            ));
        }
        let n = nic(m)?;
        // SAFETY: non-null, `length` writable bytes per the contract, not aliased by anything
        // this call reads through the CPU.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.cast::<u8>(), length) };
        n.dma_read(&m.handle.registration(), addr as usize, out)?;
        Ok(0)
    })
}
