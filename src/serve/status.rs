//! What the daemon knows about itself, shared between the run loop (which
//! writes it) and the HTTP server (which reads it): whether a run is in
//! progress, when the loop last made progress, the recent runs.
//!
//! The decisions the endpoints make from it — is the loop healthy, is the
//! service ready, what the status JSON and HTML page say — are pure
//! functions of a [`StateView`] and the time, so they are tested without
//! threads or sockets.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::report::{PollReport, RunStats, UpstreamStatus};
use crate::store::StoreError;
use crate::util::{lock, rfc3339};

/// The shared state. Cheap to update; readers copy a [`StateView`] out.
pub struct DaemonState {
    inner: Mutex<StateView>,
}

/// A copy of the state at one moment.
#[derive(Debug, Clone)]
pub struct StateView {
    /// When the daemon started (for its uptime).
    pub started: Instant,
    pub interval: Duration,
    pub grace: Duration,
    pub history_len: usize,
    /// When the loop last started or finished a run, or began waiting.
    pub last_progress: Instant,
    /// Start of the run in progress.
    pub running_since: Option<(Instant, DateTime<Utc>)>,
    /// When the last run that succeeded (or degraded) ended.
    pub last_ok: Option<(Instant, DateTime<Utc>)>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub stopping: bool,
    /// The seed's run stats of the recent runs, oldest first.
    pub runs: VecDeque<RunStats>,
    /// How the last run that got to the match calls chose its roots.
    pub polling: Option<PollReport>,
    /// Warm-ups due after each recent run (oldest first; as many as `runs`
    /// at most), for the status page's chart.
    pub warm_due: VecDeque<u64>,
    /// Leader or standby, when the lease is kept (DESIGN.md section 12).
    pub role: Option<Role>,
}

/// This instance's part, as `/status` and the page show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    /// "leader" or "standby".
    pub role: &'static str,
    /// The instance that holds the lease (this one, when leading), if any.
    pub leader: Option<String>,
    /// Since when this instance has had this part.
    pub since: Option<String>,
}

impl DaemonState {
    pub fn new(
        interval: Duration,
        grace: Duration,
        history_len: usize,
        now: Instant,
    ) -> DaemonState {
        DaemonState {
            inner: Mutex::new(StateView {
                interval,
                grace,
                history_len: history_len.max(1),
                started: now,
                last_progress: now,
                running_since: None,
                last_ok: None,
                next_run_at: None,
                stopping: false,
                runs: VecDeque::new(),
                polling: None,
                warm_due: VecDeque::new(),
                role: None,
            }),
        }
    }

    pub fn view(&self) -> StateView {
        lock(&self.inner).clone()
    }

    pub fn is_running(&self) -> bool {
        lock(&self.inner).running_since.is_some()
    }

    pub fn run_started(&self, now: Instant, at: DateTime<Utc>) {
        let mut s = lock(&self.inner);
        s.running_since = Some((now, at));
        s.last_progress = now;
    }

    /// `stats`: the seed's `log_item`; `ok`: success or degraded.
    pub fn run_finished(&self, now: Instant, at: DateTime<Utc>, stats: RunStats, ok: bool) {
        let mut s = lock(&self.inner);
        s.running_since = None;
        s.last_progress = now;
        if ok {
            s.last_ok = Some((now, at));
        }
        s.runs.push_back(stats);
        while s.runs.len() > s.history_len {
            s.runs.pop_front();
        }
    }

    /// The tiers and polls of the run just finished (kept from an earlier
    /// run when this one failed before its match calls).
    pub fn polled(&self, poll: Option<PollReport>) {
        if let Some(poll) = poll {
            lock(&self.inner).polling = Some(poll);
        }
    }

    /// The warm-ups due after the run just finished.
    pub fn warm_due_after_run(&self, due: u64) {
        let mut s = lock(&self.inner);
        s.warm_due.push_back(due);
        while s.warm_due.len() > s.history_len {
            s.warm_due.pop_front();
        }
    }

    /// The loop is waiting for its next run.
    pub fn waiting(&self, now: Instant, next_run_at: DateTime<Utc>) {
        let mut s = lock(&self.inner);
        s.last_progress = now;
        s.next_run_at = Some(next_run_at);
    }

    pub fn stopping(&self) {
        lock(&self.inner).stopping = true;
    }

    /// Leader or standby now.
    pub fn set_role(&self, role: Role) {
        lock(&self.inner).role = Some(role);
    }

    /// A reload changed `sync.interval_secs`: health and readiness measure
    /// by the new one.
    pub fn set_interval(&self, interval: Duration) {
        lock(&self.inner).interval = interval;
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

/// How long the loop may go without progress: a whole interval of waiting
/// plus a run as long as an interval, plus the shutdown grace.
pub fn stuck_after(view: &StateView) -> Duration {
    view.interval * 2 + view.grace
}

/// Why `/healthz` says no: the loop made no progress for too long.
#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    /// A run was in progress all that time (else the loop itself stalled).
    pub in_run: bool,
    pub quiet: Duration,
    pub limit: Duration,
}

impl std::fmt::Display for Stuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let doing = if self.in_run {
            "a run has been in progress"
        } else {
            "the run loop has made no progress"
        };
        write!(
            f,
            "{doing} for {:.1} s (limit {:.1} s)",
            secs(self.quiet),
            secs(self.limit)
        )
    }
}

