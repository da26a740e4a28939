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
//!
//! Each family is defined in the file of its concern, through [`Families`]
//! (the one way a metric is made and registered): `runs` (a run's result,
//! its calls, polling, the seed's per-run series), `cache` (what the cache
//! holds), `live` (read before each scrape).

use std::collections::BTreeMap;

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::model::Snapshot;
use crate::model::calls::CallType;
use crate::report::{ApiCallCounts, RunReport, RunStatus};
use crate::upstream::UpstreamCounters;
use crate::warm::stats::WarmStats;

mod cache;
mod live;
mod runs;

/// Buckets for run durations from 0.1 s to 10 min.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Call types of the sync stage (the seed's `api_calls` keys).
const SYNC_CALLS: [CallType; ApiCallCounts::CALL_TYPES.len()] = ApiCallCounts::CALL_TYPES;

pub struct Metrics {
    registry: Registry,
    runs: runs::RunFamilies,
    calls: runs::CallFamilies,
    poll: runs::PollFamilies,
    seed_runs: runs::SeedRunSeries,
    cache: cache::CacheFamilies,
    live: live::LiveFamilies,
}

/// Makes each metric and registers it on the one registry.
pub(super) struct Families<'r>(&'r Registry);

impl Families<'_> {
    fn add<M: prometheus::core::Collector + Clone + 'static>(
        &self,
        metric: M,
    ) -> Result<M, prometheus::Error> {
        self.0.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    fn counter(&self, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
        self.add(IntCounter::with_opts(Opts::new(name, help))?)
    }

    fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    fn gauge(&self, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
        self.add(IntGauge::with_opts(Opts::new(name, help))?)
    }

    fn float_gauge(&self, name: &str, help: &str) -> Result<Gauge, prometheus::Error> {
        self.add(Gauge::with_opts(Opts::new(name, help))?)
    }

    fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> Result<Histogram, prometheus::Error> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts)?)
    }
}

impl Metrics {
    /// `seed_run_series`: also export the seed's series labelled by `run_id`.
    pub fn new(keep_runs: usize, seed_run_series: bool) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let f = Families(&registry);
        let build = f.gauge_vec(
            "precache_build_info",
            "Build information (value 1): version, git revision, build date.",
            &["version", "revision", "build_date"],
        )?;
        build
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                crate::util::GIT_REVISION,
                crate::util::BUILD_DATE,
            ])
            .set(1);
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            runs: runs::RunFamilies::new(&f)?,
            calls: runs::CallFamilies::new(&f)?,
            poll: runs::PollFamilies::new(&f)?,
            seed_runs: runs::SeedRunSeries::new(&f, keep_runs, seed_run_series)?,
            cache: cache::CacheFamilies::new(&f)?,
            live: live::LiveFamilies::new(&f)?,
            registry,
        })
    }

    /// Turns the seed's per-run series on or off (a config reload); off
    /// removes the ones kept.
    pub fn set_seed_run_series(&self, on: bool) {
        self.seed_runs.set(on);
    }

    /// The live heap after a run (`None`: not known on this platform).
    pub fn set_heap_in_use(&self, bytes: Option<u64>) {
        if let Some(bytes) = bytes {
            self.live.set_heap_in_use(bytes);
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
        self.runs.record(report);
        self.calls.record(report);
        if let Some(poll) = &report.summary.poll {
            self.poll.record(poll);
        }
        self.seed_runs.record(report);
        self.cache.record(report, snapshot, sizes);
    }

    /// Reads the live sources; called before each scrape.
    pub fn refresh_live(
        &self,
        warm: Option<&WarmStats>,
        upstream: &UpstreamCounters,
        redis_errors: u64,
    ) {
        self.live
            .refresh(warm, upstream, redis_errors, &self.calls.api_calls_total);
    }

    /// Which master the store reaches, how often it changed, and whether
    /// the last connection attempt reached it; called before each scrape.
    pub fn set_redis(&self, master: Option<&str>, changes: u64, reachable: Option<bool>) {
        self.live.set_redis(master, changes, reachable);
    }

    /// The lease as the keeper knows it; called before each scrape.
    pub fn set_lease(&self, lease: &crate::store::lease::LeaseState) {
        self.live.set_lease(lease);
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

#[cfg(test)]
mod tests;
