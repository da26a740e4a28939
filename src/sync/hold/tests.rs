//! Unit tests of `hold`.

use super::*;
use crate::model::fixtures::{self, season, tournament};
use crate::sync::diff;
use serde_json::json;

const SETTINGS: ShrinkSettings = ShrinkSettings {
    max_fraction: 0.2,
    confirm_runs: 3,
};

fn game(id: i64, tournament: i64) -> Match {
    fixtures::game(id, tournament, "2025-09-01")
}

/// 5 seasons (1..=5); season s has root 10s with child 10s+1 and root
/// 10s+2; each root has 5 matches.
fn base() -> Snapshot {
    let seasons = (1..=5).map(season).collect();
    let tournaments = (1..=5)
        .flat_map(|id| {
            let (r1, child, r2) = (id * 10, id * 10 + 1, id * 10 + 2);
            [
                tournament(r1, id, None),
                tournament(child, id, Some(r1)),
                tournament(r2, id, None),
            ]
        })
        .collect();
    let lists: Vec<(i64, Vec<Match>)> = (1..=5)
        .flat_map(|id| [id * 10, id * 10 + 2])
        .map(|root| (root, (0..5).map(|k| game(root * 100 + k, root)).collect()))
        .collect();
    fixtures::snapshot(seasons, tournaments, &lists)
}

fn answer(snapshot: Snapshot) -> Answer<'static> {
    Answer {
        snapshot,
        ..Answer::default()
    }
}

fn plan_of(previous: &Snapshot, answer: Answer<'_>) -> Plan {
    plan(previous, answer, SETTINGS, None, false)
}

#[test]
fn an_unchanged_answer_plans_the_same_snapshot() {
    let p = plan_of(&base(), answer(base()));
    assert_eq!(p.next, base());
    assert_eq!(p.verdict, ShrinkVerdict::None);
    assert!(p.held.is_empty() && p.shrink_state.is_none() && p.warnings.is_empty());
}

#[test]
fn a_cold_start_holds_nothing() {
    let p = plan_of(&Snapshot::default(), answer(base()));
    assert_eq!(p.next, base());
    assert_eq!(p.verdict, ShrinkVerdict::None);
}

#[test]
fn failed_roots_are_carried_over() {
    let mut fetched = base();
    fetched.matches_by_root.remove(&10);
    let failed = [10, 999];
    let p = plan_of(
        &base(),
        Answer {
            snapshot: fetched,
            failed_roots: &failed,
            ..Answer::default()
        },
    );
    assert_eq!(p.next, base());
    assert_eq!(p.carried_over, vec![10], "999 had nothing to carry");
    assert!(diff::diff(&base(), &p.next).is_empty());
}

#[test]
fn an_empty_root_keeps_its_matches_until_confirmed() {
    let mut fetched = base();
    fetched.matches_by_root.insert(20, vec![]);
    let p = plan_of(&base(), answer(fetched.clone()));
    assert_eq!(p.next, base(), "nothing of the shrink is applied");
    assert_eq!(p.held.roots, vec![20]);
    assert_eq!(
        p.verdict,
        ShrinkVerdict::Held {
            seen: 1,
            confirm_runs: 3
        }
    );
    let state = p.shrink_state.clone().unwrap();
    assert_eq!(state.seen, 1);
    // The same answer again: seen twice, still held.
    let p2 = plan(
        &p.next,
        answer(fetched.clone()),
        SETTINGS,
        Some(&state),
        false,
    );
    assert_eq!(p2.shrink_state.as_ref().unwrap().seen, 2);
    assert_eq!(p2.next, base());
    // A third time: applied.
    let p3 = plan(
        &p2.next,
        answer(fetched.clone()),
        SETTINGS,
        p2.shrink_state.as_ref(),
        false,
    );
    assert_eq!(p3.verdict, ShrinkVerdict::Confirmed { seen: 3 });
    assert_eq!(p3.next, fetched);
    assert!(p3.shrink_state.is_none() && p3.held.is_empty());
    assert!(p3.warnings[0].contains("applied"), "{:?}", p3.warnings);
}

#[test]
fn a_different_shrink_starts_counting_again() {
    let mut first = base();
    first.matches_by_root.insert(20, vec![]);
    let p = plan_of(&base(), answer(first));
    let mut other = base();
    other.matches_by_root.insert(30, vec![]);
    let p2 = plan(
        &p.next,
        answer(other),
        SETTINGS,
        p.shrink_state.as_ref(),
        false,
    );
    assert_eq!(p2.shrink_state.unwrap().seen, 1);
    assert_eq!(p2.held.roots, vec![30]);
}

