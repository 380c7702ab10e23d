//! The caches' counters as Prometheus metric families, read at each scrape from
//! `Cache::stats()`: a lock-free snapshot (relaxed loads of the counters), so a scrape never
//! takes a lock of a cache nor writes a line the hit path writes. Several caches (the C ABI's
//! and the LD_PRELOAD shim's, one per protection domain) are summed into one series per metric.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use regcache::{Cache, StatsSnapshot};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The caches one exporter serves, which may come and go while it runs. Their counters are
/// summed; a cache that leaves (`remove`) keeps its counters in the totals as they were when it
/// left, so counters never go down, and takes its gauges (registered bytes and entries) along.
/// Cloning gives another handle to the same set. The lock is taken by scrapes and by
/// `add`/`remove`, never by the caches' own paths.
#[derive(Clone, Default)]
pub struct CacheSet {
    inner: Arc<Mutex<SetInner>>,
}

#[derive(Default)]
struct SetInner {
    caches: Vec<Arc<Cache>>,
    /// Counters of the caches removed.
    retired: StatsSnapshot,
}

/// What one scrape reads from a set.
struct Reading {
    stats: StatsSnapshot,
    /// Every cache caches (and there is at least one).
    caching: bool,
    /// Distinct (monitor, registrar) pairs, in the order the caches were added.
    kinds: Vec<(&'static str, &'static str)>,
}

impl CacheSet {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, SetInner> {
        // Nothing panics while the lock is held; a poisoned set is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a cache. Returns false, changing nothing, when it is in the set already.
    pub fn add(&self, cache: Arc<Cache>) -> bool {
        let mut s = self.lock();
        if s.caches.iter().any(|c| Arc::ptr_eq(c, &cache)) {
            return false;
        }
        s.caches.push(cache);
        true
    }

    /// Removes a cache, keeping its counters as they are now in the totals. Returns false when
    /// it was not in the set.
    pub fn remove(&self, cache: &Arc<Cache>) -> bool {
        let mut s = self.lock();
        let Some(i) = s.caches.iter().position(|c| Arc::ptr_eq(c, cache)) else {
            return false;
        };
        let gone = s.caches.swap_remove(i);
        s.retired.add_counters(&gone.stats());
        // The last reference may be ours: drop the cache (monitor, registrar callbacks) after
        // the lock, so a scrape never waits for it.
        drop(s);
        drop(gone);
        true
    }

    /// Removes every cache (their counters stay in the totals).
    pub fn clear(&self) {
        let mut s = self.lock();
        let gone = std::mem::take(&mut s.caches);
        for c in &gone {
            s.retired.add_counters(&c.stats());
        }
        drop(s);
        drop(gone);
    }

    /// Caches in the set now.
    pub fn len(&self) -> usize {
        self.lock().caches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The summed counters of the caches in the set and of those removed.
    pub fn stats(&self) -> StatsSnapshot {
        self.read().stats
    }

    fn read(&self) -> Reading {
        let s = self.lock();
        let mut stats = s.retired;
        let mut kinds = Vec::new();
        for c in &s.caches {
            let one = c.stats();
            stats.add_counters(&one);
            stats.registered_bytes += one.registered_bytes;
            stats.registered_entries += one.registered_entries;
            let kind = (c.monitor_kind().name(), c.registrar_name());
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Reading {
            stats,
            caching: !s.caches.is_empty() && s.caches.iter().all(|c| c.is_caching()),
            kinds,
        }
    }
}

impl fmt::Debug for CacheSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheSet")
            .field("caches", &self.len())
            .finish()
    }
}

pub(crate) struct CacheCollector {
    caches: CacheSet,
}

impl CacheCollector {
    pub(crate) fn new(caches: CacheSet) -> Self {
        CacheCollector { caches }
    }
}

impl fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheCollector")
            .field("caches", &self.caches)
            .finish()
    }
}

