//! The upstream as production has it (DESIGN.md section 2): HTTPS with a
//! certificate from a CA the host trusts (the test makes one with
//! `openssl`), a real forward proxy in between (`tinyproxy`), answers
//! compressed with gzip.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kit::*;
use precache::config::{Config, ProxyConfig, Secret};
use precache::daemon::Services;
use precache::report::RunStatus;
use precache::sim::local::LocalCa;
use precache::sim::{ChurnSpec, Scale, SimOptions, TlsIdentity};

/// A simulator speaking HTTPS with a certificate from a fresh CA, and a
/// private Redis.
struct HttpsSim {
    harness: Harness,
    ca: LocalCa,
}

impl HttpsSim {
    /// A config for the simulator and Redis that trusts the CA through
    /// `upstream.ca_file`, asking every root every run.
    fn trusting_config(&self) -> Config {
        let mut config = self.harness.config();
        config.upstream.ca_file = Some(self.ca.ca_pem.clone());
        config.sync.adaptive = false;
        config
    }
}

fn https_sim(seed: u64, gzip: bool) -> Option<HttpsSim> {
    if !on_path("openssl") {
        tool_missing("openssl");
        return None;
    }
    let builder = Harness::new("https").redis();
    let ca = LocalCa::create(&builder.dir().join("ca"), "precache test CA").unwrap();
    let issued = ca.issue_server("sim").unwrap();
    let harness = builder
        .sim_with(SimOptions {
            scale: Scale::Small,
            seed,
            tls: Some(TlsIdentity::from_files(&issued.cert_pem, &issued.key_pem).unwrap()),
            gzip,
            ..SimOptions::default()
        })
        .build();
    let url = harness.sim().url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    Some(HttpsSim { harness, ca })
}