#[test]
fn an_operator_accepts_at_once() {
    let mut fetched = base();
    fetched.matches_by_root.insert(20, vec![]);
    let p = plan(&base(), answer(fetched.clone()), SETTINGS, None, true);
    assert_eq!(p.verdict, ShrinkVerdict::Accepted);
    assert_eq!(p.next, fetched);
    assert!(p.shrink_state.is_none());
}

#[test]
fn confirm_runs_of_one_applies_every_shrink() {
    let mut fetched = base();
    fetched.matches_by_root.insert(20, vec![]);
    let settings = ShrinkSettings {
        confirm_runs: 1,
        ..SETTINGS
    };
    let p = plan(&base(), answer(fetched.clone()), settings, None, false);
    assert_eq!(p.verdict, ShrinkVerdict::Confirmed { seen: 1 });
    assert_eq!(p.next, fetched);
}

#[test]
fn a_root_that_had_no_matches_may_stay_empty() {
    let mut previous = base();
    previous.matches_by_root.insert(20, vec![]);
    let p = plan_of(&previous, answer(previous.clone()));
    assert_eq!(p.verdict, ShrinkVerdict::None);
}

#[test]
fn seasons_null_keeps_everything() {
    // `{"seasons": null}`: no valid season, so nothing else was asked.
    let p = plan_of(&base(), answer(Snapshot::default()));
    assert_eq!(p.held.seasons, vec![1, 2, 3, 4, 5]);
    let mut next = p.next.clone();
    next.tournaments.sort_by_key(|t| t.id);
    let mut expected = base();
    expected.tournaments.sort_by_key(|t| t.id);
    assert_eq!(next, expected);
    assert!(diff::diff(&base(), &p.next).is_empty());
}

#[test]
fn a_small_season_loss_is_applied_a_large_one_held() {
    // One season of five is 20 %: not more than max_shrink_fraction.
    let mut fetched = base();
    fetched.valid_seasons.retain(|s| s.id != 5);
    fetched.tournaments.retain(|t| t.season_id != Some(5));
    fetched.matches_by_root.retain(|r, _| r / 10 != 5);
    let p = plan_of(&base(), answer(fetched.clone()));
    assert_eq!(p.verdict, ShrinkVerdict::None);
    assert_eq!(p.next, fetched);
    // Two of five is 40 %: held, with their tournaments and matches.
    let mut fetched = base();
    fetched.valid_seasons.retain(|s| s.id < 4);
    fetched.tournaments.retain(|t| t.season_id < Some(4));
    fetched.matches_by_root.retain(|r, _| r / 10 < 4);
    let p = plan_of(&base(), answer(fetched));
    assert_eq!(p.held.seasons, vec![4, 5]);
    assert!(diff::diff(&base(), &p.next).is_empty());
}

#[test]
fn an_empty_season_keeps_its_tournaments_and_their_matches() {
    let mut fetched = base();
    fetched.tournaments.retain(|t| t.season_id != Some(3));
    fetched.matches_by_root.retain(|r, _| r / 10 != 3);
    let empty = [3];
    let p = plan_of(
        &base(),
        Answer {
            snapshot: fetched,
            empty_seasons: &empty,
            ..Answer::default()
        },
    );
    assert_eq!(p.held.season_lists, vec![3]);
    assert!(matches!(p.verdict, ShrinkVerdict::Held { .. }));
    assert!(diff::diff(&base(), &p.next).is_empty());
}

#[test]
fn a_tournaments_shrink_is_held_a_small_one_applied() {
    let mut fetched = base();
    // 15 tournaments; dropping root 52 alone (1 of 15) is applied.
    fetched.tournaments.retain(|t| t.id != 52);
    fetched.matches_by_root.remove(&52);
    let p = plan_of(&base(), answer(fetched.clone()));
    assert_eq!(p.verdict, ShrinkVerdict::None);
    assert_eq!(p.next, fetched);
    // Dropping four roots (4 of 15 tournaments, 20 of 50 matches) is held.
    let mut fetched = base();
    let gone = [12, 22, 32, 42];
    fetched.tournaments.retain(|t| !gone.contains(&t.id));
    fetched.matches_by_root.retain(|r, _| !gone.contains(r));
    let p = plan_of(&base(), answer(fetched));
    assert_eq!(p.held.tournaments, gone.to_vec());
    assert_eq!(p.held.roots, gone.to_vec());
    assert!(diff::diff(&base(), &p.next).is_empty());
}

