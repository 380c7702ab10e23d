//! regcache-rdmatest: two processes, one per RDMA device, connect RC queue pairs and move data
//! through registrations obtained from the cache while the "local" side (the server) churns its
//! buffers in the torture oracle's address-reusing patterns. Every transfer carries a unique
//! pattern and is checked byte for byte.
//!
//!   regcache-rdmatest --server --dev rxe0 --addr 10.9.0.1:7471 [--monitor M] [--transfers N]
//!   regcache-rdmatest --client --dev rxe1 --connect 10.9.0.1:7471 [--monitor M]
//!
//! `--no-invalidation` (both sides) is the negative control: it must detect corruption or a
//! remote access error. `--bench` (server) measures registration cost and transfer throughput;
//! `--bench-check` (alone) what one revalidation CHECK costs against a registration.

mod bench;
mod check_cost;
mod local;
mod opts;
mod pattern;
mod peer;
mod pool;
mod qp;
mod wire;

use opts::Opts;
use regcache::monitor::select;
use regcache::registrar::verbs::{is_no_device, VerbsRegistrar};
use regcache::{Cache, Config};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything one side owns. Field order is drop order: the QP before the cache, the cache
/// (deregistering everything) before the registrar's PD.
pub struct Side {
    pub qp: qp::Qp,
    pub ctl: wire::Ctl,
    pub cache: Arc<Cache>,
    pub reg: Arc<VerbsRegistrar>,
}

fn main() -> ExitCode {
    let o = match Opts::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("regcache-rdmatest: {e}\n{}", opts::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("regcache-rdmatest ({}): {e}", o.role());
            ExitCode::from(if e.starts_with("no RDMA device") {
                3
            } else {
                1
            })
        }
    }
}

fn run(o: &Opts) -> Result<bool, String> {
    if o.bench_check {
        return check_cost::run(o.dev.as_deref());
    }
    let reg = match VerbsRegistrar::open(o.dev.as_deref()) {
        Ok(r) => Arc::new(r),
        Err(e) if is_no_device(&e) => return Err(e.to_string()),
        Err(e) => return Err(format!("opening the device: {e}")),
    };
    let (monitor, _) = select::open(o.monitor).map_err(|e| format!("monitor: {e}"))?;
    let cfg = Config {
        danger_ignore_invalidations: o.no_invalidation,
        ..Config::default()
    };
    let cache = Arc::new(Cache::new(monitor, reg.clone(), cfg));
    let qp = qp::Qp::new(reg.pd(), reg.port(), o.gid_index).map_err(|e| e.to_string())?;
    let stream = if o.server {
        let l = TcpListener::bind(&o.addr).map_err(|e| format!("listen {}: {e}", o.addr))?;
        l.accept().map_err(|e| format!("accept: {e}"))?.0
    } else {
        connect_retry(&o.addr)?
    };
    let mut ctl = wire::Ctl::new(stream).map_err(|e| e.to_string())?;
    let psn = (std::process::id() as u64 ^ o.seed) as u32 & 0xff_ffff;
    let me = qp.endpoint(psn).map_err(|e| e.to_string())?;
    let msg = [
        me.qpn as u64,
        me.psn as u64,
        u64::from_le_bytes(me.gid[..8].try_into().unwrap_or_default()),
        u64::from_le_bytes(me.gid[8..].try_into().unwrap_or_default()),
        me.mtu as u64,
        0,
    ];
    ctl.send(msg).map_err(|e| e.to_string())?;
    let r = ctl.recv().map_err(|e| e.to_string())?;
    let mut gid = [0u8; 16];
    gid[..8].copy_from_slice(&r[2].to_le_bytes());
    gid[8..].copy_from_slice(&r[3].to_le_bytes());
    let them = qp::Endpoint {
        qpn: r[0] as u32,
        psn: r[1] as u32,
        gid,
        mtu: r[4] as u32,
    };
    qp.connect(&me, &them).map_err(|e| e.to_string())?;
    if !o.quiet {
        eprintln!(
            "{}: {} port {} qpn {} -> qpn {}, monitor {}, invalidation {}, fork safety {:?}",
            o.role(),
            reg.device_name(),
            reg.port(),
            me.qpn,
            them.qpn,
            cache.monitor_kind().name(),
            if o.no_invalidation { "OFF" } else { "on" },
            reg.fork_safety(),
        );
    }
    let mut side = Side {
        qp,
        ctl,
        cache,
        reg,
    };
    match (o.server, o.bench) {
        (true, true) => bench::run(&mut side, o),
        (true, false) => local::run(&mut side, o),
        (false, _) => peer::run(&mut side, o),
    }
}

fn connect_retry(addr: &str) -> Result<TcpStream, String> {
    let start = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() > Duration::from_secs(60) => {
                return Err(format!("connect {addr}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
