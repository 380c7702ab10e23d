//! Bookkeeping tests of the cache against a scripted monitor and a counting registrar.
//! (The end-to-end oracle with real unmaps and the software NIC is in tests/torture.rs.)

use super::*;
use crate::registrar::noop::NoopRegistrar;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

mod prepare;

/// A monitor driven by the test: `fire` queues an invalidation and moves the counter.
#[derive(Default)]
struct ScriptedMonitor {
    counter: AtomicU64,
    queue: Mutex<Vec<Invalidation>>,
    watched: Mutex<HashMap<u64, Range>>,
    refuse: AtomicBool,
    /// The next `unwatch` panics (a misbehaving monitor).
    panic_unwatch: AtomicBool,
}

impl ScriptedMonitor {
    fn fire(&self, inv: Invalidation) {
        self.queue.lock().push(inv);
        self.counter.fetch_add(1, Ordering::Release);
    }
    fn bump_only(&self) {
        self.counter.fetch_add(1, Ordering::Release);
    }
}

impl Monitor for Arc<ScriptedMonitor> {
    fn kind(&self) -> MonitorKind {
        MonitorKind::Uffd
    }
    fn counter(&self) -> &AtomicU64 {
        &self.counter
    }
    fn watch(&self, range: Range, cookie: u64) -> std::result::Result<(), WatchError> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err(WatchError::Unwatchable(libc::EINVAL));
        }
        self.watched.lock().insert(cookie, range);
        Ok(())
    }
    fn unwatch(&self, _range: Range, cookie: u64) {
        if self.panic_unwatch.swap(false, Ordering::Relaxed) {
            panic!("test: unwatch panics");
        }
        self.watched.lock().remove(&cookie);
    }
    fn drain(&self, out: &mut Vec<Invalidation>) -> Result<u64> {
        let g = self.counter.load(Ordering::Acquire);
        out.append(&mut self.queue.lock());
        Ok(g)
    }
}

const P: usize = 4096;
const RW: Access = Access::LOCAL_WRITE;

fn setup(cfg: Config) -> (Cache, Arc<ScriptedMonitor>, Arc<NoopRegistrar>) {
    setup_with(cfg)
}

fn setup_with<R: Registrar + Default + 'static>(
    cfg: Config,
) -> (Cache, Arc<ScriptedMonitor>, Arc<R>) {
    let mon = Arc::new(ScriptedMonitor::default());
    let reg = Arc::new(R::default());
    let cache = Cache::new(Box::new(mon.clone()), reg.clone(), cfg);
    (cache, mon, reg)
}

