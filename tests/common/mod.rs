//! Shared test fixtures: an in-process simulator, configs pointing at it,
//! temporary directories, and (for the Redis tests) a private redis-server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use precache::config::Config;
use precache::sim::{Scale, SimOptions, SimServer};

pub fn today() -> chrono::NaiveDate {
    chrono::Local::now().date_naive()
}

/// A simulator on a free loopback port.
pub fn sim(scale: Scale, seed: u64) -> SimServer {
    sim_with(SimOptions {
        bind: "127.0.0.1:0".parse().unwrap(),
        scale,
        seed,
        ..SimOptions::default()
    })
}

pub fn sim_with(options: SimOptions) -> SimServer {
    SimServer::start(options).expect("simulator starts on a free port")
}

/// The repository's config.toml, pointed at `sim`, with fast retries.
pub fn config_for(sim: &SimServer) -> Config {
    let text = std::fs::read_to_string(repo_path("config.toml")).unwrap();
    let mut config = Config::from_toml_str(&text, Path::new("config.toml"), &|_| None).unwrap();
    config.upstream.api_url = sim.url();
    config.upstream.token_url = format!("{}/connect/token", sim.url());
    config.upstream.timeout_secs = 5;
    config
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "precache-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a config file for the CLI: the repository's config with the
/// given `[section] key = value` lines replaced or added.
pub fn write_config(dir: &Path, overrides: &[(&str, &str, String)]) -> PathBuf {
    let mut table: toml::Table = std::fs::read_to_string(repo_path("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    for (section, key, value) in overrides {
        let value: toml::Value =
            format!("v = {value}").parse::<toml::Table>().unwrap()["v"].clone();
        table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap()
            .insert(key.to_string(), value);
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    path
}

pub fn quoted(s: &str) -> String {
    format!("{s:?}")
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_precache")
}
