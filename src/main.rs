//! The `precache` command line. Parsing, wiring and exit codes only; the
//! work lives in the library.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use precache::config::{Config, ConfigError};
use precache::daemon::{self, DaemonError, Services};
use precache::logging;
use precache::report::{RunStatus, WarmCounts};
use precache::sim::{SimOptions, SimServer, TlsIdentity};
use precache::store::lease::Attempt;
use precache::store::{self, Connector, Keys, SeasonLookup, Store, StoreError};

mod cli;

use cli::{Cli, Command, SimArgs};

/// Exit code for a bad configuration or command line.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failed run or an unreachable Redis.
const EXIT_FAILED: u8 = 1;
/// Exit code of `once` for a held run: it wrote what it could, and kept
/// part of the cache against an answer that said less (accept with
/// `--accept-shrink`).
const EXIT_HELD: u8 = 3;
/// Exit code of `once` and `clear` when another instance holds the leader
/// lease (they would write beside it; `--force` takes it over).
const EXIT_NOT_LEADER: u8 = 4;

/// Why a command could not do its work; each maps to one exit code.
enum Failure {
    Config(ConfigError),
    /// `precache sim` cannot listen where asked.
    SimBind(std::net::SocketAddr, std::io::Error),
    /// `precache sim --tls-cert/--tls-key` cannot be read.
    SimTls(std::io::Error),
    /// `redis.url` cannot be used (exit 2, like any bad configuration).
    RedisUrl(StoreError),
    Daemon(DaemonError),
    Store(StoreError),
    /// Another instance holds the leader lease.
    NotLeader(String),
    /// The result could not be written to stdout (a closed pipe, a full disk).
    Stdout(std::io::Error),
    /// `check-config --connect`: something the config names does not answer.
    Unreachable(usize),
    /// `check-config --connect`: a target refused what the config gives it
    /// (a TLS certificate or CA, a password): exit 2, a bad configuration.
    Refused(usize),
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Config(_)
            | Failure::SimBind(..)
            | Failure::SimTls(_)
            | Failure::RedisUrl(_)
            | Failure::Refused(_) => EXIT_CONFIG,
            Failure::NotLeader(_) => EXIT_NOT_LEADER,
            Failure::Daemon(_)
            | Failure::Store(_)
            | Failure::Stdout(_)
            | Failure::Unreachable(_) => EXIT_FAILED,
        })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Config(e) => write!(f, "{e}"),
            Failure::SimBind(addr, e) => write!(f, "sim: cannot listen on {addr}: {e}"),
            Failure::SimTls(e) => write!(f, "sim: cannot use --tls-cert/--tls-key: {e}"),
            Failure::Daemon(e) => write!(f, "{e}"),
            Failure::Store(e) | Failure::RedisUrl(e) => write!(f, "{e}"),
            Failure::Stdout(e) => write!(f, "cannot write the result to stdout: {e}"),
            Failure::NotLeader(e) => f.write_str(e),
            Failure::Unreachable(n) => write!(f, "{n} check(s) failed"),
            Failure::Refused(n) => write!(
                f,
                "{n} check(s) failed, refused for what the configuration gives (a certificate, CA or password)"
            ),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<DaemonError> for Failure {
    fn from(e: DaemonError) -> Self {
        Failure::Daemon(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// Writes `text` to stdout in one piece and flushes it: a reader that went
/// away (`precache once | head -c1`) or a full disk is an error to report,
/// never a panic.
fn write_stdout(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Failure::Stdout)
}

/// One line of JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let mut json = serde_json::to_string(value)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialise the result: {e}\"}}"));
    json.push('\n');
    write_stdout(&json)
}

/// A line on stderr; a stderr that cannot be written is not worth a panic.
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "precache: {text}");
}

