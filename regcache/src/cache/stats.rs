//! The cache's counters, kept without locks.
//!
//! Hits are tallied by the index lock's per-thread reader slots as the hit leaves the lock (see
//! brlock.rs; `Cache::stats` fills them in). Uncacheable requests are counted in per-thread
//! shards, each on its own cache line, so two threads never write the same line; a snapshot
//! sums the shards. Counters of the slow paths (drains, invalidations, ...) are plain atomics,
//! bumped under the cache's miss lock or next to a system call that costs far more.
//! The counters a miss bumps (the miss, the registration, its time and latency bucket, the
//! registered gauges, and an eviction's deregistration) live in `LockedStats`, written only by
//! the miss lock's holder with a load and a store instead of a locked add (ten locked
//! instructions of a miss at the entry limit; with the registration timing, ~90 of ~320 ns of
//! CPU time per miss, issue 13); the same counters bumped off the lock (one-use registrations,
//! reaps by releasers) are plain atomics here, and a snapshot adds the two homes. Every
//! ordering here is Relaxed: a counter publishes no other memory, and a snapshot is a
//! statistic, not a synchronisation point.

use super::slot::{self, ALL};
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
struct HotShard {
    uncacheable: AtomicU64,
}

/// Which hot counter to bump.
#[derive(Clone, Copy)]
pub(crate) enum Hot {
    Uncacheable,
}

/// Proof that the caller holds the cache's miss lock: a field of `MissState` (mod.rs), which
/// only the lock's holder reaches, and made nowhere else. `LockedStats` is written only with it.
#[derive(Default)]
pub(crate) struct MissLocked(());

/// The counters of the registration path that only the miss lock's holder writes (see the
/// module comment): each write is a Relaxed load and a Relaxed store, race-free because there
/// is one writer at a time and the lock orders the writers. Gauges wrap (their other part,
/// in `Stats`, may hold the matching subtraction); snapshots add with wrapping.
#[derive(Default)]
struct LockedStats {
    misses: AtomicU64,
    registrations: AtomicU64,
    registration_ns: AtomicU64,
    registered_bytes: AtomicU64,
    registered_entries: AtomicU64,
    deregistrations: AtomicU64,
    evictions: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
}

/// Adds `v` (wrapping) to a counter of `LockedStats`.
fn add_locked(c: &AtomicU64, v: u64) {
    c.store(c.load(Relaxed).wrapping_add(v), Relaxed);
}

#[derive(Default)]
pub(crate) struct Stats {
    hot: Box<[CachePadded<HotShard>]>,
    locked: CachePadded<LockedStats>,
    pub reregistrations: AtomicU64,
    pub kept_watches: AtomicU64,
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
    /// Successful registrar calls per latency bucket (not cumulative), see `LATENCY_BOUNDS_NS`.
    /// Own cache lines: bumped next to a registrar call, never on the hit path.
    latency: CachePadded<[AtomicU64; LATENCY_BUCKETS]>,
    /// Failed registrar calls by errno class, see `FailureClass`.
    failures_by_class: [AtomicU64; 3],
    /// Drains that processed at least one event, per duration bucket (not cumulative), see
    /// `DRAIN_BOUNDS_NS`. Bumped under the miss lock, after a read of the monitor's queue.
    drain_latency: CachePadded<[AtomicU64; DRAIN_BUCKETS]>,
    /// Total time of the drains counted in `drain_latency`, in nanoseconds.
    drain_ns: AtomicU64,
}

/// Upper bounds (inclusive, nanoseconds) of the registration-latency buckets: 1-5 steps per
/// decade from 1 µs to 1 s. A last, implicit bucket counts everything slower.
pub const LATENCY_BOUNDS_NS: [u64; 13] = [
    1_000,
    5_000,
    10_000,
    50_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
];

/// Buckets of the latency histogram: one per bound and one for slower calls.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// Upper bounds (inclusive, nanoseconds) of the drain-latency buckets: 1-2-5 steps from 1 µs
/// (one event read from the queue, nothing cached to drop) to 100 ms (a drain that drops and
/// deregisters many entries, or revalidates many pages). A last, implicit bucket counts
/// slower drains.
pub const DRAIN_BOUNDS_NS: [u64; 16] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
];

/// Buckets of the drain-latency histogram: one per bound and one for slower drains.
pub const DRAIN_BUCKETS: usize = DRAIN_BOUNDS_NS.len() + 1;

