//! One sync run end to end (DESIGN.md section 3), and its summary.
//!
//! [`Runner`] is the imperative shell around the pure stages: it reads the
//! clock, asks Redis whether the cache is still there, calls the fetch stage,
//! carries over the matches of tournaments whose call failed, diffs, plans
//! the writes and hands them to the writer thread, then records the run.
//! The previous snapshot lives here between runs; it only advances when the
//! writer confirms the transaction, so a failed write is retried in full by
//! the next run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use crossbeam_channel::Sender;
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::Config;
use crate::debuglog::{RunRecord, SnapshotFiles};
use crate::diff::{self, Changes};
use crate::fetch::{self, ApiCallCounts, FetchSettings, RunStatus};
use crate::model::{ItemCounts, Snapshot};
use crate::plan::{self, Held, ShrinkSettings, ShrinkVerdict};
use crate::store::{self, Store, WriteRequest};
use crate::upstream::{CallRecord, Upstream};

/// Changed ids listed per category in a run's summary and history; the
/// counts are always complete.
pub const CHANGED_IDS_SHOWN: usize = 100;

/// Longest wait for the writer's answer before the run is declared failed:
/// longer than the writer's own worst case (connect 3 s + I/O 30 s, twice).
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// What `precache once` prints (one JSON object).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub status: RunStatus,
    pub dry_run: bool,
    pub duration_ms: u64,
    pub items: ItemCounts,
    pub api_calls: ApiCallCounts,
    pub failed_calls: usize,
    /// Changes per category (added + removed + modified); empty on a failed run.
    pub changes: serde_json::Map<String, Value>,
    /// The first [`CHANGED_IDS_SHOWN`] changed ids per category, sorted.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub changed_ids: serde_json::Map<String, Value>,
    /// Root tournaments whose previous matches were kept because their call failed.
    pub carried_over: Vec<i64>,
    /// What the upstream left out and the run kept (a held run, DESIGN.md section 3).
    #[serde(skip_serializing_if = "Held::is_empty")]
    pub held: Held,
    /// What became of a shrink the answer showed; absent when it showed none.
    #[serde(skip_serializing_if = "is_no_shrink")]
    pub shrink: ShrinkVerdict,
    /// What an operator should know about a run that did not fail.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Data keys written to Redis, and their bytes.
    pub keys_written: usize,
    pub bytes_written: usize,
    pub upstream_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm: Option<Value>,
}

/// Everything a run produced, for the daemon, metrics and warm-up.
pub struct RunReport {
    pub summary: RunSummary,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// The diff; `None` when the run failed.
    pub changes: Option<Changes>,
    /// The snapshot the cache holds after this run.
    pub snapshot: Option<Arc<Snapshot>>,
    pub calls: Vec<CallRecord>,
    /// Warm-up tasks this run enqueued (schedule members), written with its data.
    pub warm_enqueued: Vec<String>,
}

fn is_no_shrink(verdict: &ShrinkVerdict) -> bool {
    *verdict == ShrinkVerdict::None
}

