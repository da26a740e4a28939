//! The datasets beyond the seed's chain (DESIGN.md section 13) against a
//! real Redis and the simulator: exact per record, cold, unchanged,
//! churned and reloaded; asked by their cadence, keeping their data when
//! not due; never asked or written when disabled.

use std::collections::BTreeMap;

use kit::*;
use precache::model::dataset::DatasetId;
use precache::report::{RunReport, RunStatus};
use precache::sim::ChurnSpec;

/// The identity of each record in a dataset's key, in order.
fn key_ids(rig: &Rig, dataset: DatasetId) -> Vec<i64> {
    let spec = dataset.spec();
    rig.redis()
        .data(spec.key)
        .iter()
        .map(|r| r[spec.identity].as_i64().expect("an integer identity"))
        .collect()
}

fn calls(report: &RunReport, dataset: DatasetId) -> usize {
    report
        .summary
        .api_calls
        .get(precache::model::calls::CallType::Data(dataset))
}

/// Every dataset churned, every way the simulator can.
fn dataset_churn() -> ChurnSpec {
    let data: BTreeMap<String, usize> = precache::sim::churn_names()
        .into_iter()
        .map(|name| (name, 2))
        .collect();
    ChurnSpec {
        matches_added: 2,
        matches_removed: 1,
        data,
        ..ChurnSpec::default()
    }
}

/// A rig whose every run asks every dataset and every root: one run sees
/// any churn.
fn exact_rig(tag: &str, seed: u64) -> Rig {
    Harness::small(tag, seed).rig(|config| {
        every_dataset_every_run(config);
        config.sync.adaptive = false;
    })
}

#[test]
fn each_dataset_is_exact_cold_unchanged_churned_and_reloaded() {
    let mut rig = exact_rig("datasets", 90);
    let cold = rig.run();
    assert_status(&cold, RunStatus::Success);
    let changes = cold.changes.as_ref().unwrap();
    for dataset in DatasetId::ALL {
        let upstream = rig.sim().with_data(|d| d.data_records(dataset));
        assert!(
            upstream.len() >= 30,
            "{dataset}: {} records",
            upstream.len()
        );
        let ids: Vec<i64> = upstream.keys().copied().collect();
        let c = changes.of_dataset(dataset);
        assert_eq!(c.added, ids, "{dataset}: a cold run adds every record");
        assert!(c.removed.is_empty() && c.modified.is_empty(), "{dataset}");
        let mut held = key_ids(&rig, dataset);
        held.sort_unstable();
        assert_eq!(held, ids, "{dataset}: its key holds each record once");
        // Each record as the upstream sent it, whole.
        for record in rig.redis().data(dataset.spec().key) {
            let id = record[dataset.spec().identity].as_i64().unwrap();
            assert_eq!(record, upstream[&id], "{dataset} {id}");
        }
    }
    assert_eq!(
        cold.summary.items.datasets,
        DatasetId::ALL.map(|d| rig.sim().with_data(|s| s.data_records(d).len()))
    );

    let unchanged = rig.run();
    assert_eq!(unchanged.summary.status, RunStatus::Success);
    assert_eq!(unchanged.changes.as_ref().unwrap().total(), 0);
    assert_eq!(unchanged.summary.keys_written, 0, "no data key written");

    let expected = rig.sim().churn(&dataset_churn());
    for dataset in DatasetId::ALL {
        assert!(
            !expected.of_dataset(dataset).is_empty(),
            "{dataset}: the churn changed it"
        );
    }
    let before = rig.redis().dump();
    let churned = rig.run();
    assert_eq!(churned.summary.status, RunStatus::Success);
    assert_eq!(reported(&churned), expected, "exact, record for record");
    // Only the keys whose records changed, and the seed's that did.
    let after = rig.redis().dump();
    for dataset in DatasetId::ALL {
        let key = dataset.spec().key;
        assert_ne!(before[key], after[key], "{key} was rewritten");
    }

    let reloaded = rig.run_fresh();
    assert_eq!(reloaded.summary.status, RunStatus::Success);
    assert_eq!(
        reloaded.changes.as_ref().unwrap().total(),
        0,
        "a reload reports nothing: {:?}",
        reloaded.summary.changes
    );
    assert_cache_is_the_upstream(rig.sim(), rig.redis(), "after churn and reload");
}

