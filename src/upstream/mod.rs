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
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::config::UpstreamConfig;
use crate::model::calls::{CallRecord, CallType};
use crate::model::request::{ApiRequest, ApiResponse};
use crate::rng::Rng;
use crate::util::lock;

mod limits;
mod resolve;
mod token;
mod transport;

use limits::{Gate, RateLimiter};
use token::TokenSlot;
pub use transport::{Roots, TransportError};

/// Longest wait honoured from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Backoff before retry n is `BACKOFF_BASE * 2^(n-1)`, capped, with jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
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

/// Why a call failed after its retries. The URL in these is the API's
/// (which cannot carry credentials) and the request's path and query; never
/// a token.
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
    /// No token could be obtained. `rejected`: the token endpoint refused
    /// the client id and secret (a 4xx), which no retry fixes.
    Token { reason: String, rejected: bool },
    /// The API answered 401 to a token fresh from the token endpoint: the
    /// credentials lack a permission, or the API refuses valid tokens. Not
    /// an outage, and another token will not help (DESIGN.md section 2).
    Unauthorized { url: String },
    /// The request could not be built (bad URL in the configuration).
    Request { url: String, reason: String },
    /// The process is shutting down; the call was not made.
    Cancelled { url: String },
}

impl UpstreamError {
    pub fn status(&self) -> Option<u16> {
        match self {
            UpstreamError::Status { status, .. } => Some(*status),
            UpstreamError::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }

    /// Whether the upstream refused our credentials (rather than failing to
    /// answer): reported as `unauthorized`, not as the upstream being down.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unauthorized { .. } | UpstreamError::Token { rejected: true, .. }
        )
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
            UpstreamError::Token { reason, .. } => {
                write!(f, "cannot get an access token: {reason}")
            }
            UpstreamError::Unauthorized { url } => write!(
                f,
                "GET {url}: HTTP 401 with a token fresh from the token endpoint (unauthorized: check the client's permissions for this API)"
            ),
            UpstreamError::Request { url, reason } => write!(f, "GET {url}: {reason}"),
            UpstreamError::Cancelled { url } => write!(f, "GET {url}: cancelled by shutdown"),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// Counters an operator wants per call type (exported by the metrics module).
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    retries: [AtomicU64; CallType::ALL.len()],
    requests: [AtomicU64; CallType::ALL.len()],
    /// TCP connections opened (TLS included); keep-alive reuses them.
    connections: Arc<AtomicU64>,
}

