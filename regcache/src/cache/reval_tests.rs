//! Revalidation (reval.rs) against a fake monitor that models the module's ARM_SINCE / CHECK:
//! per cookie a "frames" generation (a real change bumps it), the counter after the last hit,
//! and what ARM recorded.

use super::super::*;
use crate::monitor::Revalidation;
use crate::registrar::noop::NoopRegistrar;
use std::collections::HashMap;
use std::sync::atomic::AtomicU32;

#[derive(Default)]
struct Kernel {
    watched: HashMap<u64, Range>,
    /// Frames generation per cookie: a real change of the range bumps it.
    frames: HashMap<u64, u64>,
    /// Counter value after the last hit, per cookie (ARM_SINCE compares it).
    hit_counter: HashMap<u64, u64>,
    /// What ARM recorded: Some(frames) = armed, None = armed as changed.
    armed: HashMap<u64, Option<u64>>,
    last_watched: u64,
}

#[derive(Default)]
struct FakeMon {
    counter: AtomicU64,
    queue: Mutex<Vec<Invalidation>>,
    k: Mutex<Kernel>,
    /// The next watch is hit by a real change right after the range is registered.
    change_in_watch: AtomicBool,
    /// The next ARM is followed by a hit that changes nothing (before the drain).
    noise_after_arm: AtomicBool,
    arm_error: AtomicBool,
    check_error: AtomicBool,
    /// Answer like a module without REVALIDATE.
    no_reval: AtomicBool,
    /// Say watches do not survive an unmap (like userfaultfd): nothing is parked.
    no_keep: AtomicBool,
    checks: AtomicU64,
    watches: AtomicU64,
    unwatches: AtomicU64,
}

impl FakeMon {
    /// A hit of `cookie`'s range: `real` replaces its frames. Queued, then the counter moves.
    fn hit(&self, cookie: u64, real: bool) {
        let mut k = self.k.lock();
        let Some(&range) = k.watched.get(&cookie) else {
            return;
        };
        if real {
            *k.frames.entry(cookie).or_default() += 1;
        }
        let after = self.counter.load(Ordering::Relaxed) + 1;
        k.hit_counter.insert(cookie, after);
        self.queue.lock().push(Invalidation::Cookie {
            cookie,
            hint: range,
        });
        self.counter.store(after, Ordering::Release);
    }

    /// A change of `cookie`'s range after which its frames are `frames` (the allocator may
    /// hand back frames seen before).
    fn hit_to(&self, cookie: u64, frames: u64) {
        self.k.lock().frames.insert(cookie, frames);
        self.hit(cookie, false);
    }

    fn cookie_at(&self, start: usize) -> u64 {
        let k = self.k.lock();
        *k.watched.iter().find(|(_, r)| r.start == start).unwrap().0
    }

    fn last_watched(&self) -> u64 {
        self.k.lock().last_watched
    }
}

