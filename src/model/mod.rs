//! The upstream records and the snapshot a run produces.
//!
//! Each record keeps the few typed fields precache acts on (ids, parent,
//! dates, team ids) and its whole upstream JSON as one compact canonical
//! string (object keys sorted, no whitespace). The string is what is written
//! back to Redis, so unknown fields survive untouched, and it is what the diff
//! compares: two records are equal exactly when their canonical JSON is, which
//! makes equality insensitive to key order. One string per record instead of
//! a tree of small allocations keeps a norway-sized snapshot small.
//!
//! Parsing is tolerant in the ways DESIGN.md section 2 lists (one object for
//! a list, both date formats, both team-id spellings, parent 0 = root) and
//! strict where tolerance would hide a failure: malformed JSON or a missing
//! body key is an error, never an empty list.

pub mod calls;
pub mod changes;
#[cfg(test)]
pub(crate) mod fixtures;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::Value;

/// Compact JSON with object keys sorted. `serde_json::Map` is a `BTreeMap`
/// in this build (the `preserve_order` feature is off; a test guards that),
/// so plain serialisation is canonical.
pub fn canonical_json(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// Reads an integer id that may arrive as a number or a numeric string.
pub fn int_field(obj: &serde_json::Map<String, Value>, key: &str) -> Option<i64> {
    match obj.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn str_field(obj: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses the upstream's two date-time formats: ISO-8601
/// (`2025-08-01T00:00:00`, optionally with fraction or offset, or a bare
/// date) and `MM/DD/YYYY hh:mm:ss`.
pub fn parse_upstream_datetime(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(dt.naive_utc());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%m/%d/%Y %H:%M:%S",
        "%m/%d/%Y %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, format) {
            return Some(dt);
        }
    }
    for format in ["%Y-%m-%d", "%m/%d/%Y"] {
        if let Ok(d) = NaiveDate::parse_from_str(s, format) {
            return d.and_hms_opt(0, 0, 0);
        }
    }
    None
}

fn date_field(obj: &serde_json::Map<String, Value>, key: &str) -> Option<NaiveDateTime> {
    match obj.get(key)? {
        Value::String(s) => parse_upstream_datetime(s),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Season {
    pub id: i64,
    pub name: String,
    pub sport_id: Option<i64>,
    pub sport_name: String,
    /// Year of `seasonDateFrom`; `None` when absent or unparseable.
    pub from_year: Option<i32>,
    pub raw: Box<str>,
}

impl Season {
    /// `seasonDateFrom` as sent (for a warning about a date we cannot read).
    pub fn date_from_raw(&self) -> String {
        serde_json::from_str::<Value>(&self.raw)
            .ok()
            .and_then(|v| v.get("seasonDateFrom").map(Value::to_string))
            .unwrap_or_else(|| "null".into())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tournament {
    pub id: i64,
    pub name: String,
    /// `None` for a root tournament (parent null, absent or 0).
    pub parent_id: Option<i64>,
    pub season_id: Option<i64>,
    pub sport_id: Option<i64>,
    pub raw: Box<str>,
}

impl Tournament {
    pub fn is_root(&self) -> bool {
        self.parent_id.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub id: i64,
    /// The tournament the match belongs to (may be a child of the root it was fetched under).
    pub tournament_id: Option<i64>,
    pub home_team_id: Option<i64>,
    pub away_team_id: Option<i64>,
    /// `matchDate`, `None` when absent or unparseable (such matches are warmed).
    pub date: Option<NaiveDateTime>,
    pub raw: Box<str>,
}

impl Match {
    pub fn team_ids(&self) -> impl Iterator<Item = i64> {
        self.home_team_id.into_iter().chain(self.away_team_id)
    }
}

/// Why a record was left out of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRecord {
    pub kind: &'static str,
    pub reason: String,
}

fn as_object<'a>(
    value: &'a Value,
    kind: &'static str,
) -> Result<&'a serde_json::Map<String, Value>, SkippedRecord> {
    value.as_object().ok_or_else(|| SkippedRecord {
        kind,
        reason: format!("expected an object, got {}", json_type(value)),
    })
}

fn required_id(
    obj: &serde_json::Map<String, Value>,
    kind: &'static str,
    key: &str,
) -> Result<i64, SkippedRecord> {
    int_field(obj, key).ok_or_else(|| SkippedRecord {
        kind,
        reason: format!("no integer {key}"),
    })
}

impl Season {
    pub fn from_json(value: &Value) -> Result<Season, SkippedRecord> {
        let obj = as_object(value, "season")?;
        Ok(Season {
            id: required_id(obj, "season", "seasonId")?,
            name: str_field(obj, "seasonName").unwrap_or_default(),
            sport_id: int_field(obj, "sportId"),
            sport_name: str_field(obj, "sportName").unwrap_or_default(),
            from_year: date_field(obj, "seasonDateFrom").map(|d| chrono::Datelike::year(&d)),
            raw: canonical_json(value).into(),
        })
    }
}

impl Tournament {
    pub fn from_json(value: &Value) -> Result<Tournament, SkippedRecord> {
        let obj = as_object(value, "tournament")?;
        Ok(Tournament {
            id: required_id(obj, "tournament", "tournamentId")?,
            name: str_field(obj, "tournamentName").unwrap_or_default(),
            parent_id: int_field(obj, "parentTournamentId").filter(|p| *p != 0),
            season_id: int_field(obj, "seasonId"),
            sport_id: int_field(obj, "sportId"),
            raw: canonical_json(value).into(),
        })
    }
}

impl Match {
    pub fn from_json(value: &Value) -> Result<Match, SkippedRecord> {
        let obj = as_object(value, "match")?;
        Ok(Match {
            id: required_id(obj, "match", "matchId")?,
            tournament_id: int_field(obj, "tournamentId"),
            home_team_id: int_field(obj, "hometeamId").or_else(|| int_field(obj, "homeTeamId")),
            away_team_id: int_field(obj, "awayteamId").or_else(|| int_field(obj, "awayTeamId")),
            date: date_field(obj, "matchDate"),
            raw: canonical_json(value).into(),
        })
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Why a response body could not be turned into a list of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Empty,
    Malformed(String),
    MissingKey(&'static str),
    /// The body itself is not an object (a bare list, a string, …).
    NotAnObject {
        key: &'static str,
        found: &'static str,
    },
    WrongShape {
        key: &'static str,
        found: &'static str,
    },
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Empty => f.write_str("empty body"),
            BodyError::Malformed(e) => write!(f, "malformed JSON: {e}"),
            BodyError::MissingKey(k) => write!(f, "body has no {k:?} key"),
            BodyError::NotAnObject { key, found } => {
                write!(
                    f,
                    "the body is {found}, expected an object with a {key:?} key"
                )
            }
            BodyError::WrongShape { key, found } => {
                write!(f, "{key:?} holds {found}, expected a list or an object")
            }
        }
    }
}

/// Extracts the list under `key` from a response body.
///
/// `empty_is_empty_list`: the matches endpoint answers a tournament without
/// matches with an empty 2xx body; elsewhere an empty body is a failure.
/// `null` under the key is an empty list; one object is a list of one.
pub fn list_from_body(
    body: &[u8],
    key: &'static str,
    empty_is_empty_list: bool,
) -> Result<Vec<Value>, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_is_empty_list {
            Ok(Vec::new())
        } else {
            Err(BodyError::Empty)
        };
    }
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| BodyError::Malformed(e.to_string()))?;
    let Some(obj) = value.as_object_mut() else {
        return Err(BodyError::NotAnObject {
            key,
            found: json_type(&value),
        });
    };
    match obj.remove(key) {
        None => Err(BodyError::MissingKey(key)),
        Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items),
        Some(one @ Value::Object(_)) => Ok(vec![one]),
        Some(other) => Err(BodyError::WrongShape {
            key,
            found: json_type(&other),
        }),
    }
}

