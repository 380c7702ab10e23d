//! Command line.

use regcache::monitor::select::Choice;

pub const USAGE: &str =
    "usage: regcache-rdmatest (--server --addr IP:PORT | --client --connect IP:PORT)
    [--dev NAME] [--monitor auto|ummunotify|uffd|none] [--no-invalidation] [--transfers N]
    [--seed S] [--slots N] [--max-size BYTES] [--fork-every N] [--gid-index I] [--bench] [--quiet]
       regcache-rdmatest --bench-check [--dev NAME]   (no peer: CHECK vs a registration)";

pub struct Opts {
    pub server: bool,
    pub addr: String,
    pub dev: Option<String>,
    pub monitor: Choice,
    pub no_invalidation: bool,
    pub transfers: u64,
    pub seed: u64,
    pub slots: usize,
    pub max_size: usize,
    pub fork_every: u64,
    pub gid_index: Option<u8>,
    pub bench: bool,
    /// --bench-check: no peer, no role.
    pub bench_check: bool,
    pub quiet: bool,
}

impl Opts {
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Opts, String> {
        let mut o = Opts {
            server: false,
            addr: String::new(),
            dev: None,
            monitor: Choice::Auto,
            no_invalidation: false,
            transfers: 10_000,
            seed: 0x5eed,
            slots: 12,
            max_size: 4 << 20,
            fork_every: 2500,
            gid_index: None,
            bench: false,
            bench_check: false,
            quiet: false,
        };
        let mut role = None;
        while let Some(a) = args.next() {
            let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match a.as_str() {
                "--server" => role = Some(true),
                "--client" => role = Some(false),
                "--addr" | "--connect" => o.addr = val(&a)?,
                "--dev" => o.dev = Some(val(&a)?),
                "--monitor" => o.monitor = val(&a)?.parse().map_err(|e| format!("{e}"))?,
                "--no-invalidation" => o.no_invalidation = true,
                "--transfers" => o.transfers = num(&val(&a)?)?,
                "--seed" => o.seed = num(&val(&a)?)?,
                "--slots" => o.slots = num(&val(&a)?)? as usize,
                "--max-size" => o.max_size = num(&val(&a)?)? as usize,
                "--fork-every" => o.fork_every = num(&val(&a)?)?,
                "--gid-index" => o.gid_index = Some(num(&val(&a)?)? as u8),
                "--bench" => o.bench = true,
                "--bench-check" => o.bench_check = true,
                "--quiet" => o.quiet = true,
                "-h" | "--help" => return Err("help".into()),
                _ => return Err(format!("unknown argument {a}")),
            }
        }
        if o.bench_check {
            return Ok(o);
        }
        o.server = role.ok_or("--server or --client is required")?;
        if o.addr.is_empty() {
            return Err("--addr (server) or --connect (client) is required".into());
        }
        Ok(o)
    }

    pub fn role(&self) -> &'static str {
        if self.bench_check {
            "bench-check"
        } else if self.server {
            "server"
        } else {
            "client"
        }
    }
}

fn num(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s}: {e}"))
}
