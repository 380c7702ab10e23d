//! The C ABI of regcache: `libregcache.so` / `libregcache.a` with the header `regcache.h`
//! (generated from this crate by cbindgen, checked in as `include/regcache.h`).
//!
//! Conventions (rdma-core and libfabric style): opaque handles; every function returns 0 or a
//! non-negative count on success and a negative errno on failure; every pointer and length is
//! checked; no panic ever crosses into C (each entry point runs under `catch_unwind` and
//! reports -EIO); structs the caller passes start with a `size` field so they can grow.
//!
//! Files: `types` (the C types), `guard` (panic barrier, errors, handle and struct checks),
//! `api` (caches and registrations), `softnic` (DMA through the software NIC), `custom`
//! (callback registrar), `verbs` (the ibv_pd registrar, behind the `verbs` feature), `metrics`
//! (the Prometheus exporter).

mod api;
mod custom;
mod guard;
mod metrics;
mod softnic;
mod types;
mod verbs;

pub use api::*;
pub use metrics::*;
pub use softnic::*;
pub use types::*;

#[cfg(test)]
mod tests;
