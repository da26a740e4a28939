//! precache on a Redis that survives a node (DESIGN.md section 12): a TLS
//! master and replica with three sentinels on loopback, client
//! certificates required from a CA the test makes with `openssl`, and
//! precache logged in as the README's least-privilege user.

use kit::*;
use precache::config::Config;
use precache::report::RunStatus;
use precache::sim::sentinel::{DOWN_AFTER_MS, TlsRedisSet};
use precache::sim::{ChangedIds, ChurnSpec, Scale};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The set, and a harness (the simulator, a directory for configs and
/// logs) without a Redis of its own.
struct Cluster {
    set: TlsRedisSet,
    harness: Harness,
}

impl Cluster {
    /// `None` (the test skips) only outside CI when `openssl` or
    /// `redis-server` is missing.
    fn start(seed: u64, tag: &str) -> Option<Cluster> {
        for tool in ["openssl", "redis-server"] {
            if std::process::Command::new(tool)
                .arg("version")
                .output()
                .is_err()
            {
                tool_missing(tool);
                return None;
            }
        }
        let harness = Harness::new(tag).sim(Scale::Small, seed).build();
        let set =
            TlsRedisSet::start(&harness.dir().join("redis")).expect("the TLS Redis set starts");
        for node in &set.nodes {
            // ACLs are per node: the operator sets the user on each.
            apply_readme_acl(&mut set.admin(node.port).unwrap());
        }
        std::fs::write(
            harness.dir().join("redis_password"),
            format!("{ACL_PASSWORD}\n"),
        )
        .unwrap();
        Some(Cluster { set, harness })
    }

    /// The `[redis]` settings precache reaches the set with, as the
    /// README's user.
    fn redis_settings(&self) -> Vec<(&'static str, &'static str, String)> {
        let password_file = self.harness.dir().join("redis_password");
        let mut settings = sentinel_settings(&self.set);
        settings.push(("redis", "username", quoted("precache")));
        settings.push((
            "redis",
            "password_file",
            quoted(password_file.to_str().unwrap()),
        ));
        settings
    }

    /// A config file in `DIR/name` for the set and the simulator, with `extra`.
    fn config_file(&self, name: &str, extra: &[(&str, &str, String)]) -> PathBuf {
        let mut overrides = vec![
            ("upstream", "timeout_secs", "5".into()),
            ("warm", "enabled", "false".into()),
        ];
        overrides.extend(self.redis_settings());
        overrides.extend(extra.iter().cloned());
        self.harness.write_config_in(name, &overrides)
    }

    /// The master's port, as the sentinels name it.
    fn master(&self) -> u16 {
        self.set.master_port().expect("a sentinel names the master")
    }

    /// An unrestricted connection to the master.
    fn admin(&self) -> redis::Connection {
        self.set.admin(self.master()).unwrap()
    }

    /// The cache equals a fresh full write of what the simulator serves.
    fn assert_cache_is_the_upstream(&self, what: &str) {
        assert_holds_the_upstream(&mut self.admin(), self.harness.sim(), what);
    }

    /// The newest change feed entry's id ("0" when there is none).
    fn last_feed_id(&self) -> String {
        let newest: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg("precache:changes")
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(&mut self.admin())
            .unwrap();
        newest.first().map_or("0".into(), |(id, _)| id.clone())
    }

    /// Every id the change feed lists after entry `since`, per category,
    /// with how often.
    fn feed_counts(&self, since: &str) -> BTreeMap<String, BTreeMap<i64, usize>> {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg("precache:changes")
            .arg(format!("({since}"))
            .arg("+")
            .query(&mut self.admin())
            .unwrap();
        let mut counts: BTreeMap<String, BTreeMap<i64, usize>> = BTreeMap::new();
        for (_, fields) in entries {
            for (category, value) in fields {
                let Ok(ids) = serde_json::from_str::<Vec<i64>>(&value) else {
                    continue;
                };
                for id in ids {
                    *counts
                        .entry(category.clone())
                        .or_default()
                        .entry(id)
                        .or_default() += 1;
                }
            }
        }
        counts
    }
}

/// Loads a config file as the daemon does.
fn load(path: &Path) -> Config {
    Config::load(path, &|_| Err(std::env::VarError::NotPresent)).expect("the config loads")
}

/// Each id of `expected` is in the feed exactly once.
fn assert_each_once(
    counts: &BTreeMap<String, BTreeMap<i64, usize>>,
    expected: &ChangedIds,
    what: &str,
) {
    let expected = serde_json::to_value(expected).unwrap();
    for (category, ids) in expected.as_object().unwrap() {
        for id in ids.as_array().unwrap() {
            let id = id.as_i64().unwrap();
            let seen = counts.get(category).and_then(|c| c.get(&id)).copied();
            assert_eq!(seen, Some(1), "{what}: {category} {id} in the feed");
        }
    }
}

fn churn() -> ChurnSpec {
    ChurnSpec {
        matches_modified: 3,
        matches_added: 1,
        tournaments_renamed: 1,
        ..ChurnSpec::default()
    }
}

#[test]
fn runs_cold_unchanged_and_churned_exactly_through_sentinel_and_tls() {
    let Some(cluster) = Cluster::start(101, "sentinel-normal") else {
        return;
    };
    let path = cluster.config_file("in-process", &[("sync", "adaptive", "false".into())]);
    let config = load(&path);
    assert!(config.redis.uses_sentinel() && config.redis.uses_tls());
    let mut services = precache::daemon::Services::start(&config).unwrap();
    let cold = services.runner.run_once(false);
    assert_status(&cold, RunStatus::Success);
    cluster.assert_cache_is_the_upstream("after the cold run");
    let unchanged = services.runner.run_once(false);
    assert_eq!(unchanged.summary.status, RunStatus::Success);
    assert_eq!(unchanged.changes.as_ref().unwrap().total(), 0);
    let expected = cluster.harness.sim().churn(&churn());
    let churned = services.runner.run_once(false);
    assert_eq!(churned.summary.status, RunStatus::Success);
    assert_eq!(reported(&churned), expected);
    cluster.assert_cache_is_the_upstream("after the churn");
    services.shutdown();
    // A new process reads it all back through Sentinel: nothing changed.
    let mut services = precache::daemon::Services::start(&config).unwrap();
    let reloaded = services.runner.run_once(false);
    assert_eq!(reloaded.summary.status, RunStatus::Success);
    assert_eq!(reloaded.changes.as_ref().unwrap().total(), 0);
    services.shutdown();

    // The command line: check-config --connect names the master it found.
    let (code, _, stderr) = run_cli(&path, &["check-config", "--connect"]);
    assert_eq!(code, Some(0), "{stderr}");
    let master = format!("127.0.0.1:{}", cluster.master());
    assert!(
        stderr.contains(&format!("master found at {master}")),
        "check-config names the master: {stderr}"
    );
    let (code, shown, stderr) = run_cli(&path, &["check-config"]);
    assert_eq!(code, Some(0), "{stderr}");
    let shown = format!("{shown}{stderr}");
    assert!(!shown.contains(ACL_PASSWORD), "no password shown");
    assert!(
        !shown.contains(cluster.set.client.key_pem.to_str().unwrap()),
        "the key's path is redacted: {shown}"
    );

    // As the README's user, through TLS: what the rule refuses is refused.
    let mut user = cluster.set.admin(cluster.master()).unwrap();
    let _: () = redis::cmd("AUTH")
        .arg("precache")
        .arg(ACL_PASSWORD)
        .query(&mut user)
        .unwrap();
    assert_the_rule_refuses(&mut user);
    assert!(data_in(&mut cluster.admin()).contains_key("tournament_matches"));
}

/// Down-after, the sentinels' election and promotion: what a failover may take.
fn failover_allowance() -> Duration {
    Duration::from_millis(DOWN_AFTER_MS) + Duration::from_secs(10)
}

/// Waits until a run has started (the status page says "running").
fn wait_until_running(http: &str, limit: Duration) {
    wait_for("a run to start", limit, || {
        http_get(&format!("http://{http}/status"))
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
            .is_some_and(|s| s["state"] == "running")
    });
}

/// The newest run recorded on the current master, if any.
fn newest_run(cluster: &Cluster) -> Option<serde_json::Value> {
    let port = cluster.set.master_port()?;
    let mut conn = cluster.set.admin(port).ok()?;
    let newest: Option<String> = redis::cmd("LINDEX")
        .arg("precache:runs")
        .arg(0)
        .query(&mut conn)
        .ok()?;
    serde_json::from_str(&newest?).ok()
}

#[test]
fn a_master_killed_mid_run_fails_over_and_every_change_is_reported_once() {
    let Some(mut cluster) = Cluster::start(102, "sentinel-failover") else {
        return;
    };
    let interval = 2;
    let path = cluster.config_file(
        "daemon",
        &[
            ("sync", "interval_secs", interval.to_string()),
            ("sync", "adaptive", "false".into()),
        ],
    );
    let http = http_addr(&path);
    let mut daemon = DaemonChild::start(&path);
    wait_for(
        "the first run on the master",
        Duration::from_secs(60),
        || newest_run(&cluster).is_some_and(|r| r["status"] == "success"),
    );
    let fed = cluster.last_feed_id();
    let before = cluster.harness.sim().churn(&churn());
    let old = cluster.master();
    wait_until_running(&http, Duration::from_secs(30));
    let killed_at = Instant::now();
    cluster.set.node(old).unwrap().kill();
    let new = cluster
        .set
        .wait_for_new_master(old, failover_allowance())
        .expect("the sentinels promote the replica");
    let failed_over_in = killed_at.elapsed();
    // A later run writes to the new master within down-after plus the
    // failover plus one interval (plus a run's own few seconds).
    let limit = failed_over_in + Duration::from_secs(interval + 10);
    let log_file = path.parent().unwrap().join("logs/precache.log");
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    wait_for("a run on the new master", limit, || {
        // The first run there read the cache from it.
        log().contains("the Redis master changed")
            && newest_run(&cluster).is_some_and(|r| r["status"] == "success")
            && data_in(&mut cluster.set.admin(new).unwrap()) == fresh_write(cluster.harness.sim())
    });
    assert!(log().contains(&format!("the Redis master is now 127.0.0.1:{new}")));
    let wrote_in = killed_at.elapsed();
    eprintln!(
        "failover: sentinels named {new} after {failed_over_in:?}; a run wrote there after {wrote_in:?}"
    );
    cluster.assert_cache_is_the_upstream("after the failover");
    assert_each_once(&cluster.feed_counts(&fed), &before, "across the failover");
    // And on from there: a churn on the new master is reported once too.
    let fed = cluster.last_feed_id();
    let after = cluster.harness.sim().churn(&ChurnSpec {
        matches_added: 2,
        ..ChurnSpec::default()
    });
    wait_for(
        "the churn after the failover",
        Duration::from_secs(30),
        || data_in(&mut cluster.admin()) == fresh_write(cluster.harness.sim()),
    );
    assert_each_once(&cluster.feed_counts(&fed), &after, "after the failover");
    // The metrics and the status page name the new master and the change.
    let metrics = http_get(&format!("http://{http}/metrics")).unwrap();
    assert!(
        metrics.contains(&format!(
            "precache_redis_master{{address=\"127.0.0.1:{new}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("precache_redis_master_changes_total 1"));
    assert!(metrics.contains("precache_redis_master_reachable 1"));
    let page = http_get(&format!("http://{http}/")).unwrap();
    assert!(page.contains(&format!("127.0.0.1:{new}")), "{page}");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)).0, Some(0));
}

/// The daemon's `/status`, if it answers.
fn status_of(config: &Path) -> Option<serde_json::Value> {
    let body = http_get(&format!("http://{}/status", http_addr(config)))?;
    serde_json::from_str(&body).ok()
}

#[test]
fn the_standby_on_the_other_vm_takes_over_when_the_leaders_vm_dies() {
    let Some(mut cluster) = Cluster::start(103, "sentinel-vms") else {
        return;
    };
    let settings = [
        ("sync", "interval_secs", "1".to_string()),
        ("sync", "adaptive", "false".into()),
    ];
    // VM A: daemon A, the master, sentinel 0. VM B: daemon B, the
    // replica, sentinel 1. Sentinel 2 is the witness elsewhere.
    let config_a = cluster.config_file("vm-a", &settings);
    let mut daemon_a = DaemonChild::start(&config_a);
    wait_for("A to lead and run", Duration::from_secs(60), || {
        status_of(&config_a)
            .is_some_and(|s| s["role"]["role"] == "leader" && s["last_run"]["status"] == "success")
    });
    let config_b = cluster.config_file("vm-b", &settings);
    let _daemon_b = DaemonChild::start(&config_b);
    wait_for("B to stand by", Duration::from_secs(30), || {
        status_of(&config_b).is_some_and(|s| s["role"]["role"] == "standby")
    });
    let fed = cluster.last_feed_id();
    let old = cluster.master();
    assert_eq!(old, cluster.set.nodes[0].port, "A's node is the master");
    let lost_at = Instant::now();
    daemon_a.kill();
    cluster.set.nodes[0].kill();
    cluster.set.sentinels[0].kill();
    let changed = cluster.harness.sim().churn(&churn());
    let new = cluster
        .set
        .wait_for_new_master(old, failover_allowance())
        .expect("the two sentinels left promote B's replica");
    wait_for("B to lead and converge", Duration::from_secs(30), || {
        status_of(&config_b).is_some_and(|s| s["role"]["role"] == "leader")
            && data_in(&mut cluster.set.admin(new).unwrap()) == fresh_write(cluster.harness.sim())
    });
    eprintln!(
        "A's VM lost: B leads on {new} and the cache converged after {:?}",
        lost_at.elapsed()
    );
    cluster.assert_cache_is_the_upstream("after the takeover");
    assert_each_once(&cluster.feed_counts(&fed), &changed, "across the takeover");
}

#[test]
fn a_wrong_ca_or_client_certificate_is_a_clear_config_error_naming_the_node() {
    let Some(cluster) = Cluster::start(104, "sentinel-badtls") else {
        return;
    };
    let other = precache::sim::local::LocalCa::create(
        &cluster.harness.dir().join("other-ca"),
        "some other CA",
    )
    .unwrap();
    let stranger = other.issue_client("stranger").unwrap();
    let path = |p: &Path| quoted(p.to_str().unwrap());
    let cases = [
        (
            "a CA that did not sign the servers",
            vec![("redis", "tls_ca_file", path(&other.ca_pem))],
        ),
        (
            "a client certificate the servers do not trust",
            vec![
                ("redis", "tls_cert_file", path(&stranger.cert_pem)),
                ("redis", "tls_key_file", path(&stranger.key_pem)),
            ],
        ),
    ];
    for (i, (what, extra)) in cases.iter().enumerate() {
        let config = cluster.config_file(&format!("bad-{i}"), extra);
        let started = Instant::now();
        let (code, _, stderr) = run_cli(&config, &["check-config", "--connect"]);
        assert_eq!(
            code,
            Some(2),
            "{what}: exit 2 (a bad configuration): {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{what}: a refused certificate is not waited on"
        );
        let line = stderr
            .lines()
            .find(|l| l.starts_with("precache: redis "))
            .unwrap_or_else(|| panic!("{what}: a redis line: {stderr}"));
        assert!(
            line.contains("FAILED") && line.contains("TLS"),
            "{what}: {line}"
        );
        let node = format!("sentinel {}", cluster.set.sentinel_addresses()[0]);
        assert!(line.contains(&node), "{what}: names the node: {line}");
        assert!(!stderr.contains(ACL_PASSWORD), "{what}: no password");
        let key = std::fs::read_to_string(&stranger.key_pem).unwrap();
        let key_body = key.lines().nth(1).unwrap();
        assert!(!stderr.contains(key_body), "{what}: no key");
        eprintln!("{what}: {line}");
    }
}

#[test]
fn a_stop_during_a_failover_exits_cleanly_and_leaves_nothing_half_written() {
    let Some(mut cluster) = Cluster::start(105, "sentinel-stop") else {
        return;
    };
    let path = cluster.config_file(
        "daemon",
        &[
            ("sync", "interval_secs", "1".to_string()),
            ("sync", "adaptive", "false".into()),
            ("daemon", "shutdown_grace_secs", "15".into()),
        ],
    );
    let mut daemon = DaemonChild::start(&path);
    wait_for("a first run", Duration::from_secs(60), || {
        status_of(&path).is_some_and(|s| s["last_run"]["status"] == "success")
    });
    cluster.harness.sim().churn(&churn());
    let old = cluster.master();
    // The master's VM is lost without a word: connections to it hang
    // until their timeouts, the sentinels call it down and promote.
    cluster.set.node(old).unwrap().freeze().unwrap();
    wait_until_running(&http_addr(&path), Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    daemon.signal("TERM");
    let (code, took) = daemon.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "a clean exit within the grace (15 s)");
    eprintln!("stopped during the failover in {took:?}");
    cluster.set.node(old).unwrap().kill();
    let new = cluster
        .set
        .wait_for_new_master(old, failover_allowance())
        .unwrap();
    let size: u64 = redis::cmd("DBSIZE")
        .query(&mut cluster.set.admin(new).unwrap())
        .unwrap();
    eprintln!("new master {new} holds {size} keys");
    // What the new master holds is one commit, whole: a fresh process
    // finds every data key as its commit marker records it.
    let (code, report, stderr) = run_cli(&path, &["once"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(report.is_object(), "once prints its summary: {stderr}");
    assert!(
        !report.to_string().contains("rewritten"),
        "no data key differs from its commit marker: {report}"
    );
    cluster.assert_cache_is_the_upstream("after the stop and a once");
}
