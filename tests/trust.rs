//! What the real world says that our happy-path tests never did: every
//! simulator fault and hostile answer against every call type (the fault
//! matrix), a token endpoint dying mid-run, absurd token lifetimes, a rate
//! that would stall for ever, hostile match grouping across reloads, and a
//! held shrink from first sighting to confirmation or acceptance.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kit::*;
use precache::daemon::Services;
use precache::model::calls::CallType;
use precache::report::RunReport;
use precache::report::{RunStatus, UpstreamStatus};
use precache::sim::{ChurnSpec, Fault, Hostile, Scale, SimOptions};
use serde_json::{Value, json};

fn total_changes(report: &RunReport) -> usize {
    report.changes.as_ref().map_or(0, |c| c.total())
}

/// A churn of the seed's lists and of every dataset.
fn churn() -> ChurnSpec {
    ChurnSpec {
        matches_modified: 3,
        matches_added: 1,
        matches_removed: 1,
        tournaments_renamed: 1,
        seasons_changed: 1,
        data: [
            ("org_teams_modified", 2),
            ("venues_modified", 1),
            ("venues_added", 1),
            ("venue_details_modified", 1),
            ("clubs_modified", 1),
            ("clubs_removed", 1),
        ]
        .map(|(k, n)| (k.to_string(), n))
        .into(),
        ..ChurnSpec::default()
    }
}

/// With fast timeouts, so a stalled or endless answer costs a second,
/// not ten.
fn trust_rig(seed: u64, warm: bool) -> Rig {
    Harness::small("trust", seed).rig(|config| {
        config.upstream.timeout_secs = 1;
        config.upstream.retries = 1;
        config.upstream.max_body_bytes = 1 << 20;
        config.warm.enabled = warm;
        every_dataset_every_run(config);
        config.warm.reference_date = Some(today());
        // Every root every run: a faulty answer must be seen, and
        // recovery exact, in the next run (adaptive polling's own
        // failure semantics are tested in tests/sync.rs).
        config.sync.adaptive = false;
    })
}

/// How long a run triggered over HTTP may take to be taken and to end.
const TRIGGERED: Duration = Duration::from_secs(20);

/// A config for `once` and the daemon: the warm-up off, every root every
/// run.
fn quiet_config(h: &Harness) -> std::path::PathBuf {
    h.write_config(&[
        ("warm", "enabled", "false".into()),
        ("sync", "adaptive", "false".into()),
    ])
}

/// A daemon with the admin token `t0ken`, warm-up off, after its first run.
fn admin_daemon(h: &Harness) -> DaemonChild {
    let daemon = h.start_daemon(&[
        ("metrics", "admin_token", quoted("t0ken")),
        ("warm", "enabled", "false".into()),
    ]);
    wait_for("the first run", Duration::from_secs(20), || {
        !daemon.last_run().is_null()
    });
    daemon
}

fn hostile(h: Hostile) -> Fault {
    Fault {
        hostile_rate: 1.0,
        hostile: Some(h),
        ..Fault::default()
    }
}

/// The faults and hostile answers of DESIGN.md section 7, by name.
fn faults() -> Vec<(&'static str, Fault)> {
    vec![
        (
            "HTTP 500",
            Fault {
                error_rate: 1.0,
                ..Fault::default()
            },
        ),
        (
            "429 + Retry-After",
            Fault {
                error_rate: 1.0,
                status: Some(429),
                retry_after_secs: Some(1),
                ..Fault::default()
            },
        ),
        (
            "stall",
            Fault {
                stall_rate: 1.0,
                ..Fault::default()
            },
        ),
        (
            "truncated body",
            Fault {
                truncate_rate: 1.0,
                ..Fault::default()
            },
        ),
        (
            "malformed JSON",
            Fault {
                malformed_rate: 1.0,
                ..Fault::default()
            },
        ),
        (
            "empty body",
            Fault {
                empty_rate: 1.0,
                ..Fault::default()
            },
        ),
        ("{key: null}", hostile(Hostile::NullList)),
        ("{key: []}", hostile(Hostile::EmptyList)),
        ("bare []", hostile(Hostile::TopLevelList)),
        ("unreadable dates", hostile(Hostile::UnreadableDates)),
        ("302 elsewhere", hostile(Hostile::Redirect)),
        ("endless body", hostile(Hostile::EndlessBody)),
        (
            "both match keys, differing",
            hostile(Hostile::ConflictingMatchKeys),
        ),
        (
            "expires_in 2^64-1",
            hostile(Hostile::ExpiresIn(json!(18446744073709551615u64))),
        ),
        ("expires_in -5", hostile(Hostile::ExpiresIn(json!(-5)))),
        ("expires_in 0.5", hostile(Hostile::ExpiresIn(json!(0.5)))),
        (
            "expires_in \"3600\"",
            hostile(Hostile::ExpiresIn(json!("3600"))),
        ),
    ]
}