/// Why a registrar call failed, by errno (the index into `registration_failures_by_class`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureClass {
    /// Out of lockable memory or registration slots (ENOMEM, EAGAIN, ENOSPC, EMFILE): raising
    /// RLIMIT_MEMLOCK or lowering the cache's limits helps.
    Resources = 0,
    /// The request itself was refused (EFAULT, EINVAL): an application or memory-type problem.
    Invalid = 1,
    /// Anything else.
    Other = 2,
}

/// The latency bucket of a call that took `ns` nanoseconds.
fn latency_bucket(ns: u64) -> usize {
    LATENCY_BOUNDS_NS.partition_point(|&bound| bound < ns)
}

impl FailureClass {
    fn of_errno(errno: i32) -> Self {
        match errno {
            e if crate::error::is_resource_errno(e) => FailureClass::Resources,
            libc::EFAULT | libc::EINVAL => FailureClass::Invalid,
            _ => FailureClass::Other,
        }
    }
}

impl Stats {
    pub fn new() -> Self {
        Stats {
            hot: (0..ALL).map(|_| Default::default()).collect(),
            ..Default::default()
        }
    }

    /// Counts a miss or an uncacheable request (slow paths) in the calling thread's shard.
    #[inline]
    pub fn bump(&self, which: Hot) {
        let shard = &self.hot[slot::current().index];
        let c = match which {
            Hot::Uncacheable => &shard.uncacheable,
        };
        // Relaxed: see the module comment.
        c.fetch_add(1, Relaxed);
    }

    /// Files a successful registrar call that took `ns` nanoseconds in its latency bucket.
    #[cfg(test)]
    pub fn record_latency(&self, ns: u64) {
        self.latency[latency_bucket(ns)].fetch_add(1, Relaxed);
    }

    /// Counts a successful registration of `bytes` that took `ns` nanoseconds (`lock`: the
    /// caller holds the miss lock).
    pub fn registered(&self, lock: Option<&MissLocked>, ns: u64, bytes: u64) {
        let b = latency_bucket(ns);
        let l = &self.locked;
        // Relaxed (all): see the module comment.
        match lock {
            Some(_) => {
                add_locked(&l.registrations, 1);
                add_locked(&l.registration_ns, ns);
                add_locked(&l.latency[b], 1);
                add_locked(&l.registered_bytes, bytes);
                add_locked(&l.registered_entries, 1);
            }
            None => {
                self.registrations.fetch_add(1, Relaxed);
                self.registration_ns.fetch_add(ns, Relaxed);
                self.latency[b].fetch_add(1, Relaxed);
                self.registered_bytes.fetch_add(bytes, Relaxed);
                self.registered_entries.fetch_add(1, Relaxed);
            }
        }
    }

    /// Counts `n` deregistrations of `bytes` in all (`lock`: the caller holds the miss lock).
    pub fn deregistered(&self, lock: Option<&MissLocked>, n: u64, bytes: u64) {
        let l = &self.locked;
        // Relaxed (all): see the module comment.
        match lock {
            Some(_) => {
                add_locked(&l.deregistrations, n);
                add_locked(&l.registered_bytes, bytes.wrapping_neg());
                add_locked(&l.registered_entries, n.wrapping_neg());
            }
            None => {
                self.deregistrations.fetch_add(n, Relaxed);
                self.registered_bytes.fetch_sub(bytes, Relaxed);
                self.registered_entries.fetch_sub(n, Relaxed);
            }
        }
    }

    /// Counts a miss (always under the miss lock; uncacheable requests are `bump`ed).
    pub fn missed(&self, _lock: &MissLocked) {
        add_locked(&self.locked.misses, 1);
    }

    /// Counts an eviction (always under the miss lock).
    pub fn evicted(&self, _lock: &MissLocked) {
        add_locked(&self.locked.evictions, 1);
    }

    /// The bytes registered now (a gauge; exact under the miss lock but for reaps on other
    /// threads in flight, which only lower it).
    pub fn registered_bytes(&self) -> u64 {
        // Relaxed: see the module comment.
        self.registered_bytes
            .load(Relaxed)
            .wrapping_add(self.locked.registered_bytes.load(Relaxed))
    }

    /// Files a drain that processed at least one event and took `ns` nanoseconds (the slow
    /// path: called under the miss lock, never on the hit path).
    pub fn record_drain(&self, ns: u64) {
        let i = DRAIN_BOUNDS_NS.partition_point(|&bound| bound < ns);
        // Relaxed (both): see the module comment.
        self.drain_latency[i].fetch_add(1, Relaxed);
        self.drain_ns.fetch_add(ns, Relaxed);
    }

