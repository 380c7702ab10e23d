//! The rdma-core verbs registrar: `ibv_reg_mr` / `ibv_dereg_mr` on a protection domain.
//!
//! - [`VerbsRegistrar::open`] opens a device (by name, else the first with an active port) and
//!   allocates a protection domain it owns; on a machine without RDMA devices it returns the
//!   "no RDMA device" error ([`is_no_device`]) instead of failing later.
//! - [`VerbsRegistrar::from_pd`] wraps a caller's `struct ibv_pd *` (the C ABI's path); the
//!   caller keeps the PD and its context alive.
//!
//! `Registration::token` is the `struct ibv_mr *`. Registrations go through `ibv_reg_mr_iova2`
//! (iova = address), which is what rdma-core's `ibv_reg_mr` macro calls for access words that
//! are not compile-time constants; relaxed ordering is an optional bit that rdma-core and the
//! kernel drop when unsupported, and if a registration is refused with EINVAL only because of it,
//! the registrar retries without it and stops asking for it.
//!
//! Bindings: the `rdma-sys` crate (bindgen over the system's rdma-core headers).

mod access;
mod device;
mod fork;
#[cfg(test)]
mod tests;

pub use access::{is_valid as access_is_valid, to_ibv as access_to_ibv};
pub use device::{is_no_device, names as device_names, no_device};
pub use fork::ForkSafety;

use crate::error::{Error, Result};
use crate::registrar::{Access, Registrar, Registration};
use rdma_sys::{
    ibv_alloc_pd, ibv_context, ibv_dealloc_pd, ibv_dereg_mr, ibv_device_attr, ibv_mr, ibv_pd,
    ibv_query_device, ibv_reg_mr_iova2,
};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Registers memory with rdma-core verbs on one protection domain.
pub struct VerbsRegistrar {
    pd: *mut ibv_pd,
    /// The device this registrar opened itself (None with `from_pd`).
    owned: Option<device::Device>,
    port: u8,
    name: String,
    max_mr_size: u64,
    /// Cleared once a registration was refused because of the relaxed-ordering bit.
    relaxed: AtomicBool,
    fork: ForkSafety,
}

// SAFETY: libibverbs verbs (reg/dereg MR, dealloc PD, close device) are thread-safe; the raw
// pointers are only handed to those calls, and the PD outlives the registrar (owned, or kept
// alive by the from_pd caller).
unsafe impl Send for VerbsRegistrar {}
// SAFETY: as above; the only interior mutability is an atomic.
unsafe impl Sync for VerbsRegistrar {}

impl VerbsRegistrar {
    /// Opens `device` (e.g. "rxe0"), or the first device with an active port, and allocates a
    /// protection domain. Calls `ibv_fork_init` first when the kernel is not fork-safe.
    /// Without RDMA devices: the "no RDMA device" error (see [`is_no_device`]).
    pub fn open(device: Option<&str>) -> Result<Self> {
        let fork = fork::ensure();
        let dev = device::open(device)?;
        // SAFETY: `dev.ctx` is an open context.
        let pd = unsafe { ibv_alloc_pd(dev.ctx) };
        if pd.is_null() {
            let e = io::Error::last_os_error();
            let name = dev.name.clone();
            device::close(dev);
            return Err(Error::Io(io::Error::new(
                e.kind(),
                format!("ibv_alloc_pd({name}): {e}"),
            )));
        }
        Ok(VerbsRegistrar {
            pd,
            port: dev.port,
            name: dev.name.clone(),
            max_mr_size: dev.max_mr_size,
            owned: Some(dev),
            relaxed: AtomicBool::new(true),
            fork,
        })
    }

    /// Wraps a protection domain the caller allocated.
    ///
    /// # Safety
    /// `pd` must be a valid `struct ibv_pd *` that stays allocated (with its context open) for
    /// as long as this registrar and every registration it made are alive.
    pub unsafe fn from_pd(pd: *mut ibv_pd) -> Self {
        // SAFETY: the caller guarantees `pd` is valid, so its context pointer is too.
        let ctx = unsafe { (*pd).context };
        // SAFETY: plain old data; zero is a valid value to overwrite.
        let mut attr: ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: `ctx` is the PD's open context and `attr` is writable.
        let rc = unsafe { ibv_query_device(ctx, &mut attr) };
        let max_mr_size = if rc == 0 { attr.max_mr_size } else { u64::MAX };
        VerbsRegistrar {
            pd,
            owned: None,
            port: 1,
            name: String::new(),
            max_mr_size,
            relaxed: AtomicBool::new(true),
            fork: fork::status(),
        }
    }

