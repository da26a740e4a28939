//! The Redis connection settings (DESIGN.md section 12): one node by URL,
//! or the master a set of Sentinels names; the ACL user and the file of its
//! password; TLS with a CA and a client certificate, for the data nodes and
//! the sentinels alike.
//!
//! Every file is read and checked at load, so a daemon never starts with a
//! key it cannot read and `check-config` names a bad file before a
//! connection is tried. The store connects with what is here
//! (`store::connect`); nothing else reads these settings.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Secret;
use super::raw::Problem;

/// How precache reaches its Redis.
#[derive(Clone)]
pub struct RedisConfig {
    /// One node (when `sentinels` is empty). With `username` and the
    /// password of `password_file` in it, once loaded.
    pub url: Secret,
    /// `host:port` of each Sentinel; empty: `url` is the node.
    pub sentinels: Vec<String>,
    /// The master's name the sentinels know (`sentinel monitor <name> …`).
    pub master_name: String,
    /// The ACL user (README "A least-privilege Redis user"); empty: the URL's.
    pub username: String,
    /// A file holding the user's password (one line; relative: a systemd
    /// credential), kept out of the URL and the config file.
    pub password_file: Option<PathBuf>,
    /// The password of `password_file`, once loaded.
    pub password: Option<Secret>,
    /// TLS to the sentinels and the master (a `rediss://` URL says so for one node).
    pub tls: bool,
    /// The CA that signed the servers' certificates; none: the host's store.
    pub tls_ca_file: Option<PathBuf>,
    /// The client certificate (for `tls-auth-clients yes`) and its key.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The three files' contents, once loaded.
    pub tls_files: TlsFiles,
    pub key_prefix: String,
    /// Entries the change feed `precache:changes` keeps (about; 0 = no feed).
    pub changes_maxlen: usize,
}

/// As `check-config` shows it: no password, no key, no key path.
impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &super::redacted_url(self.url.expose()))
            .field("sentinels", &self.sentinels)
            .field("master_name", &self.master_name)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("password", &self.password)
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field(
                "tls_key_file",
                &self.tls_key_file.as_ref().map(|_| "<redacted>"),
            )
            .field("tls_files", &self.tls_files)
            .field("key_prefix", &self.key_prefix)
            .field("changes_maxlen", &self.changes_maxlen)
            .finish()
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: Secret::new("redis://127.0.0.1:6379/0"),
            sentinels: Vec::new(),
            master_name: String::new(),
            username: String::new(),
            password_file: None,
            password: None,
            tls: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_files: TlsFiles::default(),
            key_prefix: String::new(),
            changes_maxlen: 1000,
        }
    }
}

/// The PEM files of the TLS settings, read at load.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    pub cert: Option<Vec<u8>>,
    /// The client key: a secret like a password.
    pub key: Option<Secret>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.as_ref().map(|_| "<loaded>"))
            .field("cert", &self.cert.as_ref().map(|_| "<loaded>"))
            .field("key", &self.key)
            .finish()
    }
}

impl RedisConfig {
    /// Whether a Sentinel set names the master.
    pub fn uses_sentinel(&self) -> bool {
        !self.sentinels.is_empty()
    }

    /// Whether connections are TLS: `redis.tls`, or a `rediss://` URL.
    pub fn uses_tls(&self) -> bool {
        if self.uses_sentinel() {
            self.tls
        } else {
            self.url.expose().starts_with("rediss://")
        }
    }

    /// Reads the password and TLS files (through `read`, which resolves a
    /// systemd credential's relative path) and puts the credentials into
    /// the URL of a single node. Errors name the key, never a secret.
    pub(super) fn load_files(
        &mut self,
        read: &dyn Fn(&Path) -> Result<Vec<u8>, String>,
    ) -> Result<(), (&'static str, String)> {
        if let Some(path) = &self.password_file {
            let text = read(path).map_err(|e| ("redis.password_file", e))?;
            self.password = Some(one_line(&text).map_err(|e| ("redis.password_file", e))?);
        }
        if !self.uses_sentinel() && (self.password.is_some() || !self.username.is_empty()) {
            let url = with_credentials(self.url.expose(), &self.username, self.password.as_ref())
                .map_err(|e| ("redis.url", e))?;
            self.url = Secret::new(url);
        }
        if let Some(path) = &self.tls_ca_file {
            self.tls_files.ca = Some(read_certificates(read, path, "redis.tls_ca_file")?);
        }
        if let Some(path) = &self.tls_cert_file {
            self.tls_files.cert = Some(read_certificates(read, path, "redis.tls_cert_file")?);
        }
        if let Some(path) = &self.tls_key_file {
            self.tls_files.key = Some(read_private_key(read, path, "redis.tls_key_file")?);
        }
        Ok(())
    }

