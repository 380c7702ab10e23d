//! Client of the ummunotify device (`/dev/ummunotify`, the 2010 ABI; module in `kmod/`).
//!
//! The kernel keeps one queue entry per watched range and a generation counter in a read-only page
//! mapped into this process. The MMU-notifier callback runs while the kernel still holds the
//! unmapping lock, so the counter has moved before munmap() returns and before any other thread
//! can map something new at that address: there is no window in which a lookup could trust a
//! stale entry. Watches are identified by cookie (the cache's entry id), events report cookies.
//!
//! With the module's RING feature (asked for unless `REGCACHE_RING=0`) a hit is published in a
//! page shared with the module instead of queued for read() while that ring has room: a drain
//! takes it with loads and one store (`ring.rs`), and calls read() only when the module says
//! something is queued, and SETTLE only when a hit it took may still be zapping pages (a record
//! is published when the invalidation starts; read() waits for its end by itself). Pinning
//! again after such a drain, or revalidating one of its entries, finds the new pages.

pub mod abi;
mod ring;

use super::{Invalidation, Monitor, MonitorKind, WatchError};
use crate::cache::fork;
use crate::error::{Error, Result};
use crate::range::{page_size, Range};
use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Default device path.
pub const DEVICE: &str = "/dev/ummunotify";

/// Environment variable: `0` (or `off`, `no`, `false`) opens the device without REVALIDATE.
pub const REVALIDATE_ENV: &str = "REGCACHE_REVALIDATE";

/// Environment variable: `0` (or `off`, `no`, `false`) opens the device without RING (every
/// hit read with read(), the 2010 path).
pub const RING_ENV: &str = "REGCACHE_RING";

/// Whether a feature switch's value (`REGCACHE_REVALIDATE`, `REGCACHE_RING`) asks for the
/// feature: anything but an explicit "off".
fn feature_wanted(v: Option<&str>) -> bool {
    !matches!(
        v.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("0" | "off" | "no" | "false")
    )
}

/// Whether the environment asks for REVALIDATE (`REGCACHE_REVALIDATE` unset or not "off").
pub fn revalidate_wanted() -> bool {
    feature_wanted(std::env::var(REVALIDATE_ENV).ok().as_deref())
}

/// Whether the environment asks for RING (`REGCACHE_RING` unset or not "off").
pub fn ring_wanted() -> bool {
    feature_wanted(std::env::var(RING_ENV).ok().as_deref())
}

/// Records read per read() call: one page's worth, as the 2010 driver returns at most.
const EVENTS_PER_READ: usize = 128;

/// What the module says about an armed range (docs/ummunotify-abi.md, REVALIDATE).
pub use super::Revalidation;

/// System calls made by the drains of one monitor (tests, benchmarks): shared, so a test can
/// keep it after the monitor went into a cache.
#[derive(Debug, Default)]
pub struct DrainCalls {
    reads: AtomicU64,
    settles: AtomicU64,
}

impl DrainCalls {
    /// read() calls of the device (the EAGAIN ones included).
    pub fn reads(&self) -> u64 {
        // Relaxed: a statistic; the tests read it after the drains they count returned.
        self.reads.load(Ordering::Relaxed)
    }

    /// SETTLE ioctls (RING only), EINTR retries included.
    pub fn settles(&self) -> u64 {
        // Relaxed: as in reads().
        self.settles.load(Ordering::Relaxed)
    }
}

pub struct UmmunotifyMonitor {
    fd: OwnedFd,
    counter: NonNull<AtomicU64>,
    /// The ring page (RING granted and mapped).
    ring: Option<RingPage>,
    features: u32,
    calls: Arc<DrainCalls>,
    /// Negative control (tests only): drains leave the ring's records where they are and report
    /// none of them, so a churned buffer's stale registration is trusted.
    skip_ring: AtomicBool,
}

// SAFETY: the fd is usable from any thread; `counter` points into a MAP_SHARED read-only page
// and `ring` into a MAP_SHARED read-write page, both mapped for the monitor's life and accessed
// only through atomics and volatile reads (ring.rs), with `tail` stored by drains, which the
// cache serialises (Monitor::drain).
unsafe impl Send for UmmunotifyMonitor {}
// SAFETY: as above; every method takes &self and uses only thread-safe syscalls, atomics and
// volatile reads of records the kernel does not write until the drain gives them back.
unsafe impl Sync for UmmunotifyMonitor {}

