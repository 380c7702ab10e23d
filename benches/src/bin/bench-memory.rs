//! User memory per cached entry, from the C allocator's own accounting (mallinfo2: bytes in
//! use, `uordblks`, plus bytes in mmap'd chunks, `hblkhd`; Rust's global allocator is malloc
//! here, so both caches are counted the same way): the growth of the heap while a cache is
//! filled with N disjoint regions (no-op registrar, scripted monitor; UCX: its rcache with no-op
//! callbacks), divided by N. Includes the index, the LRU, the entries and the hash table's
//! spare capacity (a power-of-two table is between half and 7/8 full).
//!
//! Usage: bench-memory [N...] (default 100000 1000000).

use regcache_benches::*;

fn heap_bytes() -> i64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as i64
}

fn main() {
    let sizes: Vec<usize> = {
        let a: Vec<usize> = std::env::args()
            .skip(1)
            .map(|s| s.parse().expect("usage: bench-memory [N...]"))
            .collect();
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
        let (cache, mon) = filled_cache(n);
        let ours = (heap_bytes() - before) as f64 / n as f64;
        drop((cache, mon));
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
