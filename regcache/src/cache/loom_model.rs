//! A loom model of the hold-cell protocol (held.rs, entry.rs, and life.rs's `retire`, `reap`,
//! `reap_missed`): a hit's hold, its release on another thread, the retirer's tag, the reap by
//! whoever is last, the `reap_missed` of the next slow path, and the owner re-using a released
//! cell for another entry.
//! It runs the real `Held` and `Entry` code on loom's atomics (the release's clearing store is a
//! swap under loom, held.rs says why) and checks:
//! - never deregistered while held: the holder reads the registration (a loom `UnsafeCell`)
//!   before releasing, the deregistration writes it, so loom reports any deregistration not
//!   ordered after the last use (and the holder asserts it is still registered);
//! - always deregistered eventually, exactly once: after every thread finished, one `reap_missed` (the
//!   next slow path) must leave the entry deregistered.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p regcache --release --lib loom_model`
//! (`make loom`). The retired list is reduced to the one retired entry: whether it is still
//! listed, whether it is on the recheck list, and how often it was deregistered.

use super::entry::Entry;
use super::held::{self, Held};
use super::slot::ThreadSlot;
use loom::cell::UnsafeCell;
use loom::sync::{Arc, Mutex};
use loom::thread;

/// The cache's side: the retired list (life.rs) of one entry, under its lock.
struct RetiredList {
    listed: bool,
    recheck: bool,
    deregistered: u32,
}

struct Model {
    held: Held,
    e: Entry,
    /// The entry the owner holds next, in the cell the release frees (a different address).
    other: Entry,
    /// The registration: true while registered. Read by holders, written by the deregistration.
    reg: UnsafeCell<bool>,
    retired: Mutex<RetiredList>,
}

// SAFETY: test scaffolding; `reg` is only accessed through loom's checked UnsafeCell, whose
// accesses loom verifies are ordered (that is what the model checks).
unsafe impl Sync for Model {}
// SAFETY: as above.
unsafe impl Send for Model {}

const OWNER: ThreadSlot = ThreadSlot {
    index: 0,
    exclusive: true,
};

fn entry(id: u64) -> Entry {
    Entry::cached(id, id)
}

impl Model {
    fn new() -> Self {
        Model {
            held: Held::new(),
            e: entry(1),
            other: entry(2),
            reg: UnsafeCell::new(true),
            retired: Mutex::new(RetiredList {
                listed: false,
                recheck: false,
                deregistered: 0,
            }),
        }
    }

    /// A holder's use of the registration.
    fn use_registration(&self) {
        // SAFETY: a read through loom's checked cell (loom reports an unordered write).
        let live = self.reg.with(|p| unsafe { *p });
        assert!(live, "used after deregistration");
    }

    /// Mirrors `Cache::unreferenced` + `deregister_and_free` under the retired list's lock.
    fn deregister_if_unused(&self, z: &mut RetiredList) -> bool {
        if !z.listed || self.e.counted() != 0 || self.held.holds(&self.e) {
            return false;
        }
        z.listed = false;
        z.deregistered += 1;
        // SAFETY: a write through loom's checked cell.
        self.reg.with_mut(|p| unsafe { *p = false });
        true
    }

    /// Mirrors `Cache::retire` for the entry (already out of the index): under the retired
    /// list's lock mark it retired and tag its cells; found referenced (a count or a cell), list
    /// it and put it on the recheck list, then reap; found unreferenced, deregister it at once
    /// without listing it (outside the lock, as `retire` does).
    fn retire(&self) {
        let unreferenced = {
            let mut z = self.retired.lock().unwrap();
            let uncounted = self.e.mark_retired();
            let held = self.held.tag(&self.e);
            if !uncounted || held {
                z.listed = true;
                z.recheck = true;
            }
            uncounted && !held
        };
        if unreferenced {
            // SAFETY: a write through loom's checked cell (loom reports it if a holder's read
            // is not ordered before it).
            self.reg.with_mut(|p| unsafe { *p = false });
            self.retired.lock().unwrap().deregistered += 1;
        } else {
            self.reap();
        }
    }

    /// Mirrors `Cache::reap`.
    fn reap(&self) {
        let mut z = self.retired.lock().unwrap();
        self.deregister_if_unused(&mut z);
    }

