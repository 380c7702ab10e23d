//! The torture oracle on this machine's best monitor (userfaultfd here, ummunotify in the VM),
//! with its negative control. REGCACHE_TORTURE_OPS / REGCACHE_TORTURE_SEED override the size and
//! seed (a failure prints the seed to replay).

use regcache::monitor::select::{self, Choice};
use regcache::monitor::ummunotify::{abi, ring_wanted, DrainCalls, UmmunotifyMonitor, DEVICE};
use regcache::registrar::uring::SoftNic;
use regcache::{Cache, Config, MonitorKind};
use regcache_oracle::{scenario, torture};
use std::sync::Arc;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A cache on the monitor named by REGCACHE_MONITOR (default: best available), which must cache.
fn cache(ignore_invalidations: bool) -> (Cache, Arc<SoftNic>) {
    cache_with(Config {
        danger_ignore_invalidations: ignore_invalidations,
        ..Config::default()
    })
}

fn cache_with(cfg: Config) -> (Cache, Arc<SoftNic>) {
    let nic = Arc::new(SoftNic::new(16384).expect("io_uring software NIC"));
    let (monitor, why) = select::open(Choice::from_env().unwrap()).expect("monitor");
    assert_ne!(
        monitor.kind(),
        MonitorKind::None,
        "no monitor works here: {why:?}"
    );
    (Cache::new(monitor, nic.clone(), cfg), nic)
}

/// A cache on ummunotify with (`revalidate`) or without REVALIDATE (with RING unless
/// REGCACHE_RING=0); None (skip) where the module or the feature is missing, unless
/// REGCACHE_MONITOR=ummunotify (the guest): then a failure.
fn ummunotify_cache(revalidate: bool, cfg: Config) -> Option<(Cache, Arc<SoftNic>)> {
    let required = std::env::var("REGCACHE_MONITOR").as_deref() == Ok("ummunotify");
    let wanted = abi::FEATURE_FILTER
        | if revalidate {
            abi::FEATURE_REVALIDATE
        } else {
            0
        }
        | if ring_wanted() { abi::FEATURE_RING } else { 0 };
    let m = match UmmunotifyMonitor::open_path(DEVICE, wanted) {
        Ok(m) if !revalidate || m.revalidate_supported() => m,
        Ok(_) if required => panic!("{DEVICE} does not offer REVALIDATE"),
        Err(e) if required => panic!("REGCACHE_MONITOR=ummunotify but {DEVICE}: {e}"),
        _ => {
            eprintln!("skipped: no ummunotify with REVALIDATE here");
            return None;
        }
    };
    let nic = Arc::new(SoftNic::new(16384).expect("io_uring software NIC"));
    let c = Cache::new(Box::new(m), nic.clone(), cfg);
    assert_eq!(c.revalidating(), revalidate);
    Some((c, nic))
}

/// The seed scenario at 1, 16 and 256 pages: b always gets a fresh registration.
fn seed_scenario_is_never_corrupted(c: &Cache, nic: &SoftNic) {
    for pages in [1, 16, 256] {
        let out = scenario::run(c, nic, pages).unwrap();
        assert!(out.same_address, "b was not mapped at a's address");
        assert!(
            !out.corrupted,
            "stale registration used for b ({pages} pages)"
        );
        assert!(!out.b_was_a_hit, "b must not be served a's registration");
    }
    assert!(c.stats().invalidated >= 3);
}

#[test]
fn seed_scenario_mmap_use_munmap_mmap_same_address_use() {
    let (c, nic) = cache(false);
    seed_scenario_is_never_corrupted(&c, &nic);
}

#[test]
fn seed_scenario_negative_control_corrupts() {
    let (c, nic) = cache(true);
    let out = scenario::run(&c, &nic, 16).unwrap();
    assert!(out.same_address);
    assert!(
        out.b_was_a_hit,
        "with invalidation off, b gets a's cached registration"
    );
    assert!(
        out.corrupted,
        "the oracle must see the stale registration's corruption"
    );
}

