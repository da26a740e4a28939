//! Two instances on one Redis (DESIGN.md section 12): one leads and
//! writes, the other stands by and writes nothing; a killed leader is
//! replaced within `ha.lease_secs` plus an interval; a leader stopped past
//! its lease is fenced when it wakes; `once` and `clear` refuse beside a
//! running leader, and `--accept-shrink` reaches it instead of being
//! undone by it. Real daemons (child processes), a real Redis, the
//! simulator.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kit::*;
use precache::sim::{ChurnSpec, Fault, Scale, SimServer};
use precache::warm::plan::Endpoint;
use serde_json::Value;

const LEASE_SECS: u64 = 3;
const INTERVAL_SECS: u64 = 1;
const WINDOW_DAYS: i64 = 14;

/// A daemon in its own directory (`DIR/name`, with its logs).
fn start(h: &Harness, name: &str, extra: &[(&str, &str, String)]) -> DaemonChild {
    DaemonChild::start(&config(h, name, extra))
}

/// A config in `DIR/name`: the lease and interval above, every root every
/// run, the warm-up's window around today.
fn config(h: &Harness, name: &str, extra: &[(&str, &str, String)]) -> PathBuf {
    let mut overrides = vec![
        ("ha", "lease_secs", LEASE_SECS.to_string()),
        ("sync", "interval_secs", INTERVAL_SECS.to_string()),
        // Every run asks every root: a churn is seen by the next run.
        ("sync", "adaptive", "false".into()),
        ("warm", "reference_date", quoted(&today().to_string())),
        ("warm", "window_days", WINDOW_DAYS.to_string()),
    ];
    overrides.extend(extra.iter().cloned());
    h.write_config_in(name, &overrides)
}

/// The instance `precache:leader` names, if any.
fn lease_holder(redis: &RedisServer) -> Option<String> {
    let value = redis.get("precache:leader")?;
    Some(precache::store::lease::holder_of(&value).to_string())
}

fn commit_instance(redis: &RedisServer) -> Option<String> {
    let marker = redis.get("precache:commit")?;
    let head = marker.lines().next()?.to_string();
    // precache-commit v1 EPOCH AT_MS INSTANCE RUN_ID
    head.split(' ').nth(4).map(str::to_string)
}

/// Warm-up fetches of the per-match endpoints so far.
fn match_warm_fetches(sim: &SimServer) -> u64 {
    let counts = sim.request_counts();
    Endpoint::FOR_MATCH
        .iter()
        .map(|e| counts.get(e.call_type().as_str()).copied().unwrap_or(0))
        .sum()
}

/// Warm-up tasks due now (none left: every warm-up done; a failed read
/// counts as not done).
fn warm_due_now(redis: &RedisServer) -> u64 {
    redis.warm_tasks_due().unwrap_or(u64::MAX)
}

/// Every changed match id the feed lists, in order, repeats kept.
fn fed_matches(redis: &RedisServer) -> Vec<i64> {
    feed(redis)
        .iter()
        .flat_map(|e| feed_ids(e, "individual_matches"))
        .collect()
}

/// Churns `n` in-window matches and waits until the feed lists each of
/// them; returns them.
fn churn_round(sim: &SimServer, redis: &RedisServer, round: usize) -> Vec<i64> {
    let before = fed_matches(redis).len();
    let changed = sim.churn(&ChurnSpec {
        matches_modified: 3,
        in_window_days: Some(WINDOW_DAYS),
        ..ChurnSpec::default()
    });
    let mut expected = changed.individual_matches;
    expected.sort_unstable();
    assert_eq!(
        expected.len(),
        3,
        "round {round}: the churn changed matches"
    );
    wait_for(
        &format!("round {round}'s changes in the feed"),
        Duration::from_secs(30),
        || {
            let fed = fed_matches(redis);
            expected.iter().all(|id| fed[before..].contains(id))
        },
    );
    expected
}

