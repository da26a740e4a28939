//! What one call asks and gets, as values: the request (path and query as
//! sent, the validators of a conditional one) and a 2xx or 304 answer.
//! Pure data, below both `upstream` (which sends them) and `warm` (which
//! spells the proxy's keys from them).

use std::collections::BTreeMap;

use super::calls::CallType;
use super::dataset::DatasetId;

/// One GET against the API: a path relative to `api_url` (no leading slash)
/// and query parameters in the order they are sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiRequest {
    pub call_type: CallType,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    /// Set: the request is conditional, and a 304 answers it.
    pub validators: Option<Validators>,
}

/// What the upstream said identifies an answer (`ETag`, `Last-Modified`),
/// sent back as `If-None-Match` or, without an ETag, `If-Modified-Since`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    /// The conditional header this sends, if any: an ETag wins (RFC 9110
    /// section 13.1.3: a server ignores If-Modified-Since beside it).
    pub fn header(&self) -> Option<(&'static str, &str)> {
        match (&self.etag, &self.last_modified) {
            (Some(etag), _) => Some(("If-None-Match", etag)),
            (None, Some(date)) => Some(("If-Modified-Since", date)),
            (None, None) => None,
        }
    }

    /// `fresh` where it says something, else `self` (a 304 may repeat only some).
    pub fn updated_by(self, fresh: Option<Validators>) -> Validators {
        match fresh {
            None => self,
            Some(fresh) => Validators {
                etag: fresh.etag.or(self.etag),
                last_modified: fresh.last_modified.or(self.last_modified),
            },
        }
    }
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
            validators: None,
        }
    }

    pub fn tournament_season(season_id: i64) -> Self {
        ApiRequest {
            call_type: CallType::TournamentSeason,
            path: format!("api/v1/ta/Tournament/Season/{season_id}/"),
            query: vec![("hierarchy", "true".into())],
            validators: None,
        }
    }

    pub fn tournament_matches(tournament_id: i64) -> Self {
        ApiRequest {
            call_type: CallType::TournamentMatches,
            path: "api/v1/ta/TournamentMatches".into(),
            query: vec![("tournamentId", tournament_id.to_string())],
            validators: None,
        }
    }

    /// A dataset's call for `key` (DESIGN.md section 13).
    pub fn dataset(dataset: DatasetId, key: i64) -> Self {
        let call = dataset.spec().call;
        ApiRequest {
            call_type: CallType::Data(dataset),
            path: call.path(key),
            query: call.query(key),
            validators: None,
        }
    }

    /// This request, asked only if the answer changed since `validators`.
    pub fn if_changed(mut self, validators: Option<Validators>) -> Self {
        self.validators = validators.filter(|v| v.header().is_some());
        self
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

/// A 2xx answer, or a 304 (no body) to a conditional request.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl ApiResponse {
    pub fn not_modified(&self) -> bool {
        self.status == 304
    }

    /// The answer's validators that can tell every change, for the next
    /// conditional request: a strong `ETag`, and a `Last-Modified` at least
    /// a minute older than the answer's `Date`. A weak ETag may stay the
    /// same across an edit, and so may a one-second `Last-Modified` when
    /// the edit came in its second; either would keep a stale list for
    /// good, as no later answer would tell.
    pub fn validators(&self) -> Option<Validators> {
        let etag = self
            .headers
            .get("etag")
            .filter(|tag| tag.starts_with('"'))
            .cloned();
        let settled = |modified: &&String| {
            let date = self.headers.get("date").and_then(|d| http_date(d));
            match (http_date(modified), date) {
                (Some(modified), Some(date)) => date - modified >= LAST_MODIFIED_SETTLED,
                _ => false,
            }
        };
        let last_modified = self.headers.get("last-modified").filter(settled).cloned();
        let v = Validators {
            etag,
            last_modified,
        };
        v.header().is_some().then_some(v)
    }
}

/// How much older than its answer a `Last-Modified` must be to be trusted.
const LAST_MODIFIED_SETTLED: chrono::Duration = chrono::Duration::seconds(60);

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(text: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc2822(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(headers: &[(&str, &str)]) -> ApiResponse {
        ApiResponse {
            status: 200,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    #[test]
    fn only_validators_that_tell_every_change_are_kept() {
        let strong = answer(&[("etag", "\"abc\"")]).validators().unwrap();
        assert_eq!(strong.header(), Some(("If-None-Match", "\"abc\"")));
        assert_eq!(answer(&[("etag", "W/\"abc\"")]).validators(), None);
        let date = "Thu, 26 Nov 2026 07:00:00 GMT";
        assert_eq!(
            answer(&[("last-modified", date)]).validators(),
            None,
            "no Date"
        );
        assert_eq!(
            answer(&[
                ("last-modified", date),
                ("date", "Thu, 26 Nov 2026 07:00:59 GMT")
            ])
            .validators(),
            None,
            "modified within the last minute"
        );
        let settled = answer(&[
            ("last-modified", date),
            ("date", "Thu, 26 Nov 2026 07:01:00 GMT"),
        ])
        .validators()
        .unwrap();
        assert_eq!(settled.header(), Some(("If-Modified-Since", date)));
        // A 304 that repeats only one validator keeps the other.
        let both = Validators {
            etag: Some("\"abc\"".into()),
            last_modified: Some(date.into()),
        };
        let merged = both.clone().updated_by(Some(Validators {
            etag: None,
            last_modified: Some("x".into()),
        }));
        assert_eq!(merged.etag, both.etag);
        assert_eq!(merged.last_modified.as_deref(), Some("x"));
    }

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
