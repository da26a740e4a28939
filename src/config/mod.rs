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
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::model::dataset::{Asks, DatasetId};

mod proxy;
mod raw;
mod redis;
mod reload;
mod show;
mod web;

pub use raw::redacted_url;
use raw::{Problem, Raw, http_url, proxy_url};
use redis::optional_path;
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

/// The keys of each `[datasets.<name>]` section.
const DATASET_KEYS: [&str; 2] = ["enabled", "every_runs"];

/// Every `(section, key)` the file may hold: [`KEYS`], then each
/// dataset's. The env override of each is `PRECACHE_<SECTION>_<KEY>` in
/// upper case, dots as underscores.
pub fn all_keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    KEYS.iter().copied().chain(
        DatasetId::ALL
            .into_iter()
            .flat_map(|d| DATASET_KEYS.map(|key| (d.spec().section, key))),
    )
}

/// Every fixed `(section, key)` the file may hold, in DESIGN.md order.
pub const KEYS: &[(&str, &str)] = &[
    ("upstream", "api_url"),
    ("upstream", "token_url"),
    ("upstream", "client_id"),
    ("upstream", "client_secret"),
    ("upstream", "client_secret_file"),
    ("upstream", "scope"),
    ("upstream", "timeout_secs"),
    ("upstream", "max_concurrency"),
    ("upstream", "max_requests_per_sec"),
    ("upstream", "retries"),
    ("upstream", "max_body_bytes"),
    ("upstream", "ca_file"),
    ("upstream", "proxy"),
    ("sync", "interval_secs"),
    ("sync", "sport_ids"),
    ("sync", "first_year"),
    ("sync", "max_failed_fraction"),
    ("sync", "max_shrink_fraction"),
    ("sync", "confirm_runs"),
    ("sync", "adaptive"),
    ("sync", "live_window_hours"),
    ("sync", "active_window_days"),
    ("sync", "active_every"),
    ("sync", "dormant_every"),
    ("sync", "full_sweep_every"),
    ("sync", "max_validator_age_secs"),
    ("warm", "enabled"),
    ("warm", "workers"),
    ("warm", "ttl_secs"),
    ("warm", "refresh_until_days"),
    ("warm", "window_days"),
    ("warm", "reference_date"),
    ("redis", "url"),
    ("redis", "sentinels"),
    ("redis", "master_name"),
    ("redis", "username"),
    ("redis", "password_file"),
    ("redis", "tls"),
    ("redis", "tls_ca_file"),
    ("redis", "tls_cert_file"),
    ("redis", "tls_key_file"),
    ("redis", "key_prefix"),
    ("redis", "changes_maxlen"),
    ("metrics", "bind"),
    ("metrics", "admin_token"),
    ("metrics", "admin_token_file"),
    ("metrics", "keep_runs"),
    ("metrics", "seed_run_series"),
    ("metrics", "tls_cert_file"),
    ("metrics", "tls_key_file"),
    ("metrics", "basic_auth_users"),
    ("logs", "dir"),
    ("logs", "level"),
    ("logs", "debug_snapshots"),
    ("logs", "history_len"),
    ("logs", "file"),
    ("logs", "max_file_bytes"),
    ("logs", "keep_files"),
    ("daemon", "shutdown_grace_secs"),
    ("ha", "lease_secs"),
];

/// The one `PRECACHE_*` variable that is not configuration: precache sets
/// it on itself when it restarts with its allocator tuned (`alloc`).
pub const ALLOCATOR_TUNED_VAR: &str = "PRECACHE_ALLOCATOR_TUNED";

