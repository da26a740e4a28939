//! What a run produced, typed: its status, counts and the shrink it held,
//! the summary `precache once` prints, the seed's run stats (`log_item`)
//! kept in the history, and the report the daemon hands to metrics and the
//! status page. Serialised once, where printed or stored, with the seed's
//! names on the wire.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::model::calls::{CallRecord, CallType};
use crate::model::changes::{Category, ChangeCounts, Changes};
use crate::model::dataset::{DatasetId, then_each_dataset};
use crate::model::{ItemCounts, Snapshot};
use crate::util::rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Success,
    /// Some match calls failed; those tournaments kept their previous matches.
    Degraded,
    /// The upstream said less than before and that part was not applied
    /// (DESIGN.md section 3); everything else was.
    Held,
    Failed,
    /// Another instance took the leader lease while the run went on:
    /// nothing of it was written (DESIGN.md section 12).
    Fenced,
    /// Cut short by a shutdown: nothing written, and nothing said about
    /// the upstream.
    Cancelled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Success,
        RunStatus::Degraded,
        RunStatus::Held,
        RunStatus::Failed,
        RunStatus::Fenced,
        RunStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Degraded => "degraded",
            RunStatus::Held => "held",
            RunStatus::Failed => "failed",
            RunStatus::Fenced => "fenced",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the run left the cache complete and current.
    pub fn is_ok(self) -> bool {
        matches!(
            self,
            RunStatus::Success | RunStatus::Degraded | RunStatus::Held
        )
    }
}

/// Whether the upstream answered the run: `"UP"`, `"DOWN"` or
/// `"UNAUTHORIZED"` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UpstreamStatus {
    #[serde(rename = "UP")]
    Up,
    #[serde(rename = "DOWN")]
    Down,
    /// It answers, and refuses our credentials: a 4xx from the token
    /// endpoint, or a 401 to a token fresh from it. An operator's problem
    /// (the secret, the client's permissions), not an outage.
    #[serde(rename = "UNAUTHORIZED")]
    Unauthorized,
}

impl UpstreamStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamStatus::Up => "UP",
            UpstreamStatus::Down => "DOWN",
            UpstreamStatus::Unauthorized => "UNAUTHORIZED",
        }
    }

    /// How bad it is, for the worst of several: down (nothing answers)
    /// outweighs unauthorized (it answers and refuses us).
    pub fn severity(self) -> u8 {
        match self {
            UpstreamStatus::Up => 0,
            UpstreamStatus::Unauthorized => 1,
            UpstreamStatus::Down => 2,
        }
    }

    /// `precache_upstream_status`: 1 up, 0 down, -1 unauthorized.
    pub fn gauge(self) -> i64 {
        match self {
            UpstreamStatus::Up => 1,
            UpstreamStatus::Down => 0,
            UpstreamStatus::Unauthorized => -1,
        }
    }
}

/// Logical calls per call type (one per request, however many attempts it
/// took). Serialised as `{"seasons": n, …}`, each sync call type by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiCallCounts {
    pub seasons: usize,
    pub tournament_season: usize,
    pub tournament_matches: usize,
    /// Each dataset's calls, by [`DatasetId`].
    pub datasets: [usize; DatasetId::COUNT],
}

impl ApiCallCounts {
    /// The sync call types, in the seed's order, then the datasets'.
    pub const CALL_TYPES: [CallType; 3 + DatasetId::COUNT] = then_each_dataset!(
        [
            CallType::Seasons,
            CallType::TournamentSeason,
            CallType::TournamentMatches
        ],
        3 + DatasetId::COUNT,
        CallType::Data
    );

    pub fn total(&self) -> usize {
        ApiCallCounts::CALL_TYPES.iter().map(|c| self.get(*c)).sum()
    }

