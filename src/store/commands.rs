//! The seed's utilities over the cache (clear, a season's tournaments) and
//! the run history.

use std::time::Duration;

use serde::Serialize;

use super::commit::lua_string;
use super::snapshot::parse_entry;
use super::{ApplyError, Store, StoreError};

impl Store {
    /// Records a run atomically: its stats pushed onto the history
    /// (keeping the newest `keep`) and, with adaptive polling, the poll
    /// state after it; fenced by the lease like the run's own writes. One
    /// script, so the fence costs no `WATCH` round trip and a no-change
    /// run sends Redis little besides the stats (DESIGN.md section 9). A
    /// history of another type is replaced.
    pub fn push_history(
        &mut self,
        stats_json: &str,
        keep: usize,
        poll_state: Option<&str>,
        fence: Option<&str>,
    ) -> Result<(), ApplyError> {
        let keys = &self.keys;
        let script = redis::Script::new(&format!(
            r#"
local leader, runs, poll = {leader}, {runs}, {poll}
if ARGV[1] ~= '' then
  local holder = false
  if redis.call('TYPE', leader)['ok'] == 'string' then holder = redis.call('GET', leader) end
  if holder ~= ARGV[1] then return {{0, holder}} end
end
if ARGV[3] ~= '' then redis.call('SET', poll, ARGV[3]) end
local kind = redis.call('TYPE', runs)['ok']
if kind ~= 'list' and kind ~= 'none' then redis.call('DEL', runs) end
redis.call('LPUSH', runs, ARGV[4])
redis.call('LTRIM', runs, 0, tonumber(ARGV[2]))
return {{1, false}}
"#,
            leader = lua_string(&keys.leader()),
            runs = lua_string(&keys.run_history()),
            poll = lua_string(&keys.poll_state()),
        ));
        let (done, holder): (i64, Option<String>) = self
            .with_once("recording the run in the history", |c| {
                script
                    .arg(fence.unwrap_or(""))
                    .arg(keep.saturating_sub(1))
                    .arg(poll_state.unwrap_or(""))
                    .arg(stats_json)
                    .invoke(c)
            })
            .map_err(ApplyError::Store)?;
        match done {
            1 => Ok(()),
            _ => Err(ApplyError::Fenced { holder }),
        }
    }

    /// Asks the leader to accept the shrink it holds in its next run (an
    /// operator's `once --accept-shrink` while another instance leads);
    /// the request lapses after `lapses`.
    pub fn request_accept_shrink(
        &mut self,
        asked: &str,
        lapses: Duration,
    ) -> Result<(), StoreError> {
        let key = self.keys.accept_shrink_request();
        self.with("asking the leader to accept the shrink", |c| {
            redis::cmd("SET")
                .arg(&key)
                .arg(asked)
                .arg("PX")
                .arg(lapses.as_millis().max(1) as u64)
                .query::<()>(c)
        })
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
}

/// What `precache clear` removed.
#[derive(Debug, Serialize)]
pub struct Cleared {
    pub deleted_keys: Vec<String>,
    pub deleted_files: Vec<String>,
}

/// The seed's `clear_precache_data`: the data keys and every per-season key.
///
/// One transaction, fenced by `fence` (the lease the clearing instance
/// holds): an instance that lost the lease deletes nothing.
pub fn clear_keys(store: &mut Store, fence: Option<&str>) -> Result<Vec<String>, ApplyError> {
    let mut keys: Vec<String> = store.keys.data_keys().to_vec();
    keys.extend(store.scan(&store.keys.tournaments_season_pattern())?);
    let mut present = Vec::new();
    for key in keys {
        let n: usize = store.with(&format!("EXISTS {key}"), |c| {
            redis::cmd("EXISTS").arg(&key).query(c)
        })?;
        if n > 0 {
            present.push(key);
        }
    }
    store.apply(&super::WriteBatch {
        dels: present.clone(),
        fence: fence.map(str::to_string),
        ..super::WriteBatch::default()
    })?;
    Ok(present)
}

/// What the cache holds for one season (the seed's `get_season_tournaments`).
#[derive(Debug, Clone, PartialEq)]
pub enum SeasonLookup {
    Found {
        key: String,
        data: Vec<serde_json::Value>,
    },
    NotFound {
        key: String,
    },
    /// The key holds something that is not a `{"data": [...]}` entry.
    Malformed {
        key: String,
    },
}

impl SeasonLookup {
    /// The seed's answer: `{"status", "data", "cache_key", "source"}`.
    pub fn seed_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            SeasonLookup::Found { key, data } => {
                json!({"status": "success", "data": data, "cache_key": key, "source": "redis"})
            }
            SeasonLookup::NotFound { key } => {
                json!({"status": "not_found", "data": null, "cache_key": key, "source": "redis"})
            }
            SeasonLookup::Malformed { key } => json!({
                "status": "error", "data": null, "cache_key": key, "source": "redis",
                "error": "the cached entry is not in the expected format"
            }),
        }
    }
}

/// The seed's `get_season_tournaments`.
pub fn season_tournaments(store: &mut Store, season_id: i64) -> Result<SeasonLookup, StoreError> {
    let key = store.keys.tournaments_season(season_id);
    Ok(match store.get(&key)? {
        None => SeasonLookup::NotFound { key },
        Some(text) => match parse_entry(&text) {
            Some(data) => SeasonLookup::Found { key, data },
            None => SeasonLookup::Malformed { key },
        },
    })
}
