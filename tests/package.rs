//! The Debian package and the systemd units, through the real tools: `dist/build-deb`
//! packs the test's dealer binary, `dpkg-deb` shows the control fields and the files,
//! `dpkg -x` unpacks it and the unpacked dealer checks the shipped configuration;
//! `systemd-analyze` verifies the units offline (systemd need not be PID 1) and scores
//! their sandbox; the maintainer scripts run against stub commands that record what
//! they would do to the machine.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{dealer_bin, repo_path};

/// `name` on PATH, or a failure naming the Debian package that provides it.
fn tool(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found on PATH: install the Debian package `{package}`")
        })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Run `cmd`, fail with its whole output unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = output(cmd);
    assert!(out.status.success(), "{}", describe(cmd, &out));
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The version the package must carry: Cargo's, with a pre-release's hyphen as `~`.
fn deb_version() -> String {
    env!("CARGO_PKG_VERSION").replace('-', "~")
}

/// `dist/build-deb` on the test's binary; gzip level 1 keeps packing a debug build quick.
fn build_deb(out_dir: &Path) -> PathBuf {
    tool("dpkg-deb", "dpkg");
    let script = repo_path("dist/build-deb");
    assert!(
        mode(&script) & 0o111 != 0,
        "dist/build-deb is not executable"
    );
    let out = run(Command::new(&script)
        .arg(dealer_bin())
        .arg(out_dir)
        .env("DPKG_DEB_COMPRESSOR_TYPE", "gzip")
        .env("DPKG_DEB_COMPRESSOR_LEVEL", "1"));
    let stdout = text(&out.stdout);
    let deb = PathBuf::from(stdout.trim());
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout is the .deb's path alone: {stdout}"
    );
    assert!(deb.is_file(), "{} was not built", deb.display());
    deb
}

