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
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use crate::config::WarmConfig;
use crate::store::{Keys, Store, StoreError};
use crate::upstream::{CallLog, Upstream, UpstreamError};
use crate::warm::{self, Endpoint, Lifetimes, Next, WarmTarget};

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
            lifetimes: Lifetimes {
                ttl: Duration::from_secs(config.ttl_secs),
                refresh_for: Duration::from_secs(config.refresh_until_days * 24 * 3600),
            },
        }
    }
}

/// Totals since start and the schedule's shape at the last poll; read by
/// the daemon's per-run log line and the metrics.
#[derive(Debug, Default)]
pub struct WarmStats {
    done: [AtomicU64; Endpoint::ALL.len()],
    failed: [AtomicU64; Endpoint::ALL.len()],
    due: AtomicU64,
    scheduled: AtomicU64,
    oldest_due_age_ms: AtomicI64,
}

impl WarmStats {
    pub fn done(&self, endpoint: Endpoint) -> u64 {
        self.done[endpoint.index()].load(Ordering::Relaxed)
    }
    pub fn failed(&self, endpoint: Endpoint) -> u64 {
        self.failed[endpoint.index()].load(Ordering::Relaxed)
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
}

/// `precache once`'s view of the tasks its run enqueued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WarmCounts {
    pub enqueued: usize,
    pub done: usize,
    /// Failed and rescheduled for a retry, or dropped (a 4xx).
    pub failed: usize,
    /// Not attempted when the wait ended; still in the schedule.
    pub pending: usize,
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
        let mut outcomes = crate::upstream::lock(&self.outcomes);
        outcomes.entry(member.to_string()).or_insert(outcome);
        self.changed.notify_all();
    }
}

/// A due task as handed to a worker.
#[derive(Debug, Clone)]
struct Task {
    member: String,
    target: WarmTarget,
    /// The score it had when handed out; settling compares against it.
    claimed_ms: i64,
    refresh_until: DateTime<Utc>,
    failures: u32,
}

/// The scheduler and workers; stop them with [`Warmer::shutdown`].
pub struct Warmer {
    stop: Option<Sender<()>>,
    stopping: Arc<AtomicBool>,
    wake: Sender<()>,
    stats: Arc<WarmStats>,
    tracker: Arc<Tracker>,
    threads: Vec<JoinHandle<()>>,
}

impl Warmer {
    /// Starts the scheduler and `settings.workers` workers. `track` keeps
    /// each task's outcome for [`Warmer::wait_for`] (`precache once`).
    pub fn start(
        redis_url: &str,
        keys: &Keys,
        upstream: Arc<Upstream>,
        settings: WarmSettings,
        track: bool,
    ) -> Result<Warmer, String> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (wake_tx, wake_rx) = crossbeam_channel::bounded::<()>(1);
        let (task_tx, task_rx) = crossbeam_channel::bounded::<Task>(settings.workers);
        let stopping = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(WarmStats::default());
        let tracker = Arc::new(Tracker::default());
        tracker.enabled.store(track, Ordering::Relaxed);
        let dispatch: Arc<Mutex<Dispatch>> = Arc::default();
        let open = || Store::new(redis_url, keys.clone()).map_err(|e| e.to_string());

