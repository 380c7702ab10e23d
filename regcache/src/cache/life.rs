//! The end of an entry's life: when it leaves the index and who deregisters it. Every decision
//! to deregister a cached registration is taken in this file.
//!
//! States (an entry is in exactly one):
//! - **live**: in the index. New references are taken only here, under the index read lock: a
//!   hit's hold (a hold cell, held.rs) or a counted reference (the entry's state word,
//!   entry.rs).
//! - **retired**: out of the index, the `RETIRED` bit set in its state word, the hold cells
//!   still holding it tagged, and owned by the retired list. No new reference can appear; the
//!   ones taken while it was live are released over time. One-use registrations are born
//!   retired (one counted reference, their handle's).
//! - **reaped**: deregistered and freed (terminal). Nothing references it.
//!
//! Transitions:
//! - `retire` (live → retired): a batch of entries that left the index (invalidation, merge,
//!   flush). Each is marked, its cells tagged, and handed to the retired list before the first
//!   callout, so a callout that unwinds never drops an entry a handle still holds.
//! - `reap` (retired → reaped): only when unreferenced — no counted reference and no cell
//!   holding it, both checked under the retired list's lock. Tried by the retirer right after
//!   retiring, and by every releaser that may have been the last: a hold whose cell was tagged,
//!   the last counted reference of a retired entry.
//! - `reap_missed` (retired → reaped, on every slow path): a release that cleared its cell in
//!   the instant the tag landed erases the tag and does not reap (held.rs); every retired entry
//!   stays on the recheck list until reaped, so such an entry is reaped by the next miss,
//!   drain, invalidate or flush — late, never early.
//! - `claim_unused` + `evict` (live → reaped, LRU eviction): under the index write lock (no
//!   new hold can appear) an entry no cell holds is claimed by `compare_exchange(0, RETIRED)`
//!   on its state word, removed from the index, then deregistered and freed.
//! - `reap_leaked` (retired → reaped when the cache drops): handles borrow the cache, so the
//!   only ones left are leaked ones (mem::forget), which can never be used again.
//!
//! Why "unreferenced" is final: references are taken only from the index, and an entry leaves
//! the index under the write lock, which waits for every reader (their exit is a Release). The
//! releasers' clearing store and decrement are Releases after their last use; the reaper's
//! cell scan and state load are Acquires. So an entry found unreferenced after it left the
//! index stays unreferenced, and every use happens-before its deregistration.
//!
//! In a fork child nothing is reaped: the registrations are the parent's, and the retired list's
//! lock may have been held at fork() by a parent thread that does not exist in the child.

use super::entry::{Entry, EntryPtr};
use super::held;
use super::index::Unindexed;
use super::park::Parked;
use super::pool::Pool;
use super::stats::MissLocked;
use super::Cache;
use crate::registrar::Registration;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

/// Hashes an entry id (unique, handed out in sequence): one multiply (Fibonacci hashing)
/// instead of SipHash, which made a retirement's insert and a reap's remove half of the cost
/// of a drain per event (issue 13). Ids are not chosen by anyone who could aim at collisions.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
    }
}

/// The retired entries (and one-use registrations), owned here until reaped, with what they
/// registered (their index record's part, index.rs).
#[derive(Default)]
pub(super) struct RetiredList {
    entries: HashMap<u64, Unindexed, BuildHasherDefault<IdHasher>>,
    /// Ids of retired entries that `reap_missed` re-checks on the next slow path: every entry
    /// is listed when it is retired, before any callout (a release racing with the tag can
    /// erase it, held.rs; a callout that unwinds leaves the rest of a retirement undone). A
    /// retirement whose callouts all returned drops the ids it reaped itself; any other id
    /// already reaped is dropped by the next `reap_missed`.
    recheck: Vec<u64>,
    /// Cached entries reaped off the miss lock (by a releaser), for the pool (pool.rs) to take
    /// back when it next needs a slot.
    pub returned: Vec<EntryPtr>,
}

/// Unreferenced retired entries not yet unwatched and freed by `retire`, and the count of
/// those deregistered so far. On drop the deregistrations are counted (once for the batch),
/// and, should a callout have unwound, the entries left are handed to the retired list, so the
/// next `reap_missed` deregisters them.
struct ListRest<'a> {
    cache: &'a Cache,
    lock: &'a MissLocked,
    batch: &'a mut Vec<Unindexed>,
    deregistered: u64,
    bytes: u64,
}

