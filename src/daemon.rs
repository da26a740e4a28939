//! The daemon: threads set-up, the run loop, and shutdown.
//!
//! The main thread runs the loop: a run at start, then one every
//! `sync.interval_secs` measured start to start (a run that overruns the
//! interval is followed at once by the next, never overlapped). Between runs
//! it blocks on the stop and trigger channels with a deadline.
//!
//! Shutdown (SIGINT/SIGTERM via ctrlc): no new run starts; a run in progress
//! may finish. Halfway through `daemon.shutdown_grace_secs` the upstream
//! client is cancelled so the run ends quickly (a cancelled run fails and
//! writes nothing); at the end of the grace period the process exits
//! regardless. Redis only ever receives whole MULTI/EXEC transactions, so it
//! holds a complete run whatever happens. A second signal exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use chrono::Utc;

use crate::config::Config;
use crate::debuglog;
use crate::http::AdminCommand;
use crate::run::{RunReport, Runner};
use crate::status::DaemonState;
use crate::store::{self, Keys, Store};
use crate::upstream::Upstream;
use crate::warmer::{WarmSettings, Warmer};

/// Everything the daemon and `precache once` share: the runner and its threads.
pub struct Services {
    pub runner: Runner,
    /// The warm-up scheduler and workers, when started.
    pub warmer: Option<Warmer>,
    writer_tx: Option<Sender<store::WriteRequest>>,
    writer: Option<std::thread::JoinHandle<()>>,
    debug: Option<std::thread::JoinHandle<()>>,
}

impl Services {
    /// Starts the writer and debug-log threads and builds the runner.
    pub fn start(config: &Config) -> Result<Services, String> {
        let keys = Keys::new(&config.redis.key_prefix);
        let store =
            Store::new(config.redis.url.expose(), keys.clone()).map_err(|e| e.to_string())?;
        let writer_store =
            Store::new(config.redis.url.expose(), keys).map_err(|e| e.to_string())?;
        let (writer_tx, writer_rx) = crossbeam_channel::bounded(1);
        let writer = store::spawn_writer(writer_store, writer_rx)
            .map_err(|e| format!("cannot start the Redis writer: {e}"))?;
        let (debug_tx, debug) = debuglog::spawn(&config.logs.dir, config.logs.history_len)
            .map_err(|e| format!("cannot start the debug-log thread: {e}"))?;
        let upstream = Arc::new(Upstream::new(&config.upstream));
        let runner = Runner::new(
            config.clone(),
            upstream,
            store,
            Some(writer_tx.clone()),
            Some(debug_tx),
        )
        .map_err(|e| format!("cannot start the fetch pool: {e}"))?;
        Ok(Services {
            runner,
            warmer: None,
            writer_tx: Some(writer_tx),
            writer: Some(writer),
            debug: Some(debug),
        })
    }

    /// Starts the warm-up scheduler and workers on the runner's upstream
    /// client, so both share one token, concurrency cap and rate limit.
    /// `track`: keep outcomes for `Warmer::wait_for` (`precache once`).
    pub fn start_warmer(&mut self, track: bool) -> Result<(), String> {
        let config = self.runner.config();
        let warmer = Warmer::start(
            config.redis.url.expose(),
            &Keys::new(&config.redis.key_prefix),
            self.runner.upstream().clone(),
            WarmSettings::from_config(&config.warm),
            track,
        )?;
        self.warmer = Some(warmer);
        Ok(())
    }

    /// Stops the warm-up (the request in hand finishes, the rest stays in
    /// Redis), closes the channels and waits for the writer and debug
    /// threads to drain.
    pub fn shutdown(self) {
        let Services {
            runner,
            warmer,
            writer_tx,
            writer,
            debug,
        } = self;
        if let Some(warmer) = warmer {
            warmer.shutdown();
        }
        drop(runner);
        drop(writer_tx);
        for handle in [writer, debug].into_iter().flatten() {
            let _ = handle.join();
        }
    }
}

/// Signals seen so far; the handler decides on the first and the second.
pub struct StopSignal {
    pub rx: Receiver<()>,
    pub stopping: Arc<AtomicBool>,
}