/// `/healthz`: the loop is alive and not stuck.
pub fn health(view: &StateView, now: Instant) -> Result<(), Stuck> {
    let quiet = now.saturating_duration_since(view.last_progress);
    let limit = stuck_after(view);
    if quiet > limit {
        return Err(Stuck {
            in_run: view.running_since.is_some(),
            quiet,
            limit,
        });
    }
    Ok(())
}

/// Why `/readyz` says no.
#[derive(Debug, Clone, PartialEq)]
pub enum NotReady {
    Redis(StoreError),
    NoRunYet,
    /// The last successful run ended `ago` ago, more than `limit`.
    Stale {
        ago: Duration,
        limit: Duration,
    },
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Redis(e) => write!(f, "redis does not answer: {e}"),
            NotReady::NoRunYet => f.write_str("no run has succeeded yet"),
            NotReady::Stale { ago, limit } => write!(
                f,
                "the last successful run ended {:.1} s ago (limit {:.1} s)",
                secs(*ago),
                secs(*limit)
            ),
        }
    }
}

/// `/readyz`: Redis answers and a run succeeded within two intervals; a
/// standby (which does not run) only needs Redis.
pub fn readiness(
    view: &StateView,
    now: Instant,
    redis: Result<(), StoreError>,
) -> Result<(), NotReady> {
    redis.map_err(NotReady::Redis)?;
    if view.role.as_ref().is_some_and(|r| r.role == "standby") {
        return Ok(());
    }
    let limit = view.interval * 2;
    match view.last_ok {
        None => Err(NotReady::NoRunYet),
        Some((at, _)) if now.saturating_duration_since(at) > limit => Err(NotReady::Stale {
            ago: now.saturating_duration_since(at),
            limit,
        }),
        Some(_) => Ok(()),
    }
}

/// What the loop is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopState {
    Waiting,
    Running,
    Stopping,
}

/// The warm-up's numbers, as `/status` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WarmView {
    pub due: u64,
    pub scheduled: u64,
    pub oldest_due_age_secs: u64,
    pub done: u64,
    pub failed: u64,
}

/// `/status`: the current state and the recent runs (newest first).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `--version`'s text: version, git revision, build date.
    pub version: &'static str,
    pub uptime_secs: u64,
    pub state: LoopState,
    pub healthy: bool,
    pub running_since: Option<String>,
    pub next_run_at: Option<String>,
    pub last_success_at: Option<String>,
    pub interval_secs: u64,
    pub upstream_status: Option<UpstreamStatus>,
    pub last_run: Option<RunStats>,
    /// `None` when the warm-up is off.
    pub warm: Option<WarmView>,
    /// Root tournaments per polling tier and how many the last run asked;
    /// `None` before the first run that got to the match calls.
    pub polling: Option<PollReport>,
    /// Warm-ups due after each recent run, oldest first.
    pub warm_due_per_run: Vec<u64>,
    /// Leader or standby (absent without a lease).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The Redis this process writes to (set by the HTTP side).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisView>,
    pub runs: Vec<RunStats>,
}

/// Which Redis master precache reaches (DESIGN.md section 12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedisView {
    /// Where connections go, as it may be shown (no secrets).
    pub target: String,
    /// The master Sentinel named last (none without Sentinel).
    pub master: Option<String>,
    /// Failovers this process saw.
    pub master_changes: u64,
    /// Whether the last connection attempt reached the master.
    pub reachable: Option<bool>,
}

