//! REGCACHE_REGISTRAR_VERBS_PD: registration in a caller-supplied `struct ibv_pd *`.
//!
//! The verbs registrar itself is the core crate's (`regcache::registrar::verbs`, behind its
//! `verbs` feature, which this crate's `verbs` feature turns on). Without the feature the entry
//! point reports -EOPNOTSUPP, so that callers can fall back to another registrar.

use crate::guard::Fail;
use regcache_core::Registrar;
use std::ffi::c_void;
use std::sync::Arc;

/// The registrar over `pd` (non-null, checked by the caller).
///
/// # Safety
/// `pd` is a valid `struct ibv_pd *` that stays allocated, with its device context open, until
/// the cache and every registration it made are gone (the header says so to C callers).
#[cfg(feature = "verbs")]
pub(crate) unsafe fn registrar(pd: *mut c_void) -> Result<Arc<dyn Registrar>, Fail> {
    use regcache_core::registrar::verbs::VerbsRegistrar;
    // SAFETY: forwarded contract; `struct ibv_pd *` is what the C caller passed as `void *`.
    Ok(Arc::new(unsafe { VerbsRegistrar::from_pd(pd.cast()) }))
}

/// Without the `verbs` feature: -EOPNOTSUPP.
///
/// # Safety
/// None needed (`pd` is not used); `unsafe` only to match the feature's signature.
#[cfg(not(feature = "verbs"))]
pub(crate) unsafe fn registrar(_pd: *mut c_void) -> Result<Arc<dyn Registrar>, Fail> {
    Err(Fail::new(
        libc::EOPNOTSUPP,
        "this libregcache was built without the verbs registrar (cargo feature `verbs`)",
    ))
}