impl Drop for ListRest<'_> {
    fn drop(&mut self) {
        self.cache
            .count_deregistered(Some(self.lock), self.deregistered, self.bytes);
        if self.batch.is_empty() {
            return;
        }
        let mut retired = self.cache.retired.lock();
        for u in self.batch.drain(..) {
            retired.recheck.push(u.entry.id);
            retired.entries.insert(u.entry.id, u);
        }
        self.cache.note_recheck(&retired);
    }
}

impl Cache {
    /// Live → retired: takes entries that left the index (leaving `batch` empty), stops
    /// watching them, and reaps each one that is already unreferenced (the others are reaped by
    /// their last releaser, or by `reap_missed`).
    ///
    /// Under the retired list's lock each entry is marked and its cells tagged. One found
    /// referenced is handed to the retired list (and its recheck list) before the first
    /// callout (`Monitor::unwatch`, `Registrar::deregister`), so a callout that unwinds never
    /// drops an entry a handle still holds: what it leaves undone, the next `reap_missed` does.
    /// One found unreferenced (no count, no cell: the usual case) can never be referenced again
    /// (it is out of the index), so it skips the list: unwatched, deregistered and freed here,
    /// without a map insert and remove per entry (issue 13, drain cost). Should a callout
    /// unwind, the ones not yet done are listed then (`ListRest`).
    ///
    /// With `park`, the watches of the unreferenced ones are parked there instead of unwatched
    /// (park.rs: the caller passes only entries whose watch may be kept).
    #[inline]
    pub(super) fn retire(
        &self,
        lock: &MissLocked,
        pool: &mut Pool,
        batch: &mut Vec<Unindexed>,
        park: Option<&mut Parked>,
    ) {
        // Inlined, so an empty batch (a churned drain has one of its two, every insert its
        // displaced list) costs a test, not a call.
        if !batch.is_empty() {
            self.retire_batch(lock, pool, batch, park);
        }
    }

    /// `retire` of a non-empty batch.
    fn retire_batch(
        &self,
        lock: &MissLocked,
        pool: &mut Pool,
        batch: &mut Vec<Unindexed>,
        mut park: Option<&mut Parked>,
    ) {
        let mut callouts = Vec::new();
        let recheck_from;
        {
            // Under the retired list's lock, which a releaser that must reap takes first.
            // Nothing here calls out of the cache.
            let mut retired = self.retired.lock();
            recheck_from = retired.recheck.len();
            // Every entry of the batch is out of the index: one read of the cells serves all
            // (a batch of one, a churned drain's, scans them as directly).
            let busy = (batch.len() > 1).then(|| self.held.busy());
            let mut i = 0;
            while i < batch.len() {
                // Out of the index, so out of the LRU list too (index.rs).
                let e = &batch[i].entry;
                // Both, always: the mark and the tags are what a holder's release looks for.
                let uncounted = e.mark_retired();
                let held = match &busy {
                    Some(b) => self.held.tag_among(b, e),
                    None => self.held.tag(e),
                };
                if uncounted && !held {
                    i += 1;
                    continue;
                }
                let u = batch.swap_remove(i);
                let id = u.entry.id;
                callouts.push((id, u.entry.cookie(), u.reg.range));
                retired.recheck.push(id);
                retired.entries.insert(id, u);
            }
        }
        // The unreferenced ones: each stays in `batch` until its unwatch returned.
        let mut rest = ListRest {
            cache: self,
            lock,
            batch,
            deregistered: 0,
            bytes: 0,
        };
        while let Some(u) = rest.batch.last() {
            match park.as_deref_mut() {
                // Reaped below, so no one else will ever unwatch this cookie (park.rs).
                Some(p) => self.park(p, u.reg.range, u.entry.cookie()),
                None => self.monitor.unwatch(u.reg.range, u.entry.cookie()),
            }
            if let Some(u) = rest.batch.pop() {
                // As `deregister`, counted by `rest` (in a fork child the registrations are
                // the parent's: never undone).
                if !self.in_fork_child() {
                    let r = u.reg.range;
                    self.registrar
                        .deregister(&registration(&u), r.start, r.len());
                    rest.deregistered += 1;
                    rest.bytes += r.len() as u64;
                }
                // SAFETY: found unreferenced under the retired list's lock after it left the
                // index (above): no reference can appear any more. A cached entry (it was in
                // the index), so the pool's.
                unsafe { pool.keep(u.entry) };
            }
        }
        drop(rest);
        if callouts.is_empty() {
            // Nothing of this batch was listed (the usual case): the recheck list is as it
            // was, so no second visit to its lock.
            return;
        }
        // The others are the retired list's: only their ids and ranges are used (a releaser
        // may reap one at any time).
        let mut still_retired = Vec::new();
        for (id, cookie, range) in callouts {
            self.monitor.unwatch(range, cookie);
            if !self.reap(id) {
                still_retired.push(id);
            }
        }
        // Every callout returned: the recheck list needs only the ids of this batch that are
        // still retired (the others are reaped; `reap_missed` would only drop them, one lookup
        // each, on the next slow path). The batch's ids are the list's tail: only this thread
        // changes the list, under the miss lock (`retire`, `reap_missed`). Should a callout
        // above unwind, the whole batch stays listed, as before.
        let mut retired = self.retired.lock();
        debug_assert!(retired.recheck.len() >= recheck_from);
        retired.recheck.truncate(recheck_from);
        retired.recheck.extend(still_retired);
        self.note_recheck(&retired);
    }

