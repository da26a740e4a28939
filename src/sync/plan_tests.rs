//! Unit tests of `plan`.

use super::*;
use crate::model::fixtures::{game, season, snapshot, tournament};
use crate::store::commit::KeyMark;
use std::time::Duration;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-06-15T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

const WARM: WarmSettings = WarmSettings {
    window_days: 14,
    reference_date: None,
    lifetimes: Lifetimes {
        ttl: Duration::from_secs(7 * 24 * 3600),
        refresh_for: Duration::from_secs(7 * 24 * 3600),
    },
};

fn settings(warm: Option<WarmSettings>) -> PlanSettings {
    PlanSettings {
        shrink: ShrinkSettings {
            max_fraction: 0.2,
            confirm_runs: 3,
        },
        warm,
        changes_maxlen: 100,
    }
}

/// Root 10 (child 11) with three matches, root 20 with two; one season.
fn cache() -> Snapshot {
    snapshot(
        vec![season(1)],
        vec![
            tournament(10, 1, None),
            tournament(11, 1, Some(10)),
            tournament(20, 1, None),
        ],
        &[
            (
                10,
                vec![game(100, 10, "2025-06-16"), game(101, 11, "2025-01-01")],
            ),
            (10, vec![game(102, 10, "2025-06-20")]),
            (
                20,
                vec![game(200, 20, "2025-06-14"), game(201, 20, "2025-06-15")],
            ),
        ],
    )
}

static NO_REWRITE: Rewrite = Rewrite {
    all: false,
    derived: false,
    keys: std::collections::BTreeSet::new(),
};

fn input<'a>(previous: &'a Snapshot, answer: Snapshot, write: bool) -> PlanInput<'a> {
    static NO_BODIES: MatchBodies = MatchBodies(std::collections::BTreeMap::new());
    PlanInput {
        previous,
        newest: previous,
        previous_bodies: &NO_BODIES,
        answer_bodies: &NO_BODIES,
        rewrite: &NO_REWRITE,
        discard: &[],
        rebuild: Rebuild::default(),
        marker: None,
        answer: Answer {
            snapshot: answer,
            ..Answer::default()
        },
        fetched: RunStatus::Success,
        shrink_state: None,
        accept_shrink: false,
        write,
        now: now(),
        run_id: "r1",
    }
}

#[test]
fn an_unchanged_answer_writes_and_warms_nothing() {
    let plan = plan_run(
        input(&cache(), cache(), true),
        &settings(Some(WARM)),
        &Keys::default(),
    );
    assert!(plan.changes.is_empty());
    assert!(plan.batch.is_empty());
    assert_eq!(plan.warm.unwrap().members, Vec::<String>::new());
    assert_eq!(plan.status, RunStatus::Success);
}

#[test]
fn a_changed_match_in_the_window_is_written_and_warmed() {
    let mut answer = cache();
    answer.matches_by_root.get_mut(&20).unwrap()[0] = game(200, 20, "2025-06-14T18:00:00");
    answer.matches_by_root.get_mut(&10).unwrap()[1] = game(101, 11, "2025-01-02");
    let plan = plan_run(
        input(&cache(), answer, true),
        &settings(Some(WARM)),
        &Keys::new("p:"),
    );
    assert_eq!(plan.changes.individual_matches.modified, vec![101, 200]);
    assert_eq!(plan.batch.keys_written(), vec!["p:tournament_matches"]);
    let warm = plan.warm.unwrap();
    // 200 is in the window, 101 (January) is not.
    assert_eq!(
        warm.members,
        vec![
            "api/v1/ta/match/?matchId=200",
            "api/v1/ta/matchincidents/?matchId=200",
            "api/v1/ta/matchreferee?matchId=200",
            "api/v1/ta/matchteammembers/200/?images=false",
        ]
    );
    assert_eq!(warm.due_ms, now().timestamp_millis());
    assert_eq!(
        warm.refresh_until_ms,
        (now() + chrono::Duration::days(7)).timestamp_millis()
    );
    // ZADD, HSET, HDEL for the four members, and the change feed's
    // XADD, in the same transaction.
    assert_eq!(plan.batch.commands.len(), 4);
    let last = plan.batch.commands.last().expect("the feed entry");
    assert!(matches!(
        last.args_iter().next(),
        Some(redis::Arg::Simple(b"XADD"))
    ));
}

