//! --bench (server side): registration cost per size, and transfer-loop throughput with the
//! cache vs registering on every transfer vs registering once up front, for reused and churned
//! buffers. Prints Markdown tables.

use crate::opts::Opts;
use crate::wire::*;
use crate::Side;
use regcache::{Access, Registrar, Registration};
use regcache_oracle::mem;
use std::time::{Duration, Instant};

/// What the benchmarks register with (also check_cost.rs).
pub const ACCESS: Access = Access::LOCAL_WRITE
    .union(Access::REMOTE_WRITE)
    .union(Access::REMOTE_READ);

pub fn run(s: &mut Side, o: &Opts) -> Result<bool, String> {
    println!(
        "### ibv_reg_mr + ibv_dereg_mr on {} (µs per call, median of N)\n",
        s.reg.device_name()
    );
    println!("| size | N | reg µs | dereg µs | reg+dereg µs | µs per 4 KiB page |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut size = 4usize << 10;
    while size <= o.max_size.max(64 << 20) {
        let n = ((256usize << 20) / size).clamp(5, 200);
        let a = mem::map(size, None).ok_or("mmap")?;
        // SAFETY: our fresh mapping; touch every page so registration cost excludes faults.
        unsafe { std::ptr::write_bytes(a as *mut u8, 1, size) };
        let (mut r, mut d) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let t0 = Instant::now();
            let reg = s.reg.register(a, size, ACCESS).map_err(|e| e.to_string())?;
            let t1 = Instant::now();
            s.reg.deregister(&reg, a, size);
            r.push(t1 - t0);
            d.push(t1.elapsed());
        }
        mem::unmap(a, size);
        let (rm, dm) = (median(&mut r), median(&mut d));
        println!(
            "| {} | {n} | {:.1} | {:.1} | {:.1} | {:.2} |",
            human(size),
            us(rm),
            us(dm),
            us(rm + dm),
            us(rm + dm) / (size / mem::PAGE) as f64
        );
        size *= 4;
    }
    println!("\n### Transfer loop: RDMA WRITE from the peer into 8 local buffers, one at a time\n");
    println!("| size | buffers | registration | transfers | MB/s | µs/transfer | vs limit |");
    println!("|---:|---|---|---:|---:|---:|---:|");
    for (size, n) in [(64usize << 10, 400u64), (1 << 20, 60)] {
        let mut limit = 0.0;
        for churn in [false, true] {
            for mode in ["up front (limit)", "cache", "every transfer"] {
                if churn && mode.starts_with("up front") {
                    continue;
                }
                let el = loop_once(s, size, n, churn, mode)?;
                let mbs = (size as u64 * n) as f64 / el.as_secs_f64() / 1e6;
                if mode.starts_with("up front") {
                    limit = mbs;
                }
                println!(
                    "| {} | {} | {mode} | {n} | {mbs:.1} | {:.0} | {:.2} |",
                    human(size),
                    if churn {
                        "churned (MAP_FIXED each time)"
                    } else {
                        "reused"
                    },
                    el.as_secs_f64() * 1e6 / n as f64,
                    if limit > 0.0 { mbs / limit } else { 0.0 }
                );
            }
        }
    }
    let _ = s.ctl.send([OP_QUIT, 0, 0, 0, 0, 0]);
    let _ = s.ctl.recv();
    let st = s.cache.stats();
    println!(
        "\ncache (all bench loops): hits {} misses {} invalidated {}",
        st.hits, st.misses, st.invalidated
    );
    Ok(true)
}

fn loop_once(
    s: &mut Side,
    size: usize,
    n: u64,
    churn: bool,
    mode: &str,
) -> Result<Duration, String> {
    const K: usize = 8;
    let bufs: Vec<usize> = (0..K)
        .map(|_| mem::map(size, None).ok_or("mmap"))
        .collect::<Result<_, _>>()?;
    for &b in &bufs {
        // SAFETY: our fresh mapping.
        unsafe { std::ptr::write_bytes(b as *mut u8, 1, size) };
    }
    let up: Vec<Registration> = if mode.starts_with("up front") {
        bufs.iter()
            .map(|&b| s.reg.register(b, size, ACCESS))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?
    } else {
        Vec::new()
    };
    let t0 = Instant::now();
    for i in 0..n as usize {
        let b = bufs[i % K];
        if churn {
            mem::map_over(b, size);
        }
        let st = match mode {
            "cache" => {
                let cache = std::sync::Arc::clone(&s.cache);
                let h = cache.get(b, size, ACCESS).map_err(|e| e.to_string())?;
                let st = xfer(s, b, size, h.rkey())?;
                drop(h);
                st
            }
            "every transfer" => {
                let r = s.reg.register(b, size, ACCESS).map_err(|e| e.to_string())?;
                let st = xfer(s, b, size, r.rkey);
                s.reg.deregister(&r, b, size);
                st?
            }
            _ => xfer(s, b, size, up[i % K].rkey)?,
        };
        if st[0] != ST_OK {
            return Err(format!("bench transfer failed: {st:?}"));
        }
    }
    let el = t0.elapsed();
    for (r, &b) in up.iter().zip(&bufs) {
        s.reg.deregister(r, b, size);
    }
    for &b in &bufs {
        mem::unmap(b, size);
    }
    Ok(el)
}

fn xfer(s: &mut Side, addr: usize, len: usize, rkey: u32) -> Result<Msg, String> {
    s.ctl
        .send([OP_BENCH_WRITE, addr as u64, rkey as u64, len as u64, 0, 0])
        .and_then(|_| s.ctl.recv())
        .map_err(|e| e.to_string())
}

pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn human(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n >> 10)
    }
}
