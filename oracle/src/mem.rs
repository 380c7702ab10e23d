//! The memory operations of the torture workload, over raw libc calls.
//!
//! Each helper returns `None` when the kernel refuses (an address hint taken, a grow that cannot
//! move): the workload then just picks another operation. Nothing here panics on a failed call.

use std::ptr;

pub const PAGE: usize = 4096;

/// How a buffer was obtained, which decides how it may be changed and freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Anonymous private mapping of our own.
    Mmap,
    /// glibc malloc below the mmap threshold (heap memory; free() does not unmap it).
    MallocSmall,
    /// glibc malloc above the mmap threshold (free() munmaps it inside glibc, through no PLT).
    MallocLarge,
    /// Memory from sbrk (the program break); freed by shrinking the break.
    Brk,
}

#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: usize,
    pub len: usize,
    pub kind: Kind,
}

/// Anonymous mapping of `len` bytes; with `at`, only exactly there (MAP_FIXED_NOREPLACE).
pub fn map(len: usize, at: Option<usize>) -> Option<usize> {
    let (hint, flags) = match at {
        Some(a) => (a as *mut libc::c_void, libc::MAP_FIXED_NOREPLACE),
        None => (ptr::null_mut(), 0),
    };
    // SAFETY: anonymous mapping; with MAP_FIXED_NOREPLACE the kernel never replaces an existing
    // mapping, so no memory that Rust or glibc owns can be affected.
    let p = unsafe {
        libc::mmap(
            hint,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED || (at.is_some() && p as usize != at.unwrap_or(0)) {
        return None;
    }
    Some(p as usize)
}

/// Replaces `[addr, addr+len)` — which must be one of our own mappings — with a fresh one.
pub fn map_over(addr: usize, len: usize) -> bool {
    // SAFETY: the caller owns every page of the range (a live Mmap buffer of the workload), so
    // MAP_FIXED replaces only memory that no one else references.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    p as usize == addr
}

pub fn unmap(addr: usize, len: usize) {
    // SAFETY: the caller owns the pages (a live Mmap buffer or part of one).
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

pub fn dontneed(addr: usize, len: usize) {
    // SAFETY: the caller owns the pages; DONTNEED only drops their contents.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
}

/// mremap; `to` moves the mapping exactly there (MREMAP_FIXED), else it may move anywhere.
pub fn remap(addr: usize, old: usize, new: usize, to: Option<usize>) -> Option<usize> {
    // SAFETY: the caller owns the old mapping; a fixed target is one of its own freed addresses
    // that map() just confirmed is free (checked by the caller), so nothing else is replaced.
    let p = unsafe {
        match to {
            Some(t) => libc::mremap(
                addr as *mut libc::c_void,
                old,
                new,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                t as *mut libc::c_void,
            ),
            None => libc::mremap(addr as *mut libc::c_void, old, new, libc::MREMAP_MAYMOVE),
        }
    };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

pub fn malloc(len: usize) -> Option<usize> {
    // SAFETY: plain allocation; the result is checked for null.
    let p = unsafe { libc::malloc(len) };
    (!p.is_null()).then_some(p as usize)
}

pub fn free(addr: usize) {
    // SAFETY: `addr` came from malloc() and is freed once (the workload drops the buffer).
    unsafe { libc::free(addr as *mut libc::c_void) };
}

/// Makes glibc's large allocations always mmap-backed, so free() always unmaps them (the
/// dynamic threshold would otherwise move them into the heap after the first free).
pub fn fix_mmap_threshold(bytes: usize) {
    // SAFETY: mallopt only changes malloc's tuning.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes as libc::c_int) };
}

/// The current program break.
pub fn brk_now() -> usize {
    // SAFETY: sbrk(0) only reads the break.
    unsafe { libc::sbrk(0) as usize }
}

/// Grows the break by `len` (page multiple); returns the old break.
pub fn brk_grow(len: usize) -> Option<usize> {
    // SAFETY: growing the break hands us fresh memory no one else uses.
    let p = unsafe { libc::sbrk(len as libc::intptr_t) };
    (p as isize != -1).then_some(p as usize)
}

/// Shrinks the break by `len` if `end` is still the break (nobody grew it since).
pub fn brk_shrink(end: usize, len: usize) -> bool {
    if brk_now() != end {
        return false;
    }
    // SAFETY: the top `len` bytes below the break are ours (checked just above).
    unsafe { libc::sbrk(-(len as libc::intptr_t)) as isize != -1 }
}

/// The bytes of `[addr, addr+len)` in our own address space.
///
/// # Safety
/// The range must be mapped and readable, and not written by Rust code while the slice lives.
pub unsafe fn bytes<'a>(addr: usize, len: usize) -> &'a [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(addr as *const u8, len) }
}

/// Copies `src` into `[addr, addr+len)` through the CPU (the application writing its buffer).
///
/// # Safety
/// The range must be mapped, writable, and not referenced by Rust code.
pub unsafe fn write(addr: usize, src: &[u8]) {
    // SAFETY: guaranteed by the caller.
    unsafe { ptr::copy_nonoverlapping(src.as_ptr(), addr as *mut u8, src.len()) };
}

/// Whether `[addr, addr+len)` lies inside one VMA (from /proc/self/maps). mremap of a range
/// spanning several VMAs fails, and since Linux 6.17 a failed multi-VMA move can leave part of
/// it moved, which a workload sharing its address space with other threads cannot clean up.
pub fn single_vma(addr: usize, len: usize) -> bool {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    maps.lines().any(|l| {
        let mut it = l.split(['-', ' ']);
        let lo = it.next().and_then(|v| usize::from_str_radix(v, 16).ok());
        let hi = it.next().and_then(|v| usize::from_str_radix(v, 16).ok());
        matches!((lo, hi), (Some(lo), Some(hi)) if lo <= addr && addr + len <= hi)
    })
}

/// Whether every page of `[addr, addr+len)` is mapped (msync(MS_ASYNC) fails with ENOMEM on a
/// hole and does nothing else on Linux).
pub fn is_mapped(addr: usize, len: usize) -> bool {
    let start = addr & !(PAGE - 1);
    // SAFETY: msync with MS_ASYNC only inspects the mappings of the range.
    unsafe {
        libc::msync(
            start as *mut libc::c_void,
            len + (addr - start),
            libc::MS_ASYNC,
        ) == 0
    }
}

/// Neighbour noise: calls that split and re-merge the VMA around one page of our own mapping
/// and change none of its pages (each is undone at once). The kernel reports a clear over the
/// whole 2 MiB block around a split, so cached ranges nearby are reported though unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Noise {
    /// mprotect(PROT_READ), then back to PROT_READ|PROT_WRITE.
    Mprotect,
    /// mlock, then munlock.
    Mlock,
    /// madvise(MADV_DONTFORK), then MADV_DOFORK.
    DontFork,
}

/// Applies `what` to the page at `page` and undoes it; false if the kernel refused the first
/// call (mlock beyond RLIMIT_MEMLOCK, say).
pub fn noise(page: usize, what: Noise) -> bool {
    let p = page as *mut libc::c_void;
    // SAFETY: `page` is a page of one of the caller's own private anonymous mappings; each call
    // changes only protection, locking or fork flags, and is undone before returning (no
    // other thread accesses the caller's buffers).
    unsafe {
        match what {
            Noise::Mprotect => {
                libc::mprotect(p, PAGE, libc::PROT_READ) == 0
                    && libc::mprotect(p, PAGE, libc::PROT_READ | libc::PROT_WRITE) == 0
            }
            Noise::Mlock => libc::mlock(p, PAGE) == 0 && libc::munlock(p, PAGE) == 0,
            Noise::DontFork => {
                libc::madvise(p, PAGE, libc::MADV_DONTFORK) == 0
                    && libc::madvise(p, PAGE, libc::MADV_DOFORK) == 0
            }
        }
    }
}