    /// Calls of one sync call type (0 for any other).
    pub fn get(&self, call_type: CallType) -> usize {
        match call_type {
            CallType::Seasons => self.seasons,
            CallType::TournamentSeason => self.tournament_season,
            CallType::TournamentMatches => self.tournament_matches,
            CallType::Data(d) => self.datasets[d.index()],
            _ => 0,
        }
    }
}

impl Serialize for ApiCallCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(ApiCallCounts::CALL_TYPES.len()))?;
        for call in ApiCallCounts::CALL_TYPES {
            map.serialize_entry(call.as_str(), &self.get(call))?;
        }
        map.end()
    }
}

/// What the answer left out and the plan kept, by kind; each list sorted.
/// Together they are the shrink's identity: the same upstream answer
/// against the same cache gives the same lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// Valid seasons missing from the answer (a seasons shrink).
    pub seasons: Vec<i64>,
    /// Seasons whose tournament list came back empty.
    pub season_lists: Vec<i64>,
    /// Tournaments missing from the answer (a tournaments shrink).
    pub tournaments: Vec<i64>,
    /// Roots whose match list came back empty or, in a matches shrink, short.
    pub roots: Vec<i64>,
    /// Per dataset (by name), the call keys whose records were kept: their
    /// answer came back empty, or short in a shrink of the dataset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub datasets: BTreeMap<String, Vec<i64>>,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.seasons.is_empty()
            && self.season_lists.is_empty()
            && self.tournaments.is_empty()
            && self.roots.is_empty()
            && self.datasets.values().all(Vec::is_empty)
    }

    /// A stable 64-bit FNV-1a hash of the four lists, in hex.
    pub fn fingerprint(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for (tag, list) in [
            (b's', &self.seasons),
            (b'l', &self.season_lists),
            (b't', &self.tournaments),
            (b'r', &self.roots),
        ] {
            feed(&[tag]);
            for id in list {
                feed(&id.to_le_bytes());
            }
        }
        // Only datasets that hold something: a shrink of the seed's lists
        // keeps the fingerprint it always had.
        for (name, list) in self.datasets.iter().filter(|(_, l)| !l.is_empty()) {
            feed(b"d");
            feed(name.as_bytes());
            for id in list {
                feed(&id.to_le_bytes());
            }
        }
        format!("{hash:016x}")
    }

    /// `3 season(s) [1, 2, 3], …` for logs and warnings.
    pub fn describe(&self) -> String {
        let seed = [
            ("season(s) missing", &self.seasons),
            ("season(s) answering no tournaments", &self.season_lists),
            ("tournament(s) missing", &self.tournaments),
            ("root(s) answering fewer or no matches", &self.roots),
        ]
        .map(|(what, list)| (what.to_string(), list));
        let datasets = self.datasets.iter().map(|(name, list)| {
            (
                format!("{name} call(s) answering fewer or no records"),
                list,
            )
        });
        seed.into_iter()
            .chain(datasets)
            .filter(|(_, list)| !list.is_empty())
            .map(|(what, list)| {
                let shown: Vec<String> = list.iter().take(10).map(i64::to_string).collect();
                let more = if list.len() > 10 { ", …" } else { "" };
                format!("{} {what} [{}{more}]", list.len(), shown.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What became of a shrink the answer showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum ShrinkVerdict {
    /// The answer said nothing less than the cache holds.
    None,
    /// Kept against the answer; seen in `seen` of `confirm_runs` runs.
    Held { seen: u32, confirm_runs: u32 },
    /// Seen in `confirm_runs` consecutive runs: applied.
    Confirmed { seen: u32 },
    /// Applied because an operator said so.
    Accepted,
}

impl ShrinkVerdict {
    pub fn is_none(&self) -> bool {
        *self == ShrinkVerdict::None
    }
}

/// How hot a root is, by the dates of its matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// A match within `live_window` of now: polled every run.
    Live,
    /// A match within `active_window`, or a match without a date: every
    /// `active_every` runs.
    Active,
    /// Everything else, including a root without matches: every
    /// `dormant_every` runs.
    Dormant,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Live, Tier::Active, Tier::Dormant];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Live => "live",
            Tier::Active => "active",
            Tier::Dormant => "dormant",
        }
    }
}

