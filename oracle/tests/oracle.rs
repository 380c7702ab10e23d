//! The torture oracle on this machine's best monitor (userfaultfd here, ummunotify in the VM),
//! with its negative control. REGCACHE_TORTURE_OPS / REGCACHE_TORTURE_SEED override the size and
//! seed (a failure prints the seed to replay).

use regcache::monitor::select::{self, Choice};
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
    let nic = Arc::new(SoftNic::new(16384).expect("io_uring software NIC"));
    let (monitor, why) = select::open(Choice::from_env().unwrap()).expect("monitor");
    assert_ne!(
        monitor.kind(),
        MonitorKind::None,
        "no monitor works here: {why:?}"
    );
    let cfg = Config {
        danger_ignore_invalidations: ignore_invalidations,
        ..Config::default()
    };
    (Cache::new(monitor, nic.clone(), cfg), nic)
}

#[test]
fn seed_scenario_mmap_use_munmap_mmap_same_address_use() {
    let (c, nic) = cache(false);
    for pages in [1, 16, 256] {
        let out = scenario::run(&c, &nic, pages).unwrap();
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

#[test]
fn torture_negative_control_detects_corruption() {
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
