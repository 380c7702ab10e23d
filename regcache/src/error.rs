//! Errors returned by the cache, its monitors and its registrars.
//!
//! Every failure is a value: bad input, a registrar refusing memory, a monitor that cannot watch a
//! range. Each carries an errno so the C ABI can return it as a negative number unchanged.

use std::fmt;
use std::io;

/// What went wrong, with the errno the C ABI reports for it.
#[derive(Debug)]
pub enum Error {
    /// The request itself is invalid: zero length, null address, address + length overflows,
    /// or an access combination the registrar does not support.
    InvalidArgument(&'static str),
    /// The registrar ran out of lockable memory (RLIMIT_MEMLOCK, ENOMEM/EAGAIN from the kernel) or
    /// of registration slots, even after the cache evicted unused entries and retried once.
    OutOfResources { errno: i32, what: String },
    /// The registrar failed for another reason (bad address, unsupported memory type, ...).
    Register { errno: i32, what: String },
    /// The range cannot be registered by this registrar at all (e.g. larger than it supports).
    TooLarge { len: usize, max: usize },
    /// This process is a fork() child of the process that built the cache: the cache is disabled
    /// in the child, whose address space no longer matches the registrations.
    ForkedChild,
    /// A system call of a monitor or registrar failed.
    Io(io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The positive errno this error maps to (the C ABI returns its negation).
    pub fn errno(&self) -> i32 {
        match self {
            Error::InvalidArgument(_) => libc::EINVAL,
            Error::OutOfResources { errno, .. } | Error::Register { errno, .. } => *errno,
            Error::TooLarge { .. } => libc::E2BIG,
            Error::ForkedChild => libc::ECHILD,
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// True when the failure means "no more lockable memory / slots": the cache evicts and retries.
    pub fn is_resource_exhaustion(&self) -> bool {
        matches!(self, Error::OutOfResources { .. })
    }

    /// Builds the registrar error for an errno: ENOMEM, EAGAIN, ENOSPC and EMFILE mean the pinned
    /// memory or slot budget is exhausted (evicting may help); anything else is a plain failure.
    pub fn from_register_errno(errno: i32, what: impl Into<String>) -> Self {
        let what = what.into();
        if is_resource_errno(errno) {
            Error::OutOfResources { errno, what }
        } else {
            Error::Register { errno, what }
        }
    }
}

/// Whether a registrar errno means the pinned-memory or slot budget is exhausted (ENOMEM,
/// EAGAIN, ENOSPC, EMFILE): evicting may help.
pub(crate) fn is_resource_errno(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOMEM | libc::EAGAIN | libc::ENOSPC | libc::EMFILE
    )
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            Error::OutOfResources { errno, what } => write!(
                f,
                "out of lockable memory or registration slots ({what}: {}); raise RLIMIT_MEMLOCK \
                 (ulimit -l) or lower the cache's byte limit",
                io::Error::from_raw_os_error(*errno)
            ),
            Error::Register { errno, what } => {
                write!(
                    f,
                    "registration failed ({what}: {})",
                    io::Error::from_raw_os_error(*errno)
                )
            }
            Error::TooLarge { len, max } => {
                write!(
                    f,
                    "range of {len} bytes is larger than the registrar's maximum of {max}"
                )
            }
            Error::ForkedChild => {
                write!(
                    f,
                    "registration cache is disabled in a fork() child of its creator"
                )
            }
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}
