//! What a run changed, per category: the types the diff produces and every
//! later stage (writes, warm-up, metrics, the status page) reads.

use serde::{Deserialize, Serialize};

use super::dataset::{DatasetId, then_each_dataset};

/// The categories of change (DESIGN.md section 4): the seed's five, in the
/// order the seed reports them, then one per dataset (section 13). On the
/// wire each is its name (`as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    ValidSeasons,
    TournamentsInSeason,
    TournamentMatches,
    IndividualMatches,
    UniqueTeamIds,
    Data(DatasetId),
}

const SEED_CATEGORIES: [Category; 5] = [
    Category::ValidSeasons,
    Category::TournamentsInSeason,
    Category::TournamentMatches,
    Category::IndividualMatches,
    Category::UniqueTeamIds,
];

impl Category {
    /// How many categories there are; arrays indexed by category have this
    /// length, so a dataset added to [`DatasetId::ALL`] grows them all.
    pub const COUNT: usize = SEED_CATEGORIES.len() + DatasetId::COUNT;

    pub const ALL: [Category; Category::COUNT] =
        then_each_dataset!(SEED_CATEGORIES, Category::COUNT, Category::Data);

    /// Its place in [`Category::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Category::ValidSeasons => 0,
            Category::TournamentsInSeason => 1,
            Category::TournamentMatches => 2,
            Category::IndividualMatches => 3,
            Category::UniqueTeamIds => 4,
            Category::Data(d) => SEED_CATEGORIES.len() + d.index(),
        }
    }

    /// The seed's name (a Redis key, a metric label, a JSON field), or the
    /// dataset's.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::ValidSeasons => "valid_seasons",
            Category::TournamentsInSeason => "tournaments_in_season",
            Category::TournamentMatches => "tournament_matches",
            Category::IndividualMatches => "individual_matches",
            Category::UniqueTeamIds => "unique_team_ids",
            Category::Data(d) => d.name(),
        }
    }

    pub fn by_name(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl Serialize for Category {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Category {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Category::by_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown category {name:?}")))
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The ids that changed in one category, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CategoryChanges {
    pub added: Vec<i64>,
    pub removed: Vec<i64>,
    pub modified: Vec<i64>,
}

impl CategoryChanges {
    pub fn count(&self) -> usize {
        self.added.len() + self.removed.len() + self.modified.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// Every changed id, sorted.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .added
            .iter()
            .chain(&self.removed)
            .chain(&self.modified)
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Added or modified: what is new or different now.
    pub fn present_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.added.iter().chain(&self.modified).copied()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub valid_seasons: CategoryChanges,
    pub tournaments_in_season: CategoryChanges,
    pub tournament_matches: CategoryChanges,
    pub individual_matches: CategoryChanges,
    pub unique_team_ids: CategoryChanges,
    /// Each dataset's changes, by [`DatasetId`].
    pub datasets: [CategoryChanges; DatasetId::COUNT],
    /// Categories whose records were sent in another form (key order,
    /// whitespace) but are the same values: not changes, but their keys are
    /// written once in the form the upstream sends now.
    pub reformatted: std::collections::BTreeSet<Category>,
}

/// Every category by name, in [`Category::ALL`] order.
impl Serialize for Changes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(Category::COUNT))?;
        for (category, changes) in self.by_category() {
            map.serialize_entry(category.as_str(), changes)?;
        }
        map.end()
    }
}

impl Changes {
    /// One category's changes.
    pub fn of(&self, category: Category) -> &CategoryChanges {
        match category {
            Category::ValidSeasons => &self.valid_seasons,
            Category::TournamentsInSeason => &self.tournaments_in_season,
            Category::TournamentMatches => &self.tournament_matches,
            Category::IndividualMatches => &self.individual_matches,
            Category::UniqueTeamIds => &self.unique_team_ids,
            Category::Data(d) => &self.datasets[d.index()],
        }
    }

    /// One dataset's changes.
    pub fn of_dataset(&self, dataset: DatasetId) -> &CategoryChanges {
        &self.datasets[dataset.index()]
    }

    /// Categories with their changes, in [`Category::ALL`] order.
    pub fn by_category(&self) -> [(Category, &CategoryChanges); Category::COUNT] {
        Category::ALL.map(|c| (c, self.of(c)))
    }

    pub fn total(&self) -> usize {
        self.by_category().iter().map(|(_, c)| c.count()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

/// Changes per category of one run, as the seed reports them:
/// `{"valid_seasons": n, …}`, or `{}` for a run that got no diff (failed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCounts(Option<[usize; Category::COUNT]>);

impl ChangeCounts {
    pub fn of(changes: &Changes) -> ChangeCounts {
        ChangeCounts(Some(Category::ALL.map(|c| changes.of(c).count())))
    }

    /// The count of one category; `None` when the run had no diff.
    pub fn get(&self, category: Category) -> Option<usize> {
        self.0.map(|counts| counts[category.index()])
    }

    pub fn total(&self) -> usize {
        self.0.map_or(0, |counts| counts.iter().sum())
    }
}

impl Serialize for ChangeCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map =
            serializer.serialize_map(Some(if self.0.is_some() { Category::COUNT } else { 0 }))?;
        if let Some(counts) = self.0 {
            for (category, n) in Category::ALL.iter().zip(counts) {
                map.serialize_entry(category.as_str(), &n)?;
            }
        }
        map.end()
    }
}

/// The first `limit` changed ids of each category that changed, sorted.
pub fn first_ids(
    changes: &Changes,
    limit: usize,
) -> std::collections::BTreeMap<Category, Vec<i64>> {
    changes
        .by_category()
        .into_iter()
        .filter(|(_, c)| !c.is_empty())
        .map(|(category, c)| {
            let mut ids = c.ids();
            ids.truncate(limit);
            (category, ids)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ChangeCounts` indexes by [`Category::index`]: `ALL` must hold
    /// every category, each at its own index. The match does not compile
    /// until a new seed category is named here.
    #[test]
    fn all_holds_every_category_at_its_index() {
        for (i, category) in Category::ALL.into_iter().enumerate() {
            assert_eq!(category.index(), i, "{category}");
            assert_eq!(Category::by_name(category.as_str()), Some(category));
            let json = serde_json::to_string(&category).unwrap();
            assert_eq!(serde_json::from_str::<Category>(&json).unwrap(), category);
        }
        let every = |c: Category| match c {
            Category::ValidSeasons
            | Category::TournamentsInSeason
            | Category::TournamentMatches
            | Category::IndividualMatches
            | Category::UniqueTeamIds
            | Category::Data(_) => c,
        };
        let named: Vec<Category> = SEED_CATEGORIES
            .into_iter()
            .chain(DatasetId::ALL.map(Category::Data))
            .map(every)
            .collect();
        assert_eq!(named, Category::ALL);
        let mut changes = Changes::default();
        changes.unique_team_ids.added = vec![1, 2];
        changes.valid_seasons.removed = vec![3];
        let counts = ChangeCounts::of(&changes);
        assert_eq!(counts.get(Category::UniqueTeamIds), Some(2));
        assert_eq!(counts.get(Category::ValidSeasons), Some(1));
        assert_eq!(counts.total(), 3);
        // The seed's names in the seed's order, then each dataset's.
        let datasets: String = DatasetId::ALL
            .iter()
            .map(|d| format!(r#","{d}":0"#))
            .collect();
        assert_eq!(
            serde_json::to_string(&counts).unwrap(),
            format!(
                r#"{{"valid_seasons":1,"tournaments_in_season":0,"tournament_matches":0,"individual_matches":0,"unique_team_ids":2{datasets}}}"#
            )
        );
    }
}
