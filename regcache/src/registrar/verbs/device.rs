//! Finding and opening a device: by name, or the first one with an active port.

use crate::error::{Error, Result};
use rdma_sys::{
    ___ibv_query_port, ibv_close_device, ibv_context, ibv_device, ibv_device_attr,
    ibv_free_device_list, ibv_get_device_list, ibv_get_device_name, ibv_open_device, ibv_port_attr,
    ibv_port_state, ibv_query_device,
};
use std::ffi::CStr;
use std::io;

/// An open device context and the port chosen on it.
pub struct Device {
    pub ctx: *mut ibv_context,
    pub name: String,
    /// First active port (1 when none is active).
    pub port: u8,
    /// Largest registration the device accepts.
    pub max_mr_size: u64,
}

/// The error for "this machine has no RDMA device"; `errno` is what ibv_get_device_list left
/// (ENOSYS when the kernel has no RDMA support at all).
pub fn no_device(errno: i32) -> Error {
    let why = if errno == 0 {
        "the device list is empty".to_string()
    } else {
        format!(
            "ibv_get_device_list: {}",
            io::Error::from_raw_os_error(errno)
        )
    };
    Error::Io(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no RDMA device ({why}); load a driver (e.g. rdma_rxe) or use another registrar"),
    ))
}

/// True when `e` is the "no RDMA device" error of [`no_device`] or [`open`].
pub fn is_no_device(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.kind() == io::ErrorKind::NotFound)
}

/// Names of the RDMA devices present (empty error-free list never happens: no device is an
/// error, as from `open`).
pub fn names() -> Result<Vec<String>> {
    let list = List::get()?;
    Ok(list.devices().iter().map(|&d| name_of(d)).collect())
}

/// Opens `want` (a device name such as "rxe0"), or the first device with an active port.
pub fn open(want: Option<&str>) -> Result<Device> {
    let list = List::get()?;
    let mut fallback = None;
    for &dev in list.devices() {
        let name = name_of(dev);
        if want.is_some_and(|w| w != name) {
            continue;
        }
        // SAFETY: `dev` is an entry of the live device list.
        let ctx = unsafe { ibv_open_device(dev) };
        if ctx.is_null() {
            let e = io::Error::last_os_error();
            if want.is_some() {
                return Err(Error::Io(io::Error::new(
                    e.kind(),
                    format!("ibv_open_device({name}): {e}"),
                )));
            }
            continue;
        }
        let (port, max_mr_size) = match query(ctx) {
            Ok(v) => v,
            Err(e) => {
                // SAFETY: `ctx` was opened above and nothing else uses it.
                unsafe { ibv_close_device(ctx) };
                return Err(e);
            }
        };
        let d = Device {
            ctx,
            name,
            port: port.unwrap_or(1),
            max_mr_size,
        };
        if port.is_some() || want.is_some() {
            if let Some(f) = fallback.take() {
                close(f);
            }
            return Ok(d);
        }
        if fallback.is_none() {
            fallback = Some(d);
        } else {
            close(d);
        }
    }
    if let Some(f) = fallback {
        return Ok(f);
    }
    match want {
        Some(w) => {
            let have: Vec<String> = list.devices().iter().map(|&d| name_of(d)).collect();
            Err(Error::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no RDMA device named {w:?} (present: {})", have.join(", ")),
            )))
        }
        None => Err(no_device(0)),
    }
}

/// Closes a device opened by `open`.
pub fn close(d: Device) {
    // SAFETY: `d.ctx` was opened by `open` and its owner gives it up here.
    let rc = unsafe { ibv_close_device(d.ctx) };
    if rc != 0 {
        eprintln!("regcache: verbs: ibv_close_device({}): {rc}", d.name);
    }
}

/// (first active port, max_mr_size) of an open context.
fn query(ctx: *mut ibv_context) -> Result<(Option<u8>, u64)> {
    // SAFETY: ibv_device_attr is plain old data; all-zero is a valid value to overwrite.
    let mut attr: ibv_device_attr = unsafe { std::mem::zeroed() };
    // SAFETY: `ctx` is an open context and `attr` a writable ibv_device_attr.
    let rc = unsafe { ibv_query_device(ctx, &mut attr) };
    if rc != 0 {
        return Err(Error::Io(io::Error::from_raw_os_error(rc)));
    }
    let mut active = None;
    for port in 1..=attr.phys_port_cnt {
        // SAFETY: plain old data, as above.
        let mut pa: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: `ctx` is open, `port` is in 1..=phys_port_cnt, `pa` is writable.
        let rc = unsafe { ___ibv_query_port(ctx, port, &mut pa) };
        if rc == 0 && pa.state == ibv_port_state::IBV_PORT_ACTIVE {
            active = Some(port);
            break;
        }
    }
    Ok((active, attr.max_mr_size))
}

fn name_of(dev: *mut ibv_device) -> String {
    // SAFETY: `dev` is a live device entry; its name is a NUL-terminated string it owns.
    let p = unsafe { ibv_get_device_name(dev) };
    if p.is_null() {
        return String::from("?");
    }
    // SAFETY: non-null, NUL-terminated, valid while the list lives (we copy it out).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The device list, freed on drop.
struct List {
    ptr: *mut *mut ibv_device,
    len: usize,
}

impl List {
    fn get() -> Result<List> {
        let mut n: libc::c_int = 0;
        // SAFETY: `n` is a writable int; the call returns NULL (errno set) or a list of `n`.
        let ptr = unsafe { ibv_get_device_list(&mut n) };
        if ptr.is_null() {
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return Err(no_device(errno));
        }
        let list = List {
            ptr,
            len: usize::try_from(n).unwrap_or(0),
        };
        if list.len == 0 {
            return Err(no_device(0));
        }
        Ok(list)
    }

    fn devices(&self) -> &[*mut ibv_device] {
        // SAFETY: ibv_get_device_list returned `len` valid entries that live until it is freed.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for List {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from ibv_get_device_list and is freed once; contexts opened from
        // its entries stay valid after the list is freed (rdma-core reference-counts devices).
        unsafe { ibv_free_device_list(self.ptr) };
    }
}
