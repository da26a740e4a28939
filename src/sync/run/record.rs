//! After a run: its summary filled from the plan and logged, its history
//! pushed to Redis (not for a fenced run), its debug record sent, and its
//! report made.

use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Produced, Runner};
use crate::model::changes::{ChangeCounts, first_ids};
use crate::report::{CHANGED_IDS_SHOWN, RunReport, RunStats, RunStatus, RunSummary};
use crate::sync::debuglog::{self, RunRecord, SnapshotFiles};
use crate::sync::plan::RunPlan;
use crate::sync::poll::PollState;
use crate::util::rfc3339;

impl Runner {
    /// Logs the run, records it (history, debug files) and reports it.
    pub(super) fn record(
        &mut self,
        mut summary: RunSummary,
        started: Instant,
        started_at: DateTime<Utc>,
        produced: Produced,
    ) -> RunReport {
        summary.duration_ms = started.elapsed().as_millis() as u64;
        let ended_at = Utc::now();
        match &summary.error {
            Some(e) => log::error!(
                "run {} failed after {} ms: {e}",
                summary.run_id,
                summary.duration_ms
            ),
            None => log::info!(
                "run {} {} in {} ms: changes {}, {} keys / {} bytes written",
                summary.run_id,
                summary.status.as_str(),
                summary.duration_ms,
                serde_json::to_string(&summary.changes).unwrap_or_default(),
                summary.keys_written,
                summary.bytes_written
            ),
        }
        let stats = RunStats::of(&summary, started_at, ended_at);
        // A dry run leaves no trace: history and debug files are the daemon's.
        if !summary.dry_run {
            let history = serde_json::to_string(&stats).unwrap_or_default();
            let poll_state = self
                .cache
                .poll
                .as_ref()
                .filter(|_| self.config.sync.adaptive)
                .map(PollState::to_text);
            let fence = self.lease.as_ref().map(|l| l.value.clone());
            // A fenced run writes nothing to Redis, its record neither: the
            // history there is the leader's. Its debug file stays ours.
            let fenced = summary.status == RunStatus::Fenced;
            if fenced {
                log::warn!(
                    "run {} is not recorded in Redis: another instance leads",
                    summary.run_id
                );
            } else if let Err(e) = self.cache.store.push_history(
                &history,
                self.config.logs.history_len,
                poll_state.as_deref(),
                fence.as_deref(),
            ) {
                log::warn!("cannot record run history in Redis: {e}");
            }
            self.send_debug_record(&stats, started_at, &produced);
        }
        RunReport {
            summary,
            stats,
            started_at,
            ended_at,
            changes: produced.changes,
            snapshot: produced.next,
            calls: produced.calls,
            warm_enqueued: produced.warm_enqueued,
            root_tiers: produced.root_tiers,
        }
    }

    fn send_debug_record(&self, stats: &RunStats, started_at: DateTime<Utc>, produced: &Produced) {
        let Some(debug) = &self.debug else {
            return;
        };
        let changed = produced.changes.as_ref().is_some_and(|c| !c.is_empty());
        let files_missing = !debuglog::snapshot_files_exist(&self.config.logs.dir);
        let timestamp = rfc3339(started_at, SecondsFormat::Millis);
        let snapshots = match (&produced.cached, &produced.next) {
            (Some(cached), Some(fetched))
                if self.config.logs.debug_snapshots && (changed || files_missing) =>
            {
                Some(SnapshotFiles {
                    run_id: stats.run_id.clone(),
                    timestamp: timestamp.clone(),
                    cached: cached.clone(),
                    fetched: fetched.clone(),
                })
            }
            _ => None,
        };
        let record = RunRecord {
            stats: stats.clone(),
            calls: debuglog::CallsFile {
                run_id: stats.run_id.clone(),
                timestamp,
                calls: produced.calls.clone(),
            },
            snapshots,
        };
        if debug.send(record).is_err() {
            log::warn!("the debug-log thread has stopped; debug files are not updated");
        }
    }
}

/// Puts the plan's verdicts into the summary, and logs what an operator
/// should see.
pub(super) fn describe(summary: &mut RunSummary, plan: &RunPlan) {
    let run_id = &summary.run_id;
    if !plan.carried_over.is_empty() {
        log::warn!(
            "run {run_id} degraded: kept the previous matches of {} tournament(s) whose call failed: {:?}",
            plan.carried_over.len(),
            plan.carried_over
        );
    }
    for warning in &plan.warnings {
        log::warn!("run {run_id}: {warning}");
    }
    summary.status = plan.status;
    summary.items = plan.next.item_counts();
    summary.changes = ChangeCounts::of(&plan.changes);
    summary.changed_ids = first_ids(&plan.changes, CHANGED_IDS_SHOWN);
    summary.carried_over = plan.carried_over.clone();
    summary.carried_over_data = plan
        .carried_data
        .iter()
        .map(|(dataset, keys)| (dataset.name().to_string(), keys.clone()))
        .collect();
    summary.held = plan.held.clone();
    summary.shrink = plan.verdict;
    summary.warnings = plan.warnings.clone();
    if !summary.dry_run {
        summary.keys_written = plan.batch.sets.len() + plan.batch.dels.len();
        summary.bytes_written = plan.batch.bytes();
    }
}
