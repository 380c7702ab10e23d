//! Tests of the userfaultfd monitor against the running kernel: every address-space change the
//! contract lists, the error classification, overflow, shutdown, fork, a concurrent stress test,
//! and two `#[ignore]`d measurements (munmap cost, the cross-thread window).

use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

fn page() -> usize {
    page_size()
}

/// Maps `pages` private anonymous read-write pages and touches each one.
fn map(pages: usize) -> usize {
    map_at(0, pages, 0)
}

fn map_at(hint: usize, pages: usize, extra_flags: i32) -> usize {
    let len = pages * page();
    // SAFETY: anonymous mapping; no existing memory is affected unless `extra_flags` has
    // MAP_FIXED, which tests only use on ranges they own.
    let p = unsafe {
        libc::mmap(
            hint as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
    for i in 0..pages {
        // SAFETY: inside the mapping just created.
        unsafe { *(p as *mut u8).add(i * page()) = 1 };
    }
    p as usize
}

fn unmap(addr: usize, len: usize) {
    // SAFETY: tests only unmap ranges they mapped.
    assert_eq!(unsafe { libc::munmap(addr as *mut libc::c_void, len) }, 0);
}

fn range(addr: usize, len: usize) -> Range {
    Range {
        start: addr,
        end: addr + len,
    }
}

/// Every page of `[start, end)` lies in some `Range` of `out` (or `out` holds `All`).
fn covered(out: &[Invalidation], start: usize, end: usize) -> bool {
    (start..end).step_by(page()).all(|p| {
        out.iter().any(|i| match i {
            Invalidation::Range(r) => r.start <= p && p + page() <= r.end,
            Invalidation::All => true,
            Invalidation::Cookie { .. } => false,
        })
    })
}

/// Aborts the whole test process if not dropped within `secs` (a hang would otherwise stall
/// the test run forever, since the hung thread sleeps in the kernel).
struct Watchdog(Option<mpsc::Sender<()>>);

fn watchdog(secs: u64, what: &'static str) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs)) {
            eprintln!("WATCHDOG: `{what}` did not finish within {secs} s (hang): aborting");
            std::process::abort();
        }
    });
    Watchdog(Some(tx))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Drains `m` once and returns (generation, invalidations).
fn drain(m: &UffdMonitor) -> (u64, Vec<Invalidation>) {
    let mut out = Vec::new();
    let g = m.drain(&mut out).unwrap();
    (g, out)
}

/// Runs `change` on a watched `[addr, addr+len)` and checks the contract: when it returns, the
/// counter differs from the last drained generation, and the next drain covers `[cs, ce)`.
fn check_change(m: &UffdMonitor, addr: usize, len: usize, cs: usize, ce: usize, change: impl Fn()) {
    let _w = watchdog(10, "address-space change of a watched range");
    m.watch(range(addr, len), 1).expect("watch");
    let (g, _) = drain(m);
    change();
    let c = m.counter().load(Ordering::Acquire);
    assert_ne!(
        c, g,
        "counter unchanged after the call returned (false negative)"
    );
    let (g2, out) = drain(m);
    assert!(g2 > g && g2 % 2 == 0);
    assert!(
        covered(&out, cs, ce),
        "drain {out:?} does not cover [{cs:#x}, {ce:#x})"
    );
}

#[test]
fn opens_and_reports() {
    assert!(UffdMonitor::is_available());
    let m = UffdMonitor::new().unwrap();
    assert_eq!(m.kind(), MonitorKind::Uffd);
    assert!(m.can_cache());
    assert_eq!(m.queue_capacity(), DEFAULT_QUEUE_CAPACITY);
    assert_eq!(m.counter().load(Ordering::Acquire), 0);
    assert!(!m.event_in_flight().unwrap());
    let (g, out) = drain(&m);
    assert_eq!((g, out.len()), (0, 0));
}

