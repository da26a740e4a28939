//! The upstream simulator (`precache sim`, DESIGN.md section 7).
//!
//! It serves the TA API of DESIGN.md section 2 from a generated data set, on
//! a pool of threads so that serving is never the bottleneck of a benchmark,
//! and offers control endpoints under `/_sim/` for tests and demos: churn
//! with an exact report of what changed, fault injection, request counts and
//! a request log. It is the upstream of every test; the data and churn logic
//! live in [`data`], this module does HTTP.

pub mod data;
mod http;
pub mod local;
pub mod sentinel;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::rng::{Rng, stable_hash};
use crate::util::lock;
pub use data::{ChangedIds, ChurnSpec, Dataset, Scale, churn_names};
pub use http::TlsIdentity;
use http::{HttpRequest, HttpServer, Reply, Stalls};

/// Request timestamps kept for `/_sim/requests` (oldest dropped first).
const REQUEST_LOG_CAP: usize = 2_000_000;

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub bind: SocketAddr,
    pub scale: Scale,
    pub seed: u64,
    pub latency_ms: u64,
    pub client_id: String,
    pub client_secret: String,
    pub token_ttl_secs: u64,
    /// "Today" for the data set; the real date unless a test pins it.
    pub today: NaiveDate,
    /// The name the match list goes by in a `TournamentMatches` answer.
    pub match_list_key: MatchListKey,
    /// Serve HTTPS with this certificate instead of HTTP.
    pub tls: Option<TlsIdentity>,
    /// Compress API answers with gzip for clients that accept it.
    pub gzip: bool,
}

/// Where a `TournamentMatches` answer puts its list: `matches`, as the real
/// API does, or `tournamentMatches`, as the seed's documentation says
/// (DESIGN.md section 2). A client must read both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MatchListKey {
    #[default]
    Matches,
    TournamentMatches,
}

impl MatchListKey {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchListKey::Matches => "matches",
            MatchListKey::TournamentMatches => "tournamentMatches",
        }
    }

    /// The other spelling.
    fn other(self) -> MatchListKey {
        match self {
            MatchListKey::Matches => MatchListKey::TournamentMatches,
            MatchListKey::TournamentMatches => MatchListKey::Matches,
        }
    }
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            bind: SocketAddr::from(([127, 0, 0, 1], 8099)),
            scale: Scale::Small,
            seed: 1,
            latency_ms: 0,
            client_id: "demo".into(),
            client_secret: "demo-secret".into(),
            token_ttl_secs: 3600,
            today: chrono::Local::now().date_naive(),
            match_list_key: MatchListKey::default(),
            tls: None,
            gzip: false,
        }
    }
}

/// One call type's injected faults. Rates are fractions of requests; a
/// request draws once and the first matching band applies, in the order
/// stall, error, truncate, malformed, empty, single_object.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fault {
    /// Fraction answered with `status`.
    pub error_rate: f64,
    /// Status for errors: 500, 503, 429, … (default 500).
    pub status: Option<u16>,
    /// `Retry-After` seconds sent with a 429.
    pub retry_after_secs: Option<u64>,
    /// Added to every request of this type.
    pub latency_ms: u64,
    /// Fraction accepted and never answered.
    pub stall_rate: f64,
    /// Fraction answered 200 with the body cut in half.
    pub truncate_rate: f64,
    /// Fraction answered 200 with a body that is not JSON.
    pub malformed_rate: f64,
    /// Fraction answered 200 with an empty body.
    pub empty_rate: f64,
    /// Fraction answered with the list's first element as a bare object.
    pub single_object_rate: f64,
    /// Fraction answered with `hostile`: what a real upstream sometimes
    /// says and a client must survive (DESIGN.md section 7).
    pub hostile_rate: f64,
    pub hostile: Option<Hostile>,
    /// Decide per URL instead of per request, so the same URL always fails.
    pub sticky: bool,
    /// Stop injecting after this many faults.
    pub max_faults: Option<u64>,
    /// Only requests for these ids (season, tournament, match or team id).
    pub ids: Option<Vec<i64>>,
}

