//! The miss and drain loops of the `miss` and `drain` benchmarks as a plain program, for
//! callgrind (instruction counts are immune to the noise of a shared machine):
//!
//! ```sh
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*miss_loop*' \
//!     $CARGO_TARGET_DIR/release/profile-miss evict 100000
//! callgrind_annotate --inclusive=yes callgrind.out.<pid>
//! ```
//!
//! Usage: profile-miss {evict|ucx-evict|churn|long|ucx-long} ITERS | profile-miss drain N ROUNDS
//! — prints ns per miss (per event for `drain`; meaningless under valgrind), by the wall clock
//! and by the thread's CPU time (CLOCK_THREAD_CPUTIME_ID: leaves out the time the thread waited
//! for a CPU, which on a shared 2-CPU machine is most of the wall clock's noise).

use regcache::Range;
use regcache_benches::*;
use std::time::{Duration, Instant};

/// The entry limit of the `miss` benchmark: every miss at steady state also evicts.
const LIMIT: usize = MISS_LIMIT;
const SLOTS: usize = MISS_SLOTS;

fn report(wall: Duration, cpu_ns: u128, units: usize, unit: &str) {
    println!(
        "{:.1} ns/{unit} {:.1} ns/{unit}-cpu",
        wall.as_nanos() as f64 / units as f64,
        cpu_ns as f64 / units as f64
    );
}

/// The churned buffer of the churn row (benches/src/bin/churn-row.rs) without the kernel: per
/// iteration the watch on the one cached buffer fires (its unmap), then a get of the same range
/// drains the event, retires the entry, takes its watch over and registers again, and the
/// handle is released. What a churned transfer costs the cache itself.
#[inline(never)]
fn churn_loop(cache: &regcache::Cache, mon: &ChurnMonitor, iters: usize) {
    let range = Range {
        start: region_addr(0),
        end: region_addr(0) + 4096,
    };
    for _ in 0..iters {
        assert!(mon.churn(range), "the buffer is watched");
        let h = cache.get(range.start, 4096, ACCESS).unwrap();
        std::hint::black_box(h.lkey());
    }
}

/// Where the `long` mode's 1 MiB misses go: past the regions of the other modes, 2 MiB apart.
const LONG_BASE: usize = 1 << 45;
const LONG_LEN: usize = 1 << 20;

/// Misses of a new 1 MiB range each (evicting at the limit) while a few unrelated ranges are
/// remembered as recently invalidated: the re-registration query of a long miss that matches
/// none of them (cache/recent.rs), on top of the miss itself.
#[inline(never)]
fn long_loop(cache: &regcache::Cache, start: usize, iters: usize) {
    for i in start..start + iters {
        let addr = LONG_BASE + (i % SLOTS) * 2 * LONG_LEN;
        let h = cache.get(addr, LONG_LEN, ACCESS).unwrap();
        std::hint::black_box(h.lkey());
    }
}

/// `long_loop` with UCX's rcache (no invalidations remembered: UCX keeps no such statistic).
#[cfg(has_ucx)]
#[inline(never)]
fn ucx_long_loop(rc: &ucx::UcxRcache, start: usize, iters: usize) {
    for i in start..start + iters {
        let addr = LONG_BASE + (i % SLOTS) * 2 * LONG_LEN;
        let r = rc.get(addr, LONG_LEN).unwrap();
        std::hint::black_box(r.key());
    }
}

/// One drain of `n` events: the timed get that applies them.
/// Fills a cache to the limit with `run(0, LIMIT)` (untimed, and uncollected under callgrind's
/// toggle, which names the loop `run` calls), so that every timed miss of `run(LIMIT, iters)`
/// evicts, and reports the timed ones.
fn fill_then_time(iters: usize, what: &str, mut run: impl FnMut(usize, usize)) {
    run(0, LIMIT);
    let (t0, c0) = (Instant::now(), thread_cpu_ns());
    run(LIMIT, iters);
    report(t0.elapsed(), thread_cpu_ns() - c0, iters, what);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: profile-miss {evict|ucx-evict|churn|long|ucx-long} ITERS \
                 | profile-miss drain N ROUNDS";
    let which = args.get(1).expect(usage).as_str();
    let num = |i: usize| -> usize { args.get(i).and_then(|s| s.parse().ok()).expect(usage) };
    match which {
        "evict" => {
            let (cache, _mon) = new_cache(LIMIT);
            fill_then_time(num(2), "miss", |from, n| miss_loop(&cache, from, n));
        }
        #[cfg(has_ucx)]
        "ucx-evict" => {
            let rc = ucx::UcxRcache::new(LIMIT).expect("ucs_rcache_create failed");
            fill_then_time(num(2), "miss", |from, n| ucx::miss_loop(&rc, from, n));
        }
        "churn" => {
            let iters = num(2);
            let mon = std::sync::Arc::new(ChurnMonitor::default());
            let cache = regcache::Cache::new(
                Box::new(ChurnHandle(mon.clone())),
                std::sync::Arc::new(regcache::registrar::noop::NoopRegistrar::new()),
                regcache::Config::default(),
            );
            drop(cache.get(region_addr(0), 4096, ACCESS).unwrap());
            // Warm up (uncollected under callgrind's toggle: a separate call).
            churn_loop(&cache, &mon, 1000);
            let (t0, c0) = (Instant::now(), thread_cpu_ns());
            churn_loop(&cache, &mon, iters);
            report(t0.elapsed(), thread_cpu_ns() - c0, iters, "churned miss");
            let s = cache.stats();
            assert!(
                s.kept_watches >= iters as u64,
                "the churned misses took their watch over"
            );
        }
        "long" => {
            let (cache, _mon) = new_cache(LIMIT);
            // Eight small ranges invalidated far from the misses: remembered, never overlapped.
            for k in 0..8 {
                drop(cache.get(region_addr(k), 4096, ACCESS).unwrap());
                assert_eq!(cache.invalidate(region_addr(k), 4096).unwrap(), 1);
            }
            fill_then_time(num(2), "1 MiB miss", |from, n| long_loop(&cache, from, n));
        }
        #[cfg(has_ucx)]
        "ucx-long" => {
            let rc = ucx::UcxRcache::new(LIMIT).expect("ucs_rcache_create failed");
            fill_then_time(num(2), "1 MiB miss", |from, n| ucx_long_loop(&rc, from, n));
        }
        "drain" => {
            let (n, rounds) = (num(2), num(3));
            let bench = DrainBench::new(n);
            let mut total = Duration::ZERO;
            let mut cpu = 0u128;
            for _ in 0..rounds {
                bench.prepare();
                let (t0, c0) = (Instant::now(), thread_cpu_ns());
                bench.drain_once();
                total += t0.elapsed();
                cpu += thread_cpu_ns() - c0;
            }
            report(total, cpu, rounds * n, "event");
        }
        _ => panic!("{usage}"),
    }
}