/// Whether a fault means anything for a call type (a hostile answer that
/// only a list, a season list or a token can carry).
fn applies(fault: &Fault, column: &str) -> bool {
    let list = matches!(
        column,
        "seasons"
            | "tournament_season"
            | "tournament_matches"
            | "org_teams"
            | "venues"
            | "venue_details"
            | "clubs"
    );
    match &fault.hostile {
        None => true,
        Some(Hostile::ExpiresIn(_)) => column == "token",
        Some(Hostile::NullList | Hostile::EmptyList) => list,
        Some(Hostile::UnreadableDates) => column == "seasons",
        Some(Hostile::ConflictingMatchKeys) => column == "tournament_matches",
        Some(Hostile::TopLevelList | Hostile::Redirect | Hostile::EndlessBody) => true,
        Some(_) => list,
    }
}

/// One cell against the sync: the first faulty run changes no data key and
/// reports no change; after the fault clears, the next run reports exactly
/// the simulator's churn. Returns the first run's status.
fn sync_cell(rig: &mut Rig, column: &str, fault: &Fault) -> String {
    let before = rig.redis().dump();
    let tokens_before = requests(rig.sim(), "token");
    if column == "token" {
        // Whatever the API calls are, they need a fresh token now.
        rig.sim().revoke_tokens();
    }
    rig.sim().set_fault(column, fault.clone());
    let faulty = rig.run();
    rig.sim().clear_faults();
    let status = faulty.summary.status.as_str().to_string();
    assert_eq!(rig.redis().dump(), before, "{column}: a data key changed");
    assert_eq!(
        total_changes(&faulty),
        0,
        "{column}: changes reported {:?}",
        faulty.summary.changes
    );
    if column == "token" {
        let asked = requests(rig.sim(), "token") - tokens_before;
        assert!(
            asked <= u64::from(rig.config.upstream.retries) + 1,
            "{asked} token requests in one run"
        );
    }
    assert_eq!(
        requests(rig.sim(), "elsewhere"),
        0,
        "a redirect was followed"
    );

    let expected = rig.sim().churn(&churn());
    let after = rig.run();
    assert_eq!(
        after.summary.status,
        RunStatus::Success,
        "{column}: {:?}",
        after.summary
    );
    assert_eq!(
        reported(&after),
        expected,
        "{column}: after the fault cleared"
    );
    status
}

/// One cell against the warm-up: a churn's warm-ups meet the fault; no
/// entry is replaced and every task stays scheduled. Returns what happened.
fn warm_cell(rig: &mut Rig, fault: &Fault) -> String {
    let entries_before: BTreeMap<String, String> = rig
        .redis()
        .keys("GET:*")
        .into_iter()
        .map(|k| {
            let v = rig.redis().get(&k).unwrap();
            (k, v)
        })
        .collect();
    for call_type in [
        "match",
        "matchincidents",
        "matchreferee",
        "matchteammembers",
        "team",
    ] {
        rig.sim().set_fault(call_type, fault.clone());
    }
    let expected = rig.sim().churn(&ChurnSpec {
        matches_modified: 2,
        in_window_days: Some(7),
        ..ChurnSpec::default()
    });
    let report = rig.run();
    assert_eq!(reported(&report), expected, "the sync itself is unaffected");
    assert!(!report.warm_enqueued.is_empty());
    let counts = rig.warm_up(&report.warm_enqueued, Duration::from_secs(30));
    rig.sim().clear_faults();
    let entries_after: BTreeMap<String, String> = rig
        .redis()
        .keys("GET:*")
        .into_iter()
        .map(|k| {
            let v = rig.redis().get(&k).unwrap();
            (k, v)
        })
        .collect();
    assert_eq!(entries_after, entries_before, "no entry was replaced");
    let mut conn = rig.redis().conn();
    for member in &report.warm_enqueued {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg("precache:warm:due")
            .arg(member)
            .query(&mut conn)
            .unwrap();
        assert!(score.is_some(), "{member} is still scheduled");
    }
    assert_eq!(
        requests(rig.sim(), "elsewhere"),
        0,
        "a redirect was followed"
    );
    format!("{} failed", counts.failed)
}

