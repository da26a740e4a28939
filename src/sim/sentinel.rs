//! A Redis that survives a node, on loopback, for the tests and the
//! benchmarks (DESIGN.md section 12): a master and a replica that speak
//! only TLS and require client certificates (`tls-auth-clients yes`,
//! replication over TLS too), and three sentinels that speak TLS as well,
//! all from a CA made with `openssl`. Every process is killed on drop.
//!
//! Timings are short on purpose (`down-after-milliseconds` 1000): a test
//! sees a failover in a few seconds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::local::{Issued, LocalCa, free_port};

/// The name the sentinels monitor the master by.
pub const MASTER_NAME: &str = "precache-master";
/// How long a master must not answer before the sentinels call it down.
pub const DOWN_AFTER_MS: u64 = 1000;

/// One `redis-server` (a data node or a sentinel), restartable.
pub struct Node {
    pub port: u16,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .env_remove("GLIBC_TUNABLES")
            .env_remove(crate::alloc::RESTARTED)
            .current_dir(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL (a VM lost, not a clean stop).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: a VM lost without a word (no reset: peers wait on
    /// their timeouts). `kill` ends it for good.
    pub fn freeze(&self) -> std::io::Result<()> {
        let pid = self
            .child
            .as_ref()
            .ok_or_else(|| std::io::Error::other("not running"))?
            .id();
        let status = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other("kill -STOP failed"))
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The whole set: `nodes[0]` starts as the master, `nodes[1]` as its replica.
pub struct TlsRedisSet {
    pub ca: LocalCa,
    /// A client certificate the CA issued (precache's and the tests').
    pub client: Issued,
    pub nodes: Vec<Node>,
    pub sentinels: Vec<Node>,
    dir: PathBuf,
}

impl TlsRedisSet {
    /// Makes the CA and certificates in `dir` and starts everything; ready
    /// when the sentinels know the replica and each other.
    pub fn start(dir: &Path) -> std::io::Result<TlsRedisSet> {
        std::fs::create_dir_all(dir)?;
        let ca = LocalCa::create(&dir.join("ca"), "precache sentinel test CA")?;
        let node_cert = ca.issue_node("redis-node")?;
        let client = ca.issue_client("precache-client")?;
        let ca_pem = ca.ca_pem.clone();
        let tls = |port: u16| -> Vec<String> {
            let mut args: Vec<String> = vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--tls-auth-clients".into(),
                "yes".into(),
                "--tls-replication".into(),
                "yes".into(),
            ];
            for (flag, path) in [
                ("--tls-cert-file", &node_cert.cert_pem),
                ("--tls-key-file", &node_cert.key_pem),
                ("--tls-ca-cert-file", &ca_pem),
            ] {
                args.push(flag.into());
                args.push(path.to_string_lossy().into_owned());
            }
            args
        };
        let mut nodes = Vec::new();
        let master_port = free_port()?;
        for i in 0..2 {
            let port = if i == 0 { master_port } else { free_port()? };
            let node_dir = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let mut args = tls(port);
            // Nothing on disk; a replica's first sync at once (the
            // default waits 5 s to batch replicas).
            args.extend(
                [
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--repl-diskless-sync-delay",
                    "0",
                ]
                .map(String::from),
            );
            if i == 1 {
                args.extend([
                    "--replicaof".to_string(),
                    "127.0.0.1".into(),
                    master_port.to_string(),
                ]);
            }
            let mut node = Node {
                port,
                args,
                dir: node_dir,
                child: None,
            };
            node.spawn()?;
            nodes.push(node);
        }
        let mut set = TlsRedisSet {
            ca,
            client,
            nodes,
            sentinels: Vec::new(),
            dir: dir.to_path_buf(),
        };
        for port in [master_port, set.nodes[1].port] {
            set.wait("a data node to answer", Duration::from_secs(10), |s| {
                s.admin(port).is_ok()
            })?;
        }
        let replica = set.nodes[1].port;
        set.wait("the replica's first sync", Duration::from_secs(20), |s| {
            s.in_sync(replica)
        })?;
        for i in 0..3 {
            let port = free_port()?;
            let sentinel_dir = dir.join(format!("sentinel{i}"));
            std::fs::create_dir_all(&sentinel_dir)?;
            let mut conf = tls(port)
                .chunks(2)
                .map(|pair| format!("{} {}\n", pair[0].trim_start_matches("--"), pair[1]))
                .collect::<String>();
            conf.push_str(&format!(
                "sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER_NAME} 10000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n"
            ));
            let conf_path = sentinel_dir.join("sentinel.conf");
            std::fs::write(&conf_path, conf)?;
            let mut sentinel = Node {
                port,
                args: vec![
                    conf_path.to_string_lossy().into_owned(),
                    "--sentinel".into(),
                ],
                dir: sentinel_dir,
                child: None,
            };
            sentinel.spawn()?;
            set.sentinels.push(sentinel);
        }
        set.wait(
            "the sentinels to know the replica and each other",
            Duration::from_secs(30),
            |s| s.sentinels_settled(),
        )?;
        Ok(set)
    }

    /// Waits (up to `limit`) for `ok`.
    fn wait(
        &self,
        what: &str,
        limit: Duration,
        ok: impl Fn(&TlsRedisSet) -> bool,
    ) -> std::io::Result<()> {
        let deadline = Instant::now() + limit;
        while !ok(self) {
            if Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("waited {} s for {what}", limit.as_secs()),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// TLS with the client certificate, as the default (unrestricted) user.
    pub fn admin(&self, port: u16) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::build_with_tls(
            format!("rediss://127.0.0.1:{port}/0"),
            redis::TlsCertificates {
                client_tls: Some(redis::ClientTlsConfig {
                    client_cert: std::fs::read(&self.client.cert_pem)?,
                    client_key: std::fs::read(&self.client.key_pem)?,
                }),
                root_cert: Some(std::fs::read(&self.ca.ca_pem)?),
            },
        )?;
        let conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(conn)
    }

    /// Every running sentinel sees the replica and two other sentinels.
    fn sentinels_settled(&self) -> bool {
        self.sentinels.iter().filter(|s| s.is_running()).all(|s| {
            let Ok(mut conn) = self.admin(s.port) else {
                return false;
            };
            let replicas: redis::RedisResult<Vec<redis::Value>> = redis::cmd("SENTINEL")
                .arg("replicas")
                .arg(MASTER_NAME)
                .query(&mut conn);
            let others: redis::RedisResult<Vec<redis::Value>> = redis::cmd("SENTINEL")
                .arg("sentinels")
                .arg(MASTER_NAME)
                .query(&mut conn);
            matches!((replicas, others), (Ok(r), Ok(o)) if !r.is_empty() && o.len() == 2)
        })
    }

    /// Whether the replica on `port` is linked to its master and done
    /// with its first sync.
    pub fn in_sync(&self, port: u16) -> bool {
        let Ok(mut conn) = self.admin(port) else {
            return false;
        };
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut conn)
            .unwrap_or_default();
        info.contains("master_link_status:up") && info.contains("master_sync_in_progress:0")
    }

    /// `host:port` of each sentinel (for `redis.sentinels`).
    pub fn sentinel_addresses(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The master's port as the first running sentinel names it.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels
            .iter()
            .filter(|s| s.is_running())
            .find_map(|s| {
                let mut conn = self.admin(s.port).ok()?;
                let (_, port): (String, u16) = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER_NAME)
                    .query(&mut conn)
                    .ok()?;
                Some(port)
            })
    }

    /// The data node on `port`.
    pub fn node(&mut self, port: u16) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.port == port)
    }

    /// Waits (up to `limit`) until the sentinels name a master other than
    /// `old` that says it is one; its port.
    pub fn wait_for_new_master(&self, old: u16, limit: Duration) -> std::io::Result<u16> {
        let found = std::cell::Cell::new(None);
        self.wait("a failover", limit, |s| {
            let port = s.master_port().filter(|p| *p != old);
            let promoted = port.is_some_and(|p| s.role(p).as_deref() == Some("master"));
            found.set(port.filter(|_| promoted));
            promoted
        })?;
        found
            .get()
            .ok_or_else(|| std::io::Error::other("no new master"))
    }

    /// `ROLE`'s first word on the node at `port`.
    pub fn role(&self, port: u16) -> Option<String> {
        let mut conn = self.admin(port).ok()?;
        let reply: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).ok()?;
        match reply.first()? {
            redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// Restarts a killed data node empty (it comes back as the replica the
    /// sentinels make of it).
    pub fn restart_node(&mut self, port: u16) -> std::io::Result<()> {
        let node = self
            .node(port)
            .ok_or_else(|| std::io::Error::other("no such node"))?;
        node.kill();
        node.spawn()
    }

    /// The directory the set lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
