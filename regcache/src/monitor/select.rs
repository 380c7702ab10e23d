//! Choosing a monitor: `auto` takes ummunotify when the device opens, else userfaultfd, else
//! none (every request registered per use, with one warning). A monitor named explicitly that
//! fails is an error, never a silent fallback. `REGCACHE_MONITOR` overrides the choice.

use super::none::NoMonitor;
use super::uffd::UffdMonitor;
use super::ummunotify::UmmunotifyMonitor;
use super::{Monitor, MonitorKind};
use crate::error::{Error, Result};

/// Environment variable naming the monitor: auto, ummunotify, uffd or none.
pub const ENV: &str = "REGCACHE_MONITOR";

/// What to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Only(MonitorKind),
}

impl std::str::FromStr for Choice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Choice::Auto,
            "ummunotify" => Choice::Only(MonitorKind::Ummunotify),
            "uffd" | "userfaultfd" => Choice::Only(MonitorKind::Uffd),
            "none" | "off" => Choice::Only(MonitorKind::None),
            _ => {
                return Err(Error::InvalidArgument(
                    "monitor must be auto, ummunotify, uffd or none",
                ))
            }
        })
    }
}

impl Choice {
    /// `REGCACHE_MONITOR` if set, else `Auto`.
    pub fn from_env() -> Result<Self> {
        std::env::var(ENV).map_or(Ok(Choice::Auto), |v| v.parse())
    }
}

/// Opens the monitor for `choice`. With `Auto`, returns the reasons the better ones failed too.
pub fn open(choice: Choice) -> Result<(Box<dyn Monitor>, Vec<String>)> {
    let mut why = Vec::new();
    match choice {
        Choice::Only(kind) => Ok((open_kind(kind)?, why)),
        Choice::Auto => {
            for kind in [MonitorKind::Ummunotify, MonitorKind::Uffd] {
                match open_kind(kind) {
                    Ok(m) => return Ok((m, why)),
                    Err(e) => why.push(format!("{}: {e}", kind.name())),
                }
            }
            warn_once(&why);
            Ok((Box::new(NoMonitor::new()), why))
        }
    }
}

fn open_kind(kind: MonitorKind) -> Result<Box<dyn Monitor>> {
    Ok(match kind {
        MonitorKind::Ummunotify => Box::new(UmmunotifyMonitor::open()?),
        MonitorKind::Uffd => Box::new(UffdMonitor::new()?),
        MonitorKind::None => Box::new(NoMonitor::new()),
    })
}

fn warn_once(why: &[String]) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        eprintln!(
            "regcache: WARNING: no invalidation monitor works here ({}); registrations will not \
             be cached (each use registers and deregisters). Load the ummunotify module or \
             allow userfaultfd.",
            why.join("; ")
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choices() {
        assert_eq!("auto".parse::<Choice>().unwrap(), Choice::Auto);
        assert_eq!(
            "UFFD".parse::<Choice>().unwrap(),
            Choice::Only(MonitorKind::Uffd)
        );
        assert_eq!(
            "none".parse::<Choice>().unwrap(),
            Choice::Only(MonitorKind::None)
        );
        assert!("bogus".parse::<Choice>().is_err());
    }

    #[test]
    fn explicit_missing_monitor_is_an_error() {
        if std::path::Path::new(super::super::ummunotify::DEVICE).exists() {
            return; // the module is loaded here; nothing to check
        }
        assert!(open(Choice::Only(MonitorKind::Ummunotify)).is_err());
    }
}