/// The control fields of a .deb (continuation lines left out).
fn control_fields(deb: &Path) -> BTreeMap<String, String> {
    let out = run(Command::new("dpkg-deb").arg("-f").arg(deb));
    text(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn build_deb_refuses_bad_arguments() {
    let script = repo_path("dist/build-deb");
    let out = output(&mut Command::new(&script));
    assert_eq!(out.status.code(), Some(2), "no arguments: usage");
    assert!(text(&out.stderr).contains("usage"), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let out = output(
        Command::new(&script)
            .arg(dir.path().join("nothing"))
            .arg(dir.path()),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not an executable file"));
}

#[test]
fn package_builds_unpacks_and_checks_its_config() {
    tool("dpkg", "dpkg");
    let arch = text(&run(Command::new("dpkg").arg("--print-architecture")).stdout)
        .trim()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(&dir.path().join("out"));
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("dealer_{}_{arch}.deb", deb_version())
    );

    // Control fields.
    let fields = control_fields(&deb);
    assert_eq!(fields["Package"], "dealer");
    assert_eq!(fields["Version"], deb_version());
    assert_eq!(fields["Architecture"], arch);
    assert!(fields["Maintainer"].contains('@'), "{fields:?}");
    assert!(fields["Installed-Size"].parse::<u64>().unwrap() > 0);
    assert!(!fields["Description"].is_empty());
    let depends: BTreeSet<&str> = fields["Depends"]
        .split(", ")
        .map(|d| d.split(' ').next().unwrap())
        .collect();
    for want in ["libc6", "adduser", "ssl-cert", "procps"] {
        assert!(depends.contains(want), "Depends lacks {want}: {fields:?}");
    }
    let info = text(&run(Command::new("dpkg-deb").arg("-I").arg(&deb)).stdout);
    for member in [
        "control",
        "conffiles",
        "md5sums",
        "postinst",
        "prerm",
        "postrm",
    ] {
        assert!(
            info.contains(&format!(" {member} ")),
            "no {member} in:\n{info}"
        );
    }
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/dealer/dealer.yaml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        assert_eq!(mode(&path), 0o755, "{script}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(repo_path(&format!("dist/deb/{script}"))).unwrap(),
            "{script} is dist/deb/{script}"
        );
    }

    // The file list: exactly these files, owned by root, with these modes.
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)).stdout);
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() == 6, "unexpected entry (a link?): {line}");
        assert_eq!(cols[1], "root/root", "{line}");
        if cols[0].starts_with('-') {
            files.insert(cols[5].to_string(), cols[0].to_string());
        } else {
            assert_eq!(cols[0], "drwxr-xr-x", "{line}");
        }
    }
    let mut want: BTreeMap<String, &str> = [
        ("./usr/bin/dealer", "-rwxr-xr-x"),
        ("./lib/systemd/system/dealer.service", "-rw-r--r--"),
        ("./lib/systemd/system/dealer.socket", "-rw-r--r--"),
        ("./etc/dealer/dealer.yaml", "-rw-r--r--"),
        ("./usr/share/doc/dealer/copyright", "-rw-r--r--"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_string(), m))
    .collect();
    if repo_path("README.md").is_file() {
        want.insert("./usr/share/doc/dealer/README.md".into(), "-rw-r--r--");
    }
    for entry in std::fs::read_dir(repo_path("conf")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") {
            want.insert(
                format!("./usr/share/doc/dealer/examples/{name}"),
                "-rw-r--r--",
            );
        }
    }
    let files: BTreeMap<String, &str> =
        files.iter().map(|(p, m)| (p.clone(), m.as_str())).collect();
    assert_eq!(files, want, "dpkg-deb -c:\n{listing}");

    // Unpacked: the checksums hold, the files are the repository's, the binary is ours.
    tool("md5sum", "coreutils");
    let root = dir.path().join("root");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));
    run(Command::new("md5sum")
        .args(["--quiet", "--strict", "-c"])
        .arg(control.join("md5sums"))
        .current_dir(&root));
    let bin = root.join("usr/bin/dealer");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(
        std::fs::metadata(&bin).unwrap().len(),
        std::fs::metadata(dealer_bin()).unwrap().len()
    );
    for (shipped, source) in [
        ("lib/systemd/system/dealer.service", "dist/dealer.service"),
        ("lib/systemd/system/dealer.socket", "dist/dealer.socket"),
        ("etc/dealer/dealer.yaml", "dist/dealer.yaml"),
        ("usr/share/doc/dealer/copyright", "dist/deb/copyright"),
    ] {
        assert_eq!(
            std::fs::read(root.join(shipped)).unwrap(),
            std::fs::read(repo_path(source)).unwrap(),
            "{shipped} is {source}"
        );
    }
    let version = run(Command::new(&bin).arg("--version"));
    assert!(
        text(&version.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        text(&version.stdout)
    );

    // The unpacked dealer accepts the shipped configuration, without a warning.
    let config = root.join("etc/dealer/dealer.yaml");
    let check = |config: &Path| {
        let mut cmd = Command::new(&bin);
        cmd.arg("check").arg("--config").arg(config);
        let out = output(&mut cmd);
        (
            out.status.success() && !text(&out.stderr).contains("warning"),
            describe(&cmd, &out),
        )
    };
    let cert = Path::new("/etc/ssl/certs/ssl-cert-snakeoil.pem");
    let key = Path::new("/etc/ssl/private/ssl-cert-snakeoil.key");
    assert!(
        cert.is_file(),
        "{}: missing, install the Debian package `ssl-cert`",
        cert.display()
    );
    match std::fs::File::open(key) {
        Ok(_) => {
            let (ok, what) = check(&config);
            assert!(ok, "{what}");
        }
        // Outside the ssl-cert group (the package puts its dealer user in it): the
        // shipped file fails on the key, and passes with a key this user may read.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let (ok, what) = check(&config);
            assert!(!ok && what.contains("tls"), "{what}");
            let readable = std::fs::read_to_string(&config)
                .unwrap()
                .replace(
                    cert.to_str().unwrap(),
                    repo_path("conf/example.com.crt").to_str().unwrap(),
                )
                .replace(
                    key.to_str().unwrap(),
                    repo_path("conf/example.com.key").to_str().unwrap(),
                );
            let copy = dir.path().join("readable.yaml");
            std::fs::write(&copy, readable).unwrap();
            let (ok, what) = check(&copy);
            assert!(ok, "{what}");
        }
        Err(e) => panic!(
            "{}: {e}: install the Debian package `ssl-cert`",
            key.display()
        ),
    }
}

