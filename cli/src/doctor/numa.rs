//! The doctor's "NUMA balancing" line.
//!
//! On a host with two or more memory nodes and `kernel.numa_balancing` on, the kernel's scanner
//! turns the page-table entries of each process's memory into PROT_NONE hinting entries, a few
//! hundred MiB every scan period (1-60 s of the process's CPU time), until the process touches
//! the pages again. Both Debian 12 kernels skip pinned small pages but not pinned transparent
//! huge pages (measured in the two-node guest: docs/ummunotify-abi.md). The module's FILTER
//! drops the hinting itself, so it costs nothing by itself; but a revalidation (CHECK) that runs
//! while a hint is outstanding on a huge page of the range (because something else moved the
//! counter over it) answers CHANGED, and the cache registers the buffer again. A false positive,
//! never a stale registration: WARN, with the usual HPC setting as the fix.

use super::{line, read_trim, Line, Status};

const CHECK: &str = "NUMA balancing";

/// What the line is computed from, read from /proc and /sys (None: the file is absent).
pub(super) struct Numa {
    /// /proc/sys/kernel/numa_balancing: a mask, bit 0 normal balancing, bit 1 memory tiering.
    pub balancing: Option<String>,
    /// /sys/devices/system/node/online, e.g. "0-1".
    pub online: Option<String>,
    /// The bracketed mode of /sys/kernel/mm/transparent_hugepage/enabled.
    pub thp: Option<String>,
    /// The module's CHECK would be used (REVALIDATE offered and wanted).
    pub revalidate: bool,
}

/// Number of nodes in a kernel CPU/node list ("0", "0-1", "0,2-3"); None if malformed.
pub(super) fn count_list(s: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in s.trim().split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        n = n.checked_add(b.checked_sub(a)?.checked_add(1)?)?;
    }
    Some(n)
}

pub(super) fn numa_line(n: &Numa) -> Line {
    let Some(bal) = n.balancing.as_deref().map(str::trim) else {
        return line(Status::Ok, CHECK, "not built into this kernel");
    };
    let nodes = n.online.as_deref().and_then(count_list).unwrap_or(1);
    let normal = bal.parse::<u32>().map(|m| m & 1 == 1).unwrap_or(false);
    let thp = n.thp.as_deref().unwrap_or("never");
    let found = format!("kernel.numa_balancing={bal}, {nodes} memory node(s), THP {thp}");
    if !normal {
        return line(Status::Ok, CHECK, format!("{found}: off"));
    }
    if nodes < 2 {
        return line(Status::Ok, CHECK, format!("{found}: nothing to balance"));
    }
    if thp == "never" {
        return line(
            Status::Ok,
            CHECK,
            format!("{found}: pinned small pages are not hinted"),
        );
    }
    if !n.revalidate {
        return line(
            Status::Ok,
            CHECK,
            format!("{found}: hints are not reported (no revalidation in use)"),
        );
    }
    line(
        Status::Warn,
        CHECK,
        format!(
            "{found}: the scanner marks pinned huge pages of registered buffers as hints until \
             they are touched; a revalidation meeting one answers CHANGED and costs a \
             re-registration"
        ),
    )
    .fix("sysctl kernel.numa_balancing=0 (usual on HPC nodes), or give the buffers a memory policy")
}

/// This host's line; `thp` is the bracketed THP mode, `revalidate` whether CHECK is in use.
pub(super) fn numa_check(thp: Option<String>, revalidate: bool) -> Line {
    numa_line(&Numa {
        balancing: read_trim("/proc/sys/kernel/numa_balancing"),
        online: read_trim("/sys/devices/system/node/online"),
        thp,
        revalidate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numa(bal: Option<&str>, online: &str, thp: &str, revalidate: bool) -> Line {
        numa_line(&Numa {
            balancing: bal.map(String::from),
            online: Some(online.into()),
            thp: Some(thp.into()),
            revalidate,
        })
    }

    #[test]
    fn node_lists() {
        assert_eq!(count_list("0"), Some(1));
        assert_eq!(count_list("0-1\n"), Some(2));
        assert_eq!(count_list("0,2-3"), Some(3));
        assert_eq!(count_list("3-1"), None);
        assert_eq!(count_list(""), None);
        assert_eq!(count_list("0-x"), None);
    }

    #[test]
    fn warns_only_where_a_check_can_meet_a_hinted_huge_page() {
        assert_eq!(numa(Some("1"), "0-1", "always", true).status, Status::Warn);
        assert_eq!(numa(Some("3"), "0-3", "madvise", true).status, Status::Warn);
        for l in [
            numa(Some("0"), "0-1", "always", true),
            numa(Some("2"), "0-1", "always", true), // tiering only: slow-tier pages
            numa(Some("1"), "0", "always", true),
            numa(Some("1"), "0-1", "never", true),
            numa(Some("1"), "0-1", "always", false),
            numa(None, "0-1", "always", true),
            numa(Some("junk"), "0-1", "always", true),
        ] {
            assert_eq!(l.status, Status::Ok, "{l}");
        }
    }

    #[test]
    fn the_warning_names_the_fix() {
        let l = numa(Some("1"), "0-1", "always", true);
        assert!(l
            .fix
            .as_deref()
            .unwrap()
            .contains("kernel.numa_balancing=0"));
        assert!(l.found.contains("2 memory node(s)"), "{}", l.found);
    }
}
