//! Redis: key names, entry formats, the writer thread, and the reads the
//! commands and start-up need.
//!
//! The one key builder is [`Keys`]; nothing else spells a key. The data keys
//! and their `{"data": [...], "last_updated": RFC3339}` format are the seed's
//! (DESIGN.md section 5). A run's writes are one [`WriteBatch`] applied by
//! the writer thread in one MULTI/EXEC, so a reader sees the old state or the
//! new one, never half.
//!
//! Planning a batch ([`plan_writes`]) is pure: it decides from the two
//! snapshots and the diff which keys changed, so a no-change run writes no
//! data key at all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use crate::diff::Changes;
use crate::model::{Match, Season, Snapshot, Tournament};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds every key precache reads or writes, with the configured prefix.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
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
    /// The five seed keys every complete run leaves behind.
    /// The five data keys, in [`DATA_KEY_NAMES`] order.
    pub fn data_keys(&self) -> [String; 5] {
        [
            self.valid_seasons(),
            self.tournaments_in_season(),
            self.root_tournaments(),
            self.tournament_matches(),
            self.unique_team_ids(),
        ]
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
    /// The shrink being held, if any, and how many runs saw it (DESIGN.md section 3).
    pub fn shrink_state(&self) -> String {
        self.key("precache:shrink")
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

/// `{"data": [...], "last_updated": "..."}` from already-serialised items,
/// without re-parsing them.
pub fn entry_json<'a>(items: impl Iterator<Item = &'a str>, last_updated: DateTime<Utc>) -> String {
    let mut out = String::from("{\"data\":[");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push_str("],\"last_updated\":\"");
    out.push_str(&last_updated.to_rfc3339_opts(SecondsFormat::Secs, false));
    out.push_str("\"}");
    out
}

/// One run's writes: data keys set and deleted, and the warm-up tasks the
/// run enqueues. They go in one MULTI/EXEC, so the cache never holds a
/// change whose warm-up was lost, nor a warm-up for a change not written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub sets: Vec<(String, String)>,
    pub dels: Vec<String>,
    /// Our own keys that go with the data (`precache:`): set (`Some`) or
    /// deleted (`None`) in the same transaction, not counted as data written.
    pub bookkeeping: Vec<(String, Option<String>)>,
    pub warm: Option<WarmEnqueue>,
}

/// Warm-up tasks (schedule members, `path?query`) due at `due_ms` and
/// refreshed until `refresh_until_ms` (unix milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmEnqueue {
    pub members: Vec<String>,
    pub due_ms: i64,
    pub refresh_until_ms: i64,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
            && self.dels.is_empty()
            && self.bookkeeping.is_empty()
            && self.warm.as_ref().is_none_or(|w| w.members.is_empty())
    }
    /// Bytes of values written.
    pub fn bytes(&self) -> usize {
        self.sets.iter().map(|(_, v)| v.len()).sum()
    }
    pub fn keys_written(&self) -> Vec<&str> {
        self.sets.iter().map(|(k, _)| k.as_str()).collect()
    }
}

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

