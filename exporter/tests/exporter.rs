//! The exporter end to end on this host: a real cache (userfaultfd monitor, or none where it is
//! unavailable) with a registrar that can be told to fail, the exposition's content, the HTTP
//! listener scraped with a TcpStream, the textfile, and bad configurations.

use prometheus_client::metrics::counter::Counter;
use regcache::monitor::select::{self, Choice};
use regcache::{Access, Cache, Config as CacheConfig, Error, Registrar, Registration};
use regcache_exporter::parse::{self, sum};
use regcache_exporter::{Config, Exporter};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Registers nothing; fails with `fail_errno` when it is non-zero.
#[derive(Default)]
struct TestRegistrar {
    next: AtomicU64,
    fail_errno: AtomicI32,
}

impl Registrar for TestRegistrar {
    fn name(&self) -> &'static str {
        "test"
    }
    fn register(
        &self,
        _addr: usize,
        _len: usize,
        _access: Access,
    ) -> regcache::Result<Registration> {
        // Relaxed (both): test knobs and unique keys, no other memory published.
        match self.fail_errno.load(Relaxed) {
            0 => {
                let k = self.next.fetch_add(1, Relaxed) as u32;
                Ok(Registration {
                    lkey: k,
                    rkey: k,
                    token: k.into(),
                })
            }
            errno => Err(Error::from_register_errno(errno, "test registrar")),
        }
    }
    fn deregister(&self, _reg: &Registration, _addr: usize, _len: usize) {}
}

struct Mapping(usize, usize);

impl Mapping {
    fn new(len: usize) -> Self {
        // SAFETY: an anonymous private mapping with no address hint; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Mapping(p as usize, len)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing references anymore.
        unsafe { libc::munmap(self.0 as *mut libc::c_void, self.1) };
    }
}

/// A cache with 2 hits, 1 miss, 1 EINVAL failure and 1 ENOMEM failure (0 hits without uffd).
fn busy_cache() -> (Arc<Cache>, Arc<TestRegistrar>, Mapping) {
    let reg = Arc::new(TestRegistrar::default());
    let choice = if regcache::monitor::uffd::UffdMonitor::is_available() {
        Choice::Only(regcache::MonitorKind::Uffd)
    } else {
        Choice::Only(regcache::MonitorKind::None)
    };
    let (mon, _) = select::open(choice).unwrap();
    let cache = Arc::new(Cache::new(mon, reg.clone(), CacheConfig::default()));
    let m = Mapping::new(1 << 16);
    // Failures first: ENOMEM makes the cache evict unused entries before its retry.
    // Relaxed: test knob read by the same thread.
    reg.fail_errno.store(libc::EINVAL, Relaxed);
    assert!(cache.get(m.0 + 8192, 4096, Access::LOCAL_WRITE).is_err());
    reg.fail_errno.store(libc::ENOMEM, Relaxed);
    assert!(cache.get(m.0 + 16384, 4096, Access::LOCAL_WRITE).is_err());
    reg.fail_errno.store(0, Relaxed);
    for _ in 0..3 {
        drop(cache.get(m.0, 4096, Access::LOCAL_WRITE).unwrap());
    }
    (cache, reg, m)
}

fn labelled(labels: &[(&str, &str)]) -> Config {
    let mut c = Config::disabled();
    c.labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c
}