/// A churn sequence: what the feed must list, and the warm-up fetches it
/// must cost (four per changed in-window match).
struct Rounds<'a> {
    sim: &'a SimServer,
    redis: &'a RedisServer,
    warm_before: u64,
    expected_feed: Vec<i64>,
    warmed: u64,
}

impl<'a> Rounds<'a> {
    fn start(sim: &'a SimServer, redis: &'a RedisServer) -> Rounds<'a> {
        Rounds {
            sim,
            redis,
            warm_before: match_warm_fetches(sim),
            expected_feed: fed_matches(redis),
            warmed: 0,
        }
    }

    /// Plays `rounds`, then waits for their warm-ups.
    fn play(&mut self, rounds: std::ops::Range<usize>) {
        let last = rounds.end;
        for round in rounds {
            let changed = churn_round(self.sim, self.redis, round);
            self.warmed += changed.len() as u64;
            self.expected_feed.extend(changed);
        }
        wait_for(
            &format!("the warm-ups up to round {last}"),
            Duration::from_secs(30),
            || {
                warm_due_now(self.redis) == 0
                    && match_warm_fetches(self.sim) >= self.warm_before + 4 * self.warmed
            },
        );
    }
}

fn started_at(run: &Value) -> DateTime<Utc> {
    run["start_time"].as_str().unwrap().parse().unwrap()
}

#[test]
fn two_daemons_on_one_redis_one_writes_each_change_once_and_the_standby_takes_over() {
    let h = Harness::small("ha", 91);
    let (sim, redis) = (h.sim(), h.redis());
    // Both at once: the lease decides, not the order of starting.
    let mut a = start(&h, "a", &[]);
    let mut b = start(&h, "b", &[]);
    wait_for("a leader's first run", Duration::from_secs(30), || {
        !history(redis).is_empty()
    });
    wait_for("both answering", Duration::from_secs(10), || {
        a.role().is_some() && b.role().is_some()
    });
    let leader_name = lease_holder(redis).expect("a leader");
    let (leader, standby) = if leader_name == a.instance_id() {
        (&mut a, &mut b)
    } else {
        assert_eq!(leader_name, b.instance_id());
        (&mut b, &mut a)
    };
    assert_eq!(leader.role().as_deref(), Some("leader"));
    assert_eq!(standby.role().as_deref(), Some("standby"));
    assert_eq!(
        standby.status().unwrap()["role"]["leader"],
        leader.instance_id(),
        "the standby names the leader"
    );
    wait_for("the cold warm-up", Duration::from_secs(60), || {
        warm_due_now(redis) == 0
    });
    let mut rounds = Rounds::start(sim, redis);
    rounds.play(0..6);
    // The standby ran nothing and wrote nothing: every run in the history
    // and the last commit are the leader's.
    assert!(standby.runs().is_empty(), "{:?}", standby.runs());
    let runs = history(redis);
    assert!(
        runs.iter().all(|r| r["instance"] == leader.instance_id()),
        "{runs:?}"
    );
    assert_eq!(commit_instance(redis), Some(leader.instance_id()));

    // The leader dies without a word: its lease lapses, the standby leads.
    let killed_at = Utc::now();
    leader.kill();
    let new_name = standby.instance_id();
    wait_for("the standby's first run", Duration::from_secs(20), || {
        history(redis).first().map(|r| r["instance"].clone()) == Some(Value::from(new_name.clone()))
    });
    let takeover = (started_at(&history(redis)[0]) - killed_at)
        .to_std()
        .unwrap();
    eprintln!("the standby took over {takeover:?} after the leader's SIGKILL");
    assert!(
        takeover <= Duration::from_secs(LEASE_SECS + INTERVAL_SECS),
        "took over after {takeover:?}"
    );
    assert_eq!(standby.role().as_deref(), Some("leader"));
    // Its first run read the cache from Redis: nothing to report again.
    let first = &history(redis)[0];
    assert_eq!(first["total_changes"], 0, "{first}");
    rounds.play(6..12);
    // Quiet runs add nothing.
    std::thread::sleep(Duration::from_secs(3 * INTERVAL_SECS));
    let mut fed = fed_matches(redis);
    let mut expected = rounds.expected_feed.clone();
    fed.sort_unstable();
    expected.sort_unstable();
    assert_eq!(fed, expected, "each changed id exactly once per change");
    assert_eq!(
        match_warm_fetches(sim) - rounds.warm_before,
        4 * rounds.warmed,
        "each changed match warmed once, by one instance"
    );
    assert_cache_is_the_upstream(sim, redis, "after twelve rounds and a takeover");
}

