//! The fetch stage and `precache once --dry-run` against the simulator:
//! counts, call counts, and every upstream tolerance and failure mode.

use kit::*;
use precache::config::Config;
use precache::model::request::ApiRequest;
use precache::report::RunStatus;
use precache::sim::{ChurnSpec, Fault, Scale, SimOptions};
use precache::sync::fetch::{self, CallError, FetchFailure, FetchSettings, Fetched};
use precache::upstream::{CallLog, Upstream, UpstreamError};

fn fetch_with(config: &Config) -> Fetched {
    fetch_while(config, |_| {})
}

/// A fetch on its own thread, while `during` runs on this one with the
/// fetch's client (to cancel it, as a shutdown does).
fn fetch_while(config: &Config, during: impl FnOnce(&Upstream)) -> Fetched {
    let upstream = Upstream::new(&config.upstream).unwrap();
    let pool = fetch::build_pool(config.upstream.max_concurrency).unwrap();
    let settings = FetchSettings::from_config(
        config,
        chrono::Utc::now(),
        chrono::Local::now().naive_local(),
        false,
    );
    std::thread::scope(|scope| {
        let running = scope.spawn(|| {
            fetch::fetch(
                &upstream,
                &pool,
                &settings,
                || Some(fetch::Known::nothing()),
            )
        });
        during(&upstream);
        running.join().expect("the fetch does not panic")
    })
}

#[test]
fn dry_run_at_norway_scale_matches_the_simulator() {
    let h = Harness::new("dry-norway").sim(Scale::Norway, 7).build();
    let sim = h.sim();
    let cfg = h.write_config(&[]);
    let (code, summary, stderr) = run_cli(&cfg, &["once", "--dry-run"]);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let stats = sim.stats();
    assert_eq!(summary["status"], "success");
    assert_eq!(summary["dry_run"], true);
    assert_eq!(summary["items"], serde_json::to_value(stats).unwrap());
    assert_eq!(stats.valid_seasons, 8);
    assert_eq!(stats.root_tournaments, 1500);
    // (sports × years) seasons calls, one per valid season, one per root.
    let years = Config::default()
        .season_years(chrono::Datelike::year(&today()))
        .count();
    assert_eq!(summary["api_calls"]["seasons"], 2 * years);
    assert_eq!(
        summary["api_calls"]["tournament_season"],
        stats.valid_seasons
    );
    assert_eq!(
        summary["api_calls"]["tournament_matches"],
        stats.root_tournaments
    );
    assert_eq!(summary["failed_calls"], 0);
    // No Redis answers (the harness has none), so nothing to compare against.
    assert_eq!(summary["changes"], serde_json::json!({}));
    let served = sim.request_counts();
    assert_eq!(served["seasons"], 2 * years as u64);
    assert_eq!(served["tournament_season"], stats.valid_seasons as u64);
    assert_eq!(served["tournament_matches"], stats.root_tournaments as u64);
    assert_eq!(served["token"], 1, "one token for the whole run");
}

#[test]
fn fetched_records_keep_every_upstream_field() {
    let h = Harness::new("fetch").sim(Scale::Small, 2).build();
    let sim = h.sim();
    let fetched = fetch_with(&h.config());
    assert_eq!(fetched.status, RunStatus::Success);
    assert_eq!(fetched.snapshot.item_counts(), sim.stats());
    let m = fetched.snapshot.matches().next().unwrap();
    let raw: serde_json::Value = serde_json::from_str(&m.raw).unwrap();
    let served = sim.with_data(|d| d.match_body(m.id)).unwrap();
    assert_eq!(raw, served, "the record is the upstream's, field for field");
    // The filter matters: the simulator also serves seasons that start before 2024.
    assert!(
        fetched
            .snapshot
            .valid_seasons
            .iter()
            .all(|s| s.from_year >= Some(2024))
    );
    // Some roots answer with an empty body, some with one bare object: all tolerated.
    assert!(fetched.snapshot.matches_by_root.values().any(Vec::is_empty));
}

/// Whether two match lists are the very same slices (taken from the known
/// snapshot, not read again).
fn same_slices(a: &[precache::model::Match], b: &[precache::model::Match]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| precache::model::RawJson::same_slice(&x.raw, &y.raw))
}

