//! The lookup structure: non-overlapping cached entries, found by a hash probe on the request's
//! first page, kept in LRU order.
//!
//! Keeping entries disjoint (overlapping requests are merged into one registration, see
//! `Cache::miss_once`) means the only entry that can contain `[a, b)` is the one containing `a`.
//! Most requests start on the first page of their entry (a buffer is sent from its start), so a
//! hash map keyed by the entry's first page answers them with one probe. The rest, and the
//! range queries of the slow paths, find short entries (at most `SHORT_PAGES` pages) by probing
//! the few pages they can start at, and long ones through the granules they are filed under
//! (`Granules`): a hash probe per size class of long entries in use and granule of the query.
//! Short entries, the common case, cost nothing beyond their record (issue 13, memory per
//! entry). The ordered set of long starts this replaces cost a tree search per request inside
//! a long entry (a large buffer sent chunk by chunk: 100-300 ns per hit at 10^3-10^5 entries,
//! UCX's page table 60-115 ns) and three per miss of a long range.
//!
//! Each record of the table (`Indexed`, 24 bytes: a 32-byte bucket with its key) carries what a
//! hit reads (length, rights, keys, the "used" bit), so a hit reads the table and never the
//! entry: with 100,000 entries that is one cache miss fewer per hit (measured:
//! reading the entry instead costs 72 -> 215 ns per hit at 10^5 entries). The entry holds only
//! what must outlive the record (entry.rs), and the LRU links. Entries live in the pool's
//! chunks (`EntryPtr`, pool.rs), so handles and links can point at them while the map
//! rehashes.
//!
//! LRU order (second chance): the index threads a doubly linked list through its entries, oldest
//! first (`Entry::lru_prev` / `lru_next`: entry pointers, so linking and unlinking touch the
//! neighbours' entries and probe nothing; links by start address cost two probes per unlink,
//! a third of a drained event, issue 13). An entry is appended when inserted and unlinked when
//! removed; a hit only sets its record's used bit (no lock, no write once set); the eviction
//! walk (`Cache::next_victim`) moves an entry found used to the back and clears the bit. All
//! list changes happen under the index write lock. Every link points at an entry of this map:
//! owned by its record, alive while the map holds it.

use super::entry::{Entry, EntryPtr};
use crate::range::{page_size, Range};
use crate::registrar::Access;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// What an entry registered. In its index record while it is cached; with the retired list
/// (life.rs) once it leaves the index; copied into every handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Registered {
    pub range: Range,
    pub access: Access,
    pub lkey: u32,
    pub rkey: u32,
}

/// An entry taken out of the index, with what its record said it registered.
pub(crate) struct Unindexed {
    pub entry: EntryPtr,
    pub reg: Registered,
}

/// The used bit of `Indexed::span` (the low 31 bits are the length in pages).
const USED: u32 = 1 << 31;

/// Longest entry the index holds, in pages (31 bits of `span`: 8 TiB with 4 KiB pages). Longer
/// requests are registered per use (`Cache::get_slow`).
pub(crate) const MAX_PAGES: usize = (USED - 1) as usize;

/// Entries of at most this many pages are short: found by probing pages, not by granules. A
/// lookup that does not start on its entry's first page probes at most this many - 1 pages
/// before the granules.
const SHORT_PAGES: usize = 4;

/// Most pages `overlapping` probes one by one before it scans the whole map instead.
const PROBE_PAGES: usize = 64;

/// An empty granule slot (never a page-aligned address).
const NO_LINK: usize = usize::MAX;

