//! Real, unmodified jabberd2 2.7 backends for the integration tests, the second server
//! kind after Prosody. Each instance is three child processes (router, then sm and c2s;
//! s2s is not started) with configs written into a private directory: every path the
//! stock configs point into /etc or /var (pid files, logs, the sqlite database, the
//! router's user table) points into that directory instead, and every socket is on
//! 127.0.0.1 with free ports, so several instances run side by side. Users are rows in
//! the instance's own sqlite database, made from Debian's schema. Readiness means the
//! c2s port answers a stream open with `<stream:features`; the processes are stopped
//! by pid when the handle drops.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use tempfile::TempDir;

use super::{free_port, probe_features as probe, wait_for};

pub const ROUTER: &str = "/usr/sbin/jabberd2-router";
pub const SM: &str = "/usr/sbin/jabberd2-sm";
pub const C2S: &str = "/usr/sbin/jabberd2-c2s";
/// Debian's sqlite schema for authreg and sm storage (gzip-compressed).
pub const SCHEMA: &str = "/usr/share/doc/jabberd2/db-setup.sqlite.gz";
/// Debian's Python, used for its gzip and sqlite3 modules (no sqlite crate in the
/// dev-dependencies, and the sqlite3 CLI is not part of jabberd2's dependencies).
const PYTHON: &str = "/usr/bin/python3";

/// How long `start` waits for the c2s port to offer stream features.
const READY_LIMIT: Duration = Duration::from_secs(10);
/// How long each step of `stop` waits after SIGTERM before SIGKILL (jabberd2 needs
/// a few ms).
const TERM_GRACE: Duration = Duration::from_secs(3);
/// Port picks raced by another process: new ports this many times before giving up.
const PORT_ATTEMPTS: usize = 3;

/// What one jabberd2 instance hosts.
#[derive(Clone, Debug)]
pub struct Jabberd2Spec {
    pub domain: String,
    /// `(username, password)`, inserted into the database before the server starts.
    pub users: Vec<(String, String)>,
}

impl Jabberd2Spec {
    pub fn new(domain: &str) -> Self {
        Jabberd2Spec {
            domain: domain.to_string(),
            users: Vec::new(),
        }
    }

    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_string(), password.to_string()));
        self
    }

    /// Start an instance with this spec.
    pub fn start(self) -> Jabberd2 {
        Jabberd2::start(self)
    }
}

/// The three components, in start order (the router first: sm and c2s connect to it).
const COMPONENTS: [&str; 3] = ["router", "sm", "c2s"];

/// A running (or deliberately stopped) jabberd2 instance.
pub struct Jabberd2 {
    /// Plaintext c2s (no STARTTLS: no certificate is configured).
    pub c2s: SocketAddr,
    /// The router's component port (sm and c2s connect to it).
    pub router: SocketAddr,
    pub domain: String,
    /// The instance's private directory: configs, database, pid files, logs.
    pub dir: PathBuf,
    pub db: PathBuf,
    /// The running components by name; empty while stopped or killed.
    children: Vec<(&'static str, Child)>,
    /// Owns `dir`; removed when the handle drops, after the processes are gone.
    _tmp: TempDir,
}

impl Jabberd2 {
    /// Create the database with the users, start router, sm and c2s, and wait until
    /// c2s offers stream features. Panics (with the logs) if that takes over 10 s.
    pub fn start(spec: Jabberd2Spec) -> Jabberd2 {
        require_binaries();
        let tmp = tempfile::Builder::new()
            .prefix("jabberd2-")
            .tempdir()
            .expect("creating a temporary directory for jabberd2");
        let dir = tmp.path().to_path_buf();
        let mut j = Jabberd2 {
            c2s: SocketAddr::from(([127, 0, 0, 1], 0)),
            router: SocketAddr::from(([127, 0, 0, 1], 0)),
            domain: spec.domain.clone(),
            db: dir.join("jabberd2.db"),
            dir,
            children: Vec::new(),
            _tmp: tmp,
        };
        j.sqlite(true, &spec.users);
        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            j.router.set_port(free_port());
            // Two picks in a row may return the same port; a few more are enough.
            for _ in 0..10 {
                j.c2s.set_port(free_port());
                if j.c2s != j.router {
                    break;
                }
            }
            j.write_configs();
            match j.spawn_and_wait() {
                Ok(()) => return j,
                Err(Failure::PortTaken(why)) => {
                    last_failure = format!("{why}\n{}", j.log());
                    j.kill();
                }
                Err(Failure::Other(why)) => {
                    j.kill();
                    panic!("jabberd2 did not come up: {why}\n{}", j.log());
                }
            }
        }
        panic!("jabberd2 found its ports taken {PORT_ATTEMPTS} times: {last_failure}");
    }