impl Monitor for Arc<FakeMon> {
    fn kind(&self) -> MonitorKind {
        MonitorKind::Ummunotify
    }
    fn counter(&self) -> &AtomicU64 {
        &self.counter
    }
    fn revalidates(&self) -> bool {
        !self.no_reval.load(Ordering::Relaxed)
    }
    fn watch_survives_unmap(&self) -> bool {
        !self.no_keep.load(Ordering::Relaxed)
    }
    fn revalidate_arm_since(&self, cookie: u64, since: u64) -> Result<Revalidation> {
        if self.arm_error.load(Ordering::Relaxed) {
            return Err(std::io::Error::from_raw_os_error(libc::EIO).into());
        }
        let answer = {
            let mut k = self.k.lock();
            let hit_since = k.hit_counter.get(&cookie).copied().unwrap_or(0) > since;
            let frames = k.frames.get(&cookie).copied().unwrap_or(0);
            let rec = (!hit_since).then_some(frames);
            k.armed.insert(cookie, rec);
            if hit_since {
                Revalidation::Changed
            } else {
                Revalidation::Unchanged
            }
        };
        if self.noise_after_arm.swap(false, Ordering::Relaxed) {
            self.hit(cookie, false);
        }
        Ok(answer)
    }
    fn revalidate_check(&self, cookie: u64) -> Result<Revalidation> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if self.check_error.load(Ordering::Relaxed) {
            return Err(std::io::Error::from_raw_os_error(libc::EIO).into());
        }
        let k = self.k.lock();
        let now = k.frames.get(&cookie).copied().unwrap_or(0);
        Ok(match k.armed.get(&cookie) {
            None => Revalidation::NotArmed,
            Some(Some(at_arm)) if *at_arm == now => Revalidation::Unchanged,
            Some(_) => Revalidation::Changed,
        })
    }
    fn watch(&self, range: Range, cookie: u64) -> std::result::Result<(), WatchError> {
        self.watches.fetch_add(1, Ordering::Relaxed);
        {
            let mut k = self.k.lock();
            k.watched.insert(cookie, range);
            k.last_watched = cookie;
        }
        if self.change_in_watch.swap(false, Ordering::Relaxed) {
            self.hit(cookie, true);
        }
        Ok(())
    }
    fn unwatch(&self, _range: Range, cookie: u64) {
        self.unwatches.fetch_add(1, Ordering::Relaxed);
        let mut k = self.k.lock();
        k.watched.remove(&cookie);
        k.armed.remove(&cookie);
        k.hit_counter.remove(&cookie);
    }
    fn drain(&self, out: &mut Vec<Invalidation>) -> Result<u64> {
        let g = self.counter.load(Ordering::Acquire);
        out.append(&mut self.queue.lock());
        Ok(g)
    }
}

/// A registrar that hits the range being registered while "pinning" it (after the watch,
/// before ARM): `noise_pins` times with no change, `change_pins` times with a real change.
#[derive(Default)]
struct PinRacer {
    inner: NoopRegistrar,
    mon: Mutex<Option<Arc<FakeMon>>>,
    noise_pins: AtomicU32,
    change_pins: AtomicU32,
}

impl PinRacer {
    fn take(n: &AtomicU32) -> bool {
        n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
            .is_ok()
    }
}

impl Registrar for PinRacer {
    fn name(&self) -> &'static str {
        "pin-racer"
    }
    fn register(&self, addr: usize, len: usize, access: Access) -> Result<Registration> {
        if let Some(m) = &*self.mon.lock() {
            if Self::take(&self.noise_pins) {
                m.hit(m.last_watched(), false);
            } else if Self::take(&self.change_pins) {
                m.hit(m.last_watched(), true);
            }
        }
        self.inner.register(addr, len, access)
    }
    fn deregister(&self, reg: &Registration, addr: usize, len: usize) {
        self.inner.deregister(reg, addr, len)
    }
}

const P: usize = 4096;
const RW: Access = Access::LOCAL_WRITE;
const A: usize = 0x4000_0000;

struct Setup {
    c: Cache,
    m: Arc<FakeMon>,
    r: Arc<PinRacer>,
    forwarded: Arc<Mutex<Vec<Range>>>,
}

fn setup(mut cfg: Config) -> Setup {
    let m = Arc::new(FakeMon::default());
    let r = Arc::new(PinRacer::default());
    *r.mon.lock() = Some(m.clone());
    let forwarded = Arc::new(Mutex::new(Vec::new()));
    let f = forwarded.clone();
    cfg.on_invalidate = Some(InvalidateHook(Arc::new(move |r| f.lock().push(r))));
    let c = Cache::new(Box::new(m.clone()), r.clone(), cfg);
    Setup { c, m, r, forwarded }
}

fn range(start: usize, pages: usize) -> Range {
    Range {
        start,
        end: start + pages * P,
    }
}

