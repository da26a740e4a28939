//! The warm-up schedule's Redis layout, and everything that reads or
//! writes it: a sorted set of tasks by due time (`precache:warm:due`,
//! member = the proxy key without `GET:`), a hash of each task's refresh
//! deadline and one of consecutive failures (names from `store::Keys`).
//! Runs enqueue inside their own transaction (`store::enqueue_commands`,
//! below the run's planning, which cannot import this module); the
//! scheduler [`poll`]s; a worker [`settle`]s each task with one script; on
//! start, keys in an old spelling are migrated.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::{Keys, Store, StoreError, WarmEnqueue, WriteBatch, enqueue_commands};
use crate::warm::plan::{self, Next, WarmTarget};

/// Puts tasks in the schedule outside a run (tests, tools): due at `due`,
/// refreshed until `refresh_until`. Runs enqueue through their own batch.
pub fn enqueue(
    store: &mut Store,
    targets: &[WarmTarget],
    due: DateTime<Utc>,
    refresh_until: DateTime<Utc>,
) -> Result<(), StoreError> {
    let enqueue = WarmEnqueue {
        members: targets.iter().map(WarmTarget::key).collect(),
        due_ms: due.timestamp_millis(),
        refresh_until_ms: refresh_until.timestamp_millis(),
    };
    store
        .apply(&WriteBatch {
            commands: enqueue_commands(&store.keys, &enqueue),
            ..WriteBatch::default()
        })
        .map_err(|e| match e {
            crate::store::ApplyError::Store(e) => e,
            fenced => StoreError {
                kind: Default::default(),
                doing: "enqueueing warm-ups".into(),
                reason: fenced.to_string(),
            },
        })
}

/// A due task as handed to a worker.
#[derive(Debug, Clone)]
pub struct Task {
    pub member: String,
    pub target: WarmTarget,
    /// The score it had when handed out; settling compares against it.
    pub claimed_ms: i64,
    pub refresh_until: DateTime<Utc>,
    pub failures: u32,
}

/// What a poll found.
#[derive(Debug, Default)]
pub struct Polled {
    /// Due tasks, at most the limit asked for.
    pub tasks: Vec<Task>,
    /// Tasks due now.
    pub due: u64,
    /// Every task in the schedule.
    pub scheduled: u64,
    /// How overdue the oldest due task is (0 when none is).
    pub oldest_due_age_ms: i64,
}

/// Due tasks (at most `limit`), and the schedule's shape. Members that are
/// no warm-up key are removed.
pub fn poll(store: &mut Store, now: DateTime<Utc>, limit: usize) -> Result<Polled, StoreError> {
    let now_ms = now.timestamp_millis();
    let due_key = store.keys.warm_schedule();
    type Read = (Vec<(String, f64)>, u64, u64, Vec<(String, f64)>);
    let (due, due_count, scheduled, oldest): Read =
        store.with("polling the warm-up schedule", |c| {
            redis::pipe()
                .cmd("ZRANGEBYSCORE")
                .arg(&due_key)
                .arg("-inf")
                .arg(now_ms)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .cmd("ZCOUNT")
                .arg(&due_key)
                .arg("-inf")
                .arg(now_ms)
                .cmd("ZCARD")
                .arg(&due_key)
                .cmd("ZRANGE")
                .arg(&due_key)
                .arg(0)
                .arg(0)
                .arg("WITHSCORES")
                .query(c)
        })?;
    let oldest_due_age_ms = oldest
        .first()
        .map(|(_, score)| now_ms - *score as i64)
        .filter(|age| *age > 0)
        .unwrap_or(0);
    let mut polled = Polled {
        tasks: Vec::new(),
        due: due_count,
        scheduled,
        oldest_due_age_ms,
    };
    if due.is_empty() {
        return Ok(polled);
    }

    let members: Vec<&String> = due.iter().map(|(m, _)| m).collect();
    let until_key = store.keys.warm_refresh_until();
    let failures_key = store.keys.warm_failures();
    let (until, failures): (Vec<Option<i64>>, Vec<Option<u32>>) =
        store.with("reading warm-up task details", |c| {
            redis::pipe()
                .cmd("HMGET")
                .arg(&until_key)
                .arg(&members)
                .cmd("HMGET")
                .arg(&failures_key)
                .arg(&members)
                .query(c)
        })?;
    let mut tasks = Vec::with_capacity(due.len());
    let mut unknown = Vec::new();
    for (i, (member, score)) in due.iter().enumerate() {
        let Some(target) = WarmTarget::parse(member) else {
            unknown.push(member.clone());
            continue;
        };
        let refresh_until = until
            .get(i)
            .copied()
            .flatten()
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or(now);
        tasks.push(Task {
            member: member.clone(),
            target,
            claimed_ms: *score as i64,
            refresh_until,
            failures: failures.get(i).copied().flatten().unwrap_or(0),
        });
    }
    if !unknown.is_empty() {
        log::warn!(
            "warm-up schedule holds {} member(s) that are no warm-up key; removing them: {:?}",
            unknown.len(),
            unknown
        );
        store.with("removing unknown warm-up members", |c| {
            redis::cmd("ZREM")
                .arg(&due_key)
                .arg(&unknown)
                .query::<()>(c)
        })?;
    }
    polled.tasks = tasks;
    Ok(polled)
}
/// Stores the answer (when good) and moves the task on, unless it was
/// re-enqueued while being fetched (its score changed): then it stays due.
/// With a fence (`ARGV[8]`), nothing is done unless the leader lease
/// (`KEYS[6]`) still holds it: -1.
const SETTLE_SCRIPT: &str = r#"
if ARGV[8] ~= '' then
  if redis.call('TYPE', KEYS[6])['ok'] ~= 'string' or redis.call('GET', KEYS[6]) ~= ARGV[8] then
    return -1
  end
