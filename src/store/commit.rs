//! The commit marker, and the check every run starts with: does Redis still
//! hold what the last commit left (DESIGN.md section 3: Redis, not memory,
//! is the truth)?
//!
//! Each run that writes puts a marker in its own transaction: who committed
//! (lease epoch, time, instance, run) and, for every data key, its length
//! and last bytes (which hold its `last_updated`). The check is one script
//! run in Redis (`EVALSHA`, about 70 bytes a run): it compares each data key
//! with the marker's record (type, length, last bytes), finds bookkeeping
//! keys of the wrong type, and returns the marker's first line and the two
//! small bookkeeping values every run reads. A restore from an older RDB,
//! a failover to a replica that missed the last writes, another writer, a
//! deleted, emptied, edited or older copy of a key all show; an edit that
//! keeps a key's length and its last bytes does not (it costs a full read to
//! see, which a run does not pay).

use std::collections::BTreeMap;
use std::fmt;

use super::{Entry, Keys, Store, StoreError, WriteBatch};

/// Bytes of each data key's end the marker records (its `last_updated` and
/// the characters before it).
pub const TAIL: usize = 32;

const MARKER_TAG: &str = "precache-commit v1";

/// Who committed, ordered by lease epoch then time: a later commit is a
/// newer state of the cache, whoever wrote it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CommitId {
    pub epoch: u64,
    pub at_ms: i64,
    pub instance: String,
    pub run_id: String,
}

impl CommitId {
    /// Stands for "no commit known" (sorts before every real one).
    pub fn none() -> CommitId {
        CommitId {
            epoch: 0,
            at_ms: 0,
            instance: "-".into(),
            run_id: "-".into(),
        }
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run {} of {} (epoch {})",
            self.run_id, self.instance, self.epoch
        )
    }
}

/// What the marker records of one data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMark {
    pub len: u64,
    pub tail: String,
}

impl KeyMark {
    pub fn of(entry: &Entry) -> KeyMark {
        KeyMark {
            len: entry.len() as u64,
            tail: entry.tail(TAIL),
        }
    }

    /// The mark of a value read back whole.
    pub fn of_text(text: &str) -> KeyMark {
        let bytes = text.as_bytes();
        let tail = &bytes[bytes.len().saturating_sub(TAIL)..];
        KeyMark {
            len: bytes.len() as u64,
            tail: String::from_utf8_lossy(tail).into_owned(),
        }
    }
}

/// The marker: the last commit and every data key as it left them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    pub id: CommitId,
    pub keys: BTreeMap<String, KeyMark>,
}

impl CommitRecord {
    /// `precache-commit v1 EPOCH AT_MS INSTANCE RUN_ID`, then a line
    /// `KEY<TAB>LEN<TAB>TAIL` per data key.
    pub fn to_text(&self) -> String {
        let id = &self.id;
        let mut text = format!(
            "{MARKER_TAG} {} {} {} {}\n",
            id.epoch,
            id.at_ms,
            clean(&id.instance),
            clean(&id.run_id)
        );
        for (key, mark) in &self.keys {
            text.push_str(&format!("{key}\t{}\t{}\n", mark.len, clean(&mark.tail)));
        }
        text
    }

    /// The marker as stored; `None` when it is not one.
    pub fn from_text(text: &str) -> Option<CommitRecord> {
        let mut lines = text.lines();
        let id = parse_id(lines.next()?)?;
        let mut keys = BTreeMap::new();
        for line in lines {
            let mut parts = line.splitn(3, '\t');
            let (key, len, tail) = (parts.next()?, parts.next()?, parts.next()?);
            let mark = KeyMark {
                len: len.parse().ok()?,
                tail: tail.to_string(),
            };
            keys.insert(key.to_string(), mark);
        }
        Some(CommitRecord { id, keys })
    }

    /// The record after `batch` is applied, committed as `id`: its values
    /// marked, its deleted keys gone.
    pub fn after(&self, batch: &WriteBatch, id: CommitId) -> CommitRecord {
        let mut keys = self.keys.clone();
        for (key, entry) in &batch.sets {
            keys.insert(key.clone(), KeyMark::of(entry));
        }
        for key in &batch.dels {
            keys.remove(key);
        }
        CommitRecord { id, keys }
    }
}

/// The marker's first line.
fn parse_id(line: &str) -> Option<CommitId> {
    let rest = line.strip_prefix(MARKER_TAG)?.trim();
    let mut parts = rest.split(' ');
    Some(CommitId {
        epoch: parts.next()?.parse().ok()?,
        at_ms: parts.next()?.parse().ok()?,
        instance: parts.next()?.to_string(),
        run_id: parts.next()?.to_string(),
    })
}

