//! The Prometheus exporter over the C ABI: regcache_metrics_start() / _add() / _stop(), where it
//! serves (_address(), _textfile()), and the application's own metrics (_add_metric()). The
//! configuration is the exporter crate's own (its spec string or the REGCACHE_METRICS_*
//! environment, the launcher's rank offset and labels); nothing of it is parsed here.

use crate::guard::{cache_ref, check_out, copy_str, guard, metrics_ref, out_buf, Fail};
use crate::types::{regcache_cache, regcache_metrics, DEAD_MAGIC, METRICS_MAGIC};
use regcache_exporter::{AddError, CacheSet, Config, Exporter, MetricKind};
use std::ffi::{c_void, CStr};
use std::os::raw::{c_char, c_int};
use std::sync::PoisonError;

/// Longest spec accepted (bytes, without the NUL): bounds how far a missing NUL is read.
const MAX_SPEC: usize = 4096;

/// The spec as a string: NULL is `None` (the environment).
///
/// # Safety
/// `spec` is NULL or a NUL-terminated string, readable up to its NUL or `MAX_SPEC + 1` bytes.
unsafe fn spec_str<'a>(spec: *const c_char) -> Result<Option<&'a str>, Fail> {
    if spec.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null; strnlen reads at most MAX_SPEC + 1 bytes, up to the NUL (contract).
    let n = unsafe { libc::strnlen(spec, MAX_SPEC + 1) };
    if n > MAX_SPEC {
        return Err(Fail::inval(&format!(
            "spec is longer than {MAX_SPEC} bytes"
        )));
    }
    // SAFETY: a NUL at `n` (found by strnlen), the bytes before it readable.
    let s = unsafe { CStr::from_ptr(spec) };
    s.to_str()
        .map(Some)
        .map_err(|_| Fail::inval("spec is not UTF-8"))
}

/// Why the exporter did not start, as an errno and one line.
fn start_failure(e: regcache_exporter::Error) -> Fail {
    use regcache_exporter::Error as E;
    let errno = |err: &std::io::Error| err.raw_os_error().unwrap_or(libc::EIO);
    match e {
        E::Config(c) => Fail::inval(&c.to_string()),
        E::Listen { addr, err } => {
            Fail::new(errno(&err), format!("cannot listen on {addr}: {err}"))
        }
        E::Textfile { path, err } => Fail::new(
            errno(&err),
            format!("cannot write the textfile {}: {err}", path.display()),
        ),
        E::Thread(err) => Fail::new(
            errno(&err),
            format!("cannot start the exporter thread: {err}"),
        ),
    }
}

/// Adds `c` to the exporter's set and records the set in the cache (regcache_destroy leaves it).
fn add(m: &regcache_metrics, c: &regcache_cache) -> Result<(), Fail> {
    let mut sets = c.metrics.lock().unwrap_or_else(PoisonError::into_inner);
    if !m.caches.add(c.cache.clone()) {
        return Err(Fail::new(
            libc::EEXIST,
            "the cache is already exported by this exporter",
        ));
    }
    sets.push(m.caches.clone());
    Ok(())
}