/// The original service's environment variable names.
const LEGACY_ENV: &[(&str, (&str, &str))] = &[
    ("API_URL", ("upstream", "api_url")),
    ("TOKEN_URL", ("upstream", "token_url")),
    ("API_CLIENT_ID", ("upstream", "client_id")),
    ("API_CLIENT_SECRET", ("upstream", "client_secret")),
    ("REDIS_URL", ("redis", "url")),
];

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
    /// Reads `path`, applies the process environment, validates. A
    /// `PRECACHE_*` variable that no key reads is an error.
    pub fn load_with_process_env(path: &Path) -> Result<Config, ConfigError> {
        let unknown = unknown_env_vars(std::env::vars_os().map(|(name, _)| name));
        if !unknown.is_empty() {
            return Err(ConfigError::UnknownEnv(unknown));
        }
        Config::load(path, &|name| std::env::var(name))
    }

    /// Reads `path`, applies the environment (through `env`), validates.
    pub fn load(path: &Path, env: &EnvLookup<'_>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Config::from_toml_str(&text, path, env)
    }

    /// As [`Config::load`], from text already read (`path` only names it in errors).
    pub fn from_toml_str(
        text: &str,
        path: &Path,
        env: &EnvLookup<'_>,
    ) -> Result<Config, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    // toml's message spans several lines with a source excerpt; one line is enough.
                    reason: e.message().replace('\n', " "),
                })?;
        let mut config = Config::default();
        let file_source = format!("in {}", path.display());
        let mut sections: Vec<(String, &toml::Value)> = Vec::new();
        for (section, value) in &table {
            let toml::Value::Table(keys) = value else {
                return Err(ConfigError::Key {
                    key: section.clone(),
                    source: file_source,
                    problem: "expected a [section] table".into(),
                });
            };
            if section != "datasets" {
                sections.push((section.clone(), value));
                continue;
            }
            // `[datasets.<name>]`: one table per dataset.
            for (name, value) in keys {
                if !value.is_table() {
                    return Err(ConfigError::Key {
                        key: format!("datasets.{name}"),
                        source: file_source,
                        problem: "expected a [datasets.<name>] table".into(),
                    });
                }
                sections.push((format!("datasets.{name}"), value));
            }
        }
        for (section, value) in sections {
            let Some(keys) = value.as_table() else {
                continue;
            };
            for (key, value) in keys {
                config
                    .set(&section, key, Raw::Toml(value))
                    .map_err(|problem| ConfigError::Key {
                        key: format!("{section}.{key}"),
                        source: file_source.clone(),
                        problem: problem.to_string(),
                    })?;
            }
        }
        // The original's names first, so the PRECACHE_ form wins when both are set.
        let overrides = LEGACY_ENV
            .iter()
            .map(|(var, (section, key))| (var.to_string(), *section, *key))
            .chain(all_keys().map(|(section, key)| (env_var_name(section, key), section, key)));
        for (var, section, key) in overrides {
            let error = |problem: Problem| ConfigError::Key {
                key: format!("{section}.{key}"),
                source: format!("from environment variable {var}"),
                problem: problem.to_string(),
            };
            match env(&var) {
                Ok(value) => config.set(section, key, Raw::Env(&value)).map_err(error)?,
                Err(std::env::VarError::NotPresent) => {}
                // Never ignored: a secret that fell back to the file's would
                // authenticate as someone else without a word.
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(error("is not valid UTF-8".into()));
                }
            }
        }
        config.read_secret_files(env)?;
        config.resolve_proxy(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Replaces each secret that names a file with the file's contents
    /// (one trailing newline dropped). A relative path is a systemd
    /// credential when `$CREDENTIALS_DIRECTORY` is set (`LoadCredential=`),
    /// else relative to the working directory. The error names the key and
    /// the path, never the contents.
    fn read_secret_files(&mut self, env: &EnvLookup<'_>) -> Result<(), ConfigError> {
        let credentials = env("CREDENTIALS_DIRECTORY").ok().map(PathBuf::from);
        let read = |key: &str, path: &Path| -> Result<Secret, ConfigError> {
            let path = match &credentials {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.to_path_buf(),
            };
            let problem = |problem: String| ConfigError::Key {
                key: key.into(),
                source: "after file and environment".into(),
                problem,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                problem(format!(
                    "cannot read the secret file {}: {e}",
                    path.display()
                ))
            })?;
            let secret = text.strip_suffix('\n').unwrap_or(&text);
            let secret = secret.strip_suffix('\r').unwrap_or(secret);
            if secret.is_empty() || secret.contains('\n') {
                return Err(problem(format!(
                    "the secret file {} must hold one non-empty line",
                    path.display()
                )));
            }
            Ok(Secret::new(secret))
        };
        if let Some(path) = &self.upstream.client_secret_file {
            self.upstream.client_secret = read("upstream.client_secret_file", path)?;
        }
        let read_file = |path: &Path| -> Result<Vec<u8>, String> {
            let path = match &credentials {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.to_path_buf(),
            };
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        self.redis
            .load_files(&read_file)
            .and_then(|()| self.metrics.web.load_files(&read_file))
            .map_err(|(key, problem)| ConfigError::Key {
                key: key.into(),
                source: "after file and environment".into(),
                problem,
            })?;
        if let Some(path) = &self.metrics.admin_token_file {
            self.metrics.admin_token = read("metrics.admin_token_file", path)?;
        }
        Ok(())
    }

    fn set(&mut self, section: &str, key: &str, raw: Raw<'_>) -> Result<(), Problem> {
        match (section, key) {
            ("upstream", "api_url") => self.upstream.api_url = http_url(raw.string()?)?,
            ("upstream", "token_url") => self.upstream.token_url = http_url(raw.string()?)?,
            ("upstream", "client_id") => self.upstream.client_id = raw.string()?,
            ("upstream", "client_secret") => self.upstream.client_secret = Secret(raw.string()?),
            ("upstream", "client_secret_file") => {
                self.upstream.client_secret_file = optional_path(&raw.string()?)
            }
            ("upstream", "scope") => self.upstream.scope = raw.string()?,
            ("upstream", "timeout_secs") => self.upstream.timeout_secs = raw.unsigned(1, 3600)?,
            ("upstream", "max_concurrency") => {
                self.upstream.max_concurrency = raw.unsigned(1, 1024)? as usize
            }
            ("upstream", "max_requests_per_sec") => {
                let v = raw.float()?;
                if v != 0.0 && !(MIN_REQUESTS_PER_SEC..=100_000.0).contains(&v) {
                    return Err(Problem::from(format!(
                        "must be 0 (unlimited) or between {MIN_REQUESTS_PER_SEC} and 100000, got {v}"
                    )));
                }
                self.upstream.max_requests_per_sec = v;
            }
            ("upstream", "retries") => self.upstream.retries = raw.unsigned(0, 20)? as u32,
            ("upstream", "max_body_bytes") => {
                self.upstream.max_body_bytes = raw.unsigned(1024, 1 << 30)?
            }
            ("upstream", "ca_file") => self.upstream.ca_file = optional_path(&raw.string()?),
            ("upstream", "proxy") => {
                let url = raw.string()?;
                self.upstream.proxy = if url.trim().is_empty() {
                    None
                } else {
                    Some(ProxyConfig {
                        url: Secret(proxy_url(&url)?),
                        source: "upstream.proxy".into(),
                        no_proxy: Vec::new(),
                    })
                };
            }
            ("sync", "interval_secs") => {
                self.sync.interval_secs = raw.unsigned(1, 7 * 24 * 3600)?
            }
            ("sync", "sport_ids") => {
                let ids = raw.integer_list()?;
                if ids.is_empty() {
                    return Err(Problem::from("must name at least one sport id"));
                }
                if let Some(bad) = ids.iter().find(|id| **id <= 0) {
                    return Err(Problem::from(format!(
                        "sport ids are positive integers, got {bad}"
                    )));
                }
                self.sync.sport_ids = ids;
            }
            ("sync", "first_year") => {
                let year = raw.integer()?;
                if !(1900..=2200).contains(&year) {
                    return Err(Problem::from(format!("expected a year, got {year}")));
                }
                self.sync.first_year = year as i32;
            }
            ("sync", "max_failed_fraction") => {
                let v = raw.float()?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(Problem::from(format!("must be between 0 and 1, got {v}")));
                }
                self.sync.max_failed_fraction = v;
            }
            ("sync", "max_shrink_fraction") => {
                let v = raw.float()?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(Problem::from(format!("must be between 0 and 1, got {v}")));
                }
                self.sync.max_shrink_fraction = v;
            }
            ("sync", "confirm_runs") => self.sync.confirm_runs = raw.unsigned(1, 1000)? as u32,
            ("sync", "adaptive") => self.sync.adaptive = raw.boolean()?,
            ("sync", "live_window_hours") => {
                self.sync.live_window_hours = raw.unsigned(0, 24 * 366)?
            }
            ("sync", "active_window_days") => {
                self.sync.active_window_days = raw.unsigned(0, 366)?
            }
            ("sync", "active_every") => self.sync.active_every = raw.unsigned(1, 10_000)?,
            ("sync", "dormant_every") => self.sync.dormant_every = raw.unsigned(1, 10_000)?,
            ("sync", "full_sweep_every") => {
                self.sync.full_sweep_every = raw.unsigned(0, 1_000_000)?
            }
            ("sync", "max_validator_age_secs") => {
                self.sync.max_validator_age_secs = raw.unsigned(1, 7 * 24 * 3600)?
            }
            ("warm", "enabled") => self.warm.enabled = raw.boolean()?,
            ("warm", "workers") => self.warm.workers = raw.unsigned(1, 256)? as usize,
            ("warm", "ttl_secs") => self.warm.ttl_secs = raw.unsigned(1, 10 * 365 * 24 * 3600)?,
            ("warm", "refresh_until_days") => {
                self.warm.refresh_until_days = raw.unsigned(0, 3650)?
            }
            ("warm", "window_days") => self.warm.window_days = raw.unsigned(0, 3650)? as i64,
            ("warm", "reference_date") => {
                let s = raw.string()?;
                self.warm.reference_date = if s.trim().is_empty() {
                    None
                } else {
                    Some(
                        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
                            format!("expected a date YYYY-MM-DD or empty for today, got {s:?}")
                        })?,
                    )
                };
            }
            ("redis", key) if self.redis.set(key, raw)? => {}
            ("metrics", "bind") => {
                let s = raw.string()?;
                self.metrics.bind = s.parse().map_err(|_| {
                    Problem::from(format!(
                        "expected host:port such as 127.0.0.1:9108, got {s:?}"
                    ))
                })?;
            }
            ("metrics", "admin_token") => self.metrics.admin_token = Secret(raw.string()?),
            ("metrics", "admin_token_file") => {
                self.metrics.admin_token_file = optional_path(&raw.string()?)
            }
            ("metrics", "keep_runs") => self.metrics.keep_runs = raw.unsigned(1, 1000)? as usize,
            ("metrics", "seed_run_series") => self.metrics.seed_run_series = raw.boolean()?,
            ("metrics", key) if self.metrics.web.set(key, raw)? => {}
            ("logs", "dir") => {
                let s = raw.string()?;
                if s.trim().is_empty() {
                    return Err(Problem::from("must not be empty"));
                }
                self.logs.dir = PathBuf::from(s);
            }
            ("logs", "level") => {
                let s = raw.string()?;
                self.logs.level = s.parse().map_err(|_| {
                    format!("expected one of off, error, warn, info, debug, trace; got {s:?}")
                })?;
            }
            ("logs", "debug_snapshots") => self.logs.debug_snapshots = raw.boolean()?,
            ("logs", "history_len") => self.logs.history_len = raw.unsigned(1, 1000)? as usize,
            ("logs", "file") => self.logs.file = optional_path(&raw.string()?),
            ("logs", "max_file_bytes") => self.logs.max_file_bytes = raw.unsigned(4096, 1 << 40)?,
            ("logs", "keep_files") => self.logs.keep_files = raw.unsigned(1, 1000)? as usize,
            ("daemon", "shutdown_grace_secs") => {
                self.daemon.shutdown_grace_secs = raw.unsigned(1, 3600)?
            }
            ("ha", "lease_secs") => self.ha.lease_secs = raw.unsigned(3, 3600)?,
            (section, key) if section.starts_with("datasets.") => {
                let name = &section["datasets.".len()..];
                let Some(dataset) = DatasetId::by_name(name) else {
                    let known: Vec<&str> = DatasetId::ALL.map(DatasetId::name).to_vec();
                    return Err(format!("unknown dataset; known: {}", known.join(", ")).into());
                };
                let settings = &mut self.datasets[dataset.index()];
                match key {
                    "enabled" => settings.enabled = raw.boolean()?,
                    // 30 days of 3-minute runs at most: beyond that a
                    // dataset is better disabled.
                    "every_runs" => settings.every_runs = raw.unsigned(1, 14_400)?,
                    _ => return Err("unknown key in a [datasets.<name>] section".into()),
                }
            }
            _ => {
                return Err(if all_keys().any(|(s, _)| s == section) {
                    format!("unknown key in section [{section}]").into()
                } else {
                    "unknown section".into()
                });
            }
        }
        Ok(())
    }

    /// Cross-key checks that no single setter can make.
    fn validate(&self) -> Result<(), ConfigError> {
        let missing = |key: &str| ConfigError::Key {
            key: key.into(),
            source: "after file and environment".into(),
            problem: "must be set".into(),
        };
        if self.upstream.client_id.is_empty() {
            return Err(missing("upstream.client_id"));
        }
        // A dataset asked per record of another needs that one's records.
        for dataset in self.enabled_datasets() {
            if let Asks::EachRecordOf(source) = dataset.spec().asks
                && !self.dataset(source).enabled
            {
                return Err(ConfigError::Key {
                    key: format!("{}.enabled", dataset.spec().section),
                    source: "after file and environment".into(),
                    problem: format!(
                        "{dataset} is asked for each record of {source}: enable {} too, or disable {dataset}",
                        source.spec().section
                    ),
                });
            }
        }
        if self.upstream.client_secret.is_empty() {
            return Err(missing("upstream.client_secret"));
        }
        self.redis
            .validate()
            .map_err(|(key, problem)| ConfigError::Key {
                key: key.into(),
                source: "after file and environment".into(),
                problem,
            })?;
        if let Some(path) = &self.upstream.ca_file {
            read_ca_file(path).map_err(|problem| ConfigError::Key {
                key: "upstream.ca_file".into(),
                source: "after file and environment".into(),
                problem,
            })?;
        }
        let sync = &self.sync;
        let inconsistent = |key: &str, problem: String| ConfigError::Key {
            key: key.into(),
            source: "after file and environment".into(),
            problem,
        };
        // A hotter tier is never asked less often, nor over a wider window,
        // than a cooler one: else "live" would mean "rarely looked at".
        if sync.active_window_days * 24 < sync.live_window_hours {
            return Err(inconsistent(
                "sync.active_window_days",
                format!(
                    "must span at least sync.live_window_hours ({} h), got {} days",
                    sync.live_window_hours, sync.active_window_days
                ),
            ));
        }
        if sync.dormant_every < sync.active_every {
            return Err(inconsistent(
                "sync.dormant_every",
                format!(
                    "must be at least sync.active_every ({}), got {}",
                    sync.active_every, sync.dormant_every
                ),
            ));
        }
        Ok(())
    }

    /// Years whose seasons a run asks for: `max(first_year, this_year - 1) ..= this_year`.
    pub fn season_years(&self, this_year: i32) -> std::ops::RangeInclusive<i32> {
        self.sync.first_year.max(this_year - 1)..=this_year
    }
}

