//! Every fixed key of the configuration file, declared once, in [`TABLE`]:
//! its section and name (so its `PRECACHE_<SECTION>_<KEY>` variable), the
//! field it sets, how a value is read and checked, how `check-config`
//! shows it (secrets redacted), and whether a reload applies it live.
//! Loading, `check-config`, the reload and the list of environment
//! variables all read this table; the defaults are `Config::default`'s.
//! One test holds docs/configuration.md's table (key and default) and the
//! repository's config.toml against it.
//!
//! The `[datasets.<name>]` sections are the one family of keys not in the
//! table: their names come from the dataset descriptors (see [`dataset`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use toml::Value;

use super::raw::{Problem, Raw, http_url, proxy_url, redacted_url};
use super::redis::{optional_path, sentinel_address};
use super::web::user_entry;
use super::{Config, MIN_REQUESTS_PER_SEC, ProxyConfig, Secret};
use crate::model::dataset::DatasetId;

/// One key of the file.
pub(crate) struct Key {
    pub section: &'static str,
    pub name: &'static str,
    /// Reads a raw value (TOML or environment) into the config.
    set: fn(&mut Config, Raw<'_>) -> Result<(), Problem>,
    /// The value as `check-config` prints it.
    show: fn(&Config) -> Value,
    /// The value in a form that tells any change, secrets included: what a
    /// reload compares (never shown).
    reveal: fn(&Config) -> String,
    /// Live keys: takes the new value on reload. `None`: it shapes
    /// threads, sockets, clients or files set up at start, and keeps its
    /// running value until a restart.
    take: Option<fn(&mut Config, &Config)>,
}

/// `key!(section.name [at field.path], parse, show, live | restart)`: the
/// field is `config.section.name` unless `at` names another.
macro_rules! key {
    ($section:ident . $name:ident, $parse:expr, $show:expr, $when:ident) => {
        key!($section.$name at $section.$name, $parse, $show, $when)
    };
    ($section:ident . $name:ident at $($field:ident).+, $parse:expr, $show:expr, $when:ident) => {
        Key {
            section: stringify!($section),
            name: stringify!($name),
            set: |config, raw| {
                let value: Result<_, Problem> = ($parse)(raw);
                config $(.$field)+ = value?;
                Ok(())
            },
            show: |config| ($show)(&config $(.$field)+),
            reveal: |config| Revealed::revealed(&config $(.$field)+),
            take: key!(@take $when, $($field).+),
        }
    };
    (@take live, $($field:ident).+) => {
        Some(|config, new| config $(.$field)+ = new $(.$field)+.clone())
    };
    (@take restart, $($field:ident).+) => {
        None
    };
}

/// Every fixed key, in DESIGN.md order (the order `check-config` prints).
/// The reasons a key is live: the credentials (a new token is fetched),
/// everything a run reads from its config (every `sync` key, the warm-up
/// window, the feed's length), and how it reports (the level, the debug
/// snapshots, the seed's metric series).
// One key a line: a table, read across.
#[rustfmt::skip]
pub(crate) static TABLE: &[Key] = &[
    key!(upstream.api_url, read_http_url, text, restart),
    key!(upstream.token_url, read_http_url, text, restart),
    key!(upstream.client_id, read_string, text, live),
    key!(upstream.client_secret, read_secret, secret, live),
    key!(upstream.client_secret_file, path_or_empty, optional, live),
    key!(upstream.scope, read_string, text, live),
    key!(upstream.timeout_secs, within::<u64>(1, 3600), int, restart),
    key!(upstream.max_concurrency, within::<usize>(1, 1024), int, restart),
    key!(upstream.max_requests_per_sec, requests_per_sec, float, restart),
    key!(upstream.retries, within::<u32>(0, 20), int, restart),
    key!(upstream.max_body_bytes, within::<u64>(1024, 1 << 30), int, restart),
    key!(upstream.ca_file, path_or_empty, optional, restart),
    key!(upstream.proxy, proxy, shown_proxy, restart),
    key!(sync.interval_secs, within::<u64>(1, 7 * 24 * 3600), int, live),
    key!(sync.sport_ids, sport_ids, ints, live),
    key!(sync.first_year, first_year, int, live),
    key!(sync.max_failed_fraction, fraction, float, live),
    key!(sync.max_shrink_fraction, fraction, float, live),
    key!(sync.confirm_runs, within::<u32>(1, 1000), int, live),
    key!(sync.adaptive, read_bool, boolean, live),
    key!(sync.live_window_hours, within::<u64>(0, 24 * 366), int, live),
    key!(sync.active_window_days, within::<u64>(0, 366), int, live),
    key!(sync.active_every, within::<u64>(1, 10_000), int, live),
    key!(sync.dormant_every, within::<u64>(1, 10_000), int, live),
    key!(sync.full_sweep_every, within::<u64>(0, 1_000_000), int, live),
    key!(sync.max_validator_age_secs, within::<u64>(1, 7 * 24 * 3600), int, live),
    key!(warm.enabled, read_bool, boolean, restart),
    key!(warm.workers, within::<usize>(1, 256), int, restart),
    key!(warm.ttl_secs, within::<u64>(1, 10 * 365 * 24 * 3600), int, restart),
    key!(warm.refresh_until_days, within::<u64>(0, 3650), int, restart),
    key!(warm.window_days, within::<i64>(0, 3650), int, live),
    key!(warm.reference_date, reference_date, date, live),
    key!(redis.url, redis_url, url, restart),
    key!(redis.sentinels, sentinels, texts, restart),
    key!(redis.master_name, read_string, text, restart),
    key!(redis.username, read_string, text, restart),
    key!(redis.password_file, path_or_empty, optional, restart),
    key!(redis.tls, read_bool, boolean, restart),
    key!(redis.tls_ca_file, path_or_empty, optional, restart),
    key!(redis.tls_cert_file, path_or_empty, optional, restart),
    // Where a private key lies is for the unit file to know, not a log.
    key!(redis.tls_key_file, path_or_empty, hidden_path, restart),
    key!(redis.key_prefix, read_string, text, restart),
    key!(redis.changes_maxlen, within::<usize>(0, 10_000_000), int, live),
    key!(metrics.bind, bind, displayed, restart),
    key!(metrics.admin_token, read_secret, secret, restart),
    key!(metrics.admin_token_file, path_or_empty, optional, restart),
    key!(metrics.keep_runs, within::<usize>(1, 1000), int, restart),
    key!(metrics.seed_run_series, read_bool, boolean, live),
    key!(metrics.tls_cert_file at metrics.web.tls_cert_file, path_or_empty, optional, restart),
    key!(metrics.tls_key_file at metrics.web.tls_key_file, path_or_empty, hidden_path, restart),
    key!(metrics.basic_auth_users at metrics.web.basic_auth_users, users, shown_users, restart),
    key!(logs.dir, log_dir, path, restart),
    key!(logs.level, level, shown_level, live),
    key!(logs.debug_snapshots, read_bool, boolean, live),
    key!(logs.history_len, within::<usize>(1, 1000), int, restart),
    key!(logs.file, path_or_empty, optional, restart),
    key!(logs.max_file_bytes, within::<u64>(4096, 1 << 40), int, restart),
    key!(logs.keep_files, within::<usize>(1, 1000), int, restart),
    key!(daemon.shutdown_grace_secs, within::<u64>(1, 3600), int, restart),
    key!(ha.lease_secs, within::<u64>(3, 3600), int, restart),
];

/// The keys of each `[datasets.<name>]` section.
pub(crate) const DATASET_KEYS: [&str; 2] = ["enabled", "every_runs"];

/// The fixed key `section.name`, if there is one.
pub(crate) fn find(section: &str, name: &str) -> Option<&'static Key> {
    TABLE
        .iter()
        .find(|key| key.section == section && key.name == name)
}

