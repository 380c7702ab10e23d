//! The ranges recently invalidated, to count re-registrations (a miss overlapping one): the
//! `reregistrations` statistic. Bounded to `RECENT_MAX` ranges, the oldest forgotten first.
//!
//! Every invalidated entry is remembered, so this is on the drain's path once per event: a hash
//! map by start address and a ring of insertion order, O(1) per range, where the ordered map it
//! replaces cost two tree operations per event (issue 13). Overlap queries probe the few pages
//! a recent range overlapping the miss can start at (ranges are page-aligned and at most
//! `max_len` long), or scan the map when that window is larger than the map. Guarded by the
//! cache's miss lock.

use crate::range::{page_size, Range};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use super::index::PageHasher;

/// Most ranges remembered.
pub(super) const RECENT_MAX: usize = 4096;

#[derive(Default)]
pub(super) struct Recent {
    /// start -> (end, sequence number of the insertion that wrote it).
    by_start: HashMap<usize, (usize, u64), BuildHasherDefault<PageHasher>>,
    /// (start, sequence number), oldest first; an element whose number no longer matches the
    /// map's was overwritten or removed since.
    order: VecDeque<(usize, u64)>,
    seq: u64,
    /// No remembered range is longer (a bound, reset when the map empties).
    max_len: usize,
}

impl Recent {
    /// Remembers `r` (page-aligned), forgetting the oldest range beyond `RECENT_MAX`.
    pub fn insert(&mut self, r: Range) {
        while self.by_start.len() >= RECENT_MAX {
            let Some((s, n)) = self.order.pop_front() else {
                break;
            };
            if self.by_start.get(&s).is_some_and(|&(_, m)| m == n) {
                self.by_start.remove(&s);
            }
        }
        // The ring holds at most one element per insertion still in the map plus stale ones;
        // drop stale ones from the front so it stays bounded.
        while self.order.len() > 2 * RECENT_MAX {
            let (s, n) = self.order.pop_front().expect("non-empty");
            if self.by_start.get(&s).is_some_and(|&(_, m)| m == n) {
                self.by_start.remove(&s);
            }
        }
        self.seq += 1;
        self.by_start.insert(r.start, (r.end, self.seq));
        self.order.push_back((r.start, self.seq));
        self.max_len = self.max_len.max(r.len());
    }

    /// Forgets every remembered range overlapping `r` (page-aligned); true if there was one.
    pub fn take_overlapping(&mut self, r: Range) -> bool {
        if self.by_start.is_empty() {
            return false;
        }
        let page = page_size();
        let lo = r
            .start
            .checked_sub(self.max_len)
            .map_or(0, |x| (x & !(page - 1)) + page);
        let window = r.end.saturating_sub(lo) / page;
        let hits: Vec<usize> = if window <= self.by_start.len() {
            (0..window)
                .map(|i| lo + i * page)
                .filter(|s| self.by_start.get(s).is_some_and(|&(end, _)| end > r.start))
                .collect()
        } else {
            self.by_start
                .iter()
                .filter(|(&s, &(end, _))| s < r.end && end > r.start)
                .map(|(&s, _)| s)
                .collect()
        };
        for s in &hits {
            self.by_start.remove(s);
        }
        if self.by_start.is_empty() {
            self.max_len = 0;
            self.order.clear();
        }
        !hits.is_empty()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

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
        // Scan: a miss far larger than the map.
        assert!(r.take_overlapping(Range {
            start: 0,
            end: 1000 * p
        }));
        assert!(!r.take_overlapping(Range {
            start: 0,
            end: 1000 * p
        }));
        for i in 0..3 * RECENT_MAX {
            r.insert(Range {
                start: i * p,
                end: (i + 1) * p,
            });
        }
        assert!(r.by_start.len() <= RECENT_MAX && r.order.len() <= 2 * RECENT_MAX + 1);
        // The oldest were forgotten, the newest kept.
        assert!(!r.take_overlapping(Range { start: 0, end: p }));
        let last = 3 * RECENT_MAX - 1;
        assert!(r.take_overlapping(Range {
            start: last * p,
            end: (last + 1) * p
        }));
    }
}