    /// Mirrors `Cache::reap_missed`.
    fn reap_missed(&self) {
        let mut z = self.retired.lock().unwrap();
        if z.recheck && (!z.listed || self.deregister_if_unused(&mut z)) {
            z.recheck = false;
        }
    }

    fn check_end(&self) {
        self.reap_missed(); // the next slow path
        let z = self.retired.lock().unwrap();
        assert_eq!(z.deregistered, 1, "deregistered exactly once, eventually");
        assert!(!z.listed);
    }
}

fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b
}

/// Issue 12 item 3: a hold cell handed from one entry to the next. The releaser (another
/// thread) uses the registration and clears the cell; the cell's owner fills it again for
/// another entry; a scanner (the retirer's reap) that finds the cell holding the other entry
/// deregisters the first. The owner's fill must carry the releaser's Release on to the scanner
/// (its load Acquire, its store Release): with Relaxed, loom reports the deregistration racing
/// with the releaser's use.
#[test]
fn loom_model_cell_reuse_orders_the_last_use_before_deregistration() {
    builder().check(|| {
        let m = Arc::new(Model::new());
        // The hit, while the entry is in the index (before it is retired).
        let cell = SendCell(m.held.hold(OWNER, &m.e).expect("a free cell"));
        let releaser = {
            let m = m.clone();
            thread::spawn(move || {
                let cell = cell;
                m.use_registration();
                // SAFETY: the cell came from `m.held.hold` for this handle; `m` is alive.
                unsafe { held::release(cell.0, || m.e.id) };
            })
        };
        let scanner = {
            let m = m.clone();
            thread::spawn(move || {
                // The entry is out of the index: a scan that sees no cell holding it decides.
                let mut z = m.retired.lock().unwrap();
                z.listed = true;
                m.deregister_if_unused(&mut z);
            })
        };
        // The owner's next hit, of another entry: fills the cell if it is free by now.
        let again = m.held.hold(OWNER, &m.other);
        releaser.join().unwrap();
        scanner.join().unwrap();
        if let Some(c) = again {
            // SAFETY: as above.
            unsafe { held::release(c, || m.other.id) };
        }
    });
}

/// Issue 12 item 4, the cell path: a hit's hold, released on another thread while the retirer
/// marks the entry retired, tags the cell and reaps; the release may see the tag (and reap), or
/// clear the cell before the tag, or erase the tag it did not see (then only the next slow
/// path's `reap_missed` deregisters it). Under loom, `held::release` clears the cell with a
/// swap instead of a plain store (see there: loom 0.7 does not keep a compare_exchange atomic
/// against a plain store, tokio-rs/loom#254).
#[test]
fn loom_model_cell_release_retire_reap_missed() {
    builder().check(|| {
        let m = Arc::new(Model::new());
        // The hit, while the entry is in the index (before it is retired).
        let cell = SendCell(m.held.hold(OWNER, &m.e).expect("a free cell"));
        let releaser = {
            let m = m.clone();
            thread::spawn(move || {
                let cell = cell;
                m.use_registration();
                // SAFETY: the cell came from `m.held.hold` for this handle; `m` is alive.
                if unsafe { held::release(cell.0, || m.e.id) }.is_some() {
                    m.reap();
                }
            })
        };
        m.retire();
        releaser.join().unwrap();
        m.check_end();
    });
}

/// The counted path: a reference counted in the entry's state word, released on another
/// thread while the retirer retires the entry.
#[test]
fn loom_model_counted_release_retire_reap() {
    builder().check(|| {
        let m = Arc::new(Model::new());
        m.e.acquire(); // a miss's (or a full-cells hit's) counted reference
        let releaser = {
            let m = m.clone();
            thread::spawn(move || {
                m.use_registration();
                if m.e.release() {
                    m.reap();
                }
            })
        };
        m.retire();
        releaser.join().unwrap();
        m.check_end();
    });
}

/// A cell pointer moved to the releasing thread (as a handle's is).
struct SendCell(std::ptr::NonNull<loom::sync::atomic::AtomicUsize>);
// SAFETY: the cell is an atomic inside `Held`, kept alive by the model's Arc.
unsafe impl Send for SendCell {}