#[test]
fn unchanged_keeps_the_entry_counts_a_false_positive_and_forwards_nothing() {
    let s = setup(Config::default());
    assert!(s.c.revalidating());
    let key = s.c.get(A, P, RW).unwrap().lkey();
    s.m.hit(s.m.cookie_at(A), false);
    let h = s.c.get(A, P, RW).unwrap();
    assert_eq!(h.lkey(), key, "the kept registration");
    assert!(h.is_cached());
    let st = s.c.stats();
    assert_eq!(
        (st.hits, st.misses, st.invalidated, st.false_positives),
        (1, 1, 0, 1)
    );
    assert_eq!((st.registrations, st.deregistrations), (1, 0));
    assert_eq!(s.m.checks.load(Ordering::Relaxed), 1);
    assert!(
        s.forwarded.lock().is_empty(),
        "a kept entry is not reported"
    );
}

#[test]
fn changed_retires_and_forwards() {
    let s = setup(Config::default());
    let key = s.c.get(A, P, RW).unwrap().lkey();
    s.m.hit(s.m.cookie_at(A), true);
    let h = s.c.get(A, P, RW).unwrap();
    assert_ne!(h.lkey(), key, "a new registration");
    let st = s.c.stats();
    assert_eq!(
        (st.hits, st.misses, st.invalidated, st.false_positives),
        (0, 2, 1, 0)
    );
    assert_eq!(st.reregistrations, 1);
    assert_eq!(s.r.inner.deregistered(), 1);
    assert_eq!(*s.forwarded.lock(), vec![range(A, 1)]);
}

#[test]
fn not_armed_retires() {
    let s = setup(Config::default());
    s.m.arm_error.store(true, Ordering::Relaxed);
    let key = s.c.get(A, P, RW).unwrap().lkey();
    s.m.hit(s.m.cookie_at(A), false);
    assert_ne!(s.c.get(A, P, RW).unwrap().lkey(), key);
    assert_eq!(s.c.stats().invalidated, 1);
    assert_eq!(s.forwarded.lock().len(), 1);
}

#[test]
fn check_error_retires() {
    let s = setup(Config::default());
    let key = s.c.get(A, P, RW).unwrap().lkey();
    s.m.check_error.store(true, Ordering::Relaxed);
    s.m.hit(s.m.cookie_at(A), false);
    assert_ne!(s.c.get(A, P, RW).unwrap().lkey(), key);
    let st = s.c.stats();
    assert_eq!((st.invalidated, st.false_positives), (1, 0));
    assert_eq!(s.forwarded.lock().len(), 1);
}

#[test]
fn without_revalidation_noise_retires_as_before() {
    let s = setup(Config::default());
    s.m.no_reval.store(true, Ordering::Relaxed);
    assert!(!s.c.revalidating());
    let key = s.c.get(A, P, RW).unwrap().lkey();
    s.m.hit(s.m.cookie_at(A), false);
    assert_ne!(s.c.get(A, P, RW).unwrap().lkey(), key);
    assert_eq!(s.c.stats().invalidated, 1);
    assert_eq!(
        s.m.checks.load(Ordering::Relaxed),
        0,
        "no CHECK without the feature"
    );
}

#[test]
fn range_and_all_invalidations_are_never_revalidated() {
    let s = setup(Config::default());
    drop(s.c.get(A, P, RW).unwrap());
    drop(s.c.get(A + 16 * P, P, RW).unwrap());
    s.m.queue.lock().push(Invalidation::Range(range(A, 1)));
    s.m.counter.fetch_add(1, Ordering::Release);
    drop(s.c.get(A + 16 * P, P, RW).unwrap());
    assert_eq!(s.c.cached_entries(), 1);
    s.m.queue.lock().push(Invalidation::All);
    s.m.counter.fetch_add(1, Ordering::Release);
    drop(s.c.get(A + 32 * P, P, RW).unwrap());
    assert_eq!(s.c.stats().invalidated, 2);
    assert_eq!(s.m.checks.load(Ordering::Relaxed), 0);
}

