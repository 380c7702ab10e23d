//! Per-thread hold cells: how a hit takes a reference without writing to the entry.
//!
//! A reference count in the entry is one cache line that every thread hitting that entry must
//! write; two threads sending from the same buffer then serialise on it (measured: 2 threads
//! kept 0.31 of the 1-thread hit rate). Instead a hit records the entry's address in a free
//! cell of its own thread's slot and the release clears that cell, so a hit writes only lines
//! its thread owns and the entry stays read-only (shared by every core's cache).
//!
//! Why this is enough to know when an entry is unused:
//! - A cell is filled only inside the index read lock, for an entry found in the index. An
//!   entry leaves the index under the write lock, which waits for every reader to leave (their
//!   exit is a Release); so once it is out, no new hold can appear and every hold taken is
//!   visible to whoever scans after that.
//! - The retirer (life.rs) CASes each cell still holding the entry to `addr | TAG`. A release reads its
//!   cell, then stores 0 with a plain store (while a cell holds an entry, only the handle's
//!   releaser and a retirer's tag write it). If it read the tag, it asks the cache to reap
//!   now. If the tag landed between its load and its store, the store erases it: nobody reaps
//!   at once, but nothing is deregistered early either (a scanner deregisters only an entry
//!   whose cells it sees clear, and the clearing store is a Release after the last use). The
//!   cache keeps every retired entry on a recheck list and reaps what it can of it on its
//!   next slow path (`Cache::reap_missed`, life.rs), so the lost race delays a
//!   deregistration, never skips it. The release has no locked instruction.
//! - Threads beyond the exclusive slots (which share a slot) and a thread whose cells are all
//!   full fall back to the entry's counted references (entry.rs).

use super::entry::Entry;
use super::slot::{ThreadSlot, SLOTS};
use crossbeam_utils::CachePadded;
#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, AtomicUsize};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, AtomicUsize};

/// Cells per thread: 16 words fill one 128-byte padded line. A thread holding more handles at
/// once falls back to the counted path for the rest.
#[cfg(not(loom))]
pub(crate) const CELLS: usize = 16;
/// Under the loom model (loom_model.rs) one cell per slot: every scan is a model step.
#[cfg(loom)]
pub(crate) const CELLS: usize = 1;

/// Low bit of a cell: the entry was retired while this cell held it (entries are 8-aligned).
const TAG: usize = 1;

/// Busy cells `Held::busy` lists before it falls back to scanning them all: two threads
/// holding all their cells.
const BUSY_MAX: usize = 2 * CELLS;

/// Cells found holding an entry (`Held::busy`), by index `slot * CELLS + cell`; `all`: too many
/// to list.
pub(crate) struct Busy {
    cells: [u16; BUSY_MAX],
    n: usize,
    all: bool,
}

/// The hold cell recording a handle's reference, or `None` when the reference is counted in
/// the entry's state word instead (entry.rs). Not `std::cell::Cell`: a pointer to an atomic.
pub(crate) type HoldCell = Option<NonNull<AtomicUsize>>;

pub(crate) struct Held {
    cells: Box<[CachePadded<[AtomicUsize; CELLS]>]>,
    /// Bit i: slot i has held an entry of this cache at some time (scans skip the others).
    touched: CachePadded<AtomicU64>,
}

