//! `Cache::get` + release of one real, mapped 4 KiB buffer (a hit after the first), with the
//! userfaultfd monitor or the scripted one (no probe): the baseline of benches/shim-bench.sh,
//! which times the same loop through `ibv_reg_mr` under the LD_PRELOAD shim. Prints ns per
//! get+release, the median of ROUNDS rounds.
//!
//! Usage: profile-real-hit {uffd|scripted|probe|getppid} [ITERS [ROUNDS]] — `probe` times the
//! userfaultfd settle probe alone (one UFFDIO_WRITEPROTECT ioctl), `getppid` a null system
//! call: the loops to run under `perf record` to see where the probe's time goes.

use regcache_benches::*;
use std::time::Instant;

#[inline(never)]
fn loop_once(cache: &regcache::Cache, addr: usize, iters: u64) {
    for _ in 0..iters {
        let h = cache.get(addr, 4096, ACCESS).expect("noop registration");
        std::hint::black_box(h.lkey());
    }
}

#[inline(never)]
fn probe_loop(mon: &regcache::monitor::uffd::UffdMonitor, iters: u64) {
    for _ in 0..iters {
        std::hint::black_box(mon.event_in_flight().expect("probe"));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: profile-real-hit {uffd|scripted|probe|getppid} [ITERS [ROUNDS]]";
    let which = args.get(1).expect(usage).as_str();
    let iters: u64 = args.get(2).map_or(1_000_000, |s| s.parse().expect(usage));
    let rounds: usize = args.get(3).map_or(11, |s| s.parse().expect(usage));
    if which == "probe" || which == "getppid" {
        let mon = regcache::monitor::uffd::UffdMonitor::new().expect("userfaultfd unavailable");
        let mut per: Vec<f64> = (0..rounds)
            .map(|_| {
                let t0 = Instant::now();
                if which == "probe" {
                    probe_loop(&mon, iters);
                } else {
                    (0..iters).for_each(|_| {
                        std::hint::black_box(null_syscall());
                    });
                }
                t0.elapsed().as_nanos() as f64 / iters as f64
            })
            .collect();
        per.sort_by(f64::total_cmp);
        println!("{:.1}", per[rounds / 2]);
        return;
    }
    let mem = MappedRegions::new(1).expect("mmap");
    let (cache, _mon);
    match which {
        "uffd" => cache = uffd_cache(16).expect("userfaultfd unavailable"),
        "scripted" => (cache, _mon) = new_cache(16),
        _ => panic!("{usage}"),
    }
    let addr = mem.addr(0);
    drop(cache.get(addr, 4096, ACCESS).expect("noop registration"));
    let mut per: Vec<f64> = (0..rounds)
        .map(|_| {
            let t0 = Instant::now();
            loop_once(&cache, addr, iters);
            t0.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    per.sort_by(f64::total_cmp);
    assert_eq!(cache.stats().misses, 1, "only the first get misses");
    println!("{:.1}", per[rounds / 2]);
}
