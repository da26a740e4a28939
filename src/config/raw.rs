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
#[derive(Clone, Copy)]
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

    /// A list of strings: a TOML array, or comma-separated in a variable.
    pub(crate) fn string_list(&self) -> Result<Vec<String>, Problem> {
        match self {
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(Problem::from(format!(
                        "expected a list of strings, found {}",
                        other.type_str()
                    ))),
                })
                .collect(),
            Raw::Toml(v) => Err(Problem::from(format!(
                "expected a list of strings, got {}",
                v.type_str()
            ))),
            Raw::Env(s) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(str::to_string)
                .collect()),
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

/// A URL as it may be shown in a log, an error or `check-config`: any
/// `user:password@` part and any query (a Unix socket's `?pass=`) replaced
/// by `<redacted>`. Every URL precache prints goes through here. The user
/// information ends at the *last* `@`, wherever it is: a password may hold
/// `/`, `?` or `#` unencoded, and showing too little beats showing it.
pub fn redacted_url(value: &str) -> String {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, value),
    };
    let (credentials, rest) = match rest.rfind('@') {
        Some(at) => ("<redacted>@", &rest[at + 1..]),
        None => ("", rest),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((base, _)) => (base, "?<redacted>"),
        None => (rest, ""),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{credentials}{rest}{query}"),
        None => format!("{credentials}{rest}{query}"),
    }
}

/// An `http://` or `https://` URL with a host and without credentials,
/// trailing slashes removed.
pub(crate) fn http_url(value: String) -> Result<String, Problem> {
    let shown = redacted_url(&value);
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

/// A proxy URL: `http://` or `https://` (the CONNECT proxies ureq speaks),
/// with a host and a port, credentials allowed (they are redacted wherever
/// it is shown).
pub(crate) fn proxy_url(value: &str) -> Result<String, Problem> {
    let shown = redacted_url(value);
    let value = value.trim();
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| format!("expected an http:// or https:// proxy URL, got {shown:?}"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if rest.rfind('@').is_some_and(|at| at >= authority.len()) {
        return Err(Problem::from(format!(
            "a user name or password holding '/', '?' or '#' must be percent-encoded (%2F, %3F, %23), got {shown:?}"
        )));
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Problem::from(format!(
            "expected a proxy URL with a host, got {shown:?}"
        )));
    }
    if ureq::Proxy::new(value).is_err() {
        return Err(Problem::from(format!("not a usable proxy URL: {shown:?}")));
    }
    Ok(value.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "redis://user:pw-xyz@cache.example:6380/2",
                "redis://<redacted>@cache.example:6380/2",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&pass=pw-xyz",
                "redis+unix:///run/redis.sock?<redacted>",
            ),
            (
                "http://me:pw-xyz@proxy:3128",
                "http://<redacted>@proxy:3128",
            ),
            ("proxy:3128", "proxy:3128"),
            ("https://h/p?token=pw-xyz", "https://h/p?<redacted>"),
            // Unencoded '/', '?', '#' in a password: all of it goes.
            (
                "http://me:pw/xyz@proxy:3128",
                "http://<redacted>@proxy:3128",
            ),
            (
                "http://me:pw?xyz@proxy:3128",
                "http://<redacted>@proxy:3128",
            ),
            (
                "http://me:pw#xyz@proxy:3128/p?q",
                "http://<redacted>@proxy:3128/p?<redacted>",
            ),
        ] {
            assert_eq!(redacted_url(url), shown, "{url}");
        }
    }

    #[test]
    fn proxy_urls() {
        assert_eq!(
            proxy_url("http://proxy.example:3128/").unwrap(),
            "http://proxy.example:3128"
        );
        assert!(proxy_url("http://u:p@proxy:3128").is_ok());
        let err = proxy_url("socks5://u:pw-xyz@proxy:1080").unwrap_err();
        assert!(!err.to_string().contains("pw-xyz"), "{err}");
        assert!(proxy_url("http://").is_err());
        let err = proxy_url("http://me:pw/xyz@proxy:3128").unwrap_err();
        assert!(err.to_string().contains("percent-encoded"), "{err}");
        assert!(!err.to_string().contains("pw/xyz"), "{err}");
        assert!(proxy_url("http://me:pw%2Fxyz@proxy:3128").is_ok());
        assert!(proxy_url("proxy:3128").is_err());
    }
}
