//! Criterion benchmarks of the regcache hit, miss and drain paths, side by side with UCX's
//! rcache (when built with UCX headers; see build.rs).
//!
//! Groups (ids are what `bench-report` reads back):
//! - `hit/{regcache,ucx}/N`: `drop(get(addr))` on a cached region, random order over N regions;
//! - `miss/{regcache-evict,regcache-invalidate,ucx-evict}`: get of a fresh address each time;
//! - `drain/regcache/N`: N Range invalidations fired, then the one get that drains them;
//! - `drain/ucx/N`: UCX's invalidation of N regions (N ucm_vm_munmap events, then a get);
//! - `scale/{regcache,ucx}/N`: the hit loop over N = 10^5 and 10^6 regions; `scale/memfloor/N`
//!   the memory accesses such a hit cannot avoid at that N, alone (`FloorTable`);
//! - `uffd/{scripted-hit,uffd-hit,probe,getppid}`: the hit over 1,000 real regions with a
//!   monitor that needs no probe and with userfaultfd; the settle probe alone; a null syscall;
//! - `threads/{regcache,ucx}-{1t,2t}/N`: the hit loop run by 1 or 2 threads at once; the time
//!   reported is per operation *per thread* (the slowest thread), so 1t/2t is the fraction of the
//!   single-thread rate each thread keeps.
//!
//! Quick mode for CI: `-- --warm-up-time 0.3 --measurement-time 1 --sample-size 20`
//! (see run.sh); `REGCACHE_BENCH_QUICK=1` also shortens the drain group, whose untimed setup
//! dominates its wall-clock time.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use regcache_benches::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

const SEED: u64 = 0x005e_ed0f_cafe;

fn quick() -> bool {
    std::env::var_os("REGCACHE_BENCH_QUICK").is_some_and(|v| v == "1")
}

fn ucx_skipped_note() {
    if !UCX_AVAILABLE {
        eprintln!(
            "NOTE: UCX rcache benchmarks skipped (built without ucs/memory/rcache.h; \
             apt-get install libucx-dev and rebuild)"
        );
    }
}

/// 1. Hit path: counter check + lookup + reference + release.
fn hit(c: &mut Criterion) {
    ucx_skipped_note();
    let mut g = c.benchmark_group("hit");
    for &n in &SIZES {
        let w = Workload::new(n, SEED);
        {
            let (cache, _mon) = filled_cache(n);
            let before = cache.stats();
            let mut pos = 0usize;
            g.bench_with_input(BenchmarkId::new("regcache", n), &n, |b, _| {
                b.iter_custom(|iters| {
                    let t0 = Instant::now();
                    regcache_hit_loop(&cache, &w, pos, iters);
                    pos = pos.wrapping_add(iters as usize);
                    t0.elapsed()
                })
            });
            let after = cache.stats();
            assert_eq!(
                after.misses, before.misses,
                "the hit benchmark must only hit"
            );
        }
        #[cfg(has_ucx)]
        {
            let rc = ucx::filled(n);
            let mut pos = 0usize;
            g.bench_with_input(BenchmarkId::new("ucx", n), &n, |b, _| {
                b.iter_custom(|iters| {
                    let t0 = Instant::now();
                    ucx::hit_loop(&rc, &w, pos, iters);
                    pos = pos.wrapping_add(iters as usize);
                    t0.elapsed()
                })
            });
        }
    }
    g.finish();
}

/// 2. Miss + register (no-op registrar): a fresh address each iteration.
fn miss(c: &mut Criterion) {
    const LIMIT: usize = MISS_LIMIT;
    const SLOTS: usize = MISS_SLOTS;
    let mut g = c.benchmark_group("miss");

    // Steady state at the entry limit: every miss also evicts the LRU entry.
    {
        let (cache, _mon) = new_cache(LIMIT);
        let mut i = 0usize;
        g.bench_function("regcache-evict", |b| {
            b.iter(|| {
                let h = cache
                    .get(region_addr(i % SLOTS) + REQ_OFFSET, REQ_LEN, ACCESS)
                    .unwrap();
                i += 1;
                black_box(h.lkey());
            })
        });
        assert!(cache.cached_entries() <= LIMIT);
    }
    // Miss, then invalidate the entry again: the cache stays (nearly) empty.
    {
        let (cache, _mon) = new_cache(LIMIT);
        let mut i = 0usize;
        g.bench_function("regcache-invalidate", |b| {
            b.iter(|| {
                let a = region_addr(i % SLOTS);
                i += 1;
                let h = cache.get(a + REQ_OFFSET, REQ_LEN, ACCESS).unwrap();
                black_box(h.lkey());
                drop(h);
                cache.invalidate(a, 4096).unwrap();
            })
        });
        assert!(cache.cached_entries() <= 1);
    }
    #[cfg(has_ucx)]
    {
        let rc = ucx::UcxRcache::new(LIMIT).expect("ucs_rcache_create failed");
        let mut i = 0usize;
        g.bench_function("ucx-evict", |b| {
            b.iter(|| {
                let r = rc
                    .get(region_addr(i % SLOTS) + REQ_OFFSET, REQ_LEN)
                    .unwrap();
                i += 1;
                black_box(r.key());
            })
        });
    }
    g.finish();
}

