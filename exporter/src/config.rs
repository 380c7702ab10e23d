//! The exporter's configuration, from the environment.
//!
//! - `REGCACHE_METRICS_ADDR`: where to serve `/metrics`. Unset, empty, `0` or `off`: no listener.
//!   `1` (or `on`): `127.0.0.1:9464`. `:PORT`: loopback, that port. `HOST:PORT` with an IP
//!   literal (`0.0.0.0:9464`, `[::1]:9464`) or `localhost`. The launcher's local rank is added to
//!   the port, so the ranks of one node each get their own (port 0 asks the kernel for one).
//! - `REGCACHE_METRICS_TEXTFILE_DIR`: a directory (node_exporter's textfile collector) where a
//!   `.prom` file per process is replaced atomically every interval and at exit.
//! - `REGCACHE_METRICS_INTERVAL`: seconds between textfile writes (default 15; `500ms`, `2s`,
//!   `2.5` are accepted).
//!
//! Series carry `rank`, `local_rank` and `job_id` labels when the launcher (Open MPI, MPICH,
//! Intel MPI, PMIx, Slurm, PBS, LSF, Flux) sets them, and a `node` label from
//! `REGCACHE_METRICS_NODE` or Slurm's `SLURMD_NODENAME` (the ranks of several nodes writing
//! textfiles into one shared directory, read by one collector, share its `instance`).
//!
//! The same three settings can also come as one string, a *spec* (the C ABI's
//! `regcache_metrics_start()` and the LD_PRELOAD shim's `REGCACHE_SHIM_METRICS`): items separated
//! by commas, `addr=ADDR` (or a bare `ADDR`), `textfile=DIR`, `interval=SECS`, each read as the
//! variable above would be, e.g. `:9464`, `textfile=/var/lib/node_exporter,interval=5` or
//! `127.0.0.1:0,textfile=/tmp/m`. The launcher's variables (local rank, labels) still come from
//! the environment.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub const ENV_ADDR: &str = "REGCACHE_METRICS_ADDR";
pub const ENV_TEXTFILE_DIR: &str = "REGCACHE_METRICS_TEXTFILE_DIR";
pub const ENV_INTERVAL: &str = "REGCACHE_METRICS_INTERVAL";

/// Port used by `REGCACHE_METRICS_ADDR=1` and `:PORT`-less forms.
pub const DEFAULT_PORT: u16 = 9464;
/// Textfile write interval when `REGCACHE_METRICS_INTERVAL` is unset.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// Node-local rank, first one set wins.
const LOCAL_RANK_VARS: [&str; 4] = [
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "PMI_LOCAL_RANK",
    "SLURM_LOCALID",
];
/// Global rank.
const RANK_VARS: [&str; 4] = [
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "PMI_RANK",
    "SLURM_PROCID",
];
/// Job id.
const JOB_VARS: [&str; 5] = [
    "SLURM_JOB_ID",
    "PBS_JOBID",
    "LSB_JOBID",
    "FLUX_JOB_ID",
    "PMIX_NAMESPACE",
];

/// Node name, first one set wins.
const NODE_VARS: [&str; 2] = ["REGCACHE_METRICS_NODE", "SLURMD_NODENAME"];

/// What to export and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address to serve `/metrics` on (the local rank already added to the port).
    pub listen: Option<SocketAddr>,
    /// Directory for node_exporter's textfile collector.
    pub textfile_dir: Option<PathBuf>,
    /// Time between textfile writes.
    pub interval: Duration,
    /// Constant labels of every series: rank, local_rank, job_id, node when known.
    pub labels: Vec<(String, String)>,
}