/// The ring page (page 0 of the fd OPEN_RING returned), mapped shared and writable; unmapped
/// on drop, except in a fork child (the module does not copy the mapping into children, so
/// the address may hold something of the child's).
struct RingPage {
    view: ring::RingView,
    /// Kept open with the mapping (the mapping would keep the file alive anyway).
    _fd: OwnedFd,
    fork_gen: u64,
}

impl RingPage {
    /// Opens and maps the ring of `dev` (RING granted) and checks what it says of itself.
    fn map(dev: &OwnedFd) -> Result<RingPage> {
        // SAFETY: an ioctl without argument on our own fd.
        let raw = unsafe { libc::ioctl(dev.as_raw_fd(), abi::OPEN_RING as _) };
        if raw < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: the ioctl returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let page = map_pages(&fd, 0, libc::PROT_READ | libc::PROT_WRITE)?;
        let ring = RingPage {
            // SAFETY: a page-aligned shared mapping of one page (>= size_of::<Ring>(), 3200
            // bytes), valid for reads and writes until this RingPage's drop unmaps it, accessed
            // by the kernel as the header's protocol says.
            view: unsafe { ring::RingView::new(page.cast()) },
            _fd: fd,
            fork_gen: fork::generation(),
        };
        if ring.view.slots() != abi::RING_SLOTS as u32 {
            return Err(io::Error::from_raw_os_error(libc::EPROTO).into());
        }
        Ok(ring)
    }
}

impl Drop for RingPage {
    fn drop(&mut self) {
        if fork::current() != self.fork_gen {
            return;
        }
        // SAFETY: unmapping the page mapped in map(), in the process that mapped it; the view
        // dies with `self`.
        unsafe { libc::munmap(self.view.as_ptr().cast(), page_size()) };
    }
}

/// Maps one shared page of the device at page offset `pgoff`.
fn map_pages(fd: &OwnedFd, pgoff: usize, prot: libc::c_int) -> io::Result<NonNull<libc::c_void>> {
    // SAFETY: mapping one page of the device, as the ABI offers it; the result is checked
    // before use and owned (unmapped) by the caller.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page_size(),
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            (pgoff * page_size()) as libc::off_t,
        )
    };
    if page == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(page).ok_or(io::Error::from_raw_os_error(libc::EFAULT))
}

