//! How a connection to the master is made (DESIGN.md section 12): one node
//! by URL, or the master a set of Sentinels names, found again on every
//! new connection (so a connection lost to a failover, or refused with
//! `READONLY` by a demoted master, is followed by a search for the new
//! one); TLS with the configured CA and client certificate, for the
//! sentinels and the data nodes alike; the ACL user.
//!
//! The sync Sentinel calls of the redis crate have no timeout of their own
//! and hide which node failed how, so the search is ours: each node is
//! asked with the store's timeouts, the whole search has a deadline, and
//! its error names every node and what it answered. A node is the master
//! only when it says so (`ROLE`): a sentinel may still name a dead or
//! demoted master for a few seconds of a failover.
//!
//! Also the process-wide view of which master that is, for the metrics,
//! the status page and the run's baseline: after a change of master the
//! cache is read again (asynchronous replication may have lost the last
//! acknowledged writes).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::config::{RedisConfig, Secret, sentinel_address};

use super::{CONNECT_TIMEOUT, IO_TIMEOUT, StoreError, StoreErrorKind};

/// The longest search for the master through the sentinels: longer than
/// a failover usually takes with `down-after-milliseconds` of a few
/// seconds, shorter than the shutdown grace (so a stop during a failover
/// is not held up past it).
pub const DISCOVERY_DEADLINE: Duration = Duration::from_secs(10);
/// Between two rounds over the sentinels while no master is found.
const ROUND_PAUSE: Duration = Duration::from_millis(250);
/// A sentinel answers from memory: a slow one is skipped for the next.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);

/// Where and how connections are made. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    nodes: Nodes,
    /// TLS to every node.
    tls_on: bool,
    /// With TLS: the CA and the client certificate (none: the host's store).
    tls: Option<redis::TlsCertificates>,
    /// Sent to the data nodes (a single node's URL carries its own).
    username: Option<String>,
    password: Option<Secret>,
    /// As it may be shown: no password, no key path.
    target: String,
}

enum Nodes {
    One(ConnectionInfo),
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master_name: String,
    },
}

/// A connection to the master, and where it is when Sentinel found it.
pub(crate) struct Connected {
    pub conn: redis::Connection,
    pub master: Option<String>,
}

impl Connector {
    /// One node at `url` (the tests', the simulator's and the demo's Redis).
    pub fn from_url(url: &str) -> Result<Connector, StoreError> {
        Connector::new(&RedisConfig {
            url: Secret::new(url),
            ..RedisConfig::default()
        })
    }

    /// The connections `config` describes (already validated and loaded).
    /// A bad URL is reported here, without echoing it.
    pub fn new(config: &RedisConfig) -> Result<Connector, StoreError> {
        let nodes = if config.uses_sentinel() {
            let sentinels = config
                .sentinels
                .iter()
                .map(|s| sentinel_address(s).map_err(|problem| problem.to_string()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| StoreError {
                    kind: Default::default(),
                    doing: "reading redis.sentinels".into(),
                    reason,
                })?;
            Nodes::Sentinel {
                sentinels,
                master_name: config.master_name.clone(),
            }
        } else {
            let info = config
                .url
                .expose()
                .into_connection_info()
                .map_err(|e| StoreError {
                    kind: Default::default(),
                    doing: "parsing redis.url".into(),
                    reason: format!("{:?}", e.kind()),
                })?;
            Nodes::One(info)
        };
        let files = &config.tls_files;
        let tls = (config.uses_tls() && (files.ca.is_some() || files.cert.is_some())).then(|| {
            redis::TlsCertificates {
                client_tls: match (&files.cert, &files.key) {
                    (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                        client_cert: cert.clone(),
                        client_key: key.expose().as_bytes().to_vec(),
                    }),
                    _ => None,
                },
                root_cert: files.ca.clone(),
            }
        });
        Ok(Connector {
            inner: Arc::new(Inner {
                nodes,
                tls_on: config.uses_tls(),
                tls,
                username: (!config.username.is_empty()).then(|| config.username.clone()),
                password: config.password.clone(),
                target: config.describe(),
            }),
        })
    }

    /// Which Redis this is, as it may be shown.
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// Whether the master is found through Sentinel.
    pub fn uses_sentinel(&self) -> bool {
        matches!(self.inner.nodes, Nodes::Sentinel { .. })
    }

