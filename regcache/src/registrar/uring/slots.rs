//! Allocator of fixed-buffer slot indexes (the software NIC's "memory region" numbers).
//!
//! A LIFO free list: allocation and release are O(1) per slot, and the slot released last is the
//! one handed out next (warm in the kernel's table, and predictable for tests). A chained
//! registration takes several slots that need not be adjacent, because the kernel addresses each
//! fixed buffer by its own index. A bitmap of slots in use catches double frees, which would
//! otherwise hand one slot to two registrations. Not thread-safe: the software NIC keeps it behind
//! its mutex, together with the ring it describes.

/// Free and used fixed-buffer slot indexes of one ring.
pub(super) struct SlotAllocator {
    /// Free slots; the last one is handed out first.
    free: Vec<u16>,
    /// `used[i]` is true while slot `i` belongs to a registration.
    used: Vec<bool>,
}

impl SlotAllocator {
    /// An allocator of slots `0..count`, all free. `count` is at most 65536 (the kernel's
    /// `buf_index` is a u16; io_uring itself allows 16384).
    pub(super) fn new(count: u32) -> Self {
        debug_assert!(count <= u32::from(u16::MAX) + 1);
        // Reversed so that slot 0 is handed out first.
        let free = (0..count).rev().map(|s| s as u16).collect();
        SlotAllocator {
            free,
            used: vec![false; count as usize],
        }
    }

    /// Total number of slots.
    pub(super) fn capacity(&self) -> usize {
        self.used.len()
    }

    /// Slots currently handed out.
    pub(super) fn in_use(&self) -> usize {
        self.used.len() - self.free.len()
    }

    /// Takes `n` slots, or none at all when fewer than `n` are free.
    pub(super) fn alloc(&mut self, n: usize) -> Option<Vec<u16>> {
        if n == 0 || n > self.free.len() {
            return None;
        }
        let taken = self.free.split_off(self.free.len() - n);
        // split_off keeps the order of the free list; reverse so that the first slot of the chain
        // is the one LIFO order would have handed out first.
        let taken: Vec<u16> = taken.into_iter().rev().collect();
        for &s in &taken {
            self.used[usize::from(s)] = true;
        }
        Some(taken)
    }

    /// Returns slots to the free list. A slot that is not in use (double free) is ignored and
    /// reported through the return value: false when any slot was ignored.
    pub(super) fn release(&mut self, slots: &[u16]) -> bool {
        let mut all_valid = true;
        // Pushed in reverse so that the chain's first slot is handed out first again.
        for &s in slots.iter().rev() {
            match self.used.get_mut(usize::from(s)) {
                Some(used) if *used => {
                    *used = false;
                    self.free.push(s);
                }
                _ => all_valid = false,
            }
        }
        all_valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_lowest_first_and_reuses_last_freed() {
        let mut a = SlotAllocator::new(4);
        assert_eq!(a.capacity(), 4);
        assert_eq!(a.alloc(1), Some(vec![0]));
        assert_eq!(a.alloc(2), Some(vec![1, 2]));
        assert_eq!(a.in_use(), 3);
        assert!(a.release(&[1, 2]));
        assert_eq!(a.alloc(1), Some(vec![1]));
        assert_eq!(a.in_use(), 2);
    }

    #[test]
    fn all_or_nothing_and_double_free_detected() {
        let mut a = SlotAllocator::new(3);
        assert_eq!(a.alloc(4), None);
        assert_eq!(a.alloc(0), None);
        assert_eq!(a.in_use(), 0);
        let s = a.alloc(3).unwrap();
        assert_eq!(a.alloc(1), None);
        assert!(a.release(&s[..1]));
        assert!(!a.release(&s[..1]), "double free must be reported");
        assert!(!a.release(&[7]), "out-of-range slot must be reported");
        assert_eq!(a.in_use(), 2);
    }
}