#[test]
fn an_unchanged_body_is_not_read_again_and_a_changed_one_is() {
    use precache::model::bodies::MatchBodies;
    let h = Harness::new("fetch").sim(Scale::Small, 3).build();
    let sim = h.sim();
    let config = h.config();
    let upstream = Upstream::new(&config.upstream).unwrap();
    let pool = fetch::build_pool(config.upstream.max_concurrency).unwrap();
    let mut settings = FetchSettings::from_config(
        &config,
        chrono::Utc::now(),
        chrono::Local::now().naive_local(),
        false,
    );
    // The match lists' bodies are the subject: the datasets, asked by
    // their cadence, would differ between the two fetches.
    settings.datasets = Default::default();
    let first = fetch::fetch(
        &upstream,
        &pool,
        &settings,
        || Some(fetch::Known::nothing()),
    );
    let known_bodies = MatchBodies::verified(
        &first.snapshot,
        &first.bodies,
        &MatchBodies::default(),
        &precache::model::Snapshot::default(),
    );
    assert!(known_bodies.0.len() > 10, "most roots are stamped");
    // No validators: the bodies come again and their hashes are compared.
    let no_validators = fetch::MatchValidators::new();
    let known = || {
        Some(fetch::Known {
            snapshot: &first.snapshot,
            bodies: &known_bodies,
            validators: &no_validators,
            // No poll state: every root is asked.
            poll: None,
            sweep: false,
            regroup: &[],
        })
    };

    let second = fetch::fetch(&upstream, &pool, &settings, known);
    assert_eq!(second.snapshot, first.snapshot);
    for (root, list) in &second.snapshot.matches_by_root {
        let old = &first.snapshot.matches_by_root[root];
        assert_eq!(
            same_slices(list, old) && !list.is_empty(),
            known_bodies.0.contains_key(root) && !list.is_empty(),
            "root {root}: taken from the snapshot exactly when its stamp is known"
        );
    }

    let changed = sim.churn(&ChurnSpec {
        matches_modified: 5,
        matches_added: 2,
        matches_removed: 1,
        ..ChurnSpec::default()
    });
    assert!(!changed.tournament_matches.is_empty());
    let third = fetch::fetch(&upstream, &pool, &settings, known);
    let fresh = fetch::fetch(
        &upstream,
        &pool,
        &settings,
        || Some(fetch::Known::nothing()),
    );
    assert_eq!(third.snapshot, fresh.snapshot, "reuse never hides a change");
    assert_ne!(third.snapshot, first.snapshot);
    for root in &changed.tournament_matches {
        let (new, old) = (
            &third.snapshot.matches_by_root[root],
            &first.snapshot.matches_by_root[root],
        );
        assert!(!same_slices(new, old), "changed root {root} was read again");
    }
}

#[test]
fn transient_errors_are_retried() {
    let h = Harness::new("fetch").sim(Scale::Small, 3).build();
    let sim = h.sim();
    for status in [500, 503, 429] {
        sim.set_fault(
            "tournament_matches",
            Fault {
                error_rate: 1.0,
                status: Some(status),
                retry_after_secs: Some(0),
                max_faults: Some(5),
                ..Fault::default()
            },
        );
        // More retries than faults: however the five land (a loaded
        // machine may put them all on one call), every call is answered.
        let mut config = h.config();
        config.upstream.retries = 5;
        let fetched = fetch_with(&config);
        assert_eq!(fetched.status, RunStatus::Success, "HTTP {status}");
        assert_eq!(fetched.snapshot.item_counts(), sim.stats());
        let retried: u32 = fetched.calls.iter().map(|c| c.attempts - 1).sum();
        let odd: Vec<_> = fetched.calls.iter().filter(|c| c.attempts > 1).collect();
        assert_eq!(
            retried, 5,
            "HTTP {status}: five failures, five retries: {odd:?}"
        );
    }
}

#[test]
fn retry_after_is_honoured() {
    let h = Harness::new("fetch").sim(Scale::Small, 3).build();
    let sim = h.sim();
    sim.set_fault(
        "seasons",
        Fault {
            error_rate: 1.0,
            status: Some(429),
            retry_after_secs: Some(2),
            max_faults: Some(1),
            ..Fault::default()
        },
    );
    let started = std::time::Instant::now();
    let fetched = fetch_with(&h.config());
    assert_eq!(fetched.status, RunStatus::Success);
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
}

