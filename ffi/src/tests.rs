//! Argument checks of the entry points, called as C would call them.

use super::*;
use std::ffi::c_void;
use std::mem::size_of;
use std::ptr::{null, null_mut};

const EINVAL: i32 = -libc::EINVAL;

fn attr(registrar: regcache_registrar, monitor: regcache_monitor) -> regcache_attr {
    regcache_attr {
        size: size_of::<regcache_attr>(),
        monitor: monitor as u32,
        registrar: registrar as u32,
        flags: 0,
        max_entries: 0,
        max_bytes: 0,
        max_merge: 0,
        softnic_slots: 0,
        reserved: 0,
        pd: null_mut(),
        ops: null(),
        ops_context: null_mut(),
        on_invalidate: None,
        on_invalidate_arg: null_mut(),
    }
}

fn noop_attr() -> regcache_attr {
    attr(
        regcache_registrar::REGCACHE_REGISTRAR_NOOP,
        regcache_monitor::REGCACHE_MONITOR_NONE,
    )
}

fn create(a: &regcache_attr) -> Result<*mut regcache_cache, i32> {
    let mut c = null_mut();
    // SAFETY: `a` and `c` are live locals.
    let rc = unsafe { regcache_create(a, &mut c) };
    if rc == 0 {
        assert!(!c.is_null());
        Ok(c)
    } else {
        assert!(c.is_null(), "failure must leave NULL");
        Err(rc)
    }
}

