//! The HTTP server (tiny_http on `metrics.bind`): `/metrics`, `/healthz`,
//! `/readyz`, `/status`, the status page at `/`, and the admin endpoints.
//!
//! A few handler threads share one `tiny_http::Server`, so a client that is
//! slow to read its answer holds one thread, not the scrape behind it.
//! Admin endpoints exist only when `metrics.admin_token` is set; they check
//! `Authorization: Bearer <token>` in constant time and never echo it. They
//! do not act themselves: they hand a command to the run loop, which runs or
//! clears between runs, so an admin action never races a run.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde_json::json;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::lifecycle::Shutdown;
use crate::serve::auth;
use crate::serve::control::AdminCommand;
use crate::serve::metrics::Metrics;
use crate::serve::status::{self, DaemonState, WarmView};
use crate::store::lease::Leadership;
use crate::store::{Connector, Keys, Store};
use crate::upstream::Upstream;
use crate::warm::stats::WarmStats;

/// Handler threads.
const HANDLERS: usize = 4;
/// Largest request body accepted (no endpoint takes one). tiny_http reads
/// bodies up to 1 KiB before handing a request out; larger ones would be
/// read from the socket, so they are refused unread.
const MAX_BODY: usize = 1024;
/// Longest URL accepted.
const MAX_URL: usize = 2048;
/// How long the run loop may take to start a `POST /clear`.
const CLEAR_TIMEOUT: Duration = Duration::from_secs(30);
/// How much longer the requester listens, so a clear started just before
/// the deadline is still heard of.
const CLEAR_SLACK: Duration = Duration::from_secs(5);

/// Everything the handlers read.
pub struct HttpContext {
    pub metrics: Arc<Metrics>,
    pub state: Arc<DaemonState>,
    pub upstream: Arc<Upstream>,
    pub warm: Option<Arc<WarmStats>>,
    pub redis: Connector,
    pub keys: Keys,
    /// `None`: admin endpoints are off.
    pub admin_token: Option<String>,
    pub commands: Sender<AdminCommand>,
    /// The leader lease, when kept: a standby refuses admin work.
    pub leadership: Option<Arc<Leadership>>,
    /// Users who may read (`metrics.basic_auth_users`); `None`: anyone
    /// who reaches the listener. The admin endpoints take their token.
    pub basic_auth: Option<auth::BasicAuth>,
}

/// The leader's name when this instance is a standby.
fn standby(context: &HttpContext) -> Option<String> {
    let state = context.leadership.as_ref()?.state();
    if state.token.is_some() {
        return None;
    }
    Some(state.other.map_or("nobody yet".to_string(), |h| {
        crate::store::lease::holder_of(&h.value).to_string()
    }))
}

impl HttpContext {
    fn warm_view(&self) -> Option<WarmView> {
        self.warm.as_ref().map(|w| WarmView {
            due: w.due(),
            scheduled: w.scheduled(),
            oldest_due_age_secs: w.oldest_due_age().as_secs(),
            done: w.done_total(),
            failed: w.failed_total(),
        })
    }

    fn status(&self, now: Instant) -> status::Status {
        let mut status = status::status(&self.state.view(), now, self.warm_view());
        status.redis = Some(status::RedisView {
            target: self.redis.target().to_string(),
            master: self.redis.current_master(),
            master_changes: self.redis.master_changes(),
            reachable: self.redis.master_reachable(),
        });
        status
    }
}

