//! The effective configuration as `precache check-config` prints it: every
//! key, after file and environment, as TOML, with secrets redacted (and the
//! password of `redis.url`), so an operator sees what the service will use
//! without anything that must stay secret reaching a terminal or a ticket.

use std::path::Path;

use toml::Value;

use super::raw::redacted_url;
use super::{Config, Secret, all_keys};
use crate::model::dataset::DatasetId;

/// How a secret is shown: whether it is set, never what it is.
fn secret(s: &Secret) -> Value {
    Value::String(if s.is_empty() { "" } else { "<redacted>" }.into())
}

fn path(p: &Path) -> Value {
    Value::String(p.display().to_string())
}

fn optional_path(p: &Option<std::path::PathBuf>) -> Value {
    p.as_deref().map_or(Value::String(String::new()), path)
}

fn int(n: impl TryInto<i64>) -> Value {
    Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

/// A URL that may carry a password (`redis.url`, `upstream.proxy`).
fn url(url: &Secret) -> Value {
    Value::String(redacted_url(url.expose()))
}

impl Config {
    /// The value of one `(section, key)` of [`KEYS`] as it is shown.
    pub(super) fn shown(&self, section: &str, key: &str) -> Value {
        let (u, s, w, r, m, l) = (
            &self.upstream,
            &self.sync,
            &self.warm,
            &self.redis,
            &self.metrics,
            &self.logs,
        );
        match (section, key) {
            ("upstream", "api_url") => Value::String(u.api_url.clone()),
            ("upstream", "token_url") => Value::String(u.token_url.clone()),
            ("upstream", "client_id") => Value::String(u.client_id.clone()),
            ("upstream", "client_secret") => secret(&u.client_secret),
            ("upstream", "client_secret_file") => optional_path(&u.client_secret_file),
            ("upstream", "scope") => Value::String(u.scope.clone()),
            ("upstream", "timeout_secs") => int(u.timeout_secs),
            ("upstream", "max_concurrency") => int(u.max_concurrency),
            ("upstream", "max_requests_per_sec") => Value::Float(u.max_requests_per_sec),
            ("upstream", "retries") => int(u.retries),
            ("upstream", "max_body_bytes") => int(u.max_body_bytes),
            ("upstream", "ca_file") => optional_path(&u.ca_file),
            ("upstream", "proxy") => u
                .proxy
                .as_ref()
                .map_or(Value::String(String::new()), |p| url(&p.url)),
            ("sync", "interval_secs") => int(s.interval_secs),
            ("sync", "sport_ids") => Value::Array(s.sport_ids.iter().map(|i| int(*i)).collect()),
            ("sync", "first_year") => int(s.first_year),
            ("sync", "max_failed_fraction") => Value::Float(s.max_failed_fraction),
            ("sync", "max_shrink_fraction") => Value::Float(s.max_shrink_fraction),
            ("sync", "confirm_runs") => int(s.confirm_runs),
            ("sync", "adaptive") => Value::Boolean(s.adaptive),
            ("sync", "live_window_hours") => int(s.live_window_hours),
            ("sync", "active_window_days") => int(s.active_window_days),
            ("sync", "active_every") => int(s.active_every),
            ("sync", "dormant_every") => int(s.dormant_every),
            ("sync", "full_sweep_every") => int(s.full_sweep_every),
            ("sync", "max_validator_age_secs") => int(s.max_validator_age_secs),
            ("warm", "enabled") => Value::Boolean(w.enabled),
            ("warm", "workers") => int(w.workers),
            ("warm", "ttl_secs") => int(w.ttl_secs),
            ("warm", "refresh_until_days") => int(w.refresh_until_days),
            ("warm", "window_days") => int(w.window_days),
            ("warm", "reference_date") => {
                Value::String(w.reference_date.map(|d| d.to_string()).unwrap_or_default())
            }
            ("redis", "url") => url(&r.url),
            ("redis", "sentinels") => {
                Value::Array(r.sentinels.iter().cloned().map(Value::String).collect())
            }
            ("redis", "master_name") => Value::String(r.master_name.clone()),
            ("redis", "username") => Value::String(r.username.clone()),
            ("redis", "password_file") => optional_path(&r.password_file),
            ("redis", "tls") => Value::Boolean(r.tls),
            ("redis", "tls_ca_file") => optional_path(&r.tls_ca_file),
            ("redis", "tls_cert_file") => optional_path(&r.tls_cert_file),
            // Where the key lies is for the unit file to know, not a log.
            ("redis", "tls_key_file") => match &r.tls_key_file {
                Some(_) => Value::String("<redacted>".into()),
                None => Value::String(String::new()),
            },
            ("redis", "key_prefix") => Value::String(r.key_prefix.clone()),
            ("redis", "changes_maxlen") => int(r.changes_maxlen),
            ("metrics", "bind") => Value::String(m.bind.to_string()),
            ("metrics", "admin_token") => secret(&m.admin_token),
            ("metrics", "admin_token_file") => optional_path(&m.admin_token_file),
            ("metrics", "keep_runs") => int(m.keep_runs),
            ("metrics", "seed_run_series") => Value::Boolean(m.seed_run_series),
            ("metrics", "tls_cert_file") => optional_path(&m.web.tls_cert_file),
            ("metrics", "tls_key_file") => match &m.web.tls_key_file {
                Some(_) => Value::String("<redacted>".into()),
                None => Value::String(String::new()),
            },
            ("metrics", "basic_auth_users") => {
                Value::Array(m.web.shown_users().into_iter().map(Value::String).collect())
            }
            ("logs", "dir") => path(&l.dir),
            ("logs", "level") => Value::String(l.level.to_string().to_lowercase()),
            ("logs", "debug_snapshots") => Value::Boolean(l.debug_snapshots),
            ("logs", "history_len") => int(l.history_len),
            ("logs", "file") => optional_path(&l.file),
            ("logs", "max_file_bytes") => int(l.max_file_bytes),
            ("logs", "keep_files") => int(l.keep_files),
            ("daemon", "shutdown_grace_secs") => int(self.daemon.shutdown_grace_secs),
            ("ha", "lease_secs") => int(self.ha.lease_secs),
            (section, key) if section.starts_with("datasets.") => {
                let Some(dataset) = DatasetId::by_name(&section["datasets.".len()..]) else {
                    return Value::String("?".into());
                };
                let settings = self.dataset(dataset);
                match key {
                    "enabled" => Value::Boolean(settings.enabled),
                    "every_runs" => int(settings.every_runs),
                    _ => Value::String("?".into()),
                }
            }
            // Every key of KEYS is listed above (a test checks it).
            _ => Value::String("?".into()),
        }
    }

    /// Every key with its effective value, as TOML, secrets redacted.
    pub fn effective_toml(&self) -> String {
        let mut out = String::new();
        let mut current = "";
        for (section, key) in all_keys() {
            if section != current {
                if !current.is_empty() {
                    out.push('\n');
                }
                out.push_str(&format!("[{section}]\n"));
                current = section;
            }
            out.push_str(&format!("{key} = {}\n", self.shown(section, key)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut c = Config::default();
        c.upstream.client_id = "demo".into();
        c.upstream.client_secret = Secret::new("s3cr3t-xyz");
        c.metrics.admin_token = Secret::new("t0k3n-xyz");
        c.redis.url = Secret::new("redis://user:pw-xyz@cache.example:6380/2");
        c.upstream.proxy = Some(super::super::ProxyConfig {
            url: Secret::new("http://me:pw-xyz@proxy.example:3128"),
            source: "upstream.proxy".into(),
            no_proxy: Vec::new(),
        });
        c
    }

    #[test]
    fn every_key_is_shown_and_no_secret_is() {
        let text = config().effective_toml();
        for (section, key) in all_keys() {
            assert!(
                !matches!(config().shown(section, key), Value::String(ref s) if s == "?"),
                "{section}.{key} is not shown"
            );
        }
        assert!(!text.contains("xyz"), "{text}");
        assert!(text.contains("client_secret = \"<redacted>\""), "{text}");
        assert!(
            text.contains("url = \"redis://<redacted>@cache.example:6380/2\""),
            "{text}"
        );
        assert!(
            text.contains("proxy = \"http://<redacted>@proxy.example:3128\""),
            "{text}"
        );
        // What it prints reads back as the same configuration.
        let table: toml::Table = text.parse().expect("valid TOML");
        assert_eq!(table["sync"]["interval_secs"].as_integer(), Some(180));
        assert_eq!(table["logs"]["level"].as_str(), Some("info"));
        assert_eq!(table["sync"]["sport_ids"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn a_unix_socket_password_in_the_query_is_redacted() {
        let mut c = config();
        c.redis.url = Secret::new("redis+unix:///run/redis.sock?db=1&pass=pw-xyz");
        let text = c.effective_toml();
        assert!(!text.contains("xyz"), "{text}");
        assert!(
            text.contains("url = \"redis+unix:///run/redis.sock?<redacted>\""),
            "{text}"
        );
    }

    #[test]
    fn a_url_without_credentials_is_shown_as_is() {
        let mut c = config();
        c.redis.url = Secret::new("redis://127.0.0.1:6379/0");
        assert!(
            c.effective_toml()
                .contains("url = \"redis://127.0.0.1:6379/0\"")
        );
    }
}
