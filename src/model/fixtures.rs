//! Test builders for records and snapshots, shared by every module's unit
//! tests (compiled for tests only).

use std::collections::BTreeMap;

use serde_json::json;

use super::{Match, Season, Snapshot, Tournament};

/// A valid season starting 2025-08-01.
pub fn season(id: i64) -> Season {
    Season::from_json(&json!({"seasonId": id, "seasonDateFrom": "2025-08-01T00:00:00"}))
        .expect("a season")
}

/// A tournament of `season`, a root when `parent` is `None`.
pub fn tournament(id: i64, season: i64, parent: Option<i64>) -> Tournament {
    Tournament::from_json(
        &json!({"tournamentId": id, "seasonId": season, "parentTournamentId": parent}),
    )
    .expect("a tournament")
}

/// A match of `tournament` on `date` (ISO-8601), teams 1 and 2.
pub fn game(id: i64, tournament: i64, date: &str) -> Match {
    Match::from_json(&json!({
        "matchId": id, "tournamentId": tournament, "matchDate": date,
        "hometeamId": 1, "awayteamId": 2
    }))
    .expect("a match")
}

/// A snapshot of `seasons` and `tournaments`; every root gets an entry,
/// and `lists` adds matches under a root (a root may come twice).
pub fn snapshot(
    valid_seasons: Vec<Season>,
    tournaments: Vec<Tournament>,
    lists: &[(i64, Vec<Match>)],
) -> Snapshot {
    let mut matches_by_root: BTreeMap<i64, Vec<Match>> = tournaments
        .iter()
        .filter(|t| t.is_root())
        .map(|t| (t.id, Vec::new()))
        .collect();
    for (root, list) in lists {
        matches_by_root
            .entry(*root)
            .or_default()
            .extend(list.iter().cloned());
    }
    Snapshot {
        valid_seasons,
        tournaments,
        matches_by_root,
        datasets: Default::default(),
    }
}