/// Parses every record of a list, returning the good ones and why others were skipped.
pub fn parse_records<T>(
    items: &[Value],
    parse: fn(&Value) -> Result<T, SkippedRecord>,
) -> (Vec<T>, Vec<SkippedRecord>) {
    let mut good = Vec::with_capacity(items.len());
    let mut skipped = Vec::new();
    for item in items {
        match parse(item) {
            Ok(record) => good.push(record),
            Err(why) => skipped.push(why),
        }
    }
    (good, skipped)
}

/// Everything one run knows about the upstream: the state the cache mirrors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub valid_seasons: Vec<Season>,
    /// All tournaments of the valid seasons.
    pub tournaments: Vec<Tournament>,
    /// Each root tournament's matches, keyed by the root's id. Every root
    /// tournament has an entry, empty when it has no matches.
    pub matches_by_root: BTreeMap<i64, Vec<Match>>,
}

/// Finds a tournament's root through the parent chain of `tournaments`.
struct RootResolver {
    parent: HashMap<i64, Option<i64>>,
}

impl RootResolver {
    fn new(tournaments: &[Tournament]) -> RootResolver {
        RootResolver {
            parent: tournaments.iter().map(|t| (t.id, t.parent_id)).collect(),
        }
    }

    /// `None` for an unknown id or a chain that does not end (bad data).
    fn root_of(&self, mut id: i64) -> Option<i64> {
        for _ in 0..32 {
            match self.parent.get(&id)? {
                None => return Some(id),
                Some(p) => id = *p,
            }
        }
        None
    }
}

