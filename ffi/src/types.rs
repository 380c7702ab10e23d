//! The C types of the ABI: enums, the attribute and output structs, the opaque handles.
//!
//! Every struct a caller fills or receives starts with `size` (libfabric's pattern), so it can
//! grow without breaking old callers: the library accepts smaller, older structs (missing fields
//! read as zero = default) and rejects a larger one whose unknown tail is not all zero.

#![allow(non_camel_case_types)]

use regcache_core::registrar::uring::SoftNic;
use regcache_core::{Cache, OwnedHandle};
use regcache_exporter::CacheSet;
use std::ffi::c_void;
use std::os::raw::c_int;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// Values of `regcache_attr.monitor`: how the cache learns that registered memory changed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub enum regcache_monitor {
    /// The `REGCACHE_MONITOR` environment variable (auto, ummunotify, uffd, none) if set, else
    /// the best that works here: ummunotify, then userfaultfd, then none (with one warning on
    /// stderr).
    REGCACHE_MONITOR_AUTO = 0,
    /// The ummunotify kernel module (/dev/ummunotify); creation fails if it cannot be opened.
    REGCACHE_MONITOR_UMMUNOTIFY = 1,
    /// userfaultfd; creation fails if it is unavailable.
    REGCACHE_MONITOR_UFFD = 2,
    /// No monitor: nothing is cached, every regcache_get() registers for that use only.
    REGCACHE_MONITOR_NONE = 3,
}

/// Values of `regcache_attr.registrar`: what registers memory. There is no default: 0 is invalid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub enum regcache_registrar {
    /// The io_uring software NIC (pins pages like an RDMA NIC; DMA with
    /// regcache_softnic_dma_write/read). `regcache_attr.softnic_slots` sizes its table.
    REGCACHE_REGISTRAR_SOFTNIC = 1,
    /// rdma-core verbs on the caller's protection domain `regcache_attr.pd` (a `struct ibv_pd *`).
    /// Only in libraries built with the `verbs` feature; otherwise regcache_create() returns
    /// -EOPNOTSUPP.
    REGCACHE_REGISTRAR_VERBS_PD = 2,
    /// The caller's callbacks `regcache_attr.ops` (for stacks that register memory themselves).
    REGCACHE_REGISTRAR_CUSTOM = 3,
    /// Registers nothing and hands out increasing keys: for benchmarks of the cache alone.
    REGCACHE_REGISTRAR_NOOP = 4,
}

/// Bits of `regcache_attr.flags`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum regcache_attr_flags {
    /// DANGEROUS, TEST ONLY: never check the monitor, so cached registrations are trusted after
    /// their memory was unmapped and remapped. This is the stale-registration bug the library
    /// exists to prevent; it exists only as the negative control of tests.
    REGCACHE_ATTR_DANGER_IGNORE_INVALIDATIONS = 1,
}

/// Bits of `regcache_mr_info.flags`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum regcache_mr_flags {
    /// The registration is cached (kept after regcache_release() for later hits). Without it,
    /// it was registered for this use only and is deregistered by regcache_release().
    REGCACHE_MR_CACHED = 1,
}

/// Bits of `regcache_stats.flags`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum regcache_stats_flags {
    /// The cache is caching: its monitor works and this is not a fork() child.
    REGCACHE_STATS_CACHING = 1,
}

