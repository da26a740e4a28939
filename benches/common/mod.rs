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
    let port = free_port().expect("a free port");
    let child = Command::new(env!("CARGO_BIN_EXE_precache"))
        .args(["sim", "--scale", scale, "--port", &port.to_string()])
        .args(["--latency-ms", &latency_ms.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("precache sim starts");
    let url = format!("http://127.0.0.1:{port}");
    // A 10x data set takes a while to generate.
    let deadline = Instant::now() + Duration::from_secs(600);
    while ureq::get(&format!("{url}/_sim/stats")).call().is_err() {
        assert!(Instant::now() < deadline, "the simulator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Sim(child, url)
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
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut conn)
        .expect("INFO");
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
