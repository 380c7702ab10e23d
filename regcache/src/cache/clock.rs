//! The clock of the latency histograms (registration and drain): the CPU's time-stamp counter
//! where the kernel itself keeps time with it, else CLOCK_MONOTONIC.
//!
//! A vDSO `clock_gettime` is ~77 instructions (a sequence lock, the TSC read and the scaling);
//! a churned miss reads the clock four times, 0.38 k of the 19.45 k instructions of a churned
//! 4 KiB transfer (docs/benchmarks.md, issue 13). Reading the TSC and scaling the difference of
//! two readings is a few instructions. The TSC is used only when the kernel's current
//! clocksource is `tsc`: then the kernel has checked that it is invariant and synchronised
//! between CPUs, and the vDSO reads it anyway.
//!
//! The scale (ns per tick) is learnt without spinning: readings in the first millisecond after
//! the clock was made are timed with CLOCK_MONOTONIC as well, and the first one after that
//! divides the nanoseconds elapsed since the base point (taken when the clock was made) by the
//! ticks elapsed. Each of the two points is a CLOCK_MONOTONIC read between two TSC reads; when
//! the two brackets are wider than 1/10,000 of the ticks between them (an interrupt or
//! preemption between the reads), the scale is not taken, and the narrower bracket becomes the
//! base for the next try, so the scale's error stays below 0.01% (a latency histogram's buckets
//! are powers of two). quanta and minstant calibrate by sampling up front (quanta: at least 500
//! rounds, up to 200 ms, when the first clock is made; minstant: in a constructor of every
//! process that loads it), which a library preloaded into every process of a job should not do.
//! Only latency statistics read this clock; nothing of the cache's correctness does.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

/// The scale is taken this long after the base reading, at the earliest.
const CALIBRATE_AFTER_NS: u64 = 1_000_000;

/// A clock reading at the start of a timed section.
#[derive(Clone, Copy)]
pub(super) struct Stamp {
    tsc: u64,
    /// CLOCK_MONOTONIC at the start when the scale was not known then (or the TSC is not
    /// used); 0 when the section is timed by the TSC alone.
    mono: u64,
}

/// A TSC reading and CLOCK_MONOTONIC at (nearly) the same instant.
#[derive(Clone, Copy)]
struct Point {
    tsc: u64,
    ns: u64,
    /// Ticks between the two TSC reads around the CLOCK_MONOTONIC read.
    width: u64,
}

pub(super) struct Clock {
    tsc: bool,
    calibrate_after_ns: u64,
    /// The point the scale is measured from. Locked only by readings made before the scale is
    /// known, with try_lock: a reading never waits for another's calibration.
    base: Mutex<Point>,
    /// ns per tick in 32.32 fixed point; 0 until calibrated. Relaxed (loads and the one
    /// store): the value carries its whole meaning and publishes no other memory.
    scale: AtomicU64,
}

/// The process's clock, made by the first cache.
pub(super) fn global() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| Clock::new(kernel_uses_tsc(), CALIBRATE_AFTER_NS))
}

fn kernel_uses_tsc() -> bool {
    cfg!(all(target_arch = "x86_64", not(miri)))
        && std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .is_ok_and(|s| s.trim() == "tsc")
}

impl Clock {
    pub(super) fn new(tsc: bool, calibrate_after_ns: u64) -> Self {
        Clock {
            tsc,
            calibrate_after_ns,
            base: Mutex::new(Point::now()),
            scale: AtomicU64::new(0),
        }
    }

    /// Whether sections are timed by the TSC alone now: only a clock that uses the TSC is ever
    /// calibrated (`elapsed_ns`).
    pub(super) fn calibrated(&self) -> bool {
        self.scale.load(Relaxed) != 0
    }

    #[inline]
    pub(super) fn start(&self) -> Stamp {
        if self.calibrated() {
            Stamp {
                tsc: rdtsc(),
                mono: 0,
            }
        } else {
            Stamp {
                tsc: 0,
                mono: mono_ns().max(1),
            }
        }
    }

    /// Nanoseconds since `s`.
    #[inline]
    pub(super) fn elapsed_ns(&self, s: Stamp) -> u64 {
        if s.mono == 0 {
            let ticks = rdtsc().saturating_sub(s.tsc);
            let scale = self.scale.load(Relaxed);
            return ((u128::from(ticks) * u128::from(scale)) >> 32) as u64;
        }
        let now = mono_ns();
        if self.tsc && !self.calibrated() {
            self.calibrate(now);
        }
        now.saturating_sub(s.mono)
    }