#[test]
fn munmap_is_reported() {
    let m = UffdMonitor::new().unwrap();
    let a = map(4);
    let len = 4 * page();
    check_change(&m, a, len, a, a + len, || unmap(a, len));
}

#[test]
fn munmap_of_middle_page_is_reported() {
    let m = UffdMonitor::new().unwrap();
    let a = map(3);
    let p = page();
    check_change(&m, a, 3 * p, a + p, a + 2 * p, || unmap(a + p, p));
    // The rest stays watched: unmapping it is reported too.
    check_change(&m, a, p, a, a + p, || unmap(a, p));
    unmap(a + 2 * p, p);
}

#[test]
fn madvise_dontneed_is_reported() {
    let m = UffdMonitor::new().unwrap();
    let a = map(2);
    let len = 2 * page();
    check_change(&m, a, len, a, a + len, || {
        // SAFETY: our own mapping.
        let r = unsafe { libc::madvise(a as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        assert_eq!(r, 0);
    });
    // Writing afterwards does not block (no fault message in WP mode without protection).
    let _w = watchdog(10, "write after DONTNEED");
    // SAFETY: still mapped.
    unsafe { *(a as *mut u8) = 2 };
    unmap(a, len);
}

#[test]
fn mremap_move_reports_the_source() {
    let m = UffdMonitor::new().unwrap();
    let p = page();
    let a = map(2);
    let dst = map(2); // a place to move to, not watched
    check_change(&m, a, 2 * p, a, a + 2 * p, || {
        // SAFETY: moves our mapping over our other mapping.
        let r = unsafe {
            libc::mremap(
                a as *mut libc::c_void,
                2 * p,
                2 * p,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                dst as *mut libc::c_void,
            )
        };
        assert_eq!(r as usize, dst);
    });
    // The moved range stays registered with us (EVENT_REMAP): unmapping it is reported.
    let (g, _) = drain(&m);
    unmap(dst, 2 * p);
    assert_ne!(m.counter().load(Ordering::Acquire), g);
    assert!(covered(&drain(&m).1, dst, dst + 2 * p));
}

#[test]
fn mremap_shrink_reports_the_tail() {
    let m = UffdMonitor::new().unwrap();
    let p = page();
    let a = map(4);
    check_change(&m, a, 4 * p, a + p, a + 4 * p, || {
        // SAFETY: shrinks our own mapping in place.
        let r = unsafe { libc::mremap(a as *mut libc::c_void, 4 * p, p, 0) };
        assert_eq!(r as usize, a);
    });
    unmap(a, p);
}

#[test]
fn map_fixed_over_a_watched_range_is_reported() {
    let m = UffdMonitor::new().unwrap();
    let p = page();
    let a = map(2);
    check_change(&m, a, 2 * p, a, a + 2 * p, || {
        assert_eq!(map_at(a, 2, libc::MAP_FIXED), a);
    });
    unmap(a, 2 * p);
}

#[test]
fn watching_again_and_overlapping_succeeds() {
    let m = UffdMonitor::new().unwrap();
    let p = page();
    let a = map(4);
    m.watch(range(a, 2 * p), 1).unwrap();
    m.watch(range(a, 2 * p), 2).expect("same range again");
    m.watch(range(a + p, 3 * p), 3).expect("overlapping range");
    m.watch(range(a + 1, 10), 4)
        .expect("unaligned range inside");
    m.unwatch(range(a, 2 * p), 1); // no-op: still reported
    check_change(&m, a, 4 * p, a, a + 4 * p, || unmap(a, 4 * p));
}

#[test]
fn file_backed_mapping_is_unwatchable() {
    let path = std::env::temp_dir().join(format!("regcache-uffd-file-{}", std::process::id()));
    std::fs::write(&path, vec![0u8; 2 * page()]).unwrap();
    let f = std::fs::File::open(&path).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: private read-only mapping of our own file.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            2 * page(),
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let m = UffdMonitor::new().unwrap();
    match m.watch(range(p as usize, 2 * page()), 1) {
        Err(WatchError::Unwatchable(e)) => assert_eq!(e, libc::EINVAL),
        other => panic!("file-backed mapping: expected Unwatchable(EINVAL), got {other:?}"),
    }
    unmap(p as usize, 2 * page());
    let _ = std::fs::remove_file(&path);
}

fn map_shared(fd: i32, pages: usize) -> usize {
    let flags = if fd < 0 {
        libc::MAP_SHARED | libc::MAP_ANONYMOUS
    } else {
        libc::MAP_SHARED
    };
    // SAFETY: new shared mapping (anonymous, or of a memfd we own).
    let s = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            pages * page(),
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    assert_ne!(s, libc::MAP_FAILED);
    s as usize
}

/// On this kernel (CONFIG_PTE_MARKER_UFFD_WP) shmem accepts WP registration and its munmap is
/// reported, but truncating the backing file changes the pages with no event: the documented
/// limitation. If this starts failing, the kernel changed and the module docs need updating.
#[test]
fn shared_memory_unmap_is_reported_but_truncate_is_not() {
    let m = UffdMonitor::new().unwrap();
    let s = map_shared(-1, 2);
    if let Err(e) = m.watch(range(s, 2 * page()), 1) {
        eprintln!("kernel refuses WP registration of shmem ({e:?}): nothing to check");
        unmap(s, 2 * page());
        return;
    }
    check_change(&m, s, 2 * page(), s, s + 2 * page(), || {
        unmap(s, 2 * page())
    });

    // SAFETY: creates an anonymous memory file we own.
    let fd = unsafe { libc::memfd_create(c"regcache-uffd-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: our memfd.
    assert_eq!(unsafe { libc::ftruncate(fd, 2 * page() as libc::off_t) }, 0);
    let a = map_shared(fd, 2);
    // SAFETY: inside the mapping.
    unsafe { std::ptr::write_volatile(a as *mut u8, 1) };
    m.watch(range(a, 2 * page()), 2).unwrap();
    let (g, _) = drain(&m);
    // SAFETY: our memfd; the pages behind `a` are dropped from the file and our page tables.
    assert_eq!(unsafe { libc::ftruncate(fd, 0) }, 0);
    assert_eq!(
        m.counter().load(Ordering::Acquire),
        g,
        "truncate now produces an event?"
    );
    unmap(a, 2 * page());
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
}

#[test]
fn range_owned_by_another_userfaultfd_is_unwatchable_ebusy() {
    let ours = UffdMonitor::new().unwrap();
    let other = UffdMonitor::new().unwrap();
    let a = map(2);
    other.watch(range(a, 2 * page()), 1).unwrap();
    match ours.watch(range(a, 2 * page()), 1) {
        Err(WatchError::Unwatchable(e)) => assert_eq!(e, libc::EBUSY),
        r => panic!("expected Unwatchable(EBUSY), got {r:?}"),
    }
    // Partial overlap with the other context's range: same answer.
    let b = a + page();
    assert!(matches!(
        ours.watch(range(b, page()), 2),
        Err(WatchError::Unwatchable(libc::EBUSY))
    ));
    let _w = watchdog(10, "munmap of a range owned by the other monitor");
    unmap(a, 2 * page());
}

#[test]
fn unmapped_range_is_unwatchable() {
    let m = UffdMonitor::new().unwrap();
    // Reserve three pages, then punch out the middle one: a hole nobody else will fill
    // (mmap without a hint does not pick a single-page hole between two of our pages... it
    // might, so confirm the hole with msync right before and after).
    let a = map(3);
    let p = page();
    unmap(a + p, p);
    let hole = range(a + p, p);
    let whole = range(a, 3 * p);
    let r1 = m.watch(hole, 1);
    let r2 = m.watch(whole, 2);
    let still_hole = !range_is_mapped(hole);
    unmap(a, p);
    unmap(a + 2 * p, p);
    if !still_hole {
        eprintln!("SKIPPED: another thread mapped into the test's hole");
        return;
    }
    assert!(
        matches!(r1, Err(WatchError::Unwatchable(_))),
        "hole: {r1:?}"
    );
    assert!(
        matches!(r2, Err(WatchError::Unwatchable(_))),
        "range with a hole: {r2:?}"
    );
    // Far away from anything mapped.
    let far = range(0x1000_0000_0000, 16 * p);
    if !range_is_mapped(far) {
        assert!(matches!(
            m.watch(far, 3),
            Err(WatchError::Unwatchable(libc::ENOMEM | libc::EINVAL))
        ));
    }
}

#[test]
fn lone_unmapper_does_not_hang() {
    // Nobody drains: only the reader serves the unmapping thread, many times in a row.
    let m = UffdMonitor::with_queue_capacity(16).unwrap();
    let _w = watchdog(10, "munmap of watched ranges with nobody draining");
    let g = m.counter().load(Ordering::Acquire);
    for _ in 0..200 {
        let a = map(1);
        m.watch(range(a, page()), 1).unwrap();
        unmap(a, page());
    }
    assert!(
        m.counter().load(Ordering::Acquire) >= g + 200,
        "one busy period per event at least"
    );
}

#[test]
fn overflow_reports_all_and_stays_bounded() {
    let cap = 8;
    let m = UffdMonitor::with_queue_capacity(cap).unwrap();
    let _w = watchdog(10, "overflow test");
    let (g0, _) = drain(&m);
    for _ in 0..100 {
        let a = map(1);
        m.watch(range(a, page()), 1).unwrap();
        unmap(a, page());
        assert!(m.shared.queue.len() <= cap);
    }
    assert_eq!(m.queue_capacity(), cap, "the queue never grows");
    let (g1, out) = drain(&m);
    assert!(g1 > g0);
    assert!(
        out.contains(&Invalidation::All),
        "overflow not reported: {out:?}"
    );
    assert!(out.len() <= cap + 1);
    // The flag is consumed: the next event is an ordinary range again.
    let a = map(1);
    m.watch(range(a, page()), 1).unwrap();
    unmap(a, page());
    let (_, out) = drain(&m);
    assert!(!out.contains(&Invalidation::All));
    assert!(covered(&out, a, a + page()));
}

#[test]
fn stress_no_false_negatives() {
    const ITERS: usize = 2000;
    let m = Arc::new(UffdMonitor::new().unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let drained_gen = Arc::new(AtomicU64::new(0));
    let seen: Arc<Mutex<Vec<Invalidation>>> = Arc::default();
    let _w = watchdog(60, "stress test");

    let drainer = {
        let (m, done, drained_gen, seen) =
            (m.clone(), done.clone(), drained_gen.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut drains = 0u64;
            while !done.load(Ordering::Acquire) {
                out.clear();
                let g = m.drain(&mut out).unwrap();
                if !out.is_empty() {
                    seen.lock().unwrap().extend_from_slice(&out);
                }
                // Release: the ranges pushed into `seen` are visible to whoever reads `g`.
                drained_gen.store(g, Ordering::Release);
                drains += 1;
                std::thread::yield_now();
            }
            drains
        })
    };

    let (mut counter_misses, mut drain_misses) = (0, 0);
    for i in 0..ITERS {
        let pages = 1 + i % 4;
        let a = map(pages);
        let len = pages * page();
        m.watch(range(a, len), i as u64).unwrap();
        let before = drained_gen.load(Ordering::Acquire); // a value drain returned before munmap
        unmap(a, len);
        let c = m.counter().load(Ordering::Acquire);
        if c == before {
            counter_misses += 1;
        }
        // Once the drainer has returned a generation >= c, the range must have been drained.
        let t = Instant::now();
        while drained_gen.load(Ordering::Acquire) < c {
            assert!(t.elapsed() < Duration::from_secs(10), "drainer stuck");
            std::thread::yield_now();
        }
        let mut s = seen.lock().unwrap();
        if !covered(&s, a, a + len) {
            drain_misses += 1;
        }
        // Forget what was seen: the next mapping may reuse the address.
        s.clear();
    }
    done.store(true, Ordering::Release);
    let drains = drainer.join().unwrap();
    eprintln!("stress: {ITERS} munmaps, {drains} drains, {counter_misses} counter misses, {drain_misses} drain misses");
    assert_eq!(
        counter_misses, 0,
        "counter did not move after munmap returned"
    );
    assert_eq!(
        drain_misses, 0,
        "drain returned a generation without the range"
    );
}

#[test]
fn drop_joins_reader_promptly_and_releases_watches() {
    let m = UffdMonitor::new().unwrap();
    let a = map(2);
    m.watch(range(a, 2 * page()), 1).unwrap();
    let t = Instant::now();
    drop(m);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "drop took {took:?}");
    // The context is gone with the fd: unmapping a formerly watched range must not block.
    let _w = watchdog(10, "munmap after the monitor was dropped");
    unmap(a, 2 * page());
}

#[test]
fn fork_child_is_not_watched_and_drops_safely() {
    let m = UffdMonitor::new().unwrap();
    let a = map(2);
    let b = map(1);
    m.watch(range(a, 2 * page()), 1).unwrap();
    m.watch(range(b, page()), 2).unwrap();
    let (g, _) = drain(&m);
    // SAFETY: the child only makes system calls and drops the monitor (no allocation), then
    // _exit()s; the parent waits for it.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // Child: its copies of the mappings are not registered (no EVENT_FORK): munmap must
        // not wait for a reader that does not exist here.
        let mut code = 0;
        // SAFETY: the child's own copy of the mapping.
        if unsafe { libc::munmap(a as *mut libc::c_void, 2 * page()) } != 0 {
            code = 1;
        }
        if !matches!(
            m.watch(range(b, page()), 3),
            Err(WatchError::Unwatchable(libc::ECHILD))
        ) {
            code = 2;
        }
        let mut out = Vec::new();
        if !matches!(m.drain(&mut out), Err(Error::ForkedChild)) {
            code = 3;
        }
        drop(m);
        // SAFETY: ends the child without running the test harness's exit path.
        unsafe { libc::_exit(code) };
    }
    let t = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if t.elapsed() > Duration::from_secs(10) {
            // SAFETY: kills our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("fork child hung (munmap in the child blocked?)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    assert_eq!(libc::WEXITSTATUS(status), 0, "child check failed");
    // The parent is still watched, and the child's munmap did not invalidate the parent's range.
    assert!(!covered(&drain(&m).1, a, a + 2 * page()));
    let _w = watchdog(10, "parent munmap after fork");
    unmap(a, 2 * page());
    assert_ne!(m.counter().load(Ordering::Acquire), g);
    assert!(covered(&drain(&m).1, a, a + 2 * page()));
    unmap(b, page());
}

#[test]
fn stray_write_protect_fault_is_answered() {
    // We never write-protect, but if a page were protected through our context, a write would
    // sleep until answered: the reader answers by removing the protection.
    let m = UffdMonitor::new().unwrap();
    let a = map(1);
    m.watch(range(a, page()), 1).unwrap();
    sys::writeprotect(m.uffd, a as u64, page() as u64, true).expect("UFFDIO_WRITEPROTECT");
    let _w = watchdog(10, "write to a write-protected page");
    // SAFETY: our mapping; volatile so the write really happens.
    unsafe { std::ptr::write_volatile(a as *mut u8, 7) };
    // SAFETY: as above.
    assert_eq!(unsafe { std::ptr::read_volatile(a as *const u8) }, 7);
    unmap(a, page());
}

// ---- measurements (run with --ignored --nocapture) ------------------------------------------

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
#[ignore = "measurement: cargo test ... -- --ignored --nocapture"]
fn measure_munmap_cost() {
    const N: usize = 2000;
    let m = UffdMonitor::new().unwrap();
    let mut unwatched = Vec::with_capacity(N);
    let mut watched = Vec::with_capacity(N);
    let mut out = Vec::new();
    for _ in 0..N {
        let a = map(1);
        let t = Instant::now();
        unmap(a, page());
        unwatched.push(t.elapsed().as_nanos() as u64);

        let a = map(1);
        m.watch(range(a, page()), 1).unwrap();
        let t = Instant::now();
        unmap(a, page());
        watched.push(t.elapsed().as_nanos() as u64);
        out.clear();
        m.drain(&mut out).unwrap();
    }
    let mut probe = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        for _ in 0..100 {
            assert!(!m.event_in_flight().unwrap());
        }
        probe.push(t.elapsed().as_nanos() as u64 / 100);
    }
    let mut load = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        for _ in 0..100 {
            std::hint::black_box(m.counter().load(Ordering::Acquire));
        }
        load.push(t.elapsed().as_nanos() as u64 / 100);
    }
    eprintln!(
        "munmap 1 page, median of {N}: unwatched {} ns, watched {} ns; \
         event_in_flight probe {} ns; counter load {} ns",
        median(&mut unwatched),
        median(&mut watched),
        median(&mut probe),
        median(&mut load)
    );
}

/// Thread A unmaps a watched page; thread B spins mapping that same address
/// (MAP_FIXED_NOREPLACE) and, the moment it gets it, loads the counter. A counter equal to the
/// generation drained before the munmap means a cache lookup by B would trust the stale entry.
/// B then probes `event_in_flight()` and loads the counter again, to check that the probe-first
/// protocol closes the window.
#[test]
#[ignore = "experiment: cargo test ... -- --ignored --nocapture"]
fn measure_cross_thread_window() {
    const TRIALS: usize = 2000;
    let m = Arc::new(UffdMonitor::new().unwrap());
    let target = Arc::new(AtomicUsize::new(0)); // address B should grab; 0 = idle
    let spinning = Arc::new(AtomicBool::new(false));
    let gen_before = Arc::new(AtomicU64::new(0));
    let result = Arc::new(Mutex::new(Vec::<(bool, bool, bool, u64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let _w = watchdog(120, "cross-thread experiment");

    let b = {
        let (m, target, spinning, gen_before, result, stop) = (
            m.clone(),
            target.clone(),
            spinning.clone(),
            gen_before.clone(),
            result.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let x = target.load(Ordering::Acquire);
                if x == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                let g0 = gen_before.load(Ordering::Acquire);
                spinning.store(true, Ordering::Release);
                let got = loop {
                    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
                    let p = unsafe {
                        libc::mmap(
                            x as *mut libc::c_void,
                            page(),
                            libc::PROT_READ | libc::PROT_WRITE,
                            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                            -1,
                            0,
                        )
                    };
                    if p as usize == x {
                        break true;
                    }
                    if p != libc::MAP_FAILED {
                        unmap(p as usize, page()); // old kernel: hint not honoured
                        break false;
                    }
                };
                let seen_at = Instant::now();
                let raw_stale = got && m.counter().load(Ordering::Acquire) == g0;
                // Probe-first protocol: probe, then load.
                let in_flight = m.event_in_flight().unwrap();
                let probed_stale = got && !in_flight && m.counter().load(Ordering::Acquire) == g0;
                // How long the stale window stays open after B got the address.
                let mut window_ns = 0;
                if raw_stale {
                    while m.counter().load(Ordering::Acquire) == g0 {
                        std::hint::spin_loop();
                    }
                    window_ns = seen_at.elapsed().as_nanos() as u64;
                }
                if got {
                    unmap(x, page()); // not watched: no event
                }
                result
                    .lock()
                    .unwrap()
                    .push((raw_stale, in_flight, probed_stale, window_ns));
                spinning.store(false, Ordering::Release);
                target.store(0, Ordering::Release);
            }
        })
    };

    let mut out = Vec::new();
    for _ in 0..TRIALS {
        let x = map(1);
        m.watch(range(x, page()), 1).unwrap();
        out.clear();
        let g0 = m.drain(&mut out).unwrap();
        gen_before.store(g0, Ordering::Release);
        target.store(x, Ordering::Release);
        while !spinning.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        unmap(x, page());
        while target.load(Ordering::Acquire) != 0 {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Release);
    b.join().unwrap();
    let r = result.lock().unwrap();
    let raw = r.iter().filter(|t| t.0).count();
    let in_flight = r.iter().filter(|t| t.1).count();
    let probed = r.iter().filter(|t| t.2).count();
    let mut windows: Vec<u64> = r.iter().filter(|t| t.0).map(|t| t.3).collect();
    windows.push(0);
    eprintln!(
        "cross-thread window: {} trials; B saw the new mapping with an UNCHANGED counter in {raw} \
         ({:.1}%); probe said in-flight in {in_flight}; stale after probe-first: {probed}; \
         stale window after B's mmap returned: median {} ns, max {} ns",
        r.len(),
        100.0 * raw as f64 / r.len() as f64,
        median(&mut windows),
        windows.iter().max().unwrap()
    );
    assert_eq!(probed, 0, "probe-first protocol let a stale lookup through");
}

/// A fork child that outlives the monitor would keep the userfaultfd context alive (it holds a
/// copy of the fd) and with it the parent's registrations, with nobody reading: the parent's
/// munmap of a formerly watched range then slept until the child exited (2.0 s with a child
/// living 2 s, before `forkguard`). The fork guard replaces the child's copy with /dev/null.
#[test]
fn fork_child_does_not_keep_the_context_alive() {
    let m = UffdMonitor::new().unwrap();
    let a = map(1);
    m.watch(range(a, page()), 1).unwrap();
    // SAFETY: the child only sleeps and _exit()s (the atfork handler is async-signal-safe).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: async-signal-safe calls only.
        unsafe {
            libc::sleep(30);
            libc::_exit(0)
        };
    }
    drop(m);
    let _w = watchdog(20, "parent munmap with a live fork child");
    let t = Instant::now();
    unmap(a, page());
    let blocked = t.elapsed();
    let mut status = 0;
    // SAFETY: our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0)
    };
    assert!(
        blocked < Duration::from_secs(1),
        "parent munmap blocked {blocked:?}"
    );
}

/// Issue 12 item 5: when the reader thread dies (here: panics, which closes the userfaultfd),
/// the monitor must go broken and the cache stop caching with an error, and no lookup or miss
/// may hang (before: `settled()` took the ioctl's EBADF for "event in flight" and `drain` spun
/// forever holding the miss lock).
#[test]
fn dead_reader_breaks_the_monitor_instead_of_hanging() {
    use crate::cache::{Cache, Config};
    use crate::registrar::{noop::NoopRegistrar, Access};
    let m = UffdMonitor::new().unwrap();
    let a = map(2);
    let reg = Arc::new(NoopRegistrar::new());
    m.kill_reader_for_test();
    // The cache is built after the death, so its drained generation matches the counter and
    // only the dead reader can keep it from trusting it.
    let c = Cache::new(Box::new(m), reg.clone(), Config::default());
    let (tx, rx) = mpsc::channel();
    let c = Arc::new(c);
    let worker = {
        let c = c.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            for _ in 0..3 {
                out.push(c.get(a, page(), Access::LOCAL_WRITE).map(|h| h.is_cached()));
            }
            let _ = tx.send(out);
        })
    };
    let out = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(out) => out,
        Err(_) => {
            eprintln!("a miss hung on the dead reader: aborting");
            std::process::abort();
        }
    };
    worker.join().unwrap();
    for r in &out {
        assert!(
            matches!(r, Ok(false)),
            "not cached, served per use: {out:?}"
        );
    }
    assert!(!c.is_caching(), "the cache must stop caching");
    assert_eq!(reg.registered(), reg.deregistered());
    unmap(a, 2 * page());
}