/// Opens `path` (read-only, as in 2010) and negotiates `wanted` features; returns the fd and
/// what the module granted.
fn open_fd(cpath: &CString, wanted: u32) -> io::Result<(OwnedFd, u32)> {
    // SAFETY: cpath is a valid NUL-terminated string; open has no other preconditions.
    let raw = unsafe {
        libc::open(
            cpath.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly opened fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // EXCHANGE_FEATURES must come before any other use of the fd.
    let mut features = wanted;
    // SAFETY: the ioctl reads and writes one u32 through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), abi::EXCHANGE_FEATURES as _, &mut features) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fd, features & wanted))
}

impl UmmunotifyMonitor {
    /// Opens the default device and asks for the FILTER, REVALIDATE and RING features
    /// (REVALIDATE not when `REGCACHE_REVALIDATE=0`: the cache then retires every reported
    /// entry, as with a module that lacks it; RING not when `REGCACHE_RING=0`: every hit is
    /// read with read()).
    pub fn open() -> Result<Self> {
        let mut wanted = abi::FEATURE_FILTER;
        if revalidate_wanted() {
            wanted |= abi::FEATURE_REVALIDATE;
        }
        if ring_wanted() {
            wanted |= abi::FEATURE_RING;
        }
        Self::open_path(DEVICE, wanted)
    }

    /// Opens `path`, negotiates `wanted` features (the kernel grants a subset), maps the counter
    /// and, if RING was granted, the ring page. RING that cannot be used (OPEN_RING or the
    /// mapping fails, the page looks wrong) is not kept half-way: the device is opened again
    /// without it (records would otherwise go to a ring nobody reads).
    pub fn open_path(path: &str, wanted: u32) -> Result<Self> {
        let cpath = CString::new(path).map_err(|_| Error::InvalidArgument("NUL in device path"))?;
        if wanted & abi::FEATURE_RING != 0 {
            if let Ok(m) = Self::open_with_ring(&cpath, wanted) {
                return Ok(m);
            }
        }
        let (fd, features) = open_fd(&cpath, wanted & !abi::FEATURE_RING)?;
        Self::with_fd(fd, features, None)
    }

    /// Opens asking for `wanted` (RING among them); fails unless RING was granted and its page
    /// mapped.
    fn open_with_ring(cpath: &CString, wanted: u32) -> Result<Self> {
        let (fd, features) = open_fd(cpath, wanted)?;
        if features & abi::FEATURE_RING == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOTTY).into());
        }
        let ring = RingPage::map(&fd)?;
        Self::with_fd(fd, features, Some(ring))
    }

    /// The monitor on `fd` (features negotiated): maps the counter page.
    fn with_fd(fd: OwnedFd, features: u32, ring: Option<RingPage>) -> Result<Self> {
        let counter = map_pages(&fd, 0, libc::PROT_READ)?.cast::<AtomicU64>();
        Ok(UmmunotifyMonitor {
            fd,
            counter,
            ring,
            features,
            calls: Arc::default(),
            skip_ring: AtomicBool::new(false),
        })
    }

    /// The feature bits the module granted.
    pub fn features(&self) -> u32 {
        self.features
    }

    /// Whether drains take records from the ring page (RING granted and mapped) before read().
    pub fn ring_active(&self) -> bool {
        self.ring.is_some()
    }

    /// The read() and SETTLE calls of this monitor's drains (counted since open).
    pub fn calls(&self) -> Arc<DrainCalls> {
        self.calls.clone()
    }

    /// read() calls of the device so far.
    pub fn reads(&self) -> u64 {
        self.calls.reads()
    }

    /// SETTLE calls so far.
    pub fn settles(&self) -> u64 {
        self.calls.settles()
    }

    /// NEGATIVE CONTROL, tests only: with `on`, drains leave the ring's records in the ring and
    /// report none of them (a churned buffer's stale registration is then trusted: the oracle
    /// must see the corruption).
    #[doc(hidden)]
    pub fn danger_skip_ring_records(&self, on: bool) {
        // Relaxed: set by the test before the drains it affects, on the same thread.
        self.skip_ring.store(on, Ordering::Relaxed);
    }

    /// Whether [`arm`](Self::arm) and [`check`](Self::check) are available (the module granted
    /// REVALIDATE; without it they fail with ENOTTY).
    pub fn revalidate_supported(&self) -> bool {
        self.features & abi::FEATURE_REVALIDATE != 0
    }

    /// The counter value to pass to [`arm_since`](Self::arm_since): read BEFORE watching the
    /// range (then any hit of the range counts as "since"; read after the watch, a hit whose
    /// counter increment was already visible could still be zapping pages while they are
    /// pinned, and a page faulted in after it would be what ARM digests).
    pub fn counter_now(&self) -> u64 {
        <Self as Monitor>::counter(self).load(std::sync::atomic::Ordering::Acquire)
    }

    fn revalidate(&self, cmd: u64, cookie: u64, flags: u32, counter: u64) -> Result<Revalidation> {
        let mut arg = abi::RevalidateIoctl {
            user_cookie: cookie,
            counter,
            flags,
            result: u32::MAX,
        };
        // SAFETY: the ioctl reads and writes one RevalidateIoctl through the pointer, which is
        // valid and exclusively borrowed for the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), cmd as _, &mut arg) };
        if rc < 0 {
            return Err(io::Error::last_os_error().into());
        }
        match arg.result {
            abi::REVAL_UNCHANGED => Ok(Revalidation::Unchanged),
            abi::REVAL_CHANGED => Ok(Revalidation::Changed),
            abi::REVAL_NOT_ARMED => Ok(Revalidation::NotArmed),
            _ => Err(io::Error::from_raw_os_error(libc::EPROTO).into()),
        }
    }

    /// ARM the watched range `cookie` (after pinning it): the module records what is mapped there
    /// now. `Unchanged` = armed; `Changed` = armed as changed (every check says Changed until the
    /// next arm). Errors: ENOTTY (REVALIDATE not granted), EINVAL (unknown cookie), EIO (another
    /// process: fork child).
    pub fn arm(&self, cookie: u64) -> Result<Revalidation> {
        self.revalidate(abi::ARM_REGION, cookie, 0, 0)
    }

    /// Like [`arm`](Self::arm), and armed as changed if the range was hit after the counter had
    /// the value `counter` (from [`counter_now`](Self::counter_now) before pinning): then what was
    /// pinned is not known to be what is mapped.
    pub fn arm_since(&self, cookie: u64, counter: u64) -> Result<Revalidation> {
        self.revalidate(abi::ARM_REGION, cookie, abi::ARM_SINCE, counter)
    }

    /// CHECK the armed range `cookie`: Unchanged, Changed or NotArmed. Errors as for `arm`.
    pub fn check(&self, cookie: u64) -> Result<Revalidation> {
        self.revalidate(abi::CHECK_REGION, cookie, 0, 0)
    }

    /// One read(): the records the module wrote at the start of `buf` (not zeroed first: a
    /// drain reads one or two records into a page-sized buffer, issue 13).
    fn read_events<'b>(
        &self,
        buf: &'b mut [MaybeUninit<abi::Event>],
    ) -> io::Result<&'b [abi::Event]> {
        let bytes = std::mem::size_of_val(buf);
        // SAFETY: buf is valid, writable memory of `bytes` bytes for the call.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), bytes) };
        // Relaxed: a statistic (DrainCalls).
        self.calls.reads.fetch_add(1, Ordering::Relaxed);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let records = (n as usize / std::mem::size_of::<abi::Event>()).min(buf.len());
        // SAFETY: the kernel wrote `n` bytes from the start of buf, so its first `records`
        // records are initialised, and any bit pattern is a valid Event (plain integers).
        Ok(unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<abi::Event>(), records) })
    }
}