fn matches_served(sim: &SimServer) -> u64 {
    requests(sim, "tournament_matches")
}

#[test]
fn a_leader_stopped_past_its_lease_is_fenced_when_it_wakes_and_stands_by() {
    let h = Harness::small("ha", 92);
    let (sim, redis) = (h.sim(), h.redis());
    let slow = [
        // One call at a time, 200 ms each: a run lasts seconds, so the stop
        // lands inside one.
        ("upstream", "max_concurrency", "1".into()),
        ("upstream", "timeout_secs", "60".into()),
        ("warm", "enabled", "false".into()),
    ];
    let a = start(&h, "a", &slow);
    wait_for("a's first run", Duration::from_secs(30), || {
        !history(redis).is_empty()
    });
    let b = start(&h, "b", &slow);
    wait_for("b standing by", Duration::from_secs(10), || {
        b.role().as_deref() == Some("standby")
    });
    sim.set_fault(
        "tournament_matches",
        Fault {
            latency_ms: 200,
            ..Fault::default()
        },
    );
    // a's next run asks for the matches of before the churn (some of
    // them); b, taking over, sees the churn. Only the leader asks the
    // simulator: two slow calls served are a's run under way.
    let served = matches_served(sim);
    wait_for("a's next run under way", Duration::from_secs(30), || {
        matches_served(sim) >= served + 2
    });
    a.signal("STOP");
    let cold = fed_matches(redis).len();
    let changed = sim.churn(&ChurnSpec {
        matches_modified: 3,
        ..ChurnSpec::default()
    });
    wait_for("b leading and done a run", Duration::from_secs(60), || {
        history(redis)
            .first()
            .is_some_and(|r| r["instance"] == b.instance_id() && r["status"] == "success")
    });
    let settled = redis.dump();
    let feed_before = feed(redis);
    a.signal("CONT");
    wait_for("a's run to end", Duration::from_secs(60), || {
        a.runs().len() >= 2
    });
    let run = a.runs()[0].clone();
    assert_eq!(run["status"], "fenced", "{run}");
    assert_eq!(a.role().as_deref(), Some("standby"));
    wait_for("a naming b as the leader", Duration::from_secs(10), || {
        a.status()
            .is_some_and(|s| s["role"]["leader"] == b.instance_id())
    });
    // Nothing of a's run landed: not its data, not its history, not a
    // feed entry; b's cache stands (b's quiet runs rewrite nothing).
    sim.clear_faults();
    std::thread::sleep(Duration::from_secs(2 * INTERVAL_SECS));
    assert_eq!(redis.dump(), settled, "a's data did not land");
    assert!(
        history(redis).iter().all(|r| r["run_id"] != run["run_id"]),
        "a's fenced run is not in Redis's history"
    );
    assert_eq!(feed(redis), feed_before);
    let mut fed = fed_matches(redis)[cold..].to_vec();
    fed.sort_unstable();
    let mut expected = changed.individual_matches.clone();
    expected.sort_unstable();
    assert_eq!(fed, expected, "the churn reported once, by b");
    assert_cache_is_the_upstream(sim, redis, "after a's fenced run");
    assert_eq!(lease_holder(redis), Some(b.instance_id()));
}

