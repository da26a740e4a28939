//! A minimal HTTP/1.1 server for the simulator: one thread per connection,
//! keep-alive, TCP_NODELAY, and the two misbehaviours a fault needs that a
//! well-behaved server library will not do — a body cut short with the
//! connection dropped, and a request accepted but never answered.
//!
//! It speaks HTTPS when given a certificate (rustls, the TLS library the
//! client uses too), as the real API does, and counts the connections it
//! accepts, so keep-alive is measured from the server's side.
//!
//! Why not tiny_http here: tiny_http 0.12 serves connections on a pool that
//! can lose the wake-up for a new connection while its threads sit in
//! keep-alive reads, so a burst of 16 new connections left one stalled until
//! the client's timeout. The simulator must never be the bottleneck of a
//! measurement, so it owns its connections. (The metrics endpoint sees one
//! scraper at a time and stays on tiny_http.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest request body read (the simulator's requests are forms and JSON).
const MAX_BODY: usize = 1 << 20;
const MAX_HEADER_LINES: usize = 100;
/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a blocked read wakes to check for shutdown.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub enum Reply {
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Headers announce the whole body, half of it is sent, the connection closes.
    Truncated { body: Vec<u8> },
    /// Never answered; the connection is held until [`Stalls::release`] or shutdown.
    Stall,
    /// A 200 without a length whose body is `head` and then `chunk` forever,
    /// until the client goes away or the server stops.
    Endless { head: Vec<u8>, chunk: Vec<u8> },
}

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::Full {
            status,
            headers: vec![("Content-Type", "application/json; charset=utf-8".into())],
            body: value.to_string().into_bytes(),
        }
    }
}

/// Lets the handler release every stalled connection at once.
#[derive(Default)]
pub struct Stalls {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Stalls {
    pub fn release(&self) {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }

