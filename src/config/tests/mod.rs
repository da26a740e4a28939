//! The configuration's rules, key by key (`files`: the settings that name files).

use super::*;
use std::collections::HashMap;
use std::path::Path;

mod files;

const MINIMAL: &str = "[upstream]\nclient_id = \"demo\"\nclient_secret = \"demo-secret\"\n";

pub(super) fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_toml_str(text, Path::new("test.toml"), &|k| {
        env.get(k).cloned().ok_or(std::env::VarError::NotPresent)
    })
}

#[test]
fn defaults_are_the_seeds() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.sync.sport_ids, vec![72, 151]);
    assert_eq!(c.sync.first_year, 2024);
    assert_eq!(c.sync.interval_secs, 180);
    assert_eq!(c.warm.ttl_secs, 7 * 24 * 3600);
    assert_eq!(c.warm.window_days, 14);
    assert_eq!(c.warm.reference_date, None);
    assert_eq!(c.upstream.max_concurrency, 16);
    assert_eq!(c.upstream.retries, 3);
    assert_eq!(c.logs.history_len, 10);
    assert_eq!(c.metrics.keep_runs, 10);
    assert_eq!(c.daemon.shutdown_grace_secs, 20);
}

#[test]
fn the_repository_config_loads() {
    let text = include_str!("../../../config.toml");
    let c = load(text, &[]).unwrap();
    assert_eq!(c.upstream.api_url, "http://127.0.0.1:8099");
    assert_eq!(c.upstream.token_url, "http://127.0.0.1:8099/connect/token");
    assert_eq!(c.upstream.client_id, "demo");
    assert_eq!(c.upstream.client_secret.expose(), "demo-secret");
}

#[test]
fn unknown_key_is_named() {
    let err = load(&format!("{MINIMAL}[sync]\nintervall_secs = 3\n"), &[]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("sync.intervall_secs"), "{msg}");
    assert!(msg.contains("unknown key"), "{msg}");
    let err = load(&format!("{MINIMAL}[synk]\na = 1\n"), &[]).unwrap_err();
    assert!(err.to_string().contains("unknown section"), "{err}");
}