/// Turns one INVAL record into an invalidation; `None` for records of unknown type.
fn decode(ev: &abi::Event) -> Option<Invalidation> {
    if ev.kind != abi::EVENT_TYPE_INVAL || ev.hint_start >= ev.hint_end {
        return None;
    }
    let hint = Range {
        start: ev.hint_start as usize,
        end: ev.hint_end as usize,
    };
    Some(Invalidation::Cookie {
        cookie: ev.user_cookie_counter,
        hint,
    })
}

impl Monitor for UmmunotifyMonitor {
    fn kind(&self) -> MonitorKind {
        MonitorKind::Ummunotify
    }

    fn counter(&self) -> &AtomicU64 {
        // SAFETY: the page is mapped for as long as `self` lives, 8-byte aligned (page aligned),
        // and the kernel updates the u64 with single aligned stores, so atomic loads are sound.
        unsafe { self.counter.as_ref() }
    }

    fn revalidates(&self) -> bool {
        self.revalidate_supported()
    }

    fn watch_survives_unmap(&self) -> bool {
        // A region is an mmu_interval_notifier on the address range: it stays in the mm's
        // tree across munmap/mmap until UNREGISTER, and a region hit after its record was
        // read is queued again (umn_region_queue_hit). Its REVALIDATE state (the digest of
        // the last ARM) is what the cache must not trust for a later registration
        // (cache/park.rs).
        true
    }

    fn revalidate_arm_since(&self, cookie: u64, since: u64) -> Result<Revalidation> {
        UmmunotifyMonitor::arm_since(self, cookie, since)
    }

    fn revalidate_check(&self, cookie: u64) -> Result<Revalidation> {
        UmmunotifyMonitor::check(self, cookie)
    }

    fn watch(&self, range: Range, cookie: u64) -> std::result::Result<(), WatchError> {
        let arg = abi::RegisterIoctl {
            start: range.start as u64,
            end: range.end as u64,
            user_cookie: cookie,
            flags: 0,
            reserved: 0,
        };
        // SAFETY: the ioctl reads one RegisterIoctl through the pointer, which is valid.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), abi::REGISTER_REGION as _, &arg) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(e @ (libc::EINVAL | libc::EFAULT)) => Err(WatchError::Unwatchable(e)),
            _ => Err(WatchError::Failed(err.into())),
        }
    }

    fn unwatch(&self, _range: Range, cookie: u64) {
        // SAFETY: the ioctl reads one u64 through the pointer, which is valid. An unknown cookie
        // gives EINVAL, which is harmless here.
        unsafe { libc::ioctl(self.fd.as_raw_fd(), abi::UNREGISTER_REGION as _, &cookie) };
    }

    fn drain(&self, out: &mut Vec<Invalidation>) -> Result<u64> {
        // A fork child has the counter page but not the ring's (the module does not copy it),
        // and the device answers EIO there anyway. The cache never drains in a child (fork.rs);
        // this guards direct users.
        if self
            .ring
            .as_ref()
            .is_some_and(|r| fork::current() != r.fork_gen)
        {
            return Err(Error::ForkedChild);
        }
        // Acquire: pairs with the kernel's increment, which it makes after queueing under its
        // lock (or publishing in the ring, RING); every event counted up to `before` is then in
        // the ring or the queue we are about to read (step 1 of the RING protocol).
        let before = self.counter().load(Ordering::Acquire);
        let last = match &self.ring {
            None => self.read_queue(out)?,
            // Relaxed: the negative control's switch, set by the test before it drains.
            Some(ring) => ring.view.drain(
                self.skip_ring.load(Ordering::Relaxed),
                out,
                |out| self.read_queue(out),
                || self.settle(),
            )?,
        };
        Ok(complete_up_to(before, last, self.ring.is_some()))
    }
}