/// Starts serving Prometheus metrics: an HTTP `/metrics` listener, a node_exporter textfile
/// rewritten every interval and when stopped, or both, in a thread of the library. The counters
/// of `cache` (may be NULL) and of every cache added with regcache_metrics_add() are summed into
/// one series per metric.
///
/// `spec` says where, as items separated by commas: `ADDR` (or `addr=ADDR`): `1` for
/// 127.0.0.1:9464, `:PORT`, `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT` (port 0: the kernel
/// picks one, see regcache_metrics_address()); `textfile=DIR` (a `.prom` file per process);
/// `interval=SECS` (textfile rewrites, default 15; `500ms`, `2.5s`). Example:
/// `":9464,textfile=/var/lib/node_exporter"`. NULL: the environment, as Rust programs read it
/// (REGCACHE_METRICS_ADDR, REGCACHE_METRICS_TEXTFILE_DIR, REGCACHE_METRICS_INTERVAL). Either
/// way the MPI launcher's local rank (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID,
/// PMI_LOCAL_RANK, SLURM_LOCALID) is added to a non-zero port, and rank and job id label
/// every series.
///
/// On success returns 0 and stores the exporter in `*metrics`, or NULL there when the spec (or
/// the environment) asks for nothing: empty, `off`, `0`. On failure stores NULL and returns
/// -EINVAL (NULL `metrics`, an invalid `cache`, a bad spec: regcache_last_error() names the
/// item and the accepted forms), -EADDRINUSE, -EADDRNOTAVAIL or -EACCES (cannot listen),
/// -ENOENT, -ENOTDIR or -EACCES (cannot write the textfile), or another errno; nothing keeps
/// running then.
///
/// Ownership: the caller owns the exporter and ends it with regcache_metrics_stop(). The
/// exporter keeps its own reference to each cache's counters: destroying a cache is allowed at
/// any time (it leaves the exporter, its counters staying in the totals). `spec` is only read
/// during the call.
///
/// # Safety
/// `cache` is NULL or a live cache; `spec` is NULL or a NUL-terminated string; `metrics` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn regcache_metrics_start(
    cache: *mut regcache_cache,
    spec: *const c_char,
    metrics: *mut *mut regcache_metrics,
) -> c_int {
    guard("regcache_metrics_start", || {
        check_out(metrics, "metrics (the output pointer)")?;
        // SAFETY: non-null, aligned (checked), writable per the contract. NULL first, so a
        // failure leaves no stale pointer behind.
        unsafe { metrics.write(std::ptr::null_mut()) };
        let c = if cache.is_null() {
            None
        } else {
            // SAFETY: forwarded contract.
            Some(unsafe { cache_ref(cache) }?)
        };
        // SAFETY: forwarded contract on `spec`.
        let cfg = match unsafe { spec_str(spec) }? {
            Some(s) => Config::from_spec(s),
            None => Config::from_env(),
        }
        .map_err(|e| Fail::inval(&e.to_string()))?;
        let Some(cfg) = cfg else {
            return Ok(0);
        };
        // The cache joins the set before the start, so the first textfile already counts it;
        // it records the set (for regcache_destroy) only once the exporter runs.
        let caches = CacheSet::new();
        if let Some(c) = c {
            caches.add(c.cache.clone());
        }
        let handle = Exporter::with_caches(&caches, cfg)
            .start()
            .map_err(start_failure)?;
        if let Some(c) = c {
            let mut sets = c.metrics.lock().unwrap_or_else(PoisonError::into_inner);
            sets.push(caches.clone());
        }
        let m = Box::new(regcache_metrics {
            magic: METRICS_MAGIC,
            caches,
            handle: Some(handle),
        });
        // SAFETY: checked above.
        unsafe { metrics.write(Box::into_raw(m)) };
        Ok(0)
    })
}

/// Adds a cache to a running exporter: its counters are summed with the others' from the next
/// scrape or textfile write on. A cache may be in several exporters; regcache_destroy() removes
/// it from all of them. Returns 0, -EEXIST if it is in this exporter already, or -EINVAL.
/// Thread-safe.
///
/// # Safety
/// `metrics` is NULL or a running exporter; `cache` is NULL or a live cache.
#[no_mangle]
pub unsafe extern "C" fn regcache_metrics_add(
    metrics: *mut regcache_metrics,
    cache: *mut regcache_cache,
) -> c_int {
    guard("regcache_metrics_add", || {
        // SAFETY: forwarded contract.
        let m = unsafe { metrics_ref(metrics) }?;
        // SAFETY: forwarded contract.
        let c = unsafe { cache_ref(cache) }?;
        add(m, c)?;
        Ok(0)
    })
}

/// Stops an exporter: writes the textfile a last time, closes the listener, joins the thread
/// and frees the exporter, which must not be used again. The caches are unaffected. In a
/// fork() child of the process that started it (where its thread does not exist) it only frees
/// the child's copy. Returns 0, or -EINVAL for a NULL or invalid `metrics`.
///
/// # Safety
/// `metrics` is NULL or a running exporter, not used concurrently with or after this call.
#[no_mangle]
pub unsafe extern "C" fn regcache_metrics_stop(metrics: *mut regcache_metrics) -> c_int {
    guard("regcache_metrics_stop", || {
        // SAFETY: forwarded contract.
        unsafe { metrics_ref(metrics) }?;
        // SAFETY: validated as a running exporter made by Box::into_raw in
        // regcache_metrics_start; the caller gives up its only pointer.
        let mut boxed = unsafe { Box::from_raw(metrics) };
        boxed.magic = DEAD_MAGIC;
        // The last textfile write needs the caches: stop first, then let them go.
        drop(boxed.handle.take());
        boxed.caches.clear();
        drop(boxed);
        Ok(0)
    })
}

