//! What the benchmarks share: the simulator as a child process, a config
//! pointed at it, and readings of Redis and of this process.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use precache::config::{Config, Secret};
use precache::sim::local::free_port;

/// The simulator child and its URL; killed on drop.
pub struct Sim(Child, pub String);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `precache sim --scale SCALE` as a child process, so its CPU and memory
/// are not the measured process's.
pub fn start_sim(scale: &str, latency_ms: u64) -> Sim {
    start_sim_with(scale, latency_ms, None, false)
}

/// As [`start_sim`]; with `tls`, HTTPS with that certificate of a
/// [`precache::sim::local::LocalCa`], and gzip answers when `gzip`.
pub fn start_sim_with(
    scale: &str,
    latency_ms: u64,
    tls: Option<&precache::sim::local::Issued>,
    gzip: bool,
) -> Sim {
    let port = free_port().expect("a free port");
    let mut command = Command::new(env!("CARGO_BIN_EXE_precache"));
    command
        .args(["sim", "--scale", scale, "--port", &port.to_string()])
        .args(["--latency-ms", &latency_ms.to_string()]);
    if let Some(issued) = tls {
        command
            .arg("--tls-cert")
            .arg(&issued.cert_pem)
            .arg("--tls-key")
            .arg(&issued.key_pem);
    }
    if gzip {
        command.arg("--gzip");
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("precache sim starts");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let sim = Sim(child, format!("{scheme}://127.0.0.1:{port}"));
    // A 10x data set takes a while to generate.
    let deadline = Instant::now() + Duration::from_secs(600);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the simulator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    sim
}

/// The repository's config.toml pointed at `sim` and `redis_url`.
pub fn config(sim: &Sim, redis_url: &str, logs: &std::path::Path) -> Config {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
        .expect("config.toml");
    let mut c = Config::from_toml_str(&text, std::path::Path::new("config.toml"), &|_| {
        Err(std::env::VarError::NotPresent)
    })
    .expect("config.toml is valid");
    c.upstream.api_url = sim.1.clone();
    c.upstream.token_url = format!("{}/connect/token", sim.1);
    c.redis.url = Secret::new(redis_url.to_string());
    c.logs.dir = logs.to_path_buf();
    c
}

/// Bytes Redis has received so far (`INFO stats`).
pub fn net_input_bytes(redis_url: &str) -> u64 {
    let mut conn = redis::Client::open(redis_url)
        .and_then(|c| c.get_connection())
        .expect("redis answers");
    net_input_bytes_of(&mut conn)
}

/// [`net_input_bytes`] of the Redis `conn` is connected to.
pub fn net_input_bytes_of(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(conn).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_input_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Peak resident memory of this process so far (Linux), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// `precache run` as a child process, driven over its HTTP endpoints;
/// killed on drop.
pub struct DaemonChild {
    child: Child,
    base: String,
    agent: ureq::Agent,
    admin_token: String,
    /// How often `/status` is asked while waiting for a run (each ask
    /// costs the daemon a little CPU, which a benchmark may be measuring).
    poll: Duration,
}

impl Drop for DaemonChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DaemonChild {
    /// Starts the daemon on `config`, whose `metrics.bind` is port `port`
    /// and whose `metrics.admin_token` is `admin_token`.
    pub fn start(
        config: &std::path::Path,
        port: u16,
        admin_token: &str,
        poll: Duration,
    ) -> DaemonChild {
        let child = Command::new(env!("CARGO_BIN_EXE_precache"))
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("precache run starts");
        DaemonChild {
            child,
            base: format!("http://127.0.0.1:{port}"),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into(),
            admin_token: admin_token.to_string(),
            poll,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The body of `GET path` (empty when it does not answer).
    pub fn get(&self, path: &str) -> String {
        self.agent
            .get(&format!("{}{path}", self.base))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    }

    /// The last run's stats (`/status`), `Null` before the first.
    pub fn last_run(&self) -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&self.get("/status"))
            .map(|v| v["last_run"].clone())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits (up to `limit`) for a run other than `before` to be the last one.
    pub fn wait_run(&self, before: &serde_json::Value, limit: Duration) -> serde_json::Value {
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

    /// One run started now over `POST /run`; its stats when it ends.
    pub fn trigger(&self, limit: Duration) -> serde_json::Value {
        let before = self.last_run();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self
                .agent
                .post(&format!("{}/run", self.base))
                .header("Authorization", &format!("Bearer {}", self.admin_token))
                .send_empty();
            if answer.is_ok_and(|r| r.status() == 202) {
                break;
            }
            assert!(Instant::now() < deadline, "POST /run taken");
            std::thread::sleep(self.poll);
        }
        self.wait_run(&before, limit)
    }
}
