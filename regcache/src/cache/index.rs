//! The lookup structure: non-overlapping cached entries, found by a hash probe on the request's
//! first page and, failing that, by an ordered-map search.
//!
//! Keeping entries disjoint (overlapping requests are merged into one registration, see
//! `Cache::miss_once`) means the only entry that can contain `[a, b)` is the last one starting at
//! or before `a`. Most requests start on the first page of their entry (a buffer is sent from its
//! start), so a hash map keyed by the entry's first page answers them with one probe and no
//! data-dependent branching; the ordered set of starts answers the rest and the range queries
//! of the slow paths. Entries are heap-allocated (`EntryPtr`) so handles can point at them while
//! the maps rehash.
//!
//! Each record of the table (`Indexed`) also carries what a hit reads (range, rights, keys, LRU
//! stamp), so a hit reads the table and never the heap-allocated entry: with 100,000 entries
//! that is one cache miss fewer per hit.

use super::entry::{Entry, EntryPtr};
use crate::range::{page_size, Range};
use crate::registrar::Access;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicU64;

/// An entry as the index holds it: the owning pointer and copies of the fields a hit reads
/// (see the module comment).
pub(crate) struct Indexed {
    pub range: Range,
    pub access: Access,
    pub lkey: u32,
    pub rkey: u32,
    /// LRU stamp: the cache clock at the last hit (coarse; ties are fine).
    pub last_use: AtomicU64,
    pub entry: EntryPtr,
}

/// Fibonacci hashing of a page-aligned address: one multiply, good spread for sequential pages.
#[derive(Default)]
pub(crate) struct PageHasher(u64);

impl Hasher for PageHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64 >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
    }
}

pub(crate) struct Index {
    by_start: HashMap<usize, Indexed, BuildHasherDefault<PageHasher>>,
    starts: BTreeSet<usize>,
    page_mask: usize,
    /// No entry is longer (bytes; a bound, raised by inserts, reset when the index empties):
    /// an entry overlapping `r` starts in `(r.start - max_len, r.end)`, so when that window
    /// holds few pages, `overlapping` probes the hash map page by page instead of searching the
    /// ordered set.
    max_len: usize,
}

/// Most pages `overlapping` probes one by one before it searches the ordered set instead.
const PROBE_PAGES: usize = 8;

impl Default for Index {
    fn default() -> Self {
        Index {
            by_start: HashMap::default(),
            starts: BTreeSet::new(),
            page_mask: !(page_size() - 1),
            max_len: 0,
        }
    }
}

impl Index {
    /// The record of the entry containing `req` with rights covering `access`, if any.
    #[inline]
    pub fn find(&self, req: Range, access: Access) -> Option<&Indexed> {
        let first_page = req.start & self.page_mask;
        let s = match self.by_start.get(&first_page) {
            Some(s) => s,
            None => {
                let &start = self.starts.range(..=req.start).next_back()?;
                self.by_start.get(&start)?
            }
        };
        (s.range.contains(&req) && s.access.covers(access)).then_some(s)
    }

    /// Start addresses of entries overlapping `r`, in order.
    ///
    /// Entries start on page boundaries and are at most `max_len` long, so when the window of
    /// possible starts is a few pages, one hash probe per page answers. Otherwise one search of
    /// the ordered set: entries are disjoint, so sorted by start they are sorted by end too, and
    /// the ones overlapping `r` are the run that ends with the last start before `r.end`, walked
    /// back until an entry ends at or before `r.start`.
    pub fn overlapping(&self, r: Range) -> Vec<usize> {
        let mut out = Vec::new();
        if r.is_empty() || self.by_start.is_empty() {
            return out;
        }
        let page = !self.page_mask + 1;
        // The lowest page boundary above `r.start - max_len` (0 if that underflows).
        let lo = match r.start.checked_sub(self.max_len) {
            Some(x) => (x & self.page_mask) + page,
            None => 0,
        };
        if r.end.saturating_sub(lo) <= PROBE_PAGES * page {
            let mut s = lo;
            while s < r.end {
                if self.by_start.get(&s).is_some_and(|e| e.range.end > r.start) {
                    out.push(s);
                }
                s += page;
            }
            return out;
        }
        for &s in self.starts.range(..r.end).rev() {
            match self.by_start.get(&s) {
                Some(e) if e.range.end > r.start => out.push(s),
                _ => break,
            }
        }
        out.reverse();
        out
    }

    pub fn get(&self, start: usize) -> Option<&Entry> {
        self.by_start.get(&start).map(|s| &*s.entry)
    }

    pub fn indexed(&self, start: usize) -> Option<&Indexed> {
        self.by_start.get(&start)
    }

    /// Inserts `e`, last used at `stamp`.
    pub fn insert(&mut self, e: EntryPtr, stamp: u64) {
        let start = e.range.start;
        self.max_len = self.max_len.max(e.range.len());
        self.starts.insert(start);
        let rec = Indexed {
            range: e.range,
            access: e.access,
            lkey: e.reg.lkey,
            rkey: e.reg.rkey,
            last_use: AtomicU64::new(stamp),
            entry: e,
        };
        let old = self.by_start.insert(start, rec);
        debug_assert!(old.is_none(), "index entries must be disjoint");
    }

    pub fn remove(&mut self, start: usize) -> Option<EntryPtr> {
        self.starts.remove(&start);
        let e = self.by_start.remove(&start).map(|s| s.entry);
        if self.by_start.is_empty() {
            self.max_len = 0;
        }
        e
    }

    pub fn starts(&self) -> Vec<usize> {
        self.starts.iter().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::registrar::Registration;

    /// `overlapping` (hash probes for short windows, the ordered set for long ones) against a
    /// scan of every entry: entries of 1 or 2 pages (the windows are short: hash probes), then
    /// with some of up to 40 pages among them (long windows: the ordered set).
    #[test]
    fn overlapping_matches_a_scan() {
        for long in [0, 40] {
            check_overlapping(long);
        }
    }

    fn check_overlapping(long: usize) {
        let page = page_size();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut idx = Index::default();
        let mut ranges = Vec::new();
        let mut at = 0x1000_0000usize;
        for id in 0..300u64 {
            at += rnd(4) * page;
            let len = if long > 0 && rnd(10) == 0 {
                1 + rnd(long)
            } else {
                1 + rnd(2)
            } * page;
            let r = Range {
                start: at,
                end: at + len,
            };
            at += len;
            let reg = Registration {
                lkey: 1,
                rkey: 1,
                token: 0,
            };
            let e = EntryPtr::new(Entry::cached(id, r, Access::LOCAL_WRITE, reg));
            idx.insert(e, 0);
            ranges.push(r);
        }
        for _ in 0..3000 {
            let start = 0x1000_0000 - 4 * page + rnd(at - 0x1000_0000 + 8 * page);
            let r = Range {
                start,
                end: start + 1 + rnd(20 * page),
            };
            let want: Vec<usize> = ranges
                .iter()
                .filter(|e| e.overlaps(&r))
                .map(|e| e.start)
                .collect();
            assert_eq!(idx.overlapping(r), want, "{r:?} (long {long})");
        }
        for s in idx.starts() {
            let e = idx.remove(s).unwrap();
            // SAFETY: out of the index, never shared.
            unsafe { e.free() };
        }
        assert_eq!(idx.max_len, 0);
    }
}
