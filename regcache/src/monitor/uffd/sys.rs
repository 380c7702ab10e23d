//! Raw userfaultfd layer: the `#[repr(C)]` structs, constants and ioctl numbers of
//! `<linux/userfaultfd.h>`, and thin wrappers around the system calls the monitor makes.
//!
//! Nothing here allocates or takes a lock, so the reader thread may call any of it. Every wrapper
//! returns the raw errno on failure (`Err(errno)`), leaving the mapping to crate errors to the
//! caller. The layouts and numbers are checked against the system header by a test that compiles
//! a small C program (`tests::matches_kernel_header`).

use std::os::fd::RawFd;

// --- userfaultfd(2) flags -------------------------------------------------------------------

/// `UFFD_USER_MODE_ONLY`: only user-mode faults are handled (needs no privilege; Linux >= 5.11).
pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;

// --- UFFDIO_API ------------------------------------------------------------------------------

pub const UFFD_API: u64 = 0xAA;

pub const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
/// Never requested: a fork child would inherit the watch and its munmaps would block on us.
/// (Defined for the header check.)
#[cfg_attr(not(test), allow(dead_code))]
pub const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
pub const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
pub const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;

/// `1 << _UFFDIO_REGISTER` in `uffdio_api.ioctls`.
pub const UFFD_API_IOCTL_REGISTER: u64 = 1 << 0x00;

// --- events (uffd_msg.event) -----------------------------------------------------------------

pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
pub const UFFD_EVENT_FORK: u8 = 0x13;
pub const UFFD_EVENT_REMAP: u8 = 0x14;
pub const UFFD_EVENT_REMOVE: u8 = 0x15;
pub const UFFD_EVENT_UNMAP: u8 = 0x16;

pub const UFFD_PAGEFAULT_FLAG_WP: u64 = 1 << 1;

// --- registration / write-protect modes ------------------------------------------------------

#[cfg_attr(not(test), allow(dead_code))]
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

// --- ioctl numbers ---------------------------------------------------------------------------

#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
mod ioc {
    pub const NONE: u32 = 1;
    pub const READ: u32 = 2;
    pub const WRITE: u32 = 4;
    pub const DIRSHIFT: u32 = 29;
}
#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
mod ioc {
    pub const NONE: u32 = 0;
    pub const READ: u32 = 2;
    pub const WRITE: u32 = 1;
    pub const DIRSHIFT: u32 = 30;
}

/// The kernel's `_IOC(dir, type, nr, size)`.
const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << ioc::DIRSHIFT) | ((size as u32) << 16) | (ty << 8) | nr
}

const UFFDIO: u32 = 0xAA;
pub const USERFAULTFD_IOC_NEW: u32 = ioc(ioc::NONE, UFFDIO, 0x00, 0);
pub const UFFDIO_API: u32 = ioc(ioc::READ | ioc::WRITE, UFFDIO, 0x3F, size_of::<UffdioApi>());
pub const UFFDIO_REGISTER: u32 = ioc(
    ioc::READ | ioc::WRITE,
    UFFDIO,
    0x00,
    size_of::<UffdioRegister>(),
);
/// Not used: see `UffdMonitor::unwatch`. Defined for the header check.
#[cfg_attr(not(test), allow(dead_code))]
pub const UFFDIO_UNREGISTER: u32 = ioc(ioc::READ, UFFDIO, 0x01, size_of::<UffdioRange>());
pub const UFFDIO_WAKE: u32 = ioc(ioc::READ, UFFDIO, 0x02, size_of::<UffdioRange>());
pub const UFFDIO_WRITEPROTECT: u32 = ioc(
    ioc::READ | ioc::WRITE,
    UFFDIO,
    0x06,
    size_of::<UffdioWriteprotect>(),
);

// --- structs ---------------------------------------------------------------------------------

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioApi {
    pub api: u64,
    pub features: u64,
    pub ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioRange {
    pub start: u64,
    pub len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioRegister {
    pub range: UffdioRange,
    pub mode: u64,
    pub ioctls: u64,
}

/// `struct uffdio_writeprotect`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdioWriteprotect {
    pub range: UffdioRange,
    pub mode: u64,
}

/// `struct uffd_msg` (32 bytes, `__attribute__((packed))` in C). Every field of the C struct sits
/// at its natural alignment, so a plain `repr(C)` struct has the same size and offsets; the union
/// `arg` is kept as three words and read through the accessors below.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UffdMsg {
    pub event: u8,
    pub reserved1: u8,
    pub reserved2: u16,
    pub reserved3: u32,
    pub arg: [u64; 3],
}

