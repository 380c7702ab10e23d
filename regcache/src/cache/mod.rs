//! The registration cache: lookup, reference counts, deferred deregistration, eviction.
//!
//! Hit path (no mutex, and no write to any line another thread writes): one relaxed load of the
//! fork generation, the monitor's counter compared with the value of the last drain (two acquire
//! loads, after asking the monitor `settled()` if it needs that: userfaultfd), then the index
//! read lock (a big-reader lock: each thread marks only its own cache line), one hash probe and
//! a plain store of the entry into one of the thread's hold cells (held.rs); the read lock's
//! exit store counts the hit (brlock.rs). The release clears the cell.
//!
//! When an entry leaves the index and who deregisters it (live → retired → reaped, and
//! eviction): life.rs, the one place that decides.
//!
//! Everything else (misses, drains, invalidations, eviction) is serialised by one miss lock, so
//! the monitor is drained by one thread at a time and a registration in flight cannot race with
//! the drain that would invalidate it. The index write lock is taken only for the instant an
//! entry is inserted or removed, never across a registrar or monitor call.
//!
//! Overlapping requests are merged into one registration covering both (as UCX's rcache does):
//! the index stays disjoint, so a lookup is one probe, and buffers that share pages converge to
//! one registration instead of evicting each other. A merge that the registrar refuses (a hole in
//! the hull is unmapped, or it exceeds `Config::max_merge`) falls back to the request alone.

mod brlock;
mod clock;
mod entry;
pub(crate) mod fork;
mod held;
mod index;
mod life;
mod park;
mod pool;
mod recent;
mod reval;
mod slot;
mod stats;

pub use stats::StatsSnapshot;

use crate::error::{Error, Result};
use crate::monitor::{Invalidation, Monitor, MonitorKind, WatchError};
use crate::range::Range;
use crate::registrar::{Access, Prepared, Registrar, Registration};
use brlock::BrLock;
use crossbeam_utils::CachePadded;
use entry::{Entry, EntryPtr};
use held::Held;
use index::{Index, Registered, Unindexed};
use park::WatchSource;
use parking_lot::Mutex;
use reval::Cookies;
use stats::{Hot, MissLocked, Stats};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Limits and switches of a cache.
#[derive(Clone, Debug)]
pub struct Config {
    /// Most registrations kept cached (unreferenced ones beyond it are evicted, LRU first).
    /// It also bounds the entries' memory: ~90-120 bytes per cached entry, of which the
    /// 48-byte entries stay allocated at the peak count until the cache drops (pool.rs).
    pub max_entries: usize,
    /// Most bytes kept registered by cached entries (LRU eviction beyond it).
    pub max_bytes: u64,
    /// Largest registration a merge of overlapping requests may create.
    pub max_merge: usize,
    /// TEST ONLY — the negative control: never check the monitor, so cached registrations are
    /// trusted after their memory was unmapped. Exists to prove the oracles detect staleness.
    pub danger_ignore_invalidations: bool,
    /// TEST ONLY — the negative control of revalidation: every CHECK is taken as "unchanged",
    /// so an entry whose pages were replaced is kept. Only acts when the monitor revalidates
    /// (reval.rs); exists to prove the oracle detects a wrong "unchanged".
    pub danger_revalidate_unchanged: bool,
    /// Called with every range the monitor reports changed (for bridges that keep another
    /// cache coherent, e.g. UCX's ucm_vm_munmap), and with every range the cache stops
    /// watching without a report: an evicted entry, or every entry on `flush`. (A registration
    /// handed out earlier may lie inside such a range without being that entry: one a merge
    /// displaced, still held. Nothing watches it any more, so the other cache must drop it.)
    /// Runs on the thread that drains, evicts or flushes, under the cache's miss lock: it must
    /// not call back into this cache.
    ///
    /// It should not panic. If it does, the panic propagates out of the call that drained
    /// (`get`, `sync`...) after the cache has put its own state in order: the invalidated
    /// entries have already left the index and been retired (none is freed or deregistered
    /// while a handle holds it, none leaks), and the cache keeps working. What is lost is the
    /// hook's own view: the ranges of that drain after the one that panicked are not passed to
    /// it, so the cache it keeps coherent may be stale. (The C ABI's callbacks are C functions,
    /// which cannot unwind; every C entry point catches panics.)
    pub on_invalidate: Option<InvalidateHook>,
}

/// See `Config::on_invalidate`.
#[derive(Clone)]
pub struct InvalidateHook(pub Arc<dyn Fn(Range) + Send + Sync>);

impl std::fmt::Debug for InvalidateHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InvalidateHook")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_entries: 8192,
            max_bytes: default_max_bytes(),
            max_merge: 1 << 30,
            danger_ignore_invalidations: false,
            danger_revalidate_unchanged: false,
            on_invalidate: None,
        }
    }
}