#[test]
fn exposition_content() {
    let (cache, _reg, _m) = busy_cache();
    let caching = cache.is_caching();
    let mut ex = Exporter::new(cache, labelled(&[("rank", "3"), ("job_id", "77")]));
    let app: Counter = Counter::default();
    ex.registry_mut().register(
        "regcache_demo_transfers",
        "Transfers made by the demo",
        app.clone(),
    );
    app.inc_by(5);
    let text = ex.encode();
    let s = parse::parse(&text).unwrap();

    // Every family has HELP and TYPE; names follow the conventions.
    for family in [
        "regcache_lookups_total counter",
        "regcache_uncacheable_requests_total counter",
        "regcache_reregistrations_total counter",
        "regcache_kept_watches_total counter",
        "regcache_false_positives_total counter",
        "regcache_invalidated_entries_total counter",
        "regcache_drains_total counter",
        "regcache_evictions_total counter",
        "regcache_registrations_total counter",
        "regcache_deregistrations_total counter",
        "regcache_registration_failures_total counter",
        "regcache_registered_bytes gauge",
        "regcache_registered_entries gauge",
        "regcache_caching gauge",
        "regcache_registration_duration_seconds histogram",
        "regcache_drain_duration_seconds histogram",
        "regcache_cache_info gauge",
        "regcache_demo_transfers_total counter",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}\n")),
            "{family}\n{text}"
        );
        let name = family.split(' ').next().unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "{name}");
    }
    // Every series carries the constant labels.
    assert!(s
        .iter()
        .all(|x| x.label("rank") == Some("3") && x.label("job_id") == Some("77")));

    let v = |name: &str, with: &[(&str, &str)]| sum(&s, name, with).unwrap_or(-1.0);
    if caching {
        assert_eq!(v("regcache_lookups_total", &[("result", "hit")]), 2.0);
        assert_eq!(v("regcache_lookups_total", &[("result", "miss")]), 3.0); // 2 failed
        assert_eq!(v("regcache_registered_entries", &[]), 1.0);
        assert_eq!(v("regcache_registered_bytes", &[]), 4096.0);
        assert_eq!(v("regcache_caching", &[]), 1.0);
        assert_eq!(
            v(
                "regcache_cache_info",
                &[("monitor", "uffd"), ("registrar", "test")]
            ),
            1.0
        );
    }
    assert_eq!(
        v(
            "regcache_registration_failures_total",
            &[("class", "invalid")]
        ),
        1.0
    );
    // Caching, ENOMEM makes the cache evict and retry once: two failures.
    let enomem = if caching { 2.0 } else { 1.0 };
    assert_eq!(
        v(
            "regcache_registration_failures_total",
            &[("class", "resources")]
        ),
        enomem
    );
    assert_eq!(
        v(
            "regcache_registration_failures_total",
            &[("class", "other")]
        ),
        0.0
    );
    assert_eq!(v("regcache_demo_transfers_total", &[]), 5.0);

    // The histogram: cumulative buckets ending in +Inf == count == successful registrations.
    let buckets: Vec<f64> = s
        .iter()
        .filter(|x| x.name == "regcache_registration_duration_seconds_bucket")
        .map(|x| x.value)
        .collect();
    assert_eq!(buckets.len(), 14);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]));
    let count = v("regcache_registration_duration_seconds_count", &[]);
    assert_eq!(buckets[13], count);
    assert_eq!(count, v("regcache_registrations_total", &[]));
    let les: Vec<&str> = s
        .iter()
        .filter(|x| x.name == "regcache_registration_duration_seconds_bucket")
        .map(|x| x.label("le").unwrap())
        .collect();
    assert_eq!(les.first(), Some(&"1e-06"));
    assert_eq!(&les[les.len() - 2..], ["1", "+Inf"]);

    // The drain histogram: 1 µs .. 100 ms and +Inf, cumulative, +Inf == count <= drains.
    let drain: Vec<(&str, f64)> = s
        .iter()
        .filter(|x| x.name == "regcache_drain_duration_seconds_bucket")
        .map(|x| (x.label("le").unwrap(), x.value))
        .collect();
    assert_eq!(drain.len(), 17);
    assert_eq!(drain[0].0, "1e-06");
    assert_eq!(
        &drain[15..].iter().map(|b| b.0).collect::<Vec<_>>(),
        &["0.1", "+Inf"]
    );
    assert!(drain.windows(2).all(|w| w[0].1 <= w[1].1));
    let count = v("regcache_drain_duration_seconds_count", &[]);
    assert_eq!(drain[16].1, count);
    assert!(count <= v("regcache_drains_total", &[]));
    assert!(v("regcache_drain_duration_seconds_sum", &[]) >= 0.0);
}