    /// Publishes whether the recheck list is empty, for `reap_missed` to skip the retired
    /// list's lock (two locked instructions per miss) when it is. Called after every change of
    /// the list, under its lock; every change is made under the miss lock (`retire`,
    /// `ListRest`, `reap_missed`), under which `reap_missed` reads it, so Relaxed suffices.
    fn note_recheck(&self, retired: &RetiredList) {
        self.recheck_pending
            .store(!retired.recheck.is_empty(), Ordering::Relaxed);
    }

    /// Born retired: lists a one-use registration, reaped when its handle is released.
    pub(super) fn retire_one_use(&self, u: Unindexed) {
        self.retired.lock().entries.insert(u.entry.id, u);
    }

    /// Releases a handle's reference; the last one of a retired entry reaps it.
    #[inline]
    pub(super) fn release(&self, entry: NonNull<Entry>, cell: held::HoldCell) {
        // SAFETY: the handle's reference keeps the entry alive until it is dropped below; after
        // that only the id is used (another releaser may reap the entry).
        let e = || unsafe { entry.as_ref() };
        let reap = match cell {
            // SAFETY: `c` came from `self.held.hold` for this handle; `self.held` is alive.
            Some(c) => unsafe { held::release(c, || e().id) },
            None => {
                let id = e().id;
                e().release().then_some(id)
            }
        };
        // In a fork child nothing is reaped (the registrations are the parent's) and the
        // retired list's lock may be held by a parent thread that does not exist here.
        if let Some(id) = reap {
            if !self.in_fork_child() {
                self.reap(id);
            }
        }
    }

    /// Retired → reaped, if nothing references the entry any more (called by whoever may have
    /// been the last; the others find it still referenced or already reaped).
    /// Returns false while the entry is still retired (referenced), true once it is reaped (by
    /// this call or before).
    fn reap(&self, id: u64) -> bool {
        let mut retired = self.retired.lock();
        let Some(u) = retired.entries.get(&id) else {
            return true;
        };
        if !self.unreferenced(&u.entry) {
            return false; // the remaining holder reaps
        }
        let e = retired.entries.remove(&id);
        drop(retired);
        if let Some(e) = e {
            self.deregister_and_free(e);
        }
        true
    }

    /// Reaps the retired entries whose last hold was released without noticing the tag
    /// (held.rs): called on the slow paths, so such a registration outlives its last use by at
    /// most one miss, drain, invalidate or flush.
    #[inline]
    pub(super) fn reap_missed(&self) {
        // Relaxed: see `note_recheck` (we hold the miss lock). Inlined: usually the list is
        // empty, and this load is all a miss pays.
        if self.recheck_pending.load(Ordering::Relaxed) {
            self.reap_listed();
        }
    }

