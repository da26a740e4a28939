//! The Debian package (`deploy/build-deb`): built from this build's
//! binary, unpacked into a clean root with `dpkg --root`, its files and
//! conffile checked, the installed unit verified by `systemd-analyze
//! verify` against that root, and the maintainer script that makes the
//! system user run against stand-ins for `adduser` and `systemctl`.

use kit::*;
use std::path::Path;
use std::process::Command;

fn run(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A root with an empty dpkg database, and what `systemd-analyze verify`
/// needs of a Debian system with systemd (its targets, `/bin/kill`).
fn clean_root(root: &Path) {
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(file), "").unwrap();
    }
}

fn systemd_basics(root: &Path) {
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for dir in ["/lib/systemd/system", "/usr/lib/systemd/system"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(".target") && entry.path().is_file() {
                let _ = std::fs::copy(entry.path(), units.join(&name));
            }
        }
    }
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/kill", root.join("bin/kill")).unwrap();
}

#[test]
fn the_package_installs_into_a_clean_root_with_everything_an_operator_needs() {
    for tool in ["dpkg-deb", "dpkg", "systemd-analyze"] {
        if !on_path(tool) {
            tool_missing(tool);
            return;
        }
    }
    let h = Harness::new("deb").build();
    let out = run(Command::new("bash")
        .arg(repo_path("deploy/build-deb"))
        .args(["--binary", bin()])
        .arg(h.dir().join("out")));
    let package = out.trim();
    assert!(package.ends_with(".deb"), "{out}");
    let conffiles = run(Command::new("dpkg-deb").args(["-I", package, "conffiles"]));
    assert_eq!(conffiles.trim(), "/etc/precache/config.toml");
    let control = run(Command::new("dpkg-deb").args(["-f", package]));
    assert!(control.contains("Package: precache"), "{control}");
    assert!(control.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))));

    let root = h.dir().join("root");
    clean_root(&root);
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-not-root",
            "--force-depends",
            "--log=/dev/null",
            "--unpack",
        ])
        .arg(package));
    let status = run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-not-root", "-s", "precache"]));
    assert!(status.contains("Status: install ok unpacked"), "{status}");

    assert_the_installed_files(&root);

    // The installed unit, verified against the root (its binary is the
    // package's).
    systemd_basics(&root);
    let verify = Command::new("systemd-analyze")
        .arg(format!("--root={}", root.display()))
        .args(["verify", "/lib/systemd/system/precache.service"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");

    postinst_makes_the_user_once(&h, &root);
    for script in ["prerm", "postrm"] {
        run(Command::new("sh")
            .arg("-n")
            .arg(root.join(format!("var/lib/dpkg/info/precache.{script}"))));
    }
}

/// The binary, the unit, the conffile, completions, rules, dashboard and
/// man page, where an operator looks for them.
fn assert_the_installed_files(root: &std::path::Path) {
    let binary = root.join("usr/bin/precache");
    let version = run(Command::new(&binary).arg("--version"));
    assert!(version.contains("(rev "), "{version}");
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/precache.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/precache --config /etc/precache/config.toml run"));
    assert!(unit.contains("User=precache") && !unit.contains("DynamicUser"));
    // Unpacked, not configured: dpkg keeps a conffile aside until then.
    let config = std::fs::read_to_string(root.join("etc/precache/config.toml.dpkg-new")).unwrap();
    assert_eq!(
        config,
        std::fs::read_to_string(repo_path("deploy/config.toml")).unwrap()
    );
    for (file, holds) in [
        (
            "usr/share/bash-completion/completions/precache",
            "_precache()",
        ),
        (
            "usr/share/zsh/vendor-completions/_precache",
            "#compdef precache",
        ),
        (
            "usr/share/fish/vendor_completions.d/precache.fish",
            "complete -c precache",
        ),
        (
            "usr/share/precache/prometheus/precache.rules.yml",
            "PrecacheRedisFailover",
        ),
        ("usr/share/precache/grafana/precache.json", "precache"),
        ("usr/share/doc/precache/README.md", "# precache"),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        assert!(text.contains(holds), "{file} holds {holds:?}");
    }
    let man = run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {}",
        root.join("usr/share/man/man1/precache.1.gz").display()
    )));
    assert!(
        man.contains(".TH precache 1") && man.contains("check\\-config"),
        "{man:.300}"
    );
}

/// postinst makes the system user (adduser and systemctl stand-ins log
/// their arguments), and is quiet when it exists.
fn postinst_makes_the_user_once(h: &Harness, root: &std::path::Path) {
    let bin_dir = h.dir().join("stand-ins");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let log = h.dir().join("calls.log");
    for (tool, body) in [
        (
            "adduser",
            format!("echo adduser \"$@\" >> {}", log.display()),
        ),
        (
            "systemctl",
            format!("echo systemctl \"$@\" >> {}", log.display()),
        ),
        ("getent", "exit ${GETENT_EXIT:-2}".to_string()),
    ] {
        let path = bin_dir.join(tool);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        run(Command::new("chmod").arg("+x").arg(&path));
    }
    let postinst = root.join("var/lib/dpkg/info/precache.postinst");
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    run(Command::new("sh")
        .arg(&postinst)
        .arg("configure")
        .env("PATH", &path));
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(
        calls.contains("adduser --system --group --home /var/lib/precache"),
        "{calls}"
    );
    std::fs::remove_file(&log).unwrap();
    run(Command::new("sh")
        .arg(&postinst)
        .arg("configure")
        .env("PATH", &path)
        .env("GETENT_EXIT", "0"));
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!calls.contains("adduser"), "the user exists: {calls}");
}