#[test]
fn once_and_clear_refuse_beside_a_leader_unless_forced() {
    let h = Harness::small("ha", 93);
    let (sim, redis) = (h.sim(), h.redis());
    let daemon = start(&h, "daemon", &[("warm", "enabled", "false".into())]);
    wait_for("the daemon's first run", Duration::from_secs(30), || {
        !history(redis).is_empty()
    });
    let cli = config(&h, "cli", &[("warm", "enabled", "false".into())]);
    for args in [&["once"][..], &["clear"][..]] {
        let (code, _, stderr) = run_cli(&cli, args);
        assert_eq!(code, Some(4), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&daemon.instance_id()),
            "{args:?} names the leader: {stderr}"
        );
        assert!(stderr.contains("--force"), "{args:?}: {stderr}");
    }
    assert!(
        !redis.keys("tournament_matches").is_empty(),
        "nothing cleared"
    );
    // --force: the run is this process's; the daemon stands by meanwhile,
    // leads again once the lease is released, and reports nothing twice.
    let cold = fed_matches(redis).len();
    let changed = sim.churn(&ChurnSpec {
        matches_modified: 2,
        ..ChurnSpec::default()
    });
    let summary = once_ok(&cli, &["--force"]);
    assert_eq!(summary["status"], "success", "{summary}");
    wait_for("the daemon leading again", Duration::from_secs(20), || {
        lease_holder(redis) == Some(daemon.instance_id())
    });
    std::thread::sleep(Duration::from_secs(3 * INTERVAL_SECS));
    let mut fed = fed_matches(redis)[cold..].to_vec();
    fed.sort_unstable();
    let mut expected = changed.individual_matches.clone();
    expected.sort_unstable();
    assert_eq!(fed, expected, "the churn reported once");
    let runs = history(redis);
    // The cold run and once's.
    assert_eq!(
        runs.iter().filter(|r| r["total_changes"] != 0).count(),
        2,
        "{runs:?}"
    );
}

#[test]
fn accept_shrink_beside_a_daemon_reaches_it_and_is_not_undone() {
    let h = Harness::small("ha", 94);
    let (sim, redis) = (h.sim(), h.redis());
    let extra = [
        ("warm", "enabled", "false".into()),
        // Held for good unless accepted (the daemon would confirm it
        // itself after three runs).
        ("sync", "confirm_runs", "1000".into()),
    ];
    let daemon = start(&h, "daemon", &extra);
    wait_for("the daemon's first run", Duration::from_secs(30), || {
        !history(redis).is_empty()
    });
    let full = redis.data("tournament_matches").len();
    let cold = fed_matches(redis).len();
    silence_half_the_roots(sim);
    wait_for("a held run", Duration::from_secs(30), || {
        history(redis)
            .first()
            .is_some_and(|r| r["status"] == "held")
    });
    assert_eq!(redis.data("tournament_matches").len(), full);
    let cli = config(&h, "cli", &extra);
    let (code, out, stderr) = run_cli(&cli, &["once", "--accept-shrink"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&daemon.instance_id()) || out.to_string().contains(&daemon.instance_id()),
        "says the leader does it: {stderr} {out}"
    );
    wait_for("the shrink accepted", Duration::from_secs(30), || {
        redis.data("tournament_matches").len() < full
    });
    let shrunk = redis.data("tournament_matches").len();
    let removed = fed_matches(redis)[cold..].to_vec();
    assert_eq!(removed.len(), full - shrunk, "each removed match once");
    // The daemon keeps the operator's decision: runs go on, nothing comes
    // back, nothing is reported again.
    let at = history(redis).len();
    wait_for("three more runs", Duration::from_secs(30), || {
        history(redis).len() >= at + 3
    });
    assert_eq!(redis.data("tournament_matches").len(), shrunk);
    let again = fed_matches(redis)[cold..].to_vec();
    assert_eq!(again, removed, "no removal or re-addition reported since");
    assert_cache_is_the_upstream(sim, redis, "the accepted shrink kept");
    assert!(
        history(redis)[..3]
            .iter()
            .all(|r| r["status"] == "success" && r["total_changes"] == 0),
        "{:?}",
        &history(redis)[..3]
    );
    drop(daemon);
}

