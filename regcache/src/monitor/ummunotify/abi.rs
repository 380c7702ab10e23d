//! The ummunotify user ABI as posted in 2010 (include/linux/ummunotify.h), plus the feature bits
//! of this project's module. Layouts and ioctl numbers are checked by the tests below against the
//! values the 2010 header compiles to on x86_64.

/// `struct ummunotify_register_ioctl` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterIoctl {
    pub start: u64,
    pub end: u64,
    pub user_cookie: u64,
    pub flags: u32,
    pub reserved: u32,
}

/// `struct ummunotify_event` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub kind: u32,
    pub flags: u32,
    pub hint_start: u64,
    pub hint_end: u64,
    /// INVAL: the cookie; LAST: the generation counter.
    pub user_cookie_counter: u64,
}

pub const MAGIC: u8 = b'U';
pub const EVENT_TYPE_INVAL: u32 = 0;
pub const EVENT_TYPE_LAST: u32 = 1;
pub const EVENT_FLAG_HINT: u32 = 1 << 0;

/// Feature bit of this project's module: do not report notifier events that never change the
/// pages behind a range (mprotect, NUMA hinting, soft-dirty clearing). See docs/ummunotify-abi.md.
pub const FEATURE_FILTER: u32 = 1 << 0;

/// Feature bit of this project's module: enables [`ARM_REGION`] and [`CHECK_REGION`] (page
/// revalidation). See docs/ummunotify-abi.md.
pub const FEATURE_REVALIDATE: u32 = 1 << 1;

/// `struct ummunotify_revalidate_ioctl` (24 bytes), argument of ARM_REGION and CHECK_REGION.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RevalidateIoctl {
    /// In: the cookie of a registered range.
    pub user_cookie: u64,
    /// In, ARM with [`ARM_SINCE`]: a generation counter value read before pinning.
    pub counter: u64,
    /// In: ARM: 0 or [`ARM_SINCE`]; CHECK: 0.
    pub flags: u32,
    /// Out: one of the `REVAL_*` values.
    pub result: u32,
}

/// ARM flag: answer CHANGED if the range was hit after the counter had the value `counter`.
pub const ARM_SINCE: u32 = 1 << 0;
pub const REVAL_UNCHANGED: u32 = 0;
pub const REVAL_CHANGED: u32 = 1;
pub const REVAL_NOT_ARMED: u32 = 2;

/// Feature bit of this project's module: records published in a shared ring page ([`Ring`],
/// page 0 of the fd [`OPEN_RING`] returns) instead of queued for read() while the ring has room,
/// and [`SETTLE`]. The protocol is the comment above `UMMUNOTIFY_FEATURE_RING` in
/// kmod/include/uapi/linux/ummunotify.h (client: `ring.rs`).
pub const FEATURE_RING: u32 = 1 << 2;
/// Records in the ring: `Ring::record`'s length; `Ring::slots` says the same.
pub const RING_SLOTS: usize = 128;

/// `struct ummunotify_ring_record` (24 bytes): one hit published in the ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingRecord {
    pub user_cookie: u64,
    /// Start of the invalidated part of the range.
    pub hint_start: u64,
    /// End of the invalidated part of the range (exclusive).
    pub hint_end: u64,
}

/// `struct ummunotify_ring` (3200 bytes), page 0 of the [`OPEN_RING`] fd (RING only). `head`,
/// `running`, `queued` and `slots` are written by the kernel, `tail` by the client; the
/// client accesses all of them through atomics (`ring.rs`), never through these fields directly.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    /// Kernel: records published since open (wraps).
    pub head: u32,
    /// Kernel: invalidations of the address space in progress.
    pub running: u32,
    /// Kernel: not 0 while read() has records or a LAST to return.
    pub queued: u32,
    /// Kernel: [`RING_SLOTS`].
    pub slots: u32,
    pub reserved0: [u8; 48],
    /// Client: records taken (wraps); the kernel publishes while `head - tail < slots`.
    pub tail: u32,
    pub reserved1: [u8; 60],
    /// The records, indexed by `head` modulo [`RING_SLOTS`].
    pub record: [RingRecord; RING_SLOTS],
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            head: 0,
            running: 0,
            queued: 0,
            slots: RING_SLOTS as u32,
            reserved0: [0; 48],
            tail: 0,
            reserved1: [0; 60],
            record: [RingRecord::default(); RING_SLOTS],
        }
    }
}

const IOC_NONE: u64 = 0;
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((MAGIC as u64) << 8) | nr
}