/// Benchmark 3, drain: N Range events on N cached entries, drained by one get of a sentinel
/// entry that the events do not touch (so the get itself is a hit after the drain).
fn drain(c: &mut Criterion) {
    let mut g = c.benchmark_group("drain");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    // Only the drain is timed; re-registering the N entries between drains is not, and
    // dominates wall time, so the timed budget is kept small.
    let (warm, meas) = if quick() {
        (Duration::from_millis(20), Duration::from_millis(100))
    } else {
        (Duration::from_millis(100), Duration::from_millis(500))
    };
    g.warm_up_time(warm).measurement_time(meas);
    for &n in &[1usize, 100, 10_000] {
        let bench = DrainBench::new(n);
        // Untimed in each iteration: (re)cache the N entries, then queue one event for each.
        g.bench_with_input(BenchmarkId::new("regcache", n), &n, |b, _| {
            b.iter_custom(|iters| bench.timed(iters))
        });
        // (Nothing ran when a filter excluded this benchmark.)
        drain_check(&bench.cache, n);
        #[cfg(has_ucx)]
        {
            // UCX's invalidation of the same N regions (lib.rs, `ucx::DrainBench`). Timed: all
            // of it; for regcache only the drain is timed (the kernel's queueing of the
            // events is not counted).
            let theirs = ucx::DrainBench::new(n);
            g.bench_with_input(BenchmarkId::new("ucx", n), &n, |b, _| {
                b.iter_custom(|iters| theirs.timed(iters))
            });
        }
    }
    g.finish();
}

fn drain_check(cache: &regcache::Cache, n: usize) {
    {
        let s = cache.stats();
        if s.drains > 0 {
            assert_eq!(cache.cached_entries(), 1, "every fired entry was drained");
            assert_eq!(
                s.invalidated % n as u64,
                0,
                "each drain removed all N entries"
            );
        }
    }
}

/// 4. One vs two threads hitting the same cache (each thread its own random order).
fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("threads");
    for &n in &SIZES {
        let w = Workload::new(n, SEED);
        // Each sample continues where the last one stopped (as in `hit`): restarting every
        // sample at the same point would replay one short prefix of the sequence, whose
        // entries then stay in the CPU caches (at 100,000 entries that made 2 threads look
        // twice as fast as 1).
        let pos = std::cell::Cell::new(0usize);
        let start = |base: usize, t: usize| base + t * (w.len() / 2) + t * 7919;
        {
            let (cache, _mon) = filled_cache(n);
            for threads in [1usize, 2] {
                let id = BenchmarkId::new(format!("regcache-{threads}t"), n);
                g.bench_with_input(id, &n, |b, _| {
                    b.iter_custom(|iters| {
                        let base = pos.get();
                        let d = timed_threads(threads, iters, |t, iters| {
                            regcache_hit_loop(&cache, &w, start(base, t), iters)
                        });
                        pos.set(pos.get().wrapping_add(iters as usize));
                        d
                    })
                });
            }
            assert_eq!(
                cache.stats().misses,
                n as u64,
                "the thread benchmark must only hit"
            );
        }
        #[cfg(has_ucx)]
        {
            let rc = ucx::filled(n);
            for threads in [1usize, 2] {
                let id = BenchmarkId::new(format!("ucx-{threads}t"), n);
                g.bench_with_input(id, &n, |b, _| {
                    b.iter_custom(|iters| {
                        let base = pos.get();
                        let d = timed_threads(threads, iters, |t, iters| {
                            ucx::hit_loop(&rc, &w, start(base, t), iters)
                        });
                        pos.set(pos.get().wrapping_add(iters as usize));
                        d
                    })
                });
            }
        }
    }
    g.finish();
}

