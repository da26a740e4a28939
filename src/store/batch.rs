//! A run's writes (the seed's entry format, one [`WriteBatch`]) and the
//! writer thread that applies each in one MULTI/EXEC, so a reader sees the
//! old state or the new one, never half.

use chrono::{DateTime, SecondsFormat, Utc};
use crossbeam_channel::{Receiver, Sender};

use redis::ConnectionLike;

use super::{Store, StoreError};
use crate::model::RawJson;

/// A data key's value, `{"data": [...], "last_updated": "..."}` (the
/// seed's entry format), kept as the records' shared texts until it is
/// written: the 20 MB match list (200 MB at 10x) never exists as one
/// string in our memory, it is streamed into the transaction in slices.
#[derive(Debug, Clone)]
pub struct Entry {
    head: &'static str,
    items: Vec<RawJson>,
    tail: String,
}

impl Entry {
    pub fn new(items: impl Iterator<Item = RawJson>, last_updated: DateTime<Utc>) -> Entry {
        Entry {
            head: "{\"data\":[",
            items: items.collect(),
            // Microseconds, as the original's `isoformat()` wrote them: each
            // commit's values end differently, which the commit marker's
            // check relies on (an older copy of a key shows).
            tail: format!(
                "],\"last_updated\":\"{}\"}}",
                last_updated.to_rfc3339_opts(SecondsFormat::Micros, false)
            ),
        }
    }

    /// Bytes of the value.
    pub fn len(&self) -> usize {
        let items: usize = self.items.iter().map(|i| i.len()).sum();
        self.head.len() + items + self.items.len().saturating_sub(1) + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The value's bytes, in order, as pieces.
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        let items = self.items.iter().enumerate().flat_map(|(i, item)| {
            let comma: &[u8] = if i > 0 { b"," } else { b"" };
            [comma, item.as_bytes()]
        });
        std::iter::once(self.head.as_bytes())
            .chain(items)
            .chain(std::iter::once(self.tail.as_bytes()))
    }

    /// The value's last `n` bytes (all of it when shorter), as text: what
    /// the commit marker records of it (`store::commit`). Our values end in
    /// ASCII (`"last_updated":"…"}`), so no character is cut.
    pub fn tail(&self, n: usize) -> String {
        let mut tail: Vec<u8> = Vec::with_capacity(n);
        let pieces: Vec<&[u8]> = self.pieces().collect();
        for piece in pieces.iter().rev() {
            let room = n - tail.len();
            let take = piece.len().min(room);
            let mut part = piece[piece.len() - take..].to_vec();
            part.extend_from_slice(&tail);
            tail = part;
            if tail.len() == n {
                break;
            }
        }
        String::from_utf8_lossy(&tail).into_owned()
    }

    /// The whole value as one string (tests, tools).
    pub fn to_text(&self) -> String {
        let mut out = Vec::with_capacity(self.len());
        for piece in self.pieces() {
            out.extend_from_slice(piece);
        }
        // Made of `&str` pieces only.
        String::from_utf8(out).unwrap_or_default()
    }
}

/// One run's writes: data keys set and deleted, our bookkeeping, and the
/// warm-up tasks the run enqueues. They go in one MULTI/EXEC, so the cache never holds a
/// change whose warm-up was lost, nor a warm-up for a change not written.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub sets: Vec<(String, Entry)>,
    pub dels: Vec<String>,
    /// Our own keys that go with the data (`precache:`): set (`Some`) or
    /// deleted (`None`) in the same transaction, not counted as data written.
    pub bookkeeping: Vec<(String, Option<String>)>,
    /// More commands for the same transaction: the warm-up schedule's
    /// entries for the run (built by `store::enqueue_commands`; `warmer::schedule` reads and settles them).
    pub commands: Vec<redis::Cmd>,
    /// The lease value this batch is written under: the transaction is
    /// applied only while `precache:leader` holds it (`store::lease`).
    pub fence: Option<String>,
    /// The master (found through Sentinel) the run read its baseline
    /// from: a batch diffed against one master is not applied to another
    /// (a failover between the read and the write; the new master may
    /// lack what the diff took for granted). The next run reads the new one.
    pub read_from_master: Option<String>,
}

