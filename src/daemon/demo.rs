//! `precache demo`: the simulator and the daemon together, for a first look.
//!
//! Starts the simulator where the configuration's `upstream.api_url` points,
//! finds a Redis (the configured one, or a private `redis-server` in a temp
//! directory when none answers), and applies a small churn step before each
//! run so the newcomer sees changes being detected.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use super::DaemonError;
use crate::config::{Config, Secret};
use crate::sim::local::{PrivateRedis, redis_answers, start_private_redis};
use crate::sim::{ChurnSpec, Scale, SimOptions, SimServer};

/// Why the demo could not start its pieces.
#[derive(Debug)]
pub enum DemoError {
    NoRedisServer,
    PrivateRedis(std::io::Error),
    /// `upstream.api_url` does not name an address to serve the simulator on.
    SimAddress(String),
    Sim(SocketAddr, std::io::Error),
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::NoRedisServer => {
                f.write_str("no Redis answers at redis.url and redis-server is not on PATH")
            }
            DemoError::PrivateRedis(e) => write!(f, "cannot start a private redis-server: {e}"),
            DemoError::SimAddress(url) => write!(
                f,
                "cannot resolve upstream.api_url {url:?} to start the simulator there"
            ),
            DemoError::Sim(addr, e) => write!(f, "cannot start the simulator on {addr}: {e}"),
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Makes sure `config.redis.url` answers, starting a private Redis if needed.
pub fn ensure_redis(config: &mut Config) -> Result<Option<PrivateRedis>, DemoError> {
    if redis_answers(config.redis.url.expose()) {
        return Ok(None);
    }
    if !on_path("redis-server") {
        return Err(DemoError::NoRedisServer);
    }
    let redis = start_private_redis().map_err(DemoError::PrivateRedis)?;
    eprintln!(
        "precache demo: no Redis answered at the configured redis.url; started a private redis-server at {} (gone when the demo stops)",
        redis.url
    );
    config.redis.url = Secret::new(redis.url.clone());
    Ok(Some(redis))
}

/// The socket address of `upstream.api_url` (where the simulator listens).
pub fn sim_address(config: &Config) -> Result<SocketAddr, DemoError> {
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
        .ok_or_else(|| DemoError::SimAddress(url.clone()))
}

/// `precache demo`: a Redis (the configured one, or a private one), the
/// simulator where `upstream.api_url` points, and the daemon with a small
/// churn applied after each run, until a signal.
/// `read_config` reads the configuration file again on a reload; the
/// demo's own settings (its interval, its Redis) stay.
pub fn run(
    config: &mut Config,
    scale: Scale,
    read_config: &super::ReadConfig<'_>,
) -> Result<(), DaemonError> {
    let _redis = ensure_redis(config).map_err(DaemonError::Demo)?;
    let bind = sim_address(config).map_err(DaemonError::Demo)?;
    let sim = SimServer::start(SimOptions {
        bind,
        scale,
        client_id: config.upstream.client_id.clone(),
        client_secret: config.upstream.client_secret.expose().to_string(),
        ..SimOptions::default()
    })
    .map_err(|e| DaemonError::Demo(DemoError::Sim(bind, e)))?;
    log::info!(
        "demo: simulator on {} ({scale:?}): {:?}",
        sim.url(),
        sim.stats()
    );
    let (interval, redis_url) = (config.sync.interval_secs, config.redis.url.clone());
    let read_demo_config = || {
        read_config().map(|mut c| {
            c.sync.interval_secs = interval;
            c.redis.url = redis_url.clone();
            c
        })
    };
    super::run(config, &read_demo_config, &mut |_| {
        // Between runs, as the real data changes between polls.
        let changed = sim.churn(&ChurnSpec {
            matches_modified: 5,
            matches_added: 1,
            matches_removed: 1,
            tournaments_renamed: 1,
            ..ChurnSpec::default()
        });
        log::info!("demo: churned the simulator, the next run should detect {changed:?}");
    })
}
