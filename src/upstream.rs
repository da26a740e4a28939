//! The one way precache talks to the upstream API.
//!
//! Owns the ureq agent (keep-alive, timeouts), the OAuth2 client-credentials
//! token, retries with exponential backoff and jitter, the process-wide cap
//! on requests in flight and the optional requests-per-second limit. The
//! fetch stage and the warm-up workers share one [`Upstream`], so together
//! they never exceed the cap or the rate.
//!
//! Every request is recorded as a [`CallRecord`] (path, params, status,
//! attempts, duration) for the API-call log. The client secret and the
//! bearer token never leave this module: they are not in records, errors or
//! log lines.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Secret, UpstreamConfig};
use crate::rng::Rng;
use crate::util::lock;

/// Longest wait honoured from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Backoff before retry n is `BACKOFF_BASE * 2^(n-1)`, capped, with jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Refresh the token this long before the upstream says it expires.
const TOKEN_EARLY_REFRESH: Duration = Duration::from_secs(60);
/// Token lifetime used when the answer has no usable `expires_in`.
const TOKEN_DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Bounds on the lifetime an answer may claim: a negative or zero one would
/// send a token request before every call, a huge one would overflow the clock.
const TOKEN_MIN_LIFETIME: Duration = Duration::from_secs(10);
const TOKEN_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// After the token endpoint failed, how long callers outside a run (the
/// warm-up workers) get that failure at once before it is asked again. A
/// run asks again at its start, and never twice within itself.
const TOKEN_OUTAGE_PAUSE: Duration = Duration::from_secs(30);

/// What a request is for; labels metrics and the API-call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallType {
    Seasons,
    TournamentSeason,
    TournamentMatches,
    Match,
    MatchIncidents,
    MatchReferee,
    MatchTeamMembers,
    Team,
    Token,
}

impl CallType {
    pub const ALL: [CallType; 9] = [
        CallType::Seasons,
        CallType::TournamentSeason,
        CallType::TournamentMatches,
        CallType::Match,
        CallType::MatchIncidents,
        CallType::MatchReferee,
        CallType::MatchTeamMembers,
        CallType::Team,
        CallType::Token,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Seasons => "seasons",
            CallType::TournamentSeason => "tournament_season",
            CallType::TournamentMatches => "tournament_matches",
            CallType::Match => "match",
            CallType::MatchIncidents => "matchincidents",
            CallType::MatchReferee => "matchreferee",
            CallType::MatchTeamMembers => "matchteammembers",
            CallType::Team => "team",
            CallType::Token => "token",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CallType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One GET against the API: a path relative to `api_url` (no leading slash)
/// and query parameters in the order they are sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiRequest {
    pub call_type: CallType,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
}

impl ApiRequest {
    pub fn seasons(year: i32, sport_id: i64) -> Self {
        ApiRequest {
            call_type: CallType::Seasons,
            path: "api/v1/ta/Seasons/".into(),
            query: vec![
                ("year", year.to_string()),
                ("sportId", sport_id.to_string()),
            ],
        }
    }

    pub fn tournament_season(season_id: i64) -> Self {
        ApiRequest {
            call_type: CallType::TournamentSeason,
            path: format!("api/v1/ta/Tournament/Season/{season_id}/"),
            query: vec![("hierarchy", "true".into())],
        }
    }

    pub fn tournament_matches(tournament_id: i64) -> Self {
        ApiRequest {
            call_type: CallType::TournamentMatches,
            path: "api/v1/ta/TournamentMatches".into(),
            query: vec![("tournamentId", tournament_id.to_string())],
        }
    }

    /// `path?query` as the proxy's cache key spells it (no leading slash).
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            return self.path.clone();
        }
        let query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}?{}", self.path, query.join("&"))
    }
}

/// A record of one logical call (all its attempts), for the API-call log.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    pub call_type: CallType,
    pub method: &'static str,
    pub url_path: String,
    pub params: BTreeMap<String, String>,
    /// Final HTTP status; `None` when no response came.
    pub status_code: Option<u16>,
    pub attempts: u32,
    pub duration_ms: u64,
    pub timestamp: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Collects the records of one run (shared by the fetch threads).