/// The memlock gauge is this process's soft limit now, and absent when it is unlimited.
#[test]
fn memlock_limit_is_the_soft_limit() {
    let (cache, _reg, _m) = busy_cache();
    let text = Exporter::new(cache, Config::disabled()).encode();
    let s = parse::parse(&text).unwrap();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`, a valid local.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) },
        0
    );
    let served = sum(&s, "regcache_memlock_limit_bytes", &[]);
    if lim.rlim_cur == libc::RLIM_INFINITY {
        assert_eq!(served, None, "unlimited: not served\n{text}");
        assert!(!text.contains("regcache_memlock_limit"));
    } else {
        assert_eq!(served, Some(lim.rlim_cur as f64), "{text}");
        assert!(text.contains("# TYPE regcache_memlock_limit_bytes gauge\n"));
    }
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

#[test]
fn http_listener_is_scraped_while_the_cache_works() {
    let (cache, _reg, m) = busy_cache();
    let mut cfg = Config::disabled();
    cfg.listen = Some("127.0.0.1:0".parse().unwrap());
    let handle = Exporter::new(cache.clone(), cfg).start().unwrap();
    let addr = handle.local_addr().unwrap();
    assert_ne!(addr.port(), 0);

    let (head, body) = http_get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let s = parse::parse(&body).unwrap();
    let hits = |s: &[parse::Sample]| sum(s, "regcache_lookups_total", &[("result", "hit")]);
    let before = hits(&s).unwrap();

    // The cache keeps working while served; a new scrape sees the new counts.
    drop(cache.get(m.0, 4096, Access::LOCAL_WRITE).unwrap());
    let after = hits(&parse::parse(&http_get(addr, "/metrics").1).unwrap()).unwrap();
    assert_eq!(after, before + f64::from(u8::from(cache.is_caching())));

    // The library's own reader agrees.
    let fetched = parse::fetch(&addr.to_string(), Duration::from_secs(5)).unwrap();
    assert!(fetched.contains("regcache_lookups_total"));

    assert!(http_get(addr, "/nope").0.starts_with("HTTP/1.1 404"));
    // A client that connects and says nothing delays nobody for long, and the listener goes on.
    let idle = TcpStream::connect(addr).unwrap();
    let (head, _) = http_get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    drop(idle);

    // Stopping closes the port.
    handle.stop();
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn port_in_use_is_one_clear_error() {
    let (cache, _reg, _m) = busy_cache();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = Config::disabled();
    cfg.listen = Some(taken.local_addr().unwrap());
    let e = Exporter::new(cache.clone(), cfg).start().err().unwrap();
    let msg = e.to_string();
    assert!(msg.starts_with("cannot listen on 127.0.0.1:"), "{msg}");
    assert!(msg.contains("REGCACHE_METRICS_ADDR"), "{msg}");
    // The cache is unaffected.
    assert!(cache.get(_m.0, 4096, Access::LOCAL_WRITE).is_ok());
}

#[test]
fn textfile_written_at_start_periodically_and_at_exit() {
    let (cache, _reg, m) = busy_cache();
    let dir = std::env::temp_dir().join(format!("regcache-textfile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = labelled(&[("rank", "0")]);
    cfg.textfile_dir = Some(dir.clone());
    cfg.interval = Duration::from_millis(100);
    let handle = Exporter::new(cache.clone(), cfg).start().unwrap();
    let path = handle.textfile().unwrap().to_path_buf();
    assert_eq!(path, dir.join("regcache-rank0.prom"));
    let read = || parse::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let regs = |s: &[parse::Sample]| sum(s, "regcache_registrations_total", &[]).unwrap();
    let first = regs(&read());

    // A new registration shows up within a few intervals...
    drop(cache.get(m.0 + 32768, 4096, Access::LOCAL_WRITE).unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while regs(&read()) == first {
        assert!(
            std::time::Instant::now() < deadline,
            "textfile not rewritten"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...and the last state is written when the exporter stops.
    drop(cache.get(m.0 + 40960, 4096, Access::LOCAL_WRITE).unwrap());
    handle.stop();
    assert_eq!(regs(&read()), first + 2.0);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temporary files left: {names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unwritable_textfile_directory_is_one_clear_error() {
    let (cache, _reg, _m) = busy_cache();
    let mut cfg = Config::disabled();
    cfg.textfile_dir = Some("/nonexistent/regcache-metrics".into());
    let msg = Exporter::new(cache, cfg).start().err().unwrap().to_string();
    assert!(
        msg.starts_with("cannot write /nonexistent/regcache-metrics/regcache-"),
        "{msg}"
    );
    assert!(msg.contains("REGCACHE_METRICS_TEXTFILE_DIR"), "{msg}");
}

#[test]
fn cache_set_sums_caches_and_keeps_removed_counters() {
    let (a, _ra, ma) = busy_cache();
    let (b, _rb, _mb) = busy_cache();
    let set = regcache_exporter::CacheSet::new();
    let ex = Exporter::with_caches(&set, Config::disabled());
    let read = || parse::parse(&ex.encode()).unwrap();
    let v = |s: &[parse::Sample], name: &str, with: &[(&str, &str)]| sum(s, name, with);

    // Empty: zero counters, not caching, no info series.
    let s = read();
    assert_eq!(
        v(&s, "regcache_lookups_total", &[("result", "hit")]),
        Some(0.0)
    );
    assert_eq!(v(&s, "regcache_caching", &[]), Some(0.0));
    assert_eq!(v(&s, "regcache_cache_info", &[]), None);

    assert!(set.add(a.clone()));
    assert!(!set.add(a.clone()), "a cache is added once");
    assert!(set.add(b.clone()));
    assert_eq!(set.len(), 2);
    let (sa, sb) = (a.stats(), b.stats());
    let s = read();
    let hits = |s: &[parse::Sample]| v(s, "regcache_lookups_total", &[("result", "hit")]);
    assert_eq!(hits(&s), Some((sa.hits + sb.hits) as f64));
    assert_eq!(
        v(&s, "regcache_registrations_total", &[]),
        Some((sa.registrations + sb.registrations) as f64)
    );
    assert_eq!(
        v(&s, "regcache_registered_entries", &[]),
        Some((sa.registered_entries + sb.registered_entries) as f64)
    );
    assert_eq!(
        v(&s, "regcache_caching", &[]),
        Some(f64::from(u8::from(a.is_caching() && b.is_caching())))
    );
    // Same monitor and registrar: one info series.
    assert_eq!(v(&s, "regcache_cache_info", &[]), Some(1.0));

    // A removed cache's counters stay; its gauges leave; later activity is not counted.
    assert!(set.remove(&a));
    assert!(!set.remove(&a));
    drop(a.get(ma.0, 4096, Access::LOCAL_WRITE).unwrap());
    let s = read();
    assert_eq!(hits(&s), Some((sa.hits + sb.hits) as f64));
    assert_eq!(
        v(&s, "regcache_registered_entries", &[]),
        Some(sb.registered_entries as f64)
    );
    set.clear();
    assert!(set.is_empty());
    assert_eq!(hits(&read()), Some((sa.hits + sb.hits) as f64));
    assert_eq!(set.stats().hits, sa.hits + sb.hits);
}