#[test]
fn a_dry_run_plans_the_changes_but_no_writes() {
    let mut answer = cache();
    answer.matches_by_root.get_mut(&20).unwrap().pop();
    let plan = plan_run(
        input(&cache(), answer, false),
        &settings(Some(WARM)),
        &Keys::default(),
    );
    assert_eq!(plan.changes.individual_matches.removed, vec![201]);
    assert!(plan.batch.is_empty());
    assert!(plan.warm.is_none());
}

#[test]
fn warming_off_enqueues_nothing() {
    let plan = plan_run(
        input(&Snapshot::default(), cache(), true),
        &settings(None),
        &Keys::default(),
    );
    assert!(plan.warm.is_none());
    // Only the change feed's entry: no warm-up command.
    assert_eq!(plan.batch.commands.len(), 1);
    assert_eq!(plan.batch.sets.len(), 6, "a cold start writes every key");
}

#[test]
fn a_held_shrink_is_not_written_and_its_count_is() {
    let mut answer = cache();
    answer.matches_by_root.insert(20, vec![]);
    let plan = plan_run(
        input(&cache(), answer, true),
        &settings(None),
        &Keys::default(),
    );
    assert_eq!(plan.status, RunStatus::Held);
    assert_eq!(plan.held.roots, vec![20]);
    assert!(plan.changes.is_empty());
    assert!(plan.batch.sets.is_empty());
    let (key, value) = &plan.batch.bookkeeping[0];
    assert_eq!(key, "precache:shrink");
    let state: ShrinkState = serde_json::from_str(value.as_deref().unwrap()).unwrap();
    assert_eq!(state.seen, 1);
    // Seen again with the same count: nothing to write at all.
    let mut answer = cache();
    answer.matches_by_root.insert(20, vec![]);
    let again = plan_run(
        PlanInput {
            shrink_state: Some(&ShrinkState {
                fingerprint: state.fingerprint.clone(),
                seen: 1,
            }),
            ..input(&cache(), answer, true)
        },
        &settings(None),
        &Keys::default(),
    );
    assert_eq!(
        again.batch.bookkeeping[0].1.as_deref(),
        Some(
            serde_json::to_string(&ShrinkState { seen: 2, ..state })
                .unwrap()
                .as_str()
        )
    );
}

#[test]
fn a_cleared_shrink_deletes_its_count() {
    let state = ShrinkState {
        fingerprint: "0".into(),
        seen: 2,
    };
    let plan = plan_run(
        PlanInput {
            shrink_state: Some(&state),
            ..input(&cache(), cache(), true)
        },
        &settings(None),
        &Keys::default(),
    );
    assert_eq!(
        plan.batch.bookkeeping,
        vec![("precache:shrink".to_string(), None)]
    );
}

#[test]
fn carried_over_roots_degrade_and_change_nothing() {
    let mut answer = cache();
    answer.matches_by_root.remove(&10);
    let failed = [10];
    let plan = plan_run(
        PlanInput {
            answer: Answer {
                snapshot: answer,
                failed_roots: &failed,
                ..Answer::default()
            },
            fetched: RunStatus::Degraded,
            ..input(&cache(), Snapshot::default(), true)
        },
        &settings(Some(WARM)),
        &Keys::default(),
    );
    assert_eq!(plan.status, RunStatus::Degraded);
    assert_eq!(plan.carried_over, vec![10]);
    assert!(plan.changes.is_empty());
    assert!(plan.batch.sets.is_empty());
}

fn commit(at_ms: i64) -> CommitId {
    CommitId {
        epoch: 1,
        at_ms,
        instance: "vm:1".into(),
        run_id: format!("r{at_ms}"),
    }
}

