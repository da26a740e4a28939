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
    pub scope: String,
    pub timeout_secs: u64,
    pub max_concurrency: usize,
    pub max_requests_per_sec: f64,
    pub retries: u32,
    /// Largest response body accepted from one call; a larger one is a failed call.
    pub max_body_bytes: u64,
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
pub struct RedisConfig {
    pub url: Secret,
    pub key_prefix: String,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub bind: SocketAddr,
    pub admin_token: Secret,
    pub keep_runs: usize,
}

#[derive(Debug, Clone)]
pub struct LogsConfig {
    pub dir: PathBuf,
    pub level: log::LevelFilter,
    pub debug_snapshots: bool,
    pub history_len: usize,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub shutdown_grace_secs: u64,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            upstream: UpstreamConfig {
                api_url: "http://127.0.0.1:8099".into(),
                token_url: "http://127.0.0.1:8099/connect/token".into(),
                client_id: String::new(),
                client_secret: Secret::default(),
                scope: String::new(),
                timeout_secs: 10,
                max_concurrency: 16,
                max_requests_per_sec: 0.0,
                retries: 3,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            },
            sync: SyncConfig {
                interval_secs: 180,
                sport_ids: vec![72, 151],
                first_year: 2024,
                max_failed_fraction: 0.5,
                max_shrink_fraction: 0.2,
                confirm_runs: 3,
            },
            warm: WarmConfig {
                enabled: true,
                workers: 4,
                ttl_secs: 604_800,
                refresh_until_days: 7,
                window_days: 14,
                reference_date: None,
            },
            redis: RedisConfig {
                url: Secret::new("redis://127.0.0.1:6379/0"),
                key_prefix: String::new(),
            },
            metrics: MetricsConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 9108)),
                admin_token: Secret::default(),
                keep_runs: 10,
            },
            logs: LogsConfig {
                dir: PathBuf::from("logs"),
                level: log::LevelFilter::Info,
                debug_snapshots: true,
                history_len: 10,
            },
            daemon: DaemonConfig {
                shutdown_grace_secs: 20,
            },
        }
    }
}

/// `upstream.max_body_bytes` unless configured: far above the 10x data
/// set's largest list (about 20 MB), far below what would hurt the machine.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// Slowest non-zero `upstream.max_requests_per_sec`: one request every 100 s.
/// Anything slower is a typo, and would stall a run for years.
pub const MIN_REQUESTS_PER_SEC: f64 = 0.01;

/// Every `(section, key)` the file may hold, in DESIGN.md order. The env
/// override of each is `PRECACHE_<SECTION>_<KEY>` in upper case.
pub const KEYS: &[(&str, &str)] = &[
    ("upstream", "api_url"),
    ("upstream", "token_url"),
    ("upstream", "client_id"),
    ("upstream", "client_secret"),
    ("upstream", "scope"),
    ("upstream", "timeout_secs"),
    ("upstream", "max_concurrency"),
    ("upstream", "max_requests_per_sec"),
    ("upstream", "retries"),
    ("upstream", "max_body_bytes"),
    ("sync", "interval_secs"),
    ("sync", "sport_ids"),
    ("sync", "first_year"),
    ("sync", "max_failed_fraction"),
    ("sync", "max_shrink_fraction"),
    ("sync", "confirm_runs"),
    ("warm", "enabled"),
    ("warm", "workers"),
    ("warm", "ttl_secs"),
    ("warm", "refresh_until_days"),
    ("warm", "window_days"),
    ("warm", "reference_date"),
    ("redis", "url"),
    ("redis", "key_prefix"),
    ("metrics", "bind"),
    ("metrics", "admin_token"),
    ("metrics", "keep_runs"),
    ("logs", "dir"),
    ("logs", "level"),
    ("logs", "debug_snapshots"),
    ("logs", "history_len"),
    ("daemon", "shutdown_grace_secs"),
];

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
        }
    }
}

impl std::error::Error for ConfigError {}