/// Benchmark 5, scale: the hit loop over 10^5 and 10^6 cached regions (random order), both caches.
fn scale(c: &mut Criterion) {
    let mut g = c.benchmark_group("scale");
    for &n in &[100_000usize, 1_000_000] {
        let w = Workload::new(n, SEED);
        {
            let (cache, _mon) = filled_cache(n);
            let mut pos = 0usize;
            g.bench_with_input(BenchmarkId::new("regcache", n), &n, |b, _| {
                b.iter_custom(|iters| {
                    let t0 = Instant::now();
                    regcache_hit_loop(&cache, &w, pos, iters);
                    pos = pos.wrapping_add(iters as usize);
                    t0.elapsed()
                })
            });
            assert_eq!(
                cache.stats().misses,
                n as u64,
                "the scale benchmark must only hit"
            );
        }
        #[cfg(has_ucx)]
        {
            let rc = ucx::filled(n);
            let mut pos = 0usize;
            g.bench_with_input(BenchmarkId::new("ucx", n), &n, |b, _| {
                b.iter_custom(|iters| {
                    let t0 = Instant::now();
                    ucx::hit_loop(&rc, &w, pos, iters);
                    pos = pos.wrapping_add(iters as usize);
                    t0.elapsed()
                })
            });
        }
        {
            let t = FloorTable::new(n);
            let mut pos = 0usize;
            g.bench_with_input(BenchmarkId::new("memfloor", n), &n, |b, _| {
                b.iter_custom(|iters| {
                    let t0 = Instant::now();
                    black_box(floor_loop(&t, &w, pos, iters as usize));
                    pos = pos.wrapping_add(iters as usize);
                    t0.elapsed()
                })
            });
        }
    }
    g.finish();
}

/// Benchmark 6: the hit with the userfaultfd monitor (its settle probe, one ioctl per hit) vs
/// the same hit with a monitor that needs no probe (the scripted one: ummunotify's hit is that
/// counter load), over the same real, mapped buffers; and one bare system call (getppid), the
/// floor under any per-hit kernel probe. Skipped (with a note) where userfaultfd is unavailable.
fn uffd(c: &mut Criterion) {
    const N: usize = 1000;
    let Some(mem) = MappedRegions::new(N) else {
        eprintln!("NOTE: uffd benchmarks skipped (mmap failed)");
        return;
    };
    let w = mem.workload(SEED);
    let mut g = c.benchmark_group("uffd");
    {
        let (cache, _mon) = new_cache(2 * N);
        mem.fill(&cache);
        let mut pos = 0usize;
        g.bench_function("scripted-hit", |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                regcache_hit_loop(&cache, &w, pos, iters);
                pos = pos.wrapping_add(iters as usize);
                t0.elapsed()
            })
        });
    }
    match uffd_cache(2 * N) {
        Some(cache) => {
            mem.fill(&cache);
            let mut pos = 0usize;
            g.bench_function("uffd-hit", |b| {
                b.iter_custom(|iters| {
                    let t0 = Instant::now();
                    regcache_hit_loop(&cache, &w, pos, iters);
                    pos = pos.wrapping_add(iters as usize);
                    t0.elapsed()
                })
            });
            assert_eq!(
                cache.stats().misses,
                N as u64,
                "the uffd benchmark must only hit"
            );
        }
        None => eprintln!("NOTE: uffd-hit skipped (userfaultfd unavailable)"),
    }
    // The settle probe alone (UFFDIO_WRITEPROTECT of an empty range on the monitor's fd).
    match regcache::monitor::uffd::UffdMonitor::new() {
        Ok(mon) => {
            g.bench_function("probe", |b| {
                b.iter(|| black_box(mon.event_in_flight().unwrap()))
            });
        }
        Err(_) => eprintln!("NOTE: uffd probe skipped (userfaultfd unavailable)"),
    }
    g.bench_function("getppid", |b| b.iter(null_syscall));
    g.finish();
}

criterion_group!(benches, hit, miss, drain, threads, scale, uffd);
criterion_main!(benches);