#[test]
fn a_run_that_writes_leaves_a_marker_of_every_key_and_one_that_does_not_leaves_none() {
    let before = CommitRecord {
        id: commit(1),
        keys: Default::default(),
    };
    let mut answer = cache();
    answer.matches_by_root.get_mut(&20).unwrap()[0] = game(200, 20, "2025-06-14T18:00:00");
    let plan = plan_run(
        PlanInput {
            marker: Some(Marker {
                before: &before,
                id: commit(2),
                force: false,
            }),
            ..input(&cache(), answer, true)
        },
        &settings(None),
        &Keys::default(),
    );
    let record = plan.record.expect("a marker");
    assert_eq!(record.id, commit(2));
    let written = &plan.batch.sets[0];
    assert_eq!(record.keys[&written.0], KeyMark::of(&written.1));
    let (key, value) = plan.batch.bookkeeping.last().unwrap();
    assert_eq!(key, "precache:commit");
    assert_eq!(
        CommitRecord::from_text(value.as_deref().unwrap()),
        Some(record)
    );
    // Nothing to write: no marker, unless forced.
    let quiet = plan_run(
        PlanInput {
            marker: Some(Marker {
                before: &before,
                id: commit(3),
                force: false,
            }),
            ..input(&cache(), cache(), true)
        },
        &settings(None),
        &Keys::default(),
    );
    assert!(quiet.batch.is_empty() && quiet.record.is_none());
    let forced = plan_run(
        PlanInput {
            marker: Some(Marker {
                before: &before,
                id: commit(3),
                force: true,
            }),
            ..input(&cache(), cache(), true)
        },
        &settings(None),
        &Keys::default(),
    );
    assert_eq!(forced.batch.bookkeeping.len(), 1);
    assert!(forced.record.is_some());
}

#[test]
fn less_is_judged_against_the_newest_state_even_when_redis_lost_it() {
    // Redis was flushed under a held shrink: it holds nothing, the
    // newest state known is the cache; the answer still says less.
    let empty = Snapshot::default();
    let newest = cache();
    let mut answer = cache();
    answer.matches_by_root.insert(20, vec![]);
    let plan = plan_run(
        PlanInput {
            newest: &newest,
            rewrite: &Rewrite::everything(),
            ..input(&empty, answer, true)
        },
        &settings(None),
        &Keys::default(),
    );
    assert_eq!(plan.status, RunStatus::Held);
    assert_eq!(plan.held.roots, vec![20]);
    assert_eq!(
        plan.next.matches().count(),
        cache().matches().count(),
        "the full data kept"
    );
    // Against what Redis holds (nothing), all of it is written, and
    // reported once.
    assert_eq!(
        plan.changes.individual_matches.added.len(),
        cache().matches().count()
    );
    assert!(plan.batch.keys_written().contains(&"tournament_matches"));
}

#[test]
fn wrong_typed_bookkeeping_is_deleted_before_anything_writes_it() {
    let discard = [
        "precache:changes".to_string(),
        "precache:match_bodies".into(),
    ];
    let mut answer = cache();
    answer.matches_by_root.get_mut(&20).unwrap()[0] = game(200, 20, "2025-06-14T18:00:00");
    let plan = plan_run(
        PlanInput {
            discard: &discard,
            rebuild: Rebuild {
                match_bodies: true,
                match_roots: true,
                shrink: true,
            },
            ..input(&cache(), answer, true)
        },
        &settings(None),
        &Keys::default(),
    );
    let bookkeeping: Vec<&str> = plan
        .batch
        .bookkeeping
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        &bookkeeping[..2],
        ["precache:changes", "precache:match_bodies"],
        "deleted first: {bookkeeping:?}"
    );
    assert!(bookkeeping.contains(&"precache:shrink"), "rebuilt");
    assert!(bookkeeping.contains(&"precache:match_roots"), "rebuilt");
}

#[test]
fn the_reference_date_moves_the_window() {
    let mut answer = cache();
    answer.matches_by_root.get_mut(&10).unwrap()[1] = game(101, 11, "2025-01-02");
    let january = WarmSettings {
        reference_date: NaiveDate::from_ymd_opt(2025, 1, 10),
        ..WARM
    };
    let plan = plan_run(
        input(&cache(), answer, true),
        &settings(Some(january)),
        &Keys::default(),
    );
    assert_eq!(
        plan.warm.unwrap().members.len(),
        4,
        "101 is in January's window"
    );
}
