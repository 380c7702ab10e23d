//! One registration and the state word that counts its references.
//!
//! Hits reference an entry through per-thread hold cells (held.rs) and never write to it.
//! `state` counts the other references — handles made on a miss, by threads without an
//! exclusive slot or with every cell busy, and one-use registrations — in its low bits, with
//! `RETIRED` in the top bit: the entry left the index (or never entered it), so no new
//! reference can be taken. Who sets the bit, and who deregisters the entry once it is retired
//! and unreferenced, is decided in life.rs:
//! - the retirer (invalidation, merge, flush), by `fetch_or(RETIRED)` (`mark_retired`), after
//!   the entry left the index under the write lock;
//! - the evictor, by `compare_exchange(0, RETIRED)` (`claim_unused`) under the index write lock
//!   after finding no cell holding it;
//! - a one-use registration is born `RETIRED | 1`;
//! - the last counted releaser learns it must reap from `fetch_sub(1)` returning `RETIRED | 1`.
//!
//! References are taken only while the entry is in the index under the index read lock, and the
//! entry is marked retired only after it left the index under the write lock, so a new
//! reference never sees RETIRED.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicU64;
use std::ptr::NonNull;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Top bit of `state`: out of the index for good (life.rs).
pub(crate) const RETIRED: u64 = 1 << 63;

/// Top bit of `id`: a one-use registration (never watched). Ids count up from 1 and never
/// reach it.
const ONE_USE: u64 = 1 << 63;

/// Bit 62 of `id`: a cached entry registered under a watch kept from the entry it replaced
/// (park.rs), which was never ARMed for this registration. Its cookie is `id & !UNARMED`;
/// revalidation compares cookies with `id` itself, so it never CHECKs such an entry (the
/// module's digest is the previous registration's).
pub(crate) const UNARMED: u64 = 1 << 62;

/// The monitor cookie of the cached entry `id` (its watch's; `id` without `UNARMED`).
#[inline]
pub(crate) fn cookie_of(id: u64) -> u64 {
    id & !UNARMED
}

/// What must outlive the entry's index record (40 bytes, a 48-byte allocation): the range,
/// rights and keys are in the record while the entry is cached (index.rs, where hits read
/// them), then with the retired list (life.rs), and copied into every handle (issue 13:
/// memory per cached entry).
pub(crate) struct Entry {
    /// Unique id (the monitor cookie), with `ONE_USE` for one-use registrations.
    pub id: u64,
    /// The registrar's handle (`Registration::token`).
    pub token: u64,
    /// Counted references in the low bits, RETIRED in the top bit.
    pub state: AtomicU64,
    /// LRU neighbours by start address (index.rs), changed only under the index write lock.
    pub lru_prev: AtomicUsize,
    pub lru_next: AtomicUsize,
}

#[cfg(all(target_pointer_width = "64", not(loom)))]
const _: () = assert!(std::mem::size_of::<Entry>() == 40);

impl Entry {
    /// A cacheable entry with no users yet, watched by the monitor (with `UNARMED` in `id`:
    /// under a kept watch, never revalidated).
    pub fn cached(id: u64, token: u64) -> Self {
        debug_assert!(id & ONE_USE == 0);
        Entry {
            id,
            token,
            state: AtomicU64::new(0),
            lru_prev: AtomicUsize::new(usize::MAX),
            lru_next: AtomicUsize::new(usize::MAX),
        }
    }

    /// A one-use registration: retired from birth, owned by its single handle.
    pub fn one_use(id: u64, token: u64) -> Self {
        Entry {
            id: id | ONE_USE,
            state: AtomicU64::new(RETIRED | 1),
            ..Entry::cached(id, token)
        }
    }

    /// Whether a monitor watches this entry (false for one-use registrations).
    pub fn watched(&self) -> bool {
        self.id & ONE_USE == 0
    }

    /// The cookie of this entry's watch (a cached entry's).
    #[inline]
    pub fn cookie(&self) -> u64 {
        cookie_of(self.id)
    }

