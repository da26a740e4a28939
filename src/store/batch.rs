//! A run's writes (the seed's entry format, one [`WriteBatch`]) and the
//! writer thread that applies each in one MULTI/EXEC, so a reader sees the
//! old state or the new one, never half.

use chrono::{DateTime, SecondsFormat, Utc};
use crossbeam_channel::{Receiver, Sender};

use super::{Store, StoreError};

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

/// One run's writes: data keys set and deleted, our bookkeeping, and the
/// warm-up tasks the run enqueues. They go in one MULTI/EXEC, so the cache never holds a
/// change whose warm-up was lost, nor a warm-up for a change not written.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub sets: Vec<(String, String)>,
    pub dels: Vec<String>,
    /// Our own keys that go with the data (`precache:`): set (`Some`) or
    /// deleted (`None`) in the same transaction, not counted as data written.
    pub bookkeeping: Vec<(String, Option<String>)>,
    /// More commands for the same transaction: the warm-up schedule's
    /// entries for the run (built by `warm::schedule`, which owns that layout).
    pub commands: Vec<redis::Cmd>,
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

impl Store {
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
        for command in &batch.commands {
            pipe.add_command(command.clone()).ignore();
        }
        self.with("writing a run (MULTI/EXEC)", |c| pipe.query::<()>(c))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entry_format_is_the_seeds() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let text = entry_json(["{\"a\":1}", "2"].into_iter(), now);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"data": [{"a": 1}, 2], "last_updated": "2026-11-25T12:00:00+00:00"})
        );
    }
}