#[test]
fn second_get_hits() {
    let (c, _m, r) = setup(Config::default());
    let a = c.get(0x10_0000, 100, RW).unwrap();
    let key = a.lkey();
    drop(a);
    let b = c.get(0x10_0000 + 8, 50, RW).unwrap();
    assert_eq!(b.lkey(), key);
    assert!(b.is_cached());
    let s = c.stats();
    assert_eq!((s.hits, s.misses, r.registered()), (1, 1, 1));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let (c, _m, _r) = setup(Config::default());
    assert!(matches!(c.get(0, 10, RW), Err(Error::InvalidArgument(_))));
    assert!(matches!(c.get(P, 0, RW), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        c.get(usize::MAX - 10, 100, RW),
        Err(Error::InvalidArgument(_))
    ));
    // Does not overflow the address space but its page rounding does.
    assert!(matches!(
        c.get(usize::MAX - 10, 5, RW),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(c.invalidate(0, 1), Err(Error::InvalidArgument(_))));
}

#[test]
fn invalidation_removes_entry_and_counts_reregistration() {
    let (c, m, r) = setup(Config::default());
    drop(c.get(0x20_0000, P, RW).unwrap());
    m.fire(Invalidation::Range(Range {
        start: 0x20_0000,
        end: 0x20_1000,
    }));
    let h = c.get(0x20_0000, P, RW).unwrap();
    let s = c.stats();
    assert_eq!(
        (s.hits, s.misses, s.invalidated, s.reregistrations),
        (0, 2, 1, 1)
    );
    assert_eq!(r.registered(), 2);
    assert_eq!(
        r.deregistered(),
        1,
        "unused invalidated entry is deregistered at once"
    );
    drop(h);
}

/// A drain that removed exactly the requested pages (the churned buffer) counts the
/// re-registration itself and skips the index search (`DrainFor::Request`); the other ranges it
/// removed are remembered as before, and the neighbours it left are untouched.
#[test]
fn refill_counts_its_reregistration_and_remembers_the_rest() {
    let (c, m, r) = setup(Config::default());
    let (a, b, n) = (0x20_0000, 0x28_0000, 0x20_1000);
    drop(c.get(a, P, RW).unwrap());
    drop(c.get(b, P, RW).unwrap());
    let neighbour = c.get(n, P, RW).unwrap().lkey();
    m.fire(Invalidation::Range(Range {
        start: a,
        end: a + P,
    }));
    m.fire(Invalidation::Range(Range {
        start: b,
        end: b + P,
    }));
    drop(c.get(a, P, RW).unwrap());
    let s = c.stats();
    assert_eq!((s.misses, s.invalidated, s.reregistrations), (4, 2, 1));
    assert_eq!(c.get(n, P, RW).unwrap().lkey(), neighbour, "still cached");
    assert_eq!(c.cached_entries(), 2, "a and its neighbour");
    drop(c.get(b, P, RW).unwrap());
    assert_eq!(c.stats().reregistrations, 2, "b was remembered");
    drop(c.get(a, P, RW).unwrap());
    assert_eq!((c.stats().hits, c.stats().reregistrations), (2, 2));
    assert_eq!(r.registered(), 5);
}

#[test]
fn cookie_invalidation_hits_only_that_entry() {
    let (c, m, _r) = setup(Config::default());
    drop(c.get(0x30_0000, P, RW).unwrap());
    drop(c.get(0x40_0000, P, RW).unwrap());
    let cookie = *m
        .watched
        .lock()
        .iter()
        .find(|(_, r)| r.start == 0x30_0000)
        .unwrap()
        .0;
    m.fire(Invalidation::Cookie {
        cookie,
        hint: Range {
            start: 0x30_0000,
            end: 0x30_0800,
        },
    });
    drop(c.get(0x40_0000, P, RW).unwrap());
    assert_eq!(c.stats().hits, 1);
    assert_eq!(c.stats().invalidated, 1);
    drop(c.get(0x30_0000, P, RW).unwrap());
    assert_eq!(c.stats().misses, 3);
}

/// A cookie event finds its entry by one probe at the hint's start (index.rs, `with_cookie`)
/// when the hint starts inside the entry (its first page, a later page of a short entry, or of a
/// long one), by the overlap search when it starts before it, and never removes another entry
/// that its hint overlaps.
#[test]
fn cookie_invalidation_finds_its_entry_wherever_the_hint_starts() {
    let (c, m, _r) = setup(Config::default());
    let cookie_at = |start: usize| {
        *m.watched
            .lock()
            .iter()
            .find(|(_, r)| r.start == start)
            .expect("watched")
            .0
    };
    let fire = |cookie: u64, start: usize, end: usize| {
        m.fire(Invalidation::Cookie {
            cookie,
            hint: Range { start, end },
        })
    };
    // (entry start, pages, hint start, hint end): first page; third page of a short entry;
    // tenth page of a long one; a hint starting before the entry.
    let cases = [
        (0x100_0000, 1, 0x100_0000, 0x100_0800),
        (0x110_0000, 4, 0x110_2000, 0x110_3000),
        (0x120_0000, 16, 0x120_9000, 0x120_a000),
        (0x130_0000, 2, 0x12f_f000, 0x130_1000),
    ];
    let mut fired = Vec::new();
    for (i, &(start, pages, lo, hi)) in cases.iter().enumerate() {
        drop(c.get(start, pages * P, RW).unwrap());
        // A neighbour the hint of the last case also overlaps, under another cookie.
        drop(c.get(start + 0x8_0000, P, RW).unwrap());
        fired.push(cookie_at(start));
        fire(fired[i], lo, hi);
        let before = c.stats();
        drop(c.get(start + 0x8_0000, P, RW).unwrap());
        let after = c.stats();
        assert_eq!(after.hits, before.hits + 1, "case {i}: the neighbour stays");
        assert_eq!(
            after.invalidated,
            before.invalidated + 1,
            "case {i}: the named entry left"
        );
        drop(c.get(start, pages * P, RW).unwrap());
        assert_eq!(
            c.stats().misses,
            after.misses + 1,
            "case {i}: registered again"
        );
    }
    // A stale event (its entry is gone; the address is cached again under another cookie):
    // nothing is removed.
    assert_ne!(cookie_at(0x100_0000), fired[0]);
    let before = c.stats();
    fire(fired[0], 0x100_0000, 0x100_0800);
    drop(c.get(0x100_0000, P, RW).unwrap());
    let after = c.stats();
    assert_eq!(
        after.invalidated, before.invalidated,
        "no entry has that cookie"
    );
    assert_eq!(after.hits, before.hits + 1);
}

#[test]
fn in_use_entry_is_deregistered_only_on_last_release() {
    let (c, m, r) = setup(Config::default());
    let h1 = c.get(0x50_0000, P, RW).unwrap();
    let h2 = c.get(0x50_0000, P, RW).unwrap();
    m.fire(Invalidation::Range(Range {
        start: 0x50_0000,
        end: 0x50_1000,
    }));
    // The next lookup drains: the entry leaves the index but stays registered while in use.
    let h3 = c.get(0x50_0000, P, RW).unwrap();
    assert_ne!(
        h3.lkey(),
        h1.lkey(),
        "a new registration, not the invalidated one"
    );
    assert_eq!(r.deregistered(), 0);
    drop(h1);
    assert_eq!(r.deregistered(), 0);
    drop(h2);
    assert_eq!(r.deregistered(), 1);
    drop(h3);
    assert_eq!(c.stats().registered_entries, 1);
}

#[test]
fn false_positive_is_counted_and_entry_survives() {
    let (c, m, _r) = setup(Config::default());
    drop(c.get(0x60_0000, P, RW).unwrap());
    m.bump_only();
    drop(c.get(0x60_0000, P, RW).unwrap());
    let s = c.stats();
    assert_eq!((s.hits, s.false_positives, s.drains), (1, 1, 1));
}

#[test]
fn overlapping_requests_merge_into_one_registration() {
    let (c, _m, _r) = setup(Config::default());
    let a = c.get(0x70_0000, 2 * P, RW).unwrap();
    let b = c.get(0x70_0000 + P, 2 * P, Access::REMOTE_READ).unwrap();
    assert_eq!(
        b.range(),
        Range {
            start: 0x70_0000,
            end: 0x70_0000 + 3 * P
        }
    );
    assert!(b.access().contains(RW | Access::REMOTE_READ));
    drop((a, b));
    assert_eq!(c.cached_entries(), 1);
    // Both original requests now hit the merged entry.
    drop(c.get(0x70_0000, 2 * P, RW).unwrap());
    drop(c.get(0x70_0000 + P, 2 * P, Access::REMOTE_READ).unwrap());
    assert_eq!(c.stats().hits, 2);
}

#[test]
fn insufficient_access_is_a_miss() {
    let (c, _m, _r) = setup(Config::default());
    drop(c.get(0x80_0000, P, Access::LOCAL_WRITE).unwrap());
    drop(c.get(0x80_0000, P, Access::REMOTE_WRITE).unwrap());
    assert_eq!(c.stats().misses, 2);
    drop(
        c.get(
            0x80_0000,
            P,
            Access::REMOTE_WRITE | Access::RELAXED_ORDERING,
        )
        .unwrap(),
    );
    assert_eq!(
        c.stats().hits,
        1,
        "relaxed ordering is a hint and never blocks a hit"
    );
}

#[test]
fn lru_eviction_respects_entry_limit_and_skips_in_use() {
    let cfg = Config {
        max_entries: 3,
        ..Config::default()
    };
    let (c, _m, r) = setup(cfg);
    let pinned = c.get(0x100_0000, P, RW).unwrap();
    for i in 1..=3 {
        drop(c.get(0x100_0000 + i * 0x10_0000, P, RW).unwrap());
    }
    // 4 inserted, limit 3: the oldest unreferenced (entry 1) went, not the pinned one.
    assert_eq!(c.cached_entries(), 3);
    assert_eq!(c.stats().evictions, 1);
    drop(c.get(0x100_0000, P, RW).unwrap());
    assert_eq!(c.stats().hits, 1, "the in-use entry was kept");
    drop(c.get(0x100_0000 + 2 * 0x10_0000, P, RW).unwrap());
    assert_eq!(c.stats().hits, 2);
    drop(c.get(0x100_0000 + 0x10_0000, P, RW).unwrap());
    assert_eq!(c.stats().misses, 5, "entry 1 was the one evicted");
    drop(pinned);
    assert_eq!(r.registered() - r.deregistered(), c.cached_entries() as u64);
}

#[test]
fn lru_order_follows_hits() {
    let cfg = Config {
        max_entries: 2,
        ..Config::default()
    };
    let (c, _m, _r) = setup(cfg);
    drop(c.get(0x200_0000, P, RW).unwrap()); // A
    drop(c.get(0x300_0000, P, RW).unwrap()); // B
    drop(c.get(0x200_0000, P, RW).unwrap()); // hit A: B is now least recent
    drop(c.get(0x400_0000, P, RW).unwrap()); // C evicts B
    drop(c.get(0x200_0000, P, RW).unwrap());
    assert_eq!(c.stats().hits, 2, "A survived");
    drop(c.get(0x300_0000, P, RW).unwrap());
    assert_eq!(c.stats().misses, 4, "B was evicted");
}

#[test]
fn byte_limit_evicts() {
    let cfg = Config {
        max_bytes: 4 * P as u64,
        ..Config::default()
    };
    let (c, _m, _r) = setup(cfg);
    for i in 0..4 {
        drop(c.get(0x500_0000 + i * 0x10_0000, 2 * P, RW).unwrap());
    }
    assert!(c.stats().registered_bytes <= 4 * P as u64);
    assert_eq!(c.stats().evictions, 2);
}

/// Refuses with ENOMEM once more than `cap` registrations are live.
struct TightRegistrar {
    cap: usize,
    live: AtomicUsize,
    inner: NoopRegistrar,
}

impl Registrar for TightRegistrar {
    fn name(&self) -> &'static str {
        "tight"
    }
    fn register(&self, addr: usize, len: usize, access: Access) -> Result<Registration> {
        if self.live.load(Ordering::Relaxed) >= self.cap {
            return Err(Error::from_register_errno(libc::ENOMEM, "test memlock"));
        }
        self.live.fetch_add(1, Ordering::Relaxed);
        self.inner.register(addr, len, access)
    }
    fn deregister(&self, reg: &Registration, addr: usize, len: usize) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.inner.deregister(reg, addr, len)
    }
}

