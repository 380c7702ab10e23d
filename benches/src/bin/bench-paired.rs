//! Issue 13's ratio rows measured in paired rounds: each round times regcache and its baseline
//! back to back (UCX's rcache, or the 1-thread loop for the 2-thread row), alternating which
//! goes first, and the row reads the median of the per-round ratios.
//!
//! Why: criterion measures one benchmark after another, seconds apart, and the hosts here
//! change speed within seconds (docs/benchmarks.md, session 12: the same binary's drain 85 or
//! 150 ns, UCX's evicting miss 229 or 436 ns). A ratio of two medians taken in different
//! phases is then the phase's, not the code's; a ratio within a round of ~10-50 ms pairs
//! measurements the phase hits alike. The absolute row (drain per event) is the median of
//! the rounds, each round timing regcache next to UCX's same drain.
//!
//! Usage: bench-paired [ROUNDS] (default 21). Prints a markdown table; `benches/run.sh` runs it
//! after the criterion report. Without UCX only the 2-thread row is measured.

use regcache_benches::*;
use std::time::{Duration, Instant};

/// The same seed as the criterion groups (cache.rs), so the hit workloads are the same.
const SEED: u64 = 0x005e_ed0f_cafe;

/// Median of a non-empty list.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One paired row: per-round times of `a` and `b` (ns per operation), the median of each and
/// the median of the per-round ratios `a / b`.
struct Paired {
    a: f64,
    b: f64,
    ratio: f64,
}

/// Runs `rounds` rounds of every function in `fs` (each returns ns per op), starting each round
/// with the next one in turn; returns the per-round times of each.
fn rounds_of(rounds: usize, fs: &mut [&mut dyn FnMut() -> f64]) -> Vec<Vec<f64>> {
    let k = fs.len();
    let mut t = vec![Vec::with_capacity(rounds); k];
    for round in 0..rounds {
        for j in 0..k {
            let i = (round + j) % k;
            t[i].push(fs[i]());
        }
    }
    t
}

/// The median of the per-round ratios `x / y`.
fn ratio(x: &[f64], y: &[f64]) -> f64 {
    median(x.iter().zip(y).map(|(a, b)| a / b).collect())
}

/// Runs `rounds` rounds of `a` and `b`, alternating which goes first.
fn paired(rounds: usize, mut a: impl FnMut() -> f64, mut b: impl FnMut() -> f64) -> Paired {
    let t = rounds_of(rounds, &mut [&mut a, &mut b]);
    Paired {
        a: median(t[0].clone()),
        b: median(t[1].clone()),
        ratio: ratio(&t[0], &t[1]),
    }
}

fn per_op(d: Duration, ops: u64) -> f64 {
    d.as_nanos() as f64 / ops as f64
}

fn entries(n: usize) -> String {
    if n == 1 {
        "1 entry".into()
    } else {
        format!("{n} entries")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "holds"
    } else {
        "**short**"
    }
}

/// Hit loop iterations per round: ~2-5 ms of regcache, up to ~40 ms of UCX at 10^5.
const HIT_ITERS: u64 = 1 << 17;

/// The 2-thread row, with its control: two threads each hitting a cache of its own (nothing
/// shared), in the same rounds. Two threads run as slow as the slower of the two CPUs at that
/// moment, one thread as its own; on a host whose CPUs change speed independently the control
/// shows what that alone costs.
fn threads_row(rounds: usize, n: usize) {
    let w = Workload::new(n, SEED);
    let (cache, _mon) = filled_cache(n);
    let (own, _own_mon) = filled_cache(n);
    // Each round continues where the last stopped (as the criterion groups do).
    let pos = std::cell::Cell::new(0usize);
    // The slowest thread's CPU time per op of the 1- and 2-thread runs on the shared cache.
    let cpu = std::cell::RefCell::new([Vec::new(), Vec::new()]);
    let run = |threads: usize, private: bool| {
        let base = pos.get();
        pos.set(base.wrapping_add(HIT_ITERS as usize));
        let (d, c) = timed_threads_cpu(threads, HIT_ITERS, |t, iters| {
            let c = if private && t == 1 { &own } else { &cache };
            regcache_hit_loop(c, &w, base + t * (w.len() / 2) + t * 7919, iters)
        });
        if !private {
            cpu.borrow_mut()[threads - 1].push(c as f64 / HIT_ITERS as f64);
        }
        per_op(d, HIT_ITERS)
    };
    let t = rounds_of(
        rounds,
        &mut [&mut || run(1, false), &mut || run(2, false), &mut || {
            run(2, true)
        }],
    );
    // 1t / 2t time per op per thread: the fraction of the 1-thread rate each thread keeps.
    let (shared, control) = (ratio(&t[0], &t[1]), ratio(&t[0], &t[2]));
    // The same from CPU time: what sharing costs the threads themselves, without the time
    // a thread waited for a CPU.
    let shared_cpu = {
        let c = cpu.borrow();
        ratio(&c[0], &c[1])
    };
    println!(
        "| 2 threads, per-thread rate 2t/1t, {} (control: a cache each) | ≥ 0.70 | {:.1} / {:.1} ns (control {:.1} ns) | **{:.2}** (control {:.2}; CPU time {:.2}) | {} |",
        entries(n),
        median(t[0].clone()),
        median(t[1].clone()),
        median(t[2].clone()),
        shared,
        control,
        shared_cpu,
        if shared >= 0.70 {
            verdict(true)
        } else if shared >= 0.9 * control {
            "**short**, as the control: the host's CPUs, not the cache"
        } else {
            verdict(false)
        }
    );
}

