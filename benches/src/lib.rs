//! Shared pieces of the regcache benchmarks: a scripted monitor, fake address workloads, and
//! (when UCX's headers were found at build time) a safe wrapper over UCX's rcache through the C
//! shim in `ucx/ucx_rcache_shim.c`.
//!
//! Addresses are fake: the no-op registrar never touches memory and the scripted monitor never
//! looks at the address space, and the UCX rcache is created without memory hooks and with
//! no-op registration callbacks. Both caches therefore only do their own bookkeeping.

use regcache::monitor::{Invalidation, Monitor, MonitorKind, Revalidation, WatchError};
use regcache::registrar::noop::NoopRegistrar;
use regcache::{Access, Cache, Config, Range};
use regcache_oracle::rng::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Start of the fake address space (16 TiB: page-aligned, far from anything real, never touched).
pub const BASE: usize = 0x1000_0000_0000;
/// Distance between two cached regions: two pages, so neighbours are disjoint and not adjacent
/// (neither cache merges them).
pub const STRIDE: usize = 2 * 4096;
/// Each request: a sub-range of the region's first page (exercises the "contains" check).
pub const REQ_OFFSET: usize = 128;
pub const REQ_LEN: usize = 2048;
pub const ACCESS: Access = Access::LOCAL_WRITE;

/// The cache sizes measured by the hit-path benchmarks.
pub const SIZES: [usize; 3] = [1, 1_000, 100_000];

/// Address of region `i` of the fake address space.
#[inline]
pub fn region_addr(i: usize) -> usize {
    BASE + i * STRIDE
}

/// A monitor driven by the benchmark: `fire` queues an invalidation and moves the counter, as a
/// real monitor does; watch/unwatch cost nothing.
#[derive(Default)]
pub struct ScriptedMonitor {
    counter: AtomicU64,
    queue: Mutex<Vec<Invalidation>>,
}

impl ScriptedMonitor {
    /// Queues `inv` and moves the counter (release: publishes the queued event to the drainer
    /// that observes the new value).
    pub fn fire(&self, inv: Invalidation) {
        self.queue.lock().unwrap().push(inv);
        self.counter.fetch_add(1, Ordering::Release);
    }

    /// Takes the queued events into `out`; returns the counter they bring the drainer to.
    fn take(&self, out: &mut Vec<Invalidation>) -> u64 {
        // Acquire: pairs with `fire`'s release increment. Load before taking the queue, so every
        // event that moved the counter up to `g` is in the queue we take.
        let g = self.counter.load(Ordering::Acquire);
        out.append(&mut self.queue.lock().unwrap());
        g
    }

    /// Queues many invalidations and moves the counter once per event.
    pub fn fire_many(&self, invs: impl IntoIterator<Item = Invalidation>) {
        let mut q = self.queue.lock().unwrap();
        for inv in invs {
            q.push(inv);
            self.counter.fetch_add(1, Ordering::Release);
        }
    }
}

/// The handle the cache owns (the benchmark keeps another `Arc` to fire events).
pub struct MonitorHandle(pub Arc<ScriptedMonitor>);

impl Monitor for MonitorHandle {
    fn kind(&self) -> MonitorKind {
        MonitorKind::Uffd
    }

    fn counter(&self) -> &AtomicU64 {
        &self.0.counter
    }

    fn watch(&self, _range: Range, _cookie: u64) -> Result<(), WatchError> {
        Ok(())
    }

    fn unwatch(&self, _range: Range, _cookie: u64) {}

    fn drain(&self, out: &mut Vec<Invalidation>) -> regcache::Result<u64> {
        Ok(self.0.take(out))
    }
}

/// A monitor for the churned-buffer cycle (`profile-miss churn`): like ummunotify (with its
/// defaults), a watch is a range of the address space that outlives the unmap (so the cache
/// parks and takes it over), an event names the watch's cookie, and it revalidates (CHECK
/// answers "changed": the pages of a churned buffer are new ones). `churn(range)` fires the
/// event of every watch overlapping `range`, as the kernel does when the buffer is unmapped.
#[derive(Default)]
pub struct ChurnMonitor {
    /// The counter and the event queue.
    events: ScriptedMonitor,
    /// The watches: (range, cookie).
    watches: Mutex<Vec<(Range, u64)>>,
}

