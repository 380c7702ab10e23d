//! The doctor's "rdma-core fork protection" line.
//!
//! With fork protection on, rdma-core madvises MADV_DONTFORK on every registration; where the
//! buffer sits inside a larger mapping that splits the VMA, and the kernel reports the split as
//! a change of every watched range in the 2 MiB block around it. `ibv_is_fork_initialized()`
//! answers UNNEEDED on a kernel that copies DMA pages at fork (5.13+) whether or not
//! `ibv_fork_init()` was called, and some rdma-core releases (Debian 12's 44) still turn the
//! madvise on in `ibv_fork_init()` there; UCX calls it by default. So the line also asks
//! rdma-core directly: fork protection on, one page of a scratch mapping through
//! `ibv_dontfork_range`, and the VMA's flags in /proc/self/smaps ("dc": VM_DONTCOPY).

use super::{line, Line, Status};
use std::ffi::{c_int, c_void};

type NoArg = unsafe extern "C" fn() -> c_int;
type RangeFn = unsafe extern "C" fn(*mut c_void, usize) -> c_int;

const CHECK: &str = "rdma-core fork protection";

/// rdma-core's fork protection, as a verbs program started here would get it. Nothing when
/// libibverbs is not installed.
pub(super) fn fork_safety_check() -> Option<Line> {
    // SAFETY: dlopen of a library by its soname; the result is checked. The handle is never
    // closed (libibverbs keeps providers loaded; unloading it is not supported).
    let lib = unsafe {
        libc::dlopen(
            c"libibverbs.so.1".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL,
        )
    };
    if lib.is_null() {
        return None;
    }
    let Some(is_init) = sym::<NoArg>(lib, c"ibv_is_fork_initialized") else {
        return Some(line(
            Status::Ok,
            CHECK,
            "libibverbs too old to tell (no ibv_is_fork_initialized)",
        ));
    };
    // SAFETY: ibv_is_fork_initialized takes no argument and returns enum ibv_fork_status (an
    // int), as declared in <infiniband/verbs.h> since rdma-core 32.
    let status = unsafe { is_init() };
    Some(match status {
        2 => match fork_init_madvises(lib) {
            Some(true) => line(
                Status::Ok,
                CHECK,
                "UNNEEDED (the kernel copies DMA pages on fork), yet this rdma-core's \
                 ibv_fork_init() still madvises MADV_DONTFORK on every registration (UCX calls \
                 it by default; RDMAV_FORK_SAFE does too): regcache and the shim take that \
                 madvise before watching, so it costs no registration",
            ),
            _ => line(
                Status::Ok,
                CHECK,
                "UNNEEDED: the kernel copies DMA pages on fork, rdma-core applies no \
                 MADV_DONTFORK",
            ),
        },
        1 => line(
            Status::Warn,
            CHECK,
            "ENABLED (RDMAV_FORK_SAFE/IBV_FORK_SAFE): rdma-core applies MADV_DONTFORK to every \
             registration, splitting VMAs next to cached buffers (reported invalidations)",
        )
        .fix(
            "unset RDMAV_FORK_SAFE and IBV_FORK_SAFE where the kernel copies DMA pages on fork \
             (5.13+); with REVALIDATE these reports cost one CHECK each",
        ),
        0 => line(
            Status::Ok,
            CHECK,
            "DISABLED here (programs that call ibv_fork_init() madvise each registration)",
        ),
        n => line(Status::Ok, CHECK, format!("unknown status {n}")),
    })
}

fn sym<T: Copy>(lib: *mut c_void, name: &std::ffi::CStr) -> Option<T> {
    // SAFETY: `lib` is a valid handle; the name is NUL-terminated.
    let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    debug_assert_eq!(size_of::<T>(), size_of::<*mut c_void>());
    // SAFETY: T is the function pointer type of the named libibverbs symbol (callers pass the
    // declaration from <infiniband/verbs.h>), the same size as the data pointer.
    Some(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
}

/// Whether `ibv_fork_init()` makes rdma-core madvise here (see the module comment). Turns fork
/// protection on in this process, which the doctor never forks with registrations afterwards.
fn fork_init_madvises(lib: *mut c_void) -> Option<bool> {
    let fork_init = sym::<NoArg>(lib, c"ibv_fork_init")?;
    let dontfork = sym::<RangeFn>(lib, c"ibv_dontfork_range")?;
    let dofork = sym::<RangeFn>(lib, c"ibv_dofork_range")?;
    // SAFETY: ibv_fork_init takes no argument; it fails rather than misbehaves when too late.
    if unsafe { fork_init() } != 0 {
        return None;
    }
    let pg = regcache::range::page_size();
    // SAFETY: a fresh private anonymous mapping of three pages; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            3 * pg,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let mid = p as usize + pg;
    // SAFETY: the middle page of our own mapping; rdma-core only madvises it.
    unsafe { dontfork(mid as *mut c_void, pg) };
    let flagged = std::fs::read_to_string("/proc/self/smaps")
        .ok()
        .map(|s| vma_has_flag(&s, mid, "dc"));
    // SAFETY: as above; then the mapping is ours to unmap.
    unsafe {
        dofork(mid as *mut c_void, pg);
        libc::munmap(p, 3 * pg);
    }
    flagged
}

/// Whether the VMA starting at `start` in /proc/PID/smaps text has `flag` in its VmFlags.
fn vma_has_flag(smaps: &str, start: usize, flag: &str) -> bool {
    let head = format!("{start:x}-");
    let mut inside = false;
    for l in smaps.lines() {
        if l.starts_with(|c: char| c.is_ascii_hexdigit()) && l.contains('-') {
            inside = l.starts_with(&head);
        } else if inside {
            if let Some(flags) = l.strip_prefix("VmFlags:") {
                return flags.split_whitespace().any(|f| f == flag);
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
Size:                  4 kB
VmFlags: rd wr mr mw me ac sd
7f0000001000-7f0000002000 rw-p 00000000 00:00 0
Size:                  4 kB
VmFlags: rd wr mr mw me dc ac sd
7f0000002000-7f0000003000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me ac sd
";

    #[test]
    fn finds_the_flag_of_the_right_vma_only() {
        assert!(vma_has_flag(SMAPS, 0x7f00_0000_1000, "dc"));
        assert!(!vma_has_flag(SMAPS, 0x7f00_0000_0000, "dc"));
        assert!(!vma_has_flag(SMAPS, 0x7f00_0000_2000, "dc"));
        assert!(!vma_has_flag(SMAPS, 0x7f00_0000_3000, "dc"));
        assert!(!vma_has_flag(SMAPS, 0x7f00_0000_1000, "d"));
    }

    #[test]
    fn never_fails() {
        if let Some(l) = fork_safety_check() {
            assert_ne!(l.status, Status::Fail);
        }
    }
}
