//! The harness builder: what a test sets up before it runs precache.

use std::path::{Path, PathBuf};

use precache::config::Config;
use precache::sim::{Scale, SimOptions, SimServer};

use crate::config::{Base, NO_REDIS, Override, quoted, repository_config, write_file};
use crate::{DaemonChild, RedisServer, Rig, SimCommand, SimProcess, TempDir};

/// A test's world: a temporary directory, and as asked a simulator and a
/// private Redis, with configs pointed at them. Dropped at the end of the
/// test: Redis and the simulator stop, the directory goes.
///
/// ```ignore
/// let h = Harness::new("warm").sim(Scale::Small, 31).redis().build();
/// let cfg = h.write_config(&[("sync", "adaptive", "false".into())]);
/// once_ok(&cfg, &[]);
/// assert!(!h.redis().keys("GET:*").is_empty());
/// ```
pub struct Harness {
    // Dropped in this order: Redis, the simulators, then the directory.
    redis: Option<RedisServer>,
    sim: Option<SimServer>,
    sim_process: Option<SimProcess>,
    deployed_defaults: bool,
    dir: TempDir,
}

/// What [`Harness::new`] returns: say what the test needs, then
/// [`HarnessBuilder::build`].
pub struct HarnessBuilder {
    dir: TempDir,
    sim: Option<SimOptions>,
    sim_process: Option<SimCommand>,
    redis: bool,
    deployed_defaults: bool,
}

impl Harness {
    /// A harness whose directory is named after `tag`; nothing else yet.
    // `Harness::new(..)...build()` reads as what it makes; the builder is
    // only the way there.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(tag: &str) -> HarnessBuilder {
        HarnessBuilder {
            dir: TempDir::new(tag),
            sim: None,
            sim_process: None,
            redis: false,
            deployed_defaults: false,
        }
    }
}

impl Harness {
    /// What most tests need: the small data set's simulator from `seed`
    /// and a private Redis (`Harness::new(tag).sim(Scale::Small,
    /// seed).redis().build()`).
    pub fn small(tag: &str, seed: u64) -> Harness {
        Harness::new(tag).sim(Scale::Small, seed).redis().build()
    }
}

impl HarnessBuilder {
    /// The harness's directory, already there: for what the simulator
    /// needs before it starts (a CA for its certificate).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An in-process simulator of `scale`'s data set from `seed`.
    pub fn sim(self, scale: Scale, seed: u64) -> HarnessBuilder {
        self.sim_with(SimOptions {
            scale,
            seed,
            ..SimOptions::default()
        })
    }

    /// An in-process simulator with these options, on a free loopback
    /// port (whatever `options.bind` says).
    pub fn sim_with(mut self, options: SimOptions) -> HarnessBuilder {
        self.sim = Some(SimOptions {
            bind: "127.0.0.1:0".parse().expect("a loopback address"),
            ..options
        });
        self
    }

    /// The simulator as a child process (for benchmarks: its CPU and
    /// memory are not the measured process's).
    pub fn sim_process(mut self, command: SimCommand) -> HarnessBuilder {
        self.sim_process = Some(command);
        self
    }

    /// A private `redis-server`, empty.
    pub fn redis(mut self) -> HarnessBuilder {
        self.redis = true;
        self
    }

    /// [`Harness::config`] as deployed, without the tests' shortcuts (a
    /// 5 s upstream timeout, the warm-up off): for benchmarks, whose
    /// figures are a deployment's.
    pub fn deployed_defaults(mut self) -> HarnessBuilder {
        self.deployed_defaults = true;
        self
    }

    /// Starts what was asked: the simulator, then Redis.
    pub fn build(self) -> Harness {
        assert!(
            self.sim.is_none() || self.sim_process.is_none(),
            "one simulator per harness"
        );
        let sim = self
            .sim
            .map(|options| SimServer::start(options).expect("the simulator starts on a free port"));
        let sim_process = self.sim_process.map(SimCommand::start);
        Harness {
            redis: self.redis.then(RedisServer::start),
            sim,
            sim_process,
            deployed_defaults: self.deployed_defaults,
            dir: self.dir,
        }
    }
}