#[test]
fn a_matches_shrink_restores_the_short_lists_only() {
    let mut fetched = base();
    // Every root of seasons 1-3 answers two of its five matches: 18 of 50 lost.
    for (root, list) in fetched.matches_by_root.iter_mut() {
        if root / 10 <= 3 {
            list.truncate(2);
        }
    }
    // A real change elsewhere still goes through.
    fetched.matches_by_root.get_mut(&50).unwrap()[0] = Match::from_json(
        &json!({"matchId": 5000, "tournamentId": 50, "hometeamId": 1, "awayteamId": 3}),
    )
    .unwrap();
    let p = plan_of(&base(), answer(fetched));
    assert_eq!(p.held.roots, vec![10, 12, 20, 22, 30, 32]);
    let changes = diff::diff(&base(), &p.next);
    assert_eq!(changes.individual_matches.ids(), vec![5000]);
    assert_eq!(changes.tournament_matches.ids(), vec![50]);
    // Losing one match in one root (1 of 50) is applied.
    let mut fetched = base();
    fetched.matches_by_root.get_mut(&10).unwrap().pop();
    let p = plan_of(&base(), answer(fetched.clone()));
    assert_eq!(p.verdict, ShrinkVerdict::None);
    assert_eq!(p.next, fetched);
}

#[test]
fn with_roots_resting_a_matches_shrink_is_measured_over_the_asked_ones() {
    // Roots 10 and 12 are asked and answer two of their five matches (6
    // of 10 lost, 6 of 50 overall); the other eight rest.
    let mut fetched = base();
    for root in [10, 12] {
        fetched.matches_by_root.get_mut(&root).unwrap().truncate(2);
    }
    let rested: Vec<i64> = fetched
        .matches_by_root
        .keys()
        .copied()
        .filter(|r| ![10, 12].contains(r))
        .collect();
    let p = plan_of(&base(), answer(fetched.clone()));
    assert_eq!(p.verdict, ShrinkVerdict::None, "12 % of all: applied");
    let p = plan_of(
        &base(),
        Answer {
            snapshot: fetched.clone(),
            rested: &rested,
            ..Answer::default()
        },
    );
    assert_eq!(p.held.roots, vec![10, 12], "60 % of what was asked: held");
    assert_eq!(p.next, base());
    // One match fewer in one asked root of two (1 of 10) is applied.
    let mut fetched = base();
    fetched.matches_by_root.get_mut(&10).unwrap().pop();
    let p = plan_of(
        &base(),
        Answer {
            snapshot: fetched.clone(),
            rested: &rested,
            ..Answer::default()
        },
    );
    assert_eq!(p.verdict, ShrinkVerdict::None);
    assert_eq!(p.next, fetched);
}

#[test]
fn the_fraction_edges() {
    assert!(!shrunk(0, 0, 0.2));
    assert!(shrunk(1, 0, 1.0), "to zero always counts");
    assert!(!shrunk(10, 8, 0.2), "exactly the fraction is allowed");
    assert!(shrunk(10, 7, 0.2));
    assert!(shrunk(10, 9, 0.0));
    assert!(!shrunk(10, 10, 0.0));
    assert!(!shrunk(10, 1, 1.0));
    assert!(!shrunk(10, 12, 0.2), "growth is no shrink");
}

#[test]
fn undated_seasons_are_kept_when_known_and_named() {
    let mut fetched = base();
    fetched.valid_seasons.retain(|s| s.id != 2);
    fetched.tournaments.retain(|t| t.season_id != Some(2));
    fetched.matches_by_root.retain(|r, _| r / 10 != 2);
    let undated = [
        UndatedSeason {
            id: 2,
            name: "B".into(),
            date_from: "\"/Date(1754006400000)/\"".into(),
        },
        UndatedSeason {
            id: 9,
            name: "new".into(),
            date_from: "\"01.08.2026\"".into(),
        },
    ];
    let p = plan_of(
        &base(),
        Answer {
            snapshot: fetched,
            undated_seasons: &undated,
            ..Answer::default()
        },
    );
    assert_eq!(p.kept_undated, vec![2]);
    assert_eq!(p.verdict, ShrinkVerdict::None);
    assert!(diff::diff(&base(), &p.next).is_empty());
    assert_eq!(p.warnings.len(), 2);
    assert!(p.warnings[0].contains("/Date(1754006400000)/"));
    assert!(p.warnings[1].contains("season 9") && p.warnings[1].contains("not mirrored"));
}

#[test]
fn a_match_under_two_roots_stays_under_the_lower_one() {
    let mut fetched = base();
    let extra = fetched.matches_by_root[&10][0].clone();
    fetched.matches_by_root.get_mut(&20).unwrap().push(extra);
    fetched.dedup_matches();
    let p = plan_of(&base(), answer(fetched));
    assert!(diff::diff(&base(), &p.next).is_empty());
    assert_eq!(p.next.matches().count(), 50, "stored once");
}

#[test]
fn fingerprints_are_stable_and_distinct() {
    let a = Held {
        roots: vec![1, 2],
        ..Held::default()
    };
    let b = Held {
        tournaments: vec![1, 2],
        ..Held::default()
    };
    assert_eq!(a.fingerprint(), a.clone().fingerprint());
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.fingerprint().len(), 16);
}

// ---- the datasets (DESIGN.md section 13) ----

mod datasets;
