//! `regcache doctor`: why caching is or is not active on this node. One line per check, OK /
//! WARN / FAIL with what to do. FAIL is kept for what turns caching off (no invalidation monitor,
//! no registrar), and the exit status is 1 exactly when a line FAILs.

use regcache::monitor::select::{self, Choice};
use regcache::monitor::uffd::UffdMonitor;
use regcache::monitor::ummunotify::{abi, UmmunotifyMonitor, DEVICE};
use regcache::registrar::uring::SoftNic;
use regcache::{Config, MonitorKind, Result};
use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;

mod fork;
mod numa;
use fork::fork_safety_check;
use numa::numa_check;

#[derive(clap::Args)]
pub struct Args {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// One finding: a status, what was checked, what was found, and what to do (if anything).
pub struct Line {
    pub status: Status,
    pub check: &'static str,
    pub found: String,
    pub fix: Option<String>,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4}  {}: {}", self.status, self.check, self.found)?;
        if let Some(fix) = &self.fix {
            write!(f, " -> {fix}")?;
        }
        Ok(())
    }
}

fn line(status: Status, check: &'static str, found: impl Into<String>) -> Line {
    Line {
        status,
        check,
        found: found.into(),
        fix: None,
    }
}

impl Line {
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

pub fn run(_: &Args) -> Result<ExitCode> {
    println!(
        "regcache doctor: kernel {}, uid {}",
        read_trim("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".into()),
        // SAFETY: getuid has no preconditions and cannot fail.
        unsafe { libc::getuid() }
    );
    let lines = checks();
    for l in &lines {
        println!("{l}");
    }
    let failed = lines.iter().any(|l| l.status == Status::Fail);
    println!(
        "{}",
        if failed {
            "verdict: caching would be OFF (see FAIL above)"
        } else {
            "verdict: caching would be ON"
        }
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// All checks, in the order printed.
pub fn checks() -> Vec<Line> {
    let uffd = uffd_check();
    let uffd_ok = uffd.status == Status::Ok;
    let rdma = rdma_checks();
    let rdma_active = rdma.iter().any(|l| l.status == Status::Ok);
    let reval = revalidate_check();
    let reval_ok = reval.status == Status::Ok;
    let mut lines = vec![
        module_check(uffd_ok),
        device_check(uffd_ok),
        reval,
        ring_check(),
        uffd,
    ];
    let thp = thp_mode();
    lines.push(thp_check(thp.as_deref(), reval_ok));
    lines.push(numa_check(thp, reval_ok));
    lines.push(memlock_check());
    lines.extend(rdma);
    lines.extend(fork_safety_check());
    lines.push(uring_check(rdma_active));
    lines.push(monitor_check());
    lines
}

fn read_trim(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Missing ummunotify is a WARN while userfaultfd can stand in (slower, but correct).
fn missing(uffd_ok: bool) -> Status {
    if uffd_ok {
        Status::Warn
    } else {
        Status::Fail
    }
}

fn module_check(uffd_ok: bool) -> Line {
    const CHECK: &str = "ummunotify module";
    let sys = Path::new("/sys/module/ummunotify");
    if sys.is_dir() {
        let version = match read_trim(sys.join("version")) {
            Some(v) => format!("version {v}"),
            None => match read_trim(sys.join("srcversion")) {
                Some(s) => format!("no version exported, srcversion {s}"),
                None => "no version exported".into(),
            },
        };
        let params = ["max_regions", "max_user_regions", "max_mm_regions"]
            .iter()
            .filter_map(|p| read_trim(sys.join("parameters").join(p)).map(|v| format!("{p}={v}")))
            .collect::<Vec<_>>();
        let params = if params.is_empty() {
            String::new()
        } else {
            format!(", {}", params.join(" "))
        };
        return line(Status::Ok, CHECK, format!("loaded ({version}{params})"));
    }
    let status = missing(uffd_ok);
    let kver = read_trim("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !Path::new("/proc/modules").exists() {
        return line(
            status,
            CHECK,
            "not loaded: this kernel has no loadable-module support",
        )
        .fix(if uffd_ok {
            "none needed for correctness (userfaultfd is used); for the faster monitor run a \
             kernel with CONFIG_MODULES and install kmod/ (dkms)"
        } else {
            "run a kernel with CONFIG_MODULES and install kmod/ (dkms), or enable userfaultfd"
        });
    }
    let installed = find_module(&format!("/lib/modules/{kver}"));
    match installed {
        Some(path) => line(
            status,
            CHECK,
            format!("installed ({}) but not loaded", path.display()),
        )
        .fix("modprobe ummunotify (and list it in /etc/modules-load.d/ to load at boot)"),
        None => line(
            status,
            CHECK,
            format!("not loaded, not installed for kernel {kver}"),
        )
        .fix("dkms install kmod/ (see kmod/dkms.conf), then modprobe ummunotify"),
    }
}

/// `ummunotify.ko*` under a module tree (a few levels deep: updates/dkms, extra, kernel/...).
fn find_module(dir: &str) -> Option<std::path::PathBuf> {
    fn walk(d: &Path, depth: u32) -> Option<std::path::PathBuf> {
        for e in fs::read_dir(d).ok()?.flatten() {
            let p = e.path();
            let name = e.file_name();
            if name.to_string_lossy().starts_with("ummunotify.ko") {
                return Some(p);
            }
            if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
                if let Some(found) = walk(&p, depth - 1) {
                    return Some(found);
                }
            }
        }
        None
    }
    walk(Path::new(dir), 5)
}

fn device_check(uffd_ok: bool) -> Line {
    const CHECK: &str = "/dev/ummunotify";
    let status = missing(uffd_ok);
    let meta = match fs::metadata(DEVICE) {
        Ok(m) => m,
        Err(_) => {
            let fix = if Path::new("/sys/module/ummunotify").is_dir() {
                "the module is loaded but the node is missing: check udev (kmod/99-ummunotify.rules)"
            } else {
                "load the module (see above)"
            };
            return line(status, CHECK, "missing").fix(fix);
        }
    };
    let mode = format!(
        "char device, mode {:o}, uid {} gid {}",
        meta.permissions().mode() & 0o7777,
        meta.uid(),
        meta.gid()
    );
    if !meta.file_type().is_char_device() {
        return line(
            status,
            CHECK,
            format!("exists but is not a character device ({mode})"),
        )
        .fix("remove it and reload the module");
    }
    match UmmunotifyMonitor::open() {
        Ok(m) => {
            let filter = if m.features() & abi::FEATURE_FILTER != 0 {
                "FILTER feature granted"
            } else {
                "FILTER feature not granted"
            };
            line(
                Status::Ok,
                CHECK,
                format!("opens for this user ({mode}, {filter})"),
            )
        }
        Err(e) => {
            let fix = if e.errno() == libc::EACCES || e.errno() == libc::EPERM {
                "install kmod/99-ummunotify.rules (mode 0666: each fd only sees its own process) \
                 and reload the module, or run as a member of the device's group"
            } else {
                "check the kernel log (dmesg) for ummunotify errors; a module of another ABI?"
            };
            line(
                status,
                CHECK,
                format!("cannot be used by this user: {e} ({mode})"),
            )
            .fix(fix)
        }
    }
}

/// How a userfaultfd can be opened here, as the monitor tries (see its `sys.rs`).
fn uffd_mode() -> std::result::Result<&'static str, i32> {
    const USER_MODE_ONLY: libc::c_long = 1;
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as libc::c_long;
    let try_syscall = |f: libc::c_long| {
        // SAFETY: userfaultfd takes one integer flags argument and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, f) };
        if fd < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            // SAFETY: `fd` was just returned to us and is closed exactly once.
            unsafe { libc::close(fd as libc::c_int) };
            Ok(())
        }
    };
    match try_syscall(flags | USER_MODE_ONLY) {
        Ok(()) => Ok("system call, user-mode faults only"),
        Err(libc::EINVAL) => try_syscall(flags).map(|()| "system call (kernel before 5.11)"),
        Err(e @ (libc::EPERM | libc::EACCES)) => {
            match fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/userfaultfd")
            {
                Ok(_) => Ok("/dev/userfaultfd"),
                Err(_) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

fn uffd_check() -> Line {
    const CHECK: &str = "userfaultfd";
    let sysctl = read_trim("/proc/sys/vm/unprivileged_userfaultfd")
        .map(|v| format!("vm.unprivileged_userfaultfd={v}"))
        .unwrap_or_else(|| "vm.unprivileged_userfaultfd unknown".into());
    match uffd_mode() {
        Ok(mode) if UffdMonitor::is_available() => line(
            Status::Ok,
            CHECK,
            format!("usable ({mode}; {sysctl}): the fallback monitor works"),
        ),
        Ok(mode) => line(
            Status::Warn,
            CHECK,
            format!("opens ({mode}) but lacks the unmap/remove/remap events or write-protect"),
        )
        .fix("needs Linux >= 5.7 with CONFIG_USERFAULTFD"),
        Err(e) => {
            let err = std::io::Error::from_raw_os_error(e);
            let fix = match e {
                libc::ENOSYS => "the kernel lacks CONFIG_USERFAULTFD",
                libc::EPERM | libc::EACCES => {
                    "sysctl vm.unprivileged_userfaultfd=1, or grant access to /dev/userfaultfd \
                     (Linux >= 6.1), or CAP_SYS_PTRACE"
                }
                _ => "a seccomp profile (container) may forbid userfaultfd(2)",
            };
            line(Status::Warn, CHECK, format!("not usable: {err} ({sysctl})")).fix(fix)
        }
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

fn memlock_check() -> Line {
    const CHECK: &str = "RLIMIT_MEMLOCK";
    /// Below this, large messages and many buffers evict each other or fail.
    const LOW: u64 = 512 << 20;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return line(Status::Warn, CHECK, "cannot be read");
    }
    let show = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            human_bytes(v)
        }
    };
    let cache_max = human_bytes(Config::default().max_bytes);
    let limits = format!("soft {}, hard {}", show(lim.rlim_cur), show(lim.rlim_max));
    if has_cap_ipc_lock() {
        return line(
            Status::Ok,
            CHECK,
            format!(
                "{limits}; CAP_IPC_LOCK held, so pinning is not limited: the cache keeps up to \
                 {cache_max} registered"
            ),
        );
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        return line(
            Status::Ok,
            CHECK,
            format!("{limits}: the cache keeps up to {cache_max} registered"),
        );
    }
    let status = if lim.rlim_cur < LOW {
        Status::Warn
    } else {
        Status::Ok
    };
    let l = line(
        status,
        CHECK,
        format!(
            "{limits}: at most that much pinned memory for the whole process; the cache keeps \
             up to {cache_max} registered (3/4) and evicts beyond it"
        ),
    );
    if status == Status::Warn {
        l.fix(
            "raise it for MPI jobs (ulimit -l unlimited; /etc/security/limits.conf \
             '* - memlock unlimited'; systemd LimitMEMLOCK=infinity; Slurm PropagateResourceLimits)",
        )
    } else {
        l
    }
}

fn rdma_checks() -> Vec<Line> {
    const CHECK: &str = "RDMA devices";
    let root = Path::new("/sys/class/infiniband");
    let mut devices: Vec<_> = fs::read_dir(root)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    devices.sort();
    if devices.is_empty() {
        return vec![line(
            Status::Warn,
            CHECK,
            "none (no /sys/class/infiniband entries): only the software NIC registrar can be used",
        )
        .fix(
            "load the NIC's RDMA driver (mlx5_ib, irdma, efa...) or, for testing, Soft-RoCE: \
             rdma link add rxe0 type rxe netdev IFACE",
        )];
    }
    let mut lines = Vec::new();
    for dev in devices {
        let name = dev.to_string_lossy().into_owned();
        let ports_dir = root.join(&dev).join("ports");
        let mut ports: Vec<_> = fs::read_dir(&ports_dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        ports.sort();
        let mut states = Vec::new();
        let mut active = false;
        for p in ports {
            let dir = ports_dir.join(&p);
            // "4: ACTIVE" -> "ACTIVE"
            let state = read_trim(dir.join("state"))
                .map(|s| s.split_once(": ").map_or(s.clone(), |(_, n)| n.to_string()))
                .unwrap_or_else(|| "unknown".into());
            let layer = read_trim(dir.join("link_layer")).unwrap_or_default();
            active |= state == "ACTIVE";
            states.push(format!("port {} {state} {layer}", p.to_string_lossy()));
        }
        let found = format!("{name}: {}", states.join(", "));
        lines.push(if active {
            line(Status::Ok, CHECK, found)
        } else {
            line(Status::Warn, CHECK, found).fix(
                "no ACTIVE port: check the link (ibstat, rdma link show) and the subnet manager",
            )
        });
    }
    lines
}

fn uring_check(rdma_active: bool) -> Line {
    const CHECK: &str = "io_uring";
    match SoftNic::new(1) {
        Ok(_) => line(
            Status::Ok,
            CHECK,
            "available: the software NIC registrar (uring, used by regcache demo) works",
        ),
        Err(e) => {
            let disabled = read_trim("/proc/sys/kernel/io_uring_disabled")
                .map(|v| format!(" (kernel.io_uring_disabled={v})"))
                .unwrap_or_default();
            let status = if rdma_active {
                Status::Warn
            } else {
                Status::Fail
            };
            line(status, CHECK, format!("not usable: {e}{disabled}")).fix(
                "sysctl kernel.io_uring_disabled=0, or allow io_uring_setup in the seccomp \
                 profile; RDMA applications register through verbs instead",
            )
        }
    }
}

fn monitor_check() -> Line {
    const CHECK: &str = "monitor";
    let choice = match Choice::from_env() {
        Ok(c) => c,
        Err(e) => {
            return line(Status::Fail, CHECK, format!("{}: {e}", select::ENV))
                .fix("set REGCACHE_MONITOR to auto, ummunotify, uffd or none")
        }
    };
    let how = match choice {
        Choice::Auto => "auto picks".to_string(),
        Choice::Only(k) => format!("{}={} asks for", select::ENV, k.name()),
    };
    match select::open(choice) {
        Ok((m, why)) if m.can_cache() => {
            let note = match m.kind() {
                MonitorKind::Ummunotify => "caching ON, no per-lookup cost".to_string(),
                _ => format!(
                    "caching ON, ~0.3 us more per lookup than ummunotify ({})",
                    why.join("; ")
                ),
            };
            line(
                Status::Ok,
                CHECK,
                format!("{how} {}: {note}", m.kind().name()),
            )
        }
        Ok((_, why)) => line(
            Status::Fail,
            CHECK,
            format!(
                "{how} none: every request is registered and deregistered per use ({})",
                if why.is_empty() {
                    "asked for".to_string()
                } else {
                    why.join("; ")
                }
            ),
        )
        .fix("load the ummunotify module or allow userfaultfd (see above)"),
        Err(e) => line(
            Status::Fail,
            CHECK,
            format!("{how} a monitor that fails: {e}"),
        )
        .fix("unset REGCACHE_MONITOR to let auto choose, or fix that monitor (see above)"),
    }
}

/// A line about one feature bit of the module: granted or not, and turned off by its variable.
struct Feature {
    check: &'static str,
    bit: u32,
    granted: fn(&UmmunotifyMonitor) -> bool,
    /// The variable that turns it off (`0`, `off`, `no`, `false`), and whether it does now.
    var: &'static str,
    off: bool,
    /// What the cache pays without it, and what it saves with it.
    without: &'static str,
    with: &'static str,
}

fn feature_check(f: Feature) -> Line {
    match UmmunotifyMonitor::open_path(DEVICE, abi::FEATURE_FILTER | f.bit) {
        Ok(m) if (f.granted)(&m) && f.off => line(
            Status::Warn,
            f.check,
            format!(
                "offered by the module but turned off by {}=0: {}",
                f.var, f.without
            ),
        )
        .fix(format!("unset {}", f.var)),
        Ok(m) if (f.granted)(&m) => line(Status::Ok, f.check, format!("offered: {}", f.with)),
        Ok(_) => line(
            Status::Warn,
            f.check,
            format!("not offered by this module: {}", f.without),
        )
        .fix("install the current module (dkms install ummunotify/1.0, or make -C kmod)"),
        Err(e) => line(
            Status::Warn,
            f.check,
            format!("cannot tell: {DEVICE} not usable ({e})"),
        )
        .fix("see the ummunotify lines above"),
    }
}

/// Whether the module revalidates reported ranges (issue 11): without it every neighbouring
/// VMA split costs a re-registration of the cached ranges in the same 2 MiB block.
fn revalidate_check() -> Line {
    use regcache::monitor::ummunotify::{revalidate_wanted, REVALIDATE_ENV};
    feature_check(Feature {
        check: "ummunotify REVALIDATE",
        bit: abi::FEATURE_REVALIDATE,
        granted: UmmunotifyMonitor::revalidate_supported,
        var: REVALIDATE_ENV,
        off: !revalidate_wanted(),
        without: "every reported range is re-registered, even when a neighbour's VMA split \
                  changed none of its pages",
        with: "a range reported by a neighbour's mprotect/mlock/MADV_DONTFORK costs one CHECK, \
               not a registration",
    })
}

/// Whether the module publishes hits in the ring page (issue 13): without it every drain after
/// an unmap of a cached buffer costs a read() of the device.
fn ring_check() -> Line {
    use regcache::monitor::ummunotify::{ring_wanted, RING_ENV};
    feature_check(Feature {
        check: "ummunotify RING",
        bit: abi::FEATURE_RING,
        granted: UmmunotifyMonitor::ring_active,
        var: RING_ENV,
        off: !ring_wanted(),
        without: "every drain after an unmap of a cached buffer reads the device (one system \
                  call more per churned transfer)",
        with: "the cache learns which cached buffer was unmapped from a shared page, without a \
               read() of the device",
    })
}

/// The mode in brackets of a /sys/kernel/mm/transparent_hugepage/* file ("always [madvise]
/// never" -> "madvise").
fn bracketed(s: &str) -> Option<&str> {
    let start = s.find('[')? + 1;
    let end = start + s[start..].find(']')?;
    Some(&s[start..end])
}

/// The THP mode ("always", "madvise", "never"); None without THP.
fn thp_mode() -> Option<String> {
    let enabled = read_trim("/sys/kernel/mm/transparent_hugepage/enabled")?;
    Some(bracketed(&enabled).unwrap_or(enabled.as_str()).to_string())
}

/// Transparent huge pages: collapses and splits (and any VMA split in a huge-page-sized block)
/// are reported as invalidations; they cost a re-registration only without REVALIDATE.
fn thp_check(mode: Option<&str>, revalidate: bool) -> Line {
    const CHECK: &str = "transparent huge pages";
    let Some(mode) = mode else {
        return line(Status::Ok, CHECK, "not built into this kernel");
    };
    match mode {
        "always" if !revalidate => line(
            Status::Warn,
            CHECK,
            "enabled=always: khugepaged collapses and huge-page splits near registered buffers \
             are reported, and without REVALIDATE each costs a re-registration",
        )
        .fix(
            "load the module with REVALIDATE (above), or echo madvise > \
             /sys/kernel/mm/transparent_hugepage/enabled",
        ),
        "always" => line(
            Status::Ok,
            CHECK,
            "enabled=always: splits near registered buffers are reported and revalidated \
             (pinned pages are not collapsed)",
        ),
        m => line(Status::Ok, CHECK, format!("enabled={m}")),
    }
}

#[cfg(test)]
mod reval_tests {
    use super::*;

    #[test]
    fn bracketed_mode() {
        assert_eq!(bracketed("always [madvise] never"), Some("madvise"));
        assert_eq!(bracketed("[always] madvise never"), Some("always"));
        assert_eq!(bracketed("never"), None);
        assert_eq!(bracketed("[oops"), None);
    }

    #[test]
    fn new_checks_never_fail() {
        assert_ne!(revalidate_check().status, Status::Fail);
        assert_ne!(thp_check(thp_mode().as_deref(), false).status, Status::Fail);
        assert_ne!(numa_check(thp_mode(), true).status, Status::Fail);
        if let Some(l) = fork_safety_check() {
            assert_ne!(l.status, Status::Fail);
        }
    }
}
