//! Redis: one reconnecting connection type and what is read and written
//! through it. `keys` spells every key; `batch` is a run's writes and the
//! writer thread; `snapshot` loads what the cache holds; `commands` are the
//! seed's utilities and the run history.
//!
//! The data keys and their `{"data": [...], "last_updated": RFC3339}` format
//! are the seed's (DESIGN.md section 5). Errors name the Redis they tried
//! only as `config::redacted_url` shows it: a URL may hold a password.

mod batch;
mod commands;
pub mod commit;
mod connect;
mod keys;
pub mod lease;
mod schedule;
mod snapshot;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub use batch::{ApplyError, Entry, WriteBatch, WriteRequest, spawn_writer};
pub use commands::{Cleared, SeasonLookup, clear_keys, season_tournaments};
pub use connect::{Connector, DISCOVERY_DEADLINE};
pub use keys::{Keys, glob_escape};
pub use schedule::{WarmEnqueue, enqueue_commands};
pub use snapshot::{LoadedSnapshot, parse_entry};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for one read or write on a connection (a stall between
/// bytes, not a whole 20 MB value): a master lost without a reset (a
/// frozen VM) is given up on after this, and the next connection finds
/// the new one. Redis answers in milliseconds; 10 s leaves room for a
/// fork or a slow script.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The smallest slice [`Store::get_large`] reads per round trip.
const READ_SLICE: usize = 4 << 20;
/// A large value is read in at most this many slices: at 10x scale
/// (190 MB) fixed 4 MiB slices took 46 GETRANGE commands, 4 KB sent to
/// Redis for a run that changed nothing (the target is 2 KB in all). Three
/// (not four, since the lease and the commit check take their share of
/// those 2 KB): 7 MB slices at norway, 63 MB at 10x.
const MAX_READ_SLICES: usize = 3;

/// The slice a value of `len` bytes is read in.
fn read_slice(len: usize) -> usize {
    READ_SLICE.max(len.div_ceil(MAX_READ_SLICES))
}

/// Why a Redis operation failed. A connection failure names the Redis it
/// tried, redacted (the URL may hold a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub doing: String,
    pub reason: String,
    pub kind: StoreErrorKind,
}

/// What the caller can make of a [`StoreError`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// Redis did not answer, or answered an error: it may pass.
    #[default]
    Failed,
    /// The configured TLS files or credentials were refused (a wrong CA,
    /// a certificate the server does not accept, a bad password): a
    /// configuration problem, which waiting will not fix.
    Rejected,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis: {}: {}", self.doing, self.reason)
    }
}

impl std::error::Error for StoreError {}

fn store_err(doing: &str) -> impl FnOnce(redis::RedisError) -> StoreError + '_ {
    move |e| StoreError {
        kind: connect::kind_of(&e),
        doing: doing.to_string(),
        reason: e.to_string(),
    }
}

/// Redis operations that failed, process-wide (exported as a metric).
static REDIS_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn redis_errors() -> u64 {
    REDIS_ERRORS.load(std::sync::atomic::Ordering::Relaxed)
}

/// How one try of a Redis operation failed.
enum Failure {
    Connect(StoreError),
    Command(redis::RedisError),
}

/// A synchronous Redis connection to the master that reconnects (and,
/// with Sentinel, finds the master again) on the next call after an error.
pub struct Store {
    connector: Connector,
    conn: Option<redis::Connection>,
    /// Where the current connection went, when Sentinel named it.
    master: Option<String>,
    pub keys: Keys,
}

impl Store {
    /// One node at `url` (the tests' and the simulator's Redis); connects
    /// lazily. A bad URL is reported here, without echoing it.
    pub fn new(url: &str, keys: Keys) -> Result<Store, StoreError> {
        Ok(Store::connected_by(Connector::from_url(url)?, keys))
    }

    /// The Redis `connector` reaches; connects lazily.
    pub fn connected_by(connector: Connector, keys: Keys) -> Store {
        Store {
            connector,
            conn: None,
            master: None,
            keys,
        }
    }

    /// Which Redis this is, as it may be shown (no password).
    pub fn target(&self) -> &str {
        self.connector.target()
    }

    /// The master the current connection went to, when Sentinel named it.
    pub fn master(&self) -> Option<&str> {
        self.master.as_deref()
    }

    /// How this store connects (and what its connections learnt).
    pub fn connector(&self) -> &Connector {
        &self.connector
    }

