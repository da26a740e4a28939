//! Every Prometheus metric, defined once, on one registry.
//!
//! The seed's metrics keep their names, types and labels. The corrections:
//! series labelled by `run_id` (`precache_changes_this_run`,
//! `precache_run_changes_summary`, `precache_api_urls_called`) are
//! exported only when `metrics.seed_run_series` asks for them, because a
//! label that changes every run makes the scraper store new series every
//! run (about 1,500 per run, 700,000 a day, for the per-URL one) however
//! few the process keeps; and then only for the last `metrics.keep_runs`
//! runs. Everything an operator needs is in bounded series
//! (`precache_last_run_changes{category}` stands for the per-run ones).
//! Beyond the seed: warm-up queue and results, Redis errors, upstream
//! retries and connections, build info and the process collector.
//!
//! Run metrics are recorded once per run from its [`RunReport`]; the live
//! ones (warm-up, retries, Redis errors) are read from their atomic sources
//! just before each scrape.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::model::Snapshot;
use crate::model::calls::CallType;
use crate::model::changes::Category;
use crate::report::{ApiCallCounts, RunReport, RunStatus, Tier, UpstreamStatus};
use crate::upstream::UpstreamCounters;
use crate::util::lock;
use crate::warm::plan::Endpoint;
use crate::warm::stats::WarmStats;

/// Buckets for run durations from 0.1 s to 10 min.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Call types of the sync stage (the seed's `api_calls` keys).
const SYNC_CALLS: [CallType; ApiCallCounts::CALL_TYPES.len()] = ApiCallCounts::CALL_TYPES;

/// The label sets one run added, removed when it falls out of `keep_runs`.
struct RunSeries {
    run_id: String,
    run_timestamp: String,
    urls: Vec<[String; 3]>,
}

