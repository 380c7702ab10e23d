//! The local side (server): churns its buffers, gets every registration from the cache, tells
//! the peer where to WRITE / READ / SEND, and checks every byte.

use crate::opts::Opts;
use crate::pattern;
use crate::pool::{Pool, OPS};
use crate::qp::status_str;
use crate::wire::*;
use crate::Side;
use regcache::{Access, Error};
use regcache_oracle::mem;
use regcache_oracle::rng::Rng;
use std::time::{Duration, Instant};

pub const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Tally {
    done: [u64; 3],
    bytes: u64,
    corruptions: u64,
    /// Corruptions by WRITE / READ / SEND.
    bad: [u64; 3],
    largest: usize,
    remote_errors: u64,
    failures: u64,
    forks: u64,
    first: Option<String>,
}

impl Tally {
    fn note(&mut self, what: String) {
        if self.first.is_none() {
            self.first = Some(what);
        }
    }
}

/// Fills `[addr, addr+len)` (a live buffer of ours) with the pattern of `seed`.
fn fill(addr: usize, len: usize, seed: u64) {
    // SAFETY: the range is a live buffer of our pool; no Rust reference points into it.
    unsafe { pattern::fill(addr, len, seed) };
}

/// Whether `[addr, addr+len)` (a live buffer of ours whose transfer has completed) holds the
/// pattern of `seed`; else the first differing offset.
pub fn check(addr: usize, len: usize, seed: u64) -> Result<(), usize> {
    // SAFETY: a live buffer of ours; nothing writes it any more (the transfer completed).
    unsafe { pattern::check(addr, len, seed) }
}

fn zero(addr: usize, len: usize) {
    // SAFETY: a live buffer of ours, not referenced by Rust code.
    unsafe { std::ptr::write_bytes(addr as *mut u8, 0, len) };
}

pub fn run(s: &mut Side, o: &Opts) -> Result<bool, String> {
    let mut pool = Pool::new(o.seed, o.slots, o.max_size);
    let mut rng = Rng::new(o.seed ^ 0xa11ce);
    let mut t = Tally::default();
    let access = Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ;
    let start = Instant::now();
    let mut qp_dead = false;
    for n in 0..o.transfers {
        if o.fork_every > 0 && n > 0 && n % o.fork_every == 0 {
            fork_check(s, &pool, &mut t);
        }
        let slot = rng.range(0, pool.slots());
        pool.churn(slot);
        let use_slot = if rng.chance(50) {
            slot
        } else {
            rng.range(0, pool.slots())
        };
        let b = pool.ensure(use_slot, mem::PAGE);
        // Mostly the whole buffer, sometimes a part of it.
        let (addr, len) = if rng.chance(75) || b.len < 2 * mem::PAGE {
            (b.addr, b.len)
        } else {
            let off = rng.range(0, b.len / 2);
            (b.addr + off, rng.range(1, b.len - off + 1))
        };
        let seed = (n << 24) ^ (rng.next_u64() & 0xff_ffff) ^ (o.seed << 48);
        let op = match rng.range(0, 10) {
            0..=3 => OP_WRITE,
            4..=7 => OP_READ,
            _ => OP_SEND,
        };
        let h = match s.cache.get(addr, len, access) {
            Ok(h) => h,
            Err(e) => {
                t.failures += 1;
                t.note(format!("transfer {n}: cache.get({addr:#x}, {len}): {e}"));
                break;
            }
        };
        let (lkey, rkey) = (h.lkey(), h.rkey());
        match op {
            OP_WRITE => zero(addr, len),
            OP_READ => fill(addr, len, seed),
            _ => {
                zero(addr, len);
                if let Err(e) = s.qp.post_recv(n, addr, len, lkey) {
                    t.failures += 1;
                    t.note(format!("transfer {n}: {e}"));
                    break;
                }
            }
        }
        let req = [op, addr as u64, rkey as u64, len as u64, seed, 0];
        let resp = s.ctl.send(req).and_then(|_| s.ctl.recv());
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Err(format!("control channel: {e}")),
        };
        let what = ["WRITE", "READ", "SEND"][(op - 1) as usize];
        let mut dead = false;
        match resp[0] {
            ST_OK => {}
            ST_MISMATCH => {
                t.corruptions += 1;
                t.bad[1] += 1;
                t.note(format!(
                    "transfer {n}: {what} {len} B at {addr:#x}: the peer read other bytes (offset {})",
                    resp[1]
                ));
            }
            ST_WC_ERROR => {
                t.remote_errors += 1;
                dead = true;
                t.note(format!(
                    "transfer {n}: {what} {len} B at {addr:#x} rkey {rkey:#x}: peer completion {}",
                    status_str(resp[1] as u32)
                ));
            }
            _ => {
                t.failures += 1;
                dead = true;
                t.note(format!(
                    "transfer {n}: peer failed: {}",
                    std::io::Error::from_raw_os_error(resp[1] as i32)
                ));
            }
        }
        if op == OP_SEND && resp[0] != ST_FAILED {
            match s.qp.wait(
                n,
                if dead {
                    Duration::from_secs(5)
                } else {
                    TIMEOUT
                },
            ) {
                Ok(c) if c.ok() && c.byte_len as usize == len => {}
                Ok(c) => {
                    t.remote_errors += 1;
                    dead = true;
                    t.note(format!(
                        "transfer {n}: RECV {len} B at {addr:#x}: {} ({} B)",
                        status_str(c.status),
                        c.byte_len
                    ));
                }
                Err(e) => {
                    t.failures += 1;
                    dead = true;
                    t.note(format!("transfer {n}: RECV: {e}"));
                }
            }
        }
        if !dead && op != OP_READ {
            if let Err(off) = check(addr, len, seed) {
                t.corruptions += 1;
                t.bad[(op - 1) as usize] += 1;
                t.note(format!(
                    "transfer {n}: {what} {len} B into {addr:#x}: byte {off} differs (stale registration?)"
                ));
            }
        }
        drop(h);
        if dead {
            // An RC queue pair in error stays in error: the run ends here.
            qp_dead = true;
            break;
        }
        t.done[(op - 1) as usize] += 1;
        t.bytes += len as u64;
        t.largest = t.largest.max(len);
        if !o.quiet && (n + 1) % 2000 == 0 {
            eprintln!(
                "server: {} transfers, {:.1} s, {} corruptions",
                n + 1,
                start.elapsed().as_secs_f64(),
                t.corruptions
            );
        }
    }
    if !qp_dead {
        let _ = s.ctl.send([OP_QUIT, 0, 0, 0, 0, 0]);
        let _ = s.ctl.recv();
    }
    pool.clear();
    report(s, o, &pool, &t, start.elapsed());
    let detected = t.corruptions + t.remote_errors;
    Ok(if o.no_invalidation {
        detected > 0 && t.failures == 0
    } else {
        detected == 0 && t.failures == 0 && t.done.iter().sum::<u64>() == o.transfers
    })
}