/// Why a batch was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// Another instance holds the lease: nothing of the batch was written.
    Fenced {
        holder: Option<String>,
    },
    Store(StoreError),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Fenced { holder: Some(h) } => write!(
                f,
                "fenced: the leader lease is {}'s now, nothing of this run was written",
                super::lease::holder_of(h)
            ),
            ApplyError::Fenced { holder: None } => {
                f.write_str("fenced: the leader lease expired, nothing of this run was written")
            }
            ApplyError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError::Store(e)
    }
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
            && self.dels.is_empty()
            && self.bookkeeping.is_empty()
            && self.commands.is_empty()
    }
    /// Bytes of values written.
    pub fn bytes(&self) -> usize {
        self.sets.iter().map(|(_, v)| v.len()).sum()
    }
    pub fn keys_written(&self) -> Vec<&str> {
        self.sets.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Bytes per `SET`/`APPEND` of a streamed value, and per write to the socket.
const WRITE_SLICE: usize = 1 << 20;

/// Commands of one transaction, packed and sent in slices of about
/// [`WRITE_SLICE`] bytes; each is answered `QUEUED` (`OK` for `MULTI`).
struct Transaction<'a> {
    conn: &'a mut redis::Connection,
    packed: Vec<u8>,
    queued: usize,
}