impl Snapshot {
    /// Rebuilds a snapshot from the cache's flat lists. A match goes under
    /// the root `exceptions` names for it, else the root its own
    /// `tournamentId` leads to; one that leads nowhere is left out (the
    /// next run sees it as new). Every root gets an entry.
    pub fn from_flat(
        valid_seasons: Vec<Season>,
        tournaments: Vec<Tournament>,
        matches: Vec<Match>,
        exceptions: &BTreeMap<i64, i64>,
    ) -> Snapshot {
        let resolver = RootResolver::new(&tournaments);
        let mut by_root: BTreeMap<i64, Vec<Match>> = tournaments
            .iter()
            .filter(|t| t.is_root())
            .map(|t| (t.id, Vec::new()))
            .collect();
        for m in matches {
            let root = exceptions
                .get(&m.id)
                .copied()
                .or_else(|| m.tournament_id.and_then(|t| resolver.root_of(t)));
            if let Some(root) = root {
                by_root.entry(root).or_default().push(m);
            }
        }
        Snapshot {
            valid_seasons,
            tournaments,
            matches_by_root: by_root,
        }
    }

    /// Keeps each match id once: under the lowest root that listed it, its
    /// first occurrence there (DESIGN.md section 4). Linear.
    pub fn dedup_matches(&mut self) {
        let mut seen: HashSet<i64> = HashSet::new();
        for list in self.matches_by_root.values_mut() {
            list.retain(|m| seen.insert(m.id));
        }
    }

    /// The matches stored under a root other than the one their own
    /// `tournamentId` leads to (null, another root, an unknown id): match
    /// id → the root that returned it. Persisted beside the match list, so
    /// that [`Snapshot::from_flat`] rebuilds the same grouping.
    pub fn grouping_exceptions(&self) -> BTreeMap<i64, i64> {
        let resolver = RootResolver::new(&self.tournaments);
        let mut exceptions = BTreeMap::new();
        for (root, list) in &self.matches_by_root {
            for m in list {
                if m.tournament_id.and_then(|t| resolver.root_of(t)) != Some(*root) {
                    exceptions.insert(m.id, *root);
                }
            }
        }
        exceptions
    }

    pub fn root_tournaments(&self) -> impl Iterator<Item = &Tournament> {
        self.tournaments.iter().filter(|t| t.is_root())
    }

    pub fn matches(&self) -> impl Iterator<Item = &Match> {
        self.matches_by_root.values().flatten()
    }

    /// Sorted distinct home/away team ids of all matches.
    pub fn team_ids(&self) -> Vec<i64> {
        let set: BTreeSet<i64> = self.matches().flat_map(Match::team_ids).collect();
        set.into_iter().collect()
    }

    /// Number of distinct match ids.
    pub fn unique_match_count(&self) -> usize {
        let mut ids: Vec<i64> = self.matches().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    pub fn item_counts(&self) -> ItemCounts {
        ItemCounts {
            valid_seasons: self.valid_seasons.len(),
            tournaments: self.tournaments.len(),
            root_tournaments: self.root_tournaments().count(),
            matches: self.unique_match_count(),
            teams: self.team_ids().len(),
        }
    }
}

/// The sizes a run reports (and the simulator's `/_sim/stats` dataset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ItemCounts {
    pub valid_seasons: usize,
    pub tournaments: usize,
    pub root_tournaments: usize,
    pub matches: usize,
    pub teams: usize,
}