/// A count per polling tier (DESIGN.md section 10).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierCounts {
    pub live: u64,
    pub active: u64,
    pub dormant: u64,
}

impl TierCounts {
    pub fn total(&self) -> u64 {
        self.live + self.active + self.dormant
    }

    pub fn get(&self, tier: Tier) -> u64 {
        match tier {
            Tier::Live => self.live,
            Tier::Active => self.active,
            Tier::Dormant => self.dormant,
        }
    }

    pub fn get_mut(&mut self, tier: Tier) -> &mut u64 {
        match tier {
            Tier::Live => &mut self.live,
            Tier::Active => &mut self.active,
            Tier::Dormant => &mut self.dormant,
        }
    }
}

/// How a run chose the roots it asked for their matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PollReport {
    /// Every root was asked (start-up, `once --full`, adaptive polling off,
    /// `sync.full_sweep_every`, no poll state kept).
    pub full_sweep: bool,
    /// Roots per tier.
    pub tiers: TierCounts,
    /// Roots asked per tier.
    pub polled: TierCounts,
    /// Runs since the least recently asked root of each tier was asked,
    /// before this run (the daemon's; 0 where it does not know).
    pub oldest_poll_age_runs: TierCounts,
}

/// `precache once`'s view of the tasks its run enqueued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WarmCounts {
    pub enqueued: usize,
    pub done: usize,
    /// Failed and rescheduled for a retry, or dropped (a 4xx).
    pub failed: usize,
    /// Not attempted when the wait ended; still in the schedule.
    pub pending: usize,
}

/// What `precache once` prints (one JSON object).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    /// The instance that ran it (`host:pid:boot`): with two instances on one
    /// Redis, the history says which one wrote.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance: String,
    pub status: RunStatus,
    pub dry_run: bool,
    pub duration_ms: u64,
    pub items: ItemCounts,
    pub api_calls: ApiCallCounts,
    pub failed_calls: usize,
    /// List calls the upstream answered 304 Not Modified (no body, no parse).
    pub not_modified: usize,
    /// Which roots were asked, by tier; absent when the run failed before
    /// the match calls.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub poll: Option<PollReport>,
    /// Changes per category (added + removed + modified); `{}` on a failed run.
    pub changes: ChangeCounts,
    /// The first [`CHANGED_IDS_SHOWN`] changed ids per category, sorted.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub changed_ids: BTreeMap<Category, Vec<i64>>,
    /// Root tournaments whose previous matches were kept because their call failed.
    pub carried_over: Vec<i64>,
    /// Per dataset, the keys whose previous records were kept because their call failed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub carried_over_data: BTreeMap<String, Vec<i64>>,
    /// What the upstream left out and the run kept (a held run, DESIGN.md section 3).
    #[serde(skip_serializing_if = "Held::is_empty")]
    pub held: Held,
    /// What became of a shrink the answer showed; absent when it showed none.
    #[serde(skip_serializing_if = "ShrinkVerdict::is_none")]
    pub shrink: ShrinkVerdict,
    /// What an operator should know about a run that did not fail.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Data keys written to Redis, and their bytes.
    pub keys_written: usize,
    pub bytes_written: usize,
    pub upstream_status: UpstreamStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmCounts>,
    /// What the run found Redis not to hold as the last commit left it,
    /// and repaired (DESIGN.md section 3); absent when nothing.
    #[serde(skip_serializing_if = "Repairs::is_empty")]
    pub repairs: Repairs,
}

/// A run's repairs of the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Repairs {
    /// Why the run read the cache from Redis instead of trusting memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reloaded: Option<String>,
    /// Data keys written because Redis did not hold them as committed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewritten: Vec<String>,
    /// Bookkeeping keys of the wrong type, deleted and rebuilt.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub discarded: Vec<String>,
}