#[test]
fn https_is_trusted_through_upstream_ca_file_or_the_host_store_and_nothing_else() {
    let Some(https) = https_sim(61, false) else {
        return;
    };
    let (sim, redis) = (https.harness.sim(), https.harness.redis());
    // Every root every run, so a run's connections are a full run's.
    let mut config = https.trusting_config();

    // The CA is nobody's: the run fails, naming the certificate problem
    // and what to do about it, and writes nothing.
    config.upstream.ca_file = None;
    let mut untrusting = Services::start(&config).unwrap();
    let refused = untrusting.runner.run_once(false);
    untrusting.shutdown();
    assert_eq!(refused.summary.status, RunStatus::Failed);
    let error = refused.summary.error.clone().unwrap();
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(error.contains("upstream.ca_file"), "{error}");
    assert!(error.contains(&sim.url()), "names the target: {error}");
    assert!(redis.keys("tournament*").is_empty());

    // Named in upstream.ca_file: a full run, exact churn, over keep-alive.
    config.upstream.ca_file = Some(https.ca.ca_pem.clone());
    let refused_connections = sim.connections();
    let mut services = Services::start(&config).unwrap();
    let cold = services.runner.run_once(false);
    assert_status(&cold, RunStatus::Success);
    assert_eq!(
        redis.data("tournament_matches").len(),
        sim.stats().matches,
        "every match, over HTTPS"
    );
    let opened_before = sim.connections();
    let expected = sim.churn(&ChurnSpec {
        matches_modified: 3,
        matches_added: 1,
        tournaments_renamed: 1,
        ..ChurnSpec::default()
    });
    let churn = services.runner.run_once(false);
    assert_eq!(reported(&churn), expected);
    let opened = sim.connections() - opened_before;
    let calls = churn.calls.len();
    assert!(
        opened <= config.upstream.max_concurrency as u64,
        "{opened} connections opened for {calls} calls: keep-alive over TLS"
    );
    assert_eq!(
        services.runner.upstream().counters().connections_opened(),
        sim.connections() - refused_connections,
        "the client counts what the server accepted"
    );
    services.shutdown();

    // Not named in the config, but in the host's store (SSL_CERT_FILE,
    // as an operator's installed CA bundle would be): trusted too.
    let cfg = https.harness.write_config_in("cli", &[]);
    let out = cli(&cfg)
        .args(["once", "--no-warm"])
        .env("SSL_CERT_FILE", &https.ca.ca_pem)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// A `tinyproxy` on a free loopback port, logging every connection it
/// makes; killed on drop.
struct Tinyproxy {
    port: u16,
    log: PathBuf,
    child: std::process::Child,
}

impl Tinyproxy {
    /// Started with its config and log in `dir`.
    fn start(dir: &Path) -> Option<Tinyproxy> {
        if !on_path("tinyproxy") {
            tool_missing("tinyproxy");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let port = precache::sim::local::free_port().unwrap();
        let log = dir.join("tinyproxy.log");
        let conf = dir.join("tinyproxy.conf");
        // No ConnectPort line: CONNECT to any port (the simulator's).
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 100\nAllow 127.0.0.1\n",
                log.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tinyproxy starts");
        wait_for("tinyproxy to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(Tinyproxy { port, log, child })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `CONNECT host:port` requests the proxy logged so far.
    fn tunnels_to(&self, target: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("CONNECT {target} ")))
            .count()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `precache --config CONFIG ARGS...` in the environment `env`: its exit
/// code, stdout and stderr.
fn cli_in(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = cli(config)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_full_run_through_a_real_forward_proxy() {
    let Some(https) = https_sim(62, false) else {
        return;
    };
    let Some(proxy) = Tinyproxy::start(&https.harness.dir().join("tinyproxy")) else {
        return;
    };
    let (sim, redis) = (https.harness.sim(), https.harness.redis());
    let target = sim.addr().to_string();
    let mut config = https.trusting_config();

    // upstream.proxy: every connection is a tunnel the proxy made.
    config.upstream.proxy = Some(ProxyConfig {
        url: Secret::new(proxy.url()),
        source: "upstream.proxy".into(),
        no_proxy: Vec::new(),
    });
    let mut services = Services::start(&config).unwrap();
    let cold = services.runner.run_once(false);
    services.shutdown();
    assert_status(&cold, RunStatus::Success);
    assert_eq!(redis.data("tournament_matches").len(), sim.stats().matches);
    let tunnels = proxy.tunnels_to(&target);
    assert!(tunnels >= 1, "the proxy's log shows no CONNECT {target}");
    assert_eq!(
        tunnels as u64,
        sim.connections(),
        "every connection the simulator accepted came through the proxy"
    );

    // HTTPS_PROXY, as an operator's environment sets it: the same, and
    // check-config shows it without its credentials.
    let ca = https.ca.ca_pem.to_str().unwrap();
    let cfg = https
        .harness
        .write_config_in("cli", &[("upstream", "ca_file", quoted(ca))]);
    let with_credentials = format!("http://precache:pw-xyz@127.0.0.1:{}", proxy.port);
    let (code, shown, _) = cli_in(
        &cfg,
        &["check-config"],
        &[("HTTPS_PROXY", &with_credentials)],
    );
    assert_eq!(code, Some(0));
    assert!(
        shown.contains(&format!(
            "proxy = \"http://<redacted>@127.0.0.1:{}\"",
            proxy.port
        )),
        "{shown}"
    );
    assert!(!shown.contains("pw-xyz"), "{shown}");
    let before = proxy.tunnels_to(&target);
    let (code, _, stderr) = cli_in(
        &cfg,
        &["once", "--no-warm"],
        &[("HTTPS_PROXY", &proxy.url())],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        proxy.tunnels_to(&target) > before,
        "HTTPS_PROXY was not used"
    );

    // NO_PROXY names the API's host: straight there, the proxy sees nothing.
    let before = proxy.tunnels_to(&target);
    let (code, _, stderr) = cli_in(
        &cfg,
        &["once", "--no-warm"],
        &[("HTTPS_PROXY", &proxy.url()), ("NO_PROXY", "127.0.0.1")],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(proxy.tunnels_to(&target), before, "NO_PROXY was ignored");
}

#[test]
fn gzip_compressed_answers_parse() {
    let Some(https) = https_sim(63, true) else {
        return;
    };
    let (sim, redis) = (https.harness.sim(), https.harness.redis());
    let mut config = https.trusting_config();
    config.warm.enabled = true;
    let mut services = Services::start(&config).unwrap();
    let cold = services.runner.run_once(false);
    assert_status(&cold, RunStatus::Success);
    let stats = sim.stats();
    assert_eq!(redis.data("tournament_matches").len(), stats.matches);
    assert_eq!(redis.data("valid_seasons").len(), stats.valid_seasons);
    let gzipped = sim.gzipped();
    assert!(
        gzipped as usize >= cold.calls.len() / 2,
        "only {gzipped} of {} answers came compressed",
        cold.calls.len()
    );
    let expected = sim.churn(&ChurnSpec {
        matches_modified: 2,
        in_window_days: Some(7),
        ..ChurnSpec::default()
    });
    let churn = services.runner.run_once(false);
    assert_eq!(reported(&churn), expected);
    // The warm-up stores the body as the API meant it, not the gzip bytes.
    services.start_warmer(true).unwrap();
    let counts = services
        .warmer
        .as_ref()
        .unwrap()
        .wait_for(&churn.warm_enqueued, Duration::from_secs(30));
    assert_eq!(counts.done, churn.warm_enqueued.len(), "{counts:?}");
    services.shutdown();
    let key = format!("GET:{}", churn.warm_enqueued[0]);
    let entry: serde_json::Value = serde_json::from_str(&redis.get(&key).unwrap()).unwrap();
    let content: serde_json::Value =
        serde_json::from_str(entry["content"].as_str().unwrap()).expect("JSON content");
    assert!(content.is_object() || content.is_array());
    assert!(entry["headers"].get("content-encoding").is_none());
}
