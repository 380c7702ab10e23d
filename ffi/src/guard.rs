//! What every entry point shares: the panic barrier, errors as negative errno values with a
//! per-thread message, handle validation and the `size`-prefixed struct copies.

use crate::types::{
    regcache_cache, regcache_metrics, regcache_mr, CACHE_MAGIC, METRICS_MAGIC, MR_MAGIC,
};
use std::cell::RefCell;
use std::mem::size_of;
use std::os::raw::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Largest `size` accepted in a caller's struct: bounds how far the library reads or trusts a
/// size field that is garbage.
pub(crate) const MAX_STRUCT_SIZE: usize = 4096;

/// A failure on its way to C: the positive errno and the message for regcache_last_error().
#[derive(Debug)]
pub(crate) struct Fail {
    pub errno: c_int,
    pub msg: String,
}

impl Fail {
    pub fn new(errno: c_int, msg: impl Into<String>) -> Self {
        Fail {
            errno,
            msg: msg.into(),
        }
    }

    pub fn inval(msg: &str) -> Self {
        Fail::new(libc::EINVAL, msg)
    }
}

impl From<regcache_core::Error> for Fail {
    fn from(e: regcache_core::Error) -> Self {
        Fail {
            errno: e.errno(),
            msg: e.to_string(),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Replaces this thread's last error message.
fn set_last_error(msg: &str) {
    // try_with: fails only while the thread is being torn down, when there is no one to tell.
    let _ = LAST_ERROR.try_with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            m.clear();
            m.push_str(msg);
        }
    });
}

/// Copies this thread's last error message into `buf` (NUL-terminated, truncated to `len`) and
/// returns its full length.
pub(crate) fn copy_last_error(buf: &mut [u8]) -> usize {
    LAST_ERROR
        .try_with(|m| {
            let m = m.try_borrow().map(|m| m.clone()).unwrap_or_default();
            copy_str(&m, buf)
        })
        .unwrap_or(0)
}

/// Copies `s` into `buf`, NUL-terminated and truncated to fit (nothing when `buf` is empty),
/// and returns the full length of `s`.
pub(crate) fn copy_str(s: &str, buf: &mut [u8]) -> usize {
    if let Some(room) = buf.len().checked_sub(1) {
        let n = s.len().min(room);
        buf[..n].copy_from_slice(&s.as_bytes()[..n]);
        buf[n] = 0;
    }
    s.len()
}

/// The caller's output buffer for a string: `buf` NULL with `len` 0 asks for the length only.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes.
pub(crate) unsafe fn out_buf<'a>(buf: *mut c_char, len: usize) -> Result<&'a mut [u8], Fail> {
    if buf.is_null() {
        return if len == 0 {
            Ok(&mut [])
        } else {
            Err(Fail::inval("buf is NULL but len is not 0"))
        };
    }
    if len > isize::MAX as usize {
        return Err(Fail::inval("len is larger than any buffer"));
    }
    // SAFETY: non-null, `len` (<= isize::MAX) writable bytes per the contract; u8 and c_char
    // have the same size and alignment.
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) })
}

/// The exporter behind a caller's pointer.
///
/// # Safety
/// As for [`cache_ref`], for a `regcache_metrics` from regcache_metrics_start() not yet stopped.
pub(crate) unsafe fn metrics_ref<'a>(
    p: *const regcache_metrics,
) -> Result<&'a regcache_metrics, Fail> {
    check_ptr(p, "metrics")?;
    // SAFETY: non-null and aligned (checked); readable per this function's contract.
    let m = unsafe { &*p };
    if m.magic != METRICS_MAGIC {
        return Err(Fail::inval(
            "metrics is not a running exporter from regcache_metrics_start()",
        ));
    }
    Ok(m)
}

/// Runs the body of an entry point: a panic becomes -EIO (it must never cross into C), an error
/// becomes its negative errno and this thread's last error message.
pub(crate) fn guard(name: &str, body: impl FnOnce() -> Result<c_int, Fail>) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(f)) => {
            set_last_error(&format!("{name}: {}", f.msg));
            // A zero or negative errno would read as success or be double-negated: never trust
            // it to be positive.
            if f.errno > 0 {
                -f.errno
            } else {
                -libc::EIO
            }
        }
        Err(_) => {
            set_last_error(&format!("{name}: internal error (panic); please report it"));
            -libc::EIO
        }
    }
}

/// Checks a pointer the library will dereference: non-null and aligned for `T`.
fn check_ptr<T>(p: *const T, what: &str) -> Result<(), Fail> {
    if p.is_null() {
        return Err(Fail::inval(&format!("{what} is NULL")));
    }
    if !p.is_aligned() {
        return Err(Fail::inval(&format!("{what} is misaligned")));
    }
    Ok(())
}

/// Checks an output pointer (non-null, aligned).
pub(crate) fn check_out<T>(p: *mut T, what: &str) -> Result<(), Fail> {
    check_ptr(p.cast_const(), what)
}