impl Repairs {
    pub fn is_empty(&self) -> bool {
        self.reloaded.is_none() && self.rewritten.is_empty() && self.discarded.is_empty()
    }
}

/// Changed ids listed per category in a run's summary and history; the
/// counts are always complete.
pub const CHANGED_IDS_SHOWN: usize = 100;

impl RunSummary {
    /// A run that has not got anywhere yet: failed until it says otherwise.
    pub fn new(run_id: String, dry_run: bool) -> RunSummary {
        RunSummary {
            run_id,
            instance: String::new(),
            status: RunStatus::Failed,
            dry_run,
            duration_ms: 0,
            items: ItemCounts::default(),
            api_calls: ApiCallCounts::default(),
            failed_calls: 0,
            not_modified: 0,
            poll: None,
            changes: ChangeCounts::default(),
            changed_ids: BTreeMap::new(),
            carried_over: Vec::new(),
            carried_over_data: BTreeMap::new(),
            held: Held::default(),
            shrink: ShrinkVerdict::None,
            warnings: Vec::new(),
            keys_written: 0,
            bytes_written: 0,
            upstream_status: UpstreamStatus::Up,
            error: None,
            warm: None,
            repairs: Repairs::default(),
        }
    }
}

/// The seed's `log_item` for a run: what the history, the debug files and
/// the status page keep.
#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    pub action: &'static str,
    pub run_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance: String,
    pub status: RunStatus,
    pub start_time: String,
    pub end_time: String,
    /// Seconds.
    pub process_time: f64,
    pub api_calls: ApiCallCounts,
    pub changes: ChangeCounts,
    pub total_changes: usize,
    pub upstream_status: UpstreamStatus,
    pub items: ItemCounts,
    pub failed_calls: usize,
    pub carried_over: Vec<i64>,
    pub changed_ids: BTreeMap<Category, Vec<i64>>,
    pub keys_written: usize,
    pub bytes_written: usize,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Held::is_empty")]
    pub held: Held,
    #[serde(skip_serializing_if = "ShrinkVerdict::is_none")]
    pub shrink: ShrinkVerdict,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl RunStats {
    pub fn of(summary: &RunSummary, start: DateTime<Utc>, end: DateTime<Utc>) -> RunStats {
        RunStats {
            action: "precache_run",
            run_id: summary.run_id.clone(),
            instance: summary.instance.clone(),
            status: summary.status,
            start_time: rfc3339(start, SecondsFormat::Millis),
            end_time: rfc3339(end, SecondsFormat::Millis),
            process_time: summary.duration_ms as f64 / 1000.0,
            api_calls: summary.api_calls,
            changes: summary.changes,
            total_changes: summary.changes.total(),
            upstream_status: summary.upstream_status,
            items: summary.items,
            failed_calls: summary.failed_calls,
            carried_over: summary.carried_over.clone(),
            changed_ids: summary.changed_ids.clone(),
            keys_written: summary.keys_written,
            bytes_written: summary.bytes_written,
            dry_run: summary.dry_run,
            error: summary.error.clone(),
            held: summary.held.clone(),
            shrink: summary.shrink,
            warnings: summary.warnings.clone(),
        }
    }
}

/// Everything a run produced, for the daemon, metrics and warm-up.
pub struct RunReport {
    pub summary: RunSummary,
    /// The seed's stats of the run, computed once.
    pub stats: RunStats,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// The diff; `None` when the run failed.
    pub changes: Option<Changes>,
    /// The snapshot the cache holds after this run.
    pub snapshot: Option<Arc<Snapshot>>,
    /// Every upstream call of the run (shared with the debug files).
    pub calls: Arc<Vec<CallRecord>>,
    /// Warm-up tasks this run enqueued (schedule members), written with its data.
    pub warm_enqueued: Vec<String>,
    /// The polling tier of every root, as this run saw them (empty when
    /// it failed before the match calls).
    pub root_tiers: BTreeMap<i64, Tier>,
}
