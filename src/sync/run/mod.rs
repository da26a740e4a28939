//! One sync run end to end (DESIGN.md section 3): read → fetch → plan →
//! write → record.
//!
//! [`Runner`] is the imperative shell around the pure [`plan`]: it reads
//! what the cache holds (in memory, or from Redis), asks the upstream, hands
//! the plan's batch to the writer thread, and records the run (history,
//! debug files, the report). The previous snapshot lives here between runs;
//! it only advances when the writer confirms the transaction, so a failed
//! write is retried in full by the next run.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use chrono::{DateTime, Local, Utc};
use crossbeam_channel::Sender;

use crate::config::Config;
use crate::model::Snapshot;
use crate::model::calls::CallRecord;
use crate::model::changes::Changes;
use crate::report::{Repairs, RunReport, RunStatus, RunSummary, Tier, UpstreamStatus};
use crate::store::commit::CommitId;
use crate::store::lease::LeaseToken;
use crate::store::{ApplyError, Store, WriteBatch, WriteRequest};
use crate::sync::baseline::{Baseline, Cache, WRITE_TIMEOUT};
use crate::sync::debuglog::RunRecord;
use crate::sync::fetch::{self, FetchFailure, FetchSettings, Fetched, Known, Polled};
use crate::sync::hold::{Answer, ShrinkSettings};
use crate::sync::plan::{self, Marker, PlanInput, PlanSettings, RunPlan, WarmSettings};
use crate::upstream::Upstream;
use crate::warm::plan::Lifetimes;

mod failure;
mod record;

pub use failure::RunFailure;
use failure::{reader_gone, reading_failed};
use record::describe;

