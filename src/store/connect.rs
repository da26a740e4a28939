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
//! Every sentinel is asked (`SENTINEL MASTER`), and the master of the
//! newest failover epoch is tried first: one that has not heard of a
//! failover yet names the old master, which may still say it is one.
//!
//! Also the connector's view of which master that is (shared by its
//! clones: every thread of a process), for the metrics, the status page
//! and the store, which leaves a connection to a master no longer current.

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
    state: State,
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
                state: State::default(),
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
        self.inner
            .state
            .last_attempt
            .store(reached, Ordering::Relaxed);
        connected
    }

    /// The master Sentinel named last (none without Sentinel).
    pub fn current_master(&self) -> Option<String> {
        self.known().map(|named| named.at)
    }

    fn known(&self) -> Option<Named> {
        self.inner
            .state
            .master
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// How often the connections saw the master change (a failover).
    pub fn master_changes(&self) -> u64 {
        self.inner.state.changes.load(Ordering::Relaxed)
    }

    /// Whether the last connection attempt reached the master (`None`
    /// before the first).
    pub fn master_reachable(&self) -> Option<bool> {
        match self.inner.state.last_attempt.load(Ordering::Relaxed) {
            REACHED => Some(true),
            MISSED => Some(false),
            _ => None,
        }
    }

    /// Records that `named` is the master now; another address of a newer
    /// epoch than the one known is a change (counted, logged once).
    fn note_master(&self, named: &Named) {
        let mut master = self
            .inner
            .state
            .master
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match master.as_ref() {
            Some(known) if known.at == named.at => {}
            Some(known) if named.epoch < known.epoch => {}
            Some(known) => {
                log::warn!(
                    "the Redis master is now {} (was {}): a failover happened",
                    named.at,
                    known.at
                );
                self.inner.state.changes.fetch_add(1, Ordering::Relaxed);
            }
            None => log::info!("the Redis master is {} (found through Sentinel)", named.at),
        }
        if master
            .as_ref()
            .is_none_or(|known| named.epoch >= known.epoch)
        {
            *master = Some(named.clone());
        }
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
                let (conn, named) = self.find_master(sentinels, master_name)?;
                self.note_master(&named);
                Ok(Connected {
                    conn,
                    master: Some(named.at),
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

    /// Asks every sentinel, round after round until the deadline, which
    /// master they follow; tries the one of the newest failover epoch
    /// first (a sentinel that has not heard of a failover yet still names
    /// the old master, which may still say it is one for a few seconds).
    fn find_master(
        &self,
        sentinels: &[(String, u16)],
        master_name: &str,
    ) -> Result<(redis::Connection, Named), StoreError> {
        let deadline = Instant::now() + DISCOVERY_DEADLINE;
        loop {
            let mut problems = Vec::new();
            let mut worth_waiting = false;
            let mut rejected = false;
            let mut named: Vec<(Named, String)> = Vec::new();
            let mut answered_unknown = 0;
            for (host, port) in sentinels {
                let sentinel = format!("sentinel {}", address(host, *port));
                let Some(left) = time_left(deadline) else {
                    break;
                };
                match self.ask_sentinel(host, *port, master_name, left) {
                    Ok(Some(answer)) => named.push((answer, sentinel)),
                    Ok(None) => {
                        answered_unknown += 1;
                        problems.push(format!("{sentinel}: does not know master {master_name:?}"));
                    }
                    Err(e) => {
                        worth_waiting |= is_transient(&e);
                        rejected |= kind_of(&e) == StoreErrorKind::Rejected;
                        problems.push(format!("{sentinel}: {}", describe(&e)));
                    }
                }
            }
            // Newest epoch first; among equals, the address most name.
            let votes: std::collections::BTreeMap<String, usize> = named
                .iter()
                .map(|(n, _)| (n.at.clone(), named_votes(&named, &n.at)))
                .collect();
            named.sort_by_key(|(n, _)| std::cmp::Reverse((n.epoch, votes.get(&n.at).copied())));
            // A master of an older epoch than one already known is a
            // demoted one that has not heard yet: never written to.
            let newest = named
                .iter()
                .map(|(n, _)| n.epoch)
                .chain(self.known().map(|k| k.epoch))
                .max()
                .unwrap_or(0);
            let mut tried = Vec::new();
            for (candidate, sentinel) in &named {
                if tried.contains(&candidate.at) {
                    continue;
                }
                if candidate.epoch < newest {
                    worth_waiting = true;
                    problems.push(format!(
                        "{} (named by {sentinel}): an older epoch ({} < {newest}) than the newest master's",
                        candidate.at, candidate.epoch
                    ));
                    continue;
                }
                tried.push(candidate.at.clone());
                let Some(left) = time_left(deadline) else {
                    break;
                };
                let at = &candidate.at;
                match self.open_master(&candidate.host, candidate.port, left) {
                    Ok(conn) => return Ok((conn, candidate.clone())),
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
            // Sentinels that answered and name no master: a wrong
            // `redis.master_name`, which waiting will not fix.
            let wrong_name = answered_unknown > 0 && named.is_empty() && !worth_waiting;
            rejected |= wrong_name;
            let out_of_time = time_left(deadline).is_none_or(|left| left <= ROUND_PAUSE);
            if !worth_waiting || out_of_time {
                problems.dedup();
                return Err(StoreError {
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
                    kind: if rejected && !worth_waiting {
                        StoreErrorKind::Rejected
                    } else {
                        StoreErrorKind::Failed
                    },
                });
            }
            std::thread::sleep(ROUND_PAUSE);
        }
    }

    /// `SENTINEL MASTER`: the master one sentinel follows, with the epoch
    /// of the failover that made it master; `None` when it does not
    /// monitor `master_name`.
    fn ask_sentinel(
        &self,
        host: &str,
        port: u16,
        master_name: &str,
        left: Duration,
    ) -> redis::RedisResult<Option<Named>> {
        let timeout = SENTINEL_TIMEOUT.min(left);
        let mut conn = self.open(self.node(host, port)?, timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        let reply: redis::RedisResult<Vec<String>> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(master_name)
            .query(&mut conn);
        let fields = match reply {
            Ok(fields) => fields,
            // "ERR No such master with that name".
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let field = |name: &str| {
            fields
                .chunks(2)
                .find(|pair| pair[0] == name)
                .and_then(|pair| pair.get(1))
                .cloned()
        };
        let (Some(ip), Some(master_port)) =
            (field("ip"), field("port").and_then(|p| p.parse().ok()))
        else {
            return Ok(None);
        };
        Ok(Some(Named {
            at: address(&ip, master_port),
            host: ip,
            port: master_port,
            epoch: field("config-epoch")
                .and_then(|e| e.parse().ok())
                .unwrap_or(0),
        }))
    }

    /// A connection to the node a sentinel named, as precache's user, if
    /// that node says it is the master.
    fn open_master(
        &self,
        host: &str,
        port: u16,
        left: Duration,
    ) -> Result<redis::Connection, MasterFailure> {
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
            .open(info, CONNECT_TIMEOUT.min(left))
            .map_err(MasterFailure::Redis)?;
        // A node that answers slowly now is no master to write to.
        conn.set_read_timeout(Some(SENTINEL_TIMEOUT.min(left)))
            .map_err(MasterFailure::Redis)?;
        let role: redis::Value = redis::cmd("ROLE")
            .query(&mut conn)
            .map_err(MasterFailure::Redis)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))
            .map_err(MasterFailure::Redis)?;
        match role_name(&role) {
            Some("master") => Ok(conn),
            other => Err(MasterFailure::NotMaster(
                other.unwrap_or("unknown").to_string(),
            )),
        }
    }
}

/// A master as a sentinel named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Named {
    pub host: String,
    pub port: u16,
    /// `host:port` (IPv6 in brackets).
    pub at: String,
    /// The sentinels' `config-epoch` of this master: higher after each failover.
    pub epoch: u64,
}

/// How many sentinels named `at`.
fn named_votes(named: &[(Named, String)], at: &str) -> usize {
    named.iter().filter(|(n, _)| n.at == at).count()
}

/// The time until `deadline`, if any is left.
fn time_left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
}

/// `host:port`, an IPv6 host in brackets.
fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
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

/// A refused certificate, password or permission is the configuration's
/// fault; a node that went away (even mid-handshake) is not.
pub(super) fn kind_of(e: &redis::RedisError) -> StoreErrorKind {
    let refused_login = e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"));
    if refused_login {
        StoreErrorKind::Rejected
    } else if e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped() {
        StoreErrorKind::Failed
    } else if is_tls_failure(e) {
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

/// Outcomes of a connection attempt (`State::last_attempt`; 0: none yet).
const REACHED: u8 = 1;
const MISSED: u8 = 2;

/// What the connections of one [`Connector`] (and its clones) learnt.
#[derive(Default)]
struct State {
    /// The master Sentinel named last.
    master: Mutex<Option<Named>>,
    /// Times another master than before was found (of a newer epoch).
    changes: AtomicU64,
    /// The outcome of the last connection attempt.
    last_attempt: AtomicU8,
}
