//! How precache reaches the API over the network: the certificates it
//! trusts, the proxy it goes through, and the count of connections it
//! opens.
//!
//! The real API is HTTPS, and the hosts that run precache decide whom to
//! trust: a company's TLS-inspecting proxy has its own CA, installed in
//! `/etc/ssl/certs` (or named by `SSL_CERT_FILE` / `SSL_CERT_DIR`). ureq's
//! bundled Mozilla roots ignore all of that, so the roots here are the
//! host's store plus `upstream.ca_file` (DESIGN.md section 2). The proxy was
//! resolved by the configuration (`upstream.proxy`, or `HTTPS_PROXY` and
//! friends, with `NO_PROXY`); ureq is told exactly that one and never reads
//! the environment itself. Keep-alive is measured, not assumed: every
//! connection opened is counted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ureq::tls::{Certificate, RootCerts};
use ureq::unversioned::transport::{ConnectionDetails, Connector, DefaultConnector, Transport};

use crate::config::{ProxyConfig, read_ca_file, redacted_url};

/// Why the upstream client cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// `upstream.ca_file` cannot be used.
    CaFile { path: PathBuf, reason: String },
    /// The proxy URL cannot be used (shown redacted).
    Proxy { shown: String, source: String },
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::CaFile { path, reason } => {
                write!(f, "upstream.ca_file {}: {reason}", path.display())
            }
            TransportError::Proxy { shown, source } => {
                write!(f, "proxy {shown} (from {source}) is not a usable URL")
            }
        }
    }
}

impl std::error::Error for TransportError {}

/// Where the trusted roots came from, for the start-up log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roots {
    /// Certificates found in the host's store.
    pub host: usize,
    /// Certificates of `upstream.ca_file`.
    pub ca_file: usize,
    /// The host's store had none (or could not be read) and no
    /// `upstream.ca_file` was given: ureq's bundled Mozilla roots are used.
    pub bundled: bool,
}

/// The roots a server certificate is checked against: the host's CA store
/// plus `ca_file`. A host without a store (a bare container) and without
/// `ca_file` falls back to the bundled Mozilla roots, with a warning,
/// rather than trusting nothing.
pub fn root_certs(ca_file: Option<&Path>) -> Result<(RootCerts, Roots), TransportError> {
    let native = rustls_native_certs::load_native_certs();
    for error in native.errors.iter().take(3) {
        log::debug!("reading the host's CA store: {error}");
    }
    let mut certs: Vec<Certificate<'static>> = native
        .certs
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    let host = certs.len();
    let extra = match ca_file {
        Some(path) => read_ca_file(path).map_err(|reason| TransportError::CaFile {
            path: path.to_path_buf(),
            reason,
        })?,
        None => Vec::new(),
    };
    let roots = Roots {
        host,
        ca_file: extra.len(),
        bundled: certs.is_empty() && extra.is_empty(),
    };
    if roots.bundled {
        log::warn!(
            "no CA certificate found in the host's store (SSL_CERT_FILE, SSL_CERT_DIR, /etc/ssl/certs) and no upstream.ca_file: trusting the bundled Mozilla roots"
        );
        return Ok((RootCerts::WebPki, roots));
    }
    if certs.is_empty() {
        log::warn!(
            "no CA certificate found in the host's store (SSL_CERT_FILE, SSL_CERT_DIR, /etc/ssl/certs): only upstream.ca_file's are trusted, so a public host (a token endpoint elsewhere) fails its certificate check"
        );
    }
    certs.extend(extra);
    Ok((RootCerts::Specific(Arc::new(certs)), roots))
}

/// The ureq proxy for `config`, with its `NO_PROXY` hosts.
pub fn proxy(config: &ProxyConfig) -> Result<ureq::Proxy, TransportError> {
    let bad = || TransportError::Proxy {
        shown: redacted_url(config.url.expose()),
        source: config.source.clone(),
    };
    let parsed = ureq::Proxy::new(config.url.expose()).map_err(|_| bad())?;
    let mut builder = ureq::Proxy::builder(parsed.protocol())
        .host(parsed.host())
        .port(parsed.port());
    if let Some(user) = parsed.username() {
        builder = builder.username(user);
    }
    if let Some(password) = parsed.password() {
        builder = builder.password(password);
    }
    for host in &config.no_proxy {
        builder = builder.no_proxy(host);
    }
    builder.build().map_err(|_| bad())
}

/// A hint for a transport error an operator can act on: a certificate the
/// roots do not vouch for is the usual first-hour problem behind a
/// TLS-inspecting proxy.
pub fn hint(reason: &str) -> Option<&'static str> {
    let lower = reason.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        Some(
            "the server's certificate is not trusted: install its CA in the host's store (/etc/ssl/certs) or name it in upstream.ca_file",
        )
    } else {
        None
    }
}

/// ureq's connector chain (proxy, TCP, TLS), counting each connection it
/// opens; pooled connections reused by keep-alive do not come through here.
#[derive(Debug)]
pub struct CountingConnector {
    inner: DefaultConnector,
    opened: Arc<AtomicU64>,
}

impl CountingConnector {
    pub fn new(opened: Arc<AtomicU64>) -> CountingConnector {
        CountingConnector {
            inner: DefaultConnector::default(),
            opened,
        }
    }
}

impl Connector<()> for CountingConnector {
    type Out = Box<dyn Transport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let transport = self.inner.connect(details, chained)?;
        if transport.is_some() {
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
        Ok(transport)
    }
}
