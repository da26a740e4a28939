//! A private `redis-server`, and readings of what precache keeps in Redis.

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::TempDir;

/// A private `redis-server` on a free loopback port, killed on drop.
///
/// Stopping and restarting take `&self` (the child is behind a lock), so a
/// test can take Redis away while a harness or a rig owns it.
pub struct RedisServer {
    pub port: u16,
    child: Mutex<Option<Child>>,
    /// Its working directory: `SAVE` writes the RDB a restart loads.
    dir: TempDir,
}

impl RedisServer {
    /// A new, empty server; it answers when this returns.
    pub fn start() -> RedisServer {
        let port = precache::sim::local::free_port().expect("a free loopback port");
        let server = RedisServer {
            port,
            child: Mutex::new(None),
            dir: TempDir::new("redis"),
        };
        server.restart();
        server
    }

    /// (Re)starts the server on the same port: empty, or with what its
    /// last `SAVE` wrote (an older RDB).
    pub fn restart(&self) {
        self.stop();
        let child = precache::sim::local::spawn_redis_server(self.port, self.dir.path())
            .expect("redis-server is on PATH (.ci/run installs it)");
        *self.child.lock().expect("the child's lock") = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !precache::sim::local::redis_answers(&self.url()) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: nothing saved).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().expect("the child's lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url()))
    }

    pub fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut self.conn())
            .unwrap_or_else(|e| panic!("GET {key}: {e}"))
    }

    /// `SET key value`, as an operator (or another program) would.
    pub fn set(&self, key: &str, value: &str) {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query(&mut self.conn())
            .unwrap_or_else(|e| panic!("SET {key}: {e}"));
    }

    /// Runs `args` (a command and its arguments, e.g. `["RPUSH", key,
    /// "x"]`), which must succeed; the reply.
    pub fn cmd(&self, args: &[&str]) -> redis::Value {
        let (name, rest) = args.split_first().expect("a command");
        let mut command = redis::cmd(name);
        for arg in rest {
            command.arg(*arg);
        }
        command
            .query(&mut self.conn())
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// The `data` list of a seed-format key (panics if absent).
    pub fn data(&self, key: &str) -> Vec<serde_json::Value> {
        let text = self
            .get(key)
            .unwrap_or_else(|| panic!("key {key} is missing"));
        precache::store::parse_entry(&text)
            .unwrap_or_else(|| panic!("key {key} is not a data entry"))
    }

    /// The keys matching `pattern`, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.conn())
            .unwrap_or_else(|e| panic!("KEYS {pattern}: {e}"));
        keys.sort();
        keys
    }

    /// Warm-up tasks due now (`precache:warm:due` up to this millisecond);
    /// 0 when every warm-up is done.
    pub fn warm_tasks_due(&self) -> redis::RedisResult<u64> {
        redis::cmd("ZCOUNT")
            .arg("precache:warm:due")
            .arg("-inf")
            .arg(chrono::Utc::now().timestamp_millis())
            .query(&mut self.conn())
    }

    /// Every data key and its value (for "nothing changed" assertions);
    /// our bookkeeping and the warm-up entries are left out.
    pub fn dump(&self) -> BTreeMap<String, String> {
        dump_in(&mut self.conn())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// [`RedisServer::dump`] of the Redis `conn` is connected to.
pub fn dump_in(conn: &mut redis::Connection) -> BTreeMap<String, String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).expect("KEYS *");
    keys.sort();
    keys.into_iter()
        .filter(|k| {
            !["precache:", "GET:", "refresh:GET:"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .map(|k| {
            let v: String = redis::cmd("GET")
                .arg(&k)
                .query(conn)
                .unwrap_or_else(|e| panic!("GET {k}: {e}"));
            (k, v)
        })
        .collect()
}

/// Every data key (the seed's five and each `tournaments_season_*`) and
/// its `data` list.
pub fn data_of(redis: &RedisServer) -> BTreeMap<String, serde_json::Value> {
    data_in(&mut redis.conn())
}

/// [`data_of`] the Redis `conn` is connected to.
pub fn data_in(conn: &mut redis::Connection) -> BTreeMap<String, serde_json::Value> {
    dump_in(conn)
        .into_iter()
        .map(|(key, text)| {
            let data = precache::store::parse_entry(&text)
                .map(serde_json::Value::Array)
                .unwrap_or(serde_json::Value::String(format!(
                    "not an entry: {text:.60}"
                )));
            (key, data)
        })
        .collect()
}

/// Runs recorded in Redis (`precache:runs`), newest first; empty while
/// Redis is down.
pub fn history(redis: &RedisServer) -> Vec<serde_json::Value> {
    let Ok(mut conn) = redis::Client::open(redis.url()).and_then(|c| c.get_connection()) else {
        return Vec::new();
    };
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg("precache:runs")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap_or_default();
    items
        .iter()
        .map(|s| serde_json::from_str(s).expect("a run in precache:runs is JSON"))
        .collect()
}

/// The change feed's entries (`precache:changes`), oldest first: each a
/// map of field to value.
pub fn feed(redis: &RedisServer) -> Vec<BTreeMap<String, String>> {
    feed_in(&mut redis.conn())
}

/// [`feed`] of the Redis `conn` is connected to.
pub fn feed_in(conn: &mut redis::Connection) -> Vec<BTreeMap<String, String>> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("precache:changes")
        .arg("-")
        .arg("+")
        .query(conn)
        .unwrap_or_default();
    entries
        .into_iter()
        .map(|(_, fields)| fields.into_iter().collect())
        .collect()
}

/// The ids a feed entry lists under `category`.
pub fn feed_ids(entry: &BTreeMap<String, String>, category: &str) -> Vec<i64> {
    entry
        .get(category)
        .map(|v| serde_json::from_str(v).expect("a feed entry's ids are a JSON list"))
        .unwrap_or_default()
}
