//! The peer (client): for each request, takes a buffer of its own churned pool, gets its
//! registration from its own cache, and does the RDMA WRITE / READ / SEND the local side asked
//! for. It checks what an RDMA READ brought; the local side checks the rest.

use crate::local::{check, TIMEOUT};
use crate::opts::Opts;
use crate::pool::Pool;
use crate::wire::*;
use crate::Side;
use rdma_sys::ibv_wr_opcode;
use regcache::{Access, Registrar};
use regcache_oracle::mem;

pub fn run(s: &mut Side, o: &Opts) -> Result<bool, String> {
    let mut pool = Pool::new(o.seed ^ 0x9ee4, o.slots, o.max_size);
    let access = Access::LOCAL_WRITE | Access::REMOTE_READ | Access::REMOTE_WRITE;
    let mut bench: Option<(usize, usize, regcache::Registration)> = None;
    let mut wr_id = 0u64;
    let mut ok = true;
    // The local side ends the connection (recv fails) after a queue-pair error.
    while let Ok(req) = s.ctl.recv() {
        let [op, raddr, rkey, len, seed, _] = req;
        let len = len as usize;
        wr_id += 1;
        if op == OP_QUIT {
            let _ = s.ctl.send([ST_OK, 0, 0, 0, 0, 0]);
            break;
        }
        if op == OP_BENCH_WRITE {
            let (a, blen, r) = match bench {
                Some(b) if b.1 >= len => b,
                old => {
                    if let Some((a, l, r)) = old {
                        s.reg.deregister(&r, a, l);
                        mem::unmap(a, l);
                    }
                    let l = len.next_multiple_of(mem::PAGE);
                    let a = mem::map(l, None).ok_or("mmap")?;
                    let r = s.reg.register(a, l, access).map_err(|e| e.to_string())?;
                    (a, l, r)
                }
            };
            bench = Some((a, blen, r));
            let st = post_wait(
                s,
                ibv_wr_opcode::IBV_WR_RDMA_WRITE,
                wr_id,
                a,
                len,
                r.lkey,
                raddr,
                rkey,
            );
            s.ctl.send(st).map_err(|e| e.to_string())?;
            continue;
        }
        let slot = pool.rng.range(0, pool.slots());
        pool.churn(slot);
        let b = pool.ensure(slot, len);
        let addr = b.addr;
        let cache = std::sync::Arc::clone(&s.cache);
        let h = match cache.get(addr, len, access) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("client: cache.get({addr:#x}, {len}): {e}");
                ok = false;
                s.ctl
                    .send([ST_FAILED, e.errno() as u64, 0, 0, 0, 0])
                    .map_err(|e| e.to_string())?;
                continue;
            }
        };
        let opcode = match op {
            OP_WRITE => ibv_wr_opcode::IBV_WR_RDMA_WRITE,
            OP_READ => ibv_wr_opcode::IBV_WR_RDMA_READ,
            _ => ibv_wr_opcode::IBV_WR_SEND,
        };
        if op == OP_READ {
            // SAFETY: a live buffer of our pool, not referenced by Rust code.
            unsafe { std::ptr::write_bytes(addr as *mut u8, 0, len) };
        } else {
            // SAFETY: as above.
            unsafe { crate::pattern::fill(addr, len, seed) };
        }
        let mut st = post_wait(s, opcode, wr_id, addr, len, h.lkey(), raddr, rkey);
        if st[0] == ST_OK && op == OP_READ {
            if let Err(off) = check(addr, len, seed) {
                st = [ST_MISMATCH, off as u64, 0, 0, 0, 0];
            }
        }
        drop(h);
        s.ctl.send(st).map_err(|e| e.to_string())?;
    }
    pool.clear();
    if let Some((a, l, r)) = bench {
        s.reg.deregister(&r, a, l);
        mem::unmap(a, l);
    }
    let st = s.cache.stats();
    if !o.quiet {
        eprintln!(
            "client: cache hits {} misses {} invalidated {}",
            st.hits, st.misses, st.invalidated
        );
    }
    Ok(ok)
}

#[allow(clippy::too_many_arguments)]
fn post_wait(
    s: &mut Side,
    opcode: u32,
    wr_id: u64,
    addr: usize,
    len: usize,
    lkey: u32,
    raddr: u64,
    rkey: u64,
) -> Msg {
    if let Err(e) =
        s.qp.post_send(opcode, wr_id, addr, len, lkey, raddr, rkey as u32)
    {
        eprintln!("client: {e}");
        return [
            ST_FAILED,
            e.raw_os_error().unwrap_or(libc::EIO) as u64,
            0,
            0,
            0,
            0,
        ];
    }
    match s.qp.wait(wr_id, TIMEOUT) {
        Ok(c) if c.ok() => [ST_OK, 0, 0, 0, 0, 0],
        Ok(c) => [ST_WC_ERROR, c.status as u64, 0, 0, 0, 0],
        Err(e) => {
            eprintln!("client: {e}");
            [ST_FAILED, libc::ETIMEDOUT as u64, 0, 0, 0, 0]
        }
    }
}
