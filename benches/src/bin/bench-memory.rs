//! User memory per cached entry, from the C allocator's own accounting (mallinfo2: bytes in
//! use, `uordblks`, plus bytes in mmap'd chunks, `hblkhd`; Rust's global allocator is malloc
//! here, so both caches are counted the same way): the growth of the heap while a cache is
//! filled with N disjoint regions (no-op registrar, scripted monitor; UCX: its rcache with no-op
//! callbacks), divided by N. Includes the index, the LRU, the entries and the hash table's
//! spare capacity (a power-of-two table is between half and 7/8 full).
//!
//! Usage: bench-memory [--pages P] [N...] (default 100000 1000000; P = 1). With `--pages P` the
//! regcache entries are P pages long (P + 1 pages apart; UCX is not run): entries longer than 4
//! pages are also filed under their granules (index.rs, `Granules`).

use regcache_benches::*;

fn heap_bytes() -> i64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as i64
}

/// A cache holding `n` entries of `pages` pages each.
fn filled_long(n: usize, pages: usize) -> (regcache::Cache, std::sync::Arc<ScriptedMonitor>) {
    let (cache, mon) = new_cache(n.max(16) * 2);
    for i in 0..n {
        let addr = BASE + i * (pages + 1) * 4096;
        let h = cache
            .get(addr, pages * 4096, ACCESS)
            .expect("noop registration cannot fail");
        assert!(h.is_cached());
    }
    assert_eq!(cache.cached_entries(), n);
    (cache, mon)
}

fn main() {
    let usage = "usage: bench-memory [--pages P] [N...]";
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let pages = match args.first().map(String::as_str) {
        Some("--pages") => {
            let p = args.get(1).and_then(|s| s.parse().ok()).expect(usage);
            args.drain(..2);
            p
        }
        _ => 1,
    };
    let sizes: Vec<usize> = {
        let a: Vec<usize> = args.iter().map(|s| s.parse().expect(usage)).collect();
        if a.is_empty() {
            vec![100_000, 1_000_000]
        } else {
            a
        }
    };
    println!("| cached entries | regcache B/entry | UCX rcache B/entry |");
    println!("|---:|---:|---:|");
    for n in sizes {
        let before = heap_bytes();
        let (cache, mon) = if pages == 1 {
            filled_cache(n)
        } else {
            filled_long(n, pages)
        };
        let ours = (heap_bytes() - before) as f64 / n as f64;
        drop((cache, mon));
        if pages != 1 {
            println!("| {n} ({pages} pages each) | {ours:.0} | — |");
            continue;
        }
        #[cfg(has_ucx)]
        let theirs = {
            let before = heap_bytes();
            let rc = ucx::filled(n);
            let b = (heap_bytes() - before) as f64 / n as f64;
            drop(rc);
            format!("{b:.0}")
        };
        #[cfg(not(has_ucx))]
        let theirs = "(no UCX)".to_string();
        println!("| {n} | {ours:.0} | {theirs} |");
    }
}
