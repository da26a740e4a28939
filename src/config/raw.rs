//! Reading one value: from TOML or from an environment variable, checked
//! against the type and range its key wants; and the URL rules.

use std::fmt;

/// What is wrong with one value, for the error that names its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem(String);

impl From<String> for Problem {
    fn from(text: String) -> Problem {
        Problem(text)
    }
}

impl From<&str> for Problem {
    fn from(text: &str) -> Problem {
        Problem(text.to_string())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A raw value before it is checked against its key's type.
pub(crate) enum Raw<'a> {
    Toml(&'a toml::Value),
    Env(&'a str),
}

impl Raw<'_> {
    pub(crate) fn string(&self) -> Result<String, Problem> {
        match self {
            Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
            Raw::Toml(v) => Err(Problem::from(format!(
                "expected a string, got {}",
                v.type_str()
            ))),
            Raw::Env(s) => Ok((*s).to_string()),
        }
    }

    pub(crate) fn integer(&self) -> Result<i64, Problem> {
        match self {
            Raw::Toml(toml::Value::Integer(i)) => Ok(*i),
            Raw::Toml(v) => Err(Problem::from(format!(
                "expected an integer, got {}",
                v.type_str()
            ))),
            Raw::Env(s) => s
                .trim()
                .parse()
                .map_err(|_| Problem::from(format!("expected an integer, got {s:?}"))),
        }
    }

    /// An integer in `min..=max`. Every count and duration has an upper
    /// bound, so no value can overflow the arithmetic done with it later.
    pub(crate) fn unsigned(&self, min: u64, max: u64) -> Result<u64, Problem> {
        let v = self.integer()?;
        if v < min as i64 {
            return Err(Problem::from(format!("must be at least {min}, got {v}")));
        }
        if v as u64 > max {
            return Err(Problem::from(format!("must be at most {max}, got {v}")));
        }
        Ok(v as u64)
    }

    pub(crate) fn float(&self) -> Result<f64, Problem> {
        let v = match self {
            Raw::Toml(toml::Value::Float(f)) => *f,
            Raw::Toml(toml::Value::Integer(i)) => *i as f64,
            Raw::Toml(v) => {
                return Err(Problem::from(format!(
                    "expected a number, got {}",
                    v.type_str()
                )));
            }
            Raw::Env(s) => s
                .trim()
                .parse()
                .map_err(|_| Problem::from(format!("expected a number, got {s:?}")))?,
        };
        if !v.is_finite() {
            return Err(Problem::from(format!("expected a finite number, got {v}")));
        }
        Ok(v)
    }

    pub(crate) fn boolean(&self) -> Result<bool, Problem> {
        match self {
            Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
            Raw::Toml(v) => Err(Problem::from(format!(
                "expected true or false, got {}",
                v.type_str()
            ))),
            Raw::Env(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(Problem::from(format!("expected true or false, got {s:?}"))),
            },
        }
    }

    pub(crate) fn integer_list(&self) -> Result<Vec<i64>, Problem> {
        match self {
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::Integer(i) => Ok(*i),
                    other => Err(Problem::from(format!(
                        "expected a list of integers, found {}",
                        other.type_str()
                    ))),
                })
                .collect(),
            Raw::Toml(v) => Err(Problem::from(format!(
                "expected a list of integers, got {}",
                v.type_str()
            ))),
            Raw::Env(s) => s
                .split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(|part| {
                    part.parse().map_err(|_| {
                        Problem::from(format!("expected comma-separated integers, got {s:?}"))
                    })
                })
                .collect(),
        }
    }
}

/// `value` with any `user:password@` part removed, for error messages: a
/// URL may carry credentials, and a config error is printed.
fn without_credentials(value: &str) -> String {
    let (scheme, rest) = value.split_once("://").unwrap_or(("", value));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("<credentials>@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    if scheme.is_empty() {
        format!("{host}{tail}")
    } else {
        format!("{scheme}://{host}{tail}")
    }
}

/// An `http://` or `https://` URL with a host and without credentials,
/// trailing slashes removed.
pub(crate) fn http_url(value: String) -> Result<String, Problem> {
    let shown = without_credentials(&value);
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| format!("expected an http:// or https:// URL, got {shown:?}"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(Problem::from(format!(
            "must not carry credentials (the API is authenticated with upstream.client_id and client_secret), got {shown:?}"
        )));
    }
    let host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()) && !authority.ends_with(']'))
        .map_or(authority, |(host, _)| host);
    if host.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Problem::from(format!(
            "expected a URL with a host, got {shown:?}"
        )));
    }
    Ok(value.trim_end_matches('/').to_string())
}