#[test]
fn fault_matrix_never_a_wipe_and_exact_after_recovery() {
    let columns = [
        "seasons",
        "tournament_season",
        "tournament_matches",
        "org_teams",
        "venues",
        "venue_details",
        "clubs",
        "token",
        "warm-up",
    ];
    let faults = faults();
    let mut table: BTreeMap<(usize, usize), String> = BTreeMap::new();
    for (c, column) in columns.iter().enumerate() {
        let mut rig = trust_rig(70 + c as u64, *column == "warm-up");
        let cold = rig.run();
        assert_eq!(cold.summary.status, RunStatus::Success);
        if *column == "warm-up" {
            rig.warm_up(&cold.warm_enqueued, Duration::from_secs(60));
        }
        for (f, (name, fault)) in faults.iter().enumerate() {
            let outcome = if !applies(fault, column) {
                "n/a".to_string()
            } else if *column == "warm-up" {
                warm_cell(&mut rig, fault)
            } else {
                sync_cell(&mut rig, column, fault)
            };
            eprintln!("{column} × {name}: {outcome}");
            table.insert((f, c), outcome);
        }
    }
    // The matrix, as the closing note quotes it.
    let width = 20;
    let mut out = format!("{:<width$}", "fault \\ call type");
    for column in columns {
        out.push_str(&format!("| {column:<18}"));
    }
    out.push('\n');
    for (f, (name, _)) in faults.iter().enumerate() {
        out.push_str(&format!("{name:<width$}"));
        for c in 0..columns.len() {
            out.push_str(&format!("| {:<18}", table[&(f, c)]));
        }
        out.push('\n');
    }
    println!("{out}");
    // What a correct client makes of each: the "less" answers are held,
    // the broken ones fail, the unreadable dates keep their seasons.
    let at = |f: &str, c: &str| -> &str {
        let f = faults.iter().position(|(n, _)| *n == f).unwrap();
        let c = columns.iter().position(|n| *n == c).unwrap();
        &table[&(f, c)]
    };
    assert_eq!(at("{key: null}", "seasons"), "held");
    assert_eq!(at("{key: []}", "tournament_season"), "held");
    assert_eq!(at("empty body", "tournament_matches"), "held");
    assert_eq!(at("unreadable dates", "seasons"), "success");
    assert_eq!(at("302 elsewhere", "seasons"), "failed");
    assert_eq!(at("endless body", "tournament_matches"), "failed");
    // Every match call answered two lists: none is believed, the run fails.
    assert_eq!(
        at("both match keys, differing", "tournament_matches"),
        "failed"
    );
    assert_eq!(at("HTTP 500", "token"), "failed");
    assert_eq!(at("expires_in 2^64-1", "token"), "success");
    // A dataset's failed calls keep its records (the run degrades, it does
    // not fail), and its "less" answers are held, like the seed's.
    for dataset in ["org_teams", "venues", "venue_details", "clubs"] {
        assert_eq!(at("HTTP 500", dataset), "degraded", "{dataset}");
        assert_eq!(at("malformed JSON", dataset), "degraded", "{dataset}");
        assert_eq!(at("{key: null}", dataset), "held", "{dataset}");
        assert_eq!(at("{key: []}", dataset), "held", "{dataset}");
    }
    assert_eq!(at("bare []", "org_teams"), "held");
    assert_eq!(at("bare []", "venues"), "degraded");
}

