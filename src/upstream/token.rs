//! The OAuth2 client-credentials token: cached until shortly before it
//! expires, renewed under one lock, and, when the token endpoint fails, not
//! asked again per call (DESIGN.md section 3). Neither the secret nor the
//! token appears in an error or a log line.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Attempt, Upstream, UpstreamError, backoff};
use crate::config::{Secret, UpstreamConfig};
use crate::model::calls::CallType;
use crate::rng::Rng;
use crate::util::lock;

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

/// What the token endpoint is asked with.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Credentials {
    client_id: String,
    client_secret: Secret,
    scope: String,
}

impl Credentials {
    pub(super) fn of(config: &UpstreamConfig) -> Credentials {
        Credentials {
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scope: config.scope.clone(),
        }
    }
}

pub(super) struct Token {
    value: Arc<str>,
    refresh_at: Instant,
    /// The API answered a call with it other than 401: it was good once,
    /// so a 401 now means it expired or was revoked early.
    accepted: bool,
    /// When the API answered 401 to it while it had never accepted it: a
    /// fresh token refused, a credentials or permission problem.
    refused_at: Option<Instant>,
    /// The call types that refused it (a bit per `CallType::index`): one
    /// may be a permission the client lacks; several, the credentials.
    refused_by: u32,
}

/// The cached token, or why the token endpoint last failed.
#[derive(Default)]
pub(super) struct TokenSlot {
    token: Option<Token>,
    /// Set when a token request failed after its retries: callers get this
    /// error at once instead of asking again, so a broken token endpoint
    /// costs one token request sequence per run, not one per call.
    outage: Option<(Instant, UpstreamError)>,
    /// When a 401 last made us drop an accepted token for a new one: at
    /// most once per run, and once per [`TOKEN_OUTAGE_PAUSE`] outside runs,
    /// so an API that refuses some calls cannot cost a token per call.
    renewed_on_401: Option<Instant>,
}

/// What a 401 to a call means, decided under the token lock.
pub(super) enum On401 {
    /// Ask again with a (new) token: the one used was stale.
    Retry,
    /// The credentials are refused: fail the call as unauthorized.
    Refused,
}

impl Upstream {
    /// A sync run starts: a token endpoint that failed before is asked
    /// again (once, with its retries), and not again until the run ends; a
    /// token the API refused is dropped, so the run tries one fresh token.
    pub fn begin_run(&self) {
        let mut slot = lock(&self.token);
        slot.outage = None;
        slot.renewed_on_401 = None;
        if slot.token.as_ref().is_some_and(|t| t.refused_at.is_some()) {
            slot.token = None;
        }
        drop(slot);
        self.in_run.store(true, Ordering::SeqCst);
    }

    pub fn end_run(&self) {
        self.in_run.store(false, Ordering::SeqCst);
    }

    /// Whether a pause that started at `since` still holds: for the rest of
    /// a run, or [`TOKEN_OUTAGE_PAUSE`] outside runs (the warm-up).
    fn still_paused(&self, since: Instant) -> bool {
        self.in_run.load(Ordering::SeqCst) || since.elapsed() < TOKEN_OUTAGE_PAUSE
    }

    /// Whether the API refuses the token we hold for every kind of call
    /// it was tried on (two or more, and it accepted it for nothing),
    /// within the pause: the credentials are refused, and a caller outside
    /// a run (the warm-up) rests as for a token outage. One refusing call
    /// type is a permission the client lacks: the others go on.
    pub fn refuses_us(&self) -> bool {
        let slot = lock(&self.token);
        slot.token.as_ref().is_some_and(|t| {
            t.refused_by.count_ones() >= 2 && t.refused_at.is_some_and(|at| self.still_paused(at))
        })
    }

    /// The API answered a call made with `used` (not with 401).
    pub(super) fn accepted(&self, used: &str) {
        let mut slot = lock(&self.token);
        if let Some(token) = slot.token.as_mut()
            && &*token.value == used
            && !token.accepted
        {
            token.accepted = true;
            token.refused_at = None;
            token.refused_by = 0;
        }
    }

    /// The API answered 401 to a call made with `used`. A token it never
    /// accepted is refused (DESIGN.md section 2: a credentials or
    /// permission problem, not an outage) and no other is asked for. An
    /// accepted one is stale: it is dropped for a new one, at most once a
    /// run (or per pause outside runs); a 401 beyond that is a refusal too.
    pub(super) fn on_401(&self, used: &str, call_type: CallType, error: &UpstreamError) -> On401 {
        let mut slot = lock(&self.token);
        let renew_allowed = !slot.renewed_on_401.is_some_and(|at| self.still_paused(at));
        let Some(token) = slot.token.as_mut().filter(|t| &*t.value == used) else {
            // Another call replaced or dropped it already: use the current one.
            return On401::Retry;
        };
        if token.accepted {
            if !renew_allowed {
                return On401::Refused;
            }
            slot.token = None;
            slot.renewed_on_401 = Some(Instant::now());
            return On401::Retry;
        }
        token.refused_by |= 1 << call_type.index();
        if token.refused_at.is_none() {
            log::warn!(
                "{error}; no new token is asked for a 401 until {}",
                if self.in_run.load(Ordering::SeqCst) {
                    "the next run"
                } else {
                    "the outage pause has passed"
                }
            );
            token.refused_at = Some(Instant::now());
        }
        On401::Refused
    }