    fn wait(&self, stop: &AtomicBool) {
        let mut generation = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        let start = *generation;
        while *generation == start && !stop.load(Ordering::SeqCst) {
            generation = self
                .changed
                .wait_timeout(generation, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

pub type Handler = dyn Fn(&HttpRequest) -> Reply + Send + Sync;

/// A connection requests are read from and replies written to: plain TCP,
/// or TLS over it.
trait Conn: Read + Write {
    fn tcp(&self) -> &TcpStream;

    /// Ends the connection as a well-behaved server does (TLS: with a
    /// close_notify first).
    fn close(&mut self) {
        let _ = self.flush();
        let _ = self.tcp().shutdown(Shutdown::Both);
    }

    /// Drops the connection without a word (a truncated body must look
    /// truncated, not ended).
    fn abort(&mut self) {
        let _ = self.flush();
        let _ = self.tcp().shutdown(Shutdown::Both);
    }
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

type TlsStream = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

impl Conn for TlsStream {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }

    fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

/// The server's certificate chain and key, as PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity { .. }")
    }
}

impl TlsIdentity {
    /// Reads a certificate chain file and a key file.
    pub fn from_files(cert: &std::path::Path, key: &std::path::Path) -> std::io::Result<Self> {
        Ok(TlsIdentity {
            cert_chain_pem: std::fs::read(cert)?,
            key_pem: std::fs::read(key)?,
        })
    }

    fn server_config(&self) -> std::io::Result<Arc<rustls::ServerConfig>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&self.cert_chain_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| invalid(format!("certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(invalid("no certificate in the chain".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| invalid(format!("private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Arc::new(config))
    }
}

pub struct HttpServer {
    addr: SocketAddr,
    tls: bool,
    stop: Arc<AtomicBool>,
    stalls: Arc<Stalls>,
    acceptor: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Listens on `bind`; with `tls`, speaks HTTPS only. Each connection
    /// accepted adds one to `connections`.
    pub fn start(
        bind: SocketAddr,
        tls: Option<&TlsIdentity>,
        stalls: Arc<Stalls>,
        connections: Arc<AtomicU64>,
        handler: Arc<Handler>,
    ) -> std::io::Result<HttpServer> {
        let tls_config = tls.map(TlsIdentity::server_config).transpose()?;
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let tls = tls_config.is_some();
        let acceptor = {
            let accepting = Accepting {
                stop: stop.clone(),
                stalls: stalls.clone(),
                handler,
                tls: tls_config,
                connections: connections.clone(),
            };
            std::thread::Builder::new()
                .name("sim-accept".into())
                .spawn(move || accepting.run(listener))?
        };
        Ok(HttpServer {
            addr,
            tls,
            stop,
            stalls,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://…` or `https://…`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting; open connections close within [`POLL`].
    pub fn stop(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stalls.release();
        // Wake the blocking accept() with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }

    /// Blocks until the server stops.
    pub fn wait(mut self) {
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the accepting thread needs.
struct Accepting {
    stop: Arc<AtomicBool>,
    stalls: Arc<Stalls>,
    handler: Arc<Handler>,
    tls: Option<Arc<rustls::ServerConfig>>,
    connections: Arc<AtomicU64>,
}

impl Accepting {
    fn run(self, listener: TcpListener) {
        for stream in listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            self.connections.fetch_add(1, Ordering::Relaxed);
            let (stop, stalls, handler) =
                (self.stop.clone(), self.stalls.clone(), self.handler.clone());
            let tls = self.tls.clone();
            let spawned = std::thread::Builder::new()
                .name("sim-conn".into())
                .spawn(move || {
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_read_timeout(Some(POLL));
                    match tls {
                        None => serve_connection(stream, &stop, &stalls, &*handler),
                        Some(config) => match rustls::ServerConnection::new(config) {
                            Ok(conn) => serve_connection(
                                TlsStream::new(conn, stream),
                                &stop,
                                &stalls,
                                &*handler,
                            ),
                            Err(e) => log::warn!("simulator: TLS set-up failed: {e}"),
                        },
                    }
                });
            if let Err(e) = spawned {
                log::warn!("simulator: cannot start a connection thread: {e}");
            }
        }
    }
}

enum ReadOutcome {
    Request(HttpRequest),
    Closed,
    Bad(&'static str),
}

fn serve_connection<C: Conn>(conn: C, stop: &AtomicBool, stalls: &Stalls, handler: &Handler) {
    let mut reader = BufReader::new(conn);
    loop {
        let request = match read_request(&mut reader, stop) {
            ReadOutcome::Request(r) => r,
            ReadOutcome::Closed => return,
            ReadOutcome::Bad(why) => {
                let _ = write_reply(reader.get_mut(), 400, &[], why.as_bytes(), true);
                reader.get_mut().close();
                return;
            }
        };
        let close = request
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let writer = reader.get_mut();
        match handler(&request) {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                if write_reply(writer, status, &headers, &body, close).is_err() || close {
                    writer.close();
                    return;
                }
            }
            Reply::Truncated { body } => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = writer.write_all(head.as_bytes());
                let _ = writer.write_all(&body[..body.len() / 2]);
                writer.abort();
                return;
            }
            Reply::Stall => {
                stalls.wait(stop);
                writer.abort();
                return;
            }
            Reply::Endless { head, chunk } => {
                let _ = writer.tcp().set_write_timeout(Some(IDLE_TIMEOUT));
                let start = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
                let mut sent = writer
                    .write_all(start)
                    .and_then(|()| writer.write_all(&head));
                // Batches of chunks, so the endless body costs little CPU here.
                let batch: Vec<u8> = chunk.repeat((64 * 1024 / chunk.len().max(1)).max(1));
                while sent.is_ok() && !stop.load(Ordering::SeqCst) {
                    sent = writer.write_all(&batch);
                }
                writer.abort();
                return;
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn write_reply(
    writer: &mut impl Write,
    status: u16,
    headers: &[(&'static str, String)],
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    // A 304 has no body, and its length would be that of the 200 it stands for.
    if status != 304 {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    // One write per response: no small-segment stalls.
    writer.write_all(&out)?;
    writer.flush()
}

/// Reads a line, riding out read timeouts (used to poll `stop`).
/// `Ok(None)` means the peer closed or we are stopping or idle too long.
fn read_line(
    reader: &mut BufReader<impl Read>,
    stop: &AtomicBool,
    line: &mut String,
) -> std::io::Result<Option<()>> {
    let started = Instant::now();
    loop {
        match reader.read_line(line) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(())),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) || started.elapsed() > IDLE_TIMEOUT {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn read_request(reader: &mut BufReader<impl Read>, stop: &AtomicBool) -> ReadOutcome {
    let mut line = String::new();
    match read_line(reader, stop, &mut line) {
        Ok(Some(())) => {}
        _ => return ReadOutcome::Closed,
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return ReadOutcome::Bad("bad request line");
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        match read_line(reader, stop, &mut line) {
            Ok(Some(())) => {}
            _ => return ReadOutcome::Closed,
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADER_LINES {
            return ReadOutcome::Bad("too many headers");
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    if length > MAX_BODY {
        return ReadOutcome::Bad("body too large");
    }
    let mut body = vec![0; length];
    let mut filled = 0;
    let started = Instant::now();
    while filled < length {
        match reader.read(&mut body[filled..]) {
            Ok(0) => return ReadOutcome::Closed,
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) || started.elapsed() > IDLE_TIMEOUT {
                    return ReadOutcome::Closed;
                }
            }
            Err(_) => return ReadOutcome::Closed,
        }
    }
    ReadOutcome::Request(HttpRequest {
        method,
        target,
        headers,
        body,
    })
}
