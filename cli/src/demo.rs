//! `regcache demo`: the main job. An OSU-style loop over message sizes 4 KiB..4 MiB on the
//! software NIC; each size reuses a few buffers and churns them (unmapped and mapped again at
//! the same address); every transfer is validated byte for byte. The same sequence runs again
//! registering on every transfer (the baseline), in the same process, for the speedup.

use crate::progress::Progress;
use crate::setup::software_nic_cache;
use regcache::registrar::uring::SoftNic;
use regcache::{Access, Cache, Config, Registrar, Result};
use regcache_exporter::prometheus_client::metrics::counter::Counter;
use regcache_oracle::mem::{self, PAGE};
use regcache_oracle::rng::Rng;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Monitor: auto (default, or $REGCACHE_MONITOR), ummunotify, uffd, none.
    #[arg(long, default_value = "")]
    monitor: String,
    /// Transfers per message size.
    #[arg(long, default_value_t = 400)]
    iterations: u64,
    /// Churn (unmap and map again at the same address) one buffer every N transfers.
    #[arg(long, default_value_t = 32)]
    churn_every: u64,
    /// Buffers per message size, used round robin.
    #[arg(long, default_value_t = 4)]
    buffers: usize,
    /// Message sizes in KiB (comma separated; default 4,16,64,256,1024,4096).
    #[arg(long, value_delimiter = ',', value_name = "KIB")]
    sizes: Vec<usize>,
    /// Negative control: turn invalidation off and report the corruption it causes.
    #[arg(long)]
    no_invalidation: bool,
    /// With metrics enabled (REGCACHE_METRICS_ADDR or REGCACHE_METRICS_TEXTFILE_DIR), keep
    /// serving them this many seconds after the run, so Prometheus can scrape the final counts.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    metrics_hold: u64,
}

const SIZES: [usize; 6] = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20];
const ACCESS: Access = Access::LOCAL_WRITE
    .union(Access::REMOTE_WRITE)
    .union(Access::REMOTE_READ);

/// Timings and checks of one pass over one size.
#[derive(Default, Clone, Copy)]
struct Pass {
    transfers: u64,
    corrupted: u64,
    /// Time spent obtaining and releasing registrations.
    reg_path: Duration,
    /// Whole loop time (registration, DMA, validation, churn).
    total: Duration,
    /// Time spent unmapping and mapping churned buffers (a watched unmap costs more).
    churn: Duration,
    churns: u64,
}

pub fn run(a: &Args) -> Result<ExitCode> {
    if a.buffers == 0 || a.iterations == 0 || a.churn_every == 0 || a.sizes.contains(&0) {
        return Err(regcache::Error::InvalidArgument(
            "iterations, buffers, churn-every must be > 0",
        ));
    }
    let cfg = Config {
        danger_ignore_invalidations: a.no_invalidation,
        ..Config::default()
    };
    let (cache, nic) = software_nic_cache(&a.monitor, cfg)?;
    let cache = Arc::new(cache);
    let metrics = DemoMetrics::start(&cache);
    let code = run_on(a, &cache, &nic, &metrics)?;
    metrics.hold(a.metrics_hold);
    Ok(code)
}

/// The exporter (when the environment asks for it) and the demo's own counters, served with
/// the cache's.
struct DemoMetrics {
    handle: Option<regcache_exporter::Handle>,
    transfers: Counter,
    corrupted: Counter,
}

impl DemoMetrics {
    fn start(cache: &Arc<Cache>) -> Self {
        let (transfers, corrupted) = (Counter::default(), Counter::default());
        let handle = regcache_exporter::start_from_env(cache.clone(), |r| {
            r.register(
                "regcache_demo_transfers",
                "Transfers made and validated by regcache demo (cached and baseline passes)",
                transfers.clone(),
            );
            r.register(
                "regcache_demo_corrupted_transfers",
                "Demo transfers whose data did not arrive intact or could not be registered; \
                 non-zero means a stale registration was used",
                corrupted.clone(),
            );
        });
        if let Some(h) = &handle {
            if let Some(addr) = h.local_addr() {
                println!("metrics: http://{addr}/metrics");
            }
            if let Some(path) = h.textfile() {
                println!("metrics: textfile {}", path.display());
            }
        }
        DemoMetrics {
            handle,
            transfers,
            corrupted,
        }
    }

    fn count(&self, p: &Pass) {
        self.transfers.inc_by(p.transfers);
        self.corrupted.inc_by(p.corrupted);
    }

    fn hold(self, secs: u64) {
        if self.handle.is_some() && secs > 0 {
            println!("metrics: serving for {secs} s more");
            std::thread::sleep(Duration::from_secs(secs));
        }
    }
}