/// `_IOWR('U', 1, __u32)`
pub const EXCHANGE_FEATURES: u64 = ioc(IOC_READ | IOC_WRITE, 1, 4);
/// `_IOW('U', 2, struct ummunotify_register_ioctl)`
pub const REGISTER_REGION: u64 = ioc(IOC_WRITE, 2, std::mem::size_of::<RegisterIoctl>());
/// `_IOW('U', 3, __u64)`, argument: the cookie.
pub const UNREGISTER_REGION: u64 = ioc(IOC_WRITE, 3, 8);
/// `_IOWR('U', 4, struct ummunotify_revalidate_ioctl)`
pub const ARM_REGION: u64 = ioc(
    IOC_READ | IOC_WRITE,
    4,
    std::mem::size_of::<RevalidateIoctl>(),
);
/// `_IOWR('U', 5, struct ummunotify_revalidate_ioctl)`
pub const CHECK_REGION: u64 = ioc(
    IOC_READ | IOC_WRITE,
    5,
    std::mem::size_of::<RevalidateIoctl>(),
);
/// `_IO('U', 6)`: RING only (else ENOTTY). Waits until every invalidation of the address space
/// that was running when it was called has ended.
pub const SETTLE: u64 = ioc(IOC_NONE, 6, 0);
/// `_IO('U', 7)`: RING only (else ENOTTY). Returns a new fd (read-write, close-on-exec) whose
/// page 0 is the ring: the device is opened read-only (2010), and a read-only file cannot be
/// mapped shared and writable.
pub const OPEN_RING: u64 = ioc(IOC_NONE, 7, 0);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn ioctl_numbers_match_the_2010_header() {
        assert_eq!(EXCHANGE_FEATURES, 0xC004_5501);
        assert_eq!(REGISTER_REGION, 0x4020_5502);
        assert_eq!(UNREGISTER_REGION, 0x4008_5503);
    }

    #[test]
    fn struct_layouts_match_the_2010_header() {
        assert_eq!(size_of::<RegisterIoctl>(), 32);
        assert_eq!(offset_of!(RegisterIoctl, start), 0);
        assert_eq!(offset_of!(RegisterIoctl, end), 8);
        assert_eq!(offset_of!(RegisterIoctl, user_cookie), 16);
        assert_eq!(offset_of!(RegisterIoctl, flags), 24);
        assert_eq!(offset_of!(RegisterIoctl, reserved), 28);
        assert_eq!(size_of::<Event>(), 32);
        assert_eq!(offset_of!(Event, kind), 0);
        assert_eq!(offset_of!(Event, flags), 4);
        assert_eq!(offset_of!(Event, hint_start), 8);
        assert_eq!(offset_of!(Event, hint_end), 16);
        assert_eq!(offset_of!(Event, user_cookie_counter), 24);
    }

    #[test]
    fn revalidate_numbers_and_layout_match_the_module_header() {
        assert_eq!(FEATURE_REVALIDATE, 2);
        assert_eq!(ARM_REGION, 0xC018_5504);
        assert_eq!(CHECK_REGION, 0xC018_5505);
        assert_eq!(size_of::<RevalidateIoctl>(), 24);
        assert_eq!(offset_of!(RevalidateIoctl, user_cookie), 0);
        assert_eq!(offset_of!(RevalidateIoctl, counter), 8);
        assert_eq!(offset_of!(RevalidateIoctl, flags), 16);
        assert_eq!(offset_of!(RevalidateIoctl, result), 20);
        assert_eq!(ARM_SINCE, 1);
        assert_eq!((REVAL_UNCHANGED, REVAL_CHANGED, REVAL_NOT_ARMED), (0, 1, 2));
    }

    #[test]
    fn ring_numbers_and_layout_match_the_module_header() {
        assert_eq!(FEATURE_RING, 4);
        assert_eq!(RING_SLOTS, 128);
        assert_eq!(SETTLE, 0x5506);
        assert_eq!(OPEN_RING, 0x5507);
        assert_eq!(size_of::<RingRecord>(), 24);
        assert_eq!(offset_of!(RingRecord, user_cookie), 0);
        assert_eq!(offset_of!(RingRecord, hint_start), 8);
        assert_eq!(offset_of!(RingRecord, hint_end), 16);
        assert_eq!(offset_of!(Ring, head), 0);
        assert_eq!(offset_of!(Ring, running), 4);
        assert_eq!(offset_of!(Ring, queued), 8);
        assert_eq!(offset_of!(Ring, slots), 12);
        assert_eq!(offset_of!(Ring, tail), 64);
        assert_eq!(offset_of!(Ring, record), 128);
        assert_eq!(size_of::<Ring>(), 3200);
        assert_eq!(std::mem::align_of::<Ring>(), 8);
        // head and tail in separate 64-byte cache lines (the header's point).
        assert_ne!(offset_of!(Ring, head) / 64, offset_of!(Ring, tail) / 64);
    }

    #[test]
    fn event_constants() {
        assert_eq!(EVENT_TYPE_INVAL, 0);
        assert_eq!(EVENT_TYPE_LAST, 1);
        assert_eq!(EVENT_FLAG_HINT, 1);
    }
}
