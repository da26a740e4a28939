//! The upstream's records and the snapshot a run produces: `records` (the
//! typed fields precache acts on, beside each record's JSON as sent),
//! `body` (finding the list in a response), `changes` (what a run changed),
//! `calls` (what was asked of the upstream).

pub mod bodies;
mod body;
pub mod calls;
pub mod changes;
pub mod dataset;
#[cfg(test)]
pub(crate) mod fixtures;
mod records;
pub mod request;

use std::collections::{BTreeMap, HashMap, HashSet};

pub use body::{BodyError, list_from_body};
pub use records::{
    Keyed, Match, RawJson, Record, Season, SkippedRecord, Tournament, canonical_json,
    parse_upstream_datetime, read_records, same_json,
};

/// Whether two lists are the very same records: the same slices of the
/// same bodies (a list taken over from a known snapshot), checked without
/// reading a byte of them.
pub fn same_records(a: &[Match], b: &[Match]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.id == y.id && RawJson::same_slice(&x.raw, &y.raw))
}

/// Everything one run knows about the upstream: the state the cache mirrors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub valid_seasons: Vec<Season>,
    /// All tournaments of the valid seasons.
    pub tournaments: Vec<Tournament>,
    /// Each root tournament's matches, keyed by the root's id. Every root
    /// tournament has an entry, empty when it has no matches.
    pub matches_by_root: BTreeMap<i64, Vec<Match>>,
    /// The datasets beyond the seed's chain (DESIGN.md section 13).
    pub datasets: dataset::Datasets,
}

/// Finds a tournament's root through the parent chain of `tournaments`.
struct RootResolver {
    parent: HashMap<i64, Option<i64>>,
}

impl RootResolver {
    fn new(tournaments: &[Tournament]) -> RootResolver {
        RootResolver {
            parent: tournaments.iter().map(|t| (t.id, t.parent_id)).collect(),
        }
    }

    /// `None` for an unknown id or a chain that does not end (bad data).
    fn root_of(&self, mut id: i64) -> Option<i64> {
        for _ in 0..32 {
            match self.parent.get(&id)? {
                None => return Some(id),
                Some(p) => id = *p,
            }
        }
        None
    }
}

impl Snapshot {
    /// Rebuilds a snapshot from the cache's flat lists. A match goes under
    /// the root `exceptions` names for it, else the root its own
    /// `tournamentId` leads to; one that leads nowhere is left out (the
    /// next run sees it as new). Every root gets an entry.
    pub fn from_flat(
        valid_seasons: Vec<Season>,
        tournaments: Vec<Tournament>,
        matches: Vec<Match>,
        exceptions: &BTreeMap<i64, i64>,
    ) -> Snapshot {
        let resolver = RootResolver::new(&tournaments);
        let mut by_root: BTreeMap<i64, Vec<Match>> = tournaments
            .iter()
            .filter(|t| t.is_root())
            .map(|t| (t.id, Vec::new()))
            .collect();
        for m in matches {
            let root = exceptions
                .get(&m.id)
                .copied()
                .or_else(|| m.tournament_id.and_then(|t| resolver.root_of(t)));
            if let Some(root) = root {
                by_root.entry(root).or_default().push(m);
            }
        }
        Snapshot {
            valid_seasons,
            tournaments,
            matches_by_root: by_root,
            datasets: dataset::Datasets::default(),
        }
    }

    /// Keeps each match id once: under the lowest root that listed it, its
    /// first occurrence there (DESIGN.md section 4). Linear.
    pub fn dedup_matches(&mut self) {
        let mut seen: HashSet<i64> = HashSet::new();
        for list in self.matches_by_root.values_mut() {
            list.retain(|m| seen.insert(m.id));
        }
    }

    /// The matches stored under a root other than the one their own
    /// `tournamentId` leads to (null, another root, an unknown id): match
    /// id → the root that returned it. Persisted beside the match list, so
    /// that [`Snapshot::from_flat`] rebuilds the same grouping.
    pub fn grouping_exceptions(&self) -> BTreeMap<i64, i64> {
        let resolver = RootResolver::new(&self.tournaments);
        let mut exceptions = BTreeMap::new();
        for (root, list) in &self.matches_by_root {
            for m in list {
                if m.tournament_id.and_then(|t| resolver.root_of(t)) != Some(*root) {
                    exceptions.insert(m.id, *root);
                }
            }
        }
        exceptions
    }

    pub fn root_tournaments(&self) -> impl Iterator<Item = &Tournament> {
        self.tournaments.iter().filter(|t| t.is_root())
    }

    pub fn matches(&self) -> impl Iterator<Item = &Match> {
        self.matches_by_root.values().flatten()
    }

    /// Sorted distinct home/away team ids of all matches.
    pub fn team_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.matches().flat_map(Match::team_ids).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Number of distinct match ids.
    pub fn unique_match_count(&self) -> usize {
        let mut ids: Vec<i64> = self.matches().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    pub fn item_counts(&self) -> ItemCounts {
        ItemCounts {
            valid_seasons: self.valid_seasons.len(),
            tournaments: self.tournaments.len(),
            root_tournaments: self.root_tournaments().count(),
            matches: self.unique_match_count(),
            teams: self.team_ids().len(),
            datasets: dataset::DatasetId::ALL.map(|d| self.datasets[d].ids().len()),
        }
    }
}

/// The sizes a run reports (and the simulator's `/_sim/stats` dataset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ItemCounts {
    pub valid_seasons: usize,
    pub tournaments: usize,
    pub root_tournaments: usize,
    pub matches: usize,
    pub teams: usize,
    /// Each dataset's distinct records, by [`dataset::DatasetId`].
    #[serde(default)]
    pub datasets: [usize; dataset::DatasetId::COUNT],
}

impl ItemCounts {
    /// Each count with its seed name, then each dataset's
    /// (`precache_items_processed{item_type}`).
    pub fn by_item(&self) -> Vec<(&'static str, usize)> {
        let seed = [
            ("valid_seasons", self.valid_seasons),
            ("tournaments", self.tournaments),
            ("root_tournaments", self.root_tournaments),
            ("matches", self.matches),
            ("teams", self.teams),
        ];
        seed.into_iter()
            .chain(dataset::DatasetId::ALL.map(|d| (d.name(), self.datasets[d.index()])))
            .collect()
    }
}
