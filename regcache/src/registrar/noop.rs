//! A registrar that pins nothing: for benchmarks comparing cache data structures alone, and for
//! unit tests of the cache's bookkeeping.

use super::{Access, Registrar, Registration};
use crate::error::Result;
use std::sync::atomic::{AtomicU64, Ordering};

/// Hands out increasing keys and counts calls; never fails.
#[derive(Default)]
pub struct NoopRegistrar {
    next: AtomicU64,
    deregistered: AtomicU64,
}

impl NoopRegistrar {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registrations made so far.
    pub fn registered(&self) -> u64 {
        // Relaxed: a statistic read by tests after the threads that counted have been joined.
        self.next.load(Ordering::Relaxed)
    }

    /// Deregistrations made so far.
    pub fn deregistered(&self) -> u64 {
        // Relaxed: as above.
        self.deregistered.load(Ordering::Relaxed)
    }
}

impl Registrar for NoopRegistrar {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn register(&self, _addr: usize, _len: usize, _access: Access) -> Result<Registration> {
        // Relaxed: only uniqueness of the key matters, no other memory is published with it.
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(Registration {
            lkey: key as u32,
            rkey: key as u32,
            token: key,
        })
    }

    fn deregister(&self, _reg: &Registration, _addr: usize, _len: usize) {
        // Relaxed: a counter only.
        self.deregistered.fetch_add(1, Ordering::Relaxed);
    }
}
