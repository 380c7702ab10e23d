//! The ranges recently invalidated, to count re-registrations (a miss overlapping one): the
//! `reregistrations` statistic.
//!
//! Every invalidated entry is remembered, so this is on the drain's path once per event. It is
//! a direct-mapped table of `SLOTS` ranges indexed by a hash of the start page: remembering is
//! one store, and a range is forgotten when a newer one takes its slot (so "recent" means
//! roughly the last few thousand). The hash map and insertion ring it replaces cost ~210
//! instructions per event (issue 13, drain cost); the statistic only needs an estimate.
//! Overlap queries probe the slots of the few pages a remembered range overlapping the miss
//! can start at (ranges are page-aligned and at most `max_len` long), or scan the table when
//! that window is larger. Guarded by the cache's miss lock.

use crate::range::{page_size, Range};

/// Slots of the table (a power of two): 64 KiB, allocated at the first invalidation.
pub(super) const SLOTS: usize = 4096;

#[derive(Default)]
pub(super) struct Recent {
    /// `(start, end)` by slot; `end == 0` is a free slot.
    slots: Vec<(usize, usize)>,
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
        }
        let s = &mut self.slots[slot(r.start)];
        if s.1 == 0 {
            self.len += 1;
        }
        *s = (r.start, r.end);
        self.max_len = self.max_len.max(r.len());
    }

    /// Forgets every remembered range overlapping `r` (page-aligned); true if there was one.
    ///
    /// A remembered range starting where `r` starts and reaching at least as far is the only
    /// one that can overlap `r`: remembered ranges are disjoint (each was an index entry, and a
    /// miss forgets every remembered range its request overlaps before its entry is made), so
    /// another one would overlap it. That is the common re-registration (the same buffer again:
    /// 100% churn) and costs one probe instead of one per page of `r` and of the longest
    /// remembered range (31 probes at 64 KiB, 511 at 1 MiB: ~0.5 k and ~8 k instructions per
    /// churned miss, issue 13). Should the disjointness ever fail, the count is off by the
    /// ranges left behind, never anything the cache trusts (a statistic only).
    pub fn take_overlapping(&mut self, r: Range) -> bool {
        if self.len == 0 {
            return false;
        }
        let exact = &mut self.slots[slot(r.start)];
        if exact.0 == r.start && exact.1 >= r.end {
            *exact = (0, 0);
            self.len -= 1;
            if self.len == 0 {
                self.max_len = 0;
            }
            return true;
        }
        let page = page_size();
        let lo = r
            .start
            .checked_sub(self.max_len)
            .map_or(0, |x| (x & !(page - 1)) + page);
        let window = r.end.saturating_sub(lo).div_ceil(page);
        let mut found = 0;
        if window <= SLOTS {
            for i in 0..window {
                let start = lo + i * page;
                let s = &mut self.slots[slot(start)];
                if s.0 == start && s.1 > r.start && s.1 != 0 {
                    *s = (0, 0);
                    found += 1;
                }
            }
        } else {
            for s in self.slots.iter_mut() {
                if s.1 != 0 && s.0 < r.end && s.1 > r.start {
                    *s = (0, 0);
                    found += 1;
                }
            }
        }
        self.len -= found;
        if self.len == 0 {
            self.max_len = 0;
        }
        found > 0
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
