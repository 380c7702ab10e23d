//! `regcache torture`: the torture oracle as a long soak (10^6+ operations), on any monitor;
//! also how the oracle runs inside the VM with the ummunotify module.

use crate::progress::Progress;
use crate::setup::software_nic_cache;
use regcache::{Config, Result};
use regcache_oracle::torture::{self, Plan, OPS};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Monitor: auto (default, or $REGCACHE_MONITOR), ummunotify, uffd.
    #[arg(long, default_value = "")]
    monitor: String,
    /// Memory operations in total (each followed by a validated transfer).
    #[arg(long, default_value_t = 1_000_000)]
    ops: u64,
    /// Seed (printed, to replay a failure).
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    #[arg(long, default_value_t = 3)]
    threads: usize,
    /// Leave fork() out of the operation mix.
    #[arg(long)]
    no_fork: bool,
    /// Negative control: invalidation off; succeeds only if corruption is detected.
    #[arg(long)]
    no_invalidation: bool,
}

pub fn run(a: &Args) -> Result<ExitCode> {
    let cfg = Config {
        danger_ignore_invalidations: a.no_invalidation,
        ..Config::default()
    };
    let (cache, nic) = software_nic_cache(&a.monitor, cfg)?;
    if !cache.is_caching() {
        return Err(regcache::Error::InvalidArgument(
            "torture needs a monitor that caches",
        ));
    }
    let plan = Plan {
        seed: a.seed,
        ops: a.ops,
        threads: a.threads,
        fork: !a.no_fork,
        ..Plan::default()
    };
    println!(
        "regcache torture: monitor={} seed={:#x} ops={} threads={}{}",
        cache.monitor_kind().name(),
        plan.seed,
        plan.ops,
        plan.threads,
        if a.no_invalidation {
            " NEGATIVE CONTROL (invalidation off)"
        } else {
            ""
        }
    );
    let progress = Progress::new("torture", plan.ops);
    let r = torture::run(&plan, &cache, &nic, &|n| progress.update(n));
    progress.finish();
    let ops: Vec<String> = OPS
        .iter()
        .zip(r.by_op)
        .map(|(n, c)| format!("{n}={c}"))
        .collect();
    println!("operations: {}", ops.join(" "));
    println!(
        "transfers {} corruptions {} errors {} | hits {} misses {} invalidated {} \
         false positives {} re-registrations {} one-use {}",
        r.transfers,
        r.corruptions,
        r.errors,
        r.stats.hits,
        r.stats.misses,
        r.stats.invalidated,
        r.stats.false_positives,
        r.stats.reregistrations,
        r.stats.uncacheable
    );
    if let Some(e) = &r.first_error {
        println!("first error: {e}");
    }
    let ok = if a.no_invalidation {
        r.corruptions > 0
    } else {
        r.corruptions == 0 && r.errors == 0
    };
    println!("{}", if ok { "PASS" } else { "FAIL" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
