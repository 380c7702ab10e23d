//! The hit loop of the `hit` benchmark as a plain program, for profilers (perf is usually not
//! available in containers; callgrind is):
//!
//! ```sh
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*hit_loop*' \
//!     $CARGO_TARGET_DIR/release/profile-hit regcache 1000 1000000
//! callgrind_annotate --inclusive=yes callgrind.out.<pid>
//! ```
//!
//! Usage: profile-hit {regcache|regcache-inline|ucx} N ITERS — prints ns/op (meaningless under valgrind).

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: profile-hit {regcache|regcache-inline|ucx} N ITERS";
    let which = args.get(1).expect(usage).as_str();
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).expect(usage);
    let iters: usize = args.get(3).and_then(|s| s.parse().ok()).expect(usage);
    let w = Workload::new(n, 0x005e_ed0f_cafe);
    let t0;
    match which {
        "regcache" => {
            let (cache, _mon) = filled_cache(n);
            t0 = Instant::now();
            regcache_hit_loop(&cache, &w, 0, iters as u64);
        }
        "regcache-inline" => {
            let (cache, _mon) = filled_cache(n);
            t0 = Instant::now();
            hit_loop_inlined(&cache, &w, iters);
        }
        #[cfg(has_ucx)]
        "ucx" => {
            let rc = ucx::filled(n);
            t0 = Instant::now();
            ucx::hit_loop(&rc, &w, 0, iters as u64);
        }
        _ => panic!("{usage} (ucx needs a build with UCX headers)"),
    }
    let ns = t0.elapsed().as_nanos() as f64 / iters as f64;
    println!("{which} N={n}: {ns:.1} ns/op");
}