impl Transaction<'_> {
    fn push(&mut self, command: &redis::Cmd) -> redis::RedisResult<()> {
        command.write_packed_command(&mut self.packed);
        self.queued += 1;
        if self.packed.len() >= WRITE_SLICE {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> redis::RedisResult<()> {
        if self.queued > 0 {
            let replies = self
                .conn
                .req_packed_commands(&self.packed, 0, self.queued)?;
            // A command Redis refused to queue: the transaction is void
            // (the connection is dropped, which discards it).
            if let Some(redis::Value::ServerError(e)) = replies
                .into_iter()
                .find(|r| matches!(r, redis::Value::ServerError(_)))
            {
                return Err(e.into());
            }
        }
        self.packed.clear();
        self.queued = 0;
        Ok(())
    }

    /// A value as `SET key slice` then `APPEND key slice`…: still one
    /// atomic change, since it is inside the transaction.
    fn set(&mut self, key: &str, value: &Entry) -> redis::RedisResult<()> {
        let mut slice: Vec<u8> = Vec::with_capacity(value.len().min(WRITE_SLICE));
        let mut first = true;
        let send = |tx: &mut Self, slice: &mut Vec<u8>, first: &mut bool| {
            let verb = if *first { "SET" } else { "APPEND" };
            *first = false;
            let result = tx.push(redis::cmd(verb).arg(key).arg(&slice[..]));
            slice.clear();
            result
        };
        for piece in value.pieces() {
            let mut piece = piece;
            while !piece.is_empty() {
                let room = WRITE_SLICE - slice.len();
                let (now, later) = piece.split_at(piece.len().min(room));
                slice.extend_from_slice(now);
                piece = later;
                if slice.len() == WRITE_SLICE {
                    send(self, &mut slice, &mut first)?;
                }
            }
        }
        if first || !slice.is_empty() {
            send(self, &mut slice, &mut first)?;
        }
        Ok(())
    }
}

/// Transactions tried while the lease key is touched but still ours.
const APPLY_TRIES: usize = 5;

impl Store {
    /// Applies a batch in one MULTI/EXEC. Values are streamed in slices,
    /// so the connection never holds a whole 20 MB value either. With a
    /// fence, under `WATCH precache:leader` and only while the lease holds
    /// the fence's value. A nil EXEC means the watched key was touched:
    /// while it still holds our value (our own renewal's `PEXPIRE`) the
    /// transaction is tried again; once it does not, it is
    /// [`ApplyError::Fenced`] and nothing was written.
    ///
    /// The `WATCH` (a `PING` without a fence) goes first on a connection
    /// that may be retried fresh (the writer idles a whole interval, and
    /// Redis may have restarted meanwhile); the transaction itself is never
    /// repeated on another connection, where it would run unwatched.
    pub fn apply(&mut self, batch: &WriteBatch) -> Result<(), ApplyError> {
        if batch.is_empty() {
            return Ok(());
        }
        let leader = self.keys.leader();
        let mut holder = None;
        for _ in 0..APPLY_TRIES {
            match &batch.fence {
                Some(fence) => {
                    holder = self.with("watching the leader lease", |c| {
                        redis::cmd("WATCH").arg(&leader).query::<()>(c)?;
                        redis::cmd("GET").arg(&leader).query::<Option<String>>(c)
                    })?;
                    if holder.as_deref() != Some(fence.as_str()) {
                        let _ = self.with("UNWATCH", |c| redis::cmd("UNWATCH").query::<()>(c));
                        return Err(ApplyError::Fenced { holder });
                    }
                }
                None => self.ping()?,
            }
            // The WATCH or PING above found the master (again, after a
            // lost connection): the one this batch was diffed against?
            if let Some(read_from) = &batch.read_from_master
                && self.master() != Some(read_from.as_str())
            {
                let _ = self.with("UNWATCH", |c| redis::cmd("UNWATCH").query::<()>(c));
                return Err(ApplyError::Store(StoreError {
                    kind: Default::default(),
                    doing: "writing a run (MULTI/EXEC)".into(),
                    reason: format!(
                        "the Redis master changed during the run ({read_from} → {}): nothing written; the next run reads the cache from the new master",
                        self.master().unwrap_or("?")
                    ),
                }));
            }
            if self.exec(batch)? {
                return Ok(());
            }
        }
        // Touched again and again while still ours: say so, not "fenced".
        Err(ApplyError::Store(StoreError {
            kind: Default::default(),
            doing: "writing a run (MULTI/EXEC)".into(),
            reason: format!(
                "the leader lease changed under {APPLY_TRIES} tries though it still holds {}",
                holder.unwrap_or_default()
            ),
        }))
    }

    /// The transaction itself; false when a watched key changed (EXEC nil).
    fn exec(&mut self, batch: &WriteBatch) -> Result<bool, StoreError> {
        self.with_once("writing a run (MULTI/EXEC)", |conn| {
            let mut tx = Transaction {
                conn,
                packed: Vec::new(),
                queued: 0,
            };
            tx.push(&redis::cmd("MULTI"))?;
            for (key, value) in &batch.sets {
                tx.set(key, value)?;
            }
            for key in &batch.dels {
                tx.push(redis::cmd("DEL").arg(key))?;
            }
            for (key, value) in &batch.bookkeeping {
                match value {
                    Some(value) => tx.push(redis::cmd("SET").arg(key).arg(value))?,
                    None => tx.push(redis::cmd("DEL").arg(key))?,
                }
            }
            for command in &batch.commands {
                tx.push(command)?;
            }
            tx.flush()?;
            match redis::cmd("EXEC").query::<redis::Value>(tx.conn)? {
                redis::Value::Array(results) => {
                    for result in results {
                        if let redis::Value::ServerError(e) = result {
                            return Err(e.into());
                        }
                    }
                    Ok(true)
                }
                redis::Value::Nil => Ok(false),
                other => Err(redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "EXEC did not answer a list",
                    format!("{other:?}"),
                ))),
            }
        })
    }
}

/// Sent to the writer thread; the outcome comes back on `reply`.
pub struct WriteRequest {
    pub batch: WriteBatch,
    pub reply: Sender<Result<(), ApplyError>>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entry_format_is_the_seeds() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let entry = Entry::new(
            [RawJson::from("{\"a\":1}"), RawJson::from("2")].into_iter(),
            now,
        );
        let text = entry.to_text();
        assert_eq!(entry.len(), text.len());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"data": [{"a": 1}, 2], "last_updated": "2026-11-25T12:00:00.000000+00:00"})
        );
    }
}
