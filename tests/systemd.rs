//! Running under systemd: the readiness protocol (READY=1 once listening and checked,
//! RELOADING=1 with MONOTONIC_USEC and READY=1 around a SIGHUP, STOPPING=1 on drain)
//! read from a datagram socket the test listens on; socket activation through
//! systemd's own `systemd-socket-activate`, which passes a listening socket the way
//! the service manager does; and JSON log lines.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::client::{LoginOpts, Transport, login};
use common::prosody::ProsodySpec;
use common::{dealer_bin, free_port, http_get, repo_path, wait_for};

const PW: &str = "s3cret";

fn config(
    dir: &std::path::Path,
    c2s: u16,
    http: u16,
    backend: &common::prosody::Prosody,
) -> std::path::PathBuf {
    let path = dir.join("dealer.yaml");
    std::fs::write(
        &path,
        format!(
            "domain: example.com\n\
             tls: {{ cert: \"{}\", key: \"{}\" }}\n\
             listen: {{ c2s: [{{ addr: \"127.0.0.1:{c2s}\", starttls: off }}], http: \"127.0.0.1:{http}\" }}\n\
             health: {{ interval: 1s, timeout: 500ms }}\n\
             backends:\n  node1: {{ c2s: \"{}\" }}\n",
            repo_path("conf/example.com.crt").display(),
            repo_path("conf/example.com.key").display(),
            backend.c2s
        ),
    )
    .unwrap();
    path
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(c: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(c.0.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

#[test]
fn readiness_reload_and_stop_are_notified() {
    let p = ProsodySpec::new("example.com").user("alice", PW).start();
    let dir = tempfile::tempdir().unwrap();
    let (c2s, http) = (free_port(), free_port());
    let cfg = config(dir.path(), c2s, http, &p);
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let dealer = Child(
        Command::new(dealer_bin())
            .arg("--config")
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &sock_path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.contains("READY=1"), "{ready}");
    // Ready means listening, with the backends checked: a login works at once.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], c2s));
    let r = login(&LoginOpts::new("alice@example.com", PW, addr).tls(Transport::Plain));
    assert!(r.ok, "{r:?}");
    signal(&dealer, rustix::process::Signal::HUP);
    let reloading = next();
    assert!(reloading.contains("RELOADING=1"), "{reloading}");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .expect("MONOTONIC_USEC with RELOADING=1");
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let now_usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    assert!(
        usec <= now_usec && now_usec - usec < 10_000_000,
        "{usec} vs {now_usec}"
    );
    assert!(next().contains("READY=1"));
    signal(&dealer, rustix::process::Signal::TERM);
    assert!(next().contains("STOPPING=1"));
}

#[test]
fn a_passed_socket_serves_its_listener_and_a_stray_one_stops_start_up() {
    let bin = "/usr/bin/systemd-socket-activate";
    assert!(
        std::path::Path::new(bin).exists(),
        "{bin} is missing: apt-get install systemd (.ci/test installs it)"
    );
    let p = ProsodySpec::new("example.com").user("alice", PW).start();
    let dir = tempfile::tempdir().unwrap();
    let (c2s, http) = (free_port(), free_port());
    let cfg = config(dir.path(), c2s, http, &p);
    let log = std::fs::File::create(dir.path().join("dealer.log")).unwrap();
    let _activator = Child(
        Command::new(bin)
            .arg(format!("--listen=127.0.0.1:{c2s}"))
            .arg(dealer_bin())
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // systemd-socket-activate holds the port and starts dealer on the first
    // connection; dealer must take that socket instead of binding the port.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], c2s));
    let up = wait_for(Duration::from_secs(5), || {
        std::net::TcpStream::connect(addr).ok()
    });
    assert!(up.is_some(), "the activator listens");
    let r = login(&LoginOpts::new("alice@example.com", PW, addr).tls(Transport::Plain));
    let log_text = || std::fs::read_to_string(dir.path().join("dealer.log")).unwrap_or_default();
    assert!(r.ok, "{r:?}\n{}", log_text());
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    assert_eq!(http_get(http, "/healthz").unwrap().0, 200);

    // A socket on an address no listener names stops start-up, naming it.
    let stray = free_port();
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = config(dir2.path(), free_port(), free_port(), &p);
    let out = std::process::Command::new(bin)
        .arg(format!("--listen=127.0.0.1:{stray}"))
        .arg(dealer_bin())
        .arg("--config")
        .arg(&cfg2)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = wait_for(Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", stray)).ok()
    });
    let mut out = Child(out);
    let exited = wait_for(Duration::from_secs(10), || out.0.try_wait().ok().flatten());
    assert!(
        exited.is_some(),
        "dealer stops when a passed socket matches nothing"
    );
    let mut err = String::new();
    std::io::Read::read_to_string(out.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains(&format!("127.0.0.1:{stray}"))
            && err.contains("matches no configured listener"),
        "{err}"
    );
}

#[test]
fn json_logs_carry_span_fields_as_keys() {
    let p = ProsodySpec::new("example.com").user("alice", PW).start();
    let dir = tempfile::tempdir().unwrap();
    let (c2s, http) = (free_port(), free_port());
    let cfg = config(dir.path(), c2s, http, &p);
    let log_path = dir.path().join("dealer.log");
    let _dealer = Child(
        Command::new(dealer_bin())
            .arg("--config")
            .arg(&cfg)
            .env("DEALER_LOG_FORMAT", "json")
            .env("DEALER_LOG", "debug")
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    let up = wait_for(Duration::from_secs(10), || {
        http_get(http, "/healthz").ok().filter(|(s, _)| *s == 200)
    });
    assert!(up.is_some());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], c2s));
    let r = login(&LoginOpts::new("alice@example.com", PW, addr).tls(Transport::Plain));
    assert!(r.ok, "{r:?}");
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["message"].is_string())
    );
    let in_session = lines
        .iter()
        .find(|l| l["user"] == "alice" && l["backend.name"] == "node1")
        .unwrap_or_else(|| panic!("a line with the session's span fields:\n{text}"));
    assert!(
        in_session["client.addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
    assert_eq!(in_session["listener"], "c2s");
}
