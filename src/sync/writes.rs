//! Which keys a run writes (pure): from the two snapshots and the diff, so
//! a no-change run writes no data key at all, and a change writes only the
//! keys it touched. The formats and key names are the store's.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::model::RawJson;
use crate::model::bodies::MatchBodies;
use crate::model::changes::{Category, Changes};
use crate::model::{Snapshot, Tournament};
use crate::store::{Entry, Keys, WriteBatch};

fn tournaments_by_season(snapshot: &Snapshot) -> BTreeMap<i64, Vec<&Tournament>> {
    let mut by_season: BTreeMap<i64, Vec<&Tournament>> = BTreeMap::new();
    for s in &snapshot.valid_seasons {
        by_season.entry(s.id).or_default();
    }
    for t in &snapshot.tournaments {
        if let Some(season) = t.season_id {
            by_season.entry(season).or_default().push(t);
        }
    }
    by_season
}

/// Keys a run writes whatever the diff says: what Redis was found not to
/// hold as the last commit left it (missing, emptied, edited, unreadable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Every key (the cache held nothing).
    pub all: bool,
    /// The derived keys (`root_tournaments`, `unique_team_ids`, every
    /// `tournaments_season_*`): no marker vouched for them.
    pub derived: bool,
    /// These keys, by name.
    pub keys: BTreeSet<String>,
}

impl Rewrite {
    pub fn everything() -> Rewrite {
        Rewrite {
            all: true,
            ..Rewrite::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.all && !self.derived && self.keys.is_empty()
    }

    /// Whether `key` is written whatever the diff says.
    fn primary(&self, key: &str) -> bool {
        self.all || self.keys.contains(key)
    }

    fn derived(&self, key: &str) -> bool {
        self.derived || self.primary(key)
    }
}

/// Decides what to write for a run that moves the cache from `old` to `new`;
/// `rewrite` names the keys written whatever changed.
pub fn plan_writes(
    keys: &Keys,
    old: &Snapshot,
    new: &Snapshot,
    changes: &Changes,
    rewrite: &Rewrite,
    now: DateTime<Utc>,
) -> WriteBatch {
    let mut batch = WriteBatch::default();
    let mut set = |key: String, value: Entry| batch.sets.push((key, value));
    let reformatted = |c: Category| changes.reformatted.contains(&c);
    // A reformatted list is written again whole (once), with its derived keys.
    let tournaments_reformatted = rewrite.all || reformatted(Category::TournamentsInSeason);
    if rewrite.primary(&keys.valid_seasons())
        || !changes.valid_seasons.is_empty()
        || reformatted(Category::ValidSeasons)
    {
        set(
            keys.valid_seasons(),
            Entry::new(new.valid_seasons.iter().map(|s| s.raw.clone()), now),
        );
    }
    if tournaments_reformatted
        || rewrite.primary(&keys.tournaments_in_season())
        || !changes.tournaments_in_season.is_empty()
    {
        set(
            keys.tournaments_in_season(),
            Entry::new(new.tournaments.iter().map(|t| t.raw.clone()), now),
        );
    }
    let root_changed = |snapshot: &Snapshot| {
        let roots: BTreeSet<i64> = snapshot.root_tournaments().map(|t| t.id).collect();
        changes
            .tournaments_in_season
            .ids()
            .iter()
            .any(|id| roots.contains(id))
    };
    if tournaments_reformatted
        || rewrite.derived(&keys.root_tournaments())
        || root_changed(old)
        || root_changed(new)
    {
        set(
            keys.root_tournaments(),
            Entry::new(new.root_tournaments().map(|t| t.raw.clone()), now),
        );
    }
    if rewrite.primary(&keys.tournament_matches())
        || !changes.tournament_matches.is_empty()
        || !changes.individual_matches.is_empty()
        || reformatted(Category::TournamentMatches)
        || reformatted(Category::IndividualMatches)
    {
        set(
            keys.tournament_matches(),
            Entry::new(new.matches().map(|m| m.raw.clone()), now),
        );
        let exceptions = new.grouping_exceptions();
        let value = (!exceptions.is_empty())
            .then(|| serde_json::to_string(&exceptions).unwrap_or_default());
        batch.bookkeeping.push((keys.match_roots(), value));
    }
    if rewrite.derived(&keys.unique_team_ids()) || !changes.unique_team_ids.is_empty() {
        let ids = new
            .team_ids()
            .into_iter()
            .map(|id| RawJson::from(id.to_string()));
        set(keys.unique_team_ids(), Entry::new(ids, now));
    }
    let inputs = Inputs {
        keys,
        old,
        new,
        changes,
        rewrite,
        now,
    };
    let groups = inputs.datasets(&mut batch);
    inputs.season_lists(tournaments_reformatted, &mut batch);
    batch.bookkeeping.extend(groups);
    batch
}

/// What every part of a run's writes is decided from.
struct Inputs<'a> {
    keys: &'a Keys,
    old: &'a Snapshot,
    new: &'a Snapshot,
    changes: &'a Changes,
    rewrite: &'a Rewrite,
    now: DateTime<Utc>,
}

