//! A unique pattern per transfer that is cheap to write and check (the guest runs under
//! emulation, where a per-word PRNG costs more than the RDMA transfer itself).

const K: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline]
fn word(seed: u64, i: u64) -> u64 {
    let x = seed.wrapping_add(i.wrapping_mul(K));
    x ^ (x >> 29)
}

/// Writes the pattern of `seed` over `[addr, addr+len)`.
///
/// # Safety
/// The range must be mapped, writable and not referenced by Rust code.
pub unsafe fn fill(addr: usize, len: usize, seed: u64) {
    let words = len / 8;
    let p = addr as *mut u64;
    for i in 0..words {
        // SAFETY: inside the range (guaranteed by the caller); unaligned store allowed.
        unsafe { p.add(i).write_unaligned(word(seed, i as u64).to_le()) };
    }
    let tail = word(seed, words as u64).to_le_bytes();
    for (j, &b) in tail.iter().enumerate().take(len % 8) {
        // SAFETY: inside the range.
        unsafe { ((addr + words * 8 + j) as *mut u8).write(b) };
    }
}

/// `Ok` when `[addr, addr+len)` holds the pattern of `seed`, else the first differing byte.
///
/// # Safety
/// The range must be mapped and readable, and not written concurrently.
pub unsafe fn check(addr: usize, len: usize, seed: u64) -> Result<(), usize> {
    let words = len / 8;
    let p = addr as *const u64;
    for i in 0..words {
        // SAFETY: inside the range; unaligned load allowed.
        let got = unsafe { p.add(i).read_unaligned() };
        if got != word(seed, i as u64).to_le() {
            let want = word(seed, i as u64).to_le_bytes();
            let g = got.to_le_bytes();
            let j = (0..8).find(|&j| g[j] != want[j]).unwrap_or(0);
            return Err(i * 8 + j);
        }
    }
    let tail = word(seed, words as u64).to_le_bytes();
    for (j, &b) in tail.iter().enumerate().take(len % 8) {
        // SAFETY: inside the range.
        if unsafe { ((addr + words * 8 + j) as *const u8).read() } != b {
            return Err(words * 8 + j);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn roundtrip_and_detects() {
        let mut v = vec![0u8; 4099];
        let a = v.as_mut_ptr() as usize + 1;
        // SAFETY: inside `v`, which nothing else references meanwhile.
        unsafe {
            super::fill(a, 4097, 42);
            assert_eq!(super::check(a, 4097, 42), Ok(()));
            assert!(super::check(a, 4097, 43).is_err());
            *((a + 4096) as *mut u8) ^= 1;
            assert_eq!(super::check(a, 4097, 42), Err(4096));
        }
    }
}
