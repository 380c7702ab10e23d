//! The client side of `UMMUNOTIFY_FEATURE_RING` (kmod/include/uapi/linux/ummunotify.h, the
//! comment above the feature bit): hits published in a shared page, taken with loads and one
//! store, so that a churned transfer costs no read() (issue 13).
//!
//! Written over a pointer to an [`abi::Ring`] wherever it lives (the device's ring page in the
//! monitor, ordinary memory in the tests below), and over closures for read() and SETTLE, so the
//! protocol's steps 2 to 4 are tested on the host. Step 1 (the counter) is the caller's.

use super::abi;
use crate::error::Result;
use crate::monitor::Invalidation;
use crate::range::Range;
use std::ptr::{addr_of, addr_of_mut, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

/// A view of a ring page. Not Send/Sync by itself: the monitor that owns the mapping says why
/// it may be shared.
pub(crate) struct RingView {
    ring: NonNull<abi::Ring>,
}

/// What step 2 took from the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Nothing was published since the last drain (or the drain skipped the ring).
    Nothing,
    /// This many records, reported as cookies.
    Records(u32),
    /// `head` was more than a ring ahead of `tail`: not what the kernel can publish, so every
    /// entry is suspect (`Invalidation::All`) and `tail` was moved to `head`.
    Overrun,
}

impl RingView {
    /// # Safety
    /// `ring` points to an `abi::Ring` (8-byte aligned) valid for reads and writes for the
    /// view's whole life, which anything else (the kernel) accesses only as the header's
    /// protocol says: `head`, `running`, `queued` written with single aligned stores, `tail`
    /// only read, a record written only while it is not between `tail` and `head`.
    pub(crate) unsafe fn new(ring: NonNull<abi::Ring>) -> RingView {
        RingView { ring }
    }

    /// The ring's address (to unmap it).
    pub(crate) fn as_ptr(&self) -> *mut abi::Ring {
        self.ring.as_ptr()
    }

    fn word(&self, field: *mut u32) -> &AtomicU32 {
        // SAFETY: `field` is a u32 field of the ring, aligned (repr(C), checked by abi's layout
        // test) and valid for the view's life (contract of `new`); the other side uses single
        // aligned stores or loads on it, so every access of ours going through an atomic is
        // free of data races.
        unsafe { AtomicU32::from_ptr(field) }
    }

    fn head(&self) -> &AtomicU32 {
        // SAFETY: in bounds of the ring (contract of `new`); only the address is computed.
        self.word(unsafe { addr_of_mut!((*self.ring.as_ptr()).head) })
    }

    fn running(&self) -> &AtomicU32 {
        // SAFETY: as in head().
        self.word(unsafe { addr_of_mut!((*self.ring.as_ptr()).running) })
    }

    fn queued(&self) -> &AtomicU32 {
        // SAFETY: as in head().
        self.word(unsafe { addr_of_mut!((*self.ring.as_ptr()).queued) })
    }

    fn tail(&self) -> &AtomicU32 {
        // SAFETY: as in head().
        self.word(unsafe { addr_of_mut!((*self.ring.as_ptr()).tail) })
    }

    /// `slots` as the kernel wrote it (checked once against `abi::RING_SLOTS` at map time).
    pub(crate) fn slots(&self) -> u32 {
        // SAFETY: as in head().
        let slots = self.word(unsafe { addr_of_mut!((*self.ring.as_ptr()).slots) });
        // Relaxed: the kernel wrote it before the page could be mapped; nothing else depends on it.
        slots.load(Ordering::Relaxed)
    }

    /// The record at sequence number `seq` (its slot: `seq` modulo the ring).
    fn record(&self, seq: u32) -> abi::RingRecord {
        let i = seq as usize % abi::RING_SLOTS;
        // SAFETY: `i` < RING_SLOTS, so the address is inside the ring's `record` array (contract
        // of `new`); a volatile read because the page is shared with the kernel. The slot is
        // between tail and head (the caller checked), so the kernel does not write it until
        // our next store to `tail`, and its contents were made visible by the acquire load of
        // `head` that covered `seq`. Any bit pattern is a valid record (plain integers).
        unsafe { std::ptr::read_volatile(addr_of!((*self.ring.as_ptr()).record[i])) }
    }

