//! The torture driver: threads churn memory and, between operations, move a unique pattern
//! through a cached registration with the software NIC and check the application's memory.
//!
//! Every thread owns a pool of buffers and replays its own seeded sequence. Operations: glibc
//! malloc/free below and above the mmap threshold (so free() unmaps inside glibc), mmap/munmap
//! (whole, head, tail, middle), mremap (move, shrink, grow), madvise(DONTNEED), brk grow and
//! shrink, mmap MAP_FIXED over a live buffer, fork with the child writing every buffer, and
//! neighbour noise (mprotect, mlock, MADV_DONTFORK of one page of a buffer's mapping, undone at
//! once: reported, no page changed; what revalidation keeps cached). Freed
//! addresses are deliberately handed back to the next mapping (MAP_FIXED_NOREPLACE, or mremap to
//! them), so a stale registration lands on a live address.

use crate::mem::{self, Buf, Kind, PAGE};
use crate::rng::Rng;
use regcache::registrar::uring::SoftNic;
use regcache::{Access, Cache, StatsSnapshot};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    /// Memory operations in total (each followed by a verified transfer).
    pub ops: u64,
    pub threads: usize,
    /// Buffers each thread keeps.
    pub buffers: usize,
    /// Largest transfer, bytes.
    pub max_transfer: usize,
    /// Include fork() (costly: copies the pinned pages into the child).
    pub fork: bool,
    /// Include neighbour noise (mem::Noise on a page of a buffer's own mapping, undone at once:
    /// reported by ummunotify, no page changed) on this percentage of operations.
    pub noise_percent: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            seed: 1,
            ops: 10_000,
            threads: 2,
            buffers: 12,
            max_transfer: 256 << 10,
            fork: true,
            noise_percent: 20,
        }
    }
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub ops: u64,
    pub transfers: u64,
    /// Transfers whose bytes did not arrive where the application looks: stale registrations.
    pub corruptions: u64,
    /// Cache or NIC calls that failed (always a bug in a correct run).
    pub errors: u64,
    pub first_error: Option<String>,
    pub by_op: [u64; OPS.len()],
    pub stats: StatsSnapshot,
}

/// Names of the memory operations, in `Report::by_op` order.
pub const OPS: [&str; 14] = [
    "alloc",
    "free",
    "munmap-head",
    "munmap-tail",
    "munmap-middle",
    "mremap-move",
    "mremap-shrink",
    "mremap-grow",
    "madvise-dontneed",
    "map-fixed-over",
    "fork",
    "noise-mprotect",
    "noise-mlock",
    "noise-dontfork",
];

#[derive(Default)]
struct Shared {
    ops: AtomicU64,
    transfers: AtomicU64,
    corruptions: AtomicU64,
    errors: AtomicU64,
    by_op: [AtomicU64; OPS.len()],
    first_error: std::sync::Mutex<Option<String>>,
}

/// Runs `plan` against `cache`, whose registrar must be `nic`. `progress` is called now and then
/// with the operations done so far.
pub fn run(plan: &Plan, cache: &Cache, nic: &SoftNic, progress: &(dyn Fn(u64) + Sync)) -> Report {
    mem::fix_mmap_threshold(128 << 10);
    let shared = Shared::default();
    let per_thread = plan.ops.div_ceil(plan.threads.max(1) as u64);
    std::thread::scope(|s| {
        for t in 0..plan.threads.max(1) {
            let shared = &shared;
            s.spawn(move || {
                let mut w = Worker::new(plan, cache, nic, shared, t);
                for i in 0..per_thread {
                    w.step();
                    if t == 0 && i % 1024 == 0 {
                        progress(shared.ops.load(Relaxed));
                    }
                }
                w.release_all();
            });
        }
    });
    Report {
        ops: shared.ops.load(Relaxed),
        transfers: shared.transfers.load(Relaxed),
        corruptions: shared.corruptions.load(Relaxed),
        errors: shared.errors.load(Relaxed),
        first_error: shared.first_error.lock().map(|g| g.clone()).unwrap_or(None),
        by_op: std::array::from_fn(|i| shared.by_op[i].load(Relaxed)),
        stats: cache.stats(),
    }
}