impl ChurnMonitor {
    /// Fires the cookie event of every watch overlapping `range` (each hinted with its watch's
    /// range); false when nothing is watched there.
    pub fn churn(&self, range: Range) -> bool {
        let w = self.watches.lock().unwrap();
        let mut fired = false;
        for &(hint, cookie) in w.iter().filter(|(r, _)| r.overlaps(&range)) {
            self.events.fire(Invalidation::Cookie { cookie, hint });
            fired = true;
        }
        fired
    }
}

/// The cache's handle on a [`ChurnMonitor`].
pub struct ChurnHandle(pub Arc<ChurnMonitor>);

impl Monitor for ChurnHandle {
    fn kind(&self) -> MonitorKind {
        MonitorKind::Ummunotify
    }

    fn counter(&self) -> &AtomicU64 {
        &self.0.events.counter
    }

    fn watch(&self, range: Range, cookie: u64) -> Result<(), WatchError> {
        self.0.watches.lock().unwrap().push((range, cookie));
        Ok(())
    }

    fn unwatch(&self, range: Range, cookie: u64) {
        self.0
            .watches
            .lock()
            .unwrap()
            .retain(|&w| w != (range, cookie));
    }

    fn watch_survives_unmap(&self) -> bool {
        true
    }

    fn revalidates(&self) -> bool {
        true
    }

    fn revalidate_arm_since(&self, _cookie: u64, _since: u64) -> regcache::Result<Revalidation> {
        Ok(Revalidation::Changed)
    }

    fn revalidate_check(&self, _cookie: u64) -> regcache::Result<Revalidation> {
        Ok(Revalidation::Changed)
    }

    fn drain(&self, out: &mut Vec<Invalidation>) -> regcache::Result<u64> {
        Ok(self.0.events.take(out))
    }
}

/// A regcache cache over the scripted monitor and the no-op registrar, with limits that never
/// evict below `max_entries`.
pub fn new_cache(max_entries: usize) -> (Cache, Arc<ScriptedMonitor>) {
    let mon = Arc::new(ScriptedMonitor::default());
    let cfg = Config {
        max_entries,
        max_bytes: u64::MAX,
        ..Config::default()
    };
    let cache = Cache::new(
        Box::new(MonitorHandle(mon.clone())),
        Arc::new(NoopRegistrar::new()),
        cfg,
    );
    (cache, mon)
}

/// A cache holding regions `0..n` (registered once; every later get of them is a hit).
pub fn filled_cache(n: usize) -> (Cache, Arc<ScriptedMonitor>) {
    let (cache, mon) = new_cache(n.max(16) * 2);
    for i in 0..n {
        let h = cache
            .get(region_addr(i) + REQ_OFFSET, REQ_LEN, ACCESS)
            .expect("noop registration cannot fail");
        assert!(h.is_cached(), "the scripted monitor watches everything");
    }
    // One hit on each: the measured loops then see the steady state (every entry's LRU used
    // bit set, the table's lines as a hit leaves them), not first hits, which write the bit.
    // With 10^6 entries a short criterion run was mostly first hits (2-3x the cost).
    for i in 0..n {
        drop(cache.get(region_addr(i) + REQ_OFFSET, REQ_LEN, ACCESS));
    }
    assert_eq!(cache.cached_entries(), n);
    (cache, mon)
}

/// A pre-generated random request sequence over `n` cached regions: request addresses, in a
/// power-of-two ring so the loop indexes with a mask. The same sequence (same seed) is replayed
/// against regcache and UCX.
pub struct Workload {
    pub n: usize,
    pub seq: Vec<usize>,
    mask: usize,
}

impl Workload {
    pub fn new(n: usize, seed: u64) -> Self {
        let len = (4 * n).max(1 << 16).next_power_of_two();
        let mut rng = Rng::new(seed ^ n as u64);
        let seq = (0..len)
            .map(|_| region_addr(rng.range(0, n)) + REQ_OFFSET)
            .collect();
        Workload {
            n,
            seq,
            mask: len - 1,
        }
    }