/// `Key=Value` lines of a unit file, in order, comments left out.
fn unit_settings(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';', '[']))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not a setting: {l}"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

fn values<'a>(settings: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn units_match_the_package_layout_and_the_config() {
    let service = unit_settings(&repo_path("dist/dealer.service"));
    assert_eq!(values(&service, "Type"), ["notify"]);
    assert_eq!(
        values(&service, "ExecStartPre"),
        ["/usr/bin/dealer check --config /etc/dealer/dealer.yaml"]
    );
    assert_eq!(
        values(&service, "ExecStart"),
        ["/usr/bin/dealer --config /etc/dealer/dealer.yaml"]
    );
    assert_eq!(
        values(&service, "ExecReload"),
        [
            "/usr/bin/dealer check --config /etc/dealer/dealer.yaml",
            "/bin/kill -HUP $MAINPID"
        ]
    );
    assert_eq!(values(&service, "User"), ["dealer"], "postinst creates it");
    assert_eq!(values(&service, "Group"), ["dealer"]);
    assert_eq!(values(&service, "Environment"), ["DEALER_LOG=info"]);

    // Every socket the unit passes must be one of dealer.yaml's listeners: dealer picks
    // a passed socket by its address.
    let socket = unit_settings(&repo_path("dist/dealer.socket"));
    assert_eq!(values(&socket, "Service"), ["dealer.service"]);
    assert!(
        values(&socket, "FileDescriptorName").len() <= 1,
        "FileDescriptorName= names every socket of the unit: a second line renames them all"
    );
    let passed: BTreeSet<&str> = values(&socket, "ListenStream").into_iter().collect();
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo_path("dist/dealer.yaml")).unwrap())
            .unwrap();
    let listen = &config["listen"];
    let mut configured = BTreeSet::new();
    for key in ["c2s", "c2s_tls", "s2s"] {
        for l in listen[key].as_sequence().unwrap() {
            let addr = l.as_str().or_else(|| l["addr"].as_str()).unwrap();
            configured.insert(addr);
        }
    }
    assert_eq!(
        passed, configured,
        "dealer.socket ListenStream= vs dealer.yaml listen.*"
    );
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let analyze = tool("systemd-analyze", "systemd");
    // verify wants the commands to exist: point them at the test's binary.
    let dir = tempfile::tempdir().unwrap();
    let units = dir.path().join("units");
    std::fs::create_dir(&units).unwrap();
    for unit in ["dealer.service", "dealer.socket"] {
        let body = std::fs::read_to_string(repo_path(&format!("dist/{unit}")))
            .unwrap()
            .replace("/usr/bin/dealer", dealer_bin());
        std::fs::write(units.join(unit), body).unwrap();
    }
    let verify = |files: &[PathBuf]| {
        let mut cmd = Command::new(&analyze);
        cmd.args(["verify", "--man=no", "--recursive-errors=no"])
            .args(files)
            .env("SYSTEMD_LOG_LEVEL", "info")
            .env("SYSTEMD_COLORS", "0");
        let out = output(&mut cmd);
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        (out.status.success(), said, describe(&cmd, &out))
    };
    // Unknown keys and values systemd cannot parse are warnings with exit status 0:
    // any output at all fails the test.
    let (ok, said, what) = verify(&[units.join("dealer.service"), units.join("dealer.socket")]);
    assert!(ok && said.trim().is_empty(), "{what}");

    // The same check notices a misspelt option (so silence above means something).
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    let body = std::fs::read_to_string(units.join("dealer.service"))
        .unwrap()
        .replace("ProtectSystem=strict", "ProtectSytem=strict");
    std::fs::write(bad.join("dealer.service"), body).unwrap();
    let (_, said, what) = verify(&[bad.join("dealer.service")]);
    assert!(said.contains("ProtectSytem"), "{what}");

    // The sandbox, scored offline: 1.4 today (on systemd's scale of 0 to 10, where
    // below 2 is "OK"). The threshold is in tenths.
    let mut cmd = Command::new(&analyze);
    cmd.args(["security", "--offline=true", "--no-pager", "--threshold=20"])
        .arg(units.join("dealer.service"))
        .env("SYSTEMD_COLORS", "0");
    let out = output(&mut cmd);
    assert!(
        out.status.success(),
        "exposure above 2.0: {}",
        describe(&cmd, &out)
    );
}