struct Worker<'a> {
    rng: Rng,
    plan: &'a Plan,
    cache: &'a Cache,
    nic: &'a SoftNic,
    shared: &'a Shared,
    thread: usize,
    bufs: Vec<Option<Buf>>,
    /// Addresses this thread freed recently: the next mappings are put back there.
    freed: Vec<usize>,
    pattern: Vec<u8>,
    readback: Vec<u8>,
    transfer_no: u64,
}

impl<'a> Worker<'a> {
    fn new(
        plan: &'a Plan,
        cache: &'a Cache,
        nic: &'a SoftNic,
        shared: &'a Shared,
        t: usize,
    ) -> Self {
        Worker {
            rng: Rng::new(plan.seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            plan,
            cache,
            nic,
            shared,
            thread: t,
            bufs: vec![None; plan.buffers.max(2)],
            freed: Vec::new(),
            pattern: Vec::new(),
            readback: Vec::new(),
            transfer_no: 0,
        }
    }

    fn step(&mut self) {
        let slot = self.rng.range(0, self.bufs.len());
        let op = self.memory_op(slot);
        if let Some(op) = op {
            self.shared.by_op[op].fetch_add(1, Relaxed);
        }
        if cfg!(debug_assertions) || std::env::var_os("REGCACHE_TORTURE_DEBUG").is_some() {
            for b in self.bufs.iter().flatten() {
                if !mem::is_mapped(b.addr, b.len) {
                    eprintln!("BUG after op {op:?} on slot {slot}: {b:?} not mapped");
                    std::process::abort();
                }
            }
        }
        self.shared.ops.fetch_add(1, Relaxed);
        // Half the time use the buffer just changed (where staleness would bite), else any.
        let use_slot = if self.rng.chance(50) {
            slot
        } else {
            self.rng.range(0, self.bufs.len())
        };
        if let Some(b) = self.bufs[use_slot] {
            self.transfer(b);
        }
    }

    fn remember_freed(&mut self, addr: usize) {
        if self.freed.len() >= 32 {
            self.freed.remove(0);
        }
        self.freed.push(addr);
    }

    fn reuse_hint(&mut self) -> Option<usize> {
        if self.freed.is_empty() || !self.rng.chance(70) {
            return None;
        }
        Some(self.freed[self.rng.range(0, self.freed.len())])
    }

    fn mmap_len(&mut self) -> usize {
        self.rng.range(1, 33) * PAGE
    }

    /// One memory operation on `slot`; returns its index in `OPS`.
    fn memory_op(&mut self, slot: usize) -> Option<usize> {
        let Some(b) = self.bufs[slot] else {
            self.bufs[slot] = self.alloc();
            return self.bufs[slot].map(|_| 0);
        };
        if b.kind == Kind::Mmap && self.plan.noise_percent > 0 {
            let draw = self.rng.range(0, 100) as u64;
            if draw < self.plan.noise_percent {
                return self.noise(b);
            }
        }
        let choice = self.rng.range(0, 100);
        if b.kind != Kind::Mmap || choice < 30 {
            if self.plan.fork && choice == 99 && self.thread == 0 {
                self.fork_and_scribble();
                return Some(10);
            }
            self.free(slot);
            return Some(1);
        }
        let pages = b.len / PAGE;
        match choice {
            30..=37 if pages > 1 => {
                let cut = self.rng.range(1, pages) * PAGE;
                mem::unmap(b.addr, cut);
                self.remember_freed(b.addr);
                self.bufs[slot] = Some(Buf {
                    addr: b.addr + cut,
                    len: b.len - cut,
                    ..b
                });
                Some(2)
            }
            38..=45 if pages > 1 => {
                let keep = self.rng.range(1, pages) * PAGE;
                mem::unmap(b.addr + keep, b.len - keep);
                self.bufs[slot] = Some(Buf { len: keep, ..b });
                Some(3)
            }
            46..=53 if pages > 2 => {
                let lo = self.rng.range(1, pages - 1) * PAGE;
                let hi = self.rng.range(lo / PAGE + 1, pages) * PAGE;
                mem::unmap(b.addr + lo, hi - lo);
                self.bufs[slot] = Some(Buf { len: lo, ..b });
                let tail = Buf {
                    addr: b.addr + hi,
                    len: b.len - hi,
                    ..b
                };
                match self.bufs.iter().position(Option::is_none) {
                    Some(free) => self.bufs[free] = Some(tail),
                    None => mem::unmap(tail.addr, tail.len),
                }
                Some(4)
            }
            54..=63 if mem::single_vma(b.addr, b.len) => {
                // Move onto an address freed earlier if it is still free, else anywhere new:
                // reserve the target first (ours alone), then MREMAP_FIXED replaces it.
                let len = b.len;
                let hint = self.reuse_hint();
                let spot = hint
                    .and_then(|a| mem::map(len, Some(a)))
                    .or_else(|| mem::map(len, None))?;
                let Some(addr) = mem::remap(b.addr, b.len, b.len, Some(spot)) else {
                    // The kernel unmapped the spot before failing: nothing of ours is there.
                    return self.check_unchanged(slot);
                };
                self.remember_freed(b.addr);
                self.bufs[slot] = Some(Buf { addr, ..b });
                Some(5)
            }
            64..=70 if pages > 1 => {
                let new = self.rng.range(1, pages) * PAGE;
                let Some(addr) = mem::remap(b.addr, b.len, new, None) else {
                    return self.check_unchanged(slot);
                };
                self.bufs[slot] = Some(Buf {
                    addr,
                    len: new,
                    ..b
                });
                Some(6)
            }
            71..=77 if mem::single_vma(b.addr, b.len) => {
                let new = b.len + self.rng.range(1, 17) * PAGE;
                let Some(addr) = mem::remap(b.addr, b.len, new, None) else {
                    return self.check_unchanged(slot);
                };
                if addr != b.addr {
                    self.remember_freed(b.addr);
                }
                self.bufs[slot] = Some(Buf {
                    addr,
                    len: new,
                    ..b
                });
                Some(7)
            }
            78..=88 => {
                let off = self.rng.range(0, pages) * PAGE;
                let len = self.rng.range(1, pages - off / PAGE + 1) * PAGE;
                mem::dontneed(b.addr + off, len);
                Some(8)
            }
            89..=98 => {
                let off = self.rng.range(0, pages) * PAGE;
                let len = self.rng.range(1, pages - off / PAGE + 1) * PAGE;
                let ok = mem::map_over(b.addr + off, len);
                if !ok && std::env::var_os("REGCACHE_TORTURE_DEBUG").is_some() {
                    eprintln!("map over failed: {}", std::io::Error::last_os_error());
                }
                ok.then_some(9)
            }
            _ => {
                self.free(slot);
                Some(1)
            }
        }
    }

    /// Neighbour noise on one page of `b`'s mapping (often next to, sometimes inside, the
    /// ranges this thread's transfers registered).
    fn noise(&mut self, b: Buf) -> Option<usize> {
        let page = b.addr + self.rng.range(0, b.len / PAGE) * PAGE;
        let (what, op) = match self.rng.range(0, 3) {
            0 => (mem::Noise::Mprotect, 11),
            1 => (mem::Noise::Mlock, 12),
            _ => (mem::Noise::DontFork, 13),
        };
        mem::noise(page, what).then_some(op)
    }

    fn alloc(&mut self) -> Option<Buf> {
        let pick = self.rng.range(0, 100);
        if pick < 40 {
            let len = self.mmap_len();
            let at = self.reuse_hint();
            let addr = at
                .and_then(|a| mem::map(len, Some(a)))
                .or_else(|| mem::map(len, None))?;
            return Some(Buf {
                addr,
                len,
                kind: Kind::Mmap,
            });
        }
        if pick < 65 {
            let len = self.rng.range(16, 64 << 10);
            return mem::malloc(len).map(|addr| Buf {
                addr,
                len,
                kind: Kind::MallocSmall,
            });
        }
        if pick < 90 || !self.owns_brk() {
            let len = self.rng.range(256 << 10, 2 << 20);
            return mem::malloc(len).map(|addr| Buf {
                addr,
                len,
                kind: Kind::MallocLarge,
            });
        }
        // The break belongs to one thread of ours; glibc's main arena is not used by workers.
        let len = self.rng.range(1, 9) * PAGE;
        let base = mem::brk_grow(len)?;
        Some(Buf {
            addr: base,
            len,
            kind: Kind::Brk,
        })
    }

    /// After a failed mremap of a single-VMA buffer nothing should have changed; if the buffer
    /// is not whole any more, forget it (leak it) rather than unmap addresses that another
    /// thread may own by now.
    fn check_unchanged(&mut self, slot: usize) -> Option<usize> {
        if let Some(b) = self.bufs[slot] {
            if !mem::is_mapped(b.addr, b.len) {
                self.bufs[slot] = None;
            }
        }
        None
    }

    /// The program break is one per process: only one worker of all concurrent runs may move it.
    fn owns_brk(&mut self) -> bool {
        static OWNER: std::sync::Mutex<Option<std::thread::ThreadId>> = std::sync::Mutex::new(None);
        let me = std::thread::current().id();
        let Ok(mut owner) = OWNER.lock() else {
            return false;
        };
        *owner.get_or_insert(me) == me
    }

    fn free(&mut self, slot: usize) {
        let Some(b) = self.bufs[slot].take() else {
            return;
        };
        match b.kind {
            Kind::Mmap => {
                mem::unmap(b.addr, b.len);
                self.remember_freed(b.addr);
            }
            Kind::MallocSmall | Kind::MallocLarge => mem::free(b.addr),
            Kind::Brk => {
                if !mem::brk_shrink(b.addr + b.len, b.len) {
                    // Not at the top any more: keep it (it is still ours) until it is.
                    self.bufs[slot] = Some(b);
                }
            }
        }
    }

    fn fork_and_scribble(&mut self) {
        let live: Vec<Buf> = self.bufs.iter().flatten().copied().collect();
        // SAFETY: the child only writes to its own copies of our buffers (plain stores, no
        // allocation or locking) and leaves with _exit, so it cannot deadlock on a lock another
        // thread held at fork time.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            for b in &live {
                // SAFETY: the buffers are mapped and writable in the child too.
                unsafe { std::ptr::write_bytes(b.addr as *mut u8, 0xEE, b.len) };
            }
            // SAFETY: terminate the child without running destructors or atexit handlers.
            unsafe { libc::_exit(0) };
        }
        if pid > 0 {
            let mut status = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }

