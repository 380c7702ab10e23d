//! The torture oracle for regcache: seeded, replayable workloads that unmap, remap and reuse
//! addresses while registrations are obtained through the cache and data is moved through them
//! by the software NIC, then compared with what the application's own memory holds.
//!
//! A stale registration shows up as a transfer whose bytes land in (or come from) pages the
//! application no longer has at that address: a corruption. The negative control
//! (`Config::danger_ignore_invalidations`) proves the oracle can see one.

pub mod mem;
pub mod rng;
pub mod scenario;
pub mod torture;
