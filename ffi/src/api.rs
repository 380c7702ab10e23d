//! The entry points for caches and registrations.

use crate::guard::{cache_ref, check_out, guard, mr_ref, read_sized, write_sized, Fail};
use crate::types::*;
use regcache_core::monitor::select::{self, Choice};
use regcache_core::registrar::noop::NoopRegistrar;
use regcache_core::registrar::uring::{SoftNic, MAX_SLOTS};
use regcache_core::{Access, Cache, Config, InvalidateHook, MonitorKind, Range, Registrar};
use std::ffi::c_void;
use std::os::raw::{c_char, c_int};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

/// Smallest `regcache_attr.size` accepted: `size`, `monitor` and `registrar`.
pub(crate) const ATTR_MIN_SIZE: usize = 16;
/// Smallest `size` of the output structs: `size` and one 64-bit field.
pub(crate) const OUT_MIN_SIZE: usize = 16;

const KNOWN_ATTR_FLAGS: u64 = regcache_attr_flags::REGCACHE_ATTR_DANGER_IGNORE_INVALIDATIONS as u64;

fn monitor_choice(m: u32) -> Result<Choice, Fail> {
    use regcache_monitor::*;
    Ok(match m {
        x if x == REGCACHE_MONITOR_AUTO as u32 => Choice::from_env()?,
        x if x == REGCACHE_MONITOR_UMMUNOTIFY as u32 => Choice::Only(MonitorKind::Ummunotify),
        x if x == REGCACHE_MONITOR_UFFD as u32 => Choice::Only(MonitorKind::Uffd),
        x if x == REGCACHE_MONITOR_NONE as u32 => Choice::Only(MonitorKind::None),
        _ => {
            return Err(Fail::inval(
                "attr->monitor is not an enum regcache_monitor value",
            ))
        }
    })
}

fn monitor_value(k: MonitorKind) -> u32 {
    (match k {
        MonitorKind::Ummunotify => regcache_monitor::REGCACHE_MONITOR_UMMUNOTIFY,
        MonitorKind::Uffd => regcache_monitor::REGCACHE_MONITOR_UFFD,
        MonitorKind::None => regcache_monitor::REGCACHE_MONITOR_NONE,
    }) as u32
}

/// Checks that the fields of other registrars are zero, so a mistaken registrar is reported.
fn unused_fields_zero(a: &regcache_attr) -> Result<(), Fail> {
    use regcache_registrar::*;
    let r = a.registrar;
    if a.reserved != 0 {
        return Err(Fail::inval("attr->reserved must be zero"));
    }
    if r != REGCACHE_REGISTRAR_SOFTNIC as u32 && a.softnic_slots != 0 {
        return Err(Fail::inval(
            "attr->softnic_slots is set but the registrar is not SOFTNIC",
        ));
    }
    if r != REGCACHE_REGISTRAR_VERBS_PD as u32 && !a.pd.is_null() {
        return Err(Fail::inval(
            "attr->pd is set but the registrar is not VERBS_PD",
        ));
    }
    if r != REGCACHE_REGISTRAR_CUSTOM as u32 && (!a.ops.is_null() || !a.ops_context.is_null()) {
        return Err(Fail::inval(
            "attr->ops is set but the registrar is not CUSTOM",
        ));
    }
    if a.on_invalidate.is_none() && !a.on_invalidate_arg.is_null() {
        return Err(Fail::inval(
            "attr->on_invalidate_arg is set but attr->on_invalidate is NULL",
        ));
    }
    Ok(())
}

/// The caller's `on_invalidate` callback and its argument, as the core cache's hook.
struct CallerHook {
    f: unsafe extern "C" fn(*mut c_void, *mut c_void, usize),
    arg: *mut c_void,
}

// SAFETY: the header (regcache_invalidate_fn) requires the callback and its argument to be
// usable from any thread, concurrently.
unsafe impl Send for CallerHook {}
// SAFETY: as above; the hook only reads its two fields.
unsafe impl Sync for CallerHook {}

impl CallerHook {
    fn call(&self, r: Range) {
        // No catch_unwind is needed here: `f` is a C function, which cannot unwind into us (an
        // unwind out of an `extern "C"` function aborts), and nothing else here can panic. The
        // core cache runs this hook only inside calls made by our entry points, each of which
        // runs under `guard::guard`'s catch_unwind, so no Rust panic reaches C either; the
        // core keeps its state consistent when a hook unwinds (Config::on_invalidate).
        // SAFETY: the caller's callback with its own argument, called as the header documents
        // (the range is plain numbers; nothing of ours is lent to it).
        unsafe { (self.f)(self.arg, r.start as *mut c_void, r.len()) }
    }
}

