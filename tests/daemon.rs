//! `precache run` as a child process: clean shutdown on SIGTERM (a run in
//! progress finishes, or is abandoned within the grace period leaving the
//! previous complete run), and a Redis outage that the daemon survives.

use std::time::Duration;

use kit::*;
use precache::sim::{ChurnSpec, Fault, Scale, SimServer};
use serde_json::Value;

fn matches_served(sim: &SimServer) -> u64 {
    requests(sim, "tournament_matches")
}

/// The cache equals what the simulator serves now.
fn assert_cache_matches(sim: &SimServer, redis: &RedisServer) {
    let stats = sim.stats();
    assert_eq!(
        redis.data("tournament_matches").len(),
        stats.matches,
        "tournament_matches"
    );
    assert_eq!(redis.data("unique_team_ids").len(), stats.teams);
    assert_eq!(redis.data("root_tournaments").len(), stats.root_tournaments);
    assert_eq!(redis.data("tournaments_in_season").len(), stats.tournaments);
}

#[test]
fn sigterm_mid_run_lets_the_run_finish_and_exits_zero() {
    let h = Harness::small("daemon", 21);
    let (sim, redis) = (h.sim(), h.redis());
    // Each match call takes 150 ms: the run lasts a second or two.
    sim.set_fault(
        "tournament_matches",
        Fault {
            latency_ms: 150,
            ..Fault::default()
        },
    );
    let mut daemon = h.start_daemon(&[("daemon", "shutdown_grace_secs", "10".into())]);
    wait_for("the first match calls", Duration::from_secs(20), || {
        matches_served(sim) >= 2
    });
    daemon.signal("TERM");
    let (code, took) = daemon.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10), "exited after {took:?}");
    // The run in progress finished and was written whole.
    let runs = history(redis);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "success");
    assert_cache_matches(sim, redis);
    let log = std::fs::read_to_string(h.logs_dir().join("precache.log")).unwrap();
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(log.contains("run loop stopped"), "{log}");
}

/// A daemon after its first run, stopped by SIGTERM once its second run's
/// match calls have begun under `fault` (after a churn, so that run has
/// something to write).
struct Interrupted {
    harness: Harness,
    /// What Redis held after the first run.
    settled: std::collections::BTreeMap<String, String>,
    code: Option<i32>,
    took: Duration,
}

fn sigterm_mid_second_run(
    seed: u64,
    grace_secs: u64,
    extra: &[(&str, &str, String)],
    fault: Fault,
) -> Interrupted {
    let harness = Harness::small("daemon", seed);
    let (sim, redis) = (harness.sim(), harness.redis());
    let mut overrides = vec![
        ("sync", "interval_secs", "1".into()),
        ("daemon", "shutdown_grace_secs", grace_secs.to_string()),
    ];
    overrides.extend(extra.iter().cloned());
    let mut daemon = harness.start_daemon(&overrides);
    wait_for("the first run", Duration::from_secs(20), || {
        !history(redis).is_empty()
    });
    let settled = redis.dump();
    sim.churn(&ChurnSpec {
        matches_modified: 3,
        ..Default::default()
    });
    sim.set_fault("tournament_matches", fault);
    let served = matches_served(sim);
    wait_for(
        "the second run's match calls",
        Duration::from_secs(20),
        || matches_served(sim) > served,
    );
    daemon.signal("TERM");
    let (code, took) = daemon.wait_exit(Duration::from_secs(10));
    sim.clear_faults();
    Interrupted {
        harness,
        settled,
        code,
        took,
    }
}

#[test]
fn a_run_that_cannot_finish_is_abandoned_within_the_grace_period() {
    // The next run meets an upstream that never answers match calls.
    let stopped = sigterm_mid_second_run(
        22,
        3,
        &[("upstream", "timeout_secs", "30".into())],
        Fault {
            stall_rate: 1.0,
            ..Fault::default()
        },
    );
    assert_eq!(stopped.code, Some(0));
    let took = stopped.took;
    assert!(took <= Duration::from_millis(3500), "exited after {took:?}");
    // Redis still holds the first run, whole and untouched.
    assert_eq!(stopped.harness.redis().dump(), stopped.settled);
}