#[test]
fn event_between_pin_and_arm_is_retried() {
    let s = setup(Config::default());
    // Hit (no change) while pinning: ARM_SINCE arms it as changed, the drain undoes it.
    s.r.noise_pins.store(1, Ordering::Relaxed);
    let h = s.c.get(A, P, RW).unwrap();
    assert!(h.is_cached());
    let st = s.c.stats();
    assert_eq!((st.registrations, st.deregistrations), (2, 1));
    assert_eq!(st.uncacheable, 0);
    drop(h);
    // A real change while pinning: the same.
    s.r.change_pins.store(1, Ordering::Relaxed);
    assert!(s.c.get(A + 16 * P, P, RW).unwrap().is_cached());
    assert_eq!(s.c.stats().registrations, 4);
}

#[test]
fn event_during_every_pin_is_not_cached() {
    let s = setup(Config::default());
    s.r.change_pins.store(u32::MAX, Ordering::Relaxed);
    let h = s.c.get(A, P, RW).unwrap();
    assert!(!h.is_cached(), "one-use after the retries");
    let st = s.c.stats();
    assert_eq!(st.uncacheable, 1);
    assert_eq!(st.false_positives, 0);
    assert_eq!(s.c.cached_entries(), 0);
}

/// The mark is read before the watch: a real change that hits the range right after it is
/// registered (its counter increment visible before the pin) is still "since the mark". Read
/// after the watch, ARM would have digested the new frames and CHECK would keep a stale entry.
#[test]
fn change_right_after_watch_is_not_trusted() {
    let s = setup(Config::default());
    s.m.change_in_watch.store(true, Ordering::Relaxed);
    let h = s.c.get(A, P, RW).unwrap();
    assert!(h.is_cached());
    let st = s.c.stats();
    assert_eq!(
        (st.registrations, st.deregistrations),
        (2, 1),
        "the first registration was undone"
    );
    assert_eq!(st.false_positives, 0);
}

#[test]
fn noise_after_arm_before_the_drain_is_cached_first_time() {
    let s = setup(Config::default());
    s.m.noise_after_arm.store(true, Ordering::Relaxed);
    let h = s.c.get(A, P, RW).unwrap();
    assert!(h.is_cached());
    let st = s.c.stats();
    assert_eq!((st.registrations, st.deregistrations), (1, 0));
    assert_eq!(st.false_positives, 1);
    assert!(s.forwarded.lock().is_empty());
}

#[test]
fn kept_and_retired_in_one_drain() {
    let s = setup(Config::default());
    drop(s.c.get(A, P, RW).unwrap());
    drop(s.c.get(A + 16 * P, P, RW).unwrap());
    s.m.hit(s.m.cookie_at(A), false);
    s.m.hit(s.m.cookie_at(A + 16 * P), true);
    assert!(s.c.sync().unwrap());
    let st = s.c.stats();
    assert_eq!((st.invalidated, st.false_positives), (1, 1));
    assert_eq!(s.c.cached_entries(), 1);
    assert_eq!(*s.forwarded.lock(), vec![range(A + 16 * P, 1)]);
    // The kept one is hit, the changed one misses.
    drop(s.c.get(A, P, RW).unwrap());
    assert_eq!(s.c.stats().hits, 1);
}

/// The same entry reported twice in one drain, once with a hint that starts before it (found by
/// the range search, not the one probe): one CHECK answers both; kept when unchanged, removed
/// once when changed.
#[test]
fn repeated_reports_are_checked_once() {
    let s = setup(Config::default());
    for (real, checks, cached) in [(false, 1, 1), (true, 2, 0)] {
        drop(s.c.get(A, P, RW).unwrap());
        let cookie = s.m.cookie_at(A);
        s.m.hit(cookie, real);
        s.m.queue.lock().push(Invalidation::Cookie {
            cookie,
            hint: range(A - P, 3),
        });
        s.m.counter.fetch_add(1, Ordering::Release);
        assert!(s.c.sync().unwrap());
        let st = s.c.stats();
        assert_eq!(s.m.checks.load(Ordering::Relaxed), checks);
        assert_eq!(s.c.cached_entries(), cached);
        assert_eq!((st.false_positives, st.invalidated), (1, 1 - cached as u64));
    }
    // Forwarded once per event of the changed entry, never for the kept one.
    assert_eq!(s.forwarded.lock().len(), 2);
}

