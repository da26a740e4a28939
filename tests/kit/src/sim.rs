//! The simulator: as a child process (the benchmarks'), and what tests
//! read of or do to the in-process one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use precache::sim::SimServer;

/// The ids a run reported as changed, per category, in the simulator's shape.
pub fn reported(report: &precache::report::RunReport) -> precache::sim::ChangedIds {
    let c = report
        .changes
        .as_ref()
        .expect("the run got as far as a diff");
    precache::sim::ChangedIds {
        valid_seasons: c.valid_seasons.ids(),
        tournaments_in_season: c.tournaments_in_season.ids(),
        tournament_matches: c.tournament_matches.ids(),
        individual_matches: c.individual_matches.ids(),
        unique_team_ids: c.unique_team_ids.ids(),
        data: precache::model::dataset::DatasetId::ALL
            .into_iter()
            .map(|d| (d.name().to_string(), c.of_dataset(d).ids()))
            .filter(|(_, ids)| !ids.is_empty())
            .collect(),
    }
}

/// Requests the simulator served of `call_type` so far (0 before the first).
pub fn requests(sim: &SimServer, call_type: &str) -> u64 {
    sim.request_counts().get(call_type).copied().unwrap_or(0)
}

/// Roots holding matches, every other one: they answer "no matches".
pub fn silence_half_the_roots(sim: &SimServer) -> Vec<i64> {
    let roots: Vec<i64> = sim.with_data(|d| {
        let mut roots: Vec<i64> = d
            .visible_match_ids()
            .iter()
            .filter_map(|m| d.match_root(*m))
            .collect();
        roots.sort_unstable();
        roots.dedup();
        roots
    });
    let silent: Vec<i64> = roots.iter().copied().step_by(2).collect();
    sim.set_fault(
        "tournament_matches",
        precache::sim::Fault {
            hostile_rate: 1.0,
            hostile: Some(precache::sim::Hostile::EmptyList),
            ids: Some(silent.clone()),
            ..precache::sim::Fault::default()
        },
    );
    silent
}

/// `precache sim` as a child process, so its CPU and memory are not the
/// measured process's; killed on drop.
pub struct SimProcess {
    child: Child,
    url: String,
}

impl SimProcess {
    /// The simulator's base URL (`http://` or `https://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start a [`SimProcess`]: `precache sim --scale SCALE` of this
/// build unless told otherwise; only the options set are passed, so an
/// older binary (the seam benchmark's) understands them.
pub struct SimCommand {
    binary: PathBuf,
    scale: String,
    seed: Option<u64>,
    latency_ms: Option<u64>,
    tls: Option<(PathBuf, PathBuf)>,
    gzip: bool,
}

impl SimCommand {
    pub fn new(scale: &str) -> SimCommand {
        SimCommand {
            binary: PathBuf::from(crate::bin()),
            scale: scale.to_string(),
            seed: None,
            latency_ms: None,
            tls: None,
            gzip: false,
        }
    }

    /// Another build's binary.
    pub fn binary(mut self, binary: &Path) -> SimCommand {
        self.binary = binary.to_path_buf();
        self
    }

    pub fn seed(mut self, seed: u64) -> SimCommand {
        self.seed = Some(seed);
        self
    }

    /// Every answer this much later.
    pub fn latency_ms(mut self, ms: u64) -> SimCommand {
        self.latency_ms = Some(ms);
        self
    }

    /// HTTPS with a certificate of a [`precache::sim::local::LocalCa`].
    pub fn tls(mut self, issued: &precache::sim::local::Issued) -> SimCommand {
        self.tls = Some((issued.cert_pem.clone(), issued.key_pem.clone()));
        self
    }

    /// Answers compressed with gzip for clients that accept it.
    pub fn gzip(mut self, gzip: bool) -> SimCommand {
        self.gzip = gzip;
        self
    }

    /// Starts it on a free port and waits until it listens.
    pub fn start(self) -> SimProcess {
        let port = precache::sim::local::free_port().expect("a free port");
        let mut command = Command::new(&self.binary);
        command.args(["sim", "--scale", &self.scale, "--port", &port.to_string()]);
        if let Some(seed) = self.seed {
            command.args(["--seed", &seed.to_string()]);
        }
        if let Some(ms) = self.latency_ms {
            command.args(["--latency-ms", &ms.to_string()]);
        }
        if let Some((cert, key)) = &self.tls {
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        if self.gzip {
            command.arg("--gzip");
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} sim starts: {e}", self.binary.display()));
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let sim = SimProcess {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
        };
        // A 10x data set takes a while to generate.
        let deadline = Instant::now() + Duration::from_secs(600);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the simulator did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        sim
    }
}
