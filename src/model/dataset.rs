//! The datasets beyond the seed's chain (DESIGN.md section 13): org teams,
//! venues, venue details and clubs. Each is one [`Dataset`] descriptor —
//! its call, where the list is in the body, the record identity, its Redis
//! key, its cadence — and every stage (fetch, hold, diff, writes, the
//! store's loading, warm-ups, metrics, the status page, debug files, the
//! simulator) iterates over [`DATASETS`]. Adding one means a variant of
//! [`DatasetId`], its row here, and the simulator's data.
//!
//! The seed's five lists are a chain (seasons → tournaments → roots →
//! matches → team ids) with rules of their own (roots, adaptive polling,
//! body stamps); they keep their stages. What a dataset shares with them is
//! the tail: its [`Category`](super::changes::Category), its data key in
//! the commit marker, its call type, its counts.
//!
//! Pure data and pure functions: which call keys a run asks is decided
//! here from the run number, with no clock and no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::value::RawValue;

use super::{Keyed, RawJson, SkippedRecord};

/// `[$fixed..., $wrap(d) for each dataset d]` as a constant array of
/// `$len` elements (`$fixed`'s length plus [`DatasetId::COUNT`]): how
/// every list indexed by category, call type, endpoint or debug file grows
/// with the datasets, in a `const`.
macro_rules! then_each_dataset {
    ($fixed:expr, $len:expr, $wrap:expr) => {{
        const FIXED_LEN: usize = $fixed.len();
        let fixed = $fixed;
        let mut all = [fixed[0]; $len];
        let mut i = 0;
        while i < FIXED_LEN {
            all[i] = fixed[i];
            i += 1;
        }
        let mut d = 0;
        while d < $crate::model::dataset::DatasetId::COUNT {
            all[FIXED_LEN + d] = $wrap($crate::model::dataset::DatasetId::ALL[d]);
            d += 1;
        }
        all
    }};
}
pub(crate) use then_each_dataset;

/// One dataset. The order of [`DatasetId::ALL`] is the order a run asks
/// them in: a dataset whose keys come from another's records follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DatasetId {
    OrgTeams,
    Venues,
    VenueDetails,
    Clubs,
}

impl DatasetId {
    pub const ALL: [DatasetId; 4] = [
        DatasetId::OrgTeams,
        DatasetId::Venues,
        DatasetId::VenueDetails,
        DatasetId::Clubs,
    ];
    pub const COUNT: usize = DatasetId::ALL.len();

    /// Its descriptor.
    pub const fn spec(self) -> &'static Dataset {
        &DATASETS[self as usize]
    }

    /// The one name: config section, change category, call type, metric
    /// label, debug file.
    pub const fn name(self) -> &'static str {
        self.spec().name
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    pub fn by_name(name: &str) -> Option<DatasetId> {
        DatasetId::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl std::fmt::Display for DatasetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a dataset's call keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asks {
    /// One call (key 0).
    Once,
    /// A call per sport of `sync.sport_ids`.
    EachSport,
    /// A call per id of `unique_team_ids`.
    EachTeam,
    /// A call per record of an earlier dataset.
    EachRecordOf(DatasetId),
}

/// A request with `{id}` standing for the call key: the path relative to
/// `api_url` as the upstream spells it, and the query in the order sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    pub path: &'static str,
    pub query: &'static [(&'static str, &'static str)],
}

const ID: &str = "{id}";

impl Template {
    pub fn path(&self, id: i64) -> String {
        self.path.replace(ID, &id.to_string())
    }

    pub fn query(&self, id: i64) -> Vec<(&'static str, String)> {
        self.query
            .iter()
            .map(|(name, value)| (*name, value.replace(ID, &id.to_string())))
            .collect()
    }

