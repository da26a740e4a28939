//! The families a run's report sets: its result, changes, items and
//! repairs; the upstream as its calls saw it; adaptive polling; and the
//! seed's per-run series, kept for the last `metrics.keep_runs` runs.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGaugeVec};

use super::{DURATION_BUCKETS, Families, SYNC_CALLS, status_label};
use crate::model::calls::CallType;
use crate::model::changes::Category;
use crate::report::{PollReport, RunReport, RunStatus, Tier, UpstreamStatus};
use crate::util::lock;
use crate::warm::plan::Endpoint;

/// A run's result, changes, items and repairs.
pub(super) struct RunFamilies {
    runs_total: IntCounterVec,
    duration_seconds: Histogram,
    last_run_changes: IntGaugeVec,
    changes_detected_total: IntCounterVec,
    last_run_timestamp: Gauge,
    items_processed: IntGaugeVec,
    cache_reloads_total: IntCounter,
    keys_repaired_total: IntCounter,
    bookkeeping_discarded_total: IntCounterVec,
}

impl RunFamilies {
    pub fn new(f: &Families) -> Result<RunFamilies, prometheus::Error> {
        let runs = RunFamilies {
            runs_total: f.counter_vec(
                "precache_runs_total",
                "Runs by result: success, degraded, held or error (failed).",
                &["status"],
            )?,
            duration_seconds: f.histogram(
                "precache_duration_seconds",
                "Run duration.",
                &DURATION_BUCKETS,
            )?,
            last_run_changes: f.gauge_vec(
                "precache_last_run_changes",
                "Changes in the last run by category (-1: the run failed).",
                &["category"],
            )?,
            changes_detected_total: f.counter_vec(
                "precache_changes_detected_total",
                "Changes detected, by category.",
                &["category"],
            )?,
            last_run_timestamp: f.float_gauge(
                "precache_last_run_timestamp",
                "Unix time the last successful (or degraded) run ended.",
            )?,
            items_processed: f.gauge_vec(
                "precache_items_processed",
                "Items in the last run by type (-1: the run failed).",
                &["item_type"],
            )?,
            cache_reloads_total: f.counter(
                "precache_cache_reloads_total",
                "Runs that found Redis not holding this process's last commit (a restore, a failover, another writer, an edit) and read the cache from it.",
            )?,
            keys_repaired_total: f.counter(
                "precache_keys_repaired_total",
                "Data keys written because Redis did not hold them as the last commit left them (deleted, emptied, edited, of another type).",
            )?,
            bookkeeping_discarded_total: f.counter_vec(
                "precache_bookkeeping_discarded_total",
                "Bookkeeping keys found of the wrong type, deleted and rebuilt, by key.",
                &["key"],
            )?,
        };
        // Every category and status has a series from the start.
        for category in Category::ALL {
            runs.changes_detected_total
                .with_label_values(&[category.as_str()]);
        }
        for status in RunStatus::ALL {
            runs.runs_total.with_label_values(&[status_label(status)]);
        }
        Ok(runs)
    }

    pub fn record(&self, report: &RunReport) {
        let summary = &report.summary;
        let ok = summary.status.is_ok();
        let repairs = &summary.repairs;
        if repairs.reloaded.is_some() {
            self.cache_reloads_total.inc();
        }
        self.keys_repaired_total
            .inc_by(repairs.rewritten.len() as u64);
        for key in &repairs.discarded {
            self.bookkeeping_discarded_total
                .with_label_values(&[key])
                .inc();
        }
        self.runs_total
            .with_label_values(&[status_label(summary.status)])
            .inc();
        self.duration_seconds
            .observe(summary.duration_ms as f64 / 1000.0);
        for category in Category::ALL {
            let count = summary.changes.get(category).unwrap_or(0);
            if ok {
                self.changes_detected_total
                    .with_label_values(&[category.as_str()])
                    .inc_by(count as u64);
            }
            self.last_run_changes
                .with_label_values(&[category.as_str()])
                .set(if ok { count as i64 } else { -1 });
        }
        for (item, n) in summary.items.by_item() {
            let value = if ok { n as i64 } else { -1 };
            self.items_processed.with_label_values(&[item]).set(value);
        }
        if ok {
            self.last_run_timestamp
                .set(report.ended_at.timestamp_millis() as f64 / 1000.0);
        }
    }
}

/// The upstream as a run's calls saw it, and the calls it made.
pub(super) struct CallFamilies {
    /// Also counts the warm-up's calls (read live, see `live`).
    pub api_calls_total: IntCounterVec,
    not_modified_total: IntCounter,
    upstream_status: IntGaugeVec,
}