/// A raw value before it is checked against its key's type.
enum Raw<'a> {
    Toml(&'a toml::Value),
    Env(&'a str),
}

impl Raw<'_> {
    fn string(&self) -> Result<String, String> {
        match self {
            Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
            Raw::Toml(v) => Err(format!("expected a string, got {}", v.type_str())),
            Raw::Env(s) => Ok((*s).to_string()),
        }
    }

    fn integer(&self) -> Result<i64, String> {
        match self {
            Raw::Toml(toml::Value::Integer(i)) => Ok(*i),
            Raw::Toml(v) => Err(format!("expected an integer, got {}", v.type_str())),
            Raw::Env(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("expected an integer, got {s:?}")),
        }
    }

    /// An integer in `min..=max`. Every count and duration has an upper
    /// bound, so no value can overflow the arithmetic done with it later.
    fn unsigned(&self, min: u64, max: u64) -> Result<u64, String> {
        let v = self.integer()?;
        if v < min as i64 {
            return Err(format!("must be at least {min}, got {v}"));
        }
        if v as u64 > max {
            return Err(format!("must be at most {max}, got {v}"));
        }
        Ok(v as u64)
    }

    fn float(&self) -> Result<f64, String> {
        let v = match self {
            Raw::Toml(toml::Value::Float(f)) => *f,
            Raw::Toml(toml::Value::Integer(i)) => *i as f64,
            Raw::Toml(v) => return Err(format!("expected a number, got {}", v.type_str())),
            Raw::Env(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("expected a number, got {s:?}"))?,
        };
        if !v.is_finite() {
            return Err(format!("expected a finite number, got {v}"));
        }
        Ok(v)
    }

    fn boolean(&self) -> Result<bool, String> {
        match self {
            Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
            Raw::Toml(v) => Err(format!("expected true or false, got {}", v.type_str())),
            Raw::Env(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("expected true or false, got {s:?}")),
            },
        }
    }

    fn integer_list(&self) -> Result<Vec<i64>, String> {
        match self {
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::Integer(i) => Ok(*i),
                    other => Err(format!(
                        "expected a list of integers, found {}",
                        other.type_str()
                    )),
                })
                .collect(),
            Raw::Toml(v) => Err(format!("expected a list of integers, got {}", v.type_str())),
            Raw::Env(s) => s
                .split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(|part| {
                    part.parse()
                        .map_err(|_| format!("expected comma-separated integers, got {s:?}"))
                })
                .collect(),
        }
    }
}

/// `value` with any `user:password@` part removed, for error messages: a
/// URL may carry credentials, and a config error is printed.
fn without_credentials(value: &str) -> String {
    let (scheme, rest) = value.split_once("://").unwrap_or(("", value));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("<credentials>@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    if scheme.is_empty() {
        format!("{host}{tail}")
    } else {
        format!("{scheme}://{host}{tail}")
    }
}

/// An `http://` or `https://` URL with a host and without credentials,
/// trailing slashes removed.
fn http_url(value: String) -> Result<String, String> {
    let shown = without_credentials(&value);
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| format!("expected an http:// or https:// URL, got {shown:?}"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!(
            "must not carry credentials (the API is authenticated with upstream.client_id and client_secret), got {shown:?}"
        ));
    }
    let host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()) && !authority.ends_with(']'))
        .map_or(authority, |(host, _)| host);
    if host.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("expected a URL with a host, got {shown:?}"));
    }
    Ok(value.trim_end_matches('/').to_string())
}

