//! ummunotify monitor (in progress).
