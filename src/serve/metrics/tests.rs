//! Unit tests of `metrics`.

use super::*;
use crate::model::calls::CallRecord;
use crate::model::changes::{Category, ChangeCounts, Changes};
use crate::report::{RunStats, RunSummary, TierCounts, UpstreamStatus};
use chrono::Utc;
use std::sync::Arc;

/// Change counts with `n` added ids in each named category.
fn counts(pairs: &[(Category, usize)]) -> ChangeCounts {
    let mut changes = Changes::default();
    for (category, n) in pairs {
        let ids = (0..*n as i64).collect();
        match category {
            Category::ValidSeasons => changes.valid_seasons.added = ids,
            Category::TournamentsInSeason => changes.tournaments_in_season.added = ids,
            Category::TournamentMatches => changes.tournament_matches.added = ids,
            Category::IndividualMatches => changes.individual_matches.added = ids,
            Category::UniqueTeamIds => changes.unique_team_ids.added = ids,
            Category::Data(d) => changes.datasets[d.index()].added = ids,
        }
    }
    ChangeCounts::of(&changes)
}

fn report(run_id: &str, status: RunStatus, calls: usize) -> RunReport {
    let mut summary = RunSummary::new(run_id.into(), false);
    summary.status = status;
    summary.duration_ms = 1500;
    if status == RunStatus::Failed {
        summary.upstream_status = UpstreamStatus::Down;
    } else {
        summary.changes = counts(&[(Category::IndividualMatches, 3)]);
    }
    let (started_at, ended_at) = (Utc::now(), Utc::now());
    RunReport {
        stats: RunStats::of(&summary, started_at, ended_at),
        summary,
        started_at,
        ended_at,
        changes: None,
        snapshot: None,
        root_tiers: Default::default(),
        calls: Arc::new(
            (0..calls)
                .map(|i| CallRecord {
                    call_type: CallType::TournamentMatches,
                    method: "GET",
                    url_path: "/api/v1/ta/TournamentMatches".into(),
                    params: [("tournamentId".to_string(), i.to_string())].into(),
                    status_code: Some(200),
                    attempts: 1,
                    duration_ms: 1,
                    timestamp: Utc::now(),
                    error: None,
                    unauthorized: false,
                })
                .collect(),
        ),
        warm_enqueued: vec![],
    }
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn every_category_gets_a_value_and_failed_runs_set_minus_one() {
    let m = Metrics::new(10, true).unwrap();
    m.record_run(&report("r1", RunStatus::Success, 2), None, &BTreeMap::new());
    m.record_run(&report("r2", RunStatus::Failed, 0), None, &BTreeMap::new());
    let text = m.render().unwrap();
    assert_eq!(
        sample(
            &text,
            r#"precache_changes_this_run{category="individual_matches",run_id="r1"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"precache_changes_this_run{category="unique_team_ids",run_id="r1"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"precache_changes_this_run{category="unique_team_ids",run_id="r2"}"#
        ),
        Some(-1.0)
    );
    assert_eq!(
        sample(&text, r#"precache_runs_total{status="error"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"precache_runs_total{status="success"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"precache_changes_detected_total{category="individual_matches"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, r#"precache_upstream_status{endpoint="api"}"#),
        Some(0.0)
    );
    // r1 saw its match calls succeed; r2 failed before reaching any.
    assert_eq!(
        sample(
            &text,
            r#"precache_upstream_status{endpoint="tournament_matches"}"#
        ),
        Some(0.0)
    );
    assert_eq!(sample(&text, "precache_duration_seconds_count"), Some(2.0));
    assert!(text.contains(r#"precache_build_info{build_date=""#));
}

/// A run Redis failed (the upstream answered what was asked, `api` UP)
/// says nothing of the call types it never reached: their gauges keep
/// what the last run that reached them saw.
#[test]
fn a_run_failed_by_redis_leaves_the_unreached_call_types_as_they_were() {
    let m = Metrics::new(10, false).unwrap();
    m.record_run(&report("r1", RunStatus::Success, 2), None, &BTreeMap::new());
    let mut failed = report("r2", RunStatus::Failed, 0);
    failed.summary.upstream_status = UpstreamStatus::Up;
    m.record_run(&failed, None, &BTreeMap::new());
    let text = m.render().unwrap();
    assert_eq!(
        sample(&text, r#"precache_upstream_status{endpoint="api"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"precache_upstream_status{endpoint="tournament_matches"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn info_series_follow_the_cache_lists() {
    let snapshot = |name: &str| {
        let mut s = Snapshot::default();
        let t = serde_json::json!({"tournamentId": 1, "tournamentName": name, "seasonId": 9});
        s.tournaments
            .push(crate::model::Tournament::from_json(&t).unwrap());
        s
    };
    let m = Metrics::new(10, true).unwrap();
    let mut first = report("r1", RunStatus::Success, 0);
    first.summary.changes = counts(&[
        (Category::IndividualMatches, 3),
        (Category::TournamentsInSeason, 1),
    ]);
    m.record_run(&first, Some(&snapshot("Cup")), &BTreeMap::new());
    assert!(m.render().unwrap().contains(r#"tournament_name="Cup""#));
    let mut renamed = report("r2", RunStatus::Success, 0);
    renamed.summary.changes = counts(&[
        (Category::IndividualMatches, 3),
        (Category::TournamentsInSeason, 1),
    ]);
    m.record_run(&renamed, Some(&snapshot("Cup 2")), &BTreeMap::new());
    let text = m.render().unwrap();
    assert!(text.contains(r#"tournament_name="Cup 2""#));
    assert!(!text.contains(r#"tournament_name="Cup""#));
    // No change reported in the lists: the series are left as they are.
    let mut quiet = report("r3", RunStatus::Success, 0);
    quiet.summary.changes = counts(&[
        (Category::IndividualMatches, 3),
        (Category::TournamentsInSeason, 0),
    ]);
    m.record_run(&quiet, Some(&snapshot("Cup 2")), &BTreeMap::new());
    assert_eq!(
        m.render()
            .unwrap()
            .matches("precache_tournaments_in_season_info{")
            .count(),
        1
    );
}

#[test]
fn run_id_series_are_kept_for_keep_runs_runs_only() {
    let m = Metrics::new(3, true).unwrap();
    let mut sizes = Vec::new();
    for n in 0..8 {
        m.record_run(
            &report(&format!("run{n}"), RunStatus::Success, 5),
            None,
            &BTreeMap::new(),
        );
        sizes.push(m.render().unwrap().len());
    }
    let text = m.render().unwrap();
    for n in 0..5 {
        assert!(
            !text.contains(&format!("run_id=\"run{n}\"")),
            "run{n} is gone"
        );
    }
    for n in 5..8 {
        assert!(
            text.contains(&format!("run_id=\"run{n}\"")),
            "run{n} is kept"
        );
    }
    // The body stops growing once keep_runs runs are retained (the
    // process collector's numbers may change width by a few bytes).
    let plateau = &sizes[3..];
    let (min, max) = (plateau.iter().min().unwrap(), plateau.iter().max().unwrap());
    assert!(max - min < 64, "{sizes:?}");
    assert_eq!(
        text.matches("precache_api_urls_called{").count(),
        3 * 5,
        "five URLs for each of the three kept runs"
    );
}

#[test]
fn the_live_heap_is_exported_as_measured() {
    let m = Metrics::new(10, true).unwrap();
    let measured = crate::alloc::heap_in_use();
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        // This test process has allocated at least the registry.
        assert!(measured.is_some_and(|b| b > 0), "{measured:?}");
    }
    m.set_heap_in_use(Some(123_456));
    let text = m.render().unwrap();
    assert_eq!(
        sample(&text, "precache_heap_in_use_bytes "),
        Some(123_456.0)
    );
    // Unknown leaves the last value.
    m.set_heap_in_use(None);
    assert_eq!(
        sample(&m.render().unwrap(), "precache_heap_in_use_bytes "),
        Some(123_456.0)
    );
}

#[test]
fn not_modified_answers_are_counted_across_runs() {
    let m = Metrics::new(10, true).unwrap();
    for (id, n) in [("r1", 0), ("r2", 7), ("r3", 5)] {
        let mut run = report(id, RunStatus::Success, 0);
        run.summary.not_modified = n;
        m.record_run(&run, None, &BTreeMap::new());
    }
    let text = m.render().unwrap();
    assert_eq!(
        sample(&text, "precache_upstream_not_modified_total "),
        Some(12.0)
    );
}

#[test]
fn match_calls_count_by_tier_and_the_tier_gauges_follow_the_last_run() {
    let m = Metrics::new(3, true).unwrap();
    let text = m.render().unwrap();
    assert_eq!(
        sample(
            &text,
            "precache_upstream_match_calls_total{tier=\"dormant\"}"
        ),
        Some(0.0),
        "the counters exist before the first run"
    );
    let poll = |live, active, dormant, age| crate::report::PollReport {
        full_sweep: false,
        tiers: TierCounts {
            live: 10,
            active: 30,
            dormant: 60,
        },
        polled: TierCounts {
            live,
            active,
            dormant,
        },
        oldest_poll_age_runs: TierCounts {
            live: 0,
            active: 2,
            dormant: age,
        },
    };
    let mut first = report("r1", RunStatus::Success, 3);
    first.summary.poll = Some(poll(10, 10, 3, 19));
    m.record_run(&first, None, &BTreeMap::new());
    let mut second = report("r2", RunStatus::Success, 3);
    second.summary.poll = Some(poll(10, 11, 2, 18));
    m.record_run(&second, None, &BTreeMap::new());
    let text = m.render().unwrap();
    for (series, value) in [
        ("precache_upstream_match_calls_total{tier=\"live\"}", 20.0),
        ("precache_upstream_match_calls_total{tier=\"active\"}", 21.0),
        ("precache_upstream_match_calls_total{tier=\"dormant\"}", 5.0),
        ("precache_poll_tier_roots{tier=\"dormant\"}", 60.0),
        ("precache_poll_oldest_age_runs{tier=\"dormant\"}", 18.0),
        ("precache_poll_oldest_age_runs{tier=\"active\"}", 2.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series}");
    }
}

#[test]
fn without_seed_run_series_no_series_is_labelled_by_run() {
    let m = Metrics::new(10, false).unwrap();
    let mut names_after = Vec::new();
    for (n, run_id) in ["r1", "r2", "r3"].into_iter().enumerate() {
        m.record_run(
            &report(run_id, RunStatus::Success, n),
            None,
            &BTreeMap::new(),
        );
        let text = m.render().unwrap();
        assert!(!text.contains("run_id="), "{text}");
        for name in [
            "precache_changes_this_run",
            "precache_run_changes_summary",
            "precache_api_urls_called",
        ] {
            assert!(!text.contains(&format!("{name}{{")), "{name} exported");
        }
        // The bounded stand-in: the last run's changes.
        assert_eq!(
            sample(
                &text,
                r#"precache_last_run_changes{category="individual_matches"}"#
            ),
            Some(3.0)
        );
        let series: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("process_"))
            .filter_map(|l| Some(l.rsplit_once(' ')?.0.to_string()))
            .collect();
        names_after.push(series);
    }
    assert_eq!(
        names_after[1], names_after[2],
        "a scrape holds the same series run after run"
    );
    // Turned on (a reload), the seed's series come; turned off, they go.
    m.set_seed_run_series(true);
    m.record_run(&report("r4", RunStatus::Success, 1), None, &BTreeMap::new());
    assert!(m.render().unwrap().contains(r#"run_id="r4""#));
    m.set_seed_run_series(false);
    assert!(!m.render().unwrap().contains("run_id="));
}