impl Inputs<'_> {
    /// Each dataset's key when it changed or must be rewritten. Returns the
    /// grouping keys to write, after the data (a spread dataset's grouping goes
    /// with its key: Redis is the truth a reload rebuilds it from).
    fn datasets(&self, batch: &mut WriteBatch) -> Vec<(String, Option<String>)> {
        let mut groups = Vec::new();
        for &dataset in self.keys.datasets() {
            let key = self.keys.dataset(dataset);
            let written = self.rewrite.primary(&key)
                || !self.changes.of_dataset(dataset).is_empty()
                || self.changes.reformatted.contains(&Category::Data(dataset));
            if written {
                let records = self.new.datasets[dataset].records();
                let entry = Entry::new(records.into_iter().map(|r| r.raw.clone()), self.now);
                batch.sets.push((key.clone(), entry));
            }
            // When the grouping moved (with the records or without them), and
            // whenever the key is rewritten whatever changed (its grouping may
            // be what Redis lost).
            if dataset.spec().spread {
                let exceptions = self.new.datasets[dataset].grouping_exceptions();
                if self.rewrite.primary(&key)
                    || exceptions != self.old.datasets[dataset].grouping_exceptions()
                {
                    let value = (!exceptions.is_empty())
                        .then(|| serde_json::to_string(&exceptions).unwrap_or_default());
                    groups.push((self.keys.dataset_groups(dataset), value));
                }
            }
        }
        groups
    }

    /// Per-season tournament lists: a season's key is rewritten when one of
    /// its tournaments changed or the season came, deleted when it went.
    fn season_lists(&self, reformatted: bool, batch: &mut WriteBatch) {
        let old_by_season = tournaments_by_season(self.old);
        let new_by_season = tournaments_by_season(self.new);
        let changed_tournaments: BTreeSet<i64> = self
            .changes
            .tournaments_in_season
            .ids()
            .into_iter()
            .collect();
        let touched = |list: Option<&Vec<&Tournament>>| {
            list.is_some_and(|l| l.iter().any(|t| changed_tournaments.contains(&t.id)))
        };
        for (season, list) in &new_by_season {
            let dirty = reformatted
                || self.rewrite.derived(&self.keys.tournaments_season(*season))
                || !old_by_season.contains_key(season)
                || touched(Some(list))
                || touched(old_by_season.get(season));
            if dirty {
                let entry = Entry::new(list.iter().map(|t| t.raw.clone()), self.now);
                batch
                    .sets
                    .push((self.keys.tournaments_season(*season), entry));
            }
        }
        for season in old_by_season.keys() {
            if !new_by_season.contains_key(season) {
                batch.dels.push(self.keys.tournaments_season(*season));
            }
        }
    }
}

/// The change feed's entry for a run that changed something (`XADD` to
/// `precache:changes`, capped at about `maxlen` entries), for the run's own
/// transaction: a consumer sees the entry exactly when the data is there.
/// Fields: `run_id`, `changes` (counts per category, JSON) and, per
/// category that changed, its changed ids (a JSON array, sorted), and
/// `<category>_removed` for those of them that are gone.
/// `None` for a run without changes, or with the feed off (`maxlen` 0).
pub fn change_feed_command(
    keys: &Keys,
    run_id: &str,
    changes: &Changes,
    maxlen: usize,
) -> Option<redis::Cmd> {
    if maxlen == 0 || changes.is_empty() {
        return None;
    }
    let counts = crate::model::changes::ChangeCounts::of(changes);
    let mut cmd = redis::cmd("XADD");
    cmd.arg(keys.changes_stream())
        .arg("MAXLEN")
        .arg("~")
        .arg(maxlen)
        .arg("*")
        .arg("run_id")
        .arg(run_id)
        .arg("changes")
        .arg(serde_json::to_string(&counts).unwrap_or_default());
    for (category, change) in changes.by_category() {
        if !change.is_empty() {
            let ids = change.ids();
            cmd.arg(category.as_str())
                .arg(serde_json::to_string(&ids).unwrap_or_default());
            if !change.removed.is_empty() {
                let mut removed = change.removed.clone();
                removed.sort_unstable();
                cmd.arg(format!("{}_removed", category.as_str()))
                    .arg(serde_json::to_string(&removed).unwrap_or_default());
            }
        }
    }
    Some(cmd)
}

