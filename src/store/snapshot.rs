//! Loading the snapshot the cache holds, at start-up and after Redis lost
//! what we thought it had, one record at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::commit::{Found, KeyMark};
use crate::model::bodies::{BodyStamp, MatchBodies};
use crate::model::dataset::{DatasetId, DatasetState};
use crate::model::{Match, Record, Season, Snapshot, Tournament, read_records};

use super::{Store, StoreError};

impl Store {
    /// Loads the snapshot the cache holds, one key at a time and never
    /// failing on what a key holds: a data key that is absent, of another
    /// type or not a `{"data": [...]}` entry loads as empty and is named in
    /// `missing` (the run writes it); a bookkeeping key that cannot be read
    /// is set aside and named. Matches are regrouped under the root that
    /// returned them: the one `precache:match_roots` names, else the one
    /// their `tournamentId` leads to (see `Snapshot::from_flat`).
    pub fn load_snapshot(&mut self, found: &Found) -> Result<LoadedSnapshot, StoreError> {
        let keys = self.keys.clone();
        let mut loaded = LoadedSnapshot::default();
        // root_tournaments and unique_team_ids are derived: only their
        // presence matters. What each data key is, and how long, the
        // run's check found: a reload sends Redis only the reads.
        for key in [keys.root_tournaments(), keys.unique_team_ids()] {
            if !found.data.contains_key(&key) {
                loaded.missing.push(key);
            }
        }
        let valid_seasons =
            self.load_records::<Season>(keys.valid_seasons(), found, &mut loaded)?;
        let tournaments =
            self.load_records::<Tournament>(keys.tournaments_in_season(), found, &mut loaded)?;
        let matches = self.load_records::<Match>(keys.tournament_matches(), found, &mut loaded)?;
        let roots_text = found.match_roots.clone();
        let exceptions: BTreeMap<i64, i64> = match roots_text {
            None => BTreeMap::new(),
            Some(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                log::warn!(
                    "{} is unreadable ({e}); grouping matches by their tournamentId and rebuilding it",
                    keys.match_roots()
                );
                loaded.match_roots_unreadable = true;
                BTreeMap::new()
            }),
        };
        let mut snapshot = Snapshot::from_flat(valid_seasons, tournaments, matches, &exceptions);
        // A dataset whose key is absent or unreadable holds nothing: the
        // run asks all of it.
        for &dataset in keys.datasets() {
            let spec = dataset.spec();
            if let Some(records) =
                self.load_entry(keys.dataset(dataset), found, &mut loaded, |text, data| {
                    spec.read_records(text, data).0
                })?
            {
                let exceptions = self.load_groups(dataset, &mut loaded)?;
                snapshot.datasets[dataset] = DatasetState::from_flat(spec, records, &exceptions);
            }
        }
        // Each id once, as every run leaves it (an older version may have
        // stored a match twice): the diff relies on it.
        snapshot.dedup_matches();
        let (bodies, unreadable) = self.load_match_bodies(&snapshot, found)?;
        loaded.match_bodies_unreadable = unreadable;
        loaded.snapshot = snapshot;
        loaded.bodies = bodies;
        Ok(loaded)
    }

    /// A spread dataset's records kept under another key than their own
    /// id (`precache:groups:<name>`). One that cannot be read is set aside
    /// with a warning, and the dataset's key named missing, so the run
    /// writes both again.
    fn load_groups(
        &mut self,
        dataset: DatasetId,
        loaded: &mut LoadedSnapshot,
    ) -> Result<BTreeMap<i64, i64>, StoreError> {
        if !dataset.spec().spread {
            return Ok(BTreeMap::new());
        }
        let key = self.keys.dataset_groups(dataset);
        let text: Result<Option<String>, ()> = self.with(&format!("GET {key}"), |c| {
            match redis::cmd("GET").arg(&key).query::<Option<String>>(c) {
                // Of another type: the run's check discards it.
                Err(e) if e.code() == Some("WRONGTYPE") => Ok(Err(())),
                other => other.map(Ok),
            }
        })?;
        let parsed = match text {
            Ok(None) => Some(BTreeMap::new()),
            Ok(Some(text)) => serde_json::from_str(&text).ok(),
            Err(()) => None,
        };
        Ok(parsed.unwrap_or_else(|| {
            let data_key = self.keys.dataset(dataset);
            log::warn!("{key} is unreadable; asking every {dataset} call, and rebuilding it with {data_key}");
            loaded.missing.push(data_key);
            loaded.regrouped.push(dataset);
            BTreeMap::new()
        }))
    }

    /// The body stamps kept with the match list, those that still describe
    /// `snapshot`'s lists (a stamp that does not only costs a body read),
    /// and whether some field could not be read (the hash is rebuilt).
    fn load_match_bodies(
        &mut self,
        snapshot: &Snapshot,
        found: &Found,
    ) -> Result<(MatchBodies, bool), StoreError> {
        let key = self.keys.match_bodies();
        let kind = found.match_bodies_type.as_str();
        if kind != "hash" {
            // Absent, or of another type (the run's check discards it).
            return Ok((MatchBodies::default(), kind != "none"));
        }
        let fields: Vec<(String, String)> = self.with(&format!("HGETALL {key}"), |c| {
            redis::cmd("HGETALL").arg(&key).query(c)
        })?;
        let stamps: BTreeMap<i64, BodyStamp> = fields
            .iter()
            .filter_map(|(root, text)| Some((root.parse().ok()?, BodyStamp::from_field(text)?)))
            .collect();
        let unreadable = stamps.len() < fields.len();
        if unreadable {
            log::warn!(
                "{key} has {} field(s) that are not body stamps; rebuilding it",
                fields.len() - stamps.len()
            );
        }
        let verified = MatchBodies::verified(
            snapshot,
            &MatchBodies(stamps),
            &MatchBodies::default(),
            &Snapshot::default(),
        );
        Ok((verified, unreadable))
    }

    /// The records of one data key, parsed one at a time so a 20 MB list
    /// never exists as a tree of JSON values. A record we cannot read is
    /// skipped: the next diff sees it as new and writes it again. A key
    /// that is absent, of another type or not an entry loads as empty and
    /// is named in `loaded.missing`; one that loads is marked in
    /// `loaded.marks` (its length and last bytes, for the commit marker).
    fn load_records<T: Record>(
        &mut self,
        key: String,
        found: &Found,
        loaded: &mut LoadedSnapshot,
    ) -> Result<Vec<T>, StoreError> {
        let records = self.load_entry(key, found, loaded, |text, data| {
            read_records::<T>(text, data).0
        })?;
        Ok(records.unwrap_or_default())
    }

    /// One data key's entry, its `data` list handed to `read`; `None` (and
    /// the key named in `loaded.missing`) when it is absent, of another
    /// type or not an entry.
    fn load_entry<R>(
        &mut self,
        key: String,
        found: &Found,
        loaded: &mut LoadedSnapshot,
        read: impl FnOnce(&Arc<String>, Vec<&RawValue>) -> R,
    ) -> Result<Option<R>, StoreError> {
        let Some(&len) = found.data.get(&key) else {
            if let Some(kind) = found.data_wrong_type.get(&key) {
                log::warn!("{key} is a {kind}, not a {{\"data\": [...]}} entry: rewriting it");
            }
            loaded.missing.push(key);
            return Ok(None);
        };
        let Some(text) = self.get_large(&key, Some(len))? else {
            loaded.missing.push(key);
            return Ok(None);
        };
        #[derive(serde::Deserialize)]
        struct RawEntry<'a> {
            #[serde(borrow)]
            data: Vec<&'a RawValue>,
        }
        let text = Arc::new(text);
        let entry: RawEntry = match serde_json::from_str(&text) {
            Ok(entry) => entry,
            Err(e) => {
                log::warn!("{key} is not a {{\"data\": [...]}} entry ({e}): rewriting it");
                loaded.missing.push(key);
                return Ok(None);
            }
        };
        loaded.marks.push((key, KeyMark::of_text(&text)));
        Ok(Some(read(&text, entry.data)))
    }
}

#[derive(Default)]
pub struct LoadedSnapshot {
    pub snapshot: Snapshot,
    /// The roots whose list is known to be what a body reads to.
    pub bodies: MatchBodies,
    /// Data keys that were absent, of another type, or not entries.
    pub missing: Vec<String>,
    /// The data keys read, as the commit marker records them.
    pub marks: Vec<(String, KeyMark)>,
    /// Spread datasets whose grouping could not be read.
    pub regrouped: Vec<DatasetId>,
    /// `precache:match_roots` could not be read (set aside).
    pub match_roots_unreadable: bool,
    /// `precache:match_bodies` had fields that are not stamps.
    pub match_bodies_unreadable: bool,
}

/// The `data` list of a seed-format entry.
pub fn parse_entry(text: &str) -> Option<Vec<serde_json::Value>> {
    let mut value: serde_json::Value = serde_json::from_str(text).ok()?;
    match value.get_mut("data")?.take() {
        serde_json::Value::Array(items) => Some(items),
        _ => None,
    }
}
