//! Per-thread slots: each running thread owns one of `SLOTS` indexes for as long as it lives, so
//! per-thread state (statistics shards, reader counts of the index lock, hold cells) of up to
//! `SLOTS` concurrent threads never shares a cache line, and its owner is its only writer (it
//! may update it with plain stores); an exiting thread hands its index back (a counter of thread
//! starts modulo SLOTS would make long-running programs that create short-lived threads
//! collide). Threads beyond `SLOTS` share the `SHARED` indexes after them round robin, and
//! must use atomic read-modify-writes there.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) const SLOTS: usize = 64;
/// Under the loom model (loom_model.rs), a few slots: every scan is a model step.
#[cfg(loom)]
pub(crate) const SLOTS: usize = 2;
/// Indexes `SLOTS..ALL` are shared by the threads that found every exclusive slot taken.
pub(crate) const SHARED: usize = 8;
/// Size of per-slot arrays.
pub(crate) const ALL: usize = SLOTS + SHARED;

/// Bit i set: slot i is owned by a live thread.
static OWNED: AtomicU64 = AtomicU64::new(0);
/// One past the highest slot index ever handed out: exclusive slots are claimed lowest first,
/// and a shared slot raises it to `ALL`. Never lowered. Index-lock writers scan only the slots
/// below it (brlock.rs).
static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// One past the highest slot index any thread was ever handed (see `IN_USE`).
#[inline]
pub(crate) fn in_use() -> usize {
    // SeqCst: the index lock's writer loads it after raising its flag (brlock.rs `write`).
    IN_USE.load(Ordering::SeqCst)
}

/// Raises `IN_USE` to cover `index`, before the slot is first used.
fn mark_in_use(index: usize) {
    // SeqCst: ordered before the thread's first read-section increment of the slot, in the
    // single order the index lock's writer reasons about (brlock.rs `write`).
    IN_USE.fetch_max(index + 1, Ordering::SeqCst);
}

/// Hands out shared slots round robin once all are owned.
static OVERFLOW: AtomicUsize = AtomicUsize::new(0);

/// A thread's slot: its index, and whether the thread owns it alone (threads beyond `SLOTS`
/// share indexes, and then may not keep single-writer state in them).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ThreadSlot {
    pub index: usize,
    pub exclusive: bool,
}

struct Owner(Cell<Option<ThreadSlot>>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(ThreadSlot {
            index,
            exclusive: true,
        }) = self.0.get()
        {
            // Release: pairs with the next owner's Acquire claim (only the index changes hands;
            // the per-slot state is atomic anyway).
            OWNED.fetch_and(!(1 << index), Ordering::Release);
        }
    }
}

thread_local! {
    static MINE: Owner = const { Owner(Cell::new(None)) };
}

fn claim() -> ThreadSlot {
    // Acquire (on success): see Owner::drop.
    let mut cur = OWNED.load(Ordering::Relaxed);
    while cur != u64::MAX {
        let index = (!cur).trailing_zeros() as usize;
        match OWNED.compare_exchange_weak(
            cur,
            cur | (1 << index),
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                mark_in_use(index);
                return ThreadSlot {
                    index,
                    exclusive: true,
                };
            }
            Err(now) => cur = now,
        }
    }
    mark_in_use(ALL - 1);
    // Relaxed: only spreads the overflow threads over the slots.
    ThreadSlot {
        index: SLOTS + OVERFLOW.fetch_add(1, Ordering::Relaxed) % SHARED,
        exclusive: false,
    }
}

/// The calling thread's slot, claimed at first use.
#[inline]
pub(crate) fn current() -> ThreadSlot {
    MINE.try_with(|m| match m.0.get() {
        Some(s) => s,
        None => {
            let s = claim();
            m.0.set(Some(s));
            s
        }
    })
    // During thread teardown the thread-local is gone: use a shared slot.
    .unwrap_or_else(|_| {
        mark_in_use(SLOTS);
        ThreadSlot {
            index: SLOTS,
            exclusive: false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_threads_get_distinct_exclusive_slots() {
        let barrier = std::sync::Barrier::new(2);
        let (a, b) = std::thread::scope(|s| {
            let h1 = s.spawn(|| {
                let x = current().index;
                barrier.wait();
                x
            });
            let h2 = s.spawn(|| {
                let x = current().index;
                barrier.wait();
                x
            });
            (h1.join().unwrap(), h2.join().unwrap())
        });
        assert_ne!(a, b);
    }

    #[test]
    fn slots_are_returned_when_threads_exit() {
        // Far more short-lived threads than slots: each must still own one, which holds only
        // if exiting threads hand theirs back (other tests may hold a few meanwhile).
        for _ in 0..3 * SLOTS {
            let mine = std::thread::spawn(|| {
                current();
                MINE.with(|m| m.0.get())
            })
            .join()
            .unwrap();
            assert!(
                mine.is_some_and(|s| s.exclusive),
                "a slot was never handed back"
            );
        }
    }
}