#[test]
fn kept_entry_in_use_is_still_retired_by_a_later_change() {
    let s = setup(Config::default());
    let h = s.c.get(A, P, RW).unwrap();
    let cookie = s.m.cookie_at(A);
    s.m.hit(cookie, false);
    assert!(s.c.sync().unwrap());
    assert_eq!(s.c.cached_entries(), 1);
    s.m.hit(cookie, true);
    assert!(s.c.sync().unwrap());
    assert_eq!(s.c.cached_entries(), 0);
    assert_eq!(s.r.inner.deregistered(), 0, "held: deregistered on release");
    drop(h);
    assert_eq!(s.r.inner.deregistered(), 1);
}

/// The mutant the oracle's negative control uses: a changed entry is kept (stale).
#[test]
fn danger_revalidate_unchanged_keeps_a_changed_entry() {
    let s = setup(Config {
        danger_revalidate_unchanged: true,
        ..Config::default()
    });
    let key = s.c.get(A, P, RW).unwrap().lkey();
    s.m.hit(s.m.cookie_at(A), true);
    assert_eq!(s.c.get(A, P, RW).unwrap().lkey(), key, "stale, on purpose");
}

// Kept watches (park.rs, issue 13: 100% churn).

fn watch_calls(s: &Setup) -> (u64, u64) {
    (
        s.m.watches.load(Ordering::Relaxed),
        s.m.unwatches.load(Ordering::Relaxed),
    )
}

/// Every transfer's buffer was unmapped and mapped again: one watch for all of them, one ARM
/// (the first registration's), one CHECK (its event), and every change still retires.
#[test]
fn churn_keeps_one_watch_and_never_trusts_a_changed_range() {
    let s = setup(Config::default());
    let mut keys = Vec::new();
    for _ in 0..10 {
        let h = s.c.get(A, P, RW).unwrap();
        assert!(h.is_cached());
        keys.push(h.lkey());
        drop(h);
        s.m.hit(s.m.cookie_at(A), true);
    }
    keys.dedup();
    assert_eq!(keys.len(), 10, "a new registration after every change");
    assert_eq!(watch_calls(&s), (1, 0));
    assert_eq!(
        s.m.checks.load(Ordering::Relaxed),
        1,
        "only the ARMed entry"
    );
    let st = s.c.stats();
    assert_eq!((st.misses, st.invalidated, st.false_positives), (10, 9, 0));
    assert_eq!((st.registrations, st.deregistrations), (10, 9));
    assert_eq!(
        st.kept_watches, 9,
        "every miss after the first took the kept watch"
    );
    assert_eq!(s.forwarded.lock().len(), 9);
    s.c.flush();
    assert_eq!(watch_calls(&s), (1, 1), "flush unwatches the parked watch");
}

/// The negative control of the above: a kept watch still holds the digest ARMed for the
/// previous registration's frames. When those frames come back at the address (the allocator
/// reuses freed pages), a CHECK of the new entry against that digest says "unchanged" although
/// it pinned other frames: the entry would be kept stale. `UNARMED` (entry.rs) is what prevents
/// it; with cookies compared instead of ids (`CHECK_KEPT`, test only) the test sees the stale key.
#[test]
fn kept_watch_checked_against_the_old_digest_corrupts() {
    for wrong in [false, true] {
        super::CHECK_KEPT.with(|c| c.set(wrong));
        let s = setup(Config::default());
        drop(s.c.get(A, P, RW).unwrap()); // frames 0, ARMed
        let cookie = s.m.cookie_at(A);
        s.m.hit(cookie, true); // frames 1
        let k2 = s.c.get(A, P, RW).unwrap().lkey(); // under the kept watch: pins frames 1
        assert_eq!(watch_calls(&s).0, 1);
        s.m.hit_to(cookie, 0); // changed again, and the frames 0 are back
        let k3 = s.c.get(A, P, RW).unwrap().lkey();
        super::CHECK_KEPT.with(|c| c.set(false));
        if wrong {
            assert_eq!(k3, k2, "negative control: the stale registration was kept");
        } else {
            assert_ne!(k3, k2, "a changed range is registered again");
            assert_eq!(s.c.stats().false_positives, 0);
        }
    }
}