/// Three quarters of RLIMIT_MEMLOCK when it is finite and binding (leaving room for the
/// application's own pinned memory), else 16 GiB. With CAP_IPC_LOCK the limit does not apply to
/// pinning, so it is not a reason to evict.
fn default_max_bytes() -> u64 {
    const UNBOUNDED: u64 = 16 << 30;
    if has_cap_ipc_lock() {
        return UNBOUNDED;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct rlimit through a valid pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY {
        (lim.rlim_cur / 4 * 3).max(1 << 20)
    } else {
        UNBOUNDED
    }
}

/// Whether this process may pin memory beyond RLIMIT_MEMLOCK (CAP_IPC_LOCK in CapEff).
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// State serialised by the miss lock.
#[derive(Default)]
struct MissState {
    /// Ranges recently invalidated, to count re-registrations (bounded, recent.rs).
    recent: recent::Recent,
    scratch: Vec<Invalidation>,
    /// `insert`'s eviction victims, kept between misses (empty outside `insert`) so that a miss
    /// at the entry limit allocates nothing for them.
    victims: Vec<Unindexed>,
    /// The memory of cached entries (pool.rs).
    pool: pool::Pool,
    /// Proof of holding the miss lock, for the statistics only its holder writes (stats.rs).
    locked: MissLocked,
    /// `drain`'s lists of the entries to remove and removed, kept between drains (empty
    /// outside `drain`).
    drain_starts: Vec<usize>,
    drain_removed: Vec<Unindexed>,
    /// `drain`'s list of the removed entries whose watch may be parked (park.rs).
    drain_park: Vec<Unindexed>,
    /// `drain`'s list of the reported entries to CHECK (reval.rs): cookie, and start in the
    /// index (`None`: the registration in flight).
    drain_check: Vec<(u64, Option<usize>)>,
    /// Watches kept from churned entries for the next registration of the same range.
    parked: park::Parked,
}

/// A drain removes and retires entries this many events at a time (`Cache::drain_events`): the
/// records, entries and list items of a chunk (~140 bytes an entry) stay in the CPU's L1/L2.
const DRAIN_CHUNK: usize = 256;

/// Takes the `victims` (starts) out of the index, into `parkable` (not hit since cached, when
/// `parks`) or `removed`. An entry named by two events is removed once (the second finds
/// nothing).
// Always inlined: its two calls are the drain's (a call made a churned miss 60 instructions
// dearer).
#[inline(always)]
fn unindex(
    idx: &mut Index,
    victims: &mut Vec<usize>,
    removed: &mut Vec<Unindexed>,
    parkable: &mut Vec<Unindexed>,
    parks: bool,
) {
    for &s in victims.iter() {
        if let Some((u, used)) = idx.remove_noting_use(s) {
            if parks && !used {
                parkable.push(u);
            } else {
                removed.push(u);
            }
        }
    }
    victims.clear();
}

/// Sets the flag when dropped (`Cache::broken`); forgotten on the path that completes.
struct BreakOnUnwind<'a>(&'a AtomicBool);

impl Drop for BreakOnUnwind<'_> {
    fn drop(&mut self) {
        eprintln!("regcache: a callout unwound in the middle of a drain; caching disabled");
        // Relaxed: as the monitor's failure (`drain_events`); `drained` is not stored, so no
        // hit trusts the index again whatever this store's visibility.
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What a miss registers, from one search of the entries overlapping the request (`merge_hull`).
struct MissPlan {
    /// The range to register (the request's pages, merged with overlapping entries if allowed).
    hull: Range,
    access: Access,
    /// Some entry overlapped the request (it must be displaced, or the request stands alone).
    merged: bool,
    /// An entry contains the request with the rights asked: a lookup would hit.
    contains_req: bool,
}

impl MissPlan {
    /// The request's pages alone: what the plan is when no entry overlaps them.
    fn alone(aligned: Range, access: Access) -> Self {
        MissPlan {
            hull: aligned,
            access,
            merged: false,
            contains_req: false,
        }
    }
}

/// What a `drain` is for, and what its answer means.
#[derive(Clone, Copy)]
enum DrainFor {
    /// Bringing the index up to date (the answer is always false).
    Sync,
    /// A request for these pages (page-aligned), about to be looked up again or missed. The
    /// answer: the drain removed an entry of exactly these pages. Then no entry overlaps them
    /// until the next insert (entries are disjoint, index.rs; inserts happen only in a miss
    /// under the miss lock the caller holds), so the miss needs no search of the index, and the
    /// range was not remembered as invalidated: the miss that follows re-registers it.
    Request(Range),
    /// A registration not yet in the index: the id of its entry-to-be (the cookie, with
    /// UNARMED under a kept watch) and its range. The answer: an invalidation touched it.
    Pending(u64, Range),
}

const RACE_RETRIES: usize = 3;

/// Longest range the cache keeps (an index record's length field, index.rs).
fn max_entry_len() -> usize {
    index::MAX_PAGES.saturating_mul(crate::range::page_size())
}

/// A registration cache over one monitor and one registrar.
pub struct Cache {
    /// The monitor's generation counter (points into `monitor`, which outlives every use).
    counter: NonNull<AtomicU64>,
    /// Counter value up to which invalidations have been applied to the index.
    drained: CachePadded<AtomicU64>,
    index: BrLock<Index>,
    /// Per-thread cells recording which entries hits hold.
    held: Held,
    miss: Mutex<MissState>,
    /// Retired entries (out of the index, maybe still referenced) and one-use registrations,
    /// by id. Its lock serialises the decision to reap one (life.rs).
    retired: Mutex<life::RetiredList>,
    /// The retired list's recheck list is not empty (life.rs, `note_recheck`).
    recheck_pending: AtomicBool,
    /// Next id of a cached entry (its watch cookie). Taken only under the miss lock, so a load
    /// and a store, no locked add (one-use registrations count their own ids, `next_one_use`).
    next_id: AtomicU64,
    /// Next id of a one-use registration (taken with or without the miss lock); unique
    /// against cached ids by `Entry::one_use`'s top bit.
    next_one_use: AtomicU64,
    /// The monitor must be asked `settled()` before each counter load (userfaultfd).
    settle_check: bool,
    /// Set when the monitor failed: everything was flushed and caching stays off.
    broken: AtomicBool,
    fork_gen: u64,
    stats: Stats,
    /// The latency histograms' clock (clock.rs).
    clock: &'static clock::Clock,
    cfg: Config,
    registrar: Arc<dyn Registrar>,
    monitor: Box<dyn Monitor>,
}

// SAFETY: `counter` points into `monitor`, which is Send + Sync and owned by the cache; all other
// fields are Send + Sync. Entries are shared through locks and atomics only.
unsafe impl Send for Cache {}
// SAFETY: as above.
unsafe impl Sync for Cache {}

/// A reference to a registration covering a requested range. The registration stays valid (is
/// not deregistered) until the handle is dropped, even if the memory is unmapped meanwhile.
pub struct Handle<'c> {
    cache: &'c Cache,
    entry: NonNull<Entry>,
    /// The hold cell recording this reference, or `None` for a counted reference.
    cell: held::HoldCell,
    /// What the entry registered (a hit copies it from the index record, not the entry).
    reg: Registered,
}

