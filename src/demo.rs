//! `precache demo`: the simulator and the daemon together, for a first look.
//!
//! Starts the simulator where the configuration's `upstream.api_url` points,
//! finds a Redis (the configured one, or a private `redis-server` in a temp
//! directory when none answers), and applies a small churn step before each
//! run so the newcomer sees changes being detected.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{Config, Secret};
use crate::store::{Keys, Store};

/// A `redis-server` we started; killed on drop.
pub struct PrivateRedis {
    child: Child,
    dir: PathBuf,
    pub url: String,
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Spawns `redis-server` on loopback `port`, working in `dir`, persisting
/// nothing (the demo's and the tests' private servers).
pub fn spawn_redis_server(
    port: u16,
    dir: &std::path::Path,
) -> std::io::Result<std::process::Child> {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// Starts `redis-server` on a free loopback port with nothing persisted.
pub fn start_private_redis() -> Result<PrivateRedis, String> {
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let dir = std::env::temp_dir().join(format!("precache-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let child =
        spawn_redis_server(port, &dir).map_err(|e| format!("cannot start redis-server: {e}"))?;
    let redis = PrivateRedis {
        child,
        dir,
        url: format!("redis://127.0.0.1:{port}/0"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if redis_answers(&redis.url) {
            return Ok(redis);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "redis-server on port {port} did not answer within 10 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn redis_answers(url: &str) -> bool {
    Store::new(url, Keys::default())
        .and_then(|mut s| s.ping())
        .is_ok()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Makes sure `config.redis.url` answers, starting a private Redis if needed.
pub fn ensure_redis(config: &mut Config) -> Result<Option<PrivateRedis>, String> {
    if redis_answers(config.redis.url.expose()) {
        return Ok(None);
    }
    if !on_path("redis-server") {
        return Err("no Redis answers at redis.url and redis-server is not on PATH".into());
    }
    let redis = start_private_redis()?;
    eprintln!(
        "precache demo: no Redis answered at the configured redis.url; started a private redis-server at {} (gone when the demo stops)",
        redis.url
    );
    config.redis.url = Secret::new(redis.url.clone());
    Ok(Some(redis))
}

/// The socket address of `upstream.api_url` (where the simulator listens).
pub fn sim_address(config: &Config) -> Result<SocketAddr, String> {
    let url = &config.upstream.api_url;
    let host_port = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(url)
        .split('/')
        .next()
        .unwrap_or_default();
    let with_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:80")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            format!("cannot resolve upstream.api_url {url:?} to start the simulator there")
        })
}
