//! What a run makes of the upstream's answer: the next snapshot. Pure: no
//! I/O and no clock, so every rule here is unit-tested without Redis or a
//! simulator.
//!
//! The fetch stage reports what the upstream said; this module decides what
//! the cache holds next (DESIGN.md section 3):
//! - a root whose match call failed keeps its previous matches (carried
//!   over; the run is degraded);
//! - a season whose `seasonDateFrom` cannot be read keeps what it had, and
//!   is named in the run's warnings;
//! - "less" is not trusted at once: a season whose tournament list, or a
//!   root whose match list, comes back empty keeps what it had; and when the
//!   valid seasons, tournaments or matches shrink by more than
//!   `sync.max_shrink_fraction`, what the answer left out is kept. Such a
//!   run is `held`, until the same shrink has been seen in
//!   `sync.confirm_runs` consecutive runs (counted in a [`ShrinkState`] the
//!   caller persists) or an operator accepts it.
//!
//! The upstream's "no data" (`{"seasons": null}`, an empty body, `[]`) is
//! indistinguishable from a hiccup on its side; the original wrote it and
//! wiped the cache. Holding it costs at most `confirm_runs` intervals of
//! delay when the shrink is real.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::{Match, Season, Snapshot, Tournament};
use crate::report::{Held, ShrinkVerdict};
use crate::sync::fetch::UndatedSeason;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShrinkSettings {
    /// `sync.max_shrink_fraction`: a level shrinking by more is held.
    pub max_fraction: f64,
    /// `sync.confirm_runs`: consecutive sightings that make a shrink real.
    pub confirm_runs: u32,
}

/// The shrink being held, persisted between runs (and restarts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShrinkState {
    /// [`Held::fingerprint`] of the shrink.
    pub fingerprint: String,
    /// Consecutive runs that saw it, this one included.
    pub seen: u32,
}

/// What the fetch stage got, as far as planning is concerned.
#[derive(Debug, Default)]
pub struct Answer<'a> {
    /// No `matches_by_root` entry for a failed root; matches deduplicated.
    pub snapshot: Snapshot,
    pub failed_roots: &'a [i64],
    pub undated_seasons: &'a [UndatedSeason],
    /// Valid seasons whose tournaments call answered an empty list.
    pub empty_seasons: &'a [i64],
}

/// The next snapshot and how it came about.
#[derive(Debug)]
pub struct Plan {
    pub next: Snapshot,
    /// Failed roots whose previous matches were kept.
    pub carried_over: Vec<i64>,
    /// Undated seasons kept as the cache had them.
    pub kept_undated: Vec<i64>,
    /// What was kept against the answer (empty unless the verdict is `Held`).
    pub held: Held,
    pub verdict: ShrinkVerdict,
    /// What to persist: the shrink still being held, or nothing.
    pub shrink_state: Option<ShrinkState>,
    pub warnings: Vec<String>,
}

/// The previous snapshot, indexed for restoring pieces of it.
struct Previous<'a> {
    snapshot: &'a Snapshot,
    seasons: HashMap<i64, &'a Season>,
    tournaments: HashMap<i64, &'a Tournament>,
    tournaments_by_season: HashMap<i64, Vec<&'a Tournament>>,
}

impl<'a> Previous<'a> {
    fn new(snapshot: &'a Snapshot) -> Previous<'a> {
        let mut tournaments_by_season: HashMap<i64, Vec<&Tournament>> = HashMap::new();
        for t in &snapshot.tournaments {
            if let Some(season) = t.season_id {
                tournaments_by_season.entry(season).or_default().push(t);
            }
        }
        Previous {
            snapshot,
            seasons: snapshot.valid_seasons.iter().map(|s| (s.id, s)).collect(),
            tournaments: snapshot.tournaments.iter().map(|t| (t.id, t)).collect(),
            tournaments_by_season,
        }
    }

    fn list(&self, root: i64) -> Option<&'a Vec<Match>> {
        self.snapshot.matches_by_root.get(&root)
    }

    fn had_matches(&self, root: i64) -> bool {
        self.list(root).is_some_and(|l| !l.is_empty())
    }

    fn season_tournaments(&self, season: i64) -> &[&'a Tournament] {
        self.tournaments_by_season
            .get(&season)
            .map_or(&[], Vec::as_slice)
    }
}