#[test]
fn memlock_exhaustion_evicts_and_retries_then_errors_clearly() {
    let mon = Arc::new(ScriptedMonitor::default());
    let reg = Arc::new(TightRegistrar {
        cap: 2,
        live: AtomicUsize::new(0),
        inner: NoopRegistrar::new(),
    });
    let c = Cache::new(Box::new(mon), reg, Config::default());
    drop(c.get(0x600_0000, P, RW).unwrap());
    let held = c.get(0x700_0000, P, RW).unwrap();
    // Full: the unused entry is evicted and the registration retried.
    let h = c.get(0x800_0000, P, RW).unwrap();
    assert_eq!(c.stats().evictions, 1);
    // Full and everything in use: a clear error, not a panic.
    let err = c.get(0x900_0000, P, RW).unwrap_err();
    assert!(err.is_resource_exhaustion(), "{err}");
    assert!(err.to_string().contains("RLIMIT_MEMLOCK"), "{err}");
    assert_eq!(err.errno(), libc::ENOMEM);
    drop((held, h));
}

#[test]
fn unwatchable_range_is_registered_per_use() {
    let (c, m, r) = setup(Config::default());
    m.refuse.store(true, Ordering::Relaxed);
    let h = c.get(0xa00_0000, P, RW).unwrap();
    assert!(!h.is_cached());
    drop(h);
    assert_eq!(
        r.deregistered(),
        1,
        "one-use registration undone at release"
    );
    drop(c.get(0xa00_0000, P, RW).unwrap());
    let s = c.stats();
    assert_eq!((s.uncacheable, s.hits, c.cached_entries()), (2, 0, 0));
}

#[test]
fn no_monitor_means_no_caching() {
    let reg = Arc::new(NoopRegistrar::new());
    let c = Cache::new(
        Box::new(crate::monitor::none::NoMonitor::new()),
        reg.clone(),
        Config::default(),
    );
    drop(c.get(0xb00_0000, P, RW).unwrap());
    drop(c.get(0xb00_0000, P, RW).unwrap());
    assert_eq!(c.stats().hits, 0);
    assert_eq!(reg.registered(), 2);
    assert_eq!(reg.deregistered(), 2);
}

#[test]
fn external_invalidate_and_flush() {
    let (c, _m, r) = setup(Config::default());
    drop(c.get(0xc00_0000, P, RW).unwrap());
    drop(c.get(0xd00_0000, P, RW).unwrap());
    let held = c.get(0xe00_0000, P, RW).unwrap();
    assert_eq!(c.invalidate(0xc00_0000 + 10, 1).unwrap(), 1);
    drop(c.get(0xc00_0000, P, RW).unwrap());
    assert_eq!(c.stats().hits, 0);
    c.flush();
    assert_eq!(c.cached_entries(), 0);
    assert_eq!(
        r.registered() - r.deregistered(),
        1,
        "the in-use entry survives the flush"
    );
    drop(held);
    assert_eq!(r.registered(), r.deregistered());
}

