//! The lookup structure: non-overlapping cached entries ordered by start address.
//!
//! Keeping entries disjoint (overlapping requests are merged into one registration, see
//! `Cache::miss`) makes a lookup a single ordered-map probe: the only entry that can contain
//! `[a, b)` is the last one starting at or before `a`. Entries are boxed so that handles can point
//! at them while the map rebalances.

use super::entry::Entry;
use crate::range::Range;
use crate::registrar::Access;
use std::collections::BTreeMap;

#[derive(Default)]
pub(crate) struct Index {
    by_start: BTreeMap<usize, Box<Entry>>,
}

impl Index {
    /// The entry containing `req` with rights covering `access`, if any.
    #[inline]
    pub fn find(&self, req: Range, access: Access) -> Option<&Entry> {
        let (_, e) = self.by_start.range(..=req.start).next_back()?;
        (e.range.contains(&req) && e.access.covers(access)).then_some(&**e)
    }

    /// Start addresses of entries overlapping `r`, in order.
    pub fn overlapping(&self, r: Range) -> Vec<usize> {
        let mut out = Vec::new();
        if let Some((&s, e)) = self.by_start.range(..r.start).next_back() {
            if e.range.overlaps(&r) {
                out.push(s);
            }
        }
        out.extend(self.by_start.range(r.start..r.end).map(|(&s, _)| s));
        out
    }

    pub fn get(&self, start: usize) -> Option<&Entry> {
        self.by_start.get(&start).map(|b| &**b)
    }

    pub fn insert(&mut self, e: Box<Entry>) {
        let old = self.by_start.insert(e.range.start, e);
        debug_assert!(old.is_none(), "index entries must be disjoint");
    }

    pub fn remove(&mut self, start: usize) -> Option<Box<Entry>> {
        self.by_start.remove(&start)
    }

    pub fn starts(&self) -> Vec<usize> {
        self.by_start.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }
}
