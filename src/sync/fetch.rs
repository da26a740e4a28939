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
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use rayon::prelude::*;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::Config;
use crate::model::bodies::{BodyStamp, MatchBodies, body_hash, list_digest};
use crate::model::calls::{CallRecord, CallType};
use crate::model::dataset::{self, Asks, Dataset, DatasetId, DatasetState};
use crate::model::request::{ApiRequest, Validators};
use crate::model::{self, Keyed, Match, Record, Season, SkippedRecord, Snapshot, Tournament};
use crate::report::{ApiCallCounts, RunStatus, UpstreamStatus};
use crate::sync::poll::{self, HeldList, PollPlan, PollSettings, PollState};
use crate::upstream::{CallLog, Upstream, UpstreamError};

/// Root id → the validators the upstream gave with a root's body.
pub type MatchValidators = BTreeMap<i64, Validated>;

/// Validators, the hash of the body they came with, and when that body was
/// last answered plainly (not 304).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub body: u128,
    pub validators: Validators,
    pub plain_at: DateTime<Utc>,
}

impl Validated {
    /// Whether the validators may still be sent at `now`: an upstream whose
    /// ETag stays the same across an edit (a proxy that keeps its own, a
    /// bug) would otherwise keep a stale list for good, so a list is asked
    /// plainly once its last plain answer is `max_age` old (DESIGN.md
    /// section 10), whatever its tier. The plain answer is hashed, not
    /// parsed, when it did not change.
    pub fn fresh(&self, now: DateTime<Utc>, max_age: Duration) -> bool {
        let age = now.signed_duration_since(self.plain_at);
        age.to_std().map_or(true, |age| age < max_age)
    }
}

#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub sport_ids: Vec<i64>,
    pub years: RangeInclusive<i32>,
    pub first_year: i32,
    pub max_failed_fraction: f64,
    pub polling: Polling,
    /// `sync.max_validator_age_secs`: validators older than this are not
    /// sent, and their root is asked this run.
    pub max_validator_age: Duration,
    /// The time of the run, for the validators' age.
    pub now: DateTime<Utc>,
    /// Each dataset's `every_runs`, `None` when it is disabled.
    pub datasets: [Option<u64>; DatasetId::COUNT],
}

/// Which roots the run asks for their matches (DESIGN.md section 10).
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    pub settings: PollSettings,
    /// `sync.adaptive`; off, every run is a full sweep.
    pub adaptive: bool,
    /// Ask every root this run (start-up, `once --full`).
    pub full_sweep: bool,
    /// The clock match dates are in (local time), for the tiers.
    pub now: NaiveDateTime,
}

