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

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::dataset::DatasetId;
use crate::model::{Match, Season, Snapshot, Tournament};
use crate::report::{Held, ShrinkVerdict};
use crate::sync::fetch::{DataAnswer, UndatedSeason};

mod datasets;

use datasets::plan_datasets;

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
    /// Roots not asked this run (adaptive polling), sorted: their lists are
    /// the cache's, so a matches shrink is measured over the others.
    pub rested: &'a [i64],
    /// What each dataset was asked and answered, by [`DatasetId`] (none:
    /// every dataset is left as it is).
    pub data: &'a [DataAnswer],
    /// `sync.sport_ids`: the keys of a dataset asked per sport.
    pub sport_ids: &'a [i64],
}

/// The next snapshot and how it came about.
#[derive(Debug)]
pub struct Plan {
    pub next: Snapshot,
    /// Failed roots whose previous matches were kept.
    pub carried_over: Vec<i64>,
    /// Per dataset, the keys whose call failed and whose records were kept.
    pub carried_data: BTreeMap<DatasetId, Vec<i64>>,
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
    let answer_data = answer.data;
    let mut next = answer.snapshot;
    let mut warnings = Vec::new();
    let carried_over = carry_over_failed_roots(&prev, answer.failed_roots, &mut next);
    let kept_undated =
        keep_undated_seasons(&prev, answer.undated_seasons, &mut next, &mut warnings);
    let f = settings.max_fraction;
    let mut held = what_the_answer_left_out(&prev, answer.empty_seasons, answer.rested, &next, f);

    // The datasets, against the seed's lists as a held run would leave
    // them (a team whose matches are held keeps its org).
    let answered = std::mem::take(&mut next.datasets);
    let team_ids = if held.is_empty() {
        next.team_ids()
    } else {
        let mut as_held = next.clone();
        restore(&prev, &mut as_held, &held);
        as_held.team_ids()
    };
    let data = plan_datasets(
        &previous.datasets,
        &answered,
        answer_data,
        &team_ids,
        Some(f),
    );
    held.datasets = data.held.clone();

    let (verdict, shrink_state) = decide(&held, accept, state, settings, &mut warnings);
    let data = match verdict {
        ShrinkVerdict::Held { .. } => {
            restore(&prev, &mut next, &held);
            data
        }
        ShrinkVerdict::None => data,
        ShrinkVerdict::Confirmed { .. } | ShrinkVerdict::Accepted => {
            held = Held::default();
            plan_datasets(
                &previous.datasets,
                &answered,
                answer_data,
                &next.team_ids(),
                None,
            )
        }
    };
    next.datasets = data.states;
    for (dataset, keys) in &data.carried {
        warnings.push(format!(
            "{dataset}: kept the previous records of {} call(s) that failed: {:?}",
            keys.len(),
            keys
        ));
    }

    Plan {
        next,
        carried_over,
        carried_data: data.carried,
        kept_undated,
        held,
        verdict,
        shrink_state,
        warnings,
    }
}

/// Failed roots keep their matches: not a change, a degradation.
fn carry_over_failed_roots(prev: &Previous<'_>, failed: &[i64], next: &mut Snapshot) -> Vec<i64> {
    let mut carried_over = Vec::new();
    for &root in failed {
        if let Some(list) = prev.list(root) {
            next.matches_by_root.insert(root, list.clone());
            carried_over.push(root);
        }
    }
    carried_over
}

