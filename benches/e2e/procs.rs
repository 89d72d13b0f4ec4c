//! The processes of a run and what the bench reads about them. The sink is this
//! executable again; dealer is the binary cargo built for this bench (the release
//! build under `cargo bench`), and in an A/B run also the build `--baseline` names;
//! HAProxy is Debian's. Each is killed by pid when its handle drops. CPU time comes
//! from `/proc/PID/task/*/schedstat` (ns, all threads), memory from `VmRSS` in
//! `/proc/PID/status`, open descriptors from `/proc/PID/fd`; `taskset -a -p` pins
//! every thread of a process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// Connections HAProxy and dealer are configured for: the 9,000 idle sessions and
/// room to spare, within a 20,000-descriptor hard limit (two descriptors a session).
pub const MAX_CONNECTIONS: usize = 9_700;

/// A child process, killed when dropped; its stderr goes to `log`.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).expect("creating a log file");
        let child = cmd
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panic with the log's tail if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time process `pid` has used so far, in seconds (see `machine::cpu_of`).
pub fn cpu_of(pid: u32) -> f64 {
    super::machine::cpu_of(pid)
}

/// Resident memory of process `pid` now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for process {pid}"))
}

/// Descriptors process `pid` has open now.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Pin every thread of each process to `cpus` (a taskset list such as `0` or `0-1`).
pub fn pin(pids: &[u32], cpus: &str) {
    for pid in pids {
        let ok = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "taskset -a -p -c {cpus} {pid} failed");
    }
}

/// The CPUs this process may run on now, as a taskset list (read it before pinning,
/// to undo `pin` afterwards).
pub fn cpu_list() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
        })
        .expect("Cpus_allowed_list in /proc/self/status")
}

/// The first CPU of a taskset list (`0-1` → `0`, `2,5` → `2`).
pub fn first_cpu(list: &str) -> String {
    list.split([',', '-'])
        .next()
        .unwrap_or("0")
        .trim()
        .to_owned()
}

/// Raise this process's soft descriptor limit to the hard one (children inherit it);
/// returns the new soft limit.
pub fn raise_nofile() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The sink child and the ports it listens on.
pub struct Sink {
    pub proc: Proc,
    pub ports: Vec<u16>,
    /// Closing it tells the sink to exit.
    _stdin: ChildStdin,
}

