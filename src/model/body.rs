//! Finding the list of records in a response body, without reading the
//! records yet: each comes back as its JSON text, borrowed from the body.
//!
//! Strict where tolerance would hide a failure: malformed JSON, a body that
//! is not an object, or a missing key is an error, never an empty list.
//!
//! A list may go by more than one name: the real API answers the match list
//! under `matches` where the seed's documentation says `tournamentMatches`
//! (DESIGN.md section 2). Either is read; a body holding both with different
//! lists says two things at once and is an error.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::value::RawValue;

use super::records::same_json;

/// Why a response body could not be turned into a list of records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Empty,
    /// The bytes are not UTF-8 (the error says where).
    NotUtf8(String),
    Malformed(String),
    /// None of the list's names is in the body (the first is named).
    MissingKey(&'static str),
    /// Two of the list's names hold different lists.
    Conflicting {
        first: &'static str,
        second: &'static str,
    },
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
            BodyError::NotUtf8(e) => write!(f, "the body is not UTF-8: {e}"),
            BodyError::Malformed(e) => write!(f, "malformed JSON: {e}"),
            BodyError::MissingKey(k) => write!(f, "body has no {k:?} key"),
            BodyError::Conflicting { first, second } => write!(
                f,
                "body holds both {first:?} and {second:?} with different lists; which one is the answer cannot be told"
            ),
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

/// What kind of JSON value `text` is, from its first byte.
fn json_type(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "a list",
        Some(b'"') => "a string",
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        _ => "a number",
    }
}

/// The records of a list in a response body, each as its JSON text. The
/// list goes by any of `keys` (at least one; errors name the first); when
/// several are present they must hold the same JSON value.
///
/// `empty_is_empty_list`: the matches endpoint answers a tournament without
/// matches with an empty 2xx body; elsewhere an empty body is a failure.
/// `null` under the key is an empty list; one object is a list of one.
/// No `keys`: the whole body is the list (a dataset's "whole body", DESIGN.md
/// section 13), read by the same rules.
pub fn list_from_body<'a>(
    body: &'a [u8],
    keys: &[&'static str],
    empty_is_empty_list: bool,
) -> Result<Vec<&'a RawValue>, BodyError> {
    let key = keys.first().copied().unwrap_or("(the body)");
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_is_empty_list {
            Ok(Vec::new())
        } else {
            Err(BodyError::Empty)
        };
    }
    let malformed = |e: serde_json::Error| BodyError::Malformed(e.to_string());
    let whole: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
    if keys.is_empty() {
        return list_or_object(key, whole);
    }
    if !whole.get().trim_start().starts_with('{') {
        return Err(BodyError::NotAnObject {
            key,
            found: json_type(whole.get()),
        });
    }
    let mut fields: BTreeMap<Cow<'_, str>, &RawValue> =
        serde_json::from_str(whole.get()).map_err(malformed)?;
    let mut found: Option<(&'static str, &RawValue)> = None;
    for name in keys {
        let Some(value) = fields.remove(*name) else {
            continue;
        };
        match found {
            None => found = Some((name, value)),
            Some((first, kept)) if !same_json(kept.get(), value.get()) => {
                return Err(BodyError::Conflicting {
                    first,
                    second: name,
                });
            }
            Some(_) => {}
        }
    }
    let (key, list) = found.ok_or(BodyError::MissingKey(key))?;
    list_or_object(key, list)
}