/// Long entries by granule.
///
/// An entry of `2^k <= len < 2^(k+1)` bytes has level `k` and is filed under every granule of
/// `2^k` bytes it overlaps: at most 3. Entries are disjoint and each at least a granule long, so
/// at most 2 entries of one level overlap a granule (one reaching its first byte, one starting
/// inside it; a third would make the middle one shorter than the granule). The entry containing
/// an address is then among the at most 2 filed under that address's granule at its level, for
/// one of the levels in use: `containing` probes one key per level in `mask` (entries of a few
/// sizes: a few probes). A range query probes, per level, the granules the range overlaps.
/// Changed only under the index write lock.
struct Granules {
    /// Starts of the entries filed under a granule (`key`); `NO_LINK` where none.
    by_key: HashMap<usize, [usize; 2], BuildHasherDefault<GranuleHasher>>,
    /// Long entries per level, and the levels with any (bit `k`).
    count: [u32; 64],
    mask: u64,
    /// Long entries in all.
    len: usize,
    /// A granule had no free slot for an entry (impossible while entries are disjoint, see
    /// above): until the granules empty, lookups pass over the map instead of trusting them,
    /// so a broken invariant costs time, never a missed entry.
    overflowed: bool,
}

/// The levels whose bits are set in `mask`, lowest first.
fn levels(mut mask: u64) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let k = mask.trailing_zeros();
            mask &= mask - 1;
            k
        })
    })
}

impl Default for Granules {
    fn default() -> Self {
        Granules {
            by_key: HashMap::default(),
            count: [0; 64],
            mask: 0,
            len: 0,
            overflowed: false,
        }
    }
}

impl Granules {
    /// The map key of granule `g` of level `k`: one key per pair (`g < 2^(64 - k)` and long
    /// entries have `k >= 12`, so `g << 6` fits).
    fn key(k: u32, g: usize) -> usize {
        (g << 6) | k as usize
    }

    fn level(len: usize) -> u32 {
        usize::BITS - 1 - len.leading_zeros()
    }

    /// The granules of level `k` that `[start, end)` overlaps.
    fn span(k: u32, start: usize, end: usize) -> std::ops::RangeInclusive<usize> {
        (start >> k)..=((end - 1) >> k)
    }

    fn insert(&mut self, start: usize, end: usize) {
        let k = Self::level(end - start);
        for g in Self::span(k, start, end) {
            let slots = self.by_key.entry(Self::key(k, g)).or_insert([NO_LINK; 2]);
            match slots.iter().position(|&s| s == NO_LINK) {
                Some(i) => slots[i] = start,
                None => {
                    debug_assert!(false, "three entries of one level in a granule");
                    self.overflowed = true;
                }
            }
        }
        self.count[k as usize] += 1;
        self.mask |= 1 << k;
        self.len += 1;
    }

    fn remove(&mut self, start: usize, end: usize) {
        let k = Self::level(end - start);
        for g in Self::span(k, start, end) {
            let key = Self::key(k, g);
            if let Some(slots) = self.by_key.get_mut(&key) {
                for s in slots.iter_mut().filter(|s| **s == start) {
                    *s = NO_LINK;
                }
                if slots.iter().all(|&s| s == NO_LINK) {
                    self.by_key.remove(&key);
                }
            }
        }
        self.count[k as usize] -= 1;
        self.len -= 1;
        if self.len == 0 {
            self.overflowed = false;
        }
        if self.count[k as usize] == 0 {
            self.mask &= !(1 << k);
        }
    }

    /// The long entry containing `addr`, if any, with its start: `rec(start)` gives an entry's
    /// record and end.
    #[inline]
    fn containing<'a, R>(
        &self,
        addr: usize,
        rec: impl Fn(usize) -> Option<(&'a R, usize)>,
    ) -> Option<(usize, &'a R)> {
        for k in levels(self.mask) {
            if let Some(slots) = self.by_key.get(&Self::key(k, addr >> k)) {
                for &start in slots {
                    if start <= addr {
                        match rec(start) {
                            Some((r, end)) if addr < end => return Some((start, r)),
                            _ => {}
                        }
                    }
                }
            }
        }
        None
    }
}