/// A held entry's watch is unwatched by its retirement (life.rs), never parked: the new entry
/// watches afresh, and the old one's release does not take its watch away.
#[test]
fn held_entry_watch_is_not_kept() {
    let s = setup(Config::default());
    let h = s.c.get(A, P, RW).unwrap();
    s.m.hit(s.m.cookie_at(A), true);
    let h2 = s.c.get(A, P, RW).unwrap();
    assert_ne!(h2.lkey(), h.lkey());
    assert_eq!(watch_calls(&s), (2, 1));
    assert_eq!(s.c.stats().kept_watches, 0);
    drop(h);
    drop(h2);
    let key = s.c.get(A, P, RW).unwrap().lkey();
    s.m.hit(s.m.cookie_at(A), true);
    assert_ne!(s.c.get(A, P, RW).unwrap().lkey(), key);
}

/// An entry hit before its change is a reused buffer, not churn: its successor gets a fresh,
/// ARMed watch, so neighbour noise is still a false positive for it.
#[test]
fn hit_entry_gets_a_fresh_armed_watch() {
    let s = setup(Config::default());
    drop(s.c.get(A, P, RW).unwrap());
    drop(s.c.get(A, P, RW).unwrap()); // a hit
    s.m.hit(s.m.cookie_at(A), true);
    let key = s.c.get(A, P, RW).unwrap().lkey();
    assert_eq!(watch_calls(&s), (2, 1));
    s.m.hit(s.m.cookie_at(A), false);
    assert_eq!(s.c.get(A, P, RW).unwrap().lkey(), key, "kept: noise");
    assert_eq!(s.c.stats().false_positives, 1);
}

/// A change while the registration under a kept watch is being pinned is seen by the drain
/// after it (the watch is the same): undone, retried with a fresh watch.
#[test]
fn change_while_pinning_under_a_kept_watch_is_retried() {
    let s = setup(Config::default());
    drop(s.c.get(A, P, RW).unwrap());
    s.m.hit(s.m.cookie_at(A), true);
    s.r.change_pins.store(1, Ordering::Relaxed);
    let h = s.c.get(A, P, RW).unwrap();
    assert!(h.is_cached());
    let st = s.c.stats();
    assert_eq!((st.registrations, st.deregistrations), (3, 2));
    assert_eq!(
        watch_calls(&s),
        (2, 1),
        "the kept watch was dropped for the retry"
    );
}

/// A monitor whose watches go with the mapping (userfaultfd) parks nothing; at most 8 watches
/// are parked, the oldest beyond that is unwatched; a different range does not take one.
#[test]
fn parking_limits() {
    let s = setup(Config::default());
    s.m.no_keep.store(true, Ordering::Relaxed);
    drop(s.c.get(A, P, RW).unwrap());
    s.m.hit(s.m.cookie_at(A), true);
    drop(s.c.get(A, P, RW).unwrap());
    assert_eq!(watch_calls(&s), (2, 1));

    let s = setup(Config::default());
    for i in 0..9 {
        drop(s.c.get(A + i * 16 * P, P, RW).unwrap());
    }
    for i in 0..9 {
        s.m.hit(s.m.cookie_at(A + i * 16 * P), true);
    }
    drop(s.c.get(A, 2 * P, RW).unwrap()); // not the parked range [A, A+P)
    assert_eq!(watch_calls(&s), (10, 1), "9 parked, the oldest unwatched");
    drop(s.c.get(A + 16 * P, P, RW).unwrap());
    assert_eq!(watch_calls(&s), (10, 1), "taken over");
    drop(s);
}
