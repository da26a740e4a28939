//! The upstream's records: the few typed fields precache acts on (ids,
//! parent, dates, team ids) and the record's JSON exactly as the upstream
//! sent it.
//!
//! The JSON as sent is what is written back to Redis (the cache is a mirror:
//! unknown fields survive untouched) and what the diff compares. Reading a
//! record takes one pass over its bytes with a borrowing deserializer that
//! skips every field it does not need, so no tree of small allocations is
//! built. Two records are equal when their JSON values are (key order and
//! whitespace do not matter, DESIGN.md section 4): [`same_json`] compares
//! the bytes and only parses when they differ.
//!
//! Tolerant in the ways DESIGN.md section 2 lists (ids as numbers or
//! strings, both date formats, both team-id spellings, parent 0 = root).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// A record's JSON text: a slice of the buffer it arrived in (a response
/// body, a value read from Redis), shared with the other records of that
/// buffer. Cloning a record does not copy its text, and a run's records
/// cost the bytes of their bodies once, not a small allocation each.
#[derive(Clone)]
pub struct RawJson {
    buffer: Arc<String>,
    start: usize,
    end: usize,
}

impl RawJson {
    /// The slice `part` of `buffer`. A `part` that is not inside `buffer`
    /// (a caller's mistake) is copied rather than trusted.
    pub fn within(buffer: &Arc<String>, part: &str) -> RawJson {
        let base = buffer.as_ptr() as usize;
        let at = part.as_ptr() as usize;
        match at.checked_sub(base) {
            Some(start) if start + part.len() <= buffer.len() => RawJson {
                buffer: buffer.clone(),
                start,
                end: start + part.len(),
            },
            _ => RawJson::from(part),
        }
    }

    /// Whether this text is a slice of `buffer` (not a copy).
    pub fn shares_buffer(&self, buffer: &Arc<String>) -> bool {
        Arc::ptr_eq(&self.buffer, buffer)
    }

    /// Whether both are the same slice of the same buffer (then they are
    /// equal without looking at the text).
    pub fn same_slice(a: &RawJson, b: &RawJson) -> bool {
        Arc::ptr_eq(&a.buffer, &b.buffer) && a.start == b.start && a.end == b.end
    }
}

impl From<&str> for RawJson {
    fn from(text: &str) -> RawJson {
        RawJson::from(text.to_string())
    }
}

impl From<String> for RawJson {
    fn from(text: String) -> RawJson {
        let end = text.len();
        RawJson {
            buffer: Arc::new(text),
            start: 0,
            end,
        }
    }
}

impl std::ops::Deref for RawJson {
    type Target = str;
    fn deref(&self) -> &str {
        // In bounds and on char boundaries by construction (`within`
        // checks the bounds of a slice that was a `&str` of the buffer).
        &self.buffer[self.start..self.end]
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &RawJson) -> bool {
        RawJson::same_slice(self, other) || **self == **other
    }
}