    /// The call key of a request this template spells, from its path (any
    /// case, no leading slash) and query (`a=1&b=2`, in any order); `None`
    /// for another request. A template without `{id}` gives 0.
    pub fn parse(&self, path: &str, query: &str) -> Option<i64> {
        let mut id: Option<i64> = None;
        let mut take = |pattern: &str, text: &str, case_blind: bool| -> Option<()> {
            let (before, after) = match pattern.split_once(ID) {
                None => {
                    let same = if case_blind {
                        pattern.eq_ignore_ascii_case(text)
                    } else {
                        pattern == text
                    };
                    return same.then_some(());
                }
                Some(parts) => parts,
            };
            let starts = text.len() >= before.len() + after.len()
                && text.is_char_boundary(before.len())
                && text.is_char_boundary(text.len() - after.len())
                && text[..before.len()].eq_ignore_ascii_case(before)
                && text[text.len() - after.len()..].eq_ignore_ascii_case(after);
            if !starts {
                return None;
            }
            let found: i64 = text[before.len()..text.len() - after.len()].parse().ok()?;
            match id {
                Some(seen) if seen != found => None,
                _ => {
                    id = Some(found);
                    Some(())
                }
            }
        };
        take(self.path, path.trim_start_matches('/'), true)?;
        let params: Vec<(&str, &str)> = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
            .collect();
        if params.len() != self.query.len() {
            return None;
        }
        for (name, pattern) in self.query {
            let (_, value) = params.iter().find(|(k, _)| k == name)?;
            take(pattern, value, false)?;
        }
        Some(id.unwrap_or(0))
    }
}

/// One dataset's descriptor.
#[derive(Debug)]
pub struct Dataset {
    pub id: DatasetId,
    pub name: &'static str,
    /// Its configuration section: `datasets.<name>`.
    pub section: &'static str,
    /// Its Redis key (`{"data": [...], "last_updated": ...}`).
    pub key: &'static str,
    pub call: Template,
    pub asks: Asks,
    /// Where the list is in the body; empty: the whole body is the record
    /// (an object) or the records (a list).
    pub body_keys: &'static [&'static str],
    /// The field that identifies a record.
    pub identity: &'static str,
    /// `datasets.<name>.every_runs` unless configured.
    pub every_runs: u64,
    /// Spread: each call key has its own run in every `every_runs`, so
    /// every run costs about the same. Otherwise all calls go in one run,
    /// and the dataset is one answer: kept whole when any call fails.
    pub spread: bool,
}

pub const DATASETS: [Dataset; DatasetId::COUNT] = [
    Dataset {
        id: DatasetId::OrgTeams,
        name: "org_teams",
        section: "datasets.org_teams",
        key: "teams_data",
        call: Template {
            path: "api/v1/org/teams",
            query: &[("orgId", ID)],
        },
        asks: Asks::EachTeam,
        body_keys: &[],
        identity: "orgId",
        every_runs: 3,
        spread: true,
    },
    Dataset {
        id: DatasetId::Venues,
        name: "venues",
        section: "datasets.venues",
        key: "venues_data",
        call: Template {
            path: "api/v1/venues/allvenues",
            query: &[],
        },
        asks: Asks::Once,
        body_keys: &["venues"],
        identity: "venueId",
        every_runs: 300,
        spread: false,
    },
    Dataset {
        id: DatasetId::VenueDetails,
        name: "venue_details",
        section: "datasets.venue_details",
        key: "venue_details",
        call: Template {
            path: "api/v1/ta/venue/",
            query: &[("venueId", ID)],
        },
        asks: Asks::EachRecordOf(DatasetId::Venues),
        body_keys: &[],
        identity: "venueId",
        every_runs: 300,
        spread: true,
    },
    Dataset {
        id: DatasetId::Clubs,
        name: "clubs",
        section: "datasets.clubs",
        key: "clubs_data",
        call: Template {
            path: "api/v1/org/clubsbysport/{id}/",
            query: &[],
        },
        asks: Asks::EachSport,
        body_keys: &["clubs"],
        identity: "clubId",
        every_runs: 300,
        spread: false,
    },
];

/// A dataset's records by the call that returned them: call key →
/// records, in the order the upstream sent them. A spread dataset's keys
/// are its records' identities (a team's org, a venue's details); an
/// unspread one is one answer, kept by call as it came, under key 0 when
/// read back from its Redis key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetState {
    pub groups: BTreeMap<i64, Vec<Keyed>>,
}