    /// Step 2: takes the records `tail .. head` into `out` and gives their slots back.
    pub(crate) fn take(&self, out: &mut Vec<Invalidation>) -> Taken {
        // Acquire: pairs with the kernel's release of `head` after writing the records, so
        // every record below `head` is visible to the reads below.
        let head = self.head().load(Ordering::Acquire);
        // Relaxed: `tail` is written only by this client, and drains are serialised (Monitor::
        // drain: one thread at a time, under the cache's lock, which orders our own stores).
        let tail = self.tail().load(Ordering::Relaxed);
        let n = head.wrapping_sub(tail);
        if n == 0 {
            return Taken::Nothing;
        }
        let taken = if n > abi::RING_SLOTS as u32 {
            // Not a state the kernel publishes (it stops at a full ring): some records may have
            // been overwritten or never written. Read none of them; trust nothing.
            out.push(Invalidation::All);
            Taken::Overrun
        } else {
            out.reserve(n as usize);
            for seq in (0..n).map(|k| tail.wrapping_add(k)) {
                out.push(decode(&self.record(seq)));
            }
            Taken::Records(n)
        };
        // Release: the record reads above happen before the kernel can see the slots free
        // (it loads `tail` with acquire before reusing a slot), so it never overwrites a record
        // we are still reading.
        self.tail().store(head, Ordering::Release);
        taken
    }

    /// Steps 2 to 4 of the protocol, after the caller's step 1 (the counter's acquire load).
    /// `read_queue` is the 2010 read() loop (step 3, it returns the counter of a LAST record if
    /// it met one), `settle` one SETTLE ioctl (step 4). With `skip_records` (the negative
    /// control, tests only) step 2 leaves the ring alone and reports nothing from it.
    pub(crate) fn drain(
        &self,
        skip_records: bool,
        out: &mut Vec<Invalidation>,
        read_queue: impl FnOnce(&mut Vec<Invalidation>) -> Result<Option<u64>>,
        settle: impl FnOnce() -> Result<()>,
    ) -> Result<Option<u64>> {
        let taken = if skip_records {
            Taken::Nothing
        } else {
            self.take(out)
        };
        // Acquire: pairs with the kernel's release when it queues a record for read() (ring
        // full), so a hit counted up to the caller's counter value and not in the ring is seen
        // here (the counter's acquire load came first, and the kernel sets `queued` before it
        // moves the counter).
        let last = if self.queued().load(Ordering::Acquire) != 0 {
            read_queue(out)?
        } else {
            None
        };
        // Acquire: pairs with the kernel's release decrement when an invalidation ends, so 0
        // means the pages of every record taken above are gone (the kernel counted each
        // invalidation in `running` before publishing its record, which our acquire of `head`
        // saw). Not 0: SETTLE waits for the invalidations running now, ours among them.
        if taken != Taken::Nothing && self.running().load(Ordering::Acquire) != 0 {
            settle()?;
        }
        Ok(last)
    }
}

