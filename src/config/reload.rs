//! What a running daemon makes of a changed configuration (SIGHUP,
//! `systemctl reload`): the keys that take effect at once, and the ones
//! that need a restart, which keep their running value until then (and are
//! named, so an operator is not left guessing). Pure: the daemon applies
//! the result.

use super::{Config, all_keys, keys};

/// Whether a running daemon applies `section.key` on reload (declared
/// with the key, in `keys::TABLE`). The `[datasets.<name>]` keys need a
/// restart.
pub fn is_live(section: &str, key: &str) -> bool {
    keys::find(section, key).is_some_and(keys::Key::is_live)
}

/// The outcome of a reload.
#[derive(Debug, Clone)]
pub struct Reload {
    /// What the daemon runs with from now on: the new value of every live
    /// key, the running value of every other.
    pub config: Config,
    /// Changed keys now in effect (`section.key`).
    pub applied: Vec<String>,
    /// Changed keys that keep their running value until a restart.
    pub needs_restart: Vec<String>,
}

impl Config {
    /// A key's value in a form that tells any change, secrets included
    /// (never shown: compared only).
    fn comparable(&self, section: &str, key: &str) -> String {
        match keys::find(section, key) {
            Some(key) => key.revealed(self),
            // `[datasets.<name>]`: nothing secret.
            None => format!("{:?}", self.shown(section, key)),
        }
    }

    /// What the daemon running `self` makes of `new` (already validated).
    pub fn reload(&self, new: &Config) -> Reload {
        let mut config = self.clone();
        let (mut applied, mut needs_restart) = (Vec::new(), Vec::new());
        for (section, key) in all_keys() {
            if self.comparable(section, key) == new.comparable(section, key) {
                continue;
            }
            let name = format!("{section}.{key}");
            if is_live(section, key) {
                if let Some(live) = keys::find(section, key) {
                    live.take(&mut config, new);
                }
                applied.push(name);
            } else {
                needs_restart.push(name);
            }
        }
        Reload {
            config,
            applied,
            needs_restart,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, fixed_keys};

    fn base() -> Config {
        let mut c = Config::default();
        c.upstream.client_id = "demo".into();
        c.upstream.client_secret = Secret::new("one");
        c
    }

    #[test]
    fn live_keys_apply_and_the_rest_wait_for_a_restart() {
        let running = base();
        let mut new = base();
        new.sync.interval_secs = 60;
        new.logs.level = log::LevelFilter::Debug;
        new.upstream.client_secret = Secret::new("two");
        new.upstream.api_url = "https://elsewhere.example".into();
        new.redis.url = Secret::new("redis://:pw@other:6379/0");
        let reload = running.reload(&new);
        assert_eq!(
            reload.applied,
            ["upstream.client_secret", "sync.interval_secs", "logs.level"]
        );
        assert_eq!(reload.needs_restart, ["upstream.api_url", "redis.url"]);
        assert_eq!(reload.config.sync.interval_secs, 60);
        assert_eq!(reload.config.logs.level, log::LevelFilter::Debug);
        assert_eq!(reload.config.upstream.client_secret.expose(), "two");
        assert_eq!(reload.config.upstream.api_url, running.upstream.api_url);
        assert_eq!(reload.config.redis.url, running.redis.url);
        // Nothing changed: nothing to say.
        let same = running.reload(&running.clone());
        assert!(same.applied.is_empty() && same.needs_restart.is_empty());
    }

    /// A secret that changes only where it is redacted (a password in a
    /// URL, a token, a user's hash) is still a change.
    #[test]
    fn a_change_hidden_by_redaction_is_still_seen() {
        let redacted = |url: &str, token: &str, hash: &str| {
            let mut c = base();
            c.redis.url = Secret::new(url);
            c.metrics.admin_token = Secret::new(token);
            c.metrics.web.basic_auth_users = vec![("u".into(), Secret::new(hash))];
            c
        };
        let running = redacted("redis://:one@127.0.0.1:6379/0", "token-1", "$2b$04$one");
        let new = redacted("redis://:two@127.0.0.1:6379/0", "token-2", "$2b$04$two");
        // check-config shows them alike ...
        assert_eq!(running.effective_toml(), new.effective_toml());
        // ... and a reload still tells each change.
        assert_eq!(
            running.reload(&new).needs_restart,
            [
                "redis.url",
                "metrics.admin_token",
                "metrics.basic_auth_users"
            ]
        );
    }

    #[test]
    fn every_live_key_is_taken() {
        // A config differing from the default in every live key.
        let running = base();
        let mut new = base();
        new.upstream.client_id = "other".into();
        new.upstream.client_secret = Secret::new("two");
        new.upstream.client_secret_file = Some("secret".into());
        new.upstream.scope = "s".into();
        let s = &mut new.sync;
        s.interval_secs += 1;
        s.sport_ids.push(1);
        s.first_year += 1;
        s.max_failed_fraction /= 2.0;
        s.max_shrink_fraction /= 2.0;
        s.confirm_runs += 1;
        s.adaptive = !s.adaptive;
        s.live_window_hours += 1;
        s.active_window_days += 1;
        s.active_every += 1;
        s.dormant_every += 1;
        s.full_sweep_every += 1;
        s.max_validator_age_secs += 1;
        new.warm.window_days += 1;
        new.warm.reference_date = chrono::NaiveDate::from_ymd_opt(2025, 6, 15);
        new.redis.changes_maxlen += 1;
        new.metrics.seed_run_series = !new.metrics.seed_run_series;
        new.logs.level = log::LevelFilter::Trace;
        new.logs.debug_snapshots = !new.logs.debug_snapshots;
        let reload = running.reload(&new);
        assert!(
            reload.needs_restart.is_empty(),
            "{:?}",
            reload.needs_restart
        );
        let live: Vec<(&str, &str)> = fixed_keys().filter(|(s, k)| is_live(s, k)).collect();
        assert_eq!(reload.applied.len(), live.len());
        for (section, key) in live {
            assert_eq!(
                reload.config.comparable(section, key),
                new.comparable(section, key),
                "{section}.{key} is not taken"
            );
        }
    }
}
