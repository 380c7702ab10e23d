//! The exporter thread: answers `GET /metrics` on a std TCP listener and rewrites the textfile
//! every interval. One thread, blocked in poll(2) between events; stopped by closing the write
//! end of a socket pair it also polls.

use crate::config::Config;
use crate::{encode, textfile, Error, CONTENT_TYPE};
use prometheus_client::registry::Registry;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one client may take to send its request or read the answer: a stuck client delays
/// the next scrape or textfile write by at most this.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request head read.
const MAX_REQUEST: usize = 8192;

pub(crate) struct Running {
    pub local_addr: Option<SocketAddr>,
    pub textfile: Option<PathBuf>,
    /// Closing it wakes the thread, which then exits.
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
    /// The process that started the thread: a fork() child has no such thread to join.
    pid: u32,
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            if std::process::id() == self.pid {
                let _ = t.join();
            } else {
                // Neither join nor detach a thread of the parent process.
                std::mem::forget(t);
            }
        }
    }
}

pub(crate) fn start(registry: Registry, cfg: Config) -> Result<Running, Error> {
    let listener = match cfg.listen {
        None => None,
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|err| Error::Listen { addr, err })?;
            Some(l)
        }
    };
    let local_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
    let textfile = cfg
        .textfile_dir
        .as_deref()
        .map(|d| textfile::path_for(d, &cfg));
    if let Some(path) = &textfile {
        // The first write reports an unwritable directory now, not in the background.
        textfile::write_atomic(path, &encode(&registry)).map_err(|err| Error::Textfile {
            path: path.clone(),
            err,
        })?;
    }
    let (stop, stopped) = UnixStream::pair().map_err(Error::Thread)?;
    let job = Job {
        registry,
        listener,
        stopped,
        textfile: textfile.clone(),
        interval: cfg.interval,
    };
    let thread = std::thread::Builder::new()
        .name("regcache-metrics".into())
        .stack_size(256 * 1024)
        .spawn(move || job.run())
        .map_err(Error::Thread)?;
    Ok(Running {
        local_addr,
        textfile,
        stop: Some(stop),
        thread: Some(thread),
        pid: std::process::id(),
    })
}

struct Job {
    registry: Registry,
    listener: Option<TcpListener>,
    stopped: UnixStream,
    textfile: Option<PathBuf>,
    interval: Duration,
}

impl Job {
    fn run(self) {
        let mut next_write = Instant::now() + self.interval;
        let mut warned = false;
        loop {
            let timeout = match self.textfile {
                None => -1,
                Some(_) => {
                    let left = next_write.saturating_duration_since(Instant::now());
                    // Round up, so we do not wake a little early and spin.
                    i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
                }
            };
            let (stop, incoming) = match self.wait(timeout) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("regcache: metrics exporter stopped: poll: {e}");
                    return;
                }
            };
            if stop {
                break;
            }
            if incoming {
                if let Some(l) = &self.listener {
                    self.accept_all(l);
                }
            }
            if let Some(path) = &self.textfile {
                if Instant::now() >= next_write {
                    self.write_textfile(path, &mut warned);
                    next_write = Instant::now() + self.interval;
                }
            }
        }
        if let Some(path) = &self.textfile {
            self.write_textfile(path, &mut warned);
        }
    }

    /// Blocks until stop is requested, a client connects, or `timeout_ms` passes (-1: never).
    /// Returns (stop, client waiting).
    fn wait(&self, timeout_ms: i32) -> io::Result<(bool, bool)> {
        let mut fds = [
            libc::pollfd {
                fd: self.stopped.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.listener.as_ref().map_or(-1, |l| l.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: `fds` is a valid array of two pollfd that outlives the call; a negative
            // fd is ignored by poll.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if n >= 0 {
                return Ok((fds[0].revents != 0, fds[1].revents & libc::POLLIN != 0));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn accept_all(&self, l: &TcpListener) {
        loop {
            match l.accept() {
                Ok((conn, _)) => {
                    // A client that misbehaves only loses its own answer.
                    let _ = self.serve(conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ECONNABORTED, EMFILE...: retry at the next poll wake-up.
                Err(_) => return,
            }
        }
    }

    fn serve(&self, mut conn: TcpStream) -> io::Result<()> {
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        conn.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        let head = read_head(&mut conn)?;
        let (status, ctype, body) = respond(&head, || encode(&self.registry));
        let head_only = head.starts_with("HEAD ");
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        if !head_only {
            out.push_str(&body);
        }
        conn.write_all(out.as_bytes())?;
        conn.flush()
    }

    fn write_textfile(&self, path: &std::path::Path, warned: &mut bool) {
        if let Err(e) = textfile::write_atomic(path, &encode(&self.registry)) {
            if !*warned {
                eprintln!(
                    "regcache: cannot write metrics to {}: {e} (will keep trying)",
                    path.display()
                );
                *warned = true;
            }
        }
    }
}

/// Reads the request line and headers (up to the blank line, at most `MAX_REQUEST` bytes).
fn read_head(conn: &mut TcpStream) -> io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Status, content type and body for a request head.
fn respond(head: &str, metrics: impl FnOnce() -> String) -> (&'static str, &'static str, String) {
    let text = "text/plain; charset=utf-8";
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", text, "only GET /metrics\n".into());
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => ("200 OK", CONTENT_TYPE, metrics()),
        "/" => ("200 OK", text, "regcache metrics: GET /metrics\n".into()),
        _ => ("404 Not Found", text, "not found; try /metrics\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::respond;

    #[test]
    fn routes() {
        let m = || "x 1\n".to_string();
        assert_eq!(respond("GET /metrics HTTP/1.1\r\n\r\n", m).2, "x 1\n");
        assert_eq!(respond("GET /metrics?x=1 HTTP/1.0\r\n", m).0, "200 OK");
        assert_eq!(respond("GET /other HTTP/1.1\r\n", m).0, "404 Not Found");
        assert_eq!(
            respond("POST /metrics HTTP/1.1\r\n", m).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond("", m).0, "405 Method Not Allowed");
    }
}