/// A ring record as a cookie invalidation. An empty or reversed hint is not something the
/// kernel publishes, and the cache finds the entry of a cookie through its hint (an empty one
/// would find nothing, silently): such a record makes every entry suspect instead.
fn decode(rec: &abi::RingRecord) -> Invalidation {
    if rec.hint_start >= rec.hint_end {
        return Invalidation::All;
    }
    Invalidation::Cookie {
        cookie: rec.user_cookie,
        hint: Range {
            start: rec.hint_start as usize,
            end: rec.hint_end as usize,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::cell::Cell;

    /// A ring in ordinary memory playing the kernel's part.
    struct Fake {
        ring: Box<abi::Ring>,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                ring: Box::default(),
            }
        }

        fn at(seq: u32) -> Fake {
            let mut f = Fake::new();
            f.ring.head = seq;
            f.ring.tail = seq;
            f
        }

        fn view(&mut self) -> RingView {
            // SAFETY: the box lives as long as the view in every test below (the view is
            // dropped first), and nothing else touches the ring while the view is used.
            unsafe { RingView::new(NonNull::from(&mut *self.ring)) }
        }

        /// The kernel publishing a hit (no concurrency here: plain writes through the view's
        /// pointer would do, the test only needs the values).
        fn publish(v: &RingView, cookie: u64) {
            let head = v.head().load(Ordering::Relaxed);
            let i = head as usize % abi::RING_SLOTS;
            // SAFETY: i < RING_SLOTS, the ring is valid (see view()), single-threaded test.
            unsafe {
                addr_of_mut!((*v.ring.as_ptr()).record[i]).write_volatile(abi::RingRecord {
                    user_cookie: cookie,
                    hint_start: cookie << 12,
                    hint_end: (cookie + 1) << 12,
                })
            };
            v.head().store(head.wrapping_add(1), Ordering::Release);
        }
    }

    fn cookies(out: &[Invalidation]) -> Vec<u64> {
        out.iter()
            .map(|i| match i {
                Invalidation::Cookie { cookie, hint } => {
                    assert_eq!(
                        *hint,
                        Range {
                            start: (*cookie as usize) << 12,
                            end: (*cookie as usize + 1) << 12
                        }
                    );
                    *cookie
                }
                other => panic!("not a cookie: {other:?}"),
            })
            .collect()
    }

    /// Drains with counting closures: (result, read_queue calls, settle calls).
    fn drain(v: &RingView, skip: bool, out: &mut Vec<Invalidation>) -> (Option<u64>, u32, u32) {
        let reads = Cell::new(0);
        let settles = Cell::new(0);
        let last = v
            .drain(
                skip,
                out,
                |out| {
                    reads.set(reads.get() + 1);
                    out.push(Invalidation::Cookie {
                        cookie: 999,
                        hint: Range {
                            start: 999 << 12,
                            end: 1000 << 12,
                        },
                    });
                    Ok(Some(42))
                },
                || {
                    settles.set(settles.get() + 1);
                    Ok(())
                },
            )
            .unwrap();
        (last, reads.get(), settles.get())
    }

    #[test]
    fn records_come_in_order_and_tail_follows_head() {
        let mut f = Fake::new();
        let v = f.view();
        let mut out = Vec::new();
        assert_eq!(drain(&v, false, &mut out), (None, 0, 0));
        assert!(out.is_empty());
        for c in 1..=5 {
            Fake::publish(&v, c);
        }
        assert_eq!(drain(&v, false, &mut out), (None, 0, 0));
        assert_eq!(cookies(&out), [1, 2, 3, 4, 5]);
        assert_eq!(v.tail().load(Ordering::Relaxed), 5);
        out.clear();
        assert_eq!(drain(&v, false, &mut out), (None, 0, 0));
        assert!(out.is_empty(), "records taken twice");
    }

    #[test]
    fn wraps_modulo_the_slots_and_at_2_pow_32() {
        // Start 3 records before the u32 wrap and 3 slots before the ring's end, and take a
        // full ring: the sequence crosses both.
        let mut f = Fake::at(u32::MAX - 2);
        let v = f.view();
        let mut out = Vec::new();
        for c in 1..=abi::RING_SLOTS as u64 {
            Fake::publish(&v, c);
        }
        assert_eq!(v.take(&mut out), Taken::Records(abi::RING_SLOTS as u32));
        assert_eq!(
            cookies(&out),
            (1..=abi::RING_SLOTS as u64).collect::<Vec<_>>()
        );
        assert_eq!(v.tail().load(Ordering::Relaxed), 125);
        // And again, from the new place.
        out.clear();
        for c in 200..260 {
            Fake::publish(&v, c);
        }
        assert_eq!(v.take(&mut out), Taken::Records(60));
        assert_eq!(cookies(&out), (200..260).collect::<Vec<_>>());
        assert_eq!(v.tail().load(Ordering::Relaxed), 185);
    }

    #[test]
    fn queued_calls_the_read_path_and_its_last_is_returned() {
        let mut f = Fake::new();
        let v = f.view();
        let mut out = Vec::new();
        Fake::publish(&v, 7);
        v.queued().store(1, Ordering::Relaxed);
        assert_eq!(drain(&v, false, &mut out), (Some(42), 1, 0));
        assert_eq!(cookies(&out), [7, 999], "ring first, then read()");
        v.queued().store(0, Ordering::Relaxed);
        out.clear();
        assert_eq!(drain(&v, false, &mut out), (None, 0, 0));
    }

    #[test]
    fn settle_only_when_records_were_taken_and_invalidations_run() {
        let mut f = Fake::new();
        let v = f.view();
        let mut out = Vec::new();
        v.running().store(1, Ordering::Relaxed);
        // Running but nothing taken (not even from read()): no SETTLE.
        assert_eq!(drain(&v, false, &mut out), (None, 0, 0));
        v.queued().store(1, Ordering::Relaxed);
        assert_eq!(
            drain(&v, false, &mut out),
            (Some(42), 1, 0),
            "read() waits itself"
        );
        v.queued().store(0, Ordering::Relaxed);
        // Taken and running: SETTLE once.
        Fake::publish(&v, 3);
        out.clear();
        assert_eq!(drain(&v, false, &mut out), (None, 0, 1));
        assert_eq!(cookies(&out), [3]);
        // Taken, nothing running: no SETTLE.
        v.running().store(0, Ordering::Relaxed);
        Fake::publish(&v, 4);
        out.clear();
        assert_eq!(drain(&v, false, &mut out), (None, 0, 0));
        assert_eq!(cookies(&out), [4]);
    }

    #[test]
    fn head_far_ahead_reads_nothing_reports_all_and_resyncs() {
        for (tail, head) in [
            (0u32, abi::RING_SLOTS as u32 + 1),
            (10, 5), // behind: u32 distance ~4e9
            (u32::MAX - 1, 1u32 << 31),
        ] {
            let mut f = Fake::new();
            // Poison every record: reading any would show a cookie, not All.
            for r in f.ring.record.iter_mut() {
                *r = abi::RingRecord {
                    user_cookie: 0xbad,
                    hint_start: 0x1000,
                    hint_end: 0x2000,
                };
            }
            f.ring.tail = tail;
            f.ring.head = head;
            let v = f.view();
            v.running().store(2, Ordering::Relaxed);
            let mut out = Vec::new();
            let (last, reads, settles) = drain(&v, false, &mut out);
            assert_eq!(out, [Invalidation::All], "tail {tail} head {head}");
            assert_eq!(
                (last, reads, settles),
                (None, 0, 1),
                "suspect pages: settle"
            );
            assert_eq!(v.tail().load(Ordering::Relaxed), head);
            out.clear();
            assert_eq!(v.take(&mut out), Taken::Nothing);
        }
    }

    #[test]
    fn exactly_a_full_ring_is_records_not_overrun() {
        let mut f = Fake::at(1000);
        let v = f.view();
        for c in 0..abi::RING_SLOTS as u64 {
            Fake::publish(&v, c);
        }
        let mut out = Vec::new();
        assert_eq!(v.take(&mut out), Taken::Records(abi::RING_SLOTS as u32));
        assert_eq!(out.len(), abi::RING_SLOTS);
    }

    #[test]
    fn skipping_leaves_the_records_and_reports_nothing() {
        let mut f = Fake::new();
        let v = f.view();
        v.running().store(1, Ordering::Relaxed);
        Fake::publish(&v, 1);
        let mut out = Vec::new();
        assert_eq!(drain(&v, true, &mut out), (None, 0, 0));
        assert!(out.is_empty());
        assert_eq!(v.tail().load(Ordering::Relaxed), 0, "left in the ring");
        assert_eq!(drain(&v, false, &mut out), (None, 0, 1));
        assert_eq!(cookies(&out), [1]);
    }

    #[test]
    fn read_and_settle_errors_propagate() {
        let mut f = Fake::new();
        let v = f.view();
        v.queued().store(1, Ordering::Relaxed);
        let mut out = Vec::new();
        let eio = || Error::Io(std::io::Error::from_raw_os_error(libc::EIO));
        assert!(v.drain(false, &mut out, |_| Err(eio()), || Ok(())).is_err());
        v.queued().store(0, Ordering::Relaxed);
        v.running().store(1, Ordering::Relaxed);
        Fake::publish(&v, 1);
        assert!(v
            .drain(false, &mut out, |_| Ok(None), || Err(eio()))
            .is_err());
    }

    /// A producer thread playing the kernel (publishes only while `head - tail < slots`, with
    /// the orderings the header gives the kernel) against drains: every record comes once, in
    /// order, across many wraps of the ring.
    #[test]
    fn concurrent_publisher_every_record_once_in_order() {
        struct Shared(NonNull<abi::Ring>);
        // SAFETY: the ring is accessed only through atomics and volatile accesses of slots the
        // protocol hands to one side at a time; the box outlives both threads (joined below).
        unsafe impl Send for Shared {}
        // SAFETY: as above.
        unsafe impl Sync for Shared {}
        impl Shared {
            fn view(&self) -> RingView {
                // SAFETY: see Shared.
                unsafe { RingView::new(self.0) }
            }
        }
        const N: u64 = 20_000;
        let mut f = Fake::at(u32::MAX - 1000);
        let shared = Shared(NonNull::from(&mut *f.ring));
        std::thread::scope(|s| {
            s.spawn(|| {
                let v = shared.view();
                let mut c = 1;
                while c <= N {
                    let head = v.head().load(Ordering::Relaxed);
                    // Acquire (the kernel's READ_ONCE + control dependency): the consumer's
                    // reads of the slot happen before we overwrite it.
                    let tail = v.tail().load(Ordering::Acquire);
                    if head.wrapping_sub(tail) >= abi::RING_SLOTS as u32 {
                        std::hint::spin_loop();
                        continue;
                    }
                    Fake::publish(&v, c);
                    c += 1;
                }
            });
            let v = shared.view();
            let mut next = 1;
            let mut out = Vec::new();
            while next <= N {
                out.clear();
                match v.take(&mut out) {
                    Taken::Overrun => panic!("overrun at {next}"),
                    Taken::Nothing => std::hint::spin_loop(),
                    Taken::Records(_) => {
                        for c in cookies(&out) {
                            assert_eq!(c, next);
                            next += 1;
                        }
                    }
                }
            }
        });
    }

    #[test]
    fn empty_or_reversed_hint_is_all() {
        for (start, end) in [(0x3000, 0x1000), (0x1000, 0x1000)] {
            let r = abi::RingRecord {
                user_cookie: 5,
                hint_start: start,
                hint_end: end,
            };
            assert_eq!(decode(&r), Invalidation::All);
        }
    }
}
