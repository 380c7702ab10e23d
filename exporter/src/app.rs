//! Application metrics added to an exporter while it runs (the C ABI's
//! `regcache_metrics_add_metric`, the LD_PRELOAD shim's bridge counters): a shared, appendable
//! list registered as one collector when the exporter is built, so its metrics are served on the
//! same page and textfile, with the same labels, from the next scrape on. Each metric is a
//! function read at every scrape and textfile write, on the exporter's thread.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Longest metric name accepted, in bytes.
pub const MAX_NAME: usize = 128;
/// Longest help text accepted, in bytes.
pub const MAX_HELP: usize = 1024;

/// What an application metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (from the process's start); exposed as `NAME_total`.
    Counter,
    /// Goes up and down; exposed as `NAME`.
    Gauge,
}

/// Reads a metric's current value. Called on the exporter's thread at every scrape and textfile
/// write, with no lock of the exporter held: it must be quick and must not block.
pub type ReadFn = Box<dyn Fn() -> u64 + Send + Sync>;

/// Why a metric was not added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddError {
    /// Not a valid metric name (the reason says which rule).
    Name(String),
    /// The help text is not one line, or too long.
    Help(String),
    /// The name (or its exposed `_total` form) is served already.
    Exists(String),
}

impl fmt::Display for AddError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddError::Name(why) | AddError::Help(why) => f.write_str(why),
            AddError::Exists(name) => write!(f, "a metric named {name:?} is served already"),
        }
    }
}

impl std::error::Error for AddError {}

struct AppMetric {
    name: String,
    help: String,
    kind: MetricKind,
    read: ReadFn,
}

#[derive(Default)]
struct Inner {
    metrics: Vec<Arc<AppMetric>>,
    /// Every name in the exposition (families and samples) that is not an application
    /// metric's: set from the registry before the exporter starts.
    reserved: HashSet<String>,
    /// The families and sample names of the application metrics.
    taken: HashSet<String>,
}

/// The application metrics of one exporter. Cloning gives another handle to the same list;
/// [`Handle::app_metrics`](crate::Handle::app_metrics) gives it for a running exporter.
#[derive(Clone, Default)]
pub struct AppMetrics {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for AppMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppMetrics")
            .field("metrics", &self.len())
            .finish()
    }
}

/// Checks a metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, 1 to [`MAX_NAME`] bytes.
fn check_name(name: &str, kind: MetricKind) -> Result<(), AddError> {
    let bad = |why: String| Err(AddError::Name(why));
    if name.is_empty() {
        return bad("the metric name is empty".into());
    }
    if name.len() > MAX_NAME {
        return bad(format!(
            "the metric name is longer than {MAX_NAME} bytes ({})",
            name.len()
        ));
    }
    let ok_first = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b':';
    let ok = |(i, c): (usize, u8)| {
        if i == 0 {
            ok_first(c)
        } else {
            ok_first(c) || c.is_ascii_digit()
        }
    };
    if !name.bytes().enumerate().all(ok) {
        return bad(format!(
            "metric name {name:?} is not [a-zA-Z_:][a-zA-Z0-9_:]*"
        ));
    }
    if kind == MetricKind::Counter && name.ends_with("_total") {
        return bad(format!(
            "counter name {name:?} ends in _total: give it without, the exposition adds it"
        ));
    }
    Ok(())
}

/// Checks a help text; an empty one is given a generic text (promtool wants one).
fn check_help(help: &str) -> Result<String, AddError> {
    if help.len() > MAX_HELP {
        return Err(AddError::Help(format!(
            "the help text is longer than {MAX_HELP} bytes ({})",
            help.len()
        )));
    }
    if help.contains(['\n', '\r']) {
        return Err(AddError::Help("the help text is not one line".into()));
    }
    // The encoder escapes `\` in help texts.
    Ok(if help.is_empty() {
        "Application metric".to_string()
    } else {
        help.to_string()
    })
}

/// The names an exposition uses: its families (`# TYPE` lines) and its samples' metric names.
pub(crate) fn exposed_names(text: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for line in text.lines() {
        let name = match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        };
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            names.insert(n.to_string());
        }
    }
    names
}