/// An entry as the index holds it (the key is its start): the owning pointer and what a hit
/// reads.
pub(crate) struct Indexed {
    pub entry: EntryPtr,
    pub lkey: u32,
    pub rkey: u32,
    pub access: Access,
    /// Length in pages, and `USED`: hit since the eviction walk last looked at it. Hits set the
    /// bit, the walk clears it (a hint: a lost update only changes the eviction order).
    span: AtomicU32,
}

// The memory budget of issue 13 (<= 128 bytes per cached entry): a 32-byte bucket.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<(usize, Indexed)>() == 32);

impl Indexed {
    fn pages(&self) -> usize {
        // Relaxed: the page count never changes after insert (published by the index lock);
        // only the used bit moves.
        (self.span.load(Ordering::Relaxed) & !USED) as usize
    }

    /// Records a hit for the LRU order. Relaxed (load and store): a hint read under the miss
    /// lock; the load first avoids dirtying a line every thread reads.
    #[inline]
    pub fn mark_used(&self, span: u32) {
        if span & USED == 0 {
            self.span.store(span | USED, Ordering::Relaxed);
        }
    }

    /// Whether it was hit since the last call (the eviction walk's second chance); clears it.
    pub fn take_used(&self) -> bool {
        // Relaxed: see `mark_used`. A hit racing with the clear may be lost: one more chance
        // lost, never a wrong eviction (claiming checks the references, life.rs).
        let s = self.span.load(Ordering::Relaxed);
        if s & USED != 0 {
            self.span.store(s & !USED, Ordering::Relaxed);
        }
        s & USED != 0
    }
}

/// Fibonacci hashing of a key shifted right by `SHIFT` bits, with the product's high bits folded
/// into its low ones. hashbrown takes the bucket from the low bits (the tag from the top 7), and
/// the low bits of a product depend only on the low bits of the key: keys 2^j apart would share
/// the low j bits of their bucket (entries 2 MiB apart: one bucket in 512 used, and a hit inside
/// one searched hundreds). Folded, every stride spreads about as a random placement would
/// (index_tests.rs).
#[derive(Default)]
pub(crate) struct FoldHasher<const SHIFT: u32>(u64);

/// A page-aligned address: its page number hashed.
pub(crate) type PageHasher = FoldHasher<12>;

/// A granule key (`Granules::key`), hashed whole.
type GranuleHasher = FoldHasher<0>;

impl<const SHIFT: u32> Hasher for FoldHasher<SHIFT> {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        let h = (n as u64 >> SHIFT).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
    }
}

/// A hit: the entry's record and its registered range.
pub(crate) struct Found<'a> {
    pub rec: &'a Indexed,
    pub range: Range,
    span: u32,
}

impl Found<'_> {
    /// `Indexed::mark_used` with the value the lookup already loaded.
    #[inline]
    pub fn mark_used(&self) {
        self.rec.mark_used(self.span);
    }
}

pub(crate) struct Index {
    by_start: HashMap<usize, Indexed, BuildHasherDefault<PageHasher>>,
    /// The long entries (more than `SHORT_PAGES` pages) by granule.
    granules: Granules,
    page_shift: u32,
    page_mask: usize,
    /// No short entry is longer (pages; a bound raised by inserts, reset when the index empties).
    short_max: usize,
    /// Oldest and newest entry, null when empty (atomics only to keep the index Send + Sync:
    /// changed under `&mut self`).
    lru_head: AtomicPtr<Entry>,
    lru_tail: AtomicPtr<Entry>,
}