#[test]
fn a_token_endpoint_dying_mid_run_costs_at_most_retries_plus_one_requests() {
    let h = Harness::new("token")
        .sim_with(SimOptions {
            scale: Scale::Norway,
            seed: 5,
            latency_ms: 20,
            ..SimOptions::default()
        })
        .redis()
        .build();
    let sim = h.sim();
    let mut config = h.config();
    config.upstream.timeout_secs = 1;
    // Every root every run, so the run is still asking when the token dies.
    config.sync.adaptive = false;
    let retries = u64::from(config.upstream.retries);
    let mut services = Services::start(&config).unwrap();
    assert_eq!(
        services.runner.run_once(false).summary.status,
        RunStatus::Success
    );
    for (name, fault) in [
        (
            "500",
            Fault {
                error_rate: 1.0,
                ..Fault::default()
            },
        ),
        (
            "stall",
            Fault {
                stall_rate: 1.0,
                ..Fault::default()
            },
        ),
    ] {
        let tokens_before = sim.request_counts()["token"];
        let started = Instant::now();
        let report = std::thread::scope(|scope| {
            let run = scope.spawn(|| services.runner.run_once(false));
            // Mid-run: the matches calls are under way (1,500 at 20 ms, 16 at a time).
            std::thread::sleep(Duration::from_millis(600));
            sim.set_fault("token", fault.clone());
            sim.revoke_tokens();
            run.join().unwrap()
        });
        sim.clear_faults();
        let asked = sim.request_counts()["token"] - tokens_before;
        eprintln!(
            "token {name} mid-run: {asked} token request(s), run {} in {:?}",
            report.summary.status.as_str(),
            started.elapsed()
        );
        assert!(asked >= 1, "the revoked token was renewed");
        assert!(
            asked <= retries + 1,
            "{asked} token requests (retries {retries})"
        );
        assert_ne!(report.summary.status, RunStatus::Success);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(total_changes(&report), 0);
        // The next run asks again, and is whole.
        let next = services.runner.run_once(false);
        assert_status(&next, RunStatus::Success);
        assert_eq!(total_changes(&next), 0);
    }
    services.shutdown();
}