impl Harness {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where [`Harness::config`] and [`Harness::write_config`] put the logs
    /// (and the debug files): `DIR/logs`.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir().join("logs")
    }

    /// The in-process simulator.
    pub fn sim(&self) -> &SimServer {
        self.sim
            .as_ref()
            .expect("the harness has an in-process simulator (Harness::new(..).sim(..))")
    }

    /// The simulator as a child process.
    pub fn sim_process(&self) -> &SimProcess {
        self.sim_process
            .as_ref()
            .expect("the harness has a simulator process (Harness::new(..).sim_process(..))")
    }

    /// The simulator's base URL, in-process or a child process.
    fn sim_url(&self) -> Option<String> {
        match (&self.sim, &self.sim_process) {
            (Some(sim), _) => Some(sim.url()),
            (None, Some(process)) => Some(process.url().to_string()),
            (None, None) => None,
        }
    }

    /// Stops the simulator: the upstream is gone.
    pub fn stop_sim(&mut self) {
        self.sim = None;
        self.sim_process = None;
    }

    /// The private Redis.
    pub fn redis(&self) -> &RedisServer {
        self.redis
            .as_ref()
            .expect("the harness has a private Redis (Harness::new(..).redis())")
    }

    /// Replaces the private Redis with a new, empty one (another port,
    /// another directory); configs written from now on point at it.
    pub fn fresh_redis(&mut self) {
        self.redis = None;
        self.redis = Some(RedisServer::start());
    }

    fn redis_url(&self) -> String {
        self.redis
            .as_ref()
            .map_or(NO_REDIS.to_string(), RedisServer::url)
    }

    /// The repository's config.toml for in-process services: pointed at
    /// the simulator and the private Redis (or, without one, a closed
    /// port), logs in [`Harness::logs_dir`]; unless
    /// [`HarnessBuilder::deployed_defaults`], with a 5 s upstream timeout
    /// and the warm-up off.
    pub fn config(&self) -> Config {
        repository_config(
            self.sim_url().as_deref(),
            &self.redis_url(),
            &self.logs_dir(),
            !self.deployed_defaults,
        )
    }

    /// Writes `DIR/config.toml` for the command line and the daemon: the
    /// repository's config.toml with `overrides` (`[section] key = value`
    /// lines replaced or added) over these defaults: the simulator's URLs,
    /// the private Redis (without one, a closed port: no test touches the
    /// machine's Redis), logs in `DIR/logs`, the HTTP server on a free
    /// port (a new one each call) and a leader lease of 3 s (a killed
    /// daemon's lease lapses quickly: the next daemon on the same Redis
    /// leads within seconds).
    pub fn write_config(&self, overrides: &[Override<'_>]) -> PathBuf {
        self.write_config_at(self.dir(), overrides)
    }

    /// As [`Harness::write_config`], in `DIR/name` (its own logs too): for
    /// several daemons or command lines side by side.
    pub fn write_config_in(&self, name: &str, overrides: &[Override<'_>]) -> PathBuf {
        self.write_config_at(&self.dir().join(name), overrides)
    }

    fn write_config_at(&self, dir: &Path, overrides: &[Override<'_>]) -> PathBuf {
        let mut defaults = self.reach(dir);
        defaults.push(("ha", "lease_secs", "3".into()));
        write_file(dir, Base::Repository, &defaults, overrides)
    }

    /// Writes `DIR/config.toml` holding only `overrides` and what reaching
    /// the simulator (with the simulator's client), the private Redis and
    /// a free port takes; every other key is its default. For benchmarks,
    /// whose configs are a deployment's, and for a binary of another
    /// revision, which does not know today's keys.
    pub fn write_minimal_config(&self, overrides: &[Override<'_>]) -> PathBuf {
        let mut defaults = self.reach(self.dir());
        defaults.push(("upstream", "client_id", quoted("demo")));
        defaults.push(("upstream", "client_secret", quoted("demo-secret")));
        write_file(self.dir(), Base::Empty, &defaults, overrides)
    }

    /// The lines that point a config file in `dir` at this harness.
    fn reach(&self, dir: &Path) -> Vec<Override<'static>> {
        let metrics_port = precache::sim::local::free_port().expect("a free port");
        let logs = dir.join("logs");
        let mut lines = vec![
            ("redis", "url", quoted(&self.redis_url())),
            ("logs", "dir", quoted(logs.to_str().expect("a UTF-8 path"))),
            (
                "metrics",
                "bind",
                quoted(&format!("127.0.0.1:{metrics_port}")),
            ),
        ];
        if let Some(url) = self.sim_url() {
            lines.push(("upstream", "api_url", quoted(&url)));
            lines.push((
                "upstream",
                "token_url",
                quoted(&format!("{url}/connect/token")),
            ));
        }
        lines
    }

    /// [`Harness::write_config`] and the daemon started on it.
    pub fn start_daemon(&self, overrides: &[Override<'_>]) -> DaemonChild {
        DaemonChild::start(&self.write_config(overrides))
    }

    /// The in-process services on [`Harness::config`] as `tune` leaves it.
    pub fn rig(self, tune: impl FnOnce(&mut Config)) -> Rig {
        Rig::start(self, tune)
    }
}
