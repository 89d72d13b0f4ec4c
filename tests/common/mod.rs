//! Test harness shared by the integration tests: free loopback ports, the dealer binary
//! as a child process, and a minimal HTTP/1.1 GET for its endpoint. Every process a
//! test starts is killed by pid when its handle drops.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago, below the kernel's ephemeral range
/// (32768 and up): a port taken from that range can be handed to some process's
/// outgoing connection before the server it was picked for binds it. Each test
/// process walks its own stretch of 10000–32767 (by pid) and never hands a port out
/// twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 32_768 - LOW;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}–32767");
}

pub fn dealer_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dealer")
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Poll `f` every 20 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(x) = f() {
            return Some(x);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Open a client stream to a server and read until its features arrive (bounded: 2 s,
/// 64 KiB): the readiness check of the backend harnesses.
pub fn probe_features(addr: SocketAddr, domain: &str) -> Result<(), String> {
    let limit = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .and_then(|()| s.set_write_timeout(Some(limit)))
        .map_err(|e| format!("socket options: {e}"))?;
    write!(
        s,
        "<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )
    .map_err(|e| format!("write: {e}"))?;
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit && got.len() < 64 * 1024 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        if String::from_utf8_lossy(&got).contains("<stream:features") {
            let _ = s.write_all(b"</stream:stream>");
            return Ok(());
        }
    }
    Err(format!(
        "no <stream:features in {:?}",
        String::from_utf8_lossy(&got)
    ))
}

/// `GET path` over a fresh connection; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: dealer\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header end in {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// Split `name{a="x",b="y"}` into the name and its labels, sorted.
fn series_key(s: &str) -> (String, Vec<String>) {
    match s.split_once('{') {
        Some((name, rest)) => {
            let mut labels: Vec<String> = rest
                .trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            labels.sort();
            (name.to_owned(), labels)
        }
        None => (s.to_owned(), Vec::new()),
    }
}

/// The value of one series in Prometheus text, e.g. `dealer_x_total{kind="a",dir="b"}`
/// (labels in any order). A `domain` label the query does not give is not compared:
/// backend names are unique across public domains, so `{backend="node1"}` names one
/// series either way.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    let want = series_key(series);
    let asks_domain = want.1.iter().any(|l| l.starts_with("domain="));
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        let mut got = series_key(name);
        if !asks_domain {
            got.1.retain(|l| !l.starts_with("domain="));
        }
        (got == want).then(|| value.parse().ok())?
    })
}

/// The dealer binary running as a child, killed on drop.
pub struct DealerProcess {
    pub child: Child,
    pub http: Option<SocketAddr>,
    pub log: PathBuf,
}

impl DealerProcess {
    /// Start `dealer --config path`; waits until `/healthz` answers when `http` is given.
    pub fn start(config: &Path, http: Option<SocketAddr>, log: PathBuf) -> DealerProcess {
        DealerProcess::start_at_level(config, http, log, "debug")
    }

    /// `start` with `DEALER_LOG` set to `level`.
    pub fn start_at_level(
        config: &Path,
        http: Option<SocketAddr>,
        log: PathBuf,
        level: &str,
    ) -> DealerProcess {
        DealerProcess::start_cmd(Command::new(dealer_bin()), config, http, log, level)
    }

    /// Like `start_at_level`, with dealer's affinity set to CPU 0 (`taskset`, which
    /// execs dealer under its own pid): one worker thread, so every connection meets
    /// the same per-thread state.
    pub fn start_on_one_cpu(
        config: &Path,
        http: Option<SocketAddr>,
        log: PathBuf,
        level: &str,
    ) -> DealerProcess {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0"]).arg(dealer_bin());
        DealerProcess::start_cmd(cmd, config, http, log, level)
    }

    fn start_cmd(
        mut cmd: Command,
        config: &Path,
        http: Option<SocketAddr>,
        log: PathBuf,
        level: &str,
    ) -> DealerProcess {
        let logfile = std::fs::File::create(&log).expect("creating the dealer log file");
        let child = cmd
            .arg("--config")
            .arg(config)
            .env("DEALER_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .expect("starting the dealer binary");
        let mut p = DealerProcess { child, http, log };
        if let Some(addr) = http {
            let up = wait_for(Duration::from_secs(10), || {
                http_get(addr, "/healthz").ok().filter(|(s, _)| *s == 200)
            });
            if up.is_none() {
                let log = p.log_text();
                let _ = p.child.kill();
                panic!("dealer did not come up on {addr}; log:\n{log}");
            }
        }
        p
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).expect("child pid is positive");
        rustix::process::kill_process(pid, sig).expect("signalling dealer");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let addr = self.http.expect("this dealer has an HTTP endpoint");
        http_get(addr, path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nlog:\n{}", self.log_text()))
    }

    pub fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        metric(&body, series).unwrap_or_else(|| panic!("no {series} in:\n{body}"))
    }

    /// Wait for the process to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_for(limit, || self.child.try_wait().ok().flatten())
    }
}

impl Drop for DealerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
pub mod client;
pub mod dealer;

/// A self-signed certificate and key (PEM, P-256, valid two days) for `domain`, in
/// `dir`: its own trust anchor, naming `domain` in its subject and SAN.
pub fn certificate(dir: &Path, domain: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{domain}.crt")),
        dir.join(format!("{domain}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={domain}")])
        .args(["-addext", &format!("subjectAltName=DNS:{domain}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl is missing: apt-get install openssl (.ci/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (crt, key)
}
pub mod dns;
pub mod jabberd2;
pub mod prosody;
pub mod raw;
pub mod xmppjs;
