//! Two small helpers every layer uses, in one place.

use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};

/// Locks `m`, carrying on after a panic elsewhere poisoned it: every lock
/// here guards plain data (counters, a token, a list), which a panicking
/// holder cannot leave half-updated in a way that matters.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// This process, as the commit marker and the leader lease name it:
/// `host:pid`.
pub fn instance_id() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

/// The kernel's host name (`localhost` when it has none).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// RFC 3339 in UTC with a `Z`, to the given precision (seconds for the
/// status page and refresh records, milliseconds for run times).
pub fn rfc3339(t: DateTime<Utc>, precision: SecondsFormat) -> String {
    t.to_rfc3339_opts(precision, true)
}