        let mut threads = Vec::new();
        let mut scheduler = Scheduler {
            store: open()?,
            dispatch: dispatch.clone(),
            stats: stats.clone(),
            tasks: task_tx,
            stop: stop_rx.clone(),
            wake: wake_rx,
            workers: settings.workers,
            migrated: false,
        };
        // Before any task is handed out, and before `precache once` waits
        // on its own; when Redis does not answer, the thread tries again.
        match scheduler.migrate_legacy_keys() {
            Ok(moved) => {
                scheduler.migrated = true;
                if moved > 0 {
                    log::info!(
                        "warm-up: moved {moved} entr(ies), refresh record(s) and task(s) from an old key spelling to the one the API proxy reads"
                    );
                }
            }
            Err(e) => log::warn!("warm-up: {e}; migrating old keys later"),
        }
        threads.push(
            std::thread::Builder::new()
                .name("warm-scheduler".into())
                .spawn(move || scheduler.run())
                .map_err(|e| format!("cannot start the warm-up scheduler: {e}"))?,
        );
        for n in 0..settings.workers {
            let worker = Worker {
                store: open()?,
                upstream: upstream.clone(),
                lifetimes: settings.lifetimes,
                dispatch: dispatch.clone(),
                stats: stats.clone(),
                tracker: tracker.clone(),
                stopping: stopping.clone(),
            };
            let tasks = task_rx.clone();
            let stop = stop_rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("warm-worker-{n}"))
                    .spawn(move || worker.run(tasks, stop))
                    .map_err(|e| format!("cannot start a warm-up worker: {e}"))?,
            );
        }
        Ok(Warmer {
            stop: Some(stop_tx),
            stopping,
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
        let mut outcomes = crate::upstream::lock(&self.tracker.outcomes);
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

    /// Stops handing out tasks; workers finish the request in hand and the
    /// rest stays in Redis. Returns when every thread has ended.
    pub fn shutdown(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        drop(self.stop.take());
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

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
    stop: Receiver<()>,
    wake: Receiver<()>,
    workers: usize,
    /// Whether keys in an old spelling were migrated (once per start).
    migrated: bool,
}

impl Scheduler {
    fn run(mut self) {
        let mut last_error: Option<String> = None;
        loop {
            let busy = {
                let mut dispatch = crate::upstream::lock(&self.dispatch);
                dispatch.new_poll(Instant::now());
                dispatch.in_flight.len() + dispatch.not_before.len()
            };
            let polled = if self.migrated {
                self.poll(busy + 2 * self.workers)
            } else {
                self.migrate_legacy_keys().and_then(|moved| {
                    log::info!("warm-up: migrated {moved} key(s) from an old spelling");
                    self.migrated = true;
                    self.poll(busy + 2 * self.workers)
                })
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
                if !crate::upstream::lock(&self.dispatch).claim(&task, Instant::now()) {
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
                    recv(self.stop) -> _ => {
                        crate::upstream::lock(&self.dispatch).in_flight.remove(&member);
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
            recv(self.stop) -> _ => true,
            recv(self.wake) -> _ => false,
            default(pause) => false,
        }
    }

    /// Due tasks (at most `limit`), and the schedule's shape for the stats.
    fn poll(&mut self, limit: usize) -> Result<Vec<Task>, StoreError> {
        let now = Utc::now();
        let now_ms = now.timestamp_millis();
        let due_key = self.store.keys.warm_schedule();
        type Polled = (Vec<(String, f64)>, u64, u64, Vec<(String, f64)>);
        let (due, due_count, scheduled, oldest): Polled =
            self.store.with("polling the warm-up schedule", |c| {
                redis::pipe()
                    .cmd("ZRANGEBYSCORE")
                    .arg(&due_key)
                    .arg("-inf")
                    .arg(now_ms)
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .cmd("ZCOUNT")
                    .arg(&due_key)
                    .arg("-inf")
                    .arg(now_ms)
                    .cmd("ZCARD")
                    .arg(&due_key)
                    .cmd("ZRANGE")
                    .arg(&due_key)
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES")
                    .query(c)
            })?;
        self.stats.due.store(due_count, Ordering::Relaxed);
        self.stats.scheduled.store(scheduled, Ordering::Relaxed);
        let oldest_age = oldest
            .first()
            .map(|(_, score)| now_ms - *score as i64)
            .filter(|age| *age > 0)
            .unwrap_or(0);
        self.stats
            .oldest_due_age_ms
            .store(oldest_age, Ordering::Relaxed);
        if due.is_empty() {
            return Ok(Vec::new());
        }

        let members: Vec<&String> = due.iter().map(|(m, _)| m).collect();
        let until_key = self.store.keys.warm_refresh_until();
        let failures_key = self.store.keys.warm_failures();
        let (until, failures): (Vec<Option<i64>>, Vec<Option<u32>>) =
            self.store.with("reading warm-up task details", |c| {
                redis::pipe()
                    .cmd("HMGET")
                    .arg(&until_key)
                    .arg(&members)
                    .cmd("HMGET")
                    .arg(&failures_key)
                    .arg(&members)
                    .query(c)
            })?;
        let mut tasks = Vec::with_capacity(due.len());
        let mut unknown = Vec::new();
        for (i, (member, score)) in due.iter().enumerate() {
            let Some(target) = WarmTarget::parse(member) else {
                unknown.push(member.clone());
                continue;
            };
            let refresh_until = until
                .get(i)
                .copied()
                .flatten()
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or(now);
            tasks.push(Task {
                member: member.clone(),
                target,
                claimed_ms: *score as i64,
                refresh_until,
                failures: failures.get(i).copied().flatten().unwrap_or(0),
            });
        }
        if !unknown.is_empty() {
            log::warn!(
                "warm-up schedule holds {} member(s) that are no warm-up key; removing them: {:?}",
                unknown.len(),
                unknown
            );
            self.store.with("removing unknown warm-up members", |c| {
                redis::cmd("ZREM")
                    .arg(&due_key)
                    .arg(&unknown)
                    .query::<()>(c)
            })?;
        }
        Ok(tasks)
    }
}

/// Renames each old key (`KEYS[2i-1]`) to its new spelling (`KEYS[2i]`),
/// keeping its TTL; when the new one exists already it wins and the old
/// one goes. Returns how many old keys there were.
const RENAME_SCRIPT: &str = r#"
local moved = 0
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('RENAMENX', KEYS[i], KEYS[i + 1]) == 0 then
      redis.call('DEL', KEYS[i])
    end
    moved = moved + 1
  end
end
return moved
"#;

/// Moves schedule members from their old spelling (`ARGV[2i-1]`) to the
/// new one (`ARGV[2i]`) with their due time, deadline and failure count;
/// a task already scheduled under the new spelling keeps its own.
const MIGRATE_MEMBERS_SCRIPT: &str = r#"
local moved = 0
for i = 1, #ARGV, 2 do
  local old, new = ARGV[i], ARGV[i + 1]
  local score = redis.call('ZSCORE', KEYS[1], old)
  if score then
    redis.call('ZADD', KEYS[1], 'NX', score, new)
    redis.call('ZREM', KEYS[1], old)
    moved = moved + 1
  end
  for h = 2, 3 do
    local value = redis.call('HGET', KEYS[h], old)
    if value then
      redis.call('HSETNX', KEYS[h], new, value)
      redis.call('HDEL', KEYS[h], old)
    end
  end
end
return moved
"#;

impl Scheduler {
    /// Entries, refresh records and schedule members written before keys
    /// followed the API proxy's rule (DESIGN.md section 5: the path
    /// lowercased) are nowhere the proxy looks: move them to the key it
    /// reads, so nothing keeps refreshing keys nobody reads. Idempotent.
    fn migrate_legacy_keys(&mut self) -> Result<usize, StoreError> {
        let keys = self.store.keys.clone();
        let members: Vec<String> = self.store.with("reading the warm-up schedule", |c| {
            redis::cmd("ZRANGE")
                .arg(keys.warm_schedule())
                .arg(0)
                .arg(-1)
                .query(c)
        })?;
        let renamed: Vec<(String, String)> = members
            .iter()
            .filter_map(|m| WarmTarget::parse_legacy(m).map(|t| (m.clone(), t.key())))
            .collect();
        let mut moved = 0;
        for chunk in renamed.chunks(500) {
            let mut command = redis::cmd("EVAL");
            command
                .arg(MIGRATE_MEMBERS_SCRIPT)
                .arg(3)
                .arg(keys.warm_schedule())
                .arg(keys.warm_refresh_until())
                .arg(keys.warm_failures());
            for (old, new) in chunk {
                command.arg(old).arg(new);
            }
            moved += self
                .store
                .with("migrating warm-up tasks", |c| command.query::<usize>(c))?;
        }
        // The spellings that changed: the paths with capitals.
        let legacy_prefixes = [
            crate::warm::Endpoint::Team,
            crate::warm::Endpoint::TeamMembers,
        ]
        .map(|e| {
            let legacy = WarmTarget::new(e, 0).legacy_key();
            let cut = legacy.find(['?', '0']).unwrap_or(legacy.len());
            legacy[..cut].to_string()
        });
        for prefix in legacy_prefixes {
            for (entry_key, build) in [
                (
                    keys.warm_entry(&prefix),
                    Keys::warm_entry as fn(&Keys, &str) -> String,
                ),
                (keys.warm_refresh(&prefix), Keys::warm_refresh),
            ] {
                let found = self
                    .store
                    .scan(&format!("{}*", crate::store::glob_escape(&entry_key)))?;
                let stem_len = entry_key.len() - prefix.len();
                let pairs: Vec<(String, String)> = found
                    .into_iter()
                    .filter_map(|old| {
                        let member = old.get(stem_len..)?;
                        let target = WarmTarget::parse_legacy(member)?;
                        Some((old.clone(), build(&keys, &target.key())))
                    })
                    .collect();
                for chunk in pairs.chunks(500) {
                    let mut command = redis::cmd("EVAL");
                    command.arg(RENAME_SCRIPT).arg(chunk.len() * 2);
                    for (old, new) in chunk {
                        command.arg(old).arg(new);
                    }
                    moved += self
                        .store
                        .with("migrating warm-up entries", |c| command.query::<usize>(c))?;
                }
            }
        }
        Ok(moved)
    }
}

/// Stores the answer (when good) and moves the task on, unless it was
/// re-enqueued while being fetched (its score changed): then it stays due.
const SETTLE_SCRIPT: &str = r#"
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[6])
  redis.call('SET', KEYS[5], ARGV[5], 'PX', ARGV[6])
end
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not current or tonumber(current) ~= tonumber(ARGV[2]) then
  return 0
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  if ARGV[7] == '0' then
    redis.call('HDEL', KEYS[3], ARGV[1])
  else
    redis.call('HSET', KEYS[3], ARGV[1], ARGV[7])
  end
end
return 1
"#;

struct Worker {
    store: Store,
    upstream: Arc<Upstream>,
    lifetimes: Lifetimes,
    dispatch: Arc<Mutex<Dispatch>>,
    stats: Arc<WarmStats>,
    tracker: Arc<Tracker>,
    stopping: Arc<AtomicBool>,
}

impl Worker {
    fn run(mut self, tasks: Receiver<Task>, stop: Receiver<()>) {
        loop {
            let task = crossbeam_channel::select! {
                recv(stop) -> _ => return,
                recv(tasks) -> task => match task {
                    Ok(task) => task,
                    Err(_) => return,
                },
            };
            if self.stopping.load(Ordering::SeqCst) {
                // Not started: it stays due in Redis for the next start.
                return;
            }
            let settled = self.process(&task);
            crate::upstream::lock(&self.dispatch).finish(
                &task,
                settled == Settled::Yes,
                Instant::now(),
            );
            let pause = match settled {
                Settled::Yes => continue,
                // Shutting down: what is left stays due in Redis.
                Settled::Cancelled => return,
                // Redis refuses the result: rest before the next task.
                Settled::No => SETTLE_RETRY,
                Settled::NoToken => NO_TOKEN_PAUSE,
            };
            if crossbeam_channel::select! {
                recv(stop) -> _ => true,
                default(pause) => false,
            } {
                return;
            }
        }
    }

    fn process(&mut self, task: &Task) -> Settled {
        let log = CallLog::default();
        let result = self.upstream.get(&task.target.request(), &log);
        let now = Utc::now();
        let endpoint = task.target.endpoint;
        let (entry, next, failures) = match result {
            Ok(response) => {
                match warm::entry_json(response.status, &response.headers, &response.body) {
                    Ok(entry) => (
                        Some(entry),
                        warm::after_success(now, task.refresh_until, self.lifetimes.ttl),
                        0,
                    ),
                    Err(bad) => {
                        log::warn!("warm-up GET /{}: {bad}; will retry", task.member);
                        let failures = task.failures + 1;
                        (
                            None,
                            warm::after_failure(now, task.refresh_until, failures, false),
                            failures,
                        )
                    }
                }
            }
            Err(UpstreamError::Cancelled { .. }) => return Settled::Cancelled,
            Err(e @ UpstreamError::Token { .. }) => {
                log::warn!(
                    "warm-up {}: {e}; this worker pauses {NO_TOKEN_PAUSE:?}, the task stays due",
                    task.member
                );
                return Settled::NoToken;
            }
            Err(e) => {
                let permanent = e.status().is_some_and(warm::is_permanent);
                let failures = task.failures + 1;
                let next = warm::after_failure(now, task.refresh_until, failures, permanent);
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
        if let Err(e) = self.settle(task, entry, next, failures, now) {
            // The task is still due in Redis: it will be fetched again.
            log::warn!("warm-up {}: {e}; retrying in {SETTLE_RETRY:?}", task.member);
            return Settled::No;
        }
        if stored {
            self.stats.done[endpoint.index()].fetch_add(1, Ordering::Relaxed);
            self.tracker.record(&task.member, Outcome::Stored);
        } else {
            self.stats.failed[endpoint.index()].fetch_add(1, Ordering::Relaxed);
            self.tracker.record(&task.member, Outcome::Failed);
        }
        Settled::Yes
    }

    fn settle(
        &mut self,
        task: &Task,
        entry: Option<String>,
        next: Next,
        failures: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let keys = &self.store.keys;
        let refresh = entry
            .as_ref()
            .map(|_| warm::refresh_json(&task.target, task.refresh_until, self.lifetimes.ttl, now))
            .unwrap_or_default();
        let next_score = match next {
            Next::DueAt(at) => at.timestamp_millis().to_string(),
            Next::Drop => String::new(),
        };
        // Plain EVAL: the script is small, and redis-rs's Script helper
        // needs a feature (and a SHA-1 crate) for no gain here.
        let mut command = redis::cmd("EVAL");
        command
            .arg(SETTLE_SCRIPT)
            .arg(5)
            .arg(keys.warm_schedule())
            .arg(keys.warm_refresh_until())
            .arg(keys.warm_failures())
            .arg(keys.warm_entry(&task.member))
            .arg(keys.warm_refresh(&task.member))
            .arg(&task.member)
            .arg(task.claimed_ms)
            .arg(next_score)
            .arg(entry.unwrap_or_default())
            .arg(refresh)
            .arg(self.lifetimes.ttl.as_millis() as u64)
            .arg(failures);
        self.store
            .with(&format!("settling warm-up {}", task.member), |c| {
                command.query::<i64>(c)
            })
            .map(drop)
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

/// Puts tasks in the schedule outside a run (tests, tools): due at `due`,
/// refreshed until `refresh_until`. Runs enqueue through their own batch.
pub fn enqueue(
    store: &mut Store,
    targets: &[WarmTarget],
    due: DateTime<Utc>,
    refresh_until: DateTime<Utc>,
) -> Result<(), StoreError> {
    store.apply(&crate::store::WriteBatch {
        warm: Some(crate::store::WarmEnqueue {
            members: targets.iter().map(WarmTarget::key).collect(),
            due_ms: due.timestamp_millis(),
            refresh_until_ms: refresh_until.timestamp_millis(),
        }),
        ..Default::default()
    })
}
