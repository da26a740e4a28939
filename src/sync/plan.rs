//! The plan of one run, pure: from what the cache holds, what the upstream
//! answered, the settings and the time, everything the run will do — the
//! next snapshot, the changes, what was carried over or held, the write
//! batch and the warm-ups to enqueue. `run` only reads, fetches, hands this
//! to the store and records it; every decision is here, tested without
//! Redis, threads or a clock.

use chrono::{DateTime, NaiveDate, Utc};

use crate::model::Snapshot;
use crate::model::bodies::MatchBodies;
use crate::model::changes::Changes;
use crate::report::{Held, RunStatus, ShrinkVerdict};
use crate::store::{Keys, WriteBatch};
use crate::sync::hold::{self, Answer, ShrinkSettings, ShrinkState};
use crate::sync::{diff, writes};
use crate::warm::plan::{self as warm_plan, Lifetimes, WarmTarget};
use crate::warm::schedule::{self, WarmEnqueue};

/// What the plan needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct PlanSettings {
    pub shrink: ShrinkSettings,
    /// `None` when warming is off (`warm.enabled = false`, `--no-warm`).
    pub warm: Option<WarmSettings>,
    /// `redis.changes_maxlen`: entries the change feed keeps (0 = no feed).
    pub changes_maxlen: usize,
}

/// Which changed matches are warmed, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct WarmSettings {
    /// `warm.window_days` around the reference date.
    pub window_days: i64,
    /// `warm.reference_date`; `None` is the day of the run.
    pub reference_date: Option<NaiveDate>,
    pub lifetimes: Lifetimes,
}

/// One run's inputs.
#[derive(Debug)]
pub struct PlanInput<'a> {
    /// What the cache holds.
    pub previous: &'a Snapshot,
    /// The bodies `previous`'s match lists were read from.
    pub previous_bodies: &'a MatchBodies,
    /// The bodies the answer's match lists were read from.
    pub answer_bodies: &'a MatchBodies,
    /// The cache was found missing: every key is written.
    pub rewrite_all: bool,
    /// What the upstream answered.
    pub answer: Answer<'a>,
    /// The fetch stage's verdict: success or degraded.
    pub fetched: RunStatus,
    /// The shrink held so far (persisted between runs).
    pub shrink_state: Option<&'a ShrinkState>,
    /// An operator accepts whatever shrink this answer shows.
    pub accept_shrink: bool,
    /// Plan the writes and warm-ups (false for a dry run).
    pub write: bool,
    pub now: DateTime<Utc>,
    /// The run's id, for the change feed.
    pub run_id: &'a str,
}

/// What the run will do.
#[derive(Debug)]
pub struct RunPlan {
    pub next: Snapshot,
    /// The bodies `next`'s match lists are known to be read from.
    pub bodies: MatchBodies,
    pub changes: Changes,
    pub status: RunStatus,
    /// Failed roots whose previous matches were kept.
    pub carried_over: Vec<i64>,
    /// What the answer left out and the plan kept (a held run).
    pub held: Held,
    pub verdict: ShrinkVerdict,
    pub warnings: Vec<String>,
    /// Every key the run writes and the warm-ups it enqueues, for one
    /// transaction; empty when not writing.
    pub batch: WriteBatch,
    /// The warm-ups enqueued (inside `batch`).
    pub warm: Option<WarmEnqueue>,
}

/// Plans a run (DESIGN.md section 3: carry-over, held shrinks, the diff,
/// the writes of what changed, the warm-ups of changed matches).
pub fn plan_run(input: PlanInput<'_>, settings: &PlanSettings, keys: &Keys) -> RunPlan {
    let held = hold::plan(
        input.previous,
        input.answer,
        settings.shrink,
        input.shrink_state,
        input.accept_shrink,
    );
    let changes = diff::diff(input.previous, &held.next);
    let bodies = MatchBodies::verified(
        &held.next,
        input.answer_bodies,
        input.previous_bodies,
        input.previous,
    );
    let status = match held.verdict {
        ShrinkVerdict::Held { .. } => RunStatus::Held,
        _ => input.fetched,
    };
    let mut batch = WriteBatch::default();
    let mut warm = None;
    if input.write {
        batch = writes::plan_writes(
            keys,
            input.previous,
            &held.next,
            &changes,
            input.rewrite_all,
            input.now,
        );
        if held.shrink_state.as_ref() != input.shrink_state {
            let value = held
                .shrink_state
                .as_ref()
                .and_then(|state| serde_json::to_string(state).ok());
            batch.bookkeeping.push((keys.shrink_state(), value));
        }
        warm = settings
            .warm
            .map(|w| warm_enqueue(&changes, &held.next, &w, input.now));
        if let Some(enqueue) = &warm {
            batch.commands = schedule::enqueue_commands(keys, enqueue);
        }
        batch.commands.extend(writes::body_stamp_commands(
            keys,
            input.previous_bodies,
            &bodies,
            input.rewrite_all,
        ));
        batch.commands.extend(writes::change_feed_command(
            keys,
            input.run_id,
            &changes,
            settings.changes_maxlen,
        ));
    }
    RunPlan {
        next: held.next,
        bodies,
        changes,
        status,
        carried_over: held.carried_over,
        held: held.held,
        verdict: held.verdict,
        warnings: held.warnings,
        batch,
        warm,
    }
}

/// The warm-ups a run's changes call for, due now and refreshed for
/// `lifetimes.refresh_for`.
fn warm_enqueue(
    changes: &Changes,
    next: &Snapshot,
    settings: &WarmSettings,
    now: DateTime<Utc>,
) -> WarmEnqueue {
    let reference = settings.reference_date.unwrap_or(now.date_naive());
    let members = warm_plan::plan(changes, next, reference, settings.window_days)
        .iter()
        .map(WarmTarget::key)
        .collect();
    WarmEnqueue {
        members,
        due_ms: now.timestamp_millis(),
        refresh_until_ms: settings.lifetimes.refresh_until(now).timestamp_millis(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{game, season, snapshot, tournament};
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

    fn input<'a>(previous: &'a Snapshot, answer: Snapshot, write: bool) -> PlanInput<'a> {
        static NO_BODIES: MatchBodies = MatchBodies(std::collections::BTreeMap::new());
        PlanInput {
            previous,
            previous_bodies: &NO_BODIES,
            answer_bodies: &NO_BODIES,
            rewrite_all: false,
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
}