/// A configuration that cannot be used: names the variable, its value and what is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub why: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}: {}", self.var, self.value, self.why)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Exports nothing (for building an [`crate::Exporter`] to encode on demand).
    pub fn disabled() -> Self {
        Config {
            listen: None,
            textfile_dir: None,
            interval: DEFAULT_INTERVAL,
            labels: Vec::new(),
        }
    }

    /// Whether anything is exported.
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.textfile_dir.is_some()
    }

    /// Reads the process environment. `Ok(None)`: metrics were not asked for.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`Config::from_env`], reading variables through `get` (for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let first = |vars: &[&'static str]| {
            vars.iter().find_map(|v| {
                let s = get(v)?;
                let s = s.trim();
                (!s.is_empty()).then(|| (*v, s.to_string()))
            })
        };
        let local_rank = match first(&LOCAL_RANK_VARS) {
            None => None,
            Some((var, v)) => Some(v.parse::<u16>().map_err(|_| ConfigError {
                var,
                value: v.clone(),
                why: "local rank is not a number from 0 to 65535".into(),
            })?),
        };
        let listen = match get(ENV_ADDR) {
            None => None,
            Some(v) => parse_addr(&v)
                .map_err(|why| ConfigError {
                    var: ENV_ADDR,
                    value: v.clone(),
                    why,
                })?
                .map(|a| with_rank_offset(a, local_rank, &v))
                .transpose()?,
        };
        let textfile_dir = get(ENV_TEXTFILE_DIR)
            .filter(|d| !d.trim().is_empty())
            .map(PathBuf::from);
        let interval = match get(ENV_INTERVAL) {
            None => DEFAULT_INTERVAL,
            Some(v) if v.trim().is_empty() => DEFAULT_INTERVAL,
            Some(v) => parse_interval(&v).map_err(|why| ConfigError {
                var: ENV_INTERVAL,
                value: v.clone(),
                why,
            })?,
        };
        let mut labels = Vec::new();
        if let Some((_, r)) = first(&RANK_VARS) {
            labels.push(("rank".to_string(), r));
        }
        if let Some(r) = local_rank {
            labels.push(("local_rank".to_string(), r.to_string()));
        }
        if let Some((_, j)) = first(&JOB_VARS) {
            labels.push(("job_id".to_string(), j));
        }
        if let Some((_, n)) = first(&NODE_VARS) {
            labels.push(("node".to_string(), n));
        }
        let cfg = Config {
            listen,
            textfile_dir,
            interval,
            labels,
        };
        Ok(cfg.enabled().then_some(cfg))
    }

    /// Reads a spec (see the module documentation) and the launcher's variables from the
    /// environment. `Ok(None)`: the spec asks for nothing (empty, `off`).
    pub fn from_spec(spec: &str) -> Result<Option<Self>, ConfigError> {
        Self::from_spec_lookup(spec, |k| std::env::var(k).ok())
    }

    /// As [`Config::from_spec`], reading the launcher's variables through `get` (for tests).
    /// The spec's items are handed to [`Config::from_lookup`] as the variables they stand for,
    /// so they are parsed exactly as those are; errors name the item (`addr`, `textfile`,
    /// `interval`) instead of the variable.
    pub fn from_spec_lookup(
        spec: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        const ITEMS: &str = "items are ADDR (or addr=ADDR), textfile=DIR and interval=SECS, \
                             separated by commas";
        // (item name, variable it stands for, value)
        let mut items: [(&'static str, &'static str, Option<String>); 3] = [
            ("addr", ENV_ADDR, None),
            ("textfile", ENV_TEXTFILE_DIR, None),
            ("interval", ENV_INTERVAL, None),
        ];
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => ("addr", item),
            };
            let slot = items
                .iter_mut()
                .find(|(name, _, _)| name.eq_ignore_ascii_case(key))
                .ok_or_else(|| ConfigError {
                    var: "metrics spec",
                    value: spec.to_string(),
                    why: format!("unknown item {key:?}; {ITEMS}"),
                })?;
            if slot.2.is_some() {
                return Err(ConfigError {
                    var: "metrics spec",
                    value: spec.to_string(),
                    why: format!("{} given twice; {ITEMS}", slot.0),
                });
            }
            slot.2 = Some(value.to_string());
        }
        let [addr, textfile, interval] = &items;
        let res = Self::from_lookup(|k| match k {
            ENV_ADDR => addr.2.clone(),
            ENV_TEXTFILE_DIR => textfile.2.clone(),
            ENV_INTERVAL => interval.2.clone(),
            other => get(other),
        });
        res.map_err(|mut e| {
            if let Some((name, _, _)) = items.iter().find(|(_, var, _)| *var == e.var) {
                if *name == "addr" && e.value.starts_with(['/', '.']) {
                    e.why.push_str(" (a textfile directory is textfile=DIR)");
                }
                e.var = name;
            }
            e
        })
    }

    /// The label value of `name`, if set.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `Ok(None)`: the listener is off.
fn parse_addr(v: &str) -> Result<Option<SocketAddr>, String> {
    const FORMS: &str = "use 1 (127.0.0.1:9464), :PORT, IP:PORT, [IPv6]:PORT or localhost:PORT; \
                         0 or off disables";
    let v = v.trim();
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    match v.to_ascii_lowercase().as_str() {
        "" | "0" | "off" | "false" | "no" => return Ok(None),
        "1" | "on" | "true" | "yes" => return Ok(Some(SocketAddr::new(loopback, DEFAULT_PORT))),
        _ => {}
    }
    if let Some(port) = v.strip_prefix(':') {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("bad port; {FORMS}"))?;
        return Ok(Some(SocketAddr::new(loopback, port)));
    }
    if let Some(port) = v.strip_prefix("localhost:") {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("bad port; {FORMS}"))?;
        return Ok(Some(SocketAddr::new(loopback, port)));
    }
    v.parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| format!("not an address; {FORMS}"))
}

