//! Shared test fixtures: an in-process simulator, configs pointing at it,
//! temporary directories, and (for the Redis tests) a private redis-server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use precache::config::Config;
use precache::sim::{Scale, SimOptions, SimServer};

/// The ids a run reported as changed, per category, in the simulator's shape.
pub fn reported(report: &precache::report::RunReport) -> precache::sim::ChangedIds {
    let c = report
        .changes
        .as_ref()
        .expect("the run got as far as a diff");
    precache::sim::ChangedIds {
        valid_seasons: c.valid_seasons.ids(),
        tournaments_in_season: c.tournaments_in_season.ids(),
        tournament_matches: c.tournament_matches.ids(),
        individual_matches: c.individual_matches.ids(),
        unique_team_ids: c.unique_team_ids.ids(),
        data: precache::model::dataset::DatasetId::ALL
            .into_iter()
            .map(|d| (d.name().to_string(), c.of_dataset(d).ids()))
            .filter(|(_, ids)| !ids.is_empty())
            .collect(),
    }
}

/// A tool a test needs is missing: under CI (`CI` set, as `.ci/run` does,
/// after installing it) that is a failure; elsewhere the test says it
/// skipped that part.
pub fn tool_missing(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing, and CI must run this check (.ci/run installs it)");
    }
    println!("SKIPPED: {what} is missing");
}

