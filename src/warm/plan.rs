//! What to warm and when: the pure half of cache warming.
//!
//! The API proxy in front of the upstream serves per-match and per-team
//! endpoints from Redis entries `GET:{path}?{query}`. After a run, every
//! changed match inside the date window gets its four match endpoints
//! warmed, and every new team its Team endpoint. This module decides which
//! targets those are, spells their keys and entries exactly as the proxy
//! reads them (DESIGN.md section 5), and decides when a task is due again
//! after a success or a failure. No I/O and no clock: time is passed in, so
//! the schedule's rules are tested here without Redis or threads. The
//! imperative side (the schedule in Redis, the workers) is `warmer`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::util::rfc3339;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::model::Snapshot;
use crate::model::calls::CallType;
use crate::model::changes::Changes;
use crate::model::dataset::{DatasetId, then_each_dataset};
use crate::model::request::ApiRequest;

/// The warm-up endpoints: the five of DESIGN.md section 2, the season and
/// tournament pages, and each dataset's call (section 13). The subset of
/// [`CallType`] a [`WarmTarget`] can be, so a target is always one the
/// proxy serves. Their names and metric labels are the call types'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Match,
    Incidents,
    Referee,
    TeamMembers,
    Team,
    SeasonPage,
    TournamentPage,
    Data(DatasetId),
}

const FIXED_ENDPOINTS: [Endpoint; 7] = [
    Endpoint::Match,
    Endpoint::Incidents,
    Endpoint::Referee,
    Endpoint::TeamMembers,
    Endpoint::Team,
    Endpoint::SeasonPage,
    Endpoint::TournamentPage,
];

impl Endpoint {
    pub const ALL: [Endpoint; FIXED_ENDPOINTS.len() + DatasetId::COUNT] = then_each_dataset!(
        FIXED_ENDPOINTS,
        FIXED_ENDPOINTS.len() + DatasetId::COUNT,
        Endpoint::Data
    );
    pub const FOR_MATCH: [Endpoint; 4] = [
        Endpoint::Match,
        Endpoint::Incidents,
        Endpoint::Referee,
        Endpoint::TeamMembers,
    ];

    pub fn call_type(self) -> CallType {
        match self {
            Endpoint::Match => CallType::Match,
            Endpoint::Incidents => CallType::MatchIncidents,
            Endpoint::Referee => CallType::MatchReferee,
            Endpoint::TeamMembers => CallType::MatchTeamMembers,
            Endpoint::Team => CallType::Team,
            Endpoint::SeasonPage => CallType::SeasonPage,
            Endpoint::TournamentPage => CallType::TournamentPage,
            Endpoint::Data(d) => CallType::Data(d),
        }
    }
}

/// One endpoint of one match or team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WarmTarget {
    pub endpoint: Endpoint,
    pub id: i64,
}

impl WarmTarget {
    pub fn new(endpoint: Endpoint, id: i64) -> WarmTarget {
        WarmTarget { endpoint, id }
    }

