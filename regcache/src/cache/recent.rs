//! The ranges recently invalidated, to count re-registrations (a miss overlapping one): the
//! `reregistrations` statistic.
//!
//! Every invalidated entry is remembered, so this is on the drain's path once per event. It is
//! a direct-mapped table of `SLOTS` ranges indexed by a hash of the start page: remembering is
//! one store, and a range is forgotten when a newer one takes its slot (so "recent" means
//! roughly the last few thousand). The hash map and insertion ring it replaces cost ~210
//! instructions per event (issue 13, drain cost); the statistic only needs an estimate.
//! Overlap queries probe the slots of the few pages a remembered range overlapping the miss
//! can start at (ranges are page-aligned and at most `max_len` long), or, when that window has
//! more pages than the table has occupied slots (plus 8), walk the occupied slots through a
//! two-level bitmap (a word of which words are non-zero, then those words): a long miss after a
//! few unrelated invalidations costs a few words and a check per remembered range, not one
//! probe per page. Guarded by the cache's miss lock.

use crate::range::{page_size, Range};

/// Slots of the table (a power of two): 64 KiB, allocated at the first invalidation.
pub(super) const SLOTS: usize = 4096;

/// Words of the occupied-slot bitmap.
const WORDS: usize = SLOTS / 64;

#[derive(Default)]
pub(super) struct Recent {
    /// `(start, end)` by slot; `end == 0` is a free slot.
    slots: Vec<(usize, usize)>,
    /// Bit `i` set: slot `i` is occupied.
    occupied: Vec<u64>,
    /// Bit `w` set: word `w` of `occupied` is not zero.
    words: u64,
    /// Occupied slots.
    len: usize,
    /// No remembered range is longer (a bound, reset when the table empties).
    max_len: usize,
}

/// The slot of a page-aligned start (Fibonacci hashing of the page number).
fn slot(start: usize) -> usize {
    ((start as u64 >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros()))
        as usize
}

impl Recent {
    /// Remembers `r` (page-aligned, non-empty), forgetting the range that had its slot.
    pub fn insert(&mut self, r: Range) {
        if self.slots.is_empty() {
            self.slots = vec![(0, 0); SLOTS];
            self.occupied = vec![0; WORDS];
        }
        let i = slot(r.start);
        let s = &mut self.slots[i];
        if s.1 == 0 {
            self.len += 1;
            self.occupied[i / 64] |= 1 << (i % 64);
            self.words |= 1 << (i / 64);
        }
        *s = (r.start, r.end);
        self.max_len = self.max_len.max(r.len());
    }

    /// Frees slot `i` (occupied).
    fn forget(&mut self, i: usize) {
        self.slots[i] = (0, 0);
        let w = &mut self.occupied[i / 64];
        *w &= !(1 << (i % 64));
        if *w == 0 {
            self.words &= !(1 << (i / 64));
        }
        self.len -= 1;
    }

    /// Forgets every remembered range overlapping `r` (page-aligned); true if there was one.
    ///
    /// A remembered range starting where `r` starts and reaching at least as far is the only
    /// one that can overlap `r`: remembered ranges are disjoint (each was an index entry, and a
    /// miss forgets every remembered range its request overlaps before its entry is made), so
    /// another one would overlap it. That is the common re-registration (the same buffer again:
    /// 100% churn) and costs one probe instead of one per page of `r` and of the longest
    /// remembered range (31 probes at 64 KiB, 511 at 1 MiB: ~0.4 k and ~7 k instructions per
    /// churned miss, issue 13). Should the disjointness ever fail, the count is off by the
    /// ranges left behind, never anything the cache trusts (a statistic only).
    pub fn take_overlapping(&mut self, r: Range) -> bool {
        if self.len == 0 {
            return false;
        }
        let i = slot(r.start);
        if self.slots[i].0 == r.start && self.slots[i].1 >= r.end {
            self.forget(i);
            self.reset_if_empty();
            return true;
        }
        let page = page_size();
        let lo = r
            .start
            .checked_sub(self.max_len)
            .map_or(0, |x| (x & !(page - 1)) + page);
        let window = r.end.saturating_sub(lo).div_ceil(page);
        let before = self.len;
        if window <= self.len + 8 {
            for p in 0..window {
                let start = lo + p * page;
                let i = slot(start);
                let s = self.slots[i];
                if s.1 != 0 && s.0 == start && s.1 > r.start {
                    self.forget(i);
                }
            }
        } else {
            let mut words = self.words;
            while words != 0 {
                let w = words.trailing_zeros() as usize;
                words &= words - 1;
                let mut bits = self.occupied[w];
                while bits != 0 {
                    let i = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let s = self.slots[i];
                    if s.0 < r.end && s.1 > r.start {
                        self.forget(i);
                    }
                }
            }
        }
        let found = self.len < before;
        self.reset_if_empty();
        found
    }