    fn conn(&mut self) -> Result<&mut redis::Connection, StoreError> {
        // Another thread found a new master: this connection may go to a
        // demoted one, which still answers reads.
        if self.conn.is_some()
            && self.master.is_some()
            && self.master != self.connector.current_master()
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            let connected = self.connector.connect()?;
            self.master = connected.master;
            self.conn = Some(connected.conn);
        }
        // Just set above when it was None.
        self.conn.as_mut().ok_or_else(|| StoreError {
            kind: Default::default(),
            doing: "connecting".into(),
            reason: "no connection".into(),
        })
    }

    /// Runs `f` on the connection; drops the connection on error so the next call reconnects.
    ///
    /// A connection kept from an earlier call may have died with a Redis
    /// restart in between (the writer thread idles for a whole interval), so
    /// a connection-level failure on a reused connection gets one retry on a
    /// fresh one. Use it only for what is safe to repeat (reads, scripts
    /// that check before they write); a transaction goes through
    /// [`Store::with_once`].
    pub(crate) fn with<T>(
        &mut self,
        doing: &str,
        f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.with_retry(doing, true, f)
    }

    /// As [`Store::with`], never repeated: a MULTI/EXEC whose reply was
    /// lost may have landed, and a repeat on a fresh connection would run
    /// without the `WATCH` of the first (unfenced) and append the change
    /// feed's entry twice. Its error means "outcome unknown".
    pub(crate) fn with_once<T>(
        &mut self,
        doing: &str,
        f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.with_retry(doing, false, f)
    }

    fn with_retry<T>(
        &mut self,
        doing: &str,
        retry: bool,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let reused = self.conn.is_some();
        let mut result = self.attempt(&mut f);
        // A master demoted by a failover answers READONLY: the next
        // connection finds the new one.
        if let Err(Failure::Command(e)) = &result
            && retry
            && (reused || self.connector.uses_sentinel())
            && (e.is_io_error()
                || e.is_connection_dropped()
                || e.is_unrecoverable_error()
                || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly))
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

    /// The server's replication role (`master`, `slave`, `sentinel`), from
    /// `ROLE`.
    pub fn role(&mut self) -> Result<String, StoreError> {
        let reply: redis::Value = self.with("ROLE", |c| redis::cmd("ROLE").query(c))?;
        match reply {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::BulkString(role)) => Ok(String::from_utf8_lossy(role).into()),
                Some(redis::Value::SimpleString(role)) => Ok(role.clone()),
                _ => Ok("unknown".into()),
            },
            _ => Ok("unknown".into()),
        }
    }

    pub fn get(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(&format!("GET {key}"), |c| {
            redis::cmd("GET").arg(key).query(c)
        })
    }

    /// A value that may be large (the 20 MB match list), read in slices of
    /// [`read_slice`] bytes under `WATCH` when it is larger than one slice:
    /// redis-rs keeps a read buffer the
    /// size of the largest reply for the connection's life, and a whole
    /// GET would hold it (32 MiB at norway) beside the value itself. The
    /// empty MULTI/EXEC at the end fails when a writer changed the key
    /// while it was read; then it is read again. `known_len`: its length as
    /// just found (the run's check), saving the `STRLEN`; the last slice
    /// asks for one byte more, so a value that grew since is read again.
    pub fn get_large(
        &mut self,
        key: &str,
        known_len: Option<usize>,
    ) -> Result<Option<String>, StoreError> {
        let doing = format!("reading {key}");
        let mut known = known_len;
        for _ in 0..5 {
            let (len, read) = self.with(&doing, |c| {
                let len: usize = match known {
                    Some(len) => len,
                    None => redis::cmd("STRLEN").arg(key).query(c)?,
                };
                if len <= READ_SLICE {
                    let value: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(c)?;
                    return Ok((len, Some(value)));
                }
                redis::cmd("WATCH").arg(key).query::<()>(c)?;
                let mut value = Vec::with_capacity(len);
                let slice = read_slice(len);
                while value.len() < len {
                    let end = (value.len() + slice).min(len + 1) - 1;
                    let part: Vec<u8> = redis::cmd("GETRANGE")
                        .arg(key)
                        .arg(value.len())
                        .arg(end)
                        .query(c)?;
                    if part.is_empty() {
                        break;
                    }
                    value.extend_from_slice(&part);
                }
                redis::cmd("MULTI").query::<()>(c)?;
                let unchanged = !matches!(redis::cmd("EXEC").query(c)?, redis::Value::Nil);
                Ok((
                    len,
                    (unchanged && value.len() == len).then_some(Some(value)),
                ))
            })?;
            known = None;
            if read_slice(len) > READ_SLICE {
                // The connection's read buffer grew to the slice (63 MiB
                // at 10x) and would keep that size for its life.
                self.conn = None;
            }
            if let Some(value) = read {
                return value
                    .map(|bytes| {
                        String::from_utf8(bytes).map_err(|_| StoreError {
                            kind: Default::default(),
                            doing: doing.clone(),
                            reason: "the value is not UTF-8".into(),
                        })
                    })
                    .transpose();
            }
        }
        Err(StoreError {
            kind: Default::default(),
            doing,
            reason: "the value changed every time it was read".into(),
        })
    }

    /// Bytes of each data key's value (0 when absent), by the seed's key name.
    pub fn data_sizes(&mut self) -> Result<BTreeMap<String, u64>, StoreError> {
        let names = self.keys.data_key_names();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_value_is_read_in_few_slices_and_a_small_one_in_4_mib_slices() {
        assert_eq!(read_slice(0), READ_SLICE);
        assert_eq!(read_slice(12_000_000), READ_SLICE);
        assert_eq!(read_slice(MAX_READ_SLICES * READ_SLICE), READ_SLICE);
        assert_eq!(read_slice(MAX_READ_SLICES * READ_SLICE + 1), READ_SLICE + 1);
        for len in [33_554_433usize, 200_000_000, 200_000_007, 2_000_000_000] {
            let slices = len.div_ceil(read_slice(len));
            assert!(slices <= MAX_READ_SLICES, "{len}: {slices} slices");
        }
    }
}