    /// Takes a counted reference. Caller holds the index read (or write) lock and found the
    /// entry in the index, so it is live.
    #[inline]
    pub fn acquire(&self) {
        // Relaxed: the index lock orders this increment before any later eviction attempt (which
        // takes the write lock), and the entry's fields were published by that lock too.
        self.state.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a counted reference; true when the caller must ask the cache to reap the entry (it
    /// was the last counted reference to a retired entry; cells may still hold it).
    #[inline]
    pub fn release(&self) -> bool {
        // AcqRel: Release makes the caller's use of the registration happen-before whoever
        // deregisters it; Acquire, when we are the one, sees the retirer's writes.
        self.state.fetch_sub(1, Ordering::AcqRel) == RETIRED | 1
    }

    /// Marks an entry removed from the index retired; true when it had no counted references
    /// (the caller must still check the hold cells).
    pub fn mark_retired(&self) -> bool {
        // AcqRel: Acquire pairs with the releases of past users; Release publishes the mark to
        // the last releaser.
        self.state.fetch_or(RETIRED, Ordering::AcqRel) == 0
    }

    /// Counted references (for the reaper, under the retired list's lock).
    pub fn counted(&self) -> u64 {
        // Acquire: pairs with the releasers' AcqRel decrements, so their use of the
        // registration happens-before a deregistration decided on this value.
        self.state.load(Ordering::Acquire) & !RETIRED
    }

    /// Claims a live entry with no counted references for eviction, marking it retired (the
    /// caller checked the cells under the write lock); false when it is in use.
    pub fn claim_unused(&self) -> bool {
        // Acquire: pairs with the last user's release, so its use happens-before deregistration.
        self.state
            .compare_exchange(0, RETIRED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }
}

/// An entry while it is shared: allocated by `Box::into_raw` and kept as a raw pointer by
/// the list that owns it (the index, then the retired list, life.rs), while handles and hold cells reach
/// it through `NonNull` copies. Never a `Box` while shared: moving a `Box` asserts unique
/// ownership, which the handles' pointers contradict (undefined under Stacked Borrows). It has
/// no `Drop`: an `EntryPtr` dropped without `free` (an unwind) leaks the entry, never frees
/// one that a handle may still read.
pub(crate) struct EntryPtr(NonNull<Entry>);

// SAFETY: an Entry is Send + Sync (immutable fields and atomics); the pointer is an owning one.
unsafe impl Send for EntryPtr {}
// SAFETY: as above; shared access only reads the entry.
unsafe impl Sync for EntryPtr {}

impl EntryPtr {
    pub fn new(e: Entry) -> Self {
        EntryPtr(NonNull::from(Box::leak(Box::new(e))))
    }

    /// As `new`, in the allocation of an evicted entry when there is one (a miss at the entry
    /// limit then allocates nothing: it reuses the memory of the entry it evicted last).
    pub fn new_in(spare: Option<SpareEntry>, e: Entry) -> Self {
        match spare {
            None => Self::new(e),
            Some(s) => {
                let p = std::mem::ManuallyDrop::new(s).0;
                // SAFETY: the spare is an allocation made by `Box::new` for an `Entry` (so
                // with its layout), holding no value (`recycle` dropped it) and owned by no one
                // else; writing a value makes it a live boxed entry again, which `free` (or a
                // later `recycle`) releases like any other.
                unsafe { p.as_ptr().write(e) };
                EntryPtr(p)
            }
        }
    }

    /// As `free`, but keeps the allocation for the next entry (`new_in`).
    ///
    /// # Safety
    /// As `free`: nothing references the entry any more.
    pub unsafe fn recycle(self) -> SpareEntry {
        // SAFETY: unreferenced (the caller's contract) and owned by `self`, consumed here: the
        // value is dropped once and never read again; the memory stays allocated.
        unsafe { std::ptr::drop_in_place(self.0.as_ptr()) };
        SpareEntry(self.0)
    }

    /// The pointer handles keep.
    pub fn as_non_null(&self) -> NonNull<Entry> {
        self.0
    }

    /// Frees the entry.
    ///
    /// # Safety
    /// Nothing references it any more: it is out of the index and the retired list, and no
    /// handle or hold cell holds it (or none can be dereferenced again).
    pub unsafe fn free(self) {
        // SAFETY: allocated by Box in `new`, freed once (this consumes the only owner), and
        // unreferenced per the contract.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

impl std::ops::Deref for EntryPtr {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        // SAFETY: the entry lives until `free` consumes its owner, which this borrows.
        unsafe { self.0.as_ref() }
    }
}

/// The allocation of an entry whose value was dropped (`EntryPtr::recycle`), kept to hold the
/// next entry (`EntryPtr::new_in`). Deallocated on drop.
pub(crate) struct SpareEntry(NonNull<Entry>);

// SAFETY: owned memory holding no value; nothing else points at it.
unsafe impl Send for SpareEntry {}

impl Drop for SpareEntry {
    fn drop(&mut self) {
        // SAFETY: allocated by `Box::new` for an `Entry` (the global allocator, `Entry`'s
        // layout), its value already dropped by `recycle`: deallocated once, here.
        unsafe { std::alloc::dealloc(self.0.as_ptr().cast(), std::alloc::Layout::new::<Entry>()) }
    }
}

/// Most allocations `Spares` keeps: 16 Ki entries of 48 bytes (768 KiB, and 128 KiB of list)
/// at most. A drain of up to that many entries then frees nothing: `free` of a 48-byte chunk
/// was ~110 instructions of the ~730 a drained event cost, and 8% of its time at 10,000 events
/// (128 spares: issue 13, docs/benchmarks.md). glibc would keep most of that memory in its
/// bins anyway; kept here, the misses that refill the cache reuse it first.
const SPARES: usize = 16 * 1024;

/// Allocations of entries reaped on the slow paths (under the miss lock), kept for the next
/// misses' entries (`EntryPtr::new_in`): a drain that retires N unused entries and the N misses
/// that follow then free and allocate nothing, up to `SPARES` (issue 13, drain cost).
#[derive(Default)]
pub(crate) struct Spares(Vec<SpareEntry>);

impl Spares {
    /// An allocation for the next entry, if one is kept.
    pub fn take(&mut self) -> Option<SpareEntry> {
        self.0.pop()
    }

    /// Keeps the allocation of `e` (its value dropped), or frees it when enough are kept.
    ///
    /// # Safety
    /// As `EntryPtr::free`: nothing references the entry any more.
    pub unsafe fn keep(&mut self, e: EntryPtr) {
        if self.0.len() < SPARES {
            // SAFETY: the caller's contract.
            self.0.push(unsafe { e.recycle() });
        } else {
            // SAFETY: the caller's contract.
            unsafe { e.free() };
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn spares_keep_up_to_their_bound_and_are_reused() {
        let mut spares = Spares::default();
        for i in 0..SPARES as u64 + 3 {
            // SAFETY: a fresh entry nobody else references.
            unsafe { spares.keep(EntryPtr::new(Entry::cached(i << 8, i))) };
        }
        assert_eq!(
            spares.0.len(),
            SPARES,
            "kept up to the bound, freed the rest"
        );
        let reused = EntryPtr::new_in(spares.take(), Entry::cached(1 << 8, 7));
        assert_eq!((reused.id, reused.token), (1 << 8, 7));
        assert_eq!(spares.0.len(), SPARES - 1);
        // SAFETY: unreferenced; the rest are deallocated by the spares' drop.
        unsafe { reused.free() };
    }
}