    /// Gets a registration for part of `b`, has the NIC write a unique pattern through it and
    /// checks the application sees it; then the reverse direction.
    fn transfer(&mut self, b: Buf) {
        let off = self.rng.range(0, b.len);
        let len = self
            .rng
            .range(1, (b.len - off).min(self.plan.max_transfer) + 1);
        let addr = b.addr + off;
        self.transfer_no += 1;
        let seed = self.plan.seed ^ ((self.thread as u64) << 48) ^ self.transfer_no;
        self.pattern.resize(len, 0);
        self.readback.resize(len, 0);
        Rng::fill(seed, &mut self.pattern);
        let access = Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE;
        let h = match self.cache.get(addr, len, access) {
            Ok(h) => h,
            Err(e) => return self.error(format!("get({addr:#x}, {len}): {e}")),
        };
        self.shared.transfers.fetch_add(1, Relaxed);
        // The NIC writes into the buffer (an RDMA WRITE arriving, a RECV completing).
        if let Err(e) = self.nic.dma_write(&h.registration(), addr, &self.pattern) {
            return self.error(format!("dma_write({addr:#x}, {len}): {e}"));
        }
        // SAFETY: `b` is a live buffer of this thread; nothing else references its bytes.
        let mut bad = unsafe { mem::bytes(addr, len) } != &self.pattern[..];
        // The application writes, the NIC reads (an RDMA READ by the peer, a SEND).
        Rng::fill(!seed, &mut self.pattern);
        // SAFETY: as above.
        unsafe { mem::write(addr, &self.pattern) };
        if let Err(e) = self
            .nic
            .dma_read(&h.registration(), addr, &mut self.readback)
        {
            return self.error(format!("dma_read({addr:#x}, {len}): {e}"));
        }
        bad |= self.readback != self.pattern;
        if bad {
            self.shared.corruptions.fetch_add(1, Relaxed);
        }
    }

    fn error(&self, msg: String) {
        self.shared.errors.fetch_add(1, Relaxed);
        if let Ok(mut first) = self.shared.first_error.lock() {
            first.get_or_insert(format!("thread {}: {msg}", self.thread));
        }
    }

    fn release_all(&mut self) {
        for slot in 0..self.bufs.len() {
            self.free(slot);
        }
        // A brk buffer below another stays; drop what is left.
        for b in self.bufs.iter_mut().filter_map(Option::take) {
            let _ = b;
        }
    }
}