#[test]
fn a_failed_seasons_call_fails_the_run() {
    let h = Harness::new("fetch").sim(Scale::Small, 4).build();
    let sim = h.sim();
    sim.set_fault(
        "seasons",
        Fault {
            error_rate: 1.0,
            status: Some(503),
            ids: Some(vec![151]),
            ..Fault::default()
        },
    );
    let mut config = h.config();
    config.upstream.retries = 1;
    let fetched = fetch_with(&config);
    assert_eq!(fetched.status, RunStatus::Failed);
    assert!(
        matches!(&fetched.failure, Some(FetchFailure::Listing { what: "seasons", first }) if first.url.contains("sportId=151")),
        "{:?}",
        fetched.failure
    );
    assert!(
        fetched
            .failure
            .as_ref()
            .unwrap()
            .to_string()
            .contains("a seasons call failed")
    );
    assert!(
        fetched
            .failed_calls
            .iter()
            .all(|f| f.url.contains("sportId=151"))
    );
    assert_eq!(
        fetched.api_calls.tournament_matches, 0,
        "no point fetching further"
    );
}

#[test]
fn a_failed_tournaments_call_fails_the_run() {
    let h = Harness::new("fetch").sim(Scale::Small, 4).build();
    let sim = h.sim();
    let season = sim.with_data(|d| {
        let id = d.visible_match_ids()[0];
        d.match_body(id).unwrap()["seasonId"].as_i64()
    });
    sim.set_fault(
        "tournament_season",
        Fault {
            error_rate: 1.0,
            status: Some(500),
            ids: season.map(|s| vec![s]),
            ..Fault::default()
        },
    );
    let mut config = h.config();
    config.upstream.retries = 1;
    let fetched = fetch_with(&config);
    assert_eq!(fetched.status, RunStatus::Failed);
    assert!(
        matches!(
            &fetched.failure,
            Some(FetchFailure::Listing {
                what: "tournaments",
                first: precache::sync::fetch::FailedCall {
                    error: CallError::Upstream(UpstreamError::Status { status: 500, .. }),
                    ..
                }
            })
        ),
        "{:?}",
        fetched.failure
    );
    assert!(!fetched.failed_calls.is_empty());
}

#[test]
fn client_errors_are_not_retried() {
    let h = Harness::new("fetch").sim(Scale::Small, 4).build();
    let sim = h.sim();
    sim.set_fault(
        "tournament_season",
        Fault {
            error_rate: 1.0,
            status: Some(404),
            ..Fault::default()
        },
    );
    let fetched = fetch_with(&h.config());
    assert_eq!(fetched.status, RunStatus::Failed);
    assert!(fetched.calls.iter().all(|c| c.attempts == 1));
    assert_eq!(
        sim.request_counts()["tournament_season"],
        fetched.api_calls.tournament_season as u64
    );
}

#[test]
fn some_failed_match_calls_degrade_the_run_and_are_named() {
    let h = Harness::new("fetch").sim(Scale::Small, 5).build();
    let sim = h.sim();
    sim.set_fault(
        "tournament_matches",
        Fault {
            error_rate: 0.2,
            sticky: true,
            ..Fault::default()
        },
    );
    let mut config = h.config();
    config.upstream.retries = 1;
    let fetched = fetch_with(&config);
    assert_eq!(fetched.status, RunStatus::Degraded);
    assert!(!fetched.failed_roots.is_empty());
    for root in &fetched.failed_roots {
        assert!(
            !fetched.snapshot.matches_by_root.contains_key(root),
            "a failure is not an empty list"
        );
    }
    assert_eq!(
        fetched.failed_roots.len() + fetched.snapshot.matches_by_root.len(),
        fetched.api_calls.tournament_matches
    );
}