end
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[6])
  redis.call('SET', KEYS[5], ARGV[5], 'PX', ARGV[6])
end
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not current or tonumber(current) ~= tonumber(ARGV[2]) then
  return 0
end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  if ARGV[7] == '0' then
    redis.call('HDEL', KEYS[3], ARGV[1])
  else
    redis.call('HSET', KEYS[3], ARGV[1], ARGV[7])
  end
end
return 1
"#;

/// Settles a task in one script: stores `entry` (with its refresh record)
/// when there is one, and moves the task to `next` unless it was
/// re-enqueued while being fetched (its score changed): then it stays due.
/// With a `fence`, only while the leader lease holds it: `Ok(false)` when
/// it does not (nothing was done).
#[allow(clippy::too_many_arguments)]
pub fn settle(
    store: &mut Store,
    task: &Task,
    entry: Option<String>,
    next: Next,
    failures: u32,
    now: DateTime<Utc>,
    ttl: Duration,
    fence: Option<&str>,
) -> Result<bool, StoreError> {
    let keys = &store.keys;
    let refresh = entry
        .as_ref()
        .map(|_| plan::refresh_json(&task.target, task.refresh_until, ttl, now))
        .unwrap_or_default();
    let next_score = match next {
        Next::DueAt(at) => at.timestamp_millis().to_string(),
        Next::Drop => String::new(),
    };
    // Plain EVAL: the script is small, and redis-rs's Script helper
    // needs a feature (and a SHA-1 crate) for no gain here.
    let mut command = redis::cmd("EVAL");
    command
        .arg(SETTLE_SCRIPT)
        .arg(6)
        .arg(keys.warm_schedule())
        .arg(keys.warm_refresh_until())
        .arg(keys.warm_failures())
        .arg(keys.warm_entry(&task.member))
        .arg(keys.warm_refresh(&task.member))
        .arg(keys.leader())
        .arg(&task.member)
        .arg(task.claimed_ms)
        .arg(next_score)
        .arg(entry.unwrap_or_default())
        .arg(refresh)
        .arg(ttl.as_millis() as u64)
        .arg(failures)
        .arg(fence.unwrap_or_default());
    store
        .with(&format!("settling warm-up {}", task.member), |c| {
            command.query::<i64>(c)
        })
        .map(|settled| settled != -1)
}
/// Renames each old key (`KEYS[2i-1]`) to its new spelling (`KEYS[2i]`),
/// keeping its TTL; when the new one exists already it wins and the old
/// one goes. Returns how many old keys there were.
const RENAME_SCRIPT: &str = r#"
local moved = 0
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('RENAMENX', KEYS[i], KEYS[i + 1]) == 0 then
      redis.call('DEL', KEYS[i])
    end
    moved = moved + 1
  end
