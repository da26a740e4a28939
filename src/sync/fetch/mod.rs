//! The fetch stage (the seed's `pre_cache_getter`): seasons → valid seasons →
//! tournaments → root tournaments → matches, fanned out on a rayon pool.
//!
//! It only reads the upstream and reports what it got; it never decides what
//! to write. A call that still fails after its retries is listed in
//! [`Fetched::failed_calls`] and never turned into an empty list, so the
//! caller can tell "this tournament has no matches" from "we could not ask".
//! Run status follows DESIGN.md section 3: any failed seasons or tournaments
//! call, or more than `max_failed_fraction` of the match calls failing, fails
//! the run; fewer failed match calls degrade it. Why is typed to the edge:
//! each failed call carries its [`CallError`], a failed fetch its
//! [`FetchFailure`] (a call, too many match calls, the cache unreadable, or a
//! shutdown, which says nothing of the upstream).
//!
//! `call` is one list call and a stage of them on the pool; `stages` the
//! four stages in the order a run asks.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::model::Snapshot;
use crate::model::bodies::MatchBodies;
use crate::model::calls::CallRecord;
use crate::model::dataset::DatasetId;
use crate::model::request::Validators;
use crate::report::{ApiCallCounts, RunStatus, UpstreamStatus};
use crate::sync::poll::{self, HeldList, PollPlan, PollSettings, PollState};
use crate::upstream::{CallLog, Upstream};

mod call;
mod stages;

use call::Asker;
pub use call::{CallError, FailedCall};

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

/// Why the fetch failed the run (DESIGN.md section 3).
#[derive(Debug, Clone, PartialEq)]
pub enum FetchFailure {
    /// A seasons or tournaments call failed: without every one of them the
    /// run cannot know which tournaments exist.
    Listing {
        what: &'static str,
        first: FailedCall,
    },
    /// More match calls failed than `sync.max_failed_fraction` allows.
    TooManyMatchCalls {
        failed: usize,
        asked: usize,
        max_fraction: f64,
        first: FailedCall,
    },
    /// The cache could not be read, and the match calls need what it holds.
    CacheUnreadable,
    /// A shutdown stopped calls: nothing is known of the upstream.
    Cancelled,
}

impl FetchFailure {
    /// What the failure says of the upstream, given every failed call.
    /// Refused credentials, not an outage, only when every failed call was
    /// refused: one that went unanswered says the upstream is (also) down,
    /// which is the more urgent of the two.
    fn upstream_status(&self, failed_calls: &[FailedCall]) -> UpstreamStatus {
        match self {
            FetchFailure::CacheUnreadable | FetchFailure::Cancelled => UpstreamStatus::Up,
            FetchFailure::Listing { .. } | FetchFailure::TooManyMatchCalls { .. } => {
                if failed_calls.iter().all(FailedCall::unauthorized) {
                    UpstreamStatus::Unauthorized
                } else {
                    UpstreamStatus::Down
                }
            }
        }
    }
}

impl fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchFailure::Listing { what, first } => {
                write!(f, "a {what} call failed (first: {})", first.error)
            }
            FetchFailure::TooManyMatchCalls {
                failed,
                asked,
                max_fraction,
                first,
            } => write!(
                f,
                "{failed} of {asked} match calls failed (more than sync.max_failed_fraction = {max_fraction}) (first: {})",
                first.error
            ),
            FetchFailure::CacheUnreadable => f.write_str("the cache could not be read"),
            FetchFailure::Cancelled => {
                f.write_str("cancelled by shutdown before its calls were done")
            }
        }
    }
}

impl std::error::Error for FetchFailure {}

#[derive(Debug)]
pub struct Fetched {
    pub status: RunStatus,
    /// Why the run failed, when it did.
    pub failure: Option<FetchFailure>,
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

impl Fetched {
    fn nothing_yet() -> Fetched {
        Fetched {
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
        }
    }

    fn fail(&mut self, failure: FetchFailure) {
        self.status = RunStatus::Failed;
        self.upstream_status = failure.upstream_status(&self.failed_calls);
        self.failure = Some(failure);
    }
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
    let asker = Asker {
        upstream,
        log: &log,
    };
    let mut out = Fetched::nothing_yet();
    if let Err(failure) = ask_every_stage(asker, settings, known, &mut out) {
        out.fail(failure);
    }
    out.calls = log.take();
    out
}

fn ask_every_stage<'k>(
    asker: Asker,
    settings: &FetchSettings,
    known: impl FnOnce() -> Option<Known<'k>>,
    out: &mut Fetched,
) -> Result<(), FetchFailure> {
    stages::seasons(asker, settings, out)?;
    stages::tournaments(asker, out)?;
    let known = known().ok_or(FetchFailure::CacheUnreadable)?;
    stages::matches(asker, settings, &known, out)?;
    stages::datasets(asker, settings, &known, out);
    // A shutdown that stopped calls of the last two stages: every call
    // after it failed at once, and each root and dataset key it left is
    // asked again next run (`Polled::unwritten`).
    stages::not_stopped(&out.failed_calls)
}
