//! REGCACHE_REGISTRAR_CUSTOM: a registrar made of the caller's callbacks.

use crate::guard::{read_sized, Fail};
use crate::types::{regcache_reg, regcache_registrar_ops};
use regcache_core::{Access, Error, Registrar, Registration, Result};
use std::ffi::c_void;
use std::os::raw::c_int;
use std::sync::Arc;

type RegFn = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, u32, *mut regcache_reg) -> c_int;
type DeregFn = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, *const regcache_reg);
type RangeFn = unsafe extern "C" fn(*mut c_void, *mut c_void, usize);

/// Smallest `regcache_registrar_ops.size`: `size`, `reg` and `dereg`.
const OPS_MIN_SIZE: usize = 24;

struct Custom {
    reg: RegFn,
    dereg: DeregFn,
    /// `prepare` and `settle`, both or neither.
    fence: Option<(RangeFn, RangeFn)>,
    context: *mut c_void,
    max_length: usize,
}

// SAFETY: the caller promises (header: regcache_registrar_ops) that the callbacks and the
// context may be used from any thread, concurrently.
unsafe impl Send for Custom {}
// SAFETY: as above.
unsafe impl Sync for Custom {}

/// A registrar calling `ops` with `context`.
///
/// # Safety
/// `ops` is NULL or points to `ops->size` readable bytes.
pub(crate) unsafe fn registrar(
    ops: *const regcache_registrar_ops,
    context: *mut c_void,
) -> std::result::Result<Arc<dyn Registrar>, Fail> {
    // SAFETY: forwarded contract.
    let o = unsafe { read_sized(ops, "attr->ops", OPS_MIN_SIZE) }?;
    let (Some(reg), Some(dereg)) = (o.reg, o.dereg) else {
        return Err(Fail::inval("attr->ops->reg and ->dereg are required"));
    };
    let fence = match (o.prepare, o.settle) {
        (Some(p), Some(s)) => Some((p, s)),
        (None, None) => None,
        _ => {
            return Err(Fail::inval(
                "attr->ops->prepare and ->settle go together: set both or neither",
            ))
        }
    };
    Ok(Arc::new(Custom {
        reg,
        dereg,
        fence,
        context,
        max_length: if o.max_length == 0 {
            usize::MAX
        } else {
            o.max_length
        },
    }))
}

impl Registrar for Custom {
    fn name(&self) -> &'static str {
        "custom"
    }

    fn register(&self, addr: usize, len: usize, access: Access) -> Result<Registration> {
        let mut out = regcache_reg::default();
        // SAFETY: the caller's callback, called as documented in the header with a writable
        // `out` that lives across the call.
        let rc = unsafe {
            (self.reg)(
                self.context,
                addr as *mut c_void,
                len,
                access.bits(),
                &mut out,
            )
        };
        match rc {
            0 => Ok(Registration {
                lkey: out.lkey,
                rkey: out.rkey,
                token: out.token,
            }),
            rc if rc < 0 && rc > -4096 => Err(Error::from_register_errno(
                -rc,
                "the custom registrar's reg callback",
            )),
            _ => Err(Error::Register {
                errno: libc::EIO,
                what: format!("the custom registrar's reg callback returned {rc}, not 0 or -errno"),
            }),
        }
    }

    fn deregister(&self, reg: &Registration, addr: usize, len: usize) {
        let r = regcache_reg {
            lkey: reg.lkey,
            rkey: reg.rkey,
            token: reg.token,
        };
        // SAFETY: the caller's callback, called as documented with a readable `r`.
        unsafe { (self.dereg)(self.context, addr as *mut c_void, len, &r) };
    }

    fn max_len(&self) -> usize {
        self.max_length
    }

    fn prepare(&self, addr: usize, len: usize) {
        if let Some((prepare, _)) = self.fence {
            // SAFETY: the caller's callback, called as documented in the header.
            unsafe { prepare(self.context, addr as *mut c_void, len) };
        }
    }

    fn settle(&self, addr: usize, len: usize) {
        if let Some((_, settle)) = self.fence {
            // SAFETY: as in prepare.
            unsafe { settle(self.context, addr as *mut c_void, len) };
        }
    }
}
