//! The `precache` command line. Parsing, wiring and exit codes only; the
//! work lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use precache::config::Config;
use precache::daemon::{self, Services};
use precache::fetch::RunStatus;
use precache::http::{HttpContext, HttpServer};
use precache::metrics::Metrics;
use precache::sim::{ChurnSpec, Scale, SimOptions, SimServer};
use precache::status::DaemonState;
use precache::store::{self, Keys, Store};
use precache::warmer::{RunProgress, WarmCounts};
use precache::{debuglog, demo, logging};

/// Exit code for a bad configuration or command line.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failed run or an unreachable Redis.
const EXIT_FAILED: u8 = 1;
/// Exit code of `once` for a held run: it wrote what it could, and kept
/// part of the cache against an answer that said less (accept with
/// `--accept-shrink`).
const EXIT_HELD: u8 = 3;

#[derive(Parser)]
#[command(
    name = "precache",
    version,
    about = "Keeps a Redis cache of NIF tournament data in step with the TA API",
    long_about = "Keeps a Redis cache of NIF tournament data in step with the TA API.\n\
                  Without a command, runs the daemon (same as `precache run`)."
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "config.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: a run now, then every sync.interval_secs, until SIGINT/SIGTERM.
    Run,
    /// One sync run; prints a JSON summary on stdout (exit 1 if the run
    /// failed, 3 if it was held).
    Once {
        /// Fetch and diff against the cache, write nothing (no Redis key, no debug file).
        #[arg(long)]
        dry_run: bool,
        /// Apply whatever shrink the upstream's answer shows, instead of
        /// holding it until sync.confirm_runs runs saw it.
        #[arg(long, conflicts_with = "dry_run")]
        accept_shrink: bool,
        /// Do not enqueue or run warm-ups.
        #[arg(long)]
        no_warm: bool,
        /// Longest wait for this run's warm-ups; what is left stays scheduled in Redis.
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(0..=86_400))]
        warm_timeout_secs: u64,
    },
    /// Delete the cached data keys and the debug files; prints what was removed.
    Clear,
    /// Print the cached tournaments of one season.
    Season {
        /// The season id.
        id: i64,
    },
    /// Print the most recent runs recorded in Redis.
    Status {
        /// How many runs.
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
    /// The upstream simulator: serves the TA API from generated data.
    Sim {
        #[arg(long, default_value_t = 8099)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        #[arg(long, value_enum, default_value = "small")]
        scale: Scale,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Latency added to every API answer.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        #[arg(long, default_value = "demo")]
        client_id: String,
        #[arg(long, default_value = "demo-secret")]
        client_secret: String,
        /// Lifetime of issued tokens.
        #[arg(long, default_value_t = 3600)]
        token_ttl_secs: u64,
    },
    /// The simulator and the daemon together, for a first look (Ctrl-C stops both).
    Demo {
        #[arg(long, value_enum, default_value = "norway")]
        scale: Scale,
        /// Seconds between runs (a small churn step is applied before each).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=604_800))]
        interval_secs: u64,
    },
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load_with_process_env(path).map_err(|e| {
        eprintln!("precache: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("precache: cannot print the result: {e}"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Sim {
        port,
        host,
        scale,
        seed,
        latency_ms,
        client_id,
        client_secret,
        token_ttl_secs,
    } = command
    {
        logging::init(log::LevelFilter::Info, None);
        let options = SimOptions {
            bind: (host, port).into(),
            scale,
            seed,
            latency_ms,
            client_id,
            client_secret,
            token_ttl_secs,
            ..SimOptions::default()
        };
        return match SimServer::start(options) {
            Ok(sim) => {
                log::info!(
                    "simulator listening on {} ({scale:?} scale, seed {seed}): {:?}",
                    sim.url(),
                    sim.stats()
                );
                sim.wait();
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("precache sim: cannot listen on {host}:{port}: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }

    let mut config = match load_config(&cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match command {
        Command::Run => {
            logging::init(
                config.logs.level,
                Some(&config.logs.dir.join("precache.log")),
            );
            run_daemon(&config, None)
        }
        Command::Demo {
            scale,
            interval_secs,
        } => {
            logging::init(
                config.logs.level,
                Some(&config.logs.dir.join("precache.log")),
            );
            config.sync.interval_secs = interval_secs;
            let _redis = match demo::ensure_redis(&mut config) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("precache demo: {e}");
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            let bind = match demo::sim_address(&config) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("precache demo: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let sim = match SimServer::start(SimOptions {
                bind,
                scale,
                client_id: config.upstream.client_id.clone(),
                client_secret: config.upstream.client_secret.expose().to_string(),
                ..SimOptions::default()
            }) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("precache demo: cannot start the simulator on {bind}: {e}");
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            log::info!(
                "demo: simulator on {} ({scale:?}): {:?}",
                sim.url(),
                sim.stats()
            );
            run_daemon(&config, Some(&sim))
        }
        Command::Once {
            dry_run,
            accept_shrink,
            no_warm,
            warm_timeout_secs,
        } => {
            logging::init(config.logs.level, None);
            let mut services = match Services::start(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("precache: {e}");
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            let warm = config.warm.enabled && !no_warm && !dry_run;
            services.runner.set_warm(warm);
            if accept_shrink {
                services.runner.accept_shrink();
            }
            let mut report = services.runner.run_once(dry_run);
            if warm {
                // Started after the run, so only the tasks it enqueued (and
                // older ones already due) are worked on while we wait.
                let counts = match services.start_warmer(true) {
                    Ok(()) => services.warmer.as_ref().map(|w| {
                        w.wait_for(
                            &report.warm_enqueued,
                            Duration::from_secs(warm_timeout_secs),
                        )
                    }),
                    Err(e) => {
                        log::error!("{e}");
                        None
                    }
                }
                .unwrap_or(WarmCounts {
                    enqueued: report.warm_enqueued.len(),
                    pending: report.warm_enqueued.len(),
                    ..WarmCounts::default()
                });
                log::info!(
                    "warm-up: {} enqueued, {} done, {} failed, {} pending",
                    counts.enqueued,
                    counts.done,
                    counts.failed,
                    counts.pending
                );
                report.summary.warm = serde_json::to_value(counts).ok();
            }
            services.shutdown();
            print_json(&report.summary);
            match report.summary.status {
                RunStatus::Failed => ExitCode::from(EXIT_FAILED),
                RunStatus::Held => ExitCode::from(EXIT_HELD),
                RunStatus::Success | RunStatus::Degraded => ExitCode::SUCCESS,
            }
        }
        Command::Clear => {
            logging::init(config.logs.level, None);
            let mut store = match open_store(&config) {
                Ok(s) => s,
                Err(code) => return code,
            };
            match store::clear_keys(&mut store) {
                Ok(keys) => {
                    let files = debuglog::clear(&config.logs.dir);
                    print_json(&store::Cleared {
                        deleted_keys: keys,
                        deleted_files: files,
                    });
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("precache clear: {e}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
        Command::Season { id } => {
            logging::init(config.logs.level, None);
            let mut store = match open_store(&config) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let result = store::season_tournaments(&mut store, id);
            print_json(&result);
            if result["status"] == "error" {
                ExitCode::from(EXIT_FAILED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Status { count } => {
            logging::init(config.logs.level, None);
            let mut store = match open_store(&config) {
                Ok(s) => s,
                Err(code) => return code,
            };
            match store.history(count) {
                Ok(runs) => {
                    print_json(&serde_json::json!({ "runs": runs }));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("precache status: {e}");
                    ExitCode::from(EXIT_FAILED)
                }
            }
        }
        Command::Sim { .. } => ExitCode::SUCCESS,
    }
}

fn open_store(config: &Config) -> Result<Store, ExitCode> {
    Store::new(
        config.redis.url.expose(),
        Keys::new(&config.redis.key_prefix),
    )
    .map_err(|e| {
        eprintln!("precache: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// The daemon; with `demo_sim`, a small churn step is applied to it before each run.
fn run_daemon(config: &Config, demo_sim: Option<&SimServer>) -> ExitCode {
    let mut services = match Services::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("precache: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let grace = Duration::from_secs(config.daemon.shutdown_grace_secs);
    let stop = match daemon::install_signal_handler(services.runner.upstream().clone(), grace) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("precache: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    log::info!(
        "precache {} started: every {} s, upstream {}, sports {:?}",
        env!("CARGO_PKG_VERSION"),
        config.sync.interval_secs,
        config.upstream.api_url,
        config.sync.sport_ids
    );
    if config.warm.enabled
        && let Err(e) = services.start_warmer(false)
    {
        eprintln!("precache: {e}");
        return ExitCode::from(EXIT_FAILED);
    }
    let metrics = match Metrics::new(config.metrics.keep_runs) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("precache: cannot set up the metrics: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let state = Arc::new(DaemonState::new(
        Duration::from_secs(config.sync.interval_secs),
        grace,
        config.logs.history_len,
        std::time::Instant::now(),
    ));
    let (commands_tx, commands_rx) = crossbeam_channel::bounded(1);
    let admin_token = config.metrics.admin_token.expose();
    let http = match HttpServer::start(
        config.metrics.bind,
        Arc::new(HttpContext {
            metrics: metrics.clone(),
            state: state.clone(),
            upstream: services.runner.upstream().clone(),
            warm: services.warmer.as_ref().map(|w| w.stats().clone()),
            redis_url: config.redis.url.expose().to_string(),
            keys: Keys::new(&config.redis.key_prefix),
            admin_token: (!admin_token.is_empty()).then(|| admin_token.to_string()),
            commands: commands_tx,
        }),
    ) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("precache: metrics.bind: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let warmer = services.warmer.as_ref();
    let mut warm_progress = RunProgress::default();
    daemon::run_loop(
        &mut services.runner,
        &stop,
        Some(&commands_rx),
        &state,
        &mut |runner, report| {
            let sizes = runner.store().data_sizes().unwrap_or_default();
            metrics.record_run(report, report.snapshot.as_deref(), &sizes);
            if let Some(warmer) = warmer {
                warmer.wake();
                warm_progress.log(warmer.stats(), report.warm_enqueued.len());
            }
            if let Some(sim) = demo_sim {
                // Between runs, as the real data changes between polls.
                let changed = sim.churn(&ChurnSpec {
                    matches_modified: 5,
                    matches_added: 1,
                    matches_removed: 1,
                    tournaments_renamed: 1,
                    ..ChurnSpec::default()
                });
                log::info!("demo: churned the simulator, the next run should detect {changed:?}");
            }
        },
    );
    http.shutdown();
    services.shutdown();
    log::info!("precache stopped cleanly");
    ExitCode::SUCCESS
}
