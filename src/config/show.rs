//! The effective configuration as `precache check-config` prints it: every
//! key, after file and environment, as TOML, with secrets redacted (and the
//! password of `redis.url`), so an operator sees what the service will use
//! without anything that must stay secret reaching a terminal or a ticket.

use toml::Value;

use super::{Config, all_keys, keys};

impl Config {
    /// The value of one `(section, key)` of [`all_keys`] as it is shown;
    /// `None` for a key there is not.
    pub(super) fn shown(&self, section: &str, key: &str) -> Option<Value> {
        match section.strip_prefix("datasets.") {
            Some(name) => keys::shown_dataset(self, name, key),
            None => keys::find(section, key).map(|k| k.show(self)),
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
            let value = self
                .shown(section, key)
                .unwrap_or(Value::String(String::new()));
            out.push_str(&format!("{key} = {value}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

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
                config().shown(section, key).is_some(),
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
