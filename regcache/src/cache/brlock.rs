//! A big-reader lock for the index: readers (cache hits) touch only their own thread's slot (one
//! atomic increment to enter; a plain store to leave when the thread owns its slot alone, see
//! slot.rs), so two threads hitting never write the same cache line; writers (inserts and
//! removals on the slow paths) flag themselves and wait for every slot to drain.
//!
//! A slot also tallies the read sections its thread closed with `ReadGuard::close_tallied` (the
//! cache counts its hits there): the exit store writes the tally with the count, so counting
//! costs no instruction of its own. Bits 0..16 of a slot are the open sections, bits 16..64 the
//! tally (wraps after 2^48 sections of one slot).
//!
//! Protocol (Dekker style, all SeqCst where it matters): a reader increments its slot, then
//! checks the writer flag; a writer raises the flag, then checks every slot. Sequential
//! consistency guarantees at least one of them sees the other, so they never both proceed. A
//! reader that sees the flag backs out and waits for the writer to finish. A writer checks only
//! the slots below `slot::in_use()` (see `write`).

use super::slot::{self, ALL};
use crossbeam_utils::CachePadded;
use std::cell::UnsafeCell;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Open read sections of a slot (low bits).
const OPEN: u64 = (1 << 16) - 1;
/// One tallied section (high bits).
const TALLY: u64 = 1 << 16;

pub(crate) struct BrLock<T> {
    readers: Box<[CachePadded<AtomicU64>]>,
    writer: CachePadded<AtomicBool>,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is mediated by the protocol above: shared references only while a
// reader is counted and no writer is active, a unique reference only to the writer that saw
// every reader slot at zero with its flag raised.
unsafe impl<T: Send + Sync> Sync for BrLock<T> {}
// SAFETY: as above; the lock owns its data.
unsafe impl<T: Send> Send for BrLock<T> {}

pub(crate) struct ReadGuard<'a, T> {
    lock: &'a BrLock<T>,
    slot: &'a AtomicU64,
    /// The thread owns the slot alone: it may leave with a plain store.
    exclusive: bool,
}

pub(crate) struct WriteGuard<'a, T> {
    lock: &'a BrLock<T>,
}

impl<T> BrLock<T> {
    pub fn new(data: T) -> Self {
        BrLock {
            readers: (0..ALL)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            writer: CachePadded::new(AtomicBool::new(false)),
            data: UnsafeCell::new(data),
        }
    }

    #[inline]
    pub fn read(&self) -> ReadGuard<'_, T> {
        self.read_at(slot::current())
    }

    /// `read` for a caller that already has its thread's slot (saves a TLS lookup).
    #[inline]
    pub fn read_at(&self, at: slot::ThreadSlot) -> ReadGuard<'_, T> {
        let slot = &*self.readers[at.index];
        loop {
            // SeqCst: the reader half of the Dekker handshake (see the module comment).
            slot.fetch_add(1, Ordering::SeqCst);
            if !self.writer.load(Ordering::SeqCst) {
                return ReadGuard {
                    lock: self,
                    slot,
                    exclusive: at.exclusive,
                };
            }
            // A writer is active or about to be: back out and wait for it.
            // Release: nothing we read may be ordered after this (we read nothing yet).
            slot.fetch_sub(1, Ordering::Release);
            while self.writer.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
        }
    }

    pub fn write(&self) -> WriteGuard<'_, T> {
        // SeqCst: the writer half of the handshake. Raising the flag with a compare_exchange
        // also excludes other writers (no mutex: its lock and unlock were two more locked
        // instructions per miss, issue 13); on success it acquires the previous writer's
        // Release clear, so that writer's changes happen-before ours. Writers are rare and,
        // in the cache, already serialised by its miss lock: a contending one spins, then
        // yields.
        let mut spins = 0u32;
        while self
            .writer
            .compare_exchange_weak(false, true, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 128 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // Only the slots ever handed out can have readers (slot::in_use, which a thread raises
        // before its first read section): scanning 2 slots instead of 72 cache lines is most of
        // a miss's write-lock cost (issue 13). Its SeqCst load, after our flag store, is safe:
        // if it misses a slot, that slot's claim comes later in the SeqCst order, and so do its
        // owner's increment and flag check, which then sees our flag and backs out.
        let in_use = slot::in_use().min(self.readers.len());
        for s in self.readers[..in_use].iter() {
            let mut spins = 0u32;
            // SeqCst: pairs with the readers' increments; Acquire would suffice for the wait
            // itself (it orders their reads before our writes).
            while s.load(Ordering::SeqCst) & OPEN != 0 {
                spins += 1;
                if spins < 128 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        WriteGuard { lock: self }
    }
}

impl<T> BrLock<T> {
    /// Sections closed with `close_tallied`, over all threads (wrapping at 2^48 per slot).
    pub fn tally(&self) -> u64 {
        // Relaxed: a statistic; no other memory is read on its strength.
        self.readers
            .iter()
            .map(|s| s.load(Ordering::Relaxed) >> 16)
            .fold(0u64, u64::wrapping_add)
    }
}

impl<T> ReadGuard<'_, T> {
    /// Leaves the section, adding one to its slot's tally.
    #[inline]
    pub fn close_tallied(self) {
        let me = ManuallyDrop::new(self);
        me.leave(TALLY.wrapping_sub(1));
    }

    #[inline]
    fn leave(&self, delta: u64) {
        // Release: our reads of the data happen-before a writer that sees the slot drained.
        if self.exclusive {
            // Only this thread writes its slot, so a plain store cannot lose an update; no
            // StoreLoad barrier is needed on the way out. Relaxed load: our own last write.
            let n = self.slot.load(Ordering::Relaxed);
            self.slot.store(n.wrapping_add(delta), Ordering::Release);
        } else {
            self.slot.fetch_add(delta, Ordering::Release);
        }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.leave(u64::MAX); // -1
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: a counted reader with no active writer (see the module comment).
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        // Release: our writes to the data happen-before readers that see the flag down.
        self.lock.writer.store(false, Ordering::Release);
    }
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the only writer, with every reader drained.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above; `&mut self` makes the reference unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_and_writers_exclude_each_other() {
        let lock = BrLock::new((0u64, 0u64));
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        let g = lock.read();
                        assert_eq!(g.0, g.1, "a reader saw a half-done write");
                    }
                });
            }
            s.spawn(|| {
                for i in 0..5_000 {
                    let mut g = lock.write();
                    g.0 = i;
                    std::hint::spin_loop();
                    g.1 = i;
                }
            });
        });
        assert_eq!(lock.read().0, 4_999);
    }

    #[test]
    fn tally_counts_tallied_sections_and_never_blocks_writers() {
        let lock = BrLock::new(0u32);
        for _ in 0..5 {
            lock.read().close_tallied();
        }
        drop(lock.read());
        std::thread::scope(|s| {
            s.spawn(|| lock.read().close_tallied());
        });
        assert_eq!(lock.tally(), 6);
        *lock.write() += 1; // would spin forever if tally bits looked like open readers
        assert_eq!(*lock.read(), 1);
    }

    #[test]
    fn nested_reads_on_one_thread() {
        let lock = BrLock::new(7);
        let a = lock.read();
        let b = lock.read();
        drop(a);
        drop(b);
        let mut w = lock.write();
        *w += 1;
        drop(w);
        assert_eq!(*lock.read(), 8);
    }
}
