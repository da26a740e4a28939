//! Change detection between two snapshots (DESIGN.md section 4). Pure.
//!
//! The seed's five categories and one per dataset, each keyed by an id; a change count is added + removed +
//! modified. Records are compared as JSON values (`model::same_json`: the
//! bytes, parsed only when they differ), so key order and whitespace never
//! matter; a record whose text changed but not its value is "reformatted":
//! not a change, but its key is written once in the new form. Everything
//! is built from hash maps in one pass per side: linear
//! in the size of the data, with no scan over all matches per changed match
//! (the original's 282 s of CPU on a cold run).
//!
//! Duplicates: when an id appears twice on one side, its first occurrence is
//! the one compared, on both sides alike, so a duplicate alone is never a
//! change.

use std::collections::{BTreeSet, HashMap, HashSet};

pub use crate::model::changes::{Category, CategoryChanges, Changes};
use crate::model::dataset::{DatasetId, DatasetState};
use crate::model::{Keyed, Match, RawJson, Snapshot, same_json, same_records};

/// How two texts of the same record compare.
fn compare(old: &str, new: &str, reformatted: &mut bool) -> bool {
    if old == new {
        return true;
    }
    let same = same_json(old, new);
    *reformatted |= same;
    same
}

/// Compares id-keyed records; `first wins` for duplicate ids on either side.
fn diff_keyed<'a>(
    old: impl Iterator<Item = (i64, &'a str)>,
    new: impl Iterator<Item = (i64, &'a str)>,
    reformatted: &mut bool,
) -> CategoryChanges {
    let mut old_by_id: HashMap<i64, &str> = HashMap::new();
    for (id, raw) in old {
        old_by_id.entry(id).or_insert(raw);
    }
    let mut changes = CategoryChanges::default();
    let mut seen_new: HashMap<i64, ()> = HashMap::with_capacity(old_by_id.len());
    for (id, raw) in new {
        if seen_new.insert(id, ()).is_some() {
            continue;
        }
        match old_by_id.remove(&id) {
            None => changes.added.push(id),
            Some(old_raw) if !compare(old_raw, raw, reformatted) => changes.modified.push(id),
            Some(_) => {}
        }
    }
    changes.removed = old_by_id.into_keys().collect();
    changes.added.sort_unstable();
    changes.removed.sort_unstable();
    changes.modified.sort_unstable();
    changes
}

/// A root's match list in a comparable form: records sorted by id, first
/// occurrence of a duplicate id kept. List order from the upstream does not
/// count as a change.
fn normalized(list: &[Match]) -> Vec<(i64, &str)> {
    let mut items: Vec<(i64, &str)> = list.iter().map(|m| (m.id, &*m.raw)).collect();
    // Stable sort keeps the first occurrence of an id first.
    items.sort_by_key(|(id, _)| *id);
    items.dedup_by_key(|(id, _)| *id);
    items
}

/// Whether two match lists hold the same records (by `compare`).
fn same_list(old: &[Match], new: &[Match], reformatted: &mut bool) -> bool {
    let (old, new) = (normalized(old), normalized(new));
    old.len() == new.len()
        && old
            .iter()
            .zip(&new)
            .all(|((a_id, a), (b_id, b))| a_id == b_id && compare(a, b, reformatted))
}

fn diff_match_lists(
    old: &Snapshot,
    new: &Snapshot,
    compared: &BTreeSet<i64>,
    reformatted: &mut bool,
) -> CategoryChanges {
    let mut changes = CategoryChanges::default();
    for root in compared {
        let Some(list) = new.matches_by_root.get(root) else {
            continue;
        };
        match old.matches_by_root.get(root) {
            None => changes.added.push(*root),
            Some(old_list) if !same_list(old_list, list, reformatted) => {
                changes.modified.push(*root)
            }
            Some(_) => {}
        }
    }
    changes.removed = old
        .matches_by_root
        .keys()
        .filter(|root| !new.matches_by_root.contains_key(root))
        .copied()
        .collect();
    changes
}

fn diff_sets(old: &[i64], new: &[i64]) -> CategoryChanges {
    let old: BTreeSet<i64> = old.iter().copied().collect();
    let new: BTreeSet<i64> = new.iter().copied().collect();
    CategoryChanges {
        added: new.difference(&old).copied().collect(),
        removed: old.difference(&new).copied().collect(),
        modified: Vec::new(),
    }
}

/// The roots whose lists may differ: all but those holding the very same
/// records on both sides.
fn roots_to_compare(old: &Snapshot, new: &Snapshot) -> BTreeSet<i64> {
    let mut roots: BTreeSet<i64> = old
        .matches_by_root
        .keys()
        .filter(|root| !new.matches_by_root.contains_key(root))
        .copied()
        .collect();
    for (root, list) in &new.matches_by_root {
        match old.matches_by_root.get(root) {
            Some(old_list) if same_records(old_list, list) => {}
            _ => {
                roots.insert(*root);
            }
        }
    }
    roots
}

/// The matches of `roots` in `snapshot`, with their texts.
fn matches_of<'a>(snapshot: &'a Snapshot, roots: &BTreeSet<i64>) -> Vec<(i64, &'a str)> {
    roots
        .iter()
        .filter_map(|root| snapshot.matches_by_root.get(root))
        .flatten()
        .map(|m| (m.id, &*m.raw))
        .collect()
}