/// Undated seasons: kept as they were when known, else left out.
fn keep_undated_seasons(
    prev: &Previous<'_>,
    undated: &[UndatedSeason],
    next: &mut Snapshot,
    warnings: &mut Vec<String>,
) -> Vec<i64> {
    let mut kept = Vec::new();
    let mut restore = Restorer::new(prev, next);
    for season in undated {
        if prev.seasons.contains_key(&season.id) {
            restore.season(next, season.id);
            kept.push(season.id);
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
    kept
}

/// What the answer left out, as if the per-list holds applied: empty
/// season lists and match lists that had something, and each level that
/// shrank past `max_fraction`.
fn what_the_answer_left_out(
    prev: &Previous<'_>,
    empty_seasons: &[i64],
    rested: &[i64],
    next: &Snapshot,
    max_fraction: f64,
) -> Held {
    let mut held = Held {
        season_lists: empty_seasons
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
    let next_seasons: HashSet<i64> = next.valid_seasons.iter().map(|s| s.id).collect();
    if shrunk(prev.seasons.len(), next_seasons.len(), max_fraction) {
        held.seasons = left_out(prev.seasons.keys(), &next_seasons);
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
    if shrunk(prev.tournaments.len(), next_tournaments.len(), max_fraction) {
        held.tournaments = left_out(prev.tournaments.keys(), &next_tournaments);
    }
    let shrunk_roots =
        roots_whose_matches_shrank(prev, rested, next, &restored_roots, max_fraction);
    held.roots.extend(shrunk_roots);
    for list in [
        &mut held.seasons,
        &mut held.season_lists,
        &mut held.tournaments,
        &mut held.roots,
    ] {
        list.sort_unstable();
        list.dedup();
    }
    held
}

/// The ids of `before` that `now` lacks.
fn left_out<'a>(before: impl Iterator<Item = &'a i64>, now: &HashSet<i64>) -> Vec<i64> {
    before.copied().filter(|id| !now.contains(id)).collect()
}

/// When the matches shrank past `max_fraction`, the roots whose lists lost
/// a match. `restored_roots` keep their previous lists anyway.
fn roots_whose_matches_shrank(
    prev: &Previous<'_>,
    rested: &[i64],
    next: &Snapshot,
    restored_roots: &HashSet<i64>,
    max_fraction: f64,
) -> Vec<i64> {
    let previous = prev.snapshot;
    let effective_list = |root: i64| -> Option<&Vec<Match>> {
        if restored_roots.contains(&root) {
            prev.list(root)
        } else {
            next.matches_by_root.get(&root)
        }
    };
    // Distinct ids by sorting: at 10x (450,000 ids) a hash set cost twice
    // as much, in growth and cache misses. Over the roots asked this run
    // only: lists the run did not ask for cannot have shrunk, and counting
    // them would let a shrink of the asked ones pass under the fraction.
    let asked = |root: &i64| rested.binary_search(root).is_err();
    let distinct = |mut ids: Vec<i64>| {
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    };
    let about: usize = next.matches_by_root.values().map(Vec::len).sum();
    let mut next_matches: Vec<i64> = Vec::with_capacity(about);
    for root in next.matches_by_root.keys().chain(restored_roots) {
        if asked(root)
            && let Some(list) = effective_list(*root)
        {
            next_matches.extend(list.iter().map(|m| m.id));
        }
    }
    let next_count = distinct(next_matches);
    let previous_count = if rested.is_empty() {
        previous.unique_match_count()
    } else {
        let asked_before = previous
            .matches_by_root
            .iter()
            .filter(|(root, _)| asked(root))
            .flat_map(|(_, list)| list.iter().map(|m| m.id))
            .collect();
        distinct(asked_before)
    };
    if !shrunk(previous_count, next_count, max_fraction) {
        return Vec::new();
    }
    let mut roots = Vec::new();
    for (root, list) in &previous.matches_by_root {
        if list.is_empty() || restored_roots.contains(root) {
            continue;
        }
        let now: HashSet<i64> = effective_list(*root)
            .map(|l| l.iter().map(|m| m.id).collect())
            .unwrap_or_default();
        if list.iter().any(|m| !now.contains(&m.id)) {
            roots.push(*root);
        }
    }
    roots
}

/// Held, confirmed or accepted; the warning that says which.
fn decide(
    held: &Held,
    accept: bool,
    state: Option<&ShrinkState>,
    settings: ShrinkSettings,
    warnings: &mut Vec<String>,
) -> (ShrinkVerdict, Option<ShrinkState>) {
    if held.is_empty() {
        return (ShrinkVerdict::None, None);
    }
    if accept {
        warnings.push(format!(
            "shrink accepted by an operator: {}",
            held.describe()
        ));
        return (ShrinkVerdict::Accepted, None);
    }
    let fingerprint = held.fingerprint();
    let seen = state
        .filter(|s| s.fingerprint == fingerprint)
        .map_or(1, |s| s.seen.saturating_add(1));
    if seen >= settings.confirm_runs {
        warnings.push(format!(
            "shrink seen in {seen} consecutive runs, applied: {}",
            held.describe()
        ));
        return (ShrinkVerdict::Confirmed { seen }, None);
    }
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

/// Puts back what `held` names, as the cache had it.
fn restore(prev: &Previous<'_>, next: &mut Snapshot, held: &Held) {
    let mut restore = Restorer::new(prev, next);
    for &season in &held.seasons {
        restore.season(next, season);
    }
    for &season in &held.season_lists {
        for t in prev.season_tournaments(season) {
            restore.tournament(next, t.id);
        }
    }
    for &tournament in &held.tournaments {
        restore.tournament(next, tournament);
    }
    for &root in &held.roots {
        restore.list(next, root);
    }
    next.dedup_matches();
}

#[cfg(test)]
mod tests;