impl FetchSettings {
    /// `now`: the run's time; `local`: the same in local time, in which
    /// match dates are.
    pub fn from_config(
        config: &Config,
        now: DateTime<Utc>,
        local: NaiveDateTime,
        full_sweep: bool,
    ) -> Self {
        let sync = &config.sync;
        FetchSettings {
            sport_ids: sync.sport_ids.clone(),
            years: config.season_years(now.year()),
            first_year: sync.first_year,
            max_failed_fraction: sync.max_failed_fraction,
            polling: Polling {
                settings: PollSettings::from_config(sync),
                adaptive: sync.adaptive,
                full_sweep,
                now: local,
            },
            max_validator_age: Duration::from_secs(sync.max_validator_age_secs),
            now,
            datasets: DatasetId::ALL.map(|d| {
                let settings = config.dataset(d);
                settings.enabled.then_some(settings.every_runs)
            }),
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
    /// The upstream refused our credentials (rather than failing to answer).
    pub unauthorized: bool,
    /// The upstream answered 404.
    pub not_found: bool,
}

#[derive(Debug)]
pub struct Fetched {
    pub status: RunStatus,
    /// Why the run failed, when it did.
    pub failure: Option<String>,
    /// What the upstream's failure says about it: `Down` when calls went
    /// unanswered, `Unauthorized` when it refused our credentials.
    pub upstream_status: UpstreamStatus,
    /// What the upstream returned. `matches_by_root` has an entry for every
    /// root tournament whose matches call succeeded, and none for those in
    /// `failed_roots`. Meaningless when `status` is `Failed`.
    pub snapshot: Snapshot,
    pub failed_roots: Vec<i64>,
    /// Seasons left out of `snapshot` because their date could not be read.
    pub undated_seasons: Vec<UndatedSeason>,
    /// Valid seasons whose tournaments call answered an empty list.
    pub empty_seasons: Vec<i64>,
    /// The body each answered root's list was read from (before dedup).
    pub bodies: MatchBodies,
    /// The validators of the answered roots' bodies, where the upstream sent any.
    pub validators: MatchValidators,
    /// List calls answered 304 Not Modified.
    pub not_modified: usize,
    pub failed_calls: Vec<FailedCall>,
    pub api_calls: ApiCallCounts,
    pub calls: Vec<CallRecord>,
    /// Which roots were asked and the poll state after; `None` when the
    /// run failed before the match calls.
    pub polled: Option<Polled>,
    /// What each dataset was asked and answered, by [`DatasetId`].
    pub data: [DataAnswer; DatasetId::COUNT],
}

/// What a run asked of one dataset; what came back is the snapshot's
/// `datasets` (each answered key's records, as its body listed them). A
/// dataset the run did not ask (disabled, or no key due) keeps what the
/// cache holds.
#[derive(Debug, Clone, Default)]
pub struct DataAnswer {
    /// `datasets.<name>.enabled`: a disabled dataset is left as it is.
    pub enabled: bool,
    /// The keys asked, sorted; empty when none was.
    pub asked: Vec<i64>,
    /// Keys whose call failed.
    pub failed: Vec<i64>,
}

impl DataAnswer {
    /// Whether every key asked was answered: an unspread dataset's answer
    /// is used only then.
    pub fn complete(&self) -> bool {
        !self.asked.is_empty() && self.failed.is_empty()
    }
}

/// The match calls' plan and what came of it.
#[derive(Debug, Clone)]
pub struct Polled {
    pub plan: PollPlan,
    /// The poll state before the run (for the age of the oldest poll).
    pub before: PollState,
    /// The state after, should the run's answers reach the cache.
    pub after: PollState,
    /// The state after, should they not: every root and every dataset key
    /// the run asked is asked again.
    pub unwritten: PollState,
}

impl Polled {
    fn unwritten(&self, data: &[DataAnswer; DatasetId::COUNT]) -> PollState {
        let mut state = poll::after_run(&self.before, &self.plan, &[]);
        state.data_retry = self.before.data_retry.clone();
        for dataset in DatasetId::ALL {
            let asked = &data[dataset.index()].asked;
            if !asked.is_empty() {
                state
                    .data_retry
                    .entry(dataset)
                    .or_default()
                    .extend(asked.iter().copied());
            }
        }
        state
    }
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

/// One list call of the API: where its list is in the body (the names it
/// goes by; none: the whole body), whether an empty body means "none" (the
/// matches endpoint) or a failure, and how a record is read.
struct ListCall<T: FromBody> {
    body_keys: &'static [&'static str],
    empty_is_empty_list: bool,
    reader: T::Reader,
}

/// Records a list call reads: the seed's typed records, or a dataset's.
trait FromBody: Sized {
    /// What reading needs beyond the texts (a dataset's descriptor).
    type Reader: Copy + Sync;
    fn read(
        reader: Self::Reader,
        buffer: &Arc<String>,
        items: Vec<&RawValue>,
    ) -> (Vec<Self>, Vec<SkippedRecord>);
}

impl<T: Record> FromBody for T {
    type Reader = ();
    fn read((): (), buffer: &Arc<String>, items: Vec<&RawValue>) -> (Vec<T>, Vec<SkippedRecord>) {
        model::read_records::<T>(buffer, items)
    }
}

/// A dataset's records (not a [`Record`]: the identity is the descriptor's).
impl FromBody for Keyed {
    type Reader = &'static Dataset;
    fn read(
        spec: &'static Dataset,
        buffer: &Arc<String>,
        items: Vec<&RawValue>,
    ) -> (Vec<Keyed>, Vec<SkippedRecord>) {
        spec.read_records(buffer, items)
    }
}

const SEASONS: ListCall<Season> = ListCall {
    body_keys: &["seasons"],
    empty_is_empty_list: false,
    reader: (),
};
const TOURNAMENTS: ListCall<Tournament> = ListCall {
    body_keys: &["tournamentsInSeason"],
    empty_is_empty_list: false,
    reader: (),
};
const MATCHES: ListCall<Match> = ListCall {
    // The real API's name first, then the seed's (DESIGN.md section 2).
    body_keys: &["matches", "tournamentMatches"],
    empty_is_empty_list: true,
    reader: (),
};

/// A list call's answer: its records, and the hash of the body they came from.
struct Answered<T> {
    records: Vec<T>,
    body: u128,
    /// The records were taken from the known snapshot.
    reused: bool,
    /// The upstream answered 304: the body is the one asked about.
    not_modified: bool,
    validators: Option<Validators>,
}

impl<T: FromBody> ListCall<T> {
    /// GETs `request` and reads its list; a failed call is never an empty
    /// list. `known` gives the records of a body read before (by its hash),
    /// which are then not read again. `asked_about` is the hash of the body
    /// the request's validators came with: a 304 means that body again.
    fn call(
        &self,
        upstream: &Upstream,
        log: &CallLog,
        request: &ApiRequest,
        asked_about: Option<u128>,
        known: impl Fn(u128) -> Option<Vec<T>>,
    ) -> Result<Answered<T>, FailedCall> {
        let url = format!("/{}", request.path_and_query());
        let failed = |error: String| FailedCall {
            call_type: request.call_type,
            url: url.clone(),
            error,
            unauthorized: false,
            not_found: false,
        };
        let refused = |e: UpstreamError| FailedCall {
            unauthorized: e.is_unauthorized(),
            not_found: e.status() == Some(404),
            ..failed(e.to_string())
        };
        let mut response = upstream.get(request, log).map_err(refused)?;
        if response.not_modified() {
            let validators = request
                .validators
                .clone()
                .map(|asked| asked.updated_by(response.validators()));
            if let Some(body) = asked_about
                && let Some(records) = known(body)
            {
                return Ok(Answered {
                    records,
                    body,
                    reused: true,
                    not_modified: true,
                    validators,
                });
            }
            // A 304 for a body we do not hold (the caller pairs validators
            // with held bodies, so only a confused upstream): ask plainly.
            log::warn!(
                "GET {url} answered 304 for a list we do not hold; asking again without validators"
            );
            let plain = request.clone().if_changed(None);
            response = upstream.get(&plain, log).map_err(refused)?;
        }
        let validators = response.validators();
        let body_hash = body_hash(&response.body);
        if let Some(records) = known(body_hash) {
            return Ok(Answered {
                records,
                body: body_hash,
                reused: true,
                not_modified: false,
                validators,
            });
        }
        // The records keep slices of the body rather than copies of them.
        let mut body = String::from_utf8(response.body)
            .map_err(|e| failed(format!("GET {url}: the body is not UTF-8: {e}")))?;
        // The read grew the buffer by doubling; it is kept for a while.
        body.shrink_to_fit();
        let body = Arc::new(body);
        let items =
            model::list_from_body(body.as_bytes(), self.body_keys, self.empty_is_empty_list)
                .map_err(|e| failed(format!("GET {url}: {e}")))?;
        let (records, skipped) = T::read(self.reader, &body, items);
        for why in &skipped {
            log::warn!("skipping a {} record from {url}: {}", why.kind, why.reason);
        }
        Ok(Answered {
            records,
            body: body_hash,
            reused: false,
            not_modified: false,
            validators,
        })
    }
}

/// One stage of the fan-out: a call per key on the pool, then the answers
/// of the calls that answered (in key order) and the keys whose call
/// failed; the failures are added to `failed_calls`.
#[allow(clippy::too_many_arguments)]
fn stage<K: Send + Sync, T: FromBody + Send>(
    upstream: &Upstream,
    log: &CallLog,
    keys: Vec<K>,
    request: impl Fn(&K) -> ApiRequest + Sync,
    list: &ListCall<T>,
    conditional: impl Fn(&K) -> Option<(u128, Validators)> + Sync,
    known: impl Fn(&K, u128) -> Option<Vec<T>> + Sync,
    failed_calls: &mut Vec<FailedCall>,
) -> (Vec<(K, Answered<T>)>, Vec<K>) {
    let results: Vec<(K, Result<Answered<T>, FailedCall>)> = keys
        .into_par_iter()
        .map(|key| {
            let (asked_about, validators) = conditional(&key).unzip();
            let request = request(&key).if_changed(validators);
            let asked_about = asked_about.filter(|_| request.validators.is_some());
            let result = list.call(upstream, log, &request, asked_about, |body| {
                known(&key, body)
            });
            (key, result)
        })
        .collect();
    let (mut answered, mut failed) = (Vec::new(), Vec::new());
    for (key, result) in results {
        match result {
            Ok(answer) => answered.push((key, answer)),
            Err(call) => {
                failed_calls.push(call);
                failed.push(key);
            }
        }
    }
    (answered, failed)
}

/// Nothing read before: every body is read.
fn unknown<K, T>(_: &K, _: u128) -> Option<Vec<T>> {
    None
}

/// No validators: the call is asked plainly.
fn unconditional<K>(_: &K) -> Option<(u128, Validators)> {
    None
}

/// What the cache holds, for the fetch to take unchanged match lists from.
#[derive(Clone, Copy)]
pub struct Known<'a> {
    pub snapshot: &'a Snapshot,
    pub bodies: &'a MatchBodies,
    /// Validators of the bodies in `bodies` (others are not sent).
    pub validators: &'a MatchValidators,
    /// Adaptive polling's state; `None`: every root is asked.
    pub poll: Option<&'a PollState>,
    /// Ask every root this run: the cache was just read from Redis
    /// because it did not hold our last commit, and any list may differ.
    pub sweep: bool,
    /// Datasets whose grouping was lost: every key of them is asked.
    pub regroup: &'a [DatasetId],
}

impl<'a> Known<'a> {
    /// What the cache holds for `root`, as polling needs it.
    fn held(&self, root: i64) -> HeldList<'a> {
        match self.snapshot.matches_by_root.get(&root) {
            None => HeldList::Nothing,
            Some(list) if self.bodies.0.contains_key(&root) => HeldList::Answered(list),
            Some(list) => HeldList::Unverified(list),
        }
    }
}