impl Key {
    pub(crate) fn set(&self, config: &mut Config, raw: Raw<'_>) -> Result<(), Problem> {
        (self.set)(config, raw)
    }

    pub(crate) fn show(&self, config: &Config) -> Value {
        (self.show)(config)
    }

    /// What a reload compares: it tells any change, secrets included.
    pub(crate) fn revealed(&self, config: &Config) -> String {
        (self.reveal)(config)
    }

    pub(crate) fn is_live(&self) -> bool {
        self.take.is_some()
    }

    /// Takes a live key's value from `new`; a key that needs a restart
    /// keeps its running value.
    pub(crate) fn take(&self, config: &mut Config, new: &Config) {
        if let Some(take) = self.take {
            take(config, new);
        }
    }
}

/// A value in a form that tells any change, secrets included: compared
/// on reload, never shown. Every type a key sets implements it, so a new
/// secret cannot be compared by its redacted form (and a change to it
/// missed) without a decision here.
trait Revealed {
    fn revealed(&self) -> String;
}

/// Types whose `Debug` is the value itself.
macro_rules! revealed_by_debug {
    ($($t:ty),* $(,)?) => {
        $(impl Revealed for $t {
            fn revealed(&self) -> String {
                format!("{self:?}")
            }
        })*
    };
}