    /// The protection domain registrations are made on (queue pairs must use the same one).
    pub fn pd(&self) -> *mut ibv_pd {
        self.pd
    }

    /// The device context of the protection domain.
    pub fn context(&self) -> *mut ibv_context {
        // SAFETY: `pd` is valid for the registrar's lifetime.
        unsafe { (*self.pd).context }
    }

    /// Device name ("" with `from_pd`).
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// The first active port of the device (1 with `from_pd`).
    pub fn port(&self) -> u8 {
        self.port
    }

    /// How fork() is made safe for registrations.
    pub fn fork_safety(&self) -> ForkSafety {
        self.fork
    }

    fn reg(&self, addr: usize, len: usize, bits: u32) -> *mut ibv_mr {
        // SAFETY: `pd` is valid; the cache hands us a mapped range it is watching (an unmapped
        // one makes the kernel fail the call, it never faults here); iova = addr as with
        // ibv_reg_mr.
        unsafe { ibv_reg_mr_iova2(self.pd, addr as *mut libc::c_void, len, addr as u64, bits) }
    }
}

impl Registrar for VerbsRegistrar {
    fn name(&self) -> &'static str {
        "verbs"
    }

    fn register(&self, addr: usize, len: usize, access: Access) -> Result<Registration> {
        if len == 0 || addr == 0 {
            return Err(Error::InvalidArgument("empty range or null address"));
        }
        if !access::is_valid(access) {
            return Err(Error::InvalidArgument(
                "remote write or atomic access requires local write",
            ));
        }
        if len as u64 > self.max_mr_size {
            return Err(Error::TooLarge {
                len,
                max: self.max_len(),
            });
        }
        let relaxed = self.relaxed.load(Ordering::Relaxed);
        let mut mr = self.reg(addr, len, access::to_ibv(access, relaxed));
        let mut err = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if mr.is_null()
            && err == libc::EINVAL
            && relaxed
            && access.contains(Access::RELAXED_ORDERING)
        {
            mr = self.reg(addr, len, access::to_ibv(access, false));
            if !mr.is_null() {
                self.relaxed.store(false, Ordering::Relaxed);
            } else {
                err = io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO);
            }
        }
        if mr.is_null() {
            return Err(Error::from_register_errno(
                err,
                format!("ibv_reg_mr({addr:#x}, {len})"),
            ));
        }
        // SAFETY: `mr` is a live ibv_mr returned just above.
        let (lkey, rkey) = unsafe { ((*mr).lkey, (*mr).rkey) };
        Ok(Registration {
            lkey,
            rkey,
            token: mr as u64,
        })
    }

    fn prepare(&self, addr: usize, len: usize) {
        fork::hold_dontfork(addr, len);
    }

    fn settle(&self, addr: usize, len: usize) {
        fork::release_dontfork(addr, len);
    }

    fn deregister(&self, reg: &Registration, addr: usize, len: usize) {
        let mr = reg.token as *mut ibv_mr;
        // SAFETY: `token` is the ibv_mr of a registration made by `register` and deregistered
        // exactly once (the Registrar contract).
        let rc = unsafe { ibv_dereg_mr(mr) };
        if rc != 0 {
            eprintln!(
                "regcache: verbs: ibv_dereg_mr({addr:#x}, {len}): {}",
                io::Error::from_raw_os_error(rc)
            );
        }
    }

    fn max_len(&self) -> usize {
        usize::try_from(self.max_mr_size).unwrap_or(usize::MAX)
    }
}

impl Drop for VerbsRegistrar {
    fn drop(&mut self) {
        if let Some(dev) = self.owned.take() {
            // SAFETY: the PD was allocated by `open` and every registration on it is gone (the
            // cache deregisters before dropping its registrar).
            let rc = unsafe { ibv_dealloc_pd(self.pd) };
            if rc != 0 {
                eprintln!(
                    "regcache: verbs: ibv_dealloc_pd({}): {}",
                    dev.name,
                    io::Error::from_raw_os_error(rc)
                );
            }
            device::close(dev);
        }
    }
}

impl std::fmt::Debug for VerbsRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerbsRegistrar")
            .field("device", &self.name)
            .field("port", &self.port)
            .field("pd", &self.pd)
            .field("fork", &self.fork)
            .finish()
    }
}