impl Known<'static> {
    /// A cache that holds nothing: every body is read.
    pub fn nothing() -> Known<'static> {
        static SNAPSHOT: Snapshot = Snapshot {
            valid_seasons: Vec::new(),
            tournaments: Vec::new(),
            matches_by_root: BTreeMap::new(),
            datasets: crate::model::dataset::Datasets::EMPTY,
        };
        static BODIES: MatchBodies = MatchBodies(BTreeMap::new());
        static VALIDATORS: MatchValidators = BTreeMap::new();
        Known {
            snapshot: &SNAPSHOT,
            bodies: &BODIES,
            validators: &VALIDATORS,
            poll: None,
            sweep: false,
            regroup: &[],
        }
    }
}

/// Runs the whole fetch stage on `pool`. `known` is asked for when the
/// match calls start (the cache may still be loading until then); `None`
/// (the cache could not be read) stops the fetch there, failed.
pub fn fetch<'k>(
    upstream: &Upstream,
    pool: &rayon::ThreadPool,
    settings: &FetchSettings,
    known: impl FnOnce() -> Option<Known<'k>> + Send,
) -> Fetched {
    pool.install(|| fetch_inner(upstream, settings, known))
}

fn fetch_inner<'k>(
    upstream: &Upstream,
    settings: &FetchSettings,
    known: impl FnOnce() -> Option<Known<'k>>,
) -> Fetched {
    let log = CallLog::default();
    let mut out = Fetched {
        status: RunStatus::Success,
        failure: None,
        upstream_status: UpstreamStatus::Up,
        snapshot: Snapshot::default(),
        failed_roots: Vec::new(),
        undated_seasons: Vec::new(),
        empty_seasons: Vec::new(),
        bodies: MatchBodies::default(),
        validators: MatchValidators::new(),
        not_modified: 0,
        failed_calls: Vec::new(),
        api_calls: ApiCallCounts::default(),
        calls: Vec::new(),
        polled: None,
        data: Default::default(),
    };

    // 1. Seasons for every sport and year; the first of an id counts.
    let years_and_sports: Vec<(i32, i64)> = settings
        .years
        .clone()
        .flat_map(|year| settings.sport_ids.iter().map(move |sport| (year, *sport)))
        .collect();
    out.api_calls.seasons = years_and_sports.len();
    let request = |(year, sport): &(i32, i64)| ApiRequest::seasons(*year, *sport);
    let (answered, _) = stage(
        upstream,
        &log,
        years_and_sports,
        request,
        &SEASONS,
        unconditional,
        unknown,
        &mut out.failed_calls,
    );
    if !out.failed_calls.is_empty() {
        return fail(out, log, "a seasons call failed");
    }
    let mut seen = HashSet::new();
    for season in answered.into_iter().flat_map(|(_, a)| a.records) {
        if !seen.insert(season.id) {
            continue;
        }
        match season.from_year {
            Some(year) if year >= settings.first_year => out.snapshot.valid_seasons.push(season),
            Some(_) => {}
            None => out.undated_seasons.push(UndatedSeason {
                id: season.id,
                date_from: season.date_from_raw(),
                name: season.name,
            }),
        }
    }

    // 2. Tournaments of each valid season; the first of an id counts.
    let season_ids: Vec<i64> = out.snapshot.valid_seasons.iter().map(|s| s.id).collect();
    out.api_calls.tournament_season = season_ids.len();
    let request = |id: &i64| ApiRequest::tournament_season(*id);
    let (answered, _) = stage(
        upstream,
        &log,
        season_ids,
        request,
        &TOURNAMENTS,
        unconditional,
        unknown,
        &mut out.failed_calls,
    );
    if !out.failed_calls.is_empty() {
        return fail(out, log, "a tournaments call failed");
    }
    let mut seen = HashSet::new();
    for (
        season_id,
        Answered {
            records: tournaments,
            ..
        },
    ) in answered
    {
        if tournaments.is_empty() {
            out.empty_seasons.push(season_id);
        }
        out.snapshot
            .tournaments
            .extend(tournaments.into_iter().filter(|t| seen.insert(t.id)));
    }

    // 3. Matches of each root tournament; a match under two roots counts
    // under the lower one (Snapshot::dedup_matches).
    let Some(known) = known() else {
        return fail(out, log, "the cache could not be read");
    };
    let root_ids: Vec<i64> = out.snapshot.root_tournaments().map(|t| t.id).collect();
    let polling = &settings.polling;
    let before = known.poll.cloned().unwrap_or_default();
    // Validators that may be sent, by root: the body the cache's list came
    // from, and not older than the age limit. A root whose validators
    // expired is asked this run, whatever its tier, so an ETag that hides
    // an edit costs at most the age limit and an interval.
    let sendable = |root: i64| -> Option<&Validated> {
        let held = known.validators.get(&root)?;
        (known.bodies.0.get(&root)?.body == held.body).then_some(held)
    };
    let expired = |root: i64| {
        sendable(root).is_some_and(|v| !v.fresh(settings.now, settings.max_validator_age))
    };
    let plan = poll::plan_polls(
        &root_ids,
        |root| known.held(root),
        expired,
        &before,
        polling.now,
        &polling.settings,
        polling.full_sweep || !polling.adaptive || known.poll.is_none() || known.sweep,
    );
    // A root not asked this run keeps the list, stamp and validators it has:
    // it is not a change and not a carry-over. (The plan asks every root
    // without both; one that still lacks them is asked all the same.)
    let mut asked = Vec::new();
    let mut resting = Vec::new();
    for root in root_ids {
        let held = known.snapshot.matches_by_root.get(&root);
        match (plan.polls(root), held, known.bodies.0.get(&root)) {
            (false, Some(list), Some(stamp)) => resting.push((root, list, *stamp)),
            _ => asked.push(root),
        }
    }
    let total_roots = asked.len();
    out.api_calls.tournament_matches = total_roots;
    let request = |id: &i64| ApiRequest::tournament_matches(*id);
    let (answered, failed) = stage(
        upstream,
        &log,
        asked,
        request,
        &MATCHES,
        // Only validators of the body the cache's list came from: a 304
        // then means exactly that list.
        |root| {
            let held = sendable(*root)?;
            held.fresh(settings.now, settings.max_validator_age)
                .then(|| (held.body, held.validators.clone()))
        },
        |root, body| known.bodies.reuse(known.snapshot, *root, body),
        &mut out.failed_calls,
    );
    let asked_ok: Vec<i64> = answered.iter().map(|(root, _)| *root).collect();
    let after = poll::after_run(&before, &plan, &asked_ok);
    let mut unwritten = poll::after_run(&before, &plan, &[]);
    unwritten.data_retry = before.data_retry.clone();
    out.polled = Some(Polled {
        plan,
        before,
        after,
        unwritten,
    });
    for (root, list, stamp) in resting {
        if let Some(validated) = known.validators.get(&root) {
            out.validators.insert(root, validated.clone());
        }
        out.bodies.0.insert(root, stamp);
        out.snapshot.matches_by_root.insert(root, list.clone());
    }
    // Stamped before dedup: a stamp describes the list as its body reads.
    for (root, answer) in &answered {
        let stamp = match known.bodies.0.get(root) {
            Some(stamp) if answer.reused => *stamp,
            _ => BodyStamp {
                body: answer.body,
                list: list_digest(&answer.records),
            },
        };
        out.bodies.0.insert(*root, stamp);
        if let Some(validators) = &answer.validators {
            let plain_at = match known.validators.get(root) {
                Some(held) if answer.not_modified => held.plain_at,
                _ => settings.now,
            };
            let validated = Validated {
                body: answer.body,
                validators: validators.clone(),
                plain_at,
            };
            out.validators.insert(*root, validated);
        }
        out.not_modified += usize::from(answer.not_modified);
    }
    out.snapshot.matches_by_root.extend(
        answered
            .into_iter()
            .map(|(root, answer)| (root, answer.records)),
    );
    out.snapshot.dedup_matches();
    out.failed_roots = failed;
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

    // 4. The datasets, in descriptor order (DESIGN.md section 13).
    let mut team_ids = out.snapshot.team_ids();
    for root in &out.failed_roots {
        if let Some(list) = known.snapshot.matches_by_root.get(root) {
            team_ids.extend(list.iter().flat_map(Match::team_ids));
        }
    }
    team_ids.sort_unstable();
    team_ids.dedup();
    let before = out
        .polled
        .as_ref()
        .map(|p| p.before.clone())
        .unwrap_or_default();
    let run = out.polled.as_ref().map_or(before.run, |p| p.plan.run);
    let mut data_retry = BTreeMap::new();
    for dataset in DatasetId::ALL {
        let Some(every_runs) = settings.datasets[dataset.index()] else {
            continue;
        };
        out.data[dataset.index()].enabled = true;
        let spec = dataset.spec();
        let held = &known.snapshot.datasets[dataset];
        let keys: Vec<i64> = match spec.asks {
            Asks::Once => vec![0],
            Asks::EachSport => settings.sport_ids.clone(),
            Asks::EachTeam => team_ids.clone(),
            Asks::EachRecordOf(source) => {
                if out.data[source.index()].complete() {
                    out.snapshot.datasets[source].ids()
                } else {
                    known.snapshot.datasets[source].ids()
                }
            }
        };
        let retry = before.data_retry(dataset);
        let due = if known.regroup.contains(&dataset) {
            keys
        } else {
            dataset::due_keys(spec, every_runs, run, &keys, held, retry)
        };
        out.api_calls.datasets[dataset.index()] = due.len();
        if due.is_empty() {
            continue;
        }
        let list = ListCall::<Keyed> {
            body_keys: spec.body_keys,
            empty_is_empty_list: false,
            reader: spec,
        };
        let first_failure = out.failed_calls.len();
        let (answered, failed) = stage(
            upstream,
            &log,
            due.clone(),
            |key: &i64| ApiRequest::dataset(dataset, *key),
            &list,
            unconditional,
            unknown,
            &mut out.failed_calls,
        );
        let mut groups: BTreeMap<i64, Vec<Keyed>> =
            answered.into_iter().map(|(k, a)| (k, a.records)).collect();
        // A record that does not exist is an empty answer, not a failure
        // retried every run (`stage` adds the failed calls in key order).
        let calls = out.failed_calls.split_off(first_failure);
        let mut still_failed = Vec::new();
        for (key, call) in failed.into_iter().zip(calls) {
            if call.not_found && call.call_type.not_found_means_none() {
                groups.insert(key, Vec::new());
            } else {
                still_failed.push(key);
                out.failed_calls.push(call);
            }
        }
        let failed = still_failed;
        if !failed.is_empty() {
            out.status = RunStatus::Degraded;
            data_retry.insert(dataset, failed.iter().copied().collect());
        }
        // The snapshot says what the upstream answered (a dry run without
        // a cache reports it); what the cache holds next is the plan's.
        out.snapshot.datasets[dataset] = DatasetState { groups };
        out.data[dataset.index()] = DataAnswer {
            enabled: true,
            asked: due,
            failed,
        };
    }
    if let Some(polled) = &mut out.polled {
        polled.after.data_retry = data_retry;
        polled.unwritten = polled.unwritten(&out.data);
    }
    out.calls = log.take();
    out
}

fn fail(mut out: Fetched, log: CallLog, why: &str) -> Fetched {
    out.status = RunStatus::Failed;
    // Refused credentials, not an outage, only when every failed call was
    // refused: one that went unanswered says the upstream is (also) down,
    // which is the more urgent of the two.
    let refused = !out.failed_calls.is_empty() && out.failed_calls.iter().all(|f| f.unauthorized);
    out.upstream_status = if refused {
        UpstreamStatus::Unauthorized
    } else {
        UpstreamStatus::Down
    };
    let first = out
        .failed_calls
        .first()
        .map(|f| format!(" (first: {})", f.error))
        .unwrap_or_default();
    out.failure = Some(format!("{why}{first}"));
    out.calls = log.take();
    out
}
