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

pub mod check;
pub mod demo;
pub mod notify;
mod runs;
mod signals;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use runs::role_of;
pub use runs::{AfterRun, LoopInputs, OnReload, run_loop};
pub use signals::{defer_sighup, install_reload_handler, install_signal_handler};

use crate::config::Config;
use crate::lifecycle::{FireOnDrop, Shutdown};
use crate::report::RunReport;
use crate::serve::http::{HttpContext, HttpServer, ServeError};
use crate::serve::metrics::Metrics;
use crate::serve::status::DaemonState;
use crate::store::lease::{Leadership, LeaseKeeper};
use crate::store::{self, Cleared, Connector, Keys, Store, StoreError};
use crate::sync::debuglog;
use crate::sync::run::Runner;
use crate::upstream::Upstream;
use crate::warmer::workers::{RunProgress, WarmError, WarmSettings, Warmer};

/// Why the daemon (or `precache once`) could not start or serve.
#[derive(Debug)]
pub enum DaemonError {
    /// `redis.url` cannot be used.
    Store(StoreError),
    Warm(WarmError),
    Serve(ServeError),
    /// A thread could not be started.
    Spawn(&'static str, std::io::Error),
    Signal(ctrlc::Error),
    Metrics(prometheus::Error),
    Demo(demo::DemoError),
    /// The upstream client cannot be set up (its CA file or proxy).
    Upstream(crate::upstream::TransportError),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Store(e) => write!(f, "{e}"),
            DaemonError::Warm(e) => write!(f, "{e}"),
            DaemonError::Serve(e) => write!(f, "{e}"),
            DaemonError::Spawn(what, e) => write!(f, "cannot start {what}: {e}"),
            DaemonError::Signal(e) => write!(f, "cannot install the signal handler: {e}"),
            DaemonError::Metrics(e) => write!(f, "cannot set up the metrics: {e}"),
            DaemonError::Demo(e) => write!(f, "{e}"),
            DaemonError::Upstream(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DaemonError {}

/// Everything the daemon and `precache once` share: the runner and its threads.
pub struct Services {
    pub runner: Runner,
    /// The warm-up scheduler and workers, when started.
    pub warmer: Option<Warmer>,
    /// The leader lease and its keeper, once kept.
    lease: Option<(Arc<Leadership>, LeaseKeeper)>,
    writer_tx: Option<Sender<store::WriteRequest>>,
    writer: Option<std::thread::JoinHandle<()>>,
    debug: Option<std::thread::JoinHandle<()>>,
    /// The one shutdown signal the threads started from here observe.
    stop: Shutdown,
    /// How every thread here reaches Redis.
    connector: Connector,
}

impl Services {
    /// Starts the writer and debug-log threads and builds the runner.
    pub fn start(config: &Config) -> Result<Services, DaemonError> {
        let keys = Keys::of(config);
        let connector = Connector::new(&config.redis).map_err(DaemonError::Store)?;
        let open = || Store::connected_by(connector.clone(), keys.clone());
        let (store, writer_store) = (open(), open());
        let (writer_tx, writer_rx) = crossbeam_channel::bounded(1);
        let writer = store::spawn_writer(writer_store, writer_rx)
            .map_err(|e| DaemonError::Spawn("the Redis writer", e))?;
        let (debug_tx, debug) = debuglog::spawn(&config.logs.dir, config.logs.history_len)
            .map_err(|e| DaemonError::Spawn("the debug-log thread", e))?;
        let upstream = Arc::new(Upstream::new(&config.upstream).map_err(DaemonError::Upstream)?);
        let runner = Runner::new(
            config.clone(),
            upstream,
            store,
            Some(writer_tx.clone()),
            Some(debug_tx),
        )
        .map_err(|e| DaemonError::Spawn("the fetch pool", e))?;
        Ok(Services {
            connector,
            runner,
            warmer: None,
            lease: None,
            writer_tx: Some(writer_tx),
            writer: Some(writer),
            debug: Some(debug),
            stop: Shutdown::new(),
        })
    }

    /// The shutdown signal the warm-up, the lease keeper and the daemon's
    /// loop, HTTP server and watchdog observe; SIGINT/SIGTERM fire it.
    pub fn stop_signal(&self) -> &Shutdown {
        &self.stop
    }

    /// Keeps the leader lease from now on (DESIGN.md section 12): the runs
    /// and the warm-up write only while it is held. `changed` hears of each
    /// change of role. `force` takes it from another holder at once (an
    /// operator's `--force`). Returns whether this instance leads now.
    pub fn keep_lease(
        &mut self,
        changed: Sender<()>,
        force: bool,
    ) -> Result<Arc<Leadership>, DaemonError> {
        let config = self.runner.config();
        let store = Store::connected_by(self.connector.clone(), Keys::of(config));
        let leadership = Arc::new(Leadership::default());
        let keeper = LeaseKeeper::start(
            store,
            self.runner.instance().to_string(),
            Duration::from_secs(config.ha.lease_secs),
            leadership.clone(),
            changed,
            force,
            self.stop.clone(),
        )
        .map_err(|e| DaemonError::Spawn("the lease keeper", e))?;
        self.runner.set_lease(leadership.token());
        self.lease = Some((leadership.clone(), keeper));
        Ok(leadership)
    }

    /// Starts the warm-up scheduler and workers on the runner's upstream
    /// client, so both share one token, concurrency cap and rate limit.
    /// `track`: keep outcomes for `Warmer::wait_for` (`precache once`).
    pub fn start_warmer(&mut self, track: bool) -> Result<(), DaemonError> {
        let config = self.runner.config();
        let warmer = Warmer::start(
            &self.connector,
            &Keys::of(config),
            self.runner.upstream().clone(),
            WarmSettings::from_config(&config.warm),
            track,
            self.lease.as_ref().map(|(l, _)| l.clone()),
            &self.stop,
        )
        .map_err(DaemonError::Warm)?;
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
            lease,
            writer_tx,
            writer,
            debug,
            stop: _,
            connector: _,
        } = self;
        // Dropping the warmer stops and joins its threads.
        drop(warmer);
        drop(runner);
        drop(writer_tx);
        for handle in [writer, debug].into_iter().flatten() {
            let _ = handle.join();
        }
        // Last: nothing of ours writes any more. Dropping the keeper
        // releases the lease, so a standby takes over at once.
        drop(lease);
    }
}

/// What `precache clear` does: the data keys and the debug files, the
/// keys only while `fence` (the lease held) still holds.
pub fn clear(
    store: &mut Store,
    config: &Config,
    fence: Option<&str>,
) -> Result<Cleared, store::ApplyError> {
    let keys = store::clear_keys(store, fence)?;
    let files = debuglog::clear(&config.logs.dir);
    log::info!(
        "cleared {} key(s) and {} debug file(s)",
        keys.len(),
        files.len()
    );
    Ok(Cleared {
        deleted_keys: keys,
        deleted_files: files,
    })
}

/// A hook after every run of [`run`], with the configuration the next run
/// uses (the demo churns its simulator there).
pub type AfterEachRun<'a> = dyn FnMut(&RunReport, &Config) + 'a;

/// Reads the configuration again (file, environment, secret files) for a
/// reload.
pub type ReadConfig<'a> = dyn Fn() -> Result<Config, crate::config::ConfigError> + 'a;

/// Applies what a reload may change (`config::is_live`) and says what
/// waits for a restart. A configuration that does not load changes nothing.
fn reload(runner: &mut Runner, read: &ReadConfig<'_>, metrics: &Metrics) {
    let new = match read() {
        Ok(new) => new,
        Err(e) => {
            log::error!("reload: {e}; running on with the configuration in use");
            return;
        }
    };
    let outcome = runner.config().reload(&new);
    if outcome.applied.is_empty() && outcome.needs_restart.is_empty() {
        log::info!("reload: the configuration is unchanged");
    }
    if !outcome.applied.is_empty() {
        log::info!("reload: applied {}", outcome.applied.join(", "));
    }
    if !outcome.needs_restart.is_empty() {
        log::warn!(
            "reload: {} take(s) effect only after a restart (systemctl restart precache); the running value is kept until then",
            outcome.needs_restart.join(", ")
        );
    }
    crate::logging::set_level(outcome.config.logs.level);
    metrics.set_seed_run_series(outcome.config.metrics.seed_run_series);
    runner.set_config(outcome.config);
}

/// Sends systemd `WATCHDOG=1` every half `WATCHDOG_USEC` while the run
/// loop makes progress (`serve::status::health`, the `/healthz` rule), on
/// its own thread; none while the loop is stuck, so systemd restarts it.
/// Stops when `stop` fires or the returned guard is dropped. `None`
/// without a watchdog.
fn start_watchdog(
    notifier: Arc<notify::Notifier>,
    state: Arc<DaemonState>,
    stop: &Shutdown,
) -> Option<FireOnDrop> {
    let every = notifier.watchdog_every()?;
    let stop = stop.child();
    let observed = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            loop {
                match crate::serve::status::health(&state.view(), Instant::now()) {
                    Ok(()) => notifier.watchdog(),
                    Err(stuck) => log::warn!("not feeding the systemd watchdog: {stuck}"),
                }
                if observed.sleep(every) {
                    return;
                }
            }
        });
    match spawned {
        Ok(_) => Some(FireOnDrop::new(stop)),
        Err(e) => {
            log::error!("cannot start the watchdog thread: {e}; systemd will restart us");
            None
        }
    }
}

