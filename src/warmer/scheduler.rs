//! The warm-up scheduler: polls the schedule in Redis for due tasks (or
//! is woken after a run), skips those already out with a worker, and hands
//! the rest over a bounded channel, only while this instance leads.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use crossbeam_channel::{Receiver, Sender};

use super::schedule::{self, Task};
use crate::lifecycle::Shutdown;
use crate::store::lease::Leadership;
use crate::store::{Store, StoreError};
use crate::warm::plan::Endpoint;
use crate::warm::stats::WarmStats;

/// How often the scheduler looks for due tasks when nothing wakes it.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Pause after a Redis error before the scheduler tries again.
pub(super) const REDIS_RETRY: Duration = Duration::from_secs(1);
/// How long a task whose result Redis refused rests before it is retried,
/// and how long its worker pauses.
pub(super) const SETTLE_RETRY: Duration = Duration::from_secs(5);
/// How long an endpoint the API refused us (401 to a fresh token) is left
/// alone: its tasks are put back this far without a request, so the
/// endpoints we may call go on, and one refused endpoint costs one request
/// per pause, not one per task.
pub(super) const REFUSED_PAUSE: Duration = Duration::from_secs(30);

/// Which tasks are out with a worker, in memory: one process owns a schedule.
#[derive(Default)]
pub(super) struct Dispatch {
    /// Members handed to a worker and not finished.
    pub(super) in_flight: HashSet<String>,
    /// Members finished since the last poll, with the due time they were
    /// handed out for: a poll's list goes stale while it is being handed
    /// out, and this keeps a task just settled from being fetched again.
    pub(super) completed: HashMap<String, i64>,
    /// Members whose result could not be written to Redis: not handed out
    /// again before this instant, so a Redis that refuses writes is not
    /// answered by refetching the same task in a loop.
    pub(super) not_before: HashMap<String, Instant>,
    /// Endpoints the API refused us, and since when.
    pub(super) refused: HashMap<Endpoint, Instant>,
}

impl Dispatch {
    /// Whether `endpoint` was refused within [`REFUSED_PAUSE`].
    pub(super) fn refuses(&self, endpoint: Endpoint, now: Instant) -> bool {
        self.refused
            .get(&endpoint)
            .is_some_and(|since| now.duration_since(*since) < REFUSED_PAUSE)
    }

    /// Whether every endpoint is refused: then the credentials are, and a
    /// worker rests as for a token outage.
    pub(super) fn refuses_all(&self, now: Instant) -> bool {
        Endpoint::ALL.iter().all(|e| self.refuses(*e, now))
    }
}

impl Dispatch {
    /// Takes `task` out for a worker unless it is out, just done, or resting.
    pub(super) fn claim(&mut self, task: &Task, now: Instant) -> bool {
        if self.completed.get(&task.member) == Some(&task.claimed_ms)
            || self.not_before.get(&task.member).is_some_and(|t| *t > now)
        {
            return false;
        }
        self.in_flight.insert(task.member.clone())
    }

    pub(super) fn finish(&mut self, task: &Task, settled: bool, now: Instant) {
        self.in_flight.remove(&task.member);
        if settled {
            self.completed.insert(task.member.clone(), task.claimed_ms);
            self.not_before.remove(&task.member);
        } else {
            self.not_before
                .insert(task.member.clone(), now + SETTLE_RETRY);
        }
    }

    /// Before a poll: whatever finished before this has settled in Redis,
    /// so the poll sees it.
    pub(super) fn new_poll(&mut self, now: Instant) {
        self.completed.clear();
        self.not_before.retain(|_, t| *t > now);
    }
}

pub(super) struct Scheduler {
    pub(super) store: Store,
    pub(super) dispatch: Arc<Mutex<Dispatch>>,
    pub(super) stats: Arc<WarmStats>,
    pub(super) tasks: Sender<Task>,
    pub(super) stop: Shutdown,
    pub(super) wake: Receiver<()>,
    pub(super) workers: usize,
    /// Whether keys in an old spelling were migrated (once per start).
    pub(super) migrated: bool,
    /// Hand tasks out only while leading (`None`: always).
    pub(super) leadership: Option<Arc<Leadership>>,
}

impl Scheduler {
    pub(super) fn run(mut self) {
        let mut last_error: Option<String> = None;
        loop {
            if self.leadership.as_ref().is_some_and(|l| !l.is_leader()) {
                // A standby: the leader warms.
                if self.sleep(POLL_INTERVAL * 4) {
                    return;
                }
                continue;
            }
            let busy = {
                let mut dispatch = crate::util::lock(&self.dispatch);
                dispatch.new_poll(Instant::now());
                dispatch.in_flight.len() + dispatch.not_before.len()
            };
            let polled = if self.migrated {
                self.poll(busy + 2 * self.workers)
            } else {
                self.migrate()
                    .and_then(|()| self.poll(busy + 2 * self.workers))
            };
            let due = match polled {
                Ok(due) => {
                    if last_error.take().is_some() {
                        log::info!("warm-up scheduler: Redis answers again");
                    }
                    due
                }
                Err(e) => {
                    let message = e.to_string();
                    if last_error.as_ref() != Some(&message) {
                        log::warn!("warm-up scheduler: {message}; retrying every {REDIS_RETRY:?}");
                    }
                    last_error = Some(message);
                    if self.sleep(REDIS_RETRY) {
                        return;
                    }
                    continue;
                }
            };
            let mut handed_out = 0;
            for task in due {
                if !crate::util::lock(&self.dispatch).claim(&task, Instant::now()) {
                    continue;
                }
                let member = task.member.clone();
                crossbeam_channel::select! {
                    send(self.tasks, task) -> sent => {
                        if sent.is_err() {
                            return;
                        }
                        handed_out += 1;
                    }
                    recv(self.stop.rx()) -> _ => {
                        crate::util::lock(&self.dispatch).in_flight.remove(&member);
                        return;
                    }
                }
            }
            if handed_out == 0 && self.sleep(POLL_INTERVAL) {
                return;
            }
        }
    }

    /// Waits for `pause`, a wake-up or a stop; true when stopping.
    pub(super) fn sleep(&self, pause: Duration) -> bool {
        crossbeam_channel::select! {
            recv(self.stop.rx()) -> _ => true,
            recv(self.wake) -> _ => false,
            default(pause) => false,
        }
    }

    /// Due tasks (at most `limit`); the schedule's shape goes to the stats.
    pub(super) fn poll(&mut self, limit: usize) -> Result<Vec<Task>, StoreError> {
        let polled = schedule::poll(&mut self.store, Utc::now(), limit)?;
        self.stats
            .record_poll(polled.due, polled.scheduled, polled.oldest_due_age_ms);
        Ok(polled.tasks)
    }

    /// Moves keys in an old spelling (once per start; see `schedule`).
    pub(super) fn migrate(&mut self) -> Result<(), StoreError> {
        let moved = schedule::migrate_legacy_keys(&mut self.store)?;
        self.migrated = true;
        if moved > 0 {
            log::info!(
                "warm-up: moved {moved} entr(ies), refresh record(s) and task(s) from an old key spelling to the one the API proxy reads"
            );
        }
        Ok(())
    }
}
