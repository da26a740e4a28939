//! Loading the snapshot the cache holds, at start-up and after Redis lost
//! what we thought it had, one record at a time.

use std::collections::BTreeMap;

use crate::model::bodies::{BodyStamp, MatchBodies};
use crate::model::{Match, Record, Season, Snapshot, Tournament, read_records};

use super::{Store, StoreError};

impl Store {
    /// Loads the snapshot the cache holds. Missing keys load as empty.
    /// Matches are regrouped under the root that returned them: the one
    /// `precache:match_roots` names, else the one their `tournamentId`
    /// leads to (see `Snapshot::from_flat`).
    pub fn load_snapshot(&mut self) -> Result<LoadedSnapshot, StoreError> {
        let keys = self.keys.clone();
        let mut missing = Vec::new();
        // root_tournaments and unique_team_ids are derived: only their
        // presence matters. Both present is one command; which one is not
        // takes two more.
        let derived = [keys.root_tournaments(), keys.unique_team_ids()];
        let present: usize = self.with("EXISTS on the derived keys", |c| {
            redis::cmd("EXISTS").arg(&derived[..]).query(c)
        })?;
        if present < derived.len() {
            for key in derived {
                let n: usize = self.with(&format!("EXISTS {key}"), |c| {
                    redis::cmd("EXISTS").arg(&key).query(c)
                })?;
                if n == 0 {
                    missing.push(key);
                }
            }
        }
        let valid_seasons = self.load_records::<Season>(keys.valid_seasons(), &mut missing)?;
        let tournaments =
            self.load_records::<Tournament>(keys.tournaments_in_season(), &mut missing)?;
        let matches = self.load_records::<Match>(keys.tournament_matches(), &mut missing)?;
        // The small bookkeeping keys in one round trip (a `once` run sends
        // Redis as little as it can).
        let (roots_text, poll, shrink) = {
            let names = [keys.match_roots(), keys.poll_state(), keys.shrink_state()];
            let values: Vec<Option<String>> = self.with("MGET of the bookkeeping keys", |c| {
                redis::cmd("MGET").arg(&names[..]).query(c)
            })?;
            let mut values = values.into_iter();
            let mut next = || values.next().flatten();
            (next(), next(), next())
        };
        let exceptions: BTreeMap<i64, i64> = match roots_text {
            None => BTreeMap::new(),
            Some(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                log::warn!(
                    "{} is unreadable ({e}); grouping matches by their tournamentId",
                    keys.match_roots()
                );
                BTreeMap::new()
            }),
        };
        let mut snapshot = Snapshot::from_flat(valid_seasons, tournaments, matches, &exceptions);
        // Each id once, as every run leaves it (an older version may have
        // stored a match twice): the diff relies on it.
        snapshot.dedup_matches();
        let bodies = self.load_match_bodies(&snapshot)?;
        Ok(LoadedSnapshot {
            snapshot,
            bodies,
            poll,
            shrink,
            missing,
        })
    }

    /// The body stamps kept with the match list, those that still describe
    /// `snapshot`'s lists (a stamp that does not only costs a body read).
    fn load_match_bodies(&mut self, snapshot: &Snapshot) -> Result<MatchBodies, StoreError> {
        let key = self.keys.match_bodies();
        let fields: BTreeMap<i64, String> = self.with(&format!("HGETALL {key}"), |c| {
            redis::cmd("HGETALL").arg(&key).query(c)
        })?;
        let stored = MatchBodies(
            fields
                .iter()
                .filter_map(|(root, text)| Some((*root, BodyStamp::from_field(text)?)))
                .collect(),
        );
        Ok(MatchBodies::verified(
            snapshot,
            &stored,
            &MatchBodies::default(),
            &Snapshot::default(),
        ))
    }

    /// The records of one data key, parsed one at a time so a 20 MB list
    /// never exists as a tree of JSON values. A record we cannot read is
    /// skipped: the next diff sees it as new and writes it again.
    fn load_records<T: Record>(
        &mut self,
        key: String,
        missing: &mut Vec<String>,
    ) -> Result<Vec<T>, StoreError> {
        let Some(text) = self.get_large(&key)? else {
            missing.push(key);
            return Ok(Vec::new());
        };
        #[derive(serde::Deserialize)]
        struct RawEntry<'a> {
            #[serde(borrow)]
            data: Vec<&'a serde_json::value::RawValue>,
        }
        let text = std::sync::Arc::new(text);
        let entry: RawEntry = serde_json::from_str(&text).map_err(|e| StoreError {
            doing: format!("reading {key}"),
            reason: format!("not a {{\"data\": [...]}} entry: {e}"),
        })?;
        Ok(read_records::<T>(&text, entry.data).0)
    }
}

pub struct LoadedSnapshot {
    pub snapshot: Snapshot,
    /// The roots whose list is known to be what a body reads to.
    pub bodies: MatchBodies,
    /// `precache:poll` as stored (`sync::poll::PollState`), if present.
    pub poll: Option<String>,
    /// `precache:shrink` as stored (`sync::hold::ShrinkState`), if present.
    pub shrink: Option<String>,
    /// Data keys that were absent.
    pub missing: Vec<String>,
}

/// The `data` list of a seed-format entry.
pub fn parse_entry(text: &str) -> Option<Vec<serde_json::Value>> {
    let mut value: serde_json::Value = serde_json::from_str(text).ok()?;
    match value.get_mut("data")?.take() {
        serde_json::Value::Array(items) => Some(items),
        _ => None,
    }
}
