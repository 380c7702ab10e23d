//! Access rights: `Access` already uses rdma-core's `enum ibv_access_flags` bit values, so the
//! mapping is a mask plus the relaxed-ordering policy.

use crate::registrar::Access;
use rdma_sys::ibv_access_flags;

/// The `ibv_reg_mr` access word for `access`. Relaxed ordering is passed only when `relaxed`
/// (the registrar has not seen it refused); it lies in the optional range, so rdma-core drops it
/// where the kernel or device lacks it.
pub fn to_ibv(access: Access, relaxed: bool) -> u32 {
    let mut bits = 0;
    for (ours, theirs) in [
        (
            Access::LOCAL_WRITE,
            ibv_access_flags::IBV_ACCESS_LOCAL_WRITE,
        ),
        (
            Access::REMOTE_WRITE,
            ibv_access_flags::IBV_ACCESS_REMOTE_WRITE,
        ),
        (
            Access::REMOTE_READ,
            ibv_access_flags::IBV_ACCESS_REMOTE_READ,
        ),
        (
            Access::REMOTE_ATOMIC,
            ibv_access_flags::IBV_ACCESS_REMOTE_ATOMIC,
        ),
    ] {
        if access.contains(ours) {
            bits |= theirs.0;
        }
    }
    if relaxed && access.contains(Access::RELAXED_ORDERING) {
        bits |= ibv_access_flags::IBV_ACCESS_RELAXED_ORDERING.0;
    }
    bits
}

/// Whether the device will refuse the combination outright: verbs require local write whenever
/// remote write or remote atomic is granted (the kernel answers EINVAL otherwise).
pub fn is_valid(access: Access) -> bool {
    let needs_local = Access::REMOTE_WRITE | Access::REMOTE_ATOMIC;
    !access.intersects(needs_local) || access.contains(Access::LOCAL_WRITE)
}