/// The cache behind a caller's pointer.
///
/// # Safety
/// `p` is NULL, or points to memory the caller may read of at least the size of a
/// `regcache_cache` (a live cache from regcache_create(); anything else is undefined behaviour
/// that the magic number catches only sometimes).
pub(crate) unsafe fn cache_ref<'a>(p: *const regcache_cache) -> Result<&'a regcache_cache, Fail> {
    check_ptr(p, "cache")?;
    // SAFETY: non-null and aligned (checked); readable per this function's contract.
    let c = unsafe { &*p };
    if c.magic != CACHE_MAGIC {
        return Err(Fail::inval(
            "cache is not a live cache from regcache_create()",
        ));
    }
    Ok(c)
}

/// The registration behind a caller's pointer.
///
/// # Safety
/// As for [`cache_ref`], for a `regcache_mr` from regcache_get() not yet released.
pub(crate) unsafe fn mr_ref<'a>(p: *const regcache_mr) -> Result<&'a regcache_mr, Fail> {
    check_ptr(p, "mr")?;
    // SAFETY: non-null and aligned (checked); readable per this function's contract.
    let m = unsafe { &*p };
    if m.magic != MR_MAGIC {
        return Err(Fail::inval(
            "mr is not a live registration from regcache_get()",
        ));
    }
    Ok(m)
}

/// Reads a caller's `size`-prefixed input struct: at least `min` bytes; a smaller (older)
/// struct reads as zero beyond its size; a larger (newer) one must be zero beyond ours.
///
/// # Safety
/// `p` is NULL or points to at least `(*p).size` readable bytes (its first field is a `size_t`).
/// `T` must be a `repr(C)` struct whose first field is the `usize` size and for which all-zero
/// bytes are a valid value (integers, raw pointers, `Option` of function pointers).
pub(crate) unsafe fn read_sized<T: Copy>(p: *const T, what: &str, min: usize) -> Result<T, Fail> {
    check_ptr(p, what)?;
    // SAFETY: non-null and aligned; the first field is a usize, readable per the contract.
    let size = unsafe { p.cast::<usize>().read() };
    if size < min || size > MAX_STRUCT_SIZE {
        return Err(Fail::inval(&format!(
            "{what}->size is {size}; set it to sizeof (at least {min})"
        )));
    }
    let ours = size_of::<T>();
    if size > ours {
        // SAFETY: the caller's struct has `size` readable bytes (contract), so its tail past
        // ours is readable.
        let tail = unsafe { std::slice::from_raw_parts(p.cast::<u8>().add(ours), size - ours) };
        if tail.iter().any(|&b| b != 0) {
            return Err(Fail::inval(&format!(
                "{what} has fields this library does not know (size {size} > {ours}) set to \
                 nonzero values"
            )));
        }
    }
    let mut out = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: copies min(size, ours) bytes from the caller's readable struct into ours; all-zero
    // bytes are a valid T (contract), and any bytes the caller wrote into these fields are too,
    // since every field of such a T accepts any bit pattern (integers, pointers, nullable fn
    // pointers that the caller set through the same C declaration).
    unsafe {
        std::ptr::copy_nonoverlapping(
            p.cast::<u8>(),
            out.as_mut_ptr().cast::<u8>(),
            size.min(ours),
        );
        Ok(out.assume_init())
    }
}

/// Writes a `size`-prefixed output struct: the caller's `size` (at least `min`) says how much it
/// has room for; fills that much of `src` (at most ours) and sets `size` to the bytes filled.
/// Nothing beyond that is written.
///
/// # Safety
/// `dst` is NULL or points to at least `(*dst).size` writable bytes (first field `size_t`);
/// `T` is a `repr(C)` struct whose first field is the `usize` size.
pub(crate) unsafe fn write_sized<T: Copy>(
    dst: *mut T,
    src: &T,
    what: &str,
    min: usize,
) -> Result<(), Fail> {
    check_out(dst, what)?;
    // SAFETY: non-null and aligned; the first field is a usize, readable per the contract.
    let size = unsafe { dst.cast::<usize>().read() };
    if size < min || size > MAX_STRUCT_SIZE {
        return Err(Fail::inval(&format!(
            "{what}->size is {size}; set it to sizeof (at least {min})"
        )));
    }
    let n = size.min(size_of::<T>());
    let head = size_of::<usize>();
    // SAFETY: writes bytes [head, n) of the caller's struct, which has `size >= n` writable
    // bytes (contract), from our `src` of size_of::<T>() >= n bytes; the regions are distinct
    // (ours is a local copy). Then the size field, aligned and writable.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (src as *const T).cast::<u8>().add(head),
            dst.cast::<u8>().add(head),
            n - head,
        );
        dst.cast::<usize>().write(n);
    }
    Ok(())
}