/// How to build a cache (regcache_create). Zero-initialise it, set `size` to
/// `sizeof(struct regcache_attr)` and `registrar`; every other zero field means "default".
/// Fields that do not apply to the chosen registrar must stay zero (-EINVAL otherwise).
/// The library reads the struct during regcache_create() only and keeps no pointer to it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct regcache_attr {
    /// `sizeof(struct regcache_attr)` as the caller compiled it (at least 16).
    pub size: usize,
    /// An `enum regcache_monitor` value.
    pub monitor: u32,
    /// An `enum regcache_registrar` value (required).
    pub registrar: u32,
    /// `enum regcache_attr_flags` bits; unknown bits are -EINVAL.
    pub flags: u64,
    /// Most registrations kept cached; unused ones beyond it are evicted, least recently used
    /// first. 0: 8192.
    pub max_entries: u64,
    /// Most bytes kept registered by cached entries. 0: 3/4 of RLIMIT_MEMLOCK (16 GiB when
    /// unlimited or with CAP_IPC_LOCK).
    pub max_bytes: u64,
    /// Largest registration that merging overlapping requests may create. 0: 1 GiB.
    pub max_merge: u64,
    /// REGCACHE_REGISTRAR_SOFTNIC: fixed-buffer slots of the software NIC, 1..16384 (each
    /// registration takes one per GiB). 0: 16384.
    pub softnic_slots: u32,
    /// Must be zero.
    pub reserved: u32,
    /// REGCACHE_REGISTRAR_VERBS_PD: the `struct ibv_pd *` to register in. Borrowed: it must
    /// stay valid until the cache is gone (regcache_destroy() and the last regcache_release()).
    pub pd: *mut c_void,
    /// REGCACHE_REGISTRAR_CUSTOM: the callbacks. Copied during regcache_create().
    pub ops: *const regcache_registrar_ops,
    /// REGCACHE_REGISTRAR_CUSTOM: passed unchanged to every callback. Borrowed like `pd`.
    pub ops_context: *mut c_void,
    /// Optional: told every range the cache's monitor reports changed (unmapped, remapped,
    /// madvise'd), to keep another cache coherent (UCX: `ucm_vm_munmap(addr, length)`). See
    /// `regcache_invalidate_fn` for when and on which thread it runs. NULL: no callback.
    /// (Appended: callers compiled against an older header, with a smaller `size`, get NULL.)
    pub on_invalidate: regcache_invalidate_fn,
    /// Passed unchanged to `on_invalidate` (must be NULL when `on_invalidate` is). Borrowed
    /// like `pd`: it must stay valid until the cache is gone.
    pub on_invalidate_arg: *mut c_void,
}

/// The invalidation callback of `regcache_attr.on_invalidate`: `[addr, addr + length)` changed
/// (`addr` 0 and `length` SIZE_MAX: everything, after a monitor failure).
///
/// When: every time the cache drains its monitor, once per reported range, before the drain's
/// effects are visible to lookups: inside regcache_get() (a miss, or a hit after the monitor's
/// counter moved) and regcache_sync(), on the calling thread. So once regcache_sync() returns,
/// the callback has seen every change made before the call. Ranges may repeat, may be larger
/// than what changed (whole registrations), and may no longer be cached. Also, on the thread
/// that evicts or flushes, every range the cache stops watching without a report (an evicted
/// entry; every entry on regcache_flush()): a registration handed out earlier inside it (one a
/// merge displaced, still held) is watched by nothing any more, so a cache kept coherent must
/// drop it. Since REVALIDATE (ummunotify(4)), a reported range whose pages did not change is
/// not passed: the registration is still right.
///
/// Rules: it runs under the cache's internal lock, so it must not call any regcache function
/// on the same cache (deadlock), must not block on anything a regcache caller may hold, must
/// not unwind (no C++ exception, no longjmp out), and should be quick. With several caches it
/// may run on several threads at once. Never called in a fork() child of the creator.
pub type regcache_invalidate_fn =
    Option<unsafe extern "C" fn(arg: *mut c_void, addr: *mut c_void, length: usize)>;

/// What a registration callback returns about one registered range (REGCACHE_REGISTRAR_CUSTOM).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct regcache_reg {
    /// Local key, reported by regcache_mr_keys().
    pub lkey: u32,
    /// Remote key, reported by regcache_mr_keys().
    pub rkey: u32,
    /// The registrar's own handle (e.g. a `struct ibv_mr *` or `struct fid_mr *`), given back
    /// to `dereg`.
    pub token: u64,
}