fn last_error() -> String {
    let mut buf = [0u8; 512];
    // SAFETY: buf is writable for its length.
    let n = unsafe { regcache_last_error(buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0);
    let end = buf.iter().position(|&b| b == 0).unwrap();
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[test]
fn create_rejects_bad_attributes() {
    let mut c = null_mut();
    // SAFETY: null attr and valid out: the function must report, not dereference.
    assert_eq!(unsafe { regcache_create(null(), &mut c) }, EINVAL);
    assert!(last_error().contains("attr is NULL"));
    let a = noop_attr();
    // SAFETY: null output pointer must be rejected.
    assert_eq!(unsafe { regcache_create(&a, null_mut()) }, EINVAL);

    let mut bad = noop_attr();
    bad.size = 8;
    assert_eq!(create(&bad), Err(EINVAL));
    bad.size = 1 << 20;
    assert_eq!(create(&bad), Err(EINVAL));

    let mut bad = noop_attr();
    bad.registrar = 0;
    assert_eq!(create(&bad), Err(EINVAL));
    bad.registrar = 99;
    assert_eq!(create(&bad), Err(EINVAL));
    let mut bad = noop_attr();
    bad.monitor = 42;
    assert_eq!(create(&bad), Err(EINVAL));
    let mut bad = noop_attr();
    bad.flags = 2;
    assert_eq!(create(&bad), Err(EINVAL));
    let mut bad = noop_attr();
    bad.reserved = 1;
    assert_eq!(create(&bad), Err(EINVAL));
    let mut bad = noop_attr();
    bad.softnic_slots = 4;
    assert_eq!(create(&bad), Err(EINVAL));
    let mut bad = noop_attr();
    bad.pd = 8 as *mut c_void;
    assert_eq!(create(&bad), Err(EINVAL));
    let mut bad = attr(
        regcache_registrar::REGCACHE_REGISTRAR_CUSTOM,
        regcache_monitor::REGCACHE_MONITOR_NONE,
    );
    assert_eq!(create(&bad), Err(EINVAL), "custom without ops");
    let ops = regcache_registrar_ops {
        size: size_of::<regcache_registrar_ops>(),
        reg: None,
        dereg: None,
        max_length: 0,
        prepare: None,
        settle: None,
    };
    bad.ops = &ops;
    assert_eq!(create(&bad), Err(EINVAL), "custom without callbacks");
    let mut bad = noop_attr();
    bad.on_invalidate_arg = 8 as *mut c_void;
    assert_eq!(
        create(&bad),
        Err(EINVAL),
        "callback argument without a callback"
    );
    assert!(last_error().contains("on_invalidate_arg"));
}

/// Ranges the invalidation callback was given, in order (the callback's argument).
type Seen = std::sync::Mutex<Vec<(usize, usize)>>;

unsafe extern "C" fn record(arg: *mut c_void, addr: *mut c_void, length: usize) {
    // SAFETY: the tests pass a live `Seen` as the argument.
    let seen = unsafe { &*arg.cast::<Seen>() };
    seen.lock().unwrap().push((addr as usize, length));
}

fn sync(c: *mut regcache_cache) -> i32 {
    // SAFETY: the tests pass live caches (or NULL, which must be reported).
    unsafe { regcache_sync(c) }
}

fn destroy(c: *mut regcache_cache) {
    // SAFETY: a live cache, not used again by the caller.
    assert_eq!(unsafe { regcache_destroy(c) }, 0);
}

#[test]
fn sync_drains_and_calls_the_invalidation_callback() {
    assert_eq!(sync(null_mut()), EINVAL);
    let c = create(&noop_attr()).unwrap();
    assert_eq!(sync(c), 0, "no monitor: nothing to drain");
    destroy(c);

    let seen = Seen::default();
    let mut a = attr(
        regcache_registrar::REGCACHE_REGISTRAR_NOOP,
        regcache_monitor::REGCACHE_MONITOR_AUTO,
    );
    a.on_invalidate = Some(record);
    a.on_invalidate_arg = (&seen as *const Seen).cast_mut().cast();
    let c = create(&a).unwrap();
    let mut st = regcache_stats {
        size: size_of::<regcache_stats>(),
        ..Default::default()
    };
    // SAFETY: a live cache and a writable stats struct of its size.
    assert_eq!(unsafe { regcache_stats(c, &mut st) }, 0);
    if st.flags & regcache_stats_flags::REGCACHE_STATS_CACHING as u32 == 0 {
        eprintln!("skipped: no working monitor here");
        destroy(c);
        return;
    }
    let len = 4 * 4096;
    // SAFETY: a new anonymous mapping, owned by this test.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let mut mr = null_mut();
    // SAFETY: a live cache, a writable output pointer; the handle is released once.
    unsafe {
        assert_eq!(regcache_get(c, p, len, 1, &mut mr), 0);
        assert_eq!(regcache_release(mr), 0);
    }
    assert_eq!(sync(c), 0, "nothing changed");
    assert!(seen.lock().unwrap().is_empty());

    let second = p as usize + 4096;
    // SAFETY: one page of the test's own mapping, which nothing else uses.
    assert_eq!(unsafe { libc::munmap(second as *mut c_void, 4096) }, 0);
    assert_eq!(sync(c), 1, "the counter moved");
    let got = seen.lock().unwrap().clone();
    assert!(
        !got.is_empty()
            && got
                .iter()
                .all(|&(s, l)| s <= second && second + 4096 <= s + l),
        "the callback saw the unmapped page: {got:x?}"
    );
    assert_eq!(sync(c), 0, "drained once");
    destroy(c);
    // SAFETY: the rest of the test's mapping (unmapping a hole again is harmless).
    assert_eq!(unsafe { libc::munmap(p, len) }, 0);
}

#[test]
#[cfg(not(feature = "verbs"))]
fn verbs_without_the_feature_is_not_supported() {
    let mut a = attr(
        regcache_registrar::REGCACHE_REGISTRAR_VERBS_PD,
        regcache_monitor::REGCACHE_MONITOR_NONE,
    );
    assert_eq!(create(&a), Err(EINVAL), "NULL pd");
    a.pd = 0x1000 as *mut c_void;
    assert_eq!(create(&a), Err(-libc::EOPNOTSUPP));
}

#[test]
fn attr_size_versions() {
    // An older, smaller struct: only size, monitor and registrar.
    let mut a = noop_attr();
    a.size = 16;
    a.max_entries = 7; // beyond the caller's size: must be ignored
    let c = create(&a).unwrap();
    // SAFETY: c is live and not used again.
    assert_eq!(unsafe { regcache_destroy(c) }, 0);

    // A newer, larger struct with a zero tail is accepted; a nonzero tail is not.
    #[repr(C)]
    struct Newer {
        a: regcache_attr,
        extra: u64,
    }
    let mut n = Newer {
        a: noop_attr(),
        extra: 0,
    };
    n.a.size = size_of::<Newer>();
    let c = create(&n.a).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { regcache_destroy(c) }, 0);
    n.extra = 1;
    assert_eq!(create(&n.a), Err(EINVAL));
}

#[test]
fn get_rejects_bad_arguments() {
    let c = create(&noop_attr()).unwrap();
    let buf = vec![0u8; 8192];
    let p = buf.as_ptr().cast::<c_void>();
    // Garbage, to be overwritten with NULL by the failing calls.
    let mut mr = std::ptr::dangling_mut::<regcache_mr>();
    // SAFETY (all calls below): pointers are NULL, live locals or the live cache; the library
    // must reject the bad ones without dereferencing them.
    unsafe {
        assert_eq!(regcache_get(null_mut(), p, 16, 0, &mut mr), EINVAL);
        assert!(mr.is_null());
        assert_eq!(regcache_get(c, p, 16, 0, null_mut()), EINVAL);
        assert_eq!(regcache_get(c, null(), 16, 0, &mut mr), EINVAL);
        assert_eq!(regcache_get(c, p, 0, 0, &mut mr), EINVAL);
        assert_eq!(
            regcache_get(c, usize::MAX as *const c_void, 2, 0, &mut mr),
            EINVAL
        );
        assert_eq!(regcache_get(c, p, 16, 1 << 5, &mut mr), EINVAL);
        assert!(last_error().contains("access"));
        // A cache handle passed as a registration, and the reverse.
        assert_eq!(regcache_release(c.cast()), EINVAL);
        assert_eq!(regcache_get(c, p, 16, 0, &mut mr), 0);
        assert_eq!(regcache_flush(mr.cast()), EINVAL);
        // Misaligned handle.
        assert_eq!(regcache_flush(c.cast::<u8>().add(1).cast()), EINVAL);

        let (mut l, mut r) = (0u32, 0u32);
        assert_eq!(regcache_mr_keys(mr, null_mut(), null_mut()), EINVAL);
        assert_eq!(regcache_mr_keys(null(), &mut l, &mut r), EINVAL);
        assert_eq!(regcache_mr_keys(mr, &mut l, null_mut()), 0);
        assert_eq!(regcache_mr_keys(mr, null_mut(), &mut r), 0);
        assert_eq!(l, r);

        assert_eq!(regcache_invalidate(c, null(), 16), EINVAL);
        assert_eq!(regcache_invalidate(c, p, 0), EINVAL);
        assert_eq!(regcache_invalidate(null_mut(), p, 16), EINVAL);
        assert_eq!(regcache_flush(null_mut()), EINVAL);
        assert_eq!(regcache_stats(c, null_mut()), EINVAL);
        assert_eq!(regcache_mr_query(mr, null_mut()), EINVAL);
        assert_eq!(regcache_release(null_mut()), EINVAL);
        assert_eq!(regcache_destroy(null_mut()), EINVAL);

        // Not the software NIC.
        let mut byte = 0u8;
        assert_eq!(
            regcache_softnic_dma_write(mr, p.cast_mut(), (&byte as *const u8).cast(), 1),
            -libc::EOPNOTSUPP
        );
        assert_eq!(
            regcache_softnic_dma_read(mr, p, (&mut byte as *mut u8).cast(), 0),
            EINVAL
        );
        assert_eq!(regcache_release(mr), 0);
        assert_eq!(regcache_destroy(c), 0);
    }
}

#[test]
fn output_struct_sizes() {
    let c = create(&noop_attr()).unwrap();
    let buf = vec![0u8; 4096];
    // SAFETY: live cache and locals; the stats struct has room for its `size`.
    unsafe {
        let mut mr = null_mut();
        assert_eq!(regcache_get(c, buf.as_ptr().cast(), 100, 0, &mut mr), 0);
        let mut s = regcache_stats {
            size: 8,
            ..Default::default()
        };
        assert_eq!(regcache_stats(c, &mut s), EINVAL);
        s.size = 1 << 16;
        assert_eq!(regcache_stats(c, &mut s), EINVAL);
        // An older caller with room for size + hits + misses only.
        s.size = 24;
        s.uncacheable = 12345;
        assert_eq!(regcache_stats(c, &mut s), 0);
        assert_eq!(s.size, 24);
        assert_eq!(
            s.uncacheable, 12345,
            "nothing written past the caller's size"
        );
        assert_eq!(
            s.hits + s.misses,
            0,
            "monitor none: uncacheable, not hits or misses"
        );
        s.size = size_of::<regcache_stats>();
        assert_eq!(regcache_stats(c, &mut s), 0);
        assert_eq!(s.size, size_of::<regcache_stats>());
        assert_eq!(s.uncacheable, 1);
        assert_eq!(s.monitor, regcache_monitor::REGCACHE_MONITOR_NONE as u32);
        assert_eq!(
            s.flags & regcache_stats_flags::REGCACHE_STATS_CACHING as u32,
            0
        );

        let mut info = regcache_mr_info {
            size: size_of::<regcache_mr_info>(),
            ..Default::default()
        };
        assert_eq!(regcache_mr_query(mr, &mut info), 0);
        assert!(info.addr <= buf.as_ptr() as u64 && info.length >= 100);
        assert_eq!(info.flags & regcache_mr_flags::REGCACHE_MR_CACHED as u32, 0);
        assert_eq!(regcache_release(mr), 0);
        assert_eq!(regcache_destroy(c), 0);
    }
}

#[test]
fn last_error_buffer_handling() {
    let mut c = null_mut();
    // SAFETY: a failing call to set a message; then buffer checks with NULL and tiny buffers.
    unsafe {
        assert_eq!(regcache_create(null(), &mut c), EINVAL);
        let n = regcache_last_error(null_mut(), 0);
        assert!(n > 0);
        assert_eq!(regcache_last_error(null_mut(), 4), EINVAL);
        let mut tiny = [0x55u8; 4];
        assert_eq!(regcache_last_error(tiny.as_mut_ptr().cast(), 4), n);
        assert_eq!(tiny[3], 0);
        assert_eq!(&tiny[..3], b"reg");
    }
}

#[test]
fn panics_become_eio_and_bad_errnos_never_succeed() {
    let rc = crate::guard::guard("test", || panic!("deliberate"));
    assert_eq!(rc, -libc::EIO);
    assert!(last_error().contains("panic"));
    let rc = crate::guard::guard("test", || Err(crate::guard::Fail::new(0, "zero errno")));
    assert_eq!(rc, -libc::EIO);
    // SAFETY: the length is rejected before any write.
    let rc = unsafe { regcache_last_error(std::ptr::dangling_mut(), usize::MAX) };
    assert_eq!(rc, EINVAL);
}

#[test]
fn metrics_bad_arguments_and_a_cache_destroyed_while_served() {
    let c = create(&noop_attr()).unwrap();
    let mut m = null_mut();
    // SAFETY: live locals, NULL and garbage handles the functions must reject unread; the cache
    // is destroyed before the exporter is stopped, which the exporter must survive.
    unsafe {
        assert_eq!(
            regcache_metrics_start(c, c"127.0.0.1:0".as_ptr(), null_mut()),
            EINVAL
        );
        assert_eq!(
            regcache_metrics_start(c, c"nonsense".as_ptr(), &mut m),
            EINVAL
        );
        assert!(m.is_null());
        assert!(
            last_error().contains("addr=\"nonsense\""),
            "{}",
            last_error()
        );
        assert_eq!(regcache_metrics_start(c, c"off".as_ptr(), &mut m), 0);
        assert!(m.is_null());
        assert_eq!(regcache_metrics_stop(null_mut()), EINVAL);
        assert_eq!(regcache_metrics_add(null_mut(), c), EINVAL);
        assert_eq!(regcache_metrics_address(null(), null_mut(), 0), EINVAL);

        assert_eq!(
            regcache_metrics_start(c, c"127.0.0.1:0".as_ptr(), &mut m),
            0
        );
        assert!(!m.is_null());
        assert_eq!(regcache_metrics_add(m, c), -libc::EEXIST);
        assert!(regcache_metrics_address(m, null_mut(), 0) > 0);
        assert_eq!(regcache_metrics_textfile(m, null_mut(), 0), 0);
        // The exporter as a cache and the cache as an exporter: the magic numbers differ.
        assert_eq!(regcache_metrics_add(m, m.cast()), EINVAL);
        assert_eq!(regcache_metrics_stop(c.cast()), EINVAL);
        assert_eq!(regcache_destroy(c), 0);
        assert_eq!((*m).caches.len(), 0, "destroy leaves the exporter");
        assert_eq!(regcache_metrics_stop(m), 0);
    }
}