/// The status at `now`; `warm`: the warm-up's numbers, when it runs.
pub fn status(view: &StateView, now: Instant, warm: Option<WarmView>) -> Status {
    let state = if view.stopping {
        LoopState::Stopping
    } else if view.running_since.is_some() {
        LoopState::Running
    } else {
        LoopState::Waiting
    };
    let at = |t: DateTime<Utc>| rfc3339(t, SecondsFormat::Secs);
    let last = view.runs.back();
    Status {
        version: crate::util::LONG_VERSION,
        uptime_secs: now.saturating_duration_since(view.started).as_secs(),
        state,
        healthy: health(view, now).is_ok(),
        running_since: view.running_since.map(|(_, t)| at(t)),
        next_run_at: view
            .next_run_at
            .filter(|_| view.running_since.is_none())
            .map(at),
        last_success_at: view.last_ok.map(|(_, t)| at(t)),
        interval_secs: view.interval.as_secs(),
        upstream_status: last.map(|r| r.upstream_status),
        last_run: last.cloned(),
        warm,
        polling: view.polling,
        warm_due_per_run: view.warm_due.iter().copied().collect(),
        role: view.role.clone(),
        redis: None,
        runs: view.runs.iter().rev().cloned().collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::RunStatus;

    pub(crate) fn state() -> (DaemonState, Instant) {
        let t0 = Instant::now();
        (
            DaemonState::new(Duration::from_secs(10), Duration::from_secs(4), 3, t0),
            t0,
        )
    }

    pub(crate) fn stats(n: usize, status: RunStatus) -> RunStats {
        let mut summary = crate::report::RunSummary::new(format!("r{n}"), false);
        summary.status = status;
        let mut changes = crate::model::changes::Changes::default();
        changes.individual_matches.added = (0..n as i64).collect();
        if status != RunStatus::Failed {
            summary.changes = crate::model::changes::ChangeCounts::of(&changes);
        }
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        RunStats::of(&summary, t, t + chrono::Duration::seconds(1))
    }

    #[test]
    fn healthy_until_the_loop_is_quiet_for_two_intervals_plus_grace() {
        let (s, t0) = state();
        assert_eq!(stuck_after(&s.view()), Duration::from_secs(24));
        assert!(health(&s.view(), t0 + Duration::from_secs(24)).is_ok());
        let err = health(&s.view(), t0 + Duration::from_secs(25)).unwrap_err();
        assert!(err.to_string().contains("no progress"), "{err}");
        s.run_started(t0 + Duration::from_secs(20), Utc::now());
        assert!(health(&s.view(), t0 + Duration::from_secs(40)).is_ok());
        let err = health(&s.view(), t0 + Duration::from_secs(45)).unwrap_err();
        assert!(
            err.to_string().contains("run has been in progress"),
            "{err}"
        );
        s.run_finished(
            t0 + Duration::from_secs(46),
            Utc::now(),
            stats(1, RunStatus::Failed),
            false,
        );
        assert!(health(&s.view(), t0 + Duration::from_secs(47)).is_ok());
    }

    #[test]
    fn ready_when_redis_answers_and_a_run_succeeded_recently() {
        let (s, t0) = state();
        let err = readiness(&s.view(), t0, Ok(())).unwrap_err();
        assert!(err.to_string().contains("no run has succeeded"), "{err}");
        s.run_finished(
            t0 + Duration::from_secs(1),
            Utc::now(),
            stats(1, RunStatus::Degraded),
            true,
        );
        assert!(readiness(&s.view(), t0 + Duration::from_secs(21), Ok(())).is_ok());
        let err = readiness(&s.view(), t0 + Duration::from_secs(22), Ok(())).unwrap_err();
        assert!(err.to_string().contains("ended 21.0 s ago"), "{err}");
        let refused = StoreError {
            kind: Default::default(),
            doing: "PING".into(),
            reason: "refused".into(),
        };
        let err = readiness(&s.view(), t0 + Duration::from_secs(2), Err(refused)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis does not answer: redis: PING: refused"
        );
        // A failed run does not refresh readiness.
        s.run_finished(
            t0 + Duration::from_secs(30),
            Utc::now(),
            stats(2, RunStatus::Failed),
            false,
        );
        assert!(readiness(&s.view(), t0 + Duration::from_secs(30), Ok(())).is_err());
    }

    #[test]
    fn status_keeps_the_last_history_len_runs_newest_first() {
        let (s, t0) = state();
        for n in 1..=5 {
            s.run_finished(t0, Utc::now(), stats(n, RunStatus::Success), true);
        }
        let json = serde_json::to_value(status(&s.view(), t0, None)).unwrap();
        let ids: Vec<&str> = json["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["r5", "r4", "r3"]);
        assert_eq!(json["last_run"]["run_id"], "r5");
        assert_eq!(json["last_run"]["changes"]["individual_matches"], 5);
        assert_eq!(json["state"], "waiting");
        assert_eq!(json["upstream_status"], "UP");
        assert_eq!(json["warm"], serde_json::Value::Null);
        assert_eq!(json["polling"], serde_json::Value::Null);
        let counts = |live, active, dormant| crate::report::TierCounts {
            live,
            active,
            dormant,
        };
        s.polled(Some(PollReport {
            full_sweep: false,
            tiers: counts(12, 340, 1150),
            polled: counts(12, 113, 57),
            oldest_poll_age_runs: counts(0, 2, 19),
        }));
        s.polled(None);
        let json = serde_json::to_value(status(&s.view(), t0, None)).unwrap();
        assert_eq!(json["polling"]["tiers"]["active"], 340);
        assert_eq!(json["polling"]["polled"]["dormant"], 57);
        let page = crate::serve::page::render_page(&status(&s.view(), t0, None));
        assert!(page.contains("<td>dormant</td><td class=\"num\">1150</td><td class=\"num\">57</td><td class=\"num\">19</td>"), "{page}");
        assert!(page.contains("182 of 1502 asked"), "{page}");
        s.run_started(t0, Utc::now());
        assert_eq!(status(&s.view(), t0, None).state, LoopState::Running);
    }
}