/// Polls `ok` every 25 ms; fails the test after `limit`.
pub fn wait_for(what: &str, limit: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// Sends signal `name` (e.g. "TERM") to process `pid` through the shell's
/// `kill` builtin, which exists wherever `/bin/sh` does.
pub fn send_signal(pid: u32, name: &str) {
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("kill -{name} {pid}")])
        .status()
        .expect("sh runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// The headless browser on this machine, if any.
pub fn browser() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

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
    let mut config = Config::from_toml_str(&text, Path::new("config.toml"), &|_| {
        Err(std::env::VarError::NotPresent)
    })
    .unwrap();
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
/// given `[section] key = value` lines replaced or added. Unless overridden,
/// Redis points at a closed port (no test touches the machine's Redis),
/// logs go to `dir/logs`, the HTTP server listens on a free port and the
/// leader lease lasts 3 s.
pub fn write_config(dir: &Path, overrides: &[(&str, &str, String)]) -> PathBuf {
    let mut table: toml::Table = std::fs::read_to_string(repo_path("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let logs = dir.join("logs");
    let metrics_port = precache::sim::local::free_port().unwrap();
    let defaults = [
        ("redis", "url", quoted("redis://127.0.0.1:1/0")),
        // A killed daemon's lease lapses quickly: the next test daemon on
        // the same Redis leads within seconds.
        ("ha", "lease_secs", "3".into()),
        ("logs", "dir", quoted(logs.to_str().unwrap())),
        (
            "metrics",
            "bind",
            quoted(&format!("127.0.0.1:{metrics_port}")),
        ),
    ];
    for (section, key, value) in defaults.iter().chain(overrides) {
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

/// A private `redis-server` on a free loopback port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = precache::sim::local::free_port().unwrap();
        let mut server = RedisServer {
            port,
            child: None,
            dir: TempDir::new("redis"),
        };
        server.restart();
        server
    }

    /// (Re)starts the server on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        let child = precache::sim::local::spawn_redis_server(self.port, self.dir.path())
            .expect("redis-server is on PATH (.ci/run installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !precache::sim::local::redis_answers(&self.url()) {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(&mut self.conn()).unwrap()
    }

    /// The `data` list of a seed-format key (panics if absent).
    pub fn data(&self, key: &str) -> Vec<serde_json::Value> {
        let text = self
            .get(key)
            .unwrap_or_else(|| panic!("key {key} is missing"));
        precache::store::parse_entry(&text)
            .unwrap_or_else(|| panic!("key {key} is not a data entry"))
    }

    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.conn())
            .unwrap();
        keys.sort();
        keys
    }

    /// Every data key and its value (for "nothing changed" assertions);
    /// our bookkeeping and the warm-up entries are left out.
    pub fn dump(&self) -> std::collections::BTreeMap<String, String> {
        dump_in(&mut self.conn())
    }
}

/// [`RedisServer::dump`] of the Redis `conn` is connected to.
pub fn dump_in(conn: &mut redis::Connection) -> std::collections::BTreeMap<String, String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).unwrap();
    keys.sort();
    keys.into_iter()
        .filter(|k| {
            !["precache:", "GET:", "refresh:GET:"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .map(|k| {
            let v: String = redis::cmd("GET").arg(&k).query(conn).unwrap();
            (k, v)
        })
        .collect()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Config for `sim` and `redis`, with logs in `logs_dir`.
pub fn full_config(sim: &SimServer, redis: &RedisServer, logs_dir: &Path) -> Config {
    let mut config = config_for(sim);
    config.redis.url = precache::config::Secret::new(redis.url());
    config.logs.dir = logs_dir.to_path_buf();
    config.warm.enabled = false;
    config
}

/// Asks every dataset in every run, so one run detects any churn of them
/// (their default cadences spread them over 3 and 300 runs).
pub fn every_dataset_every_run(config: &mut Config) {
    for dataset in config.datasets.iter_mut() {
        dataset.every_runs = 1;
    }
}

/// A config file for the CLI pointing at `sim` and `redis`.
pub fn write_full_config(
    dir: &Path,
    sim: &SimServer,
    redis: &RedisServer,
    extra: &[(&str, &str, String)],
) -> PathBuf {
    let mut overrides = vec![
        ("upstream", "api_url", quoted(&sim.url())),
        (
            "upstream",
            "token_url",
            quoted(&format!("{}/connect/token", sim.url())),
        ),
        ("redis", "url", quoted(&redis.url())),
        ("logs", "dir", quoted(dir.join("logs").to_str().unwrap())),
    ];
    overrides.extend(extra.iter().cloned());
    write_config(dir, &overrides)
}

/// `precache --config CONFIG run` as a child process, killed if a test ends
/// before it exits.
pub struct DaemonChild {
    child: std::process::Child,
}

impl DaemonChild {
    pub fn start(config: &Path) -> DaemonChild {
        Self::start_limited(config, None)
    }

    /// As [`DaemonChild::start`], with `RLIMIT_NOFILE` lowered to `nofile`
    /// (through the shell's `ulimit`, which then execs the daemon).
    pub fn start_limited(config: &Path, nofile: Option<u64>) -> DaemonChild {
        let mut command = match nofile {
            None => std::process::Command::new(bin()),
            Some(n) => {
                let mut sh = std::process::Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin());
                sh
            }
        };
        let child = command
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the precache binary starts");
        DaemonChild { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        send_signal(self.child.id(), name);
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits for the exit; returns the exit code and how long it took.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> (Option<i32>, std::time::Duration) {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "the daemon did not exit within {limit:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `precache --config CONFIG once ARGS...`, which must exit 0; its summary.
pub fn once_ok(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["once"];
    all.extend(args);
    let (code, summary, stderr) = run_cli(config, &all);
    assert_eq!(code, Some(0), "once {args:?}: {stderr}");
    summary
}

/// Runs `precache --config CONFIG ARGS...`; returns its exit code, its
/// stdout as JSON (`Null` when it is not JSON) and its stderr.
pub fn run_cli(config: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("the precache binary runs");
    (
        out.status.code(),
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs recorded in Redis (`precache:runs`), newest first; empty while
/// Redis is down.
pub fn history(redis: &RedisServer) -> Vec<serde_json::Value> {
    let Ok(mut conn) = redis::Client::open(redis.url()).and_then(|c| c.get_connection()) else {
        return Vec::new();
    };
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg("precache:runs")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap_or_default();
    items
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect()
}

/// The change feed's entries (`precache:changes`), oldest first: each a
/// map of field to value.
pub fn feed(redis: &RedisServer) -> Vec<std::collections::BTreeMap<String, String>> {
    feed_in(&mut redis.conn())
}

/// [`feed`] of the Redis `conn` is connected to.
pub fn feed_in(conn: &mut redis::Connection) -> Vec<std::collections::BTreeMap<String, String>> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("precache:changes")
        .arg("-")
        .arg("+")
        .query(conn)
        .unwrap_or_default();
    entries
        .into_iter()
        .map(|(_, fields)| fields.into_iter().collect())
        .collect()
}

/// The ids a feed entry lists under `category`.
pub fn feed_ids(entry: &std::collections::BTreeMap<String, String>, category: &str) -> Vec<i64> {
    entry
        .get(category)
        .map(|v| serde_json::from_str(v).unwrap())
        .unwrap_or_default()
}

/// A GET's body, whatever its status; `None` when nothing answered.
pub fn http_get(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().ok()?;
    response.body_mut().read_to_string().ok()
}

/// The `metrics.bind` address a config file written here listens on.
pub fn http_addr(config: &Path) -> String {
    let table: toml::Table = std::fs::read_to_string(config).unwrap().parse().unwrap();
    table["metrics"]["bind"].as_str().unwrap().to_string()
}

/// Roots holding matches, every other one: they answer "no matches".
pub fn silence_half_the_roots(sim: &SimServer) -> Vec<i64> {
    let roots: Vec<i64> = sim.with_data(|d| {
        let mut roots: Vec<i64> = d
            .visible_match_ids()
            .iter()
            .filter_map(|m| d.match_root(*m))
            .collect();
        roots.sort_unstable();
        roots.dedup();
        roots
    });
    let silent: Vec<i64> = roots.iter().copied().step_by(2).collect();
    sim.set_fault(
        "tournament_matches",
        precache::sim::Fault {
            hostile_rate: 1.0,
            hostile: Some(precache::sim::Hostile::EmptyList),
            ids: Some(silent.clone()),
            ..precache::sim::Fault::default()
        },
    );
    silent
}

/// A simulator, a private Redis and in-process services (the runner, its
/// writer; the warm-up when started), set up by `tune`.
pub struct Rig {
    pub sim: SimServer,
    pub redis: RedisServer,
    _logs: TempDir,
    pub config: Config,
    services: Option<precache::daemon::Services>,
}

impl Rig {
    pub fn with(seed: u64, tag: &str, tune: impl FnOnce(&mut Config)) -> Rig {
        let sim = sim(Scale::Small, seed);
        let redis = RedisServer::start();
        let logs = TempDir::new(tag);
        let mut config = full_config(&sim, &redis, logs.path());
        tune(&mut config);
        let services = precache::daemon::Services::start(&config).unwrap();
        Rig {
            sim,
            redis,
            _logs: logs,
            config,
            services: Some(services),
        }
    }

    pub fn services(&mut self) -> &mut precache::daemon::Services {
        self.services
            .as_mut()
            .expect("services are running between run_fresh calls")
    }

    /// Starts the warm-up, waits (up to `limit`) for `members` to be done
    /// or failed, stops it; what became of them.
    pub fn warm_up(
        &mut self,
        members: &[String],
        limit: std::time::Duration,
    ) -> precache::report::WarmCounts {
        self.services().start_warmer(true).unwrap();
        let counts = self
            .services()
            .warmer
            .as_ref()
            .expect("just started")
            .wait_for(members, limit);
        drop(self.services().warmer.take());
        counts
    }

    pub fn run(&mut self) -> precache::report::RunReport {
        self.services().runner.run_once(false)
    }

    /// A new process's run: nothing in memory, everything from Redis
    /// (what `precache once` does).
    pub fn run_fresh(&mut self) -> precache::report::RunReport {
        if let Some(s) = self.services.take() {
            s.shutdown();
        }
        self.services = Some(precache::daemon::Services::start(&self.config).unwrap());
        self.run()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(s) = self.services.take() {
            s.shutdown();
        }
    }
}

/// Every data key (the seed's five and each `tournaments_season_*`) and
/// its `data` list.
pub fn data_of(redis: &RedisServer) -> std::collections::BTreeMap<String, serde_json::Value> {
    data_in(&mut redis.conn())
}

/// [`data_of`] the Redis `conn` is connected to.
pub fn data_in(
    conn: &mut redis::Connection,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    dump_in(conn)
        .into_iter()
        .map(|(key, text)| {
            let data = precache::store::parse_entry(&text)
                .map(serde_json::Value::Array)
                .unwrap_or(serde_json::Value::String(format!(
                    "not an entry: {text:.60}"
                )));
            (key, data)
        })
        .collect()
}

/// What a fresh full write of what `sim` serves now leaves in an empty
/// Redis.
pub fn fresh_write(sim: &SimServer) -> std::collections::BTreeMap<String, serde_json::Value> {
    let redis = RedisServer::start();
    let logs = TempDir::new("fresh");
    let config = full_config(sim, &redis, logs.path());
    let mut services = precache::daemon::Services::start(&config).unwrap();
    let report = services.runner.run_once(false);
    services.shutdown();
    assert_eq!(
        report.summary.status,
        precache::report::RunStatus::Success,
        "{:?}",
        report.summary.error
    );
    data_of(&redis)
}

/// The cache in `redis` is what a fresh full write of `sim` leaves.
pub fn assert_cache_is_the_upstream(sim: &SimServer, redis: &RedisServer, what: &str) {
    assert_holds_the_upstream(&mut redis.conn(), sim, what);
}

/// The cache in the Redis `conn` is connected to is what a fresh full
/// write of `sim` leaves.
pub fn assert_holds_the_upstream(conn: &mut redis::Connection, sim: &SimServer, what: &str) {
    let held = data_in(conn);
    let fresh = fresh_write(sim);
    let differing: Vec<&String> = fresh
        .keys()
        .chain(held.keys())
        .filter(|k| held.get(*k) != fresh.get(*k))
        .collect();
    assert!(
        differing.is_empty(),
        "{what}: keys differ from a fresh write: {differing:?}"
    );
}

/// The `ACL SETUSER` line of the README, as written there.
pub fn readme_acl_rule() -> String {
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let block = readme
        .split("```acl\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README gives the ACL rule in an ```acl block");
    block.trim().to_string()
}

/// The password the tests give the README's user.
pub const ACL_PASSWORD: &str = "s3cret-acl-pw";

/// Runs the README's rule (its password replaced by [`ACL_PASSWORD`]) on
/// `conn`, the default user's.
pub fn apply_readme_acl(conn: &mut redis::Connection) {
    let rule = readme_acl_rule().replace("CHANGE-ME", ACL_PASSWORD);
    let mut words = rule.split_whitespace();
    assert_eq!(words.next(), Some("ACL"));
    let mut cmd = redis::cmd("ACL");
    for word in words {
        cmd.arg(word);
    }
    let _: () = cmd.query(conn).expect("the README's rule is valid ACL");
}

/// Asserts that Redis refused `result` for want of permissions.
pub fn assert_refused(result: redis::RedisResult<redis::Value>, what: &str) {
    let err = result.expect_err(what);
    assert!(err.to_string().contains("no permissions"), "{what}: {err}");
}

/// What the README's rule must refuse, refused on `user` (a connection
/// logged in as that user): the flushes, `CONFIG`, `KEYS`, keys outside it.
pub fn assert_the_rule_refuses(user: &mut redis::Connection) {
    assert_refused(redis::cmd("FLUSHALL").query(user), "FLUSHALL");
    assert_refused(redis::cmd("FLUSHDB").query(user), "FLUSHDB");
    assert_refused(
        redis::cmd("CONFIG").arg("GET").arg("*").query(user),
        "CONFIG GET",
    );
    assert_refused(redis::cmd("KEYS").arg("*").query(user), "KEYS");
    assert_refused(
        redis::cmd("SET").arg("someone:else").arg("x").query(user),
        "a key outside the rule",
    );
    assert_refused(
        redis::cmd("GET").arg("session:42").query(user),
        "reading outside the rule",
    );
}