/// The allocator measured against glibc's (docs/numbers.md); not the
/// default build.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        None | Some(Command::Run) | Some(Command::Demo { .. })
    ) {
        // Before any thread starts (and kept across the allocator's
        // restart): a SIGHUP during start-up waits for the reload handler.
        daemon::defer_sighup();
        // glibc's tunables; jemalloc (measured, not shipped) has its own.
        if !cfg!(feature = "jemalloc") {
            precache::alloc::bound_thread_caches();
            precache::alloc::map_large_blocks_apart();
        }
    }
    match try_main(cli) {
        Ok(code) => code,
        Err(failure) => {
            say(&failure.to_string());
            failure.exit_code()
        }
    }
}

/// Runs the command; `Err` is mapped to its exit code in one place.
fn try_main(cli: Cli) -> Result<ExitCode, Failure> {
    let command = cli.command.unwrap_or(Command::Run);
    // What a package ships, made from the command line's own definition;
    // and the simulator: neither reads the configuration.
    match command {
        Command::Completions { shell } => return completions(shell),
        Command::Man => return man_page(),
        Command::Sim(args) => return simulate(args),
        _ => {}
    }
    let mut config = Config::load_with_process_env(&cli.config)?;
    let log_file = logging::LogFile::from_config(&config.logs);
    match command {
        Command::CheckConfig { connect } => check_config(&config, &cli.config, connect),
        Command::Run => {
            logging::init(config.logs.level, log_file.as_ref());
            daemon::run(
                &config,
                &|| Config::load_with_process_env(&cli.config),
                &mut |_, _| {},
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            scale,
            interval_secs,
        } => {
            logging::init(config.logs.level, log_file.as_ref());
            config.sync.interval_secs = interval_secs;
            daemon::demo::run(&mut config, scale, &|| {
                Config::load_with_process_env(&cli.config)
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Once {
            dry_run,
            accept_shrink,
            full,
            no_warm,
            warm_timeout_secs,
            force,
        } => {
            logging::init(config.logs.level, None);
            let options = OnceOptions {
                dry_run,
                accept_shrink,
                full,
                no_warm,
                warm_timeout_secs,
                force,
            };
            once(&config, &options)
        }
        Command::Clear { force } => {
            logging::init(config.logs.level, None);
            clear(&config, force)
        }
        Command::Season { id } => {
            logging::init(config.logs.level, None);
            season(&config, id)
        }
        Command::Status { count } => {
            logging::init(config.logs.level, None);
            let runs = open_store(&config)?.history(count)?;
            print_json(&serde_json::json!({ "runs": runs }))?;
            Ok(ExitCode::SUCCESS)
        }
        // Handled above, before the configuration is read.
        Command::Sim(_) | Command::Completions { .. } | Command::Man => Ok(ExitCode::SUCCESS),
    }
}

/// `precache completions <shell>`: the shell's completion script.
fn completions(shell: clap_complete::Shell) -> Result<ExitCode, Failure> {
    let mut out = Vec::new();
    clap_complete::generate(
        shell,
        &mut <Cli as clap::CommandFactory>::command(),
        "precache",
        &mut out,
    );
    write_stdout(&String::from_utf8_lossy(&out))?;
    Ok(ExitCode::SUCCESS)
}

/// `precache man`: the man page (roff).
fn man_page() -> Result<ExitCode, Failure> {
    let mut out = Vec::new();
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
        .render(&mut out)
        .map_err(Failure::Stdout)?;
    write_stdout(&String::from_utf8_lossy(&out))?;
    Ok(ExitCode::SUCCESS)
}

/// `precache sim`: the upstream simulator, until killed.
fn simulate(args: SimArgs) -> Result<ExitCode, Failure> {
    logging::init(log::LevelFilter::Info, None);
    let bind = (args.host, args.port).into();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(TlsIdentity::from_files(cert, key).map_err(Failure::SimTls)?)
        }
        _ => None,
    };
    let (scale, seed) = (args.scale, args.seed);
    let options = SimOptions {
        bind,
        scale,
        seed,
        latency_ms: args.latency_ms,
        client_id: args.client_id,
        client_secret: args.client_secret,
        token_ttl_secs: args.token_ttl_secs,
        match_list_key: args.match_list_key,
        tls,
        gzip: args.gzip,
        ..SimOptions::default()
    };
    let sim = SimServer::start(options).map_err(|e| Failure::SimBind(bind, e))?;
    log::info!(
        "simulator listening on {} ({scale:?} scale, seed {seed}): {:?}",
        sim.url(),
        sim.stats()
    );
    sim.wait();
    Ok(ExitCode::SUCCESS)
}

/// `precache check-config [--connect]`: the effective configuration, and
/// with `--connect` what each service answers.
fn check_config(config: &Config, path: &Path, connect: bool) -> Result<ExitCode, Failure> {
    // The one check that needs more than the values: redis.url parses.
    open_store(config)?;
    write_stdout(&config.effective_toml())?;
    say(&format!("{} is valid", path.display()));
    if !connect {
        return Ok(ExitCode::SUCCESS);
    }
    let this_year = chrono::Datelike::year(&chrono::Local::now());
    let checks = daemon::check::connect(config, this_year);
    let failed = checks.iter().filter(|c| c.outcome.is_err()).count();
    for check in &checks {
        match &check.outcome {
            Ok(said) => say(&format!("{}: {said}", check.what)),
            Err(why) => say(&format!("{}: FAILED: {why}", check.what)),
        }
    }
    if checks.iter().any(|c| c.outcome.is_err() && c.config_fault) {
        return Err(Failure::Refused(failed));
    }
    if failed > 0 {
        return Err(Failure::Unreachable(failed));
    }
    Ok(ExitCode::SUCCESS)
}

/// `precache clear`: under the lease, like every write (DESIGN.md section
/// 12): a daemon cannot write between the check and the deletes.
fn clear(config: &Config, force: bool) -> Result<ExitCode, Failure> {
    let mut store = open_store(config)?;
    let lease = Duration::from_secs(config.ha.lease_secs);
    let instance = precache::util::instance_id();
    let token = match store.acquire_lease(&instance, lease, force)? {
        Attempt::Taken(token) => token,
        Attempt::HeldBy(holder) => {
            return Err(Failure::NotLeader(format!(
                "another instance holds the leader lease: {holder}; clear through it (POST /clear) or pass --force"
            )));
        }
    };
    let cleared = daemon::clear(&mut store, config, Some(&token.value));
    if let Err(e) = store.release_lease(&token) {
        log::warn!("leader lease not released ({e}); it expires by itself");
    }
    let cleared = cleared.map_err(|e| match e {
        store::ApplyError::Store(e) => Failure::Store(e),
        fenced => Failure::NotLeader(fenced.to_string()),
    })?;
    print_json(&cleared)?;
    Ok(ExitCode::SUCCESS)
}

/// `precache season <id>`: the season's tournaments as the cache holds
/// them, in the seed's JSON.
fn season(config: &Config, id: i64) -> Result<ExitCode, Failure> {
    let mut store = open_store(config)?;
    let lookup = store::season_tournaments(&mut store, id);
    let failed = !matches!(
        lookup,
        Ok(SeasonLookup::Found { .. } | SeasonLookup::NotFound { .. })
    );
    print_json(&match lookup {
        Ok(lookup) => lookup.seed_json(),
        Err(e) => serde_json::json!({
            "status": "error", "data": null, "source": "redis",
            "cache_key": store.keys.tournaments_season(id), "error": e.to_string()
        }),
    })?;
    Ok(if failed {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// `precache once`'s flags.
struct OnceOptions {
    dry_run: bool,
    accept_shrink: bool,
    full: bool,
    no_warm: bool,
    warm_timeout_secs: u64,
    force: bool,
}

/// `precache once`: one run, then (unless told not to) its warm-ups.
fn once(config: &Config, options: &OnceOptions) -> Result<ExitCode, Failure> {
    let OnceOptions {
        dry_run,
        accept_shrink,
        full,
        no_warm,
        warm_timeout_secs,
        force,
    } = *options;
    let mut services = Services::start(config)?;
    // One writer at a time (DESIGN.md section 12): a run that writes holds
    // the lease for its duration, or hands an acceptance to the leader.
    if !dry_run {
        let (changed, _) = crossbeam_channel::bounded(1);
        let leadership = services.keep_lease(changed, force)?;
        if !leadership.is_leader() {
            let state = leadership.state();
            if let (None, Some(e)) = (&state.other, state.unreachable) {
                // Nobody holds it: Redis did not answer.
                services.shutdown();
                return Err(Failure::Store(e));
            }
            let holder = state
                .other
                .map_or("another instance".to_string(), |h| h.to_string());
            services.shutdown();
            if accept_shrink {
                let mut store = open_store(config)?;
                let asked = format!(
                    "{} at {}",
                    precache::util::instance_id(),
                    chrono::Utc::now().to_rfc3339()
                );
                // It lapses if no leader takes it up within a few runs: a
                // later, different shrink is not accepted by it.
                let lapses = Duration::from_secs((config.sync.interval_secs * 3).max(600));
                store.request_accept_shrink(&asked, lapses)?;
                print_json(&serde_json::json!({
                    "accept_shrink": "requested",
                    "leader": holder,
                    "note": "the leader applies it in its next run (POST /run on it to run now)"
                }))?;
                return Ok(ExitCode::SUCCESS);
            }
            return Err(Failure::NotLeader(format!(
                "another instance holds the leader lease: {holder}; a run here would write beside it. Ask it (POST /run, POST /accept-shrink), use once --accept-shrink to hand it an acceptance, or pass --force to take the lease over"
            )));
        }
    }
    let warm = config.warm.enabled && !no_warm && !dry_run;
    services.runner.set_warm(warm);
    if accept_shrink {
        services.runner.accept_shrink();
    }
    if full {
        services.runner.sweep_every_root_next();
    }
    let mut report = services.runner.run_once(dry_run);
    if warm {
        // Started after the run, so only the tasks it enqueued (and older
        // ones already due) are worked on while we wait.
        let n = report.warm_enqueued.len();
        let none_attempted = WarmCounts {
            enqueued: n,
            pending: n,
            ..WarmCounts::default()
        };
        let counts = match services.start_warmer(true) {
            Ok(()) => services.warmer.as_ref().map_or(none_attempted, |w| {
                w.wait_for(
                    &report.warm_enqueued,
                    Duration::from_secs(warm_timeout_secs),
                )
            }),
            Err(e) => {
                log::error!("{e}");
                none_attempted
            }
        };
        log::info!(
            "warm-up: {} enqueued, {} done, {} failed, {} pending",
            counts.enqueued,
            counts.done,
            counts.failed,
            counts.pending
        );
        report.summary.warm = Some(counts);
    }
    services.shutdown();
    // The run is in Redis whatever happens to its summary.
    print_json(&report.summary).inspect_err(|_| {
        say(&format!(
            "run {} ended {}, but its summary cannot be written",
            report.summary.run_id,
            report.summary.status.as_str()
        ))
    })?;
    Ok(match report.summary.status {
        RunStatus::Failed | RunStatus::Fenced | RunStatus::Cancelled => ExitCode::from(EXIT_FAILED),
        RunStatus::Held => ExitCode::from(EXIT_HELD),
        RunStatus::Success | RunStatus::Degraded => ExitCode::SUCCESS,
    })
}

fn open_store(config: &Config) -> Result<Store, Failure> {
    let connector = Connector::new(&config.redis).map_err(Failure::RedisUrl)?;
    Ok(Store::connected_by(connector, Keys::of(config)))
}