impl DatasetState {
    /// Every record, in key order, the first of an id only: what its
    /// Redis key holds.
    pub fn records(&self) -> Vec<&Keyed> {
        let mut seen = BTreeSet::new();
        self.groups
            .values()
            .flatten()
            .filter(|r| seen.insert(r.id))
            .collect()
    }

    /// Distinct record ids, sorted.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.groups.values().flatten().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn is_empty(&self) -> bool {
        self.groups.values().all(Vec::is_empty)
    }

    /// Records held, an id answered under two keys twice.
    pub fn len(&self) -> usize {
        self.groups.values().map(Vec::len).sum()
    }

    /// Keeps each id once: its first record, in key order (what the key
    /// holds), as a list read back from the key is.
    fn keep_first_of_each_id(&mut self) {
        let mut seen = std::collections::HashSet::with_capacity(self.len());
        for records in self.groups.values_mut() {
            records.retain(|r| seen.insert(r.id));
        }
    }

    /// Rebuilds the grouping from the flat list its key holds: a spread
    /// dataset's record goes under the key `exceptions` names for it, else
    /// under its own id (the key it is asked by); an unspread dataset's
    /// records under 0.
    pub fn from_flat(
        spec: &Dataset,
        records: Vec<Keyed>,
        exceptions: &BTreeMap<i64, i64>,
    ) -> DatasetState {
        let mut groups: BTreeMap<i64, Vec<Keyed>> = BTreeMap::new();
        for record in records {
            let key = match spec.spread {
                true => exceptions.get(&record.id).copied().unwrap_or(record.id),
                false => 0,
            };
            groups.entry(key).or_default().push(record);
        }
        if !spec.spread {
            groups.entry(0).or_default();
        }
        let mut state = DatasetState { groups };
        state.keep_first_of_each_id();
        state
    }

    /// The records held under a key other than their own id (a call that
    /// answered another's record too): record id → key. What
    /// [`DatasetState::from_flat`] needs to rebuild a spread dataset.
    pub fn grouping_exceptions(&self) -> BTreeMap<i64, i64> {
        let mut seen = std::collections::HashSet::new();
        let mut exceptions = BTreeMap::new();
        for (key, records) in &self.groups {
            for r in records {
                if seen.insert(r.id) && r.id != *key {
                    exceptions.insert(r.id, *key);
                }
            }
        }
        exceptions
    }
}

impl Dataset {
    /// Reads this dataset's records from their JSON texts, slices of
    /// `buffer`: the good ones, and why others were skipped.
    pub fn read_records<'a>(
        &self,
        buffer: &Arc<String>,
        raws: impl IntoIterator<Item = &'a RawValue>,
    ) -> (Vec<Keyed>, Vec<SkippedRecord>) {
        let mut good = Vec::new();
        let mut skipped = Vec::new();
        for raw in raws {
            match Keyed::from_shared(RawJson::within(buffer, raw.get()), self.identity, self.name) {
                Ok(record) => good.push(record),
                Err(why) => skipped.push(why),
            }
        }
        (good, skipped)
    }
}

/// Every dataset's state, indexed by [`DatasetId`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Datasets(pub [DatasetState; DatasetId::COUNT]);

impl Datasets {
    /// Nothing held (a `const`, for statics).
    pub const EMPTY: Datasets = {
        const NONE: DatasetState = DatasetState {
            groups: BTreeMap::new(),
        };
        Datasets([NONE; DatasetId::COUNT])
    };
}

impl std::ops::Index<DatasetId> for Datasets {
    type Output = DatasetState;
    fn index(&self, id: DatasetId) -> &DatasetState {
        &self.0[id.index()]
    }
}

impl std::ops::IndexMut<DatasetId> for Datasets {
    fn index_mut(&mut self, id: DatasetId) -> &mut DatasetState {
        &mut self.0[id.index()]
    }
}

