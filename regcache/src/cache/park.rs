//! Kept watches (issue 13, 100% churn): the watch of an invalidated entry, kept for the next
//! registration of exactly the same range instead of an unwatch now and a watch then.
//!
//! The pattern: a buffer is registered, used once, freed and allocated again at the same
//! address (`free` + `malloc` of one size), every transfer. Each miss then paid, besides the
//! registration the baseline pays too, a drain, an UNREGISTER of the old entry's watch, a
//! REGISTER of the new one's, and revalidation's ARM (and CHECK of the event), each one system
//! call: in the guest 4.3x the registration path of registering every transfer.
//!
//! When the monitor's watches survive an unmap (`Monitor::watch_survives_unmap`: ummunotify,
//! whose region is a range of the address space in the fd's interval tree, kept across unmaps
//! and queued again by every hit after its record was read), a drain that retires an entry nothing references and that was never
//! hit since it was cached (a one-use life: the churn pattern) parks its `(range, cookie)`
//! here instead of unwatching it. A miss whose target is exactly a parked range takes the
//! watch over: the new entry's id is the cookie with `UNARMED` (entry.rs). At most `MAX`
//! watches are parked; the oldest beyond that, and all of them on `flush`, are unwatched.
//!
//! Why a kept watch is as good as a fresh one (the miss's invariant, mod.rs: a watch covering
//! the target exists before the registrar pins it, and the drain after pinning reports every
//! change since the watch began):
//! - the watch has existed without interruption since before the old entry was registered,
//!   so it existed before the new pinning;
//! - every change of the range that starts after that watch existed is queued under its cookie
//!   and moves the counter. The records read by this miss's first drain were handed out by the
//!   module only after the invalidations they report had ended (`umn_queue_wait_settled`); one
//!   still running, or any later one, re-queues the region and moves the counter, so the drain
//!   after pinning finds the cookie and the miss undoes the registration and retries (with a
//!   fresh watch: the kept one is not parked again). A record of the old life read late is a
//!   duplicate: one retry, never a stale entry;
//! - only a watch no entry can still claim is parked: the old entry was found unreferenced
//!   under the retired list's lock after it left the index, so it is reaped in the same
//!   `retire` and nothing will ever unwatch that cookie on its behalf (a referenced one is
//!   unwatched by its retirement as before). Two entries never share a cookie.
//!
//! What a kept watch does not carry over is revalidation: the module's digest is the one ARMed
//! for the OLD registration's frames. The frames freed by the old registration can come back
//! at the same address later, and a CHECK against that digest would then say "unchanged" for a
//! registration that pinned other frames (the negative control in reval_tests.rs,
//! `kept_watch_checked_against_the_old_digest_corrupts`). So the new entry is never ARMed and
//! never CHECKed: `UNARMED` in its id makes every cookie comparison of reval.rs fail, and its
//! events retire it. That is also what the churn pattern wants (its ranges really change every
//! time: an ARM and a CHECK per transfer bought nothing), and an entry that is hit before it is
//! reported is not parked, so a buffer that settles down gets a fresh, ARMed watch at its next
//! registration.

use super::entry::UNARMED;
use super::{Cache, MissState};
use crate::range::Range;

/// The watch a miss registers under, decided once per attempt (`Cache::miss_once`): the new
/// entry's id, the counter mark for ARM and the watch call all follow from it, so they cannot
/// disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WatchSource {
    /// A new watch under the fresh id: marked before the watch, watched, ARMed after pinning.
    Fresh(u64),
    /// The watch parked for exactly the target, under its cookie (`take_parked`): no watch
    /// call and no ARM; the entry's id is the cookie with `UNARMED`, so it is never CHECKed.
    Kept(u64),
}

impl WatchSource {
    /// The new entry's id (with `UNARMED` under a kept watch: entry.rs).
    pub fn id(self) -> u64 {
        match self {
            WatchSource::Fresh(id) => id,
            WatchSource::Kept(cookie) => cookie | UNARMED,
        }
    }

    /// The monitor cookie of the watch (`entry::cookie_of(self.id())`).
    pub fn cookie(self) -> u64 {
        match self {
            WatchSource::Fresh(id) | WatchSource::Kept(id) => id,
        }
    }
}

/// Most watches parked at once (each is a kernel region of the monitor's fd until taken or
/// unwatched).
const MAX: usize = 8;

/// Parked watches, oldest first (serialised by the miss lock: a field of `MissState`).
#[derive(Default)]
pub(super) struct Parked {
    watches: Vec<(Range, u64)>,
}

impl Parked {
    /// The cookie of the watch parked for exactly `r`, taken out.
    pub fn take(&mut self, r: Range) -> Option<u64> {
        let i = self.watches.iter().position(|&(w, _)| w == r)?;
        Some(self.watches.remove(i).1)
    }

    /// Makes room for one more: the oldest watch when `MAX` are parked (the caller unwatches
    /// it).
    pub fn make_room(&mut self) -> Option<(Range, u64)> {
        if self.watches.capacity() == 0 {
            self.watches.reserve_exact(MAX);
        }
        (self.watches.len() >= MAX).then(|| self.watches.remove(0))
    }

    /// Parks `(r, cookie)` (after `make_room`).
    pub fn push(&mut self, r: Range, cookie: u64) {
        debug_assert!(self.watches.len() < MAX);
        self.watches.push((r, cookie));
    }

    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    pub fn take_all(&mut self) -> Vec<(Range, u64)> {
        std::mem::take(&mut self.watches)
    }
}

impl Cache {
    /// Whether this cache parks the watches of churned entries.
    pub(super) fn parks_watches(&self) -> bool {
        !self.cfg.danger_ignore_invalidations && self.monitor.watch_survives_unmap()
    }

    /// For a miss about to register `target`: the watch parked for exactly that range, taken
    /// over, if one is parked.
    pub(super) fn take_parked(&self, st: &mut MissState, target: Range) -> Option<WatchSource> {
        if st.parked.is_empty() {
            return None;
        }
        let cookie = st.parked.take(target)?;
        // Relaxed: a statistic (stats.rs).
        self.stats
            .kept_watches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(WatchSource::Kept(cookie))
    }

    /// Parks the watch `(r, cookie)` of an entry just reaped (see the module comment for which).
    pub(super) fn park(&self, parked: &mut Parked, r: Range, cookie: u64) {
        // The unwatch first: should it unwind, this cookie is not parked, and the entry that
        // owned it is listed retired (life.rs, `ListRest`), still watched (a leak, not a
        // shared cookie).
        if let Some((old, c)) = parked.make_room() {
            self.monitor.unwatch(old, c);
        }
        parked.push(r, cookie);
    }

    /// Unwatches every parked watch (flush, drop).
    pub(super) fn unpark_all(&self, st: &mut MissState) {
        for (r, c) in st.parked.take_all() {
            self.monitor.unwatch(r, c);
        }
    }
}