    /// A new connection to the master, with the store's timeouts set.
    pub(crate) fn connect(&self) -> Result<Connected, StoreError> {
        let connected = self.try_connect();
        let reached = if connected.is_ok() { REACHED } else { MISSED };
        LAST_ATTEMPT.store(reached, Ordering::Relaxed);
        connected
    }

    fn try_connect(&self) -> Result<Connected, StoreError> {
        match &self.inner.nodes {
            Nodes::One(info) => {
                let doing = format!("connecting to {}", self.inner.target);
                let conn = self
                    .open(info.clone(), CONNECT_TIMEOUT)
                    .map_err(|e| StoreError {
                        kind: kind_of(&e),
                        doing,
                        reason: describe(&e),
                    })?;
                Ok(Connected { conn, master: None })
            }
            Nodes::Sentinel {
                sentinels,
                master_name,
            } => {
                let (conn, at) = self.find_master(sentinels, master_name)?;
                note_master(&at);
                Ok(Connected {
                    conn,
                    master: Some(at),
                })
            }
        }
    }

    /// A connection to `info`, TLS as configured, with the I/O timeouts set.
    fn open(
        &self,
        info: ConnectionInfo,
        connect_timeout: Duration,
    ) -> redis::RedisResult<redis::Connection> {
        let client = match &self.inner.tls {
            Some(certificates) => redis::Client::build_with_tls(info, certificates.clone())?,
            None => redis::Client::open(info)?,
        };
        let conn = client.get_connection_with_timeout(connect_timeout)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(conn)
    }

    /// The address of a node, TLS or not as configured.
    fn node(&self, host: &str, port: u16) -> redis::RedisResult<ConnectionInfo> {
        let addr = if self.inner.tls_on {
            ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.to_string(), port)
        };
        addr.into_connection_info()
    }

    /// Asks the sentinels, in order, round after round until the deadline,
    /// for a node that says it is the master.
    fn find_master(
        &self,
        sentinels: &[(String, u16)],
        master_name: &str,
    ) -> Result<(redis::Connection, String), StoreError> {
        let deadline = Instant::now() + DISCOVERY_DEADLINE;
        loop {
            let mut problems = Vec::new();
            let mut worth_waiting = false;
            let mut rejected = false;
            for (host, port) in sentinels {
                let sentinel = format!("sentinel {host}:{port}");
                let named = match self.ask_sentinel(host, *port, master_name) {
                    Ok(Some(named)) => named,
                    Ok(None) => {
                        // Not (yet) monitoring it, or in the middle of a failover.
                        worth_waiting = true;
                        problems.push(format!("{sentinel}: does not know master {master_name:?}"));
                        continue;
                    }
                    Err(e) => {
                        worth_waiting |= is_transient(&e);
                        rejected |= kind_of(&e) == StoreErrorKind::Rejected;
                        problems.push(format!("{sentinel}: {}", describe(&e)));
                        continue;
                    }
                };
                let at = format!("{}:{}", named.0, named.1);
                match self.open_master(&named.0, named.1) {
                    Ok(conn) => return Ok((conn, at)),
                    Err(MasterFailure::NotMaster(role)) => {
                        worth_waiting = true;
                        problems.push(format!(
                            "{at} (named by {sentinel}): its role is {role}, not master"
                        ));
                    }
                    Err(MasterFailure::Redis(e)) => {
                        worth_waiting |= is_transient(&e);
                        rejected |= kind_of(&e) == StoreErrorKind::Rejected;
                        problems.push(format!(
                            "master {at} (named by {sentinel}): {}",
                            describe(&e)
                        ));
                    }
                }
            }
            let out_of_time = Instant::now() + ROUND_PAUSE >= deadline;
            if !worth_waiting || out_of_time {
                problems.dedup();
                return Err(StoreError {
                    kind: if rejected && !worth_waiting {
                        StoreErrorKind::Rejected
                    } else {
                        StoreErrorKind::Failed
                    },
                    doing: format!("finding master {master_name:?} through Sentinel"),
                    reason: if worth_waiting {
                        format!(
                            "no master within {} s: {}",
                            DISCOVERY_DEADLINE.as_secs(),
                            problems.join("; ")
                        )
                    } else {
                        problems.join("; ")
                    },
                });
            }
            std::thread::sleep(ROUND_PAUSE);
        }
    }

    /// `SENTINEL get-master-addr-by-name`: the master one sentinel names.
    fn ask_sentinel(
        &self,
        host: &str,
        port: u16,
        master_name: &str,
    ) -> redis::RedisResult<Option<(String, u16)>> {
        let mut conn = self.open(self.node(host, port)?, SENTINEL_TIMEOUT)?;
        conn.set_read_timeout(Some(SENTINEL_TIMEOUT))?;
        let named: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master_name)
            .query(&mut conn)?;
        Ok(named)
    }

    /// A connection to the node a sentinel named, as precache's user, if
    /// that node says it is the master.
    fn open_master(&self, host: &str, port: u16) -> Result<redis::Connection, MasterFailure> {
        let mut settings = redis::RedisConnectionInfo::default();
        if let Some(username) = &self.inner.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.inner.password {
            settings = settings.set_password(password.expose());
        }
        let info = self
            .node(host, port)
            .map_err(MasterFailure::Redis)?
            .set_redis_settings(settings);
        let mut conn = self
            .open(info, CONNECT_TIMEOUT)
            .map_err(MasterFailure::Redis)?;
        let role: redis::Value = redis::cmd("ROLE")
            .query(&mut conn)
            .map_err(MasterFailure::Redis)?;
        match role_name(&role) {
            Some("master") => Ok(conn),
            other => Err(MasterFailure::NotMaster(
                other.unwrap_or("unknown").to_string(),
            )),
        }
    }
}