/// Why the HTTP server could not start.
#[derive(Debug)]
pub enum ServeError {
    /// `metrics.bind` cannot be listened on.
    Bind {
        addr: std::net::SocketAddr,
        reason: String,
    },
    /// A handler thread could not be started.
    Spawn(std::io::Error),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Bind { addr, reason } => {
                write!(f, "metrics.bind: cannot listen on {addr}: {reason}")
            }
            ServeError::Spawn(e) => write!(f, "cannot start an HTTP thread: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// The handler threads; dropping it stops and joins them. It does not
/// stop on the process's shutdown signal: through the grace period it
/// serves `/status` and `/readyz` saying "stopping", and it is dropped
/// after the run loop ends.
pub struct HttpServer {
    server: Arc<Server>,
    stop: Shutdown,
    threads: Vec<JoinHandle<()>>,
    pub addr: std::net::SocketAddr,
}

impl HttpServer {
    /// Listens on `bind`; with `tls` (certificate chain and key, PEM),
    /// HTTPS only.
    pub fn start(
        bind: std::net::SocketAddr,
        tls: Option<&(Vec<u8>, crate::config::Secret)>,
        context: Arc<HttpContext>,
    ) -> Result<HttpServer, ServeError> {
        let bind_error = |reason: String| ServeError::Bind { addr: bind, reason };
        let server = match tls {
            None => Server::http(bind),
            Some((certificate, key)) => Server::https(
                bind,
                tiny_http::SslConfig {
                    certificate: certificate.clone(),
                    private_key: key.expose().as_bytes().to_vec(),
                },
            ),
        }
        .map_err(|e| bind_error(e.to_string()))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| bind_error("not an IP address".into()))?;
        let server = Arc::new(server);
        let stop = Shutdown::new();
        let mut threads = Vec::new();
        for n in 0..HANDLERS {
            let (server, stop, context) = (server.clone(), stop.clone(), context.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("http-{n}"))
                    .spawn(move || serve(&server, &stop, &context))
                    .map_err(ServeError::Spawn)?,
            );
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let auth = if context.basic_auth.is_some() {
            " (basic auth)"
        } else {
            ""
        };
        log::info!("HTTP on {scheme}://{addr}{auth}: /metrics /healthz /readyz /status /");
        Ok(HttpServer {
            server,
            stop,
            threads,
            addr,
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.fire();
        for _ in 0..self.threads.len() {
            self.server.unblock();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve(server: &Server, stop: &Shutdown, context: &HttpContext) {
    // Each handler keeps its own Redis connection for /readyz.
    let mut store = Some(Store::connected_by(
        context.redis.clone(),
        context.keys.clone(),
    ));
    while !stop.is_fired() {
        match server.recv_timeout(Duration::from_millis(500)) {
            Ok(Some(request)) => handle(request, context, store.as_mut()),
            Ok(None) => {}
            Err(e) => {
                log::warn!("HTTP: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// An answer before it becomes a tiny_http response.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    extra: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, body: &impl serde::Serialize) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: format!("{}\n", serde_json::to_string(body).unwrap_or_default()),
            extra: Vec::new(),
        }
    }

    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            extra: Vec::new(),
        }
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply::json(status, &json!({ "error": message }))
    }
}

fn handle(request: Request, context: &HttpContext, store: Option<&mut Store>) {
    let reply = if request.url().len() > MAX_URL {
        Reply::error(414, "URL too long")
    } else if request.body_length().unwrap_or(0) > MAX_BODY {
        Reply::error(413, "request body too large")
    } else {
        // No endpoint reads a body, so nothing here waits on a slow client.
        // tiny_http (patched, see vendor/tiny_http) has read a body of up to
        // MAX_BODY bytes in full; after any other body it closes the
        // connection once we answer, so unread bytes never become a request.
        route(&request, context, store)
    };
    let mut response = Response::from_string(reply.body).with_status_code(reply.status);
    let mut headers = vec![("Content-Type", reply.content_type.to_string())];
    headers.push(("Cache-Control", "no-store".into()));
    headers.extend(reply.extra);
    for (name, value) in headers {
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    if let Err(e) = request.respond(response) {
        log::debug!("HTTP: the client went away: {e}");
    }
}

fn route(request: &Request, context: &HttpContext, store: Option<&mut Store>) -> Reply {
    let path = request.url().split('?').next().unwrap_or("");
    if let Err(refused) = admit(request, context, path) {
        return refused;
    }
    let now = Instant::now();
    match path {
        "/metrics" => metrics(context),
        "/healthz" => match status::health(&context.state.view(), now) {
            Ok(()) => Reply::text(200, "ok\n"),
            Err(reason) => Reply::text(503, format!("{reason}\n")),
        },
        "/readyz" => {
            let redis = match store {
                Some(store) => store.ping(),
                None => Err(crate::store::StoreError {
                    kind: Default::default(),
                    doing: "connecting".into(),
                    reason: "redis.url cannot be used".into(),
                }),
            };
            match status::readiness(&context.state.view(), now, redis) {
                Ok(()) => Reply::text(200, "ready\n"),
                Err(reason) => Reply::text(503, format!("{reason}\n")),
            }
        }
        "/status" => Reply::json(200, &context.status(now)),
        "/" => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: crate::serve::page::render_page(&context.status(now)),
            extra: Vec::new(),
        },
        "/run" | "/accept-shrink" | "/clear" if standby(context).is_some() => Reply::error(
            409,
            &format!(
                "this instance is a standby; the leader is {}: ask it",
                standby(context).unwrap_or_default()
            ),
        ),
        "/run" | "/accept-shrink" => trigger(context, path == "/accept-shrink"),
        "/clear" => clear(context, now),
        _ => Reply::error(404, "not found"),
    }
}

/// Whether the request may be answered: a path we serve, a method it
/// allows, and the bearer token (admin endpoints) or a user (every GET,
/// when users are configured). `Err`: the reply that refuses it.
fn admit(request: &Request, context: &HttpContext, path: &str) -> Result<(), Reply> {
    let method = request.method();
    let admin = matches!(path, "/run" | "/clear" | "/accept-shrink");
    let allowed: &[Method] = match path {
        "/" | "/metrics" | "/healthz" | "/readyz" | "/status" => &[Method::Get, Method::Head],
        "/run" | "/clear" | "/accept-shrink" if context.admin_token.is_some() => &[Method::Post],
        _ => return Err(Reply::error(404, "not found")),
    };
    if !allowed.contains(method) {
        let mut reply = Reply::error(405, "method not allowed");
        let allow: Vec<String> = allowed.iter().map(|m| m.to_string()).collect();
        reply.extra.push(("Allow", allow.join(", ")));
        return Err(reply);
    }
    let authorization = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str());
    if admin {
        let token = context.admin_token.as_deref().unwrap_or_default();
        if !auth::bearer_matches(authorization, token) {
            let mut reply = Reply::error(401, "a valid bearer token is required");
            reply.extra.push(("WWW-Authenticate", "Bearer".into()));
            return Err(reply);
        }
    } else if let Some(users) = &context.basic_auth
        && !users.allows(authorization)
    {
        let mut reply = Reply::error(401, "a user and password are required");
        reply
            .extra
            .push(("WWW-Authenticate", "Basic realm=\"precache\"".into()));
        return Err(reply);
    }
    Ok(())
}

/// `GET /metrics`: the live sources read, then the registry rendered.
fn metrics(context: &HttpContext) -> Reply {
    context.metrics.refresh_live(
        context.warm.as_deref(),
        context.upstream.counters(),
        crate::store::redis_errors(),
    );
    if let Some(leadership) = &context.leadership {
        context.metrics.set_lease(&leadership.state());
    }
    context.metrics.set_redis(
        context.redis.current_master().as_deref(),
        context.redis.master_changes(),
        context.redis.master_reachable(),
    );
    match context.metrics.render() {
        Ok(body) => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body,
            extra: Vec::new(),
        },
        Err(e) => Reply::text(500, format!("cannot render metrics: {e}")),
    }
}

/// `POST /run` and `POST /accept-shrink`: a run queued for the loop.
fn trigger(context: &HttpContext, accept_shrink: bool) -> Reply {
    if context.state.is_running() {
        return Reply::error(409, "a run is in progress");
    }
    let (command, body) = if accept_shrink {
        (
            AdminCommand::AcceptShrink,
            json!({"triggered": true, "accept_shrink": true}),
        )
    } else {
        (AdminCommand::Run, json!({"triggered": true}))
    };
    match context.commands.try_send(command) {
        Ok(()) => Reply::json(202, &body),
        Err(_) => Reply::error(409, "a run or clear is already queued"),
    }
}

/// `POST /clear`: the loop clears between runs and answers what it removed.
fn clear(context: &HttpContext, now: Instant) -> Reply {
    if context.state.is_running() {
        return Reply::error(409, "a run is in progress; clear after it");
    }
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
    let command = AdminCommand::Clear {
        started: started_tx,
        reply: reply_tx,
        deadline: now + CLEAR_TIMEOUT,
    };
    if context.commands.try_send(command).is_err() {
        return Reply::error(409, "a run or clear is already queued");
    }
    if started_rx
        .recv_timeout(CLEAR_TIMEOUT + CLEAR_SLACK)
        .is_err()
    {
        return Reply::error(
            503,
            "the run loop did not take the clear in time; nothing was cleared",
        );
    }
    // Started: its Redis calls have their own timeouts.
    match reply_rx.recv() {
        Ok(Ok(removed)) => Reply::json(200, &removed),
        Ok(Err(e)) => Reply::error(503, &e.to_string()),
        Err(_) => Reply::error(503, "the run loop stopped during the clear"),
    }
}
