//! A warm-up worker: takes a due task, fetches its endpoint through the
//! process-wide client, and settles it with one script (store the entry,
//! move the task on), fenced by the lease. What to store and when the task
//! is due again is the pure `warm::plan`'s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use crossbeam_channel::Receiver;

use super::schedule::{self, Task};
use super::scheduler::Dispatch;
use super::scheduler::{REFUSED_PAUSE, SETTLE_RETRY};
use crate::lifecycle::Shutdown;
use crate::store::Store;
use crate::store::lease::Leadership;
use crate::upstream::{CallLog, Upstream, UpstreamError};
use crate::warm::plan::{self, Lifetimes, Next};
use crate::warm::stats::WarmStats;

/// How long a worker pauses when no token can be had: the upstream client
/// does not ask the token endpoint again for a while either, so trying
/// task after task would only fail them all.
pub(super) const NO_TOKEN_PAUSE: Duration = Duration::from_secs(10);

/// Whether a task's outcome reached Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settled {
    Yes,
    /// Redis refused; the task is still due there.
    No,
    /// The upstream client was cancelled (shutdown); nothing was done.
    Cancelled,
    /// No token could be had: not the task's failure, it stays due as it was.
    NoToken,
    /// The API refuses our credentials for this endpoint: the task was put
    /// back [`REFUSED_PAUSE`] without a failure counted.
    Refused,
    /// Another instance holds the leader lease: nothing was stored, the
    /// task stays due (for the leader).
    Fenced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Stored,
    Failed,
}

/// First outcome per member since start, for `Warmer::wait_for`.
#[derive(Default)]
pub(super) struct Tracker {
    pub(super) outcomes: Mutex<HashMap<String, Outcome>>,
    pub(super) changed: Condvar,
    pub(super) enabled: AtomicBool,
}

impl Tracker {
    pub(super) fn record(&self, member: &str, outcome: Outcome) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut outcomes = crate::util::lock(&self.outcomes);
        outcomes.entry(member.to_string()).or_insert(outcome);
        self.changed.notify_all();
    }
}

/// This instance lost the leader lease: nothing it fetched is written.
pub(super) struct LeaseLost;

/// What a fetch of a task came to: the entry to store (none after a
/// failure), when the task is due next, its consecutive failures, and when
/// the answer came (what the entry's age counts from).
pub(super) struct Fetched {
    entry: Option<String>,
    next: Next,
    failures: u32,
    at: chrono::DateTime<Utc>,
}

pub(super) struct Worker {
    pub(super) store: Store,
    pub(super) upstream: Arc<Upstream>,
    pub(super) lifetimes: Lifetimes,
    pub(super) dispatch: Arc<Mutex<Dispatch>>,
    pub(super) stats: Arc<WarmStats>,
    pub(super) tracker: Arc<Tracker>,
    pub(super) stop: Shutdown,
    pub(super) leadership: Option<Arc<Leadership>>,
}

impl Worker {
    pub(super) fn run(mut self, tasks: Receiver<Task>) {
        loop {
            let task = crossbeam_channel::select! {
                recv(self.stop.rx()) -> _ => return,
                recv(tasks) -> task => match task {
                    Ok(task) => task,
                    Err(_) => return,
                },
            };
            if self.stop.is_fired() {
                // Not started: it stays due in Redis for the next start.
                return;
            }
            let settled = self.process(&task);
            crate::util::lock(&self.dispatch).finish(
                &task,
                matches!(settled, Settled::Yes | Settled::Refused),
                Instant::now(),
            );
            let pause = match settled {
                Settled::Yes => continue,
                // Another instance leads: the scheduler stops handing out.
                Settled::Fenced => continue,
                Settled::Refused => {
                    if !crate::util::lock(&self.dispatch).refuses_all(Instant::now()) {
                        continue;
                    }
                    NO_TOKEN_PAUSE
                }
                // Shutting down: what is left stays due in Redis.
                Settled::Cancelled => return,
                // Redis refuses the result: rest before the next task.
                Settled::No => SETTLE_RETRY,
                Settled::NoToken => NO_TOKEN_PAUSE,
            };
            if self.stop.sleep(pause) {
                return;
            }
        }
    }

    pub(super) fn process(&mut self, task: &Task) -> Settled {
        let endpoint = task.target.endpoint;
        // The API refuses the token itself (it accepted it for nothing):
        // rest as for a token outage; the client asks for a new token
        // once the pause is over.
        if self.upstream.refuses_us() {
            return Settled::NoToken;
        }
        if crate::util::lock(&self.dispatch).refuses(endpoint, Instant::now()) {
            return self.put_back(task);
        }
        match self.fetch(task) {
            Ok(fetched) => self.settle(task, fetched),
            Err(settled) => settled,
        }
    }

