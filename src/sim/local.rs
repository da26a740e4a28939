//! Local services for the demo, the tests and the benchmarks: a free
//! loopback port, a private `redis-server` that persists nothing and is
//! killed on drop, and a private certificate authority (made with the
//! `openssl` command) for the HTTPS the real world speaks.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::util::lock;

/// A `redis-server` we started; killed on drop.
pub struct PrivateRedis {
    child: Child,
    dir: PathBuf,
    pub url: String,
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free loopback port that this process has not handed out before.
///
/// A port is found by binding port 0 and letting it go, so until its user
/// binds it another pick may return it again. The tests of one file run as
/// threads of one process, many starting daemons and servers at once: two
/// of them handed one port make one fail to bind, and the other's answers
/// are read as its own (seen once: a standby's status read from another
/// test's leader). So each port is handed out at most once per process.
pub fn free_port() -> std::io::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed = lock(&HANDED_OUT);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if handed.insert(port) {
            return Ok(port);
        }
    }
}

/// Spawns `redis-server` on loopback `port`, working in `dir`, persisting
/// nothing (the demo's and the tests' private servers).
pub fn spawn_redis_server(
    port: u16,
    dir: &std::path::Path,
) -> std::io::Result<std::process::Child> {
    Command::new("redis-server")
        // The daemon's own allocator settings are not the server's.
        .env_remove("GLIBC_TUNABLES")
        .env_remove(crate::alloc::RESTARTED)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// Starts `redis-server` on a free loopback port with nothing persisted.
pub fn start_private_redis() -> std::io::Result<PrivateRedis> {
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("precache-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let child = spawn_redis_server(port, &dir)?;
    let redis = PrivateRedis {
        child,
        dir,
        url: format!("redis://127.0.0.1:{port}/0"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if redis_answers(&redis.url) {
            return Ok(redis);
        }
        if Instant::now() > deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("redis-server on port {port} did not answer within 10 s"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many keys the database at `url` holds (`DBSIZE`), if it answers.
pub fn redis_key_count(url: &str) -> Option<u64> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    redis::cmd("DBSIZE").query(&mut conn).ok()
}

/// Whether a Redis answers PING at `url` (within a few seconds).
pub fn redis_answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    client
        .get_connection_with_timeout(Duration::from_secs(2))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

/// A certificate authority of our own, in a directory: its certificate
/// (`ca.pem`) to trust, and certificates it issued for local servers.
/// Made with the `openssl` command line (what an operator would use), with
/// P-256 keys (fast to make and to verify).
#[derive(Debug, Clone)]
pub struct LocalCa {
    pub dir: PathBuf,
    /// The CA's certificate: what a client is told to trust.
    pub ca_pem: PathBuf,
    ca_key: PathBuf,
}

/// A certificate and key the CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (what a server sends; the CA's is the client's to have).
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

fn openssl(dir: &std::path::Path, args: &[&str]) -> std::io::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "openssl {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `openssl req` with a new P-256 key (`key_file`) for common name `name`:
/// a request, or with `-x509` among `extra` a self-signed certificate
/// (`out_file`).
fn new_key(
    dir: &std::path::Path,
    name: &str,
    key_file: &str,
    out_file: &str,
    extra: &[&str],
) -> std::io::Result<()> {
    let subject = format!("/CN={name}");
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key_file,
        "-out",
        out_file,
        "-subj",
        &subject,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args)
}

impl LocalCa {
    /// Makes a CA named `name` in `dir` (created if needed), valid two days.
    pub fn create(dir: &std::path::Path, name: &str) -> std::io::Result<LocalCa> {
        std::fs::create_dir_all(dir)?;
        new_key(
            dir,
            name,
            "ca.key",
            "ca.pem",
            &[
                "-x509",
                "-days",
                "2",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        Ok(LocalCa {
            dir: dir.to_path_buf(),
            ca_pem: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
        })
    }

    /// A server certificate for `127.0.0.1` and `localhost` (files
    /// `{name}.pem`, `{name}.key`).
    pub fn issue_server(&self, name: &str) -> std::io::Result<Issued> {
        self.issue(
            name,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
    }

    /// A certificate a Redis node serves and presents to the nodes it
    /// replicates from (TLS replication): `127.0.0.1`, both uses.
    pub fn issue_node(&self, name: &str) -> std::io::Result<Issued> {
        self.issue(
            name,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
    }

    /// A client certificate (for a server that requires one) named `name`.
    pub fn issue_client(&self, name: &str) -> std::io::Result<Issued> {
        self.issue(name, "extendedKeyUsage=clientAuth\n")
    }

    fn issue(&self, name: &str, extensions: &str) -> std::io::Result<Issued> {
        let (key, csr, cert, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            self.dir.join(&ext),
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{extensions}"
            ),
        )?;
        new_key(&self.dir, name, &key, &csr, &[])?;
        let ca_pem = self.ca_pem.to_string_lossy().into_owned();
        let ca_key = self.ca_key.to_string_lossy().into_owned();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        )?;
        Ok(Issued {
            cert_pem: self.dir.join(cert),
            key_pem: self.dir.join(key),
        })
    }
}
