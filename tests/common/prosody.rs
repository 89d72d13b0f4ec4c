//! Real, unmodified Prosody backends for the integration tests: each instance gets a
//! private directory, its own config, data and log, free loopback ports, and runs as a
//! child process that is stopped by pid when its handle drops. Readiness means the c2s
//! port answers a stream open with `<stream:features`, not merely that it accepts TCP.

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tempfile::TempDir;

use super::{free_port, probe_features as probe, wait_for};

pub const PROSODY: &str = "/usr/bin/prosody";
pub const PROSODYCTL: &str = "/usr/bin/prosodyctl";

/// How long `start` and `restart` wait for the c2s port to offer stream features.
const READY_LIMIT: Duration = Duration::from_secs(10);
/// How long `stop` waits after SIGTERM before SIGKILL (Prosody needs < 2 s).
const TERM_GRACE: Duration = Duration::from_secs(3);
/// Port picks raced by another process: new ports this many times before giving up.
const PORT_ATTEMPTS: usize = 3;

/// What one Prosody instance hosts and allows.
#[derive(Clone, Debug)]
pub struct ProsodySpec {
    pub domain: String,
    /// `(username, password)`, registered with prosodyctl before the server starts.
    pub users: Vec<(String, String)>,
    /// Offer PLAIN without TLS (otherwise only SCRAM-SHA-1 is offered in clear).
    pub allow_plain: bool,
    /// In-band registration (XEP-0077).
    pub allow_registration: bool,
    /// The loopback DNS server (dnsmasq) Prosody's resolver forwards to. None points it
    /// at a loopback port where nothing listens, so no query can leave loopback.
    pub dns_port: Option<u16>,
    /// Modules loaded in addition to the base list.
    pub extra_modules: Vec<String>,
    /// Lua lines appended to the global section, before the VirtualHost.
    pub extra_config: String,
    /// Lua lines after the VirtualHost: components (`Component "x" "muc"`).
    pub components: String,
    /// A folder of the test's own modules (`plugin_paths`).
    pub plugin_dir: Option<PathBuf>,
    /// Log at debug level (every stanza) instead of info.
    pub debug_log: bool,
    /// A fixed s2s port (for DNS records written before the server starts).
    pub s2s_port: Option<u16>,
}

impl Default for ProsodySpec {
    fn default() -> Self {
        ProsodySpec {
            domain: "example.com".to_string(),
            users: Vec::new(),
            allow_plain: true,
            allow_registration: false,
            dns_port: None,
            extra_modules: Vec::new(),
            extra_config: String::new(),
            components: String::new(),
            plugin_dir: None,
            debug_log: false,
            s2s_port: None,
        }
    }
}

impl ProsodySpec {
    pub fn new(domain: &str) -> Self {
        ProsodySpec {
            domain: domain.to_string(),
            ..Default::default()
        }
    }

    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_string(), password.to_string()));
        self
    }

    pub fn allow_plain(mut self, allow: bool) -> Self {
        self.allow_plain = allow;
        self
    }

    pub fn allow_registration(mut self, allow: bool) -> Self {
        self.allow_registration = allow;
        self
    }

    pub fn dns_port(mut self, port: u16) -> Self {
        self.dns_port = Some(port);
        self
    }

    pub fn module(mut self, name: &str) -> Self {
        self.extra_modules.push(name.to_string());
        self
    }

    pub fn config(mut self, lua: &str) -> Self {
        self.extra_config.push_str(lua);
        self.extra_config.push('\n');
        self
    }

    /// A component section (`Component "conference.example.com" "muc"` and its
    /// settings), after the VirtualHost.
    pub fn component(mut self, lua: &str) -> Self {
        self.components.push('\n');
        self.components.push_str(lua);
        self.components.push('\n');
        self
    }

    /// Load modules from `dir` too (a test's own `mod_NAME.lua`).
    pub fn plugin_dir(mut self, dir: &Path) -> Self {
        self.plugin_dir = Some(dir.to_path_buf());
        self
    }

    pub fn s2s_port(mut self, port: u16) -> Self {
        self.s2s_port = Some(port);
        self
    }

    /// XEP-0388 SASL2 with XEP-0386 Bind2 (and XEP-0198), from Debian's
    /// prosody-modules: they work on Prosody 0.12 on a plaintext leg only.
    pub fn sasl2(self) -> Self {
        self.module("smacks").module("sasl2").module("sasl2_bind2")
    }

    pub fn debug_log(mut self) -> Self {
        self.debug_log = true;
        self
    }

    /// Start an instance with this spec.
    pub fn start(self) -> Prosody {
        Prosody::start(self)
    }
}