    fn reset_if_empty(&mut self) {
        if self.len == 0 {
            self.max_len = 0;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn pages(a: usize, b: usize) -> Range {
        let p = page_size();
        Range {
            start: a * p,
            end: b * p,
        }
    }

    #[test]
    fn exact_start_match_and_longer_misses_forget_what_they_overlap() {
        let mut r = Recent::default();
        // Two adjacent invalidated entries of 16 pages (a long one sets max_len).
        r.insert(pages(100, 116));
        r.insert(pages(116, 132));
        // The same buffer again, or a part of it from its start: the first is taken, alone.
        assert!(r.take_overlapping(pages(100, 108)));
        assert_eq!(r.len, 1);
        assert!(!r.take_overlapping(pages(100, 116)), "forgotten");
        // A miss starting where a remembered range starts but reaching past its end (a merged
        // hull) probes, and forgets the neighbour it also overlaps.
        r.insert(pages(100, 116));
        assert!(r.take_overlapping(pages(100, 120)));
        assert_eq!((r.len, r.max_len), (0, 0), "both ranges forgotten");
        // The fast path never answers for a free slot: an empty table after use says no.
        assert!(!r.take_overlapping(pages(0, 1)));
    }

    /// The table against a brute-force model of the same slots, under the cache's protocol
    /// (a miss takes what its request overlaps; its entry, once invalidated, is remembered):
    /// every answer and every slot agree, through the one-probe path, the probe window and the
    /// bitmap walk (long misses among few remembered ranges).
    #[test]
    fn agrees_with_a_brute_force_model() {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n) as usize
        };
        let mut r = Recent::default();
        let mut model: Vec<(usize, usize)> = vec![(0, 0); SLOTS];
        let mut seen = Vec::new();
        let (mut exact, mut window, mut walked) = (0, 0, 0);
        for step in 0..20_000 {
            // Often a range seen before (the same buffer again), else a new one anywhere.
            let (start, len) = match (next(2), seen.is_empty()) {
                (0, false) => seen[next(seen.len() as u64)],
                _ => (
                    next(3000),
                    match next(100) {
                        0..=79 => 1 + next(4),
                        80..=91 => 16,
                        92..=97 => 64,
                        _ => 300,
                    },
                ),
            };
            let req = pages(start, start + len);
            let live = r.len > 0;
            let fast = live && {
                let s = r.slots[slot(req.start)];
                s.0 == req.start && s.1 >= req.end
            };
            let lo = req.start.saturating_sub(r.max_len);
            let walk = live && !fast && (req.end - lo) / page_size() > r.len + 8;
            let want = model
                .iter()
                .any(|&(a, b)| b != 0 && a < req.end && b > req.start);
            for m in model.iter_mut() {
                if m.1 != 0 && m.0 < req.end && m.1 > req.start {
                    *m = (0, 0);
                }
            }
            assert_eq!(
                r.take_overlapping(req),
                want,
                "step {step}: answer for {req:?}"
            );
            exact += usize::from(fast);
            walked += usize::from(walk);
            window += usize::from(live && !fast && !walk);
            if next(2) == 0 {
                r.insert(req);
                model[slot(req.start)] = (req.start, req.end);
                seen.push((start, len));
            }
            if step % 8 == 0 {
                assert_eq!(r.slots, model, "step {step}: slots after {req:?}");
                let occupied = model.iter().filter(|m| m.1 != 0).count();
                assert_eq!(r.len, occupied, "step {step}: occupied count");
                for (i, m) in model.iter().enumerate() {
                    assert_eq!(r.occupied[i / 64] >> (i % 64) & 1 == 1, m.1 != 0, "bit {i}");
                }
                for (w, &bits) in r.occupied.iter().enumerate() {
                    assert_eq!(r.words >> w & 1 == 1, bits != 0, "word {w}");
                }
            }
            // Now and then a miss over everything: few remembered ranges again (the walk).
            if next(100) == 0 {
                let any = r.len > 0;
                assert_eq!(r.take_overlapping(pages(0, 4000)), any);
                model.iter_mut().for_each(|m| *m = (0, 0));
                assert_eq!((r.len, r.max_len), (0, 0));
            }
        }
        eprintln!("paths taken: one probe {exact}, window {window}, bitmap walk {walked}");
        assert!(
            exact > 500 && window > 500 && walked > 500,
            "{exact} {window} {walked}"
        );
    }

    #[test]
    fn overlap_found_by_probe_and_by_scan_and_bounded() {
        let p = page_size();
        let mut r = Recent::default();
        r.insert(Range {
            start: 10 * p,
            end: 12 * p,
        });
        r.insert(Range {
            start: 20 * p,
            end: 21 * p,
        });
        // Probe window: a miss on the second page of the first range.
        assert!(r.take_overlapping(Range {
            start: 11 * p,
            end: 12 * p
        }));
        assert!(
            !r.take_overlapping(Range {
                start: 11 * p,
                end: 12 * p
            }),
            "forgotten"
        );
        // Scan: a miss far larger than the table.
        assert!(r.take_overlapping(Range {
            start: 0,
            end: 2 * SLOTS * p
        }));
        assert!(!r.take_overlapping(Range {
            start: 0,
            end: 2 * SLOTS * p
        }));
        assert_eq!((r.len, r.max_len), (0, 0));
        for i in 0..3 * SLOTS {
            r.insert(Range {
                start: i * p,
                end: (i + 1) * p,
            });
        }
        assert!(r.len <= SLOTS && r.slots.len() == SLOTS);
        // The newest is always remembered.
        let last = 3 * SLOTS - 1;
        assert!(r.take_overlapping(Range {
            start: last * p,
            end: (last + 1) * p
        }));
        // Most of the oldest were forgotten (their slots taken by newer ranges).
        let old = (0..SLOTS)
            .filter(|&i| {
                r.take_overlapping(Range {
                    start: i * p,
                    end: (i + 1) * p,
                })
            })
            .count();
        assert!(
            old < SLOTS / 4,
            "{old} of the oldest {SLOTS} still remembered"
        );
    }
}
