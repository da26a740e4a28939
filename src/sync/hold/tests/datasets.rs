//! Unit tests of the datasets' hold (DESIGN.md section 13).

use super::*;
use crate::model::dataset::{DatasetId, DatasetState};
use crate::model::{Keyed, RawJson};

const ORG: DatasetId = DatasetId::OrgTeams;
const VENUES: DatasetId = DatasetId::Venues;
const DETAILS: DatasetId = DatasetId::VenueDetails;

fn record(id: i64, v: &str) -> Keyed {
    Keyed {
        id,
        raw: RawJson::from(format!(r#"{{"id":{id},"v":"{v}"}}"#)),
    }
}

/// One root whose matches are played by teams 1..=`teams`.
fn seed(teams: i64) -> Snapshot {
    let games: Vec<Match> = (1..=teams)
        .map(|t| {
            Match::from_json(&json!({
                "matchId": 1000 + t, "tournamentId": 10, "matchDate": "2025-09-01",
                "hometeamId": t, "awayteamId": if t == 1 { 2 } else { 1 }
            }))
            .unwrap()
        })
        .collect();
    fixtures::snapshot(
        vec![season(1)],
        vec![tournament(10, 1, None)],
        &[(10, games)],
    )
}

/// `seed(teams)` with an org per team and `venues` venues with details.
fn cache(teams: i64, venues: i64) -> Snapshot {
    let mut s = seed(teams);
    s.datasets[ORG].groups = (1..=teams).map(|t| (t, vec![record(t, "a")])).collect();
    s.datasets[VENUES].groups = [(0, (1..=venues).map(|v| record(v, "a")).collect())].into();
    s.datasets[DETAILS].groups = (1..=venues).map(|v| (v, vec![record(v, "a")])).collect();
    s
}

/// What the fetch reports: `asked` and `failed` per dataset, the
/// answered records in the snapshot's datasets.
fn asked(spec: &[(DatasetId, Vec<i64>, Vec<i64>)]) -> Vec<DataAnswer> {
    let mut answers: Vec<DataAnswer> = DatasetId::ALL
        .map(|_| DataAnswer {
            enabled: true,
            ..DataAnswer::default()
        })
        .to_vec();
    for (d, keys, failed) in spec {
        answers[d.index()].asked = keys.clone();
        answers[d.index()].failed = failed.clone();
    }
    answers
}

fn run(previous: &Snapshot, fetched: Snapshot, answers: &[DataAnswer]) -> Plan {
    plan(
        previous,
        Answer {
            snapshot: fetched,
            data: answers,
            ..Answer::default()
        },
        SETTINGS,
        None,
        false,
    )
}

#[test]
fn a_dataset_not_asked_keeps_its_records_and_is_no_change() {
    let cached = cache(10, 5);
    let p = run(&cached, seed(10), &asked(&[]));
    assert_eq!(p.next.datasets, cached.datasets);
    assert!(diff::diff(&cached, &p.next).is_empty());
}

#[test]
fn the_keys_asked_replace_theirs_and_only_what_differs_is_a_change() {
    let cached = cache(10, 5);
    let mut fetched = seed(10);
    fetched.datasets[ORG].groups = [(3, vec![record(3, "a")]), (4, vec![record(4, "b")])].into();
    let p = run(&cached, fetched, &asked(&[(ORG, vec![3, 4], vec![])]));
    let changes = diff::diff(&cached, &p.next);
    assert_eq!(changes.of_dataset(ORG).modified, vec![4]);
    assert_eq!(changes.total(), 1);
    assert_eq!(p.next.datasets[ORG].len(), 10);
}

#[test]
fn a_failed_key_is_carried_over_and_an_unspread_dataset_kept_whole() {
    let cached = cache(10, 5);
    let mut fetched = seed(10);
    fetched.datasets[ORG].groups = [(3, vec![record(3, "b")])].into();
    fetched.datasets[VENUES].groups = [(0, vec![record(1, "b")])].into();
    let p = run(
        &cached,
        fetched,
        &asked(&[(ORG, vec![3, 4], vec![4]), (VENUES, vec![0, 1], vec![1])]),
    );
    assert_eq!(p.carried_data[&ORG], vec![4]);
    assert_eq!(p.carried_data[&VENUES], vec![1]);
    assert_eq!(p.next.datasets[VENUES], cached.datasets[VENUES]);
    let changes = diff::diff(&cached, &p.next);
    assert_eq!(changes.of_dataset(ORG).modified, vec![3]);
    assert_eq!(changes.total(), 1, "{changes:?}");
}

#[test]
fn an_empty_answer_is_held_until_confirmed() {
    let cached = cache(10, 5);
    let mut fetched = seed(10);
    fetched.datasets[ORG].groups = [(3, vec![])].into();
    let answers = asked(&[(ORG, vec![3], vec![])]);
    let p = run(&cached, fetched.clone(), &answers);
    assert!(matches!(p.verdict, ShrinkVerdict::Held { seen: 1, .. }));
    assert_eq!(p.held.datasets["org_teams"], vec![3]);
    assert_eq!(p.next.datasets, cached.datasets, "nothing wiped");
    // The seed's lists alone keep the fingerprint they always had.
    let seed_only = Held {
        roots: vec![1],
        ..Held::default()
    };
    let with_empty = Held {
        datasets: [("org_teams".to_string(), vec![])].into(),
        ..seed_only.clone()
    };
    assert_eq!(seed_only.fingerprint(), with_empty.fingerprint());
    let mut state = p.shrink_state;
    for _ in 1..SETTINGS.confirm_runs {
        let p = plan(
            &cached,
            Answer {
                snapshot: fetched.clone(),
                data: &answers,
                ..Answer::default()
            },
            SETTINGS,
            state.as_ref(),
            false,
        );
        state = p.shrink_state.clone();
        if let ShrinkVerdict::Confirmed { .. } = p.verdict {
            assert!(p.next.datasets[ORG].groups[&3].is_empty());
            assert_eq!(
                diff::diff(&cached, &p.next).of_dataset(ORG).removed,
                vec![3]
            );
            return;
        }
    }
    panic!("never confirmed");
}

#[test]
fn a_shrink_of_the_venues_is_held_and_when_accepted_their_details_go_too() {
    let cached = cache(4, 10);
    let mut fetched = seed(4);
    fetched.datasets[VENUES].groups = [(0, (1..=5).map(|v| record(v, "a")).collect())].into();
    let answers = asked(&[(VENUES, vec![0], vec![])]);
    let p = run(&cached, fetched.clone(), &answers);
    assert!(matches!(p.verdict, ShrinkVerdict::Held { .. }));
    assert_eq!(p.next.datasets, cached.datasets);
    let accepted = plan(
        &cached,
        Answer {
            snapshot: fetched,
            data: &answers,
            ..Answer::default()
        },
        SETTINGS,
        None,
        true,
    );
    assert_eq!(accepted.verdict, ShrinkVerdict::Accepted);
    let changes = diff::diff(&cached, &accepted.next);
    assert_eq!(changes.of_dataset(VENUES).removed, vec![6, 7, 8, 9, 10]);
    assert_eq!(changes.of_dataset(DETAILS).removed, vec![6, 7, 8, 9, 10]);
}

#[test]
fn a_team_that_is_gone_takes_its_org_and_a_new_one_is_asked() {
    let cached = cache(10, 2);
    // Team 10 played its last match; team 11 its first.
    let mut fetched = seed(9);
    let extra = Match::from_json(&json!({
        "matchId": 2000, "tournamentId": 10, "hometeamId": 11, "awayteamId": 1
    }))
    .unwrap();
    fetched.matches_by_root.get_mut(&10).unwrap().push(extra);
    fetched.datasets[ORG].groups = [(11, vec![record(11, "a")])].into();
    let p = run(&cached, fetched, &asked(&[(ORG, vec![11], vec![])]));
    let changes = diff::diff(&cached, &p.next);
    assert_eq!(changes.of_dataset(ORG).added, vec![11]);
    assert_eq!(changes.of_dataset(ORG).removed, vec![10]);
}

#[test]
fn an_id_under_two_keys_is_kept_once_and_a_move_is_no_change() {
    let mut cached = cache(3, 1);
    cached.datasets[ORG].groups = [
        (1, vec![record(1, "a"), record(9, "x")]),
        (2, vec![record(2, "a")]),
        (3, vec![record(3, "a")]),
    ]
    .into();
    let mut fetched = seed(3);
    // 9 moves from key 1's answer to key 3's, the same record; and
    // key 2 answers it too (its first place wins).
    fetched.datasets[ORG].groups = [
        (1, vec![record(1, "a")]),
        (2, vec![record(2, "a"), record(9, "x")]),
        (3, vec![record(3, "a"), record(9, "x")]),
    ]
    .into();
    let p = run(&cached, fetched, &asked(&[(ORG, vec![1, 2, 3], vec![])]));
    let state: &DatasetState = &p.next.datasets[ORG];
    assert_eq!(state.records().len(), 4, "the key holds each id once");
    assert_eq!(state.len(), 5, "as answered, under both keys");
    assert!(diff::diff(&cached, &p.next).is_empty());
}
