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
}

impl Default for Index {
    fn default() -> Self {
        Index {
            by_start: HashMap::default(),
            starts: BTreeSet::new(),
            page_mask: !(page_size() - 1),
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

    /// Start addresses of entries overlapping `r`, in order. One search of the ordered set:
    /// entries are disjoint, so sorted by start they are sorted by end too, and the ones
    /// overlapping `r` are the run that ends with the last start before `r.end`, walked back
    /// until an entry ends at or before `r.start`.
    pub fn overlapping(&self, r: Range) -> Vec<usize> {
        let mut out = Vec::new();
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
        self.by_start.remove(&start).map(|s| s.entry)
    }

    pub fn starts(&self) -> Vec<usize> {
        self.starts.iter().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }
}
