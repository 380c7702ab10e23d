//! One RC queue pair over rdma-sys: create, connect (INIT -> RTR -> RTS with a RoCE GRH),
//! post WRITE / READ / SEND / RECV, and wait for completions on a completion channel (no busy
//! polling: under emulation the rxe kernel threads need the CPUs).

use rdma_sys::*;
use std::io;
use std::time::{Duration, Instant};

/// What one side tells the other to connect.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    pub qpn: u32,
    pub psn: u32,
    pub gid: [u8; 16],
    pub mtu: u32,
}

/// A completion: (wr_id, status, opcode, byte_len).
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    pub wr_id: u64,
    pub status: u32,
    pub byte_len: u32,
}

impl Completion {
    pub fn ok(&self) -> bool {
        self.status == ibv_wc_status::IBV_WC_SUCCESS
    }
}

/// Readable name of a work-completion status.
pub fn status_str(status: u32) -> String {
    // SAFETY: ibv_wc_status_str returns a static string for any value.
    let p = unsafe { ibv_wc_status_str(status) };
    if p.is_null() {
        return format!("status {status}");
    }
    // SAFETY: non-null static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

pub struct Qp {
    ctx: *mut ibv_context,
    port: u8,
    gid_index: u8,
    chan: *mut ibv_comp_channel,
    cq: *mut ibv_cq,
    qp: *mut ibv_qp,
    /// Completions polled while waiting for another one.
    pending: Vec<Completion>,
}

fn os_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn rc_err(what: &str, rc: i32) -> io::Error {
    let e = io::Error::from_raw_os_error(rc.abs());
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Qp {
    /// Creates a CQ (with a completion channel) and an RC QP on `pd`. `gid_index`: None picks
    /// the port's IPv4-mapped GID (RoCE v2 over the veth address).
    pub fn new(pd: *mut ibv_pd, port: u8, gid_index: Option<u8>) -> io::Result<Qp> {
        // SAFETY: `pd` is the registrar's live PD.
        let ctx = unsafe { (*pd).context };
        let gid_index = match gid_index {
            Some(i) => i,
            None => ipv4_gid_index(ctx, port)?,
        };
        // SAFETY: `ctx` is open.
        let chan = unsafe { ibv_create_comp_channel(ctx) };
        if chan.is_null() {
            return Err(os_err("ibv_create_comp_channel"));
        }
        // SAFETY: `ctx` and `chan` are live; no user context.
        let cq = unsafe { ibv_create_cq(ctx, 256, std::ptr::null_mut(), chan, 0) };
        if cq.is_null() {
            return Err(os_err("ibv_create_cq"));
        }
        // SAFETY: plain old data, all fields set below or meaningfully zero.
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = cq;
        init.recv_cq = cq;
        init.qp_type = ibv_qp_type::IBV_QPT_RC;
        init.cap.max_send_wr = 64;
        init.cap.max_recv_wr = 64;
        init.cap.max_send_sge = 1;
        init.cap.max_recv_sge = 1;
        // SAFETY: `pd` is live, `init` is a valid init attribute.
        let qp = unsafe { ibv_create_qp(pd, &mut init) };
        if qp.is_null() {
            return Err(os_err("ibv_create_qp"));
        }
        Ok(Qp {
            ctx,
            port,
            gid_index,
            chan,
            cq,
            qp,
            pending: Vec::new(),
        })
    }

    /// Our endpoint for the peer.
    pub fn endpoint(&self, psn: u32) -> io::Result<Endpoint> {
        let gid = query_gid(self.ctx, self.port, self.gid_index)?;
        // SAFETY: plain old data.
        let mut pa: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: open context, valid port, writable attr.
        let rc = unsafe { ___ibv_query_port(self.ctx, self.port, &mut pa) };
        if rc != 0 {
            return Err(rc_err("ibv_query_port", rc));
        }
        Ok(Endpoint {
            // SAFETY: `qp` is live.
            qpn: unsafe { (*self.qp).qp_num },
            psn: psn & 0xff_ffff,
            gid,
            mtu: pa.active_mtu,
        })
    }

    fn modify(&self, attr: &mut ibv_qp_attr, mask: ibv_qp_attr_mask, what: &str) -> io::Result<()> {
        // SAFETY: `qp` is live and `attr` holds every field `mask` names.
        let rc = unsafe { ibv_modify_qp(self.qp, attr, mask.0 as i32) };
        if rc != 0 {
            return Err(rc_err(what, rc));
        }
        Ok(())
    }

    /// INIT -> RTR -> RTS towards `remote`.
    pub fn connect(&self, local: &Endpoint, remote: &Endpoint) -> io::Result<()> {
        use ibv_qp_attr_mask as M;
        // SAFETY: plain old data.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = self.port;
        a.qp_access_flags = (ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE
            | ibv_access_flags::IBV_ACCESS_REMOTE_READ)
            .0;
        self.modify(
            &mut a,
            M::IBV_QP_STATE | M::IBV_QP_PKEY_INDEX | M::IBV_QP_PORT | M::IBV_QP_ACCESS_FLAGS,
            "modify_qp INIT",
        )?;

        // SAFETY: plain old data.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTR;
        a.path_mtu = local.mtu.min(remote.mtu);
        a.dest_qp_num = remote.qpn;
        a.rq_psn = remote.psn;
        a.max_dest_rd_atomic = 4;
        a.min_rnr_timer = 12;
        a.ah_attr.is_global = 1;
        a.ah_attr.grh.dgid = ibv_gid { raw: remote.gid };
        a.ah_attr.grh.sgid_index = self.gid_index;
        a.ah_attr.grh.hop_limit = 1;
        a.ah_attr.sl = 0;
        a.ah_attr.port_num = self.port;
        self.modify(
            &mut a,
            M::IBV_QP_STATE
                | M::IBV_QP_AV
                | M::IBV_QP_PATH_MTU
                | M::IBV_QP_DEST_QPN
                | M::IBV_QP_RQ_PSN
                | M::IBV_QP_MAX_DEST_RD_ATOMIC
                | M::IBV_QP_MIN_RNR_TIMER,
            "modify_qp RTR",
        )?;

        // SAFETY: plain old data.
        let mut a: ibv_qp_attr = unsafe { std::mem::zeroed() };
        a.qp_state = ibv_qp_state::IBV_QPS_RTS;
        // Local ACK timeout 4.096 us * 2^18 = 1.07 s (UCX's RC default is 1 s). At 2^14 (67 ms)
        // the emulated guest's slowness alone expired it: tens of spurious retransmissions a
        // run, and the 6.1 kernel's rxe could stall for good in one of them (docs/bench-rdma.md).
        a.timeout = 18;
        a.retry_cnt = 7;
        a.rnr_retry = 7;
        a.sq_psn = local.psn;
        a.max_rd_atomic = 4;
        self.modify(
            &mut a,
            M::IBV_QP_STATE
                | M::IBV_QP_TIMEOUT
                | M::IBV_QP_RETRY_CNT
                | M::IBV_QP_RNR_RETRY
                | M::IBV_QP_SQ_PSN
                | M::IBV_QP_MAX_QP_RD_ATOMIC,
            "modify_qp RTS",
        )
    }

    /// Posts one signalled WRITE, READ or SEND of `[addr, addr+len)` (lkey) to
    /// `[raddr, raddr+len)` (rkey; unused for SEND).
    #[allow(clippy::too_many_arguments)]
    pub fn post_send(
        &self,
        opcode: u32,
        wr_id: u64,
        addr: usize,
        len: usize,
        lkey: u32,
        raddr: u64,
        rkey: u32,
    ) -> io::Result<()> {
        let mut sge = ibv_sge {
            addr: addr as u64,
            length: len as u32,
            lkey,
        };
        // SAFETY: plain old data (unions of plain old data).
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        wr.opcode = opcode;
        wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        wr.wr.rdma = rdma_t {
            remote_addr: raddr,
            rkey,
        };
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: `qp` is live; `wr` and `sge` outlive the call (the provider copies them).
        let rc = unsafe { ibv_post_send(self.qp, &mut wr, &mut bad) };
        if rc != 0 {
            return Err(rc_err("ibv_post_send", rc));
        }
        Ok(())
    }

    /// Posts one receive into `[addr, addr+len)`.
    pub fn post_recv(&self, wr_id: u64, addr: usize, len: usize, lkey: u32) -> io::Result<()> {
        let mut sge = ibv_sge {
            addr: addr as u64,
            length: len as u32,
            lkey,
        };
        let mut wr = ibv_recv_wr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
        // SAFETY: `qp` is live; `wr` and `sge` outlive the call.
        let rc = unsafe { ibv_post_recv(self.qp, &mut wr, &mut bad) };
        if rc != 0 {
            return Err(rc_err("ibv_post_recv", rc));
        }
        Ok(())
    }

    fn poll(&mut self) {
        loop {
            // SAFETY: ibv_wc is plain old data.
            let mut wc: [ibv_wc; 8] = unsafe { std::mem::zeroed() };
            // SAFETY: `cq` is live and `wc` has room for 8 entries.
            let n = unsafe { ibv_poll_cq(self.cq, 8, wc.as_mut_ptr()) };
            if n <= 0 {
                return;
            }
            for w in &wc[..n as usize] {
                self.pending.push(Completion {
                    wr_id: w.wr_id,
                    status: w.status,
                    byte_len: w.byte_len,
                });
            }
        }
    }

    /// Waits for the completion of `wr_id` (up to `timeout`).
    pub fn wait(&mut self, wr_id: u64, timeout: Duration) -> io::Result<Completion> {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll();
            if let Some(i) = self.pending.iter().position(|c| c.wr_id == wr_id) {
                return Ok(self.pending.swap_remove(i));
            }
            // Arm, then poll again (a completion may have arrived before arming).
            // SAFETY: `cq` is live.
            let rc = unsafe { ibv_req_notify_cq(self.cq, 0) };
            if rc != 0 {
                return Err(rc_err("ibv_req_notify_cq", rc));
            }
            self.poll();
            if let Some(i) = self.pending.iter().position(|c| c.wr_id == wr_id) {
                return Ok(self.pending.swap_remove(i));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no completion for work request {wr_id}"),
                ));
            }
            let mut pfd = libc::pollfd {
                // SAFETY: `chan` is live.
                fd: unsafe { (*self.chan).fd },
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().min(1000) as i32;
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
            if r > 0 {
                let mut ev_cq: *mut ibv_cq = std::ptr::null_mut();
                let mut ev_ctx: *mut libc::c_void = std::ptr::null_mut();
                // SAFETY: the channel has an event (POLLIN); out-pointers are writable.
                if unsafe { ibv_get_cq_event(self.chan, &mut ev_cq, &mut ev_ctx) } == 0 {
                    // SAFETY: one event of `ev_cq` was just taken.
                    unsafe { ibv_ack_cq_events(ev_cq, 1) };
                }
            }
        }
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // SAFETY: each object was created by `new`, is destroyed once, children first.
        unsafe {
            ibv_destroy_qp(self.qp);
            ibv_destroy_cq(self.cq);
            ibv_destroy_comp_channel(self.chan);
        }
    }
}