/// A run a shutdown cuts short is recorded `cancelled`: it writes no data,
/// and it says nothing of the upstream (which answered every call it got).
#[test]
fn a_run_cut_short_by_shutdown_is_cancelled_not_the_upstream_down() {
    // One call at a time, 300 ms each: the next run needs several seconds
    // for its match calls, and the cancellation at half the grace period
    // (2 s) finds most of them not made.
    let stopped = sigterm_mid_second_run(
        23,
        4,
        &[
            ("sync", "adaptive", "false".into()),
            ("upstream", "max_concurrency", "1".into()),
        ],
        Fault {
            latency_ms: 300,
            ..Fault::default()
        },
    );
    assert_eq!(stopped.code, Some(0));
    let took = stopped.took;
    assert!(took < Duration::from_secs(4), "exited after {took:?}");
    let runs = history(stopped.harness.redis());
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["status"], "cancelled", "{:?}", runs[0]);
    assert_eq!(runs[0]["upstream_status"], "UP", "{:?}", runs[0]);
    assert_eq!(runs[0]["keys_written"], 0);
    assert_eq!(
        stopped.harness.redis().dump(),
        stopped.settled,
        "nothing of the cancelled run written"
    );
}

#[test]
fn the_daemon_survives_redis_going_away_and_recovers() {
    let h = Harness::small("daemon", 23);
    let (sim, redis) = (h.sim(), h.redis());
    let cfg = h.write_config(&[("sync", "interval_secs", "1".into())]);
    let stats_file = h
        .logs_dir()
        .join("precache_debug_logs/precache_run_stats.json");
    let last_stats = || -> Value {
        std::fs::read_to_string(&stats_file)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null)
    };
    let mut daemon = DaemonChild::start(&cfg);
    wait_for("the first run", Duration::from_secs(20), || {
        !history(redis).is_empty()
    });

    redis.stop();
    wait_for("a run failing on Redis", Duration::from_secs(20), || {
        let stats = last_stats();
        stats["status"] == "failed"
            && stats["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("redis"))
    });
    // Another interval passes: still running, still failing cleanly.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(daemon.alive(), "the daemon exited when Redis went away");

    // Redis comes back empty: the next run succeeds and rewrites everything.
    redis.restart();
    wait_for(
        "a successful run after the outage",
        Duration::from_secs(20),
        || {
            history(redis)
                .first()
                .is_some_and(|run| run["status"] == "success")
        },
    );
    assert_cache_matches(sim, redis);
    assert_eq!(
        redis.keys("tournaments_season_*").len(),
        sim.stats().valid_seasons
    );
    assert!(daemon.alive());
    daemon.signal("INT");
    let (code, _) = daemon.wait_exit(Duration::from_secs(25));
    assert_eq!(code, Some(0));
}