impl Default for Index {
    fn default() -> Self {
        let page = page_size();
        Index {
            by_start: HashMap::default(),
            granules: Granules::default(),
            page_shift: page.trailing_zeros(),
            page_mask: !(page - 1),
            short_max: 0,
            lru_head: AtomicPtr::new(std::ptr::null_mut()),
            lru_tail: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

impl Index {
    fn page(&self) -> usize {
        !self.page_mask + 1
    }

    fn range_of(&self, start: usize, s: &Indexed) -> Range {
        Range {
            start,
            end: start + (s.pages() << self.page_shift),
        }
    }

    /// The record of the entry containing `req` with rights covering `access`, if any.
    #[inline]
    pub fn find(&self, req: Range, access: Access) -> Option<Found<'_>> {
        let first_page = req.start & self.page_mask;
        let (start, rec) = match self.by_start.get(&first_page) {
            Some(s) => (first_page, s),
            None => self.containing_slow(req.start)?,
        };
        // Relaxed: see `Indexed::pages`.
        let span = rec.span.load(Ordering::Relaxed);
        let end = start + (((span & !USED) as usize) << self.page_shift);
        (req.end <= end && rec.access.covers(access)).then_some(Found {
            rec,
            range: Range { start, end },
            span,
        })
    }

    /// The entry that may contain `addr` when none starts on its page: a short one starting a
    /// few pages before, else a long one containing it (entries are disjoint, so the first one
    /// found is the only candidate).
    #[cold]
    fn containing_slow(&self, addr: usize) -> Option<(usize, &Indexed)> {
        let page = self.page();
        let first = addr & self.page_mask;
        for back in 1..self.short_max {
            let Some(s) = first.checked_sub(back * page) else {
                break;
            };
            if let Some(rec) = self.by_start.get(&s) {
                return Some((s, rec));
            }
        }
        if self.granules.overflowed {
            return self.by_start.iter().find_map(|(&s, rec)| {
                let r = self.range_of(s, rec);
                (!self.is_short(rec) && r.start <= addr && addr < r.end).then_some((s, rec))
            });
        }
        self.granules.containing(addr, |s| {
            let rec = self.by_start.get(&s)?;
            Some((rec, self.range_of(s, rec).end))
        })
    }

    /// Start addresses of entries overlapping `r`, in order.
    ///
    /// Short entries are at most `short_max` pages, so one overlapping `r` starts in the window
    /// `(r.start - short_max pages, r.end)`: one hash probe per page of it, or, when the window
    /// is wider than `PROBE_PAGES` and than the map, one pass over the map. Long entries come
    /// from the granules `r` overlaps at each level in use (`Granules`), or from one pass over
    /// the map when those are more than the long entries.
    pub fn overlapping(&self, r: Range) -> Vec<usize> {
        let mut out = Vec::new();
        self.overlapping_into(r, &mut out);
        out
    }

    /// `overlapping`, appended to `into` (for callers that reuse one vector: the drain).
    pub fn overlapping_into(&self, r: Range, into: &mut Vec<usize>) {
        if r.is_empty() || self.by_start.is_empty() {
            return;
        }
        let base = into.len();
        let out = into;
        if self.short_max > 0 {
            let page = self.page();
            let lo = match r.start.checked_sub(self.short_max * page) {
                Some(x) => (x & self.page_mask) + page,
                None => 0,
            };
            let pages = r.end.saturating_sub(lo).div_ceil(page);
            if pages <= PROBE_PAGES.max(self.by_start.len()) {
                let mut s = lo;
                while s < r.end {
                    if let Some(e) = self.by_start.get(&s) {
                        if self.is_short(e) && self.range_of(s, e).overlaps(&r) {
                            out.push(s);
                        }
                    }
                    s += page;
                }
            } else {
                out.extend(
                    self.by_start
                        .iter()
                        .filter(|&(&s, e)| self.is_short(e) && self.range_of(s, e).overlaps(&r))
                        .map(|(&s, _)| s),
                );
            }
        }
        let g = &self.granules;
        if g.len > 0 {
            // One probe per granule of `r` at each level in use; past the long entries' count
            // (and `PROBE_PAGES`), one pass over the map is cheaper.
            let probes = levels(g.mask).fold(0usize, |n, k| {
                let span = Granules::span(k, r.start, r.end);
                n.saturating_add(span.end() - span.start() + 1)
            });
            if !g.overflowed && probes <= PROBE_PAGES.max(g.len) {
                for k in levels(g.mask) {
                    for gi in Granules::span(k, r.start, r.end) {
                        let Some(slots) = g.by_key.get(&Granules::key(k, gi)) else {
                            continue;
                        };
                        // An entry filed under several of these granules is taken from the
                        // first of them: where it, or `r`, begins.
                        for &s in slots.iter().filter(|&&s| s != NO_LINK) {
                            if s.max(r.start) >> k == gi
                                && self
                                    .by_start
                                    .get(&s)
                                    .is_some_and(|e| self.range_of(s, e).overlaps(&r))
                            {
                                out.push(s);
                            }
                        }
                    }
                }
            } else {
                out.extend(
                    self.by_start
                        .iter()
                        .filter(|&(&s, e)| !self.is_short(e) && self.range_of(s, e).overlaps(&r))
                        .map(|(&s, _)| s),
                );
            }
        }
        if out.len() - base > 1 {
            out[base..].sort_unstable();
        }
    }

    /// The entry containing `addr`, with its start, if it is the one watched under `cookie`;
    /// `None` when no entry contains `addr` or another one does. A cookie event's hint lies in
    /// its watch's range, which is its entry's, so one probe at the hint's start finds the
    /// entry the event names (no range query; issue 13, 100% churn). Cookies of live entries
    /// are unique, so a match is the only entry that can carry it; callers fall back to
    /// `overlapping` only when this finds nothing.
    #[inline]
    pub fn with_cookie(&self, addr: usize, cookie: u64) -> Option<(usize, &Entry)> {
        let first = addr & self.page_mask;
        let (start, rec) = match self.by_start.get(&first) {
            Some(rec) => (first, rec),
            None => self.containing_slow(addr)?,
        };
        let e: &Entry = &rec.entry;
        (self.range_of(start, rec).end > addr && e.cookie() == cookie).then_some((start, e))
    }

    fn is_short(&self, e: &Indexed) -> bool {
        e.pages() <= SHORT_PAGES
    }

    pub fn get(&self, start: usize) -> Option<&Entry> {
        self.by_start.get(&start).map(|s| &*s.entry)
    }

    /// What the entry starting at `start` registered.
    pub fn registered(&self, start: usize) -> Option<Registered> {
        self.by_start.get(&start).map(|s| Registered {
            range: self.range_of(start, s),
            access: s.access,
            lkey: s.lkey,
            rkey: s.rkey,
        })
    }

    /// Inserts `e` (registered as `reg`, page-aligned and at most `MAX_PAGES` long) as the
    /// newest entry, not yet used.
    pub fn insert(&mut self, e: EntryPtr, reg: Registered) {
        let start = reg.range.start;
        let pages = reg.range.len() >> self.page_shift;
        debug_assert!(start & !self.page_mask == 0 && pages <= MAX_PAGES);
        if pages > SHORT_PAGES {
            self.granules.insert(start, reg.range.end);
        } else {
            self.short_max = self.short_max.max(pages);
        }
        debug_assert_eq!(e.start, start, "an entry holds its own start");
        self.link_back(&e);
        let rec = Indexed {
            entry: e,
            lkey: reg.lkey,
            rkey: reg.rkey,
            access: reg.access,
            span: AtomicU32::new(pages as u32),
        };
        let old = self.by_start.insert(start, rec);
        debug_assert!(old.is_none(), "index entries must be disjoint");
    }

    pub fn remove(&mut self, start: usize) -> Option<Unindexed> {
        self.remove_noting_use(start).map(|(u, _)| u)
    }

    /// `remove`, also telling whether the entry was hit since the eviction walk last cleared
    /// its used bit (`Indexed::take_used`, without a second probe).
    #[inline]
    pub fn remove_noting_use(&mut self, start: usize) -> Option<(Unindexed, bool)> {
        let rec = self.by_start.remove(&start)?;
        // Relaxed: see `Indexed::take_used` (a hint; the record is ours now).
        let used = rec.span.load(Ordering::Relaxed) & USED != 0;
        let reg = Registered {
            range: self.range_of(start, &rec),
            access: rec.access,
            lkey: rec.lkey,
            rkey: rec.rkey,
        };
        if !self.is_short(&rec) {
            self.granules.remove(start, reg.range.end);
        }
        self.unlink(&rec.entry);
        if self.by_start.is_empty() {
            self.short_max = 0;
        }
        Some((
            Unindexed {
                entry: rec.entry,
                reg,
            },
            used,
        ))
    }

    /// Every start, in no particular order.
    pub fn starts(&self) -> Vec<usize> {
        self.by_start.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    /// The entry a link points at.
    fn linked(&self, p: *mut Entry) -> Option<&Entry> {
        // SAFETY: links point at entries of this map (module comment), alive while `self` is
        // borrowed; null at the ends.
        unsafe { p.as_ref() }
    }

    /// The oldest entry's start.
    pub fn lru_front(&self) -> Option<usize> {
        // Relaxed (all links): they change only under the index write lock (`&mut self`), and
        // are read only under it or the miss lock.
        self.linked(self.lru_head.load(Ordering::Relaxed))
            .map(|e| e.start)
    }

    /// The record of the entry starting at `start`, and the start of the entry after it in LRU
    /// order (towards the newest), read through its link: one probe.
    pub fn indexed_and_next(&self, start: usize) -> Option<(&Indexed, Option<usize>)> {
        let rec = self.by_start.get(&start)?;
        let next = self.linked(rec.entry.lru_next.load(Ordering::Relaxed));
        Some((rec, next.map(|e| e.start)))
    }

    /// Moves the entry starting at `start` to the newest end.
    pub fn lru_move_to_back(&mut self, start: usize) {
        let Some(rec) = self.by_start.get(&start) else {
            return;
        };
        let e: *const Entry = &*rec.entry;
        if std::ptr::eq(self.lru_tail.load(Ordering::Relaxed), e) {
            return;
        }
        // SAFETY: the entry is owned by its record, which stays in the map across these link
        // updates (they change only the entries' link atomics, never the map).
        let e = unsafe { &*e };
        self.unlink(e);
        self.link_back(e);
    }

    /// Appends `e` (an entry of this map, or about to be) as the newest.
    fn link_back(&mut self, e: &Entry) {
        let p = std::ptr::from_ref(e).cast_mut();
        let tail = self.lru_tail.load(Ordering::Relaxed);
        e.lru_prev.store(tail, Ordering::Relaxed);
        e.lru_next.store(std::ptr::null_mut(), Ordering::Relaxed);
        match self.linked(tail) {
            None => self.lru_head.store(p, Ordering::Relaxed),
            Some(t) => t.lru_next.store(p, Ordering::Relaxed),
        }
        self.lru_tail.store(p, Ordering::Relaxed);
    }

    /// Takes `e` (an entry of this map) out of the list. Its own links are left as they are:
    /// only entries of the map have theirs read (`linked`), and `link_back` sets both.
    fn unlink(&mut self, e: &Entry) {
        let (prev, next) = (
            e.lru_prev.load(Ordering::Relaxed),
            e.lru_next.load(Ordering::Relaxed),
        );
        match self.linked(prev) {
            None => {
                debug_assert!(std::ptr::eq(self.lru_head.load(Ordering::Relaxed), e));
                self.lru_head.store(next, Ordering::Relaxed);
            }
            Some(p) => p.lru_next.store(next, Ordering::Relaxed),
        }
        match self.linked(next) {
            None => {
                debug_assert!(std::ptr::eq(self.lru_tail.load(Ordering::Relaxed), e));
                self.lru_tail.store(prev, Ordering::Relaxed);
            }
            Some(n) => n.lru_prev.store(prev, Ordering::Relaxed),
        }
    }
}

#[cfg(all(test, not(loom)))]
#[path = "index_tests.rs"]
mod tests;