/// Modules for login, roster, presence, messaging, disco, ping, registration, carbons,
/// MAM, offline storage and dialback. Deliberately without `tls` (no certificate) and
/// `limits` (Debian's default rate limit of 10 kB/s would throttle every test).
const BASE_MODULES: &[&str] = &[
    "roster", "saslauth", "disco", "ping", "register", "carbons", "mam", "offline", "private",
    "time", "version", "uptime", "dialback", "posix",
];

/// A running (or deliberately stopped) Prosody child process.
pub struct Prosody {
    pub c2s: SocketAddr,
    pub s2s: SocketAddr,
    pub domain: String,
    /// The instance's private directory: config, data, log.
    pub dir: PathBuf,
    pub config: PathBuf,
    log_file: PathBuf,
    console_file: PathBuf,
    /// None while stopped or killed.
    child: Option<Child>,
    /// Owns `dir`; removed when the handle drops, after the process is gone.
    _tmp: TempDir,
}

impl Prosody {
    /// Register the users, start Prosody and wait until it offers stream features.
    /// Panics (with the log) if it does not come up within 10 s.
    pub fn start(spec: ProsodySpec) -> Prosody {
        require_binaries();
        if spec.dns_port.is_some() {
            require_unbound();
        }
        require_modules(&spec.extra_modules, spec.plugin_dir.as_deref());
        let tmp = tempfile::Builder::new()
            .prefix("prosody-")
            .tempdir()
            .expect("creating a temporary directory for Prosody");
        let dir = tmp.path().to_path_buf();
        for sub in ["data", "certs"] {
            std::fs::create_dir(dir.join(sub)).expect("creating a Prosody subdirectory");
        }
        let dns_port = spec.dns_port.unwrap_or_else(silent_udp_port);
        let mut p = Prosody {
            c2s: SocketAddr::from(([127, 0, 0, 1], 0)),
            s2s: SocketAddr::from(([127, 0, 0, 1], 0)),
            domain: spec.domain.clone(),
            config: dir.join("prosody.cfg.lua"),
            log_file: dir.join("prosody.log"),
            console_file: dir.join("console.log"),
            dir,
            child: None,
            _tmp: tmp,
        };
        let mut last_failure = String::new();
        for attempt in 0..PORT_ATTEMPTS {
            p.c2s.set_port(free_port());
            p.s2s.set_port(spec.s2s_port.unwrap_or_else(free_port));
            let config = render_config(&spec, &p, dns_port);
            std::fs::write(&p.config, config).expect("writing the Prosody config");
            if attempt == 0 {
                // Users live in data_path, which does not depend on the ports.
                for (user, password) in &spec.users {
                    p.register(user, password);
                }
            }
            match p.spawn_and_wait() {
                Ok(()) => return p,
                Err(Failure::PortTaken(why)) => {
                    p.kill();
                    last_failure = why;
                }
                Err(Failure::Other(why)) => {
                    p.kill();
                    panic!("Prosody did not come up: {why}\n{}", p.log());
                }
            }
        }
        panic!(
            "Prosody found its ports taken {PORT_ATTEMPTS} times: {last_failure}\n{}",
            p.log()
        );
    }

