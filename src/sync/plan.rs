//! The plan of one run, pure: from what the cache holds, what the upstream
//! answered, the settings and the time, everything the run will do — the
//! next snapshot, the changes, what was carried over or held, the write
//! batch and the warm-ups to enqueue. `run` only reads, fetches, hands this
//! to the store and records it; every decision is here, tested without
//! Redis, threads or a clock.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};

use crate::model::Snapshot;
use crate::model::bodies::MatchBodies;
use crate::model::changes::Changes;
use crate::model::dataset::DatasetId;
use crate::report::{Held, RunStatus, ShrinkVerdict};
use crate::store::commit::{CommitId, CommitRecord};
use crate::store::{Keys, WriteBatch};
use crate::store::{WarmEnqueue, enqueue_commands};
use crate::sync::hold::{self, Answer, ShrinkSettings, ShrinkState};
use crate::sync::writes::Rewrite;
use crate::sync::{diff, writes};
use crate::warm::plan::{self as warm_plan, Lifetimes, WarmTarget};

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

/// Bookkeeping keys a run writes whole, because what Redis held of them
/// could not be read (it was discarded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebuild {
    pub match_roots: bool,
    pub match_bodies: bool,
    pub shrink: bool,
}

/// The commit marker a run leaves when it writes (`store::commit`).
#[derive(Debug)]
pub struct Marker<'a> {
    /// The record of what Redis holds before the run.
    pub before: &'a CommitRecord,
    /// This run's commit.
    pub id: CommitId,
    /// Write the marker even when nothing else is (Redis had none, or not ours).
    pub force: bool,
}

/// One run's inputs.
#[derive(Debug)]
pub struct PlanInput<'a> {
    /// What the cache holds: the diff and the writes are against this.
    pub previous: &'a Snapshot,
    /// The newest state known: what the cache holds, or the state this
    /// process last committed when Redis lost it (a restore, a failover, a
    /// flush). "Less" is judged against it (DESIGN.md section 3).
    pub newest: &'a Snapshot,
    /// The bodies `previous`'s match lists were read from.
    pub previous_bodies: &'a MatchBodies,
    /// The bodies the answer's match lists were read from.
    pub answer_bodies: &'a MatchBodies,
    /// Keys written whatever the diff says (Redis does not hold them as
    /// the last commit left them).
    pub rewrite: &'a Rewrite,
    /// Bookkeeping keys deleted first (of the wrong type), and those then
    /// written whole.
    pub discard: &'a [String],
    pub rebuild: Rebuild,
    /// The marker this run leaves; `None` for a dry run.
    pub marker: Option<Marker<'a>>,
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
    /// Per dataset, failed keys whose previous records were kept.
    pub carried_data: BTreeMap<DatasetId, Vec<i64>>,
    /// What the answer left out and the plan kept (a held run).
    pub held: Held,
    pub verdict: ShrinkVerdict,
    pub warnings: Vec<String>,
    /// Every key the run writes and the warm-ups it enqueues, for one
    /// transaction; empty when not writing.
    pub batch: WriteBatch,
    /// The warm-ups enqueued (inside `batch`).
    pub warm: Option<WarmEnqueue>,
    /// The marker the batch leaves, when it writes one.
    pub record: Option<CommitRecord>,
    /// The shrink still held after this run, if any.
    pub shrink_state: Option<ShrinkState>,
}

/// Plans a run (DESIGN.md section 3: carry-over, held shrinks, the diff,
/// the writes of what changed, the warm-ups of changed matches).
pub fn plan_run(input: PlanInput<'_>, settings: &PlanSettings, keys: &Keys) -> RunPlan {
    let held = hold::plan(
        input.newest,
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
    let mut record = None;
    if input.write {
        batch = writes::plan_writes(
            keys,
            input.previous,
            &held.next,
            &changes,
            input.rewrite,
            input.now,
        );
        // Keys of the wrong type go first, so what follows can write them.
        batch
            .bookkeeping
            .splice(0..0, input.discard.iter().map(|key| (key.clone(), None)));
        if input.rebuild.match_roots
            && !batch
                .sets
                .iter()
                .any(|(k, _)| *k == keys.tournament_matches())
        {
            let exceptions = held.next.grouping_exceptions();
            let value = (!exceptions.is_empty())
                .then(|| serde_json::to_string(&exceptions).unwrap_or_default());
            batch.bookkeeping.push((keys.match_roots(), value));
        }
        if input.rebuild.shrink || held.shrink_state.as_ref() != input.shrink_state {
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
            batch.commands = enqueue_commands(keys, enqueue);
        }
        batch.commands.extend(writes::body_stamp_commands(
            keys,
            input.previous_bodies,
            &bodies,
            input.rewrite.all || input.rebuild.match_bodies,
        ));
        batch.commands.extend(writes::change_feed_command(
            keys,
            input.run_id,
            &changes,
            settings.changes_maxlen,
        ));
        if let Some(marker) = &input.marker
            && (marker.force || !batch.is_empty())
        {
            let after = marker.before.after(&batch, marker.id.clone());
            batch
                .bookkeeping
                .push((keys.commit_marker(), Some(after.to_text())));
            record = Some(after);
        }
    }
    RunPlan {
        next: held.next,
        bodies,
        changes,
        status,
        carried_over: held.carried_over,
        carried_data: held.carried_data,
        held: held.held,
        verdict: held.verdict,
        warnings: held.warnings,
        batch,
        warm,
        record,
        shrink_state: held.shrink_state,
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
}