enum MasterFailure {
    NotMaster(String),
    Redis(redis::RedisError),
}

/// The first element of a `ROLE` reply.
fn role_name(reply: &redis::Value) -> Option<&str> {
    match reply {
        redis::Value::Array(items) => match items.first()? {
            redis::Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
            redis::Value::SimpleString(text) => Some(text),
            _ => None,
        },
        _ => None,
    }
}

/// Whether waiting may help: a node down, slow or restarting (a failover),
/// not a refused certificate or password (which the next round would
/// refuse again).
fn is_transient(e: &redis::RedisError) -> bool {
    e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

/// Whether `e` is a TLS failure (the redis crate passes rustls' errors
/// on as I/O errors, told apart only by their text).
fn is_tls_failure(e: &redis::RedisError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    ["certificate", "tls", "handshake", "alert", "unknownissuer"]
        .iter()
        .any(|word| text.contains(word))
}

/// A refused certificate or password is the configuration's fault.
fn kind_of(e: &redis::RedisError) -> StoreErrorKind {
    if is_tls_failure(e)
        || e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
    {
        StoreErrorKind::Rejected
    } else {
        StoreErrorKind::Failed
    }
}

/// A Redis error as one line: TLS failures say so.
fn describe(e: &redis::RedisError) -> String {
    if is_tls_failure(e) {
        format!("TLS: {e}")
    } else {
        e.to_string()
    }
}

static MASTER: Mutex<Option<String>> = Mutex::new(None);
/// The outcome of this process's last connection attempt.
static LAST_ATTEMPT: AtomicU8 = AtomicU8::new(NOT_TRIED);
const NOT_TRIED: u8 = 0;
const REACHED: u8 = 1;
const MISSED: u8 = 2;
static MASTER_CHANGES: AtomicU64 = AtomicU64::new(0);

/// Records that `at` is the master now; a different one than before is a
/// change (counted, logged once by whichever connection saw it first).
fn note_master(at: &str) {
    let mut master = MASTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match master.as_deref() {
        Some(known) if known == at => {}
        Some(known) => {
            log::warn!("the Redis master is now {at} (was {known}): a failover happened");
            MASTER_CHANGES.fetch_add(1, Ordering::Relaxed);
            *master = Some(at.to_string());
        }
        None => {
            log::info!("the Redis master is {at} (found through Sentinel)");
            *master = Some(at.to_string());
        }
    }
}

/// The master Sentinel named last, in this process (none without Sentinel).
pub fn current_master() -> Option<String> {
    MASTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// How often this process saw the master change.
pub fn master_changes() -> u64 {
    MASTER_CHANGES.load(Ordering::Relaxed)
}

/// Whether this process's last connection attempt reached the master
/// (`None` before the first).
pub fn master_reachable() -> Option<bool> {
    match LAST_ATTEMPT.load(Ordering::Relaxed) {
        REACHED => Some(true),
        MISSED => Some(false),
        _ => None,
    }
}
