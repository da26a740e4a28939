//! Who may reach `/metrics` and the status page, and over what: TLS with a
//! certificate and key, and users with bcrypt-hashed passwords, in the
//! manner of Prometheus exporter-toolkit's web configuration. Both off by
//! default: the listener is on loopback. Files are read at load, like the
//! other secrets; `check-config` shows neither the key's path nor a hash.

use std::fmt;
use std::path::Path;
use std::path::PathBuf;

use super::Secret;
use super::raw::Problem;
use super::redis::{read_certificates, read_private_key};

/// `[metrics]`'s TLS and basic-auth keys.
#[derive(Clone, Default)]
pub struct WebConfig {
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// `user:bcrypt-hash` entries, split.
    pub basic_auth_users: Vec<(String, Secret)>,
    /// The certificate chain and key, once loaded.
    pub tls_pem: Option<(Vec<u8>, Secret)>,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self
            .basic_auth_users
            .iter()
            .map(|(u, _)| u.as_str())
            .collect();
        f.debug_struct("WebConfig")
            .field("tls_cert_file", &self.tls_cert_file)
            .field(
                "tls_key_file",
                &self.tls_key_file.as_ref().map(|_| "<redacted>"),
            )
            .field("basic_auth_users", &users)
            .field("tls", &self.tls_pem.is_some())
            .finish()
    }
}

impl WebConfig {
    /// Reads the certificate and key (through `read`, which resolves a
    /// systemd credential's relative path); checks they come together.
    pub(super) fn load_files(
        &mut self,
        read: &dyn Fn(&Path) -> Result<Vec<u8>, String>,
    ) -> Result<(), (&'static str, String)> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => Ok(()),
            (Some(_), None) => Err((
                "metrics.tls_key_file",
                "must be set with metrics.tls_cert_file".into(),
            )),
            (None, Some(_)) => Err((
                "metrics.tls_cert_file",
                "must be set with metrics.tls_key_file".into(),
            )),
            (Some(cert), Some(key)) => {
                let cert = read_certificates(read, cert, "metrics.tls_cert_file")?;
                let key = read_private_key(read, key, "metrics.tls_key_file")?;
                self.tls_pem = Some((cert, key));
                Ok(())
            }
        }
    }
}

/// `user:$2b$…`: a user name (no `:`) and a bcrypt hash. Not echoed: the
/// hash is not for logs.
pub(super) fn user_entry(entry: &str) -> Result<(String, Secret), Problem> {
    let bad = || Problem::from("expected user:bcrypt-hash entries, such as prometheus:$2b$10$…");
    let (user, hash) = entry.trim().split_once(':').ok_or_else(bad)?;
    if user.is_empty() || !hash.starts_with("$2") || hash.len() != 60 {
        return Err(bad());
    }
    hash.parse::<bcrypt::HashParts>().map_err(|_| bad())?;
    Ok((user.to_string(), Secret::new(hash)))
}