impl Held {
    pub fn new() -> Self {
        Held {
            cells: (0..SLOTS)
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicUsize::new(0))))
                .collect(),
            touched: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// Records a hold of `e` in the calling thread's slot; `None` when the caller must count
    /// the reference in the entry instead (shared slot, or every cell busy). The caller holds
    /// the index read lock and found `e` in the index.
    #[inline]
    pub fn hold(&self, slot: ThreadSlot, e: &Entry) -> HoldCell {
        if !slot.exclusive {
            return None;
        }
        let bit = 1u64 << slot.index;
        // Relaxed: only this thread sets its bit; the read lock's Release exit publishes it to
        // scanners together with the cell (see the module comment).
        if self.touched.load(Ordering::Relaxed) & bit == 0 {
            self.touched.fetch_or(bit, Ordering::Relaxed);
        }
        for c in self.cells[slot.index].iter() {
            // Only the owning thread fills its cells and others only clear them, so a 0 seen
            // here stays 0 until our store. Acquire (load) and Release (store): the cell was
            // cleared by the previous holder's releaser, maybe on another thread, with a
            // Release store after its last use of that entry. A scanner that reads OUR value
            // with Acquire concludes that entry is no longer held here and may deregister it;
            // it synchronizes only with the store it read, and a later Relaxed store by another
            // thread is not part of the releaser's release sequence (C++20 [intro.races]: only
            // read-modify-writes continue one). So the chain must be carried explicitly:
            // releaser Release -> our Acquire load -> our Release store -> scanner Acquire.
            // Both are plain moves on x86 (no locked instruction on the hit path). The read
            // lock's exit publishes the new hold itself (module comment).
            if c.load(Ordering::Acquire) == 0 {
                c.store(e as *const Entry as usize, Ordering::Release);
                return Some(NonNull::from(c));
            }
        }
        None
    }

    /// Tags every cell still holding `e`; true if any does (its holder will ask to reap). The
    /// caller took `e` out of the index under the write lock, so no new hold can appear.
    pub fn tag(&self, e: &Entry) -> bool {
        let addr = e as *const Entry as usize;
        let mut held = false;
        self.each_cell(|c| held |= Self::tag_cell(c, addr));
        held
    }

    /// The cells holding an entry now: one read of every cell for a batch of entries that all
    /// left the index before this call (`tag_among`), instead of one per entry (16 cells per
    /// thread that ever hit, ~3 instructions each: 43 of a drained event's 542 instructions
    /// with one such thread; issue 13). A cell read empty or holding another entry can never hold
    /// one of the batch again (out of the index: no new hold), so it needs no second look.
    ///
    /// Acquire: as `tag`'s load (a cell the releaser already cleared, or that its owner refilled
    /// after the clear, orders the holder's use before our deregistration; see `hold`). One
    /// load synchronises with the store it reads whichever entry of the batch it answers for.
    pub fn busy(&self) -> Busy {
        let mut b = Busy {
            cells: [0; BUSY_MAX],
            n: 0,
            all: false,
        };
        self.each_cell_at(|i, c| {
            if b.all || c.load(Ordering::Acquire) & !TAG == 0 {
                return;
            }
            if b.n == BUSY_MAX {
                // More holds than the list keeps: every tag scans every cell, as before.
                b.all = true;
                return;
            }
            b.cells[b.n] = i as u16;
            b.n += 1;
        });
        b
    }

    /// `tag`, looking only at the cells `busy` found holding something (it was taken after `e`
    /// left the index).
    pub fn tag_among(&self, busy: &Busy, e: &Entry) -> bool {
        let addr = e as *const Entry as usize;
        let mut held = false;
        let mut f = |c: &AtomicUsize| held |= Self::tag_cell(c, addr);
        if busy.all {
            self.each_cell(f);
        } else {
            for &i in &busy.cells[..busy.n] {
                let i = i as usize;
                f(&self.cells[i / CELLS][i % CELLS]);
            }
        }
        held
    }

    /// Tags `c` if it holds `addr`; true if it holds it (tagged now or before).
    #[inline]
    fn tag_cell(c: &AtomicUsize, addr: usize) -> bool {
        // A plain load first: most cells hold something else, and a failing CAS is still a
        // locked instruction (one per cell made a drain of 100 entries 1.3x slower).
        // Acquire (load, and CAS failure): a cell the releaser already cleared (Release
        // store) makes its use of the registration happen-before our deregistration; the
        // holder cannot re-take `e`, which is out of the index. Relaxed on CAS success: the
        // holder that sees the tag synchronises through the retired list's lock (life.rs).
        let now = c.load(Ordering::Acquire);
        if now & !TAG != addr {
            return false;
        }
        now == addr | TAG
            || match c.compare_exchange(addr, addr | TAG, Ordering::Relaxed, Ordering::Acquire) {
                Ok(_) => true,
                Err(now) => now == addr | TAG,
            }
    }

    /// Whether any cell holds `e` (tagged or not). Callers serialise with `tag` and the
    /// releasers' reap through the cache's locks.
    pub fn holds(&self, e: &Entry) -> bool {
        let addr = e as *const Entry as usize;
        let mut held = false;
        self.each_cell(|c| {
            // Acquire: a cleared cell's Release store orders its holder's use before our
            // deregistration.
            held |= c.load(Ordering::Acquire) & !TAG == addr;
        });
        held
    }

    fn each_cell(&self, mut f: impl FnMut(&AtomicUsize)) {
        self.each_cell_at(|_, c| f(c));
    }

    /// `each_cell`, with each cell's index (`slot * CELLS + cell`, as `Busy` lists them).
    fn each_cell_at(&self, mut f: impl FnMut(usize, &AtomicUsize)) {
        // Relaxed: a bit is set before the first cell it covers is filled, by the slot's owner
        // inside the read lock. Scanners that decide whether an entry is unused hold the index
        // write lock (holds in claim_unused) or run after the entry left the index under it
        // (tag in retire); the write lock acquires every reader's exit, which publishes the bit
        // with the cell. reap and reap_missed do not take it, but run after such a retire
        // (under the retired list's lock, which orders them after it), and a hold of the entry
        // can only have been taken before it left the index.
        let mut touched = self.touched.load(Ordering::Relaxed);
        while touched != 0 {
            let i = touched.trailing_zeros() as usize;
            touched &= touched - 1;
            for (k, c) in self.cells[i].iter().enumerate() {
                f(i * CELLS + k, c);
            }
        }
    }
}