    /// The request address at position `pos` of the ring.
    #[inline(always)]
    pub fn addr(&self, pos: usize) -> usize {
        self.seq[pos & self.mask]
    }

    /// Ring length (threads start at different offsets of it).
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }
}

/// The measured hit loop: `iters` times `drop(get(addr))` over the workload from position
/// `start`. Every benchmark (single, threaded) and `profile-hit` run this one function, so all
/// see the same code generation (`Cache::get` inlined into it, as in a typical caller); whether
/// the harness inlines `get` into its own loop or not otherwise changes the result by up to 2x.
#[inline(never)]
pub fn regcache_hit_loop(cache: &Cache, w: &Workload, start: usize, iters: u64) {
    let mut pos = start;
    for _ in 0..iters {
        let h = cache
            .get(w.addr(pos), REQ_LEN, ACCESS)
            .expect("noop registration cannot fail");
        std::hint::black_box(h.lkey());
        drop(h);
        pos = pos.wrapping_add(1);
    }
}

/// Entry limit of the miss benchmarks (criterion's `miss` group, `profile-miss`,
/// `bench-paired`): every timed miss at the limit evicts.
pub const MISS_LIMIT: usize = 4096;

/// Fresh addresses of the miss loops cycle over 4M slots (32 GiB of fake space): far more than
/// `MISS_LIMIT`, so an address comes back only long after its entry was evicted.
pub const MISS_SLOTS: usize = 1 << 22;

/// The miss loop: `iters` gets of fresh addresses from slot `start` on (each a miss; at the
/// entry limit each also evicts). One function for every harness, as `regcache_hit_loop`.
#[inline(never)]
pub fn miss_loop(cache: &Cache, start: usize, iters: usize) {
    for i in start..start + iters {
        let h = cache
            .get(region_addr(i % MISS_SLOTS) + REQ_OFFSET, REQ_LEN, ACCESS)
            .expect("noop registration cannot fail");
        std::hint::black_box(h.lkey());
    }
}

/// The drain workload of criterion's `drain` group, `profile-miss drain` and `bench-paired`: a
/// cache holding a sentinel entry and `n` regions, which `prepare` caches again and invalidates
/// with one Range event each; `drain_once` is the get of the sentinel that drains them (a hit
/// once drained: the events do not touch it).
pub struct DrainBench {
    pub cache: Cache,
    mon: Arc<ScriptedMonitor>,
    n: usize,
    sentinel: usize,
    events: Vec<Invalidation>,
}

impl DrainBench {
    pub fn new(n: usize) -> Self {
        let (cache, mon) = new_cache(2 * n + 16);
        let sentinel = region_addr(n) + REQ_OFFSET;
        drop(
            cache
                .get(sentinel, REQ_LEN, ACCESS)
                .expect("noop registration"),
        );
        let events = (0..n)
            .map(|i| {
                Invalidation::Range(Range {
                    start: region_addr(i),
                    end: region_addr(i) + 4096,
                })
            })
            .collect();
        DrainBench {
            cache,
            mon,
            n,
            sentinel,
            events,
        }
    }

    /// Untimed: caches the `n` regions again and queues one event for each.
    pub fn prepare(&self) {
        for i in 0..self.n {
            drop(
                self.cache
                    .get(region_addr(i) + REQ_OFFSET, REQ_LEN, ACCESS)
                    .expect("noop registration"),
            );
        }
        self.mon.fire_many(self.events.iter().copied());
    }

    /// The timed part: the get that drains the events (callgrind's toggle names it).
    #[inline(never)]
    pub fn drain_once(&self) {
        let h = self
            .cache
            .get(self.sentinel, REQ_LEN, ACCESS)
            .expect("noop registration");
        std::hint::black_box(h.lkey());
    }

    /// `drains` rounds of `prepare` (untimed) and `drain_once` (timed): the time of the drains.
    pub fn timed(&self, drains: u64) -> std::time::Duration {
        timed_rounds(
            drains,
            || self.prepare(),
            || {
                self.drain_once();
                // Inside the timed part, but only in debug builds (benchmarks run in release).
                debug_assert_eq!(self.cache.cached_entries(), 1);
            },
        )
    }
}