fn invalidate_hook(a: &regcache_attr) -> Option<InvalidateHook> {
    let hook = CallerHook {
        f: a.on_invalidate?,
        arg: a.on_invalidate_arg,
    };
    Some(InvalidateHook(Arc::new(move |r: Range| hook.call(r))))
}

type Registrars = (Arc<dyn Registrar>, Option<Arc<SoftNic>>);

/// Builds the registrar the attributes ask for.
///
/// # Safety
/// `a.ops`, if non-null, points to a readable `regcache_registrar_ops` of its `size`.
unsafe fn make_registrar(a: &regcache_attr) -> Result<Registrars, Fail> {
    use regcache_registrar::*;
    match a.registrar {
        x if x == REGCACHE_REGISTRAR_SOFTNIC as u32 => {
            let slots = if a.softnic_slots == 0 {
                MAX_SLOTS
            } else {
                a.softnic_slots
            };
            let nic = Arc::new(SoftNic::new(slots)?);
            Ok((nic.clone(), Some(nic)))
        }
        x if x == REGCACHE_REGISTRAR_VERBS_PD as u32 => {
            if a.pd.is_null() {
                return Err(Fail::inval("attr->pd is NULL (needs a struct ibv_pd *)"));
            }
            // SAFETY: the caller's contract on `attr->pd` (header: a valid `struct ibv_pd *`
            // that outlives the cache and its registrations).
            Ok((unsafe { crate::verbs::registrar(a.pd) }?, None))
        }
        // SAFETY: forwarded contract on `a.ops`.
        x if x == REGCACHE_REGISTRAR_CUSTOM as u32 => Ok((
            unsafe { crate::custom::registrar(a.ops, a.ops_context) }?,
            None,
        )),
        x if x == REGCACHE_REGISTRAR_NOOP as u32 => Ok((Arc::new(NoopRegistrar::new()), None)),
        0 => Err(Fail::inval("attr->registrar is not set (no default)")),
        _ => Err(Fail::inval(
            "attr->registrar is not an enum regcache_registrar value",
        )),
    }
}

/// -ECHILD in a fork() child of the cache's creator. Flushing or invalidating there would hand
/// the parent's unused registrations to the registrar for deregistration (which, for verbs or
/// custom registrars, would undo the parent's memory regions).
fn refuse_in_child(c: &regcache_cache) -> Result<(), Fail> {
    if std::process::id() == c.owner_pid {
        Ok(())
    } else {
        Err(regcache_core::Error::ForkedChild.into())
    }
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Creates a cache with a monitor and a registrar.
///
/// On success stores a new cache in `*cache` and returns 0; on failure stores NULL there (when
/// `cache` is not NULL) and returns a negative errno: -EINVAL for a bad argument or attribute,
/// -EOPNOTSUPP for REGCACHE_REGISTRAR_VERBS_PD in a library built without verbs, -ENOENT or
/// another errno when the requested monitor or the software NIC cannot be opened.
///
/// Ownership: the caller owns the cache and ends it with regcache_destroy(). `attr` is only read
/// during the call.
///
/// # Safety
/// `attr` is NULL or points to a readable `struct regcache_attr` of at least `attr->size` bytes
/// (and `attr->ops` likewise); `cache` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn regcache_create(
    attr: *const regcache_attr,
    cache: *mut *mut regcache_cache,
) -> c_int {
    guard("regcache_create", || {
        check_out(cache, "cache (the output pointer)")?;
        // SAFETY: non-null, aligned (checked) and writable per the contract. NULL first, so a
        // failure leaves no stale pointer behind.
        unsafe { cache.write(std::ptr::null_mut()) };
        // SAFETY: forwarded contract on `attr`.
        let a = unsafe { read_sized(attr, "attr", ATTR_MIN_SIZE) }?;
        if a.flags & !KNOWN_ATTR_FLAGS != 0 {
            return Err(Fail::inval("attr->flags has unknown bits"));
        }
        unused_fields_zero(&a)?;
        let choice = monitor_choice(a.monitor)?;
        let defaults = Config::default();
        let or = |v: u64, d: u64| if v == 0 { d } else { v };
        let cfg = Config {
            max_entries: to_usize(or(a.max_entries, defaults.max_entries as u64)),
            max_bytes: or(a.max_bytes, defaults.max_bytes),
            max_merge: to_usize(or(a.max_merge, defaults.max_merge as u64)),
            danger_ignore_invalidations: a.flags
                & regcache_attr_flags::REGCACHE_ATTR_DANGER_IGNORE_INVALIDATIONS as u64
                != 0,
            danger_revalidate_unchanged: false,
            on_invalidate: invalidate_hook(&a),
        };
        // SAFETY: forwarded contract on `attr->ops`.
        let (registrar, nic) = unsafe { make_registrar(&a) }?;
        let (monitor, _why) = select::open(choice)?;
        let boxed = Box::new(regcache_cache {
            magic: CACHE_MAGIC,
            cache: Arc::new(Cache::new(monitor, registrar, cfg)),
            nic,
            owner_pid: std::process::id(),
            metrics: Mutex::new(Vec::new()),
        });
        // SAFETY: checked above.
        unsafe { cache.write(Box::into_raw(boxed)) };
        Ok(0)
    })
}

