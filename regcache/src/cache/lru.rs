//! The LRU order of the cached entries: an intrusive doubly linked list threaded through the
//! entries themselves (`Entry::lru_prev` / `lru_next`), oldest first. Linking, unlinking and
//! moving an entry cost a few pointer writes and no allocation, where the ordered set it
//! replaces cost a tree search and node allocations per miss (issue 13).
//!
//! Owned by the cache's `MissState` and touched only under the miss lock. An entry is linked
//! from the moment it enters the index (`Cache::insert`) until it leaves it: eviction
//! (`next_victim`) and retirement (life.rs, `retire`) unlink it before anything may free it, so
//! every linked pointer is a live entry.
//!
//! Order: an entry is appended when inserted and, during an eviction walk, moved to the end
//! when it was hit since it was filed (its index record's stamp moved; hits never take the
//! miss lock, so they do not touch the list). Entries hit between two evictions therefore
//! leave the front in the order the walk meets them, not in the order of their hits: LRU up to
//! that reordering among recently used entries, which is what UCX's rcache and most kernels'
//! "second chance" lists do too.

use super::entry::Entry;
use std::ptr::{self, NonNull};
use std::sync::atomic::Ordering::Relaxed;

/// The list's ends (null when empty).
pub(super) struct Lru {
    head: *mut Entry,
    tail: *mut Entry,
}

impl Default for Lru {
    fn default() -> Self {
        Lru {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
        }
    }
}

// SAFETY: the pointers are to entries (Send + Sync), used only under the cache's miss lock,
// which owns this list.
unsafe impl Send for Lru {}

impl Lru {
    /// The oldest entry, where an eviction walk starts.
    pub fn front(&self) -> Option<NonNull<Entry>> {
        NonNull::new(self.head)
    }

    /// The entry after `e` (towards the newest).
    pub fn next(e: &Entry) -> Option<NonNull<Entry>> {
        // Relaxed (all links): guarded by the miss lock.
        NonNull::new(e.lru_next.load(Relaxed))
    }

    /// Appends `e` (not linked) as the newest entry.
    pub fn push_back(&mut self, e: &Entry) {
        let p = e as *const Entry as *mut Entry;
        e.lru_prev.store(self.tail, Relaxed);
        e.lru_next.store(ptr::null_mut(), Relaxed);
        if self.tail.is_null() {
            self.head = p;
        } else {
            // SAFETY: a linked entry is live (module comment); we hold the miss lock.
            unsafe { (*self.tail).lru_next.store(p, Relaxed) };
        }
        self.tail = p;
    }

    /// Unlinks `e`, which must be linked in this list.
    pub fn unlink(&mut self, e: &Entry) {
        let (prev, next) = (e.lru_prev.load(Relaxed), e.lru_next.load(Relaxed));
        if prev.is_null() {
            debug_assert_eq!(self.head, e as *const Entry as *mut Entry);
            self.head = next;
        } else {
            // SAFETY: linked entries are live (module comment).
            unsafe { (*prev).lru_next.store(next, Relaxed) };
        }
        if next.is_null() {
            debug_assert_eq!(self.tail, e as *const Entry as *mut Entry);
            self.tail = prev;
        } else {
            // SAFETY: as above.
            unsafe { (*next).lru_prev.store(prev, Relaxed) };
        }
        e.lru_prev.store(ptr::null_mut(), Relaxed);
        e.lru_next.store(ptr::null_mut(), Relaxed);
    }

    /// Moves linked `e` to the newest end.
    pub fn move_to_back(&mut self, e: &Entry) {
        if !std::ptr::eq(self.tail, e) {
            self.unlink(e);
            self.push_back(e);
        }
    }
}
