//! `precache run` as a child process: its process side (signals, exit) and
//! its HTTP side (status, metrics, the admin endpoints).

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `precache --config CONFIG run` as a child process, killed (and reaped)
/// when the test drops it.
///
/// Its HTTP side is found from the config file: `metrics.bind` for the
/// address, `metrics.admin_token` for the admin endpoints.
pub struct DaemonChild {
    child: Child,
    config: PathBuf,
    /// `http://` and the `metrics.bind` address.
    base: String,
    admin_token: String,
    agent: ureq::Agent,
    /// How often a wait asks again (each ask costs the daemon a little
    /// CPU, which a benchmark may be measuring).
    poll: Duration,
}

/// How to start a [`DaemonChild`]: [`DaemonChild::command`], options, then
/// [`DaemonCommand::start`].
pub struct DaemonCommand {
    config: PathBuf,
    nofile: Option<u64>,
    env: Vec<(OsString, Option<OsString>)>,
    poll: Duration,
    http_timeout: Duration,
}

impl DaemonCommand {
    /// `RLIMIT_NOFILE` lowered to `nofile` (through the shell's `ulimit`,
    /// which then execs the daemon).
    pub fn nofile(mut self, nofile: u64) -> DaemonCommand {
        self.nofile = Some(nofile);
        self
    }

    /// An environment variable set for the daemon.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> DaemonCommand {
        let value = value.as_ref().to_os_string();
        self.env.push((key.as_ref().to_os_string(), Some(value)));
        self
    }

    /// An environment variable removed for the daemon.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> DaemonCommand {
        self.env.push((key.as_ref().to_os_string(), None));
        self
    }

    /// How often [`DaemonChild::wait_run`] and [`DaemonChild::trigger`] ask
    /// (25 ms unless set).
    pub fn poll_every(mut self, poll: Duration) -> DaemonCommand {
        self.poll = poll;
        self
    }

    /// How long one HTTP request to the daemon may take (10 s unless set).
    pub fn http_timeout(mut self, timeout: Duration) -> DaemonCommand {
        self.http_timeout = timeout;
        self
    }

    pub fn start(self) -> DaemonChild {
        let mut command = match self.nofile {
            None => Command::new(crate::bin()),
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(crate::bin());
                sh
            }
        };
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let child = command
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the precache binary starts");
        let bind = crate::config::file_value(&self.config, "metrics", "bind").unwrap_or_default();
        DaemonChild {
            child,
            base: format!("http://{bind}"),
            admin_token: crate::config::file_value(&self.config, "metrics", "admin_token")
                .unwrap_or_default(),
            config: self.config,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(self.http_timeout))
                .build()
                .into(),
            poll: self.poll,
        }
    }
}

impl DaemonChild {
    /// Starts the daemon on `config` with the defaults.
    pub fn start(config: &Path) -> DaemonChild {
        DaemonChild::command(config).start()
    }

    /// The daemon on `config`, with options to set before it starts.
    pub fn command(config: &Path) -> DaemonCommand {
        DaemonCommand {
            config: config.to_path_buf(),
            nofile: None,
            env: Vec::new(),
            poll: Duration::from_millis(25),
            http_timeout: Duration::from_secs(10),
        }
    }

    /// The config file it was started on.
    pub fn config(&self) -> &Path {
        &self.config
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the lease and the run history name this instance.
    pub fn instance_id(&self) -> String {
        precache::util::instance_id_of(self.pid())
    }

    // The process.

    pub fn signal(&self, name: &str) {
        crate::send_signal(self.child.id(), name);
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("the daemon's status can be read")
            .is_none()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        self.child.kill().expect("the daemon can be killed");
        self.child.wait().expect("the killed daemon is reaped");
    }

    /// Waits for the exit; returns the exit code and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the daemon's status") {
                return (status.code(), start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "the daemon did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit, however long it takes; the exit code.
    pub fn wait(&mut self) -> Option<i32> {
        self.child.wait().expect("the daemon is reaped").code()
    }

    // The HTTP side.

    /// The URL of `path` on its HTTP server (`http://ADDR/PATH`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`: the status and the body; status 0 when nothing answers.
    pub fn get(&self, path: &str) -> (u16, String) {
        match self.agent.get(&self.url(path)).call() {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    /// The body of `GET path`, whatever its status (empty when nothing
    /// answers).
    pub fn body(&self, path: &str) -> String {
        self.get(path).1
    }

    /// `POST path` with `Authorization: Bearer TOKEN` when a token is
    /// given: the status and the body (the daemon must answer).
    pub fn post(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut request = self.agent.post(&self.url(path));
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut r = request
            .send_empty()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    }

    /// `/status`, when it answers JSON.
    pub fn status(&self) -> Option<Value> {
        serde_json::from_str(&self.body("/status")).ok()
    }

    /// This instance's role (`leader`, `standby`), when it answers.
    pub fn role(&self) -> Option<String> {
        Some(self.status()?["role"]["role"].as_str()?.to_string())
    }

    /// Runs it ran since it started, newest first (none while it does not
    /// answer).
    pub fn runs(&self) -> Vec<Value> {
        self.status()
            .and_then(|s| s["runs"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The last run's stats (`/status`), `Null` before the first.
    pub fn last_run(&self) -> Value {
        self.status()
            .map(|v| v["last_run"].clone())
            .unwrap_or(Value::Null)
    }

    /// `/metrics`, which must answer 200.
    pub fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "/metrics: {body}");
        body
    }

    /// Waits (up to `limit`) for a run other than `before` to be the last
    /// one; its stats.
    pub fn wait_run(&self, before: &Value, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.last_run();
            if !now.is_null() && now["run_id"] != before["run_id"] {
                return now;
            }
            assert!(Instant::now() < deadline, "the run ends");
            std::thread::sleep(self.poll);
        }
    }

    /// POSTs the admin endpoint `path` (`/run`, `/accept-shrink`) with the
    /// config's admin token until it is taken (202), then waits for the
    /// run it starts; that run's stats. Each wait lasts up to `limit`.
    pub fn trigger(&self, path: &str, limit: Duration) -> Value {
        let before = self.last_run();
        let deadline = Instant::now() + limit;
        loop {
            let answer = self
                .agent
                .post(&self.url(path))
                .header("Authorization", &format!("Bearer {}", self.admin_token))
                .send_empty();
            if answer.is_ok_and(|r| r.status() == 202) {
                break;
            }
            assert!(Instant::now() < deadline, "POST {path} taken");
            std::thread::sleep(self.poll);
        }
        self.wait_run(&before, limit)
    }
}

impl Drop for DaemonChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
