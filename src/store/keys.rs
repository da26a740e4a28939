//! The one key builder: every key precache reads or writes is spelled
//! here, behind the optional `redis.key_prefix`.

use crate::model::dataset::DatasetId;

/// Builds every key precache reads or writes, with the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// The datasets whose keys are ours (`datasets.<name>.enabled`): a
    /// disabled dataset's key is neither checked, written nor cleared.
    datasets: Vec<DatasetId>,
}

impl Default for Keys {
    fn default() -> Keys {
        Keys::new("")
    }
}

impl Keys {
    /// Keys with every dataset enabled.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            datasets: DatasetId::ALL.to_vec(),
        }
    }

    /// The keys a configuration names: its prefix, its enabled datasets.
    pub fn of(config: &crate::config::Config) -> Keys {
        Keys::new(&config.redis.key_prefix).with_datasets(config.enabled_datasets())
    }

    /// The same keys, owning only these datasets' keys.
    pub fn with_datasets(mut self, enabled: impl IntoIterator<Item = DatasetId>) -> Keys {
        self.datasets = enabled.into_iter().collect();
        self.datasets.sort_unstable();
        self.datasets.dedup();
        self
    }

    /// The enabled datasets, in [`DatasetId::ALL`] order.
    pub fn datasets(&self) -> &[DatasetId] {
        &self.datasets
    }

    /// A dataset's data key.
    pub fn dataset(&self, dataset: DatasetId) -> String {
        self.key(dataset.spec().key)
    }
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
    pub fn valid_seasons(&self) -> String {
        self.key("valid_seasons")
    }
    pub fn tournaments_in_season(&self) -> String {
        self.key("tournaments_in_season")
    }
    pub fn root_tournaments(&self) -> String {
        self.key("root_tournaments")
    }
    pub fn tournament_matches(&self) -> String {
        self.key("tournament_matches")
    }
    pub fn unique_team_ids(&self) -> String {
        self.key("unique_team_ids")
    }
    pub fn tournaments_season(&self, season_id: i64) -> String {
        self.key(&format!("tournaments_season_{season_id}"))
    }
    /// Pattern matching every per-season key (for `clear`).
    pub fn tournaments_season_pattern(&self) -> String {
        format!("{}*", glob_escape(&self.key("tournaments_season_")))
    }
    /// The data keys every complete run leaves behind, in
    /// [`Keys::data_key_names`] order: the seed's five, then each enabled
    /// dataset's.
    pub fn data_keys(&self) -> Vec<String> {
        self.data_key_names()
            .into_iter()
            .map(|name| self.key(name))
            .collect()
    }

    /// [`Keys::data_keys`] without the prefix.
    pub fn data_key_names(&self) -> Vec<&'static str> {
        SEED_DATA_KEYS
            .into_iter()
            .chain(self.datasets.iter().map(|d| d.spec().key))
            .collect()
    }
    /// Run history (newest first), our own bookkeeping.
    pub fn run_history(&self) -> String {
        self.key("precache:runs")
    }
    /// The matches stored under a root their own `tournamentId` does not
    /// lead to: `{"matchId": rootId, ...}`, written with `tournament_matches`.
    pub fn match_roots(&self) -> String {
        self.key("precache:match_roots")
    }
    /// Root id → the stamp of the body its stored match list was read from
    /// (`model::bodies`), so `once` need not read an unchanged body again.
    pub fn match_bodies(&self) -> String {
        self.key("precache:match_bodies")
    }
    /// A spread dataset's records stored under a call key other than their
    /// own id: `{"recordId": callKey, ...}`, written with its data key, so
    /// a reload rebuilds the same grouping (absent: none).
    pub fn dataset_groups(&self, dataset: DatasetId) -> String {
        self.key(&format!("precache:groups:{}", dataset.name()))
    }
    /// Adaptive polling's run number and the roots to ask again
    /// (`sync::poll::PollState`), so `once` polls as the daemon would.
    pub fn poll_state(&self) -> String {
        self.key("precache:poll")
    }
    /// The change feed: a Redis Stream, one entry per run that changed
    /// something (`sync::writes::change_feed_command`).
    pub fn changes_stream(&self) -> String {
        self.key("precache:changes")
    }
    /// The shrink being held, if any, and how many runs saw it (DESIGN.md section 3).
    pub fn shrink_state(&self) -> String {
        self.key("precache:shrink")
    }
    /// The leader lease: `EPOCH INSTANCE` of the one instance that writes
    /// (`store::lease`), with an expiry.
    pub fn leader(&self) -> String {
        self.key("precache:leader")
    }
    /// The lease epochs handed out so far (`INCR`).
    pub fn leader_epoch(&self) -> String {
        self.key("precache:leader:epoch")
    }
    /// An operator's `once --accept-shrink` while another instance leads:
    /// the leader applies it in its next run.
    pub fn accept_shrink_request(&self) -> String {
        self.key("precache:accept_shrink")
    }
    /// The commit marker: who wrote the cache last, and each data key's
    /// length and last bytes as that write left them (`store::commit`).
    pub fn commit_marker(&self) -> String {
        self.key("precache:commit")
    }
    /// Every bookkeeping key with the Redis type it must have: one of
    /// another type is discarded and rebuilt, never a run's failure.
    pub fn bookkeeping(&self) -> Vec<(String, &'static str)> {
        [
            (self.run_history(), "list"),
            (self.match_roots(), "string"),
            (self.match_bodies(), "hash"),
            (self.poll_state(), "string"),
            (self.changes_stream(), "stream"),
            (self.shrink_state(), "string"),
            (self.commit_marker(), "string"),
            (self.accept_shrink_request(), "string"),
            (self.warm_schedule(), "zset"),
            (self.warm_refresh_until(), "hash"),
            (self.warm_failures(), "hash"),
        ]
        .into_iter()
        .chain(
            DatasetId::ALL
                .into_iter()
                .filter(|d| d.spec().spread)
                .map(|d| (self.dataset_groups(d), "string")),
        )
        .collect()
    }
    /// Warm-up entry for the proxy: `GET:` + `member`, a schedule member
    /// as `warm::WarmTarget::key` spells it (the proxy's lowercased path
    /// and query).
    pub fn warm_entry(&self, member: &str) -> String {
        self.key(&format!("GET:{member}"))
    }
    /// Its refresh record: `refresh:GET:` + `member`.
    pub fn warm_refresh(&self, member: &str) -> String {
        self.key(&format!("refresh:GET:{member}"))
    }
    /// Sorted set of warm-up tasks by due time (unix ms).
    pub fn warm_schedule(&self) -> String {
        self.key("precache:warm:due")
    }
    /// Each scheduled task's refresh deadline, unix ms (hash).
    pub fn warm_refresh_until(&self) -> String {
        self.key("precache:warm:until")
    }
    /// Consecutive failures of each failing task (hash).
    pub fn warm_failures(&self) -> String {
        self.key("precache:warm:failures")
    }
}

/// `text` with Redis glob specials escaped, for a SCAN pattern (a key
/// prefix may hold them).
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The seed's data keys without prefix, in [`Keys::data_keys`] order.
const SEED_DATA_KEYS: [&str; 5] = [
    "valid_seasons",
    "tournaments_in_season",
    "root_tournaments",
    "tournament_matches",
    "unique_team_ids",
];