/// Whether two lists are the very same records (slices of the same
/// bodies: a group the run did not ask, taken over as it was).
fn same_keyed(a: &[Keyed], b: &[Keyed]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.id == y.id && RawJson::same_slice(&x.raw, &y.raw))
}

/// The record each of `ids` has in `state` (its first, in key order, as
/// the dataset's Redis key holds it), with its text.
fn effective<'a>(state: &'a DatasetState, ids: &HashSet<i64>) -> Vec<(i64, &'a str)> {
    state
        .groups
        .values()
        .flatten()
        .filter(|r| ids.contains(&r.id))
        .map(|r| (r.id, &*r.raw))
        .collect()
}

/// A dataset's changes, comparing only the records of the keys whose
/// records are not the very same on both sides. An id answered under two
/// keys counts by its first; an id that moved, or changed, is under a key
/// that is compared, and each side is looked up as a whole for it, so a
/// record that only left one of its keys is no change.
fn diff_dataset(old: &DatasetState, new: &DatasetState, reformatted: &mut bool) -> CategoryChanges {
    let differs = |key: &i64, list: &Vec<Keyed>, other: &DatasetState| {
        !other.groups.get(key).is_some_and(|o| same_keyed(list, o))
    };
    let ids: HashSet<i64> = old
        .groups
        .iter()
        .filter(|(key, list)| differs(key, list, new))
        .chain(
            new.groups
                .iter()
                .filter(|(key, list)| differs(key, list, old)),
        )
        .flat_map(|(_, list)| list.iter().map(|r| r.id))
        .collect();
    if ids.is_empty() {
        return CategoryChanges::default();
    }
    diff_keyed(
        effective(old, &ids).into_iter(),
        effective(new, &ids).into_iter(),
        reformatted,
    )
}