/// The run a key is asked in, out of every `every_runs`: a hash of the key
/// (SplitMix64's finaliser), so neighbouring ids spread evenly.
pub fn slot(key: i64, every_runs: u64) -> u64 {
    let mut z = (key as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z % every_runs.max(1)
}

/// The call keys run number `run` asks of a dataset, out of `keys` (all its
/// keys now), sorted. A key whose records the cache does not hold, and one
/// whose last call failed or did not reach the cache (`retry`), is asked
/// at once (for an unspread dataset, holding no record at all counts as
/// holding nothing). Otherwise a spread dataset asks the keys of this
/// run's slot, an unspread one every key in every `every_runs`-th run.
pub fn due_keys(
    spec: &Dataset,
    every_runs: u64,
    run: u64,
    keys: &[i64],
    held: &DatasetState,
    retry: &BTreeSet<i64>,
) -> Vec<i64> {
    let every = every_runs.max(1);
    let mut due: Vec<i64> = if spec.spread {
        keys.iter()
            .copied()
            .filter(|k| {
                !held.groups.contains_key(k) || retry.contains(k) || slot(*k, every) == run % every
            })
            .collect()
    } else if held.is_empty() || !retry.is_empty() || run.is_multiple_of(every) {
        keys.to_vec()
    } else {
        Vec::new()
    };
    due.sort_unstable();
    due.dedup();
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(id: i64) -> Keyed {
        Keyed {
            id,
            raw: RawJson::from(format!(r#"{{"id":{id}}}"#)),
        }
    }

    #[test]
    fn the_table_is_in_id_order_and_asks_only_of_earlier_datasets() {
        let mut names = BTreeSet::new();
        for (i, id) in DatasetId::ALL.into_iter().enumerate() {
            let spec = id.spec();
            assert_eq!(spec.id, id);
            assert_eq!(id.index(), i);
            assert!(names.insert(spec.name), "{} twice", spec.name);
            assert_eq!(DatasetId::by_name(spec.name), Some(id));
            if let Asks::EachRecordOf(source) = spec.asks {
                assert!(
                    source < id,
                    "{id} asks of {source}, which is not asked before it"
                );
            }
            assert!(spec.every_runs >= 1);
            assert_eq!(spec.section, format!("datasets.{}", spec.name));
        }
        let seed = ["valid_seasons", "tournaments_in_season", "root_tournaments"];
        for spec in &DATASETS {
            assert!(!seed.contains(&spec.key));
        }
    }

    #[test]
    fn templates_spell_and_read_back_their_requests() {
        let teams = DatasetId::OrgTeams.spec().call;
        assert_eq!(teams.path(7), "api/v1/org/teams");
        assert_eq!(teams.query(7), vec![("orgId", "7".to_string())]);
        assert_eq!(teams.parse("api/v1/org/teams", "orgId=7"), Some(7));
        assert_eq!(teams.parse("/API/v1/Org/Teams", "orgId=7"), Some(7));
        assert_eq!(teams.parse("api/v1/org/teams", "orgid=7"), None);
        assert_eq!(teams.parse("api/v1/org/teams", "orgId=x"), None);
        assert_eq!(teams.parse("api/v1/org/teams", "orgId=7&x=1"), None);
        let clubs = DatasetId::Clubs.spec().call;
        assert_eq!(clubs.path(151), "api/v1/org/clubsbysport/151/");
        assert_eq!(clubs.parse("api/v1/org/clubsbysport/151/", ""), Some(151));
        assert_eq!(clubs.parse("api/v1/org/clubsbysport/151", ""), None);
        let venues = DatasetId::Venues.spec().call;
        assert_eq!(venues.parse("api/v1/venues/allvenues", ""), Some(0));
        assert_eq!(venues.parse("api/v1/venues/allvenues/", ""), None);
    }

    #[test]
    fn a_spread_dataset_asks_each_key_once_per_cycle_and_new_or_failed_keys_at_once() {
        let spec = DatasetId::OrgTeams.spec();
        let keys: Vec<i64> = (1..=3000).collect();
        let held = DatasetState {
            groups: keys.iter().map(|k| (*k, vec![keyed(*k)])).collect(),
        };
        let none = BTreeSet::new();
        let mut asked: BTreeMap<i64, u32> = BTreeMap::new();
        for run in 10..13 {
            let due = due_keys(spec, 3, run, &keys, &held, &none);
            assert!((900..1100).contains(&due.len()), "run {run}: {}", due.len());
            for k in due {
                *asked.entry(k).or_default() += 1;
            }
        }
        assert_eq!(asked.len(), keys.len());
        assert!(asked.values().all(|n| *n == 1));
        let mut fewer = held.clone();
        fewer.groups.remove(&5);
        let retry: BTreeSet<i64> = [6].into();
        for run in 0..3 {
            let due = due_keys(spec, 3, run, &keys, &fewer, &retry);
            assert!(due.contains(&5) && due.contains(&6));
        }
    }

    #[test]
    fn an_unspread_dataset_is_asked_whole_in_its_run_or_when_missing_or_failed() {
        let spec = DatasetId::Venues.spec();
        let keys = [72, 151];
        let held = DatasetState::from_flat(spec, vec![keyed(1)], &BTreeMap::new());
        let none = BTreeSet::new();
        assert_eq!(due_keys(spec, 300, 600, &keys, &held, &none), keys);
        assert!(due_keys(spec, 300, 601, &keys, &held, &none).is_empty());
        let empty = DatasetState::default();
        assert_eq!(due_keys(spec, 300, 601, &keys, &empty, &none), keys);
        let retry: BTreeSet<i64> = [151].into();
        assert_eq!(due_keys(spec, 300, 601, &keys, &held, &retry), keys);
    }

    #[test]
    fn the_flat_list_regroups_as_it_was_written() {
        let spec = DatasetId::VenueDetails.spec();
        let none = BTreeMap::new();
        let state = DatasetState::from_flat(spec, vec![keyed(3), keyed(1), keyed(3)], &none);
        assert_eq!(state.groups.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(state.ids(), vec![1, 3]);
        assert_eq!(state.records().len(), 2);
        let venues =
            DatasetState::from_flat(DatasetId::Venues.spec(), vec![keyed(3), keyed(1)], &none);
        assert_eq!(venues.groups.len(), 1);
        assert_eq!(
            venues.records().iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![3, 1]
        );
        assert!(DatasetState::from_flat(DatasetId::Venues.spec(), vec![], &none).is_empty());
        // A record answered under another key goes back there.
        let mut answered = DatasetState::default();
        answered.groups.insert(5, vec![keyed(5), keyed(9)]);
        answered.groups.insert(7, vec![keyed(7), keyed(9)]);
        answered.groups.insert(9, vec![]);
        let exceptions = answered.grouping_exceptions();
        assert_eq!(exceptions, BTreeMap::from([(9, 5)]));
        let flat = answered.records().into_iter().cloned().collect();
        let back = DatasetState::from_flat(spec, flat, &exceptions);
        assert_eq!(back.groups[&5], answered.groups[&5]);
        assert_eq!(
            back.records(),
            answered.records(),
            "the key's list, as written"
        );
    }
}

#[cfg(test)]
mod reading {
    use super::*;

    #[test]
    fn records_are_read_by_their_identity_and_bad_ones_skipped() {
        let body = Arc::new(
            r#"[{"orgId":5,"name":"A"},{"orgId":"6","x":[1,{"orgId":9}]},{"name":"no id"},3,{"orgId":1.5}]"#
                .to_string(),
        );
        let raws: Vec<&RawValue> = serde_json::from_str(&body).unwrap();
        let (good, skipped) = DatasetId::OrgTeams.spec().read_records(&body, raws);
        assert_eq!(good.iter().map(|r| r.id).collect::<Vec<_>>(), vec![5, 6]);
        assert!(good[0].raw.shares_buffer(&body));
        assert_eq!(&*good[1].raw, r#"{"orgId":"6","x":[1,{"orgId":9}]}"#);
        assert_eq!(skipped.len(), 3);
        assert!(skipped.iter().all(|s| s.kind == "org_teams"));
        assert!(skipped[0].reason.contains("orgId"), "{:?}", skipped[0]);
    }
}