/// `precache run`: the services, the signal handler, the warm-up, the
/// metrics and the HTTP server around the run loop, until a signal.
/// `read_config`: how a reload (SIGHUP) reads the configuration again.
pub fn run(
    config: &Config,
    read_config: &ReadConfig<'_>,
    after_each_run: &mut AfterEachRun<'_>,
) -> Result<(), DaemonError> {
    let mut services = Services::start(config)?;
    let grace = Duration::from_secs(config.daemon.shutdown_grace_secs);
    let stop = services.stop_signal().clone();
    install_signal_handler(stop.clone(), services.runner.upstream().clone(), grace)?;
    // After ctrlc's, which would take SIGHUP as a stop.
    let reloads = install_reload_handler()?;
    log::info!(
        "precache {} started: every {} s, upstream {}, sports {:?}",
        env!("CARGO_PKG_VERSION"),
        config.sync.interval_secs,
        services.runner.upstream().describe(),
        config.sync.sport_ids
    );
    // The lease first: the warm-up and the runs work only while leading.
    let (lease_changed_tx, lease_changed) = crossbeam_channel::bounded(1);
    let leadership = services.keep_lease(lease_changed_tx, false)?;
    if config.warm.enabled {
        services.start_warmer(false)?;
    }
    let metrics = Arc::new(
        Metrics::new(config.metrics.keep_runs, config.metrics.seed_run_series)
            .map_err(DaemonError::Metrics)?,
    );
    let state = Arc::new(DaemonState::new(
        Duration::from_secs(config.sync.interval_secs),
        grace,
        config.logs.history_len,
        Instant::now(),
    ));
    let (commands_tx, commands_rx) = crossbeam_channel::bounded(1);
    let admin_token = config.metrics.admin_token.expose();
    let http = HttpServer::start(
        config.metrics.bind,
        config.metrics.web.tls_pem.as_ref(),
        Arc::new(HttpContext {
            metrics: metrics.clone(),
            state: state.clone(),
            upstream: services.runner.upstream().clone(),
            warm: services.warmer.as_ref().map(|w| w.stats().clone()),
            redis: services.connector.clone(),
            keys: Keys::of(config),
            admin_token: (!admin_token.is_empty()).then(|| admin_token.to_string()),
            commands: commands_tx,
            leadership: Some(leadership.clone()),
            basic_auth: crate::serve::auth::BasicAuth::from_config(&config.metrics.web),
        }),
    )
    .map_err(DaemonError::Serve)?;
    let warmer = services.warmer.as_ref();
    let mut warm_progress = RunProgress::default();
    let notifier = Arc::new(notify::Notifier::from_env());
    let watchdog = start_watchdog(notifier.clone(), state.clone(), &stop);
    let ready = std::cell::Cell::new(false);
    if !leadership.is_leader() {
        // A healthy standby is a started service (DESIGN.md section 12).
        let role = role_of(&leadership);
        notifier.ready(&format!(
            "standby; the leader is {}",
            role.leader.as_deref().unwrap_or("unknown")
        ));
        ready.set(true);
    }
    run_loop(
        &mut services.runner,
        LoopInputs {
            stop: &stop,
            commands: Some(&commands_rx),
            reloads: Some(&reloads),
            lease: Some((&leadership, &lease_changed)),
        },
        &state,
        &mut |runner, report| {
            let sizes = runner.store().data_sizes().unwrap_or_default();
            metrics.record_run(report, report.snapshot.as_deref(), &sizes);
            metrics.set_heap_in_use(crate::alloc::heap_in_use());
            if let Some(warmer) = warmer {
                state.warm_due_after_run(warmer.stats().due());
                warmer.wake();
                warm_progress.log(warmer.stats(), report.warm_enqueued.len());
            }
            if !ready.replace(true) {
                notifier.ready(&format!("first run {}", report.summary.status.as_str()));
            }
            after_each_run(report, runner.config());
        },
        &mut |runner| {
            // Before the first run, systemd is still waiting for READY=1
            // of the start itself; a reload says nothing then.
            let started = ready.get();
            if started {
                notifier.reloading();
            }
            reload(runner, read_config, &metrics);
            if started {
                notifier.ready("reloaded");
            }
        },
    );
    notifier.stopping();
    drop(watchdog);
    drop(http);
    services.shutdown();
    log::info!("precache stopped cleanly");
    Ok(())
}