/// What changed from `old` to `new`.
///
/// Roots whose lists are the very same records on both sides (most of
/// them in a run: unchanged bodies are not read again) are left out of
/// the match comparisons. That is exact because each match id is under
/// one root per snapshot (`Snapshot::dedup_matches`): a match that moved
/// or changed is under a root that is compared.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Changes {
    let mut reformatted = [false; 4];
    let mut data_reformatted = [false; DatasetId::COUNT];
    let [seasons, tournaments, lists, matches] = &mut reformatted;
    let compared = roots_to_compare(old, new);
    let (old_matches, new_matches) = (matches_of(old, &compared), matches_of(new, &compared));
    let changes = Changes {
        valid_seasons: diff_keyed(
            old.valid_seasons.iter().map(|s| (s.id, &*s.raw)),
            new.valid_seasons.iter().map(|s| (s.id, &*s.raw)),
            seasons,
        ),
        tournaments_in_season: diff_keyed(
            old.tournaments.iter().map(|t| (t.id, &*t.raw)),
            new.tournaments.iter().map(|t| (t.id, &*t.raw)),
            tournaments,
        ),
        tournament_matches: diff_match_lists(old, new, &compared, lists),
        individual_matches: diff_keyed(old_matches.into_iter(), new_matches.into_iter(), matches),
        unique_team_ids: if compared.is_empty() {
            CategoryChanges::default()
        } else {
            diff_sets(&old.team_ids(), &new.team_ids())
        },
        datasets: DatasetId::ALL.map(|d| {
            let mut reformatted = false;
            let changes = diff_dataset(&old.datasets[d], &new.datasets[d], &mut reformatted);
            data_reformatted[d.index()] = reformatted;
            changes
        }),
        reformatted: Default::default(),
    };
    let categories = [
        Category::ValidSeasons,
        Category::TournamentsInSeason,
        Category::TournamentMatches,
        Category::IndividualMatches,
    ];
    Changes {
        reformatted: categories
            .into_iter()
            .zip(reformatted)
            .chain(
                DatasetId::ALL
                    .map(Category::Data)
                    .into_iter()
                    .zip(data_reformatted),
            )
            .filter_map(|(c, r)| r.then_some(c))
            .collect(),
        ..changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Season, Tournament};
    use serde_json::json;

    fn season(id: i64, name: &str) -> Season {
        Season::from_json(
            &json!({"seasonId": id, "seasonName": name, "seasonDateFrom": "2025-08-01T00:00:00"}),
        )
        .unwrap()
    }

    fn tournament(id: i64, parent: Option<i64>, name: &str) -> Tournament {
        Tournament::from_json(
            &json!({"tournamentId": id, "parentTournamentId": parent, "tournamentName": name}),
        )
        .unwrap()
    }

    fn game(id: i64, tournament: i64, home: i64, away: i64, result: &str) -> Match {
        Match::from_json(&json!({
            "matchId": id, "tournamentId": tournament, "hometeamId": home, "awayteamId": away, "result": result
        }))
        .unwrap()
    }

    /// Two seasons, root 10 (with child 11) and root 20; four matches; teams 1-5.
    fn base() -> Snapshot {
        crate::model::fixtures::snapshot(
            vec![season(1, "A"), season(2, "B")],
            vec![
                tournament(10, None, "T10"),
                tournament(11, Some(10), "T11"),
                tournament(20, None, "T20"),
            ],
            &[
                (
                    10,
                    vec![game(100, 10, 1, 2, "1-0"), game(101, 11, 2, 3, "")],
                ),
                (20, vec![game(200, 20, 4, 5, ""), game(201, 20, 1, 4, "")]),
            ],
        )
    }

    fn only(changes: &Changes, expected: &[(&str, CategoryChanges)]) {
        for (category, got) in changes.by_category() {
            let name = category.as_str();
            let want = expected
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            assert_eq!(got, &want, "category {name}");
        }
    }

    fn added(ids: &[i64]) -> CategoryChanges {
        CategoryChanges {
            added: ids.to_vec(),
            ..Default::default()
        }
    }
    fn removed(ids: &[i64]) -> CategoryChanges {
        CategoryChanges {
            removed: ids.to_vec(),
            ..Default::default()
        }
    }
    fn modified(ids: &[i64]) -> CategoryChanges {
        CategoryChanges {
            modified: ids.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn no_change() {
        let changes = diff(&base(), &base());
        assert!(changes.is_empty());
        assert_eq!(changes.total(), 0);
    }

    #[test]
    fn cold_start_counts_everything_as_added() {
        let changes = diff(&Snapshot::default(), &base());
        only(
            &changes,
            &[
                ("valid_seasons", added(&[1, 2])),
                ("tournaments_in_season", added(&[10, 11, 20])),
                ("tournament_matches", added(&[10, 20])),
                ("individual_matches", added(&[100, 101, 200, 201])),
                ("unique_team_ids", added(&[1, 2, 3, 4, 5])),
            ],
        );
        assert_eq!(changes.total(), 2 + 3 + 2 + 4 + 5);
    }

    #[test]
    fn key_order_does_not_matter() {
        let mut new = base();
        new.valid_seasons[0] = Season::from_json(
            &serde_json::from_str(
                r#"{"seasonDateFrom": "2025-08-01T00:00:00", "seasonName": "A", "seasonId": 1}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert!(diff(&base(), &new).is_empty());
    }

    #[test]
    fn seasons_added_removed_modified() {
        let mut new = base();
        new.valid_seasons = vec![season(1, "A renamed"), season(3, "C")];
        only(
            &diff(&base(), &new),
            &[(
                "valid_seasons",
                CategoryChanges {
                    added: vec![3],
                    removed: vec![2],
                    modified: vec![1],
                },
            )],
        );
    }

    #[test]
    fn tournament_renamed_is_only_a_tournament_change() {
        let mut new = base();
        new.tournaments[1] = tournament(11, Some(10), "T11 renamed");
        only(
            &diff(&base(), &new),
            &[("tournaments_in_season", modified(&[11]))],
        );
    }

    #[test]
    fn tournament_added_with_matches_and_removed_with_matches() {
        let mut new = base();
        new.tournaments.push(tournament(30, None, "T30"));
        new.matches_by_root
            .insert(30, vec![game(300, 30, 6, 1, "")]);
        only(
            &diff(&base(), &new),
            &[
                ("tournaments_in_season", added(&[30])),
                ("tournament_matches", added(&[30])),
                ("individual_matches", added(&[300])),
                ("unique_team_ids", added(&[6])),
            ],
        );
        let mut gone = base();
        gone.tournaments.retain(|t| t.id != 20);
        gone.matches_by_root.remove(&20);
        only(
            &diff(&base(), &gone),
            &[
                ("tournaments_in_season", removed(&[20])),
                ("tournament_matches", removed(&[20])),
                ("individual_matches", removed(&[200, 201])),
                ("unique_team_ids", removed(&[4, 5])),
            ],
        );
    }

    #[test]
    fn match_modified_added_removed() {
        let mut new = base();
        new.matches_by_root.get_mut(&10).unwrap()[0] = game(100, 10, 1, 2, "2-0");
        only(
            &diff(&base(), &new),
            &[
                ("tournament_matches", modified(&[10])),
                ("individual_matches", modified(&[100])),
            ],
        );
        let mut new = base();
        new.matches_by_root
            .get_mut(&20)
            .unwrap()
            .push(game(202, 20, 5, 4, ""));
        only(
            &diff(&base(), &new),
            &[
                ("tournament_matches", modified(&[20])),
                ("individual_matches", added(&[202])),
            ],
        );
        let mut new = base();
        new.matches_by_root.get_mut(&10).unwrap().remove(1);
        only(
            &diff(&base(), &new),
            &[
                ("tournament_matches", modified(&[10])),
                ("individual_matches", removed(&[101])),
                ("unique_team_ids", removed(&[3])),
            ],
        );
    }

    #[test]
    fn team_ids_follow_the_matches() {
        let mut new = base();
        new.matches_by_root.get_mut(&20).unwrap()[0] = game(200, 20, 4, 9, "");
        only(
            &diff(&base(), &new),
            &[
                ("tournament_matches", modified(&[20])),
                ("individual_matches", modified(&[200])),
                (
                    "unique_team_ids",
                    CategoryChanges {
                        added: vec![9],
                        removed: vec![5],
                        modified: vec![],
                    },
                ),
            ],
        );
    }

    #[test]
    fn a_match_moving_between_tournaments() {
        let mut new = base();
        let moved = new.matches_by_root.get_mut(&10).unwrap().remove(0);
        let moved = Match::from_json(&{
            let mut v: serde_json::Value = serde_json::from_str(&moved.raw).unwrap();
            v["tournamentId"] = json!(20);
            v
        })
        .unwrap();
        new.matches_by_root.get_mut(&20).unwrap().push(moved);
        only(
            &diff(&base(), &new),
            &[
                ("tournament_matches", modified(&[10, 20])),
                ("individual_matches", modified(&[100])),
            ],
        );
    }

    #[test]
    fn list_order_and_duplicates_are_not_changes() {
        let mut new = base();
        new.matches_by_root.get_mut(&20).unwrap().reverse();
        let dup = new.matches_by_root[&10][0].clone();
        new.matches_by_root.get_mut(&10).unwrap().push(dup);
        new.valid_seasons.push(season(1, "A"));
        new.tournaments.push(tournament(10, None, "T10"));
        assert!(diff(&base(), &new).is_empty(), "{:?}", diff(&base(), &new));
    }

    #[test]
    fn carried_over_lists_are_not_changes() {
        // A degraded run carries root 20's previous list over unchanged.
        let mut new = base();
        new.matches_by_root.get_mut(&10).unwrap()[0] = game(100, 10, 1, 2, "3-0");
        let carried = base().matches_by_root[&20].clone();
        new.matches_by_root.insert(20, carried);
        let changes = diff(&base(), &new);
        assert_eq!(changes.tournament_matches.ids(), vec![10]);
        assert_eq!(changes.individual_matches.ids(), vec![100]);
    }

    #[test]
    fn an_empty_root_list_is_present_not_absent() {
        let mut old = base();
        old.matches_by_root.insert(20, vec![]);
        let mut new = old.clone();
        assert!(diff(&old, &new).is_empty());
        new.matches_by_root.remove(&20);
        assert_eq!(diff(&old, &new).tournament_matches, removed(&[20]));
    }

    #[test]
    fn every_match_modified_in_a_large_snapshot() {
        // 200 roots × 250 matches, every match modified (speed is measured
        // by the benchmark, not here).
        let mut old = Snapshot::default();
        let mut new = Snapshot::default();
        for root in 0..200 {
            let list: Vec<Match> = (0..250)
                .map(|i| game(root * 1000 + i, root, i, i + 1, "0-0"))
                .collect();
            let changed: Vec<Match> = (0..250)
                .map(|i| game(root * 1000 + i, root, i, i + 1, "1-0"))
                .collect();
            old.matches_by_root.insert(root, list);
            new.matches_by_root.insert(root, changed);
        }
        let changes = diff(&old, &new);
        assert_eq!(changes.individual_matches.modified.len(), 50_000);
        assert_eq!(changes.tournament_matches.modified.len(), 200);
        assert!(changes.unique_team_ids.is_empty());
    }

    #[test]
    fn lists_taken_over_unchanged_are_skipped_and_the_rest_compared_exactly() {
        let a = game(1, 10, 100, 101, "1-0");
        let b = game(2, 20, 102, 103, "0-0");
        let c = game(3, 20, 104, 105, "2-2");
        let old = Snapshot {
            matches_by_root: [(10, vec![a.clone()]), (20, vec![b.clone(), c.clone()])].into(),
            ..Snapshot::default()
        };
        // A clone shares every record: nothing to compare, nothing changed.
        let same = old.clone();
        assert_eq!(roots_to_compare(&old, &same), BTreeSet::new());
        assert_eq!(diff(&old, &same).total(), 0);

        // Root 20 read again: c modified, b the same value in a new body;
        // match 1 moved (same text) from root 10 to a new root 30.
        let mut new = old.clone();
        new.matches_by_root.insert(10, vec![]);
        new.matches_by_root.insert(
            20,
            vec![game(2, 20, 102, 103, "0-0"), game(3, 20, 104, 105, "3-2")],
        );
        new.matches_by_root.insert(30, vec![a.clone()]);
        assert_eq!(roots_to_compare(&old, &new), BTreeSet::from([10, 20, 30]));
        let changes = diff(&old, &new);
        assert_eq!(changes.individual_matches.modified, vec![3]);
        assert!(changes.individual_matches.added.is_empty());
        assert!(changes.individual_matches.removed.is_empty());
        assert_eq!(changes.tournament_matches.added, vec![30]);
        assert_eq!(changes.tournament_matches.modified, vec![10, 20]);
        assert!(changes.unique_team_ids.is_empty());
    }
}