revealed_by_debug!(
    String,
    bool,
    u32,
    u64,
    usize,
    i32,
    i64,
    f64,
    PathBuf,
    Option<PathBuf>,
    Vec<i64>,
    Vec<String>,
    Option<NaiveDate>,
    SocketAddr,
    log::LevelFilter,
);

/// `Secret`'s `Debug` is redacted: its value is what tells a change.
impl Revealed for Secret {
    fn revealed(&self) -> String {
        self.expose().to_string()
    }
}

impl Revealed for Option<ProxyConfig> {
    fn revealed(&self) -> String {
        format!("{:?}", self.as_ref().map(|p| (p.url.expose(), &p.no_proxy)))
    }
}

impl Revealed for Vec<(String, Secret)> {
    fn revealed(&self) -> String {
        let users: Vec<(&String, &str)> = self.iter().map(|(u, h)| (u, h.expose())).collect();
        format!("{users:?}")
    }
}

/// `[datasets.<name>]`'s keys: `name` must be a dataset's.
pub(crate) fn dataset(
    config: &mut Config,
    name: &str,
    key: &str,
    raw: Raw<'_>,
) -> Result<(), Problem> {
    let Some(dataset) = DatasetId::by_name(name) else {
        let known: Vec<&str> = DatasetId::ALL.map(DatasetId::name).to_vec();
        return Err(format!("unknown dataset; known: {}", known.join(", ")).into());
    };
    let settings = &mut config.datasets[dataset.index()];
    match key {
        "enabled" => settings.enabled = raw.boolean()?,
        // 30 days of 3-minute runs at most: beyond that a dataset is
        // better disabled.
        "every_runs" => settings.every_runs = raw.unsigned(1, 14_400)?,
        _ => return Err("unknown key in a [datasets.<name>] section".into()),
    }
    Ok(())
}

/// How a `[datasets.<name>]` key is shown.
pub(crate) fn shown_dataset(config: &Config, name: &str, key: &str) -> Option<Value> {
    let settings = config.dataset(DatasetId::by_name(name)?);
    match key {
        "enabled" => Some(Value::Boolean(settings.enabled)),
        "every_runs" => Some(int(&settings.every_runs)),
        _ => None,
    }
}

// Reading the values.

fn read_string(raw: Raw<'_>) -> Result<String, Problem> {
    raw.string()
}

fn read_bool(raw: Raw<'_>) -> Result<bool, Problem> {
    raw.boolean()
}

fn read_secret(raw: Raw<'_>) -> Result<Secret, Problem> {
    raw.string().map(Secret)
}

fn read_http_url(raw: Raw<'_>) -> Result<String, Problem> {
    http_url(raw.string()?)
}

/// A whole number in `min..=max`, as the field's type (which holds it).
fn within<T: TryFrom<u64>>(min: u64, max: u64) -> impl Fn(Raw<'_>) -> Result<T, Problem> {
    move |raw| {
        let value = raw.unsigned(min, max)?;
        T::try_from(value).map_err(|_| Problem::from(format!("{value} is too large here")))
    }
}

fn path_or_empty(raw: Raw<'_>) -> Result<Option<PathBuf>, Problem> {
    raw.string().map(|text| optional_path(&text))
}

fn requests_per_sec(raw: Raw<'_>) -> Result<f64, Problem> {
    let v = raw.float()?;
    if v != 0.0 && !(MIN_REQUESTS_PER_SEC..=100_000.0).contains(&v) {
        return Err(Problem::from(format!(
            "must be 0 (unlimited) or between {MIN_REQUESTS_PER_SEC} and 100000, got {v}"
        )));
    }
    Ok(v)
}

fn proxy(raw: Raw<'_>) -> Result<Option<ProxyConfig>, Problem> {
    let url = raw.string()?;
    if url.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(ProxyConfig {
        url: Secret(proxy_url(&url)?),
        source: "upstream.proxy".into(),
        no_proxy: Vec::new(),
    }))
}

fn sport_ids(raw: Raw<'_>) -> Result<Vec<i64>, Problem> {
    let ids = raw.integer_list()?;
    if ids.is_empty() {
        return Err(Problem::from("must name at least one sport id"));
    }
    if let Some(bad) = ids.iter().find(|id| **id <= 0) {
        return Err(Problem::from(format!(
            "sport ids are positive integers, got {bad}"
        )));
    }
    Ok(ids)
}