/// A field of the marker: no whitespace that would split it.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect()
}

/// What the check found in Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// The last commit, as the marker names it; `None`: no marker, or one
    /// that cannot be read.
    pub id: Option<CommitId>,
    /// Data keys the marker records whose value is not what it recorded.
    pub mismatched: Vec<String>,
    /// Bookkeeping keys of the wrong type, with the type found.
    pub wrong_type: Vec<(String, String)>,
    /// `precache:shrink` and `precache:poll`, when they are strings.
    pub shrink: Option<String>,
    pub poll: Option<String>,
    /// An operator's `once --accept-shrink` asked the leader to accept the
    /// shrink it holds (who asked, and when).
    pub accept_requested: Option<String>,
    /// What a reload reads besides, gathered by the same script so that a
    /// run reading the cache from Redis (every `once`) sends no command of
    /// its own for it.
    pub found: Found,
}

/// The cache's shape as the check found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The marker's whole text, when it is a string.
    pub marker: Option<String>,
    /// Each of the seed's five data keys that is a string, with its length
    /// (a key absent here is absent or of another type).
    pub data: BTreeMap<String, usize>,
    /// The seed's data keys of another type than string, with it.
    pub data_wrong_type: BTreeMap<String, String>,
    /// The type of `precache:match_bodies` (`none` when absent).
    pub match_bodies_type: String,
    /// `precache:match_roots`, when it is a string.
    pub match_roots: Option<String>,
}