    /// Add an account. c2s reads authreg on every login, so this works while the
    /// server runs.
    pub fn add_user(&self, user: &str, password: &str) {
        self.sqlite(false, &[(user.to_string(), password.to_string())]);
    }

    /// `user@domain`.
    pub fn jid(&self, user: &str) -> String {
        format!("{user}@{}", self.domain)
    }

    /// This backend's line under `backends:` in a dealer config: c2s and redirect are
    /// both the plaintext c2s address (no s2s: jabberd2's s2s is not started).
    pub fn backend_yaml(&self, name: &str, extra: &str) -> String {
        format!(
            "  {name}: {{ c2s: \"{c2s}\", redirect: \"{c2s}\"{}{extra} }}\n",
            if extra.is_empty() { "" } else { ", " },
            c2s = self.c2s,
        )
    }

    /// The pids of the running components, by name.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.children.iter().map(|(n, c)| (*n, c.id())).collect()
    }

    /// True while all three components run.
    pub fn is_running(&mut self) -> bool {
        self.children.len() == COMPONENTS.len()
            && self
                .children
                .iter_mut()
                .all(|(_, c)| matches!(c.try_wait(), Ok(None)))
    }

    /// Every TCP address a component of this instance listens on (from /proc).
    pub fn listening(&self) -> Vec<SocketAddr> {
        let by_inode = tcp_listeners();
        let mut out = Vec::new();
        for (_, pid) in self.pids() {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(link) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let link = link.to_string_lossy();
                let inode = link
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|s| s.parse::<u64>().ok());
                if let Some(addr) = inode.and_then(|i| by_inode.get(&i)) {
                    out.push(*addr);
                }
            }
        }
        out
    }

    /// SIGTERM to c2s and sm, then to the router once they are gone, each step
    /// waiting up to 3 s before SIGKILL. Does nothing when already stopped.
    pub fn stop(&mut self) {
        // The router, signalled while its components are still disconnecting, has
        // been seen to take a whole second to exit; after them it takes a few ms.
        let (mut router, mut components): (Vec<_>, Vec<_>) = std::mem::take(&mut self.children)
            .into_iter()
            .partition(|(name, _)| *name == "router");
        terminate(&mut components);
        terminate(&mut router);
    }

    /// SIGKILL at once: the backend dies mid-session, without closing its streams.
    pub fn kill(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.children) {
            if let Ok(None) = child.try_wait() {
                signal(&child, Signal::KILL);
            }
            let _ = child.wait();
        }
    }

    /// Each component's log file, then anything it printed on stdout/stderr.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for name in COMPONENTS {
            for file in [log_file(name), console_file(name)] {
                let path = self.dir.join(file);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                out.push_str(&format!("--- {} ---\n{text}", path.display()));
            }
        }
        out
    }

    /// Run the Python helper: optionally create the schema, then insert `users` into
    /// both tables a login needs: `authreg` (c2s checks the password there) and
    /// `active` (without it sm never starts the session and the login hangs).
    fn sqlite(&self, create: bool, users: &[(String, String)]) {
        const SCRIPT: &str = r#"
import gzip, json, sqlite3, sys, time
db_path, schema, domain = sys.argv[1:4]
users = json.load(sys.stdin)
db = sqlite3.connect(db_path)
if schema:
    with gzip.open(schema, "rt") as f:
        db.executescript(f.read())
for user, password in users:
    db.execute('INSERT INTO "authreg" ("username", "realm", "password") VALUES (?, ?, ?)',
               (user, domain, password))
    db.execute('INSERT INTO "active" ("collection-owner", "time") VALUES (?, ?)',
               (user + "@" + domain, int(time.time())))
db.commit()
db.close()
"#;
        let mut child = Command::new(PYTHON)
            .arg("-c")
            .arg(SCRIPT)
            .arg(&self.db)
            .arg(if create { SCHEMA } else { "" })
            .arg(&self.domain)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {PYTHON} for the jabberd2 database: {e}"));
        let users = serde_json::to_vec(users).expect("a list of string pairs serialises");
        let mut stdin = child.stdin.take().expect("stdin was piped");
        // A write error means Python died already; its stderr below says why.
        let _ = stdin.write_all(&users);
        drop(stdin);
        let out = child
            .wait_with_output()
            .expect("waiting for the database helper");
        assert!(
            out.status.success(),
            "creating the jabberd2 database {} failed ({}):\n{}{}",
            self.db.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn write_configs(&self) {
        // The router's component secret: distinct per instance, so a component of one
        // instance could never join another's router even if it found the port.
        let secret = format!("secret-{}-{}", std::process::id(), self.router.port());
        let files = [
            ("router-users.xml", router_users(&secret)),
            ("router.xml", self.router_xml()),
            ("sm.xml", self.sm_xml(&secret)),
            ("c2s.xml", self.c2s_xml(&secret)),
        ];
        for (name, text) in files {
            std::fs::write(self.dir.join(name), text).expect("writing a jabberd2 config");
        }
    }

    fn path(&self, name: &str) -> String {
        xml_escape(&self.dir.join(name).to_string_lossy())
    }

    fn log_xml(&self, name: &str) -> String {
        format!(
            "<log type='file'><file>{}</file></log>",
            self.path(&log_file(name))
        )
    }

    fn router_connection(&self, secret: &str) -> String {
        // retry: sm and c2s start only once the router listens, so a retry at start
        // is rare; keep it short and bounded. <lost>0</lost>: a component whose
        // router went away shuts down ("shutting down" in its log) instead of
        // lingering and reconnecting.
        format!(
            "<router><ip>127.0.0.1</ip><port>{}</port><user>jabberd</user><pass>{}</pass>\
             <retry><init>3</init><lost>0</lost><sleep>1</sleep></retry></router>",
            self.router.port(),
            xml_escape(secret)
        )
    }

    fn router_xml(&self) -> String {
        // No <secret> (XEP-0114 components off), no <pemfile> (no TLS to components),
        // no <filter> (the stock one lives in /etc and has no rules anyway).
        format!(
            "<!-- Written by tests/common/jabberd2.rs for one test instance. -->\n\
             <router>\n\
             <id>router-{port}</id>\n\
             <pidfile>{pid}</pidfile>\n\
             {log}\n\
             <local><ip>127.0.0.1</ip><port>{port}</port><users>{users}</users></local>\n\
             <check><interval>60</interval><keepalive>0</keepalive></check>\n\
             <io><max_fds>256</max_fds><limits><bytes>0</bytes><connects>0</connects></limits>\n\
             {access}</io>\n\
             <aliases/>\n\
             <aci><acl type='all'><user>jabberd</user></acl></aci>\n\
             </router>\n",
            port = self.router.port(),
            pid = self.path("router.pid"),
            log = self.log_xml("router"),
            users = self.path("router-users.xml"),
            access = LOOPBACK_ONLY,
        )
    }

    fn sm_xml(&self, secret: &str) -> String {
        let modules = modules_dir();
        format!(
            "<!-- Written by tests/common/jabberd2.rs for one test instance. -->\n\
             <sm>\n\
             <id>sm</id>\n\
             <pidfile>{pid}</pidfile>\n\
             {router}\n\
             {log}\n\
             <local><id>{domain}</id></local>\n\
             <storage><path>{modules}</path><driver>sqlite</driver>\n\
             <sqlite><dbname>{db}</dbname><busy-timeout>2000</busy-timeout></sqlite></storage>\n\
             <aci><acl type='all'><jid>admin@{domain}</jid></acl></aci>\n\
             <modules><path>{modules}</path>\n{chains}</modules>\n\
             <discovery><identity><category>server</category><type>im</type>\
             <name>Jabber IM server</name></identity><agents/></discovery>\n\
             <user><template><active-cache-ttl>60</active-cache-ttl></template></user>\n\
             </sm>\n",
            pid = self.path("sm.pid"),
            router = self.router_connection(secret),
            log = self.log_xml("sm"),
            domain = xml_escape(&self.domain),
            modules = xml_escape(&modules),
            db = xml_escape(&self.db.to_string_lossy()),
            chains = sm_chains(),
        )
    }

    fn c2s_xml(&self, secret: &str) -> String {
        // The <id> has no pemfile (so no STARTTLS), no require-starttls and no
        // register-enable; no <ssl-port>, <websocket/>, <stats/> or <pbx/>: the one
        // listening socket is the plaintext c2s port on 127.0.0.1. The mechanisms
        // are the stock ones.
        format!(
            "<!-- Written by tests/common/jabberd2.rs for one test instance. -->\n\
             <c2s>\n\
             <id>c2s</id>\n\
             <pidfile>{pid}</pidfile>\n\
             {router}\n\
             {log}\n\
             <local><id>{domain}</id><ip>127.0.0.1</ip><port>{port}</port></local>\n\
             <io><max_fds>256</max_fds>\n\
             <limits><bytes>0</bytes><stanzas>0</stanzas><connects>0</connects>\
             <stanzasize>65535</stanzasize></limits>\n\
             {access}\n\
             <check><interval>0</interval><idle>0</idle><keepalive>0</keepalive></check></io>\n\
             <authreg><path>{modules}</path><module>sqlite</module>\n\
             <mechanisms><traditional><plain/><digest/></traditional>\
             <sasl><plain/><digest-md5/></sasl></mechanisms>\n\
             <ssl-mechanisms><traditional><plain/></traditional>\
             <sasl><plain/><external/></sasl></ssl-mechanisms>\n\
             <sqlite><dbname>{db}</dbname><busy-timeout>2000</busy-timeout>\
             <password_type><plaintext/></password_type></sqlite>\n\
             </authreg>\n\
             </c2s>\n",
            pid = self.path("c2s.pid"),
            router = self.router_connection(secret),
            log = self.log_xml("c2s"),
            domain = xml_escape(&self.domain),
            port = self.c2s.port(),
            access = LOOPBACK_ONLY,
            modules = xml_escape(&modules_dir()),
            db = xml_escape(&self.db.to_string_lossy()),
        )
    }

    fn spawn(&mut self, name: &'static str, bin: &str) {
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(console_file(name)))
            .expect("opening a jabberd2 console log");
        let console2 = console
            .try_clone()
            .expect("duplicating the console log handle");
        let child = Command::new(bin)
            .arg("-c")
            .arg(self.dir.join(format!("{name}.xml")))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        self.children.push((name, child));
    }

    fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(log_file(name))).unwrap_or_default()
    }

    /// Err if a component exited.
    fn check_alive(&mut self) -> Result<(), Failure> {
        for (name, child) in self.children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Failure::Other(format!("{name} exited with {status}")));
            }
        }
        Ok(())
    }

    fn spawn_and_wait(&mut self) -> Result<(), Failure> {
        // Fresh logs for this attempt, so that "listening" is about these ports.
        for name in COMPONENTS {
            let _ = std::fs::remove_file(self.dir.join(log_file(name)));
        }
        let start = Instant::now();
        let deadline = start + READY_LIMIT;
        let (c2s, router) = (self.c2s, self.router);
        let timed_out = move |what: &str| {
            Failure::Other(format!(
                "{what} within {READY_LIMIT:?} (c2s {c2s}, router {router})"
            ))
        };

        // 1. The router, alone, until it listens: sm and c2s give up on a router
        //    they cannot reach after their retries.
        self.spawn("router", ROUTER);
        let router_up = format!(
            "[127.0.0.1, port={}] listening for incoming connections",
            self.router.port()
        );
        loop {
            // A router that lost the race for its port logs it and exits: look for
            // the exit first and read the log after it, to tell the two apart.
            let alive = self.check_alive();
            let log = self.read_log("router");
            if log.contains("unable to listen") {
                return Err(Failure::PortTaken("router: unable to listen".into()));
            }
            alive?;
            if log.contains(&router_up) {
                break;
            }
            if Instant::now() > deadline {
                return Err(timed_out("the router did not listen"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }

        // 2. sm and c2s; ready when sm has bound the domain at the router, c2s
        //    listens, and a stream open gets features.
        self.spawn("sm", SM);
        self.spawn("c2s", C2S);
        let domain_up = format!("[{}] online", self.domain);
        let c2s_up = format!(
            "[127.0.0.1, port={}] listening for connections",
            self.c2s.port()
        );
        let mut last_probe = String::from("not probed yet");
        loop {
            // The exit first, then the log, as for the router.
            let alive = self.check_alive();
            let c2s_log = self.read_log("c2s");
            if c2s_log.contains("failed to listen") {
                return Err(Failure::PortTaken("c2s: failed to listen".into()));
            }
            alive?;
            // Our own log lines first: a probe alone could reach someone else's
            // server that won the race for the port.
            if c2s_log.contains(&c2s_up) && self.read_log("router").contains(&domain_up) {
                match probe(self.c2s, &self.domain) {
                    Ok(()) => return Ok(()),
                    Err(e) => last_probe = e,
                }
            }
            if Instant::now() > deadline {
                return Err(timed_out(&format!(
                    "no stream features (last probe: {last_probe})"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Jabberd2 {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Failure {
    PortTaken(String),
    Other(String),
}

/// Only loopback peers may connect (the sockets are on 127.0.0.1 anyway).
const LOOPBACK_ONLY: &str = "<access><order>deny,allow</order>\
    <allow ip='127.0.0.0' mask='255.0.0.0'/></access>";

fn log_file(name: &str) -> String {
    format!("{name}.log")
}

fn console_file(name: &str) -> String {
    format!("{name}.console.log")
}

fn router_users(secret: &str) -> String {
    format!(
        "<users><user><name>jabberd</name><secret>{}</secret></user></users>\n",
        xml_escape(secret)
    )
}

/// The stock sm.xml module chains, minus template-roster (its template lives in /etc;
/// users are created in the database here, never by sm).
fn sm_chains() -> String {
    const CHAINS: &[(&str, &[&str])] = &[
        ("sess-start", &["status"]),
        ("sess-end", &["status", "iq-last"]),
        (
            "in-sess",
            &[
                "validate",
                "status",
                "privacy",
                "roster",
                "vacation",
                "iq-vcard",
                "iq-ping",
                "iq-private",
                "disco",
                "amp",
                "offline",
                "announce",
                "presence",
                "deliver",
            ],
        ),
        ("out-sess", &[]),
        ("in-router", &["session", "validate", "presence", "privacy"]),
        ("out-router", &["privacy"]),
        (
            "pkt-sm",
            &[
                "iq-last",
                "iq-ping",
                "iq-time",
                "iq-version",
                "amp",
                "disco",
                "announce",
                "help",
                "echo",
                "status",
                "presence",
            ],
        ),
        (
            "pkt-user",
            &[
                "roster", "presence", "disco", "iq-vcard", "amp", "deliver", "vacation", "offline",
                "iq-last",
            ],
        ),
        ("pkt-router", &["session", "disco"]),
        (
            "user-load",
            &["active", "roster", "roster-publish", "privacy", "vacation"],
        ),
        ("user-unload", &[]),
        ("user-create", &["active"]),
        (
            "user-delete",
            &[
                "active",
                "announce",
                "offline",
                "privacy",
                "roster",
                "vacation",
                "status",
                "iq-last",
                "iq-private",
                "iq-vcard",
            ],
        ),
        ("disco-extend", &["iq-version", "help"]),
    ];
    let mut out = String::new();
    for (id, modules) in CHAINS {
        out.push_str(&format!("<chain id='{id}'>"));
        for m in *modules {
            out.push_str(&format!("<module>{m}</module>"));
        }
        out.push_str("</chain>\n");
    }
    out
}

/// Where Debian put the authreg and storage modules (a multiarch directory).
fn modules_dir() -> String {
    let multiarch = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("jabberd2"));
    std::iter::once(PathBuf::from("/usr/lib/jabberd2"))
        .chain(multiarch)
        .find(|d| d.join("authreg_sqlite.so").exists())
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_else(|| {
            panic!(
                "no authreg_sqlite.so under /usr/lib/*/jabberd2: the jabberd2 tests need \
                 a real jabberd2; install it with `apt-get install jabberd2`"
            )
        })
}

fn require_binaries() {
    for bin in [ROUTER, SM, C2S] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: the jabberd2 tests need a real jabberd2; \
             install it with `apt-get install jabberd2`"
        );
    }
    assert!(
        Path::new(SCHEMA).exists(),
        "{SCHEMA} is missing: it ships with the jabberd2 package (`apt-get install \
         jabberd2`); check that dpkg does not exclude /usr/share/doc (path-exclude)"
    );
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is missing: the jabberd2 harness creates its sqlite database with it; \
         install it with `apt-get install python3`"
    );
    // Panics with the same advice when the modules are missing.
    modules_dir();
}

/// SIGTERM to every child still running, wait up to `TERM_GRACE` for all of them,
/// SIGKILL the rest, and reap them.
fn terminate(children: &mut [(&'static str, Child)]) {
    for (_, child) in children.iter_mut() {
        if let Ok(None) = child.try_wait() {
            signal(child, Signal::TERM);
        }
    }
    let all_exited = wait_for(TERM_GRACE, || {
        children
            .iter_mut()
            .all(|(_, c)| matches!(c.try_wait(), Ok(Some(_))))
            .then_some(())
    });
    if all_exited.is_none() {
        for (_, child) in children.iter_mut() {
            if let Ok(None) = child.try_wait() {
                signal(child, Signal::KILL);
            }
        }
    }
    for (_, child) in children.iter_mut() {
        let _ = child.wait();
    }
}

fn signal(child: &Child, sig: Signal) {
    // A pid of a spawned child is never 0 and always fits in i32 (pid_max <= 2^22).
    let pid = Pid::from_raw(child.id() as i32).expect("a child's pid is positive");
    // ESRCH only if it already exited; the caller's wait() collects it either way.
    let _ = rustix::process::kill_process(pid, sig);
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// Listening TCP sockets of this network namespace by inode, from /proc/net/tcp{,6}.
fn tcp_listeners() -> HashMap<u64, SocketAddr> {
    let mut out = HashMap::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            if *state != "0A" {
                continue; // not TCP_LISTEN
            }
            if let (Some(addr), Ok(inode)) = (parse_proc_addr(local, v6), inode.parse()) {
                out.insert(inode, addr);
            }
        }
    }
    out
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6): the address is stored as
/// 32-bit words in host (little-endian here) order, the port in big-endian hex.
fn parse_proc_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let ip = match (v6, words.as_slice()) {
        (false, [w]) => IpAddr::V4(Ipv4Addr::from(w.to_le_bytes())),
        (true, [a, b, c, d]) => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].into_iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}