/// Callbacks of a caller-supplied registrar (REGCACHE_REGISTRAR_CUSTOM).
///
/// Both are called from whichever thread calls regcache_get(), regcache_release(),
/// regcache_invalidate(), regcache_flush() or regcache_destroy() (possibly several threads at
/// once), with cache locks held: they must be thread-safe, must not call back into the same
/// cache, and must not unwind (no C++ exceptions, no longjmp out).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct regcache_registrar_ops {
    /// `sizeof(struct regcache_registrar_ops)` as the caller compiled it.
    pub size: usize,
    /// Registers the page-aligned range `[addr, addr + length)` with `access`
    /// (`enum ibv_access_flags` bits) and fills `*out`. Returns 0, or a negative errno:
    /// -ENOMEM, -EAGAIN, -ENOSPC and -EMFILE mean "out of pinnable memory or slots", upon which
    /// the cache evicts unused registrations and calls again once. Required.
    pub reg: Option<
        unsafe extern "C" fn(
            context: *mut c_void,
            addr: *mut c_void,
            length: usize,
            access: u32,
            out: *mut regcache_reg,
        ) -> c_int,
    >,
    /// Undoes one successful `reg` (same addr and length, `*reg` as filled then), exactly once,
    /// when no handle uses it any more. The memory may already be unmapped. Required.
    pub dereg: Option<
        unsafe extern "C" fn(
            context: *mut c_void,
            addr: *mut c_void,
            length: usize,
            reg: *const regcache_reg,
        ),
    >,
    /// Largest range one `reg` call can cover; 0: unlimited.
    pub max_length: usize,
    /// Optional (NULL: nothing). Called on a miss before the cache starts watching the range it
    /// is about to pass to `reg`, and paired with exactly one `settle` of the same range once
    /// that attempt is over (`reg` returned, either way, or the range could not be watched). A
    /// registrar whose `reg` changes the mapping's VMA flags does that here, so the VMA split
    /// happens before the watch: the kernel reports a split as a change of the whole 2 MiB
    /// around it, which would strike the registration being made and leave it uncached. Verbs:
    /// `ibv_dontfork_range(addr, length)` here and `ibv_dofork_range` in `settle` (rdma-core's
    /// fork protection madvises inside `ibv_reg_mr`; its own reference then finds the range
    /// already MADV_DONTFORK). (Appended: callers with an older, smaller `size` get NULL.)
    pub prepare:
        Option<unsafe extern "C" fn(context: *mut c_void, addr: *mut c_void, length: usize)>,
    /// Optional (NULL: nothing): ends what `prepare` started; both or neither must be set.
    pub settle:
        Option<unsafe extern "C" fn(context: *mut c_void, addr: *mut c_void, length: usize)>,
}

/// Facts about one registration (regcache_mr_query). Set `size` to
/// `sizeof(struct regcache_mr_info)` before the call; the library fills the fields that fit in
/// `size` and sets `size` to the number of bytes it filled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct regcache_mr_info {
    /// In: the caller's `sizeof`; out: bytes filled.
    pub size: usize,
    /// Start of the registered range (page-aligned; contains the requested range).
    pub addr: u64,
    /// Length of the registered range.
    pub length: u64,
    pub lkey: u32,
    pub rkey: u32,
    /// The registration's access rights (`enum ibv_access_flags` bits; may exceed the request).
    pub access: u32,
    /// `enum regcache_mr_flags` bits.
    pub flags: u32,
}