/// The check, in Redis's Lua: built from [`Keys`], so the key names are
/// spelled once.
fn check_script(keys: &Keys) -> String {
    let bookkeeping: Vec<String> = keys
        .bookkeeping()
        .iter()
        .map(|(key, ty)| format!("{{{},{}}}", lua_string(key), lua_string(ty)))
        .collect();
    format!(
        r#"
local function ty(k) return redis.call('TYPE', k)['ok'] end
local marker_key = {marker}
local head = false
local bad = {{}}
if ty(marker_key) == 'string' then
  local marker = redis.call('GET', marker_key)
  local first = true
  for line in string.gmatch(marker, '[^\n]+') do
    if first then
      head = line
      first = false
    else
      local key, len, tail = string.match(line, '^([^\t]+)\t(%d+)\t(.*)$')
      if key then
        local same = ty(key) == 'string' and redis.call('STRLEN', key) == tonumber(len)
        if same and #tail > 0 then
          same = redis.call('GETRANGE', key, -#tail, -1) == tail
        end
        if not same then bad[#bad + 1] = key end
      end
    end
  end
end
local wrong = {{}}
for _, pair in ipairs({{{bookkeeping}}}) do
  local t = ty(pair[1])
  if t ~= 'none' and t ~= pair[2] then
    wrong[#wrong + 1] = pair[1]
    wrong[#wrong + 1] = t
  end
end
local function text(k)
  if ty(k) == 'string' then return redis.call('GET', k) end
  return false
end
local data = {{}}
for _, k in ipairs({{{data}}}) do
  local t = ty(k)
  data[#data + 1] = k
  data[#data + 1] = t
  data[#data + 1] = t == 'string' and redis.call('STRLEN', k) or 0
end
return {{head, bad, wrong, text({shrink}), text({poll}), text({accept}),
  text(marker_key), data, ty({bodies}), text({roots})}}
"#,
        marker = lua_string(&keys.commit_marker()),
        bookkeeping = bookkeeping.join(","),
        data = keys
            .data_keys()
            .iter()
            .map(|k| lua_string(k))
            .collect::<Vec<_>>()
            .join(","),
        bodies = lua_string(&keys.match_bodies()),
        roots = lua_string(&keys.match_roots()),
        shrink = lua_string(&keys.shrink_state()),
        poll = lua_string(&keys.poll_state()),
        accept = lua_string(&keys.accept_shrink_request()),
    )
}

/// A Lua string literal holding `text` exactly.
pub(super) fn lua_string(text: &str) -> String {
    let mut out = String::from("\"");
    for byte in text.bytes() {
        match byte {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(byte as char);
            }
            0x20..=0x7e => out.push(byte as char),
            // Three digits: `\9` before a digit would swallow it.
            _ => out.push_str(&format!("\\{byte:03}")),
        }
    }
    out.push('"');
    out
}

impl Store {
    /// The per-run check (one `EVALSHA`; the script is loaded once per
    /// Redis, `EVAL`ed again only after a restart emptied its cache).
    pub fn check_commit(&mut self) -> Result<Check, StoreError> {
        let script = redis::Script::new(&check_script(&self.keys));
        let reply: redis::Value = self.with("checking the commit marker", |c| {
            script.prepare_invoke().invoke(c)
        })?;
        Ok(parse_check(reply))
    }
}

impl Check {
    /// The marker's record (on a reload, when it is needed).
    pub fn commit_record(&self) -> Option<CommitRecord> {
        self.found
            .marker
            .as_deref()
            .and_then(CommitRecord::from_text)
    }
}

fn text_of(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        redis::Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

fn texts_of(value: Option<&redis::Value>) -> Vec<String> {
    match value {
        Some(redis::Value::Array(items)) => items.iter().filter_map(text_of).collect(),
        _ => Vec::new(),
    }
}

fn parse_check(reply: redis::Value) -> Check {
    let items = match reply {
        redis::Value::Array(items) => items,
        _ => Vec::new(),
    };
    let wrong = texts_of(items.get(2));
    Check {
        id: items.first().and_then(text_of).and_then(|l| parse_id(&l)),
        mismatched: texts_of(items.get(1)),
        wrong_type: wrong
            .chunks(2)
            .filter_map(|pair| Some((pair.first()?.clone(), pair.get(1)?.clone())))
            .collect(),
        shrink: items.get(3).and_then(text_of),
        poll: items.get(4).and_then(text_of),
        accept_requested: items.get(5).and_then(text_of),
        found: found_of(&items),
    }
}

fn found_of(items: &[redis::Value]) -> Found {
    let mut found = Found {
        marker: items.get(6).and_then(text_of),
        match_bodies_type: items
            .get(8)
            .and_then(text_of)
            .unwrap_or_else(|| "none".into()),
        match_roots: items.get(9).and_then(text_of),
        ..Found::default()
    };
    if let Some(redis::Value::Array(data)) = items.get(7) {
        for triple in data.chunks(3) {
            let [key, kind, len] = triple else { continue };
            let (Some(key), Some(kind)) = (text_of(key), text_of(kind)) else {
                continue;
            };
            match (kind.as_str(), len) {
                ("string", redis::Value::Int(len)) => {
                    found.data.insert(key, (*len).max(0) as usize);
                }
                ("none", _) => {}
                _ => {
                    found.data_wrong_type.insert(key, kind);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RawJson;
    use chrono::{DateTime, Utc};

    fn id(epoch: u64, at_ms: i64) -> CommitId {
        CommitId {
            epoch,
            at_ms,
            instance: "vm 1:42".into(),
            run_id: "r1".into(),
        }
    }

    #[test]
    fn a_marker_reads_back_as_written() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let entry = Entry::new([RawJson::from("{\"a\":1}")].into_iter(), now);
        let record = CommitRecord {
            id: id(3, 1000),
            keys: BTreeMap::new(),
        };
        let batch = WriteBatch {
            sets: vec![("p:valid_seasons".into(), entry.clone())],
            ..WriteBatch::default()
        };
        let after = record.after(&batch, id(3, 2000));
        let mark = &after.keys["p:valid_seasons"];
        assert_eq!(mark.len as usize, entry.to_text().len());
        assert!(entry.to_text().ends_with(&mark.tail));
        assert_eq!(mark.tail.len(), TAIL);
        assert_eq!(*mark, KeyMark::of_text(&entry.to_text()));
        let text = after.to_text();
        let back = CommitRecord::from_text(&text).unwrap();
        assert_eq!(back.keys, after.keys);
        assert_eq!(back.id.instance, "vm_1:42", "no whitespace in a field");
        assert!(CommitRecord::from_text("garbage").is_none());
        // Deleted keys leave the record.
        let gone = after.after(
            &WriteBatch {
                dels: vec!["p:valid_seasons".into()],
                ..WriteBatch::default()
            },
            id(3, 3000),
        );
        assert!(gone.keys.is_empty());
    }

    #[test]
    fn commits_order_by_epoch_then_time() {
        assert!(id(2, 1) > id(1, 999));
        assert!(id(1, 2) > id(1, 1));
    }

    #[test]
    fn lua_strings_hold_any_key() {
        assert_eq!(lua_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(lua_string("é"), "\"\\195\\169\"");
        assert_eq!(lua_string("\t1"), "\"\\0091\"");
    }
}