#[test]
fn bad_values_are_named() {
    for (text, key) in [
        ("[sync]\ninterval_secs = \"soon\"\n", "sync.interval_secs"),
        ("[sync]\ninterval_secs = 0\n", "sync.interval_secs"),
        ("[sync]\nsport_ids = []\n", "sync.sport_ids"),
        (
            "[sync]\nmax_failed_fraction = 1.5\n",
            "sync.max_failed_fraction",
        ),
        (
            "[warm]\nreference_date = \"15.06.2025\"\n",
            "warm.reference_date",
        ),
        ("[metrics]\nbind = \"nowhere\"\n", "metrics.bind"),
        ("[logs]\nlevel = \"loud\"\n", "logs.level"),
        ("[redis]\nurl = \"http://x\"\n", "redis.url"),
        (
            "[daemon]\nshutdown_grace_secs = -1\n",
            "daemon.shutdown_grace_secs",
        ),
        // Large enough to overflow the arithmetic done with them later.
        (
            "[warm]\nrefresh_until_days = 999999999999\n",
            "warm.refresh_until_days",
        ),
        ("[warm]\nttl_secs = 9223372036854775807\n", "warm.ttl_secs"),
        ("[metrics]\nkeep_runs = 100000\n", "metrics.keep_runs"),
    ] {
        let err = load(&format!("{MINIMAL}{text}"), &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(key), "{text}: {msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
}

#[test]
fn rates_sizes_and_shrink_settings_are_bounded() {
    for (text, key) in [
        (
            "max_requests_per_sec = 1e-20\n",
            "upstream.max_requests_per_sec",
        ),
        (
            "max_requests_per_sec = 1e-12\n",
            "upstream.max_requests_per_sec",
        ),
        (
            "max_requests_per_sec = -1\n",
            "upstream.max_requests_per_sec",
        ),
        (
            "max_requests_per_sec = 1e9\n",
            "upstream.max_requests_per_sec",
        ),
        ("max_body_bytes = 10\n", "upstream.max_body_bytes"),
        ("max_body_bytes = 99999999999\n", "upstream.max_body_bytes"),
        (
            "[sync]\nmax_shrink_fraction = 1.5\n",
            "sync.max_shrink_fraction",
        ),
        ("[sync]\nconfirm_runs = 0\n", "sync.confirm_runs"),
        ("[sync]\nadaptive = 1\n", "sync.adaptive"),
        ("[sync]\nactive_every = 0\n", "sync.active_every"),
        ("[sync]\ndormant_every = 0\n", "sync.dormant_every"),
        ("[sync]\nlive_window_hours = -1\n", "sync.live_window_hours"),
        ("[sync]\nfull_sweep_every = -1\n", "sync.full_sweep_every"),
        (
            "[sync]\nlive_window_hours = 49\nactive_window_days = 2\n",
            "sync.active_window_days",
        ),
        (
            "[sync]\nactive_every = 5\ndormant_every = 4\n",
            "sync.dormant_every",
        ),
    ] {
        let err = load(&format!("{MINIMAL}{text}"), &[]).unwrap_err();
        assert!(err.to_string().contains(key), "{text}: {err}");
    }
    let c = load(&format!("{MINIMAL}max_requests_per_sec = 0.01\n"), &[]).unwrap();
    assert_eq!(c.upstream.max_requests_per_sec, 0.01);
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.upstream.max_requests_per_sec, 0.0);
    assert_eq!(c.upstream.max_body_bytes, 64 * 1024 * 1024);
    assert_eq!(c.sync.max_shrink_fraction, 0.2);
    assert_eq!(c.sync.confirm_runs, 3);
    assert!(c.sync.adaptive);
    assert_eq!(
        (c.sync.live_window_hours, c.sync.active_window_days),
        (24, 14)
    );
    assert_eq!(
        (
            c.sync.active_every,
            c.sync.dormant_every,
            c.sync.full_sweep_every
        ),
        (3, 20, 0)
    );
    let c = load(
        &format!("{MINIMAL}[sync]\nlive_window_hours = 48\nactive_window_days = 2\nactive_every = 4\ndormant_every = 4\n"),
        &[],
    )
    .unwrap();
    assert_eq!(
        (c.sync.live_window_hours, c.sync.dormant_every),
        (48, 4),
        "the edges are allowed"
    );
}

#[test]
fn urls_need_a_host_and_never_echo_credentials() {
    for (url, problem) in [
        ("http://", "with a host"),
        ("https://:8080/x", "with a host"),
        ("http:// example.org", "with a host"),
        ("gopher://user:pw-xyz@host", "http://"),
        ("http://user:pw-xyz@host/api", "credentials"),
    ] {
        let text = format!("{MINIMAL}api_url = \"{url}\"\n");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("upstream.api_url") && err.contains(problem),
            "{url}: {err}"
        );
        assert!(!err.contains("pw-xyz"), "{url}: {err}");
    }
    for good in [
        "http://h",
        "https://data.nif.no",
        "http://127.0.0.1:8099/",
        "http://[::1]:80",
    ] {
        let text = format!("{MINIMAL}api_url = \"{good}\"\n");
        assert!(load(&text, &[]).is_ok(), "{good}");
    }
}

#[test]
fn a_non_utf8_environment_value_is_an_error_not_ignored() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let lookup = |name: &str| match name {
        "PRECACHE_UPSTREAM_CLIENT_SECRET" => {
            Err(std::env::VarError::NotUnicode(OsString::from_vec(vec![
                0x73, 0xff, 0x73,
            ])))
        }
        _ => Err(std::env::VarError::NotPresent),
    };
    let err = Config::from_toml_str(MINIMAL, Path::new("t.toml"), &lookup).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("PRECACHE_UPSTREAM_CLIENT_SECRET"), "{msg}");
    assert!(msg.contains("not valid UTF-8"), "{msg}");
}

#[test]
fn bad_upstream_url_is_named() {
    let text = "[upstream]\nclient_id = \"a\"\nclient_secret = \"b\"\napi_url = \"ftp://x\"\n";
    let err = load(text, &[]).unwrap_err();
    assert!(err.to_string().contains("upstream.api_url"), "{err}");
}

#[test]
fn syntax_error_is_one_line() {
    let err = load("[upstream\nclient_id = 1", &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }));
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn missing_credentials_are_an_error() {
    let err = load("", &[]).unwrap_err();
    assert!(err.to_string().contains("upstream.client_id"), "{err}");
}

