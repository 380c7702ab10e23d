//! Building a cache on the software NIC with the monitor the user asked for (or the best one).

use regcache::monitor::select::{self, Choice};
use regcache::registrar::uring::SoftNic;
use regcache::{Cache, Config, Result};
use std::sync::Arc;

pub fn software_nic_cache(monitor: &str, cfg: Config) -> Result<(Cache, Arc<SoftNic>)> {
    let choice: Choice = match monitor {
        "" => Choice::from_env()?,
        m => m.parse()?,
    };
    let nic = Arc::new(SoftNic::new(regcache::registrar::uring::MAX_SLOTS)?);
    let (mon, why) = select::open(choice)?;
    for w in &why {
        eprintln!("regcache: monitor not used: {w}");
    }
    Ok((Cache::new(mon, nic.clone(), cfg), nic))
}