/// `rounds` rounds of `prepare` (untimed) then `measured` (timed): the time of the `measured`
/// parts (the drain benchmarks of both caches).
pub fn timed_rounds(rounds: u64, prepare: impl Fn(), measured: impl Fn()) -> std::time::Duration {
    let mut total = std::time::Duration::ZERO;
    for _ in 0..rounds {
        prepare();
        let t0 = std::time::Instant::now();
        measured();
        total += t0.elapsed();
    }
    total
}

/// Runs `body(thread, iters)` on `threads` threads started together; returns the slowest
/// thread's own elapsed time (each thread times itself after the barrier).
pub fn timed_threads<F>(threads: usize, iters: u64, body: F) -> std::time::Duration
where
    F: Fn(usize, u64) + Sync,
{
    timed_threads_cpu(threads, iters, body).0
}

/// `timed_threads`, also returning the largest thread CPU time (ns) among the threads: a
/// thread that waited for a CPU shows elapsed time beyond its CPU time, one slowed by sharing
/// (cache lines moving between CPUs) shows it in both.
pub fn timed_threads_cpu<F>(threads: usize, iters: u64, body: F) -> (std::time::Duration, u128)
where
    F: Fn(usize, u64) + Sync,
{
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, body) = (&barrier, &body);
                s.spawn(move || {
                    barrier.wait();
                    let (t0, c0) = (std::time::Instant::now(), thread_cpu_ns());
                    body(t, iters);
                    (t0.elapsed(), thread_cpu_ns() - c0)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .fold((std::time::Duration::ZERO, 0), |(w, c), (tw, tc)| {
                (w.max(tw), c.max(tc))
            })
    })
}

/// The floor of a hashed hit (`scale/memfloor`, `profile-hit memfloor`): for each request, the
/// read lock's locked increment, a control byte and then the dependent 32-byte record of a
/// table with the index's size for `n` entries, and the lock's release store; nothing else.
/// The table: hashbrown keeps at most 7/8 of a power of two
/// full, with one control byte and one 32-byte bucket per slot, each array touched (faulted in).
pub struct FloorTable {
    ctrl: Vec<u8>,
    records: Vec<[u64; 4]>,
    mask: usize,
    lock: std::sync::atomic::AtomicU64,
}