/// A stub for each command the maintainer scripts may run: it logs its name and
/// arguments. `dpkg-statoverride --list` answers as if an override exists when
/// STUB_LISTED is set, `getent` finds everything.
fn stubs(dir: &Path) -> PathBuf {
    let bin = dir.join("stubs");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.join("calls.log");
    for name in [
        "adduser",
        "deluser",
        "delgroup",
        "getent",
        "dpkg-statoverride",
        "systemctl",
        "deb-systemd-helper",
        "deb-systemd-invoke",
        "rm",
        "chown",
        "chmod",
        "useradd",
        "userdel",
        "groupadd",
        "groupdel",
    ] {
        let path = bin.join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\n\
                 if [ \"{name} $1\" = 'dpkg-statoverride --list' ] && [ -z \"${{STUB_LISTED:-}}\" ]; then exit 1; fi\n\
                 exit 0\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

#[test]
fn maintainer_scripts_do_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let bin = stubs(dir.path());
    let log = dir.path().join("calls.log");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let systemd = Path::new("/run/systemd/system").is_dir();
    let script = |name: &str, args: &[&str], listed: bool| -> Vec<String> {
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new("sh");
        cmd.arg(repo_path(&format!("dist/deb/{name}")))
            .args(args)
            .env("PATH", &path);
        if listed {
            cmd.env("STUB_LISTED", "1");
        }
        run(&mut cmd);
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    let reload = |mut calls: Vec<&'static str>| {
        if systemd {
            calls.push("systemctl --system daemon-reload");
        }
        calls
    };

    assert_eq!(
        script("postinst", &["configure", ""], false),
        reload(vec![
            "adduser --system --group --quiet --no-create-home --home /nonexistent dealer",
            "getent group ssl-cert",
            "adduser --quiet dealer ssl-cert",
            "dpkg-statoverride --list /etc/dealer/dealer.yaml",
            "dpkg-statoverride --update --add root dealer 0640 /etc/dealer/dealer.yaml",
        ])
    );
    // An upgrade keeps the administrator's statoverride.
    assert_eq!(
        script("postinst", &["configure", "0.0.1"], true),
        reload(vec![
            "adduser --system --group --quiet --no-create-home --home /nonexistent dealer",
            "getent group ssl-cert",
            "adduser --quiet dealer ssl-cert",
            "dpkg-statoverride --list /etc/dealer/dealer.yaml",
        ])
    );
    let stop: Vec<&str> = if systemd {
        vec!["systemctl stop dealer.socket dealer.service"]
    } else {
        vec![]
    };
    assert_eq!(script("prerm", &["remove"], false), stop);
    assert!(script("prerm", &["upgrade", "0.2.0"], false).is_empty());
    assert_eq!(script("postrm", &["remove"], false), reload(vec![]));
    assert_eq!(
        script("postrm", &["purge"], true),
        reload(vec![
            "rm -f /etc/systemd/system/multi-user.target.wants/dealer.service \
             /etc/systemd/system/sockets.target.wants/dealer.socket",
            "dpkg-statoverride --list /etc/dealer/dealer.yaml",
            "dpkg-statoverride --remove /etc/dealer/dealer.yaml",
            "deluser --system --quiet dealer",
            "delgroup --system --quiet --only-if-empty dealer",
        ])
    );
    assert!(script("postrm", &["upgrade", "0.2.0"], false).is_empty());

    // Unknown actions are refused.
    for name in ["postinst", "postrm"] {
        let out = output(
            Command::new("sh")
                .arg(repo_path(&format!("dist/deb/{name}")))
                .arg("bogus")
                .env("PATH", &path),
        );
        assert_eq!(out.status.code(), Some(1), "{name} bogus");
    }
}
