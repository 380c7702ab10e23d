//! Reads criterion's results (`<dir>/<group>/<id>/new/estimates.json`, median point estimates)
//! of the `cache` benchmark and prints the markdown tables of docs/benchmarks.md, with ratios.
//!
//! Usage: bench-report [CRITERION_DIR]   (default: $CARGO_TARGET_DIR/criterion or target/criterion)

use std::path::{Path, PathBuf};

/// Median point estimate in nanoseconds, if the benchmark ran.
fn median_ns(dir: &Path, id: &str) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join(id).join("new/estimates.json")).ok()?;
    let at = text.find("\"median\"")?;
    let rest = &text[at..];
    let at = rest.find("\"point_estimate\"")?;
    let rest = rest[at + "\"point_estimate\"".len()..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn fmt_ns(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(ns) if ns >= 100_000.0 => format!("{:.1} µs", ns / 1000.0),
        Some(ns) if ns >= 100.0 => format!("{ns:.0} ns"),
        Some(ns) => format!("{ns:.1} ns"),
    }
}

fn fmt_ratio(num: Option<f64>, den: Option<f64>, suffix: &str) -> String {
    match (num, den) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}{suffix}", a / b),
        _ => "—".into(),
    }
}

fn main() {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| "target".into())
                .join("criterion")
        });
    if !dir.is_dir() {
        eprintln!("bench-report: no criterion results in {}", dir.display());
        std::process::exit(1);
    }
    let sizes = ["1", "1000", "100000"];
    let m = |id: String| median_ns(&dir, &id);

    println!(
        "Hit path, `drop(get(addr))` on a cached region, random order (median time per op):\n"
    );
    println!("| cached regions | regcache | UCX rcache | regcache / UCX time | speed-up vs UCX (goal ≥ 2.00x) |");
    println!("|---:|---:|---:|---:|---:|");
    for n in sizes {
        let ours = m(format!("hit/regcache/{n}"));
        let ucx = m(format!("hit/ucx/{n}"));
        println!(
            "| {n} | {} | {} | {} | {} |",
            fmt_ns(ours),
            fmt_ns(ucx),
            fmt_ratio(ours, ucx, ""),
            fmt_ratio(ucx, ours, "x"),
        );
    }

    println!("\nTwo threads hitting one cache (median time per op per thread, slowest thread):\n");
    println!("| cached regions | regcache 1 thread | regcache 2 threads | per-thread rate 2t/1t (goal ≥ 0.70) | UCX 1 thread | UCX 2 threads | UCX 2t/1t |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        let o1 = m(format!("threads/regcache-1t/{n}"));
        let o2 = m(format!("threads/regcache-2t/{n}"));
        let u1 = m(format!("threads/ucx-1t/{n}"));
        let u2 = m(format!("threads/ucx-2t/{n}"));
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} |",
            fmt_ns(o1),
            fmt_ns(o2),
            fmt_ratio(o1, o2, ""),
            fmt_ns(u1),
            fmt_ns(u2),
            fmt_ratio(u1, u2, ""),
        );
    }

    println!("\nMiss + register (no-op registrar), fresh address each op (median time per op):\n");
    println!("| benchmark | median | / UCX evict (goal ≤ 1.00) |");
    println!("|---|---:|---:|");
    let ucx_miss = m("miss/ucx-evict".into());
    for id in ["regcache-evict", "regcache-invalidate", "ucx-evict"] {
        let v = m(format!("miss/{id}"));
        println!(
            "| miss/{id} | {} | {} |",
            fmt_ns(v),
            fmt_ratio(v, ucx_miss, "")
        );
    }

    println!("\nDrain of N events (regcache: the one get that drains them; UCX: N ucm_vm_munmap + the get):\n");
    println!("| N events | regcache per drain | regcache per event (goal ≤ 100 ns at 100, 10,000) | UCX per event | regcache / UCX |");
    println!("|---:|---:|---:|---:|---:|");
    for n in [1u32, 100, 10_000] {
        let v = m(format!("drain/regcache/{n}"));
        let u = m(format!("drain/ucx/{n}"));
        println!(
            "| {n} | {} | {} | {} | {} |",
            fmt_ns(v),
            fmt_ns(v.map(|ns| ns / f64::from(n))),
            fmt_ns(u.map(|ns| ns / f64::from(n))),
            fmt_ratio(v, u, ""),
        );
    }

    println!(
        "\nScale: hit, random order over 10^5 and 10^6 cached regions (median time per op):\n"
    );
    println!("| cached regions | regcache | UCX rcache | speed-up vs UCX |");
    println!("|---:|---:|---:|---:|");
    for n in ["100000", "1000000"] {
        let ours = m(format!("scale/regcache/{n}"));
        let ucx = m(format!("scale/ucx/{n}"));
        println!(
            "| {n} | {} | {} | {} |",
            fmt_ns(ours),
            fmt_ns(ucx),
            fmt_ratio(ucx, ours, "x")
        );
    }
    let (s5, s6) = (
        m("scale/regcache/100000".into()),
        m("scale/regcache/1000000".into()),
    );
    let (f5, f6) = (
        m("scale/memfloor/100000".into()),
        m("scale/memfloor/1000000".into()),
    );
    println!(
        "\nregcache 10^6 / 10^5: {}; the memory floor (`scale/memfloor`: {} / {}) 10^6 / 10^5: {}",
        fmt_ratio(s6, s5, "x"),
        fmt_ns(f5),
        fmt_ns(f6),
        fmt_ratio(f6, f5, "x")
    );

    println!("\nHit with the userfaultfd monitor, 1,000 real regions (median time per op):\n");
    println!("| benchmark | median | / scripted hit (goal ≤ 2.00) |");
    println!("|---|---:|---:|");
    let scripted = m("uffd/scripted-hit".into());
    for id in ["scripted-hit", "uffd-hit", "probe", "getppid"] {
        let v = m(format!("uffd/{id}"));
        println!(
            "| uffd/{id} | {} | {} |",
            fmt_ns(v),
            fmt_ratio(v, scripted, "")
        );
    }
}
