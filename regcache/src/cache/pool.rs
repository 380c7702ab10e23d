//! The memory of cached entries: allocated in chunks and reused through a free list.
//!
//! A cached entry is 48 bytes (entry.rs: its LRU links are entry pointers, so it holds its own
//! start). Boxed, each would be a 64-byte malloc chunk (48 bytes and the allocator's header,
//! rounded up): 16 bytes over its size, 133 instead of 117 bytes per cached entry at 10^6
//! entries, over issue 13's 128. In chunks of `CHUNK` entries it costs its size. And once the
//! pool has grown to the cache's peak, misses, evictions and drains allocate and free nothing
//! (each malloc and free of an entry was ~110 instructions of the ~730 a drained event cost).
//!
//! The price: the pool keeps its chunks until the cache drops, so its memory is the peak
//! number of cached entries times 48 bytes (the entry limit bounds it), reused by later
//! misses, never returned to the allocator while the cache lives. One-use registrations are
//! not cached and stay boxed (`EntryPtr::new`): they are made without the miss lock.
//!
//! The pool is the miss state's (under the miss lock). An entry reaped by a releaser, off the
//! miss lock, comes back through the retired list's `returned` (life.rs), which `alloc` takes
//! before it allocates a chunk.

use super::entry::{Entry, EntryPtr};
use std::alloc::Layout;
use std::ptr::NonNull;

/// Entries per chunk: 48 KiB, one allocation per 1,024 entries.
pub(super) const CHUNK: usize = 1024;

pub(crate) struct Pool {
    /// Every chunk allocated (`chunk_layout`), freed when the pool drops.
    chunks: Vec<NonNull<Entry>>,
    /// Slots of the last chunk never handed out start here (`CHUNK` when none is left).
    fresh: usize,
    /// Slots handed out and given back, holding no value.
    free: Vec<NonNull<Entry>>,
}

// SAFETY: the pool owns its chunks and the free slots (memory holding no value); the entries
// it handed out are owned by their `EntryPtr`s, which are Send themselves.
unsafe impl Send for Pool {}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            chunks: Vec::new(),
            fresh: CHUNK,
            free: Vec::new(),
        }
    }
}

fn chunk_layout() -> Layout {
    // 48 KiB: cannot overflow.
    Layout::array::<Entry>(CHUNK).expect("chunk layout")
}

impl Pool {
    /// Places `e` (a cached entry) in a free slot, a fresh one, one given back off the miss lock
    /// (`returned`, called only when neither is left), or a new chunk's.
    pub fn alloc(&mut self, e: Entry, returned: impl FnOnce() -> Vec<EntryPtr>) -> EntryPtr {
        debug_assert!(e.watched(), "one-use entries are boxed");
        let slot = match self.free.pop() {
            Some(s) => s,
            None => self.slot_slow(returned),
        };
        // SAFETY: a slot of one of our chunks (aligned and sized for an Entry) that holds no
        // value and that nothing else points at (free, or never handed out): writing makes it a
        // live entry owned by the pointer returned, until `keep` takes it back.
        unsafe {
            slot.as_ptr().write(e);
            EntryPtr::from_raw(slot)
        }
    }

    #[cold]
    fn slot_slow(&mut self, returned: impl FnOnce() -> Vec<EntryPtr>) -> NonNull<Entry> {
        if self.fresh == CHUNK {
            for e in returned() {
                // SAFETY: reaped (unreferenced) entries of this pool, given back by `give_back`.
                unsafe { self.keep(e) };
            }
            if let Some(s) = self.free.pop() {
                return s;
            }
            let layout = chunk_layout();
            // SAFETY: the layout has a non-zero size.
            let p = unsafe { std::alloc::alloc(layout) }.cast::<Entry>();
            let Some(p) = NonNull::new(p) else {
                std::alloc::handle_alloc_error(layout)
            };
            self.chunks.push(p);
            self.fresh = 0;
        }
        let last = *self.chunks.last().expect("a chunk with fresh slots");
        // SAFETY: `fresh < CHUNK`: a slot inside the last chunk.
        let slot = unsafe { last.add(self.fresh) };
        self.fresh += 1;
        slot
    }

    /// Takes back the slot of `e`, dropping its value.
    ///
    /// # Safety
    /// `e` was allocated by this pool and nothing references it any more (as `EntryPtr::free`).
    pub unsafe fn keep(&mut self, e: EntryPtr) {
        debug_assert!(e.watched(), "one-use entries are boxed, never the pool's");
        let p = e.into_raw();
        // SAFETY: unreferenced (the caller's contract), owned by `e`, consumed above: the
        // value is dropped once and never read again; the slot stays the pool's.
        unsafe { std::ptr::drop_in_place(p.as_ptr()) };
        self.free.push(p);
    }

    /// Slots in all chunks, and free ones.
    #[cfg(test)]
    pub fn slots(&self) -> (usize, usize) {
        (self.chunks.len() * CHUNK, self.free.len())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for &c in &self.chunks {
            // SAFETY: allocated in `slot_slow` with this layout, freed once. Entries still in
            // it (a fork child's, a leaked handle's) can no longer be reached: handles borrow
            // the cache that owns the pool, and an Entry needs no drop.
            unsafe { std::alloc::dealloc(c.as_ptr().cast(), chunk_layout()) };
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn entry(id: u64) -> Entry {
        Entry::cached(id << 8, id)
    }

    #[test]
    fn slots_are_reused_before_a_chunk_is_allocated() {
        let mut pool = Pool::default();
        let none = Vec::new;
        let live: Vec<EntryPtr> = (0..CHUNK as u64 + 1)
            .map(|i| pool.alloc(entry(i), none))
            .collect();
        assert_eq!(
            pool.slots(),
            (2 * CHUNK, 0),
            "a second chunk for the 1,025th"
        );
        assert_eq!((live[7].id, live[7].token), (7 << 8, 7));
        let mut it = live.into_iter();
        let first = it.next().expect("one");
        let p = first.as_non_null();
        // SAFETY: ours, never shared.
        unsafe { pool.keep(first) };
        assert_eq!(pool.slots(), (2 * CHUNK, 1));
        let again = pool.alloc(entry(9), none);
        assert_eq!(again.as_non_null(), p, "the freed slot first");
        assert_eq!(again.token, 9);
        for e in it.chain([again]) {
            // SAFETY: as above.
            unsafe { pool.keep(e) };
        }
        assert_eq!(pool.slots(), (2 * CHUNK, CHUNK + 1));
    }

    #[test]
    fn returned_entries_are_taken_before_a_new_chunk() {
        let mut pool = Pool::default();
        let none = Vec::new;
        let mut live: Vec<EntryPtr> = (0..CHUNK as u64)
            .map(|i| pool.alloc(entry(i), none))
            .collect();
        // Reaped off the miss lock: handed back in a list, not through `keep`.
        let back: Vec<EntryPtr> = live.drain(..3).collect();
        let ptrs: Vec<_> = back.iter().map(EntryPtr::as_non_null).collect();
        let mut asked = false;
        let e = pool.alloc(entry(5000), || {
            asked = true;
            back
        });
        assert!(asked, "the chunk is full: the returned list is asked for");
        assert!(ptrs.contains(&e.as_non_null()), "a returned slot reused");
        assert_eq!(pool.slots(), (CHUNK, 2), "no new chunk");
        live.push(e);
        for e in live {
            // SAFETY: ours, never shared.
            unsafe { pool.keep(e) };
        }
    }
}