/// Destroys a cache: drops every cached registration that is not in use and ends the caller's
/// ownership of `cache`, which must not be used again (not even by other threads).
///
/// Registrations still in use (regcache_get() without regcache_release()) stay valid: they keep
/// the cache's internals (monitor, registrar, software NIC) alive, and the last
/// regcache_release() deregisters them and frees the rest. With REGCACHE_REGISTRAR_VERBS_PD the
/// protection domain must therefore outlive the last release too. In a fork() child of the
/// creator it frees the child's copy only and deregisters nothing. A cache added to metrics
/// exporters (regcache_metrics_add) leaves them, its counters staying in their totals. Returns
/// 0, or -EINVAL for a NULL or invalid `cache`.
///
/// # Safety
/// `cache` is NULL or a live cache from regcache_create(), not used concurrently with or after
/// this call.
#[no_mangle]
pub unsafe extern "C" fn regcache_destroy(cache: *mut regcache_cache) -> c_int {
    guard("regcache_destroy", || {
        // SAFETY: forwarded contract.
        unsafe { cache_ref(cache) }?;
        // SAFETY: validated as a live cache made by Box::into_raw in regcache_create; the
        // caller gives up its only pointer.
        let mut boxed = unsafe { Box::from_raw(cache) };
        boxed.magic = DEAD_MAGIC;
        // In a fork() child the registrations are the parent's: only free the child's memory
        // (dropping the cache there deregisters nothing).
        if std::process::id() == boxed.owner_pid {
            boxed.cache.flush();
        }
        // After the flush, so its deregistrations are counted.
        let sets = std::mem::take(
            &mut *boxed
                .metrics
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for set in sets {
            set.remove(&boxed.cache);
        }
        drop(boxed);
        Ok(0)
    })
}

/// Returns a registration covering `[addr, addr + length)` with at least `access`
/// (`enum ibv_access_flags` bits: IBV_ACCESS_LOCAL_WRITE 1, REMOTE_WRITE 2, REMOTE_READ 4,
/// REMOTE_ATOMIC 8, RELAXED_ORDERING 1 << 20; other bits are -EINVAL).
///
/// From the cache when a valid cached registration covers the range (a hit), else newly
/// registered. It is never stale: memory unmapped or remapped since it was registered is
/// registered anew. On success stores the handle in `*mr` and returns 0; on failure stores NULL
/// there (when `mr` is not NULL) and returns a negative errno: -EINVAL (NULL cache, addr or mr,
/// length 0, addr + length overflows, bad access), -ECHILD in a fork() child of the cache's
/// creator, -ENOMEM/-EAGAIN/-ENOSPC when out of pinnable memory or slots (raise RLIMIT_MEMLOCK),
/// -E2BIG when the range exceeds the registrar, -EFAULT for memory that cannot be pinned, or
/// the registrar's errno.
///
/// Ownership: the caller owns the handle and must end it with regcache_release(). Thread-safe.
///
/// # Safety
/// `cache` is NULL or a live cache; `mr` is NULL or writable. `addr` is not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn regcache_get(
    cache: *mut regcache_cache,
    addr: *const c_void,
    length: usize,
    access: u32,
    mr: *mut *mut regcache_mr,
) -> c_int {
    guard("regcache_get", || {
        check_out(mr, "mr (the output pointer)")?;
        // SAFETY: non-null, aligned (checked), writable per the contract.
        unsafe { mr.write(std::ptr::null_mut()) };
        // SAFETY: forwarded contract.
        let c = unsafe { cache_ref(cache) }?;
        let access = Access::from_bits(access)
            .ok_or_else(|| Fail::inval("access has bits other than ibv_access_flags LOCAL_WRITE, REMOTE_WRITE, REMOTE_READ, REMOTE_ATOMIC, RELAXED_ORDERING"))?;
        let handle = c.cache.get_owned(addr as usize, length, access)?;
        let boxed = Box::new(regcache_mr {
            magic: MR_MAGIC,
            handle,
            nic: c.nic.as_ref().map(|n| NonNull::from(&**n)),
        });
        // SAFETY: checked above.
        unsafe { mr.write(Box::into_raw(boxed)) };
        Ok(0)
    })
}

