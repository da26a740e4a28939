//! What one call asks and gets: the request (path and query as sent), a
//! 2xx answer, and the log of a run's calls.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::model::calls::{CallRecord, CallType};
use crate::util::lock;

/// One GET against the API: a path relative to `api_url` (no leading slash)
/// and query parameters in the order they are sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiRequest {
    pub call_type: CallType,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
}

impl ApiRequest {
    pub fn seasons(year: i32, sport_id: i64) -> Self {
        ApiRequest {
            call_type: CallType::Seasons,
            path: "api/v1/ta/Seasons/".into(),
            query: vec![
                ("year", year.to_string()),
                ("sportId", sport_id.to_string()),
            ],
        }
    }

    pub fn tournament_season(season_id: i64) -> Self {
        ApiRequest {
            call_type: CallType::TournamentSeason,
            path: format!("api/v1/ta/Tournament/Season/{season_id}/"),
            query: vec![("hierarchy", "true".into())],
        }
    }

    pub fn tournament_matches(tournament_id: i64) -> Self {
        ApiRequest {
            call_type: CallType::TournamentMatches,
            path: "api/v1/ta/TournamentMatches".into(),
            query: vec![("tournamentId", tournament_id.to_string())],
        }
    }

    /// `path?query` as the proxy's cache key spells it (no leading slash).
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}?{}", self.path, query.join("&"))
    }
}

/// Collects the records of one run (shared by the fetch threads).
#[derive(Debug, Default)]
pub struct CallLog(Mutex<Vec<CallRecord>>);

impl CallLog {
    pub fn push(&self, record: CallRecord) {
        lock(&self.0).push(record);
    }
    pub fn take(&self) -> Vec<CallRecord> {
        std::mem::take(&mut *lock(&self.0))
    }
}

/// A 2xx answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query_matches_the_proxy_key_format() {
        assert_eq!(
            ApiRequest::seasons(2025, 72).path_and_query(),
            "api/v1/ta/Seasons/?year=2025&sportId=72"
        );
        assert_eq!(
            ApiRequest::tournament_season(5).path_and_query(),
            "api/v1/ta/Tournament/Season/5/?hierarchy=true"
        );
        assert_eq!(
            ApiRequest::tournament_matches(9).path_and_query(),
            "api/v1/ta/TournamentMatches?tournamentId=9"
        );
    }
}