impl FloorTable {
    pub fn new(n: usize) -> Self {
        let slots = (n * 8 / 7 + 1).next_power_of_two();
        FloorTable {
            ctrl: (0..slots).map(|i| (i % 3) as u8).collect(),
            records: (0..slots).map(|i| [i as u64; 4]).collect(),
            mask: slots - 1,
            lock: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

#[inline(never)]
pub fn floor_loop(t: &FloorTable, w: &Workload, start: usize, iters: usize) -> u64 {
    use std::sync::atomic::Ordering;
    let mut sum = 0u64;
    for pos in start..start + iters {
        // SeqCst and Release: the same instructions as the read lock's entry and exit.
        t.lock.fetch_add(1, Ordering::SeqCst);
        let h = ((w.addr(pos) as u64 >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7) as usize;
        let c = t.ctrl[h & t.mask] as usize;
        sum = sum.wrapping_add(t.records[(h + c) & t.mask][0]);
        t.lock.store(0, Ordering::Release);
    }
    sum
}

/// `n` real regions (two pages each, the first page touched) in one anonymous mapping, for the
/// benchmarks whose monitor looks at the address space (userfaultfd). Unmapped on drop.
pub struct MappedRegions {
    base: usize,
    n: usize,
}

impl MappedRegions {
    pub fn new(n: usize) -> Option<Self> {
        let len = n * STRIDE;
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        for i in 0..n {
            // SAFETY: inside the mapping just made, writable.
            unsafe { *(p as *mut u8).add(i * STRIDE) = 1 };
        }
        Some(MappedRegions {
            base: p as usize,
            n,
        })
    }

    pub fn addr(&self, i: usize) -> usize {
        self.base + i * STRIDE
    }

    /// Caches every region in `cache` (one miss each).
    pub fn fill(&self, cache: &Cache) {
        for i in 0..self.n {
            let h = cache
                .get(self.addr(i) + REQ_OFFSET, REQ_LEN, ACCESS)
                .expect("noop registration cannot fail");
            assert!(h.is_cached(), "region {i} was not cached");
        }
    }

    /// A random request sequence over the regions (as `Workload::new`).
    pub fn workload(&self, seed: u64) -> Workload {
        let mut w = Workload::new(self.n, seed);
        for a in w.seq.iter_mut() {
            *a = self.addr((*a - REQ_OFFSET - BASE) / STRIDE) + REQ_OFFSET;
        }
        w
    }
}

impl Drop for MappedRegions {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; the caches using it are dropped
        // first by the benchmarks (their handles are gone).
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.n * STRIDE) };
    }
}

/// A cache over the userfaultfd monitor and the no-op registrar, or `None` if userfaultfd is
/// unavailable here.
pub fn uffd_cache(max_entries: usize) -> Option<Cache> {
    let mon = regcache::monitor::uffd::UffdMonitor::new().ok()?;
    let cfg = Config {
        max_entries,
        max_bytes: u64::MAX,
        ..Config::default()
    };
    Some(Cache::new(
        Box::new(mon),
        Arc::new(NoopRegistrar::new()),
        cfg,
    ))
}

/// The calling thread's CPU time in nanoseconds (CLOCK_THREAD_CPUTIME_ID): unlike the wall
/// clock, it leaves out the time the thread waited for a CPU, most of the noise on a shared
/// 2-CPU machine. For the plain profiling programs (`profile-hit`, `profile-miss`).
pub fn thread_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// One system call that does nothing (getppid): the floor of any per-hit kernel probe.
#[inline(never)]
pub fn null_syscall() -> libc::c_long {
    // SAFETY: getppid has no arguments and no side effects.
    unsafe { libc::syscall(libc::SYS_getppid) }
}

/// Whether the UCX side-by-side benchmarks were built.
pub const UCX_AVAILABLE: bool = cfg!(has_ucx);

#[cfg(has_ucx)]
pub mod ucx {
    //! Safe wrapper over the C shim around UCX's `ucs_rcache`.

    use std::ffi::{c_ulong, c_void};
    use std::ptr::NonNull;

    extern "C" {
        fn shim_create(max_regions: c_ulong) -> *mut c_void;
        fn shim_get(rcache: *mut c_void, addr: usize, len: usize) -> *mut c_void;
        fn shim_put(rcache: *mut c_void, region: *mut c_void);
        fn shim_region_key(region: *const c_void) -> u64;
        fn shim_region_start(region: *const c_void) -> usize;
        fn shim_destroy(rcache: *mut c_void);
        fn shim_create_unmap_events(max_regions: c_ulong) -> *mut c_void;
        fn shim_unmapped(addr: usize, len: usize);
    }

    /// One `ucs_rcache_t` with no-op registration callbacks and no memory hooks.
    pub struct UcxRcache {
        rc: NonNull<c_void>,
    }

    // SAFETY: ucs_rcache_t is documented thread safe (rcache.h: "This data structure is thread
    // safe"): get/put serialise on its internal rwlock and spinlocks. The pointer is owned here.
    unsafe impl Send for UcxRcache {}
    // SAFETY: as above; `&UcxRcache` only allows get/put, which are thread safe.
    unsafe impl Sync for UcxRcache {}

    impl UcxRcache {
        /// A new rcache keeping at most `max_regions` regions; `None` if UCX refused.
        pub fn new(max_regions: usize) -> Option<Self> {
            // SAFETY: shim_create only reads its argument and returns an owned rcache or NULL.
            let rc = unsafe { shim_create(max_regions as c_ulong) };
            NonNull::new(rc).map(|rc| UcxRcache { rc })
        }

        /// A new rcache that receives UCM's VM_UNMAPPED events, delivered only by
        /// [`unmapped`] (the event is declared external: UCM installs no hooks).
        pub fn with_unmap_events(max_regions: usize) -> Option<Self> {
            // SAFETY: as in `new`; ucm_set_external_event only sets a flag in UCM.
            let rc = unsafe { shim_create_unmap_events(max_regions as c_ulong) };
            NonNull::new(rc).map(|rc| UcxRcache { rc })
        }

