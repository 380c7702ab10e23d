//! The seed scenario, the bug this project exists for:
//! `a = mmap(); use(a); munmap(a); b = mmap() /* == a */; use(b)`.

use crate::mem::{self, PAGE};
use crate::rng::Rng;
use regcache::registrar::uring::SoftNic;
use regcache::{Access, Cache, Result};

/// What happened in one run of the scenario.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// b was mapped at a's address (otherwise the scenario proves nothing).
    pub same_address: bool,
    /// The NIC's write for b did not reach b: a stale registration was used.
    pub corrupted: bool,
    /// The lookup for b was served from the cache.
    pub b_was_a_hit: bool,
}

/// Runs the scenario with buffers of `pages` pages, again (up to 20 times) while another
/// thread of the process takes a's address before b can.
pub fn run(cache: &Cache, nic: &SoftNic, pages: usize) -> Result<Outcome> {
    for _ in 0..20 {
        let out = run_once(cache, nic, pages)?;
        if out.same_address {
            return Ok(out);
        }
    }
    Ok(Outcome::default())
}

fn run_once(cache: &Cache, nic: &SoftNic, pages: usize) -> Result<Outcome> {
    let len = pages * PAGE;
    let a = mem::map(len, None).ok_or(regcache::Error::InvalidArgument("mmap failed"))?;
    use_buffer(cache, nic, a, len, 1)?;
    mem::unmap(a, len);
    let Some(b) = mem::map(len, Some(a)) else {
        return Ok(Outcome::default());
    };
    let hits = cache.stats().hits;
    let ok = use_buffer(cache, nic, b, len, 2)?;
    let out = Outcome {
        same_address: b == a,
        corrupted: !ok,
        b_was_a_hit: cache.stats().hits > hits,
    };
    mem::unmap(b, len);
    Ok(out)
}

/// get + the NIC writes a pattern + the application checks it; true if it arrived.
fn use_buffer(cache: &Cache, nic: &SoftNic, addr: usize, len: usize, seed: u64) -> Result<bool> {
    let h = cache.get(addr, len, Access::LOCAL_WRITE)?;
    let mut pattern = vec![0u8; len];
    Rng::fill(seed, &mut pattern);
    nic.dma_write(&h.registration(), addr, &pattern)?;
    // SAFETY: [addr, addr+len) is a live mapping made by `run`; no Rust reference aliases it.
    Ok(unsafe { mem::bytes(addr, len) } == &pattern[..])
}