#[test]
fn a_rate_that_would_stall_for_ever_is_a_config_error() {
    let h = Harness::new("rate").build();
    for rate in ["1e-20", "1e-12"] {
        let cfg = h.write_config(&[("upstream", "max_requests_per_sec", rate.to_string())]);
        let (code, _, stderr) = run_cli(&cfg, &["once", "--dry-run"]);
        assert_eq!(code, Some(2), "{rate}: {stderr}");
        assert!(stderr.contains("upstream.max_requests_per_sec"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn hostile_token_lifetimes_leave_the_daemon_running() {
    let h = Harness::small("expires", 81);
    let sim = h.sim();
    let mut daemon = admin_daemon(&h);
    for expires_in in [
        json!(18446744073709551615u64),
        json!(1e308),
        json!(-5),
        json!(0),
        json!(2.5),
        json!("3600"),
        json!("soon"),
        json!({"nested": true}),
    ] {
        sim.set_fault("token", hostile(Hostile::ExpiresIn(expires_in.clone())));
        sim.revoke_tokens();
        let last = daemon.trigger("/run", TRIGGERED);
        assert!(daemon.alive(), "expires_in {expires_in}: the daemon died");
        assert_eq!(last["status"], "success", "expires_in {expires_in}: {last}");
    }
    sim.clear_faults();
}

#[test]
fn hostile_grouping_gives_no_changes_after_a_reload() {
    let h = Harness::small("grouping", 91);
    let (sim, redis) = (h.sim(), h.redis());
    let cfg = quiet_config(&h);
    let once = |args: &[&str]| -> Value { once_ok(&cfg, args) };
    once(&[]);
    // Roots with matches, in id order.
    let roots: Vec<i64> = redis
        .data("root_tournaments")
        .iter()
        .map(|t| t["tournamentId"].as_i64().unwrap())
        .filter(|id| {
            sim.with_data(|d| d.matches_list(*id))
                .is_some_and(|l| l.len() > 1)
        })
        .collect();
    let (foreign, duplicating) = (roots[1], roots[3]);
    // Matches of `foreign` name null, another root, or no known tournament;
    // `duplicating` also lists a match of a lower root.
    sim.set_fault(
        "tournament_matches",
        Fault {
            hostile_rate: 1.0,
            hostile: Some(Hostile::ForeignTournament),
            ids: Some(vec![foreign]),
            ..Fault::default()
        },
    );
    let first = once(&[]);
    let foreign_ids: BTreeSet<i64> = sim
        .with_data(|d| d.matches_list(foreign))
        .unwrap()
        .iter()
        .map(|m| m["matchId"].as_i64().unwrap())
        .collect();
    assert_eq!(first["changes"]["individual_matches"], foreign_ids.len());
    assert_eq!(first["changed_ids"]["tournament_matches"], json!([foreign]));
    let stored_once = |redis: &RedisServer| {
        let ids: Vec<i64> = redis
            .data("tournament_matches")
            .iter()
            .map(|m| m["matchId"].as_i64().unwrap())
            .collect();
        let unique: BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "each match stored once");
        unique
    };
    assert!(
        foreign_ids.is_subset(&stored_once(redis)),
        "nothing dropped"
    );
    // Each `once` reloads the snapshot from Redis: no change, nothing written.
    for _ in 0..2 {
        let again = once(&[]);
        assert_eq!(again["status"], "success");
        assert!(
            again["changes"]
                .as_object()
                .unwrap()
                .values()
                .all(|v| v == 0),
            "{again}"
        );
        assert_eq!(again["keys_written"], 0);
    }
    // A match listed by two roots is stored once, under the lower one.
    sim.set_fault(
        "tournament_matches",
        Fault {
            hostile_rate: 1.0,
            hostile: Some(Hostile::DuplicateMatch),
            ids: Some(vec![duplicating]),
            ..Fault::default()
        },
    );
    // (The foreign fault is replaced: those matches change back.)
    let back = once(&[]);
    assert_eq!(back["changes"]["individual_matches"], foreign_ids.len());
    assert_eq!(back["changed_ids"]["tournament_matches"], json!([foreign]));
    stored_once(redis);
    for _ in 0..2 {
        let again = once(&[]);
        assert!(
            again["changes"]
                .as_object()
                .unwrap()
                .values()
                .all(|v| v == 0),
            "{again}"
        );
    }
    // The daemon after a restart agrees.
    let mut conn = redis.conn();
    let first: String = redis::cmd("LINDEX")
        .arg("precache:runs")
        .arg(0)
        .query(&mut conn)
        .unwrap();
    let mut daemon = DaemonChild::start(&cfg);
    wait_for("the daemon's first run", Duration::from_secs(20), || {
        let now: String = redis::cmd("LINDEX")
            .arg("precache:runs")
            .arg(0)
            .query(&mut conn)
            .unwrap();
        now != first
    });
    let last: String = redis::cmd("LINDEX")
        .arg("precache:runs")
        .arg(0)
        .query(&mut conn)
        .unwrap();
    let last: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(last["total_changes"], 0, "{last}");
    daemon.signal("TERM");
    daemon.wait_exit(Duration::from_secs(20));
}

#[test]
fn ids_as_strings_are_records_like_any_other() {
    let h = Harness::small("string-ids", 93);
    let (sim, redis) = (h.sim(), h.redis());
    let cfg = quiet_config(&h);
    let once = || once_ok(&cfg, &[]);
    let cold = once();
    sim.set_fault("*", hostile(Hostile::StringIds));
    let strings = once();
    // Every record's content changed, none was lost or skipped.
    assert_eq!(strings["items"], cold["items"]);
    assert_eq!(
        strings["changes"]["individual_matches"],
        cold["items"]["matches"]
    );
    assert_eq!(strings["changes"]["unique_team_ids"], 0);
    let reloaded = once();
    assert!(
        reloaded["changes"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == 0),
        "{reloaded}"
    );
    assert!(redis.data("tournament_matches")[0]["matchId"].is_string());
}

#[test]
fn a_shrink_is_held_until_confirmed_or_accepted() {
    let h = Harness::small("held", 95);
    let (sim, redis) = (h.sim(), h.redis());
    let cfg = quiet_config(&h);
    let once = |args: &[&str], code: i32| -> Value {
        let mut all = vec!["once"];
        all.extend(args);
        let (got, summary, stderr) = run_cli(&cfg, &all);
        assert_eq!(got, Some(code), "{stderr}");
        summary
    };
    once(&[], 0);
    let full = redis.dump();
    let roots: Vec<i64> = redis
        .data("root_tournaments")
        .iter()
        .map(|t| t["tournamentId"].as_i64().unwrap())
        .filter(|id| {
            sim.with_data(|d| d.matches_list(*id))
                .is_some_and(|l| !l.is_empty())
        })
        .take(3)
        .collect();
    sim.set_fault(
        "tournament_matches",
        Fault {
            hostile_rate: 1.0,
            hostile: Some(Hostile::EmptyList),
            ids: Some(roots.clone()),
            ..Fault::default()
        },
    );
    // Seen once, twice: held, nothing of it written.
    for seen in 1..=2 {
        let held = once(&[], 3);
        assert_eq!(held["status"], "held");
        assert_eq!(held["held"]["roots"], json!(roots));
        assert_eq!(
            held["shrink"],
            json!({"verdict": "held", "seen": seen, "confirm_runs": 3})
        );
        assert!(
            held["warnings"][0]
                .as_str()
                .unwrap()
                .contains("--accept-shrink")
        );
        assert_eq!(redis.dump(), full);
    }
    // The third sighting confirms it.
    let applied = once(&[], 0);
    assert_eq!(applied["status"], "success");
    assert_eq!(applied["shrink"]["verdict"], "confirmed");
    let mut changed = applied["changed_ids"]["tournament_matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect::<Vec<_>>();
    changed.sort();
    assert_eq!(changed, roots);
    assert_eq!(redis.get("precache:shrink"), None);
    // Back: an addition, applied at once.
    sim.clear_faults();
    let back = once(&[], 0);
    assert_eq!(back["status"], "success");
    assert_eq!(back["changed_ids"]["tournament_matches"], json!(roots));
    // An operator may accept at once.
    sim.set_fault(
        "tournament_matches",
        Fault {
            hostile_rate: 1.0,
            hostile: Some(Hostile::NullList),
            ids: Some(roots[..1].to_vec()),
            ..Fault::default()
        },
    );
    let held = once(&[], 3);
    assert_eq!(held["held"]["roots"], json!([roots[0]]));
    let accepted = once(&["--accept-shrink"], 0);
    assert_eq!(accepted["shrink"]["verdict"], "accepted");
    assert_eq!(
        accepted["changed_ids"]["tournament_matches"],
        json!([roots[0]])
    );
    assert_eq!(redis.get("precache:shrink"), None);
}

#[test]
fn the_admin_endpoint_accepts_a_held_shrink() {
    let h = Harness::small("held-admin", 97);
    let (sim, redis) = (h.sim(), h.redis());
    let daemon = admin_daemon(&h);
    assert_eq!(daemon.last_run()["status"], "success");
    sim.set_fault("seasons", hostile(Hostile::NullList));
    let held = daemon.trigger("/run", TRIGGERED);
    assert_eq!(held["status"], "held", "{held}");
    assert!(daemon.body("/").contains(r#"class="warn">held</span>"#));
    assert!(
        daemon
            .body("/metrics")
            .contains("precache_runs_total{status=\"held\"} 1"),
        "held counted"
    );
    let accepted = daemon.trigger("/accept-shrink", TRIGGERED);
    assert_eq!(accepted["status"], "success", "{accepted}");
    assert_eq!(accepted["shrink"]["verdict"], "accepted");
    assert_eq!(
        redis.data("valid_seasons").len(),
        0,
        "the operator's word was applied"
    );
    assert_eq!(daemon.post("/accept-shrink", None).0, 401);
}

#[test]
fn a_dry_run_leaves_no_trace_and_errors_name_their_url() {
    let mut rig = trust_rig(99, false);
    assert_eq!(rig.run().summary.status, RunStatus::Success);
    // The debug thread writes asynchronously: wait for the first run's stats.
    let stats_file = rig
        .config
        .logs
        .dir
        .join("precache_debug_logs/precache_run_stats.json");
    wait_for("the debug files", Duration::from_secs(10), || {
        stats_file.exists()
    });
    let stats_before = std::fs::read_to_string(&stats_file).unwrap();
    let data_before = rig.redis().dump();
    let history_before = rig.redis().keys("precache:*");
    rig.sim().churn(&churn());
    let dry = rig.services().runner.run_once(true);
    assert!(dry.summary.dry_run);
    assert!(total_changes(&dry) > 0, "the dry run sees the churn");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&stats_file).unwrap(), stats_before);
    assert_eq!(rig.redis().dump(), data_before);
    assert_eq!(rig.redis().keys("precache:*"), history_before);
    // A body that does not parse names the call it came from.
    rig.sim().set_fault(
        "seasons",
        Fault {
            malformed_rate: 1.0,
            ..Fault::default()
        },
    );
    let failed = rig.run();
    let error = failed.summary.error.unwrap();
    assert!(error.contains("GET /api/v1/ta/Seasons/?year="), "{error}");
    assert!(error.contains("malformed JSON"), "{error}");
}

#[test]
fn warm_up_workers_back_off_while_the_token_endpoint_is_down() {
    let mut rig = trust_rig(101, true);
    let cold = rig.run();
    assert!(cold.warm_enqueued.len() > 50);
    rig.sim().set_fault(
        "token",
        Fault {
            error_rate: 1.0,
            ..Fault::default()
        },
    );
    rig.sim().revoke_tokens();
    let tokens_before = requests(rig.sim(), "token");
    rig.services().start_warmer(true).unwrap();
    let counts = rig
        .services()
        .warmer
        .as_ref()
        .unwrap()
        .wait_for(&cold.warm_enqueued, Duration::from_secs(4));
    let asked = requests(rig.sim(), "token") - tokens_before;
    assert!(
        asked <= u64::from(rig.config.upstream.retries) + 1,
        "{asked} token requests from idle-less workers"
    );
    assert_eq!(
        (counts.done, counts.failed),
        (0, 0),
        "no task counted as failed"
    );
    // Each worker's first call meets the 401 of the revoked token; after the
    // failed token request none is sent.
    let warm_calls: u64 = [
        "match",
        "matchincidents",
        "matchreferee",
        "matchteammembers",
        "team",
    ]
    .iter()
    .map(|c| requests(rig.sim(), c))
    .sum();
    assert!(
        warm_calls <= rig.config.warm.workers as u64,
        "{warm_calls} warm-up calls without a token"
    );
    assert!(rig.redis().keys("GET:*").is_empty());
    let failures: usize = redis::cmd("HLEN")
        .arg("precache:warm:failures")
        .query(&mut rig.redis().conn())
        .unwrap();
    assert_eq!(failures, 0, "the tasks keep their failure counts");
    // The endpoint recovers; the next run asks for a token, the workers resume.
    rig.sim().clear_faults();
    assert_eq!(rig.run().summary.status, RunStatus::Success);
    let counts = rig
        .services()
        .warmer
        .as_ref()
        .unwrap()
        .wait_for(&cold.warm_enqueued, Duration::from_secs(40));
    assert_eq!(counts.done, cold.warm_enqueued.len(), "{counts:?}");
    drop(rig.services().warmer.take());
}

/// The API's call types (all but the token endpoint), sync's then warm-up's.
fn api_calls() -> impl Iterator<Item = &'static str> {
    CallType::ALL
        .into_iter()
        .filter(|c| *c != CallType::Token)
        .map(CallType::as_str)
}

#[test]
fn an_api_refusing_fresh_tokens_is_unauthorized_and_costs_few_token_requests() {
    let mut rig = trust_rig(102, true);
    let cold = rig.run();
    assert!(cold.warm_enqueued.len() > 50);
    let retries = u64::from(rig.config.upstream.retries);
    // The token endpoint issues tokens; the API answers each with 401.
    for call_type in api_calls() {
        rig.sim().set_fault(
            call_type,
            Fault {
                error_rate: 1.0,
                status: Some(401),
                ..Fault::default()
            },
        );
    }
    let data_before = rig.redis().dump();
    for _ in 0..3 {
        let tokens_before = requests(rig.sim(), "token");
        let refused = rig.run();
        let asked = requests(rig.sim(), "token") - tokens_before;
        assert_eq!(refused.summary.status, RunStatus::Failed);
        assert_eq!(
            refused.summary.upstream_status,
            UpstreamStatus::Unauthorized,
            "{:?}",
            refused.summary.error
        );
        let error = refused.summary.error.unwrap();
        assert!(error.contains("unauthorized"), "{error}");
        assert!(
            (1..=retries + 1).contains(&asked),
            "{asked} token requests in one run (one fresh token is tried)"
        );
    }
    assert_eq!(rig.redis().dump(), data_before, "nothing written");

    // The warm-up workers meet the same refusal: they rest, and ask for a
    // new token at most once per outage pause (30 s) between them.
    let warm_calls =
        |rig: &Rig| -> u64 { api_calls().skip(3).map(|c| requests(rig.sim(), c)).sum() };
    let (tokens_before, calls_before) = (requests(rig.sim(), "token"), warm_calls(&rig));
    let started = std::time::Instant::now();
    rig.services().start_warmer(true).unwrap();
    std::thread::sleep(Duration::from_secs(35));
    let elapsed = started.elapsed().as_secs();
    let asked = requests(rig.sim(), "token") - tokens_before;
    let calls = warm_calls(&rig) - calls_before;
    let workers = rig.config.warm.workers as u64;
    eprintln!(
        "warm-up against an API refusing tokens: {asked} token requests and {calls} calls in {elapsed} s"
    );
    assert!(
        asked <= 1 + elapsed / 30,
        "{asked} token requests from the workers in {elapsed} s"
    );
    assert!(
        calls <= workers * (elapsed / 10 + 1),
        "{calls} warm-up calls in {elapsed} s: the workers did not rest"
    );
    assert!(rig.redis().keys("GET:*").is_empty(), "nothing stored");
    let failures: usize = redis::cmd("HLEN")
        .arg("precache:warm:failures")
        .query(&mut rig.redis().conn())
        .unwrap();
    assert_eq!(failures, 0, "a refusal is not the tasks' failure");

    // Permission granted again: the next run is UP and the workers finish.
    rig.sim().clear_faults();
    let recovered = rig.run();
    assert_eq!(recovered.summary.status, RunStatus::Success);
    assert_eq!(recovered.summary.upstream_status, UpstreamStatus::Up);
    let counts = rig
        .services()
        .warmer
        .as_ref()
        .unwrap()
        .wait_for(&cold.warm_enqueued, Duration::from_secs(60));
    assert_eq!(counts.done, cold.warm_enqueued.len(), "{counts:?}");
    drop(rig.services().warmer.take());
}

#[test]
fn a_refused_client_secret_is_unauthorized_not_down() {
    let rig = trust_rig(103, false);
    let mut config = rig.config.clone();
    config.upstream.client_secret = precache::config::Secret::new("not-the-secret");
    let mut services = Services::start(&config).unwrap();
    for _ in 0..2 {
        let tokens_before = requests(rig.sim(), "token");
        let report = services.runner.run_once(false);
        let asked = requests(rig.sim(), "token") - tokens_before;
        assert_eq!(report.summary.status, RunStatus::Failed);
        assert_eq!(report.summary.upstream_status, UpstreamStatus::Unauthorized);
        let error = report.summary.error.unwrap();
        assert!(
            error.contains("client id and secret were refused"),
            "{error}"
        );
        assert!(!error.contains("not-the-secret"), "{error}");
        assert_eq!(asked, 1, "a refused secret is not asked again within a run");
    }
    // The secret rotated on a reload: the next run asks with it, and is UP.
    let right = config.reload(&rig.config);
    assert_eq!(right.applied, ["upstream.client_secret"]);
    services.runner.set_config(right.config);
    let report = services.runner.run_once(false);
    assert_eq!(report.summary.status, RunStatus::Success);
    assert_eq!(report.summary.upstream_status, UpstreamStatus::Up);
    // The same credentials again keep the token: no request for a new one.
    let tokens_before = requests(rig.sim(), "token");
    services.runner.set_config(rig.config.clone());
    services.runner.run_once(false);
    assert_eq!(requests(rig.sim(), "token"), tokens_before);
    services.shutdown();
}

#[test]
fn an_endpoint_the_api_refuses_does_not_stall_the_others() {
    let mut rig = trust_rig(104, true);
    let cold = rig.run();
    let (referee, others): (Vec<String>, Vec<String>) = cold
        .warm_enqueued
        .iter()
        .cloned()
        .partition(|m| m.contains("matchreferee"));
    assert!(referee.len() > 8 && others.len() > 8);
    // The client may not read referees: every such call is a 401.
    rig.sim().set_fault(
        "matchreferee",
        Fault {
            error_rate: 1.0,
            status: Some(401),
            ..Fault::default()
        },
    );
    let tokens_before = requests(rig.sim(), "token");
    rig.services().start_warmer(true).unwrap();
    let counts = rig
        .services()
        .warmer
        .as_ref()
        .unwrap()
        .wait_for(&others, Duration::from_secs(60));
    assert_eq!(counts.done, others.len(), "the other endpoints: {counts:?}");
    let referee_calls = requests(rig.sim(), "matchreferee");
    let asked = requests(rig.sim(), "token") - tokens_before;
    drop(rig.services().warmer.take());
    let workers = rig.config.warm.workers as u64;
    assert!(
        referee_calls <= 2 * workers,
        "{referee_calls} calls for {} refused tasks: the endpoint was not left alone",
        referee.len()
    );
    assert!(asked <= 2, "{asked} token requests");
    let mut conn = rig.redis().conn();
    for member in &referee {
        assert!(rig.redis().get(&format!("GET:{member}")).is_none());
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg("precache:warm:due")
            .arg(member)
            .query(&mut conn)
            .unwrap();
        assert!(score.is_some(), "{member} left the schedule");
    }
    let failures: usize = redis::cmd("HLEN")
        .arg("precache:warm:failures")
        .query(&mut conn)
        .unwrap();
    assert_eq!(failures, 0, "a refusal is not the tasks' failure");
}