#[derive(Debug, Default)]
pub struct CallLog(Mutex<Vec<CallRecord>>);

impl CallLog {
    pub fn push(&self, record: CallRecord) {
        lock(&self.0).push(record);
    }
    pub fn take(&self) -> Vec<CallRecord> {
        std::mem::take(&mut *lock(&self.0))
    }
}

/// A 2xx answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// Why a call failed after its retries. The URL in these is the path and
/// query only: no host credentials, no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// The API answered with a non-2xx status (after retries when retryable).
    Status {
        url: String,
        status: u16,
        attempts: u32,
    },
    /// No answer: connect error, timeout, broken or truncated body.
    Transport {
        url: String,
        reason: String,
        attempts: u32,
    },
    /// No token could be obtained.
    Token { reason: String },
    /// The request could not be built (bad URL in the configuration).
    Request { url: String, reason: String },
    /// The process is shutting down; the call was not made.
    Cancelled { url: String },
}

impl UpstreamError {
    pub fn status(&self) -> Option<u16> {
        match self {
            UpstreamError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Status {
                url,
                status,
                attempts,
            } if (300..400).contains(status) => write!(
                f,
                "GET {url}: HTTP {status}, a redirect (not followed: the API answers where it is configured)"
            ),
            UpstreamError::Status {
                url,
                status,
                attempts,
            } => write!(f, "GET {url}: HTTP {status} after {attempts} attempt(s)"),
            UpstreamError::Transport {
                url,
                reason,
                attempts,
            } => write!(f, "GET {url}: {reason} after {attempts} attempt(s)"),
            UpstreamError::Token { reason } => write!(f, "cannot get an access token: {reason}"),
            UpstreamError::Request { url, reason } => write!(f, "GET {url}: {reason}"),
            UpstreamError::Cancelled { url } => write!(f, "GET {url}: cancelled by shutdown"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// Counting semaphore: at most `limit` requests in flight process-wide.
struct Gate {
    in_flight: Mutex<usize>,
    freed: Condvar,
    limit: usize,
}

struct GatePermit<'a>(&'a Gate);

impl Gate {
    fn acquire(&self) -> GatePermit<'_> {
        let mut n = lock(&self.in_flight);
        while *n >= self.limit {
            n = self.freed.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
        GatePermit(self)
    }
}

impl Drop for GatePermit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.in_flight) -= 1;
        self.0.freed.notify_one();
    }
}

/// Spaces request starts at least `1 / rate` seconds apart, so no one-second
/// window sees more than `rate` (+1 at its edge) requests.
struct RateLimiter {
    interval: Duration,
    next_slot: Mutex<Instant>,
}

impl RateLimiter {
    fn wait(&self) {
        let slot = {
            let mut next = lock(&self.next_slot);
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        let now = Instant::now();
        if slot > now {
            std::thread::sleep(slot - now);
        }
    }
}

struct Token {
    value: Arc<str>,
    refresh_at: Instant,
}

/// The cached token, or why the token endpoint last failed.
#[derive(Default)]
struct TokenSlot {
    token: Option<Token>,
    /// Set when a token request failed after its retries: callers get this
    /// error at once instead of asking again, so a broken token endpoint
    /// costs one token request sequence per run, not one per call.
    outage: Option<(Instant, UpstreamError)>,
}

/// Counters an operator wants per call type (exported by the metrics module).
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    retries: [AtomicU64; CallType::ALL.len()],
    requests: [AtomicU64; CallType::ALL.len()],
}

impl UpstreamCounters {
    pub fn retries(&self, call_type: CallType) -> u64 {
        self.retries[call_type.index()].load(Ordering::Relaxed)
    }
    /// HTTP requests sent (every attempt counts).
    pub fn requests(&self, call_type: CallType) -> u64 {
        self.requests[call_type.index()].load(Ordering::Relaxed)
    }
}