#[test]
fn drop_releases_everything() {
    let (c, _m, r) = setup(Config::default());
    for i in 0..10 {
        drop(c.get(0xf00_0000 + i * P * 2, P, RW).unwrap());
    }
    drop(c);
    assert_eq!(r.registered(), 10);
    assert_eq!(r.deregistered(), 10);
}

#[test]
fn negative_control_trusts_stale_entries() {
    let cfg = Config {
        danger_ignore_invalidations: true,
        ..Config::default()
    };
    let (c, m, _r) = setup(cfg);
    drop(c.get(0x1000_0000, P, RW).unwrap());
    m.fire(Invalidation::Range(Range {
        start: 0x1000_0000,
        end: 0x1000_1000,
    }));
    drop(c.get(0x1000_0000, P, RW).unwrap());
    assert_eq!(
        c.stats().hits,
        1,
        "with invalidation off the stale entry is returned"
    );
}

#[test]
fn two_threads_hit_concurrently() {
    let (c, _m, _r) = setup(Config::default());
    for i in 0..64 {
        drop(c.get(0x2000_0000 + i * 0x1_0000, P, RW).unwrap());
    }
    std::thread::scope(|s| {
        for t in 0..2 {
            let c = &c;
            s.spawn(move || {
                for n in 0..20_000usize {
                    let i = (n * 7 + t) % 64;
                    let h = c.get(0x2000_0000 + i * 0x1_0000, 100, RW).unwrap();
                    assert!(h.is_cached());
                }
            });
        }
    });
    assert_eq!(c.stats().hits, 40_000);
    assert_eq!(c.stats().misses, 64);
}

#[test]
fn fork_child_refuses_service() {
    let (c, _m, r) = setup(Config::default());
    drop(c.get(0x3000_0000, P, RW).unwrap());
    // SAFETY: the child only calls async-signal-safe functions and the cache's lookup, which
    // takes no lock that another thread of this test could hold (the test thread is alone in
    // the child), then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let before = r.deregistered();
        let refused = matches!(c.get(0x3000_0000, P, RW), Err(Error::ForkedChild))
            && matches!(c.invalidate(0x3000_0000, P), Err(Error::ForkedChild));
        c.flush();
        let code = if refused && r.deregistered() == before {
            0
        } else {
            1
        };
        // SAFETY: terminating the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child got a registration"
    );
    drop(c.get(0x3000_0000, P, RW).unwrap());
    assert_eq!(c.stats().hits, 1, "the parent is unaffected");
}

#[test]
fn owned_handle_keeps_cache_alive_and_releases() {
    let mon = Arc::new(ScriptedMonitor::default());
    let reg = Arc::new(NoopRegistrar::new());
    let c = Arc::new(Cache::new(
        Box::new(mon.clone()),
        reg.clone(),
        Config::default(),
    ));
    let h = c.get_owned(0x4000_0000, P, RW).unwrap();
    let key = h.lkey();
    drop(c);
    mon.fire(Invalidation::All);
    let c = h.cache().clone();
    drop(h);
    let h2 = c.get_owned(0x4000_0000, P, RW).unwrap();
    assert_ne!(
        h2.lkey(),
        key,
        "the invalidation reached the cache kept alive by the handle"
    );
    drop(h2);
    c.flush();
    assert_eq!(reg.registered(), reg.deregistered());
}

#[test]
fn invalidation_hook_sees_every_drained_range() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let hook = InvalidateHook(Arc::new(move |r: Range| sink.lock().push(r)));
    let (c, m, _r) = setup(Config {
        on_invalidate: Some(hook),
        ..Config::default()
    });
    drop(c.get(0x4100_0000, P, RW).unwrap());
    let r = Range {
        start: 0x4100_0000,
        end: 0x4100_1000,
    };
    m.fire(Invalidation::Range(r));
    let unrelated = Range {
        start: 0x4200_0000,
        end: 0x4200_1000,
    };
    m.fire(Invalidation::Range(unrelated));
    drop(c.get(0x4100_0000, P, RW).unwrap());
    assert_eq!(
        *seen.lock(),
        vec![r, unrelated],
        "every drained range, cached or not"
    );
}

/// A registration handed out and still held after a merge displaced its entry is watched by
/// nothing once the merged entry is evicted: the hook (the UCX bridge) must hear of the range,
/// or the cache it keeps coherent would keep the held registration's region past a change.
/// Eviction and flush pass every range they stop watching.
#[test]
fn invalidation_hook_hears_of_ranges_no_longer_watched() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let hook = InvalidateHook(Arc::new(move |r: Range| sink.lock().push(r)));
    let (c, _m, _r) = setup(Config {
        on_invalidate: Some(hook),
        max_entries: 1,
        ..Config::default()
    });
    let base = 0x4300_0000;
    let held = c.get(base, P, RW).unwrap(); // entry A, held (as UCX holds it)
    drop(c.get(base, 2 * P, RW).unwrap()); // B = A merged with the next page: A displaced
    assert!(
        seen.lock().is_empty(),
        "nothing changed, nothing evicted yet"
    );
    drop(c.get(base + 64 * P, P, RW).unwrap()); // max_entries = 1: B, unreferenced, evicted
    let covered = seen
        .lock()
        .iter()
        .any(|r| r.start <= base && base + P <= r.end);
    assert!(
        covered,
        "the held registration's range is reported once nothing watches it: {:?}",
        seen.lock()
    );
    seen.lock().clear();
    c.flush();
    assert_eq!(
        *seen.lock(),
        vec![Range {
            start: base + 64 * P,
            end: base + 65 * P,
        }],
        "flush reports what it stops watching"
    );
    drop(held);
}

/// A registrar that knows which registrations are live: deregistering one twice, or one that
/// a handle still uses, is caught by the tests below.
#[derive(Default)]
struct StrictRegistrar {
    next: AtomicU64,
    live: Mutex<std::collections::HashSet<u64>>,
    double_deregistrations: AtomicU64,
    /// The next `deregister` panics before doing anything (a misbehaving registrar).
    panic_deregister: AtomicBool,
}