    /// Takes the scale once `calibrate_after_ns` have passed since the base point, if both
    /// points are precise enough (module comment).
    #[cold]
    fn calibrate(&self, now: u64) {
        let Some(mut base) = self.base.try_lock() else {
            return;
        };
        if now.saturating_sub(base.ns) < self.calibrate_after_ns || self.calibrated() {
            return;
        }
        let p = Point::now();
        let (ticks, ns) = (p.tsc.saturating_sub(base.tsc), p.ns.saturating_sub(base.ns));
        if ticks == 0
            || ns == 0
            || p.width.saturating_add(base.width).saturating_mul(10_000) > ticks
        {
            if p.width < base.width {
                *base = p;
            }
            return;
        }
        let scale = ((u128::from(ns) << 32) / u128::from(ticks)).min(u128::from(u64::MAX));
        self.scale.store((scale as u64).max(1), Relaxed);
    }
}

impl Point {
    fn now() -> Point {
        let t1 = rdtsc();
        let ns = mono_ns();
        let t2 = rdtsc();
        let width = t2.saturating_sub(t1);
        Point {
            tsc: t1 + width / 2,
            ns,
            width,
        }
    }
}

#[inline]
fn rdtsc() -> u64 {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        // SAFETY: RDTSC exists on every x86_64 CPU and reads a counter; no memory is touched.
        // Not ordered against the surrounding code (no LFENCE): the sections timed are system
        // calls of microseconds, against a skew of tens of cycles.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    // Miri cannot run RDTSC: no TSC there (`kernel_uses_tsc` says so too), so the clock falls
    // back to CLOCK_MONOTONIC, and the unsafe code around it can be checked.
    #[cfg(any(not(target_arch = "x86_64"), miri))]
    {
        0
    }
}

/// CLOCK_MONOTONIC in nanoseconds (the vDSO `clock_gettime` that `Instant::now` makes, without
/// its checked conversions).
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec, and CLOCK_MONOTONIC exists on every Linux;
    // on failure `ts` stays zero: one wrong latency sample at worst (nothing else reads it).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A 20 ms sleep timed by `c`, over the same sleep timed by `Instant`.
    fn ratio_to_instant(c: &Clock) -> f64 {
        let s = c.start();
        let i = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let ours = c.elapsed_ns(s) as f64;
        ours / i.elapsed().as_nanos() as f64
    }

    fn assert_agrees(r: f64) {
        assert!(
            (r - 1.0).abs() < 0.02,
            "the clock reads {r:.3} of Instant's time"
        );
    }

    #[test]
    fn monotonic_fallback_times_a_sleep() {
        let c = Clock::new(false, 0);
        assert_agrees(ratio_to_instant(&c));
        assert!(!c.calibrated(), "without the TSC there is no scale");
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn tsc_times_a_sleep_before_and_after_calibration() {
        let c = Clock::new(true, 30_000_000);
        // Before: timed by CLOCK_MONOTONIC.
        assert_agrees(ratio_to_instant(&c));
        assert!(!c.calibrated(), "calibrated before 30 ms had passed");
        std::thread::sleep(Duration::from_millis(15));
        // A section that starts uncalibrated and ends after calibration stays on one clock.
        assert_agrees(ratio_to_instant(&c));
        assert!(c.calibrated(), "not calibrated after 55 ms");
        // After: timed by the TSC and the scale alone.
        assert_eq!(c.start().mono, 0);
        assert_agrees(ratio_to_instant(&c));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_wrong_scale_is_caught() {
        // The check above can fail: calibrated against a base 10 ms later than its TSC
        // reading, 40 ms on, the clock reads every section ~25% short.
        let c = Clock::new(true, 30_000_000);
        c.base.lock().ns += 10_000_000;
        std::thread::sleep(Duration::from_millis(40));
        c.calibrate(mono_ns());
        assert!(c.calibrated());
        let r = ratio_to_instant(&c);
        assert!(
            (r - 1.0).abs() >= 0.02,
            "a scale 25% off went unnoticed: {r:.3}"
        );
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn an_imprecise_base_is_replaced_not_used() {
        // A base whose bracket was as wide as what followed (an interrupted reading) yields no
        // scale; the next, narrower reading becomes the base and the scale comes from it.
        let c = Clock::new(true, 1_000_000);
        c.base.lock().width = u64::MAX / 20_000;
        std::thread::sleep(Duration::from_millis(2));
        c.calibrate(mono_ns());
        assert!(!c.calibrated(), "calibrated from an imprecise base");
        assert!(
            c.base.lock().width < u64::MAX / 20_000,
            "the base was not replaced"
        );
        // A reading interrupted again (a loaded machine: the bracket may exceed 1/10,000 of
        // 2 ms) is refused in turn; a few tries get a clean one.
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(2));
            c.calibrate(mono_ns());
            if c.calibrated() {
                break;
            }
        }
        assert!(c.calibrated(), "no scale from the new base in 50 readings");
        assert_agrees(ratio_to_instant(&c));
    }
}
