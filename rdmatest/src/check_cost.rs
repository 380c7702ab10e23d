//! --bench-check (no peer): what a kept false positive costs (one ummunotify CHECK) against
//! what it saves (a deregistration and a registration: verbs on this device, and the software
//! NIC), and what every miss now pays on top (one ARM), at 4 KiB, 1 MiB and 64 MiB, medians in
//! one process (issue 11). Prints a Markdown table.

use crate::bench::{human, median, us, ACCESS};
use regcache::monitor::ummunotify::{Revalidation, UmmunotifyMonitor};
use regcache::monitor::Monitor;
use regcache::registrar::uring::SoftNic;
use regcache::registrar::verbs::VerbsRegistrar;
use regcache::{Range, Registrar};
use regcache_oracle::mem;
use std::time::{Duration, Instant};

/// Median of `n` timed calls of `f`.
fn timed(n: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<Duration, String> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        f()?;
        v.push(t0.elapsed());
    }
    Ok(median(&mut v))
}

pub fn run(dev: Option<&str>) -> Result<bool, String> {
    let verbs = VerbsRegistrar::open(dev).map_err(|e| format!("opening the device: {e}"))?;
    let nic = SoftNic::new(4).map_err(|e| format!("software NIC: {e}"))?;
    let mon = UmmunotifyMonitor::open().map_err(|e| format!("/dev/ummunotify: {e}"))?;
    if !mon.revalidate_supported() {
        return Err("the module does not offer REVALIDATE".into());
    }
    println!(
        "### CHECK vs a registration ({}; software NIC; medians of N, one process)\n",
        verbs.device_name()
    );
    println!(
        "| size | N | verbs reg+dereg µs | software NIC reg+dereg µs | ARM µs | CHECK µs | \
         verbs / CHECK | software NIC / CHECK |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, size) in [4usize << 10, 1 << 20, 64 << 20].into_iter().enumerate() {
        let n = if size >= 64 << 20 { 9 } else { 51 };
        let a = mem::map(size, None).ok_or("mmap")?;
        // SAFETY: our fresh mapping; every page touched so no cost below includes faults.
        unsafe { std::ptr::write_bytes(a as *mut u8, 1, size) };
        let pair = |r: &dyn Registrar| -> Result<(), String> {
            let reg = r.register(a, size, ACCESS).map_err(|e| e.to_string())?;
            r.deregister(&reg, a, size);
            Ok(())
        };
        let v = timed(n, || pair(&verbs))?;
        let s = timed(n, || pair(&nic))?;
        // Watched and pinned (as a cached entry is), then armed and checked.
        let cookie = 0xc0de_0000 + i as u64;
        let range = Range {
            start: a,
            end: a + size,
        };
        mon.watch(range, cookie)
            .map_err(|e| format!("watch: {e:?}"))?;
        let held = verbs.register(a, size, ACCESS).map_err(|e| e.to_string())?;
        let arm = timed(n, || match mon.arm(cookie) {
            Ok(Revalidation::Unchanged) => Ok(()),
            other => Err(format!("ARM of an untouched range: {other:?}")),
        })?;
        let check = timed(n, || match mon.check(cookie) {
            Ok(Revalidation::Unchanged) => Ok(()),
            other => Err(format!("CHECK of an untouched range: {other:?}")),
        })?;
        verbs.deregister(&held, a, size);
        mon.unwatch(range, cookie);
        mem::unmap(a, size);
        println!(
            "| {} | {n} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1}x | {:.1}x |",
            human(size),
            us(v),
            us(s),
            us(arm),
            us(check),
            v.as_secs_f64() / check.as_secs_f64(),
            s.as_secs_f64() / check.as_secs_f64()
        );
    }
    Ok(true)
}