fn first_year(raw: Raw<'_>) -> Result<i32, Problem> {
    let year = raw.integer()?;
    if !(1900..=2200).contains(&year) {
        return Err(Problem::from(format!("expected a year, got {year}")));
    }
    Ok(year as i32)
}

fn fraction(raw: Raw<'_>) -> Result<f64, Problem> {
    let v = raw.float()?;
    if !(0.0..=1.0).contains(&v) {
        return Err(Problem::from(format!("must be between 0 and 1, got {v}")));
    }
    Ok(v)
}

fn reference_date(raw: Raw<'_>) -> Result<Option<NaiveDate>, Problem> {
    let s = raw.string()?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map(Some)
        .map_err(|_| format!("expected a date YYYY-MM-DD or empty for today, got {s:?}").into())
}

fn redis_url(raw: Raw<'_>) -> Result<Secret, Problem> {
    let url = raw.string()?;
    let schemes = ["redis://", "rediss://", "unix://", "redis+unix://"];
    if !schemes.iter().any(|scheme| url.starts_with(scheme)) {
        // Never echo the URL: it may carry a password.
        return Err(Problem::from(
            "expected a redis://, rediss:// or unix:// URL",
        ));
    }
    Ok(Secret::new(url))
}

fn sentinels(raw: Raw<'_>) -> Result<Vec<String>, Problem> {
    let list = raw.string_list()?;
    for sentinel in &list {
        sentinel_address(sentinel)?;
    }
    Ok(list.iter().map(|s| s.trim().to_string()).collect())
}

fn bind(raw: Raw<'_>) -> Result<SocketAddr, Problem> {
    let s = raw.string()?;
    s.parse().map_err(|_| {
        Problem::from(format!(
            "expected host:port such as 127.0.0.1:9108, got {s:?}"
        ))
    })
}

fn users(raw: Raw<'_>) -> Result<Vec<(String, Secret)>, Problem> {
    raw.string_list()?
        .iter()
        .map(|entry| user_entry(entry))
        .collect()
}

fn log_dir(raw: Raw<'_>) -> Result<PathBuf, Problem> {
    let s = raw.string()?;
    if s.trim().is_empty() {
        return Err(Problem::from("must not be empty"));
    }
    Ok(PathBuf::from(s))
}

fn level(raw: Raw<'_>) -> Result<log::LevelFilter, Problem> {
    let s = raw.string()?;
    s.parse().map_err(|_| {
        format!("expected one of off, error, warn, info, debug, trace; got {s:?}").into()
    })
}

// Showing values: as TOML that reads back as the same configuration, with
// nothing secret in it.

fn text(s: &str) -> Value {
    Value::String(s.to_string())
}

fn int(n: &(impl TryInto<i64> + Copy)) -> Value {
    Value::Integer((*n).try_into().unwrap_or(i64::MAX))
}

fn float(v: &f64) -> Value {
    Value::Float(*v)
}

fn boolean(b: &bool) -> Value {
    Value::Boolean(*b)
}

fn ints(list: &[i64]) -> Value {
    Value::Array(list.iter().map(int).collect())
}

fn texts(list: &[String]) -> Value {
    Value::Array(list.iter().map(|s| text(s)).collect())
}

fn path(p: &Path) -> Value {
    Value::String(p.display().to_string())
}

fn optional(p: &Option<PathBuf>) -> Value {
    p.as_deref().map_or(Value::String(String::new()), path)
}

/// Whether it is set, never where.
fn hidden_path(p: &Option<PathBuf>) -> Value {
    Value::String(if p.is_some() { "<redacted>" } else { "" }.into())
}

/// Whether it is set, never what it is.
fn secret(s: &Secret) -> Value {
    Value::String(if s.is_empty() { "" } else { "<redacted>" }.into())
}

/// A URL that may carry a password.
fn url(url: &Secret) -> Value {
    Value::String(redacted_url(url.expose()))
}

fn shown_proxy(proxy: &Option<ProxyConfig>) -> Value {
    proxy
        .as_ref()
        .map_or(Value::String(String::new()), |p| url(&p.url))
}

fn date(d: &Option<NaiveDate>) -> Value {
    Value::String(d.map(|d| d.to_string()).unwrap_or_default())
}

fn displayed(addr: &SocketAddr) -> Value {
    Value::String(addr.to_string())
}

fn shown_level(level: &log::LevelFilter) -> Value {
    Value::String(level.to_string().to_lowercase())
}

fn shown_users(users: &[(String, Secret)]) -> Value {
    Value::Array(
        users
            .iter()
            .map(|(user, _)| Value::String(format!("{user}:<bcrypt hash>")))
            .collect(),
    )
}
