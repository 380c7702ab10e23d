//! Revalidation (issue 11): a reported range whose pages did not change keeps its registration.
//!
//! With a monitor that revalidates (ummunotify with REVALIDATE, docs/ummunotify-abi.md), many
//! reported invalidations change nothing behind the range (a VMA split anywhere in the same
//! 2 MiB block sends a clear over the whole block). The protocol, on a miss:
//!
//! 1. `mark`: read the counter BEFORE watching the range. Every hit of the range then comes
//!    after this read, so its "counter after the hit" is greater than the mark. (Read after the
//!    watch, a hit whose counter increment was already visible could still be zapping the
//!    pages while the registrar pins them — madvise(DONTNEED) and pinning both run under the
//!    mmap read lock — and a page faulted in after it would be what ARM digests.)
//! 2. watch, then the registrar pins.
//! 3. `arm`: ARM with `since = mark`: armed as changed if the range was hit after the mark.
//!
//! When a drained event reports an entry (by cookie: live in the index, or the registration in
//! flight), `unchanged` asks CHECK: only `Unchanged` keeps it (a false positive, counted, and
//! not forwarded to `on_invalidate`); `Changed`, `NotArmed` or an error retires it as before.
//! CHECK runs under the miss lock but never under the index write lock, and only for events
//! that report an entry; any change after the CHECK moves the counter past the drained
//! generation, so the next lookup drains and checks again.
//!
//! Range and "all" invalidations (userfaultfd, a lost event) are never revalidated. The
//! argument assumes the registrar pins the pages (ibv_reg_mr, io_uring fixed buffers): a
//! registration that follows the pages by itself (ODP) is not cached through this path anyway.

use super::life::IdHasher;
use super::Cache;
use crate::monitor::Revalidation;
use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::sync::atomic::Ordering;

/// A set of cookies (entry ids): hashed by one multiply, and built without the random keys of
/// the default hasher (two per drain of a churned buffer, issue 13).
pub(super) type Cookies = HashSet<u64, BuildHasherDefault<IdHasher>>;

impl Cache {
    /// Whether this cache revalidates reported entries (its monitor supports it).
    pub fn revalidating(&self) -> bool {
        !self.cfg.danger_ignore_invalidations && self.monitor.revalidates()
    }

    /// Step 1, before watching a range about to be registered: the counter value for
    /// `reval_arm`, or `None` when not revalidating.
    pub(super) fn reval_mark(&self) -> Option<u64> {
        if !self.revalidating() {
            return None;
        }
        // Acquire: the kernel's counter store; any hit of a range watched after this load
        // stores a greater value (the watch is ordered after the load, the hit after the watch).
        Some(self.monitor.counter().load(Ordering::Acquire))
    }

    /// Step 3, after the registrar pinned the range watched under `cookie`. The answer needs no
    /// action: a range hit since `mark` has an event queued (the post-registration drain finds
    /// it, and CHECK then answers Changed), an untrackable one answers Changed to every CHECK,
    /// and a failed ARM leaves it not armed.
    pub(super) fn reval_arm(&self, cookie: u64, mark: Option<u64>) {
        if let Some(since) = mark {
            let _ = self.monitor.revalidate_arm_since(cookie, since);
        }
    }

    /// Of the reported entries `drain` set aside (cookie, and start in the index or `None`
    /// for the registration in flight: only those whose id is the cookie, see `same`), the
    /// cookies CHECK says did not change: their events are false positives. One CHECK per
    /// cookie however many events repeat it (a lone report needs no set: no hashing per drain,
    /// issue 13).
    pub(super) fn reval_unchanged(&self, reported: &[(u64, Option<usize>)]) -> Cookies {
        let mut kept = Cookies::default();
        let mut checked = Cookies::default();
        for &(cookie, _) in reported {
            if reported.len() > 1 && !checked.insert(cookie) {
                continue;
            }
            if self.check_unchanged(cookie) {
                kept.insert(cookie);
            }
        }
        kept
    }

    /// CHECK: true only for `Unchanged`; anything in doubt (changed, not armed, an error) is
    /// false.
    fn check_unchanged(&self, cookie: u64) -> bool {
        if self.cfg.danger_revalidate_unchanged {
            return true; // TEST ONLY: the negative control (Config)
        }
        matches!(
            self.monitor.revalidate_check(cookie),
            Ok(Revalidation::Unchanged)
        )
    }
}

/// Whether the entry `id` is the one revalidation may CHECK for `cookie`: the same value (an
/// entry under a kept watch has UNARMED in its id, so never: ids, not cookies, are compared,
/// because the module's digest under a kept watch is its predecessor's; its events retire it).
pub(super) fn same(id: Option<u64>, cookie: u64) -> bool {
    #[cfg(all(test, not(loom)))]
    if CHECK_KEPT.with(|c| c.get()) {
        // TEST ONLY: the wrong comparison, for the negative control.
        return id.is_some_and(|id| super::entry::cookie_of(id) == cookie);
    }
    id == Some(cookie)
}

#[cfg(all(test, not(loom)))]
thread_local! {
    /// TEST ONLY: compare cookies, so entries under kept watches are CHECKed against their
    /// predecessor's digest (the negative control of park.rs).
    static CHECK_KEPT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(all(test, not(loom)))]
#[path = "reval_tests.rs"]
mod tests;