impl UpstreamCounters {
    pub fn retries(&self, call_type: CallType) -> u64 {
        self.retries[call_type.index()].load(Ordering::Relaxed)
    }
    /// HTTP requests sent (every attempt counts).
    pub fn requests(&self, call_type: CallType) -> u64 {
        self.requests[call_type.index()].load(Ordering::Relaxed)
    }
    /// TCP connections opened so far (each TLS handshake is one).
    pub fn connections_opened(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// The most a body buffer is sized by `Content-Length` before reading.
const PRESIZE_BYTES: u64 = 4 << 20;

pub struct Upstream {
    agent: ureq::Agent,
    /// `upstream.api_url`, which never carries credentials (the config
    /// refuses them), so errors may name it.
    api_url: String,
    /// `" via proxy …"` (redacted) for error messages, or empty.
    via: String,
    /// How the upstream is reached, for the start-up log line.
    described: String,
    token_url: String,
    /// Replaced on a config reload (a rotated secret).
    credentials: Mutex<token::Credentials>,
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
    /// The client for `config`: its trusted roots (the host's store plus
    /// `upstream.ca_file`), its proxy, timeouts and limits. Fails only on a
    /// CA file or proxy that cannot be used.
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, TransportError> {
        let timeout = Duration::from_secs(config.timeout_secs);
        let (roots, found) = transport::root_certs(config.ca_file.as_deref())?;
        let proxy = config.proxy.as_ref().map(transport::proxy).transpose()?;
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .max_idle_connections(config.max_concurrency.max(4) * 2)
            .max_idle_connections_per_host(config.max_concurrency.max(4) * 2)
            // A redirect is a failed call: an API that sends us to another
            // host (a captive portal, a moved service) answers for someone else.
            .max_redirects(0)
            .user_agent(concat!("precache/", env!("CARGO_PKG_VERSION")))
            .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
            // Exactly the configuration's proxy (or none): ureq would
            // otherwise read the environment on its own.
            .proxy(proxy)
            .build();
        let counters = UpstreamCounters::default();
        let agent = ureq::Agent::with_parts(
            agent_config,
            transport::CountingConnector::new(counters.connections.clone()),
            resolve::CachingResolver::default(),
        );
        let via = config.proxy.as_ref().map_or(String::new(), |p| {
            format!(" via proxy {}", crate::config::redacted_url(p.url.expose()))
        });
        let trusted = if found.bundled {
            "the bundled Mozilla roots".to_string()
        } else {
            format!(
                "{} CA certificate(s) of the host{}",
                found.host,
                match found.ca_file {
                    0 => String::new(),
                    n => format!(" and {n} of upstream.ca_file"),
                }
            )
        };
        let described = format!(
            "{}{}{}, trusting {trusted}",
            config.api_url,
            via,
            config
                .proxy
                .as_ref()
                .map_or(String::new(), |p| format!(" (from {})", p.source)),
        );
        // Config bounds the rate to [0.01, 100000]; the clamp keeps a
        // hand-built config from panicking here.
        let rate = (config.max_requests_per_sec > 0.0)
            .then(|| RateLimiter::new(config.max_requests_per_sec));
        Ok(Upstream {
            agent,
            api_url: config.api_url.trim_end_matches('/').to_string(),
            via,
            described,
            token_url: config.token_url.clone(),
            credentials: Mutex::new(token::Credentials::of(config)),
            retries: config.retries,
            gate: Gate::new(config.max_concurrency),
            rate,
            token: Mutex::new(TokenSlot::default()),
            in_run: AtomicBool::new(false),
            max_body_bytes: config.max_body_bytes,
            counters,
            cancelled: AtomicBool::new(false),
        })
    }

    /// `https://api… via proxy … (from HTTPS_PROXY), trusting …`, for the
    /// start-up log line.
    pub fn describe(&self) -> &str {
        &self.described
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

    /// GETs `request` with retries; records the call in `log`.
    pub fn get(&self, request: &ApiRequest, log: &CallLog) -> Result<ApiResponse, UpstreamError> {
        let started = Instant::now();
        let timestamp = Utc::now();
        let url_for_errors = format!("{}/{}", self.api_url, request.path_and_query());
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
            unauthorized: result.as_ref().is_err_and(UpstreamError::is_unauthorized),
        });
        // A call left without an answer while shutting down (its last
        // attempt cut off, no token) was stopped by the shutdown: it says
        // nothing of the upstream. Its record keeps what really happened.
        result.map_err(|e| match e {
            UpstreamError::Transport { .. }
            | UpstreamError::Token {
                rejected: false, ..
            } if self.is_cancelled() => UpstreamError::Cancelled {
                url: url_for_errors,
            },
            e => e,
        })
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
                if let Some((name, value)) = request.validators.as_ref().and_then(|v| v.header()) {
                    req = req.header(name, value);
                }
                req.header("Authorization", &format!("Bearer {token}"))
                    .header("Accept", "application/json")
                    .call()
            });
            if matches!(&outcome, Attempt::Answer { status, .. } if *status != 401) {
                self.accepted(&token);
            }
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
                Attempt::Answer {
                    status: 304,
                    headers,
                    ..
                } if request.validators.is_some() => {
                    // Unchanged since the validators were given: no body.
                    let response = ApiResponse {
                        status: 304,
                        headers,
                        body: Vec::new(),
                    };
                    return (Ok(response), attempt);
                }
                Attempt::Answer { status: 401, .. } => {
                    let err = UpstreamError::Unauthorized {
                        url: url_for_errors.into(),
                    };
                    match self.on_401(&token, request.call_type, &err) {
                        // A stale token: a new one, once per call, without
                        // spending a retry.
                        token::On401::Retry if !token_refreshed => {
                            token_refreshed = true;
                            attempt -= 1;
                            continue;
                        }
                        _ => return (Err(err), attempt),
                    }
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
                // Sized by Content-Length so a body is read without growing
                // and copying the buffer; at most PRESIZE_BYTES up front, so
                // a header that lies costs nothing before the bytes arrive.
                let expected = response
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map_or(0, |n| n.min(PRESIZE_BYTES) as usize);
                let mut body = Vec::with_capacity(expected);
                let read = response
                    .body_mut()
                    .with_config()
                    .limit(self.max_body_bytes)
                    .reader()
                    .read_to_end(&mut body)
                    .map(|_| body)
                    .map_err(ureq::Error::from);
                match read {
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
            Err(e) => Attempt::Broken(self.transport_failure(&e.to_string())),
        }
    }

    /// A transport error's reason with the proxy it went through and, for
    /// a certificate problem, what to do about it.
    fn transport_failure(&self, reason: &str) -> String {
        match transport::hint(reason) {
            Some(hint) => format!("{reason}{} ({hint})", self.via),
            None => format!("{reason}{}", self.via),
        }
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
}