/// Puts pieces of the previous snapshot back into the next one.
struct Restorer<'p, 'a> {
    previous: &'p Previous<'a>,
    seasons: HashSet<i64>,
    tournaments: HashSet<i64>,
}

impl<'p, 'a> Restorer<'p, 'a> {
    fn new(previous: &'p Previous<'a>, next: &Snapshot) -> Self {
        Restorer {
            previous,
            seasons: next.valid_seasons.iter().map(|s| s.id).collect(),
            tournaments: next.tournaments.iter().map(|t| t.id).collect(),
        }
    }

    /// A season as the cache had it: its record, its tournaments, their matches.
    fn season(&mut self, next: &mut Snapshot, id: i64) {
        if let Some(season) = self.previous.seasons.get(&id)
            && self.seasons.insert(id)
        {
            next.valid_seasons.push((*season).clone());
        }
        for t in self.previous.season_tournaments(id) {
            self.tournament(next, t.id);
        }
    }

    /// A tournament as the cache had it, with its matches when it is a root.
    fn tournament(&mut self, next: &mut Snapshot, id: i64) {
        let Some(t) = self.previous.tournaments.get(&id) else {
            return;
        };
        if self.tournaments.insert(id) {
            next.tournaments.push((*t).clone());
        }
        if t.is_root() {
            self.list(next, id);
        }
    }

    /// A root's match list as the cache had it (its record too, if missing).
    fn list(&mut self, next: &mut Snapshot, root: i64) {
        if let Some(list) = self.previous.list(root) {
            next.matches_by_root.insert(root, list.clone());
        }
        if !self.tournaments.contains(&root)
            && let Some(t) = self.previous.tournaments.get(&root)
        {
            self.tournaments.insert(root);
            next.tournaments.push((*t).clone());
        }
    }
}

/// Whether a level shrank past the allowed fraction (to zero always counts).
fn shrunk(previous: usize, next: usize, max_fraction: f64) -> bool {
    previous > 0 && (next == 0 || (next as f64) < previous as f64 * (1.0 - max_fraction))
}

