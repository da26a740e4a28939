//! The `precache` command line's definition (clap derive): the commands,
//! their flags and help. The binary's own, not the library's; `main.rs`
//! runs what it parses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use precache::sim::{MatchListKey, Scale};

#[derive(Parser)]
#[command(
    name = "precache",
    version = precache::util::LONG_VERSION,
    about = "Keeps a Redis cache of NIF tournament data in step with the TA API",
    long_about = "Keeps a Redis cache of NIF tournament data in step with the TA API.\n\
                  Without a command, runs the daemon (same as `precache run`)."
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "config.toml")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Ask every tournament for its matches, whatever its polling tier.
        #[arg(long)]
        full: bool,
        /// Do not enqueue or run warm-ups.
        #[arg(long)]
        no_warm: bool,
        /// Longest wait for this run's warm-ups; what is left stays scheduled in Redis.
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(0..=86_400))]
        warm_timeout_secs: u64,
        /// Run even while another instance holds the leader lease: take it
        /// over (that instance's next write is fenced and it becomes a
        /// standby). Without it, `once` refuses, and `--accept-shrink` is
        /// handed to the leader.
        #[arg(long)]
        force: bool,
    },
    /// Validate the configuration (file + environment) and print it as the
    /// service would use it, secrets redacted (exit 2 when it is bad).
    CheckConfig {
        /// Also prove that Redis answers as a master, that the token
        /// endpoint accepts the credentials and that the API accepts the
        /// token (exit 1 when one does not).
        #[arg(long)]
        connect: bool,
    },
    /// Delete the cached data keys and the debug files; prints what was removed.
    Clear {
        /// Clear even while another instance holds the leader lease.
        #[arg(long)]
        force: bool,
    },
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
    /// Shell completions on stdout (for packaging: bash, zsh or fish).
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// The man page (roff) on stdout (for packaging).
    #[command(hide = true)]
    Man,
    /// The upstream simulator: serves the TA API from generated data.
    Sim(SimArgs),
    /// The simulator and the daemon together, for a first look (Ctrl-C stops both).
    Demo {
        #[arg(long, value_enum, default_value = "norway")]
        scale: Scale,
        /// Seconds between runs (a small churn step is applied before each).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=604_800))]
        interval_secs: u64,
    },
}

/// `precache sim`'s flags.
#[derive(Args)]
pub struct SimArgs {
    #[arg(long, default_value_t = 8099)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    #[arg(long, value_enum, default_value = "small")]
    pub scale: Scale,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Latency added to every API answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    #[arg(long, default_value = "demo")]
    pub client_id: String,
    #[arg(long, default_value = "demo-secret")]
    pub client_secret: String,
    /// Lifetime of issued tokens.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl_secs: u64,
    /// The name match lists go by: `matches` (the real API) or
    /// `tournament-matches` (the seed's documentation).
    #[arg(long, value_enum, default_value = "matches")]
    pub match_list_key: MatchListKey,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Compress answers with gzip for clients that accept it.
    #[arg(long)]
    pub gzip: bool,
}
