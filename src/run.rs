//! One sync run, end to end, and the JSON summary `precache once` prints.
//!
//! This is the imperative shell around the stages: it reads the clock,
//! calls the fetch stage and hands the result on. The stages themselves
//! know nothing of each other.

use std::time::Instant;

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::fetch::{self, ApiCallCounts, FetchSettings, Fetched, RunStatus};
use crate::model::ItemCounts;
use crate::upstream::Upstream;

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
    /// Changes per category; empty for a dry run without a previous snapshot.
    pub changes: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A run id that sorts by time and is unique enough for labels and logs.
pub fn new_run_id(now: DateTime<Utc>) -> String {
    now.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// Fetches once and reports what it saw, writing nothing.
pub fn dry_run(
    config: &Config,
    upstream: &Upstream,
    pool: &rayon::ThreadPool,
) -> (RunSummary, Fetched) {
    let started = Instant::now();
    let now = Utc::now();
    let settings = FetchSettings::from_config(config, now.year());
    let fetched = fetch::fetch(upstream, pool, &settings);
    let summary = RunSummary {
        run_id: new_run_id(now),
        status: fetched.status,
        dry_run: true,
        duration_ms: started.elapsed().as_millis() as u64,
        items: fetched.snapshot.item_counts(),
        api_calls: fetched.api_calls,
        failed_calls: fetched.failed_calls.len(),
        changes: serde_json::Map::new(),
        error: fetched.failure.clone(),
    };
    (summary, fetched)
}