#[test]
fn a_spread_dataset_costs_the_same_every_run_and_one_not_due_keeps_its_data() {
    let mut rig = Harness::small("cadence", 91).rig(|config| {
        config.sync.adaptive = false;
        config.datasets[DatasetId::VenueDetails.index()].every_runs = 4;
    });
    let teams = rig.sim().with_data(|d| d.stats().teams);
    let venues = rig
        .sim()
        .with_data(|d| d.data_records(DatasetId::Venues).len());
    let cold = rig.run();
    assert_eq!(cold.summary.status, RunStatus::Success);
    assert_eq!(calls(&cold, DatasetId::OrgTeams), teams, "cold: every team");
    assert_eq!(calls(&cold, DatasetId::VenueDetails), venues);
    assert_eq!(calls(&cold, DatasetId::Venues), 1);
    assert_eq!(calls(&cold, DatasetId::Clubs), 2, "one per sport");

    let runs: Vec<RunReport> = (0..12).map(|_| rig.run()).collect();
    for window in runs.windows(3) {
        let asked: usize = window.iter().map(|r| calls(r, DatasetId::OrgTeams)).sum();
        assert_eq!(asked, teams, "every team once in any 3 runs");
    }
    for window in runs.windows(4) {
        let asked: usize = window
            .iter()
            .map(|r| calls(r, DatasetId::VenueDetails))
            .sum();
        assert_eq!(asked, venues, "every venue once in any 4 runs");
    }
    // A club's org comes with some teams' answers: its place is kept
    // beside the key, and a reload (a third of the teams asked) sees no
    // change; an unreadable grouping is rebuilt, still without one.
    let groups = rig.redis().get("precache:groups:org_teams");
    assert!(
        groups.as_ref().is_some_and(|g| g.len() > 2),
        "club orgs kept under teams"
    );
    let reloaded = rig.run_fresh();
    assert_eq!(
        reloaded.changes.as_ref().unwrap().total(),
        0,
        "{:?}",
        reloaded.summary.changes
    );
    rig.redis().set("precache:groups:org_teams", "{not json");
    let rebuilt = rig.run_fresh();
    assert_eq!(rebuilt.summary.status, RunStatus::Success);
    assert_eq!(rebuilt.changes.as_ref().unwrap().total(), 0);
    assert!(
        rebuilt
            .summary
            .repairs
            .rewritten
            .contains(&"teams_data".to_string())
    );
    assert_eq!(rig.redis().get("precache:groups:org_teams"), groups);
    // Of another type under a running daemon: discarded and written again.
    rig.redis().cmd(&["DEL", "precache:groups:org_teams"]);
    rig.redis()
        .cmd(&["RPUSH", "precache:groups:org_teams", "x"]);
    let repaired = rig.run();
    assert_eq!(repaired.changes.as_ref().unwrap().total(), 0);
    assert_eq!(rig.redis().get("precache:groups:org_teams"), groups);
    for run in &runs {
        let org = calls(run, DatasetId::OrgTeams);
        assert!(org > 0 && org < teams, "a slot, not all: {org} of {teams}");
        assert_eq!(calls(run, DatasetId::Venues), 0, "not due for 300 runs");
        assert_eq!(calls(run, DatasetId::Clubs), 0);
        assert_eq!(run.changes.as_ref().unwrap().total(), 0);
    }

    // Not due: what changed upstream is not asked, and the data stays.
    let venues_before = rig.redis().get("venues_data");
    let clubs_before = rig.redis().get("clubs_data");
    let churned = rig.sim().churn(&ChurnSpec {
        data: [
            ("venues_modified".to_string(), 2),
            ("clubs_modified".to_string(), 2),
        ]
        .into(),
        ..ChurnSpec::default()
    });
    let quiet = rig.run();
    assert_eq!(quiet.summary.status, RunStatus::Success);
    let c = quiet.changes.as_ref().unwrap();
    assert_eq!(c.of_dataset(DatasetId::Venues).count(), 0, "not a change");
    assert_eq!(c.of_dataset(DatasetId::Clubs).count(), 0, "not a change");
    // (A renamed venue's details show it too, in their own slot.)
    let details = c.of_dataset(DatasetId::VenueDetails).ids();
    assert_eq!(c.total(), details.len());
    assert!(
        details
            .iter()
            .all(|id| churned.of_dataset(DatasetId::Venues).contains(id))
    );
    assert_eq!(rig.redis().get("venues_data"), venues_before);
    assert_eq!(rig.redis().get("clubs_data"), clubs_before);

    // A spread dataset detects each change once, within its cycle.
    let expected = rig.sim().churn(&ChurnSpec {
        data: [("org_teams_modified".to_string(), 6)].into(),
        ..ChurnSpec::default()
    });
    let want = expected.of_dataset(DatasetId::OrgTeams).to_vec();
    assert!(want.len() >= 3, "{want:?}");
    let mut seen: Vec<i64> = Vec::new();
    for _ in 0..3 {
        let run = rig.run();
        let c = run.changes.as_ref().unwrap();
        seen.extend(c.of_dataset(DatasetId::OrgTeams).ids());
    }
    seen.sort_unstable();
    assert_eq!(seen, want, "each modified org once, within 3 runs");
}

