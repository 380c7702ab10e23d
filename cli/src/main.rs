//! `regcache`: the demo (an OSU-style workload on the software NIC), the torture soak, and
//! operator tools.

mod demo;
mod progress;
mod setup;
mod soak;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Demo(a) => demo::run(&a),
        Cmd::Torture(a) => soak::run(&a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("regcache: {e}");
            ExitCode::from(2)
        }
    }
}
