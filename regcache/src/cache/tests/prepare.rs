//! `Registrar::prepare` / `settle` (issue 11): what a registrar does to the VMA before the watch
//! is not a change of the new registration; every attempt pairs them.

use super::*;

/// A registrar that disturbs the range it registers like rdma-core with fork protection on
/// (MADV_DONTFORK splits the VMA; the kernel reports every watch overlapping the 2 MiB around
/// it): in `prepare` when `early`, else inside `register` (where rdma-core does it itself).
struct Splitter {
    mon: Arc<ScriptedMonitor>,
    early: bool,
    fail_next: AtomicBool,
    log: Mutex<Vec<&'static str>>,
    inner: NoopRegistrar,
}

impl Splitter {
    fn new(mon: &Arc<ScriptedMonitor>, early: bool) -> Arc<Self> {
        Arc::new(Splitter {
            mon: mon.clone(),
            early,
            fail_next: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
            inner: NoopRegistrar::new(),
        })
    }

    /// What ummunotify reports for a split at `addr`: every watch within its 2 MiB block.
    fn split(&self, addr: usize) {
        let block = Range {
            start: addr & !0x1f_ffff,
            end: (addr & !0x1f_ffff) + 0x20_0000,
        };
        let hits: Vec<(u64, Range)> = self
            .mon
            .watched
            .lock()
            .iter()
            .filter(|(_, r)| r.start < block.end && block.start < r.end)
            .map(|(&c, &r)| (c, r))
            .collect();
        for (cookie, hint) in hits {
            self.mon.fire(Invalidation::Cookie { cookie, hint });
        }
        self.mon.bump_only();
    }

    fn watched(&self, addr: usize) -> bool {
        self.mon.watched.lock().values().any(|r| r.start == addr)
    }
}

impl Registrar for Splitter {
    fn name(&self) -> &'static str {
        "splitter"
    }
    fn prepare(&self, addr: usize, _len: usize) {
        assert!(!self.watched(addr), "prepare must come before the watch");
        self.log.lock().push("prepare");
        if self.early {
            self.split(addr);
        }
    }
    fn register(&self, addr: usize, len: usize, access: Access) -> Result<Registration> {
        // Watched (a miss attempt) or not (one-use, after every attempt failed).
        let w = self.watched(addr);
        self.log
            .lock()
            .push(if w { "register" } else { "register unwatched" });
        if !self.early {
            self.split(addr);
        }
        if self.fail_next.swap(false, Ordering::Relaxed) {
            return Err(Error::from_register_errno(libc::EFAULT, "test"));
        }
        self.inner.register(addr, len, access)
    }
    fn settle(&self, _addr: usize, _len: usize) {
        self.log.lock().push("settle");
    }
    fn deregister(&self, reg: &Registration, addr: usize, len: usize) {
        self.inner.deregister(reg, addr, len)
    }
}

fn cache_with(early: bool) -> (Cache, Arc<ScriptedMonitor>, Arc<Splitter>) {
    let mon = Arc::new(ScriptedMonitor::default());
    let reg = Splitter::new(&mon, early);
    let c = Cache::new(Box::new(mon.clone()), reg.clone(), Config::default());
    (c, mon, reg)
}

#[test]
fn a_split_made_in_prepare_does_not_strike_the_new_registration() {
    let (c, _m, r) = cache_with(true);
    let h = c.get(0x4000_0000, 16 * P, RW).unwrap();
    assert!(h.is_cached());
    drop(h);
    assert!(c.get(0x4000_0000, 16 * P, RW).unwrap().is_cached());
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.uncacheable), (1, 1, 0), "{s:?}");
    assert_eq!(*r.log.lock(), ["prepare", "register", "settle"]);
}

/// Negative control: the same split inside `register` (after the watch) strikes every attempt,
/// so the registration ends one-use, as the shim saw under UCX before prepare existed.
#[test]
fn the_same_split_inside_register_makes_it_one_use() {
    let (c, _m, r) = cache_with(false);
    let h = c.get(0x4000_0000, 16 * P, RW).unwrap();
    assert!(!h.is_cached());
    assert_eq!(c.stats().uncacheable, 1);
    let log = r.log.lock();
    assert_eq!(log.last(), Some(&"register unwatched"));
    assert!(log.len() > 4, "attempts were retried first: {log:?}");
}

#[test]
fn a_failed_registration_is_settled_after_the_unwatch() {
    let (c, m, r) = cache_with(true);
    r.fail_next.store(true, Ordering::Relaxed);
    assert!(c.get(0x4000_0000, P, RW).is_err());
    assert_eq!(*r.log.lock(), ["prepare", "register", "settle"]);
    assert!(m.watched.lock().is_empty());
}

#[test]
fn a_refused_watch_is_settled_without_registering_there() {
    let (c, m, r) = cache_with(true);
    m.refuse.store(true, Ordering::Relaxed);
    let h = c.get(0x4000_0000, P, RW).unwrap();
    assert!(!h.is_cached());
    // The one-use registration is never watched, so it is not prepared.
    assert_eq!(*r.log.lock(), ["prepare", "settle", "register unwatched"]);
}
