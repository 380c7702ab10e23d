//! `regcache doctor` and the demo's metrics switch, run as the real binary on this host.
//! The expected lines follow from what the host has: on the development machines (no module
//! support, no RDMA device, userfaultfd and io_uring usable) that is WARN, WARN, OK, OK, WARN,
//! OK, OK and exit 0; vmtest/test-doctor.sh checks the guest with the module and rxe.

use std::path::Path;
use std::process::{Command, Output};

fn regcache(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_regcache"));
    c.args(args)
        .env_remove("REGCACHE_MONITOR")
        .env_remove("REGCACHE_METRICS_ADDR")
        .env_remove("REGCACHE_METRICS_TEXTFILE_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The status word of the line for `check` ("OK", "WARN" or "FAIL").
fn status_of<'a>(out: &'a str, check: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| {
            l.get(6..)
                .is_some_and(|rest| rest.starts_with(&format!("{check}:")))
        })
        .map(|l| l[..4].trim_end())
        .collect()
}

#[test]
fn doctor_on_this_host() {
    let o = regcache(&["doctor"], &[]);
    let out = stdout(&o);
    println!("{out}");
    let module = Path::new("/sys/module/ummunotify").is_dir();
    let device = Path::new("/dev/ummunotify").exists();
    let uffd = regcache::monitor::uffd::UffdMonitor::is_available();
    let rdma = std::fs::read_dir("/sys/class/infiniband").is_ok_and(|mut d| d.next().is_some());

    assert!(out.starts_with("regcache doctor: kernel "), "{out}");
    let missing = if uffd { "WARN" } else { "FAIL" };
    if !module {
        assert_eq!(status_of(&out, "ummunotify module"), [missing]);
        if !Path::new("/proc/modules").exists() {
            assert!(out.contains("no loadable-module support"), "{out}");
        }
    } else {
        assert_eq!(status_of(&out, "ummunotify module"), ["OK"]);
    }
    if !device {
        assert_eq!(status_of(&out, "/dev/ummunotify"), [missing]);
        assert!(out.contains("/dev/ummunotify: missing"), "{out}");
    }
    if uffd {
        assert_eq!(status_of(&out, "userfaultfd"), ["OK"]);
        assert!(out.contains("userfaultfd: usable (system call"), "{out}");
    }
    assert_eq!(status_of(&out, "RLIMIT_MEMLOCK").len(), 1);
    if !rdma {
        assert_eq!(status_of(&out, "RDMA devices"), ["WARN"]);
        assert!(out.contains("RDMA devices: none"), "{out}");
    }
    assert_eq!(status_of(&out, "io_uring"), ["OK"], "{out}");
    let expected_monitor = if device {
        "monitor: auto picks ummunotify: caching ON"
    } else if uffd {
        "monitor: auto picks uffd: caching ON"
    } else {
        "monitor: auto picks none"
    };
    assert!(out.contains(expected_monitor), "{out}");
    let on = device || uffd;
    assert_eq!(o.status.success(), on, "{out}");
    assert!(out.trim_end().ends_with(if on {
        "verdict: caching would be ON"
    } else {
        "verdict: caching would be OFF (see FAIL above)"
    }));
}

#[test]
fn doctor_fails_when_caching_is_off() {
    let o = regcache(&["doctor"], &[("REGCACHE_MONITOR", "none")]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(status_of(&out, "monitor"), ["FAIL"]);
    assert!(out.contains("verdict: caching would be OFF"), "{out}");
}

#[test]
fn bad_metrics_address_is_one_message_and_the_demo_still_runs() {
    let o = regcache(
        &["demo", "--iterations", "4", "--metrics-hold", "30"],
        &[("REGCACHE_METRICS_ADDR", "not-an-address")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let complaints: Vec<&str> = err.lines().filter(|l| l.contains("metrics")).collect();
    assert_eq!(
        complaints,
        ["regcache: metrics disabled: REGCACHE_METRICS_ADDR=\"not-an-address\": not an address; \
          use 1 (127.0.0.1:9464), :PORT, IP:PORT, [IPv6]:PORT or localhost:PORT; 0 or off \
          disables"]
    );
    let out = stdout(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("corrupted transfers: 0"), "{out}");
    // No exporter, so no hold either (the test would take 30 s otherwise).
    assert!(!out.contains("metrics:"), "{out}");
}