/// The cache's counters (regcache_stats). Set `size` to `sizeof(struct regcache_stats)` before
/// the call; the library fills the fields that fit in `size` and sets `size` to the number of
/// bytes it filled (smaller than the caller's when the library is older than the header).
/// Each counter is exact; they are not read at one instant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct regcache_stats {
    /// In: the caller's `sizeof` (at least 16); out: bytes filled.
    pub size: usize,
    /// Lookups served by a cached, valid registration.
    pub hits: u64,
    /// Lookups that had to register (cacheable ranges).
    pub misses: u64,
    /// Requests registered for one use only (no monitor, or the range cannot be watched).
    pub uncacheable: u64,
    /// Misses for a range that was cached before and invalidated (unmap/remap churn).
    pub reregistrations: u64,
    /// Entries removed because their pages changed, or by regcache_invalidate().
    pub invalidated: u64,
    /// Reports that changed no page: reported entries whose pages the monitor confirmed unchanged
    /// (kept cached), and monitor drains that invalidated nothing.
    pub false_positives: u64,
    /// Times the monitor's queue was drained.
    pub drains: u64,
    /// Unused entries removed to respect the limits or to free pinnable memory.
    pub evictions: u64,
    /// Registrar calls that failed.
    pub registration_failures: u64,
    /// Bytes registered now (cached entries and those still in use).
    pub registered_bytes: u64,
    /// Registrations held now (cached entries and those still in use).
    pub registered_entries: u64,
    /// Registrar calls that succeeded.
    pub registrations: u64,
    /// Time spent in successful registrar calls, nanoseconds.
    pub registration_ns: u64,
    /// Deregistrations made.
    pub deregistrations: u64,
    /// Entries in the cache now (available for hits).
    pub cached_entries: u64,
    /// The monitor in use (`enum regcache_monitor`; never REGCACHE_MONITOR_AUTO).
    pub monitor: u32,
    /// `enum regcache_stats_flags` bits.
    pub flags: u32,
}

/// Tells live handles from garbage and from each other (a cache passed as a registration).
pub(crate) const CACHE_MAGIC: u64 = 0x7265_6763_6163_6865; // "regcache"
pub(crate) const MR_MAGIC: u64 = 0x7265_6763_6d72_2020; // "regcmr  "
pub(crate) const METRICS_MAGIC: u64 = 0x7265_676d_6574_7263; // "regmetrc"
pub(crate) const DEAD_MAGIC: u64 = 0xdead_dead_dead_dead;

/// A registration cache (opaque). Made by regcache_create(), ended by regcache_destroy().
pub struct regcache_cache {
    pub(crate) magic: u64,
    pub(crate) cache: Arc<Cache>,
    /// The software NIC when it is the registrar (for DMA through registrations).
    pub(crate) nic: Option<Arc<SoftNic>>,
    /// The process that created the cache; in any other (a fork() child) the paths that could
    /// deregister the parent's registrations are refused or skipped.
    pub(crate) owner_pid: u32,
    /// The metrics exporters this cache was added to (regcache_metrics_add): regcache_destroy()
    /// leaves them, its counters staying in their totals.
    pub(crate) metrics: Mutex<Vec<CacheSet>>,
}

/// A running metrics exporter (opaque). Made by regcache_metrics_start(), ended by
/// regcache_metrics_stop().
pub struct regcache_metrics {
    pub(crate) magic: u64,
    /// The caches served, summed.
    pub(crate) caches: CacheSet,
    /// The exporter thread; dropping it writes the textfile a last time and stops it.
    pub(crate) handle: Option<regcache_exporter::Handle>,
}

/// One registration in use (opaque). Made by regcache_get(), ended by regcache_release().
pub struct regcache_mr {
    pub(crate) magic: u64,
    pub(crate) handle: OwnedHandle,
    /// The software NIC of the cache, if that is its registrar. Not an `Arc` (one atomic
    /// increment less per get): the cache's registrar `Arc` owns the NIC for the cache's whole
    /// life, and `handle` keeps the cache alive.
    pub(crate) nic: Option<NonNull<SoftNic>>,
}

// SAFETY: `nic` points to a SoftNic (Send + Sync) kept alive by the cache that `handle` owns; the
// other fields are Send + Sync.
unsafe impl Send for regcache_mr {}
// SAFETY: as above; shared access only reads.
unsafe impl Sync for regcache_mr {}