pub struct Upstream {
    agent: ureq::Agent,
    api_url: String,
    token_url: String,
    client_id: String,
    client_secret: Secret,
    scope: String,
    retries: u32,
    gate: Gate,
    rate: Option<RateLimiter>,
    token: Mutex<TokenSlot>,
    /// Between [`Upstream::begin_run`] and [`Upstream::end_run`].
    in_run: AtomicBool,
    max_body_bytes: u64,
    counters: UpstreamCounters,
    cancelled: AtomicBool,
}

/// Outcome of one HTTP attempt, before retry policy is applied.
enum Attempt {
    Answer {
        status: u16,
        headers: BTreeMap<String, String>,
        body: Vec<u8>,
    },
    Broken(String),
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Upstream {
        let timeout = Duration::from_secs(config.timeout_secs);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .max_idle_connections(config.max_concurrency.max(4) * 2)
            .max_idle_connections_per_host(config.max_concurrency.max(4) * 2)
            // A redirect is a failed call: an API that sends us to another
            // host (a captive portal, a moved service) answers for someone else.
            .max_redirects(0)
            .user_agent(concat!("precache/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        // Config bounds the rate to [0.01, 100000]; the clamp keeps a
        // hand-built config from panicking here.
        let rate = (config.max_requests_per_sec > 0.0).then(|| RateLimiter {
            interval: Duration::from_secs_f64(
                1.0 / config
                    .max_requests_per_sec
                    .clamp(crate::config::MIN_REQUESTS_PER_SEC, 1e9),
            ),
            next_slot: Mutex::new(Instant::now()),
        });
        Upstream {
            agent,
            api_url: config.api_url.trim_end_matches('/').to_string(),
            token_url: config.token_url.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scope: config.scope.clone(),
            retries: config.retries,
            gate: Gate {
                in_flight: Mutex::new(0),
                freed: Condvar::new(),
                limit: config.max_concurrency.max(1),
            },
            rate,
            token: Mutex::new(TokenSlot::default()),
            in_run: AtomicBool::new(false),
            max_body_bytes: config.max_body_bytes,
            counters: UpstreamCounters::default(),
            cancelled: AtomicBool::new(false),
        }
    }

    pub fn counters(&self) -> &UpstreamCounters {
        &self.counters
    }

    /// After this, calls not yet started fail fast with `Cancelled` and
    /// retries stop (used by shutdown so a run ends within the grace period).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// A sync run starts: a token endpoint that failed before is asked
    /// again (once, with its retries), and not again until the run ends.
    pub fn begin_run(&self) {
        lock(&self.token).outage = None;
        self.in_run.store(true, Ordering::SeqCst);
    }

    pub fn end_run(&self) {
        self.in_run.store(false, Ordering::SeqCst);
    }

    /// GETs `request` with retries; records the call in `log`.
    pub fn get(&self, request: &ApiRequest, log: &CallLog) -> Result<ApiResponse, UpstreamError> {
        let started = Instant::now();
        let timestamp = Utc::now();
        let url_for_errors = format!("/{}", request.path_and_query());
        let (result, attempts) = self.get_with_retries(request, &url_for_errors);
        log.push(CallRecord {
            call_type: request.call_type,
            method: "GET",
            url_path: format!("/{}", request.path),
            params: request
                .query
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            status_code: match &result {
                Ok(r) => Some(r.status),
                Err(e) => e.status(),
            },
            attempts,
            duration_ms: started.elapsed().as_millis() as u64,
            timestamp,
            error: result.as_ref().err().map(ToString::to_string),
        });
        result
    }

    fn get_with_retries(
        &self,
        request: &ApiRequest,
        url_for_errors: &str,
    ) -> (Result<ApiResponse, UpstreamError>, u32) {
        let url = format!("{}/{}", self.api_url, request.path);
        let mut rng = Rng::from_entropy();
        let mut token_refreshed = false;
        let mut attempt = 0u32;
        loop {
            if self.is_cancelled() {
                let err = UpstreamError::Cancelled {
                    url: url_for_errors.into(),
                };
                return (Err(err), attempt);
            }
            attempt += 1;
            let token = match self.bearer() {
                Ok(t) => t,
                Err(e) => return (Err(e), attempt),
            };
            let outcome = self.send(request.call_type, || {
                let mut req = self.agent.get(&url);
                for (k, v) in &request.query {
                    req = req.query(*k, v);
                }
                req.header("Authorization", &format!("Bearer {token}"))
                    .header("Accept", "application/json")
                    .call()
            });
            let retry_after = match outcome {
                Attempt::Answer {
                    status,
                    headers,
                    body,
                } if (200..300).contains(&status) => {
                    return (
                        Ok(ApiResponse {
                            status,
                            headers,
                            body,
                        }),
                        attempt,
                    );
                }
                Attempt::Answer { status: 401, .. } if !token_refreshed => {
                    // The token may have expired or been revoked early: fetch a
                    // new one once and try again without spending a retry.
                    token_refreshed = true;
                    self.invalidate_token(&token);
                    attempt -= 1;
                    continue;
                }
                Attempt::Answer {
                    status, headers, ..
                } => {
                    // Not a 3xx: it is not followed (see the agent), and
                    // asking again would only be sent away again.
                    let retryable = status == 429 || (500..600).contains(&status);
                    if !retryable || attempt > self.retries {
                        let err = UpstreamError::Status {
                            url: url_for_errors.into(),
                            status,
                            attempts: attempt,
                        };
                        return (Err(err), attempt);
                    }
                    if status == 429 {
                        headers
                            .get("retry-after")
                            .and_then(|v| parse_retry_after(v))
                    } else {
                        None
                    }
                }
                Attempt::Broken(reason) => {
                    if attempt > self.retries {
                        let err = UpstreamError::Transport {
                            url: url_for_errors.into(),
                            reason,
                            attempts: attempt,
                        };
                        return (Err(err), attempt);
                    }
                    None
                }
            };
            self.counters.retries[request.call_type.index()].fetch_add(1, Ordering::Relaxed);
            let wait = retry_after.unwrap_or_else(|| backoff(attempt, &mut rng));
            log::debug!("retrying GET {url_for_errors} in {wait:?} (attempt {attempt} failed)");
            std::thread::sleep(wait);
        }
    }

    /// One HTTP exchange under the rate limit and the concurrency cap.
    fn send(
        &self,
        call_type: CallType,
        call: impl FnOnce() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Attempt {
        if let Some(rate) = &self.rate {
            rate.wait();
        }
        let _permit = self.gate.acquire();
        self.counters.requests[call_type.index()].fetch_add(1, Ordering::Relaxed);
        match call() {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let headers = response
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
                    })
                    .collect();
                match response
                    .body_mut()
                    .with_config()
                    .limit(self.max_body_bytes)
                    .read_to_vec()
                {
                    Ok(body) => Attempt::Answer {
                        status,
                        headers,
                        body,
                    },
                    Err(ureq::Error::BodyExceedsLimit(_)) => Attempt::Broken(format!(
                        "body of HTTP {status} larger than upstream.max_body_bytes ({} bytes)",
                        self.max_body_bytes
                    )),
                    Err(e) => Attempt::Broken(format!("reading body of HTTP {status}: {e}")),
                }
            }
            Err(e) => Attempt::Broken(e.to_string()),
        }
    }

