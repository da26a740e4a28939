//! The `precache` command line. Parsing and exit codes only; the work lives
//! in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use precache::config::Config;
use precache::fetch::{self, RunStatus};
use precache::sim::{Scale, SimOptions, SimServer};
use precache::upstream::Upstream;
use precache::{logging, run};

/// Exit code for a bad configuration or command line.
const EXIT_CONFIG: u8 = 2;
/// Exit code for a failed run.
const EXIT_RUN_FAILED: u8 = 1;

#[derive(Parser)]
#[command(
    name = "precache",
    version,
    about = "Keeps a Redis cache of NIF tournament data in step with the TA API"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "config.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One sync run; prints a JSON summary on stdout (exit 1 if the run failed).
    Once {
        /// Fetch and report, write nothing.
        #[arg(long)]
        dry_run: bool,
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
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path, &|name| std::env::var(name).ok()).map_err(|e| {
        eprintln!("precache: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim {
            port,
            host,
            scale,
            seed,
            latency_ms,
            client_id,
            client_secret,
            token_ttl_secs,
        } => {
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
            match SimServer::start(options) {
                Ok(sim) => {
                    let stats = sim.stats();
                    log::info!(
                        "simulator listening on {} ({scale:?} scale, seed {seed}): {stats:?}",
                        sim.url()
                    );
                    sim.wait();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("precache sim: cannot listen on {host}:{port}: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Command::Once { dry_run } => {
            let config = match load_config(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            logging::init(config.logs.level, None);
            if !dry_run {
                eprintln!("precache once: only --dry-run is available in this build");
                return ExitCode::from(EXIT_CONFIG);
            }
            let upstream = Upstream::new(&config.upstream);
            let pool = match fetch::build_pool(config.upstream.max_concurrency) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("precache: cannot start the fetch thread pool: {e}");
                    return ExitCode::from(EXIT_RUN_FAILED);
                }
            };
            let (summary, _) = run::dry_run(&config, &upstream, &pool);
            if let Some(why) = &summary.error {
                log::error!("run {} failed: {why}", summary.run_id);
            }
            match serde_json::to_string(&summary) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("precache: cannot print the summary: {e}"),
            }
            if summary.status == RunStatus::Failed {
                ExitCode::from(EXIT_RUN_FAILED)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
