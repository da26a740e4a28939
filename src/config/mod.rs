//! Configuration: `config.toml` plus environment overrides, validated up front.
//!
//! Every key of DESIGN.md section 6 lives here with its default. Loading is
//! strict on purpose: an unknown section or key, a value of the wrong type or
//! out of range, or a missing file is a [`ConfigError`] that names the key, so
//! a typo never silently falls back to a default in production.
//!
//! Overrides come from `PRECACHE_<SECTION>_<KEY>` and from the original
//! service's variable names (`API_URL`, `TOKEN_URL`, `API_CLIENT_ID`,
//! `API_CLIENT_SECRET`, `REDIS_URL`); the `PRECACHE_` form wins when both are
//! set. The environment is passed in as a lookup function so tests need not
//! mutate the process environment.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::NaiveDate;

use crate::model::dataset::DatasetId;

mod keys;
mod load;
mod proxy;
mod raw;
mod redis;
mod reload;
mod show;
mod web;

use keys::DATASET_KEYS;
pub use load::{EnvLookup, env_var_name, read_ca_file, unknown_env_vars};
pub use raw::redacted_url;
pub(crate) use redis::sentinel_address;
pub use redis::{RedisConfig, TlsFiles};
pub use reload::{Reload, is_live};
pub use web::WebConfig;

/// A value that must never be printed: client secret, admin token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that sends it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub api_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Where `client_secret` is read from instead, when set: a file, or a
    /// systemd credential (a relative path under `$CREDENTIALS_DIRECTORY`).
    pub client_secret_file: Option<PathBuf>,
    pub scope: String,
    pub timeout_secs: u64,
    pub max_concurrency: usize,
    pub max_requests_per_sec: f64,
    pub retries: u32,
    /// Largest response body accepted from one call; a larger one is a failed call.
    pub max_body_bytes: u64,
    /// CA certificates (PEM) trusted beside the host's store.
    pub ca_file: Option<PathBuf>,
    /// The proxy requests go through, if any (`upstream.proxy`, or the
    /// environment's).
    pub proxy: Option<ProxyConfig>,
}

/// An HTTP(S) CONNECT proxy in front of the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// May carry credentials: shown only through [`redacted_url`].
    pub url: Secret,
    /// Where it came from: `upstream.proxy` or an environment variable.
    pub source: String,
    /// Hosts of ours (the API's, the token endpoint's) that `NO_PROXY`
    /// sends straight there, each exactly as its URL names it.
    pub no_proxy: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub interval_secs: u64,
    pub sport_ids: Vec<i64>,
    pub first_year: i32,
    pub max_failed_fraction: f64,
    /// A run whose valid seasons, tournaments or matches shrink by more
    /// than this fraction is held (DESIGN.md section 3).
    pub max_shrink_fraction: f64,
    /// Consecutive runs that must see the same shrink before it is accepted.
    pub confirm_runs: u32,
    /// Poll each root by its heat (DESIGN.md section 10); `false` asks every
    /// root every run, as the original did.
    pub adaptive: bool,
    /// A root with a match this close to now (either side) is `live`.
    pub live_window_hours: u64,
    /// ... this close, `active`.
    pub active_window_days: u64,
    /// An `active` root is asked every this many runs.
    pub active_every: u64,
    /// A `dormant` root is asked every this many runs.
    pub dormant_every: u64,
    /// Every this many runs every root is asked; 0 = never.
    pub full_sweep_every: u64,
    /// A match list's validators (ETag, Last-Modified) are sent only while
    /// its last plain answer is younger than this; then it is asked
    /// plainly, whatever its tier.
    pub max_validator_age_secs: u64,
}

#[derive(Debug, Clone)]
pub struct WarmConfig {
    pub enabled: bool,
    pub workers: usize,
    pub ttl_secs: u64,
    pub refresh_until_days: u64,
    pub window_days: i64,
    /// `None` means "today" at the time of each run.
    pub reference_date: Option<NaiveDate>,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub bind: SocketAddr,
    pub admin_token: Secret,
    /// Where `admin_token` is read from instead, when set (as
    /// `upstream.client_secret_file`).
    pub admin_token_file: Option<PathBuf>,
    pub keep_runs: usize,
    /// Export the seed's series labelled by `run_id` (each run adds new
    /// series to the scraper's store).
    pub seed_run_series: bool,
    /// TLS and basic auth for what the listener serves.
    pub web: WebConfig,
}

#[derive(Debug, Clone)]
pub struct LogsConfig {
    pub dir: PathBuf,
    pub level: log::LevelFilter,
    pub debug_snapshots: bool,
    pub history_len: usize,
    /// The daemon's log file (relative to `dir`); `None`: stderr only (journald).
    pub file: Option<PathBuf>,
    /// The log file is rotated when it would grow past this.
    pub max_file_bytes: u64,
    /// Rotated files kept (`precache.log.1` … `.N`) beside the current one.
    pub keep_files: usize,
}

impl LogsConfig {
    /// The log file's path, when there is one.
    pub fn file_path(&self) -> Option<PathBuf> {
        self.file.as_ref().map(|f| self.dir.join(f))
    }
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub shutdown_grace_secs: u64,
}

/// Two instances on one Redis (DESIGN.md section 12).
#[derive(Debug, Clone)]
pub struct HaConfig {
    /// The leader lease's length: a standby takes over at most this long
    /// after the leader died; renewed every third of it.
    pub lease_secs: u64,
}

/// One dataset's settings (DESIGN.md section 13): `[datasets.<name>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetConfig {
    pub enabled: bool,
    /// Asked every this many runs (spread over them when the dataset is).
    pub every_runs: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub upstream: UpstreamConfig,
    pub sync: SyncConfig,
    pub warm: WarmConfig,
    pub redis: RedisConfig,
    pub metrics: MetricsConfig,
    pub logs: LogsConfig,
    pub daemon: DaemonConfig,
    pub ha: HaConfig,
    /// By [`DatasetId`].
    pub datasets: [DatasetConfig; DatasetId::COUNT],
}