/// One counter family without labels.
fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// One gauge family without labels.
fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> fmt::Result {
    // i64: the crate encodes u64 gauges too, but every value here fits and i64 is its default.
    let v = i64::try_from(v).unwrap_or(i64::MAX);
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

/// One counter family with one label.
fn labelled_counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(&'static str, u64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for &(value, v) in values {
        let labels = [(label, value)];
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for CacheCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let Reading {
            stats: s,
            caching,
            kinds,
        } = self.caches.read();
        let e = &mut e;
        labelled_counter(
            e,
            "regcache_lookups",
            "Cache lookups by result: hit = served by a cached, still valid registration; \
             miss = the range had to be registered (and is cached from then on)",
            "result",
            &[("hit", s.hits), ("miss", s.misses)],
        )?;
        counter(
            e,
            "regcache_uncacheable_requests",
            "Requests registered for their use only, never cached: no working invalidation \
             monitor, or the monitor cannot watch that memory",
            s.uncacheable,
        )?;
        counter(
            e,
            "regcache_reregistrations",
            "Misses for memory whose registration had been invalidated before: the cost of \
             the application unmapping and mapping its buffers again",
            s.reregistrations,
        )?;
        counter(
            e,
            "regcache_kept_watches",
            "Misses that took over the kept watch of a churned entry of exactly their range \
             instead of watching anew (ummunotify: an unwatch and a watch saved each)",
            s.kept_watches,
        )?;
        counter(
            e,
            "regcache_false_positives",
            "Reports that changed no page of a cached registration: each entry the monitor \
             reported whose pages the kernel confirmed unchanged (ummunotify REVALIDATE; kept \
             cached), and each drain that found nothing to invalidate (wasted work, not an error)",
            s.false_positives,
        )?;
        counter(
            e,
            "regcache_invalidated_entries",
            "Cached registrations dropped because the monitor reported that their pages \
             changed (unmap, remap, madvise)",
            s.invalidated,
        )?;
        counter(
            e,
            "regcache_drains",
            "Times the invalidation monitor's event queue was read because its counter moved",
            s.drains,
        )?;
        counter(
            e,
            "regcache_evictions",
            "Unused cached registrations deregistered to stay within the cache limits or to \
             free lockable memory for a new registration",
            s.evictions,
        )?;
        counter(
            e,
            "regcache_registrations",
            "Successful registrar calls: memory pinned and registered with the NIC",
            s.registrations,
        )?;
        counter(
            e,
            "regcache_deregistrations",
            "Registrations released (memory unpinned)",
            s.deregistrations,
        )?;
        let classes = StatsSnapshot::FAILURE_CLASSES;
        let by_class = s.registration_failures_by_class;
        labelled_counter(
            e,
            "regcache_registration_failures",
            "Failed registrar calls by errno class: resources = ENOMEM/EAGAIN/ENOSPC/EMFILE \
             (raise RLIMIT_MEMLOCK or lower the cache limits), invalid = EFAULT/EINVAL, other",
            "class",
            &[
                (classes[0], by_class[0]),
                (classes[1], by_class[1]),
                (classes[2], by_class[2]),
            ],
        )?;
        gauge(
            e,
            "regcache_registered",
            "Memory currently registered (pinned) by the cache, cached or in use",
            Some(&Unit::Bytes),
            s.registered_bytes,
        )?;
        gauge(
            e,
            "regcache_registered_entries",
            "Registrations currently held by the cache, cached or in use",
            None,
            s.registered_entries,
        )?;
        gauge(
            e,
            "regcache_caching",
            "1 when registrations are cached (a working invalidation monitor), 0 when every \
             request is registered and deregistered per use",
            None,
            u64::from(caching),
        )?;
        histogram(
            e,
            "regcache_registration_duration",
            "Time spent in successful registrar calls (pinning and registering memory)",
            &StatsSnapshot::LATENCY_BOUNDS_NS,
            &s.registration_latency,
            s.registration_ns,
        )?;
        histogram(
            e,
            "regcache_drain_duration",
            "Time of each drain of the invalidation monitor's queue that read at least one \
             event, from the read of the queue to the end of the drain (revalidating reported \
             entries, dropping and retiring invalidated ones, the on_invalidate hook); drains \
             that found the queue empty are not timed. Taken under the cache's miss lock: \
             lookups that miss wait for it",
            &StatsSnapshot::DRAIN_BOUNDS_NS,
            &s.drain_latency,
            s.drain_ns,
        )?;
        if let Some(limit) = memlock_limit() {
            gauge(
                e,
                "regcache_memlock_limit",
                "RLIMIT_MEMLOCK soft limit of the process, read at each scrape: what its \
                 registered (pinned) bytes count against unless it has CAP_IPC_LOCK; the cache \
                 keeps at most 3/4 of it registered. Not served when the limit is unlimited",
                Some(&Unit::Bytes),
                limit,
            )?;
        }
        let mut m = e.encode_descriptor(
            "regcache_cache",
            "Invalidation monitor and registrar this cache uses",
            None,
            MetricType::Info,
        )?;
        for (monitor, registrar) in kinds {
            m.encode_info(&[("monitor", monitor), ("registrar", registrar)])?;
        }
        Ok(())
    }
}

/// The process's RLIMIT_MEMLOCK soft limit in bytes, or None when it is unlimited (the series
/// is then left out: an absent limit is what an unlimited one is to a ratio or an alert, and
/// the text format's +Inf would be spelled "inf" by the encoder) or cannot be read.
fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`, a valid local; no other memory is touched.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    (rc == 0).then_some(lim.rlim_cur).and_then(finite_limit)
}

/// A soft limit as served: None for RLIM_INFINITY.
fn finite_limit(cur: libc::rlim_t) -> Option<u64> {
    (cur != libc::RLIM_INFINITY).then_some(cur)
}

/// One histogram family of durations from per-bucket counts (not cumulative; one more count
/// than bounds, the last for values above every bound) and their sum, in nanoseconds.
fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    bounds_ns: &[u64],
    counts: &[u64],
    sum_ns: u64,
) -> fmt::Result {
    debug_assert_eq!(counts.len(), bounds_ns.len() + 1);
    let mut buckets: Vec<(f64, u64)> = bounds_ns
        .iter()
        .zip(counts)
        .map(|(&ns, &n)| (ns as f64 / 1e9, n))
        .collect();
    buckets.push((f64::INFINITY, counts[counts.len() - 1]));
    // The count is the buckets' sum (not a counter read at another instant), so the +Inf
    // bucket always equals it as Prometheus requires.
    let count = counts.iter().sum();
    let sum = sum_ns as f64 / 1e9;
    let mut m = e.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    m.encode_histogram(
        sum,
        count,
        &buckets,
        None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_memlock_is_not_served() {
        assert_eq!(finite_limit(libc::RLIM_INFINITY), None);
        assert_eq!(finite_limit(8 << 20), Some(8 << 20));
        assert_eq!(
            finite_limit(0),
            Some(0),
            "a zero limit is a real (tiny) limit"
        );
    }
}