/// A cache on ummunotify with RING and REVALIDATE (what `open()` asks for by default) and the
/// monitor's system call counts; with `skip_ring_records` the negative control (drains leave
/// the ring's records unread). None (skip) without the device; in the guest
/// (REGCACHE_MONITOR=ummunotify) a module without a usable ring is a failure.
fn ring_cache(skip_ring_records: bool) -> Option<(Cache, Arc<SoftNic>, Arc<DrainCalls>)> {
    let wanted = abi::FEATURE_FILTER | abi::FEATURE_REVALIDATE | abi::FEATURE_RING;
    let m = match UmmunotifyMonitor::open_path(DEVICE, wanted) {
        Ok(m) => m,
        Err(e) if std::env::var("REGCACHE_MONITOR").as_deref() == Ok("ummunotify") => {
            panic!("REGCACHE_MONITOR=ummunotify but {DEVICE}: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {DEVICE}: {e}");
            return None;
        }
    };
    assert!(
        m.ring_active(),
        "RING not usable (features {:#x})",
        m.features()
    );
    m.danger_skip_ring_records(skip_ring_records);
    let calls = m.calls();
    let nic = Arc::new(SoftNic::new(16384).expect("io_uring software NIC"));
    let c = Cache::new(Box::new(m), nic.clone(), Config::default());
    Some((c, nic, calls))
}

/// The churned buffer with RING: b (same address as a, new pages, new data) gets a fresh
/// registration the software NIC writes into b's pages, learnt from the ring without a read().
#[test]
fn ring_churn_gives_a_fresh_registration_without_read() {
    let Some((c, nic, calls)) = ring_cache(false) else {
        return;
    };
    seed_scenario_is_never_corrupted(&c, &nic);
    assert_eq!(calls.reads(), 0, "the churned drains made read() calls");
}

/// Its negative control: drains that leave the ring's records unread trust a's registration
/// for b, and the oracle sees the NIC's write miss b.
#[test]
fn ring_negative_control_skipping_ring_records_corrupts() {
    let Some((c, nic, _)) = ring_cache(true) else {
        return;
    };
    let out = scenario::run(&c, &nic, 16).unwrap();
    assert!(out.same_address);
    assert!(
        out.b_was_a_hit,
        "with the ring unread, b gets a's registration"
    );
    assert!(
        out.corrupted,
        "the oracle must see the stale registration's corruption"
    );
}

fn plan(ops: u64) -> torture::Plan {
    torture::Plan {
        seed: env_u64("REGCACHE_TORTURE_SEED", 0x5eed),
        ops: env_u64("REGCACHE_TORTURE_OPS", ops),
        threads: env_u64("REGCACHE_TORTURE_THREADS", 3) as usize,
        ..torture::Plan::default()
    }
}

#[test]
fn torture_zero_corruptions() {
    let p = plan(100_000);
    let (c, nic) = cache(false);
    let r = torture::run(&p, &c, &nic, &|_| {});
    eprintln!(
        "torture {:?} monitor={}: {r:#?}",
        p,
        c.monitor_kind().name()
    );
    assert_eq!(r.errors, 0, "seed {:#x}: {:?}", p.seed, r.first_error);
    assert_eq!(
        r.corruptions, 0,
        "seed {:#x}: stale registrations were used",
        p.seed
    );
    assert!(r.ops >= p.ops, "ran {} of {} operations", r.ops, p.ops);
    assert!(
        r.stats.hits > 0 && r.stats.invalidated > 0,
        "the workload must exercise the cache"
    );
    for (name, n) in torture::OPS.iter().zip(r.by_op) {
        assert!(n > 0, "operation {name} never ran");
    }
}

/// Runs the ignored test `name` of this binary in a child process and checks that it showed
/// corruption. A negative control lets stale registrations be used, and a stale registration
/// writes wherever its pinned pages are now mapped: usually an oracle buffer (the corruption
/// the child counts and asserts), but the torture also moves pages with mremap and hands freed
/// addresses back, so a stray write can land in memory the process itself lives on (glibc
/// then aborts in free(): "munmap_chunk(): invalid pointer", seen once in CI). Both show what
/// the control must show; only a clean run (the child's assertion fails: exit 101) or a
/// failure to run is a failure here. The child inherits the environment (monitor, seed).
fn negative_control_in_child(name: &str) {
    use std::os::unix::process::ExitStatusExt;
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .output()
        .expect("run the negative control in a child process");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    match (out.status.code(), out.status.signal()) {
        (Some(0), _) => assert!(text.contains("1 passed"), "{name}: the child ran no test"),
        (None, Some(sig)) if [libc::SIGABRT, libc::SIGSEGV, libc::SIGBUS].contains(&sig) => {
            eprintln!("{name}: the child died of signal {sig}: stale writes reached its own memory")
        }
        (code, sig) => panic!("{name}: the child failed (exit {code:?}, signal {sig:?})"),
    }
}