impl Config {
    pub fn dataset(&self, dataset: DatasetId) -> DatasetConfig {
        self.datasets[dataset.index()]
    }

    /// The enabled datasets, in [`DatasetId::ALL`] order.
    pub fn enabled_datasets(&self) -> Vec<DatasetId> {
        DatasetId::ALL
            .into_iter()
            .filter(|d| self.dataset(*d).enabled)
            .collect()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            upstream: UpstreamConfig {
                api_url: "http://127.0.0.1:8099".into(),
                token_url: "http://127.0.0.1:8099/connect/token".into(),
                client_id: String::new(),
                client_secret: Secret::default(),
                client_secret_file: None,
                scope: String::new(),
                timeout_secs: 10,
                max_concurrency: 16,
                max_requests_per_sec: 0.0,
                retries: 3,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                ca_file: None,
                proxy: None,
            },
            sync: SyncConfig {
                interval_secs: 180,
                sport_ids: vec![72, 151],
                first_year: 2024,
                max_failed_fraction: 0.5,
                max_shrink_fraction: 0.2,
                confirm_runs: 3,
                adaptive: true,
                live_window_hours: DEFAULT_LIVE_WINDOW_HOURS,
                active_window_days: 14,
                active_every: 3,
                dormant_every: 20,
                full_sweep_every: 0,
                max_validator_age_secs: 3600,
            },
            warm: WarmConfig {
                enabled: true,
                workers: 4,
                ttl_secs: 604_800,
                refresh_until_days: 7,
                window_days: 14,
                reference_date: None,
            },
            redis: RedisConfig::default(),
            metrics: MetricsConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 9108)),
                admin_token: Secret::default(),
                admin_token_file: None,
                keep_runs: 10,
                seed_run_series: false,
                web: WebConfig::default(),
            },
            logs: LogsConfig {
                dir: PathBuf::from("logs"),
                level: log::LevelFilter::Info,
                debug_snapshots: true,
                history_len: 10,
                file: Some(PathBuf::from("precache.log")),
                max_file_bytes: 10 * 1024 * 1024,
                keep_files: 5,
            },
            daemon: DaemonConfig {
                shutdown_grace_secs: 20,
            },
            ha: HaConfig { lease_secs: 60 },
            datasets: DatasetId::ALL.map(|d| DatasetConfig {
                enabled: true,
                every_runs: d.spec().every_runs,
            }),
        }
    }
}

/// `sync.live_window_hours` unless configured: `matchDate` is a day (at
/// midnight), so 24 h is today's and tomorrow's matches, and yesterday's
/// until midnight (docs/runs.md "Polling").
pub const DEFAULT_LIVE_WINDOW_HOURS: u64 = 24;

/// `upstream.max_body_bytes` unless configured: far above the 10x data
/// set's largest list (about 20 MB), far below what would hurt the machine.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// Slowest non-zero `upstream.max_requests_per_sec`: one request every 100 s.
/// Anything slower is a typo, and would stall a run for years.
pub const MIN_REQUESTS_PER_SEC: f64 = 0.01;

/// Every `(section, key)` the file may hold: the fixed keys of
/// [`keys::TABLE`], then each dataset's. The env override of each is
/// `PRECACHE_<SECTION>_<KEY>` in upper case, dots as underscores.
pub fn all_keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    fixed_keys().chain(
        DatasetId::ALL
            .into_iter()
            .flat_map(|d| DATASET_KEYS.map(|key| (d.spec().section, key))),
    )
}

/// Every fixed `(section, key)`, in DESIGN.md order.
pub fn fixed_keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    keys::TABLE.iter().map(|key| (key.section, key.name))
}

/// The one `PRECACHE_*` variable that is not configuration: precache sets
/// it on itself when it restarts with its allocator tuned (`alloc`).
pub const ALLOCATOR_TUNED_VAR: &str = "PRECACHE_ALLOCATOR_TUNED";

#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    File { path: PathBuf, reason: String },
    /// The file is not valid TOML.
    Syntax { path: PathBuf, reason: String },
    /// A key is unknown, mistyped or out of range. `source` says where the
    /// value came from (the file or an environment variable).
    Key {
        key: String,
        source: String,
        problem: String,
    },
    /// `PRECACHE_*` variables no key reads (a typo must not be ignored),
    /// each with the nearest real one, if any is near.
    UnknownEnv(Vec<(String, Option<String>)>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::File { path, reason } => {
                write!(f, "cannot read config file {}: {reason}", path.display())
            }
            ConfigError::Syntax { path, reason } => {
                write!(
                    f,
                    "config file {} is not valid TOML: {reason}",
                    path.display()
                )
            }
            ConfigError::Key {
                key,
                source,
                problem,
            } => write!(f, "config key {key} ({source}): {problem}"),
            ConfigError::UnknownEnv(names) => {
                let named: Vec<String> = names
                    .iter()
                    .map(|(name, near)| match near {
                        Some(near) => format!("{name} (did you mean {near}?)"),
                        None => name.clone(),
                    })
                    .collect();
                write!(
                    f,
                    "unknown environment variable(s) {}: no config key reads them (each key's is PRECACHE_<SECTION>_<KEY>)",
                    named.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Years whose seasons a run asks for: `max(first_year, this_year - 1) ..= this_year`.
    pub fn season_years(&self, this_year: i32) -> std::ops::RangeInclusive<i32> {
        self.sync.first_year.max(this_year - 1)..=this_year
    }
}

#[cfg(test)]
mod tests;