        /// Looks up (or registers) `[addr, addr+len)` read/write; the region is held until the
        /// returned guard drops.
        #[inline]
        pub fn get(&self, addr: usize, len: usize) -> Option<UcxRegion<'_>> {
            // SAFETY: `rc` is a live rcache (destroyed only in Drop, which cannot run while
            // `&self` is borrowed). The fake address is never dereferenced: registration is a
            // no-op and no memory hooks are installed.
            let region = unsafe { shim_get(self.rc.as_ptr(), addr, len) };
            NonNull::new(region).map(|region| UcxRegion { rc: self, region })
        }
    }

    impl Drop for UcxRcache {
        fn drop(&mut self) {
            // SAFETY: every UcxRegion borrows `self`, so none is outstanding; `rc` is destroyed
            // exactly once.
            unsafe { shim_destroy(self.rc.as_ptr()) }
        }
    }

    /// UCX's invalidation path: `ucm_vm_munmap(addr, len)` runs the unmap callback of every
    /// rcache made by [`UcxRcache::with_unmap_events`] (nothing is unmapped).
    pub fn unmapped(addr: usize, len: usize) {
        // SAFETY: ucm_vm_munmap only dispatches the event to the registered callbacks, which
        // look the range up in their page tables; the fake addresses are never dereferenced.
        unsafe { shim_unmapped(addr, len) }
    }