/// Decides what to write for a run that moves the cache from `old` to `new`.
/// `rewrite_all` writes every key (the cache was found missing).
pub fn plan_writes(
    keys: &Keys,
    old: &Snapshot,
    new: &Snapshot,
    changes: &Changes,
    rewrite_all: bool,
    now: DateTime<Utc>,
) -> WriteBatch {
    let mut batch = WriteBatch::default();
    let mut set = |key: String, value: String| batch.sets.push((key, value));
    if rewrite_all || !changes.valid_seasons.is_empty() {
        set(
            keys.valid_seasons(),
            entry_json(new.valid_seasons.iter().map(|s| &*s.raw), now),
        );
    }
    if rewrite_all || !changes.tournaments_in_season.is_empty() {
        set(
            keys.tournaments_in_season(),
            entry_json(new.tournaments.iter().map(|t| &*t.raw), now),
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
    if rewrite_all || root_changed(old) || root_changed(new) {
        set(
            keys.root_tournaments(),
            entry_json(new.root_tournaments().map(|t| &*t.raw), now),
        );
    }
    if rewrite_all
        || !changes.tournament_matches.is_empty()
        || !changes.individual_matches.is_empty()
    {
        set(
            keys.tournament_matches(),
            entry_json(new.matches().map(|m| &*m.raw), now),
        );
        let exceptions = new.grouping_exceptions();
        let value = (!exceptions.is_empty())
            .then(|| serde_json::to_string(&exceptions).unwrap_or_default());
        batch.bookkeeping.push((keys.match_roots(), value));
    }
    if rewrite_all || !changes.unique_team_ids.is_empty() {
        let ids: Vec<String> = new.team_ids().iter().map(i64::to_string).collect();
        set(
            keys.unique_team_ids(),
            entry_json(ids.iter().map(String::as_str), now),
        );
    }
    // Per-season tournament lists: rewrite a season's key when one of its
    // tournaments changed or the season came or went.
    let old_by_season = tournaments_by_season(old);
    let new_by_season = tournaments_by_season(new);
    let changed_tournaments: BTreeSet<i64> =
        changes.tournaments_in_season.ids().into_iter().collect();
    let touched = |list: Option<&Vec<&Tournament>>| {
        list.is_some_and(|l| l.iter().any(|t| changed_tournaments.contains(&t.id)))
    };
    for (season, list) in &new_by_season {
        let dirty = rewrite_all
            || !old_by_season.contains_key(season)
            || touched(Some(list))
            || touched(old_by_season.get(season));
        if dirty {
            set(
                keys.tournaments_season(*season),
                entry_json(list.iter().map(|t| &*t.raw), now),
            );
        }
    }
    for season in old_by_season.keys() {
        if !new_by_season.contains_key(season) {
            batch.dels.push(keys.tournaments_season(*season));
        }
    }
    batch
}

/// Why a Redis operation failed. The URL (which may hold a password) is never part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub doing: String,
    pub reason: String,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis: {}: {}", self.doing, self.reason)
    }
}

impl std::error::Error for StoreError {}

fn store_err(doing: &str) -> impl FnOnce(redis::RedisError) -> StoreError + '_ {
    move |e| StoreError {
        doing: doing.to_string(),
        reason: e.to_string(),
    }
}