#[test]
fn torture_negative_control_detects_corruption() {
    negative_control_in_child("torture_negative_control_child");
}

/// The negative control's torture (invalidation off), run by the test above in a child.
#[test]
#[ignore = "run in a child process by torture_negative_control_detects_corruption"]
fn torture_negative_control_child() {
    let p = torture::Plan {
        ops: 10_000,
        ..plan(10_000)
    };
    let (c, nic) = cache(true);
    let r = torture::run(&p, &c, &nic, &|_| {});
    eprintln!(
        "negative control: {} corruptions in {} transfers",
        r.corruptions, r.transfers
    );
    assert!(
        r.corruptions > 0,
        "with invalidation off the oracle must detect corruption"
    );
}

/// Neighbour noise with revalidation on and off, same plan and seed: 0 corruptions both ways;
/// with it on, the noise is kept cached (false positives counted). Prints the numbers of
/// docs/benchmarks.md. ummunotify only (the guest).
#[test]
fn torture_neighbour_noise_revalidation_on_vs_off() {
    let p = plan(50_000);
    let mut rows = Vec::new();
    for revalidate in [true, false] {
        let Some((c, nic)) = ummunotify_cache(revalidate, Config::default()) else {
            return;
        };
        let r = torture::run(&p, &c, &nic, &|_| {});
        assert_eq!(r.errors, 0, "seed {:#x}: {:?}", p.seed, r.first_error);
        assert_eq!(
            r.corruptions, 0,
            "seed {:#x} revalidate={revalidate}: stale registrations were used",
            p.seed
        );
        let s = &r.stats;
        rows.push(format!(
            "revalidate={:<5} ops={} transfers={} hits={} misses={} registrations={} \
             one-use={} reregistrations={} invalidated={} false_positives={} drains={} \
             noise={}",
            if revalidate { "on" } else { "off" },
            r.ops,
            r.transfers,
            s.hits,
            s.misses,
            s.registrations,
            s.uncacheable,
            s.reregistrations,
            s.invalidated,
            s.false_positives,
            s.drains,
            r.by_op[11] + r.by_op[12] + r.by_op[13],
        ));
        if revalidate {
            assert!(
                s.false_positives > 0,
                "neighbour noise must be revalidated and kept: {s:?}"
            );
        }
    }
    for row in rows {
        println!("NOISE seed={:#x} threads={} {row}", p.seed, p.threads);
    }
}

/// The negative control of revalidation: a CHECK that always answers "unchanged" keeps
/// entries whose pages were replaced, and the oracle must see the corruption (in a child
/// process, see `negative_control_in_child`). ummunotify with REVALIDATE only.
#[test]
fn torture_revalidate_always_unchanged_mutant_corrupts() {
    if ummunotify_cache(true, Config::default()).is_none() {
        return;
    }
    negative_control_in_child("torture_revalidate_always_unchanged_mutant_child");
}

#[test]
#[ignore = "run in a child process by torture_revalidate_always_unchanged_mutant_corrupts"]
fn torture_revalidate_always_unchanged_mutant_child() {
    let cfg = Config {
        danger_revalidate_unchanged: true,
        ..Config::default()
    };
    let (c, nic) = ummunotify_cache(true, cfg).expect("ummunotify with REVALIDATE");
    let p = torture::Plan {
        ops: 10_000,
        ..plan(10_000)
    };
    let r = torture::run(&p, &c, &nic, &|_| {});
    eprintln!(
        "revalidation mutant: {} corruptions in {} transfers",
        r.corruptions, r.transfers
    );
    assert!(
        r.corruptions > 0,
        "with CHECK always unchanged the oracle must detect corruption"
    );
}