    /// A held UCX region; released (ucs_rcache_region_put) on drop.
    pub struct UcxRegion<'a> {
        rc: &'a UcxRcache,
        region: NonNull<c_void>,
    }

    impl UcxRegion<'_> {
        pub fn key(&self) -> u64 {
            // SAFETY: the region is held (refcount > 0), so UCX does not free it.
            unsafe { shim_region_key(self.region.as_ptr()) }
        }

        pub fn start(&self) -> usize {
            // SAFETY: as in `key`.
            unsafe { shim_region_start(self.region.as_ptr()) }
        }
    }

    impl Drop for UcxRegion<'_> {
        #[inline]
        fn drop(&mut self) {
            // SAFETY: this guard holds exactly one reference taken by shim_get on this rcache,
            // released exactly once here.
            unsafe { shim_put(self.rc.rc.as_ptr(), self.region.as_ptr()) }
        }
    }

    /// The UCX twin of [`super::regcache_hit_loop`]: get + put over the same workload.
    #[inline(never)]
    pub fn hit_loop(rc: &UcxRcache, w: &super::Workload, start: usize, iters: u64) {
        let mut pos = start;
        for _ in 0..iters {
            let r = rc
                .get(w.addr(pos), super::REQ_LEN)
                .expect("no-op registration cannot fail");
            std::hint::black_box(&r);
            drop(r);
            pos = pos.wrapping_add(1);
        }
    }

    /// The UCX twin of [`super::miss_loop`].
    #[inline(never)]
    pub fn miss_loop(rc: &UcxRcache, start: usize, iters: usize) {
        for i in start..start + iters {
            let r = rc
                .get(
                    super::region_addr(i % super::MISS_SLOTS) + super::REQ_OFFSET,
                    super::REQ_LEN,
                )
                .expect("no-op registration cannot fail");
            std::hint::black_box(r.key());
        }
    }

    /// UCX's side of [`super::DrainBench`]: an rcache receiving unmap events, holding a
    /// sentinel region and `n` regions that `prepare` caches again; `invalidate_all` is its
    /// invalidation of them (`n` ucm_vm_munmap events, each running the unmap callback:
    /// page-table lock, search, region destroyed) and the get of the sentinel.
    pub struct DrainBench {
        rc: UcxRcache,
        n: usize,
        sentinel: usize,
    }

    impl DrainBench {
        pub fn new(n: usize) -> Self {
            let rc = UcxRcache::with_unmap_events(usize::MAX).expect("ucs_rcache_create");
            let sentinel = super::region_addr(n) + super::REQ_OFFSET;
            drop(
                rc.get(sentinel, super::REQ_LEN)
                    .expect("no-op registration"),
            );
            DrainBench { rc, n, sentinel }
        }

        /// Untimed: caches the `n` regions again.
        pub fn prepare(&self) {
            for i in 0..self.n {
                let a = super::region_addr(i) + super::REQ_OFFSET;
                drop(self.rc.get(a, super::REQ_LEN).expect("no-op registration"));
            }
        }

        /// The timed part.
        pub fn invalidate_all(&self) {
            for i in 0..self.n {
                unmapped(super::region_addr(i), 4096);
            }
            let r = self
                .rc
                .get(self.sentinel, super::REQ_LEN)
                .expect("no-op registration");
            std::hint::black_box(r.key());
        }

        /// `drains` rounds of `prepare` (untimed) and `invalidate_all` (timed).
        pub fn timed(&self, drains: u64) -> std::time::Duration {
            super::timed_rounds(drains, || self.prepare(), || self.invalidate_all())
        }
    }

    /// An rcache holding regions `0..n`.
    pub fn filled(n: usize) -> UcxRcache {
        let rc = UcxRcache::new(usize::MAX).expect("ucs_rcache_create failed");
        for i in 0..n {
            let r = rc
                .get(super::region_addr(i) + super::REQ_OFFSET, super::REQ_LEN)
                .expect("no-op registration cannot fail");
            assert_eq!(r.start(), super::region_addr(i));
        }
        // One hit on each, as `filled_cache` does.
        for i in 0..n {
            drop(rc.get(super::region_addr(i) + super::REQ_OFFSET, super::REQ_LEN));
        }
        rc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_cache_hits() {
        let (cache, _mon) = filled_cache(100);
        let w = Workload::new(100, 1);
        for pos in 0..1000 {
            let h = cache.get(w.addr(pos), REQ_LEN, ACCESS).unwrap();
            assert!(h.is_cached());
        }
        // The fill's misses, its one warming hit on each, and the loop's hits.
        let s = cache.stats();
        assert_eq!((s.misses, s.hits), (100, 100 + 1000));
    }

    #[test]
    fn drain_removes_fired_ranges() {
        let (cache, mon) = filled_cache(10);
        mon.fire_many((0..5).map(|i| {
            Invalidation::Range(Range {
                start: region_addr(i),
                end: region_addr(i) + 4096,
            })
        }));
        drop(
            cache
                .get(region_addr(9) + REQ_OFFSET, REQ_LEN, ACCESS)
                .unwrap(),
        );
        assert_eq!(cache.cached_entries(), 5);
        assert_eq!(cache.stats().invalidated, 5);
    }

    #[test]
    fn churn_fires_every_overlapping_watch_and_only_those() {
        let p = 4096;
        let r = |a: usize, b: usize| Range {
            start: a * p,
            end: b * p,
        };
        let m = Arc::new(ChurnMonitor::default());
        let h = ChurnHandle(m.clone());
        h.watch(r(0, 4), 1).unwrap();
        h.watch(r(4, 8), 2).unwrap();
        h.watch(r(10, 12), 3).unwrap();
        // Pages 3..5 touch the first two watches, not the third.
        assert!(m.churn(r(3, 5)));
        let mut out = Vec::new();
        h.drain(&mut out).unwrap();
        let mut cookies: Vec<u64> = out
            .iter()
            .map(|i| match *i {
                Invalidation::Cookie { cookie, .. } => cookie,
                ref other => panic!("not a cookie event: {other:?}"),
            })
            .collect();
        cookies.sort_unstable();
        assert_eq!(cookies, [1, 2]);
        // Nothing watched there: no event, and the counter does not move.
        let before = h.counter().load(Ordering::Acquire);
        assert!(!m.churn(r(8, 10)));
        assert_eq!(h.counter().load(Ordering::Acquire), before);
    }

    #[cfg(has_ucx)]
    #[test]
    fn ucx_hits_return_the_same_region() {
        let rc = ucx::filled(100);
        let a = rc.get(region_addr(7) + REQ_OFFSET, REQ_LEN).unwrap().key();
        let b = rc.get(region_addr(7) + 1, 8).unwrap().key();
        assert_eq!(a, b);
    }
}
