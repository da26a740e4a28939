//! The in-process services on a harness, and what a fresh write of the
//! upstream leaves in Redis.

use std::collections::BTreeMap;
use std::time::Duration;

use precache::config::Config;
use precache::daemon::Services;
use precache::report::{RunReport, RunStatus, WarmCounts};
use precache::sim::SimServer;

use crate::config::repository_config;
use crate::{Harness, RedisServer, TempDir, data_in, data_of};

/// A harness (simulator and private Redis) with the in-process services
/// running on `config`: the runner, its writer, the warm-up when started.
/// Made by [`Harness::rig`].
pub struct Rig {
    harness: Harness,
    /// What the services run on (the harness's config as the test tuned it).
    pub config: Config,
    services: Option<Services>,
}

impl Rig {
    pub(crate) fn start(harness: Harness, tune: impl FnOnce(&mut Config)) -> Rig {
        let mut config = harness.config();
        tune(&mut config);
        let services = Services::start(&config).expect("the services start");
        Rig {
            harness,
            config,
            services: Some(services),
        }
    }

    pub fn harness(&self) -> &Harness {
        &self.harness
    }

    pub fn sim(&self) -> &SimServer {
        self.harness.sim()
    }

    pub fn redis(&self) -> &RedisServer {
        self.harness.redis()
    }

    pub fn services(&mut self) -> &mut Services {
        self.services.as_mut().expect(
            "the services are running (Rig::shutdown stopped them, Rig::restart starts them)",
        )
    }

    /// One run, as the daemon runs it.
    pub fn run(&mut self) -> RunReport {
        self.services().runner.run_once(false)
    }

    /// One dry run: compared against the cache, nothing written.
    pub fn dry_run(&mut self) -> RunReport {
        self.services().runner.run_once(true)
    }

    /// Starts the warm-up, waits (up to `limit`) for `members` to be done
    /// or failed, stops it; what became of them.
    pub fn warm_up(&mut self, members: &[String], limit: Duration) -> WarmCounts {
        self.services()
            .start_warmer(true)
            .expect("the warm-up starts");
        let counts = self
            .services()
            .warmer
            .as_ref()
            .expect("just started")
            .wait_for(members, limit);
        drop(self.services().warmer.take());
        counts
    }

    /// Stops the services (the writer and debug threads flush their files).
    pub fn shutdown(&mut self) {
        if let Some(services) = self.services.take() {
            services.shutdown();
        }
    }

    /// A new process's services on the same config: nothing in memory,
    /// everything read from Redis.
    pub fn restart(&mut self) {
        self.shutdown();
        self.services = Some(Services::start(&self.config).expect("the services start again"));
    }

    /// A new process's run (what `precache once` does): [`Rig::restart`],
    /// then [`Rig::run`].
    pub fn run_fresh(&mut self) -> RunReport {
        self.restart();
        self.run()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Asserts that a run ended `expected`; the message is its summary.
#[track_caller]
pub fn assert_status(report: &RunReport, expected: RunStatus) {
    assert_eq!(report.summary.status, expected, "{:?}", report.summary);
}

/// What a fresh full write of what `sim` serves now leaves in an empty
/// Redis.
pub fn fresh_write(sim: &SimServer) -> BTreeMap<String, serde_json::Value> {
    let redis = RedisServer::start();
    let logs = TempDir::new("fresh");
    let config = repository_config(Some(&sim.url()), &redis.url(), logs.path(), true);
    let mut services = Services::start(&config).expect("the services start");
    let report = services.runner.run_once(false);
    services.shutdown();
    assert_eq!(
        report.summary.status,
        RunStatus::Success,
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
