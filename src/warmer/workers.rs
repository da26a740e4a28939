//! Cache warming, the imperative half: the durable schedule in Redis, the
//! scheduler thread that hands due tasks out, and the worker threads that
//! fetch and store them.
//!
//! The schedule is the source of truth, so nothing is lost when the process
//! dies: a sorted set `precache:warm:due` (member `path?query`, score the
//! due time in unix ms), a hash of each task's refresh deadline and a hash of
//! consecutive failures. Runs enqueue inside their own MULTI/EXEC (see
//! `store::WriteBatch`). The scheduler polls for due members (or is woken
//! after a run), skips those already handed out, and sends them over a
//! bounded crossbeam channel to `warm.workers` threads. A worker fetches
//! through the process-wide `Upstream` (same token, retry policy,
//! concurrency cap and rate limit as the sync), then settles the task with
//! one Lua script: store the entry and refresh record when the answer was
//! good, and move the task to its next due time (or drop it) only if nobody
//! re-enqueued it meanwhile. What to store and when a task is due again is
//! decided by the pure `warm` module.
//!
//! One process owns a schedule at a time: in-flight tasks are tracked in
//! memory, not leased in Redis, so a restart finds every unfinished task due.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use crossbeam_channel::{Receiver, Sender};

use crate::config::WarmConfig;
use crate::lifecycle::{FireOnDrop, Shutdown};
use crate::report::WarmCounts;
use crate::store::lease::Leadership;
use crate::store::{Connector, Keys, Store, StoreError};
use crate::upstream::{CallLog, Upstream, UpstreamError};
use crate::warm::plan::{self, Endpoint, Lifetimes, Next};
use crate::warm::stats::WarmStats;
use crate::warmer::schedule::{self, Task};

/// Why the warm-up could not start.
#[derive(Debug)]
pub enum WarmError {
    /// `redis.url` cannot be used.
    Store(StoreError),
    /// A thread could not be started.
    Spawn(&'static str, std::io::Error),
}

impl std::fmt::Display for WarmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WarmError::Store(e) => write!(f, "warm-up: {e}"),
            WarmError::Spawn(what, e) => write!(f, "cannot start {what}: {e}"),
        }
    }
}

impl std::error::Error for WarmError {}

/// How often the scheduler looks for due tasks when nothing wakes it.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Pause after a Redis error before the scheduler tries again.
const REDIS_RETRY: Duration = Duration::from_secs(1);
/// How long a task whose result Redis refused rests before it is retried,
/// and how long its worker pauses.
const SETTLE_RETRY: Duration = Duration::from_secs(5);
/// How long a worker pauses when no token can be had: the upstream client
/// does not ask the token endpoint again for a while either, so trying
/// task after task would only fail them all.
const NO_TOKEN_PAUSE: Duration = Duration::from_secs(10);
/// How long an endpoint the API refused us (401 to a fresh token) is left
/// alone: its tasks are put back this far without a request, so the
/// endpoints we may call go on, and one refused endpoint costs one request
/// per pause, not one per task.
const REFUSED_PAUSE: Duration = Duration::from_secs(30);

/// Whether a task's outcome reached Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
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

#[derive(Debug, Clone, Copy)]
pub struct WarmSettings {
    pub workers: usize,
    pub lifetimes: Lifetimes,
}