/// Copies where the exporter listens, `IP:PORT` (`[IPv6]:PORT`), with the port actually bound,
/// into `buf`, NUL-terminated and truncated to `len` bytes. Returns the full length (without
/// the NUL), 0 when it has no listener (textfile only); `buf` NULL with `len` 0 asks for the
/// length. -EINVAL for an invalid `metrics`, or `buf` NULL with `len` not 0.
///
/// # Safety
/// `metrics` is NULL or a running exporter; `buf` is NULL or points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn regcache_metrics_address(
    metrics: *const regcache_metrics,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    guard("regcache_metrics_address", || {
        // SAFETY: forwarded contract.
        let m = unsafe { metrics_ref(metrics) }?;
        // SAFETY: forwarded contract.
        let out = unsafe { out_buf(buf, len) }?;
        let addr = m
            .handle
            .as_ref()
            .and_then(|h| h.local_addr())
            .map(|a| a.to_string())
            .unwrap_or_default();
        Ok(c_int::try_from(copy_str(&addr, out)).unwrap_or(c_int::MAX))
    })
}

/// Copies the path of the textfile the exporter writes into `buf`, as
/// regcache_metrics_address() does; 0 when it writes none (listener only).
///
/// # Safety
/// As for regcache_metrics_address().
#[no_mangle]
pub unsafe extern "C" fn regcache_metrics_textfile(
    metrics: *const regcache_metrics,
    buf: *mut c_char,
    len: usize,
) -> c_int {
    guard("regcache_metrics_textfile", || {
        // SAFETY: forwarded contract.
        let m = unsafe { metrics_ref(metrics) }?;
        // SAFETY: forwarded contract.
        let out = unsafe { out_buf(buf, len) }?;
        let path = m
            .handle
            .as_ref()
            .and_then(|h| h.textfile())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(c_int::try_from(copy_str(&path, out)).unwrap_or(c_int::MAX))
    })
}

/// `kind` of regcache_metrics_add_metric(): a counter, which only goes up (exposed as
/// `NAME_total`, as the cache's own counters are).
pub const REGCACHE_METRIC_COUNTER: u32 = 0;
/// `kind` of regcache_metrics_add_metric(): a gauge, which goes up and down (exposed as `NAME`).
pub const REGCACHE_METRIC_GAUGE: u32 = 1;

/// Reads an application metric's current value (regcache_metrics_add_metric()), `ctx` being the
/// pointer given with it. Called on the exporter's thread at every scrape and textfile write
/// (never in a fork() child of the process that started the exporter): it must be thread-safe,
/// must not block, should be quick (a relaxed atomic load), must not unwind (no C++ exception,
/// no longjmp out), and must not call regcache_metrics_stop() on its own exporter.
#[allow(non_camel_case_types)]
pub type regcache_metric_fn = Option<unsafe extern "C" fn(ctx: *mut c_void) -> u64>;

/// A C read function and its context, called from the exporter's thread.
struct CRead {
    read: unsafe extern "C" fn(ctx: *mut c_void) -> u64,
    ctx: *mut c_void,
}

// SAFETY: the caller of regcache_metrics_add_metric() guarantees that `read` may be called with
// `ctx` from any thread, concurrently (the function's contract); the library never touches `ctx`.
unsafe impl Send for CRead {}
// SAFETY: as above: shared access only calls `read(ctx)`, which is thread-safe by contract.
unsafe impl Sync for CRead {}

impl CRead {
    fn call(&self) -> u64 {
        // SAFETY: `read` and `ctx` stay valid until regcache_metrics_stop(), which joins the
        // exporter thread before returning, so no call outlives them; `read` is thread-safe and
        // does not unwind (the contract of regcache_metrics_add_metric()).
        unsafe { (self.read)(self.ctx) }
    }
}