    /// The request, with the query in the order of DESIGN.md's table.
    pub fn request(&self) -> ApiRequest {
        let id = self.id.to_string();
        let (path, query): (String, Vec<(&'static str, String)>) = match self.endpoint {
            Endpoint::Match => ("api/v1/ta/match/".into(), vec![("matchId", id)]),
            Endpoint::Incidents => ("api/v1/ta/matchincidents/".into(), vec![("matchId", id)]),
            Endpoint::Referee => ("api/v1/ta/matchreferee".into(), vec![("matchId", id)]),
            Endpoint::TeamMembers => (
                format!("api/v1/ta/MatchTeamMembers/{id}/"),
                vec![("images", "false".into())],
            ),
            Endpoint::Team => ("api/v1/ta/Team".into(), vec![("teamId", id)]),
            Endpoint::SeasonPage => {
                let season = ApiRequest::tournament_season(self.id);
                (season.path, season.query)
            }
            Endpoint::TournamentPage => {
                ("api/v1/ta/tournament/".into(), vec![("tournamentId", id)])
            }
            Endpoint::Data(d) => {
                let call = ApiRequest::dataset(d, self.id);
                (call.path, call.query)
            }
        };
        ApiRequest {
            call_type: self.endpoint.call_type(),
            path,
            query,
            validators: None,
        }
    }

    /// The schedule's member and, behind `GET:`, the API proxy's key: the
    /// request as the proxy spells it (see [`proxy_key`]).
    pub fn key(&self) -> String {
        proxy_key(&self.request())
    }

    /// How keys were spelled before the proxy's rule was followed (the path
    /// in the upstream's case); only read, to migrate old entries.
    pub fn legacy_key(&self) -> String {
        self.request().path_and_query()
    }

    /// The inverse of [`WarmTarget::key`]; `None` for anything else.
    pub fn parse(key: &str) -> Option<WarmTarget> {
        Self::parse_any(key).filter(|target| target.key() == key)
    }

    /// The inverse of [`WarmTarget::legacy_key`], for keys whose spelling
    /// differs from the current one; `None` for anything else.
    pub fn parse_legacy(key: &str) -> Option<WarmTarget> {
        Self::parse_any(key).filter(|target| target.legacy_key() == key && target.key() != key)
    }

    /// Any spelling of a warm-up target's path and query.
    fn parse_any(key: &str) -> Option<WarmTarget> {
        let (path, query) = key.split_once('?').unwrap_or((key, ""));
        let path = path.to_ascii_lowercase();
        let param = |name: &str| -> Option<i64> {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
                .parse()
                .ok()
        };
        let target = match path.as_str() {
            "api/v1/ta/match/" => WarmTarget::new(Endpoint::Match, param("matchId")?),
            "api/v1/ta/matchincidents/" => WarmTarget::new(Endpoint::Incidents, param("matchId")?),
            "api/v1/ta/matchreferee" => WarmTarget::new(Endpoint::Referee, param("matchId")?),
            "api/v1/ta/team" => WarmTarget::new(Endpoint::Team, param("teamId")?),
            "api/v1/ta/tournament/" => {
                WarmTarget::new(Endpoint::TournamentPage, param("tournamentId")?)
            }
            _ => {
                let id_between = |before: &str, after: &str| -> Option<i64> {
                    path.strip_prefix(before)?.strip_suffix(after)?.parse().ok()
                };
                if let Some(id) = id_between("api/v1/ta/matchteammembers/", "/") {
                    WarmTarget::new(Endpoint::TeamMembers, id)
                } else if let Some(id) = id_between("api/v1/ta/tournament/season/", "/") {
                    WarmTarget::new(Endpoint::SeasonPage, id)
                } else {
                    let (dataset, id) = DatasetId::ALL
                        .into_iter()
                        .find_map(|d| Some((d, d.spec().call.parse(&path, query)?)))?;
                    WarmTarget::new(Endpoint::Data(dataset), id)
                }
            }
        };
        Some(target)
    }

    /// The request's query parameters, for the refresh record.
    pub fn params(&self) -> Value {
        let request = self.request();
        let map: serde_json::Map<String, Value> = request
            .query
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        Value::Object(map)
    }
}

/// The key the API proxy computes for a request (DESIGN.md section 5), without
/// its `GET:` prefix: the path relative to `api_url` lowercased, with no
/// leading slash and `//` collapsed to `/`, then `?` and the query
/// parameters in the order sent, names and values as they are.
pub fn proxy_key(request: &ApiRequest) -> String {
    let mut path = request.path.trim_start_matches('/').to_ascii_lowercase();
    while path.contains("//") {
        path = path.replace("//", "/");
    }
    if request.query.is_empty() {
        return path;
    }
    let query: Vec<String> = request
        .query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// Whether a match dated `date` is warmed: within `window_days` of
/// `reference`, or undated (the seed warmed those too).
pub fn in_window(date: Option<NaiveDateTime>, reference: NaiveDate, window_days: i64) -> bool {
    match date {
        None => true,
        Some(d) => (d.date() - reference).num_days().abs() <= window_days,
    }
}

/// The warm-ups a run's changes call for: the four match endpoints of every
/// added or modified match in the window, the Team endpoint of every added
/// team. Sorted and without duplicates.
pub fn plan(
    changes: &Changes,
    snapshot: &Snapshot,
    reference: NaiveDate,
    window_days: i64,
) -> Vec<WarmTarget> {
    let changed: HashSet<i64> = changes
        .individual_matches
        .added
        .iter()
        .chain(&changes.individual_matches.modified)
        .copied()
        .collect();
    let mut targets: Vec<WarmTarget> = Vec::new();
    if !changed.is_empty() {
        let mut warmed: HashSet<i64> = HashSet::new();
        for m in snapshot.matches() {
            if changed.contains(&m.id)
                && in_window(m.date, reference, window_days)
                && warmed.insert(m.id)
            {
                targets.extend(Endpoint::FOR_MATCH.map(|e| WarmTarget::new(e, m.id)));
            }
        }
    }
    targets.extend(
        changes
            .unique_team_ids
            .added
            .iter()
            .map(|&id| WarmTarget::new(Endpoint::Team, id)),
    );
    targets.extend(pages(changes, snapshot));
    for dataset in DatasetId::ALL {
        targets.extend(dataset_calls(changes, snapshot, dataset));
    }
    targets.sort_unstable();
    targets.dedup();
    targets
}

/// The season and tournament pages a run's changes call for (DESIGN.md
/// section 13): the page of every added or modified tournament, and of
/// every season that was, or whose tournaments were.
fn pages(changes: &Changes, snapshot: &Snapshot) -> Vec<WarmTarget> {
    let changed: HashSet<i64> = changes.tournaments_in_season.present_ids().collect();
    let mut seasons: HashSet<i64> = changes.valid_seasons.present_ids().collect();
    let mut targets = Vec::new();
    for t in snapshot
        .tournaments
        .iter()
        .filter(|t| changed.contains(&t.id))
    {
        targets.push(WarmTarget::new(Endpoint::TournamentPage, t.id));
        seasons.extend(t.season_id);
    }
    let valid: HashSet<i64> = snapshot.valid_seasons.iter().map(|s| s.id).collect();
    targets.extend(
        seasons
            .into_iter()
            .filter(|s| valid.contains(s))
            .map(|s| WarmTarget::new(Endpoint::SeasonPage, s)),
    );
    targets
}

/// A dataset's calls whose answer changed: those whose records hold an
/// added or modified one.
fn dataset_calls(changes: &Changes, snapshot: &Snapshot, dataset: DatasetId) -> Vec<WarmTarget> {
    let changed: HashSet<i64> = changes.of_dataset(dataset).present_ids().collect();
    if changed.is_empty() {
        return Vec::new();
    }
    snapshot.datasets[dataset]
        .groups
        .iter()
        .filter(|(_, records)| records.iter().any(|r| changed.contains(&r.id)))
        .map(|(key, _)| WarmTarget::new(Endpoint::Data(dataset), *key))
        .collect()
}

/// How long entries live and keep being refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Expiry of a warmed entry (`warm.ttl_secs`).
    pub ttl: Duration,
    /// How long after being enqueued a task keeps being refreshed
    /// (`warm.refresh_until_days`).
    pub refresh_for: Duration,
}

impl Lifetimes {
    pub fn from_config(config: &crate::config::WarmConfig) -> Lifetimes {
        Lifetimes {
            ttl: Duration::from_secs(config.ttl_secs),
            refresh_for: Duration::from_secs(config.refresh_until_days * 24 * 3600),
        }
    }

