//! The hit loop of the `hit` benchmark as a plain program, for profilers (perf is usually not
//! available in containers; callgrind is):
//!
//! ```sh
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*hit_loop*' \
//!     $CARGO_TARGET_DIR/release/profile-hit regcache 1000 1000000
//! callgrind_annotate --inclusive=yes callgrind.out.<pid>
//! ```
//!
//! `memfloor N ITERS` runs the memory accesses a hashed lookup cannot avoid, alone: for each
//! request of the same workload, a locked increment (the read lock's entry), a control byte
//! and then a 32-byte record of a table with the index's size for N entries, loaded one after
//! the other (the record's slot depends on the byte), and a release store (the lock's exit). It
//! is the floor of the hit at that N on this machine (issue 13: the hit at 10^6 entries).
//!
//! Usage: profile-hit {regcache|regcache-inline|ucx|memfloor}[-2t] N ITERS, or profile-hit
//! {regcache-mid|ucx-mid} N ITERS (hits inside 1 MiB entries, see `mid_requests`) — prints
//! ns/op (meaningless under valgrind); with `-2t`, two threads run the loop at once from
//! different points of the sequence and the slower one's ns/op is printed. Single-threaded
//! runs also print the thread's CPU time per op (`thread_cpu_ns`), which a loaded machine
//! disturbs far less.

use regcache_benches::*;
use std::time::Instant;

/// The same loop written in this crate, where LLVM inlines `Cache::get` into it (the shared
/// `regcache_hit_loop` calls it out of line): shows how much the call boundary costs.
#[inline(never)]
fn hit_loop_inlined(cache: &regcache::Cache, w: &Workload, iters: usize) {
    for pos in 0..iters {
        let h = cache.get(w.addr(pos), REQ_LEN, ACCESS).unwrap();
        std::hint::black_box(h.lkey());
    }
}

/// `mid`: hits inside long entries, not on their first page (a pipelined send of a large
/// buffer, chunk by chunk): N entries of 1 MiB, 2 MiB apart, each request 64 KiB at a random
/// 64 KiB-aligned offset past the first chunk, in a random order of entries.
const MID_BASE: usize = 1 << 45;
const MID_LEN: usize = 1 << 20;
const MID_REQ: usize = 64 << 10;

fn mid_requests(n: usize) -> Vec<usize> {
    let mut x = 0x005e_ed0f_cafe_u64;
    (0..1 << 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let entry = (x % n as u64) as usize;
            let chunk = 1 + ((x >> 32) % (MID_LEN / MID_REQ - 1) as u64) as usize;
            MID_BASE + entry * 2 * MID_LEN + chunk * MID_REQ
        })
        .collect()
}

#[inline(never)]
fn mid_loop(cache: &regcache::Cache, req: &[usize], iters: usize) {
    for pos in 0..iters {
        let h = cache
            .get(req[pos & (req.len() - 1)], MID_REQ, ACCESS)
            .unwrap();
        std::hint::black_box(h.lkey());
    }
}

#[cfg(has_ucx)]
#[inline(never)]
fn ucx_mid_loop(rc: &ucx::UcxRcache, req: &[usize], iters: usize) {
    for pos in 0..iters {
        let r = rc.get(req[pos & (req.len() - 1)], MID_REQ).unwrap();
        std::hint::black_box(r.key());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: profile-hit {regcache|regcache-inline|ucx}[-2t] N ITERS";
    let which = args.get(1).expect(usage).as_str();
    if let Some(base) = which.strip_suffix("-2t") {
        let n: usize = args.get(2).and_then(|s| s.parse().ok()).expect(usage);
        let iters: u64 = args.get(3).and_then(|s| s.parse().ok()).expect(usage);
        two_threads(base, n, iters);
        return;
    }
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).expect(usage);
    let iters: usize = args.get(3).and_then(|s| s.parse().ok()).expect(usage);
    let w = Workload::new(n, 0x005e_ed0f_cafe);
    let t0;
    let c0;
    match which {
        "regcache" => {
            let (cache, _mon) = filled_cache(n);
            (t0, c0) = (Instant::now(), thread_cpu_ns());
            regcache_hit_loop(&cache, &w, 0, iters as u64);
        }
        "regcache-inline" => {
            let (cache, _mon) = filled_cache(n);
            (t0, c0) = (Instant::now(), thread_cpu_ns());
            hit_loop_inlined(&cache, &w, iters);
        }
        #[cfg(has_ucx)]
        "ucx" => {
            let rc = ucx::filled(n);
            (t0, c0) = (Instant::now(), thread_cpu_ns());
            ucx::hit_loop(&rc, &w, 0, iters as u64);
        }
        "regcache-mid" => {
            let (cache, _mon) = new_cache(2 * n);
            for i in 0..n {
                drop(
                    cache
                        .get(MID_BASE + i * 2 * MID_LEN, MID_LEN, ACCESS)
                        .unwrap(),
                );
            }
            let req = mid_requests(n);
            mid_loop(&cache, &req, req.len());
            let misses = cache.stats().misses;
            (t0, c0) = (Instant::now(), thread_cpu_ns());
            mid_loop(&cache, &req, iters);
            assert_eq!(cache.stats().misses, misses, "mid-entry requests must hit");
        }
        #[cfg(has_ucx)]
        "ucx-mid" => {
            let rc = ucx::UcxRcache::new(usize::MAX).expect("ucs_rcache_create failed");
            for i in 0..n {
                drop(rc.get(MID_BASE + i * 2 * MID_LEN, MID_LEN).unwrap());
            }
            let req = mid_requests(n);
            ucx_mid_loop(&rc, &req, req.len());
            (t0, c0) = (Instant::now(), thread_cpu_ns());
            ucx_mid_loop(&rc, &req, iters);
        }
        "memfloor" => {
            let t = FloorTable::new(n);
            (t0, c0) = (Instant::now(), thread_cpu_ns());
            std::hint::black_box(floor_loop(&t, &w, 0, iters));
        }
        _ => panic!("{usage} (ucx needs a build with UCX headers)"),
    }
    let ns = t0.elapsed().as_nanos() as f64 / iters as f64;
    let cpu = (thread_cpu_ns() - c0) as f64 / iters as f64;
    println!("{which} N={n}: {ns:.1} ns/op {cpu:.1} ns/op-cpu");
}

/// Two threads hitting one cache, started together; prints the slower thread's ns/op.
fn two_threads(which: &str, n: usize, iters: u64) {
    let w = Workload::new(n, 0x005e_ed0f_cafe);
    let start = |t: usize| t * (w.len() / 2) + t * 7919;
    let barrier = std::sync::Barrier::new(2);
    let run = |body: &(dyn Fn(usize) + Sync)| {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|t| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let t0 = Instant::now();
                        body(t);
                        t0.elapsed()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
        })
    };
    let elapsed = match which {
        "regcache" => {
            let (cache, _mon) = filled_cache(n);
            run(&|t| regcache_hit_loop(&cache, &w, start(t), iters))
        }
        #[cfg(has_ucx)]
        "ucx" => {
            let rc = ucx::filled(n);
            run(&|t| ucx::hit_loop(&rc, &w, start(t), iters))
        }
        _ => panic!("two threads: regcache or ucx"),
    };
    let ns = elapsed.as_nanos() as f64 / iters as f64;
    println!("{which}-2t N={n}: {ns:.1} ns/op per thread");
}