/// Redis operations that failed, process-wide (exported as a metric).
static REDIS_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn redis_errors() -> u64 {
    REDIS_ERRORS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The seed's data keys without prefix, in [`Keys::data_keys`] order.
pub const DATA_KEY_NAMES: [&str; 5] = [
    "valid_seasons",
    "tournaments_in_season",
    "root_tournaments",
    "tournament_matches",
    "unique_team_ids",
];

/// How one try of a Redis operation failed.
enum Failure {
    Connect(StoreError),
    Command(redis::RedisError),
}

/// A synchronous Redis connection that reconnects on the next call after an error.
pub struct Store {
    client: Option<redis::Client>,
    conn: Option<redis::Connection>,
    pub keys: Keys,
}

impl Store {
    /// Parses the URL; connects lazily. A bad URL is reported here, without echoing it.
    pub fn new(url: &str, keys: Keys) -> Result<Store, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError {
            doing: "parsing redis.url".into(),
            reason: format!("{:?}", e.kind()),
        })?;
        Ok(Store {
            client: Some(client),
            conn: None,
            keys,
        })
    }

    fn conn(&mut self) -> Result<&mut redis::Connection, StoreError> {
        if self.conn.is_none() {
            let client = self.client.as_ref().ok_or_else(|| StoreError {
                doing: "connecting".into(),
                reason: "no client".into(),
            })?;
            let conn = client
                .get_connection_with_timeout(CONNECT_TIMEOUT)
                .map_err(store_err("connecting"))?;
            conn.set_read_timeout(Some(IO_TIMEOUT))
                .map_err(store_err("connecting"))?;
            conn.set_write_timeout(Some(IO_TIMEOUT))
                .map_err(store_err("connecting"))?;
            self.conn = Some(conn);
        }
        // Just set above when it was None.
        self.conn.as_mut().ok_or_else(|| StoreError {
            doing: "connecting".into(),
            reason: "no connection".into(),
        })
    }

    /// Runs `f` on the connection; drops the connection on error so the next call reconnects.
    ///
    /// A connection kept from an earlier call may have died with a Redis
    /// restart in between (the writer thread idles for a whole interval), so
    /// a connection-level failure on a reused connection gets one retry on a
    /// fresh one. Every operation here is safe to repeat: a MULTI/EXEC that
    /// did land before the socket broke only sets the same values again.
    pub(crate) fn with<T>(
        &mut self,
        doing: &str,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let reused = self.conn.is_some();
        let mut result = self.attempt(&mut f);
        if let Err(Failure::Command(e)) = &result
            && reused
            && (e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error())
        {
            result = self.attempt(&mut f);
        }
        result.map_err(|failure| {
            REDIS_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match failure {
                Failure::Connect(e) => e,
                Failure::Command(e) => store_err(doing)(e),
            }
        })
    }

    /// One try on the current connection (made if needed); a failed
    /// connection is dropped so the next try reconnects.
    fn attempt<T>(
        &mut self,
        f: &mut impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, Failure> {
        let conn = self.conn().map_err(Failure::Connect)?;
        let result = f(conn);
        if result.is_err() {
            self.conn = None;
        }
        result.map_err(Failure::Command)
    }

    pub fn ping(&mut self) -> Result<(), StoreError> {
        self.with("PING", |c| redis::cmd("PING").query::<String>(c))
            .map(drop)
    }

    /// Applies a batch in one MULTI/EXEC.
    pub fn apply(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (k, v) in &batch.sets {
            pipe.cmd("SET").arg(k).arg(v).ignore();
        }
        for k in &batch.dels {
            pipe.cmd("DEL").arg(k).ignore();
        }
        for (k, v) in &batch.bookkeeping {
            match v {
                Some(v) => pipe.cmd("SET").arg(k).arg(v).ignore(),
                None => pipe.cmd("DEL").arg(k).ignore(),
            };
        }
        if let Some(warm) = batch.warm.as_ref().filter(|w| !w.members.is_empty()) {
            // Plain ZADD (not LT): a task already due keeps one member, so it
            // is fetched once; one being fetched right now gets a new score,
            // which tells its worker to leave it due (see warmer::complete).
            for chunk in warm.members.chunks(1000) {
                let due = pipe.cmd("ZADD").arg(self.keys.warm_schedule());
                for member in chunk {
                    due.arg(warm.due_ms).arg(member);
                }
                due.ignore();
                let until = pipe.cmd("HSET").arg(self.keys.warm_refresh_until());
                for member in chunk {
                    until.arg(member).arg(warm.refresh_until_ms);
                }
                until.ignore();
                pipe.cmd("HDEL")
                    .arg(self.keys.warm_failures())
                    .arg(chunk)
                    .ignore();
            }
        }
        self.with("writing a run (MULTI/EXEC)", |c| pipe.query::<()>(c))
    }

    pub fn get(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(&format!("GET {key}"), |c| {
            redis::cmd("GET").arg(key).query(c)
        })
    }

    /// Whether every data key is present (one round trip).
    /// Bytes of each data key's value (0 when absent), by the seed's key name.
    pub fn data_sizes(&mut self) -> Result<BTreeMap<String, u64>, StoreError> {
        let names = DATA_KEY_NAMES;
        let keys = self.keys.data_keys();
        let sizes: Vec<u64> = self.with("STRLEN on the data keys", |c| {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("STRLEN").arg(key);
            }
            pipe.query(c)
        })?;
        Ok(names
            .iter()
            .zip(sizes)
            .map(|(name, n)| (name.to_string(), n))
            .collect())
    }

    pub fn data_keys_present(&mut self) -> Result<bool, StoreError> {
        let keys = self.keys.data_keys();
        let n: usize = self.with("EXISTS on the data keys", |c| {
            redis::cmd("EXISTS").arg(&keys[..]).query(c)
        })?;
        Ok(n == keys.len())
    }

    pub fn scan(&mut self, pattern: &str) -> Result<Vec<String>, StoreError> {
        self.with(&format!("SCAN {pattern}"), |c| {
            let mut cursor: u64 = 0;
            let mut out = Vec::new();
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)?;
                out.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            out.sort();
            out.dedup();
            Ok(out)
        })
    }

    /// Deletes keys, returning those that existed.
    pub fn delete(&mut self, keys: &[String]) -> Result<Vec<String>, StoreError> {
        let mut removed = Vec::new();
        for key in keys {
            let n: usize = self.with(&format!("DEL {key}"), |c| {
                redis::cmd("DEL").arg(key).query(c)
            })?;
            if n > 0 {
                removed.push(key.clone());
            }
        }
        Ok(removed)
    }

    /// Pushes a run's stats onto the history, keeping the newest `keep`.
    pub fn push_history(&mut self, stats_json: &str, keep: usize) -> Result<(), StoreError> {
        let key = self.keys.run_history();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LPUSH")
            .arg(&key)
            .arg(stats_json)
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(keep.saturating_sub(1))
            .ignore();
        self.with("recording run history", |c| pipe.query::<()>(c))
    }

    /// The shrink being held (`None` when none is, or the record is unreadable).
    pub fn shrink_state(&mut self) -> Result<Option<crate::plan::ShrinkState>, StoreError> {
        let key = self.keys.shrink_state();
        Ok(self.get(&key)?.and_then(|text| {
            serde_json::from_str(&text)
                .map_err(|e| log::warn!("{key} is unreadable ({e}); counting a held shrink from 1"))
                .ok()
        }))
    }

    pub fn history(&mut self, count: usize) -> Result<Vec<serde_json::Value>, StoreError> {
        let key = self.keys.run_history();
        let items: Vec<String> = self.with("reading run history", |c| {
            redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(count.saturating_sub(1))
                .query(c)
        })?;
        Ok(items
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    /// Loads the snapshot the cache holds. Missing keys load as empty.
    /// Matches are regrouped under the root that returned them: the one
    /// `precache:match_roots` names, else the one their `tournamentId`
    /// leads to (see `Snapshot::from_flat`).
    pub fn load_snapshot(&mut self) -> Result<LoadedSnapshot, StoreError> {
        let keys = self.keys.clone();
        let mut missing = Vec::new();
        // root_tournaments and unique_team_ids are derived: only their presence matters.
        for key in [keys.root_tournaments(), keys.unique_team_ids()] {
            let n: usize = self.with(&format!("EXISTS {key}"), |c| {
                redis::cmd("EXISTS").arg(&key).query(c)
            })?;
            if n == 0 {
                missing.push(key);
            }
        }
        let valid_seasons =
            self.load_records(keys.valid_seasons(), &mut missing, Season::from_json)?;
        let tournaments = self.load_records(
            keys.tournaments_in_season(),
            &mut missing,
            Tournament::from_json,
        )?;
        let matches =
            self.load_records(keys.tournament_matches(), &mut missing, Match::from_json)?;
        let exceptions: BTreeMap<i64, i64> = match self.get(&keys.match_roots())? {
            None => BTreeMap::new(),
            Some(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                log::warn!(
                    "{} is unreadable ({e}); grouping matches by their tournamentId",
                    keys.match_roots()
                );
                BTreeMap::new()
            }),
        };
        let snapshot = Snapshot::from_flat(valid_seasons, tournaments, matches, &exceptions);
        Ok(LoadedSnapshot { snapshot, missing })
    }

    /// The records of one data key, parsed one at a time so a 20 MB list
    /// never exists as a tree of JSON values. A record we cannot read is
    /// skipped: the next diff sees it as new and writes it again.
    fn load_records<T, E>(
        &mut self,
        key: String,
        missing: &mut Vec<String>,
        parse: impl Fn(&serde_json::Value) -> Result<T, E>,
    ) -> Result<Vec<T>, StoreError> {
        let Some(text) = self.get(&key)? else {
            missing.push(key);
            return Ok(Vec::new());
        };
        #[derive(serde::Deserialize)]
        struct RawEntry<'a> {
            #[serde(borrow)]
            data: Vec<&'a serde_json::value::RawValue>,
        }
        let entry: RawEntry = serde_json::from_str(&text).map_err(|e| StoreError {
            doing: format!("reading {key}"),
            reason: format!("not a {{\"data\": [...]}} entry: {e}"),
        })?;
        Ok(entry
            .data
            .iter()
            .filter_map(|raw| serde_json::from_str(raw.get()).ok())
            .filter_map(|value| parse(&value).ok())
            .collect())
    }
}