/// Ends the use of a registration from regcache_get(). A cached one stays in the cache for later
/// hits; one that was invalidated meanwhile, or registered for one use only, is deregistered
/// now. `mr` must not be used again. Returns 0, or -EINVAL for a NULL or invalid `mr`.
/// Thread-safe (any thread may release), but each handle is released exactly once.
///
/// # Safety
/// `mr` is NULL or a live handle from regcache_get(), not used concurrently with or after this
/// call.
#[no_mangle]
pub unsafe extern "C" fn regcache_release(mr: *mut regcache_mr) -> c_int {
    guard("regcache_release", || {
        // SAFETY: forwarded contract.
        unsafe { mr_ref(mr) }?;
        // SAFETY: validated as a live handle made by Box::into_raw in regcache_get; the caller
        // gives up its only pointer.
        let mut boxed = unsafe { Box::from_raw(mr) };
        boxed.magic = DEAD_MAGIC;
        drop(boxed);
        Ok(0)
    })
}

/// Stores the local and remote keys of a registration in `*lkey` and `*rkey` (either may be
/// NULL, not both). Returns 0 or -EINVAL.
///
/// # Safety
/// `mr` is NULL or a live handle; `lkey` and `rkey` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn regcache_mr_keys(
    mr: *const regcache_mr,
    lkey: *mut u32,
    rkey: *mut u32,
) -> c_int {
    guard("regcache_mr_keys", || {
        // SAFETY: forwarded contract.
        let m = unsafe { mr_ref(mr) }?;
        if lkey.is_null() && rkey.is_null() {
            return Err(Fail::inval("lkey and rkey are both NULL"));
        }
        if !lkey.is_null() {
            check_out(lkey, "lkey")?;
            // SAFETY: non-null, aligned, writable per the contract.
            unsafe { lkey.write(m.handle.lkey()) };
        }
        if !rkey.is_null() {
            check_out(rkey, "rkey")?;
            // SAFETY: as above.
            unsafe { rkey.write(m.handle.rkey()) };
        }
        Ok(0)
    })
}

/// Fills `*info` about a registration (see struct regcache_mr_info). Returns 0 or -EINVAL
/// (NULL or invalid arguments, `info->size` below 16).
///
/// # Safety
/// `mr` is NULL or a live handle; `info` is NULL or points to `info->size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn regcache_mr_query(
    mr: *const regcache_mr,
    info: *mut regcache_mr_info,
) -> c_int {
    guard("regcache_mr_query", || {
        // SAFETY: forwarded contract.
        let m = unsafe { mr_ref(mr) }?;
        let h = &m.handle;
        let r = h.range();
        let full = regcache_mr_info {
            size: std::mem::size_of::<regcache_mr_info>(),
            addr: r.start as u64,
            length: r.len() as u64,
            lkey: h.lkey(),
            rkey: h.rkey(),
            access: h.access().bits(),
            flags: if h.is_cached() {
                regcache_mr_flags::REGCACHE_MR_CACHED as u32
            } else {
                0
            },
        };
        // SAFETY: forwarded contract on `info`.
        unsafe { write_sized(info, &full, "info", OUT_MIN_SIZE) }?;
        Ok(0)
    })
}

/// Removes every cached registration overlapping `[addr, addr + length)`, for invalidations the
/// caller learned elsewhere (the monitor catches munmap/mremap/madvise itself). Registrations in
/// use stay valid for their holders and are deregistered on release. Returns the number of
/// entries removed (>= 0), -EINVAL (NULL cache or addr, length 0, overflow), or -ECHILD in a
/// fork() child of the cache's creator.
///
/// # Safety
/// `cache` is NULL or a live cache. `addr` is not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn regcache_invalidate(
    cache: *mut regcache_cache,
    addr: *const c_void,
    length: usize,
) -> c_int {
    guard("regcache_invalidate", || {
        // SAFETY: forwarded contract.
        let c = unsafe { cache_ref(cache) }?;
        refuse_in_child(c)?;
        let n = c.cache.invalidate(addr as usize, length)?;
        Ok(c_int::try_from(n).unwrap_or(c_int::MAX))
    })
}