impl UffdMsg {
    pub const fn zeroed() -> Self {
        UffdMsg {
            event: 0,
            reserved1: 0,
            reserved2: 0,
            reserved3: 0,
            arg: [0; 3],
        }
    }
    /// `arg.remove.{start,end}` (also the layout of UNMAP).
    pub fn remove_range(&self) -> (u64, u64) {
        (self.arg[0], self.arg[1])
    }
    /// `arg.remap.{from,to,len}`.
    pub fn remap(&self) -> (u64, u64, u64) {
        (self.arg[0], self.arg[1], self.arg[2])
    }
    /// `arg.pagefault.{flags,address}`.
    pub fn pagefault(&self) -> (u64, u64) {
        (self.arg[0], self.arg[1])
    }
    /// `arg.fork.ufd`: the first four bytes of the union, in native byte order.
    pub fn fork_ufd(&self) -> u32 {
        let bytes = self.arg[0].to_ne_bytes();
        u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

// --- system calls ----------------------------------------------------------------------------

fn errno() -> i32 {
    // `last_os_error` reads errno through a thread-local pointer; it never allocates.
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn ioctl<T>(fd: RawFd, req: u32, arg: *mut T) -> Result<libc::c_int, i32> {
    // SAFETY: every caller passes a request number whose argument type is `T` (checked against
    // the header by the layout test), and `arg` points to a live, writable `T` (or is the ignored
    // integer argument of USERFAULTFD_IOC_NEW, passed through `arg_int`).
    let r = unsafe { libc::ioctl(fd, req as libc::Ioctl, arg) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// `userfaultfd(flags)`.
fn syscall_userfaultfd(flags: libc::c_int) -> Result<RawFd, i32> {
    // SAFETY: userfaultfd takes one integer argument and returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_userfaultfd, flags as libc::c_long) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as RawFd)
    }
}

/// `/dev/userfaultfd` + `USERFAULTFD_IOC_NEW(flags)` (Linux >= 6.1), for when the system call is
/// refused (vm.unprivileged_userfaultfd=0 without CAP_SYS_PTRACE) but the device is accessible.
fn devnode_userfaultfd(flags: libc::c_int) -> Result<RawFd, i32> {
    let path = c"/dev/userfaultfd";
    // SAFETY: `path` is a NUL-terminated string; open has no other preconditions.
    let dev = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if dev < 0 {
        return Err(errno());
    }
    // SAFETY: USERFAULTFD_IOC_NEW takes its flags as the integer argument itself.
    let r = unsafe {
        libc::ioctl(
            dev,
            USERFAULTFD_IOC_NEW as libc::Ioctl,
            flags as libc::c_long,
        )
    };
    let e = errno();
    // SAFETY: `dev` is the fd opened above, closed exactly once.
    unsafe { libc::close(dev) };
    if r < 0 {
        Err(e)
    } else {
        Ok(r)
    }
}

/// Opens a non-blocking, close-on-exec userfaultfd, trying in order: the system call with
/// `UFFD_USER_MODE_ONLY`; without it if the kernel rejects the flag (EINVAL, Linux < 5.11);
/// `/dev/userfaultfd` if the system call is not permitted (EPERM). Returns the first errno of the
/// system call if every way fails.
pub fn open_userfaultfd() -> Result<RawFd, i32> {
    let base = libc::O_CLOEXEC | libc::O_NONBLOCK;
    let first = match syscall_userfaultfd(base | UFFD_USER_MODE_ONLY) {
        Ok(fd) => return Ok(fd),
        Err(libc::EINVAL) => match syscall_userfaultfd(base) {
            Ok(fd) => return Ok(fd),
            Err(e) => e,
        },
        Err(e) => e,
    };
    if first == libc::EPERM || first == libc::EACCES {
        if let Ok(fd) = devnode_userfaultfd(base | UFFD_USER_MODE_ONLY) {
            return Ok(fd);
        }
        if let Ok(fd) = devnode_userfaultfd(base) {
            return Ok(fd);
        }
    }
    Err(first)
}

/// UFFDIO_API handshake requesting `features`; returns what the kernel answered.
pub fn api(fd: RawFd, features: u64) -> Result<UffdioApi, i32> {
    let mut a = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    ioctl(fd, UFFDIO_API, &mut a)?;
    Ok(a)
}

/// UFFDIO_REGISTER of `[start, start+len)` (page-aligned) in `mode`.
pub fn register(fd: RawFd, start: u64, len: u64, mode: u64) -> Result<(), i32> {
    let mut r = UffdioRegister {
        range: UffdioRange { start, len },
        mode,
        ioctls: 0,
    };
    ioctl(fd, UFFDIO_REGISTER, &mut r).map(drop)
}

/// UFFDIO_WAKE of `[start, start+len)`.
pub fn wake(fd: RawFd, start: u64, len: u64) -> Result<(), i32> {
    let mut r = UffdioRange { start, len };
    ioctl(fd, UFFDIO_WAKE, &mut r).map(drop)
}

/// UFFDIO_WRITEPROTECT of `[start, start+len)`: `protect` sets the write protection, otherwise
/// it is removed and threads faulting on the range are woken.
pub fn writeprotect(fd: RawFd, start: u64, len: u64, protect: bool) -> Result<(), i32> {
    let mode = if protect {
        UFFDIO_WRITEPROTECT_MODE_WP
    } else {
        0
    };
    let mut r = UffdioWriteprotect {
        range: UffdioRange { start, len },
        mode,
    };
    ioctl(fd, UFFDIO_WRITEPROTECT, &mut r).map(drop)
}

/// Whether an address-space change that produces an event is under way and its event not yet
/// read. The kernel raises `ctx->mmap_changing` when it prepares an UNMAP/REMAP/REMOVE event
/// (under the mmap lock, before the change becomes visible) and lowers it only after our reader
/// has read the event; UFFDIO_WRITEPROTECT checks it before looking at its argument. An empty
/// range therefore answers EAGAIN (event in flight) or EINVAL (none) and changes nothing.
pub fn event_in_flight(fd: RawFd) -> Result<bool, i32> {
    let mut r = UffdioWriteprotect {
        range: UffdioRange { start: 0, len: 0 },
        mode: 0,
    };
    match ioctl(fd, UFFDIO_WRITEPROTECT, &mut r) {
        Err(libc::EAGAIN) => Ok(true),
        Err(libc::EINVAL) => Ok(false),
        Err(e) => Err(e),
        Ok(_) => Ok(false),
    }
}

/// Non-blocking read of as many messages as fit in `buf`; `Ok(n)` messages were read.
pub fn read_msgs(fd: RawFd, buf: &mut [UffdMsg]) -> Result<usize, i32> {
    // SAFETY: `buf` is a valid, writable slice of plain-data structs; the kernel writes whole
    // 32-byte messages into it and at most `size_of_val(buf)` bytes.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), size_of_val(buf)) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize / size_of::<UffdMsg>())
    }
}

/// Polls `fds` for POLLIN for at most `timeout_ms`; returns the `revents` of each.
pub fn poll_in<const N: usize>(fds: [RawFd; N], timeout_ms: i32) -> Result<[i16; N], i32> {
    let mut p = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: `p` is a live array of N pollfd structs.
    let r = unsafe { libc::poll(p.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(p.map(|pfd| pfd.revents))
    }
}

/// A non-blocking, close-on-exec eventfd (used to wake the reader at shutdown).
pub fn eventfd() -> Result<RawFd, i32> {
    // SAFETY: eventfd has no pointer arguments.
    let r = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// Adds 1 to an eventfd counter (wakes a poller).
pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64, as eventfd requires. A failure (EAGAIN on a
    // saturated counter) still leaves the fd readable, which is all we want.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// close(2), ignoring errors (nothing useful can be done about them).
pub fn close(fd: RawFd) {
    // SAFETY: callers own `fd` and close it exactly once.
    unsafe { libc::close(fd) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::mem::offset_of;
    use std::process::Command;

    const C_PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#define P(x) printf("%s %llu\n", #x, (unsigned long long)(x))
int main(void) {
    P(UFFD_API); P(UFFD_USER_MODE_ONLY);
    P(UFFD_FEATURE_PAGEFAULT_FLAG_WP); P(UFFD_FEATURE_EVENT_FORK); P(UFFD_FEATURE_EVENT_REMAP);
    P(UFFD_FEATURE_EVENT_REMOVE); P(UFFD_FEATURE_EVENT_UNMAP);
    P(UFFD_EVENT_PAGEFAULT); P(UFFD_EVENT_FORK); P(UFFD_EVENT_REMAP); P(UFFD_EVENT_REMOVE);
    P(UFFD_EVENT_UNMAP); P(UFFD_PAGEFAULT_FLAG_WP);
    P(UFFDIO_REGISTER_MODE_MISSING); P(UFFDIO_REGISTER_MODE_WP); P(UFFDIO_WRITEPROTECT_MODE_WP);
    P(UFFDIO_API); P(UFFDIO_REGISTER); P(UFFDIO_UNREGISTER); P(UFFDIO_WAKE);
    P(UFFDIO_WRITEPROTECT); P(USERFAULTFD_IOC_NEW);
    P(1ULL << _UFFDIO_REGISTER);
    P(sizeof(struct uffd_msg)); P(offsetof(struct uffd_msg, event));
    P(offsetof(struct uffd_msg, arg));
    P(offsetof(struct uffd_msg, arg.pagefault.flags));
    P(offsetof(struct uffd_msg, arg.pagefault.address));
    P(offsetof(struct uffd_msg, arg.fork.ufd));
    P(offsetof(struct uffd_msg, arg.remap.from)); P(offsetof(struct uffd_msg, arg.remap.to));
    P(offsetof(struct uffd_msg, arg.remap.len));
    P(offsetof(struct uffd_msg, arg.remove.start)); P(offsetof(struct uffd_msg, arg.remove.end));
    P(sizeof(struct uffdio_api)); P(offsetof(struct uffdio_api, features));
    P(offsetof(struct uffdio_api, ioctls));
    P(sizeof(struct uffdio_range)); P(offsetof(struct uffdio_range, len));
    P(sizeof(struct uffdio_register)); P(offsetof(struct uffdio_register, mode));
    P(offsetof(struct uffdio_register, ioctls));
    P(sizeof(struct uffdio_writeprotect)); P(offsetof(struct uffdio_writeprotect, mode));
    return 0;
}
"#;

    /// Compiles and runs the C program; `None` (test skipped) if no C compiler or header.
    fn header_values() -> Option<HashMap<String, u64>> {
        let dir = std::env::temp_dir().join(format!("regcache-uffd-h-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let src = dir.join("uffd.c");
        let exe = dir.join("uffd");
        std::fs::write(&src, C_PROGRAM).ok()?;
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let built = Command::new(&cc).arg(&src).arg("-o").arg(&exe).output();
        let built = match built {
            Ok(o) => o,
            Err(e) => {
                eprintln!("SKIPPED: no C compiler `{cc}` ({e}): header check not run");
                return None;
            }
        };
        if !built.status.success() {
            let err = String::from_utf8_lossy(&built.stderr);
            if err.contains("userfaultfd.h") {
                eprintln!("SKIPPED: <linux/userfaultfd.h> missing (install linux-libc-dev)");
                return None;
            }
            panic!("C program failed to compile:\n{err}");
        }
        let out = Command::new(&exe).output().expect("run the C program");
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8(out.stdout).unwrap();
        Some(
            text.lines()
                .map(|l| {
                    let (k, v) = l.rsplit_once(' ').unwrap();
                    (k.to_string(), v.parse().unwrap())
                })
                .collect(),
        )
    }

    #[test]
    fn matches_kernel_header() {
        let Some(h) = header_values() else { return };
        let ours: &[(&str, u64)] = &[
            ("UFFD_API", UFFD_API),
            ("UFFD_USER_MODE_ONLY", UFFD_USER_MODE_ONLY as u64),
            (
                "UFFD_FEATURE_PAGEFAULT_FLAG_WP",
                UFFD_FEATURE_PAGEFAULT_FLAG_WP,
            ),
            ("UFFD_FEATURE_EVENT_FORK", UFFD_FEATURE_EVENT_FORK),
            ("UFFD_FEATURE_EVENT_REMAP", UFFD_FEATURE_EVENT_REMAP),
            ("UFFD_FEATURE_EVENT_REMOVE", UFFD_FEATURE_EVENT_REMOVE),
            ("UFFD_FEATURE_EVENT_UNMAP", UFFD_FEATURE_EVENT_UNMAP),
            ("UFFD_EVENT_PAGEFAULT", UFFD_EVENT_PAGEFAULT as u64),
            ("UFFD_EVENT_FORK", UFFD_EVENT_FORK as u64),
            ("UFFD_EVENT_REMAP", UFFD_EVENT_REMAP as u64),
            ("UFFD_EVENT_REMOVE", UFFD_EVENT_REMOVE as u64),
            ("UFFD_EVENT_UNMAP", UFFD_EVENT_UNMAP as u64),
            ("UFFD_PAGEFAULT_FLAG_WP", UFFD_PAGEFAULT_FLAG_WP),
            ("UFFDIO_REGISTER_MODE_MISSING", UFFDIO_REGISTER_MODE_MISSING),
            ("UFFDIO_REGISTER_MODE_WP", UFFDIO_REGISTER_MODE_WP),
            ("UFFDIO_WRITEPROTECT_MODE_WP", UFFDIO_WRITEPROTECT_MODE_WP),
            ("UFFDIO_API", UFFDIO_API as u64),
            ("UFFDIO_REGISTER", UFFDIO_REGISTER as u64),
            ("UFFDIO_UNREGISTER", UFFDIO_UNREGISTER as u64),
            ("UFFDIO_WAKE", UFFDIO_WAKE as u64),
            ("UFFDIO_WRITEPROTECT", UFFDIO_WRITEPROTECT as u64),
            ("USERFAULTFD_IOC_NEW", USERFAULTFD_IOC_NEW as u64),
            ("1ULL << _UFFDIO_REGISTER", UFFD_API_IOCTL_REGISTER),
            ("sizeof(struct uffd_msg)", size_of::<UffdMsg>() as u64),
            (
                "offsetof(struct uffd_msg, event)",
                offset_of!(UffdMsg, event) as u64,
            ),
            (
                "offsetof(struct uffd_msg, arg)",
                offset_of!(UffdMsg, arg) as u64,
            ),
            ("offsetof(struct uffd_msg, arg.pagefault.flags)", 8),
            ("offsetof(struct uffd_msg, arg.pagefault.address)", 16),
            ("offsetof(struct uffd_msg, arg.fork.ufd)", 8),
            ("offsetof(struct uffd_msg, arg.remap.from)", 8),
            ("offsetof(struct uffd_msg, arg.remap.to)", 16),
            ("offsetof(struct uffd_msg, arg.remap.len)", 24),
            ("offsetof(struct uffd_msg, arg.remove.start)", 8),
            ("offsetof(struct uffd_msg, arg.remove.end)", 16),
            ("sizeof(struct uffdio_api)", size_of::<UffdioApi>() as u64),
            (
                "offsetof(struct uffdio_api, features)",
                offset_of!(UffdioApi, features) as u64,
            ),
            (
                "offsetof(struct uffdio_api, ioctls)",
                offset_of!(UffdioApi, ioctls) as u64,
            ),
            (
                "sizeof(struct uffdio_range)",
                size_of::<UffdioRange>() as u64,
            ),
            (
                "offsetof(struct uffdio_range, len)",
                offset_of!(UffdioRange, len) as u64,
            ),
            (
                "sizeof(struct uffdio_register)",
                size_of::<UffdioRegister>() as u64,
            ),
            (
                "offsetof(struct uffdio_register, mode)",
                offset_of!(UffdioRegister, mode) as u64,
            ),
            (
                "offsetof(struct uffdio_register, ioctls)",
                offset_of!(UffdioRegister, ioctls) as u64,
            ),
            (
                "sizeof(struct uffdio_writeprotect)",
                size_of::<UffdioWriteprotect>() as u64,
            ),
            (
                "offsetof(struct uffdio_writeprotect, mode)",
                offset_of!(UffdioWriteprotect, mode) as u64,
            ),
        ];
        let mut bad = Vec::new();
        for (name, value) in ours {
            match h.get(*name) {
                Some(v) if v == value => {}
                other => bad.push(format!("{name}: ours {value:#x}, header {other:x?}")),
            }
        }
        assert!(
            bad.is_empty(),
            "mismatches with <linux/userfaultfd.h>:\n{}",
            bad.join("\n")
        );
        assert_eq!(h.len(), ours.len(), "every header value is compared");
        // The union accessors read the words the header puts at those offsets.
        let mut m = UffdMsg::zeroed();
        m.arg = [1, 2, 3];
        assert_eq!(m.remap(), (1, 2, 3));
        assert_eq!(m.remove_range(), (1, 2));
        assert_eq!(m.pagefault(), (1, 2));
        m.arg[0] = u64::from_ne_bytes([7, 0, 0, 0, 9, 9, 9, 9]);
        assert_eq!(m.fork_ufd(), u32::from_ne_bytes([7, 0, 0, 0]));
    }
}