    /// Checks across the keys of `[redis]`: the key to blame and why.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.uses_sentinel() && self.master_name.trim().is_empty() {
            return Err((
                "redis.master_name",
                "must be set with redis.sentinels: the name the sentinels monitor".into(),
            ));
        }
        if self.uses_sentinel() && self.url.expose() != RedisConfig::default().url.expose() {
            return Err((
                "redis.url",
                "is not used with redis.sentinels (they name the master): remove it; TLS, the user and the password have keys of their own".into(),
            ));
        }
        if !self.uses_sentinel() && !self.master_name.is_empty() {
            return Err((
                "redis.sentinels",
                "must list the sentinels (host:port) that know redis.master_name".into(),
            ));
        }
        if !self.uses_sentinel() && self.tls && !self.uses_tls() {
            return Err((
                "redis.tls",
                "is true but redis.url is not rediss://: use a rediss:// URL for one node".into(),
            ));
        }
        let files = [
            ("redis.tls_ca_file", &self.tls_ca_file),
            ("redis.tls_cert_file", &self.tls_cert_file),
            ("redis.tls_key_file", &self.tls_key_file),
        ];
        if !self.uses_tls()
            && let Some((key, _)) = files.iter().find(|(_, file)| file.is_some())
        {
            return Err((
                key,
                if self.uses_sentinel() {
                    "is set but TLS is off: set redis.tls = true".into()
                } else {
                    "is set but TLS is off: use a rediss:// URL".into()
                },
            ));
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => Err((
                "redis.tls_key_file",
                "must be set with redis.tls_cert_file (the client certificate's key)".into(),
            )),
            (None, Some(_)) => Err((
                "redis.tls_cert_file",
                "must be set with redis.tls_key_file (the key's certificate)".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Where precache connects, as it may be shown: the URL without its
    /// secrets, or the master's name and the sentinels.
    pub fn describe(&self) -> String {
        if self.uses_sentinel() {
            format!(
                "master {:?} of sentinels {}{}",
                self.master_name,
                self.sentinels.join(","),
                if self.tls { " (TLS)" } else { "" }
            )
        } else {
            super::redacted_url(self.url.expose())
        }
    }
}

/// `host:port` of a sentinel, checked (an IPv6 host in brackets). The
/// entry is not echoed: a mistaken one may be a URL with a password.
pub(crate) fn sentinel_address(text: &str) -> Result<(String, u16), Problem> {
    let text = text.trim();
    let bad = || Problem::from("expected host:port, such as 10.0.0.5:26379 or [2001:db8::5]:26379");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains([':', ']']) => return Err(bad()),
        None => host,
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(['/', '@', ' ', '[', ']']) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// An optional path setting: empty means none.
pub(super) fn optional_path(text: &str) -> Option<PathBuf> {
    (!text.trim().is_empty()).then(|| PathBuf::from(text))
}

/// A secret file's one line (one trailing newline dropped).
pub(super) fn one_line(bytes: &[u8]) -> Result<Secret, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the secret file is not UTF-8 text")?;
    let secret = text.strip_suffix('\n').unwrap_or(text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() || secret.contains('\n') {
        return Err("the secret file must hold one non-empty line".into());
    }
    Ok(Secret::new(secret))
}

/// A PEM file of certificates for `key`, checked.
pub(super) fn read_certificates(
    read: &dyn Fn(&Path) -> Result<Vec<u8>, String>,
    path: &Path,
    key: &'static str,
) -> Result<Vec<u8>, (&'static str, String)> {
    let pem = read(path).map_err(|e| (key, e))?;
    pem_holds(&pem, PemKind::Certificate, &path.display().to_string()).map_err(|e| (key, e))?;
    Ok(pem)
}

/// A PEM private key for `key`, checked; neither its path nor its
/// contents are named in an error (`check-config` redacts the path too).
pub(super) fn read_private_key(
    read: &dyn Fn(&Path) -> Result<Vec<u8>, String>,
    path: &Path,
    key: &'static str,
) -> Result<Secret, (&'static str, String)> {
    let pem = read(path).map_err(|_| (key, "cannot read the key file".to_string()))?;
    pem_holds(&pem, PemKind::PrivateKey, "the key file").map_err(|e| (key, e))?;
    let text = String::from_utf8(pem).map_err(|_| (key, "the key file is not PEM text".into()))?;
    Ok(Secret::new(text))
}

#[derive(PartialEq)]
enum PemKind {
    Certificate,
    PrivateKey,
}

/// Whether `pem` holds at least one item of `kind`; the error names the
/// file as `named`.
fn pem_holds(pem: &[u8], kind: PemKind, named: &str) -> Result<(), String> {
    let mut found = false;
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(_)) => found |= kind == PemKind::Certificate,
            Ok(ureq::tls::PemItem::PrivateKey(_)) => found |= kind == PemKind::PrivateKey,
            Ok(_) => {}
            Err(_) => return Err(format!("{named} is not valid PEM")),
        }
    }
    match (found, kind) {
        (true, _) => Ok(()),
        (false, PemKind::Certificate) => Err(format!(
            "{named} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)"
        )),
        (false, PemKind::PrivateKey) => Err(format!(
            "{named} holds no private key (expected PEM: -----BEGIN PRIVATE KEY-----)"
        )),
    }
}

/// `url` with `username` and `password` as its user information,
/// percent-encoded. A URL that carries credentials of its own is refused:
/// they would be set in two places.
pub(super) fn with_credentials(
    url: &str,
    username: &str,
    password: Option<&Secret>,
) -> Result<String, String> {
    let need = "redis.username and redis.password_file need a redis:// or rediss:// URL";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(need.into());
    };
    if !matches!(scheme, "redis" | "rediss") {
        return Err(need.into());
    }
    let authority_end = rest.find('/').unwrap_or(rest.len());
    if rest[..authority_end].contains('@') {
        return Err(
            "holds credentials, and redis.username or redis.password_file is set too: use one of them"
                .into(),
        );
    }
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    let user = encode(username);
    let info = match password {
        Some(password) => format!("{user}:{}", encode(password.expose())),
        None => user,
    };
    Ok(format!("{scheme}://{info}@{rest}"))
}