impl StrictRegistrar {
    fn is_live(&self, token: u64) -> bool {
        self.live.lock().contains(&token)
    }
}

impl Registrar for StrictRegistrar {
    fn name(&self) -> &'static str {
        "strict"
    }
    fn register(&self, _addr: usize, _len: usize, _access: Access) -> Result<Registration> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.live.lock().insert(key);
        Ok(Registration {
            lkey: key as u32,
            rkey: key as u32,
            token: key,
        })
    }
    fn deregister(&self, reg: &Registration, _addr: usize, _len: usize) {
        if self.panic_deregister.swap(false, Ordering::Relaxed) {
            panic!("test: deregister panics");
        }
        if !self.live.lock().remove(&reg.token) {
            self.double_deregistrations.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn strict_setup(cfg: Config) -> (Cache, Arc<ScriptedMonitor>, Arc<StrictRegistrar>) {
    setup_with(cfg)
}

#[test]
fn handle_dropped_on_another_thread_still_deregisters_once() {
    let (c, m, r) = strict_setup(Config::default());
    drop(c.get(0x60_0000, P, RW).unwrap());
    let hit = c.get(0x60_0000, P, RW).unwrap(); // a hit: held in this thread's cell
    let token = hit.registration().token;
    m.fire(Invalidation::Range(Range {
        start: 0x60_0000,
        end: 0x60_1000,
    }));
    drop(c.get(0x70_0000, P, RW).unwrap()); // drains: the entry is retired while held
    assert!(
        r.is_live(token),
        "retired but still in use: must stay registered"
    );
    std::thread::scope(|s| {
        s.spawn(move || drop(hit));
    });
    assert!(
        !r.is_live(token),
        "the last release (on another thread) deregisters"
    );
    assert_eq!(r.double_deregistrations.load(Ordering::Relaxed), 0);
}

#[test]
fn more_handles_than_hold_cells_fall_back_to_counting() {
    let (c, m, r) = strict_setup(Config::default());
    drop(c.get(0x80_0000, P, RW).unwrap());
    let mut handles: Vec<_> = (0..3 * held::CELLS)
        .map(|_| c.get(0x80_0000, P, RW).unwrap())
        .collect();
    assert_eq!(c.stats().hits, 3 * held::CELLS as u64);
    let token = handles[0].registration().token;
    m.fire(Invalidation::Range(Range {
        start: 0x80_0000,
        end: 0x80_1000,
    }));
    drop(c.get(0x90_0000, P, RW).unwrap());
    // Release in an order that mixes cell holds and counted ones; only the last deregisters.
    let mut rng = 0x1234_5678u64;
    while !handles.is_empty() {
        assert!(r.is_live(token));
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        handles.swap_remove((rng >> 33) as usize % handles.len());
    }
    assert!(!r.is_live(token));
    assert_eq!(r.double_deregistrations.load(Ordering::Relaxed), 0);
}

#[test]
fn threads_beyond_the_slots_share_them_safely() {
    let (c, m, r) = strict_setup(Config::default());
    drop(c.get(0xa0_0000, P, RW).unwrap());
    let n = slot::SLOTS + 8;
    let all_hold = std::sync::Barrier::new(n + 1);
    let retired = std::sync::Barrier::new(n + 1);
    let token = std::thread::scope(|s| {
        for _ in 0..n {
            let (c, all_hold, retired) = (&c, &all_hold, &retired);
            s.spawn(move || {
                let h = c.get(0xa0_0000, P, RW).unwrap();
                all_hold.wait();
                retired.wait();
                drop(h);
            });
        }
        all_hold.wait();
        let token = c.get(0xa0_0000, P, RW).unwrap().registration().token;
        m.fire(Invalidation::Range(Range {
            start: 0xa0_0000,
            end: 0xa0_1000,
        }));
        drop(c.get(0xb0_0000, P, RW).unwrap());
        assert!(r.is_live(token), "{n} threads still hold it");
        retired.wait();
        token
    });
    assert!(!r.is_live(token));
    assert_eq!(r.double_deregistrations.load(Ordering::Relaxed), 0);
}

/// Hitting threads check that the registration they hold is live, while another thread
/// invalidates, flushes and evicts (small entry limit). A deregistration of a held entry, a
/// double deregistration or a leaked one fails the test.
#[test]
fn concurrent_hits_never_see_their_registration_deregistered() {
    let cfg = Config {
        max_entries: 6,
        ..Config::default()
    };
    let (c, m, r) = strict_setup(cfg);
    let base = 0x4000_0000usize;
    let stop = AtomicBool::new(false);
    let violations = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..3usize {
            let (c, r, stop, violations) = (&c, &r, &stop, &violations);
            s.spawn(move || {
                let mut n = t;
                let mut kept = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    n = n.wrapping_mul(31).wrapping_add(7);
                    let h = c.get(base + (n % 12) * 0x1_0000, P, RW).unwrap();
                    // Keep a few handles across iterations too (held cells and counts).
                    if n % 5 == 0 {
                        kept.push(h);
                        if kept.len() > 20 {
                            kept.drain(..10);
                        }
                        continue;
                    }
                    std::hint::spin_loop();
                    if !r.is_live(h.registration().token) {
                        violations.fetch_add(1, Ordering::Relaxed);
                    }
                    for k in &kept {
                        if !r.is_live(k.registration().token) {
                            violations.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        let (c, m, stop) = (&c, &m, &stop);
        s.spawn(move || {
            for i in 0..3_000usize {
                match i % 3 {
                    0 => m.fire(Invalidation::Range(Range {
                        start: base + (i % 8) * 0x1_0000,
                        end: base + (i % 8) * 0x1_0000 + P,
                    })),
                    1 => {
                        c.invalidate(base + (i % 8) * 0x1_0000, P).unwrap();
                    }
                    _ => {
                        if i % 300 == 2 {
                            c.flush();
                        }
                    }
                }
                std::thread::yield_now();
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    assert_eq!(
        violations.load(Ordering::Relaxed),
        0,
        "a held registration was deregistered"
    );
    assert_eq!(r.double_deregistrations.load(Ordering::Relaxed), 0);
    c.flush();
    assert!(
        r.live.lock().is_empty(),
        "every registration is undone after the last release"
    );
}

#[test]
fn eviction_skips_entries_held_by_hits() {
    let (c, _m, r) = strict_setup(Config {
        max_entries: 4,
        ..Config::default()
    });
    drop(c.get(0xc0_0000, P, RW).unwrap());
    let held = c.get(0xc0_0000, P, RW).unwrap(); // a hit: a cell hold, no count
    let token = held.registration().token;
    for i in 1..=8 {
        drop(c.get(0xc0_0000 + i * 0x1_0000, P, RW).unwrap());
    }
    assert!(c.stats().evictions >= 4);
    assert!(
        r.is_live(token),
        "the least recently used entry is in use: not evicted"
    );
    assert!(c.get(0xc0_0000, 64, RW).unwrap().registration().token == token);
    drop(held);
}

#[test]
fn a_release_that_erased_its_tag_is_reaped_on_the_next_slow_path() {
    let (c, m, r) = strict_setup(Config::default());
    drop(c.get(0xd0_0000, P, RW).unwrap());
    let h = c.get(0xd0_0000, P, RW).unwrap();
    let token = h.registration().token;
    m.fire(Invalidation::Range(Range {
        start: 0xd0_0000,
        end: 0xd0_1000,
    }));
    drop(c.get(0xe0_0000, P, RW).unwrap()); // drains: retired while held, its cell tagged
                                            // The lost race of held.rs: the releaser read its cell before the tag landed, then cleared
                                            // it, so it does not reap.
    let cell = h.cell.expect("a hit holds a cell");
    std::mem::forget(h);
    // SAFETY: the cell belongs to `c`, which is alive; this is the release's own store.
    unsafe { cell.as_ref() }.store(0, Ordering::Release);
    assert!(r.is_live(token), "nobody noticed the release yet");
    drop(c.get(0xf0_0000, P, RW).unwrap()); // the next miss reaps what was missed
    assert!(
        !r.is_live(token),
        "the next slow path's reap_missed deregisters it"
    );
    assert_eq!(r.double_deregistrations.load(Ordering::Relaxed), 0);
}

/// A cached entry reaped by its last holder (off the miss lock) goes back to the pool through
/// the retired list, and the next miss that would otherwise take a new chunk reuses its slot:
/// pooled memory is neither leaked nor freed twice.
#[test]
fn an_entry_reaped_by_its_holder_returns_to_the_pool() {
    let (c, _m, r) = strict_setup(Config::default());
    let chunk = pool::CHUNK;
    let at = |i: usize| 0x1000_0000 + i * 2 * P;
    let held = c.get(at(0), P, RW).unwrap();
    for i in 1..chunk {
        drop(c.get(at(i), P, RW).unwrap());
    }
    assert_eq!(c.miss.lock().pool.slots(), (chunk, 0), "one full chunk");
    assert_eq!(c.invalidate(at(0), 2 * P * chunk).unwrap(), chunk);
    assert_eq!(
        c.miss.lock().pool.slots(),
        (chunk, chunk - 1),
        "the unheld ones"
    );
    let token = held.registration().token;
    drop(held);
    assert!(!r.is_live(token), "its holder reaped it");
    assert_eq!(c.retired.lock().returned.len(), 1, "its slot handed back");
    for i in 0..chunk {
        drop(c.get(at(chunk + i), P, RW).unwrap());
    }
    assert_eq!(
        c.miss.lock().pool.slots(),
        (chunk, 0),
        "every slot reused, the returned one last: no second chunk"
    );
    assert!(c.retired.lock().returned.is_empty());
    assert_eq!(r.double_deregistrations.load(Ordering::Relaxed), 0);
}

/// Runs `f`, which must panic (a callback of the cache panics inside it), without printing the
/// panic message of the expected panic.
fn expect_panic(f: impl FnOnce()) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    assert!(r.is_err(), "the callback was expected to panic");
}

/// Issue 12 item 1: a panicking `on_invalidate` hook. The held entry must survive the unwind
/// (its handle still reads its own range and its registration stays live), be deregistered
/// exactly once after its release, and nothing may leak.
#[test]
fn panicking_hook_frees_no_held_entry_and_leaks_nothing() {
    let armed = Arc::new(AtomicBool::new(false));
    let trip = armed.clone();
    let hook = InvalidateHook(Arc::new(move |_r: Range| {
        if trip.swap(false, Ordering::Relaxed) {
            panic!("test: the invalidation hook panics");
        }
    }));
    let (c, m, r) = strict_setup(Config {
        on_invalidate: Some(hook),
        ..Config::default()
    });
    let a = Range {
        start: 0x110_0000,
        end: 0x110_0000 + P,
    };
    drop(c.get(a.start, P, RW).unwrap());
    let counted = c.get(a.start, P, RW).unwrap(); // a hit: a cell hold
    let token = counted.registration().token;
    drop(c.get(0x120_0000, P, RW).unwrap()); // unused, invalidated with it
    m.fire(Invalidation::All);
    armed.store(true, Ordering::Relaxed);
    expect_panic(|| drop(c.get(0x130_0000, P, RW)));
    // Reuse freed memory, if any was freed: new entries of the same size.
    let others: Vec<_> = (0..8)
        .map(|i| c.get(0x200_0000 + i * 0x10_0000, P, RW).unwrap())
        .collect();
    assert_eq!(counted.range(), a, "the held entry was freed by the unwind");
    assert!(r.is_live(token), "held: must stay registered");
    drop(counted);
    drop(others);
    drop(c.get(0x140_0000, P, RW).unwrap()); // a slow path: reap_missed
    assert!(!r.is_live(token), "released after retirement: deregistered");
    c.flush();
    assert!(r.live.lock().is_empty(), "a registration leaked");
    assert_eq!(r.double_deregistrations.load(Ordering::Relaxed), 0);
}

/// Issue 12 item 1: `Monitor::unwatch` panicking in the middle of a retire loop must not drop
/// the entries not yet retired (one of them held).
#[test]
fn panicking_unwatch_frees_no_held_entry_and_leaks_nothing() {
    let (c, m, r) = strict_setup(Config::default());
    let lo = Range {
        start: 0x150_0000,
        end: 0x150_0000 + P,
    };
    drop(c.get(lo.start, P, RW).unwrap());
    drop(c.get(0x160_0000, P, RW).unwrap());
    let held = c.get(0x160_0000, P, RW).unwrap(); // retired second
    let lo_held = c.get(lo.start, P, RW).unwrap(); // retired first: its unwatch panics
    let token = held.registration().token;
    let range = held.range();
    m.fire(Invalidation::All);
    m.panic_unwatch.store(true, Ordering::Relaxed);
    expect_panic(|| drop(c.get(0x170_0000, P, RW)));
    let others: Vec<_> = (0..8)
        .map(|i| c.get(0x200_0000 + i * 0x10_0000, P, RW).unwrap())
        .collect();
    assert_eq!(
        held.range(),
        range,
        "the held entry was freed by the unwind"
    );
    assert_eq!(lo_held.range(), lo);
    assert!(r.is_live(token));
    drop((held, lo_held, others));
    drop(c.get(0x180_0000, P, RW).unwrap());
    assert!(!r.is_live(token), "released after retirement: deregistered");
    c.flush();
    assert!(r.live.lock().is_empty(), "a registration leaked");
    assert_eq!(r.double_deregistrations.load(Ordering::Relaxed), 0);
}

/// Issue 12 item 1: `Registrar::deregister` panicking while a retire loop deregisters an
/// unused entry must not free the held entries retired after it. (The registration whose
/// deregistration panicked is the registrar's to account for: the cache does not retry it.)
#[test]
fn panicking_deregister_frees_no_held_entry() {
    let (c, m, r) = strict_setup(Config::default());
    drop(c.get(0x190_0000, P, RW).unwrap()); // unused: deregistered at once, panics
    let lost = c.get(0x190_0000, 64, RW).unwrap().registration().token;
    drop(c.get(0x1a0_0000, P, RW).unwrap());
    let held = c.get(0x1a0_0000, P, RW).unwrap();
    let token = held.registration().token;
    let range = held.range();
    m.fire(Invalidation::All);
    r.panic_deregister.store(true, Ordering::Relaxed);
    expect_panic(|| drop(c.get(0x1b0_0000, P, RW)));
    let others: Vec<_> = (0..8)
        .map(|i| c.get(0x200_0000 + i * 0x10_0000, P, RW).unwrap())
        .collect();
    assert_eq!(
        held.range(),
        range,
        "the held entry was freed by the unwind"
    );
    assert!(r.is_live(token));
    drop((held, others));
    drop(c.get(0x1c0_0000, P, RW).unwrap());
    assert!(!r.is_live(token), "released after retirement: deregistered");
    c.flush();
    r.live.lock().remove(&lost);
    assert!(r.live.lock().is_empty(), "a registration leaked");
    assert_eq!(r.double_deregistrations.load(Ordering::Relaxed), 0);
}

/// A no-op registrar whose next registration fails with ENOMEM when `fail_next` is set.
#[derive(Default)]
struct FlakyRegistrar {
    fail_next: AtomicBool,
    inner: NoopRegistrar,
}

impl Registrar for FlakyRegistrar {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn register(&self, addr: usize, len: usize, access: Access) -> Result<Registration> {
        if self.fail_next.swap(false, Ordering::Relaxed) {
            return Err(Error::from_register_errno(libc::ENOMEM, "test memlock"));
        }
        self.inner.register(addr, len, access)
    }
    fn deregister(&self, reg: &Registration, addr: usize, len: usize) {
        self.inner.deregister(reg, addr, len)
    }
}

/// Issue 12 item 2 (then with LRU stamps; now the used bit and a list linked through the
/// entries, index.rs): X at S is hit (used), the registrar's ENOMEM makes `evict_lru` move X to the back
/// (busy, kept), then a merge inserts Y at S and retires X. The list must link Y, not what X
/// left behind at the same start, or Y is never evicted.
#[test]
fn a_merge_replacing_a_refiled_entry_keeps_the_new_entry_evictable() {
    let (c, _m, r) = setup_with::<FlakyRegistrar>(Config {
        max_entries: 1,
        ..Config::default()
    });
    let s = 0x300_0000;
    drop(c.get(s, P, RW).unwrap()); // X, not used yet
    let hx = c.get(s, P, RW).unwrap(); // a hit marks X used and keeps X busy
    r.fail_next.store(true, Ordering::Relaxed);
    // Y = X merged with the next page: ENOMEM -> evict_lru moves X to the back (busy, kept),
    // retry succeeds, Y is inserted at S and X retired.
    let hy = c.get(s, 2 * P, RW).unwrap();
    assert_eq!(hy.range().start, s);
    assert_eq!(c.stats().evictions, 0);
    drop((hx, hy));
    for i in 1..=4 {
        drop(c.get(s + i * 0x10_0000, P, RW).unwrap());
    }
    assert_eq!(c.cached_entries(), 1, "max_entries = 1");
    drop(c.get(s, 2 * P, RW).unwrap());
    assert_eq!(
        c.stats().hits,
        1,
        "Y was evicted by the 4 newer inserts: only X's hit counts"
    );
}

/// Issue 12 item 6: in a fork child, dropping a handle (whose release would reap) and asking
/// `cached_entries()` must take no lock another parent thread could have held at fork() (here:
/// the retired list's lock and the index write lock, held by another thread across the fork), and
/// `is_caching()` must say false. The child must exit promptly; a hang fails the test.
#[test]
fn fork_child_takes_no_lock_a_parent_thread_held() {
    let (c, m, _r) = strict_setup(Config::default());
    drop(c.get(0x3100_0000, P, RW).unwrap());
    let hit = c.get(0x3100_0000, P, RW).unwrap(); // a cell hold
    let counted = c.get(0x3200_0000, P, RW).unwrap(); // a miss: a counted reference
    m.fire(Invalidation::All);
    drop(c.get(0x3300_0000, P, RW).unwrap()); // drains: both retired while held
    let locked = std::sync::Barrier::new(2);
    let forked = std::sync::Barrier::new(2);
    let pid = std::thread::scope(|s| {
        s.spawn(|| {
            let _w = c.index.write();
            let _z = c.retired.lock();
            locked.wait();
            forked.wait();
        });
        locked.wait();
        // SAFETY: the child only runs the cache code under test (which must take no lock) and
        // _exits; the parent waits for it with a deadline.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut code = 0;
            if c.is_caching() {
                code |= 1;
            }
            drop(hit); // a tagged cell: would reap
            drop(counted); // the last counted reference of a retired entry: would reap
            if c.cached_entries() != 0 {
                code |= 2;
            }
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        forked.wait();
        pid
    });
    assert!(pid > 0);
    let t = std::time::Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if t.elapsed() > std::time::Duration::from_secs(5) {
            // SAFETY: kills our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: reaps it.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            panic!("the fork child deadlocked on a lock a parent thread held at fork()");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    let code = libc::WEXITSTATUS(status);
    assert_eq!(code & 1, 0, "is_caching() said true in a fork child");
    assert_eq!(
        code & 2,
        0,
        "cached_entries() in a fork child must be 0 (disabled)"
    );
}

#[test]
fn drains_with_events_are_timed_and_empty_drains_are_not() {
    let (c, m, _r) = setup(Config::default());
    drop(c.get(0x90_0000, P, RW).unwrap());
    // An empty drain (the counter moved, nothing queued): counted, not timed.
    m.bump_only();
    drop(c.get(0x90_0000, P, RW).unwrap());
    let s = c.stats();
    assert_eq!(s.drains, 1);
    assert_eq!(
        s.drain_latency.iter().sum::<u64>(),
        0,
        "an empty drain is not timed"
    );
    assert_eq!(s.drain_ns, 0);
    // A drain that reads an event (and drops the entry): timed once.
    m.fire(Invalidation::Range(Range {
        start: 0x90_0000,
        end: 0x90_1000,
    }));
    drop(c.get(0x90_0000, P, RW).unwrap());
    let s = c.stats();
    assert_eq!((s.drains, s.invalidated), (2, 1));
    assert_eq!(s.drain_latency.iter().sum::<u64>(), 1, "one timed drain");
    assert!(s.drain_ns > 0, "a drain takes some time");
    assert_eq!(s.registration_latency.iter().sum::<u64>(), s.registrations);
}

#[test]
fn a_drain_longer_than_a_chunk_applies_every_event() {
    // Three chunks and a rest (DRAIN_CHUNK), some entries held across the drain, one entry
    // no event names: every named one leaves, the held ones are deregistered on release.
    let (c, m, r) = setup(Config::default());
    let n = 3 * DRAIN_CHUNK + 7;
    let addr = |i: usize| 0x1000_0000 + i * 2 * P;
    let mut held = Vec::new();
    for i in 0..n {
        let h = c.get(addr(i), P, RW).unwrap();
        if i % 100 == 0 {
            held.push(h);
        }
    }
    let spared = c.get(addr(n), P, RW).unwrap().lkey();
    for i in 0..n {
        m.fire(Invalidation::Range(Range {
            start: addr(i),
            end: addr(i) + P,
        }));
    }
    // A hit on the spared entry would skip the drain: a new range drains.
    drop(c.get(addr(n + 1), P, RW).unwrap());
    let s = c.stats();
    assert_eq!(s.invalidated, n as u64);
    assert_eq!(c.cached_entries(), 2, "the spared entry and the new one");
    assert_eq!(r.deregistered(), (n - held.len()) as u64);
    assert_eq!(
        m.watched.lock().len(),
        2,
        "every named entry unwatched, held or not"
    );
    drop(held);
    // The next slow path reaps what its releasers may have missed (life.rs).
    drop(c.get(addr(n + 2), P, RW).unwrap());
    assert_eq!(r.deregistered(), n as u64);
    assert_eq!(c.get(addr(n), P, RW).unwrap().lkey(), spared);
    for i in 0..n {
        assert!(c.get(addr(i), P, RW).unwrap().is_cached());
    }
    assert_eq!(
        c.stats().misses,
        s.misses + 1 + n as u64,
        "no stale entry hit"
    );
}

/// A callout unwinding in the retire of a drain's first chunk leaves the entries of the later
/// chunks' events in the index, those events consumed: no hit may return one of them.
#[test]
fn panicking_unwatch_in_a_chunk_leaves_no_stale_entry() {
    let (c, m, r) = strict_setup(Config::default());
    let n = DRAIN_CHUNK + 10;
    let addr = |i: usize| 0x4000_0000 + i * 2 * P;
    let tokens: Vec<u64> = (0..n)
        .map(|i| c.get(addr(i), P, RW).unwrap().registration().token)
        .collect();
    for i in 0..n {
        m.fire(Invalidation::Range(Range {
            start: addr(i),
            end: addr(i) + P,
        }));
    }
    m.panic_unwatch.store(true, Ordering::Relaxed);
    expect_panic(|| drop(c.get(addr(n), P, RW)));
    for (i, &old) in tokens.iter().enumerate() {
        let h = c.get(addr(i), P, RW).unwrap();
        assert_ne!(
            h.registration().token,
            old,
            "event {i}'s entry was returned"
        );
    }
    assert!(
        !c.is_caching(),
        "caching stops: the index cannot be trusted"
    );
    c.flush();
    assert!(r.live.lock().is_empty(), "a registration leaked");
    assert_eq!(r.double_deregistrations.load(Ordering::Relaxed), 0);
}
