//! Configs for the tests: the repository's config.toml pointed at the
//! harness's simulator, Redis and directory, in memory or as a file.

use std::path::{Path, PathBuf};

use precache::config::Config;
use precache::sim::sentinel::{MASTER_NAME, TlsRedisSet};

/// One `[section] key = value` line of a config file: the section (dotted
/// for a dataset, e.g. `datasets.clubs`), the key and the value as TOML
/// (strings through [`quoted`]).
pub type Override<'a> = (&'a str, &'a str, String);

/// Where Redis is when a harness has none: a closed port, so that no test
/// touches the machine's own Redis.
pub(crate) const NO_REDIS: &str = "redis://127.0.0.1:1/0";

/// `s` as a TOML (and Rust) string literal.
pub fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// Today's date, where the machine is.
pub fn today() -> chrono::NaiveDate {
    chrono::Local::now().date_naive()
}

/// Asks every dataset in every run, so one run detects any churn of them
/// (their default cadences spread them over 3 and 300 runs).
pub fn every_dataset_every_run(config: &mut Config) {
    for dataset in config.datasets.iter_mut() {
        dataset.every_runs = 1;
    }
}

/// The `metrics.bind` address a config file listens on.
pub fn http_addr(config: &Path) -> String {
    file_value(config, "metrics", "bind")
        .unwrap_or_else(|| panic!("{} names no metrics.bind", config.display()))
}

/// A string value of a config file, if it is there and reads as TOML.
pub(crate) fn file_value(config: &Path, section: &str, key: &str) -> Option<String> {
    let table: toml::Table = std::fs::read_to_string(config).ok()?.parse().ok()?;
    Some(table.get(section)?.get(key)?.as_str()?.to_string())
}

/// The `[redis]` lines that reach a [`TlsRedisSet`]'s master through its
/// sentinels, over TLS with the set's client certificate (the user and its
/// password are the caller's).
pub fn sentinel_settings(set: &TlsRedisSet) -> Vec<Override<'static>> {
    let path = |p: &Path| quoted(p.to_str().expect("a UTF-8 path"));
    vec![
        // The harness points redis.url at its own Redis or a closed port;
        // with sentinels it must stay unset (the default).
        ("redis", "url", quoted("redis://127.0.0.1:6379/0")),
        (
            "redis",
            "sentinels",
            format!("{:?}", set.sentinel_addresses()),
        ),
        ("redis", "master_name", quoted(MASTER_NAME)),
        ("redis", "tls", "true".into()),
        ("redis", "tls_ca_file", path(&set.ca.ca_pem)),
        ("redis", "tls_cert_file", path(&set.client.cert_pem)),
        ("redis", "tls_key_file", path(&set.client.key_pem)),
    ]
}

/// The repository's config.toml (as parsed, without the environment),
/// pointed at `upstream` (the simulator's URL), `redis_url` and `logs`.
/// With `shortcuts`, as the in-process tests run it: a 5 s upstream
/// timeout (a stalled call costs little) and the warm-up off (a test that
/// wants it says so).
pub(crate) fn repository_config(
    upstream: Option<&str>,
    redis_url: &str,
    logs: &Path,
    shortcuts: bool,
) -> Config {
    let text = std::fs::read_to_string(crate::repo_path("config.toml"))
        .expect("the repository's config.toml");
    let mut config = Config::from_toml_str(&text, Path::new("config.toml"), &|_| {
        Err(std::env::VarError::NotPresent)
    })
    .expect("the repository's config.toml is valid");
    if let Some(url) = upstream {
        config.upstream.api_url = url.to_string();
        config.upstream.token_url = format!("{url}/connect/token");
    }
    config.redis.url = precache::config::Secret::new(redis_url.to_string());
    config.logs.dir = logs.to_path_buf();
    if shortcuts {
        config.upstream.timeout_secs = 5;
        config.warm.enabled = false;
    }
    config
}

/// What a config file starts from.
pub(crate) enum Base {
    /// The repository's config.toml, every key at its default.
    Repository,
    /// Nothing: only the keys given (what any revision of precache reads).
    Empty,
}

/// Writes `dir/config.toml`: `base` with `defaults`, then `overrides`,
/// replacing or adding `[section] key = value` lines.
pub(crate) fn write_file(
    dir: &Path,
    base: Base,
    defaults: &[Override<'_>],
    overrides: &[Override<'_>],
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let mut table: toml::Table = match base {
        Base::Repository => std::fs::read_to_string(crate::repo_path("config.toml"))
            .expect("the repository's config.toml")
            .parse()
            .expect("the repository's config.toml is TOML"),
        Base::Empty => toml::Table::new(),
    };
    for (section, key, value) in defaults.iter().chain(overrides) {
        let value: toml::Value = format!("v = {value}")
            .parse::<toml::Table>()
            .unwrap_or_else(|e| panic!("[{section}] {key} = {value} is not TOML: {e}"))["v"]
            .clone();
        table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("[{section}] is a table"))
            .insert(key.to_string(), value);
    }
    let path = dir.join("config.toml");
    let text = toml::to_string(&table).expect("a table serialises");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}