/// A list's records: a list's items, one object, or none for `null`.
fn list_or_object<'a>(
    key: &'static str,
    list: &'a RawValue,
) -> Result<Vec<&'a RawValue>, BodyError> {
    let malformed = |e: serde_json::Error| BodyError::Malformed(e.to_string());
    match list.get().trim_start().as_bytes().first() {
        Some(b'n') => Ok(Vec::new()),
        Some(b'[') => serde_json::from_str(list.get()).map_err(malformed),
        Some(b'{') => Ok(vec![list]),
        _ => Err(BodyError::WrongShape {
            key,
            found: json_type(list.get()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(list: Vec<&RawValue>) -> Vec<&str> {
        list.into_iter().map(RawValue::get).collect()
    }

    /// The texts, or the error.
    fn read<'a>(body: &'a [u8], key: &'static str, empty: bool) -> Result<Vec<&'a str>, BodyError> {
        list_from_body(body, &[key], empty).map(texts)
    }

    #[test]
    fn a_whole_body_is_a_list_an_object_or_nothing() {
        let whole = |body: &'static [u8]| list_from_body(body, &[], false).map(texts);
        assert_eq!(whole(br#"{"orgId":1}"#).unwrap(), vec![r#"{"orgId":1}"#]);
        assert_eq!(
            whole(br#" [{"orgId":1},{"orgId":2}]"#).unwrap(),
            vec![r#"{"orgId":1}"#, r#"{"orgId":2}"#]
        );
        assert!(whole(b"null").unwrap().is_empty());
        assert!(whole(b"[]").unwrap().is_empty());
        assert_eq!(whole(b""), Err(BodyError::Empty));
        assert!(matches!(whole(b"\"x\""), Err(BodyError::WrongShape { .. })));
        assert!(matches!(whole(b"{\"a\":"), Err(BodyError::Malformed(_))));
    }

    #[test]
    fn body_tolerances() {
        let list = list_from_body(
            br#"{"seasons":[{"seasonId":1},{"seasonId":2}]}"#,
            &["seasons"],
            false,
        );
        assert_eq!(
            texts(list.unwrap()),
            vec![r#"{"seasonId":1}"#, r#"{"seasonId":2}"#]
        );
        let one = list_from_body(br#"{"seasons":{"seasonId":1}}"#, &["seasons"], false).unwrap();
        assert_eq!(texts(one), vec![r#"{"seasonId":1}"#]);
        assert_eq!(read(b"", "tournamentMatches", true), Ok(vec![]));
        assert_eq!(read(b"  \n", "seasons", false), Err(BodyError::Empty));
        assert!(matches!(
            list_from_body(br#"{"seasons":[{"#, &["seasons"], false),
            Err(BodyError::Malformed(_))
        ));
        assert_eq!(
            read(br#"{"other":[]}"#, "seasons", false),
            Err(BodyError::MissingKey("seasons"))
        );
        assert_eq!(read(br#"{"seasons":null}"#, "seasons", false), Ok(vec![]));
        let top_level_list = list_from_body(br#"[1,2]"#, &["seasons"], false).unwrap_err();
        assert_eq!(
            top_level_list.to_string(),
            r#"the body is a list, expected an object with a "seasons" key"#
        );
        assert!(matches!(
            list_from_body(br#"{"seasons":"x"}"#, &["seasons"], false),
            Err(BodyError::WrongShape { .. })
        ));
    }

    #[test]
    fn a_list_is_read_under_any_of_its_names() {
        const NAMES: &[&str] = &["matches", "tournamentMatches"];
        let read = |body: &'static [u8]| list_from_body(body, NAMES, true).map(texts);
        assert_eq!(
            read(br#"{"matches":[{"matchId":1}]}"#),
            Ok(vec![r#"{"matchId":1}"#])
        );
        assert_eq!(
            read(br#"{"tournamentMatches":[{"matchId":1}]}"#),
            Ok(vec![r#"{"matchId":1}"#])
        );
        // Both, saying the same (key order and spacing aside): one answer.
        assert_eq!(
            read(
                br#"{"matches":[{"matchId":1,"a":2}],"tournamentMatches":[{"a":2, "matchId":1}]}"#
            ),
            Ok(vec![r#"{"matchId":1,"a":2}"#])
        );
        // Both, saying different things: a failed call, never a guess.
        let conflicting = read(br#"{"matches":[{"matchId":1}],"tournamentMatches":[]}"#);
        assert_eq!(
            conflicting,
            Err(BodyError::Conflicting {
                first: "matches",
                second: "tournamentMatches"
            })
        );
        assert!(
            conflicting
                .unwrap_err()
                .to_string()
                .contains("both \"matches\" and \"tournamentMatches\"")
        );
        assert_eq!(
            read(br#"{"other":[]}"#),
            Err(BodyError::MissingKey("matches"))
        );
        assert_eq!(read(b""), Ok(vec![]));
        assert_eq!(read(br#"{"matches":null}"#), Ok(vec![]));
        assert!(matches!(
            read(br#"{"tournamentMatches":7}"#),
            Err(BodyError::WrongShape {
                key: "tournamentMatches",
                ..
            })
        ));
    }

    #[test]
    fn records_keep_their_bytes() {
        let body = br#"{ "seasons" : [ {"b": 1,  "a": 2} , 3 ] }"#;
        let list = list_from_body(body, &["seasons"], false).unwrap();
        assert_eq!(texts(list), vec![r#"{"b": 1,  "a": 2}"#, "3"]);
    }
}