/// The commands that move the stored body stamps from `old` to `new`
/// (all of them, after a DEL, to `rebuild` the hash), for the run's
/// transaction: a no-change run sends none.
pub fn body_stamp_commands(
    keys: &Keys,
    old: &MatchBodies,
    new: &MatchBodies,
    rebuild: bool,
) -> Vec<redis::Cmd> {
    let key = keys.match_bodies();
    let mut commands = Vec::new();
    let empty = MatchBodies::default();
    let old = if rebuild {
        commands.push(redis::cmd("DEL").arg(&key).to_owned());
        &empty
    } else {
        old
    };
    let (set, removed) = new.changes_from(old);
    if !set.is_empty() {
        let mut hset = redis::cmd("HSET");
        hset.arg(&key);
        for (root, stamp) in set {
            hset.arg(root).arg(stamp.to_field());
        }
        commands.push(hset);
    }
    if !removed.is_empty() {
        commands.push(redis::cmd("HDEL").arg(&key).arg(removed).to_owned());
    }
    commands
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Match, Season};
    use crate::sync::diff::diff;
    use serde_json::json;

    fn snapshot(names: &[(i64, Option<i64>, &str)], matches: &[(i64, i64, &str)]) -> Snapshot {
        let seasons = vec![
            Season::from_json(&json!({"seasonId": 1, "seasonDateFrom": "2025-08-01T00:00:00"}))
                .unwrap(),
        ];
        let tournaments = names
            .iter()
            .map(|(id, p, n)| {
                Tournament::from_json(&json!({"tournamentId": id, "parentTournamentId": p, "seasonId": 1, "tournamentName": n}))
                    .unwrap()
            })
            .collect();
        let matches = matches
            .iter()
            .map(|(id, t, r)| {
                Match::from_json(&json!({"matchId": id, "tournamentId": t, "hometeamId": 1, "awayteamId": 2, "r": r}))
                    .unwrap()
            })
            .collect();
        Snapshot::from_flat(seasons, tournaments, matches, &BTreeMap::new())
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn from_flat_puts_child_matches_under_their_root() {
        let s = snapshot(
            &[(10, None, "a"), (11, Some(10), "b"), (20, None, "c")],
            &[(1, 11, ""), (2, 10, "")],
        );
        assert_eq!(s.matches_by_root[&10].len(), 2);
        assert!(
            s.matches_by_root[&20].is_empty(),
            "a root without matches has an entry"
        );
    }

    #[test]
    fn a_reformatted_list_is_written_once_not_counted() {
        let old = snapshot(&[(10, None, "a")], &[(1, 10, "")]);
        let mut new = old.clone();
        // The same match, sent with its keys in another order.
        let text = &new.matches_by_root[&10][0].raw;
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let reordered = format!(
            "{{\"r\":{},\"matchId\":1,\"tournamentId\":10,\"hometeamId\":1,\"awayteamId\":2}}",
            value["r"]
        );
        new.matches_by_root.get_mut(&10).unwrap()[0] = Match::from_raw(&reordered).unwrap();
        let changes = diff(&old, &new);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(
            changes.reformatted.iter().copied().collect::<Vec<_>>(),
            vec![Category::TournamentMatches, Category::IndividualMatches]
        );
        let batch = plan_writes(
            &Keys::default(),
            &old,
            &new,
            &changes,
            &Rewrite::default(),
            now(),
        );
        assert_eq!(batch.keys_written(), vec!["tournament_matches"]);
        assert!(
            batch.sets[0].1.to_text().contains(&reordered),
            "written as sent now"
        );
        // Next time the texts are the same: nothing.
        assert!(diff(&new, &new).reformatted.is_empty());
    }

    #[test]
    fn no_change_writes_nothing() {
        let s = snapshot(&[(10, None, "a")], &[(1, 10, "")]);
        let batch = plan_writes(
            &Keys::default(),
            &s,
            &s,
            &diff(&s, &s),
            &Rewrite::default(),
            now(),
        );
        assert!(batch.is_empty());
    }

    #[test]
    fn cold_start_writes_every_key() {
        let s = snapshot(&[(10, None, "a")], &[(1, 10, "")]);
        let old = Snapshot::default();
        let keys = Keys::new("p:");
        let batch = plan_writes(&keys, &old, &s, &diff(&old, &s), &Rewrite::default(), now());
        let written: BTreeSet<&str> = batch.keys_written().into_iter().collect();
        let expected: BTreeSet<&str> = [
            "p:valid_seasons",
            "p:tournaments_in_season",
            "p:root_tournaments",
            "p:tournament_matches",
            "p:unique_team_ids",
            "p:tournaments_season_1",
        ]
        .into_iter()
        .collect();
        assert_eq!(written, expected);
    }

    #[test]
    fn only_changed_keys_are_written() {
        let old = snapshot(&[(10, None, "a"), (11, Some(10), "b")], &[(1, 10, "")]);
        // A child renamed: tournaments and the season's list, not the roots.
        let new = snapshot(&[(10, None, "a"), (11, Some(10), "b2")], &[(1, 10, "")]);
        let batch = plan_writes(
            &Keys::default(),
            &old,
            &new,
            &diff(&old, &new),
            &Rewrite::default(),
            now(),
        );
        assert_eq!(
            batch.keys_written(),
            vec!["tournaments_in_season", "tournaments_season_1"]
        );
        // A match modified: only the match list.
        let new = snapshot(&[(10, None, "a"), (11, Some(10), "b")], &[(1, 10, "x")]);
        let batch = plan_writes(
            &Keys::default(),
            &old,
            &new,
            &diff(&old, &new),
            &Rewrite::default(),
            now(),
        );
        assert_eq!(batch.keys_written(), vec!["tournament_matches"]);
        // Rewrites, with nothing changed: Rewrite::everything writes
        // everything; named keys write those, and the derived ones when no
        // marker vouched for them.
        let unchanged = |rewrite: &Rewrite| {
            plan_writes(
                &Keys::default(),
                &old,
                &old,
                &diff(&old, &old),
                rewrite,
                now(),
            )
        };
        // (Each enabled dataset's key too: all are, by default.)
        assert_eq!(
            unchanged(&Rewrite::everything()).sets.len(),
            6 + crate::model::dataset::DatasetId::COUNT
        );
        let named = Rewrite {
            keys: ["tournaments_season_1".to_string()].into(),
            ..Rewrite::default()
        };
        assert_eq!(
            unchanged(&named).keys_written(),
            vec!["tournaments_season_1"]
        );
        let derived = Rewrite {
            derived: true,
            ..Rewrite::default()
        };
        assert_eq!(
            unchanged(&derived).keys_written(),
            vec![
                "root_tournaments",
                "unique_team_ids",
                "tournaments_season_1"
            ]
        );
    }
}

