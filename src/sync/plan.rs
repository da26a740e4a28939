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
#[path = "plan_tests.rs"]
mod tests;