/// The generation a drain is complete up to: `before`, the counter loaded first (every hit
/// counted up to it was taken), or, without RING, the counter of the LAST record if read()
/// met one (the queue emptied then: every hit counted up to that value was read). Not with
/// RING: a hit published in the ring after the ring was taken and before read() returned is
/// counted below the LAST's value but was not taken; trusting that value would let a lookup
/// find the counter equal to it and trust the stale entry (a false negative). `before` only
/// costs a drain more when such a hit came.
fn complete_up_to(before: u64, last: Option<u64>, ring: bool) -> u64 {
    match last {
        Some(l) if !ring => l.max(before),
        _ => before,
    }
}

impl UmmunotifyMonitor {
    /// The 2010 read() loop: appends the queued records to `out` up to a LAST record, whose
    /// counter it returns.
    fn read_queue(&self, out: &mut Vec<Invalidation>) -> Result<Option<u64>> {
        let mut last = None;
        let mut buf = [const { MaybeUninit::<abi::Event>::uninit() }; EVENTS_PER_READ];
        loop {
            let records = match self.read_events(&mut buf) {
                Ok([]) => break,
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let mut at_last = false;
            for ev in records {
                if ev.kind == abi::EVENT_TYPE_LAST {
                    last = Some(ev.user_cookie_counter);
                    at_last = true;
                } else if let Some(inv) = decode(ev) {
                    out.push(inv);
                }
            }
            // A LAST ends the queue as the module saw it (it is appended only when no record
            // was left behind, umn_queue_peek): every hit counted up to its counter value is
            // in this read or an earlier one, so the generation returned below is complete
            // without a second read() that would only answer EAGAIN (one system call per
            // drain, issue 13: 100% churn). A hit after it moved the counter past that value,
            // so the next lookup finds the counter ahead of `drained` and drains again.
            if at_last {
                break;
            }
        }
        Ok(last)
    }

    /// SETTLE (RING step 4): returns once every invalidation of the address space running now
    /// has ended, so the pages of the ring records just taken are gone. Retried on EINTR.
    fn settle(&self) -> Result<()> {
        loop {
            // Relaxed: a statistic (DrainCalls).
            self.calls.settles.fetch_add(1, Ordering::Relaxed);
            // SAFETY: an ioctl without argument on our own fd.
            let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), abi::SETTLE as _) };
            if rc == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err.into());
            }
        }
    }
}

impl Drop for UmmunotifyMonitor {
    fn drop(&mut self) {
        // SAFETY: unmapping the page mapped in open_path; no reference to it outlives `self`.
        unsafe { libc::munmap(self.counter.as_ptr().cast(), page_size()) };
        // The ring page, if any, is unmapped by RingPage's drop.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_drain_is_complete_up_to_the_counter_read_first_not_last() {
        // Without RING, a LAST record's counter covers every hit counted up to it.
        assert_eq!(complete_up_to(10, Some(12), false), 12);
        assert_eq!(complete_up_to(10, None, false), 10);
        // With RING, a hit published in the ring between taking it and read()'s LAST is
        // counted up to the LAST's value but was not taken: only the first counter is complete.
        assert_eq!(complete_up_to(10, Some(12), true), 10);
        assert_eq!(complete_up_to(10, None, true), 10);
    }

    #[test]
    fn decodes_inval_with_hint() {
        let ev = abi::Event {
            kind: abi::EVENT_TYPE_INVAL,
            flags: abi::EVENT_FLAG_HINT,
            hint_start: 0x1000,
            hint_end: 0x2000,
            user_cookie_counter: 123,
        };
        assert_eq!(
            decode(&ev),
            Some(Invalidation::Cookie {
                cookie: 123,
                hint: Range {
                    start: 0x1000,
                    end: 0x2000
                }
            })
        );
        let last = abi::Event {
            kind: abi::EVENT_TYPE_LAST,
            ..ev
        };
        assert_eq!(decode(&last), None);
    }

    /// The module, or None (skip) when it is not loaded here (the host); under
    /// `REGCACHE_MONITOR=ummunotify` (vmtest/test-regcache.sh) a missing device fails instead.
    fn device_or_skip(wanted: u32) -> Option<UmmunotifyMonitor> {
        match UmmunotifyMonitor::open_path(DEVICE, wanted) {
            Ok(m) => Some(m),
            Err(e) if std::env::var("REGCACHE_MONITOR").as_deref() == Ok("ummunotify") => {
                panic!("REGCACHE_MONITOR=ummunotify but {DEVICE}: {e}")
            }
            Err(e) => {
                eprintln!("skipped: {DEVICE}: {e}");
                None
            }
        }
    }

