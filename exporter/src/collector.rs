//! The cache's counters as Prometheus metric families, read at each scrape from
//! `Cache::stats()`: a lock-free snapshot (relaxed loads of the counters), so a scrape never
//! takes a lock of the cache nor writes a line the hit path writes.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use regcache::{Cache, StatsSnapshot};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub(crate) struct CacheCollector {
    cache: Arc<Cache>,
    monitor: &'static str,
    registrar: &'static str,
}

impl CacheCollector {
    pub(crate) fn new(cache: Arc<Cache>) -> Self {
        CacheCollector {
            monitor: cache.monitor_kind().name(),
            registrar: cache.registrar_name(),
            cache,
        }
    }
}

impl fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheCollector")
            .field("monitor", &self.monitor)
            .field("registrar", &self.registrar)
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
        let s: StatsSnapshot = self.cache.stats();
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
            "regcache_false_positives",
            "Monitor drains where the invalidation counter had moved but no cached \
             registration was affected (wasted work, not an error)",
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
            u64::from(self.cache.is_caching()),
        )?;
        registration_histogram(e, &s)?;
        let info = Info::new([("monitor", self.monitor), ("registrar", self.registrar)]);
        info.encode(e.encode_descriptor(
            "regcache_cache",
            "Invalidation monitor and registrar this cache uses",
            None,
            MetricType::Info,
        )?)
    }
}

fn registration_histogram(e: &mut DescriptorEncoder, s: &StatsSnapshot) -> fmt::Result {
    let counts = s.registration_latency;
    let mut buckets: Vec<(f64, u64)> = StatsSnapshot::LATENCY_BOUNDS_NS
        .iter()
        .zip(counts)
        .map(|(&ns, n)| (ns as f64 / 1e9, n))
        .collect();
    buckets.push((f64::INFINITY, counts[counts.len() - 1]));
    // The count is the buckets' sum (not `registrations`, read at another instant), so the
    // +Inf bucket always equals it as Prometheus requires.
    let count = counts.iter().sum();
    let sum = s.registration_ns as f64 / 1e9;
    let mut m = e.encode_descriptor(
        "regcache_registration_duration",
        "Time spent in successful registrar calls (pinning and registering memory)",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    m.encode_histogram(
        sum,
        count,
        &buckets,
        None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
    )
}