#[test]
fn too_many_failed_match_calls_fail_the_run() {
    let h = Harness::new("fetch").sim(Scale::Small, 5).build();
    let sim = h.sim();
    sim.set_fault(
        "tournament_matches",
        Fault {
            error_rate: 0.8,
            sticky: true,
            ..Fault::default()
        },
    );
    let mut config = h.config();
    config.upstream.retries = 0;
    let fetched = fetch_with(&config);
    assert_eq!(fetched.status, RunStatus::Failed);
    let failure = fetched.failure.unwrap();
    assert!(
        matches!(failure, FetchFailure::TooManyMatchCalls { failed, asked, .. } if failed * 2 > asked),
        "{failure:?}"
    );
    assert!(failure.to_string().contains("max_failed_fraction"));
}

#[test]
fn bad_bodies_are_failed_calls_never_empty_lists() {
    // A body that cannot be read is the call's failure (`Body`); one cut
    // off in transfer is no answer (`Transport`, retried).
    for (fault, expect, body_error) in [
        (
            Fault {
                malformed_rate: 1.0,
                ..Fault::default()
            },
            "malformed JSON",
            true,
        ),
        (
            Fault {
                truncate_rate: 1.0,
                ..Fault::default()
            },
            "reading body",
            false,
        ),
        (
            Fault {
                empty_rate: 1.0,
                ..Fault::default()
            },
            "empty body",
            true,
        ),
    ] {
        let h = Harness::new("fetch").sim(Scale::Small, 6).build();
        let sim = h.sim();
        sim.set_fault("tournament_season", fault);
        let fetched = fetch_with(&h.config());
        assert_eq!(fetched.status, RunStatus::Failed, "{expect}");
        assert!(
            fetched
                .failed_calls
                .iter()
                .all(|f| f.error.to_string().contains(expect)
                    && matches!(
                        (&f.error, body_error),
                        (CallError::Body { .. }, true)
                            | (CallError::Upstream(UpstreamError::Transport { .. }), false)
                    )),
            "{expect}: {:?}",
            fetched.failed_calls
        );
    }
}

#[test]
fn a_single_object_is_a_list_of_one() {
    let h = Harness::new("fetch").sim(Scale::Small, 6).build();
    let sim = h.sim();
    sim.set_fault(
        "seasons",
        Fault {
            single_object_rate: 1.0,
            ..Fault::default()
        },
    );
    let config = h.config();
    let fetched = fetch_with(&config);
    assert_eq!(fetched.status, RunStatus::Success);
    // Each (sport, year) call returned its first season only, as a bare
    // object: exactly those that are valid are the run's seasons.
    let this_year = chrono::Datelike::year(&today());
    let expected: std::collections::BTreeSet<i64> = sim.with_data(|d| {
        config
            .season_years(this_year)
            .flat_map(|year| {
                config
                    .sync
                    .sport_ids
                    .iter()
                    .map(move |sport| (year, *sport))
            })
            .filter_map(|(year, sport)| {
                let first = d.seasons_body(year, sport)["seasons"][0].clone();
                let from = first["seasonDateFrom"].as_str()?;
                let from = precache::model::parse_upstream_datetime(from)?;
                (chrono::Datelike::year(&from) >= config.sync.first_year)
                    .then(|| first["seasonId"].as_i64())
                    .flatten()
            })
            .collect()
    });
    let got: std::collections::BTreeSet<i64> = fetched
        .snapshot
        .valid_seasons
        .iter()
        .map(|s| s.id)
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(got, expected);
}

#[test]
fn a_stalled_call_times_out_and_is_retried() {
    let h = Harness::new("fetch").sim(Scale::Small, 8).build();
    let sim = h.sim();
    sim.set_fault(
        "tournament_season",
        Fault {
            stall_rate: 1.0,
            max_faults: Some(1),
            ..Fault::default()
        },
    );
    let mut config = h.config();
    config.upstream.timeout_secs = 1;
    let fetched = fetch_with(&config);
    assert_eq!(fetched.status, RunStatus::Success, "{:?}", fetched.failure);
    assert!(fetched.calls.iter().any(|c| c.attempts == 2));
}

