//! The fetch stage (the seed's `pre_cache_getter`): seasons → valid seasons →
//! tournaments → root tournaments → matches, fanned out on a rayon pool.
//!
//! It only reads the upstream and reports what it got; it never decides what
//! to write. A call that still fails after its retries is listed in
//! [`Fetched::failed_calls`] and never turned into an empty list, so the
//! caller can tell "this tournament has no matches" from "we could not ask".
//! Run status follows DESIGN.md section 3: any failed seasons or tournaments
//! call, or more than `max_failed_fraction` of the match calls failing, fails
//! the run; fewer failed match calls degrade it.

use std::collections::{BTreeMap, HashSet};
use std::ops::RangeInclusive;

use rayon::prelude::*;
use serde::Serialize;

use crate::config::Config;
use crate::model::calls::{CallRecord, CallType};
use crate::model::{self, Match, Season, Snapshot, Tournament};
use crate::report::{ApiCallCounts, RunStatus};
use crate::upstream::{ApiRequest, CallLog, Upstream};

#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub sport_ids: Vec<i64>,
    pub years: RangeInclusive<i32>,
    pub first_year: i32,
    pub max_failed_fraction: f64,
}

impl FetchSettings {
    pub fn from_config(config: &Config, this_year: i32) -> Self {
        FetchSettings {
            sport_ids: config.sync.sport_ids.clone(),
            years: config.season_years(this_year),
            first_year: config.sync.first_year,
            max_failed_fraction: config.sync.max_failed_fraction,
        }
    }
}

/// A season whose `seasonDateFrom` is absent or in a format we cannot
/// read: its validity cannot be decided from this answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UndatedSeason {
    pub id: i64,
    pub name: String,
    /// The date as sent (`null` when absent), for the warning.
    pub date_from: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedCall {
    pub call_type: CallType,
    /// Path and query of the call.
    pub url: String,
    pub error: String,
}

#[derive(Debug)]
pub struct Fetched {
    pub status: RunStatus,
    /// Why the run failed, when it did.
    pub failure: Option<String>,
    /// What the upstream returned. `matches_by_root` has an entry for every
    /// root tournament whose matches call succeeded, and none for those in
    /// `failed_roots`. Meaningless when `status` is `Failed`.
    pub snapshot: Snapshot,
    pub failed_roots: Vec<i64>,
    /// Seasons left out of `snapshot` because their date could not be read.
    pub undated_seasons: Vec<UndatedSeason>,
    /// Valid seasons whose tournaments call answered an empty list.
    pub empty_seasons: Vec<i64>,
    pub failed_calls: Vec<FailedCall>,
    pub api_calls: ApiCallCounts,
    pub calls: Vec<CallRecord>,
}

/// A rayon pool sized for blocking I/O: one thread per request allowed in flight.
pub fn build_pool(
    max_concurrency: usize,
) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(max_concurrency.max(1))
        .thread_name(|i| format!("fetch-{i}"))
        .build()
}

/// One call and its parsed records.
struct CallResult<T> {
    records: Result<Vec<T>, FailedCall>,
}

fn call_list<T>(
    upstream: &Upstream,
    log: &CallLog,
    request: ApiRequest,
    body_key: &'static str,
    empty_is_empty_list: bool,
    parse: fn(&serde_json::Value) -> Result<T, model::SkippedRecord>,
) -> CallResult<T> {
    let url = format!("/{}", request.path_and_query());
    let failed = |error: String| FailedCall {
        call_type: request.call_type,
        url: url.clone(),
        error,
    };
    let response = match upstream.get(&request, log) {
        Ok(r) => r,
        Err(e) => {
            return CallResult {
                records: Err(failed(e.to_string())),
            };
        }
    };
    match model::list_from_body(&response.body, body_key, empty_is_empty_list) {
        Ok(items) => {
            let (records, skipped) = model::parse_records(&items, parse);
            for why in &skipped {
                log::warn!(
                    "skipping a {} record from /{}: {}",
                    why.kind,
                    request.path_and_query(),
                    why.reason
                );
            }
            CallResult {
                records: Ok(records),
            }
        }
        Err(e) => CallResult {
            records: Err(failed(format!("GET {url}: {e}"))),
        },
    }
}

/// Runs the whole fetch stage on `pool`.
pub fn fetch(upstream: &Upstream, pool: &rayon::ThreadPool, settings: &FetchSettings) -> Fetched {
    pool.install(|| fetch_inner(upstream, settings))
}

