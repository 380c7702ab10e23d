//! The TCP control channel: fixed messages of six little-endian u64 words.

use std::io::{self, Read, Write};
use std::net::TcpStream;

pub const OP_WRITE: u64 = 1;
pub const OP_READ: u64 = 2;
pub const OP_SEND: u64 = 3;
pub const OP_QUIT: u64 = 4;
/// Benchmark WRITE: the peer writes from one buffer registered up front; nothing is checked.
pub const OP_BENCH_WRITE: u64 = 5;

pub const ST_OK: u64 = 0;
/// The peer's own check failed (RDMA READ brought bytes other than the pattern).
pub const ST_MISMATCH: u64 = 1;
/// The peer's work request completed in error (detail: the ibv_wc_status).
pub const ST_WC_ERROR: u64 = 2;
/// The peer could not get a registration or post (detail: errno).
pub const ST_FAILED: u64 = 3;

pub type Msg = [u64; 6];

pub struct Ctl(TcpStream);

impl Ctl {
    pub fn new(s: TcpStream) -> io::Result<Ctl> {
        s.set_nodelay(true)?;
        Ok(Ctl(s))
    }

    pub fn send(&mut self, m: Msg) -> io::Result<()> {
        let mut b = [0u8; 48];
        for (i, w) in m.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        self.0.write_all(&b)
    }

    pub fn recv(&mut self) -> io::Result<Msg> {
        let mut b = [0u8; 48];
        self.0.read_exact(&mut b)?;
        let mut m = [0u64; 6];
        for (i, w) in m.iter_mut().enumerate() {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i * 8..i * 8 + 8]);
            *w = u64::from_le_bytes(x);
        }
        Ok(m)
    }
}
