//! The absent monitor: nothing can tell us about unmaps, so the cache must not cache.

use super::{Invalidation, Monitor, MonitorKind, WatchError};
use crate::error::Result;
use crate::range::Range;
use std::sync::atomic::AtomicU64;

/// Always refuses to watch, so every request is registered for its use only.
#[derive(Default)]
pub struct NoMonitor {
    counter: AtomicU64,
}

impl NoMonitor {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Monitor for NoMonitor {
    fn kind(&self) -> MonitorKind {
        MonitorKind::None
    }

    fn can_cache(&self) -> bool {
        false
    }

    fn counter(&self) -> &AtomicU64 {
        &self.counter
    }

    fn watch(&self, _range: Range, _cookie: u64) -> std::result::Result<(), WatchError> {
        Err(WatchError::Unwatchable(libc::ENOSYS))
    }

    fn unwatch(&self, _range: Range, _cookie: u64) {}

    fn drain(&self, _out: &mut Vec<Invalidation>) -> Result<u64> {
        Ok(0)
    }
}
