//! Prometheus exposition of a regcache [`Cache`]'s counters: an HTTP `/metrics` listener and a
//! node_exporter textfile, both served by one plain thread (no async runtime: this runs inside
//! MPI processes).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn f(cache: Arc<regcache::Cache>) {
//! use prometheus_client::metrics::counter::Counter;
//! let transfers: Counter = Counter::default();
//! // None when metrics were not asked for, or the configuration is bad (one message printed).
//! let _metrics = regcache_exporter::start_from_env(cache, |reg| {
//!     reg.register("myapp_transfers", "Transfers made", transfers.clone());
//! });
//! # }
//! ```
//!
//! The cache is read through [`Cache::stats`] at each scrape and each textfile write: relaxed
//! loads of its counters, no lock of the cache, nothing written where the hit path writes.
//! The exposition is the Prometheus text format 0.0.4 (what `promtool check metrics` and
//! node_exporter's textfile collector parse; Prometheus accepts it from any target).

pub mod config;
pub mod parse;

mod app;
mod collector;
mod server;
mod textfile;

pub use app::{AddError, AppMetrics, MetricKind, ReadFn, MAX_HELP, MAX_NAME};
pub use collector::CacheSet;
pub use config::{Config, ConfigError};
pub use prometheus_client;

use prometheus_client::registry::Registry;
use regcache::Cache;
use std::borrow::Cow;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// `Content-Type` of the exposition served over HTTP.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Why the exporter did not start. The cache is unaffected.
#[derive(Debug)]
pub enum Error {
    Config(ConfigError),
    /// The listening socket could not be bound (address in use, not local, no permission).
    Listen {
        addr: SocketAddr,
        err: io::Error,
    },
    /// The textfile directory cannot be written (missing, not a directory, no permission).
    Textfile {
        path: PathBuf,
        err: io::Error,
    },
    /// The exporter thread could not be created.
    Thread(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "{e}"),
            Error::Listen { addr, err } => write!(
                f,
                "cannot listen on {addr} ({}, plus the local rank): {err}",
                config::ENV_ADDR
            ),
            Error::Textfile { path, err } => write!(
                f,
                "cannot write {} ({}): {err}",
                path.display(),
                config::ENV_TEXTFILE_DIR
            ),
            Error::Thread(err) => write!(f, "cannot start the exporter thread: {err}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

/// The metrics of one cache, plus any the application registers. Encodes on demand; `start`
/// serves them.
pub struct Exporter {
    registry: Registry,
    cfg: Config,
    /// Application metrics, which can also be added while it runs ([`Handle::app_metrics`]).
    apps: AppMetrics,
}

impl Exporter {
    /// The cache's metrics, labelled with `cfg.labels`.
    pub fn new(cache: Arc<Cache>, cfg: Config) -> Self {
        let set = CacheSet::new();
        set.add(cache);
        Self::with_caches(&set, cfg)
    }

    /// The summed metrics of the caches in `set`, which may change while served (one series
    /// per metric and process, whatever the number of caches; see [`CacheSet`]).
    pub fn with_caches(set: &CacheSet, cfg: Config) -> Self {
        let labels = cfg
            .labels
            .iter()
            .map(|(k, v)| (Cow::Owned(k.clone()), Cow::Owned(v.clone())));
        let mut registry = Registry::with_labels(labels);
        registry.register_collector(Box::new(collector::CacheCollector::new(set.clone())));
        let apps = AppMetrics::new();
        registry.register_collector(Box::new(app::AppCollector::new(apps.clone())));
        Exporter {
            registry,
            cfg,
            apps,
        }
    }

    /// The registry, to add application metrics (same labels, served alongside). Names should
    /// start with `regcache_` or the application's own prefix; counters without `_total`.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Adds an application metric read by `read` at every scrape and textfile write (see
    /// [`AppMetrics::add`]); a name the registry serves already, the cache's or one registered
    /// through [`registry_mut`](Self::registry_mut), is refused. Once running, add through
    /// [`Handle::app_metrics`].
    pub fn add_metric(
        &self,
        name: &str,
        help: &str,
        kind: MetricKind,
        read: ReadFn,
    ) -> Result<(), AddError> {
        self.reserve_served_names();
        self.apps.add(name, help, kind, read)
    }

    /// The application metrics added so far.
    pub fn app_metrics(&self) -> &AppMetrics {
        &self.apps
    }

    /// Tells the application metrics which names the registry serves.
    fn reserve_served_names(&self) {
        self.apps
            .set_reserved(app::exposed_names(&encode(&self.registry)));
    }

    /// The exposition now (Prometheus text format 0.0.4).
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }

    /// Serves the metrics as configured: binds the listener and writes the first textfile
    /// before returning, so every configuration problem is reported here; on error nothing
    /// keeps running.
    pub fn start(self) -> Result<Handle, Error> {
        // The registry is the thread's from now on: its names are final.
        self.reserve_served_names();
        let inner = server::start(self.registry, self.cfg)?;
        Ok(Handle {
            inner,
            apps: self.apps,
        })
    }
}

fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail, nor can our collector.
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        .expect("encoding into a String");
    out
}

/// A running exporter. Dropping it stops the thread, after a last textfile write.
pub struct Handle {
    inner: server::Running,
    apps: AppMetrics,
}

impl Handle {
    /// The address actually listened on (the port the kernel chose for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// The textfile written, if any.
    pub fn textfile(&self) -> Option<&std::path::Path> {
        self.inner.textfile.as_deref()
    }

    /// The application metrics: [`AppMetrics::add`] adds one to the running exporter, served
    /// from the next scrape or textfile write on (the names it serves already are refused).
    pub fn app_metrics(&self) -> &AppMetrics {
        &self.apps
    }

    /// Stops now (same as dropping).
    pub fn stop(self) {}
}

/// Starts the exporter the environment asks for (see [`config`]); `register` adds application
/// metrics. Returns `None` when metrics were not asked for, or, after printing one line to
/// stderr, when the configuration is bad: the cache then works as before, without metrics.
pub fn start_from_env(cache: Arc<Cache>, register: impl FnOnce(&mut Registry)) -> Option<Handle> {
    let res = Config::from_env()
        .map_err(Error::from)
        .and_then(|cfg| match cfg {
            None => Ok(None),
            Some(cfg) => {
                let mut ex = Exporter::new(cache, cfg);
                register(ex.registry_mut());
                ex.start().map(Some)
            }
        });
    match res {
        Ok(h) => h,
        Err(e) => {
            eprintln!("regcache: metrics disabled: {e}");
            None
        }
    }
}