#[test]
fn env_overrides_file_and_precache_form_wins() {
    let c = load(
        MINIMAL,
        &[
            ("API_URL", "http://legacy:1"),
            ("REDIS_URL", "redis://legacy:6379/2"),
            ("PRECACHE_REDIS_URL", "redis://new:6379/3"),
            ("PRECACHE_SYNC_SPORT_IDS", "72, 151,1"),
            ("PRECACHE_WARM_ENABLED", "false"),
            ("API_CLIENT_SECRET", "s3"),
        ],
    )
    .unwrap();
    assert_eq!(c.upstream.api_url, "http://legacy:1");
    assert_eq!(c.redis.url.expose(), "redis://new:6379/3");
    assert_eq!(c.sync.sport_ids, vec![72, 151, 1]);
    assert!(!c.warm.enabled);
    assert_eq!(c.upstream.client_secret.expose(), "s3");
    let err = load(MINIMAL, &[("PRECACHE_UPSTREAM_RETRIES", "many")]).unwrap_err();
    assert!(
        err.to_string().contains("PRECACHE_UPSTREAM_RETRIES"),
        "{err}"
    );
}

#[test]
fn secrets_do_not_show_in_debug_or_errors() {
    let c = load(
        "[upstream]\nclient_id = \"demo\"\nclient_secret = \"hunter2\"\n\
         [metrics]\nadmin_token = \"tok-xyz\"\n[redis]\nurl = \"redis://:pw123@h:1/0\"\n",
        &[],
    )
    .unwrap();
    let dbg = format!("{c:?}");
    for secret in ["hunter2", "tok-xyz", "pw123"] {
        assert!(!dbg.contains(secret), "{secret} leaked: {dbg}");
    }
    let err = load(MINIMAL, &[("REDIS_URL", "http://:pw123@h")]).unwrap_err();
    assert!(!err.to_string().contains("pw123"));
}

#[test]
fn season_years_follow_the_seed() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.season_years(2026), 2025..=2026);
    assert_eq!(c.season_years(2024), 2024..=2024);
}

