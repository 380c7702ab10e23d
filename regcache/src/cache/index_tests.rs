//! Tests of the index (index.rs): lookups, overlap queries and the LRU links against a plain
//! list of the entries.

use super::*;

struct Model {
    idx: Index,
    ranges: Vec<Range>,
}

impl Model {
    fn new() -> Self {
        Model {
            idx: Index::default(),
            ranges: Vec::new(),
        }
    }

    fn insert(&mut self, id: u64, r: Range) {
        let e = EntryPtr::new(Entry {
            start: r.start,
            ..Entry::cached(id, id)
        });
        let reg = Registered {
            range: r,
            access: Access::LOCAL_WRITE,
            lkey: id as u32,
            rkey: id as u32 + 1,
        };
        self.idx.insert(e, reg);
        self.ranges.push(r);
    }

    fn remove(&mut self, start: usize) {
        let u = self.idx.remove(start).expect("indexed");
        assert_eq!(u.reg.range.start, start);
        self.ranges.retain(|r| r.start != start);
        // SAFETY: out of the index, never shared.
        unsafe { u.entry.free() };
    }

    fn clear(&mut self) {
        for s in self.idx.starts() {
            self.remove(s);
        }
        assert_eq!(self.idx.short_max, 0);
        assert_eq!(self.idx.lru_front(), None);
        let g = &self.idx.granules;
        assert!(g.by_key.is_empty() && g.mask == 0 && g.count.iter().all(|&c| c == 0));
    }
}

fn xorshift(seed: &mut u64, n: usize) -> usize {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed % n as u64) as usize
}

/// `overlapping` and `find` (page probes for short entries, the granules for long ones, a pass
/// over the map for wide windows) against a scan of every entry: entries of 1 or 2 pages, then
/// with some of up to 40 and up to 700 pages among them (long entries of several levels),
/// removed and inserted again between the queries.
#[test]
fn overlapping_and_find_match_a_scan() {
    for long in [0, 40, 700] {
        check(long, false);
    }
    // The passes over the map that stand in for the granules should one ever overflow.
    check(700, true);
}

fn check(long: usize, overflowed: bool) {
    let page = page_size();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut m = Model::new();
    let mut at = 0x1000_0000usize;
    for id in 0..300u64 {
        at += xorshift(&mut seed, 4) * page;
        let len = if long > 0 && xorshift(&mut seed, 10) == 0 {
            1 + xorshift(&mut seed, long)
        } else {
            1 + xorshift(&mut seed, 2)
        } * page;
        let r = Range {
            start: at,
            end: at + len,
        };
        at += len;
        m.insert(id + 1, r);
    }
    if overflowed {
        // As if filings had been lost: the passes over the map must not need them.
        m.idx.granules.overflowed = true;
        m.idx.granules.by_key.clear();
    }
    for i in 0..3000 {
        let start = 0x1000_0000 - 4 * page + xorshift(&mut seed, at - 0x1000_0000 + 8 * page);
        // Mostly short queries, some wider than the map (the pass over the map).
        let len = if i % 10 == 0 { 400 * page } else { 20 * page };
        let r = Range {
            start,
            end: start + 1 + xorshift(&mut seed, len),
        };
        let mut want: Vec<usize> = m
            .ranges
            .iter()
            .filter(|e| e.overlaps(&r))
            .map(|e| e.start)
            .collect();
        want.sort_unstable();
        assert_eq!(m.idx.overlapping(r), want, "{r:?} (long {long})");
        let holder = m.ranges.iter().find(|e| e.contains(&r)).copied();
        let found = m.idx.find(r, Access::LOCAL_WRITE).map(|f| f.range);
        assert_eq!(found, holder, "find {r:?} (long {long})");
        // A request of one byte anywhere inside a random entry finds it (the granules' probe
        // for long entries, from any page of them).
        let e = m.ranges[xorshift(&mut seed, m.ranges.len())];
        let at = e.start + xorshift(&mut seed, e.len());
        let one = Range {
            start: at,
            end: at + 1,
        };
        let found = m.idx.find(one, Access::LOCAL_WRITE).map(|f| f.range);
        assert_eq!(found, Some(e), "find inside {e:?}");
        // Now and then an entry leaves and comes back (the granules follow).
        if i % 7 == 0 {
            let id = 1000 + i as u64;
            m.remove(e.start);
            assert_eq!(m.idx.find(one, Access::LOCAL_WRITE).map(|f| f.range), None);
            m.insert(id, e);
        }
    }
    m.clear();
}