fn with_rank_offset(
    a: SocketAddr,
    local_rank: Option<u16>,
    value: &str,
) -> Result<SocketAddr, ConfigError> {
    let rank = local_rank.unwrap_or(0);
    if a.port() == 0 || rank == 0 {
        return Ok(a);
    }
    let port = a.port().checked_add(rank).ok_or_else(|| ConfigError {
        var: ENV_ADDR,
        value: value.to_string(),
        why: format!("port {} + local rank {rank} exceeds 65535", a.port()),
    })?;
    Ok(SocketAddr::new(a.ip(), port))
}

fn parse_interval(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let (num, scale) = if let Some(ms) = v.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = v.strip_suffix('s') {
        (s, 1.0)
    } else {
        (v, 1.0)
    };
    let secs = num
        .trim()
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|s| s.is_finite() && *s >= 0.1 && *s <= 86_400.0)
        .ok_or("seconds between textfile writes, from 0.1 to 86400 (e.g. 15, 2.5s, 500ms)")?;
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<Option<Config>, ConfigError> {
        Config::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nothing_asked_nothing_exported() {
        assert_eq!(cfg(&[]), Ok(None));
        assert_eq!(cfg(&[(ENV_ADDR, "")]), Ok(None));
        assert_eq!(cfg(&[(ENV_ADDR, "0")]), Ok(None));
        assert_eq!(cfg(&[(ENV_ADDR, "off"), (ENV_TEXTFILE_DIR, "")]), Ok(None));
    }

    #[test]
    fn address_forms() {
        let listen = |v: &str| cfg(&[(ENV_ADDR, v)]).unwrap().unwrap().listen.unwrap();
        assert_eq!(listen("1"), addr("127.0.0.1:9464"));
        assert_eq!(listen("on"), addr("127.0.0.1:9464"));
        assert_eq!(listen(":9500"), addr("127.0.0.1:9500"));
        assert_eq!(listen("localhost:9501"), addr("127.0.0.1:9501"));
        assert_eq!(listen("0.0.0.0:9464"), addr("0.0.0.0:9464"));
        assert_eq!(listen("[::1]:9464"), addr("[::1]:9464"));
        assert_eq!(listen(" 127.0.0.1:0 "), addr("127.0.0.1:0"));
    }

    #[test]
    fn bad_address_is_one_clear_error() {
        for bad in [
            "9464",
            "127.0.0.1",
            ":99999",
            "host.example:9464",
            "1.2.3.4:x",
        ] {
            let e = cfg(&[(ENV_ADDR, bad)]).unwrap_err();
            assert_eq!(e.var, ENV_ADDR);
            let msg = e.to_string();
            assert!(msg.starts_with("REGCACHE_METRICS_ADDR=\""), "{msg}");
            assert!(msg.contains(":PORT"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn local_rank_moves_the_port_and_labels() {
        let c = cfg(&[
            (ENV_ADDR, ":9464"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "3"),
            ("OMPI_COMM_WORLD_RANK", "11"),
            ("SLURM_JOB_ID", "4242"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.listen, Some(addr("127.0.0.1:9467")));
        assert_eq!(c.label("rank"), Some("11"));
        assert_eq!(c.label("local_rank"), Some("3"));
        assert_eq!(c.label("job_id"), Some("4242"));
        assert_eq!(c.label("node"), None);

        // Each launcher's variable is understood; the first in the list wins.
        for var in LOCAL_RANK_VARS {
            let c = cfg(&[(ENV_ADDR, "1"), (var, "2")]).unwrap().unwrap();
            assert_eq!(c.listen, Some(addr("127.0.0.1:9466")), "{var}");
        }
        let c = cfg(&[
            (ENV_ADDR, "1"),
            ("SLURM_LOCALID", "5"),
            ("MPI_LOCALRANKID", "1"),
        ]);
        assert_eq!(c.unwrap().unwrap().listen, Some(addr("127.0.0.1:9465")));

        // Port 0 (kernel's choice) is not offset; no launcher, no labels.
        let c = cfg(&[(ENV_ADDR, ":0"), ("PMI_LOCAL_RANK", "7")])
            .unwrap()
            .unwrap();
        assert_eq!(c.listen, Some(addr("127.0.0.1:0")));
        let c = cfg(&[(ENV_ADDR, "1")]).unwrap().unwrap();
        assert!(c.labels.is_empty());
    }

    #[test]
    fn node_label_from_the_override_or_slurm() {
        let c = cfg(&[
            (ENV_TEXTFILE_DIR, "/d"),
            ("SLURM_PROCID", "1"),
            ("SLURM_JOB_ID", "7"),
            ("SLURMD_NODENAME", "node2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            c.labels,
            [("rank", "1"), ("job_id", "7"), ("node", "node2")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let c = cfg(&[
            (ENV_TEXTFILE_DIR, "/d"),
            ("SLURMD_NODENAME", "node2"),
            ("REGCACHE_METRICS_NODE", "rack1-n2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.label("node"), Some("rack1-n2"));
        // Blank is unset.
        let c = cfg(&[(ENV_TEXTFILE_DIR, "/d"), ("REGCACHE_METRICS_NODE", " ")])
            .unwrap()
            .unwrap();
        assert!(c.labels.is_empty());
    }

    #[test]
    fn rank_offset_overflow_and_bad_rank_are_errors() {
        let e = cfg(&[(ENV_ADDR, ":65535"), ("SLURM_LOCALID", "1")]).unwrap_err();
        assert!(e.to_string().contains("exceeds 65535"), "{e}");
        let e = cfg(&[(ENV_ADDR, "1"), ("SLURM_LOCALID", "x")]).unwrap_err();
        assert_eq!(e.var, "SLURM_LOCALID");
    }

    fn spec(s: &str, vars: &[(&str, &str)]) -> Result<Option<Config>, ConfigError> {
        Config::from_spec_lookup(s, |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn spec_items_read_as_their_variables() {
        assert_eq!(spec("", &[]), Ok(None));
        assert_eq!(spec(" , off", &[]), Ok(None));
        let c = spec(":9500", &[]).unwrap().unwrap();
        assert_eq!(c.listen, Some(addr("127.0.0.1:9500")));
        assert_eq!(c.textfile_dir, None);
        let c = spec("addr=[::1]:0, textfile=/tmp/m ,interval=500ms", &[])
            .unwrap()
            .unwrap();
        assert_eq!(c.listen, Some(addr("[::1]:0")));
        assert_eq!(
            c.textfile_dir.as_deref(),
            Some(std::path::Path::new("/tmp/m"))
        );
        assert_eq!(c.interval, Duration::from_millis(500));
        // The spec replaces the metrics variables; the launcher's still apply.
        let c = spec(
            "textfile=/d",
            &[
                (ENV_ADDR, "1"),
                ("SLURM_LOCALID", "2"),
                ("SLURM_PROCID", "9"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.listen, None);
        assert_eq!(c.label("rank"), Some("9"));
        let c = spec("1", &[("MPI_LOCALRANKID", "2")]).unwrap().unwrap();
        assert_eq!(c.listen, Some(addr("127.0.0.1:9466")));
    }

    #[test]
    fn bad_spec_names_the_item() {
        let e = spec(":99999", &[]).unwrap_err();
        assert_eq!(e.var, "addr");
        assert!(
            e.to_string().starts_with("addr=\":99999\": bad port"),
            "{e}"
        );
        let e = spec("/tmp/m", &[]).unwrap_err();
        assert!(e.to_string().contains("textfile=DIR"), "{e}");
        assert_eq!(
            spec("textfile=/d,interval=0", &[]).unwrap_err().var,
            "interval"
        );
        let e = spec("port=1", &[]).unwrap_err();
        assert!(e.to_string().contains("unknown item \"port\""), "{e}");
        let e = spec(":1,:2", &[]).unwrap_err();
        assert!(e.to_string().contains("addr given twice"), "{e}");
        let e = spec(":1", &[("SLURM_LOCALID", "x")]).unwrap_err();
        assert_eq!(e.var, "SLURM_LOCALID");
        for e in [spec("x", &[]), spec("a=b", &[])] {
            assert!(!e.unwrap_err().to_string().contains('\n'));
        }
    }

    #[test]
    fn textfile_and_interval() {
        let c = cfg(&[(ENV_TEXTFILE_DIR, "/var/lib/node_exporter")])
            .unwrap()
            .unwrap();
        assert_eq!(c.listen, None);
        assert_eq!(
            c.textfile_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/node_exporter"))
        );
        assert_eq!(c.interval, DEFAULT_INTERVAL);
        let iv = |v: &str| {
            cfg(&[(ENV_TEXTFILE_DIR, "/x"), (ENV_INTERVAL, v)]).map(|c| c.unwrap().interval)
        };
        assert_eq!(iv("2"), Ok(Duration::from_secs(2)));
        assert_eq!(iv("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(iv("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(iv("0").unwrap_err().var, ENV_INTERVAL);
        assert_eq!(iv("soon").unwrap_err().var, ENV_INTERVAL);
    }
}