pub fn sink(dir: &Path, n: usize) -> Sink {
    let exe = std::env::current_exe().expect("the bench executable's path");
    let mut cmd = Command::new(exe);
    cmd.env(super::sink::ENV, n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut proc = Proc::spawn("sink", cmd, dir.join("sink.log"));
    let stdin = proc.child.stdin.take().expect("a piped stdin");
    let stdout = proc.child.stdout.take().expect("a piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reading the sink's ports");
    let ports: Vec<u16> = line
        .split_whitespace()
        .map(|p| p.parse().expect("a port number"))
        .collect();
    if ports.len() != n {
        proc.assert_alive();
        panic!("the sink printed {line:?}, not {n} ports");
    }
    Sink {
        proc,
        ports,
        _stdin: stdin,
    }
}

/// A dealer instance, started from `bin`, with a plaintext listener and a Direct TLS
/// listener.
pub struct Dealer {
    pub proc: Proc,
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub http: SocketAddr,
}

pub fn dealer(dir: &Path, bin: &Path, name: &str, sink_port: u16) -> Dealer {
    let (plain, tls, http) = (
        loopback(free_port()),
        loopback(free_port()),
        loopback(free_port()),
    );
    let config = dir.join(format!("{name}.yaml"));
    let yaml = format!(
        "# generated by benches/e2e.rs\n\
         domain: example.com\n\
         tls: {{ cert: \"{cert}\", key: \"{key}\" }}\n\
         listen:\n  \
           c2s: [{{ addr: \"{plain}\", starttls: \"off\" }}]\n  \
           c2s_tls: [\"{tls}\"]\n  \
           http: \"{http}\"\n\
         c2s: {{ mode: forward, mechanisms: [PLAIN] }}\n\
         domains: shared\n\
         routing: {{ strategy: hash }}\n\
         backends:\n  \
           sink: {{ c2s: \"127.0.0.1:{sink_port}\" }}\n\
         health: {{ interval: 30s }}\n\
         limits:\n  \
           max_connections: {MAX_CONNECTIONS}\n  \
           max_connections_per_source: 0\n  \
           logins_per_source_per_second: 0\n",
        cert = repo_path("conf/example.com.crt").display(),
        key = repo_path("conf/example.com.key").display(),
    );
    std::fs::write(&config, yaml).expect("writing the dealer config");
    let mut cmd = Command::new(bin);
    // Like for like: HAProxy runs without logging, so dealer logs warnings only (no
    // line per session). `DEALER_E2E_LOG=info` runs it at its default level instead,
    // to see what the line per session costs.
    let level = std::env::var("DEALER_E2E_LOG").unwrap_or_else(|_| "warn".into());
    cmd.arg("--config")
        .arg(&config)
        .env("DEALER_LOG", level)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let proc = Proc::spawn(name, cmd, dir.join(format!("{name}.log")));
    Dealer {
        proc,
        plain,
        tls,
        http,
    }
}

/// The reference relay (`e2e/pump.rs`): this executable again, forwarding every
/// connection to `sink_port` through dealer's byte relay alone.
pub fn pump(dir: &Path, name: &str, sink_port: u16) -> (Proc, SocketAddr) {
    let addr = loopback(free_port());
    let exe = std::env::current_exe().expect("the bench executable's path");
    let mut cmd = Command::new(exe);
    cmd.env(super::pump::ENV, format!("{addr},127.0.0.1:{sink_port}"))
        // Held by the child handle: the pump exits when the bench does.
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    (
        Proc::spawn(name, cmd, dir.join(format!("{name}.log"))),
        addr,
    )
}

/// An HAProxy instance in `mode tcp` with one frontend: plaintext, or `ssl crt pem`.
pub fn haproxy(
    dir: &Path,
    name: &str,
    sink_port: u16,
    splice: bool,
    pem: Option<&Path>,
) -> (Proc, SocketAddr) {
    let addr = loopback(free_port());
    let config = dir.join(format!("{name}.cfg"));
    let text = format!(
        "# generated by benches/e2e.rs\n\
         global\n    \
           maxconn {MAX_CONNECTIONS}\n    \
           maxpipes 64\n    \
           nbthread 2\n\
         defaults\n    \
           mode tcp\n    \
           maxconn {MAX_CONNECTIONS}\n    \
           timeout connect 5s\n    \
           timeout client 10m\n    \
           timeout server 10m\n\
         {splice}\
         frontend fe\n    \
           bind {addr}{ssl}\n    \
           default_backend sink\n\
         backend sink\n    \
           server sink 127.0.0.1:{sink_port}\n",
        splice = if splice {
            "    option splice-auto\n"
        } else {
            ""
        },
        ssl = pem.map_or(String::new(), |p| format!(" ssl crt {}", p.display())),
    );
    std::fs::write(&config, text).expect("writing the HAProxy config");
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db")
        .arg("-f")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    (
        Proc::spawn(name, cmd, dir.join(format!("{name}.log"))),
        addr,
    )
}

/// Whether `haproxy` can be run here.
pub fn have_haproxy() -> bool {
    Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The certificate and key of `conf/` in one PEM file, as HAProxy's `crt` wants.
pub fn pem(dir: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string(repo_path("conf/example.com.crt")).expect("the cert");
    text.push_str(&std::fs::read_to_string(repo_path("conf/example.com.key")).expect("the key"));
    let path = dir.join("example.com.pem");
    std::fs::write(&path, text).expect("writing the PEM");
    path
}

/// `GET path` from an HTTP/1.1 endpoint; the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: dealer\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    Ok(raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// The sum of every series of `name` in Prometheus text whose labels include `label`.
pub fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