    /// Fetches the task's endpoint: the entry to store (none after a
    /// failure), when the task is due next and its failure count, and the
    /// time of the answer (what the entry's age counts from); `Err` when the
    /// task is not settled as fetched (no token, a refused endpoint, a
    /// shutdown).
    pub(super) fn fetch(&mut self, task: &Task) -> Result<Fetched, Settled> {
        let endpoint = task.target.endpoint;
        let log = CallLog::default();
        let result = self.upstream.get(&task.target.request(), &log);
        let now = Utc::now();
        let (entry, next, failures) = match result {
            Ok(response) => {
                let entry = plan::entry_json(
                    response.status,
                    &response.headers,
                    &response.body,
                    now,
                    &self.lifetimes,
                );
                match entry {
                    Ok(entry) => (
                        Some(entry),
                        plan::after_success(now, task.refresh_until, self.lifetimes.ttl),
                        0,
                    ),
                    Err(bad) => {
                        log::warn!("warm-up GET /{}: {bad}; will retry", task.member);
                        let failures = task.failures + 1;
                        (
                            None,
                            plan::after_failure(now, task.refresh_until, failures, false),
                            failures,
                        )
                    }
                }
            }
            Err(UpstreamError::Cancelled { .. }) => return Err(Settled::Cancelled),
            // No token (the token endpoint fails or refuses the secret): not
            // the task's failure. The client asks for no new token for a
            // while either, so the worker rests instead of failing task
            // after task.
            Err(e @ UpstreamError::Token { .. }) => {
                log::warn!(
                    "warm-up {}: {e}; this worker pauses {NO_TOKEN_PAUSE:?}, the task stays due",
                    task.member
                );
                return Err(Settled::NoToken);
            }
            // The API refuses our token for this endpoint: not the task's
            // failure either. The endpoint is left alone for a while (its
            // tasks put back), the others go on.
            Err(e @ UpstreamError::Unauthorized { .. }) => {
                let first = {
                    let mut dispatch = crate::util::lock(&self.dispatch);
                    let first = !dispatch.refuses(endpoint, Instant::now());
                    dispatch.refused.insert(endpoint, Instant::now());
                    first
                };
                if first {
                    log::warn!(
                        "warm-up {e}; its tasks wait {REFUSED_PAUSE:?}, the other endpoints go on"
                    );
                }
                return Err(self.put_back(task));
            }
            Err(e) => {
                let permanent = e.status().is_some_and(plan::is_permanent);
                let failures = task.failures + 1;
                let next = plan::after_failure(now, task.refresh_until, failures, permanent);
                match next {
                    Next::Drop if permanent => {
                        log::warn!("warm-up {e}: not retried, nothing stored")
                    }
                    Next::Drop => log::warn!("warm-up {e}: giving up, past its refresh deadline"),
                    Next::DueAt(at) => log::warn!(
                        "warm-up {e}: failure {failures}, retrying at {}",
                        at.format("%H:%M:%S")
                    ),
                }
                (None, next, failures)
            }
        };
        Ok(Fetched {
            entry,
            next,
            failures,
            at: now,
        })
    }

    /// Stores the entry (if any) and moves the task on, in one script
    /// fenced by the lease; counts the outcome.
    pub(super) fn settle(&mut self, task: &Task, fetched: Fetched) -> Settled {
        let Fetched {
            entry,
            next,
            failures,
            at: now,
        } = fetched;
        let endpoint = task.target.endpoint;
        let stored = entry.is_some();
        let ttl = self.lifetimes.ttl;
        let Ok(fence) = self.fence() else {
            return Settled::Fenced;
        };
        match schedule::settle(
            &mut self.store,
            task,
            entry,
            next,
            failures,
            now,
            ttl,
            fence.as_deref(),
        ) {
            Ok(true) => {}
            Ok(false) => {
                log::info!(
                    "warm-up {}: another instance leads; nothing stored",
                    task.member
                );
                return Settled::Fenced;
            }
            Err(e) => {
                // The task is still due in Redis: it will be fetched again.
                log::warn!("warm-up {}: {e}; retrying in {SETTLE_RETRY:?}", task.member);
                return Settled::No;
            }
        }
        if stored {
            self.stats.record_done(endpoint);
            self.tracker.record(&task.member, Outcome::Stored);
        } else {
            self.stats.record_failed(endpoint);
            self.tracker.record(&task.member, Outcome::Failed);
        }
        Settled::Yes
    }
}

impl Worker {
    /// The lease value results are fenced with: `Ok(None)` without a lease
    /// (tests), `Err` when this instance leads no more. A result fetched
    /// while leading is then not written at all: an empty fence would be
    /// no fence.
    pub(super) fn fence(&self) -> Result<Option<String>, LeaseLost> {
        match &self.leadership {
            None => Ok(None),
            Some(leadership) => leadership.fence().map(Some).ok_or(LeaseLost),
        }
    }

    /// Puts a task of a refused endpoint back [`REFUSED_PAUSE`] from now,
    /// its failure count unchanged and its entry untouched (past its
    /// refresh deadline it leaves the schedule, as after any failure).
    pub(super) fn put_back(&mut self, task: &Task) -> Settled {
        let now = Utc::now();
        let later = now + chrono::Duration::milliseconds(REFUSED_PAUSE.as_millis() as i64);
        let ttl = self.lifetimes.ttl;
        let next = if now >= task.refresh_until {
            Next::Drop
        } else {
            Next::DueAt(later.min(task.refresh_until))
        };
        let Ok(fence) = self.fence() else {
            return Settled::Fenced;
        };
        let settled = schedule::settle(
            &mut self.store,
            task,
            None,
            next,
            task.failures,
            now,
            ttl,
            fence.as_deref(),
        );
        match settled {
            Ok(true) => Settled::Refused,
            Ok(false) => Settled::Fenced,
            Err(e) => {
                log::warn!("warm-up {}: {e}; retrying in {SETTLE_RETRY:?}", task.member);
                Settled::No
            }
        }
    }
}