/// The daemon's environment as the kernel holds it for `pid`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn environ_of(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The daemon restarts itself once with glibc's per-thread caches off (the
/// soak benchmark's memory stays flat only so), keeps its pid and its
/// arguments, and leaves an operator's own `tcache_count` alone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_daemon_runs_with_glibc_thread_caches_off_unless_told_otherwise() {
    let mut h = Harness::new("daemon").sim(Scale::Small, 24).build();
    // glibc 2.36 rewrites GLIBC_TUNABLES in place as it reads it, leaving
    // only the first tunable visible, so only that is compared.
    for (given, visible, restarted) in [
        (None, "GLIBC_TUNABLES=glibc.malloc.tcache_count=0", true),
        (
            Some("glibc.malloc.tcache_count=0:glibc.malloc.arena_max=2"),
            "GLIBC_TUNABLES=glibc.malloc.tcache_count=0",
            false,
        ),
        (
            Some("glibc.malloc.tcache_count=3"),
            "GLIBC_TUNABLES=glibc.malloc.tcache_count=3",
            false,
        ),
        (
            Some("glibc.malloc.arena_max=2"),
            "GLIBC_TUNABLES=glibc.malloc.arena_max=2",
            true,
        ),
    ] {
        // Each daemon its own, empty Redis: its first run is the one waited for.
        h.fresh_redis();
        let cfg = h.write_config(&[]);
        let command = DaemonChild::command(&cfg).env_remove(precache::alloc::RESTARTED);
        let mut daemon = match given {
            Some(value) => command.env("GLIBC_TUNABLES", value),
            None => command.env_remove("GLIBC_TUNABLES"),
        }
        .start();
        // The run proves the arguments (the config) survived the restart;
        // the pid is the one spawned.
        wait_for("the first run", Duration::from_secs(20), || {
            !history(h.redis()).is_empty()
        });
        let env = environ_of(daemon.pid());
        let tunables: Vec<&String> = env
            .iter()
            .filter(|v| v.starts_with("GLIBC_TUNABLES="))
            .collect();
        assert_eq!(tunables, [visible], "given {given:?}");
        let marker = format!("{}=1", precache::alloc::RESTARTED);
        assert_eq!(env.contains(&marker), restarted, "given {given:?}");
        // Named after the binary, as before the restart (not "exe").
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", daemon.pid())).unwrap();
        assert_eq!(comm.trim(), "precache");
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", daemon.pid())).unwrap();
        assert!(
            cmdline.ends_with(b"run\0"),
            "{}",
            String::from_utf8_lossy(&cmdline)
        );
        daemon.signal("TERM");
        assert_eq!(daemon.wait(), Some(0));
    }
}

/// SIGHUP (`systemctl reload`, log rotators) re-reads the config: a new
/// `sync.interval_secs` takes effect without a restart, a key that needs
/// one is named and kept, a broken file changes nothing, and the process
/// never stops.
#[test]
fn sighup_reloads_the_config_and_never_stops_the_daemon() {
    let h = Harness::small("sighup", 27);
    let redis = h.redis();
    let config_with = |interval: &str, api_url: &str| {
        h.write_config(&[
            ("sync", "interval_secs", interval.into()),
            ("upstream", "api_url", quoted(api_url)),
            ("warm", "enabled", "false".into()),
        ])
    };
    let cfg = config_with("3600", &h.sim().url());
    let mut daemon = DaemonChild::start(&cfg);
    wait_for("the first run", Duration::from_secs(20), || {
        history(redis).len() == 1
    });
    // An hour to the next run: a SIGHUP that stopped the daemon, or left
    // the old interval, shows here.
    daemon.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(daemon.alive(), "SIGHUP stopped the daemon");
    assert_eq!(history(redis).len(), 1);

    // The interval down to 1 s, and a key that needs a restart.
    let moved = "http://127.0.0.1:1";
    assert_eq!(config_with("1", moved), cfg);
    daemon.signal("HUP");
    wait_for("runs at the new interval", Duration::from_secs(20), || {
        history(redis).len() >= 4
    });
    assert!(daemon.alive());
    let runs = history(redis);
    assert!(
        runs.iter().take(3).all(|r| r["status"] == "success"),
        "the upstream is still the running one: {runs:?}"
    );
    let log = std::fs::read_to_string(h.logs_dir().join("precache.log")).unwrap();
    assert!(log.contains("reload: applied sync.interval_secs"), "{log}");
    // (h.write_config also picks a new metrics port: a second such key.)
    assert!(
        log.contains("reload: upstream.api_url, metrics.bind take(s) effect only after a restart"),
        "{log}"
    );

    // A broken file: an error in the log, nothing changes, still running.
    std::fs::write(&cfg, "[sync]\ninterval_secs = \"soon\"\n").unwrap();
    daemon.signal("HUP");
    let before = history(redis).len();
    wait_for("runs to go on", Duration::from_secs(20), || {
        history(redis).len() >= before + 2
    });
    let log = std::fs::read_to_string(h.logs_dir().join("precache.log")).unwrap();
    assert!(
        log.contains("running on with the configuration in use"),
        "{log}"
    );
    // A burst of signals is no threat either.
    for _ in 0..20 {
        daemon.signal("HUP");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(daemon.alive());
    daemon.signal("TERM");
    let (code, _) = daemon.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0));
}