impl CallFamilies {
    pub fn new(f: &Families) -> Result<CallFamilies, prometheus::Error> {
        let calls = CallFamilies {
            api_calls_total: f.counter_vec(
                "precache_api_calls_total",
                "Upstream API calls (retries not counted), by call type.",
                &["call_type"],
            )?,
            not_modified_total: f.counter(
                "precache_upstream_not_modified_total",
                "Match-list calls the upstream answered 304 Not Modified (no body, no parse).",
            )?,
            upstream_status: f.gauge_vec(
                "precache_upstream_status",
                "Upstream health as the last run saw it (1 UP, 0 DOWN, -1 UNAUTHORIZED: it answers and refuses our credentials); endpoint \"api\" overall, else by call type.",
                &["endpoint"],
            )?,
        };
        for call in SYNC_CALLS
            .iter()
            .chain(Endpoint::ALL.map(Endpoint::call_type).iter())
        {
            calls.api_calls_total.with_label_values(&[call.as_str()]);
        }
        Ok(calls)
    }

    pub fn record(&self, report: &RunReport) {
        let summary = &report.summary;
        for call in SYNC_CALLS {
            self.api_calls_total
                .with_label_values(&[call.as_str()])
                .inc_by(summary.api_calls.get(call) as u64);
        }
        self.not_modified_total.inc_by(summary.not_modified as u64);
        self.upstream_status
            .with_label_values(&["api"])
            .set(summary.upstream_status.gauge());
        // By call type: the worst its calls saw; an unanswered call (DOWN)
        // outweighs a refused one, as for the run (sync::fetch).
        let mut by_type: BTreeMap<CallType, UpstreamStatus> = BTreeMap::new();
        for call in report.calls.iter() {
            let seen = match (&call.error, call.unauthorized) {
                (None, _) => UpstreamStatus::Up,
                // "No such record": an answer (sync::fetch reads it so).
                (Some(_), _)
                    if call.status_code == Some(404) && call.call_type.not_found_means_none() =>
                {
                    UpstreamStatus::Up
                }
                (Some(_), true) => UpstreamStatus::Unauthorized,
                (Some(_), false) => UpstreamStatus::Down,
            };
            let worst = by_type.entry(call.call_type).or_insert(UpstreamStatus::Up);
            if seen.severity() > worst.severity() {
                *worst = seen;
            }
        }
        // A call type the run never reached because the upstream failed an
        // earlier stage is as good as down for this run; keeping its old
        // value would say UP. A run a shutdown cancelled, or one that
        // failed for another cause (Redis), learnt nothing of the types it
        // did not reach: their values stand.
        if summary.status == RunStatus::Cancelled {
            return;
        }
        let unreached = if summary.status.is_ok() {
            Some(UpstreamStatus::Up)
        } else if summary.upstream_status == UpstreamStatus::Up {
            None
        } else {
            Some(UpstreamStatus::Down)
        };
        for call_type in SYNC_CALLS {
            let Some(status) = by_type.get(&call_type).copied().or(unreached) else {
                continue;
            };
            self.upstream_status
                .with_label_values(&[call_type.as_str()])
                .set(status.gauge());
        }
    }
}

/// Adaptive polling: which tier each root is in, and how the match calls
/// went by tier.
pub(super) struct PollFamilies {
    match_calls_by_tier_total: IntCounterVec,
    poll_tier_roots: IntGaugeVec,
    poll_oldest_age_runs: IntGaugeVec,
}

impl PollFamilies {
    pub fn new(f: &Families) -> Result<PollFamilies, prometheus::Error> {
        let poll = PollFamilies {
            match_calls_by_tier_total: f.counter_vec(
                "precache_upstream_match_calls_total",
                "Match-list calls (roots asked; retries not counted) by the polling tier of their root.",
                &["tier"],
            )?,
            poll_tier_roots: f.gauge_vec(
                "precache_poll_tier_roots",
                "Root tournaments per polling tier, as the last run that got to the match calls saw them.",
                &["tier"],
            )?,
            poll_oldest_age_runs: f.gauge_vec(
                "precache_poll_oldest_age_runs",
                "Runs since the least recently asked root of each tier was asked, before the last run.",
                &["tier"],
            )?,
        };
        for tier in Tier::ALL {
            poll.match_calls_by_tier_total
                .with_label_values(&[tier.as_str()]);
        }
        Ok(poll)
    }

