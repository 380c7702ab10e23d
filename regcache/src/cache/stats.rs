//! The cache's counters, kept without locks.
//!
//! Counters bumped on the hit path (hits, misses, uncacheable) live in per-thread shards, each on
//! its own cache line, so two threads hitting never write the same line; a snapshot sums the
//! shards. Counters of the slow paths (drains, invalidations, evictions, ...) are plain atomics:
//! they are bumped under the cache's miss lock or next to a system call that costs far more.
//! Every ordering here is Relaxed: a counter publishes no other memory, and a snapshot is a
//! statistic, not a synchronisation point.

use super::slot::{self, SLOTS};
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
struct HotShard {
    hits: AtomicU64,
    misses: AtomicU64,
    uncacheable: AtomicU64,
}

/// Which hot counter to bump.
#[derive(Clone, Copy)]
pub(crate) enum Hot {
    Hit,
    Miss,
    Uncacheable,
}

#[derive(Default)]
pub(crate) struct Stats {
    hot: Box<[CachePadded<HotShard>]>,
    pub reregistrations: AtomicU64,
    pub invalidated: AtomicU64,
    pub false_positives: AtomicU64,
    pub drains: AtomicU64,
    pub evictions: AtomicU64,
    pub registration_failures: AtomicU64,
    pub registered_bytes: AtomicU64,
    pub registered_entries: AtomicU64,
    pub registrations: AtomicU64,
    pub registration_ns: AtomicU64,
    pub deregistrations: AtomicU64,
}

impl Stats {
    pub fn new() -> Self {
        Stats {
            hot: (0..SLOTS).map(|_| Default::default()).collect(),
            ..Default::default()
        }
    }

    #[inline]
    pub fn bump(&self, which: Hot) {
        self.bump_at(slot::current(), which)
    }

    /// `bump` for a caller that already has its thread's slot index.
    #[inline]
    pub fn bump_at(&self, slot: usize, which: Hot) {
        let shard = &self.hot[slot % SLOTS];
        let c = match which {
            Hot::Hit => &shard.hits,
            Hot::Miss => &shard.misses,
            Hot::Uncacheable => &shard.uncacheable,
        };
        // Relaxed: see the module comment. Up to SLOTS threads each own a shard, so the add
        // never contends. (A plain load+store on an owned shard was measured slower with two
        // threads than the uncontended locked add.)
        c.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let sum = |f: fn(&HotShard) -> &AtomicU64| {
            self.hot.iter().map(|s| f(s).load(Relaxed)).sum::<u64>()
        };
        StatsSnapshot {
            hits: sum(|s| &s.hits),
            misses: sum(|s| &s.misses),
            uncacheable: sum(|s| &s.uncacheable),
            reregistrations: self.reregistrations.load(Relaxed),
            invalidated: self.invalidated.load(Relaxed),
            false_positives: self.false_positives.load(Relaxed),
            drains: self.drains.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            registration_failures: self.registration_failures.load(Relaxed),
            registered_bytes: self.registered_bytes.load(Relaxed),
            registered_entries: self.registered_entries.load(Relaxed),
            registrations: self.registrations.load(Relaxed),
            registration_ns: self.registration_ns.load(Relaxed),
            deregistrations: self.deregistrations.load(Relaxed),
        }
    }
}

/// A point-in-time copy of the counters. Each field is exact; the fields are not read at one
/// instant, so sums across fields may be off by requests in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Lookups served by a cached, valid registration.
    pub hits: u64,
    /// Lookups that had to register (cacheable ranges only).
    pub misses: u64,
    /// Requests registered for one use only: no monitor, or the monitor cannot watch the range.
    pub uncacheable: u64,
    /// Misses for a range that was cached before and invalidated: the cost of unmap/remap churn.
    pub reregistrations: u64,
    /// Entries removed because the monitor (or `invalidate`) reported their pages changed.
    pub invalidated: u64,
    /// Drains in which the counter had moved but no cached entry was invalidated.
    pub false_positives: u64,
    /// Times the monitor's queue was drained.
    pub drains: u64,
    /// Unreferenced entries removed to respect the limits or to free lockable memory.
    pub evictions: u64,
    /// Registrar calls that failed.
    pub registration_failures: u64,
    /// Bytes currently registered by the cache (cached entries and those still in use).
    pub registered_bytes: u64,
    /// Registrations currently held (cached entries and those still in use).
    pub registered_entries: u64,
    /// Registrar calls that succeeded.
    pub registrations: u64,
    /// Total time spent in successful registrar calls, in nanoseconds.
    pub registration_ns: u64,
    /// Deregistrations made.
    pub deregistrations: u64,
}

impl StatsSnapshot {
    /// hits / (hits + misses + uncacheable), or 0 with no lookups.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses + self.uncacheable;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}
