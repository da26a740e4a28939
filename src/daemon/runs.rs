//! The run loop: a run at start, then one every `sync.interval_secs`
//! measured start to start, only while this instance leads; between runs
//! it waits on the stop signal, the lease, reloads and admin requests.

use std::time::{Duration, Instant};

use chrono::Utc;
use crossbeam_channel::{Receiver, Sender};

use super::clear;
use crate::lifecycle::Shutdown;
use crate::report::{RunReport, RunStatus};
use crate::serve::control::AdminCommand;
use crate::serve::status::DaemonState;
use crate::store::lease::Leadership;
use crate::store::{self, Cleared, StoreError};
use crate::sync::run::Runner;

/// Called after every run (warm-up, metrics hang here).
pub type AfterRun<'a> = dyn FnMut(&mut Runner, &RunReport) + 'a;

/// Called on a reload request (SIGHUP), between runs.
pub type OnReload<'a> = dyn FnMut(&mut Runner) + 'a;

/// What the loop listens to besides its timer.
pub struct LoopInputs<'a> {
    /// The process's shutdown signal: no run starts once it fired.
    pub stop: &'a Shutdown,
    /// Admin requests from the HTTP server, done between runs.
    pub commands: Option<&'a Receiver<AdminCommand>>,
    /// Reload requests (SIGHUP), done between runs by `on_reload`.
    pub reloads: Option<&'a Receiver<()>>,
    /// The leader lease and the channel that hears of each change of role:
    /// runs only while leading; on taking the lease over, a run at once
    /// that reads the cache from Redis and asks every root.
    pub lease: Option<(&'a Leadership, &'a Receiver<()>)>,
}

/// The role `leadership` says this instance has, as the status shows it.
pub(super) fn role_of(leadership: &Leadership) -> crate::serve::status::Role {
    let state = leadership.state();
    let at = |t: chrono::DateTime<Utc>| crate::util::rfc3339(t, chrono::SecondsFormat::Secs);
    crate::serve::status::Role {
        role: if state.token.is_some() {
            "leader"
        } else {
            "standby"
        },
        leader: state
            .token
            .as_ref()
            .map(|t| t.holder().to_string())
            .or_else(|| {
                state
                    .other
                    .as_ref()
                    .map(|h| store::lease::holder_of(&h.value).to_string())
            }),
        since: state.since.map(at),
    }
}

/// The loop. Returns when a stop is signalled. `state`: what the HTTP
/// server reports about the loop. The interval is read from the runner's
/// config at every wait, so a reload that changes it takes effect from the
/// last run's start.
pub fn run_loop(
    runner: &mut Runner,
    inputs: LoopInputs<'_>,
    state: &DaemonState,
    after_run: &mut AfterRun<'_>,
    on_reload: &mut OnReload<'_>,
) {
    let stop = inputs.stop;
    let never = crossbeam_channel::never();
    let mut commands = inputs.commands.unwrap_or(&never);
    let never_reload = crossbeam_channel::never();
    let reloads = inputs.reloads.unwrap_or(&never_reload);
    let never_lease = crossbeam_channel::never();
    let lease_changed = inputs.lease.map_or(&never_lease, |(_, changed)| changed);
    let mut last_start = Instant::now();
    let mut next_start = last_start;
    // DESIGN.md section 10: every root at start-up, whatever the state says.
    runner.sweep_every_root_next();
    loop {
        let interval = Duration::from_secs(runner.config().sync.interval_secs);
        let wait = next_start.saturating_duration_since(Instant::now());
        state.waiting(
            Instant::now(),
            Utc::now() + chrono::Duration::milliseconds(wait.as_millis() as i64),
        );
        if let Some((leadership, _)) = inputs.lease {
            state.set_role(role_of(leadership));
        }
        crossbeam_channel::select! {
            recv(stop.rx()) -> _ => break,
            recv(lease_changed) -> _ => {
                if inputs.lease.is_some_and(|(l, _)| l.is_leader()) {
                    // Taken over: the first run as leader starts now.
                    next_start = Instant::now();
                }
                continue;
            }
            recv(reloads) -> _ => {
                on_reload(runner);
                let reloaded = Duration::from_secs(runner.config().sync.interval_secs);
                if reloaded != interval {
                    state.set_interval(reloaded);
                    // Measured from the last run's start, as always.
                    if next_start > last_start {
                        next_start = last_start + reloaded;
                    }
                }
                continue;
            }
            recv(commands) -> command => match command {
                Ok(AdminCommand::Run) => log::info!("run triggered over HTTP"),
                Ok(AdminCommand::AcceptShrink) => {
                    log::info!("run triggered over HTTP, accepting any shrink it sees");
                    runner.accept_shrink();
                }
                Ok(AdminCommand::Clear { started, reply, deadline }) => {
                    let leading = inputs.lease.is_none_or(|(l, _)| l.is_leader());
                    clear_between_runs(runner, leading, started, reply, deadline);
                    continue;
                }
                Err(_) => {
                    // The HTTP server is gone: stop listening to it, keep waiting.
                    commands = &never;
                    continue;
                }
            },
            default(wait) => {}
        }
        if stop.is_fired() {
            break;
        }
        if let Some((leadership, _)) = inputs.lease
            && !lead(runner, leadership)
        {
            next_start = Instant::now() + interval;
            continue;
        }
        let started = Instant::now();
        last_start = started;
        next_start = started + interval;
        run_and_record(runner, inputs.lease.map(|(l, _)| l), state, after_run);
        if stop.is_fired() {
            break;
        }
        if Instant::now() > next_start {
            log::warn!(
                "run took longer than sync.interval_secs ({interval:?}); the next starts now"
            );
        }
    }
    state.stopping();
    log::info!("run loop stopped");
}

