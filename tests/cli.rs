//! The operator's interface, through the real binary: `check`, `route` (arguments and
//! stdin, `--explain`), and a running process whose `/route` follows SIGHUP reloads
//! and survives a broken file.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rustix::process::Signal;

fn dealer(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(dealer_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running dealer");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("writing names");
    let out = child.wait_with_output().expect("dealer output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_examples_and_rejects_with_every_problem() {
    let good = repo_path("conf/front-forward-hash.yaml");
    let (code, out, _) = dealer(&["check", "--config", good.to_str().unwrap()], "");
    assert_eq!(code, 0);
    assert!(out.contains("ok"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "domain: example.com\nrouting: { strategy: dice }\nbackends:\n  n1: { c2s: nowhere }\n",
    )
    .unwrap();
    let (code, _, err) = dealer(&["check", "--config", bad.to_str().unwrap()], "");
    assert_eq!(code, 1);
    assert!(err.contains("routing.strategy"), "{err}");
    assert!(err.contains("backends.n1.c2s"), "{err}");
}

#[test]
fn route_from_arguments_and_stdin_matches_golden() {
    let cfg = repo_path("tests/data/golden/hash.yaml");
    let cfg = cfg.to_str().unwrap();
    let golden = std::fs::read_to_string(repo_path("tests/data/golden/golden.tsv")).unwrap();
    let rows: Vec<(&str, &str)> = golden
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut c = l.split('\t');
            (c.next().unwrap(), c.next().unwrap())
        })
        .filter(|(_, b)| *b != "-")
        .collect();
    let names: String = rows.iter().map(|(n, _)| format!("{n}\n")).collect();
    let (code, out, err) = dealer(&["route", "--config", cfg], &names);
    assert_eq!(code, 0, "{err}");
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), rows.len());
    for (line, (name, backend)) in got.iter().zip(&rows) {
        assert_eq!(*line, format!("{name}\t{backend}"));
    }

    let (code, out, _) = dealer(&["route", "--config", cfg, "--explain", "Alice", "a@b"], "");
    assert_eq!(code, 1, "an unroutable name makes the exit status 1");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("Alice\tnode5\tnormalised to `alice`; hash slot "),
        "{out}"
    );
    assert!(lines[1].starts_with("a@b\t-\t"), "{out}");
}

#[test]
fn route_explains_range_rows() {
    let cfg = repo_path("conf/front-redirect-ranges.yaml");
    let (code, out, _) = dealer(
        &[
            "route",
            "--config",
            cfg.to_str().unwrap(),
            "--explain",
            "Gus",
            "42",
        ],
        "",
    );
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "Gus\tnode1\tnormalised to `gus`; row `a`-`g`\n42\tnode1\toutside every row: default\n"
    );
}

fn ranges_config(http: u16, split: &str) -> String {
    format!(
        r#"domain: example.com
listen: {{ http: "127.0.0.1:{http}" }}
routing:
  strategy: ranges
  ranges:
    - {{ from: a, to: {split}, backend: node1 }}
  default: node2
backends:
  node1: {{ c2s: "127.0.0.1:15222" }}
  node2: {{ c2s: "127.0.0.1:25222" }}
"#
    )
}

#[test]
fn sighup_reloads_and_a_broken_file_keeps_the_running_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dealer.yaml");
    let port = free_port();
    std::fs::write(&path, ranges_config(port, "g")).unwrap();
    let mut d = DealerProcess::start(
        &path,
        Some(format!("127.0.0.1:{port}").parse().unwrap()),
        dir.path().join("dealer.log"),
    );

    assert_eq!(
        d.get("/route?name=mallory"),
        (200, "mallory\tnode2\n".into())
    );
    assert_eq!(d.get("/route?name=Gus"), (200, "Gus\tnode1\n".into()));
    // Percent-encoded UTF-8 names.
    assert_eq!(
        d.get("/route?name=%C3%84rger"),
        (200, "Ärger\tnode2\n".into())
    );
    assert_eq!(d.get("/route?name=a%40b").0, 422);
    assert_eq!(d.get("/route").0, 400);
    assert_eq!(d.get("/healthz").0, 200);
    assert_eq!(d.get("/nope").0, 404);
    assert_eq!(d.metric("dealer_config_generation"), 1.0);
    assert_eq!(d.metric("dealer_config_reloads_total{result=\"ok\"}"), 0.0);
    assert_eq!(
        d.metric("dealer_config_reloads_total{result=\"error\"}"),
        0.0
    );

    // A changed table: m now belongs to node1.
    std::fs::write(&path, ranges_config(port, "m")).unwrap();
    d.signal(Signal::HUP);
    let reloaded = wait_for(Duration::from_secs(10), || {
        (d.metric("dealer_config_generation") == 2.0).then_some(())
    });
    assert!(reloaded.is_some(), "no reload; log:\n{}", d.log_text());
    assert_eq!(
        d.get("/route?name=mallory"),
        (200, "mallory\tnode1\n".into())
    );
    assert_eq!(d.metric("dealer_config_reloads_total{result=\"ok\"}"), 1.0);

    // A broken file: the running table stays, the error counter rises.
    std::fs::write(&path, "domain: example.com\nrouting: { strategy: ranges, ranges: [{from: a, to: z, backend: ghost}] }\n").unwrap();
    d.signal(Signal::HUP);
    let failed = wait_for(Duration::from_secs(10), || {
        (d.metric("dealer_config_reloads_total{result=\"error\"}") == 1.0).then_some(())
    });
    assert!(failed.is_some(), "no failed reload; log:\n{}", d.log_text());
    assert_eq!(d.metric("dealer_config_generation"), 2.0);
    assert_eq!(
        d.get("/route?name=mallory"),
        (200, "mallory\tnode1\n".into())
    );
    assert!(d.log_text().contains("ghost"), "the log says why");

    // SIGTERM ends the process cleanly.
    d.signal(Signal::TERM);
    let status = d
        .wait_exit(Duration::from_secs(10))
        .expect("dealer exits on SIGTERM");
    assert!(status.success(), "{status:?}");
}