/// Plans the next snapshot from `previous` (what the cache holds) and the
/// upstream's `answer`. `state`: the shrink held so far; `accept`: an
/// operator accepts whatever shrink this answer shows.
pub fn plan(
    previous: &Snapshot,
    answer: Answer<'_>,
    settings: ShrinkSettings,
    state: Option<&ShrinkState>,
    accept: bool,
) -> Plan {
    let prev = Previous::new(previous);
    let mut next = answer.snapshot;
    let mut warnings = Vec::new();

    // Failed roots keep their matches: not a change, a degradation.
    let mut carried_over = Vec::new();
    for &root in answer.failed_roots {
        if let Some(list) = prev.list(root) {
            next.matches_by_root.insert(root, list.clone());
            carried_over.push(root);
        }
    }

    // Undated seasons: kept as they were when known, else left out.
    let mut kept_undated = Vec::new();
    {
        let mut restore = Restorer::new(&prev, &next);
        for season in answer.undated_seasons {
            if prev.seasons.contains_key(&season.id) {
                restore.season(&mut next, season.id);
                kept_undated.push(season.id);
                warnings.push(format!(
                    "season {} ({:?}) has a seasonDateFrom we cannot read ({}); kept as the cache had it",
                    season.id, season.name, season.date_from
                ));
            } else {
                warnings.push(format!(
                    "season {} ({:?}) has a seasonDateFrom we cannot read ({}); not mirrored until it can be read",
                    season.id, season.name, season.date_from
                ));
            }
        }
    }

    // What the answer left out, as if the per-list holds applied.
    let mut held = Held {
        season_lists: answer
            .empty_seasons
            .iter()
            .copied()
            .filter(|s| !prev.season_tournaments(*s).is_empty())
            .collect(),
        roots: next
            .matches_by_root
            .iter()
            .filter(|(root, list)| list.is_empty() && prev.had_matches(**root))
            .map(|(root, _)| *root)
            .collect(),
        ..Held::default()
    };
    let f = settings.max_fraction;
    let next_seasons: HashSet<i64> = next.valid_seasons.iter().map(|s| s.id).collect();
    if shrunk(prev.seasons.len(), next_seasons.len(), f) {
        held.seasons = prev
            .seasons
            .keys()
            .copied()
            .filter(|id| !next_seasons.contains(id))
            .collect();
    }
    let mut next_tournaments: HashSet<i64> = next.tournaments.iter().map(|t| t.id).collect();
    let mut restored_roots: HashSet<i64> = held.roots.iter().copied().collect();
    for season in &held.season_lists {
        for t in prev.season_tournaments(*season) {
            next_tournaments.insert(t.id);
            if t.is_root() {
                restored_roots.insert(t.id);
            }
        }
    }
    if shrunk(prev.tournaments.len(), next_tournaments.len(), f) {
        held.tournaments = prev
            .tournaments
            .keys()
            .copied()
            .filter(|id| !next_tournaments.contains(id))
            .collect();
    }
    let effective_list = |root: i64| -> Option<&Vec<Match>> {
        if restored_roots.contains(&root) {
            prev.list(root)
        } else {
            next.matches_by_root.get(&root)
        }
    };
    let mut next_matches: HashSet<i64> = HashSet::new();
    for root in next.matches_by_root.keys().chain(&restored_roots) {
        if let Some(list) = effective_list(*root) {
            next_matches.extend(list.iter().map(|m| m.id));
        }
    }
    if shrunk(previous.unique_match_count(), next_matches.len(), f) {
        for (root, list) in &previous.matches_by_root {
            if list.is_empty() || restored_roots.contains(root) {
                continue;
            }
            let now: HashSet<i64> = effective_list(*root)
                .map(|l| l.iter().map(|m| m.id).collect())
                .unwrap_or_default();
            if list.iter().any(|m| !now.contains(&m.id)) {
                held.roots.push(*root);
            }
        }
    }
    for list in [
        &mut held.seasons,
        &mut held.season_lists,
        &mut held.tournaments,
        &mut held.roots,
    ] {
        list.sort_unstable();
        list.dedup();
    }

    // Held, confirmed or accepted.
    let (verdict, shrink_state) = if held.is_empty() {
        (ShrinkVerdict::None, None)
    } else if accept {
        warnings.push(format!(
            "shrink accepted by an operator: {}",
            held.describe()
        ));
        (ShrinkVerdict::Accepted, None)
    } else {
        let fingerprint = held.fingerprint();
        let seen = state
            .filter(|s| s.fingerprint == fingerprint)
            .map_or(1, |s| s.seen.saturating_add(1));
        if seen >= settings.confirm_runs {
            warnings.push(format!(
                "shrink seen in {seen} consecutive runs, applied: {}",
                held.describe()
            ));
            (ShrinkVerdict::Confirmed { seen }, None)
        } else {
            warnings.push(format!(
                "held (seen {seen} of {} runs; accept with `precache once --accept-shrink` or POST /accept-shrink): {}",
                settings.confirm_runs,
                held.describe()
            ));
            (
                ShrinkVerdict::Held {
                    seen,
                    confirm_runs: settings.confirm_runs,
                },
                Some(ShrinkState { fingerprint, seen }),
            )
        }
    };
    if matches!(verdict, ShrinkVerdict::Held { .. }) {
        let mut restore = Restorer::new(&prev, &next);
        for &season in &held.seasons {
            restore.season(&mut next, season);
        }
        for &season in &held.season_lists {
            for t in prev.season_tournaments(season) {
                restore.tournament(&mut next, t.id);
            }
        }
        for &tournament in &held.tournaments {
            restore.tournament(&mut next, tournament);
        }
        for &root in &held.roots {
            restore.list(&mut next, root);
        }
        next.dedup_matches();
    } else {
        held = Held::default();
    }

    Plan {
        next,
        carried_over,
        kept_undated,
        held,
        verdict,
        shrink_state,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::diff;
    use serde_json::json;

    const SETTINGS: ShrinkSettings = ShrinkSettings {
        max_fraction: 0.2,
        confirm_runs: 3,
    };

    fn season(id: i64) -> Season {
        Season::from_json(&json!({"seasonId": id, "seasonDateFrom": "2025-08-01T00:00:00"}))
            .unwrap()
    }

    fn tournament(id: i64, season: i64, parent: Option<i64>) -> Tournament {
        Tournament::from_json(
            &json!({"tournamentId": id, "seasonId": season, "parentTournamentId": parent}),
        )
        .unwrap()
    }

    fn game(id: i64, tournament: i64) -> Match {
        Match::from_json(
            &json!({"matchId": id, "tournamentId": tournament, "hometeamId": 1, "awayteamId": 2}),
        )
        .unwrap()
    }

    /// 5 seasons (1..=5); season s has root 10s with child 10s+1 and root
    /// 10s+2; each root has 5 matches.
    fn base() -> Snapshot {
        let mut s = Snapshot::default();
        for id in 1..=5 {
            s.valid_seasons.push(season(id));
            let (r1, child, r2) = (id * 10, id * 10 + 1, id * 10 + 2);
            s.tournaments.push(tournament(r1, id, None));
            s.tournaments.push(tournament(child, id, Some(r1)));
            s.tournaments.push(tournament(r2, id, None));
            for root in [r1, r2] {
                let list = (0..5).map(|k| game(root * 100 + k, root)).collect();
                s.matches_by_root.insert(root, list);
            }
        }
        s
    }

    fn answer(snapshot: Snapshot) -> Answer<'static> {
        Answer {
            snapshot,
            ..Answer::default()
        }
    }

    fn plan_of(previous: &Snapshot, answer: Answer<'_>) -> Plan {
        plan(previous, answer, SETTINGS, None, false)
    }

    #[test]
    fn an_unchanged_answer_plans_the_same_snapshot() {
        let p = plan_of(&base(), answer(base()));
        assert_eq!(p.next, base());
        assert_eq!(p.verdict, ShrinkVerdict::None);
        assert!(p.held.is_empty() && p.shrink_state.is_none() && p.warnings.is_empty());
    }

    #[test]
    fn a_cold_start_holds_nothing() {
        let p = plan_of(&Snapshot::default(), answer(base()));
        assert_eq!(p.next, base());
        assert_eq!(p.verdict, ShrinkVerdict::None);
    }

    #[test]
    fn failed_roots_are_carried_over() {
        let mut fetched = base();
        fetched.matches_by_root.remove(&10);
        let failed = [10, 999];
        let p = plan_of(
            &base(),
            Answer {
                snapshot: fetched,
                failed_roots: &failed,
                ..Answer::default()
            },
        );
        assert_eq!(p.next, base());
        assert_eq!(p.carried_over, vec![10], "999 had nothing to carry");
        assert!(diff::diff(&base(), &p.next).is_empty());
    }

    #[test]
    fn an_empty_root_keeps_its_matches_until_confirmed() {
        let mut fetched = base();
        fetched.matches_by_root.insert(20, vec![]);
        let p = plan_of(&base(), answer(fetched.clone()));
        assert_eq!(p.next, base(), "nothing of the shrink is applied");
        assert_eq!(p.held.roots, vec![20]);
        assert_eq!(
            p.verdict,
            ShrinkVerdict::Held {
                seen: 1,
                confirm_runs: 3
            }
        );
        let state = p.shrink_state.clone().unwrap();
        assert_eq!(state.seen, 1);
        // The same answer again: seen twice, still held.
        let p2 = plan(
            &p.next,
            answer(fetched.clone()),
            SETTINGS,
            Some(&state),
            false,
        );
        assert_eq!(p2.shrink_state.as_ref().unwrap().seen, 2);
        assert_eq!(p2.next, base());
        // A third time: applied.
        let p3 = plan(
            &p2.next,
            answer(fetched.clone()),
            SETTINGS,
            p2.shrink_state.as_ref(),
            false,
        );
        assert_eq!(p3.verdict, ShrinkVerdict::Confirmed { seen: 3 });
        assert_eq!(p3.next, fetched);
        assert!(p3.shrink_state.is_none() && p3.held.is_empty());
        assert!(p3.warnings[0].contains("applied"), "{:?}", p3.warnings);
    }

    #[test]
    fn a_different_shrink_starts_counting_again() {
        let mut first = base();
        first.matches_by_root.insert(20, vec![]);
        let p = plan_of(&base(), answer(first));
        let mut other = base();
        other.matches_by_root.insert(30, vec![]);
        let p2 = plan(
            &p.next,
            answer(other),
            SETTINGS,
            p.shrink_state.as_ref(),
            false,
        );
        assert_eq!(p2.shrink_state.unwrap().seen, 1);
        assert_eq!(p2.held.roots, vec![30]);
    }

    #[test]
    fn an_operator_accepts_at_once() {
        let mut fetched = base();
        fetched.matches_by_root.insert(20, vec![]);
        let p = plan(&base(), answer(fetched.clone()), SETTINGS, None, true);
        assert_eq!(p.verdict, ShrinkVerdict::Accepted);
        assert_eq!(p.next, fetched);
        assert!(p.shrink_state.is_none());
    }

    #[test]
    fn confirm_runs_of_one_applies_every_shrink() {
        let mut fetched = base();
        fetched.matches_by_root.insert(20, vec![]);
        let settings = ShrinkSettings {
            confirm_runs: 1,
            ..SETTINGS
        };
        let p = plan(&base(), answer(fetched.clone()), settings, None, false);
        assert_eq!(p.verdict, ShrinkVerdict::Confirmed { seen: 1 });
        assert_eq!(p.next, fetched);
    }

    #[test]
    fn a_root_that_had_no_matches_may_stay_empty() {
        let mut previous = base();
        previous.matches_by_root.insert(20, vec![]);
        let p = plan_of(&previous, answer(previous.clone()));
        assert_eq!(p.verdict, ShrinkVerdict::None);
    }

    #[test]
    fn seasons_null_keeps_everything() {
        // `{"seasons": null}`: no valid season, so nothing else was asked.
        let p = plan_of(&base(), answer(Snapshot::default()));
        assert_eq!(p.held.seasons, vec![1, 2, 3, 4, 5]);
        let mut next = p.next.clone();
        next.tournaments.sort_by_key(|t| t.id);
        let mut expected = base();
        expected.tournaments.sort_by_key(|t| t.id);
        assert_eq!(next, expected);
        assert!(diff::diff(&base(), &p.next).is_empty());
    }

    #[test]
    fn a_small_season_loss_is_applied_a_large_one_held() {
        // One season of five is 20 %: not more than max_shrink_fraction.
        let mut fetched = base();
        fetched.valid_seasons.retain(|s| s.id != 5);
        fetched.tournaments.retain(|t| t.season_id != Some(5));
        fetched.matches_by_root.retain(|r, _| r / 10 != 5);
        let p = plan_of(&base(), answer(fetched.clone()));
        assert_eq!(p.verdict, ShrinkVerdict::None);
        assert_eq!(p.next, fetched);
        // Two of five is 40 %: held, with their tournaments and matches.
        let mut fetched = base();
        fetched.valid_seasons.retain(|s| s.id < 4);
        fetched.tournaments.retain(|t| t.season_id < Some(4));
        fetched.matches_by_root.retain(|r, _| r / 10 < 4);
        let p = plan_of(&base(), answer(fetched));
        assert_eq!(p.held.seasons, vec![4, 5]);
        assert!(diff::diff(&base(), &p.next).is_empty());
    }

    #[test]
    fn an_empty_season_keeps_its_tournaments_and_their_matches() {
        let mut fetched = base();
        fetched.tournaments.retain(|t| t.season_id != Some(3));
        fetched.matches_by_root.retain(|r, _| r / 10 != 3);
        let empty = [3];
        let p = plan_of(
            &base(),
            Answer {
                snapshot: fetched,
                empty_seasons: &empty,
                ..Answer::default()
            },
        );
        assert_eq!(p.held.season_lists, vec![3]);
        assert!(matches!(p.verdict, ShrinkVerdict::Held { .. }));
        assert!(diff::diff(&base(), &p.next).is_empty());
    }

    #[test]
    fn a_tournaments_shrink_is_held_a_small_one_applied() {
        let mut fetched = base();
        // 15 tournaments; dropping root 52 alone (1 of 15) is applied.
        fetched.tournaments.retain(|t| t.id != 52);
        fetched.matches_by_root.remove(&52);
        let p = plan_of(&base(), answer(fetched.clone()));
        assert_eq!(p.verdict, ShrinkVerdict::None);
        assert_eq!(p.next, fetched);
        // Dropping four roots (4 of 15 tournaments, 20 of 50 matches) is held.
        let mut fetched = base();
        let gone = [12, 22, 32, 42];
        fetched.tournaments.retain(|t| !gone.contains(&t.id));
        fetched.matches_by_root.retain(|r, _| !gone.contains(r));
        let p = plan_of(&base(), answer(fetched));
        assert_eq!(p.held.tournaments, gone.to_vec());
        assert_eq!(p.held.roots, gone.to_vec());
        assert!(diff::diff(&base(), &p.next).is_empty());
    }

    #[test]
    fn a_matches_shrink_restores_the_short_lists_only() {
        let mut fetched = base();
        // Every root of seasons 1-3 answers two of its five matches: 18 of 50 lost.
        for (root, list) in fetched.matches_by_root.iter_mut() {
            if root / 10 <= 3 {
                list.truncate(2);
            }
        }
        // A real change elsewhere still goes through.
        fetched.matches_by_root.get_mut(&50).unwrap()[0] = Match::from_json(
            &json!({"matchId": 5000, "tournamentId": 50, "hometeamId": 1, "awayteamId": 3}),
        )
        .unwrap();
        let p = plan_of(&base(), answer(fetched));
        assert_eq!(p.held.roots, vec![10, 12, 20, 22, 30, 32]);
        let changes = diff::diff(&base(), &p.next);
        assert_eq!(changes.individual_matches.ids(), vec![5000]);
        assert_eq!(changes.tournament_matches.ids(), vec![50]);
        // Losing one match in one root (1 of 50) is applied.
        let mut fetched = base();
        fetched.matches_by_root.get_mut(&10).unwrap().pop();
        let p = plan_of(&base(), answer(fetched.clone()));
        assert_eq!(p.verdict, ShrinkVerdict::None);
        assert_eq!(p.next, fetched);
    }

    #[test]
    fn the_fraction_edges() {
        assert!(!shrunk(0, 0, 0.2));
        assert!(shrunk(1, 0, 1.0), "to zero always counts");
        assert!(!shrunk(10, 8, 0.2), "exactly the fraction is allowed");
        assert!(shrunk(10, 7, 0.2));
        assert!(shrunk(10, 9, 0.0));
        assert!(!shrunk(10, 10, 0.0));
        assert!(!shrunk(10, 1, 1.0));
        assert!(!shrunk(10, 12, 0.2), "growth is no shrink");
    }

    #[test]
    fn undated_seasons_are_kept_when_known_and_named() {
        let mut fetched = base();
        fetched.valid_seasons.retain(|s| s.id != 2);
        fetched.tournaments.retain(|t| t.season_id != Some(2));
        fetched.matches_by_root.retain(|r, _| r / 10 != 2);
        let undated = [
            UndatedSeason {
                id: 2,
                name: "B".into(),
                date_from: "\"/Date(1754006400000)/\"".into(),
            },
            UndatedSeason {
                id: 9,
                name: "new".into(),
                date_from: "\"01.08.2026\"".into(),
            },
        ];
        let p = plan_of(
            &base(),
            Answer {
                snapshot: fetched,
                undated_seasons: &undated,
                ..Answer::default()
            },
        );
        assert_eq!(p.kept_undated, vec![2]);
        assert_eq!(p.verdict, ShrinkVerdict::None);
        assert!(diff::diff(&base(), &p.next).is_empty());
        assert_eq!(p.warnings.len(), 2);
        assert!(p.warnings[0].contains("/Date(1754006400000)/"));
        assert!(p.warnings[1].contains("season 9") && p.warnings[1].contains("not mirrored"));
    }

    #[test]
    fn a_match_under_two_roots_stays_under_the_lower_one() {
        let mut fetched = base();
        let extra = fetched.matches_by_root[&10][0].clone();
        fetched.matches_by_root.get_mut(&20).unwrap().push(extra);
        fetched.dedup_matches();
        let p = plan_of(&base(), answer(fetched));
        assert!(diff::diff(&base(), &p.next).is_empty());
        assert_eq!(p.next.matches().count(), 50, "stored once");
    }

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        let a = Held {
            roots: vec![1, 2],
            ..Held::default()
        };
        let b = Held {
            tournaments: vec![1, 2],
            ..Held::default()
        };
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
    }
}
