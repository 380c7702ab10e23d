//! The "100% churn" row of issue 13: every transfer's buffer was just unmapped and mapped again
//! at the same address (free + malloc of one size), cached vs registering every transfer, on the
//! software NIC (io_uring fixed buffers), in one process.
//!
//! Per transfer: munmap + mmap of the buffer (timed), the application's fill (not timed), then
//! the registration path (timed): `Cache::get` ... release, or `register` ... `deregister`,
//! with one DMA write through the registration between them (not timed, checked byte for byte).
//! The two modes alternate in blocks of `--block` transfers, so both see the same load (the
//! machine and its TCG guests are shared); the cache is flushed before each block (so the
//! baseline's munmap runs with nothing watched, and each cached block starts with a fresh
//! watch: 1 transfer in `block`). The figures are medians of the per-transfer times, and the
//! row's number is median(cached) / median(always) of (registration path + churn).
//!
//! ```sh
//! churn-row [--monitor auto|ummunotify|uffd|simulated] [--sizes 4,64,1024] [--transfers 400]
//!           [--block 16] [--mode both|cached|always|late|all]
//! ```
//! `--mode cached` / `always` run one mode only (for `strace -c -f`: system calls per transfer);
//! `--mode all` adds `late`: registering every transfer but deregistering the previous
//! registration after its buffer was unmapped (the kernel work of the cache's order, without
//! the cache), printed on a line of its own.
//!
//! `--monitor simulated` runs where the module cannot be loaded (this host): a user-space
//! monitor with ummunotify's behaviour (`ChurnMonitor`: watches that outlive the unmap, cookie
//! events, revalidation) whose event this program fires right after each munmap, as the
//! module's notifier does inside it (in every mode; with nothing watched it finds nothing).
//! It leaves out the module's own work in the munmap (its notifier callbacks and ring record,
//! ~0.25 k instructions per transfer in the guest): the cache's side of the row on real CPU.
//!
//! With ummunotify the drains take the hits from the module's ring page (RING, the default);
//! `REGCACHE_RING=0` gives the 2010 read() path, so both can be run in one guest boot. The
//! header says which, and the last lines how many read() and SETTLE calls the drains made.

use regcache::monitor::select::{self, Choice};
use regcache::monitor::ummunotify::{DrainCalls, UmmunotifyMonitor};
use regcache::monitor::Monitor;
use regcache::registrar::uring::{SoftNic, MAX_SLOTS};
use regcache::{Access, Cache, Config, MonitorKind, Range, Registrar};
use regcache_benches::{ChurnHandle, ChurnMonitor};
use regcache_oracle::mem::{self, PAGE};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCESS: Access = Access::LOCAL_WRITE
    .union(Access::REMOTE_WRITE)
    .union(Access::REMOTE_READ);

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Cached,
    Always,
    /// Registers every transfer, but deregisters the previous transfer's registration only
    /// after its buffer was unmapped, inside the next registration path: the cache's order of
    /// kernel work without the cache (what the kernel charges for a late deregistration).
    Late,
}

#[derive(Default)]
struct Samples {
    /// `get` / `register`, then release / `deregister`.
    get: Vec<Duration>,
    put: Vec<Duration>,
    reg: Vec<Duration>,
    churn: Vec<Duration>,
    both: Vec<Duration>,
    corrupted: u64,
}

/// The monitor `--monitor` names (or REGCACHE_MONITOR's), with ummunotify's drain counters and
/// whether its ring is on.
fn open_monitor(monitor: &str) -> (Box<dyn Monitor>, Option<Arc<DrainCalls>>, &'static str) {
    let choice: Choice = if monitor.is_empty() {
        Choice::from_env().expect("REGCACHE_MONITOR")
    } else {
        monitor.parse().expect("--monitor")
    };
    let (mon, why) = select::open(choice).expect("monitor");
    for w in &why {
        eprintln!("churn-row: monitor not used: {w}");
    }
    if mon.kind() != MonitorKind::Ummunotify {
        return (mon, None, "");
    }
    // ummunotify: opened again as the concrete type (as select::open does, REGCACHE_RING and
    // REGCACHE_REVALIDATE honoured) to report the ring and count the drains' system calls.
    drop(mon);
    let m = UmmunotifyMonitor::open().expect("ummunotify");
    let ring = if m.ring_active() {
        " ring=on"
    } else {
        " ring=off"
    };
    let calls = m.calls();
    (Box::new(m), Some(calls), ring)
}

fn median(v: &mut [Duration]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[v.len() / 2].as_secs_f64() * 1e6
}