    /// The age at which precache refreshes an entry it stored (while the
    /// task lasts): 90 % of its TTL. The entry's `soft_ttl`, so the newest
    /// proxy does not refetch what precache is about to refresh itself.
    pub fn soft_ttl(&self) -> Duration {
        refresh_age(self.ttl)
    }

    /// The entry's `max_stale`: its whole life (it expires then).
    pub fn max_stale(&self) -> Duration {
        self.ttl
    }

    /// Until when a task enqueued at `enqueued` is refreshed. (Config
    /// bounds both durations to years, far from overflowing.)
    pub fn refresh_until(&self, enqueued: DateTime<Utc>) -> DateTime<Utc> {
        let refresh_for =
            chrono::Duration::from_std(self.refresh_for).unwrap_or(chrono::Duration::zero());
        enqueued.checked_add_signed(refresh_for).unwrap_or(enqueued)
    }
}

/// Response headers worth keeping for the proxy; hop-by-hop and
/// per-connection headers are not.
const KEPT_HEADERS: [&str; 4] = ["content-type", "etag", "last-modified", "cache-control"];

/// Why a 2xx answer is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadBody {
    Empty,
    NotJson(String),
    /// `null`, `[]` or `{}`: JSON that says nothing, which must not replace
    /// an entry that said something (DESIGN.md section 3: "less" is not
    /// trusted).
    SaysNothing,
}

