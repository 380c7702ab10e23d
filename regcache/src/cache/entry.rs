//! One registration and the state word that counts its references.
//!
//! Hits reference an entry through per-thread hold cells (held.rs) and never write to it.
//! `state` counts the other references — handles made on a miss, by threads without an
//! exclusive slot or with every cell busy, and one-use registrations — in its low bits, with
//! `RETIRED` in the top bit: the entry left the index (or never entered it), so no new
//! reference can be taken. Who sets the bit, and who deregisters the entry once it is retired
//! and unreferenced, is decided in life.rs:
//! - the retirer (invalidation, merge, flush), by `fetch_or(RETIRED)` (`mark_retired`), after
//!   the entry left the index under the write lock (a plain store when it reads no count:
//!   none can appear any more);
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
use std::sync::atomic::{AtomicPtr, Ordering};

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

/// What must outlive the entry's index record (48 bytes, a pool slot: pool.rs): the range,
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
    /// Start of the range it registered (a cached entry's; 0 for one-use ones): the key of its
    /// index record, for the eviction walk, which reaches entries through the LRU links.
    pub start: usize,
    /// LRU neighbours (index.rs), null at the ends; meaningful only while in the index, changed
    /// only under the index write lock.
    pub lru_prev: AtomicPtr<Entry>,
    pub lru_next: AtomicPtr<Entry>,
}

#[cfg(all(target_pointer_width = "64", not(loom)))]
const _: () = assert!(std::mem::size_of::<Entry>() == 48);

impl Entry {
    /// A cacheable entry with no users yet, watched by the monitor (with `UNARMED` in `id`:
    /// under a kept watch, never revalidated).
    pub fn cached(id: u64, token: u64) -> Self {
        debug_assert!(id & ONE_USE == 0);
        Entry {
            id,
            token,
            state: AtomicU64::new(0),
            start: 0,
            lru_prev: AtomicPtr::new(std::ptr::null_mut()),
            lru_next: AtomicPtr::new(std::ptr::null_mut()),
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
        // Out of the index, the count can only fall: one read at 0 stays 0, and no releaser
        // will ever look for the mark, so a plain store sets it. Most retired entries are
        // unreferenced, and the locked read-modify-write this skips waits for every earlier
        // store of the drain to leave the store buffer (issue 13). Acquire: pairs with the
        // last releaser's decrement (its use happens-before our deregistration); every
        // increment happened before the entry left the index (module comment), so before
        // this load.
        if self.state.load(Ordering::Acquire) == 0 {
            // Relaxed: for the record only (see above).
            self.state.store(RETIRED, Ordering::Relaxed);
            return true;
        }
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

/// An entry while it is shared: allocated by the pool (cached entries, pool.rs) or by
/// `Box::into_raw` (one-use registrations), and kept as a raw pointer by
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
    /// A boxed entry: a one-use registration's (and tests').
    pub fn new(e: Entry) -> Self {
        EntryPtr(NonNull::from(Box::leak(Box::new(e))))
    }

    /// Adopts an entry placed by the pool (pool.rs).
    ///
    /// # Safety
    /// `p` points at a live entry that nothing else owns.
    pub unsafe fn from_raw(p: NonNull<Entry>) -> Self {
        EntryPtr(p)
    }

    /// Gives up ownership, for the pool to take the slot back (pool.rs).
    pub fn into_raw(self) -> NonNull<Entry> {
        self.0
    }

    /// The pointer handles keep.
    pub fn as_non_null(&self) -> NonNull<Entry> {
        self.0
    }

    /// Frees a boxed entry (`new`; the pool's go back with `Pool::keep`).
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
        // SAFETY: the entry lives until `free` or `Pool::keep` consumes its owner, which this
        // borrows.
        unsafe { self.0.as_ref() }
    }
}
