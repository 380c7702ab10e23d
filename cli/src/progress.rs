//! A progress line on stderr for long runs: redrawn in place on a terminal, a line every 10%
//! otherwise (so CI logs stay short).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

pub struct Progress {
    what: String,
    total: u64,
    tty: bool,
    last_decile: AtomicU64,
    start: Instant,
}

impl Progress {
    pub fn new(what: &str, total: u64) -> Self {
        Progress {
            what: what.to_string(),
            total: total.max(1),
            tty: std::io::stderr().is_terminal(),
            last_decile: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    pub fn update(&self, done: u64) {
        let pct = (done.min(self.total) * 100) / self.total;
        let secs = self.start.elapsed().as_secs_f64();
        if self.tty {
            eprint!(
                "\r{}: {pct:3}% ({done}/{}) {secs:.1}s ",
                self.what, self.total
            );
            let _ = std::io::stderr().flush();
        } else if pct / 10 > self.last_decile.load(Relaxed) {
            // Relaxed: a display throttle only.
            self.last_decile.store(pct / 10, Relaxed);
            eprintln!("{}: {pct}% ({done}/{}) {secs:.1}s", self.what, self.total);
        }
    }

    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