fn main() {
    let mut monitor = String::new();
    let mut sizes: Vec<usize> = vec![4, 64, 1024];
    let mut transfers = 400usize;
    let mut block = 16usize;
    let mut modes = vec![Mode::Cached, Mode::Always];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage(&a));
        match a.as_str() {
            "--monitor" => monitor = val(),
            "--sizes" => {
                sizes = val()
                    .split(',')
                    .map(|s| s.parse().unwrap_or_else(|_| usage("--sizes")))
                    .collect()
            }
            "--transfers" => transfers = val().parse().unwrap_or_else(|_| usage("--transfers")),
            "--block" => block = val().parse().unwrap_or_else(|_| usage("--block")),
            "--mode" => {
                modes = match val().as_str() {
                    "both" => vec![Mode::Cached, Mode::Always],
                    "cached" => vec![Mode::Cached],
                    "always" => vec![Mode::Always],
                    "late" => vec![Mode::Late],
                    "all" => vec![Mode::Cached, Mode::Always, Mode::Late],
                    _ => usage("--mode"),
                }
            }
            _ => usage(&a),
        }
    }
    // The simulated monitor (module comment): the cache gets a handle, this program the
    // monitor itself, to fire the unmap's event.
    let sim = (monitor == "simulated").then(|| Arc::new(ChurnMonitor::default()));
    let nic = Arc::new(SoftNic::new(MAX_SLOTS).expect("software NIC (io_uring)"));
    let (mon, calls, ring) = match &sim {
        Some(sim) => {
            let h: Box<dyn Monitor> = Box::new(ChurnHandle(sim.clone()));
            (h, None, " (simulated)")
        }
        None => open_monitor(&monitor),
    };
    let cache = Cache::new(mon, nic.clone(), Config::default());
    println!(
        "churn-row: monitor={}{ring} registrar={} transfers={transfers} per mode and size, blocks of {block}, alternating",
        cache.monitor_kind().name(),
        cache.registrar_name()
    );
    println!(
        "{:>8} {:>10} {:>10} {:>7} {:>10} {:>10} {:>8} {:>8} {:>7} {:>15} {:>15}",
        "size",
        "cached µs",
        "always µs",
        "ratio",
        "reg c µs",
        "reg a µs",
        "churn c",
        "churn a",
        "corrupt",
        "get/release c",
        "reg/dereg a"
    );
    let mut bad = 0;
    for &kib in &sizes {
        let len = (kib << 10).div_ceil(PAGE) * PAGE;
        let buf = mem::map(len, None).expect("mmap");
        fill(buf, len, 0x5A);
        let s0 = cache.stats();
        let mut s = [Samples::default(), Samples::default(), Samples::default()];
        let mut late: Option<regcache::Registration> = None;
        let mut pattern = vec![0u8; len];
        let mut n = 0u64;
        while s
            .iter()
            .zip([Mode::Cached, Mode::Always, Mode::Late])
            .any(|(x, m)| modes.contains(&m) && x.both.len() < transfers)
        {
            for &m in &modes {
                // The baseline runs with nothing watched or registered by the cache (its
                // munmap would otherwise run the monitor's callback for the cached entry).
                // So each cached block starts with a miss under a fresh watch: 1 in `block`.
                cache.flush();
                if let Some(r) = late.take() {
                    nic.deregister(&r, buf, len);
                }
                for _ in 0..block {
                    n += 1;
                    pattern.iter_mut().enumerate().for_each(|(i, b)| {
                        *b = (n as usize).wrapping_mul(31).wrapping_add(i) as u8;
                    });
                    let x = &mut s[m as usize];
                    one(
                        &cache,
                        &nic,
                        sim.as_deref(),
                        m,
                        buf,
                        len,
                        &pattern,
                        x,
                        &mut late,
                    );
                }
            }
        }
        if let Some(r) = late.take() {
            nic.deregister(&r, buf, len);
        }
        mem::unmap(buf, len);
        let [c, a, l] = &mut s;
        let (bc, ba) = (median(&mut c.both), median(&mut a.both));
        bad += c.corrupted + a.corrupted;
        println!(
            "{:>8} {:>10.2} {:>10.2} {:>6.2}x {:>10.2} {:>10.2} {:>8.2} {:>8.2} {:>7} {:>7.2}/{:<7.2} {:>7.2}/{:<7.2}",
            if kib >= 1024 {
                format!("{} MiB", kib >> 10)
            } else {
                format!("{kib} KiB")
            },
            bc,
            ba,
            bc / ba,
            median(&mut c.reg),
            median(&mut a.reg),
            median(&mut c.churn),
            median(&mut a.churn),
            c.corrupted + a.corrupted,
            median(&mut c.get),
            median(&mut c.put),
            median(&mut a.get),
            median(&mut a.put),
        );
        if !l.both.is_empty() {
            let bl = median(&mut l.both);
            println!(
                "{:>8} late deregistration: {:.2} µs (reg {:.2}, churn {:.2}); cached / late {:.2}x, late / always {:.2}x",
                "",
                bl,
                median(&mut l.reg),
                median(&mut l.churn),
                median(&mut c.both) / bl,
                bl / median(&mut a.both)
            );
        }
        let s1 = cache.stats();
        if s1.registrations > s0.registrations {
            // Means over the size (the cache's own clocks, so outliers weigh in): the
            // registrar's register call inside `get`, and a drain (read, retirement,
            // deregistration of the stale MR).
            println!(
                "{:>8} cache means: register {:.2} µs, drain {:.2} µs",
                "",
                (s1.registration_ns - s0.registration_ns) as f64
                    / 1e3
                    / (s1.registrations - s0.registrations) as f64,
                (s1.drain_ns - s0.drain_ns) as f64 / 1e3 / (s1.drains - s0.drains).max(1) as f64
            );
        }
    }
    let st = cache.stats();
    println!(
        "cache: hits {} misses {} invalidated {} false positives {} drains {} registrations {} one-use {}",
        st.hits,
        st.misses,
        st.invalidated,
        st.false_positives,
        st.drains,
        st.registrations,
        st.uncacheable
    );
    if let Some(calls) = &calls {
        println!(
            "ummunotify drains: read() {} SETTLE {} ({:.3} read() per miss)",
            calls.reads(),
            calls.settles(),
            calls.reads() as f64 / st.misses.max(1) as f64
        );
    }
    println!("corrupted transfers: {bad}");
    std::process::exit(i32::from(bad > 0));
}