/// The LRU list: insertion order, moves to the back, removal from the middle and both ends.
#[test]
fn lru_links_follow_inserts_moves_and_removals() {
    let page = page_size();
    let mut m = Model::new();
    let r = |i: usize| Range {
        start: 0x2000_0000 + i * 8 * page,
        end: 0x2000_0000 + i * 8 * page + (1 + i % 6) * page,
    };
    for i in 0..6 {
        m.insert(i as u64 + 1, r(i));
    }
    let order = |idx: &Index| {
        let mut v = Vec::new();
        let mut at = idx.lru_front();
        while let Some(s) = at {
            v.push((s - 0x2000_0000) / (8 * page));
            at = idx.indexed_and_next(s).and_then(|(_, next)| next);
        }
        v
    };
    assert_eq!(order(&m.idx), [0, 1, 2, 3, 4, 5]);
    m.idx.lru_move_to_back(r(0).start);
    m.idx.lru_move_to_back(r(3).start);
    m.idx.lru_move_to_back(r(3).start);
    assert_eq!(order(&m.idx), [1, 2, 4, 5, 0, 3]);
    m.remove(r(1).start);
    m.remove(r(5).start);
    m.remove(r(3).start);
    assert_eq!(order(&m.idx), [2, 4, 0]);
    m.insert(9, r(1));
    assert_eq!(order(&m.idx), [2, 4, 0, 1]);
    m.clear();
}

/// The used bit: set by a hit, taken (and cleared) by the eviction walk; the length survives.
#[test]
fn used_bit_is_set_once_and_taken() {
    let page = page_size();
    let mut m = Model::new();
    let r = Range {
        start: 0x3000_0000,
        end: 0x3000_0000 + 3 * page,
    };
    m.insert(1, r);
    let rec = m.idx.indexed_and_next(r.start).unwrap().0;
    assert!(!rec.take_used());
    m.idx.find(r, Access::LOCAL_WRITE).unwrap().mark_used();
    let rec = m.idx.indexed_and_next(r.start).unwrap().0;
    assert!(rec.take_used());
    assert!(!rec.take_used());
    assert_eq!(m.idx.registered(r.start).unwrap().range, r);
    m.clear();
}

/// The bucket hashbrown derives from a start (the hash's low bits) spreads starts any power of
/// two of pages apart about as a random placement would: 1,000 starts in a table of 2,048
/// buckets and 60,000 in one of 131,072 (random: ~790 and ~48,800 distinct buckets). The
/// product's low bits alone put starts 2 MiB apart in 4 buckets of 2,048 (a hit inside a long
/// entry then searched hundreds: issue 13); its high bits alone, consecutive pages of the large
/// table in 15,000.
#[test]
fn page_hash_spreads_strided_starts() {
    use std::hash::BuildHasher;
    let hasher = BuildHasherDefault::<PageHasher>::default();
    for stride in [4096usize, 8 << 10, 64 << 10, 1 << 20, 2 << 20, 1 << 30] {
        for (keys, buckets, least) in [(1000usize, 2048u64, 600usize), (60_000, 1 << 17, 40_000)] {
            let used: std::collections::HashSet<u64> = (0..keys)
                .map(|i| hasher.hash_one(0x7f00_0000_0000 + i * stride) & (buckets - 1))
                .collect();
            assert!(
                used.len() >= least,
                "stride {stride}: {} of {buckets} buckets for {keys} starts",
                used.len()
            );
        }
    }
}