    /// A populated private anonymous mapping of `pages` pages, unmapped on drop.
    struct Mapping(*mut u8, usize);

    impl Mapping {
        fn new(pages: usize) -> Mapping {
            let len = pages * page_size();
            // SAFETY: a fresh anonymous mapping; the result is checked.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            // SAFETY: p..p+len is a writable mapping owned by this Mapping.
            unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, len) };
            Mapping(p.cast(), len)
        }

        fn range(&self) -> Range {
            Range {
                start: self.0 as usize,
                end: self.0 as usize + self.1,
            }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: unmapping what `new` mapped; nothing borrows it any more.
            unsafe { libc::munmap(self.0.cast(), self.1) };
        }
    }

    #[test]
    fn revalidate_not_negotiated_is_enotty() {
        let Some(m) = device_or_skip(abi::FEATURE_FILTER) else {
            return;
        };
        assert!(!m.revalidate_supported());
        let map = Mapping::new(1);
        m.watch(map.range(), 1).unwrap();
        match m.check(1) {
            Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOTTY)),
            other => panic!("check without REVALIDATE: {other:?}"),
        }
    }

    #[test]
    fn revalidate_arm_check_in_the_guest() {
        let Some(m) = device_or_skip(abi::FEATURE_FILTER | abi::FEATURE_REVALIDATE) else {
            return;
        };
        assert!(m.revalidate_supported());
        let map = Mapping::new(4);
        let r = map.range();
        let unknown = m.check(99);
        assert!(matches!(unknown, Err(Error::Io(ref e)) if e.raw_os_error() == Some(libc::EINVAL)));
        m.watch(r, 1).unwrap();
        assert_eq!(m.check(1).unwrap(), Revalidation::NotArmed);
        let before = m.counter_now();
        assert_eq!(m.arm_since(1, before).unwrap(), Revalidation::Unchanged);
        assert_eq!(m.check(1).unwrap(), Revalidation::Unchanged);
        // Protection dropped and given back on the last page: same frames, still writable
        // (exclusive anonymous pages), so unchanged.
        let last = (r.end - page_size()) as *mut libc::c_void;
        // SAFETY: `last` is the last page of `map`, which this test owns.
        unsafe {
            assert_eq!(libc::mprotect(last, page_size(), libc::PROT_READ), 0);
            assert_eq!(
                libc::mprotect(last, page_size(), libc::PROT_READ | libc::PROT_WRITE),
                0
            );
        }
        assert_eq!(m.check(1).unwrap(), Revalidation::Unchanged);
        // DONTNEED of the last page: gone.
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::madvise(last, page_size(), libc::MADV_DONTNEED) },
            0
        );
        assert_eq!(m.check(1).unwrap(), Revalidation::Changed);
        // Hit since `before`: armed as changed.
        assert_eq!(m.arm_since(1, before).unwrap(), Revalidation::Changed);
        assert_eq!(m.check(1).unwrap(), Revalidation::Changed);
        m.unwatch(r, 1);
        assert!(m.arm(1).is_err());
    }

    #[test]
    fn revalidate_and_ring_env_switch() {
        assert!(feature_wanted(None));
        assert!(feature_wanted(Some("1")));
        assert!(feature_wanted(Some("")));
        for off in ["0", "off", " NO ", "false"] {
            assert!(!feature_wanted(Some(off)), "{off}");
        }
    }

    /// The module with RING (and FILTER), or None (skip) where there is no device; under
    /// `REGCACHE_MONITOR=ummunotify` (the guest) a module that does not give a usable ring is a
    /// failure.
    fn ring_device_or_skip() -> Option<UmmunotifyMonitor> {
        let m = device_or_skip(abi::FEATURE_FILTER | abi::FEATURE_RING)?;
        assert!(
            m.ring_active(),
            "RING not granted or its page not mapped (features {:#x})",
            m.features()
        );
        assert_ne!(m.features() & abi::FEATURE_RING, 0);
        Some(m)
    }

    fn unmap(addr: usize, len: usize) {
        // SAFETY: unmapping pages of a Mapping this test owns; its drop unmaps them again,
        // which is harmless.
        assert_eq!(unsafe { libc::munmap(addr as *mut libc::c_void, len) }, 0);
    }

    fn drain_all(m: &UmmunotifyMonitor) -> (Vec<Invalidation>, u64) {
        let mut out = Vec::new();
        let g = m.drain(&mut out).unwrap();
        (out, g)
    }

    /// One hit of one watched range, through the ring (or read() without RING): the cookie,
    /// the unmapped part as hint, and the counter covered by the returned generation.
    fn unmap_reports_cookie_and_hint(m: &UmmunotifyMonitor) {
        let map = Mapping::new(4);
        let r = map.range();
        m.watch(r, 7).unwrap();
        let (out, _) = drain_all(m);
        assert!(out.is_empty(), "{out:?}");
        let part = Range {
            start: r.start + 2 * page_size(),
            end: r.end,
        };
        unmap(part.start, part.len());
        let reads = m.reads();
        let (out, g) = drain_all(m);
        assert_eq!(
            out,
            [Invalidation::Cookie {
                cookie: 7,
                hint: part
            }]
        );
        assert!(g >= m.counter_now(), "generation {g} behind the counter");
        if m.ring_active() {
            assert_eq!(m.reads(), reads, "the ring's record cost a read()");
        } else {
            assert!(m.reads() > reads);
        }
        m.unwatch(r, 7);
    }

    #[test]
    fn ring_unmap_comes_through_the_ring_without_read() {
        if let Some(m) = ring_device_or_skip() {
            unmap_reports_cookie_and_hint(&m);
        }
    }

    #[test]
    fn ring_off_unmap_comes_through_read() {
        if let Some(m) = device_or_skip(abi::FEATURE_FILTER) {
            assert!(!m.ring_active());
            unmap_reports_cookie_and_hint(&m);
        }
    }

    /// 100% churn: every drain finds exactly its buffer's cookie, with no read(), well past
    /// the ring's 128 slots (the kernel's and our indices wrap).
    #[test]
    fn ring_churn_many_rounds_without_read() {
        let Some(m) = ring_device_or_skip() else {
            return;
        };
        let reads = m.reads();
        for cookie in 1..=300u64 {
            let map = Mapping::new(1);
            let r = map.range();
            m.watch(r, cookie).unwrap();
            drop(map);
            let (out, _) = drain_all(&m);
            assert_eq!(
                out,
                [Invalidation::Cookie { cookie, hint: r }],
                "round {cookie}"
            );
            m.unwatch(r, cookie);
        }
        assert_eq!(m.reads(), reads, "a churned drain made a read()");
    }

    /// More hits in one munmap than the ring has slots: the first ones in the ring, the rest
    /// queued for read(), every cookie reported once.
    #[test]
    fn ring_overflow_goes_to_read() {
        let Some(m) = ring_device_or_skip() else {
            return;
        };
        let n = abi::RING_SLOTS + 72;
        let map = Mapping::new(n);
        let base = map.range().start;
        let page = |i: usize| Range {
            start: base + i * page_size(),
            end: base + (i + 1) * page_size(),
        };
        for i in 0..n {
            m.watch(page(i), i as u64 + 1).unwrap();
        }
        let reads = m.reads();
        drop(map);
        let (out, g) = drain_all(&m);
        assert!(g >= m.counter_now());
        assert!(m.reads() > reads, "ring overflow without read()");
        let mut got: Vec<(u64, Range)> = out
            .iter()
            .map(|i| match *i {
                Invalidation::Cookie { cookie, hint } => (cookie, hint),
                ref other => panic!("{other:?}"),
            })
            .collect();
        got.sort_by_key(|&(c, _)| c);
        let want: Vec<(u64, Range)> = (0..n).map(|i| (i as u64 + 1, page(i))).collect();
        assert_eq!(got, want);
        // The ring is usable again: one more hit comes without read().
        let again = Mapping::new(1);
        m.watch(again.range(), 1000).unwrap();
        let r = again.range();
        drop(again);
        let reads = m.reads();
        let (out, _) = drain_all(&m);
        assert_eq!(
            out,
            [Invalidation::Cookie {
                cookie: 1000,
                hint: r
            }]
        );
        assert_eq!(m.reads(), reads);
    }

    /// Whether the page at `addr` is present (/proc/self/pagemap, bit 63).
    fn present(addr: usize) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open("/proc/self/pagemap").unwrap();
        f.seek(SeekFrom::Start((addr / page_size() * 8) as u64))
            .unwrap();
        let mut e = [0u8; 8];
        f.read_exact(&mut e).unwrap();
        u64::from_ne_bytes(e) >> 63 == 1
    }

    /// One MADV_DONTNEED of 128 MiB on another thread, whose last page is watched: the record
    /// is published when the zap starts, the page goes at its end. `settle` says whether the
    /// drain is the monitor's (SETTLE when running) or a bare take of the ring; returns whether
    /// the page was still present when the drain returned with its cookie.
    fn page_present_after_drain(m: &UmmunotifyMonitor, settle: bool) -> bool {
        let map = Mapping::new(32768);
        let r = map.range();
        let last = Range {
            start: r.end - page_size(),
            end: r.end,
        };
        m.watch(last, 1).unwrap();
        assert!(present(last.start));
        let before = m.counter_now();
        let stale = std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: DONTNEED of the test's own mapping, which outlives the scope.
                let rc = unsafe {
                    libc::madvise(r.start as *mut libc::c_void, r.len(), libc::MADV_DONTNEED)
                };
                assert_eq!(rc, 0);
            });
            while m.counter_now() == before {
                std::hint::spin_loop();
            }
            let mut out = Vec::new();
            if settle {
                m.drain(&mut out).unwrap();
            } else {
                m.ring.as_ref().unwrap().view.take(&mut out);
            }
            let stale = present(last.start);
            assert_eq!(
                out,
                [Invalidation::Cookie {
                    cookie: 1,
                    hint: last
                }]
            );
            stale
        });
        m.unwatch(last, 1);
        stale
    }

    /// What SETTLE is for: after a drain that returned a ring record, the record's pages are
    /// gone, even while the invalidation that published it is still zapping. The bare take
    /// (no SETTLE) is the control: it usually returns while the page is still mapped, which
    /// is printed, not asserted (it depends on timing).
    #[test]
    fn ring_drain_returns_after_the_pages_are_gone() {
        let Some(m) = ring_device_or_skip() else {
            return;
        };
        let bare: Vec<bool> = (0..3)
            .map(|_| page_present_after_drain(&m, false))
            .collect();
        eprintln!("without SETTLE, page still present when the record was taken: {bare:?}");
        let settles = m.settles();
        for round in 0..3 {
            assert!(
                !page_present_after_drain(&m, true),
                "round {round}: drain returned the cookie while its page was still mapped"
            );
        }
        eprintln!(
            "with SETTLE: {} SETTLE calls in 3 rounds",
            m.settles() - settles
        );
    }

    /// SETTLE itself: returns at once with nothing running, counted; ENOTTY without RING.
    #[test]
    fn settle_ioctl_in_the_guest() {
        if let Some(m) = ring_device_or_skip() {
            let before = m.settles();
            m.settle().unwrap();
            assert_eq!(m.settles(), before + 1);
        }
        if let Some(m) = device_or_skip(abi::FEATURE_FILTER) {
            match m.settle() {
                Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOTTY)),
                other => panic!("SETTLE without RING: {other:?}"),
            }
        }
    }

    /// In a fork child (no ring page there: the module does not copy it) drain refuses, and
    /// dropping the monitor leaves whatever the child mapped at the ring's address.
    #[test]
    fn ring_fork_child_drain_refused_and_drop_unmaps_nothing() {
        let Some(m) = ring_device_or_skip() else {
            return;
        };
        let at = m.ring.as_ref().unwrap().view.as_ptr() as usize;
        // SAFETY: the child only makes system calls, touches its own new page and drops the
        // monitor, then _exit()s; the parent waits for it (tests run one at a time in the guest).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let mut code = 0;
            // SAFETY: a new private page at the ring's address, which the child does not have.
            let p = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    page_size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p as usize != at {
                code = 1;
            }
            let mut out = Vec::new();
            if !matches!(m.drain(&mut out), Err(Error::ForkedChild)) {
                code = 2;
            }
            drop(m);
            // SAFETY: the child's page mapped above; if the drop unmapped it, this faults and
            // the child dies of SIGSEGV, which the parent sees.
            unsafe {
                p.cast::<u8>().write_volatile(7);
            }
            // SAFETY: ends the child without running the test harness's exit path.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
        // The parent's ring still works.
        unmap_reports_cookie_and_hint(&m);
    }

    /// `open()` follows REGCACHE_RING: run once with it unset and once with REGCACHE_RING=0
    /// (vmtest/test-regcache.sh).
    #[test]
    fn open_follows_regcache_ring() {
        let required = std::env::var("REGCACHE_MONITOR").as_deref() == Ok("ummunotify");
        match UmmunotifyMonitor::open() {
            Ok(m) => {
                assert_eq!(
                    m.ring_active(),
                    ring_wanted(),
                    "features {:#x}",
                    m.features()
                );
                unmap_reports_cookie_and_hint(&m);
            }
            Err(e) if required => panic!("{DEVICE}: {e}"),
            Err(e) => eprintln!("skipped: {DEVICE}: {e}"),
        }
    }

    #[test]
    fn missing_device_is_a_clear_error() {
        match UmmunotifyMonitor::open_path("/dev/does-not-exist-ummunotify", 0) {
            Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT)),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a device that does not exist"),
        }
    }
}