    /// `reap_missed` when the recheck list is not empty.
    fn reap_listed(&self) {
        let mut retired = self.retired.lock();
        if retired.recheck.is_empty() {
            return;
        }
        let RetiredList {
            entries, recheck, ..
        } = &mut *retired;
        let mut free = Vec::new();
        recheck.retain(|id| {
            let unused = match entries.get(id) {
                None => return false, // reaped already
                Some(u) => self.unreferenced(&u.entry),
            };
            if unused {
                free.extend(entries.remove(id));
            }
            !unused
        });
        self.note_recheck(&retired);
        drop(retired);
        // Unreferenced and out of every list: if a deregistration unwinds, the rest leak
        // (EntryPtr has no Drop), which is safe.
        for e in free {
            self.deregister_and_free(e);
        }
    }

    /// Whether a retired entry has no counted reference and no cell holds it (under the retired
    /// list's lock: see the module comment for why that settles it).
    fn unreferenced(&self, e: &Entry) -> bool {
        e.counted() == 0 && !self.held.holds(e)
    }

    /// The last step of `reap`: deregisters and frees an entry the caller found unreferenced
    /// (under the retired list's lock) and took out of the retired list.
    fn deregister_and_free(&self, u: Unindexed) {
        if !self.in_fork_child() {
            self.deregister(None, &registration(&u), u.reg.range);
        }
        // In a fork child the registration belongs to the parent: forget it, never undo it.
        // Out of the index and the retired list, and unreferenced (the caller's check: no
        // count, no cell, and none can appear for an entry out of the index).
        if u.entry.watched() {
            // A cached entry: its slot is the pool's, which the miss lock guards.
            self.retired.lock().returned.push(u.entry);
        } else {
            // SAFETY: a one-use entry (boxed), unreferenced (above).
            unsafe { u.entry.free() };
        }
    }

    /// The first step of an eviction (live → reaped): claims a live entry that nothing
    /// references. The caller holds the index write lock (no new hold can appear) and removes
    /// the entry from the index if this returns true.
    pub(super) fn claim_unused(&self, e: &Entry) -> bool {
        !self.held.holds(e) && e.claim_unused()
    }

    /// The last step of an eviction: stops watching, deregisters and frees an entry claimed by
    /// `claim_unused` and removed from the index and the LRU (owning it across the callouts is
    /// safe: an unwind leaks an entry nothing can reach). Returns the bytes it had registered.
    ///
    /// The entry's slot goes back to the pool for a next miss's entry.
    pub(super) fn evict(&self, u: Unindexed, lock: &MissLocked, pool: &mut Pool) -> u64 {
        self.stats.evicted(lock);
        let range = u.reg.range;
        self.monitor.unwatch(range, u.entry.cookie());
        // No longer watched: a registration handed out for a range inside it (one a merge
        // displaced, still held) is watched by nothing now; a cache kept coherent through the
        // hook (the UCX bridge) must drop it (`Config::on_invalidate`).
        if let Some(hook) = &self.cfg.on_invalidate {
            (hook.0)(range);
        }
        self.deregister(Some(lock), &registration(&u), range);
        let freed = range.len() as u64;
        // SAFETY: claimed by claim_unused with no cell holding it under the write lock, and out
        // of the index and the LRU: nothing references it. A cached entry, so the pool's.
        unsafe { pool.keep(u.entry) };
        freed
    }

    /// Reaps what is still retired when the cache drops (after a flush): only entries of
    /// leaked handles can remain, since handles borrow the cache.
    pub(super) fn reap_leaked(&self) {
        let leaked: Vec<Unindexed> = self
            .retired
            .lock()
            .entries
            .drain()
            .map(|(_, u)| u)
            .collect();
        for u in leaked {
            self.deregister(None, &registration(&u), u.reg.range);
            if u.entry.watched() {
                // A cached entry: the pool's memory, freed with the cache.
                continue;
            }
            // SAFETY: boxed (one-use); no handle can be dereferenced any more (see above).
            unsafe { u.entry.free() };
        }
    }
}

/// The registrar's view of an entry out of the index.
fn registration(u: &Unindexed) -> Registration {
    Registration {
        lkey: u.reg.lkey,
        rkey: u.reg.rkey,
        token: u.entry.token,
    }
}
