//! What precache asks the upstream: the call types (the labels of metrics
//! and of the API-call log) and the record of one call. Data only; the
//! asking is `upstream`'s.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What a request is for; labels metrics and the API-call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallType {
    Seasons,
    TournamentSeason,
    TournamentMatches,
    Match,
    MatchIncidents,
    MatchReferee,
    MatchTeamMembers,
    Team,
    Token,
}

impl CallType {
    pub const ALL: [CallType; 9] = [
        CallType::Seasons,
        CallType::TournamentSeason,
        CallType::TournamentMatches,
        CallType::Match,
        CallType::MatchIncidents,
        CallType::MatchReferee,
        CallType::MatchTeamMembers,
        CallType::Team,
        CallType::Token,
    ];

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
            CallType::Token => "token",
        }
    }

    pub fn index(self) -> usize {
        self as usize
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
