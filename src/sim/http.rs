//! A minimal HTTP/1.1 server for the simulator: one thread per connection,
//! keep-alive, TCP_NODELAY, and the two misbehaviours a fault needs that a
//! well-behaved server library will not do — a body cut short with the
//! connection dropped, and a request accepted but never answered.
//!
//! Why not tiny_http here: tiny_http 0.12 serves connections on a pool that
//! can lose the wake-up for a new connection while its threads sit in
//! keep-alive reads, so a burst of 16 new connections left one stalled until
//! the client's timeout. The simulator must never be the bottleneck of a
//! measurement, so it owns its connections. (The metrics endpoint sees one
//! scraper at a time and stays on tiny_http.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
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

pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stalls: Arc<Stalls>,
    acceptor: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(
        bind: SocketAddr,
        stalls: Arc<Stalls>,
        handler: Arc<Handler>,
    ) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let stop = stop.clone();
            let stalls = stalls.clone();
            std::thread::Builder::new()
                .name("sim-accept".into())
                .spawn(move || accept_loop(listener, stop, stalls, handler))?
        };
        Ok(HttpServer {
            addr,
            stop,
            stalls,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
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

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    stalls: Arc<Stalls>,
    handler: Arc<Handler>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let (stop, stalls, handler) = (stop.clone(), stalls.clone(), handler.clone());
        let spawned = std::thread::Builder::new()
            .name("sim-conn".into())
            .spawn(move || serve_connection(stream, &stop, &stalls, &*handler));
        if let Err(e) = spawned {
            log::warn!("simulator: cannot start a connection thread: {e}");
        }
    }
}

enum ReadOutcome {
    Request(HttpRequest),
    Closed,
    Bad(&'static str),
}

fn serve_connection(stream: TcpStream, stop: &AtomicBool, stalls: &Stalls, handler: &Handler) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(POLL));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let request = match read_request(&mut reader, stop) {
            ReadOutcome::Request(r) => r,
            ReadOutcome::Closed => return,
            ReadOutcome::Bad(why) => {
                let _ = write_reply(&mut writer, 400, &[], why.as_bytes(), true);
                return;
            }
        };
        let close = request
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        match handler(&request) {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                if write_reply(&mut writer, status, &headers, &body, close).is_err() || close {
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
                let _ = writer.flush();
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return;
            }
            Reply::Stall => {
                stalls.wait(stop);
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return;
            }
            Reply::Endless { head, chunk } => {
                let _ = writer.set_write_timeout(Some(IDLE_TIMEOUT));
                let start = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
                let mut sent = writer
                    .write_all(start)
                    .and_then(|()| writer.write_all(&head));
                // Batches of chunks, so the endless body costs little CPU here.
                let batch: Vec<u8> = chunk.repeat((64 * 1024 / chunk.len().max(1)).max(1));
                while sent.is_ok() && !stop.load(Ordering::SeqCst) {
                    sent = writer.write_all(&batch);
                }
                let _ = writer.shutdown(std::net::Shutdown::Both);
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
    writer: &mut TcpStream,
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
    reader: &mut BufReader<TcpStream>,
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

fn read_request(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> ReadOutcome {
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