    /// Counts a failed registrar call by the class of its errno (the total is counted apart).
    pub fn record_failure(&self, errno: i32) {
        // Relaxed: see the module comment.
        self.failures_by_class[FailureClass::of_errno(errno) as usize].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let sum = |f: fn(&HotShard) -> &AtomicU64| {
            self.hot.iter().map(|s| f(s).load(Relaxed)).sum::<u64>()
        };
        let l = &self.locked;
        let both = |a: &AtomicU64, b: &AtomicU64| a.load(Relaxed).wrapping_add(b.load(Relaxed));
        StatsSnapshot {
            hits: 0, // tallied by the index lock, see Cache::stats
            misses: l.misses.load(Relaxed),
            uncacheable: sum(|s| &s.uncacheable),
            reregistrations: self.reregistrations.load(Relaxed),
            kept_watches: self.kept_watches.load(Relaxed),
            invalidated: self.invalidated.load(Relaxed),
            false_positives: self.false_positives.load(Relaxed),
            drains: self.drains.load(Relaxed),
            evictions: both(&self.evictions, &l.evictions),
            registration_failures: self.registration_failures.load(Relaxed),
            registered_bytes: both(&self.registered_bytes, &l.registered_bytes),
            registered_entries: both(&self.registered_entries, &l.registered_entries),
            registrations: both(&self.registrations, &l.registrations),
            registration_ns: both(&self.registration_ns, &l.registration_ns),
            deregistrations: both(&self.deregistrations, &l.deregistrations),
            registration_latency: std::array::from_fn(|i| both(&self.latency[i], &l.latency[i])),
            registration_failures_by_class: std::array::from_fn(|i| {
                self.failures_by_class[i].load(Relaxed)
            }),
            drain_latency: std::array::from_fn(|i| self.drain_latency[i].load(Relaxed)),
            drain_ns: self.drain_ns.load(Relaxed),
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
    /// Misses that took over the kept watch of a churned entry of exactly their range instead
    /// of watching anew (cache/park.rs: an unwatch and a watch saved each; ummunotify only).
    pub kept_watches: u64,
    /// Entries removed because the monitor (or `invalidate`) reported their pages changed.
    pub invalidated: u64,
    /// Reports that changed no page of a cached registration: each reported entry whose pages
    /// the monitor confirmed unchanged (revalidation, reval.rs: kept cached), and each drain in
    /// which the counter had moved but no cached entry was reported.
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
    /// Successful registrar calls by duration: element `i` counts the calls that took at most
    /// `LATENCY_BOUNDS_NS[i]` ns and more than the bound before it (not cumulative); the last
    /// element counts calls slower than every bound.
    pub registration_latency: [u64; LATENCY_BUCKETS],
    /// Failed registrar calls by errno class, named by `FAILURE_CLASSES`: resources (ENOMEM,
    /// EAGAIN, ENOSPC, EMFILE), invalid (EFAULT, EINVAL), other.
    pub registration_failures_by_class: [u64; 3],
    /// Drains that processed at least one event, by duration (the whole drain: reading the
    /// monitor's queue, revalidating, removing and retiring the invalidated entries, calling
    /// `on_invalidate`): element `i` counts the drains that took at most `DRAIN_BOUNDS_NS[i]`
    /// ns and more than the bound before it (not cumulative); the last element counts drains
    /// slower than every bound. Drains that found the queue empty are not timed.
    pub drain_latency: [u64; DRAIN_BUCKETS],
    /// Total time of the drains counted in `drain_latency`, in nanoseconds.
    pub drain_ns: u64,
}

impl StatsSnapshot {
    /// Adds the counters of `other` (everything but the gauges `registered_bytes` and
    /// `registered_entries`), for totals over several caches. The destructuring is exhaustive
    /// on purpose: a field added to this struct does not compile until it is handled here.
    pub fn add_counters(&mut self, other: &StatsSnapshot) {
        let StatsSnapshot {
            hits,
            misses,
            uncacheable,
            reregistrations,
            kept_watches,
            invalidated,
            false_positives,
            drains,
            evictions,
            registration_failures,
            registered_bytes: _,
            registered_entries: _,
            registrations,
            registration_ns,
            deregistrations,
            registration_latency,
            registration_failures_by_class,
            drain_latency,
            drain_ns,
        } = *other;
        self.hits += hits;
        self.misses += misses;
        self.uncacheable += uncacheable;
        self.reregistrations += reregistrations;
        self.kept_watches += kept_watches;
        self.invalidated += invalidated;
        self.false_positives += false_positives;
        self.drains += drains;
        self.evictions += evictions;
        self.registration_failures += registration_failures;
        self.registrations += registrations;
        self.registration_ns += registration_ns;
        self.deregistrations += deregistrations;
        self.drain_ns += drain_ns;
        for (a, b) in self
            .registration_latency
            .iter_mut()
            .zip(registration_latency)
        {
            *a += b;
        }
        for (a, b) in self
            .registration_failures_by_class
            .iter_mut()
            .zip(registration_failures_by_class)
        {
            *a += b;
        }
        for (a, b) in self.drain_latency.iter_mut().zip(drain_latency) {
            *a += b;
        }
    }

    /// Upper bounds in nanoseconds of `registration_latency`'s buckets but the last.
    pub const LATENCY_BOUNDS_NS: [u64; 13] = LATENCY_BOUNDS_NS;

    /// Upper bounds in nanoseconds of `drain_latency`'s buckets but the last.
    pub const DRAIN_BOUNDS_NS: [u64; 16] = DRAIN_BOUNDS_NS;

    /// Names of the classes of `registration_failures_by_class`, in index order.
    pub const FAILURE_CLASSES: [&'static str; 3] = ["resources", "invalid", "other"];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_and_failure_classes() {
        let s = Stats::new();
        for ns in [
            0,
            1_000,
            1_001,
            999_999,
            1_000_000_000,
            1_000_000_001,
            u64::MAX,
        ] {
            s.record_latency(ns);
        }
        for errno in [libc::ENOMEM, libc::EAGAIN, libc::EFAULT, libc::EIO] {
            s.record_failure(errno);
        }
        let snap = s.snapshot();
        let b = snap.registration_latency;
        assert_eq!(
            b[0], 2,
            "0 and 1 µs are in the first bucket (bounds are inclusive)"
        );
        assert_eq!(b[1], 1, "1.001 µs is in the 5 µs bucket");
        assert_eq!(b[6], 1, "999.999 µs is in the 1 ms bucket");
        assert_eq!(b[12], 1, "1 s is in the last bounded bucket");
        assert_eq!(b[13], 2, "slower calls are in the overflow bucket");
        assert_eq!(b.iter().sum::<u64>(), 7);
        assert_eq!(snap.registration_failures_by_class, [2, 1, 1]);
        assert_eq!(
            StatsSnapshot::FAILURE_CLASSES,
            ["resources", "invalid", "other"]
        );
    }

    #[test]
    fn drain_buckets_and_sum() {
        let s = Stats::new();
        for ns in [
            0,
            1_000,
            1_001,
            150_000,
            100_000_000,
            100_000_001,
            u64::MAX / 2,
        ] {
            s.record_drain(ns);
        }
        let snap = s.snapshot();
        let b = snap.drain_latency;
        assert_eq!(
            b[0], 2,
            "0 and 1 µs are in the first bucket (bounds are inclusive)"
        );
        assert_eq!(b[1], 1, "1.001 µs is in the 2 µs bucket");
        assert_eq!(b[7], 1, "150 µs is in the 200 µs bucket");
        assert_eq!(b[15], 1, "100 ms is in the last bounded bucket");
        assert_eq!(b[16], 2, "slower drains are in the overflow bucket");
        assert_eq!(b.iter().sum::<u64>(), 7);
        assert_eq!(
            snap.drain_ns,
            1_000 + 1_001 + 150_000 + 100_000_000 + 100_000_001 + u64::MAX / 2
        );
        // The registration histogram is a different one.
        assert_eq!(snap.registration_latency, [0; LATENCY_BUCKETS]);
    }

    #[test]
    fn add_counters_sums_counters_and_leaves_gauges() {
        let one = StatsSnapshot {
            hits: 3,
            misses: 2,
            drains: 1,
            registered_bytes: 4096,
            registered_entries: 1,
            registration_latency: [1; LATENCY_BUCKETS],
            registration_failures_by_class: [1, 0, 2],
            drain_latency: [3; DRAIN_BUCKETS],
            drain_ns: 5_000,
            ..Default::default()
        };
        let mut total = one;
        total.add_counters(&one);
        assert_eq!((total.hits, total.misses, total.drains), (6, 4, 2));
        assert_eq!(total.registration_latency, [2; LATENCY_BUCKETS]);
        assert_eq!(total.registration_failures_by_class, [2, 0, 4]);
        assert_eq!(total.drain_latency, [6; DRAIN_BUCKETS]);
        assert_eq!(total.drain_ns, 10_000);
        assert_eq!(
            (total.registered_bytes, total.registered_entries),
            (4096, 1)
        );
    }
}