/// The epoch a commit marker names.
fn commit_epoch(redis: &RedisServer) -> u64 {
    let marker = redis.get("precache:commit").expect("a commit marker");
    marker.split(' ').nth(2).unwrap().parse().unwrap()
}

#[test]
fn a_lease_key_of_another_type_or_garbage_is_replaced_and_epochs_go_on() {
    let mut h = Harness::new("ha").sim(Scale::Small, 95).build();
    for spoil in [
        &["RPUSH", "precache:leader", "x"][..],
        &["SET", "precache:leader:epoch", "garbage"][..],
        &["HSET", "precache:leader:epoch", "a", "1"][..],
    ] {
        // Each case its own, empty Redis.
        h.fresh_redis();
        let redis = h.redis();
        let cli = config(&h, "cli", &[("warm", "enabled", "false".into())]);
        once_ok(&cli, &[]);
        once_ok(&cli, &[]);
        let before = commit_epoch(redis);
        redis::cmd("DEL")
            .arg(spoil[1])
            .query::<()>(&mut redis.conn())
            .unwrap();
        let mut command = redis::cmd(spoil[0]);
        for arg in &spoil[1..] {
            command.arg(*arg);
        }
        command.query::<()>(&mut redis.conn()).unwrap();
        let daemon = start(&h, "daemon", &[("warm", "enabled", "false".into())]);
        wait_for(
            &format!("a run after {spoil:?}"),
            Duration::from_secs(30),
            || {
                history(redis)
                    .first()
                    .is_some_and(|r| r["instance"] == daemon.instance_id())
            },
        );
        assert_eq!(history(redis)[0]["status"], "success", "{spoil:?}");
        assert_eq!(lease_holder(redis), Some(daemon.instance_id()), "{spoil:?}");
        // A later epoch than any commit's: its commits order after them.
        let lease = redis.get("precache:leader").unwrap();
        let epoch: u64 = lease.split(' ').next().unwrap().parse().unwrap();
        assert!(
            epoch > before,
            "{spoil:?}: commit epoch {before}, lease {lease}"
        );
        drop(daemon);
    }
}

#[test]
fn the_lease_scripts_keep_our_own_lease_replace_nobodys_and_never_go_back_in_epoch() {
    use precache::store::lease::Attempt;
    use precache::store::{Keys, Store};
    let h = Harness::new("ha").redis().build();
    let redis = h.redis();
    let mut store = Store::new(&redis.url(), Keys::new("")).unwrap();
    let lease = Duration::from_secs(30);
    let Attempt::Taken(first) = store.acquire_lease("a:1:x", lease, false).unwrap() else {
        panic!("a free lease is taken");
    };
    // A reply lost and the call repeated, or the keeper taking back a
    // lease a fenced run stood down from: ours, kept as it is.
    assert_eq!(
        store.acquire_lease("a:1:x", lease, false).unwrap(),
        Attempt::Taken(first.clone())
    );
    let Attempt::HeldBy(holder) = store.acquire_lease("b:2:y", lease, false).unwrap() else {
        panic!("another instance's lease is not taken");
    };
    assert_eq!(holder.value, first.value);
    // A value without an expiry (left by a tool) is nobody's lease.
    redis::cmd("PERSIST")
        .arg("precache:leader")
        .query::<()>(&mut redis.conn())
        .unwrap();
    let Attempt::Taken(second) = store.acquire_lease("b:2:y", lease, false).unwrap() else {
        panic!("a lease without expiry is replaced");
    };
    assert!(second.epoch > first.epoch);
    // The counter lost (evicted, restored older): epochs still go up from
    // the last commit's.
    redis::cmd("SET")
        .arg("precache:commit")
        .arg("precache-commit v1 41 0 a:1:x r1\n")
        .query::<()>(&mut redis.conn())
        .unwrap();
    redis::cmd("DEL")
        .arg("precache:leader:epoch")
        .arg("precache:leader")
        .query::<()>(&mut redis.conn())
        .unwrap();
    let Attempt::Taken(third) = store.acquire_lease("a:1:x", lease, false).unwrap() else {
        panic!("a free lease is taken");
    };
    assert_eq!(third.epoch, 42);
    assert!(store.release_lease(&third).unwrap());
    assert!(!store.release_lease(&third).unwrap(), "released once");
}

