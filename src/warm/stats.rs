//! The warm-up's counters: written by the workers and the scheduler
//! (`warmer`), read by the metrics, `/status` and the daemon's per-run log
//! line. Here, in the pure half, so the HTTP side reads them without
//! depending on the warm-up's threads.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::model::calls::CallType;
use crate::warm::plan::Endpoint;

/// Totals since start and the schedule's shape at the last poll; read by
/// the daemon's per-run log line and the metrics.
#[derive(Debug, Default)]
pub struct WarmStats {
    done: [AtomicU64; CallType::ALL.len()],
    failed: [AtomicU64; CallType::ALL.len()],
    due: AtomicU64,
    scheduled: AtomicU64,
    oldest_due_age_ms: AtomicI64,
}

impl WarmStats {
    pub fn done(&self, endpoint: Endpoint) -> u64 {
        self.done[endpoint.call_type().index()].load(Ordering::Relaxed)
    }
    pub fn failed(&self, endpoint: Endpoint) -> u64 {
        self.failed[endpoint.call_type().index()].load(Ordering::Relaxed)
    }
    pub fn done_total(&self) -> u64 {
        Endpoint::ALL.iter().map(|&e| self.done(e)).sum()
    }
    pub fn failed_total(&self) -> u64 {
        Endpoint::ALL.iter().map(|&e| self.failed(e)).sum()
    }
    /// Tasks due now and not yet done (the queue depth).
    pub fn due(&self) -> u64 {
        self.due.load(Ordering::Relaxed)
    }
    /// Every task in the schedule, due now or later (refreshes, retries).
    pub fn scheduled(&self) -> u64 {
        self.scheduled.load(Ordering::Relaxed)
    }
    /// How overdue the oldest due task is (0 when none is due).
    pub fn oldest_due_age(&self) -> Duration {
        Duration::from_millis(self.oldest_due_age_ms.load(Ordering::Relaxed).max(0) as u64)
    }

    pub fn record_done(&self, endpoint: Endpoint) {
        self.done[endpoint.call_type().index()].fetch_add(1, Ordering::Relaxed);
    }
    pub fn record_failed(&self, endpoint: Endpoint) {
        self.failed[endpoint.call_type().index()].fetch_add(1, Ordering::Relaxed);
    }
    /// The schedule's shape at the scheduler's poll.
    pub fn record_poll(&self, due: u64, scheduled: u64, oldest_due_age_ms: i64) {
        self.due.store(due, Ordering::Relaxed);
        self.scheduled.store(scheduled, Ordering::Relaxed);
        self.oldest_due_age_ms
            .store(oldest_due_age_ms, Ordering::Relaxed);
    }
}