/// A run id that sorts by time.
pub fn new_run_id(now: DateTime<Utc>) -> String {
    now.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub struct Runner {
    config: Config,
    upstream: Arc<Upstream>,
    pool: rayon::ThreadPool,
    store: Store,
    writer: Option<Sender<WriteRequest>>,
    debug: Option<Sender<RunRecord>>,
    /// What the cache holds, as far as we know; `None` until loaded.
    previous: Option<Arc<Snapshot>>,
    /// Whether runs enqueue warm-ups (`warm.enabled`, off with `--no-warm`).
    warm: bool,
    /// The reply channel of a write that timed out, until it answers.
    unanswered_write: Option<crossbeam_channel::Receiver<Result<(), store::StoreError>>>,
    /// The next run applies whatever shrink it sees (an operator said so).
    accept_shrink: bool,
}

/// What a run produced besides its summary; a failed run only has its calls.
struct Produced {
    changes: Option<Changes>,
    /// What the cache held before the run.
    cached: Option<Arc<Snapshot>>,
    /// What it holds (or, for a dry run, would hold) after.
    next: Option<Arc<Snapshot>>,
    calls: Vec<CallRecord>,
}

impl Produced {
    fn nothing(calls: Vec<CallRecord>) -> Produced {
        Produced {
            changes: None,
            cached: None,
            next: None,
            calls,
        }
    }
}

/// The previous state a run compares against, and whether to rewrite every key.
struct Baseline {
    snapshot: Arc<Snapshot>,
    rewrite_all: bool,
}

impl Runner {
    /// `writer`: where write batches go (`None` for dry runs only).
    pub fn new(
        config: Config,
        upstream: Arc<Upstream>,
        store: Store,
        writer: Option<Sender<WriteRequest>>,
        debug: Option<Sender<RunRecord>>,
    ) -> std::io::Result<Runner> {
        let pool =
            fetch::build_pool(config.upstream.max_concurrency).map_err(std::io::Error::other)?;
        Ok(Runner {
            upstream,
            pool,
            store,
            writer,
            debug,
            previous: None,
            warm: config.warm.enabled,
            unanswered_write: None,
            accept_shrink: false,
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Turns warm-up enqueueing off (`precache once --no-warm`) or on.
    pub fn set_warm(&mut self, enabled: bool) {
        self.warm = enabled;
    }

    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Makes the next run (that gets as far as planning) apply whatever
    /// shrink it sees instead of holding it (`once --accept-shrink`,
    /// `POST /accept-shrink`).
    pub fn accept_shrink(&mut self) {
        self.accept_shrink = true;
    }

    /// Works out what the cache holds now: the in-memory snapshot if Redis
    /// still has the keys, else what Redis has (a full rewrite when keys are missing).
    fn baseline(&mut self) -> Result<Baseline, store::StoreError> {
        if let Some(previous) = &self.previous {
            return Ok(if self.store.data_keys_present()? {
                Baseline {
                    snapshot: previous.clone(),
                    rewrite_all: false,
                }
            } else {
                log::warn!(
                    "cache keys are missing from Redis (cleared or restarted empty): rewriting everything"
                );
                Baseline {
                    snapshot: Arc::new(Snapshot::default()),
                    rewrite_all: true,
                }
            });
        }
        let loaded = self.store.load_snapshot()?;
        Ok(if loaded.missing.is_empty() {
            log::info!(
                "loaded the previous snapshot from Redis: {:?}",
                loaded.snapshot.item_counts()
            );
            Baseline {
                snapshot: Arc::new(loaded.snapshot),
                rewrite_all: false,
            }
        } else {
            log::info!(
                "no complete snapshot in Redis (missing {:?}): this run writes everything",
                loaded.missing
            );
            Baseline {
                snapshot: Arc::new(Snapshot::default()),
                rewrite_all: true,
            }
        })
    }

    /// One run. `dry_run` fetches and diffs against the cache but writes
    /// nothing: no Redis key, no debug file.
    pub fn run_once(&mut self, dry_run: bool) -> RunReport {
        // A token endpoint that failed in an earlier run is asked again now,
        // and at most once (with its retries) until this run ends.
        self.upstream.begin_run();
        let report = self.run_inner(dry_run);
        self.upstream.end_run();
        report
    }

    fn run_inner(&mut self, dry_run: bool) -> RunReport {
        let started = Instant::now();
        let started_at = Utc::now();
        let run_id = new_run_id(started_at);
        log::info!(
            "run {run_id} started{}",
            if dry_run { " (dry run)" } else { "" }
        );
        let mut summary = RunSummary {
            run_id: run_id.clone(),
            status: RunStatus::Failed,
            dry_run,
            duration_ms: 0,
            items: ItemCounts::default(),
            api_calls: ApiCallCounts::default(),
            failed_calls: 0,
            changes: serde_json::Map::new(),
            changed_ids: serde_json::Map::new(),
            carried_over: Vec::new(),
            held: Held::default(),
            shrink: ShrinkVerdict::None,
            warnings: Vec::new(),
            keys_written: 0,
            bytes_written: 0,
            upstream_status: "UP",
            error: None,
            warm: None,
        };

        if let Err(e) = self.settle_unanswered_write() {
            summary.error = Some(e);
            return self.finish(summary, started, started_at, Produced::nothing(Vec::new()));
        }
        // A dry run without Redis still fetches, but has nothing to compare
        // against: it reports no changes rather than "everything is new".
        let baseline = match self.baseline() {
            Ok(b) => Some(b),
            Err(e) if dry_run => {
                log::warn!("{e}; the dry run fetches without comparing against the cache");
                None
            }
            Err(e) => {
                summary.error = Some(e.to_string());
                return self.finish(summary, started, started_at, Produced::nothing(Vec::new()));
            }
        };

        let settings = FetchSettings::from_config(&self.config, started_at.year());
        let fetched = fetch::fetch(&self.upstream, &self.pool, &settings);
        summary.api_calls = fetched.api_calls;
        summary.failed_calls = fetched.failed_calls.len();
        for failed in &fetched.failed_calls {
            log::warn!("{} call failed: {}", failed.call_type, failed.error);
        }
        if fetched.status == RunStatus::Failed {
            summary.upstream_status = "DOWN";
            summary.error = fetched.failure.clone();
            return self.finish(
                summary,
                started,
                started_at,
                Produced::nothing(fetched.calls),
            );
        }

        let Some(baseline) = baseline else {
            summary.items = fetched.snapshot.item_counts();
            summary.status = fetched.status;
            let produced = Produced {
                next: Some(Arc::new(fetched.snapshot)),
                ..Produced::nothing(fetched.calls)
            };
            return self.finish(summary, started, started_at, produced);
        };

        let shrink_state = match self.store.shrink_state() {
            Ok(state) => state,
            Err(e) => {
                summary.error = Some(e.to_string());
                return self.finish(
                    summary,
                    started,
                    started_at,
                    Produced::nothing(fetched.calls),
                );
            }
        };
        let planned = plan::plan(
            &baseline.snapshot,
            plan::Answer {
                snapshot: fetched.snapshot,
                failed_roots: &fetched.failed_roots,
                undated_seasons: &fetched.undated_seasons,
                empty_seasons: &fetched.empty_seasons,
            },
            ShrinkSettings {
                max_fraction: self.config.sync.max_shrink_fraction,
                confirm_runs: self.config.sync.confirm_runs,
            },
            shrink_state.as_ref(),
            std::mem::take(&mut self.accept_shrink),
        );
        let next = planned.next;
        summary.carried_over = planned.carried_over;
        if !summary.carried_over.is_empty() {
            log::warn!(
                "run {run_id} degraded: kept the previous matches of {} tournament(s) whose call failed: {:?}",
                summary.carried_over.len(),
                summary.carried_over
            );
        }
        for warning in &planned.warnings {
            log::warn!("run {run_id}: {warning}");
        }
        summary.warnings = planned.warnings;
        summary.held = planned.held;
        summary.shrink = planned.verdict;
        summary.items = next.item_counts();
        let changes = diff::diff(&baseline.snapshot, &next);
        summary.status = match planned.verdict {
            ShrinkVerdict::Held { .. } => RunStatus::Held,
            _ => fetched.status,
        };
        let next = Arc::new(next);
        let mut warm_enqueued = Vec::new();
        if !dry_run {
            let mut batch = store::plan_writes(
                &self.store.keys,
                &baseline.snapshot,
                &next,
                &changes,
                baseline.rewrite_all,
                started_at,
            );
            summary.keys_written = batch.sets.len() + batch.dels.len();
            summary.bytes_written = batch.bytes();
            if planned.shrink_state != shrink_state {
                let value = planned
                    .shrink_state
                    .as_ref()
                    .and_then(|state| serde_json::to_string(state).ok());
                batch
                    .bookkeeping
                    .push((self.store.keys.shrink_state(), value));
            }
            if self.warm {
                let warm = &self.config.warm;
                let reference = warm
                    .reference_date
                    .unwrap_or_else(|| started_at.date_naive());
                let members: Vec<String> =
                    crate::warm::plan(&changes, &next, reference, warm.window_days)
                        .iter()
                        .map(crate::warm::WarmTarget::key)
                        .collect();
                let refresh_for =
                    chrono::Duration::seconds((warm.refresh_until_days * 24 * 3600) as i64);
                warm_enqueued = members.clone();
                batch.warm = Some(store::WarmEnqueue {
                    members,
                    due_ms: started_at.timestamp_millis(),
                    refresh_until_ms: (started_at + refresh_for).timestamp_millis(),
                });
            }
            if let Err(e) = self.write(batch) {
                // The transaction may still have landed (a reply lost with
                // its socket, or one later than our wait): forget what we
                // think the cache holds, so the next run reads it from Redis
                // instead of diffing against a state that may be gone.
                self.previous = None;
                summary.status = RunStatus::Failed;
                summary.error = Some(e);
                summary.keys_written = 0;
                summary.bytes_written = 0;
                return self.finish(
                    summary,
                    started,
                    started_at,
                    Produced::nothing(fetched.calls),
                );
            }
            self.previous = Some(next.clone());
        }
        for (name, c) in changes.by_category() {
            summary.changes.insert(name.to_string(), json!(c.count()));
            if !c.is_empty() {
                let mut ids = c.ids();
                ids.truncate(CHANGED_IDS_SHOWN);
                summary.changed_ids.insert(name.to_string(), json!(ids));
            }
        }
        let produced = Produced {
            changes: Some(changes),
            cached: Some(baseline.snapshot),
            next: Some(next),
            calls: fetched.calls,
        };
        let mut report = self.finish(summary, started, started_at, produced);
        report.warm_enqueued = warm_enqueued;
        report
    }

    fn write(&mut self, batch: store::WriteBatch) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        let writer = self.writer.as_ref().ok_or("no Redis writer is running")?;
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        writer
            .send(WriteRequest {
                batch,
                reply: reply_tx,
            })
            .map_err(|_| "the Redis writer has stopped".to_string())?;
        match reply_rx.recv_timeout(WRITE_TIMEOUT) {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => {
                // The writer may still apply it: remember to wait for it.
                self.unanswered_write = Some(reply_rx);
                Err(format!(
                    "redis: no answer from the writer within {WRITE_TIMEOUT:?}"
                ))
            }
        }
    }

    /// A write the writer never answered may land at any time, so no run
    /// may read the cache from Redis before it is resolved: one that did
    /// would diff against a state about to change under it.
    fn settle_unanswered_write(&mut self) -> Result<(), String> {
        let Some(reply) = self.unanswered_write.take() else {
            return Ok(());
        };
        match reply.recv_timeout(WRITE_TIMEOUT) {
            Ok(_) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Ok(()),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                self.unanswered_write = Some(reply);
                Err("redis: an earlier run's write is still unanswered".into())
            }
        }
    }

    fn finish(
        &mut self,
        mut summary: RunSummary,
        started: Instant,
        started_at: DateTime<Utc>,
        produced: Produced,
    ) -> RunReport {
        let Produced {
            changes,
            cached,
            next,
            calls,
        } = produced;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        let ended_at = Utc::now();
        match (&summary.error, summary.status) {
            (Some(e), _) => log::error!(
                "run {} failed after {} ms: {e}",
                summary.run_id,
                summary.duration_ms
            ),
            (None, status) => log::info!(
                "run {} {} in {} ms: changes {}, {} keys / {} bytes written",
                summary.run_id,
                status.as_str(),
                summary.duration_ms,
                Value::Object(summary.changes.clone()),
                summary.keys_written,
                summary.bytes_written
            ),
        }
        let stats = run_stats(&summary, started_at, ended_at);
        if !summary.dry_run
            && let Err(e) = self
                .store
                .push_history(&stats.to_string(), self.config.logs.history_len)
        {
            log::warn!("cannot record run history in Redis: {e}");
        }
        // A dry run leaves no trace: the debug files are the daemon's.
        if let Some(debug) = self.debug.as_ref().filter(|_| !summary.dry_run) {
            let changed = changes.as_ref().is_some_and(|c| !c.is_empty());
            let snapshots = match (cached, &next) {
                (Some(cached), Some(fetched))
                    if self.config.logs.debug_snapshots
                        && (changed || !self.snapshot_files_exist()) =>
                {
                    Some(SnapshotFiles {
                        run_id: summary.run_id.clone(),
                        timestamp: rfc3339(started_at),
                        cached,
                        fetched: fetched.clone(),
                    })
                }
                _ => None,
            };
            let record = RunRecord {
                stats,
                calls: json!({"run_id": summary.run_id, "timestamp": rfc3339(started_at), "calls": calls}),
                snapshots,
            };
            if debug.send(record).is_err() {
                log::warn!("the debug-log thread has stopped; debug files are not updated");
            }
        }
        RunReport {
            summary,
            started_at,
            ended_at,
            changes,
            snapshot: next,
            calls,
            warm_enqueued: Vec::new(),
        }
    }

    fn snapshot_files_exist(&self) -> bool {
        crate::debuglog::dir(&self.config.logs.dir)
            .join("tournament_matches_fetched_latest.json")
            .exists()
    }
}

/// The seed's `log_item` for a run.
pub fn run_stats(summary: &RunSummary, start: DateTime<Utc>, end: DateTime<Utc>) -> Value {
    let total: u64 = summary.changes.values().filter_map(Value::as_u64).sum();
    let mut stats = json!({
        "action": "precache_run",
        "run_id": summary.run_id,
        "status": summary.status.as_str(),
        "start_time": rfc3339(start),
        "end_time": rfc3339(end),
        "process_time": summary.duration_ms as f64 / 1000.0,
        "api_calls": summary.api_calls,
        "changes": summary.changes,
        "total_changes": total,
        "upstream_status": summary.upstream_status,
        "items": summary.items,
        "failed_calls": summary.failed_calls,
        "carried_over": summary.carried_over,
        "changed_ids": summary.changed_ids,
        "keys_written": summary.keys_written,
        "bytes_written": summary.bytes_written,
        "dry_run": summary.dry_run,
    });
    if let Some(obj) = stats.as_object_mut() {
        if let Some(error) = &summary.error {
            obj.insert("error".into(), json!(error));
        }
        if !summary.held.is_empty() {
            obj.insert("held".into(), json!(summary.held));
        }
        if summary.shrink != ShrinkVerdict::None {
            obj.insert("shrink".into(), json!(summary.shrink));
        }
        if !summary.warnings.is_empty() {
            obj.insert("warnings".into(), json!(summary.warnings));
        }
    }
    stats
}
