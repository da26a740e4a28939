//! Local services for the demo, the tests and the benchmarks: a free
//! loopback port, and a private `redis-server` that persists nothing and
//! is killed on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        // The daemon's own allocator settings are not the server's.
        .env_remove("GLIBC_TUNABLES")
        .env_remove(crate::alloc::RESTARTED)
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
pub fn start_private_redis() -> std::io::Result<PrivateRedis> {
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("precache-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let child = spawn_redis_server(port, &dir)?;
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
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("redis-server on port {port} did not answer within 10 s"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a Redis answers PING at `url` (within a few seconds).
pub fn redis_answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    client
        .get_connection_with_timeout(Duration::from_secs(2))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}