impl AppMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while the lock is held; a poisoned list is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the names served by the rest of the exporter, which application metrics may not use.
    pub(crate) fn set_reserved(&self, names: HashSet<String>) {
        let mut s = self.lock();
        let taken = &s.taken;
        let reserved = names.into_iter().filter(|n| !taken.contains(n)).collect();
        s.reserved = reserved;
    }

    /// Adds a metric, served from the next scrape or textfile write on. `name` follows
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`, at most [`MAX_NAME`] bytes (a counter's without `_total`,
    /// which the exposition adds); `help` is one line. Fails, changing nothing, on a bad name
    /// or help, or a name served already (by the exporter or an earlier application metric).
    pub fn add(
        &self,
        name: &str,
        help: &str,
        kind: MetricKind,
        read: ReadFn,
    ) -> Result<(), AddError> {
        check_name(name, kind)?;
        let help = check_help(help)?;
        let sample = match kind {
            MetricKind::Counter => format!("{name}_total"),
            MetricKind::Gauge => name.to_string(),
        };
        let mut s = self.lock();
        for n in [name, sample.as_str()] {
            if s.reserved.contains(n) || s.taken.contains(n) {
                return Err(AddError::Exists(n.to_string()));
            }
        }
        s.taken.insert(name.to_string());
        s.taken.insert(sample);
        s.metrics.push(Arc::new(AppMetric {
            name: name.to_string(),
            help,
            kind,
            read,
        }));
        Ok(())
    }

    /// Metrics added.
    pub fn len(&self) -> usize {
        self.lock().metrics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The collector the registry holds: encodes every application metric at each scrape.
pub(crate) struct AppCollector {
    metrics: AppMetrics,
}

impl AppCollector {
    pub(crate) fn new(metrics: AppMetrics) -> Self {
        AppCollector { metrics }
    }
}

impl fmt::Debug for AppCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCollector")
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl Collector for AppCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        // The read functions run without the lock: one may be slow, or add a metric itself.
        let metrics = self.metrics.lock().metrics.clone();
        for m in metrics {
            let v = (m.read)();
            match m.kind {
                MetricKind::Counter => ConstCounter::new(v).encode(e.encode_descriptor(
                    &m.name,
                    &m.help,
                    None,
                    MetricType::Counter,
                )?)?,
                MetricKind::Gauge => ConstGauge::new(v).encode(e.encode_descriptor(
                    &m.name,
                    &m.help,
                    None,
                    MetricType::Gauge,
                )?)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Exporter};
    use std::sync::atomic::{AtomicU64, Ordering};

    fn exporter(labels: &[(&str, &str)]) -> Exporter {
        let mut cfg = Config::disabled();
        cfg.labels = labels
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Exporter::with_caches(&crate::CacheSet::new(), cfg)
    }

    fn value(v: u64) -> ReadFn {
        Box::new(move || v)
    }

    #[test]
    fn counters_and_gauges_are_encoded_with_the_labels() {
        let ex = exporter(&[("rank", "3")]);
        let hits = Arc::new(AtomicU64::new(42));
        let h = hits.clone();
        ex.add_metric(
            "ucx_rcache_hits",
            "UCX registration-cache hits",
            MetricKind::Counter,
            Box::new(move || h.load(Ordering::Relaxed)),
        )
        .unwrap();
        ex.add_metric("bridge_state", "", MetricKind::Gauge, value(7))
            .unwrap();
        let text = ex.encode();
        assert!(
            text.contains("# TYPE ucx_rcache_hits_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP ucx_rcache_hits_total UCX registration-cache hits\n"));
        assert!(
            text.contains("\nucx_rcache_hits_total{rank=\"3\"} 42\n"),
            "{text}"
        );
        assert!(text.contains("# HELP bridge_state Application metric\n"));
        assert!(text.contains("# TYPE bridge_state gauge\n"));
        assert!(text.contains("\nbridge_state{rank=\"3\"} 7\n"), "{text}");
        // The cache's own metrics are still there.
        assert!(text.contains("regcache_lookups_total{rank=\"3\",result=\"hit\"} 0\n"));
        // Read at every encoding.
        hits.store(43, Ordering::Relaxed);
        assert!(ex
            .encode()
            .contains("ucx_rcache_hits_total{rank=\"3\"} 43\n"));
    }

    #[test]
    fn without_labels() {
        let ex = exporter(&[]);
        ex.add_metric("name", "help", MetricKind::Counter, value(42))
            .unwrap();
        ex.add_metric("other", "help", MetricKind::Gauge, value(u64::MAX))
            .unwrap();
        let text = ex.encode();
        assert!(text.contains("\nname_total 42\n"), "{text}");
        assert!(text.contains(&format!("\nother {}\n", u64::MAX)), "{text}");
    }

    #[test]
    fn duplicates_are_rejected() {
        let ex = exporter(&[]);
        let add = |name: &str, kind| ex.add_metric(name, "h", kind, value(1));
        add("dup", MetricKind::Counter).unwrap();
        let exists = |r: Result<(), AddError>| matches!(r, Err(AddError::Exists(_)));
        assert!(exists(add("dup", MetricKind::Counter)));
        assert!(exists(add("dup", MetricKind::Gauge)));
        // The counter's sample name.
        assert!(exists(add("dup_total", MetricKind::Gauge)));
        add("g", MetricKind::Gauge).unwrap();
        assert!(exists(add("g", MetricKind::Counter)));
        // Names the exporter serves: families and samples.
        assert!(exists(add("regcache_lookups", MetricKind::Counter)));
        assert!(exists(add("regcache_lookups_total", MetricKind::Gauge)));
        assert!(exists(add("regcache_caching", MetricKind::Gauge)));
        assert!(exists(add("regcache_registered_bytes", MetricKind::Gauge)));
        assert!(exists(add("regcache_cache_info", MetricKind::Gauge)));
        assert!(exists(add(
            "regcache_registration_duration_seconds_count",
            MetricKind::Gauge
        )));
        // And a metric the application registered in the registry.
        let mut ex = exporter(&[]);
        ex.registry_mut().register(
            "app_transfers",
            "Transfers",
            prometheus_client::metrics::counter::Counter::<u64>::default(),
        );
        assert!(exists(ex.add_metric(
            "app_transfers",
            "",
            MetricKind::Counter,
            value(1)
        )));
        // Nothing was added by the failures.
        assert_eq!(ex.app_metrics().len(), 0);
    }

    #[test]
    fn bad_names_and_help_are_rejected() {
        let ex = exporter(&[]);
        let long = "a".repeat(MAX_NAME + 1);
        for name in [
            "",
            "1abc",
            "a-b",
            "a b",
            "a.b",
            "é",
            "a{x=\"1\"}",
            long.as_str(),
        ] {
            let r = ex.add_metric(name, "", MetricKind::Gauge, value(1));
            assert!(matches!(r, Err(AddError::Name(_))), "{name:?}: {r:?}");
        }
        let r = ex.add_metric("x_total", "", MetricKind::Counter, value(1));
        assert!(matches!(r, Err(AddError::Name(_))), "{r:?}");
        for help in ["two\nlines", "cr\r", &"h".repeat(MAX_HELP + 1)] {
            let r = ex.add_metric("h", help, MetricKind::Gauge, value(1));
            assert!(matches!(r, Err(AddError::Help(_))), "{r:?}");
        }
        assert!(ex.app_metrics().is_empty());
        // Good ones, including the limits.
        let max = "b".repeat(MAX_NAME);
        for name in ["_a", ":a:b", "A9_", "x_total", max.as_str()] {
            ex.add_metric(name, "", MetricKind::Gauge, value(1))
                .unwrap();
        }
        ex.add_metric("esc", "a \\ b", MetricKind::Gauge, value(1))
            .unwrap();
        assert!(ex.encode().contains("# HELP esc a \\\\ b\n"));
    }

    #[test]
    fn exposed_names_reads_families_and_samples() {
        let n =
            exposed_names("# HELP a_total x\n# TYPE a counter\na_total{l=\"1\"} 1\nb 2\n# EOF\n");
        let want: HashSet<String> = ["a", "a_total", "b"].map(String::from).into();
        assert_eq!(n, want);
    }

    #[test]
    fn added_while_running_shows_in_the_textfile() {
        let dir = std::env::temp_dir().join(format!("regcache-app-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = Config::disabled();
        cfg.textfile_dir = Some(dir.clone());
        cfg.interval = std::time::Duration::from_secs(3600);
        let h = Exporter::with_caches(&crate::CacheSet::new(), cfg)
            .start()
            .unwrap();
        let path = h.textfile().unwrap().to_path_buf();
        let app = h.app_metrics();
        app.add("late", "", MetricKind::Counter, value(5)).unwrap();
        // Names the running exporter serves are still refused.
        assert!(matches!(
            app.add("regcache_drains", "", MetricKind::Counter, value(1)),
            Err(AddError::Exists(_))
        ));
        assert!(!std::fs::read_to_string(&path).unwrap().contains("late"));
        h.stop(); // last write
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("\nlate_total 5\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