fn run_on(a: &Args, cache: &Cache, nic: &Arc<SoftNic>, metrics: &DemoMetrics) -> Result<ExitCode> {
    println!(
        "regcache demo: monitor={} registrar={} (io_uring fixed buffers: pinned like a NIC){}",
        cache.monitor_kind().name(),
        cache.registrar_name(),
        if a.no_invalidation {
            "  ** NEGATIVE CONTROL: invalidation OFF **"
        } else {
            ""
        }
    );
    if !cache.is_caching() {
        println!("note: no working monitor, so nothing is cached (every transfer registers)");
    }
    let sizes: Vec<usize> = if a.sizes.is_empty() {
        SIZES.to_vec()
    } else {
        a.sizes.iter().map(|k| k << 10).collect()
    };
    let progress = Progress::new("demo", sizes.len() as u64 * a.iterations * 2);
    let mut done = 0;
    let mut rows = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let before = cache.stats();
        let cached = pass(
            a,
            cache,
            nic,
            size,
            i as u64,
            Mode::Cached,
            &progress,
            &mut done,
        );
        let after = cache.stats();
        let base = if a.no_invalidation {
            Pass::default()
        } else {
            pass(
                a,
                cache,
                nic,
                size,
                i as u64,
                Mode::RegisterEveryTime,
                &progress,
                &mut done,
            )
        };
        metrics.count(&cached);
        metrics.count(&base);
        rows.push((size, cached, base, after.hits - before.hits));
    }
    progress.finish();
    cache.flush();
    let s = cache.stats();
    let corrupted: u64 = rows.iter().map(|r| r.1.corrupted + r.2.corrupted).sum();

    println!(
        "{:>8} {:>9} {:>8} {:>13} {:>13} {:>11} {:>11} {:>15}",
        "size",
        "transfers",
        "hit rate",
        "reg µs cached",
        "reg µs always",
        "reg speedup",
        "e2e speedup",
        "churn µs c/a"
    );
    let (mut reg_c, mut reg_b, mut tot_c, mut tot_b) = (0f64, 0f64, 0f64, 0f64);
    for (size, c, b, hits) in &rows {
        let per = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        let (rc, rb) = (per(c.reg_path, c.transfers), per(b.reg_path, b.transfers));
        reg_c += c.reg_path.as_secs_f64();
        reg_b += b.reg_path.as_secs_f64();
        tot_c += c.total.as_secs_f64();
        tot_b += b.total.as_secs_f64();
        let ratio = |x: f64, y: f64| {
            if x > 0.0 && y > 0.0 {
                format!("{:.1}x", x / y)
            } else {
                "-".into()
            }
        };
        println!(
            "{:>8} {:>9} {:>7.1}% {:>13.2} {:>13} {:>11} {:>11} {:>15}",
            human(*size),
            c.transfers,
            100.0 * *hits as f64 / c.transfers.max(1) as f64,
            rc,
            if a.no_invalidation {
                "-".to_string()
            } else {
                format!("{rb:.2}")
            },
            ratio(rb, rc),
            ratio(b.total.as_secs_f64(), c.total.as_secs_f64()),
            format!(
                "{:.1}/{:.1}",
                per(c.churn, c.churns),
                per(b.churn, b.churns)
            ),
        );
    }
    if a.churn_every == 1 && !a.no_invalidation {
        churn_row(&rows, a.buffers);
    }
    println!(
        "cache: hits {} misses {} hit rate {:.1}%, re-registrations {}, invalidated entries {}, \
         false positives {} (of {} drains), evictions {}, one-use registrations {}",
        s.hits,
        s.misses,
        100.0 * s.hit_rate(),
        s.reregistrations,
        s.invalidated,
        s.false_positives,
        s.drains,
        s.evictions,
        s.uncacheable
    );
    println!("corrupted transfers: {corrupted}");
    if a.no_invalidation {
        if corrupted > 0 {
            println!("negative control: invalidation off caused {corrupted} corrupted transfers, as it must");
            return Ok(ExitCode::SUCCESS);
        }
        println!("negative control FAILED: invalidation off but no corruption was detected");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "speedup over registering every transfer: registration path {:.1}x, end to end {:.2}x",
        reg_b / reg_c.max(1e-12),
        tot_b / tot_c.max(1e-12)
    );
    Ok(if corrupted == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The "100% churn" row of issue 13 (`--churn-every 1`; with `--buffers 1` every transfer's
/// buffer was just unmapped and mapped again): per transfer, the registration path plus the
/// unmap+remap (a watched munmap costs more, and a cached registration keeps the old pages
/// pinned until its invalidation is drained), cached pass / baseline pass.
fn churn_row(rows: &[(usize, Pass, Pass, u64)], buffers: usize) {
    println!(
        "100% churn row{}: per transfer, registration path + unmap/remap (µs), cached / registering every transfer",
        if buffers == 1 {
            ""
        } else {
            " (only with --buffers 1 is every transfer's own buffer churned)"
        }
    );
    println!(
        "{:>8} {:>12} {:>12} {:>8} {:>14}",
        "size", "cached µs", "always µs", "ratio", "reg-only ratio"
    );
    for (size, c, b, _) in rows {
        let per = |p: &Pass| (p.reg_path + p.churn).as_secs_f64() * 1e6 / p.transfers.max(1) as f64;
        let reg = |p: &Pass| p.reg_path.as_secs_f64() / p.transfers.max(1) as f64;
        let (pc, pb) = (per(c), per(b));
        println!(
            "{:>8} {:>12.2} {:>12.2} {:>7.2}x {:>13.2}x",
            human(*size),
            pc,
            pb,
            pc / pb.max(1e-12),
            reg(c) / reg(b).max(1e-12)
        );
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Cached,
    RegisterEveryTime,
}

#[allow(clippy::too_many_arguments)]
fn pass(
    a: &Args,
    cache: &Cache,
    nic: &SoftNic,
    size: usize,
    salt: u64,
    mode: Mode,
    progress: &Progress,
    done: &mut u64,
) -> Pass {
    let len = size.div_ceil(PAGE) * PAGE;
    let mut bufs: Vec<usize> = (0..a.buffers).filter_map(|_| mem::map(len, None)).collect();
    for &b in &bufs {
        fill_like_an_application(b, len);
    }
    let mut rng = Rng::new(0xDE30 ^ salt);
    let mut pattern = vec![0u8; size];
    let mut p = Pass::default();
    let t0 = Instant::now();
    for n in 0..a.iterations {
        if n > 0 && n % a.churn_every == 0 && !bufs.is_empty() {
            // free + malloc of the same size: the new buffer comes back at the same address.
            let i = rng.range(0, bufs.len());
            let t = Instant::now();
            mem::unmap(bufs[i], len);
            let new = mem::map(len, Some(bufs[i])).or_else(|| mem::map(len, None));
            p.churn += t.elapsed();
            p.churns += 1;
            match new {
                Some(addr) => {
                    bufs[i] = addr;
                    fill_like_an_application(addr, len);
                }
                None => {
                    bufs.remove(i);
                }
            }
        }
        let Some(&addr) = bufs.get(n as usize % bufs.len().max(1)) else {
            break;
        };
        Rng::fill(salt << 40 ^ n, &mut pattern);
        let ok = match mode {
            Mode::Cached => {
                let t = Instant::now();
                let h = match cache.get(addr, size, ACCESS) {
                    Ok(h) => h,
                    Err(e) => {
                        eprintln!("regcache demo: get failed: {e}");
                        p.corrupted += 1;
                        continue;
                    }
                };
                p.reg_path += t.elapsed();
                let ok = transfer(nic, &h.registration(), addr, &pattern);
                let t = Instant::now();
                drop(h);
                p.reg_path += t.elapsed();
                ok
            }
            Mode::RegisterEveryTime => {
                let t = Instant::now();
                let reg = match nic.register(addr, len, ACCESS) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("regcache demo: register failed: {e}");
                        p.corrupted += 1;
                        continue;
                    }
                };
                p.reg_path += t.elapsed();
                let ok = transfer(nic, &reg, addr, &pattern);
                let t = Instant::now();
                nic.deregister(&reg, addr, len);
                p.reg_path += t.elapsed();
                ok
            }
        };
        p.transfers += 1;
        p.corrupted += u64::from(!ok);
        *done += 1;
        if n % 16 == 0 {
            progress.update(*done);
        }
    }
    p.total = t0.elapsed();
    for b in bufs {
        mem::unmap(b, len);
    }
    p
}

/// The application writes its message into a new buffer before sending it (OSU does too), so
/// registration never pays for first-touch page faults.
fn fill_like_an_application(addr: usize, len: usize) {
    // SAFETY: `addr` is a fresh mapping of `len` bytes made by this pass.
    unsafe { std::ptr::write_bytes(addr as *mut u8, 0x5A, len) };
}

/// The NIC writes `pattern` at `addr` through `reg` (an RDMA WRITE arriving); the application
/// must then see it in its buffer.
fn transfer(nic: &SoftNic, reg: &regcache::Registration, addr: usize, pattern: &[u8]) -> bool {
    if nic.dma_write(reg, addr, pattern).is_err() {
        return false;
    }
    // SAFETY: `addr` is a live mapping of this pass of at least pattern.len() bytes, not
    // referenced by Rust code.
    unsafe { mem::bytes(addr, pattern.len()) == pattern }
}

fn human(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n >> 10)
    }
}