#[cfg(test)]
mod feed_tests {
    use super::*;

    fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => "<not simple>".into(),
            })
            .collect()
    }

    #[test]
    fn a_feed_entry_is_capped_names_the_run_and_lists_only_what_changed() {
        let keys = Keys::new("pre:");
        let mut changes = Changes::default();
        assert!(
            change_feed_command(&keys, "r1", &changes, 10).is_none(),
            "no change"
        );
        changes.individual_matches.modified = vec![7, 3];
        changes.individual_matches.removed = vec![9];
        changes.tournament_matches.modified = vec![10];
        assert!(
            change_feed_command(&keys, "r1", &changes, 0).is_none(),
            "feed off"
        );
        let cmd = change_feed_command(&keys, "r1", &changes, 500).expect("an entry");
        let a = args(&cmd);
        assert_eq!(
            a[..8],
            [
                "XADD",
                "pre:precache:changes",
                "MAXLEN",
                "~",
                "500",
                "*",
                "run_id",
                "r1"
            ]
        );
        let fields: BTreeMap<&str, &str> = a[8..]
            .chunks(2)
            .map(|kv| (kv[0].as_str(), kv[1].as_str()))
            .collect();
        assert_eq!(fields["individual_matches"], "[3,7,9]");
        assert_eq!(fields["individual_matches_removed"], "[9]");
        assert_eq!(fields["tournament_matches"], "[10]");
        assert!(!fields.contains_key("tournament_matches_removed"));
        assert!(!fields.contains_key("valid_seasons"));
        let counts: serde_json::Value = serde_json::from_str(fields["changes"]).unwrap();
        assert_eq!(counts["individual_matches"], 3);
        assert_eq!(counts["valid_seasons"], 0);
    }
}