#[test]
fn tokens_are_reused_refreshed_on_401_and_bad_credentials_fail_clearly() {
    let h = Harness::new("fetch").sim(Scale::Small, 9).build();
    let sim = h.sim();
    let config = h.config();
    let upstream = Upstream::new(&config.upstream).unwrap();
    let log = CallLog::default();
    upstream.get(&ApiRequest::seasons(2025, 72), &log).unwrap();
    upstream.get(&ApiRequest::seasons(2025, 151), &log).unwrap();
    assert_eq!(sim.request_counts()["token"], 1);
    // The upstream forgets its tokens: a 401 fetches a new one, once.
    let revoke = ureq::post(format!("{}/_sim/revoke_tokens", sim.url())).send_empty();
    assert!(revoke.is_ok());
    upstream.get(&ApiRequest::seasons(2025, 72), &log).unwrap();
    assert_eq!(sim.request_counts()["token"], 2);

    let mut bad = config.clone();
    bad.upstream.client_secret = precache::config::Secret::new("wrong-secret-value");
    let err = Upstream::new(&bad.upstream)
        .unwrap()
        .get(&ApiRequest::seasons(2025, 72), &log)
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Token { .. }), "{err}");
    assert!(err.to_string().contains("401"), "{err}");
    assert!(!err.to_string().contains("wrong-secret-value"));
    for record in log.take() {
        let line = serde_json::to_string(&record).unwrap();
        for secret in ["demo-secret", "wrong-secret-value", "sim-"] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
    }
}

#[test]
fn expired_tokens_are_refreshed() {
    let h = Harness::new("fetch")
        .sim_with(SimOptions {
            token_ttl_secs: 2,
            ..SimOptions::default()
        })
        .build();
    let sim = h.sim();
    let config = h.config();
    let upstream = Upstream::new(&config.upstream).unwrap();
    let log = CallLog::default();
    upstream.get(&ApiRequest::seasons(2025, 72), &log).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2200));
    upstream.get(&ApiRequest::seasons(2025, 72), &log).unwrap();
    assert_eq!(sim.request_counts()["token"], 2);
}

#[test]
fn cli_reports_bad_config_with_exit_code_2_and_hides_secrets() {
    let h = Harness::new("badcfg").sim(Scale::Small, 1).build();
    let cfg = h.write_config(&[("sync", "interval_secs", "\"often\"".into())]);
    let out = cli(&cfg).args(["once", "--dry-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sync.interval_secs"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = cli("/nonexistent/precache.toml".as_ref())
        .args(["once", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/precache.toml"));

    // A failed run: exit 1, a JSON summary, and no secret anywhere in the output.
    let cfg = h.write_config(&[
        ("upstream", "client_secret", quoted("not-the-secret-xyz")),
        ("upstream", "retries", "0".into()),
    ]);
    let out = cli(&cfg).args(["once", "--dry-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "failed");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("not-the-secret-xyz"), "{all}");
}

/// A shutdown during the match calls: the fetch ends `Cancelled` (not the
/// upstream DOWN), yet still notes every dataset key due this run, so the
/// next run (after a restart too, from the poll state in Redis) asks them
/// rather than waiting for their turn to come round again.
#[test]
fn a_fetch_cut_by_shutdown_is_cancelled_and_keeps_the_datasets_due_keys() {
    let h = Harness::new("fetch-cancel").sim(Scale::Small, 8).build();
    h.sim().set_fault(
        "tournament_matches",
        Fault {
            latency_ms: 300,
            ..Fault::default()
        },
    );
    let fetched = fetch_while(&h.config(), |upstream| {
        wait_for(
            "the match calls",
            std::time::Duration::from_secs(10),
            || {
                h.sim()
                    .request_counts()
                    .get("tournament_matches")
                    .is_some_and(|n| *n > 0)
            },
        );
        upstream.cancel();
    });
    assert_eq!(fetched.status, RunStatus::Failed);
    assert!(
        matches!(fetched.failure, Some(FetchFailure::Cancelled)),
        "{:?}",
        fetched.failure
    );
    assert!(fetched.failed_calls.iter().any(|f| f.cancelled()));
    let polled = fetched
        .polled
        .as_ref()
        .expect("the match calls were planned");
    let mut noted = 0;
    for dataset in precache::model::dataset::DatasetId::ALL {
        let retry = polled.unwritten.data_retry.get(&dataset);
        for key in &fetched.data[dataset.index()].asked {
            assert!(
                retry.is_some_and(|keys| keys.contains(key)),
                "{dataset} key {key} is asked again"
            );
            noted += 1;
        }
    }
    assert!(noted > 0, "some dataset key was due: {:?}", fetched.data);
}