impl ItemCounts {
    /// Each count with its seed name (`precache_items_processed{item_type}`).
    pub fn by_item(&self) -> [(&'static str, usize); 5] {
        [
            ("valid_seasons", self.valid_seasons),
            ("tournaments", self.tournaments),
            ("root_tournaments", self.root_tournaments),
            ("matches", self.matches),
            ("teams", self.teams),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"d":2,"c":3}}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"c":3,"d":2},"b":1}"#);
    }

    #[test]
    fn both_date_formats_parse() {
        let iso = parse_upstream_datetime("2025-08-01T00:00:00").unwrap();
        let us = parse_upstream_datetime("08/01/2025 00:00:00").unwrap();
        assert_eq!(iso, us);
        assert!(parse_upstream_datetime("2025-08-01T10:00:00.123").is_some());
        assert!(parse_upstream_datetime("2025-08-01T10:00:00+02:00").is_some());
        assert!(parse_upstream_datetime("2025-08-01").is_some());
        assert!(parse_upstream_datetime("soon").is_none());
    }

    #[test]
    fn body_tolerances() {
        let list = list_from_body(
            br#"{"seasons":[{"seasonId":1},{"seasonId":2}]}"#,
            "seasons",
            false,
        );
        assert_eq!(list.unwrap().len(), 2);
        let one = list_from_body(br#"{"seasons":{"seasonId":1}}"#, "seasons", false).unwrap();
        assert_eq!(one, vec![json!({"seasonId": 1})]);
        assert_eq!(list_from_body(b"", "tournamentMatches", true), Ok(vec![]));
        assert_eq!(
            list_from_body(b"  \n", "seasons", false),
            Err(BodyError::Empty)
        );
        assert!(matches!(
            list_from_body(br#"{"seasons":[{"#, "seasons", false),
            Err(BodyError::Malformed(_))
        ));
        assert_eq!(
            list_from_body(br#"{"other":[]}"#, "seasons", false),
            Err(BodyError::MissingKey("seasons"))
        );
        assert_eq!(
            list_from_body(br#"{"seasons":null}"#, "seasons", false),
            Ok(vec![])
        );
        let top_level_list = list_from_body(br#"[1,2]"#, "seasons", false).unwrap_err();
        assert_eq!(
            top_level_list.to_string(),
            r#"the body is a list, expected an object with a "seasons" key"#
        );
        assert!(matches!(
            list_from_body(br#"{"seasons":"x"}"#, "seasons", false),
            Err(BodyError::WrongShape { .. })
        ));
    }

    #[test]
    fn tournament_roots() {
        for (parent, root) in [
            (json!(null), true),
            (json!(0), true),
            (json!(17), false),
            (json!("17"), false),
        ] {
            let t =
                Tournament::from_json(&json!({"tournamentId": 5, "parentTournamentId": parent}))
                    .unwrap();
            assert_eq!(t.is_root(), root, "{parent}");
        }
        let absent = Tournament::from_json(&json!({"tournamentId": 5})).unwrap();
        assert!(absent.is_root());
    }

    #[test]
    fn match_team_id_spellings() {
        let lower =
            Match::from_json(&json!({"matchId": 1, "hometeamId": 10, "awayteamId": 11})).unwrap();
        let camel =
            Match::from_json(&json!({"matchId": 1, "homeTeamId": 10, "awayTeamId": 11})).unwrap();
        assert_eq!(lower.team_ids().collect::<Vec<_>>(), vec![10, 11]);
        assert_eq!(camel.team_ids().collect::<Vec<_>>(), vec![10, 11]);
    }

    #[test]
    fn records_without_ids_are_skipped_with_a_reason() {
        let items = vec![json!({"matchId": 1}), json!({"matchId": "x"}), json!(3)];
        let (good, skipped) = parse_records(&items, Match::from_json);
        assert_eq!(good.len(), 1);
        assert_eq!(skipped.len(), 2);
        assert!(skipped[0].reason.contains("matchId"));
    }

    #[test]
    fn season_year_from_either_format() {
        let a = Season::from_json(&json!({"seasonId": 1, "seasonDateFrom": "2023-08-01T00:00:00"}))
            .unwrap();
        let b = Season::from_json(&json!({"seasonId": 2, "seasonDateFrom": "08/01/2025 00:00:00"}))
            .unwrap();
        assert_eq!(a.from_year, Some(2023));
        assert_eq!(b.from_year, Some(2025));
    }
}
