//! Tests of `records`: reading, tolerance, dates and equality.

use super::*;
use serde_json::json;

#[test]
fn canonical_json_sorts_keys() {
    let a: Value = serde_json::from_str(r#"{"b":1,"a":{"d":2,"c":3}}"#).unwrap();
    assert_eq!(canonical_json(&a), r#"{"a":{"c":3,"d":2},"b":1}"#);
}

#[test]
fn same_json_ignores_key_order_and_whitespace_only() {
    assert!(same_json(
        r#"{"a":1,"b":[1,2]}"#,
        r#"{ "b": [1, 2], "a": 1 }"#
    ));
    assert!(!same_json(r#"{"a":1}"#, r#"{"a":2}"#));
    assert!(!same_json(r#"{"a":1}"#, r#"{"a":"1"}"#));
    assert!(!same_json("not json", "not json "));
}

#[test]
fn both_date_formats_parse() {
    let iso = parse_upstream_datetime("2025-08-01T00:00:00").unwrap();
    let us = parse_upstream_datetime("08/01/2025 00:00:00").unwrap();
    assert_eq!(iso, us);
    assert!(parse_upstream_datetime("2025-08-01T10:00:00.123").is_some());
    assert!(parse_upstream_datetime("2025-08-01T10:00:00+02:00").is_some());
    assert!(parse_upstream_datetime("2025-08-01").is_some());
    assert!(parse_upstream_datetime("soon").is_none());
}

#[test]
fn the_fast_date_path_agrees_with_chrono() {
    for s in [
        "2025-08-01T00:00:00",
        "2024-02-29T23:59:59",
        "12/31/2025 18:30:00",
        "01/02/2026 07:05:09",
    ] {
        let fast = fast_datetime(s.as_bytes()).unwrap();
        let slow = ["%Y-%m-%dT%H:%M:%S", "%m/%d/%Y %H:%M:%S"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
            .unwrap();
        assert_eq!(fast, slow, "{s}");
    }
    for bad in [
        "2025-02-30T00:00:00",
        "2025-08-01T25:00:00",
        "2025-08-01X00:00:00",
        "13/01/2025 00:00:00",
        "2025-08-01T00:00:0",
        "/Date(1754006400000)/",
        "01.08.2026 00:00:00",
    ] {
        assert_eq!(fast_datetime(bad.as_bytes()), None, "{bad}");
    }
    assert_eq!(parse_upstream_datetime("01.08.2026"), None);
}

#[test]
fn tournament_roots() {
    for (parent, root) in [
        (json!(null), true),
        (json!(0), true),
        (json!(17), false),
        (json!("17"), false),
    ] {
        let t = Tournament::from_json(&json!({"tournamentId": 5, "parentTournamentId": parent}))
            .unwrap();
        assert_eq!(t.is_root(), root, "{parent}");
    }
    let absent = Tournament::from_json(&json!({"tournamentId": 5})).unwrap();
    assert!(absent.is_root());
}

#[test]
fn match_team_id_spellings() {
    let lower =
        Match::from_json(&json!({"matchId": 1, "hometeamId": 10, "awayteamId": 11})).unwrap();
    let camel =
        Match::from_json(&json!({"matchId": 1, "homeTeamId": 10, "awayTeamId": 11})).unwrap();
    assert_eq!(lower.team_ids().collect::<Vec<_>>(), vec![10, 11]);
    assert_eq!(camel.team_ids().collect::<Vec<_>>(), vec![10, 11]);
}

#[test]
fn records_keep_their_json_as_sent_and_read_ids_of_any_spelling() {
    let raw = r#"{ "matchId": "7", "tournamentId": 8.0, "extra": {"deep": [1, {"x": null}]},
                  "hometeamId": 10, "awayteamId": null, "matchDate": "05/06/2025 18:00:00" }"#;
    let m = Match::from_raw(raw).unwrap();
    assert_eq!(&*m.raw, raw, "the bytes as sent");
    assert_eq!((m.id, m.tournament_id), (7, Some(8)));
    assert_eq!(m.team_ids().collect::<Vec<_>>(), vec![10]);
    assert_eq!(
        m.date,
        NaiveDate::from_ymd_opt(2025, 5, 6)
            .unwrap()
            .and_hms_opt(18, 0, 0)
    );
    let s = Season::from_raw(
        r#"{"seasonId":1,"seasonName":"A","seasonDateFrom":"2025-08-01T00:00:00","sportId":72}"#,
    )
    .unwrap();
    assert_eq!((s.id, s.from_year, s.sport_id), (1, Some(2025), Some(72)));
    assert_eq!(s.name, "A");
}

#[test]
fn records_without_ids_are_skipped_with_a_reason() {
    let body = Arc::new(r#"[{"matchId": 1}, {"matchId": "x"}, 3, [1]]"#.to_string());
    let raws: Vec<&RawValue> = serde_json::from_str(&body).unwrap();
    let (good, skipped) = read_records::<Match>(&body, raws);
    assert_eq!(good.len(), 1);
    assert_eq!(&*good[0].raw, r#"{"matchId": 1}"#);
    assert!(
        good[0].raw.shares_buffer(&body),
        "a record is a slice of its body, not a copy"
    );
    assert_eq!(skipped.len(), 3);
    assert!(skipped[0].reason.contains("matchId"));
    assert!(
        skipped[1]
            .reason
            .contains("expected an object, got a number")
    );
    assert!(skipped[2].reason.contains("got a list"));
}

#[test]
fn season_year_from_either_format() {
    for date in ["2025-08-01T00:00:00", "08/01/2025 00:00:00"] {
        let s = Season::from_json(&json!({"seasonId": 1, "seasonDateFrom": date})).unwrap();
        assert_eq!(s.from_year, Some(2025), "{date}");
    }
    let none = Season::from_json(&json!({"seasonId": 1, "seasonDateFrom": "?"})).unwrap();
    assert_eq!(none.from_year, None);
}