#[test]
fn secrets_come_from_files_or_systemd_credentials_and_errors_never_show_them() {
    let dir = std::env::temp_dir().join(format!("precache-secrets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("creds")).unwrap();
    std::fs::write(dir.join("secret"), "from-file-xyz\n").unwrap();
    std::fs::write(dir.join("creds/token"), "cred-token-xyz").unwrap();
    std::fs::write(dir.join("two-lines"), "a-xyz\nb-xyz\n").unwrap();
    let secret_path = dir.join("secret").display().to_string();
    let text = format!(
        "{MINIMAL}client_secret_file = {secret_path:?}\n[metrics]\nadmin_token_file = \"token\"\n"
    );
    let creds = dir.join("creds").display().to_string();
    let c = load(&text, &[("CREDENTIALS_DIRECTORY", creds.as_str())]).unwrap();
    assert_eq!(
        c.upstream.client_secret.expose(),
        "from-file-xyz",
        "the file wins, newline dropped"
    );
    assert_eq!(
        c.metrics.admin_token.expose(),
        "cred-token-xyz",
        "a relative path is a credential"
    );
    // The environment can name the file too.
    let c = load(
        MINIMAL,
        &[("PRECACHE_UPSTREAM_CLIENT_SECRET_FILE", secret_path.as_str())],
    )
    .unwrap();
    assert_eq!(c.upstream.client_secret.expose(), "from-file-xyz");
    for (file, problem) in [
        (
            dir.join("missing").display().to_string(),
            "cannot read the secret file",
        ),
        (
            dir.join("two-lines").display().to_string(),
            "one non-empty line",
        ),
    ] {
        let text = format!("{MINIMAL}client_secret_file = {file:?}\n");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("upstream.client_secret_file") && err.contains(problem),
            "{err}"
        );
        assert!(!err.contains("xyz"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_log_file_is_optional_and_rotation_is_bounded() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.logs.file_path(), Some(PathBuf::from("logs/precache.log")));
    assert_eq!((c.logs.max_file_bytes, c.logs.keep_files), (10 << 20, 5));
    let c = load(&format!("{MINIMAL}[logs]\nfile = \"\"\n"), &[]).unwrap();
    assert_eq!(c.logs.file_path(), None);
    for (text, key) in [
        ("[logs]\nmax_file_bytes = 10\n", "logs.max_file_bytes"),
        ("[logs]\nkeep_files = 0\n", "logs.keep_files"),
        ("[redis]\nchanges_maxlen = -1\n", "redis.changes_maxlen"),
    ] {
        let err = load(&format!("{MINIMAL}{text}"), &[]).unwrap_err();
        assert!(err.to_string().contains(key), "{text}: {err}");
    }
}

#[test]
fn the_proxy_comes_from_the_config_or_the_environment_for_the_apis_scheme() {
    let https =
        "[upstream]\nclient_id = \"d\"\nclient_secret = \"s\"\napi_url = \"https://api.example\"\n";
    let c = load(https, &[]).unwrap();
    assert_eq!(c.upstream.proxy, None);
    // HTTPS_PROXY for an https API; HTTP_PROXY is for http ones.
    let c = load(
        https,
        &[
            ("HTTP_PROXY", "http://plain:3128"),
            ("HTTPS_PROXY", "http://tls:3128"),
            ("NO_PROXY", "localhost, .internal"),
        ],
    )
    .unwrap();
    let proxy = c.upstream.proxy.unwrap();
    assert_eq!(proxy.url.expose(), "http://tls:3128");
    assert_eq!(proxy.source, "HTTPS_PROXY");
    assert!(proxy.no_proxy.is_empty(), "neither of our hosts is named");
    // NO_PROXY names the API (a subdomain entry), not the token endpoint
    // (the default, on 127.0.0.1): the API's host goes straight there.
    let c = load(
        https,
        &[("HTTPS_PROXY", "http://tls:3128"), ("NO_PROXY", ".example")],
    )
    .unwrap();
    assert_eq!(c.upstream.proxy.unwrap().no_proxy, vec!["api.example"]);
    // Both of ours: no proxy at all.
    let c = load(
        https,
        &[
            ("HTTPS_PROXY", "http://tls:3128"),
            ("NO_PROXY", "example,127.0.0.0/8"),
        ],
    )
    .unwrap();
    assert_eq!(c.upstream.proxy, None);
    let c = load(MINIMAL, &[("HTTP_PROXY", "http://plain:3128")]).unwrap();
    assert_eq!(c.upstream.proxy.unwrap().source, "HTTP_PROXY");
    let c = load(MINIMAL, &[("all_proxy", "http://any:3128")]).unwrap();
    assert_eq!(c.upstream.proxy.unwrap().source, "all_proxy");
    // The config's own wins over the environment's.
    let c = load(
        &format!("{https}proxy = \"http://mine:8080\"\n"),
        &[("HTTPS_PROXY", "http://tls:3128")],
    )
    .unwrap();
    assert_eq!(c.upstream.proxy.unwrap().source, "upstream.proxy");
    // A bad one is named with where it came from, its password not echoed.
    let err = load(https, &[("HTTPS_PROXY", "socks5://u:pw-xyz@p:1080")]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("upstream.proxy"), "{msg}");
    assert!(msg.contains("HTTPS_PROXY"), "{msg}");
    assert!(!msg.contains("pw-xyz"), "{msg}");
}

#[test]
fn an_unknown_precache_variable_is_named_with_the_nearest_real_one() {
    let names = [
        "PRECACHE_SYNC_INTERVALL_SECS",
        "PRECACHE_SYNC_INTERVAL_SECS",
        "PRECACHE_ALLOCATOR_TUNED",
        "PRECACHE_WHATEVER",
        "HOME",
        "API_URL",
    ]
    .map(std::ffi::OsString::from);
    let unknown = unknown_env_vars(names);
    assert_eq!(
        unknown,
        vec![
            (
                "PRECACHE_SYNC_INTERVALL_SECS".to_string(),
                Some("PRECACHE_SYNC_INTERVAL_SECS".to_string())
            ),
            ("PRECACHE_WHATEVER".to_string(), None),
        ]
    );
    let message = ConfigError::UnknownEnv(unknown).to_string();
    assert!(
        message
            .contains("PRECACHE_SYNC_INTERVALL_SECS (did you mean PRECACHE_SYNC_INTERVAL_SECS?)"),
        "{message}"
    );
    // Every key's own variable is known.
    let all = all_keys().map(|(s, k)| std::ffi::OsString::from(env_var_name(s, k)));
    assert!(unknown_env_vars(all).is_empty());
}

#[test]
fn datasets_are_configured_by_name_in_the_file_and_the_environment() {
    use crate::model::dataset::DatasetId;
    let c = load(MINIMAL, &[]).unwrap();
    for d in DatasetId::ALL {
        assert!(c.dataset(d).enabled, "{d} is on by default");
        assert_eq!(c.dataset(d).every_runs, d.spec().every_runs);
    }
    let text = format!(
        "{MINIMAL}[datasets.org_teams]\nevery_runs = 5\n[datasets.venue_details]\nenabled = false\n"
    );
    let c = load(&text, &[("PRECACHE_DATASETS_VENUES_EVERY_RUNS", "7")]).unwrap();
    assert_eq!(c.dataset(DatasetId::OrgTeams).every_runs, 5);
    assert!(!c.dataset(DatasetId::VenueDetails).enabled);
    assert_eq!(c.dataset(DatasetId::Venues).every_runs, 7);
    assert!(!c.enabled_datasets().contains(&DatasetId::VenueDetails));
    assert_eq!(c.enabled_datasets().len(), DatasetId::COUNT - 1);
    let shown = c.effective_toml();
    assert!(
        shown.contains("[datasets.org_teams]\nenabled = true\nevery_runs = 5\n"),
        "{shown}"
    );
    for (text, key, says) in [
        (
            "[datasets.teams]\nenabled = true\n",
            "datasets.teams.enabled",
            "unknown dataset",
        ),
        (
            "[datasets.venues]\nevery_runs = 0\n",
            "datasets.venues.every_runs",
            "",
        ),
        (
            "[datasets.venues]\nevry_runs = 3\n",
            "datasets.venues.evry_runs",
            "unknown key",
        ),
        ("[datasets]\nvenues = 3\n", "datasets.venues", "table"),
        (
            "[datasets.venues]\nenabled = false\n",
            "datasets.venue_details.enabled",
            "enable datasets.venues too",
        ),
    ] {
        let err = load(&format!("{MINIMAL}{text}"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(key) && err.contains(says), "{text}: {err}");
    }
    let unknown = unknown_env_vars(["PRECACHE_DATASETS_ORG_TEAMS_ENABLED".into()]);
    assert!(unknown.is_empty(), "{unknown:?}");
}

/// Each key is declared once, in `keys::TABLE`, its default in
/// `Config::default`, its environment variable from its name. What an operator
/// reads is checked against that here: docs/configuration.md's table lists
/// every key and no other, each with the default `check-config` shows; the
/// repository's config.toml sets every key and no other; the README's
/// short table names only real keys.
#[test]
fn every_key_is_declared_once_and_documented_with_its_default() {
    let docs = include_str!("../../../docs/configuration.md");
    let defaults = Config::default();
    let mut documented = std::collections::BTreeSet::new();
    for row in docs.lines().filter_map(|line| line.strip_prefix("| `")) {
        let mut cells = row.split(" | ");
        let key = cells.next().unwrap().trim_end_matches('`');
        if !key.contains('.') || key.starts_with("datasets.") {
            continue;
        }
        documented.insert(key.to_string());
        let (section, name) = key.split_once('.').unwrap();
        let Some(shown) = defaults.shown(section, name) else {
            continue; // reported below, as a key that does not exist
        };
        let cell = cells.next().unwrap_or("").trim();
        let doc_default = match cell.trim_matches('`') {
            "\"\"" | "(required)" | "(none)" => String::new(),
            other => other.to_string(),
        };
        let shown = match shown {
            toml::Value::String(text) => text,
            other => other.to_string(),
        };
        let same = doc_default == shown
            || matches!((doc_default.parse::<f64>(), shown.parse::<f64>()), (Ok(a), Ok(b)) if a == b);
        assert!(
            same,
            "{key}: docs/configuration.md says {cell}, check-config shows {shown:?}"
        );
    }
    let declared: std::collections::BTreeSet<String> = fixed_keys()
        .map(|(section, key)| format!("{section}.{key}"))
        .collect();
    assert_eq!(
        documented
            .symmetric_difference(&declared)
            .collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "docs/configuration.md's table against keys::TABLE"
    );
    for key in DATASET_KEYS {
        assert!(docs.contains(&format!("`datasets.<name>.{key}`")), "{key}");
    }
    let readme = include_str!("../../../README.md");
    for row in readme.lines().filter_map(|line| line.strip_prefix("| `")) {
        let key = row.split('`').next().unwrap();
        if let Some((section, name)) = key.split_once('.')
            && !key.contains(' ')
            && !section.starts_with("datasets")
        {
            assert!(
                keys::find(section, name).is_some(),
                "README.md names {key}, which is no key"
            );
        }
    }
    let file: toml::Table = include_str!("../../../config.toml").parse().unwrap();
    let mut in_file = std::collections::BTreeSet::new();
    for (section, keys) in &file {
        for (key, value) in keys.as_table().unwrap() {
            match value.as_table() {
                // [datasets.<name>]
                Some(dataset) => {
                    in_file.extend(dataset.keys().map(|k| format!("{section}.{key}.{k}")))
                }
                None => {
                    in_file.insert(format!("{section}.{key}"));
                }
            }
        }
    }
    let every: std::collections::BTreeSet<String> = all_keys()
        .map(|(section, key)| format!("{section}.{key}"))
        .collect();
    assert_eq!(
        in_file.symmetric_difference(&every).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "config.toml against every key"
    );
}