/// A run id that sorts by time.
pub fn new_run_id(now: DateTime<Utc>) -> String {
    now.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

pub struct Runner {
    config: Config,
    upstream: Arc<Upstream>,
    pool: rayon::ThreadPool,
    /// The cache and what we know it holds.
    cache: Cache,
    writer: Option<Sender<WriteRequest>>,
    debug: Option<Sender<RunRecord>>,
    /// Whether runs enqueue warm-ups (`warm.enabled`, off with `--no-warm`).
    warm: bool,
    /// The next run applies whatever shrink it sees (an operator said so).
    accept_shrink: bool,
    /// The next run asks every root (the daemon's first run, `once --full`).
    sweep_next: bool,
    /// This process, as its commits name it (`host:pid:boot`).
    instance: String,
    /// The leader lease the runs write under (`None`: unfenced, `once`
    /// without Redis's lease, tests).
    lease: Option<LeaseToken>,
    /// The upstream's status as the last run that got answers saw it: what
    /// a run cut short by shutdown reports (it learnt nothing new).
    upstream_seen: UpstreamStatus,
}

/// What a run got as far as producing.
#[derive(Default)]
struct Produced {
    changes: Option<Changes>,
    /// What the cache held before the run.
    cached: Option<Arc<Snapshot>>,
    /// What it holds (or, for a dry run, would hold) after.
    next: Option<Arc<Snapshot>>,
    calls: Arc<Vec<CallRecord>>,
    warm_enqueued: Vec<String>,
    root_tiers: BTreeMap<i64, Tier>,
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
            cache: Cache::new(store),
            writer,
            debug,
            warm: config.warm.enabled,
            accept_shrink: false,
            sweep_next: false,
            instance: crate::util::instance_id(),
            lease: None,
            upstream_seen: UpstreamStatus::Up,
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration from the next run on (a reload: only the keys
    /// `config::is_live` keys differ), and the upstream's credentials.
    pub fn set_config(&mut self, config: Config) {
        self.upstream.set_credentials(&config.upstream);
        self.config = config;
    }

    /// Turns warm-up enqueueing off (`precache once --no-warm`) or on.
    pub fn set_warm(&mut self, enabled: bool) {
        self.warm = enabled;
    }

    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    pub fn store(&mut self) -> &mut Store {
        &mut self.cache.store
    }

    /// Makes the next run (that gets as far as planning) apply whatever
    /// shrink it sees instead of holding it (`once --accept-shrink`,
    /// `POST /accept-shrink`).
    pub fn accept_shrink(&mut self) {
        self.accept_shrink = true;
    }

    /// Withdraws an acceptance the next run would have applied; whether
    /// there was one.
    pub fn take_accept_shrink(&mut self) -> bool {
        std::mem::take(&mut self.accept_shrink)
    }

    /// This process, as its commits and its lease name it.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The lease the next runs write under. A new one (this instance just
    /// took over) means another instance may have written the cache: the
    /// next run reads it from Redis.
    pub fn set_lease(&mut self, lease: Option<LeaseToken>) {
        if lease.is_some() && lease != self.lease {
            self.cache.forget_all();
        }
        self.lease = lease;
    }

    /// The lease the runs write under, if any.
    pub fn lease(&self) -> Option<&LeaseToken> {
        self.lease.as_ref()
    }

    /// Makes the next run ask every root for its matches, whatever their
    /// tier (the daemon at start-up, `once --full`).
    pub fn sweep_every_root_next(&mut self) {
        self.sweep_next = true;
    }

    /// One run. `dry_run` fetches and diffs against the cache but writes
    /// nothing: no Redis key, no debug file.
    pub fn run_once(&mut self, dry_run: bool) -> RunReport {
        let started = Instant::now();
        let started_at = Utc::now();
        let mut summary = RunSummary::new(new_run_id(started_at), dry_run);
        summary.instance = self.instance.clone();
        log::info!(
            "run {} started{}",
            summary.run_id,
            if dry_run { " (dry run)" } else { "" }
        );
        // A token endpoint that failed in an earlier run is asked again now,
        // and at most once (with its retries) until this run ends.
        self.upstream.begin_run();
        let mut calls = Arc::default();
        let mut polled = None;
        let produced = self.sync(&mut summary, &mut calls, &mut polled, started_at);
        self.upstream.end_run();
        let root_tiers = polled
            .as_ref()
            .map(|p| p.plan.tiers.clone())
            .unwrap_or_default();
        if let Some(polled) = polled
            && !dry_run
        {
            self.sweep_next = false;
            // A run whose answers did not reach the cache asks its roots
            // again next run: their changes are not in Redis yet.
            self.cache.poll = Some(if produced.is_ok() {
                polled.after
            } else {
                polled.unwritten
            });
        }
        let produced = produced.unwrap_or_else(|failure| {
            summary.status = match &failure {
                RunFailure::Fenced(_) => RunStatus::Fenced,
                RunFailure::Cancelled => RunStatus::Cancelled,
                _ => RunStatus::Failed,
            };
            if let RunFailure::Upstream(_, status) = failure {
                summary.upstream_status = status;
            }
            if summary.status == RunStatus::Cancelled {
                summary.upstream_status = self.upstream_seen;
            }
            if summary.status == RunStatus::Fenced {
                // Another instance writes the cache now: what we knew of it
                // is no longer the newest state.
                self.cache.forget_all();
                self.lease = None;
            }
            summary.error = Some(failure.to_string());
            summary.keys_written = 0;
            summary.bytes_written = 0;
            Produced::default()
        });
        if summary.status != RunStatus::Cancelled {
            self.upstream_seen = summary.upstream_status;
        }
        let produced = Produced {
            calls,
            root_tiers,
            ..produced
        };
        self.record(summary, started, started_at, produced)
    }

    /// Read → fetch → plan → write; fills `summary` as it goes.
    fn sync(
        &mut self,
        summary: &mut RunSummary,
        calls: &mut Arc<Vec<CallRecord>>,
        polled: &mut Option<Polled>,
        now: DateTime<Utc>,
    ) -> Result<Produced, RunFailure> {
        let dry_run = summary.dry_run;
        let (baseline, mut fetched) = self.read_and_fetch(dry_run, now);
        *polled = fetched.polled.take();
        let mut rested = Vec::new();
        if let Some(p) = polled {
            summary.poll = Some(p.plan.report(&p.before));
            rested = p.plan.rested();
        }
        // The calls made are reported even when the cache could not be
        // read; that failure is the run's, as it came first.
        let fetched = self.fetched(fetched, summary, calls);
        if let Err(RunFailure::Upstream(_, status)) = &fetched {
            summary.upstream_status = *status;
        }
        let baseline = baseline?;
        let fetched = fetched?;
        // A dry run without Redis has nothing to compare against: it
        // reports no changes rather than "everything is new".
        let Some(baseline) = baseline else {
            summary.items = fetched.snapshot.item_counts();
            summary.status = fetched.status;
            let next = Some(Arc::new(fetched.snapshot));
            return Ok(Produced {
                next,
                ..Produced::default()
            });
        };
        let validators = fetched.validators;
        summary.repairs = Repairs {
            reloaded: baseline.reloaded.clone(),
            rewritten: baseline.rewrite.keys.iter().cloned().collect(),
            discarded: baseline.discard.clone(),
        };
        let commit = CommitId {
            epoch: self.lease.as_ref().map_or(0, |l| l.epoch),
            at_ms: now.timestamp_millis(),
            instance: self.instance.clone(),
            run_id: summary.run_id.clone(),
        };
        // An operator's acceptance asked of the leader: applied now, and
        // its request deleted in this run's transaction.
        let mut delete_first = baseline.discard.clone();
        if let Some(asked) = &baseline.accept_requested {
            log::info!("accepting the held shrink, as asked by {asked}");
            self.accept_shrink = true;
            delete_first.push(self.cache.store.keys.accept_shrink_request());
        }
        let plan = plan::plan_run(
            PlanInput {
                previous: &baseline.snapshot,
                newest: &baseline.newest,
                previous_bodies: &baseline.bodies,
                answer_bodies: &fetched.bodies,
                rewrite: &baseline.rewrite,
                discard: &delete_first,
                rebuild: baseline.rebuild,
                marker: (!dry_run).then_some(Marker {
                    before: &baseline.record,
                    id: commit,
                    force: baseline.force_marker,
                }),
                answer: Answer {
                    snapshot: fetched.snapshot,
                    failed_roots: &fetched.failed_roots,
                    undated_seasons: &fetched.undated_seasons,
                    empty_seasons: &fetched.empty_seasons,
                    rested: &rested,
                    data: &fetched.data,
                    sport_ids: &self.config.sync.sport_ids,
                },
                fetched: fetched.status,
                shrink_state: baseline.shrink.as_ref(),
                accept_shrink: std::mem::take(&mut self.accept_shrink),
                write: !dry_run,
                now,
                run_id: &summary.run_id,
            },
            &self.plan_settings(),
            &self.cache.store.keys,
        );
        describe(summary, &plan);
        let RunPlan {
            next,
            bodies,
            changes,
            batch,
            warm,
            record,
            shrink_state,
            ..
        } = plan;
        let next = Arc::new(next);
        if !dry_run {
            let mut batch = batch;
            batch.fence = self.lease.as_ref().map(|l| l.value.clone());
            batch.read_from_master = self.cache.read_from_master().map(str::to_string);
            self.write(batch)?;
            self.cache
                .advance(next.clone(), bodies, validators, record, shrink_state);
        }
        Ok(Produced {
            changes: Some(changes),
            cached: Some(baseline.snapshot),
            next: Some(next),
            warm_enqueued: warm.map(|w| w.members).unwrap_or_default(),
            ..Produced::default()
        })
    }

    /// Reads the baseline on its own thread while the fetch starts: the
    /// match calls, the first that need it, wait for it. A baseline that
    /// could not be read stops the fetch there.
    fn read_and_fetch(
        &mut self,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> (Result<Option<Baseline>, RunFailure>, Fetched) {
        let settings = FetchSettings::from_config(
            &self.config,
            now,
            // Match dates are local times (the federation's).
            Local::now().naive_local(),
            self.sweep_next,
        );
        let (cache, upstream, pool) = (&mut self.cache, &self.upstream, &self.pool);
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let read: OnceLock<Result<Option<Baseline>, RunFailure>> = OnceLock::new();
        let fetched = std::thread::scope(|scope| {
            let reader = std::thread::Builder::new()
                .name("baseline".into())
                .spawn_scoped(scope, move || {
                    let _ = done_tx.send(cache.read_baseline(dry_run).map_err(RunFailure::from));
                });
            if let Err(e) = reader {
                let _ = read.set(Err(reading_failed(e.to_string())));
            }
            let known = || {
                let result = read.get_or_init(|| done_rx.recv().unwrap_or_else(reader_gone));
                match result {
                    Ok(Some(b)) => Some(Known {
                        snapshot: &b.snapshot,
                        bodies: &b.bodies,
                        validators: &b.validators,
                        poll: b.poll.as_ref(),
                        sweep: b.reloaded.is_some(),
                        regroup: &b.regrouped,
                    }),
                    Ok(None) => Some(Known::nothing()),
                    Err(_) => None,
                }
            };
            fetch::fetch(upstream, pool, &settings, known)
        });
        let read = read
            .into_inner()
            .unwrap_or_else(|| done_rx.recv().unwrap_or_else(reader_gone));
        (read, fetched)
    }

    /// The fetch stage's outcome; a failed one fails the run.
    fn fetched(
        &mut self,
        mut fetched: Fetched,
        summary: &mut RunSummary,
        calls: &mut Arc<Vec<CallRecord>>,
    ) -> Result<Fetched, RunFailure> {
        summary.api_calls = fetched.api_calls;
        summary.failed_calls = fetched.failed_calls.len();
        summary.not_modified = fetched.not_modified;
        for failed in fetched.failed_calls.iter().filter(|f| !f.cancelled()) {
            log::warn!("{} call failed: {}", failed.call_type, failed.error);
        }
        *calls = Arc::new(std::mem::take(&mut fetched.calls));
        match fetched.failure.take() {
            None => Ok(fetched),
            // Calls a shutdown cut short say nothing of the upstream: the
            // run is cancelled, not failed, and writes nothing (it would
            // carry their roots over as if the upstream had not answered).
            Some(FetchFailure::Cancelled) => Err(RunFailure::Cancelled),
            Some(FetchFailure::CacheUnreadable) => {
                Err(reading_failed(FetchFailure::CacheUnreadable.to_string()))
            }
            Some(failure) => Err(RunFailure::Upstream(failure, fetched.upstream_status)),
        }
    }

    fn plan_settings(&self) -> PlanSettings {
        let (sync, warm) = (&self.config.sync, &self.config.warm);
        PlanSettings {
            shrink: ShrinkSettings {
                max_fraction: sync.max_shrink_fraction,
                confirm_runs: sync.confirm_runs,
            },
            warm: self.warm.then(|| WarmSettings {
                window_days: warm.window_days,
                reference_date: warm.reference_date,
                lifetimes: Lifetimes::from_config(warm),
            }),
            changes_maxlen: self.config.redis.changes_maxlen,
        }
    }

    /// Hands `batch` to the writer thread and waits for its answer.
    fn write(&mut self, batch: WriteBatch) -> Result<(), RunFailure> {
        if batch.is_empty() {
            return Ok(());
        }
        let result = self.send_to_writer(batch);
        if result.is_err() {
            // The transaction may still have landed (a reply lost with its
            // socket, or one later than our wait): forget what we think the
            // cache holds, so the next run reads it from Redis instead of
            // diffing against a state that may be gone.
            self.cache.forget();
        }
        result
    }

    fn send_to_writer(&mut self, batch: WriteBatch) -> Result<(), RunFailure> {
        let writer = self.writer.as_ref().ok_or(RunFailure::WriterStopped)?;
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        writer
            .send(WriteRequest {
                batch,
                reply: reply_tx,
            })
            .map_err(|_| RunFailure::WriterStopped)?;
        match reply_rx.recv_timeout(WRITE_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(ApplyError::Fenced { holder })) => Err(RunFailure::Fenced(
                ApplyError::Fenced { holder }.to_string(),
            )),
            Ok(Err(ApplyError::Store(e))) => Err(RunFailure::Redis(e)),
            Err(_) => {
                // The writer may still apply it: remember to wait for it.
                self.cache.await_later(reply_rx);
                Err(RunFailure::WriteUnanswered)
            }
        }
    }
}
