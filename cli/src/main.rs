//! `regcache`: the demo (an OSU-style workload on the software NIC), the torture soak, and
//! operator tools.

mod demo;
mod doctor;
mod progress;
mod setup;
mod soak;
mod stats;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "regcache",
    version,
    about = "RDMA registration cache kept correct by ummunotify"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// OSU-style transfers 4 KiB..4 MiB on the software NIC, buffers reused and churned, every
    /// transfer validated; reports hit rate and the speedup over registering every transfer.
    Demo(demo::Args),
    /// The torture oracle as a soak: random unmap/remap churn, every transfer validated.
    Torture(soak::Args),
    /// Why caching is or is not active on this node: module, device, userfaultfd, memlock
    /// limit, RDMA ports, io_uring, and the monitor `auto` picks. Exit 1 when caching is off.
    Doctor(doctor::Args),
    /// Summarise a running process's metrics (its /metrics endpoint or textfile): hit rate,
    /// false-positive rate, pinned bytes, registration latency.
    Stats(stats::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Demo(a) => demo::run(&a),
        Cmd::Torture(a) => soak::run(&a),
        Cmd::Doctor(a) => doctor::run(&a),
        Cmd::Stats(a) => stats::run(&a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("regcache: {e}");
            ExitCode::from(2)
        }
    }
}