impl WarmSettings {
    pub fn from_config(config: &WarmConfig) -> WarmSettings {
        WarmSettings {
            workers: config.workers.max(1),
            lifetimes: Lifetimes::from_config(config),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Stored,
    Failed,
}

/// First outcome per member since start, for [`Warmer::wait_for`].
#[derive(Default)]
struct Tracker {
    outcomes: Mutex<HashMap<String, Outcome>>,
    changed: Condvar,
    enabled: AtomicBool,
}

impl Tracker {
    fn record(&self, member: &str, outcome: Outcome) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut outcomes = crate::util::lock(&self.outcomes);
        outcomes.entry(member.to_string()).or_insert(outcome);
        self.changed.notify_all();
    }
}

/// The scheduler and workers; dropping it stops them.
pub struct Warmer {
    /// A child of the process's shutdown signal: fired by it, or by
    /// dropping the warmer.
    stop: Shutdown,
    wake: Sender<()>,
    stats: Arc<WarmStats>,
    tracker: Arc<Tracker>,
    threads: Vec<JoinHandle<()>>,
}

impl Warmer {
    /// Starts the scheduler and `settings.workers` workers. `track` keeps
    /// each task's outcome for [`Warmer::wait_for`] (`precache once`).
    /// With `leadership`, tasks are handed out only while this instance
    /// leads, and every result is fenced by its lease.
    pub fn start(
        redis: &Connector,
        keys: &Keys,
        upstream: Arc<Upstream>,
        settings: WarmSettings,
        track: bool,
        leadership: Option<Arc<Leadership>>,
        shutdown: &Shutdown,
    ) -> Result<Warmer, WarmError> {
        let stop = shutdown.child();
        // Threads started before an error below stop with this guard.
        let guard = FireOnDrop::new(stop.clone());
        let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
        let (task_tx, task_rx) = crossbeam_channel::bounded::<Task>(settings.workers);
        let stats = Arc::new(WarmStats::default());
        let tracker = Arc::new(Tracker::default());
        tracker.enabled.store(track, Ordering::Relaxed);
        let dispatch: Arc<Mutex<Dispatch>> = Arc::default();
        let open = || Ok::<_, WarmError>(Store::connected_by(redis.clone(), keys.clone()));

        let mut threads = Vec::new();
        let mut scheduler = Scheduler {
            store: open()?,
            dispatch: dispatch.clone(),
            stats: stats.clone(),
            tasks: task_tx,
            stop: stop.clone(),
            wake: wake_rx,
            workers: settings.workers,
            migrated: false,
            leadership: leadership.clone(),
        };
        // Before any task is handed out, and before `precache once` waits
        // on its own; when Redis does not answer, the thread tries again.
        // A standby leaves it to the leader (the thread does it on taking
        // over).
        if leadership.as_ref().is_none_or(|l| l.is_leader())
            && let Err(e) = scheduler.migrate()
        {
            log::warn!("warm-up: {e}; migrating old keys later");
        }
        threads.push(
            std::thread::Builder::new()
                .name("warm-scheduler".into())
                .spawn(move || scheduler.run())
                .map_err(|e| WarmError::Spawn("the warm-up scheduler", e))?,
        );
        for n in 0..settings.workers {
            let worker = Worker {
                store: open()?,
                upstream: upstream.clone(),
                lifetimes: settings.lifetimes,
                dispatch: dispatch.clone(),
                stats: stats.clone(),
                tracker: tracker.clone(),
                stop: stop.clone(),
                leadership: leadership.clone(),
            };
            let tasks = task_rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("warm-worker-{n}"))
                    .spawn(move || worker.run(tasks))
                    .map_err(|e| WarmError::Spawn("a warm-up worker", e))?,
            );
        }
        guard.defuse();
        Ok(Warmer {
            stop,
            wake: wake_tx,
            stats,
            tracker,
            threads,
        })
    }

    /// Tells the scheduler to look now (after a run enqueued tasks).
    pub fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    pub fn stats(&self) -> &Arc<WarmStats> {
        &self.stats
    }

    /// Waits until every member has been attempted once (stored, or failed
    /// and rescheduled or dropped), or until `timeout`. Needs `track`.
    pub fn wait_for(&self, members: &[String], timeout: Duration) -> WarmCounts {
        let deadline = Instant::now() + timeout;
        let mut outcomes = crate::util::lock(&self.tracker.outcomes);
        loop {
            let settled = members.iter().filter(|m| outcomes.contains_key(*m)).count();
            let now = Instant::now();
            if settled == members.len() || now >= deadline {
                break;
            }
            outcomes = self
                .tracker
                .changed
                .wait_timeout(outcomes, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let count = |o: Outcome| {
            members
                .iter()
                .filter(|m| outcomes.get(*m) == Some(&o))
                .count()
        };
        let done = count(Outcome::Stored);
        let failed = count(Outcome::Failed);
        WarmCounts {
            enqueued: members.len(),
            done,
            failed,
            pending: members.len() - done - failed,
        }
    }
}

/// Stops handing out tasks; workers finish the request in hand and the
/// rest stays in Redis. Returns when every thread has ended.
impl Drop for Warmer {
    fn drop(&mut self) {
        self.stop.fire();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

/// This instance lost the leader lease: nothing it fetched is written.
struct LeaseLost;

/// Which tasks are out with a worker, in memory: one process owns a schedule.
#[derive(Default)]
struct Dispatch {
    /// Members handed to a worker and not finished.
    in_flight: HashSet<String>,
    /// Members finished since the last poll, with the due time they were
    /// handed out for: a poll's list goes stale while it is being handed
    /// out, and this keeps a task just settled from being fetched again.
    completed: HashMap<String, i64>,
    /// Members whose result could not be written to Redis: not handed out
    /// again before this instant, so a Redis that refuses writes is not
    /// answered by refetching the same task in a loop.
    not_before: HashMap<String, Instant>,
    /// Endpoints the API refused us, and since when.
    refused: HashMap<Endpoint, Instant>,
}

impl Dispatch {
    /// Whether `endpoint` was refused within [`REFUSED_PAUSE`].
    fn refuses(&self, endpoint: Endpoint, now: Instant) -> bool {
        self.refused
            .get(&endpoint)
            .is_some_and(|since| now.duration_since(*since) < REFUSED_PAUSE)
    }

    /// Whether every endpoint is refused: then the credentials are, and a
    /// worker rests as for a token outage.
    fn refuses_all(&self, now: Instant) -> bool {
        Endpoint::ALL.iter().all(|e| self.refuses(*e, now))
    }
}

impl Dispatch {
    /// Takes `task` out for a worker unless it is out, just done, or resting.
    fn claim(&mut self, task: &Task, now: Instant) -> bool {
        if self.completed.get(&task.member) == Some(&task.claimed_ms)
            || self.not_before.get(&task.member).is_some_and(|t| *t > now)
        {
            return false;
        }
        self.in_flight.insert(task.member.clone())
    }

    fn finish(&mut self, task: &Task, settled: bool, now: Instant) {
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
    fn new_poll(&mut self, now: Instant) {
        self.completed.clear();
        self.not_before.retain(|_, t| *t > now);
    }
}

struct Scheduler {
    store: Store,
    dispatch: Arc<Mutex<Dispatch>>,
    stats: Arc<WarmStats>,
    tasks: Sender<Task>,
    stop: Shutdown,
    wake: Receiver<()>,
    workers: usize,
    /// Whether keys in an old spelling were migrated (once per start).
    migrated: bool,
    /// Hand tasks out only while leading (`None`: always).
    leadership: Option<Arc<Leadership>>,
}

impl Scheduler {
    fn run(mut self) {
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
    fn sleep(&self, pause: Duration) -> bool {
        crossbeam_channel::select! {
            recv(self.stop.rx()) -> _ => true,
            recv(self.wake) -> _ => false,
            default(pause) => false,
        }
    }

    /// Due tasks (at most `limit`); the schedule's shape goes to the stats.
    fn poll(&mut self, limit: usize) -> Result<Vec<Task>, StoreError> {
        let polled = schedule::poll(&mut self.store, Utc::now(), limit)?;
        self.stats
            .record_poll(polled.due, polled.scheduled, polled.oldest_due_age_ms);
        Ok(polled.tasks)
    }

    /// Moves keys in an old spelling (once per start; see `schedule`).
    fn migrate(&mut self) -> Result<(), StoreError> {
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

struct Worker {
    store: Store,
    upstream: Arc<Upstream>,
    lifetimes: Lifetimes,
    dispatch: Arc<Mutex<Dispatch>>,
    stats: Arc<WarmStats>,
    tracker: Arc<Tracker>,
    stop: Shutdown,
    leadership: Option<Arc<Leadership>>,
}

impl Worker {
    fn run(mut self, tasks: Receiver<Task>) {
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

    fn process(&mut self, task: &Task) -> Settled {
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
            Err(UpstreamError::Cancelled { .. }) => return Settled::Cancelled,
            // No token (the token endpoint fails or refuses the secret): not
            // the task's failure. The client asks for no new token for a
            // while either, so the worker rests instead of failing task
            // after task.
            Err(e @ UpstreamError::Token { .. }) => {
                log::warn!(
                    "warm-up {}: {e}; this worker pauses {NO_TOKEN_PAUSE:?}, the task stays due",
                    task.member
                );
                return Settled::NoToken;
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
                return self.put_back(task);
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
    fn fence(&self) -> Result<Option<String>, LeaseLost> {
        match &self.leadership {
            None => Ok(None),
            Some(leadership) => leadership.fence().map(Some).ok_or(LeaseLost),
        }
    }

    /// Puts a task of a refused endpoint back [`REFUSED_PAUSE`] from now,
    /// its failure count unchanged and its entry untouched (past its
    /// refresh deadline it leaves the schedule, as after any failure).
    fn put_back(&mut self, task: &Task) -> Settled {
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

/// The daemon's per-run warm-up log line: what the run enqueued, what the
/// workers did since the previous line, and what the schedule holds.
#[derive(Debug, Default)]
pub struct RunProgress {
    done: u64,
    failed: u64,
}

impl RunProgress {
    pub fn log(&mut self, stats: &WarmStats, enqueued: usize) {
        let (done, failed) = (stats.done_total(), stats.failed_total());
        log::info!(
            "warm-up: {enqueued} task(s) enqueued by this run; {} done and {} failed since the last run; at the scheduler's last poll {} were due, {} scheduled, the oldest due {:?} ago",
            done - self.done,
            failed - self.failed,
            stats.due(),
            stats.scheduled(),
            stats.oldest_due_age()
        );
        self.done = done;
        self.failed = failed;
    }
}