fn query_gid(ctx: *mut ibv_context, port: u8, index: u8) -> io::Result<[u8; 16]> {
    let mut gid = ibv_gid { raw: [0; 16] };
    // SAFETY: open context, writable gid.
    let rc = unsafe { ibv_query_gid(ctx, port, index as i32, &mut gid) };
    if rc != 0 {
        return Err(rc_err("ibv_query_gid", rc));
    }
    // SAFETY: every bit pattern of the union is a valid [u8; 16].
    Ok(unsafe { gid.raw })
}

/// Index of the first IPv4-mapped GID (::ffff:a.b.c.d) of the port.
fn ipv4_gid_index(ctx: *mut ibv_context, port: u8) -> io::Result<u8> {
    // SAFETY: plain old data.
    let mut pa: ibv_port_attr = unsafe { std::mem::zeroed() };
    // SAFETY: open context, writable attr.
    let rc = unsafe { ___ibv_query_port(ctx, port, &mut pa) };
    if rc != 0 {
        return Err(rc_err("ibv_query_port", rc));
    }
    for i in 0..pa.gid_tbl_len.clamp(0, 256) {
        if let Ok(g) = query_gid(ctx, port, i as u8) {
            if g[..10].iter().all(|&b| b == 0) && g[10] == 0xff && g[11] == 0xff {
                return Ok(i as u8);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "no IPv4-mapped GID on the port (is the netdev addressed?)",
    ))
}