/// Answers that parse, or nearly, but say something a naive client gets wrong.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hostile {
    /// The list under the body key is `null`: `{"seasons": null}`.
    NullList,
    /// The list under the body key is empty: `{"seasons": []}`.
    EmptyList,
    /// The body is a bare `[]`.
    TopLevelList,
    /// Seasons' `seasonDateFrom` in formats no client parses
    /// (`/Date(1754006400000)/`, `01.08.2026`).
    UnreadableDates,
    /// Every integer `…Id` field as a string.
    StringIds,
    /// Matches whose `tournamentId` is null, another root or unknown.
    ForeignTournament,
    /// The matches of a root plus one of a lower root's.
    DuplicateMatch,
    /// `302 Found` to another host (which would answer with empty lists).
    Redirect,
    /// A 200 whose body never ends.
    EndlessBody,
    /// A match list under both `matches` and `tournamentMatches`, the
    /// second holding one match fewer: which one is the answer?
    ConflictingMatchKeys,
    /// For the token endpoint: a token whose `expires_in` is this value.
    ExpiresIn(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultAction {
    Stall,
    Error,
    Truncate,
    Malformed,
    Empty,
    SingleObject,
    Hostile,
}

/// Call types as the simulator counts them (the client's names, plus token).
const CALL_TYPES: [&str; 15] = [
    "token",
    "seasons",
    "tournament_season",
    "tournament_matches",
    "match",
    "matchincidents",
    "matchreferee",
    "matchteammembers",
    "team",
    "tournament_page",
    // The datasets (DESIGN.md section 13), by their names.
    "org_teams",
    "venues",
    "venue_details",
    "clubs",
    // Requests that followed a redirect elsewhere (none should).
    "elsewhere",
];

struct State {
    options: SimOptions,
    data: Mutex<Dataset>,
    faults: Mutex<HashMap<String, (Fault, u64)>>,
    tokens: Mutex<HashMap<String, Instant>>,
    counts: HashMap<&'static str, AtomicU64>,
    request_log: Mutex<Vec<(u64, &'static str)>>,
    started: Instant,
    stalls: Arc<Stalls>,
    rng: Mutex<Rng>,
    /// When the data last changed: every list's `Last-Modified`.
    modified: Mutex<DateTime<Utc>>,
    /// List calls answered 304 Not Modified.
    not_modified: AtomicU64,
    /// Sent as every list's ETag instead of its hash: an upstream whose
    /// ETag stays the same across edits.
    fixed_etag: Mutex<Option<String>>,
    /// Where match lists are served (settable at run time).
    match_list_key: Mutex<MatchListKey>,
    /// TCP connections accepted.
    connections: Arc<AtomicU64>,
    /// Answers sent gzip-compressed.
    gzipped: AtomicU64,
}

impl State {
    /// A churn step; the lists' `Last-Modified` moves on with it.
    fn churn(&self, spec: &ChurnSpec) -> ChangedIds {
        let changed = lock(&self.data).churn(spec);
        *lock(&self.modified) = Utc::now();
        changed
    }
}

/// A running simulator; stops on drop.
pub struct SimServer {
    server: HttpServer,
    state: Arc<State>,
}

impl SimServer {
    pub fn start(options: SimOptions) -> std::io::Result<SimServer> {
        let data = Dataset::generate(options.scale, options.seed, options.today);
        let stalls = Arc::new(Stalls::default());
        let bind = options.bind;
        let match_list_key = options.match_list_key;
        let state = Arc::new(State {
            rng: Mutex::new(Rng::new(options.seed ^ 0x5EED)),
            options,
            data: Mutex::new(data),
            faults: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            counts: CALL_TYPES.iter().map(|c| (*c, AtomicU64::new(0))).collect(),
            request_log: Mutex::new(Vec::new()),
            started: Instant::now(),
            stalls: stalls.clone(),
            modified: Mutex::new(Utc::now()),
            not_modified: AtomicU64::new(0),
            fixed_etag: Mutex::new(None),
            match_list_key: Mutex::new(match_list_key),
            connections: Arc::default(),
            gzipped: AtomicU64::new(0),
        });
        let handler_state = state.clone();
        let server = HttpServer::start(
            bind,
            state.options.tls.as_ref(),
            stalls,
            state.connections.clone(),
            Arc::new(move |req: &HttpRequest| {
                let reply = handle(&handler_state, req);
                compressed(&handler_state, req, reply)
            }),
        )?;
        Ok(SimServer { server, state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:port`, or `https://` when serving TLS.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// TCP connections accepted so far (a client with keep-alive opens few).
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Answers sent gzip-compressed so far.
    pub fn gzipped(&self) -> u64 {
        self.state.gzipped.load(Ordering::Relaxed)
    }

    /// Applies a churn step directly (tests may also use `POST /_sim/churn`).
    ///
    /// Panics on a churn field no dataset takes (a test's typo would
    /// otherwise churn nothing and pass).
    pub fn churn(&self, spec: &ChurnSpec) -> ChangedIds {
        if let Err(e) = spec.check() {
            panic!("{e}");
        }
        self.state.churn(spec)
    }

    /// Every list's ETag is `etag` from now on, whatever its body (`None`:
    /// a hash of the body again).
    pub fn set_fixed_etag(&self, etag: Option<&str>) {
        *lock(&self.state.fixed_etag) = etag.map(str::to_string);
    }

    /// Serves match lists under `key` from now on.
    pub fn set_match_list_key(&self, key: MatchListKey) {
        *lock(&self.state.match_list_key) = key;
    }

    /// List calls answered 304 Not Modified so far.
    pub fn not_modified(&self) -> u64 {
        self.state.not_modified.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> crate::model::ItemCounts {
        lock(&self.state.data).stats()
    }

    /// Runs `f` with the data set (for tests that compute expectations).
    pub fn with_data<T>(&self, f: impl FnOnce(&Dataset) -> T) -> T {
        f(&lock(&self.state.data))
    }

    /// Requests served so far, by call type.
    pub fn request_counts(&self) -> HashMap<String, u64> {
        self.state
            .counts
            .iter()
            .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
            .collect()
    }

    /// Milliseconds since start and call type of every request so far.
    pub fn request_log(&self) -> Vec<(u64, &'static str)> {
        lock(&self.state.request_log).clone()
    }

    pub fn set_fault(&self, call_type: &str, fault: Fault) {
        lock(&self.state.faults).insert(call_type.to_string(), (fault, 0));
    }

    pub fn clear_faults(&self) {
        self.state.clear_faults();
    }

    /// Forgets every token issued, as a token endpoint restart would: the
    /// next API call of each client answers 401.
    pub fn revoke_tokens(&self) {
        lock(&self.state.tokens).clear();
    }

    /// Blocks until the process ends (for the `precache sim` command).
    pub fn wait(self) {
        let SimServer { server, state: _ } = self;
        server.wait();
    }
}

impl State {
    fn clear_faults(&self) {
        lock(&self.faults).clear();
        // Stalled connections are closed unanswered, freeing their clients.
        self.stalls.release();
    }

    fn count(&self, call_type: &'static str) {
        if let Some(c) = self.counts.get(call_type) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let mut log = lock(&self.request_log);
        if log.len() >= REQUEST_LOG_CAP {
            log.drain(..REQUEST_LOG_CAP / 2);
        }
        log.push((self.started.elapsed().as_millis() as u64, call_type));
    }

    /// The fault to apply to this request, if any, and the latency to add.
    fn fault_for(
        &self,
        call_type: &str,
        url: &str,
        id: Option<i64>,
    ) -> (Option<(FaultAction, Fault)>, u64) {
        let mut faults = lock(&self.faults);
        let key = if faults.contains_key(call_type) {
            call_type
        } else if call_type != "token" && faults.contains_key("*") {
            "*"
        } else {
            return (None, 0);
        };
        let Some((fault, applied)) = faults.get_mut(key) else {
            return (None, 0);
        };
        let latency = fault.latency_ms;
        if let Some(ids) = &fault.ids
            && !id.is_some_and(|id| ids.contains(&id))
        {
            return (None, latency);
        }
        if fault.max_faults.is_some_and(|max| *applied >= max) {
            return (None, latency);
        }
        let draw = if fault.sticky {
            (stable_hash(self.options.seed, url) >> 11) as f64 / (1u64 << 53) as f64
        } else {
            lock(&self.rng).unit()
        };
        let bands = [
            (FaultAction::Stall, fault.stall_rate),
            (FaultAction::Error, fault.error_rate),
            (FaultAction::Truncate, fault.truncate_rate),
            (FaultAction::Malformed, fault.malformed_rate),
            (FaultAction::Empty, fault.empty_rate),
            (FaultAction::SingleObject, fault.single_object_rate),
            (FaultAction::Hostile, fault.hostile_rate),
        ];
        let mut edge = 0.0;
        for (action, rate) in bands {
            edge += rate;
            if draw < edge {
                *applied += 1;
                return (Some((action, fault.clone())), latency);
            }
        }
        (None, latency)
    }
}

fn error(status: u16, message: &str) -> Reply {
    Reply::json(status, &json!({ "error": message }))
}

fn ok_text(body: String) -> Reply {
    Reply::Full {
        status: 200,
        headers: vec![("Content-Type", "application/json; charset=utf-8".into())],
        body: body.into_bytes(),
    }
}

/// Splits `/path?query` into a lower-cased path without trailing slash and the decoded query.
fn split_url(url: &str) -> (String, HashMap<String, String>) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let path = path.trim_end_matches('/').to_ascii_lowercase();
    let params = parse_form(query);
    (path, params)
}

fn parse_form(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k).to_ascii_lowercase(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A 200 gzip-compressed, as a real server does when the client accepts it
/// and the simulator was told to (`--gzip`).
fn compressed(state: &State, request: &HttpRequest, reply: Reply) -> Reply {
    let accepts = request
        .header("Accept-Encoding")
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    match reply {
        Reply::Full {
            status: 200,
            mut headers,
            body,
        } if state.options.gzip && accepts && !body.is_empty() => {
            use std::io::Write as _;
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            let packed = encoder.write_all(&body).and_then(|()| encoder.finish());
            match packed {
                Ok(packed) => {
                    state.gzipped.fetch_add(1, Ordering::Relaxed);
                    headers.push(("Content-Encoding", "gzip".into()));
                    Reply::Full {
                        status: 200,
                        headers,
                        body: packed,
                    }
                }
                Err(_) => Reply::Full {
                    status: 200,
                    headers,
                    body,
                },
            }
        }
        other => other,
    }
}

fn handle(state: &State, request: &HttpRequest) -> Reply {
    let (path, params) = split_url(&request.target);
    let method = request.method.as_str();
    let body = String::from_utf8_lossy(&request.body);
    if path.starts_with("/_sim") {
        return control(state, method, &path, &params, &body);
    }
    if path == "/connect/token" {
        state.count("token");
        return token(state, method, &body);
    }
    let Some((call_type, id, build)) = route(&path, &params) else {
        return error(404, "no such endpoint");
    };
    if method != "GET" {
        return error(405, "method not allowed");
    }
    state.count(call_type);
    let authorized = request
        .header("Authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|t| {
            lock(&state.tokens)
                .get(t)
                .is_some_and(|exp| Instant::now() < *exp)
        });
    let (fault, fault_latency) = state.fault_for(call_type, &request.target, id);
    let latency = state.options.latency_ms + fault_latency;
    if latency > 0 {
        std::thread::sleep(Duration::from_millis(latency));
    }
    if !authorized {
        return error(401, "missing, unknown or expired token");
    }
    let match_key = lock(&state.match_list_key).as_str();
    let data = lock(&state.data);
    let served = build(&data, match_key);
    let Some((action, fault)) = fault else {
        let reply = match served {
            Some(Served::Json(v)) => Reply::json(200, &v),
            Some(Served::Empty) => ok_text(String::new()),
            None => return error(404, "not found"),
        };
        return match list_key(state, call_type) {
            Some(_) => conditional(state, request, reply),
            None => reply,
        };
    };
    let body = match served {
        Some(Served::Json(v)) => v,
        Some(Served::Empty) => Value::Null,
        None => json!({}),
    };
    faulty_reply(
        state,
        &data,
        action,
        &fault,
        body,
        call_type,
        id,
        &request.target,
    )
}

/// A list's 200 with its validators (`ETag`, a hash of the body, and
/// `Last-Modified`, when the data last changed), or 304 Not Modified when
/// the request's `If-None-Match` names that ETag or, without one, its
/// `If-Modified-Since` is not older than the data (RFC 9110 section 13).
fn conditional(state: &State, request: &HttpRequest, reply: Reply) -> Reply {
    let Reply::Full {
        status: 200,
        mut headers,
        body,
    } = reply
    else {
        return reply;
    };
    let etag = lock(&state.fixed_etag)
        .clone()
        .unwrap_or_else(|| format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(&body)));
    let modified = *lock(&state.modified);
    let last_modified = modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let unchanged = match request.header("If-None-Match") {
        Some(tags) => tags
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag),
        None => request
            .header("If-Modified-Since")
            .and_then(|since| DateTime::parse_from_rfc2822(since).ok())
            .is_some_and(|since| modified.timestamp() <= since.timestamp()),
    };
    headers.push(("ETag", etag));
    headers.push(("Last-Modified", last_modified));
    if unchanged {
        state.not_modified.fetch_add(1, Ordering::Relaxed);
        headers.retain(|(name, _)| *name != "Content-Type");
        return Reply::Full {
            status: 304,
            headers,
            body: Vec::new(),
        };
    }
    Reply::Full {
        status: 200,
        headers,
        body,
    }
}

/// The reply a fault turns an answer into. `body`: the JSON the answer
/// would have had (`null` for an empty body).
#[allow(clippy::too_many_arguments)]
fn faulty_reply(
    state: &State,
    data: &Dataset,
    action: FaultAction,
    fault: &Fault,
    body: Value,
    call_type: &str,
    id: Option<i64>,
    target: &str,
) -> Reply {
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    match action {
        FaultAction::Stall => Reply::Stall,
        FaultAction::Error => {
            let status = fault.status.unwrap_or(500);
            let mut headers = vec![("Content-Type", "application/json".to_string())];
            if let Some(secs) = fault.retry_after_secs {
                headers.push(("Retry-After", secs.to_string()));
            }
            Reply::Full {
                status,
                headers,
                body: json!({"error": "injected fault"}).to_string().into_bytes(),
            }
        }
        FaultAction::Truncate => Reply::Truncated {
            body: text.into_bytes(),
        },
        FaultAction::Malformed => {
            ok_text("<html><body>Service temporarily unavailable</body></html>{\"".into())
        }
        FaultAction::Empty => ok_text(String::new()),
        FaultAction::SingleObject => {
            let single = match body {
                Value::Object(mut obj) => {
                    for v in obj.values_mut() {
                        if let Value::Array(items) = v
                            && let Some(first) = items.first().cloned()
                        {
                            *v = first;
                        }
                    }
                    Value::Object(obj)
                }
                other => other,
            };
            Reply::json(200, &single)
        }
        FaultAction::Hostile => match &fault.hostile {
            None => Reply::json(200, &body),
            Some(hostile) => hostile_reply(state, data, hostile, body, call_type, id, target),
        },
    }
}

/// The body key of each list call type.
fn list_key(state: &State, call_type: &str) -> Option<&'static str> {
    match call_type {
        "seasons" => Some("seasons"),
        "tournament_season" => Some("tournamentsInSeason"),
        "tournament_matches" => Some(lock(&state.match_list_key).as_str()),
        "venues" => Some("venues"),
        "clubs" => Some("clubs"),
        _ => None,
    }
}

/// A dataset whose whole body is its records (an object or a list).
fn whole_body(call_type: &str) -> bool {
    matches!(call_type, "org_teams" | "venue_details")
}

fn hostile_reply(
    state: &State,
    data: &Dataset,
    hostile: &Hostile,
    mut body: Value,
    call_type: &str,
    id: Option<i64>,
    target: &str,
) -> Reply {
    let key = list_key(state, call_type);
    let is_matches = call_type == "tournament_matches";
    // The list in the body, as a vector (one object or none become lists).
    let list = |body: &mut Value| -> Option<Vec<Value>> {
        let slot = body.get_mut(key?)?;
        Some(match slot.take() {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            one => vec![one],
        })
    };
    match hostile {
        Hostile::NullList | Hostile::EmptyList => nothing_listed(hostile, key, call_type, body),
        Hostile::TopLevelList => Reply::json(200, &json!([])),
        Hostile::UnreadableDates => {
            if let (Some("seasons"), Some(mut items)) = (key, list(&mut body)) {
                for (i, season) in items.iter_mut().enumerate() {
                    if let Some(obj) = season.as_object_mut() {
                        let date = if i % 2 == 0 {
                            "/Date(1754006400000)/"
                        } else {
                            "01.08.2026"
                        };
                        obj.insert("seasonDateFrom".into(), json!(date));
                    }
                }
                body = json!({ "seasons": items });
            }
            Reply::json(200, &body)
        }
        Hostile::StringIds => {
            stringify_ids(&mut body);
            Reply::json(200, &body)
        }
        Hostile::ForeignTournament => {
            if let (true, Some(key), Some(items)) = (is_matches, key, list(&mut body)) {
                let other = id.and_then(|root| data.other_root(root));
                body = json!({ key: name_foreign_tournaments(items, other) });
            }
            Reply::json(200, &body)
        }
        Hostile::DuplicateMatch => {
            if let (true, Some(key), Some(mut items)) = (is_matches, key, list(&mut body)) {
                if let Some(extra) = id.and_then(|root| data.lower_root_match(root)) {
                    items.push(extra);
                }
                body = json!({ key: items });
            }
            Reply::json(200, &body)
        }
        Hostile::ConflictingMatchKeys => {
            if let (true, Some(key), Some(items)) = (is_matches, key, list(&mut body)) {
                let other = lock(&state.match_list_key).other().as_str();
                let fewer: Vec<Value> = items.iter().skip(1).cloned().collect();
                body = json!({ key: items, other: fewer });
            }
            Reply::json(200, &body)
        }
        Hostile::Redirect => redirect_elsewhere(state, target),
        Hostile::EndlessBody => endless_body(key),
        Hostile::ExpiresIn(value) => {
            if let Some(obj) = body.as_object_mut()
                && obj.contains_key("access_token")
            {
                obj.insert("expires_in".into(), value.clone());
            }
            Reply::json(200, &body)
        }
    }
}

/// `null` or `[]` where the list should be (the whole body for a dataset
/// whose body is its records).
fn nothing_listed(hostile: &Hostile, key: Option<&str>, call_type: &str, body: Value) -> Reply {
    let empty = if *hostile == Hostile::NullList {
        Value::Null
    } else {
        json!([])
    };
    match key {
        Some(key) => Reply::json(200, &json!({ key: empty })),
        None if whole_body(call_type) => Reply::json(200, &empty),
        None => Reply::json(200, &body),
    }
}

/// Matches that name another tournament than the one asked: none, a
/// sibling root (`other`), or one that does not exist.
fn name_foreign_tournaments(mut items: Vec<Value>, other: Option<i64>) -> Vec<Value> {
    for m in &mut items {
        let Some(obj) = m.as_object_mut() else {
            continue;
        };
        let match_id = obj.get("matchId").and_then(Value::as_i64).unwrap_or(0);
        let named = match match_id % 3 {
            0 => Value::Null,
            1 => json!(other),
            _ => json!(999_999_999),
        };
        obj.insert("tournamentId".into(), named);
    }
    items
}

/// Same server, another host name: were it followed, the client would
/// read empty lists there (and `elsewhere` would count it).
fn redirect_elsewhere(state: &State, target: &str) -> Reply {
    let port = state.options.bind.port();
    let location = format!(
        "http://localhost:{port}/_sim/elsewhere?from={}",
        target.replace('&', "%26").replace('?', "%3F")
    );
    Reply::Full {
        status: 302,
        headers: vec![
            ("Location", location),
            ("Content-Type", "text/plain".into()),
        ],
        body: b"moved".to_vec(),
    }
}

/// A body that never ends: a list that goes on, or a token that does.
fn endless_body(key: Option<&str>) -> Reply {
    let head = match key {
        Some(key) => format!("{{\"{key}\":["),
        None => "{\"access_token\":\"".into(),
    };
    Reply::Endless {
        head: head.into_bytes(),
        chunk: match key {
            Some(_) => b"{\"id\":1,\"padding\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"},".to_vec(),
            None => b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_vec(),
        },
    }
}

/// Turns every integer under a key ending in `Id` into a string, recursively.
fn stringify_ids(value: &mut Value) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj.iter_mut() {
                if k.ends_with("Id") && v.is_i64() {
                    *v = json!(v.to_string());
                } else {
                    stringify_ids(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(stringify_ids),
        _ => {}
    }
}

enum Served {
    Json(Value),
    /// A 200 with an empty body (the real API's answer for some empty match lists).
    Empty,
}

/// Builds an answer's body from the data set; the second argument is the
/// name the match list goes by.
type Builder = Box<dyn FnOnce(&Dataset, &'static str) -> Option<Served>>;

/// Maps an API path to its call type, the id it concerns, and how to build the body.
fn route(
    path: &str,
    params: &HashMap<String, String>,
) -> Option<(&'static str, Option<i64>, Builder)> {
    let int = |name: &str| params.get(name).and_then(|v| v.trim().parse::<i64>().ok());
    let json = |call: &'static str, id: Option<i64>, body: fn(&Dataset, i64) -> Option<Value>| {
        let build: Builder = Box::new(move |d: &Dataset, _| body(d, id?).map(Served::Json));
        Some((call, id, build))
    };
    // The datasets' paths (DESIGN.md section 13), spelled here, not taken
    // from the client's templates.
    match path {
        "/api/v1/org/teams" => return json("org_teams", int("orgid"), Dataset::org_body),
        "/api/v1/venues/allvenues" => {
            return json("venues", Some(0), |d, _| Some(d.venues_body()));
        }
        "/api/v1/ta/venue" => return json("venue_details", int("venueid"), Dataset::venue_body),
        _ => {}
    }
    if let Some(sport) = path.strip_prefix("/api/v1/org/clubsbysport/") {
        return json("clubs", sport.parse().ok(), |d, sport| {
            Some(d.clubs_body(sport))
        });
    }
    let rest = path.strip_prefix("/api/v1/ta/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    let by_match =
        |call: &'static str, id: Option<i64>, body: fn(&Dataset, i64) -> Option<Value>| {
            let build: Builder = Box::new(move |d: &Dataset, _| body(d, id?).map(Served::Json));
            Some((call, id, build))
        };
    match segments.as_slice() {
        ["seasons"] => {
            let year = int("year");
            let sport = int("sportid");
            let build: Builder = Box::new(move |d: &Dataset, _| {
                Some(Served::Json(d.seasons_body(year? as i32, sport?)))
            });
            Some(("seasons", sport, build))
        }
        ["tournament", "season", id] => by_match(
            "tournament_season",
            id.parse().ok(),
            Dataset::tournaments_body,
        ),
        ["tournamentmatches"] => {
            let id = int("tournamentid");
            let build: Builder = Box::new(move |d: &Dataset, key: &'static str| {
                let id = id?;
                let list = d.matches_list(id)?;
                Some(match list.len() {
                    // Tournaments without matches answer with an empty body
                    // or an empty list; one match comes as a bare object.
                    0 if id % 2 == 1 => Served::Empty,
                    1 => Served::Json(json!({ key: list[0] })),
                    _ => Served::Json(json!({ key: list })),
                })
            });
            Some(("tournament_matches", id, build))
        }
        ["match"] => by_match("match", int("matchid"), Dataset::match_body),
        ["matchincidents"] => by_match("matchincidents", int("matchid"), Dataset::incidents_body),
        ["matchreferee"] => by_match("matchreferee", int("matchid"), Dataset::referee_body),
        ["matchteammembers", id] => by_match(
            "matchteammembers",
            id.parse().ok(),
            Dataset::team_members_body,
        ),
        ["team"] => by_match("team", int("teamid"), Dataset::team_body),
        ["tournament"] => by_match(
            "tournament_page",
            int("tournamentid"),
            Dataset::tournament_page_body,
        ),
        _ => None,
    }
}

fn token(state: &State, method: &str, body: &str) -> Reply {
    if method != "POST" {
        return error(405, "use POST");
    }
    let (fault, latency) = state.fault_for("token", "/connect/token", None);
    if latency > 0 {
        std::thread::sleep(Duration::from_millis(latency));
    }
    let form = parse_form(body);
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return Reply::json(400, &json!({"error": "unsupported_grant_type"}));
    }
    let id_ok = form.get("client_id") == Some(&state.options.client_id);
    let secret_ok = form.get("client_secret") == Some(&state.options.client_secret);
    if !(id_ok && secret_ok) {
        return Reply::json(401, &json!({"error": "invalid_client"}));
    }
    let value = {
        let mut rng = lock(&state.rng);
        format!("sim-{:016x}{:016x}", rng.next_u64(), rng.next_u64())
    };
    let answer = json!({"access_token": value, "token_type": "Bearer", "expires_in": state.options.token_ttl_secs});
    if let Some((action, fault)) = &fault {
        let issued = matches!(
            (action, &fault.hostile),
            (FaultAction::Hostile, Some(Hostile::ExpiresIn(_)))
        );
        if !issued {
            let data = lock(&state.data);
            return faulty_reply(
                state,
                &data,
                *action,
                fault,
                answer,
                "token",
                None,
                "/connect/token",
            );
        }
    }
    let ttl = state.options.token_ttl_secs;
    {
        let mut tokens = lock(&state.tokens);
        let now = Instant::now();
        tokens.retain(|_, exp| *exp > now);
        tokens.insert(value, now + Duration::from_secs(ttl));
    }
    match fault {
        Some((action, fault)) => {
            let data = lock(&state.data);
            faulty_reply(
                state,
                &data,
                action,
                &fault,
                answer,
                "token",
                None,
                "/connect/token",
            )
        }
        None => Reply::json(200, &answer),
    }
}