/// One transfer: churn the buffer, fill it, obtain a registration, DMA through it, check,
/// release.
#[allow(clippy::too_many_arguments)]
#[inline(never)] // a symbol for callgrind's --toggle-collect (docs/benchmarks.md)
fn one(
    cache: &Cache,
    nic: &SoftNic,
    sim: Option<&ChurnMonitor>,
    m: Mode,
    buf: usize,
    len: usize,
    pattern: &[u8],
    x: &mut Samples,
    late: &mut Option<regcache::Registration>,
) {
    let t = Instant::now();
    mem::unmap(buf, len);
    if let Some(sim) = sim {
        // What the module's notifier does inside the munmap.
        sim.churn(Range {
            start: buf,
            end: buf + len,
        });
    }
    let again = mem::map(len, Some(buf));
    let churn = t.elapsed();
    assert_eq!(again, Some(buf), "the buffer came back elsewhere");
    fill(buf, len, 0x5A);
    let ok;
    let t = Instant::now();
    let (get, put) = match m {
        Mode::Cached => {
            let h = cache.get(buf, len, ACCESS).expect("get");
            let r0 = t.elapsed();
            ok = dma(nic, &h.registration(), buf, pattern);
            let t1 = Instant::now();
            drop(h);
            (r0, t1.elapsed())
        }
        Mode::Always => {
            let r = nic.register(buf, len, ACCESS).expect("register");
            let r0 = t.elapsed();
            ok = dma(nic, &r, buf, pattern);
            let t1 = Instant::now();
            nic.deregister(&r, buf, len);
            (r0, t1.elapsed())
        }
        Mode::Late => {
            if let Some(old) = late.take() {
                nic.deregister(&old, buf, len);
            }
            let r = nic.register(buf, len, ACCESS).expect("register");
            let r0 = t.elapsed();
            ok = dma(nic, &r, buf, pattern);
            *late = Some(r);
            (r0, Duration::ZERO)
        }
    };
    let reg = get + put;
    x.get.push(get);
    x.put.push(put);
    x.reg.push(reg);
    x.churn.push(churn);
    x.both.push(reg + churn);
    x.corrupted += u64::from(!ok);
}

fn dma(nic: &SoftNic, reg: &regcache::Registration, addr: usize, pattern: &[u8]) -> bool {
    if nic.dma_write(reg, addr, pattern).is_err() {
        return false;
    }
    // SAFETY: `addr` is the live mapping of this size, at least pattern.len() bytes, not
    // referenced by Rust code.
    unsafe { mem::bytes(addr, pattern.len()) == pattern }
}

fn fill(addr: usize, len: usize, v: u8) {
    // SAFETY: `addr` is a mapping of `len` bytes that this program owns.
    unsafe { std::ptr::write_bytes(addr as *mut u8, v, len) };
}

fn usage(what: &str) -> ! {
    eprintln!(
        "churn-row: bad argument {what}\nusage: churn-row [--monitor auto|ummunotify|uffd|simulated] [--sizes KIB,..] \
         [--transfers N] [--block B] [--mode both|cached|always|late|all]"
    );
    std::process::exit(2)
}
