//! Small helpers every layer uses, and the build's identity, in one place.

use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};

/// Locks `m`, carrying on after a panic elsewhere poisoned it: every lock
/// here guards plain data (counters, a token, a list), which a panicking
/// holder cannot leave half-updated in a way that matters.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// This process, as the commit marker and the leader lease name it:
/// `host:pid:boot`, where `boot` is the start of the kernel's boot id. Two
/// VMs cloned from one image share their host name and, started by the
/// same unit on the same boot sequence, may well share the pid: the boot
/// id tells them apart, so neither takes the other's lease for its own.
pub fn instance_id() -> String {
    instance_id_of(std::process::id())
}

/// The instance id of process `pid` on this machine.
pub fn instance_id_of(pid: u32) -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let boot: String = boot
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    format!("{}:{pid}:{boot}", host_name())
}

/// The kernel's host name (`localhost` when it has none).
fn host_name() -> String {
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

/// The git revision this binary was built from (`build.rs`; `-dirty` for
/// a tree with changes, `unknown` outside a checkout).
pub const GIT_REVISION: &str = env!("BUILD_GIT_REVISION");
/// The build's date (UTC; `SOURCE_DATE_EPOCH` when set).
pub const BUILD_DATE: &str = env!("BUILD_DATE_UTC");
/// `--version`'s text: `0.1.0 (rev 1a2b3c4d5e6f, built 2026-12-01)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (rev ",
    env!("BUILD_GIT_REVISION"),
    ", built ",
    env!("BUILD_DATE_UTC"),
    ")"
);