/// fork() while registrations are cached (and one is held): the child must see the cache
/// disabled, may scribble over its copies of every buffer, and the parent's transfers after
/// that must still be correct (checked by the following transfers).
fn fork_check(s: &Side, pool: &Pool, t: &mut Tally) {
    let bufs: Vec<_> = pool.buffers().copied().collect();
    let held = bufs.first().and_then(|b| {
        s.cache
            .get(b.addr, b.len, Access::LOCAL_WRITE | Access::REMOTE_WRITE)
            .ok()
    });
    // SAFETY: the child only calls Cache::get (which returns ForkedChild before touching any
    // lock), writes to its own copies of our buffers and leaves with _exit: no allocation, no
    // lock another thread may have held at fork time.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match bufs
            .first()
            .map(|b| s.cache.get(b.addr, b.len, Access::LOCAL_WRITE))
        {
            Some(Err(Error::ForkedChild)) | None => 0,
            _ => 1,
        };
        for b in &bufs {
            // SAFETY: the child's private copy of a live buffer.
            unsafe { std::ptr::write_bytes(b.addr as *mut u8, 0xc5, b.len) };
        }
        // SAFETY: leave without destructors or atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    drop(held);
    if pid < 0 || r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        t.failures += 1;
        t.note(format!("fork check: child status {status:#x} (pid {pid})"));
    }
    t.forks += 1;
}

fn report(s: &Side, o: &Opts, pool: &Pool, t: &Tally, el: Duration) {
    let st = s.cache.stats();
    let total: u64 = t.done.iter().sum();
    let ops: Vec<String> = OPS
        .iter()
        .zip(pool.ops.iter())
        .map(|(n, c)| format!("{n}={c}"))
        .collect();
    println!(
        "server: {total} transfers (write {} read {} send {}) {:.1} MiB, largest {} KiB, in {:.1} s; churn: {}; forks {}",
        t.done[0],
        t.done[1],
        t.done[2],
        t.bytes as f64 / (1 << 20) as f64,
        t.largest >> 10,
        el.as_secs_f64(),
        ops.join(" "),
        t.forks
    );
    println!(
        "server: cache hits {} misses {} invalidated {} registrations {} deregistrations {}",
        st.hits, st.misses, st.invalidated, st.registrations, st.deregistrations
    );
    if let Some(f) = &t.first {
        println!("server: first problem: {f}");
    }
    let verdict = if o.no_invalidation {
        if t.corruptions + t.remote_errors > 0 {
            "PASS (negative control detected stale registrations)"
        } else {
            "FAIL (negative control saw nothing)"
        }
    } else if t.corruptions + t.remote_errors + t.failures == 0 {
        "PASS"
    } else {
        "FAIL"
    };
    println!(
        "RESULT monitor={} invalidation={} transfers={total} corruptions={} (write {} read {} send {}) remote_errors={} failures={} {verdict}",
        s.cache.monitor_kind().name(),
        if o.no_invalidation { "off" } else { "on" },
        t.corruptions,
        t.bad[0],
        t.bad[1],
        t.bad[2],
        t.remote_errors,
        t.failures
    );
}