/// Installs the SIGINT/SIGTERM handler. First signal: stop requested, a
/// watchdog cancels the upstream at half the grace period and exits the
/// process at its end. Second signal: exit at once (status 130).
pub fn install_signal_handler(
    upstream: Arc<Upstream>,
    grace: Duration,
) -> Result<StopSignal, String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let stopping = Arc::new(AtomicBool::new(false));
    let count = AtomicUsize::new(0);
    let flag = stopping.clone();
    ctrlc::set_handler(move || {
        if count.fetch_add(1, Ordering::SeqCst) > 0 {
            eprintln!("precache: second signal, exiting now");
            std::process::exit(130);
        }
        log::info!("shutdown requested: no new run will start (grace {grace:?})");
        flag.store(true, Ordering::SeqCst);
        let _ = tx.try_send(());
        let upstream = upstream.clone();
        let _ = std::thread::Builder::new()
            .name("shutdown-watchdog".into())
            .spawn(move || {
                std::thread::sleep(grace / 2);
                log::warn!(
                    "run still in progress at half the grace period: cancelling upstream calls"
                );
                upstream.cancel();
                std::thread::sleep(grace - grace / 2);
                log::error!(
                    "shutdown grace period exceeded: exiting; Redis holds the last complete run"
                );
                std::process::exit(0);
            });
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    Ok(StopSignal { rx, stopping })
}

/// Called after every run (warm-up, metrics hang here).
pub type AfterRun<'a> = dyn FnMut(&mut Runner, &RunReport) + 'a;

/// The loop. Returns when a stop is signalled. `commands`: admin requests
/// from the HTTP server, done between runs; `state`: what the HTTP server
/// reports about the loop.
pub fn run_loop(
    runner: &mut Runner,
    stop: &StopSignal,
    commands: Option<&Receiver<AdminCommand>>,
    state: &DaemonState,
    after_run: &mut AfterRun<'_>,
) {
    let interval = Duration::from_secs(runner.config().sync.interval_secs);
    let never = crossbeam_channel::never();
    let mut commands = commands.unwrap_or(&never);
    let mut next_start = Instant::now();
    loop {
        let wait = next_start.saturating_duration_since(Instant::now());
        state.waiting(
            Instant::now(),
            Utc::now() + chrono::Duration::milliseconds(wait.as_millis() as i64),
        );
        crossbeam_channel::select! {
            recv(stop.rx) -> _ => break,
            recv(commands) -> command => match command {
                Ok(AdminCommand::Run) => log::info!("run triggered over HTTP"),
                Ok(AdminCommand::AcceptShrink) => {
                    log::info!("run triggered over HTTP, accepting any shrink it sees");
                    runner.accept_shrink();
                }
                Ok(AdminCommand::Clear { started, reply, deadline }) => {
                    // Past the deadline its requester was told nothing was cleared.
                    if Instant::now() < deadline && started.send(()).is_ok() {
                        let _ = reply.send(clear(runner));
                    } else {
                        log::warn!("a clear requested over HTTP came too late and was not done");
                    }
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
        if stop.stopping.load(Ordering::SeqCst) {
            break;
        }
        let started = Instant::now();
        next_start = started + interval;
        state.run_started(started, Utc::now());
        let report = runner.run_once(false);
        let stats = crate::run::run_stats(&report.summary, report.started_at, report.ended_at);
        let ok = report.summary.status.is_ok();
        state.run_finished(Instant::now(), report.ended_at, stats, ok);
        after_run(runner, &report);
        drop(report);
        release_freed_memory();
        if stop.stopping.load(Ordering::SeqCst) {
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

/// Hands memory freed by the run back to the system. A run parses and
/// drops tens of megabytes on a dozen threads; glibc keeps such freed
/// memory in its per-thread arenas, so without this the daemon's RSS crept
/// up run after run while its live heap stayed flat (measured with
/// valgrind's massif over 400 runs: 4.8-5.1 MB live, RSS +3 KB per run).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim takes no pointers and only releases
        // free memory; it is safe to call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// What `precache clear` does, between runs: the data keys and the debug files.
pub fn clear(runner: &mut Runner) -> Result<serde_json::Value, String> {
    let keys = store::clear_keys(runner.store()).map_err(|e| e.to_string())?;
    let files = debuglog::clear(&runner.config().logs.dir);
    log::info!(
        "cleared {} key(s) and {} debug file(s)",
        keys.len(),
        files.len()
    );
    serde_json::to_value(store::Cleared {
        deleted_keys: keys,
        deleted_files: files,
    })
    .map_err(|e| e.to_string())
}
