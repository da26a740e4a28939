//! Reading a configuration: the file's TOML, then the environment
//! (`PRECACHE_<SECTION>_<KEY>`, and the original service's names), then
//! secret files and systemd credentials, then the checks across keys. Each
//! value is read by its key's entry in `keys::TABLE`; an error names the
//! key and where the value came from, never a secret.

use std::path::{Path, PathBuf};

use super::keys;
use super::raw::{Problem, Raw};
use super::{ALLOCATOR_TUNED_VAR, Config, ConfigError, Secret, all_keys};
use crate::model::dataset::Asks;

/// The original service's environment variable names.
const LEGACY_ENV: &[(&str, (&str, &str))] = &[
    ("API_URL", ("upstream", "api_url")),
    ("TOKEN_URL", ("upstream", "token_url")),
    ("API_CLIENT_ID", ("upstream", "client_id")),
    ("API_CLIENT_SECRET", ("upstream", "client_secret")),
    ("REDIS_URL", ("redis", "url")),
];

impl Config {
    /// Reads `path`, applies the process environment, validates. A
    /// `PRECACHE_*` variable that no key reads is an error.
    pub fn load_with_process_env(path: &Path) -> Result<Config, ConfigError> {
        let unknown = unknown_env_vars(std::env::vars_os().map(|(name, _)| name));
        if !unknown.is_empty() {
            return Err(ConfigError::UnknownEnv(unknown));
        }
        Config::load(path, &|name| std::env::var(name))
    }

    /// Reads `path`, applies the environment (through `env`), validates.
    pub fn load(path: &Path, env: &EnvLookup<'_>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Config::from_toml_str(&text, path, env)
    }

