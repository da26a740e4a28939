//! Finding the list of records in a response body, without reading the
//! records yet: each comes back as its JSON text, borrowed from the body.
//!
//! Strict where tolerance would hide a failure: malformed JSON, a body that
//! is not an object, or a missing key is an error, never an empty list.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::value::RawValue;

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

/// The records under `key` in a response body, each as its JSON text.
///
/// `empty_is_empty_list`: the matches endpoint answers a tournament without
/// matches with an empty 2xx body; elsewhere an empty body is a failure.
/// `null` under the key is an empty list; one object is a list of one.
pub fn list_from_body<'a>(
    body: &'a [u8],
    key: &'static str,
    empty_is_empty_list: bool,
) -> Result<Vec<&'a RawValue>, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_is_empty_list {
            Ok(Vec::new())
        } else {
            Err(BodyError::Empty)
        };
    }
    let malformed = |e: serde_json::Error| BodyError::Malformed(e.to_string());
    let whole: &RawValue = serde_json::from_slice(body).map_err(malformed)?;
    if !whole.get().trim_start().starts_with('{') {
        return Err(BodyError::NotAnObject {
            key,
            found: json_type(whole.get()),
        });
    }
    let mut fields: BTreeMap<Cow<'_, str>, &RawValue> =
        serde_json::from_str(whole.get()).map_err(malformed)?;
    let list = fields.remove(key).ok_or(BodyError::MissingKey(key))?;
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
        list_from_body(body, key, empty).map(texts)
    }

    #[test]
    fn body_tolerances() {
        let list = list_from_body(
            br#"{"seasons":[{"seasonId":1},{"seasonId":2}]}"#,
            "seasons",
            false,
        );
        assert_eq!(
            texts(list.unwrap()),
            vec![r#"{"seasonId":1}"#, r#"{"seasonId":2}"#]
        );
        let one = list_from_body(br#"{"seasons":{"seasonId":1}}"#, "seasons", false).unwrap();
        assert_eq!(texts(one), vec![r#"{"seasonId":1}"#]);
        assert_eq!(read(b"", "tournamentMatches", true), Ok(vec![]));
        assert_eq!(read(b"  \n", "seasons", false), Err(BodyError::Empty));
        assert!(matches!(
            list_from_body(br#"{"seasons":[{"#, "seasons", false),
            Err(BodyError::Malformed(_))
        ));
        assert_eq!(
            read(br#"{"other":[]}"#, "seasons", false),
            Err(BodyError::MissingKey("seasons"))
        );
        assert_eq!(read(br#"{"seasons":null}"#, "seasons", false), Ok(vec![]));
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
    fn records_keep_their_bytes() {
        let body = br#"{ "seasons" : [ {"b": 1,  "a": 2} , 3 ] }"#;
        let list = list_from_body(body, "seasons", false).unwrap();
        assert_eq!(texts(list), vec![r#"{"b": 1,  "a": 2}"#, "3"]);
    }
}
