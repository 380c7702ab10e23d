//! regcache: a memory-registration cache for RDMA that never returns a stale registration.
//!
//! Layers, each in its own folder:
//! - [`cache`]: lookup, reference counts, deferred deregistration, eviction, statistics;
//! - [`monitor`]: how invalidations are learned (ummunotify device, userfaultfd, none);
//! - [`registrar`]: how memory is registered (io_uring software NIC, no-op, verbs elsewhere).

pub mod cache;
pub mod error;
pub mod monitor;
pub mod range;
pub mod registrar;

pub use cache::{Cache, Config, Handle, InvalidateHook, OwnedHandle, StatsSnapshot};
pub use error::{Error, Result};
pub use monitor::{Monitor, MonitorKind};
pub use range::Range;
pub use registrar::{Access, Registrar, Registration};
