//! What precache asks the upstream: the call types (the labels of metrics
//! and of the API-call log) and the record of one call. Data only; the
//! asking is `upstream`'s.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::dataset::{DatasetId, then_each_dataset};

/// What a request is for; labels metrics and the API-call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallType {
    Seasons,
    TournamentSeason,
    TournamentMatches,
    Match,
    MatchIncidents,
    MatchReferee,
    MatchTeamMembers,
    Team,
    /// A season's page (its tournaments), warmed only.
    SeasonPage,
    /// A tournament's page (`api/v1/ta/tournament/`), warmed only.
    TournamentPage,
    Token,
    /// A dataset's call (DESIGN.md section 13).
    Data(DatasetId),
}

const FIXED: [CallType; 11] = [
    CallType::Seasons,
    CallType::TournamentSeason,
    CallType::TournamentMatches,
    CallType::Match,
    CallType::MatchIncidents,
    CallType::MatchReferee,
    CallType::MatchTeamMembers,
    CallType::Team,
    CallType::SeasonPage,
    CallType::TournamentPage,
    CallType::Token,
];

impl CallType {
    pub const COUNT: usize = FIXED.len() + DatasetId::COUNT;

    pub const ALL: [CallType; CallType::COUNT] =
        then_each_dataset!(FIXED, CallType::COUNT, CallType::Data);

    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Seasons => "seasons",
            CallType::TournamentSeason => "tournament_season",
            CallType::TournamentMatches => "tournament_matches",
            CallType::Match => "match",
            CallType::MatchIncidents => "matchincidents",
            CallType::MatchReferee => "matchreferee",
            CallType::MatchTeamMembers => "matchteammembers",
            CallType::Team => "team",
            CallType::SeasonPage => "season_page",
            CallType::TournamentPage => "tournament_page",
            CallType::Token => "token",
            CallType::Data(d) => d.name(),
        }
    }

    /// Whether a 404 answers "there is no such record" rather than failing:
    /// a spread dataset's call is for one record (a team without an org,
    /// a venue without details), asked whether or not it exists.
    pub fn not_found_means_none(self) -> bool {
        matches!(self, CallType::Data(d) if d.spec().spread)
    }

    /// Its place in [`CallType::ALL`].
    pub fn index(self) -> usize {
        match self {
            CallType::Data(d) => FIXED.len() + d.index(),
            fixed => FIXED.iter().position(|c| *c == fixed).unwrap_or(0),
        }
    }
}

impl Serialize for CallType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for CallType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record of one logical call (all its attempts), for the API-call log.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub call_type: CallType,
    pub method: &'static str,
    pub url_path: String,
    pub params: BTreeMap<String, String>,
    /// Final HTTP status; `None` when no response came.
    pub status_code: Option<u16>,
    pub attempts: u32,
    pub duration_ms: u64,
    pub timestamp: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The upstream refused our credentials (the token endpoint refused
    /// them, or the API a fresh token): not an outage.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unauthorized: bool,
}