/// Runs Redis recorded that started after `since`.
fn runs_since(redis: &RedisServer, since: DateTime<Utc>) -> Vec<Value> {
    history(redis)
        .into_iter()
        .filter(|r| started_at(r) > since)
        .collect()
}

/// Waits for a successful run that started after `since`.
fn settle_after(redis: &RedisServer, since: DateTime<Utc>, what: &str) {
    wait_for(what, Duration::from_secs(30), || {
        runs_since(redis, since)
            .iter()
            .any(|r| r["status"] == "success")
    });
}

/// Two daemons on one Redis that is flushed, then restored from an older
/// RDB: one of them repairs it in a run, the cache ends equal to a fresh
/// write, and a change lost with the restore is reported once again, by
/// one instance.
#[test]
fn two_daemons_repair_a_flushall_and_an_older_rdb_reporting_each_change_once() {
    let h = Harness::small("ha", 96);
    let (sim, redis) = (h.sim(), h.redis());
    let quiet = [("warm", "enabled", "false".into())];
    let a = start(&h, "a", &quiet);
    let b = start(&h, "b", &quiet);
    settle_after(
        redis,
        Utc::now() - chrono::Duration::hours(1),
        "a first run",
    );

    // FLUSHALL: the data, the feed, the marker and the lease all go.
    let flushed = Utc::now();
    redis::cmd("FLUSHALL")
        .query::<()>(&mut redis.conn())
        .unwrap();
    settle_after(redis, flushed, "a run after the flush");
    assert_cache_is_the_upstream(sim, redis, "after FLUSHALL");
    let leader = lease_holder(redis).expect("a leader again");
    assert!(
        leader == a.instance_id() || leader == b.instance_id(),
        "{leader}"
    );
    // The repair reported every record as added (against an empty
    // Redis); the churn after it is reported once.
    let repaired = fed_matches(redis).len();
    let round = churn_round(sim, redis, 0);
    std::thread::sleep(Duration::from_secs(3 * INTERVAL_SECS));
    let mut fed = fed_matches(redis)[repaired..].to_vec();
    fed.sort_unstable();
    assert_eq!(fed, round, "the churn after the flush reported once");

    // An older RDB: the churn below, and its feed entry, are lost.
    redis::cmd("SAVE").query::<()>(&mut redis.conn()).unwrap();
    let saved = fed_matches(redis).len();
    let lost = churn_round(sim, redis, 1);
    let restored = Utc::now();
    redis.restart();
    assert_eq!(
        fed_matches(redis).len(),
        saved,
        "the RDB predates the churn"
    );
    settle_after(redis, restored, "a run after the restore");
    assert_cache_is_the_upstream(sim, redis, "after the restore");
    std::thread::sleep(Duration::from_secs(3 * INTERVAL_SECS));
    let mut again = fed_matches(redis)[saved..].to_vec();
    again.sort_unstable();
    assert_eq!(again, lost, "the lost churn reported once, by one instance");
    let runs = runs_since(redis, restored);
    let leaders: std::collections::BTreeSet<&str> =
        runs.iter().filter_map(|r| r["instance"].as_str()).collect();
    assert_eq!(leaders.len(), 1, "one writer after the restore: {runs:?}");
}