    /// Add an account (works whether the server runs or not).
    pub fn register(&self, user: &str, password: &str) {
        let out = Command::new(PROSODYCTL)
            .arg("--config")
            .arg(&self.config)
            .args(["register", user, &self.domain, password])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {PROSODYCTL}: {e}"));
        assert!(
            out.status.success(),
            "prosodyctl register {user} {} failed ({}):\n{}{}",
            self.domain,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `user@domain`.
    pub fn jid(&self, user: &str) -> String {
        format!("{user}@{}", self.domain)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// SIGTERM, wait up to 3 s, then SIGKILL. Does nothing when already stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            signal(&child, Signal::TERM);
            let exited = wait_for(TERM_GRACE, || child.try_wait().ok().flatten());
            if exited.is_none() {
                signal(&child, Signal::KILL);
            }
        }
        let _ = child.wait();
    }

    /// SIGKILL at once: the backend dies mid-session, without closing its streams.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            signal(&child, Signal::KILL);
        }
        let _ = child.wait();
    }

    /// Stop if running, then start again with the same config, data and ports.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(Failure::PortTaken(why) | Failure::Other(why)) = self.spawn_and_wait() {
            self.kill();
            panic!("Prosody did not come back: {why}\n{}", self.log());
        }
    }

    /// Prosody's log file, then anything it printed on stdout/stderr.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let console = std::fs::read_to_string(&self.console_file).unwrap_or_default();
        format!(
            "--- {} ---\n{log}--- console ---\n{console}",
            self.log_file.display()
        )
    }

    fn spawn_and_wait(&mut self) -> Result<(), Failure> {
        // The log file is appended to across restarts; only what follows counts.
        let log_start = std::fs::metadata(&self.log_file).map_or(0, |m| m.len() as usize);
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.console_file)
            .expect("opening the Prosody console log");
        let console2 = console
            .try_clone()
            .expect("duplicating the console log handle");
        let child = Command::new(PROSODY)
            .arg("--config")
            .arg(&self.config)
            .arg("-F")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {PROSODY}: {e}"));
        self.child = Some(child);
        self.wait_ready(log_start)
    }

    fn wait_ready(&mut self, log_start: usize) -> Result<(), Failure> {
        let c2s_up = format!("Activated service 'c2s' on [127.0.0.1]:{}", self.c2s.port());
        let s2s_up = format!("Activated service 's2s' on [127.0.0.1]:{}", self.s2s.port());
        let start = Instant::now();
        let mut last_probe = String::from("not probed yet");
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(Failure::Other(format!("prosody exited with {status}")));
            }
            let log = std::fs::read(&self.log_file).unwrap_or_default();
            let new = String::from_utf8_lossy(log.get(log_start..).unwrap_or_default());
            if new.contains("Failed to open server port") {
                return Err(Failure::PortTaken(
                    "Failed to open server port (see log)".to_string(),
                ));
            }
            // Our own log line first: a probe alone could reach someone else's server
            // that won the race for the port.
            if new.contains(&c2s_up) && new.contains(&s2s_up) {
                match probe(self.c2s, &self.domain) {
                    Ok(()) => return Ok(()),
                    Err(e) => last_probe = e,
                }
            }
            if start.elapsed() > READY_LIMIT {
                return Err(Failure::Other(format!(
                    "no stream features on {} within {READY_LIMIT:?} (last probe: {last_probe})",
                    self.c2s
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Failure {
    PortTaken(String),
    Other(String),
}

fn require_binaries() {
    for bin in [PROSODY, PROSODYCTL] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: the integration tests need a real Prosody; \
             install it with `apt-get install prosody` (.ci/test installs it)"
        );
    }
}

/// A Prosody that resolves through the test's DNS server needs libunbound's Lua
/// binding: without it Prosody ignores its `unbound` settings, reads /etc/resolv.conf,
/// and every s2s lookup of the test fails — after a timeout, far from the cause.
fn require_unbound() {
    let ok = Command::new("lua5.4")
        .args(["-e", "require 'lunbound'"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "Prosody cannot resolve through the test's DNS server: the Lua module `lunbound` \
         is missing; install it with `apt-get install --no-install-recommends lua-unbound` \
         (.ci/test installs it)"
    );
}

/// Every module a spec loads must be installed: Prosody's own (`mod_NAME.lua`, or
/// `NAME/mod_NAME.lua` for the ones in folders such as adhoc and muc), or a community
/// module from Debian's prosody-modules (`mod_NAME/mod_NAME.lua`). Prosody would only
/// log a missing one and run without it.
fn require_modules(modules: &[String], own: Option<&Path>) {
    const DIR: &str = "/usr/lib/prosody/modules";
    for m in modules {
        if own.is_some_and(|d| d.join(format!("mod_{m}.lua")).exists()) {
            continue;
        }
        let core = Path::new(DIR).join(format!("mod_{m}.lua"));
        let core_folder = Path::new(DIR).join(format!("{m}/mod_{m}.lua"));
        let community = Path::new(DIR).join(format!("mod_{m}/mod_{m}.lua"));
        assert!(
            core.exists() || core_folder.exists() || community.exists(),
            "Prosody module `{m}` is missing from {DIR}: install it with \
             `apt-get install --no-install-recommends prosody-modules` (.ci/test installs it)"
        );
    }
}

fn signal(child: &Child, sig: Signal) {
    // A pid of a spawned child is never 0 and always fits in i32 (pid_max <= 2^22).
    let pid = Pid::from_raw(child.id() as i32).expect("a child's pid is positive");
    // ESRCH only if it already exited; the caller's wait() collects it either way.
    let _ = rustix::process::kill_process(pid, sig);
}

/// A loopback UDP port where nothing listens a moment after this returns.
fn silent_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback UDP port")
}

/// A Lua string literal.
fn lua(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

fn render_config(spec: &ProsodySpec, p: &Prosody, dns_port: u16) -> String {
    let path = |name: &str| lua(&p.dir.join(name).to_string_lossy());
    let modules = BASE_MODULES
        .iter()
        .copied()
        .chain(spec.extra_modules.iter().map(String::as_str))
        .map(lua)
        .collect::<Vec<_>>()
        .join("; ");
    let level = if spec.debug_log { "debug" } else { "info" };
    let mut c = String::new();
    // write! to a String cannot fail.
    let _ = write!(
        c,
        r#"-- Written by tests/common/prosody.rs for one test instance.
run_as_root = true
pidfile = {pidfile}
data_path = {data}
certificates = {certs}
log = {{ {{ levels = {{ min = "{level}" }}, to = "file", filename = {log} }} }}

-- Every service, including any a test enables (direct TLS, HTTP), binds loopback only;
-- the direct TLS services otherwise default to all interfaces.
interfaces = {{ "127.0.0.1" }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{}}
s2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ {s2s} }}
s2s_direct_tls_ports = {{}}

c2s_require_encryption = false
allow_unencrypted_plain_auth = {plain}
authentication = "internal_hashed"
allow_registration = {registration}
s2s_require_encryption = false
s2s_secure_auth = false

-- Resolve only through the test's loopback DNS server; never /etc/resolv.conf, never
-- the root servers. "test." is a locally served zone in libunbound unless made
-- transparent.
unbound = {{ resolvconf = false; hoststxt = false; forward = {{ "127.0.0.1@{dns_port}" }}; options = {{ ["local-zone:"] = "test. transparent" }} }}

modules_enabled = {{ {modules} }}
"#,
        pidfile = path("prosody.pid"),
        data = path("data"),
        certs = path("certs"),
        log = lua(&p.log_file.to_string_lossy()),
        c2s = p.c2s.port(),
        s2s = p.s2s.port(),
        plain = spec.allow_plain,
        registration = spec.allow_registration,
    );
    if let Some(dir) = &spec.plugin_dir {
        let _ = writeln!(c, "plugin_paths = {{ {} }}", lua(&dir.to_string_lossy()));
    }
    c.push_str(&spec.extra_config);
    if !spec.extra_config.ends_with('\n') {
        c.push('\n');
    }
    let _ = writeln!(c, "\nVirtualHost {}", lua(&spec.domain));
    c.push_str(&spec.components);
    c
}