end
return moved
"#;

/// Moves schedule members from their old spelling (`ARGV[2i-1]`) to the
/// new one (`ARGV[2i]`) with their due time, deadline and failure count;
/// a task already scheduled under the new spelling keeps its own.
const MIGRATE_MEMBERS_SCRIPT: &str = r#"
local moved = 0
for i = 1, #ARGV, 2 do
  local old, new = ARGV[i], ARGV[i + 1]
  local score = redis.call('ZSCORE', KEYS[1], old)
  if score then
    redis.call('ZADD', KEYS[1], 'NX', score, new)
    redis.call('ZREM', KEYS[1], old)
    moved = moved + 1
  end
  for h = 2, 3 do
    local value = redis.call('HGET', KEYS[h], old)
    if value then
      redis.call('HSETNX', KEYS[h], new, value)
      redis.call('HDEL', KEYS[h], old)
    end
  end
end
return moved
"#;

/// Entries, refresh records and schedule members written before keys
/// followed the API proxy's rule (DESIGN.md section 5: the path
/// lowercased) are nowhere the proxy looks: move them to the key it
/// reads, so nothing keeps refreshing keys nobody reads. Idempotent.
pub fn migrate_legacy_keys(store: &mut Store) -> Result<usize, StoreError> {
    let keys = store.keys.clone();
    let members: Vec<String> = store.with("reading the warm-up schedule", |c| {
        redis::cmd("ZRANGE")
            .arg(keys.warm_schedule())
            .arg(0)
            .arg(-1)
            .query(c)
    })?;
    let renamed: Vec<(String, String)> = members
        .iter()
        .filter_map(|m| WarmTarget::parse_legacy(m).map(|t| (m.clone(), t.key())))
        .collect();
    let mut moved = 0;
    for chunk in renamed.chunks(500) {
        let mut command = redis::cmd("EVAL");
        command
            .arg(MIGRATE_MEMBERS_SCRIPT)
            .arg(3)
            .arg(keys.warm_schedule())
            .arg(keys.warm_refresh_until())
            .arg(keys.warm_failures());
        for (old, new) in chunk {
            command.arg(old).arg(new);
        }
        moved += store.with("migrating warm-up tasks", |c| command.query::<usize>(c))?;
    }
    // The spellings that changed: the paths with capitals.
    let legacy_prefixes = [
        crate::warm::plan::Endpoint::Team,
        crate::warm::plan::Endpoint::TeamMembers,
    ]
    .map(|e| {
        let legacy = WarmTarget::new(e, 0).legacy_key();
        let cut = legacy.find(['?', '0']).unwrap_or(legacy.len());
        legacy[..cut].to_string()
    });
    for prefix in legacy_prefixes {
        for (entry_key, build) in [
            (
                keys.warm_entry(&prefix),
                Keys::warm_entry as fn(&Keys, &str) -> String,
            ),
            (keys.warm_refresh(&prefix), Keys::warm_refresh),
        ] {
            let found = store.scan(&format!("{}*", crate::store::glob_escape(&entry_key)))?;
            let stem_len = entry_key.len() - prefix.len();
            let pairs: Vec<(String, String)> = found
                .into_iter()
                .filter_map(|old| {
                    let member = old.get(stem_len..)?;
                    let target = WarmTarget::parse_legacy(member)?;
                    Some((old.clone(), build(&keys, &target.key())))
                })
                .collect();
            for chunk in pairs.chunks(500) {
                let mut command = redis::cmd("EVAL");
                command.arg(RENAME_SCRIPT).arg(chunk.len() * 2);
                for (old, new) in chunk {
                    command.arg(old).arg(new);
                }
                moved += store.with("migrating warm-up entries", |c| command.query::<usize>(c))?;
            }
        }
    }
    Ok(moved)
}