/// How the environment is read: `std::env::var`'s signature, so a value
/// that is not UTF-8 is told from an absent one.
pub type EnvLookup<'a> = dyn Fn(&str) -> Result<String, std::env::VarError> + 'a;

/// The certificates of a PEM file (`upstream.ca_file`): at least one, or
/// an error that says what is wrong with the file.
pub fn read_ca_file(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => return Err(format!("{} is not valid PEM: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// `PRECACHE_<SECTION>_<KEY>`.
pub fn env_var_name(section: &str, key: &str) -> String {
    format!("PRECACHE_{}_{}", section, key)
        .replace('.', "_")
        .to_ascii_uppercase()
}

/// The `PRECACHE_*` names among `names` that no key reads (nor precache
/// itself sets), sorted, each with the nearest real name within a few
/// typos.
pub fn unknown_env_vars(
    names: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<(String, Option<String>)> {
    let known: Vec<String> = all_keys()
        .map(|(section, key)| env_var_name(section, key))
        .collect();
    let mut unknown: Vec<(String, Option<String>)> = names
        .into_iter()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.starts_with("PRECACHE_"))
        .filter(|name| !known.contains(name) && name != ALLOCATOR_TUNED_VAR)
        .map(|name| {
            let near = known
                .iter()
                .map(|k| (edit_distance(&name, k), k))
                .filter(|(d, _)| *d <= 3)
                .min()
                .map(|(_, k)| k.clone());
            (name, near)
        })
        .collect();
    unknown.sort();
    unknown
}

/// Levenshtein distance (names are short; quadratic is fine).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