    /// A valid bearer token, fetching one when none is cached or it is about
    /// to expire. After a failed token request, callers get its error at
    /// once: within a run until the next run begins, outside runs (warm-up)
    /// for [`TOKEN_OUTAGE_PAUSE`].
    fn bearer(&self) -> Result<Arc<str>, UpstreamError> {
        // Holding the lock while fetching makes concurrent callers wait for
        // the one token request instead of each sending their own.
        let mut slot = lock(&self.token);
        if let Some(token) = slot.token.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(token.value.clone());
        }
        if let Some((since, error)) = &slot.outage {
            let paused = self.in_run.load(Ordering::SeqCst) || since.elapsed() < TOKEN_OUTAGE_PAUSE;
            if paused {
                return Err(error.clone());
            }
            slot.outage = None;
        }
        match self.fetch_token() {
            Ok(token) => {
                let value = token.value.clone();
                slot.token = Some(token);
                Ok(value)
            }
            Err(e) => {
                log::warn!(
                    "{e}; calls needing a new token fail until the token endpoint is asked again"
                );
                slot.token = None;
                slot.outage = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    fn invalidate_token(&self, used: &str) {
        let mut slot = lock(&self.token);
        if slot.token.as_ref().is_some_and(|t| &*t.value == used) {
            slot.token = None;
        }
    }

    fn fetch_token(&self) -> Result<Token, UpstreamError> {
        let mut rng = Rng::from_entropy();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut form = vec![
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose()),
            ];
            if !self.scope.is_empty() {
                form.push(("scope", self.scope.as_str()));
            }
            let outcome = self.send(CallType::Token, || {
                self.agent
                    .post(&self.token_url)
                    .header("Accept", "application/json")
                    .send_form(form)
            });
            let reason = match outcome {
                Attempt::Answer { status, body, .. } if (200..300).contains(&status) => {
                    let (token, note) = parse_token(&body, Instant::now())
                        .map_err(|reason| UpstreamError::Token { reason })?;
                    if let Some(note) = note {
                        log::warn!("token endpoint: {note}");
                    }
                    return Ok(token);
                }
                Attempt::Answer { status, .. } if (400..500).contains(&status) && status != 429 => {
                    return Err(UpstreamError::Token {
                        reason: format!(
                            "token endpoint answered HTTP {status} (check client id and secret)"
                        ),
                    });
                }
                Attempt::Answer { status, .. } if (300..400).contains(&status) => {
                    return Err(UpstreamError::Token {
                        reason: format!(
                            "token endpoint answered HTTP {status}, a redirect (not followed: check upstream.token_url)"
                        ),
                    });
                }
                Attempt::Answer { status, .. } => format!("token endpoint answered HTTP {status}"),
                Attempt::Broken(reason) => format!("token endpoint: {reason}"),
            };
            if attempt > self.retries || self.is_cancelled() {
                return Err(UpstreamError::Token {
                    reason: format!("{reason} after {attempt} attempt(s)"),
                });
            }
            std::thread::sleep(backoff(attempt, &mut rng));
        }
    }
}

