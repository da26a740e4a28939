//! `precache demo`: the simulator and the daemon together, for a first look.
//!
//! Starts the simulator where the configuration's `upstream.api_url` points,
//! finds a Redis (the configured one, or a private `redis-server` in a temp
//! directory when none answers) and says which, pausing with a warning when
//! that Redis already holds data, and applies a small churn step after each
//! run so the newcomer sees changes being detected. What it announces is
//! true: with adaptive polling the churn goes to tournaments the next run
//! asks for (the live ones), or, when there are none, the announcement
//! says within how many runs the quieter ones are asked.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use super::DaemonError;
use crate::config::{Config, Secret, SyncConfig};
use crate::report::Tier;
use crate::sim::local::{PrivateRedis, redis_answers, redis_key_count, start_private_redis};
use crate::sim::{ChangedIds, ChurnSpec, Scale, SimOptions, SimServer};

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

/// How long the demo waits, after warning, before it writes into a Redis
/// that already holds data.
const OCCUPIED_PAUSE: std::time::Duration = std::time::Duration::from_secs(5);

/// Makes sure `config.redis.url` answers, starting a private Redis if
/// needed, and says which Redis the demo writes to.
pub fn ensure_redis(config: &mut Config) -> Result<Option<PrivateRedis>, DemoError> {
    let shown = crate::config::redacted_url(config.redis.url.expose());
    if redis_answers(config.redis.url.expose()) {
        match redis_key_count(config.redis.url.expose()) {
            Some(0) | None => log::info!("demo: writing to the Redis at {shown} (redis.url)"),
            Some(keys) => {
                log::warn!(
                    "demo: the Redis at {shown} (redis.url) already holds {keys} key(s); the demo writes precache's keys there (valid_seasons, tournament_matches, GET:* entries, precache:*) and updates them every run. Ctrl-C within {} s leaves it untouched",
                    OCCUPIED_PAUSE.as_secs()
                );
                std::thread::sleep(OCCUPIED_PAUSE);
                log::info!("demo: writing to the Redis at {shown}");
            }
        }
        return Ok(None);
    }
    if !on_path("redis-server") {
        return Err(DemoError::NoRedisServer);
    }
    let redis = start_private_redis().map_err(DemoError::PrivateRedis)?;
    log::info!(
        "demo: no Redis answered at {shown} (redis.url); writing to a private redis-server at {} instead (gone when the demo stops)",
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
    super::run(config, &read_demo_config, &mut |_, config| {
        // Between runs, as the real data changes between polls.
        let (changed, when) = churn_for_the_next_run(&sim, &config.sync);
        let ids = serde_json::to_string(&changed).unwrap_or_default();
        log::info!("demo: churned the simulator: {ids}; {when}");
    })
}

/// A small churn step and when the daemon will see it. With adaptive
/// polling only the live tournaments (a match within a day) are asked every
/// run, so the churn goes there; the seasons and tournaments are asked
/// every run anyway. The simulator tells live roots by precache's default
/// windows: with other windows, or without live tournaments, the churn
/// goes anywhere and the announcement says within how many runs it shows.
fn churn_for_the_next_run(sim: &SimServer, sync: &SyncConfig) -> (ChangedIds, String) {
    let defaults = Config::default().sync;
    let simulator_knows_live = sync.live_window_hours == defaults.live_window_hours
        && sync.active_window_days == defaults.active_window_days;
    let spec = ChurnSpec {
        matches_modified: 5,
        matches_added: 1,
        matches_removed: 1,
        tournaments_renamed: 1,
        root_tier: (sync.adaptive && simulator_knows_live).then_some(Tier::Live),
        ..ChurnSpec::default()
    };
    let changed = sim.churn(&spec);
    if !sync.adaptive {
        return (
            changed,
            "the next run asks every tournament and should detect exactly these".into(),
        );
    }
    if spec.root_tier.is_some() && !changed.individual_matches.is_empty() {
        return (
            changed,
            "the next run asks every live tournament (a match within sync.live_window_hours, where this churn went) and should detect exactly these".into(),
        );
    }
    let mut all = changed;
    if spec.root_tier.is_some() {
        // No live tournament today: the matches change in quieter ones.
        all.extend(sim.churn(&ChurnSpec {
            root_tier: None,
            tournaments_renamed: 0,
            ..spec
        }));
    }
    let (active_every, dormant_every) = (sync.active_every, sync.dormant_every);
    (
        all,
        format!(
            "adaptive polling asks the tournaments whose matches changed every run (live), every {active_every} (active) or every {dormant_every} (dormant) runs: the tournament changes show in the next run, the match changes within {dormant_every} runs"
        ),
    )
}
