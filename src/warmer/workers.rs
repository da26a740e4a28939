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

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::config::WarmConfig;
use crate::lifecycle::{FireOnDrop, Shutdown};
use crate::report::WarmCounts;
use crate::store::lease::Leadership;
use crate::store::{Connector, Keys, Store, StoreError};
use crate::upstream::Upstream;
use crate::warm::plan::Lifetimes;
use crate::warm::stats::WarmStats;
use crate::warmer::schedule::Task;
use crate::warmer::scheduler::{Dispatch, Scheduler};
use crate::warmer::worker::{Outcome, Tracker, Worker};

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
