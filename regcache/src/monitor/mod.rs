//! Invalidation monitors: how the cache learns that the pages behind a cached range changed.
//!
//! Every monitor presents the same shape as ummunotify: a generation counter that moves whenever
//! an invalidation may be pending (the cache compares it with one acquire load before trusting any
//! entry), and a queue drained only when the counter moved. A false positive (the counter moved,
//! nothing relevant was queued) costs a drain; a false negative would be data corruption, so every
//! monitor must make this hold:
//!
//! > once a call that changes the pages of a watched range (munmap, mremap, madvise(DONTNEED),
//! > brk shrink, mmap MAP_FIXED over it) has returned, a `counter()` load that happens after that
//! > return observes a value different from every value `drain()` returned before the call.
//!
//! Monitors: [`ummunotify`] (the kernel module's device), [`uffd`] (userfaultfd, where the module is
//! absent), and [`none`] (no monitor: the cache then never caches). [`select`] picks one.

pub mod none;
pub mod select;
pub mod uffd;
pub mod ummunotify;

use crate::error::Result;
use crate::range::Range;
use std::sync::atomic::AtomicU64;

/// One invalidation drained from a monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// The watch registered with `cookie` was hit (ummunotify reports by cookie); `hint` is the
    /// part of it that changed. The whole registration is stale either way.
    Cookie { cookie: u64, hint: Range },
    /// Pages in `range` changed (userfaultfd reports by address).
    Range(Range),
    /// The monitor lost events (a bounded queue overflowed): every cached entry is suspect.
    All,
}

/// What a monitor that revalidates (ummunotify with REVALIDATE, docs/ummunotify-abi.md) says
/// about a watched range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revalidation {
    /// ARM: armed with a digest of the frames mapped now. CHECK: the same frames are mapped, with
    /// at least the same access: a registration that pinned them is still right.
    Unchanged,
    /// ARM: armed as changed (not trackable, or hit since the given counter). CHECK: anything else
    /// than Unchanged; the registration must be retired.
    Changed,
    /// CHECK: the range was never armed.
    NotArmed,
}

/// Which monitor is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitorKind {
    Ummunotify,
    Uffd,
    None,
}

impl MonitorKind {
    pub fn name(self) -> &'static str {
        match self {
            MonitorKind::Ummunotify => "ummunotify",
            MonitorKind::Uffd => "uffd",
            MonitorKind::None => "none",
        }
    }
}

/// Why a range could not be watched.
#[derive(Debug)]
pub enum WatchError {
    /// This monitor can never watch this range (file-backed mapping, another userfaultfd owns it,
    /// not mapped): register it for this use only, do not cache it.
    Unwatchable(i32),
    /// The watch failed for a reason that may pass (ENOMEM, ENOSPC from a per-fd cap).
    Failed(crate::error::Error),
}

/// The common interface of all monitors. Implementations are shared between threads.
pub trait Monitor: Send + Sync {
    fn kind(&self) -> MonitorKind;

    /// Whether caching is possible at all with this monitor (false for `none`).
    fn can_cache(&self) -> bool {
        true
    }

    /// The generation counter. The cache keeps this reference and loads it with
    /// `Ordering::Acquire` on every lookup; the monitor moves it (with release semantics, or in
    /// the kernel) after an invalidation is visible to `drain`.
    fn counter(&self) -> &AtomicU64;

    /// Whether this monitor must be asked `settled()` before every counter load (userfaultfd:
    /// its event is queued only after the kernel drops the unmapping lock, see `uffd`).
    fn needs_settle_check(&self) -> bool {
        false
    }

    /// False while a change of a watched range may have happened without moving the counter
    /// yet. Called BEFORE loading the counter; a lookup treats `false` as "not fresh", and
    /// `drain` waits until it turns true.
    fn settled(&self) -> bool {
        true
    }

    /// Starts watching `range` (page-aligned by the cache), identified by `cookie`, which is
    /// unique among the cache's live watches. Monitors that report by address may ignore it.
    fn watch(&self, range: Range, cookie: u64) -> std::result::Result<(), WatchError>;

    /// Stops watching what `watch(range, cookie)` started. Monitors that cannot stop watching
    /// one range without affecting overlapping ones may leave it watched (a later event is then a
    /// false positive, never a false negative).
    fn unwatch(&self, range: Range, cookie: u64);

    /// Whether a watch stays in force, reporting every later change of its range, after the
    /// memory under it was unmapped and its events were drained: a watch of an address range,
    /// not of a mapping. ummunotify says yes (its mmu_interval_notifier stays in the mm's tree
    /// until UNREGISTER, and a region hit again after its record was read is queued again);
    /// userfaultfd says no (its registration goes with the VMA). When true, the cache may keep
    /// the watch of an invalidated entry for the next registration of exactly the same range
    /// instead of unwatching and watching again (issue 13, 100% churn: `cache/park.rs`).
    fn watch_survives_unmap(&self) -> bool {
        false
    }

    /// Whether this monitor can tell whether a reported range's pages really changed
    /// (`revalidate_arm_since` / `revalidate_check` work): ummunotify with REVALIDATE. The
    /// default, and userfaultfd and `none`, say no.
    fn revalidates(&self) -> bool {
        false
    }

    /// ARM the watched range `cookie` after its pages were pinned: record what is mapped there
    /// now, as changed if the range was hit after the counter had the value `since` (read before
    /// the range was watched). Monitors that do not revalidate answer an error (ENOTTY).
    fn revalidate_arm_since(&self, cookie: u64, since: u64) -> Result<Revalidation> {
        let _ = (cookie, since);
        Err(std::io::Error::from_raw_os_error(libc::ENOTTY).into())
    }

    /// CHECK the armed range `cookie`: `Unchanged` only if the frames mapped at ARM are still
    /// mapped with at least the same access. Monitors that do not revalidate answer an error.
    fn revalidate_check(&self, cookie: u64) -> Result<Revalidation> {
        let _ = cookie;
        Err(std::io::Error::from_raw_os_error(libc::ENOTTY).into())
    }

    /// Moves every pending invalidation into `out` and returns the generation up to which `out`
    /// is complete: every invalidation that moved the counter to a value <= the returned one is
    /// in `out` (or was in an earlier drain). Called by one thread at a time (the cache serialises
    /// drains).
    fn drain(&self, out: &mut Vec<Invalidation>) -> Result<u64>;
}
