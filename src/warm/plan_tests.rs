//! Unit tests of `plan`.

use super::*;
use crate::model::Match;

/// Changes with these match and team ids.
fn changes(added: &[i64], modified: &[i64], removed: &[i64], teams_added: &[i64]) -> Changes {
    let mut c = Changes::default();
    c.individual_matches.added = added.to_vec();
    c.individual_matches.modified = modified.to_vec();
    c.individual_matches.removed = removed.to_vec();
    c.unique_team_ids.added = teams_added.to_vec();
    c
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// Matches `(id, root, date, home, away)` under their roots.
fn snapshot(matches: &[(i64, i64, Option<&str>, i64, i64)]) -> Snapshot {
    let lists: Vec<(i64, Vec<Match>)> = matches
        .iter()
        .map(|&(id, root, date, home, away)| {
            let record = json!({"matchId": id, "tournamentId": root, "matchDate": date,
                                "hometeamId": home, "awayteamId": away});
            (root, vec![Match::from_json(&record).unwrap()])
        })
        .collect();
    crate::model::fixtures::snapshot(vec![], vec![], &lists)
}

#[test]
fn keys_are_the_proxys_and_parse_back() {
    let cases = [
        (Endpoint::Match, "api/v1/ta/match/?matchId=7"),
        (Endpoint::Incidents, "api/v1/ta/matchincidents/?matchId=7"),
        (Endpoint::Referee, "api/v1/ta/matchreferee?matchId=7"),
        (
            Endpoint::TeamMembers,
            "api/v1/ta/matchteammembers/7/?images=false",
        ),
        (Endpoint::Team, "api/v1/ta/team?teamId=7"),
    ];
    for (endpoint, key) in cases {
        let target = WarmTarget::new(endpoint, 7);
        assert_eq!(target.key(), key);
        assert_eq!(WarmTarget::parse(key), Some(target));
        assert_eq!(WarmTarget::parse_legacy(key), None, "{key} is current");
    }
    // The upstream is still called with the path as DESIGN.md section 2 spells it.
    assert_eq!(
        WarmTarget::new(Endpoint::Team, 7).request().path,
        "api/v1/ta/Team"
    );
    assert_eq!(
        WarmTarget::new(Endpoint::TeamMembers, 7).request().path,
        "api/v1/ta/MatchTeamMembers/7/"
    );
    // The old spellings parse only as legacy keys.
    for (legacy, endpoint) in [
        ("api/v1/ta/Team?teamId=7", Endpoint::Team),
        (
            "api/v1/ta/MatchTeamMembers/7/?images=false",
            Endpoint::TeamMembers,
        ),
    ] {
        assert_eq!(WarmTarget::parse(legacy), None);
        assert_eq!(
            WarmTarget::parse_legacy(legacy),
            Some(WarmTarget::new(endpoint, 7))
        );
    }
    for bad in [
        "",
        "api/v1/ta/match/?matchId=x",
        "api/v1/ta/match/?matchId=7&extra=1",
        "api/v1/ta/matchteammembers/7/",
        "api/v1/ta/TEAM?teamId=7",
        "api/v1/ta/tournamentmatches?tournamentId=7",
    ] {
        assert_eq!(WarmTarget::parse(bad), None, "{bad}");
        assert_eq!(WarmTarget::parse_legacy(bad), None, "{bad}");
    }
    assert_eq!(
        WarmTarget::new(Endpoint::TeamMembers, 7).params(),
        json!({"images": "false"})
    );
    assert_eq!(
        WarmTarget::new(Endpoint::Team, 9).params(),
        json!({"teamId": "9"})
    );
}

#[test]
fn proxy_keys_follow_the_rule() {
    let request = ApiRequest {
        call_type: CallType::Team,
        path: "/api//v1/TA///Team".into(),
        query: vec![("teamId", "X1".into()), ("b", "C".into())],
        validators: None,
    };
    assert_eq!(proxy_key(&request), "api/v1/ta/team?teamId=X1&b=C");
}

#[test]
fn window_is_inclusive_and_undated_matches_are_warmed() {
    let reference = day("2025-06-15");
    let date = |s: &str| Some(day(s).and_hms_opt(18, 30, 0).unwrap());
    assert!(in_window(date("2025-06-01"), reference, 14));
    assert!(in_window(date("2025-06-29"), reference, 14));
    assert!(!in_window(date("2025-05-31"), reference, 14));
    assert!(!in_window(date("2025-06-30"), reference, 14));
    assert!(in_window(None, reference, 14));
    assert!(in_window(date("2025-06-15"), reference, 0));
}

#[test]
fn plan_warms_changed_in_window_matches_and_new_teams() {
    // Before: 1 (2025-06-10), 2 (2025-01-01), 3 and 4 (2025-06-16).
    let new = snapshot(&[
        (1, 100, Some("2025-06-10T19:00:00"), 11, 12), // modified, in window
        (2, 100, Some("2025-01-02"), 11, 12),          // modified, out of window
        (3, 100, Some("2025-06-16"), 11, 12),          // unchanged
        // 4 removed: never warmed
        (5, 100, None, 11, 13),               // added, undated, new team 13
        (6, 100, Some("2025-07-20"), 11, 12), // added, out of window
    ]);
    // What the diff reports (sync::diff's tests hold it to that).
    let changes = changes(&[5, 6], &[1, 2], &[4], &[13]);
    let targets = plan(&changes, &new, day("2025-06-15"), 14);
    let mut expected: Vec<WarmTarget> = [1, 5]
        .iter()
        .flat_map(|&id| Endpoint::FOR_MATCH.map(|e| WarmTarget::new(e, id)))
        .collect();
    expected.push(WarmTarget::new(Endpoint::Team, 13));
    expected.sort();
    assert_eq!(targets, expected);
}

#[test]
fn cold_start_warms_every_in_window_match_and_every_team() {
    let new = snapshot(&[
        (1, 100, Some("2025-06-10"), 11, 12),
        (2, 200, Some("2024-06-10"), 13, 14),
        // The same match listed under two roots is warmed once.
        (1, 300, Some("2025-06-10"), 11, 12),
    ]);
    let changes = changes(&[1, 2], &[], &[], &[11, 12, 13, 14]);
    let targets = plan(&changes, &new, day("2025-06-15"), 14);
    let matches: Vec<i64> = targets
        .iter()
        .filter(|t| t.endpoint == Endpoint::Match)
        .map(|t| t.id)
        .collect();
    assert_eq!(matches, vec![1]);
    let teams: Vec<i64> = targets
        .iter()
        .filter(|t| t.endpoint == Endpoint::Team)
        .map(|t| t.id)
        .collect();
    assert_eq!(teams, vec![11, 12, 13, 14]);
    assert_eq!(targets.len(), 4 + 4);
}

#[test]
fn no_change_warms_nothing() {
    let s = snapshot(&[(1, 100, Some("2025-06-10"), 11, 12)]);
    let changes = Changes::default();
    assert!(plan(&changes, &s, day("2025-06-15"), 14).is_empty());
}

#[test]
fn entries_are_the_proxys_format_and_refuse_garbage() {
    let headers: BTreeMap<String, String> = [
        ("Content-Type", "application/json"),
        ("connection", "keep-alive"),
        ("etag", "\"x\""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let fetched = at("2025-06-15T10:00:00.250Z");
    let lifetimes = Lifetimes {
        ttl: Duration::from_secs(604_800),
        refresh_for: Duration::from_secs(604_800),
    };
    let entry = |body: &[u8]| entry_json(200, &headers, body, fetched, &lifetimes);
    let stored: Value = serde_json::from_str(&entry(br#"{"matchId": 7}"#).unwrap()).unwrap();
    assert_eq!(stored["content"], r#"{"matchId": 7}"#);
    assert_eq!(stored["status_code"], 200);
    assert_eq!(
        stored["headers"],
        json!({"content-type": "application/json", "etag": "\"x\""})
    );
    // What the newest proxy tells an entry's age by: Unix seconds (a
    // number, as its own entries have), and seconds.
    assert_eq!(stored["cached_at"], json!(1_749_981_600.25));
    assert!(stored["cached_at"].is_f64());
    assert_eq!(
        stored["soft_ttl"],
        json!(544_320),
        "refreshed at 90 % of 7 days"
    );
    assert_eq!(stored["max_stale"], json!(604_800));
    assert!(stored["soft_ttl"].as_u64() <= stored["max_stale"].as_u64());
    assert_eq!(stored.as_object().unwrap().len(), 6);
    assert_eq!(entry(b"  "), Err(BadBody::Empty));
    assert!(matches!(
        entry(b"{\"matchId\": 7"),
        Err(BadBody::NotJson(_))
    ));
    for nothing in [&b"null"[..], b"[]", b" {} ", b"[ ]"] {
        assert_eq!(entry(nothing), Err(BadBody::SaysNothing));
    }
    assert!(entry(b"[0]").is_ok());
}

#[test]
fn refresh_record_has_the_four_fields() {
    let target = WarmTarget::new(Endpoint::Match, 7);
    let record: Value = serde_json::from_str(&refresh_json(
        &target,
        at("2025-06-22T10:00:00Z"),
        Duration::from_secs(604800),
        at("2025-06-15T10:00:00Z"),
    ))
    .unwrap();
    assert_eq!(
        record,
        json!({"refresh_until": "2025-06-22T10:00:00Z", "ttl": 604800,
               "last_refresh": "2025-06-15T10:00:00Z", "params": {"matchId": "7"}})
    );
}

#[test]
fn an_entry_is_refreshed_at_its_soft_ttl() {
    let lifetimes = Lifetimes {
        ttl: Duration::from_secs(100),
        refresh_for: Duration::from_secs(3600),
    };
    let now = at("2025-06-15T10:00:00Z");
    let soft = chrono::Duration::from_std(lifetimes.soft_ttl()).unwrap();
    assert_eq!(
        after_success(now, at("2025-06-15T11:00:00Z"), lifetimes.ttl),
        Next::DueAt(now + soft),
        "the newest proxy sees it HIT until precache refreshes it"
    );
}

#[test]
fn a_stored_entry_is_refreshed_at_90_percent_of_its_ttl_until_refresh_until() {
    let now = at("2025-06-15T10:00:00Z");
    let ttl = Duration::from_secs(100);
    assert_eq!(
        after_success(now, at("2025-06-15T11:00:00Z"), ttl),
        Next::DueAt(at("2025-06-15T10:01:30Z"))
    );
    // Exactly at refresh_until still refreshes; past it, the task is done.
    assert_eq!(
        after_success(now, at("2025-06-15T10:01:30Z"), ttl),
        Next::DueAt(at("2025-06-15T10:01:30Z"))
    );
    assert_eq!(
        after_success(now, at("2025-06-15T10:01:29Z"), ttl),
        Next::Drop
    );
}

#[test]
fn failures_back_off_and_stop_at_refresh_until_or_on_a_permanent_error() {
    assert_eq!(retry_delay(1), Duration::from_secs(5));
    assert_eq!(retry_delay(2), Duration::from_secs(10));
    assert_eq!(retry_delay(4), Duration::from_secs(40));
    assert_eq!(retry_delay(30), RETRY_CAP);
    let now = at("2025-06-15T10:00:00Z");
    let until = at("2025-06-15T12:00:00Z");
    assert_eq!(
        after_failure(now, until, 1, false),
        Next::DueAt(at("2025-06-15T10:00:05Z"))
    );
    assert_eq!(after_failure(now, until, 3, true), Next::Drop);
    assert_eq!(after_failure(until, until, 1, false), Next::Drop);
    // Never scheduled past refresh_until.
    assert_eq!(
        after_failure(now, at("2025-06-15T10:00:02Z"), 1, false),
        Next::DueAt(at("2025-06-15T10:00:02Z"))
    );
    for status in [400, 404, 405, 410, 422] {
        assert!(is_permanent(status), "{status}");
    }
    for status in [401, 403, 408, 429, 500, 502, 503] {
        assert!(!is_permanent(status), "{status}");
    }
}