fn fetch_inner(upstream: &Upstream, settings: &FetchSettings) -> Fetched {
    let log = CallLog::default();
    let mut out = Fetched {
        status: RunStatus::Success,
        failure: None,
        snapshot: Snapshot::default(),
        failed_roots: Vec::new(),
        undated_seasons: Vec::new(),
        empty_seasons: Vec::new(),
        failed_calls: Vec::new(),
        api_calls: ApiCallCounts::default(),
        calls: Vec::new(),
    };

    // 1. Seasons for every sport and year.
    let season_requests: Vec<ApiRequest> = settings
        .years
        .clone()
        .flat_map(|year| {
            settings
                .sport_ids
                .iter()
                .map(move |sport| ApiRequest::seasons(year, *sport))
        })
        .collect();
    out.api_calls.seasons = season_requests.len();
    let season_results: Vec<CallResult<Season>> = season_requests
        .into_par_iter()
        .map(|req| call_list(upstream, &log, req, "seasons", false, Season::from_json))
        .collect();
    let mut seen = HashSet::new();
    for result in season_results {
        match result.records {
            Ok(seasons) => {
                for season in seasons {
                    if !seen.insert(season.id) {
                        continue;
                    }
                    match season.from_year {
                        Some(year) if year >= settings.first_year => {
                            out.snapshot.valid_seasons.push(season)
                        }
                        Some(_) => {}
                        None => out.undated_seasons.push(UndatedSeason {
                            id: season.id,
                            date_from: season.date_from_raw(),
                            name: season.name,
                        }),
                    }
                }
            }
            Err(f) => out.failed_calls.push(f),
        }
    }
    if !out.failed_calls.is_empty() {
        return fail(out, log, "a seasons call failed");
    }

    // 2. Tournaments of each valid season.
    let season_ids: Vec<i64> = out.snapshot.valid_seasons.iter().map(|s| s.id).collect();
    out.api_calls.tournament_season = season_ids.len();
    let tournament_results: Vec<(i64, CallResult<Tournament>)> = season_ids
        .into_par_iter()
        .map(|id| {
            let result = call_list(
                upstream,
                &log,
                ApiRequest::tournament_season(id),
                "tournamentsInSeason",
                false,
                Tournament::from_json,
            );
            (id, result)
        })
        .collect();
    let mut seen = HashSet::new();
    for (season_id, result) in tournament_results {
        match result.records {
            Ok(ts) if ts.is_empty() => out.empty_seasons.push(season_id),
            Ok(ts) => out
                .snapshot
                .tournaments
                .extend(ts.into_iter().filter(|t| seen.insert(t.id))),
            Err(f) => out.failed_calls.push(f),
        }
    }
    if !out.failed_calls.is_empty() {
        return fail(out, log, "a tournaments call failed");
    }

    // 3. Matches of each root tournament.
    let root_ids: Vec<i64> = out.snapshot.root_tournaments().map(|t| t.id).collect();
    out.api_calls.tournament_matches = root_ids.len();
    let match_results: Vec<(i64, CallResult<Match>)> = root_ids
        .into_par_iter()
        .map(|id| {
            let result = call_list(
                upstream,
                &log,
                ApiRequest::tournament_matches(id),
                "tournamentMatches",
                true,
                Match::from_json,
            );
            (id, result)
        })
        .collect();
    let total_roots = match_results.len();
    let mut by_root = BTreeMap::new();
    for (root_id, result) in match_results {
        match result.records {
            Ok(matches) => {
                by_root.insert(root_id, matches);
            }
            Err(f) => {
                out.failed_roots.push(root_id);
                out.failed_calls.push(f);
            }
        }
    }
    out.snapshot.matches_by_root = by_root;
    out.snapshot.dedup_matches();
    if !out.failed_roots.is_empty() {
        let fraction = out.failed_roots.len() as f64 / total_roots as f64;
        if fraction > settings.max_failed_fraction {
            let why = format!(
                "{} of {} match calls failed (more than sync.max_failed_fraction = {})",
                out.failed_roots.len(),
                total_roots,
                settings.max_failed_fraction
            );
            return fail(out, log, &why);
        }
        out.status = RunStatus::Degraded;
    }
    out.calls = log.take();
    out
}

fn fail(mut out: Fetched, log: CallLog, why: &str) -> Fetched {
    out.status = RunStatus::Failed;
    let first = out
        .failed_calls
        .first()
        .map(|f| format!(" (first: {})", f.error))
        .unwrap_or_default();
    out.failure = Some(format!("{why}{first}"));
    out.calls = log.take();
    out
}