/// A NUL-terminated argument as a string, at most `max` bytes.
///
/// # Safety
/// `p` is non-null and NUL-terminated, readable up to its NUL or `max + 1` bytes.
unsafe fn c_str<'a>(p: *const c_char, what: &str, max: usize) -> Result<&'a str, Fail> {
    // SAFETY: non-null; strnlen reads at most max + 1 bytes, up to the NUL (contract).
    let n = unsafe { libc::strnlen(p, max + 1) };
    if n > max {
        return Err(Fail::inval(&format!("{what} is longer than {max} bytes")));
    }
    // SAFETY: a NUL at `n` (found by strnlen), the bytes before it readable.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| Fail::inval(&format!("{what} is not UTF-8")))
}

/// Adds an application metric to a running exporter: served on the same `/metrics` page and in
/// the same textfile as the caches' counters, with the same labels (rank, local_rank, job_id),
/// from the next scrape or textfile write on, until regcache_metrics_stop(). `read(ctx)` gives
/// its value each time (see regcache_metric_fn).
///
/// `name`: `[a-zA-Z_:][a-zA-Z0-9_:]*`, at most 128 bytes, not a name the exporter already serves
/// (the caches' `regcache_*` series, earlier application metrics). `kind`:
/// REGCACHE_METRIC_COUNTER, exposed as `NAME_total` (so `name` must not end in `_total`; a
/// counter `x` also takes the name `x_total`), or REGCACHE_METRIC_GAUGE, exposed as `NAME`.
/// `help`: one line of text (no newline, at most 1024 bytes), or NULL for a generic one. `name`
/// and `help` are copied; `read` is required, `ctx` may be NULL.
///
/// Returns 0, -EINVAL (NULL or invalid `metrics`, NULL `name` or `read`, a bad name, help or
/// kind: regcache_last_error() says which), or -EEXIST (the name, or its `_total` form, is
/// served already). Thread-safe. There is no removal: a library that unloads or frees `ctx`
/// must stop the exporter first.
///
/// # Safety
/// `metrics` is NULL or a running exporter; `name` is NULL or a NUL-terminated string; `help`
/// is NULL or a NUL-terminated string; `read` is NULL or a function that can be called as
/// regcache_metric_fn says with `ctx`, from another thread, until regcache_metrics_stop()
/// returns (as must `ctx` stay valid).
#[no_mangle]
pub unsafe extern "C" fn regcache_metrics_add_metric(
    metrics: *mut regcache_metrics,
    name: *const c_char,
    help: *const c_char,
    kind: u32,
    read: regcache_metric_fn,
    ctx: *mut c_void,
) -> c_int {
    guard("regcache_metrics_add_metric", || {
        // SAFETY: forwarded contract.
        let m = unsafe { metrics_ref(metrics) }?;
        if name.is_null() {
            return Err(Fail::inval("name is NULL"));
        }
        // SAFETY: non-null, NUL-terminated per the contract.
        let name = unsafe { c_str(name, "name", regcache_exporter::MAX_NAME) }?;
        let help = if help.is_null() {
            ""
        } else {
            // SAFETY: non-null, NUL-terminated per the contract.
            unsafe { c_str(help, "help", regcache_exporter::MAX_HELP) }?
        };
        let kind = match kind {
            REGCACHE_METRIC_COUNTER => MetricKind::Counter,
            REGCACHE_METRIC_GAUGE => MetricKind::Gauge,
            k => {
                return Err(Fail::inval(&format!(
                    "kind is {k}; use REGCACHE_METRIC_COUNTER or REGCACHE_METRIC_GAUGE"
                )))
            }
        };
        let Some(read) = read else {
            return Err(Fail::inval("read is NULL"));
        };
        let Some(handle) = m.handle.as_ref() else {
            return Err(Fail::inval("metrics is being stopped"));
        };
        let r = CRead { read, ctx };
        handle
            .app_metrics()
            .add(name, help, kind, Box::new(move || r.call()))
            .map_err(|e| match e {
                AddError::Exists(_) => Fail::new(libc::EEXIST, e.to_string()),
                AddError::Name(_) | AddError::Help(_) => Fail::inval(&e.to_string()),
            })?;
        Ok(0)
    })
}