    pub fn record(&self, poll: &PollReport) {
        for tier in Tier::ALL {
            let label = [tier.as_str()];
            self.match_calls_by_tier_total
                .with_label_values(&label)
                .inc_by(poll.polled.get(tier));
            self.poll_tier_roots
                .with_label_values(&label)
                .set(poll.tiers.get(tier) as i64);
            self.poll_oldest_age_runs
                .with_label_values(&label)
                .set(poll.oldest_poll_age_runs.get(tier) as i64);
        }
    }
}

/// The label sets one run added, removed when it falls out of `keep_runs`.
struct RunSeries {
    run_id: String,
    run_timestamp: String,
    urls: Vec<[String; 3]>,
}

/// The seed's series labelled by `run_id`, exported only with
/// `metrics.seed_run_series`, and only for the last `keep_runs` runs.
pub(super) struct SeedRunSeries {
    on: AtomicBool,
    keep_runs: usize,
    changes_this_run: IntGaugeVec,
    run_changes_summary: IntGaugeVec,
    api_urls_called: IntGaugeVec,
    retained: Mutex<VecDeque<RunSeries>>,
}

impl SeedRunSeries {
    pub fn new(f: &Families, keep_runs: usize, on: bool) -> Result<Self, prometheus::Error> {
        Ok(SeedRunSeries {
            on: AtomicBool::new(on),
            keep_runs: keep_runs.max(1),
            changes_this_run: f.gauge_vec(
                "precache_changes_this_run",
                "Changes in one run by category (-1: the run failed); the last metrics.keep_runs runs, with metrics.seed_run_series.",
                &["category", "run_id"],
            )?,
            run_changes_summary: f.gauge_vec(
                "precache_run_changes_summary",
                "Changes in one run by category, with its start time (-1: the run failed); the last metrics.keep_runs runs, with metrics.seed_run_series.",
                &["run_id", "run_timestamp", "category"],
            )?,
            api_urls_called: f.gauge_vec(
                "precache_api_urls_called",
                "Calls per URL in one run; the last metrics.keep_runs runs, with metrics.seed_run_series.",
                &["run_id", "url_path", "method", "params"],
            )?,
            retained: Mutex::new(VecDeque::new()),
        })
    }

    /// On or off (a config reload); off removes the ones kept.
    pub fn set(&self, on: bool) {
        if !self.on.swap(on, Ordering::Relaxed) || on {
            return;
        }
        lock(&self.retained).clear();
        self.changes_this_run.reset();
        self.run_changes_summary.reset();
        self.api_urls_called.reset();
    }

    pub fn record(&self, report: &RunReport) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let summary = &report.summary;
        let run_timestamp = report.started_at.timestamp().to_string();
        for category in Category::ALL {
            let count = summary.changes.get(category).unwrap_or(0);
            let value = if summary.status.is_ok() {
                count as i64
            } else {
                -1
            };
            self.changes_this_run
                .with_label_values(&[category.as_str(), &summary.run_id])
                .set(value);
            self.run_changes_summary
                .with_label_values(&[&summary.run_id, &run_timestamp, category.as_str()])
                .set(value);
        }
        let mut urls: BTreeMap<[String; 3], i64> = BTreeMap::new();
        for call in report.calls.iter() {
            let params: Vec<String> = call
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let labels = [
                call.url_path.clone(),
                call.method.to_string(),
                params.join("&"),
            ];
            *urls.entry(labels).or_default() += 1;
        }
        for (labels, n) in &urls {
            self.api_urls_called
                .with_label_values(&[&summary.run_id, &labels[0], &labels[1], &labels[2]])
                .set(*n);
        }
        let mut retained = lock(&self.retained);
        retained.push_back(RunSeries {
            run_id: summary.run_id.clone(),
            run_timestamp,
            urls: urls.into_keys().collect(),
        });
        while retained.len() > self.keep_runs {
            if let Some(old) = retained.pop_front() {
                self.forget(&old);
            }
        }
    }

    fn forget(&self, run: &RunSeries) {
        for category in Category::ALL.map(Category::as_str) {
            let _ = self
                .changes_this_run
                .remove_label_values(&[category, &run.run_id]);
            let _ = self.run_changes_summary.remove_label_values(&[
                &run.run_id,
                &run.run_timestamp,
                category,
            ]);
        }
        for [path, method, params] in &run.urls {
            let _ = self
                .api_urls_called
                .remove_label_values(&[&run.run_id, path, method, params]);
        }
    }
}
