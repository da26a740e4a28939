//! The families read from live sources just before each scrape: the
//! warm-up's counters, the upstream client's retries and connections,
//! Redis (errors, the master, failovers), the leader lease and the heap.
//! Counters are brought up to their source's total ([`Totals`]).

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::Families;
use crate::model::calls::CallType;
use crate::upstream::UpstreamCounters;
use crate::util::lock;
use crate::warm::plan::Endpoint;
use crate::warm::stats::WarmStats;

/// The last total read from each live source, to turn totals into
/// counter increments.
#[derive(Default)]
struct Totals(Mutex<HashMap<String, u64>>);

impl Totals {
    /// Brings `counter` up to its source's current `total`.
    fn catch_up(&self, counter: &IntCounter, key: String, total: u64) {
        let mut seen = lock(&self.0);
        let last = seen.entry(key).or_insert(0);
        if total > *last {
            counter.inc_by(total - *last);
            *last = total;
        }
    }
}

pub(super) struct LiveFamilies {
    warm_queue_depth: IntGauge,
    warm_scheduled: IntGauge,
    warm_oldest_due_age_seconds: Gauge,
    warm_done_total: IntCounterVec,
    warm_failed_total: IntCounterVec,
    upstream_retries_total: IntCounterVec,
    upstream_connections_opened_total: IntCounter,
    redis_errors_total: IntCounter,
    redis_master: IntGaugeVec,
    redis_master_changes_total: IntCounter,
    redis_reachable: IntGauge,
    leader: IntGauge,
    lease_transitions_total: IntCounter,
    heap_in_use_bytes: IntGauge,
    totals: Totals,
}

impl LiveFamilies {
    pub fn new(f: &Families) -> Result<LiveFamilies, prometheus::Error> {
        Ok(LiveFamilies {
            warm_queue_depth: f.gauge(
                "precache_warm_queue_depth",
                "Warm-up tasks due now and not done.",
            )?,
            warm_scheduled: f.gauge(
                "precache_warm_scheduled",
                "Warm-up tasks in the schedule, due now or later (refreshes, retries).",
            )?,
            warm_oldest_due_age_seconds: f.float_gauge(
                "precache_warm_oldest_due_age_seconds",
                "How overdue the oldest due warm-up task is (0 when none is due).",
            )?,
            warm_done_total: f.counter_vec(
                "precache_warm_done_total",
                "Warm-up fetches stored, by endpoint.",
                &["endpoint"],
            )?,
            warm_failed_total: f.counter_vec(
                "precache_warm_failed_total",
                "Warm-up fetches that failed (rescheduled or dropped), by endpoint.",
                &["endpoint"],
            )?,
            upstream_retries_total: f.counter_vec(
                "precache_upstream_retries_total",
                "Upstream request retries, by call type.",
                &["call_type"],
            )?,
            upstream_connections_opened_total: f.counter(
                "precache_upstream_connections_opened_total",
                "TCP connections opened to the upstream (or its proxy), TLS included; a run reuses its connections (keep-alive), at most upstream.max_concurrency, and an idle one is closed after 15 s.",
            )?,
            redis_errors_total: f.counter(
                "precache_redis_errors_total",
                "Redis operations that failed.",
            )?,
            redis_master: f.gauge_vec(
                "precache_redis_master",
                "The Redis master Sentinel named last (value 1; absent without Sentinel).",
                &["address"],
            )?,
            redis_master_changes_total: f.counter(
                "precache_redis_master_changes_total",
                "Times Sentinel named another master than before (a failover): the next run reads the cache from the new master.",
            )?,
            redis_reachable: f.gauge(
                "precache_redis_master_reachable",
                "1 when this process's last connection attempt reached the Redis master (found through Sentinel, if used), 0 when it failed.",
            )?,
            leader: f.gauge(
                "precache_leader",
                "1 while this instance holds the leader lease (it syncs and warms), 0 as a standby.",
            )?,
            lease_transitions_total: f.counter(
                "precache_lease_transitions_total",
                "Times this instance took or lost the leader lease.",
            )?,
            heap_in_use_bytes: f.gauge(
                "precache_heap_in_use_bytes",
                "Heap the allocator has handed out and not got back, after the last run (a leak grows it; fragmentation grows only the resident size).",
            )?,
            totals: Totals::default(),
        })
    }

    /// The upstream client's and Redis' totals, and the warm-up's; its
    /// calls count in `api_calls_total` beside the runs'.
    pub fn refresh(
        &self,
        warm: Option<&WarmStats>,
        upstream: &UpstreamCounters,
        redis_errors: u64,
        api_calls_total: &IntCounterVec,
    ) {
        let totals = &self.totals;
        totals.catch_up(&self.redis_errors_total, "redis".into(), redis_errors);
        totals.catch_up(
            &self.upstream_connections_opened_total,
            "connections".into(),
            upstream.connections_opened(),
        );
        for call in CallType::ALL {
            totals.catch_up(
                &self
                    .upstream_retries_total
                    .with_label_values(&[call.as_str()]),
                format!("retries/{}", call.as_str()),
                upstream.retries(call),
            );
        }
        let Some(warm) = warm else {
            return;
        };
        self.warm_queue_depth.set(warm.due() as i64);
        self.warm_scheduled.set(warm.scheduled() as i64);
        self.warm_oldest_due_age_seconds
            .set(warm.oldest_due_age().as_secs_f64());
        for e in Endpoint::ALL {
            let label = e.call_type().as_str();
            let (done, failed) = (warm.done(e), warm.failed(e));
            totals.catch_up(
                &self.warm_done_total.with_label_values(&[label]),
                format!("warm_done/{label}"),
                done,
            );
            totals.catch_up(
                &self.warm_failed_total.with_label_values(&[label]),
                format!("warm_failed/{label}"),
                failed,
            );
            totals.catch_up(
                &api_calls_total.with_label_values(&[label]),
                format!("calls/{label}"),
                done + failed,
            );
        }
    }

    pub fn set_redis(&self, master: Option<&str>, changes: u64, reachable: Option<bool>) {
        self.redis_master.reset();
        if let Some(address) = master {
            self.redis_master.with_label_values(&[address]).set(1);
        }
        self.totals.catch_up(
            &self.redis_master_changes_total,
            "redis_master_changes".into(),
            changes,
        );
        if let Some(reachable) = reachable {
            self.redis_reachable.set(i64::from(reachable));
        }
    }

    pub fn set_lease(&self, lease: &crate::store::lease::LeaseState) {
        self.leader.set(lease.token.is_some() as i64);
        self.totals.catch_up(
            &self.lease_transitions_total,
            "lease_transitions".into(),
            lease.transitions,
        );
    }

    pub fn set_heap_in_use(&self, bytes: u64) {
        self.heap_in_use_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}
