//! The software NIC's registration table: token -> chain of fixed-buffer slots, and the arithmetic
//! that splits a range into per-slot pieces.
//!
//! The kernel caps one fixed buffer at 1 GiB, so a larger registration is a chain of slots, each
//! covering the next `slot_bytes` of the range (the last one the remainder). Splitting is pure
//! arithmetic from the chain's start address, so finding the slot for a DMA address is a division,
//! with no search. Tokens are never reused (a per-NIC id in the high bits, a sequence number in the
//! low bits), so a `Registration` kept after its deregistration cannot reach a slot that was handed
//! to someone else: its token is simply not in the table any more. The table is a `HashMap`: it is
//! only touched on registration, deregistration and DMA, never on the cache's hit path.

use std::collections::HashMap;

/// One registration: the range it covers and the slots that cover it, in address order.
#[derive(Debug)]
pub(super) struct Chain {
    pub(super) addr: usize,
    pub(super) len: usize,
    pub(super) slots: Vec<u16>,
}

/// A part of a range that lies within one slot of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Piece {
    /// Index of the slot within the chain (not the slot number).
    pub(super) index: usize,
    /// First address of the piece.
    pub(super) addr: usize,
    /// Length of the piece, at most `slot_bytes`.
    pub(super) len: usize,
    /// Offset of the piece from the start of the range that was split.
    pub(super) offset: usize,
}

/// Splits `[addr, addr+len)` at the slot boundaries of a chain that starts at `base`, each slot
/// covering `slot_bytes`. The caller guarantees `base <= addr` and that `addr + len` does not
/// overflow.
pub(super) fn pieces(
    base: usize,
    slot_bytes: usize,
    addr: usize,
    len: usize,
) -> impl Iterator<Item = Piece> {
    debug_assert!(base <= addr && slot_bytes > 0);
    let end = addr + len;
    let mut cur = addr;
    std::iter::from_fn(move || {
        if cur >= end {
            return None;
        }
        let index = (cur - base) / slot_bytes;
        // The slot's end, computed from its start so that it cannot overflow past `end`.
        let slot_end_rel = (index + 1).saturating_mul(slot_bytes);
        let piece_end = end.min(base.saturating_add(slot_end_rel));
        let piece = Piece {
            index,
            addr: cur,
            len: piece_end - cur,
            offset: cur - addr,
        };
        cur = piece_end;
        Some(piece)
    })
}

/// Number of slots a registration of `len` bytes needs.
pub(super) fn slots_needed(len: usize, slot_bytes: usize) -> usize {
    len.div_ceil(slot_bytes)
}

/// Live registrations of one software NIC, by token.
pub(super) struct Table {
    /// This NIC's id, placed in the top 16 bits of its tokens.
    nic_id: u64,
    /// Sequence number of the next token (low 48 bits).
    next_seq: u64,
    chains: HashMap<u64, Chain>,
}

const SEQ_BITS: u32 = 48;

impl Table {
    pub(super) fn new(nic_id: u64) -> Self {
        Table {
            nic_id: nic_id & 0xffff,
            next_seq: 1,
            chains: HashMap::new(),
        }
    }

    /// Records a chain and returns its new, never reused token.
    pub(super) fn insert(&mut self, chain: Chain) -> u64 {
        // 2^48 registrations at one per microsecond take nine years: wrapping is not a concern,
        // but mask anyway so that the NIC id bits stay intact.
        let seq = self.next_seq & ((1 << SEQ_BITS) - 1);
        self.next_seq += 1;
        let token = (self.nic_id << SEQ_BITS) | seq;
        self.chains.insert(token, chain);
        token
    }

    pub(super) fn get(&self, token: u64) -> Option<&Chain> {
        self.chains.get(&token)
    }

    pub(super) fn remove(&mut self, token: u64) -> Option<Chain> {
        self.chains.remove(&token)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.chains.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_slot_boundaries() {
        let base = 0x10_000;
        let p: Vec<Piece> = pieces(base, 0x1000, base + 0xff0, 0x1020).collect();
        assert_eq!(
            p,
            vec![
                Piece {
                    index: 0,
                    addr: base + 0xff0,
                    len: 0x10,
                    offset: 0
                },
                Piece {
                    index: 1,
                    addr: base + 0x1000,
                    len: 0x1000,
                    offset: 0x10
                },
                Piece {
                    index: 2,
                    addr: base + 0x2000,
                    len: 0x10,
                    offset: 0x1010
                },
            ]
        );
        // A whole registration: slots of full size, then the remainder.
        let p: Vec<Piece> = pieces(base, 0x1000, base, 0x2800).collect();
        assert_eq!(p.len(), 3);
        assert_eq!(p[2].len, 0x800);
        assert_eq!(slots_needed(0x2800, 0x1000), 3);
        assert_eq!(slots_needed(0x2000, 0x1000), 2);
        assert_eq!(pieces(base, 0x1000, base, 0).count(), 0);
    }

    #[test]
    fn tokens_are_unique_and_carry_nic_id() {
        let mut t = Table::new(7);
        let a = t.insert(Chain {
            addr: 1,
            len: 1,
            slots: vec![0],
        });
        let b = t.insert(Chain {
            addr: 2,
            len: 1,
            slots: vec![1],
        });
        assert_ne!(a, b);
        assert_eq!(a >> SEQ_BITS, 7);
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove(a).map(|c| c.slots), Some(vec![0]));
        assert!(t.get(a).is_none());
        let c = t.insert(Chain {
            addr: 1,
            len: 1,
            slots: vec![0],
        });
        assert_ne!(c, a, "a token must never be reused");
    }
}