#[test]
fn a_disabled_dataset_is_never_asked_nor_written() {
    let mut rig = Harness::small("disabled", 92).rig(|config| {
        config.datasets[DatasetId::Clubs.index()].enabled = false;
        config.datasets[DatasetId::VenueDetails.index()].enabled = false;
    });
    let report = rig.run();
    assert_eq!(report.summary.status, RunStatus::Success);
    let counts = rig.sim().request_counts();
    assert_eq!(counts["clubs"], 0);
    assert_eq!(counts["venue_details"], 0);
    assert!(counts["venues"] > 0 && counts["org_teams"] > 0);
    assert_eq!(rig.redis().get("clubs_data"), None);
    assert_eq!(rig.redis().get("venue_details"), None);
    // An operator's own key of that name is not ours to check or rewrite.
    rig.redis().set("clubs_data", "not ours");
    let again = rig.run();
    assert_eq!(again.summary.status, RunStatus::Success);
    assert_eq!(
        again.summary.repairs.reloaded, None,
        "{:?}",
        again.summary.repairs
    );
    let fresh = rig.run_fresh();
    assert_eq!(fresh.summary.status, RunStatus::Success);
    assert!(
        fresh.summary.repairs.rewritten.is_empty(),
        "{:?}",
        fresh.summary.repairs
    );
    assert_eq!(rig.redis().get("clubs_data").as_deref(), Some("not ours"));
}

#[test]
fn a_record_call_answered_404_is_no_record_not_a_failure_retried_for_ever() {
    let mut rig = exact_rig("not-found", 93);
    // Teams without an org, venues without details: the API says 404.
    let not_found = precache::sim::Fault {
        error_rate: 1.0,
        status: Some(404),
        ..precache::sim::Fault::default()
    };
    rig.sim().set_fault("org_teams", not_found.clone());
    let cold = rig.run();
    assert_status(&cold, RunStatus::Success);
    assert_eq!(cold.summary.failed_calls, 0);
    assert!(rig.redis().data("teams_data").is_empty());
    assert!(!rig.redis().data("venues_data").is_empty());
    rig.sim().clear_faults();
    let found = rig.run();
    let teams = rig
        .sim()
        .with_data(|d| d.data_records(DatasetId::OrgTeams).len());
    assert_eq!(
        found
            .changes
            .as_ref()
            .unwrap()
            .of_dataset(DatasetId::OrgTeams)
            .added
            .len(),
        teams
    );
    // Gone again: "less", held like any empty answer, never a wipe.
    rig.sim().set_fault("org_teams", not_found);
    let gone = rig.run();
    assert_eq!(gone.summary.status, RunStatus::Held, "{:?}", gone.summary);
    assert_eq!(gone.changes.as_ref().unwrap().total(), 0);
    assert_eq!(rig.redis().data("teams_data").len(), teams);
    // A list call's 404 stays a failed call.
    rig.sim().clear_faults();
    rig.sim().set_fault(
        "venues",
        precache::sim::Fault {
            error_rate: 1.0,
            status: Some(404),
            ..precache::sim::Fault::default()
        },
    );
    let venues = rig.run();
    assert_status(&venues, RunStatus::Degraded);
    assert!(venues.summary.failed_calls >= 1);
}