impl std::fmt::Display for BadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadBody::Empty => f.write_str("empty body"),
            BadBody::NotJson(e) => write!(f, "malformed JSON: {e}"),
            BadBody::SaysNothing => f.write_str("a body that says nothing (null, [] or {})"),
        }
    }
}

/// How old an entry is when precache refreshes it: 90 % of its TTL.
fn refresh_age(ttl: Duration) -> Duration {
    ttl * 9 / 10
}

/// The proxy's entry (DESIGN.md section 5): `content`, `status_code` and
/// `headers`, which every proxy generation reads, and `cached_at` (Unix
/// seconds, when the body was fetched), `soft_ttl` and `max_stale`
/// (seconds), from which the newest one tells an entry's age (`X-Data-Age`,
/// `X-Cache: HIT|STALE|VERY-STALE`) and refreshes it itself. A body that is
/// not JSON is refused: storing it would replace a good entry with garbage.
pub fn entry_json(
    status: u16,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    cached_at: DateTime<Utc>,
    lifetimes: &Lifetimes,
) -> Result<String, BadBody> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BadBody::Empty);
    }
    let parsed: Value =
        serde_json::from_slice(body).map_err(|e| BadBody::NotJson(e.to_string()))?;
    let says_nothing = match &parsed {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        _ => false,
    };
    if says_nothing {
        return Err(BadBody::SaysNothing);
    }
    let kept: serde_json::Map<String, Value> = headers
        .iter()
        .filter(|(k, _)| KEPT_HEADERS.contains(&k.to_ascii_lowercase().as_str()))
        .map(|(k, v)| (k.to_ascii_lowercase(), json!(v)))
        .collect();
    Ok(json!({
        "content": String::from_utf8_lossy(body),
        "status_code": status,
        "headers": kept,
        "cached_at": cached_at.timestamp_millis() as f64 / 1000.0,
        "soft_ttl": lifetimes.soft_ttl().as_secs(),
        "max_stale": lifetimes.max_stale().as_secs(),
    })
    .to_string())
}

/// The refresh record `{"refresh_until", "ttl", "last_refresh", "params"}`.
pub fn refresh_json(
    target: &WarmTarget,
    refresh_until: DateTime<Utc>,
    ttl: Duration,
    last_refresh: DateTime<Utc>,
) -> String {
    json!({
        "refresh_until": rfc3339(refresh_until, SecondsFormat::Secs),
        "ttl": ttl.as_secs(),
        "last_refresh": rfc3339(last_refresh, SecondsFormat::Secs),
        "params": target.params(),
    })
    .to_string()
}

/// What happens to a task after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Due again at this time.
    DueAt(DateTime<Utc>),
    /// Leaves the schedule.
    Drop,
}

/// After a stored answer: due again at its refresh age (90 % of the TTL),
/// unless that is past `refresh_until`.
pub fn after_success(now: DateTime<Utc>, refresh_until: DateTime<Utc>, ttl: Duration) -> Next {
    let next = now + chrono::Duration::milliseconds(refresh_age(ttl).as_millis() as i64);
    if next <= refresh_until {
        Next::DueAt(next)
    } else {
        Next::Drop
    }
}

/// First retry delay of a failed task; it doubles per failure up to [`RETRY_CAP`].
pub const RETRY_BASE: Duration = Duration::from_secs(5);
pub const RETRY_CAP: Duration = Duration::from_secs(15 * 60);

pub fn retry_delay(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    (RETRY_BASE * factor).min(RETRY_CAP)
}

/// After a failed attempt (`failures` counts this one). A permanent failure
/// (the thing does not exist, or the request is wrong) leaves the schedule
/// at once; anything else is retried with backoff until `refresh_until`.
pub fn after_failure(
    now: DateTime<Utc>,
    refresh_until: DateTime<Utc>,
    failures: u32,
    permanent: bool,
) -> Next {
    if permanent || now >= refresh_until {
        return Next::Drop;
    }
    let delay = chrono::Duration::milliseconds(retry_delay(failures).as_millis() as i64);
    Next::DueAt((now + delay).min(refresh_until))
}

/// Whether an HTTP status means "asking again will not help": a 4xx speaks
/// about the request itself, except 408 and 429 (try later) and 401 and
/// 403: a lost scope or a gateway refusing us is an incident that passes,
/// and dropping the schedule over it would lose every pending warm-up.
pub fn is_permanent(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 401 | 403 | 408 | 429)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