impl Config {
    /// Reads `path`, applies the process environment, validates.
    pub fn load_with_process_env(path: &Path) -> Result<Config, ConfigError> {
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
        for (section, value) in &table {
            let toml::Value::Table(keys) = value else {
                return Err(ConfigError::Key {
                    key: section.clone(),
                    source: file_source,
                    problem: "expected a [section] table".into(),
                });
            };
            for (key, value) in keys {
                config
                    .set(section, key, Raw::Toml(value))
                    .map_err(|problem| ConfigError::Key {
                        key: format!("{section}.{key}"),
                        source: file_source.clone(),
                        problem,
                    })?;
            }
        }
        // The original's names first, so the PRECACHE_ form wins when both are set.
        let overrides = LEGACY_ENV
            .iter()
            .map(|(var, (section, key))| (var.to_string(), *section, *key))
            .chain(
                KEYS.iter()
                    .map(|(section, key)| (env_var_name(section, key), *section, *key)),
            );
        for (var, section, key) in overrides {
            let error = |problem: String| ConfigError::Key {
                key: format!("{section}.{key}"),
                source: format!("from environment variable {var}"),
                problem,
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
        config.validate()?;
        Ok(config)
    }

    fn set(&mut self, section: &str, key: &str, raw: Raw<'_>) -> Result<(), String> {
        match (section, key) {
            ("upstream", "api_url") => self.upstream.api_url = http_url(raw.string()?)?,
            ("upstream", "token_url") => self.upstream.token_url = http_url(raw.string()?)?,
            ("upstream", "client_id") => self.upstream.client_id = raw.string()?,
            ("upstream", "client_secret") => self.upstream.client_secret = Secret(raw.string()?),
            ("upstream", "scope") => self.upstream.scope = raw.string()?,
            ("upstream", "timeout_secs") => self.upstream.timeout_secs = raw.unsigned(1, 3600)?,
            ("upstream", "max_concurrency") => {
                self.upstream.max_concurrency = raw.unsigned(1, 1024)? as usize
            }
            ("upstream", "max_requests_per_sec") => {
                let v = raw.float()?;
                if v != 0.0 && !(MIN_REQUESTS_PER_SEC..=100_000.0).contains(&v) {
                    return Err(format!(
                        "must be 0 (unlimited) or between {MIN_REQUESTS_PER_SEC} and 100000, got {v}"
                    ));
                }
                self.upstream.max_requests_per_sec = v;
            }
            ("upstream", "retries") => self.upstream.retries = raw.unsigned(0, 20)? as u32,
            ("upstream", "max_body_bytes") => {
                self.upstream.max_body_bytes = raw.unsigned(1024, 1 << 30)?
            }
            ("sync", "interval_secs") => {
                self.sync.interval_secs = raw.unsigned(1, 7 * 24 * 3600)?
            }
            ("sync", "sport_ids") => {
                let ids = raw.integer_list()?;
                if ids.is_empty() {
                    return Err("must name at least one sport id".into());
                }
                if let Some(bad) = ids.iter().find(|id| **id <= 0) {
                    return Err(format!("sport ids are positive integers, got {bad}"));
                }
                self.sync.sport_ids = ids;
            }
            ("sync", "first_year") => {
                let year = raw.integer()?;
                if !(1900..=2200).contains(&year) {
                    return Err(format!("expected a year, got {year}"));
                }
                self.sync.first_year = year as i32;
            }
            ("sync", "max_failed_fraction") => {
                let v = raw.float()?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("must be between 0 and 1, got {v}"));
                }
                self.sync.max_failed_fraction = v;
            }
            ("sync", "max_shrink_fraction") => {
                let v = raw.float()?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("must be between 0 and 1, got {v}"));
                }
                self.sync.max_shrink_fraction = v;
            }
            ("sync", "confirm_runs") => self.sync.confirm_runs = raw.unsigned(1, 1000)? as u32,
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
            ("redis", "url") => {
                let url = raw.string()?;
                if !(url.starts_with("redis://")
                    || url.starts_with("rediss://")
                    || url.starts_with("unix://")
                    || url.starts_with("redis+unix://"))
                {
                    // Never echo the URL: it may carry a password.
                    return Err("expected a redis://, rediss:// or unix:// URL".into());
                }
                self.redis.url = Secret(url);
            }
            ("redis", "key_prefix") => self.redis.key_prefix = raw.string()?,
            ("metrics", "bind") => {
                let s = raw.string()?;
                self.metrics.bind = s
                    .parse()
                    .map_err(|_| format!("expected host:port such as 127.0.0.1:9108, got {s:?}"))?;
            }
            ("metrics", "admin_token") => self.metrics.admin_token = Secret(raw.string()?),
            ("metrics", "keep_runs") => self.metrics.keep_runs = raw.unsigned(1, 1000)? as usize,
            ("logs", "dir") => {
                let s = raw.string()?;
                if s.trim().is_empty() {
                    return Err("must not be empty".into());
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
            ("daemon", "shutdown_grace_secs") => {
                self.daemon.shutdown_grace_secs = raw.unsigned(1, 3600)?
            }
            _ => {
                return Err(if KEYS.iter().any(|(s, _)| *s == section) {
                    format!("unknown key in section [{section}]")
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
        if self.upstream.client_secret.is_empty() {
            return Err(missing("upstream.client_secret"));
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

/// `PRECACHE_<SECTION>_<KEY>`.
pub fn env_var_name(section: &str, key: &str) -> String {
    format!("PRECACHE_{}_{}", section, key).to_ascii_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MINIMAL: &str = "[upstream]\nclient_id = \"demo\"\nclient_secret = \"demo-secret\"\n";

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml_str(text, Path::new("test.toml"), &|k| {
            env.get(k).cloned().ok_or(std::env::VarError::NotPresent)
        })
    }

    #[test]
    fn defaults_are_the_seeds() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.sync.sport_ids, vec![72, 151]);
        assert_eq!(c.sync.first_year, 2024);
        assert_eq!(c.sync.interval_secs, 180);
        assert_eq!(c.warm.ttl_secs, 7 * 24 * 3600);
        assert_eq!(c.warm.window_days, 14);
        assert_eq!(c.warm.reference_date, None);
        assert_eq!(c.upstream.max_concurrency, 16);
        assert_eq!(c.upstream.retries, 3);
        assert_eq!(c.logs.history_len, 10);
        assert_eq!(c.metrics.keep_runs, 10);
        assert_eq!(c.daemon.shutdown_grace_secs, 20);
    }

    #[test]
    fn the_repository_config_loads() {
        let text = include_str!("../config.toml");
        let c = load(text, &[]).unwrap();
        assert_eq!(c.upstream.api_url, "http://127.0.0.1:8099");
        assert_eq!(c.upstream.token_url, "http://127.0.0.1:8099/connect/token");
        assert_eq!(c.upstream.client_id, "demo");
        assert_eq!(c.upstream.client_secret.expose(), "demo-secret");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load(&format!("{MINIMAL}[sync]\nintervall_secs = 3\n"), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sync.intervall_secs"), "{msg}");
        assert!(msg.contains("unknown key"), "{msg}");
        let err = load(&format!("{MINIMAL}[synk]\na = 1\n"), &[]).unwrap_err();
        assert!(err.to_string().contains("unknown section"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, key) in [
            ("[sync]\ninterval_secs = \"soon\"\n", "sync.interval_secs"),
            ("[sync]\ninterval_secs = 0\n", "sync.interval_secs"),
            ("[sync]\nsport_ids = []\n", "sync.sport_ids"),
            (
                "[sync]\nmax_failed_fraction = 1.5\n",
                "sync.max_failed_fraction",
            ),
            (
                "[warm]\nreference_date = \"15.06.2025\"\n",
                "warm.reference_date",
            ),
            ("[metrics]\nbind = \"nowhere\"\n", "metrics.bind"),
            ("[logs]\nlevel = \"loud\"\n", "logs.level"),
            ("[redis]\nurl = \"http://x\"\n", "redis.url"),
            (
                "[daemon]\nshutdown_grace_secs = -1\n",
                "daemon.shutdown_grace_secs",
            ),
            // Large enough to overflow the arithmetic done with them later.
            (
                "[warm]\nrefresh_until_days = 999999999999\n",
                "warm.refresh_until_days",
            ),
            ("[warm]\nttl_secs = 9223372036854775807\n", "warm.ttl_secs"),
            ("[metrics]\nkeep_runs = 100000\n", "metrics.keep_runs"),
        ] {
            let err = load(&format!("{MINIMAL}{text}"), &[]).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(key), "{text}: {msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
    }

    #[test]
    fn rates_sizes_and_shrink_settings_are_bounded() {
        for (text, key) in [
            (
                "max_requests_per_sec = 1e-20\n",
                "upstream.max_requests_per_sec",
            ),
            (
                "max_requests_per_sec = 1e-12\n",
                "upstream.max_requests_per_sec",
            ),
            (
                "max_requests_per_sec = -1\n",
                "upstream.max_requests_per_sec",
            ),
            (
                "max_requests_per_sec = 1e9\n",
                "upstream.max_requests_per_sec",
            ),
            ("max_body_bytes = 10\n", "upstream.max_body_bytes"),
            ("max_body_bytes = 99999999999\n", "upstream.max_body_bytes"),
            (
                "[sync]\nmax_shrink_fraction = 1.5\n",
                "sync.max_shrink_fraction",
            ),
            ("[sync]\nconfirm_runs = 0\n", "sync.confirm_runs"),
        ] {
            let err = load(&format!("{MINIMAL}{text}"), &[]).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        let c = load(&format!("{MINIMAL}max_requests_per_sec = 0.01\n"), &[]).unwrap();
        assert_eq!(c.upstream.max_requests_per_sec, 0.01);
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.upstream.max_requests_per_sec, 0.0);
        assert_eq!(c.upstream.max_body_bytes, 64 * 1024 * 1024);
        assert_eq!(c.sync.max_shrink_fraction, 0.2);
        assert_eq!(c.sync.confirm_runs, 3);
    }

    #[test]
    fn urls_need_a_host_and_never_echo_credentials() {
        for (url, problem) in [
            ("http://", "with a host"),
            ("https://:8080/x", "with a host"),
            ("http:// example.org", "with a host"),
            ("gopher://user:pw-xyz@host", "http://"),
            ("http://user:pw-xyz@host/api", "credentials"),
        ] {
            let text = format!("{MINIMAL}api_url = \"{url}\"\n");
            let err = load(&text, &[]).unwrap_err().to_string();
            assert!(
                err.contains("upstream.api_url") && err.contains(problem),
                "{url}: {err}"
            );
            assert!(!err.contains("pw-xyz"), "{url}: {err}");
        }
        for good in [
            "http://h",
            "https://data.nif.no",
            "http://127.0.0.1:8099/",
            "http://[::1]:80",
        ] {
            let text = format!("{MINIMAL}api_url = \"{good}\"\n");
            assert!(load(&text, &[]).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_non_utf8_environment_value_is_an_error_not_ignored() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let lookup = |name: &str| match name {
            "PRECACHE_UPSTREAM_CLIENT_SECRET" => {
                Err(std::env::VarError::NotUnicode(OsString::from_vec(vec![
                    0x73, 0xff, 0x73,
                ])))
            }
            _ => Err(std::env::VarError::NotPresent),
        };
        let err = Config::from_toml_str(MINIMAL, Path::new("t.toml"), &lookup).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("PRECACHE_UPSTREAM_CLIENT_SECRET"), "{msg}");
        assert!(msg.contains("not valid UTF-8"), "{msg}");
    }

    #[test]
    fn bad_upstream_url_is_named() {
        let text = "[upstream]\nclient_id = \"a\"\nclient_secret = \"b\"\napi_url = \"ftp://x\"\n";
        let err = load(text, &[]).unwrap_err();
        assert!(err.to_string().contains("upstream.api_url"), "{err}");
    }

    #[test]
    fn syntax_error_is_one_line() {
        let err = load("[upstream\nclient_id = 1", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }));
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn missing_credentials_are_an_error() {
        let err = load("", &[]).unwrap_err();
        assert!(err.to_string().contains("upstream.client_id"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_precache_form_wins() {
        let c = load(
            MINIMAL,
            &[
                ("API_URL", "http://legacy:1"),
                ("REDIS_URL", "redis://legacy:6379/2"),
                ("PRECACHE_REDIS_URL", "redis://new:6379/3"),
                ("PRECACHE_SYNC_SPORT_IDS", "72, 151,1"),
                ("PRECACHE_WARM_ENABLED", "false"),
                ("API_CLIENT_SECRET", "s3"),
            ],
        )
        .unwrap();
        assert_eq!(c.upstream.api_url, "http://legacy:1");
        assert_eq!(c.redis.url.expose(), "redis://new:6379/3");
        assert_eq!(c.sync.sport_ids, vec![72, 151, 1]);
        assert!(!c.warm.enabled);
        assert_eq!(c.upstream.client_secret.expose(), "s3");
        let err = load(MINIMAL, &[("PRECACHE_UPSTREAM_RETRIES", "many")]).unwrap_err();
        assert!(
            err.to_string().contains("PRECACHE_UPSTREAM_RETRIES"),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_or_errors() {
        let c = load(
            "[upstream]\nclient_id = \"demo\"\nclient_secret = \"hunter2\"\n\
             [metrics]\nadmin_token = \"tok-xyz\"\n[redis]\nurl = \"redis://:pw123@h:1/0\"\n",
            &[],
        )
        .unwrap();
        let dbg = format!("{c:?}");
        for secret in ["hunter2", "tok-xyz", "pw123"] {
            assert!(!dbg.contains(secret), "{secret} leaked: {dbg}");
        }
        let err = load(MINIMAL, &[("REDIS_URL", "http://:pw123@h")]).unwrap_err();
        assert!(!err.to_string().contains("pw123"));
    }

    #[test]
    fn season_years_follow_the_seed() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.season_years(2026), 2025..=2026);
        assert_eq!(c.season_years(2024), 2024..=2024);
    }
}