pub struct LoadedSnapshot {
    pub snapshot: Snapshot,
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

/// Sent to the writer thread; the outcome comes back on `reply`.
pub struct WriteRequest {
    pub batch: WriteBatch,
    pub reply: Sender<Result<(), StoreError>>,
}

/// Runs the writer: applies each batch in one transaction until the channel closes.
pub fn spawn_writer(
    mut store: Store,
    requests: Receiver<WriteRequest>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("redis-writer".into())
        .spawn(move || {
            for request in requests {
                let result = store.apply(&request.batch);
                if let Err(e) = &result {
                    log::error!("{e}");
                }
                // The run may have been abandoned at shutdown; nobody to tell then.
                let _ = request.reply.send(result);
            }
        })
}

/// What `precache clear` removed.
#[derive(Debug, Serialize)]
pub struct Cleared {
    pub deleted_keys: Vec<String>,
    pub deleted_files: Vec<String>,
}

/// The seed's `clear_precache_data`: the data keys and every per-season key.
pub fn clear_keys(store: &mut Store) -> Result<Vec<String>, StoreError> {
    let mut keys: Vec<String> = store.keys.data_keys().to_vec();
    keys.extend(store.scan(&store.keys.tournaments_season_pattern())?);
    store.delete(&keys)
}

/// The seed's `get_season_tournaments`.
pub fn season_tournaments(store: &mut Store, season_id: i64) -> serde_json::Value {
    let key = store.keys.tournaments_season(season_id);
    match store.get(&key) {
        Ok(Some(text)) => match parse_entry(&text) {
            Some(data) => {
                serde_json::json!({"status": "success", "data": data, "cache_key": key, "source": "redis"})
            }
            None => {
                serde_json::json!({"status": "error", "data": null, "cache_key": key, "source": "redis",
                                       "error": "the cached entry is not in the expected format"})
            }
        },
        Ok(None) => {
            serde_json::json!({"status": "not_found", "data": null, "cache_key": key, "source": "redis"})
        }
        Err(e) => {
            serde_json::json!({"status": "error", "data": null, "cache_key": key, "source": "redis", "error": e.to_string()})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::diff;
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
    fn entry_format_is_the_seeds() {
        let text = entry_json(["{\"a\":1}", "2"].into_iter(), now());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"data": [{"a": 1}, 2], "last_updated": "2026-11-25T12:00:00+00:00"})
        );
    }

    #[test]
    fn regroup_puts_child_matches_under_their_root() {
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
    fn no_change_writes_nothing() {
        let s = snapshot(&[(10, None, "a")], &[(1, 10, "")]);
        let batch = plan_writes(&Keys::default(), &s, &s, &diff(&s, &s), false, now());
        assert!(batch.is_empty());
    }

    #[test]
    fn cold_start_writes_every_key() {
        let s = snapshot(&[(10, None, "a")], &[(1, 10, "")]);
        let old = Snapshot::default();
        let keys = Keys::new("p:");
        let batch = plan_writes(&keys, &old, &s, &diff(&old, &s), false, now());
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
            false,
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
            false,
            now(),
        );
        assert_eq!(batch.keys_written(), vec!["tournament_matches"]);
        // rewrite_all writes everything even without changes.
        let batch = plan_writes(&Keys::default(), &old, &old, &diff(&old, &old), true, now());
        assert_eq!(batch.sets.len(), 6);
    }
}