#[cfg(has_ucx)]
fn hit_row(rounds: usize, n: usize) {
    let w = Workload::new(n, SEED);
    let (cache, _mon) = filled_cache(n);
    let rc = ucx::filled(n);
    let (mut pr, mut pu) = (0usize, 0usize);
    let p = paired(
        rounds,
        || {
            let t0 = Instant::now();
            ucx::hit_loop(&rc, &w, pu, HIT_ITERS);
            pu = pu.wrapping_add(HIT_ITERS as usize);
            per_op(t0.elapsed(), HIT_ITERS)
        },
        || {
            let t0 = Instant::now();
            regcache_hit_loop(&cache, &w, pr, HIT_ITERS);
            pr = pr.wrapping_add(HIT_ITERS as usize);
            per_op(t0.elapsed(), HIT_ITERS)
        },
    );
    println!(
        "| hit vs UCX, {} (speed-up) | ≥ 2.00x | {:.1} vs {:.1} ns | **{:.2}x** | {} |",
        entries(n),
        p.b,
        p.a,
        p.ratio,
        verdict(p.ratio >= 2.0)
    );
}

#[cfg(has_ucx)]
fn miss_row(rounds: usize) {
    const ITERS: usize = 20_000;
    let (cache, _mon) = new_cache(MISS_LIMIT);
    let rc = ucx::UcxRcache::new(MISS_LIMIT).expect("ucs_rcache_create failed");
    // Both at the limit first: every timed miss evicts.
    miss_loop(&cache, 0, MISS_LIMIT);
    ucx::miss_loop(&rc, 0, MISS_LIMIT);
    let (mut fr, mut fu) = (MISS_LIMIT, MISS_LIMIT);
    let p = paired(
        rounds,
        || {
            let t0 = Instant::now();
            miss_loop(&cache, fr, ITERS);
            fr += ITERS;
            per_op(t0.elapsed(), ITERS as u64)
        },
        || {
            let t0 = Instant::now();
            ucx::miss_loop(&rc, fu, ITERS);
            fu += ITERS;
            per_op(t0.elapsed(), ITERS as u64)
        },
    );
    println!(
        "| miss + register at the limit, regcache / UCX | ≤ 1.00 | {:.0} vs {:.0} ns | **{:.2}** | {} |",
        p.a,
        p.b,
        p.ratio,
        verdict(p.ratio <= 1.0)
    );
}

/// Drain of `n` Range events, as criterion's `drain` group: regcache times the get that drains
/// them; UCX the `n` ucm_vm_munmap events and its get. ~10,000 events per round.
#[cfg(has_ucx)]
fn drain_row(rounds: usize, n: usize) {
    let drains = (10_000 / n).max(1);
    let (ours, theirs) = (DrainBench::new(n), ucx::DrainBench::new(n));
    let per_event = |d: Duration| per_op(d, (drains * n) as u64);
    let p = paired(
        rounds,
        || {
            let t = per_event(ours.timed(drains as u64));
            assert_eq!(ours.cache.cached_entries(), 1, "every fired entry drained");
            t
        },
        || per_event(theirs.timed(drains as u64)),
    );
    println!(
        "| drain per event, {n} events (UCX beside it) | ≤ 100 ns | **{:.1} ns** (UCX {:.1} ns) | {:.2} | {} |",
        p.a,
        p.b,
        p.ratio,
        verdict(p.a <= 100.0)
    );
}

fn main() {
    let rounds: usize = match std::env::args().nth(1) {
        None => 21,
        Some(s) => match s.parse() {
            Ok(r) if r > 0 => r,
            _ => {
                eprintln!("usage: bench-paired [ROUNDS]");
                std::process::exit(2);
            }
        },
    };
    println!(
        "Paired rounds ({rounds} per row; each round times both sides back to back, alternating \
         which goes first; medians):"
    );
    println!("| row | goal | medians | median of per-round ratios | verdict |");
    println!("|---|---|---|---:|---|");
    #[cfg(has_ucx)]
    for n in SIZES {
        hit_row(rounds, n);
    }
    for n in SIZES {
        threads_row(rounds, n);
    }
    #[cfg(has_ucx)]
    {
        miss_row(rounds);
        drain_row(rounds, 100);
        drain_row(rounds, 10_000);
    }
    if !UCX_AVAILABLE {
        println!("(built without UCX: the rows against UCX were not measured)");
    }
}