/// The token and its refresh time from a token answer, and a note when its
/// `expires_in` was unusable or out of bounds (the value is not secret; the
/// token is, so no error here quotes the body).
fn parse_token(body: &[u8], now: Instant) -> Result<(Token, Option<String>), String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "token response is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let access_token = match value.get("access_token") {
        Some(serde_json::Value::String(t)) if !t.is_empty() => t.as_str(),
        Some(serde_json::Value::String(_)) => {
            return Err("token response has an empty access_token".into());
        }
        Some(_) => return Err("token response's access_token is not a string".into()),
        None => return Err("token response has no access_token".into()),
    };
    let (lifetime, note) = token_lifetime(value.get("expires_in"));
    // Refresh a minute early, or at half-life for very short-lived tokens.
    let early = TOKEN_EARLY_REFRESH.min(lifetime / 2);
    let refresh_at = now.checked_add(lifetime - early).unwrap_or(now);
    Ok((
        Token {
            value: access_token.into(),
            refresh_at,
        },
        note,
    ))
}

/// `expires_in` as a lifetime within [`TOKEN_MIN_LIFETIME`, `TOKEN_MAX_LIFETIME`]:
/// a number or a numeric string; anything else means the default.
fn token_lifetime(expires_in: Option<&serde_json::Value>) -> (Duration, Option<String>) {
    let seconds = match expires_in {
        None | Some(serde_json::Value::Null) => return (TOKEN_DEFAULT_LIFETIME, None),
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    let shown = |v: &serde_json::Value| {
        let text = v.to_string();
        text.chars().take(40).collect::<String>()
    };
    let raw = expires_in.map(shown).unwrap_or_default();
    match seconds.filter(|s| s.is_finite()) {
        None => (
            TOKEN_DEFAULT_LIFETIME,
            Some(format!(
                "expires_in {raw} is not a number; assuming {} s",
                TOKEN_DEFAULT_LIFETIME.as_secs()
            )),
        ),
        Some(s) if s < TOKEN_MIN_LIFETIME.as_secs_f64() => (
            TOKEN_MIN_LIFETIME,
            Some(format!(
                "expires_in {raw} is below {} s; using that",
                TOKEN_MIN_LIFETIME.as_secs()
            )),
        ),
        Some(s) if s > TOKEN_MAX_LIFETIME.as_secs_f64() => (
            TOKEN_MAX_LIFETIME,
            Some(format!(
                "expires_in {raw} is above {} s; using that",
                TOKEN_MAX_LIFETIME.as_secs()
            )),
        ),
        Some(s) => (Duration::from_secs_f64(s), None),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare for APIs and is
/// treated as absent, falling back to backoff), capped.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    // Clamped before the conversion, which panics past u64::MAX seconds.
    Some(Duration::from_secs_f64(
        secs.min(MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// Exponential backoff with jitter in [50 %, 100 %] of the step.
fn backoff(attempt: u32, rng: &mut Rng) -> Duration {
    let step = BACKOFF_BASE
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    step.mul_f64(0.5 + rng.unit() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query_matches_the_proxy_key_format() {
        assert_eq!(
            ApiRequest::seasons(2025, 72).path_and_query(),
            "api/v1/ta/Seasons/?year=2025&sportId=72"
        );
        assert_eq!(
            ApiRequest::tournament_season(5).path_and_query(),
            "api/v1/ta/Tournament/Season/5/?hierarchy=true"
        );
        assert_eq!(
            ApiRequest::tournament_matches(9).path_and_query(),
            "api/v1/ta/TournamentMatches?tournamentId=9"
        );
    }

    #[test]
    fn retry_after_is_capped_and_tolerant() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("99999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("1e300"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("inf"), None);
        assert_eq!(parse_retry_after("NaN"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut rng = Rng::new(1);
        for attempt in 1..30 {
            let d = backoff(attempt, &mut rng);
            let step = BACKOFF_BASE
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(BACKOFF_CAP);
            assert!(d >= step / 2 && d <= step, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn token_parse_errors_do_not_echo_the_body() {
        let now = Instant::now();
        for body in [
            &br#"{"access_token": "sekrit", "expires_in": "#[..],
            br#"{"access_token": ["sekrit"]}"#,
            br#"["sekrit"]"#,
        ] {
            let Err(err) = parse_token(body, now) else {
                panic!("should fail");
            };
            assert!(!err.contains("sekrit"), "{err}");
        }
        let (t, note) = parse_token(br#"{"access_token": "abc", "expires_in": 100}"#, now).unwrap();
        assert!(note.is_none());
        assert!(t.refresh_at >= now + Duration::from_secs(50));
    }

    #[test]
    fn hostile_token_lifetimes_are_clamped_never_a_panic() {
        let now = Instant::now();
        for (expires_in, lifetime) in [
            ("18446744073709551615", TOKEN_MAX_LIFETIME),
            ("1e308", TOKEN_MAX_LIFETIME),
            ("-5", TOKEN_MIN_LIFETIME),
            ("0", TOKEN_MIN_LIFETIME),
            ("0.5", TOKEN_MIN_LIFETIME),
            ("120.5", Duration::from_secs_f64(120.5)),
            ("\"3600\"", Duration::from_secs(3600)),
            ("\"soon\"", TOKEN_DEFAULT_LIFETIME),
            ("{}", TOKEN_DEFAULT_LIFETIME),
            ("null", TOKEN_DEFAULT_LIFETIME),
        ] {
            let body = format!(r#"{{"access_token": "abc", "expires_in": {expires_in}}}"#);
            let (token, _) = parse_token(body.as_bytes(), now).unwrap();
            let early = TOKEN_EARLY_REFRESH.min(lifetime / 2);
            assert_eq!(token.refresh_at, now + lifetime - early, "{expires_in}");
        }
    }
}