/// Clears a hold. When the entry was retired meanwhile, returns `Some(id())` — read while the
/// hold still keeps the entry alive — and the caller must ask the cache to reap that id (once
/// the cell is clear another releaser may free the entry). A missed tag only delays the reaping
/// to the cache's next `reap_missed` (module comment). The entry is not read otherwise.
///
/// # Safety
/// `cell` is the cell returned by `Held::hold` for this handle, in a `Held` that is still alive.
#[inline]
pub(crate) unsafe fn release(cell: NonNull<AtomicUsize>, id: impl FnOnce() -> u64) -> Option<u64> {
    // SAFETY: the caller's contract; the `Held` lives as long as its cache, which outlives
    // every handle.
    let c = unsafe { cell.as_ref() };
    // Relaxed load: only the tag bit matters, and missing a tag set concurrently is allowed.
    let retired = (c.load(Ordering::Relaxed) & TAG != 0).then(id);
    // Release: our use of the registration happens-before a scanner that sees the cell clear.
    #[cfg(not(loom))]
    c.store(0, Ordering::Release);
    // Under loom the same clearing write as a swap whose result is ignored: loom 0.7 lets a
    // plain store land between the read and the write of a concurrent compare_exchange
    // (tokio-rs/loom#254), an execution no hardware produces. A swap takes the same places in
    // the cell's modification order as the store, and loom keeps read-modify-writes atomic.
    #[cfg(loom)]
    c.swap(0, Ordering::Release);
    retired
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn entry(id: u64) -> Entry {
        Entry::cached(id, 0)
    }

    const MINE: ThreadSlot = ThreadSlot {
        index: 3,
        exclusive: true,
    };

    #[test]
    fn hold_release_without_retire_needs_no_reap() {
        let h = Held::new();
        let e = entry(1);
        let c = h.hold(MINE, &e).expect("a free cell");
        assert!(h.holds(&e));
        // SAFETY: `c` came from `h.hold`, `h` is alive.
        assert!(unsafe { release(c, || 1) }.is_none());
        assert!(!h.holds(&e));
    }

    #[test]
    fn retire_while_held_makes_the_releaser_reap() {
        let h = Held::new();
        let e = entry(1);
        let c = h.hold(MINE, &e).unwrap();
        assert!(h.tag(&e), "the retirer must see the hold");
        assert!(h.tag(&e), "a second scan still sees the tagged hold");
        // SAFETY: as above.
        assert_eq!(
            unsafe { release(c, || 1) },
            Some(1),
            "the releaser must learn it was retired"
        );
        assert!(!h.tag(&e) && !h.holds(&e));
    }

    #[test]
    fn shared_slots_and_full_cells_fall_back_to_counting() {
        let h = Held::new();
        let e = entry(1);
        let shared = ThreadSlot {
            index: 3,
            exclusive: false,
        };
        assert!(h.hold(shared, &e).is_none());
        let cells: Vec<_> = (0..CELLS).map(|_| h.hold(MINE, &e).unwrap()).collect();
        assert!(h.hold(MINE, &e).is_none(), "all {CELLS} cells are busy");
        for c in cells {
            // SAFETY: as above.
            unsafe { release(c, || 1) };
        }
        assert!(h.hold(MINE, &e).is_some());
    }

    #[test]
    fn other_entries_are_not_reported() {
        let h = Held::new();
        let (a, b) = (entry(1), entry(2));
        let _c = h.hold(MINE, &a).unwrap();
        assert!(!h.holds(&b) && !h.tag(&b));
    }

    #[test]
    fn one_read_of_the_cells_tags_a_whole_batch() {
        let h = Held::new();
        let other = ThreadSlot {
            index: 40,
            exclusive: true,
        };
        let es: Vec<Entry> = (0..4).map(entry).collect();
        let c0 = h.hold(MINE, &es[0]).unwrap();
        let _c2 = h.hold(other, &es[2]).unwrap();
        let _c2b = h.hold(MINE, &es[2]).unwrap();
        let busy = h.busy();
        assert_eq!((busy.n, busy.all), (3, false));
        // SAFETY: `c0` came from `h.hold`, `h` is alive.
        assert!(unsafe { release(c0, || 0) }.is_none(), "not tagged yet");
        let held: Vec<bool> = es.iter().map(|e| h.tag_among(&busy, e)).collect();
        assert_eq!(held, [false, false, true, false]);
        assert!(h.holds(&es[2]) && !h.holds(&es[0]));
    }

    #[test]
    fn more_holds_than_the_list_keeps_scan_every_cell() {
        let h = Held::new();
        let es: Vec<Entry> = (0..BUSY_MAX as u64 + 1).map(entry).collect();
        let _cells: Vec<_> = es
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let slot = ThreadSlot {
                    index: i / CELLS,
                    exclusive: true,
                };
                h.hold(slot, e).unwrap()
            })
            .collect();
        let busy = h.busy();
        assert!(busy.all);
        assert!(es.iter().all(|e| h.tag_among(&busy, e)), "every hold found");
    }
}