    /// A valid bearer token, fetching one when none is cached or it is about
    /// to expire. After a failed token request, callers get its error at
    /// once: within a run until the next run begins, outside runs (warm-up)
    /// for [`TOKEN_OUTAGE_PAUSE`].
    pub(super) fn bearer(&self) -> Result<Arc<str>, UpstreamError> {
        // Holding the lock while fetching makes concurrent callers wait for
        // the one token request instead of each sending their own.
        let mut slot = lock(&self.token);
        if let Some(token) = slot.token.as_ref()
            && Instant::now() < token.refresh_at
            && token.refused_at.is_none_or(|at| self.still_paused(at))
        {
            // A refused token is still sent until its pause is over: the
            // API may refuse only some calls, and a new token would not
            // change its mind about the others.
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

    /// New credentials (a config reload): the token held was issued for the
    /// old ones and goes, and so does any memory of the old ones failing.
    /// The same credentials again change nothing.
    pub fn set_credentials(&self, config: &UpstreamConfig) {
        let new = Credentials::of(config);
        {
            let mut current = lock(&self.credentials);
            if *current == new {
                return;
            }
            *current = new;
        }
        let mut slot = lock(&self.token);
        slot.token = None;
        slot.outage = None;
        slot.renewed_on_401 = None;
    }

    /// Asks the token endpoint for a token now (`check-config --connect`):
    /// whether it accepts the client id and secret. The token is kept.
    pub fn check_credentials(&self) -> Result<(), UpstreamError> {
        let token = self.fetch_token()?;
        lock(&self.token).token = Some(token);
        Ok(())
    }

    fn fetch_token(&self) -> Result<Token, UpstreamError> {
        let mut rng = Rng::from_entropy();
        let mut attempt = 0;
        let credentials = lock(&self.credentials).clone();
        loop {
            attempt += 1;
            let mut form = vec![
                ("grant_type", "client_credentials"),
                ("client_id", credentials.client_id.as_str()),
                ("client_secret", credentials.client_secret.expose()),
            ];
            if !credentials.scope.is_empty() {
                form.push(("scope", credentials.scope.as_str()));
            }
            let outcome = self.send(CallType::Token, || {
                self.agent
                    .post(&self.token_url)
                    .header("Accept", "application/json")
                    .send_form(form)
            });
            let reason = match outcome {
                Attempt::Answer { status, body, .. } if (200..300).contains(&status) => {
                    let (token, note) = parse_token(&body, Instant::now())?;
                    if let Some(note) = note {
                        log::warn!("token endpoint: {note}");
                    }
                    return Ok(token);
                }
                // OAuth2 (RFC 6749 section 5.2): invalid_client and the
                // like come as 400 or 401; 403 is a refusal too.
                Attempt::Answer { status, .. } if matches!(status, 400 | 401 | 403) => {
                    return Err(UpstreamError::Token {
                        reason: format!(
                            "token endpoint {} answered HTTP {status}: the client id and secret were refused (unauthorized: check upstream.client_id and the secret)",
                            self.token_url
                        ),
                        rejected: true,
                    });
                }
                Attempt::Answer { status, .. }
                    if (400..500).contains(&status) && !matches!(status, 408 | 429) =>
                {
                    return Err(UpstreamError::Token {
                        reason: format!(
                            "token endpoint {} answered HTTP {status} (check upstream.token_url)",
                            self.token_url
                        ),
                        rejected: false,
                    });
                }
                Attempt::Answer { status, .. } if (300..400).contains(&status) => {
                    return Err(UpstreamError::Token {
                        reason: format!(
                            "token endpoint answered HTTP {status}, a redirect (not followed: check upstream.token_url)"
                        ),
                        rejected: false,
                    });
                }
                Attempt::Answer { status, .. } => {
                    format!("token endpoint {} answered HTTP {status}", self.token_url)
                }
                Attempt::Broken(reason) => format!("token endpoint {}: {reason}", self.token_url),
            };
            if attempt > self.retries || self.is_cancelled() {
                return Err(UpstreamError::Token {
                    reason: format!("{reason} after {attempt} attempt(s)"),
                    rejected: false,
                });
            }
            std::thread::sleep(backoff(attempt, &mut rng));
        }
    }
}

/// The token and its refresh time from a token answer, and a note when its
/// `expires_in` was unusable or out of bounds (the value is not secret; the
/// token is, so no error here quotes the body).
fn parse_token(body: &[u8], now: Instant) -> Result<(Token, Option<String>), UpstreamError> {
    let bad = |reason: String| UpstreamError::Token {
        reason,
        rejected: false,
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "token response is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let access_token = match value.get("access_token") {
        Some(serde_json::Value::String(t)) if !t.is_empty() => t.as_str(),
        Some(serde_json::Value::String(_)) => {
            return Err(bad("token response has an empty access_token".into()));
        }
        Some(_) => return Err(bad("token response's access_token is not a string".into())),
        None => return Err(bad("token response has no access_token".into())),
    };
    let (lifetime, note) = token_lifetime(value.get("expires_in"));
    // Refresh a minute early, or at half-life for very short-lived tokens.
    let early = TOKEN_EARLY_REFRESH.min(lifetime / 2);
    let refresh_at = now.checked_add(lifetime - early).unwrap_or(now);
    Ok((
        Token {
            value: access_token.into(),
            refresh_at,
            accepted: false,
            refused_at: None,
            refused_by: 0,
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

#[cfg(test)]
mod tests {
    use super::*;

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
            assert!(!err.to_string().contains("sekrit"), "{err}");
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
