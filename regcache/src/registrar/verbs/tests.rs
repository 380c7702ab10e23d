//! Tests that run on any machine, with or without RDMA devices.

use super::*;
use rdma_sys::ibv_access_flags as F;

/// Bits rdma-core treats as optional (ignored where unsupported): IBV_ACCESS_OPTIONAL_RANGE.
const OPTIONAL_RANGE: u32 = rdma_sys::ib_uverbs_access_flags::IB_UVERBS_ACCESS_OPTIONAL_RANGE.0;

#[test]
fn access_bits_are_rdma_cores() {
    assert_eq!(Access::LOCAL_WRITE.bits(), F::IBV_ACCESS_LOCAL_WRITE.0);
    assert_eq!(Access::REMOTE_WRITE.bits(), F::IBV_ACCESS_REMOTE_WRITE.0);
    assert_eq!(Access::REMOTE_READ.bits(), F::IBV_ACCESS_REMOTE_READ.0);
    assert_eq!(Access::REMOTE_ATOMIC.bits(), F::IBV_ACCESS_REMOTE_ATOMIC.0);
    assert_eq!(
        Access::RELAXED_ORDERING.bits(),
        F::IBV_ACCESS_RELAXED_ORDERING.0
    );
}

#[test]
fn access_mapping() {
    let all = Access::all();
    assert_eq!(access_to_ibv(all, true), all.bits());
    assert_eq!(
        access_to_ibv(all, false),
        all.bits() & !F::IBV_ACCESS_RELAXED_ORDERING.0
    );
    assert_eq!(access_to_ibv(Access::empty(), true), 0);
    assert_eq!(
        access_to_ibv(Access::LOCAL_WRITE | Access::REMOTE_READ, true),
        F::IBV_ACCESS_LOCAL_WRITE.0 | F::IBV_ACCESS_REMOTE_READ.0
    );
    // Relaxed ordering is optional in rdma-core's sense (ignored where unsupported); nothing
    // else we pass is.
    assert_ne!(F::IBV_ACCESS_RELAXED_ORDERING.0 & OPTIONAL_RANGE, 0);
    assert_eq!(
        access_to_ibv(all, false) & OPTIONAL_RANGE,
        0,
        "mandatory bits must not fall in the optional range"
    );
}

#[test]
fn access_validity() {
    assert!(access_is_valid(Access::empty()));
    assert!(access_is_valid(Access::REMOTE_READ));
    assert!(!access_is_valid(Access::REMOTE_WRITE));
    assert!(!access_is_valid(
        Access::REMOTE_ATOMIC | Access::REMOTE_READ
    ));
    assert!(access_is_valid(Access::LOCAL_WRITE | Access::REMOTE_WRITE));
}

#[test]
fn no_device_error_is_clear() {
    let e = no_device(libc::ENOSYS);
    assert!(is_no_device(&e));
    let msg = e.to_string();
    assert!(msg.starts_with("no RDMA device"), "{msg}");
    assert!(msg.contains("ibv_get_device_list"), "{msg}");
    assert!(!is_no_device(&Error::from_register_errno(
        libc::ENOMEM,
        "x"
    )));
}

/// On a machine without devices `open` must fail with the clear error (never panic); with
/// devices (the VM) it must succeed and register a buffer.
#[test]
fn open_without_or_with_devices() {
    match VerbsRegistrar::open(None) {
        Err(e) => {
            assert!(is_no_device(&e), "unexpected error: {e}");
            assert!(e.to_string().contains("no RDMA device"), "{e}");
            assert!(matches!(device_names(), Err(ref e) if is_no_device(e)));
        }
        Ok(r) => {
            let buf = vec![7u8; 8192];
            let a = Access::LOCAL_WRITE | Access::REMOTE_READ | Access::RELAXED_ORDERING;
            let reg = r
                .register(buf.as_ptr() as usize, buf.len(), a)
                .expect("register");
            assert_ne!(reg.token, 0);
            r.deregister(&reg, buf.as_ptr() as usize, buf.len());
        }
    }
}

#[test]
fn named_device_absent() {
    let e = VerbsRegistrar::open(Some("no-such-device0")).unwrap_err();
    assert!(is_no_device(&e), "{e}");
}

#[test]
fn errno_mapping_for_exhaustion() {
    for errno in [libc::ENOMEM, libc::EAGAIN] {
        assert!(Error::from_register_errno(errno, "ibv_reg_mr").is_resource_exhaustion());
    }
    assert!(!Error::from_register_errno(libc::EFAULT, "ibv_reg_mr").is_resource_exhaustion());
}

#[test]
fn fork_status_is_reported() {
    // Any answer is fine; the call must work without devices.
    let _ = fork::status();
}