impl Eq for RawJson {}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Compact JSON with object keys sorted. `serde_json::Map` is a `BTreeMap`
/// in this build (the `preserve_order` feature is off; a test guards that),
/// so plain serialisation is canonical.
pub fn canonical_json(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// Whether two records' JSON texts are the same value: the same bytes, or
/// texts that differ only in key order or whitespace.
pub fn same_json(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b)
        || a == b
        || matches!(
            (serde_json::from_str::<Value>(a), serde_json::from_str::<Value>(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

/// Parses the upstream's two date-time formats: ISO-8601
/// (`2025-08-01T00:00:00`, optionally with fraction or offset, or a bare
/// date) and `MM/DD/YYYY hh:mm:ss`. The two exact forms the API sends are
/// read by hand (this runs for every match of every run); anything else
/// goes through chrono.
pub fn parse_upstream_datetime(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    if let Some(dt) = fast_datetime(s.as_bytes()) {
        return Some(dt);
    }
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

/// `YYYY-MM-DDThh:mm:ss` or `MM/DD/YYYY hh:mm:ss`, exactly.
fn fast_datetime(b: &[u8]) -> Option<NaiveDateTime> {
    if b.len() != 19 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let (year, month, day, time) = match (b[4], b[7], b[10], b[2], b[5]) {
        (b'-', b'-', b'T', _, _) => (num(0..4)?, num(5..7)?, num(8..10)?, 11),
        (_, _, b' ', b'/', b'/') => (num(6..10)?, num(0..2)?, num(3..5)?, 11),
        _ => return None,
    };
    if b[time + 2] != b':' || b[time + 5] != b':' {
        return None;
    }
    let (h, m, sec) = (
        num(time..time + 2)?,
        num(time + 3..time + 5)?,
        num(time + 6..time + 8)?,
    );
    NaiveDate::from_ymd_opt(year as i32, month, day)?.and_hms_opt(h, m, sec)
}

/// A record field as the upstream may send it, borrowed where it can be.
#[derive(Debug, Clone, Default, PartialEq)]
enum Scalar<'a> {
    Int(i64),
    Float(f64),
    Text(Cow<'a, str>),
    /// `null`, absent, or a value of no use to us (a list, an object, a bool).
    #[default]
    None,
}

impl Scalar<'_> {
    /// An integer id, from a number or a numeric string.
    fn id(&self) -> Option<i64> {
        match self {
            Scalar::Int(n) => Some(*n),
            Scalar::Float(f) if f.fract() == 0.0 && f.abs() < 9e15 => Some(*f as i64),
            Scalar::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Scalar::Text(s) => Some(s.to_string()),
            Scalar::Int(n) => Some(n.to_string()),
            Scalar::Float(f) => Some(f.to_string()),
            Scalar::None => None,
        }
    }

    fn date(&self) -> Option<NaiveDateTime> {
        match self {
            Scalar::Text(s) => parse_upstream_datetime(s),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Text(Cow::Owned(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::None)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::None)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::None)
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// Every field any record kind is read for; the rest is skipped unread.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Fields<'a> {
    #[serde(rename = "seasonId", borrow)]
    season_id: Scalar<'a>,
    #[serde(rename = "seasonName", borrow)]
    season_name: Scalar<'a>,
    #[serde(rename = "seasonDateFrom", borrow)]
    season_date_from: Scalar<'a>,
    #[serde(rename = "sportId", borrow)]
    sport_id: Scalar<'a>,
    #[serde(rename = "sportName", borrow)]
    sport_name: Scalar<'a>,
    #[serde(rename = "tournamentId", borrow)]
    tournament_id: Scalar<'a>,
    #[serde(rename = "tournamentName", borrow)]
    tournament_name: Scalar<'a>,
    #[serde(rename = "parentTournamentId", borrow)]
    parent_tournament_id: Scalar<'a>,
    #[serde(rename = "matchId", borrow)]
    match_id: Scalar<'a>,
    #[serde(rename = "matchDate", borrow)]
    match_date: Scalar<'a>,
    #[serde(rename = "hometeamId", borrow)]
    hometeam_id: Scalar<'a>,
    #[serde(rename = "homeTeamId", borrow)]
    home_team_id: Scalar<'a>,
    #[serde(rename = "awayteamId", borrow)]
    awayteam_id: Scalar<'a>,
    #[serde(rename = "awayTeamId", borrow)]
    away_team_id: Scalar<'a>,
}

/// Why a record was left out of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRecord {
    pub kind: &'static str,
    pub reason: String,
}

/// The fields of one record (`kind` names it in errors).
fn fields<'a>(raw: &'a str, kind: &'static str) -> Result<Fields<'a>, SkippedRecord> {
    must_be_an_object(raw, kind)?;
    serde_json::from_str(raw).map_err(|e| SkippedRecord {
        kind,
        reason: format!("unreadable record: {e}"),
    })
}

/// A record is a JSON object; anything else is skipped, saying what it was.
fn must_be_an_object(raw: &str, kind: &'static str) -> Result<(), SkippedRecord> {
    if raw.trim_start().starts_with('{') {
        return Ok(());
    }
    let found = match raw.trim_start().as_bytes().first() {
        Some(b'[') => "a list",
        Some(b'"') => "a string",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        _ => "a number",
    };
    Err(SkippedRecord {
        kind,
        reason: format!("expected an object, got {found}"),
    })
}

fn required(id: Option<i64>, kind: &'static str, key: &str) -> Result<i64, SkippedRecord> {
    id.ok_or_else(|| SkippedRecord {
        kind,
        reason: format!("no integer {key}"),
    })
}

/// A record of a dataset (DESIGN.md section 13): its identity, read from
/// the field its descriptor names, and its JSON as sent. Nothing else of
/// it is read: the cache mirrors it whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    pub id: i64,
    pub raw: RawJson,
}

impl Keyed {
    /// Reads the integer under `identity` (a number or a numeric string)
    /// of the object `raw`, skipping every other field unread.
    pub fn from_shared(
        raw: RawJson,
        identity: &'static str,
        kind: &'static str,
    ) -> Result<Keyed, SkippedRecord> {
        struct Identity<'f>(&'f str);
        impl<'de, 'f> de::DeserializeSeed<'de> for Identity<'f> {
            type Value = Option<i64>;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
                d.deserialize_map(self)
            }
        }
        impl<'de, 'f> Visitor<'de> for Identity<'f> {
            type Value = Option<i64>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Option<i64>, A::Error> {
                let mut id = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == self.0 && id.is_none() {
                        id = map.next_value::<Scalar<'de>>()?.id();
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(id)
            }
        }
        must_be_an_object(&raw, kind)?;
        let mut reader = serde_json::Deserializer::from_str(&raw);
        let id = de::DeserializeSeed::deserialize(Identity(identity), &mut reader)
            .and_then(|id| reader.end().map(|()| id))
            .map_err(|e| SkippedRecord {
                kind,
                reason: format!("unreadable record: {e}"),
            })?;
        Ok(Keyed {
            id: required(id, kind, identity)?,
            raw,
        })
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
    /// The record's JSON as the upstream sent it.
    pub raw: RawJson,
}

impl Season {
    /// From a record's JSON text (copied).
    pub fn from_raw(raw: &str) -> Result<Season, SkippedRecord> {
        Season::from_shared(RawJson::from(raw))
    }

    /// From a record's JSON text in a shared buffer (not copied).
    pub fn from_shared(raw: RawJson) -> Result<Season, SkippedRecord> {
        let f = fields(&raw, "season")?;
        Ok(Season {
            id: required(f.season_id.id(), "season", "seasonId")?,
            name: f.season_name.text().unwrap_or_default(),
            sport_id: f.sport_id.id(),
            sport_name: f.sport_name.text().unwrap_or_default(),
            from_year: f
                .season_date_from
                .date()
                .map(|d| chrono::Datelike::year(&d)),
            raw: raw.clone(),
        })
    }

    /// From a JSON value (tests, tools): its canonical text is the record.
    pub fn from_json(value: &Value) -> Result<Season, SkippedRecord> {
        Season::from_shared(RawJson::from(canonical_json(value)))
    }

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
    /// The record's JSON as the upstream sent it.
    pub raw: RawJson,
}

impl Tournament {
    /// From a record's JSON text (copied).
    pub fn from_raw(raw: &str) -> Result<Tournament, SkippedRecord> {
        Tournament::from_shared(RawJson::from(raw))
    }

    /// From a record's JSON text in a shared buffer (not copied).
    pub fn from_shared(raw: RawJson) -> Result<Tournament, SkippedRecord> {
        let f = fields(&raw, "tournament")?;
        Ok(Tournament {
            id: required(f.tournament_id.id(), "tournament", "tournamentId")?,
            name: f.tournament_name.text().unwrap_or_default(),
            parent_id: f.parent_tournament_id.id().filter(|p| *p != 0),
            season_id: f.season_id.id(),
            sport_id: f.sport_id.id(),
            raw: raw.clone(),
        })
    }

    pub fn from_json(value: &Value) -> Result<Tournament, SkippedRecord> {
        Tournament::from_shared(RawJson::from(canonical_json(value)))
    }

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
    /// The record's JSON as the upstream sent it.
    pub raw: RawJson,
}

impl Match {
    /// From a record's JSON text (copied).
    pub fn from_raw(raw: &str) -> Result<Match, SkippedRecord> {
        Match::from_shared(RawJson::from(raw))
    }

    /// From a record's JSON text in a shared buffer (not copied).
    pub fn from_shared(raw: RawJson) -> Result<Match, SkippedRecord> {
        let f = fields(&raw, "match")?;
        Ok(Match {
            id: required(f.match_id.id(), "match", "matchId")?,
            tournament_id: f.tournament_id.id(),
            home_team_id: f.hometeam_id.id().or_else(|| f.home_team_id.id()),
            away_team_id: f.awayteam_id.id().or_else(|| f.away_team_id.id()),
            date: f.match_date.date(),
            raw: raw.clone(),
        })
    }

    pub fn from_json(value: &Value) -> Result<Match, SkippedRecord> {
        Match::from_shared(RawJson::from(canonical_json(value)))
    }

    pub fn team_ids(&self) -> impl Iterator<Item = i64> {
        self.home_team_id.into_iter().chain(self.away_team_id)
    }
}

/// A record of one kind, read from its JSON text.
pub trait Record: Sized {
    fn from_shared(raw: RawJson) -> Result<Self, SkippedRecord>;
}

impl Record for Season {
    fn from_shared(raw: RawJson) -> Result<Self, SkippedRecord> {
        Season::from_shared(raw)
    }
}

impl Record for Tournament {
    fn from_shared(raw: RawJson) -> Result<Self, SkippedRecord> {
        Tournament::from_shared(raw)
    }
}

impl Record for Match {
    fn from_shared(raw: RawJson) -> Result<Self, SkippedRecord> {
        Match::from_shared(raw)
    }
}

/// Reads records from their JSON texts, slices of `buffer`, returning the
/// good ones and why others were skipped. The records share `buffer`.
pub fn read_records<'a, T: Record>(
    buffer: &Arc<String>,
    raws: impl IntoIterator<Item = &'a RawValue>,
) -> (Vec<T>, Vec<SkippedRecord>) {
    let mut good = Vec::new();
    let mut skipped = Vec::new();
    for raw in raws {
        match T::from_shared(RawJson::within(buffer, raw.get())) {
            Ok(record) => good.push(record),
            Err(why) => skipped.push(why),
        }
    }
    (good, skipped)
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