pub struct Metrics {
    registry: Registry,
    keep_runs: usize,
    /// `metrics.seed_run_series`: export the seed's per-run series.
    seed_run_series: AtomicBool,
    last_run_changes: IntGaugeVec,
    runs_total: IntCounterVec,
    changes_detected_total: IntCounterVec,
    api_calls_total: IntCounterVec,
    not_modified_total: IntCounter,
    match_calls_by_tier_total: IntCounterVec,
    poll_tier_roots: IntGaugeVec,
    poll_oldest_age_runs: IntGaugeVec,
    changes_this_run: IntGaugeVec,
    run_changes_summary: IntGaugeVec,
    last_run_timestamp: Gauge,
    items_processed: IntGaugeVec,
    cached_data_size_bytes: IntGaugeVec,
    valid_seasons_count: IntGauge,
    valid_seasons_info: IntGaugeVec,
    tournaments_in_season_count: IntGauge,
    tournaments_in_season_info: IntGaugeVec,
    api_urls_called: IntGaugeVec,
    upstream_status: IntGaugeVec,
    duration_seconds: Histogram,
    warm_queue_depth: IntGauge,
    warm_scheduled: IntGauge,
    heap_in_use_bytes: IntGauge,
    warm_oldest_due_age_seconds: Gauge,
    warm_done_total: IntCounterVec,
    warm_failed_total: IntCounterVec,
    redis_errors_total: IntCounter,
    redis_master: IntGaugeVec,
    redis_master_changes_total: IntCounter,
    redis_reachable: IntGauge,
    upstream_retries_total: IntCounterVec,
    upstream_connections_opened_total: IntCounter,
    cache_reloads_total: IntCounter,
    leader: IntGauge,
    lease_transitions_total: IntCounter,
    keys_repaired_total: IntCounter,
    bookkeeping_discarded_total: IntCounterVec,
    retained: Mutex<VecDeque<RunSeries>>,
    /// Whether the info series have been filled once.
    cache_recorded: AtomicBool,
    /// Last values read from the live sources, to turn them into counter increments.
    seen: Mutex<HashMap<String, u64>>,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// `seed_run_series`: also export the seed's series labelled by `run_id`.
    pub fn new(keep_runs: usize, seed_run_series: bool) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        macro_rules! reg {
            ($metric:expr) => {{
                let m = $metric;
                registry.register(Box::new(m.clone()))?;
                m
            }};
        }
        let m = Metrics {
            keep_runs: keep_runs.max(1),
            seed_run_series: AtomicBool::new(seed_run_series),
            last_run_changes: reg!(IntGaugeVec::new(
                opts(
                    "precache_last_run_changes",
                    "Changes in the last run by category (-1: the run failed)."
                ),
                &["category"]
            )?),
            runs_total: reg!(IntCounterVec::new(
                opts(
                    "precache_runs_total",
                    "Runs by result: success, degraded, held or error (failed)."
                ),
                &["status"]
            )?),
            changes_detected_total: reg!(IntCounterVec::new(
                opts(
                    "precache_changes_detected_total",
                    "Changes detected, by category."
                ),
                &["category"]
            )?),
            api_calls_total: reg!(IntCounterVec::new(
                opts(
                    "precache_api_calls_total",
                    "Upstream API calls (retries not counted), by call type."
                ),
                &["call_type"]
            )?),
            not_modified_total: reg!(IntCounter::with_opts(opts(
                "precache_upstream_not_modified_total",
                "Match-list calls the upstream answered 304 Not Modified (no body, no parse)."
            ))?),
            match_calls_by_tier_total: reg!(IntCounterVec::new(
                opts(
                    "precache_upstream_match_calls_total",
                    "Match-list calls (roots asked; retries not counted) by the polling tier of their root."
                ),
                &["tier"]
            )?),
            poll_tier_roots: reg!(IntGaugeVec::new(
                opts(
                    "precache_poll_tier_roots",
                    "Root tournaments per polling tier, as the last run that got to the match calls saw them."
                ),
                &["tier"]
            )?),
            poll_oldest_age_runs: reg!(IntGaugeVec::new(
                opts(
                    "precache_poll_oldest_age_runs",
                    "Runs since the least recently asked root of each tier was asked, before the last run."
                ),
                &["tier"]
            )?),
            changes_this_run: reg!(IntGaugeVec::new(
                opts(
                    "precache_changes_this_run",
                    "Changes in one run by category (-1: the run failed); the last metrics.keep_runs runs, with metrics.seed_run_series."
                ),
                &["category", "run_id"]
            )?),
            run_changes_summary: reg!(IntGaugeVec::new(
                opts(
                    "precache_run_changes_summary",
                    "Changes in one run by category, with its start time (-1: the run failed); the last metrics.keep_runs runs, with metrics.seed_run_series."
                ),
                &["run_id", "run_timestamp", "category"]
            )?),
            last_run_timestamp: reg!(Gauge::with_opts(opts(
                "precache_last_run_timestamp",
                "Unix time the last successful (or degraded) run ended."
            ))?),
            items_processed: reg!(IntGaugeVec::new(
                opts(
                    "precache_items_processed",
                    "Items in the last run by type (-1: the run failed)."
                ),
                &["item_type"]
            )?),
            cached_data_size_bytes: reg!(IntGaugeVec::new(
                opts(
                    "precache_cached_data_size_bytes",
                    "Size of each cached data key in Redis."
                ),
                &["data_type"]
            )?),
            valid_seasons_count: reg!(IntGauge::with_opts(opts(
                "precache_valid_seasons_count",
                "Valid seasons in the cache."
            ))?),
            valid_seasons_info: reg!(IntGaugeVec::new(
                opts(
                    "precache_valid_seasons_info",
                    "One series per valid season in the cache (value 1)."
                ),
                &[
                    "season_id",
                    "season_name",
                    "season_year",
                    "sport_id",
                    "sport_name"
                ]
            )?),
            tournaments_in_season_count: reg!(IntGauge::with_opts(opts(
                "precache_tournaments_in_season_count",
                "Tournaments of the valid seasons in the cache."
            ))?),
            tournaments_in_season_info: reg!(IntGaugeVec::new(
                opts(
                    "precache_tournaments_in_season_info",
                    "One series per tournament in the cache (value 1)."
                ),
                &[
                    "tournament_id",
                    "tournament_name",
                    "season_id",
                    "sport_id",
                    "is_root"
                ]
            )?),
            api_urls_called: reg!(IntGaugeVec::new(
                opts(
                    "precache_api_urls_called",
                    "Calls per URL in one run; the last metrics.keep_runs runs, with metrics.seed_run_series."
                ),
                &["run_id", "url_path", "method", "params"]
            )?),
            upstream_status: reg!(IntGaugeVec::new(
                opts(
                    "precache_upstream_status",
                    "Upstream health as the last run saw it (1 UP, 0 DOWN, -1 UNAUTHORIZED: it answers and refuses our credentials); endpoint \"api\" overall, else by call type."
                ),
                &["endpoint"]
            )?),
            duration_seconds: reg!(Histogram::with_opts(
                HistogramOpts::new("precache_duration_seconds", "Run duration.")
                    .buckets(DURATION_BUCKETS.to_vec())
            )?),
            warm_queue_depth: reg!(IntGauge::with_opts(opts(
                "precache_warm_queue_depth",
                "Warm-up tasks due now and not done."
            ))?),
            warm_scheduled: reg!(IntGauge::with_opts(opts(
                "precache_warm_scheduled",
                "Warm-up tasks in the schedule, due now or later (refreshes, retries)."
            ))?),
            heap_in_use_bytes: reg!(IntGauge::with_opts(opts(
                "precache_heap_in_use_bytes",
                "Heap the allocator has handed out and not got back, after the last run (a leak grows it; fragmentation grows only the resident size)."
            ))?),
            warm_oldest_due_age_seconds: reg!(Gauge::with_opts(opts(
                "precache_warm_oldest_due_age_seconds",
                "How overdue the oldest due warm-up task is (0 when none is due)."
            ))?),
            warm_done_total: reg!(IntCounterVec::new(
                opts(
                    "precache_warm_done_total",
                    "Warm-up fetches stored, by endpoint."
                ),
                &["endpoint"]
            )?),
            warm_failed_total: reg!(IntCounterVec::new(
                opts(
                    "precache_warm_failed_total",
                    "Warm-up fetches that failed (rescheduled or dropped), by endpoint."
                ),
                &["endpoint"]
            )?),
            redis_errors_total: reg!(IntCounter::with_opts(opts(
                "precache_redis_errors_total",
                "Redis operations that failed."
            ))?),
            redis_master: reg!(IntGaugeVec::new(
                opts(
                    "precache_redis_master",
                    "The Redis master Sentinel named last (value 1; absent without Sentinel)."
                ),
                &["address"]
            )?),
            redis_master_changes_total: reg!(IntCounter::with_opts(opts(
                "precache_redis_master_changes_total",
                "Times Sentinel named another master than before (a failover): the next run reads the cache from the new master."
            ))?),
            redis_reachable: reg!(IntGauge::with_opts(opts(
                "precache_redis_master_reachable",
                "1 when this process's last connection attempt reached the Redis master (found through Sentinel, if used), 0 when it failed."
            ))?),
            upstream_retries_total: reg!(IntCounterVec::new(
                opts(
                    "precache_upstream_retries_total",
                    "Upstream request retries, by call type."
                ),
                &["call_type"]
            )?),
            upstream_connections_opened_total: reg!(IntCounter::with_opts(opts(
                "precache_upstream_connections_opened_total",
                "TCP connections opened to the upstream (or its proxy), TLS included; a run reuses its connections (keep-alive), at most upstream.max_concurrency, and an idle one is closed after 15 s."
            ))?),
            leader: reg!(IntGauge::with_opts(opts(
                "precache_leader",
                "1 while this instance holds the leader lease (it syncs and warms), 0 as a standby."
            ))?),
            lease_transitions_total: reg!(IntCounter::with_opts(opts(
                "precache_lease_transitions_total",
                "Times this instance took or lost the leader lease."
            ))?),
            cache_reloads_total: reg!(IntCounter::with_opts(opts(
                "precache_cache_reloads_total",
                "Runs that found Redis not holding this process's last commit (a restore, a failover, another writer, an edit) and read the cache from it."
            ))?),
            keys_repaired_total: reg!(IntCounter::with_opts(opts(
                "precache_keys_repaired_total",
                "Data keys written because Redis did not hold them as the last commit left them (deleted, emptied, edited, of another type)."
            ))?),
            bookkeeping_discarded_total: reg!(IntCounterVec::new(
                opts(
                    "precache_bookkeeping_discarded_total",
                    "Bookkeeping keys found of the wrong type, deleted and rebuilt, by key."
                ),
                &["key"]
            )?),
            retained: Mutex::new(VecDeque::new()),
            cache_recorded: AtomicBool::new(false),
            seen: Mutex::new(HashMap::new()),
            registry,
        };
        let build = IntGaugeVec::new(
            opts(
                "precache_build_info",
                "Build information (value 1): version, git revision, build date.",
            ),
            &["version", "revision", "build_date"],
        )?;
        build
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                crate::util::GIT_REVISION,
                crate::util::BUILD_DATE,
            ])
            .set(1);
        m.registry.register(Box::new(build))?;
        #[cfg(target_os = "linux")]
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        // Every category and call type has a series from the start.
        for category in Category::ALL {
            m.changes_detected_total
                .with_label_values(&[category.as_str()]);
        }
        for status in RunStatus::ALL {
            m.runs_total.with_label_values(&[status_label(status)]);
        }
        for call in SYNC_CALLS
            .iter()
            .chain(Endpoint::ALL.map(Endpoint::call_type).iter())
        {
            m.api_calls_total.with_label_values(&[call.as_str()]);
        }
        for tier in Tier::ALL {
            m.match_calls_by_tier_total
                .with_label_values(&[tier.as_str()]);
        }
        Ok(m)
    }

    /// Turns the seed's per-run series on or off (a config reload); off
    /// removes the ones kept.
    pub fn set_seed_run_series(&self, on: bool) {
        if !self.seed_run_series.swap(on, Ordering::Relaxed) || on {
            return;
        }
        let mut retained = lock(&self.retained);
        retained.clear();
        self.changes_this_run.reset();
        self.run_changes_summary.reset();
        self.api_urls_called.reset();
    }

    /// The live heap after a run (`None`: not known on this platform).
    pub fn set_heap_in_use(&self, bytes: Option<u64>) {
        if let Some(bytes) = bytes {
            self.heap_in_use_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Records one run. `snapshot`: what the cache holds after it (for the
    /// info series); `sizes`: bytes of each data key in Redis.
    pub fn record_run(
        &self,
        report: &RunReport,
        snapshot: Option<&Snapshot>,
        sizes: &BTreeMap<String, u64>,
    ) {
        let summary = &report.summary;
        let ok = summary.status.is_ok();
        let seed_run_series = self.seed_run_series.load(Ordering::Relaxed);
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
        let run_timestamp = report.started_at.timestamp().to_string();
        for category in Category::ALL {
            let count = summary.changes.get(category).unwrap_or(0);
            let value = if ok { count as i64 } else { -1 };
            if ok {
                self.changes_detected_total
                    .with_label_values(&[category.as_str()])
                    .inc_by(count as u64);
            }
            self.last_run_changes
                .with_label_values(&[category.as_str()])
                .set(value);
            if seed_run_series {
                self.changes_this_run
                    .with_label_values(&[category.as_str(), &summary.run_id])
                    .set(value);
                self.run_changes_summary
                    .with_label_values(&[&summary.run_id, &run_timestamp, category.as_str()])
                    .set(value);
            }
        }
        for call in SYNC_CALLS {
            self.api_calls_total
                .with_label_values(&[call.as_str()])
                .inc_by(summary.api_calls.get(call) as u64);
        }
        self.not_modified_total.inc_by(summary.not_modified as u64);
        if let Some(poll) = &summary.poll {
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
        for (item, n) in summary.items.by_item() {
            let value = if ok { n as i64 } else { -1 };
            self.items_processed.with_label_values(&[item]).set(value);
        }
        if ok {
            self.last_run_timestamp
                .set(report.ended_at.timestamp_millis() as f64 / 1000.0);
        }

        // Upstream health, overall and by call type, from this run's calls.
        self.upstream_status
            .with_label_values(&["api"])
            .set(summary.upstream_status.gauge());
        // By call type: the worst its calls saw; an unanswered call (DOWN)
        // outweighs a refused one, as for the run (sync::fetch).
        let mut by_type: BTreeMap<CallType, UpstreamStatus> = BTreeMap::new();
        let mut urls: BTreeMap<[String; 3], i64> = BTreeMap::new();
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
            if !seed_run_series {
                continue;
            }
            let params: Vec<String> = call
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            *urls
                .entry([
                    call.url_path.clone(),
                    call.method.to_string(),
                    params.join("&"),
                ])
                .or_default() += 1;
        }
        // A call type the run never reached (an earlier stage failed) is
        // as good as down for this run; keeping its old value would say UP.
        // A run a shutdown cancelled learnt nothing: the values stand.
        let learnt = summary.status != RunStatus::Cancelled;
        for call_type in SYNC_CALLS.into_iter().filter(|_| learnt) {
            let unreached = if ok {
                UpstreamStatus::Up
            } else {
                UpstreamStatus::Down
            };
            let status = by_type.get(&call_type).copied().unwrap_or(unreached);
            self.upstream_status
                .with_label_values(&[call_type.as_str()])
                .set(status.gauge());
        }
        if seed_run_series {
            for (labels, n) in &urls {
                self.api_urls_called
                    .with_label_values(&[&summary.run_id, &labels[0], &labels[1], &labels[2]])
                    .set(*n);
            }
        }

        // The info series (one per season and tournament, thousands at
        // norway scale) change only when those categories do.
        let listed_changed = [Category::ValidSeasons, Category::TournamentsInSeason]
            .iter()
            .any(|c| summary.changes.get(*c) != Some(0));
        if let Some(snapshot) = snapshot.filter(|_| ok)
            && (listed_changed || !self.cache_recorded.swap(true, Ordering::Relaxed))
        {
            self.record_cache(snapshot);
        }
        for (data_type, bytes) in sizes {
            self.cached_data_size_bytes
                .with_label_values(&[data_type])
                .set(*bytes as i64);
        }

        if !seed_run_series {
            return;
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

    fn record_cache(&self, snapshot: &Snapshot) {
        let id = |id: Option<i64>| id.map(|id| id.to_string()).unwrap_or_default();
        replace_info(
            &self.valid_seasons_count,
            &self.valid_seasons_info,
            snapshot.valid_seasons.iter().map(|s| {
                let year = s.from_year.map(|y| y.to_string()).unwrap_or_default();
                [
                    s.id.to_string(),
                    s.name.clone(),
                    year,
                    id(s.sport_id),
                    s.sport_name.clone(),
                ]
            }),
        );
        replace_info(
            &self.tournaments_in_season_count,
            &self.tournaments_in_season_info,
            snapshot.tournaments.iter().map(|t| {
                let root = if t.is_root() { "true" } else { "false" };
                [
                    t.id.to_string(),
                    t.name.clone(),
                    id(t.season_id),
                    id(t.sport_id),
                    root.into(),
                ]
            }),
        );
    }

    /// Brings a counter up to a source's current total.
    fn catch_up(&self, counter: &IntCounter, key: String, total: u64) {
        let mut seen = lock(&self.seen);
        let last = seen.entry(key).or_insert(0);
        if total > *last {
            counter.inc_by(total - *last);
            *last = total;
        }
    }

    /// Reads the live sources; called before each scrape.
    pub fn refresh_live(
        &self,
        warm: Option<&WarmStats>,
        upstream: &UpstreamCounters,
        redis_errors: u64,
    ) {
        self.catch_up(&self.redis_errors_total, "redis".into(), redis_errors);
        self.catch_up(
            &self.upstream_connections_opened_total,
            "connections".into(),
            upstream.connections_opened(),
        );
        for call in CallType::ALL {
            self.catch_up(
                &self
                    .upstream_retries_total
                    .with_label_values(&[call.as_str()]),
                format!("retries/{}", call.as_str()),
                upstream.retries(call),
            );
        }
        if let Some(warm) = warm {
            self.warm_queue_depth.set(warm.due() as i64);
            self.warm_scheduled.set(warm.scheduled() as i64);
            self.warm_oldest_due_age_seconds
                .set(warm.oldest_due_age().as_secs_f64());
            for e in Endpoint::ALL {
                let label = e.call_type().as_str();
                let (done, failed) = (warm.done(e), warm.failed(e));
                self.catch_up(
                    &self.warm_done_total.with_label_values(&[label]),
                    format!("warm_done/{label}"),
                    done,
                );
                self.catch_up(
                    &self.warm_failed_total.with_label_values(&[label]),
                    format!("warm_failed/{label}"),
                    failed,
                );
                self.catch_up(
                    &self.api_calls_total.with_label_values(&[label]),
                    format!("calls/{label}"),
                    done + failed,
                );
            }
        }
    }

    /// Which master the store reaches, how often it changed, and whether
    /// the last connection attempt reached it; called before each scrape.
    pub fn set_redis(&self, master: Option<&str>, changes: u64, reachable: Option<bool>) {
        self.redis_master.reset();
        if let Some(address) = master {
            self.redis_master.with_label_values(&[address]).set(1);
        }
        self.catch_up(
            &self.redis_master_changes_total,
            "redis_master_changes".into(),
            changes,
        );
        if let Some(reachable) = reachable {
            self.redis_reachable.set(i64::from(reachable));
        }
    }

    /// The lease as the keeper knows it; called before each scrape.
    pub fn set_lease(&self, lease: &crate::store::lease::LeaseState) {
        self.leader.set(lease.token.is_some() as i64);
        self.catch_up(
            &self.lease_transitions_total,
            "lease_transitions".into(),
            lease.transitions,
        );
    }

    /// The text exposition format (0.0.4).
    pub fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

/// The label of a run status in `precache_runs_total` (`error` for a
/// failed run: the seed's name).
fn status_label(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Failed => "error",
        other => other.as_str(),
    }
}

/// Replaces an info family (one series of value 1 per item) and its count.
fn replace_info(count: &IntGauge, info: &IntGaugeVec, rows: impl Iterator<Item = [String; 5]>) {
    info.reset();
    let mut n = 0;
    for labels in rows {
        info.with_label_values(&labels.each_ref().map(String::as_str))
            .set(1);
        n += 1;
    }
    count.set(n);
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