// SAFETY: the entry's fields are immutable after creation except atomics; the entry lives until
// the last handle is released (life.rs), so the pointer may move between threads. The
// cell is an atomic in the cache, cleared by an atomic store from whichever thread drops.
unsafe impl Send for Handle<'_> {}
// SAFETY: as above; &Handle only reads immutable fields.
unsafe impl Sync for Handle<'_> {}

/// Accessors and Drop shared by both handle types (each has `entry: NonNull<Entry>` and a
/// `cache` field that derefs to `Cache`).
macro_rules! handle_accessors {
    ($t:ty) => {
        impl $t {
            pub fn registration(&self) -> Registration {
                Registration {
                    lkey: self.reg.lkey,
                    rkey: self.reg.rkey,
                    token: self.entry().token,
                }
            }

            pub fn lkey(&self) -> u32 {
                self.reg.lkey
            }

            pub fn rkey(&self) -> u32 {
                self.reg.rkey
            }

            /// The registered range (page-aligned, containing the request).
            pub fn range(&self) -> Range {
                self.reg.range
            }

            pub fn access(&self) -> Access {
                self.reg.access
            }

            /// False for a one-use registration (not cached; deregistered when the handle drops).
            pub fn is_cached(&self) -> bool {
                self.entry().watched()
            }

            fn entry(&self) -> &Entry {
                // SAFETY: this handle holds a reference (a hold cell or a count in the entry's
                // state word), so the entry is not freed before the handle's Drop releases it.
                unsafe { self.entry.as_ref() }
            }
        }

        impl Drop for $t {
            #[inline]
            fn drop(&mut self) {
                self.cache.release(self.entry, self.cell);
            }
        }
    };
}

handle_accessors!(Handle<'_>);
handle_accessors!(OwnedHandle);

/// A handle that keeps its cache alive (an `Arc` clone): for the C ABI and other callers whose
/// handles cannot borrow the cache. Costs one more atomic increment than `Handle`.
pub struct OwnedHandle {
    cache: Arc<Cache>,
    entry: NonNull<Entry>,
    cell: held::HoldCell,
    reg: Registered,
}

// SAFETY: as for Handle.
unsafe impl Send for OwnedHandle {}
// SAFETY: as for Handle.
unsafe impl Sync for OwnedHandle {}

impl OwnedHandle {
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }
}

impl std::fmt::Debug for Handle<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("range", &self.range())
            .field("lkey", &self.lkey())
            .field("cached", &self.is_cached())
            .finish()
    }
}

impl Cache {
    /// Builds a cache. With a monitor that cannot cache (`none`), every request is registered for
    /// its use only.
    pub fn new(monitor: Box<dyn Monitor>, registrar: Arc<dyn Registrar>, cfg: Config) -> Self {
        let counter = NonNull::from(monitor.counter());
        // Acquire: pairs with the monitor's increments; we start from the current value, so
        // only invalidations after this point matter (nothing is cached yet).
        let start = monitor.counter().load(Ordering::Acquire);
        Cache {
            counter,
            drained: CachePadded::new(AtomicU64::new(start)),
            index: BrLock::new(Index::default()),
            held: Held::new(),
            miss: Mutex::new(MissState::default()),
            retired: Mutex::new(life::RetiredList::default()),
            recheck_pending: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            next_one_use: AtomicU64::new(1),
            settle_check: monitor.needs_settle_check(),
            broken: AtomicBool::new(false),
            fork_gen: fork::generation(),
            stats: Stats::new(),
            clock: clock::global(),
            cfg,
            registrar,
            monitor,
        }
    }

    pub fn monitor_kind(&self) -> MonitorKind {
        self.monitor.kind()
    }

    pub fn registrar_name(&self) -> &'static str {
        self.registrar.name()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether requests are cached: a monitor that can cache, not broken, and not in a fork
    /// child of the process that built the cache.
    pub fn is_caching(&self) -> bool {
        // Relaxed: a status report; the paths that act on it re-check under the miss lock.
        self.monitor.can_cache() && !self.broken.load(Ordering::Relaxed) && !self.in_fork_child()
    }