    /// As [`Config::load`], from text already read (`path` only names it in errors).
    pub fn from_toml_str(
        text: &str,
        path: &Path,
        env: &EnvLookup<'_>,
    ) -> Result<Config, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    // toml's message spans several lines with a source excerpt; one line is enough.
                    reason: e.message().replace('\n', " "),
                })?;
        let mut config = Config::default();
        let file_source = format!("in {}", path.display());
        let mut sections: Vec<(String, &toml::Value)> = Vec::new();
        for (section, value) in &table {
            let toml::Value::Table(keys) = value else {
                return Err(ConfigError::Key {
                    key: section.clone(),
                    source: file_source,
                    problem: "expected a [section] table".into(),
                });
            };
            if section != "datasets" {
                sections.push((section.clone(), value));
                continue;
            }
            // `[datasets.<name>]`: one table per dataset.
            for (name, value) in keys {
                if !value.is_table() {
                    return Err(ConfigError::Key {
                        key: format!("datasets.{name}"),
                        source: file_source,
                        problem: "expected a [datasets.<name>] table".into(),
                    });
                }
                sections.push((format!("datasets.{name}"), value));
            }
        }
        for (section, value) in sections {
            let Some(keys) = value.as_table() else {
                continue;
            };
            for (key, value) in keys {
                config
                    .set(&section, key, Raw::Toml(value))
                    .map_err(|problem| ConfigError::Key {
                        key: format!("{section}.{key}"),
                        source: file_source.clone(),
                        problem: problem.to_string(),
                    })?;
            }
        }
        // The original's names first, so the PRECACHE_ form wins when both are set.
        let overrides = LEGACY_ENV
            .iter()
            .map(|(var, (section, key))| (var.to_string(), *section, *key))
            .chain(all_keys().map(|(section, key)| (env_var_name(section, key), section, key)));
        for (var, section, key) in overrides {
            let error = |problem: Problem| ConfigError::Key {
                key: format!("{section}.{key}"),
                source: format!("from environment variable {var}"),
                problem: problem.to_string(),
            };
            match env(&var) {
                Ok(value) => config.set(section, key, Raw::Env(&value)).map_err(error)?,
                Err(std::env::VarError::NotPresent) => {}
                // Never ignored: a secret that fell back to the file's would
                // authenticate as someone else without a word.
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(error("is not valid UTF-8".into()));
                }
            }
        }
        config.read_secret_files(env)?;
        config.resolve_proxy(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Replaces each secret that names a file with the file's contents
    /// (one trailing newline dropped). A relative path is a systemd
    /// credential when `$CREDENTIALS_DIRECTORY` is set (`LoadCredential=`),
    /// else relative to the working directory. The error names the key and
    /// the path, never the contents.
    fn read_secret_files(&mut self, env: &EnvLookup<'_>) -> Result<(), ConfigError> {
        let credentials = env("CREDENTIALS_DIRECTORY").ok().map(PathBuf::from);
        let read = |key: &str, path: &Path| -> Result<Secret, ConfigError> {
            let path = match &credentials {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.to_path_buf(),
            };
            let problem = |problem: String| ConfigError::Key {
                key: key.into(),
                source: "after file and environment".into(),
                problem,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                problem(format!(
                    "cannot read the secret file {}: {e}",
                    path.display()
                ))
            })?;
            let secret = text.strip_suffix('\n').unwrap_or(&text);
            let secret = secret.strip_suffix('\r').unwrap_or(secret);
            if secret.is_empty() || secret.contains('\n') {
                return Err(problem(format!(
                    "the secret file {} must hold one non-empty line",
                    path.display()
                )));
            }
            Ok(Secret::new(secret))
        };
        if let Some(path) = &self.upstream.client_secret_file {
            self.upstream.client_secret = read("upstream.client_secret_file", path)?;
        }
        let read_file = |path: &Path| -> Result<Vec<u8>, String> {
            let path = match &credentials {
                Some(dir) if path.is_relative() => dir.join(path),
                _ => path.to_path_buf(),
            };
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        self.redis
            .load_files(&read_file)
            .and_then(|()| self.metrics.web.load_files(&read_file))
            .map_err(|(key, problem)| ConfigError::Key {
                key: key.into(),
                source: "after file and environment".into(),
                problem,
            })?;
        if let Some(path) = &self.metrics.admin_token_file {
            self.metrics.admin_token = read("metrics.admin_token_file", path)?;
        }
        Ok(())
    }

    fn set(&mut self, section: &str, key: &str, raw: Raw<'_>) -> Result<(), Problem> {
        if let Some(name) = section.strip_prefix("datasets.") {
            return keys::dataset(self, name, key, raw);
        }
        match keys::find(section, key) {
            Some(key) => key.set(self, raw),
            None if all_keys().any(|(s, _)| s == section) => {
                Err(format!("unknown key in section [{section}]").into())
            }
            None => Err("unknown section".into()),
        }
    }

    /// Cross-key checks that no single setter can make.
    fn validate(&self) -> Result<(), ConfigError> {
        let missing = |key: &str| ConfigError::Key {
            key: key.into(),
            source: "after file and environment".into(),
            problem: "must be set".into(),
        };
        if self.upstream.client_id.is_empty() {
            return Err(missing("upstream.client_id"));
        }
        // A dataset asked per record of another needs that one's records.
        for dataset in self.enabled_datasets() {
            if let Asks::EachRecordOf(source) = dataset.spec().asks
                && !self.dataset(source).enabled
            {
                return Err(ConfigError::Key {
                    key: format!("{}.enabled", dataset.spec().section),
                    source: "after file and environment".into(),
                    problem: format!(
                        "{dataset} is asked for each record of {source}: enable {} too, or disable {dataset}",
                        source.spec().section
                    ),
                });
            }
        }
        if self.upstream.client_secret.is_empty() {
            return Err(missing("upstream.client_secret"));
        }
        self.redis
            .validate()
            .map_err(|(key, problem)| ConfigError::Key {
                key: key.into(),
                source: "after file and environment".into(),
                problem,
            })?;
        if let Some(path) = &self.upstream.ca_file {
            read_ca_file(path).map_err(|problem| ConfigError::Key {
                key: "upstream.ca_file".into(),
                source: "after file and environment".into(),
                problem,
            })?;
        }
        let sync = &self.sync;
        let inconsistent = |key: &str, problem: String| ConfigError::Key {
            key: key.into(),
            source: "after file and environment".into(),
            problem,
        };
        // A hotter tier is never asked less often, nor over a wider window,
        // than a cooler one: else "live" would mean "rarely looked at".
        if sync.active_window_days * 24 < sync.live_window_hours {
            return Err(inconsistent(
                "sync.active_window_days",
                format!(
                    "must span at least sync.live_window_hours ({} h), got {} days",
                    sync.live_window_hours, sync.active_window_days
                ),
            ));
        }
        if sync.dormant_every < sync.active_every {
            return Err(inconsistent(
                "sync.dormant_every",
                format!(
                    "must be at least sync.active_every ({}), got {}",
                    sync.active_every, sync.dormant_every
                ),
            ));
        }
        Ok(())
    }
}

/// How the environment is read: `std::env::var`'s signature, so a value
/// that is not UTF-8 is told from an absent one.
pub type EnvLookup<'a> = dyn Fn(&str) -> Result<String, std::env::VarError> + 'a;

/// The certificates of a PEM file (`upstream.ca_file`): at least one, or
/// an error that says what is wrong with the file.
pub fn read_ca_file(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => return Err(format!("{} is not valid PEM: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// `PRECACHE_<SECTION>_<KEY>`.
pub fn env_var_name(section: &str, key: &str) -> String {
    format!("PRECACHE_{}_{}", section, key)
        .replace('.', "_")
        .to_ascii_uppercase()
}

/// The `PRECACHE_*` names among `names` that no key reads (nor precache
/// itself sets), sorted, each with the nearest real name within a few
/// typos.
pub fn unknown_env_vars(
    names: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<(String, Option<String>)> {
    let known: Vec<String> = all_keys()
        .map(|(section, key)| env_var_name(section, key))
        .collect();
    let mut unknown: Vec<(String, Option<String>)> = names
        .into_iter()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.starts_with("PRECACHE_"))
        .filter(|name| !known.contains(name) && name != ALLOCATOR_TUNED_VAR)
        .map(|name| {
            let near = known
                .iter()
                .map(|k| (edit_distance(&name, k), k))
                .filter(|(d, _)| *d <= 3)
                .min()
                .map(|(_, k)| k.clone());
            (name, near)
        })
        .collect();
    unknown.sort();
    unknown
}

/// Levenshtein distance (names are short; quadratic is fine).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}