/// Whether this instance runs now: it holds the lease. A standby lets the
/// leader run (an acceptance asked for while leading is the new leader's
/// to ask for); one that leads again reads the cache from Redis and asks
/// every root, as another may have written meanwhile (DESIGN.md section 12).
fn lead(runner: &mut Runner, leadership: &Leadership) -> bool {
    let token = leadership.token();
    if token.is_none() {
        if runner.take_accept_shrink() {
            log::warn!(
                "the accepted shrink was not applied: this instance lost the lease; ask the leader"
            );
        }
        runner.set_lease(None);
        return false;
    }
    if token.as_ref() != runner.lease() {
        runner.set_lease(token);
        runner.sweep_every_root_next();
    }
    true
}

/// One run, then what hangs after it; a fenced write makes this instance
/// stand down.
fn run_and_record(
    runner: &mut Runner,
    leadership: Option<&Leadership>,
    state: &DaemonState,
    after_run: &mut AfterRun<'_>,
) {
    state.run_started(Instant::now(), Utc::now());
    let epoch = runner.lease().map(|t| t.epoch);
    let report = runner.run_once(false);
    let ok = report.summary.status.is_ok();
    if report.summary.status == RunStatus::Fenced
        && let (Some(leadership), Some(epoch)) = (leadership, epoch)
    {
        log::warn!("this instance's write was fenced: standing down as a standby");
        leadership.stand_down(epoch);
    }
    let (ended_at, stats) = (report.ended_at, report.stats.clone());
    state.polled(report.summary.poll);
    after_run(runner, &report);
    drop(report);
    crate::alloc::release_freed_memory();
    // Last, so whoever waits for this run in the history (`POST /run`, a
    // test, an operator) finds its metrics recorded and its memory handed
    // back.
    state.run_finished(Instant::now(), ended_at, stats, ok);
}

/// A clear asked over HTTP, between runs. Only the leader clears: the
/// lease may have moved since the request was let in (its requester is
/// told nothing was cleared, as past the deadline).
fn clear_between_runs(
    runner: &mut Runner,
    leading: bool,
    started: Sender<()>,
    reply: Sender<Result<Cleared, StoreError>>,
    deadline: Instant,
) {
    if !leading {
        log::warn!("a clear requested over HTTP was not done: another instance leads now");
        return;
    }
    if Instant::now() >= deadline || started.send(()).is_err() {
        log::warn!("a clear requested over HTTP came too late and was not done");
        return;
    }
    let config = runner.config().clone();
    let fence = runner.lease().map(|t| t.value.clone());
    let cleared = clear(runner.store(), &config, fence.as_deref());
    let _ = reply.send(cleared.map_err(|e| match e {
        store::ApplyError::Store(e) => e,
        fenced => StoreError {
            kind: Default::default(),
            doing: "clearing the cache".into(),
            reason: fenced.to_string(),
        },
    }));
}