/// Checks the cache's monitor and, if its counter moved, applies the pending invalidations now
/// (calling `attr->on_invalidate` for each). Cheap when nothing changed: one load of the counter
/// (plus one ioctl with the userfaultfd monitor). regcache_get() does this itself; call it
/// before looking up another cache that `on_invalidate` keeps coherent, whose hits never reach
/// regcache_get() (the LD_PRELOAD shim calls it before UCX's ucs_rcache_get). Returns 1 when it
/// drained, 0 when nothing had changed (or the cache is not caching), -EINVAL for a NULL or
/// invalid `cache`, -ECHILD in a fork() child of the cache's creator. Thread-safe.
///
/// # Safety
/// `cache` is NULL or a live cache.
#[no_mangle]
pub unsafe extern "C" fn regcache_sync(cache: *mut regcache_cache) -> c_int {
    guard("regcache_sync", || {
        // SAFETY: forwarded contract.
        let c = unsafe { cache_ref(cache) }?;
        Ok(c_int::from(c.cache.sync()?))
    })
}

/// Removes every cached registration (those in use are deregistered on release).
/// Returns 0, -EINVAL, or -ECHILD in a fork() child of the cache's creator.
///
/// # Safety
/// `cache` is NULL or a live cache.
#[no_mangle]
pub unsafe extern "C" fn regcache_flush(cache: *mut regcache_cache) -> c_int {
    guard("regcache_flush", || {
        // SAFETY: forwarded contract.
        let c = unsafe { cache_ref(cache) }?;
        refuse_in_child(c)?;
        c.cache.flush();
        Ok(0)
    })
}

/// Fills `*stats` with the cache's counters (see struct regcache_stats). Returns 0 or -EINVAL
/// (NULL or invalid arguments, `stats->size` below 16).
///
/// # Safety
/// `cache` is NULL or a live cache; `stats` is NULL or points to `stats->size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn regcache_stats(
    cache: *mut regcache_cache,
    stats: *mut regcache_stats,
) -> c_int {
    guard("regcache_stats", || {
        // SAFETY: forwarded contract.
        let c = unsafe { cache_ref(cache) }?;
        let s = c.cache.stats();
        let full = regcache_stats {
            size: std::mem::size_of::<regcache_stats>(),
            hits: s.hits,
            misses: s.misses,
            uncacheable: s.uncacheable,
            reregistrations: s.reregistrations,
            invalidated: s.invalidated,
            false_positives: s.false_positives,
            drains: s.drains,
            evictions: s.evictions,
            registration_failures: s.registration_failures,
            registered_bytes: s.registered_bytes,
            registered_entries: s.registered_entries,
            registrations: s.registrations,
            registration_ns: s.registration_ns,
            deregistrations: s.deregistrations,
            cached_entries: c.cache.cached_entries() as u64,
            monitor: monitor_value(c.cache.monitor_kind()),
            flags: if c.cache.is_caching() {
                regcache_stats_flags::REGCACHE_STATS_CACHING as u32
            } else {
                0
            },
        };
        // SAFETY: forwarded contract on `stats`.
        unsafe { write_sized(stats, &full, "stats", OUT_MIN_SIZE) }?;
        Ok(0)
    })
}

/// Copies the message of the last failure of a regcache call on this thread (what failed and
/// why, e.g. naming RLIMIT_MEMLOCK) into `buf`, NUL-terminated and truncated to `len` bytes.
/// Returns the message's full length (without the NUL; 0 when there was no failure), so
/// `regcache_last_error(NULL, 0)` asks for the size. Returns -EINVAL when `buf` is NULL and
/// `len` is not 0. Successful calls do not clear the message.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn regcache_last_error(buf: *mut c_char, len: usize) -> c_int {
    // Not through `guard`: a failure here must not replace the message being asked for.
    let res = std::panic::catch_unwind(|| {
        if buf.is_null() || len > isize::MAX as usize {
            if buf.is_null() && len == 0 {
                return c_int::try_from(crate::guard::copy_last_error(&mut []))
                    .unwrap_or(c_int::MAX);
            }
            return -libc::EINVAL;
        }
        // SAFETY: non-null, `len` writable bytes per the contract; u8 and c_char have the same
        // size and alignment.
        let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
        c_int::try_from(crate::guard::copy_last_error(out)).unwrap_or(c_int::MAX)
    });
    res.unwrap_or(-libc::EIO)
}
