//! Buffers churned in the torture oracle's address-reusing patterns: MAP_FIXED over a live
//! buffer, munmap + mmap at the same address, free + malloc of large (mmap-backed) blocks,
//! mremap onto an address freed earlier, madvise(DONTNEED), and fresh allocations put back at
//! freed addresses. A cache that misses one of these hands out a registration of old pages.

use regcache_oracle::mem::{self, PAGE};
use regcache_oracle::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mmap,
    Malloc,
}

#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: usize,
    pub len: usize,
    pub kind: Kind,
}

/// Names of the churn operations, in `Pool::ops` order.
pub const OPS: [&str; 7] = [
    "alloc",
    "map_over",
    "unmap_remap",
    "free_malloc",
    "free_realloc",
    "mremap",
    "dontneed",
];

pub struct Pool {
    pub rng: Rng,
    bufs: Vec<Option<Buf>>,
    freed: Vec<usize>,
    max: usize,
    pub ops: [u64; OPS.len()],
}

impl Pool {
    pub fn new(seed: u64, slots: usize, max: usize) -> Pool {
        // Large blocks always mmap-backed, so free() unmaps them (inside glibc).
        mem::fix_mmap_threshold(128 << 10);
        Pool {
            rng: Rng::new(seed),
            bufs: vec![None; slots.max(2)],
            freed: Vec::new(),
            max,
            ops: [0; OPS.len()],
        }
    }

    pub fn slots(&self) -> usize {
        self.bufs.len()
    }

    pub fn buffers(&self) -> impl Iterator<Item = &Buf> {
        self.bufs.iter().flatten()
    }

    /// A transfer size: mostly small, some up to `max` (4 MiB by default).
    pub fn pick_len(&mut self) -> usize {
        let pages = |r: &mut Rng, lo: usize, hi: usize| r.range(lo, hi + 1) * PAGE;
        let x = self.rng.range(0, 1000);
        let len = if x < 850 {
            pages(&mut self.rng, 1, 4)
        } else if x < 970 {
            pages(&mut self.rng, 5, 32)
        } else if x < 997 {
            pages(&mut self.rng, 33, 256)
        } else {
            pages(&mut self.rng, 257, 1024)
        };
        len.min(self.max).max(PAGE)
    }

    fn hint(&mut self) -> Option<usize> {
        if self.freed.is_empty() || !self.rng.chance(80) {
            return None;
        }
        Some(self.freed[self.rng.range(0, self.freed.len())])
    }

    fn remember(&mut self, addr: usize) {
        if self.freed.len() >= 32 {
            self.freed.remove(0);
        }
        self.freed.push(addr & !(PAGE - 1));
    }

    fn alloc(&mut self, len: usize) -> Buf {
        if self.rng.chance(50) {
            let hint = self.hint();
            if let Some(a) = hint
                .and_then(|h| mem::map(len, Some(h)))
                .or_else(|| mem::map(len, None))
            {
                return Buf {
                    addr: a,
                    len,
                    kind: Kind::Mmap,
                };
            }
        }
        let a = mem::malloc(len).expect("malloc");
        Buf {
            addr: a,
            len,
            kind: Kind::Malloc,
        }
    }

    fn release(&mut self, b: Buf) {
        match b.kind {
            Kind::Mmap => mem::unmap(b.addr, b.len),
            Kind::Malloc => mem::free(b.addr),
        }
        self.remember(b.addr);
    }

    /// The buffer of `slot`, allocated if empty and reallocated if shorter than `len`.
    pub fn ensure(&mut self, slot: usize, len: usize) -> Buf {
        match self.bufs[slot] {
            Some(b) if b.len >= len => b,
            old => {
                if let Some(b) = old {
                    self.release(b);
                }
                let b = self.alloc(len);
                self.bufs[slot] = Some(b);
                b
            }
        }
    }

    /// One memory operation on `slot` (30%: none, the buffer is reused as it is).
    pub fn churn(&mut self, slot: usize) {
        let Some(b) = self.bufs[slot] else {
            let len = self.pick_len();
            self.bufs[slot] = Some(self.alloc(len));
            self.ops[0] += 1;
            return;
        };
        let op = self.rng.range(0, 10);
        let done = match (op, b.kind) {
            (0, Kind::Mmap) => mem::map_over(b.addr, b.len).then_some(1),
            (1, Kind::Mmap) => {
                mem::unmap(b.addr, b.len);
                let a = mem::map(b.len, Some(b.addr))
                    .or_else(|| mem::map(b.len, None))
                    .expect("mmap");
                self.bufs[slot] = Some(Buf { addr: a, ..b });
                Some(2)
            }
            (0 | 1, Kind::Malloc) => {
                mem::free(b.addr);
                let a = mem::malloc(b.len).expect("malloc");
                self.bufs[slot] = Some(Buf { addr: a, ..b });
                Some(3)
            }
            (2 | 3, _) => {
                self.release(b);
                let len = self.pick_len();
                self.bufs[slot] = Some(self.alloc(len));
                Some(4)
            }
            (4, Kind::Mmap) => self.mremap(slot, b),
            (5, Kind::Mmap) => {
                mem::dontneed(b.addr, b.len);
                Some(6)
            }
            _ => None,
        };
        if let Some(i) = done {
            self.ops[i] += 1;
        }
    }

    /// Moves the buffer onto an address freed earlier (reserved first, so nothing else is
    /// replaced); its old address becomes free.
    fn mremap(&mut self, slot: usize, b: Buf) -> Option<usize> {
        let target = self.freed.iter().rev().copied().find(|&h| h != b.addr)?;
        let reserved = mem::map(b.len, Some(target))?;
        if !mem::single_vma(b.addr, b.len) {
            mem::unmap(reserved, b.len);
            return None;
        }
        match mem::remap(b.addr, b.len, b.len, Some(reserved)) {
            Some(a) if a == reserved => {
                self.freed.retain(|&h| h != target);
                self.remember(b.addr);
                self.bufs[slot] = Some(Buf { addr: a, ..b });
                Some(5)
            }
            _ => {
                mem::unmap(reserved, b.len);
                None
            }
        }
    }

    /// Frees everything.
    pub fn clear(&mut self) {
        for i in 0..self.bufs.len() {
            if let Some(b) = self.bufs[i].take() {
                self.release(b);
            }
        }
    }
}