fn control(
    state: &State,
    method: &str,
    path: &str,
    params: &HashMap<String, String>,
    body: &str,
) -> Reply {
    match (method, path) {
        (_, "/_sim/elsewhere") => {
            state.count("elsewhere");
            Reply::json(
                200,
                &json!({"seasons": [], "tournamentsInSeason": [], "matches": [], "tournamentMatches": []}),
            )
        }
        ("GET", "/_sim/stats") => {
            let dataset = lock(&state.data).stats();
            let requests: serde_json::Map<String, Value> = CALL_TYPES
                .iter()
                .map(|c| {
                    (
                        c.to_string(),
                        json!(state.counts[c].load(Ordering::Relaxed)),
                    )
                })
                .collect();
            let connections = state.connections.load(Ordering::Relaxed);
            Reply::json(
                200,
                &json!({"dataset": dataset, "requests": requests, "connections": connections}),
            )
        }
        ("POST", "/_sim/churn") => {
            let mut spec = serde_json::Map::new();
            for (k, v) in params {
                let value = match v.parse::<i64>() {
                    Ok(n) if n >= 0 => json!(n),
                    _ if k == "root_tier" => json!(v),
                    _ => {
                        return error(
                            400,
                            &format!("churn parameter {k} must be a non-negative integer"),
                        );
                    }
                };
                spec.insert(k.clone(), value);
            }
            match serde_json::from_value::<ChurnSpec>(Value::Object(spec))
                .map_err(|e| e.to_string())
                .and_then(|spec| spec.check().map(|()| spec))
            {
                Ok(spec) => {
                    let changed = state.churn(&spec);
                    Reply::json(200, &json!({ "changed": changed }))
                }
                Err(e) => error(400, &format!("bad churn request: {e}")),
            }
        }
        ("POST", "/_sim/faults") => match serde_json::from_str::<HashMap<String, Fault>>(body) {
            Ok(faults) => {
                if let Some(bad) = faults
                    .keys()
                    .find(|k| *k != "*" && !CALL_TYPES.contains(&k.as_str()))
                {
                    return error(
                        400,
                        &format!("unknown call type {bad:?}; use one of {CALL_TYPES:?} or \"*\""),
                    );
                }
                let mut current = lock(&state.faults);
                for (k, f) in faults {
                    current.insert(k, (f, 0));
                }
                let summary: HashMap<&String, &Fault> =
                    current.iter().map(|(k, (f, _))| (k, f)).collect();
                Reply::json(200, &json!({ "faults": summary }))
            }
            Err(e) => error(400, &format!("bad faults body: {e}")),
        },
        ("DELETE", "/_sim/faults") => {
            state.clear_faults();
            Reply::json(200, &json!({"faults": {}}))
        }
        ("GET", "/_sim/requests") => {
            let log = lock(&state.request_log);
            let list: Vec<Value> = log.iter().map(|(t, c)| json!([t, c])).collect();
            Reply::json(200, &json!({ "requests": list }))
        }
        ("DELETE", "/_sim/requests") => {
            lock(&state.request_log).clear();
            Reply::json(200, &json!({ "requests": [] }))
        }
        ("POST", "/_sim/match_list_key") => {
            let key = params.get("key").map(String::as_str);
            let parsed = match key {
                Some("matches") => MatchListKey::Matches,
                Some("tournamentMatches") => MatchListKey::TournamentMatches,
                _ => return error(400, "key must be matches or tournamentMatches"),
            };
            *lock(&state.match_list_key) = parsed;
            Reply::json(200, &json!({ "match_list_key": parsed.as_str() }))
        }
        ("POST", "/_sim/revoke_tokens") => {
            lock(&state.tokens).clear();
            Reply::json(200, &json!({ "revoked": true }))
        }
        (
            _,
            "/_sim/stats"
            | "/_sim/churn"
            | "/_sim/faults"
            | "/_sim/requests"
            | "/_sim/match_list_key"
            | "/_sim/revoke_tokens",
        ) => error(405, "method not allowed"),
        _ => error(404, "no such control endpoint"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