    /// Whether this process is a fork child of the one that built the cache. A child must
    /// never take one of the cache's locks: another thread of the parent may have held it at
    /// fork(), and that thread does not exist in the child to release it.
    #[inline]
    fn in_fork_child(&self) -> bool {
        fork::current() != self.fork_gen
    }

    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            hits: self.index.tally(),
            ..self.stats.snapshot()
        }
    }

    /// A registration covering `[addr, addr+len)` with at least `access`.
    #[inline]
    pub fn get(&self, addr: usize, len: usize, access: Access) -> Result<Handle<'_>> {
        let req = Range::new(addr, len)?;
        if self.in_fork_child() {
            return Err(Error::ForkedChild);
        }
        if self.fresh() {
            let slot = slot::current();
            if let Some(h) = self.lookup_at(slot, req, access) {
                return Ok(h);
            }
        }
        self.get_slow(req, access)
    }

    /// As `get`, returning a handle that owns a reference to the cache.
    pub fn get_owned(
        self: &Arc<Self>,
        addr: usize,
        len: usize,
        access: Access,
    ) -> Result<OwnedHandle> {
        let h = self.get(addr, len, access)?;
        let (entry, cell, reg) = (h.entry, h.cell, h.reg);
        // The reference moves into the OwnedHandle, which releases it on drop.
        std::mem::forget(h);
        Ok(OwnedHandle {
            cache: Arc::clone(self),
            entry,
            cell,
            reg,
        })
    }

    /// True when no invalidation can be pending: the monitor's counter equals the drained value.
    #[inline]
    fn fresh(&self) -> bool {
        if self.cfg.danger_ignore_invalidations {
            return true;
        }
        // Before the counter: see Monitor::settled (an event the kernel prepared but did not
        // yet deliver must not let us trust the counter).
        if self.settle_check && !self.monitor.settled() {
            return false;
        }
        // SAFETY: `counter` points into `self.monitor`, alive as long as `self`.
        let counter = unsafe { self.counter.as_ref() };
        // Acquire (both): the counter pairs with the monitor's release increment (or the
        // kernel's store); `drained` pairs with the release store made after the drained
        // invalidations were removed from the index, so a match guarantees we see that removal.
        counter.load(Ordering::Acquire) == self.drained.load(Ordering::Acquire)
    }

    #[inline]
    fn lookup(&self, req: Range, access: Access) -> Option<Handle<'_>> {
        self.lookup_at(slot::current(), req, access)
    }

    /// A hit: a handle on the cached entry containing `req`, counted as a hit (in the index
    /// lock's tally, see brlock.rs).
    #[inline]
    fn lookup_at(&self, slot: slot::ThreadSlot, req: Range, access: Access) -> Option<Handle<'_>> {
        let idx = self.index.read_at(slot);
        let found = idx.find(req, access)?;
        let s = found.rec;
        // Only the entry's address: a hit reads the index record, not the entry (index.rs).
        let e: &Entry = &s.entry;
        let cell = self.held.hold(slot, e);
        if cell.is_none() {
            e.acquire();
        }
        found.mark_used();
        let entry = NonNull::from(e);
        let reg = Registered {
            range: found.range,
            access: s.access,
            lkey: s.lkey,
            rkey: s.rkey,
        };
        idx.close_tallied();
        Some(Handle {
            cache: self,
            entry,
            cell,
            reg,
        })
    }

    fn get_slow(&self, req: Range, access: Access) -> Result<Handle<'_>> {
        if !self.is_caching() {
            return self.one_use(req, access);
        }
        let aligned = req
            .page_aligned()
            .ok_or(Error::InvalidArgument("range wraps the address space"))?;
        let mut st = self.miss.lock();
        self.reap_missed();
        // The drain removed an entry of exactly these pages: the churned buffer (DrainFor).
        let mut refilled = false;
        if !self.cfg.danger_ignore_invalidations {
            refilled = self.drain(&mut st, DrainFor::Request(aligned));
            if !self.is_caching() {
                drop(st);
                return self.one_use(req, access);
            }
        }
        if aligned.len() > max_entry_len() {
            // Longer than an index record can say (index.rs, MAX_PAGES): not cached.
            drop(st);
            return self.one_use(req, access);
        }
        // Another thread may have registered it while we waited, or the drain was a false
        // positive: look again. An entry containing the request overlaps `aligned`, so the one
        // search for the entries to merge with also tells whether a lookup can hit (usually
        // not: then no second search). After a refill nothing overlaps: no search.
        let mut plan = if refilled {
            MissPlan::alone(aligned, access)
        } else {
            self.merge_hull(req, aligned, access)
        };
        if plan.contains_req {
            if let Some(h) = self.lookup(req, access) {
                return Ok(h);
            }
        }
        self.stats.missed(&st.locked);
        self.count_reregistration(&mut st, aligned, refilled);
        for attempt in 0..RACE_RETRIES {
            if attempt > 0 {
                // A retry: the failed attempt's drain may have removed entries.
                plan = self.merge_hull(req, aligned, access);
            }
            match self.miss_once(&mut st, aligned, access, &plan)? {
                Some(h) => return Ok(h),
                None => continue, // invalidated while registering: try again
            }
        }
        drop(st);
        self.one_use(req, access)
    }

    /// One attempt to register and insert. `Ok(None)`: the range was invalidated while being
    /// registered (the registration was undone); the caller retries.
    fn miss_once(
        &self,
        st: &mut MissState,
        aligned: Range,
        access: Access,
        plan: &MissPlan,
    ) -> Result<Option<Handle<'_>>> {
        let hull = (plan.hull, plan.access);
        // The hull, then (if it differs) the request alone; no allocation.
        let candidates = [hull, (aligned, access)];
        let candidates = &candidates[..if hull.0 != aligned { 2 } else { 1 }];
        for (i, &(target, acc)) in candidates.iter().enumerate() {
            let last = i + 1 == candidates.len();
            // A watch parked for exactly this range (park.rs) is taken over: no watch call,
            // and no ARM (the id carries UNARMED, so this entry is never CHECKed). Decided
            // once: the id, the mark and the watch below all follow from `source`.
            // Relaxed: only miss-lock holders touch it (see the field), and the lock orders them.
            let source = self.take_parked(st, target).unwrap_or_else(|| {
                let id = self.next_id.load(Ordering::Relaxed);
                self.next_id.store(id + 1, Ordering::Relaxed);
                WatchSource::Fresh(id)
            });
            let (id, cookie) = (source.id(), source.cookie());
            // Before the mark and the watch: what the registrar does to the VMA (rdma-core's
            // MADV_DONTFORK) is then not a change of this registration. (Under a kept watch
            // it is reported: one retry with a fresh watch, below.)
            let prepared = Prepared::new(&*self.registrar, target);
            let (mark, watched) = match source {
                WatchSource::Fresh(id) => {
                    // Before the watch (reval.rs): the counter value ARM compares hits with.
                    let mark = self.reval_mark();
                    (mark, self.monitor.watch(target, id))
                }
                // The watch exists; its digest is the old registration's: no mark, no ARM.
                WatchSource::Kept(_) => (None, Ok(())),
            };
            if let Err(e) = watched {
                drop(prepared);
                if !last {
                    continue;
                }
                return match e {
                    WatchError::Unwatchable(_) | WatchError::Failed(_) => {
                        self.one_use_locked(st, aligned, access).map(Some)
                    }
                };
            }
            let reg = match self.register_evicting(st, target, acc) {
                Ok(reg) => {
                    drop(prepared);
                    reg
                }
                Err(e) => {
                    self.monitor.unwatch(target, cookie);
                    drop(prepared);
                    if last || e.is_resource_exhaustion() {
                        return Err(e);
                    }
                    continue;
                }
            };
            self.reval_arm(cookie, mark);
            // Anything that changed the pages after watch() is reported now; if it touched the
            // new registration, it may already be stale (unless CHECK says its pages are the
            // ones pinned, reval.rs): undo it.
            if !self.cfg.danger_ignore_invalidations
                && self.drain(st, DrainFor::Pending(id, target))
            {
                // Not parked again: the retry watches afresh.
                self.monitor.unwatch(target, cookie);
                self.deregister(Some(&st.locked), &reg, target);
                return Ok(None);
            }
            // Entries enter the index only in `insert`, under the miss lock, which we have held
            // since `merge_hull`; drains and evictions since then only removed entries. So when
            // nothing overlapped the request then, nothing overlaps the target now.
            let disjoint = !plan.merged;
            let what = Registered {
                range: target,
                access: acc,
                lkey: reg.lkey,
                rkey: reg.rkey,
            };
            // Born with one counted reference, the handle this miss returns (a plain
            // initialisation: nobody else can see the entry before `insert` publishes it).
            let entry = Entry {
                state: entry::AtomicU64::new(1),
                start: target.start,
                ..Entry::cached(id, reg.token)
            };
            return Ok(Some(self.insert(st, entry, what, disjoint)));
        }
        unreachable!("the last candidate always returns")
    }

    /// The registration to make for a miss: the request merged with the overlapping entries, if
    /// that stays within `max_merge` and the registrar's limit. Also tells whether one of those
    /// entries contains `req` with the rights asked (a lookup would hit).
    fn merge_hull(&self, req: Range, aligned: Range, access: Access) -> MissPlan {
        let idx = self.index.read();
        let (mut hull, mut acc) = (aligned, access);
        let mut plan = MissPlan::alone(aligned, access);
        for s in idx.overlapping(aligned) {
            if let Some(e) = idx.registered(s) {
                plan.merged = true;
                plan.contains_req |= e.range.contains(&req) && e.access.covers(access);
                hull = Range {
                    start: hull.start.min(e.range.start),
                    end: hull.end.max(e.range.end),
                };
                acc |= e.access;
            }
        }
        let limit = self
            .cfg
            .max_merge
            .min(self.registrar.max_len())
            .min(max_entry_len());
        if hull.len() <= limit {
            (plan.hull, plan.access) = (hull, acc);
        }
        plan
    }

    /// Inserts a new entry (displacing the entries it overlaps, unless the caller knows it is
    /// `disjoint` from every entry) and, in the same write-locked section, claims the LRU
    /// entries the entry limit now evicts: one index write lock per miss.
    fn insert(
        &self,
        st: &mut MissState,
        entry: Entry,
        reg: Registered,
        disjoint: bool,
    ) -> Handle<'_> {
        // `entry` holds the counted reference of the handle returned below (miss_once).
        let entry = st
            .pool
            .alloc(entry, || std::mem::take(&mut self.retired.lock().returned));
        let ptr = entry.as_non_null();
        let range = reg.range;
        let entries_over;
        // Kept between misses and used in place (see `drain`).
        let victims = &mut st.victims;
        let mut displaced: Vec<Unindexed> = {
            let mut idx = self.index.write();
            let out = if disjoint {
                debug_assert!(idx.overlapping(range).is_empty());
                Vec::new()
            } else {
                idx.overlapping(range)
                    .into_iter()
                    .filter_map(|s| idx.remove(s))
                    .collect()
            };
            // The newest in the LRU order, not yet used (index.rs).
            idx.insert(entry, reg);
            // The entry limit, while we hold the lock (the byte limit and anything left are
            // `enforce_limits`'s, below). The new entry is held (counted), so never a victim.
            let mut from = idx.lru_front();
            while idx.len() > self.cfg.max_entries {
                match self.next_victim(&mut idx, &mut from) {
                    Some(v) => victims.push(v),
                    None => break,
                }
            }
            entries_over = idx.len() > self.cfg.max_entries;
            out
        };
        // The handle first: should a callout below unwind, dropping it releases the reference.
        let h = Handle {
            cache: self,
            entry: ptr,
            cell: None,
            reg,
        };
        // Displaced entries may still be held: retired (handed to the retired list) before
        // any callout. The victims are claimed and out of the index and the LRU: nothing can
        // reach them, so should a callout unwind, they leak, which is safe (life.rs).
        self.retire(&st.locked, &mut st.pool, &mut displaced, None);
        for v in st.victims.drain(..) {
            self.evict(v, &st.locked, &mut st.pool);
        }
        // Relaxed: a gauge maintained under this same lock (or lowered by reap). The entry
        // count was just read under the write lock: no read lock taken again to learn it.
        if entries_over || self.stats.registered_bytes() > self.cfg.max_bytes {
            self.enforce_limits(st);
        }
        h
    }

    /// Registers for this use only (not cached, deregistered when the handle drops).
    fn one_use(&self, req: Range, access: Access) -> Result<Handle<'_>> {
        let aligned = req
            .page_aligned()
            .ok_or(Error::InvalidArgument("range wraps the address space"))?;
        self.stats.bump(Hot::Uncacheable);
        let reg = self.register(None, aligned, access)?;
        Ok(self.adopt_one_use(aligned, access, reg))
    }

    /// As `one_use`, under the miss lock, so unused cached entries may be evicted for memory.
    fn one_use_locked(
        &self,
        st: &mut MissState,
        aligned: Range,
        access: Access,
    ) -> Result<Handle<'_>> {
        self.stats.bump(Hot::Uncacheable);
        let reg = self.register_evicting(st, aligned, access)?;
        Ok(self.adopt_one_use(aligned, access, reg))
    }

    fn adopt_one_use(&self, range: Range, access: Access, reg: Registration) -> Handle<'_> {
        // Relaxed: only uniqueness matters.
        let id = self.next_one_use.fetch_add(1, Ordering::Relaxed);
        let what = Registered {
            range,
            access,
            lkey: reg.lkey,
            rkey: reg.rkey,
        };
        let e = EntryPtr::new(Entry::one_use(id, reg.token));
        let ptr = e.as_non_null();
        self.retire_one_use(Unindexed {
            entry: e,
            reg: what,
        });
        Handle {
            cache: self,
            entry: ptr,
            cell: None,
            reg: what,
        }
    }

    /// Registers and counts it (`lock`: the caller holds the miss lock, stats.rs).
    #[inline]
    fn register(
        &self,
        lock: Option<&MissLocked>,
        r: Range,
        access: Access,
    ) -> Result<Registration> {
        let t0 = self.clock.start();
        let res = self.registrar.register(r.start, r.len(), access);
        let s = &self.stats;
        // Relaxed (all): statistics, see stats.rs.
        match &res {
            Ok(_) => {
                let ns = self.clock.elapsed_ns(t0);
                s.registered(lock, ns, r.len() as u64);
            }
            Err(e) => {
                s.registration_failures.fetch_add(1, Ordering::Relaxed);
                s.record_failure(e.errno());
            }
        }
        res
    }

    /// Registers; when the registrar is out of lockable memory or slots, evicts unused entries
    /// worth at least the request (at least one entry) and retries once.
    fn register_evicting(
        &self,
        st: &mut MissState,
        r: Range,
        access: Access,
    ) -> Result<Registration> {
        match self.register(Some(&st.locked), r, access) {
            Err(e) if e.is_resource_exhaustion() => {
                let mut freed = 0u64;
                let mut count = 0usize;
                self.evict_lru(st, |bytes| {
                    freed += bytes;
                    count += 1;
                    count >= 1 && freed >= r.len() as u64
                });
                self.register(Some(&st.locked), r, access)
            }
            other => other,
        }
    }

    /// Deregisters and counts it (`lock`: the caller holds the miss lock, stats.rs).
    fn deregister(&self, lock: Option<&MissLocked>, reg: &Registration, r: Range) {
        if self.in_fork_child() {
            // In a fork child every registration is the parent's: never undo one.
            return;
        }
        self.registrar.deregister(reg, r.start, r.len());
        self.count_deregistered(lock, 1, r.len() as u64);
    }

    /// Counts `n` deregistrations of `bytes` in all (a batch of them is counted once).
    fn count_deregistered(&self, lock: Option<&MissLocked>, n: u64, bytes: u64) {
        if n > 0 {
            self.stats.deregistered(lock, n, bytes);
        }
    }

    /// Applies pending invalidations if the counter moved; the answer depends on `about`
    /// (`DrainFor`). Inlined: the check after every registration usually finds nothing to do
    /// and then costs two loads, not a call.
    #[inline]
    fn drain(&self, st: &mut MissState, about: DrainFor) -> bool {
        // Nothing to do when settled and the counter has not moved (`fresh` checks both).
        if self.fresh() {
            return false;
        }
        self.drain_events(st, about)
    }

    /// `drain` once the counter moved.
    fn drain_events(&self, st: &mut MissState, about: DrainFor) -> bool {
        let (pending, request) = match about {
            DrainFor::Sync => (None, None),
            DrainFor::Request(r) => (None, Some(r)),
            DrainFor::Pending(id, r) => (Some((id, r)), None),
        };
        let mut refilled = false;
        self.stats.drains.fetch_add(1, Ordering::Relaxed);
        // Drain latency (clock.rs): one clock read here, one at the end if an event came.
        let t0 = self.clock.start();
        // The scratch vectors are kept between drains (no allocation per event or per drain)
        // and used in place (no move out and back: ~70 instructions a drain, issue 13).
        let MissState {
            recent,
            scratch: events,
            pool,
            locked,
            drain_starts: victims,
            drain_removed: removed,
            drain_park: parkable,
            drain_check: to_check,
            parked,
            ..
        } = st;
        events.clear();
        let generation = match self.monitor.drain(events) {
            Ok(g) => g,
            Err(e) => {
                // We cannot know what changed: trust nothing, and stop caching for good.
                eprintln!(
                    "regcache: {} monitor failed ({e}); caching disabled",
                    self.monitor.kind().name()
                );
                // Relaxed: read by is_caching() under this lock or as a hint.
                self.broken.store(true, Ordering::Relaxed);
                events.clear();
                events.push(Invalidation::All);
                0
            }
        };
        let mut pending_hit = false;
        victims.clear();
        removed.clear();
        parkable.clear();
        to_check.clear();
        // Revalidation (reval.rs): events that report an entry CHECK may keep (the registration
        // in flight, or a live entry whose id is the cookie) are set aside under the write
        // lock, as the other victims are found; CHECKed after it is released (a system call
        // never runs under it); then the lock is taken again to remove those that changed. An
        // entry under a kept watch (UNARMED id, the churned buffer) is never CHECKed: one probe
        // finds it, no read lock of its own (issue 13).
        let revalidating = self.revalidating();
        let pending_id = pending.map(|(id, _)| id);
        // Reported entries whose pages did not change: kept, not forwarded.
        let mut kept = Cookies::default();
        // Entries removed (and parked) in all: `removed` and `parkable` are retired and emptied
        // every `DRAIN_CHUNK` entries.
        let mut gone = 0usize;
        // One not hit since it was cached (a one-use life: churn) may leave its watch parked
        // (park.rs); the used bit is a hint (the eviction walk clears it too), which only
        // decides where a watch goes, never whether an entry is trusted.
        let parks = self.parks_watches();
        {
            let mut idx = self.index.write();
            // Found, removed and retired a chunk of events at a time: a chunk's records and
            // entries are still in the CPU's cache when they are removed and retired (a drain
            // of 10,000 events no longer walks 1 MB of them three times, issue 13). Not while a
            // CHECK is pending: its entries stay watched until it is done.
            let mut chunk_left = DRAIN_CHUNK;
            for inv in events.iter() {
                if chunk_left == 0 {
                    chunk_left = DRAIN_CHUNK;
                    unindex(&mut idx, victims, removed, parkable, parks);
                    if to_check.is_empty() {
                        // Readers meanwhile: the counter moved and `drained` is stored only
                        // at the end, so a hit waits for this drain on the miss lock; one
                        // that passed `fresh` before the counter moved may see some of the
                        // removals, as it might have seen all of them.
                        drop(idx);
                        gone += removed.len() + parkable.len();
                        // Should a callout unwind in this retire, the entries the events after
                        // this chunk name would stay in the index with their events consumed:
                        // caching stops for good then, as when the monitor fails.
                        let guard = BreakOnUnwind(&self.broken);
                        refilled |= self.retire_drained(
                            locked, pool, recent, parked, removed, parkable, request,
                        );
                        std::mem::forget(guard);
                        idx = self.index.write();
                    }
                }
                chunk_left -= 1;
                match *inv {
                    Invalidation::Cookie { cookie, .. }
                        if revalidating && reval::same(pending_id, cookie) =>
                    {
                        to_check.push((cookie, None));
                    }
                    Invalidation::Cookie { cookie, hint } => {
                        pending_hit |=
                            pending.is_some_and(|(id, _)| entry::cookie_of(id) == cookie);
                        let checkable = |e: &Entry| revalidating && reval::same(Some(e.id), cookie);
                        // Usually one probe finds the entry (index.rs, `with_cookie`); else
                        // every entry the hint overlaps that carries the cookie.
                        if let Some((s, e)) = idx.with_cookie(hint.start, cookie) {
                            if checkable(e) {
                                to_check.push((cookie, Some(s)));
                            } else {
                                victims.push(s);
                            }
                            continue;
                        }
                        let from = victims.len();
                        idx.overlapping_into(hint, victims);
                        let mut keep = from;
                        for j in from..victims.len() {
                            let s = victims[j];
                            match idx.get(s) {
                                Some(e) if e.cookie() == cookie && checkable(e) => {
                                    to_check.push((cookie, Some(s)));
                                }
                                Some(e) if e.cookie() == cookie => {
                                    victims[keep] = s;
                                    keep += 1;
                                }
                                _ => {}
                            }
                        }
                        victims.truncate(keep);
                    }
                    Invalidation::Range(r) => {
                        pending_hit |= pending.is_some_and(|(_, p)| p.overlaps(&r));
                        idx.overlapping_into(r, victims);
                    }
                    Invalidation::All => {
                        pending_hit = pending.is_some();
                        victims.extend(idx.starts());
                    }
                }
            }
            unindex(&mut idx, victims, removed, parkable, parks);
            if !to_check.is_empty() {
                drop(idx);
                // Nothing can enter or leave the index meanwhile (we hold the miss lock; hits
                // only set used bits): the starts set aside stay valid.
                kept = self.reval_unchanged(to_check);
                for &(cookie, s) in to_check.iter() {
                    if kept.contains(&cookie) {
                        continue;
                    }
                    match s {
                        Some(s) => victims.push(s),
                        None => pending_hit = true,
                    }
                }
                idx = self.index.write();
                unindex(&mut idx, victims, removed, parkable, parks);
            }
        }
        gone += removed.len() + parkable.len();
        // Retired before the hook runs: a hook that unwinds must find no entry owned by a
        // local (see `Config::on_invalidate`).
        refilled |= self.retire_drained(locked, pool, recent, parked, removed, parkable, request);
        // One per kept entry, or one for a drain that found nothing it had to act on.
        let false_positives = match kept.len() {
            0 if gone == 0 && !pending_hit => 1,
            n => n as u64,
        };
        self.stats
            .false_positives
            .fetch_add(false_positives, Ordering::Relaxed);
        self.stats
            .invalidated
            .fetch_add(gone as u64, Ordering::Relaxed);
        if let Some(hook) = &self.cfg.on_invalidate {
            for inv in events.iter() {
                (hook.0)(match *inv {
                    // A kept entry's pages are the ones pinned: nothing to tell.
                    Invalidation::Cookie { cookie, .. } if kept.contains(&cookie) => continue,
                    Invalidation::Cookie { hint, .. } => hint,
                    Invalidation::Range(r) => r,
                    Invalidation::All => Range {
                        start: 0,
                        end: usize::MAX,
                    },
                });
            }
        }
        if !self.broken.load(Ordering::Relaxed) {
            // Release: publishes the removals above to hit paths that observe this value.
            self.drained.store(generation, Ordering::Release);
        }
        if !events.is_empty() {
            self.stats.record_drain(self.clock.elapsed_ns(t0));
        }
        pending_hit || refilled
    }

    /// Retires what a drain removed (leaving both lists empty), remembering the ranges for
    /// `count_reregistration`; true if one of them was exactly `request` (`DrainFor`).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn retire_drained(
        &self,
        locked: &MissLocked,
        pool: &mut pool::Pool,
        recent: &mut recent::Recent,
        parked: &mut park::Parked,
        removed: &mut Vec<Unindexed>,
        parkable: &mut Vec<Unindexed>,
        request: Option<Range>,
    ) -> bool {
        let mut refilled = false;
        for list in [&*removed, &*parkable] {
            for u in list {
                if request == Some(u.reg.range) {
                    refilled = true;
                } else {
                    recent.insert(u.reg.range);
                }
            }
        }
        self.retire(locked, pool, removed, None);
        self.retire(locked, pool, parkable, Some(parked));
        refilled
    }

    /// Counts a miss of `r` that re-registers a recently invalidated range. `refilled`: the
    /// drain just removed an entry of exactly `r` and did not remember it (`DrainFor`), so this
    /// is one without a look at the table.
    fn count_reregistration(&self, st: &mut MissState, r: Range, refilled: bool) {
        if refilled || st.recent.take_overlapping(r) {
            // Relaxed: a statistic (stats.rs).
            self.stats.reregistrations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Evicts to respect `max_entries` and `max_bytes`.
    fn enforce_limits(&self, st: &mut MissState) {
        let over = |c: &Cache| {
            let s = &c.stats;
            // Gauges maintained under this same lock (or by reap, which only lowers them).
            c.index.read().len() > c.cfg.max_entries || s.registered_bytes() > c.cfg.max_bytes
        };
        if over(self) {
            self.evict_lru(st, |_| !over(self));
        }
    }

    /// Evicts unreferenced entries, least recently used first, until `enough(bytes_just_freed)`
    /// says so or nothing evictable is left.
    fn evict_lru(&self, st: &mut MissState, mut enough: impl FnMut(u64) -> bool) {
        let mut from = self.index.read().lru_front();
        loop {
            let Some(victim) = self.next_victim(&mut self.index.write(), &mut from) else {
                break;
            };
            if enough(self.evict(victim, &st.locked, &mut st.pool)) {
                break;
            }
        }
    }

    /// The LRU walk of an eviction, under the index write lock (`idx`): from the entry starting
    /// at `from` on, claims the first one nothing references, removes it from the index (and so
    /// from the LRU list) and returns it (for `evict`); `None` when nothing evictable is left.
    /// `from` moves past the entries examined.
    fn next_victim(&self, idx: &mut Index, from: &mut Option<usize>) -> Option<Unindexed> {
        // Entries in use stay where they are and the walk moves past them. An entry hit since
        // the walk last looked at it (its record's used bit) moves to the end with the bit
        // cleared: the walk meets it again at most once more (second chance).
        while let Some(start) = *from {
            let Some((rec, next)) = idx.indexed_and_next(start) else {
                // Not expected: the list links only entries of the index.
                debug_assert!(false, "an LRU link names no entry of the index");
                return None;
            };
            *from = next;
            if rec.take_used() {
                idx.lru_move_to_back(start);
                if from.is_none() {
                    // It was the last: the walk goes on with it (now unused, so claimable).
                    *from = Some(start);
                }
                continue;
            }
            // Under the write lock no new reference can appear (life.rs).
            if !self.claim_unused(&rec.entry) {
                continue;
            }
            return idx.remove(start);
        }
        None
    }

    /// Removes every cached entry overlapping `[addr, addr+len)`: for invalidations learned
    /// elsewhere (the UCX and libfabric bridges). Entries in use are deregistered on release.
    pub fn invalidate(&self, addr: usize, len: usize) -> Result<usize> {
        let r = Range::new(addr, len)?;
        if self.in_fork_child() {
            return Err(Error::ForkedChild);
        }
        let mut st = self.miss.lock();
        self.reap_missed();
        let mut removed: Vec<Unindexed> = {
            let mut idx = self.index.write();
            idx.overlapping(r)
                .into_iter()
                .filter_map(|s| idx.remove(s))
                .collect()
        };
        let n = removed.len();
        self.stats
            .invalidated
            .fetch_add(n as u64, Ordering::Relaxed);
        for u in &removed {
            st.recent.insert(u.reg.range);
        }
        let MissState { locked, pool, .. } = &mut *st;
        self.retire(locked, pool, &mut removed, None);
        Ok(n)
    }

    /// Drops every cached entry (those in use are deregistered when released). Does nothing in
    /// a fork child.
    pub fn flush(&self) {
        if self.in_fork_child() {
            return; // a fork child's cache is disabled; the entries are the parent's
        }
        let mut st = self.miss.lock();
        self.reap_missed();
        let mut all: Vec<Unindexed> = {
            let mut idx = self.index.write();
            idx.starts()
                .into_iter()
                .filter_map(|s| idx.remove(s))
                .collect()
        };
        let ranges: Vec<Range> = all.iter().map(|u| u.reg.range).collect();
        let MissState { locked, pool, .. } = &mut *st;
        self.retire(locked, pool, &mut all, None);
        // Their entries were reaped when they were parked: nothing to tell the hook.
        self.unpark_all(&mut st);
        // No longer watched: a cache kept coherent through the hook must drop them too.
        if let Some(hook) = &self.cfg.on_invalidate {
            for r in ranges {
                (hook.0)(r);
            }
        }
    }

    /// Entries currently cached (in the index); 0 in a fork child, whose cache is disabled
    /// (and which must not wait for an index writer that may not exist there).
    pub fn cached_entries(&self) -> usize {
        if self.in_fork_child() {
            return 0;
        }
        self.index.read().len()
    }

    /// Applies pending invalidations now if the monitor's counter moved (one acquire load when
    /// nothing changed), so that `Config::on_invalidate` has seen every change made before the
    /// call. For bridges that must tell another cache before its own lookup (UCX's
    /// ucs_rcache_get hits never reach this cache). Returns whether it drained.
    pub fn sync(&self) -> Result<bool> {
        if self.in_fork_child() {
            return Err(Error::ForkedChild);
        }
        if self.fresh() || !self.is_caching() {
            return Ok(false);
        }
        let mut st = self.miss.lock();
        self.drain(&mut st, DrainFor::Sync);
        Ok(true)
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        if self.in_fork_child() {
            // A fork child: the registrations are the parent's and the retired list's lock may
            // be a parent thread's; the entries are left to the child's exit (EntryPtr has no Drop).
            return;
        }
        self.flush();
        // Handles borrow the cache, so none is alive unless one was leaked with mem::forget;
        // its registration is released here.
        self.reap_leaked();
    }
}

#[cfg(all(test, loom))]
mod loom_model;
#[cfg(all(test, not(loom)))]
mod tests;
