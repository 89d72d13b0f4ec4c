//! A real XMPP client for the integration tests: slixmpp driven by
//! `tests/clients/xmpp_client.py` (its docstring defines the JSON protocol). One child
//! process per job; a job may batch many logins or a whole messaging session, because
//! starting Python and importing slixmpp costs ~0.2 s.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::repo_path;

/// Debian's Python, the one that sees python3-slixmpp (the pyenv `python3` on PATH
/// does not).
pub const PYTHON: &str = "/usr/bin/python3";
/// The whole job is killed after this; the driver cuts itself at 50 s first.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The driver writes `MARK_PREFIX name` on stderr for a `{"mark": name}` action.
const MARK_PREFIX: &str = "@@mark ";

/// Run one job to completion and return the driver's JSON answer. Panics (with the
/// driver's stderr) on timeout or a driver bug; a failed login is an answer, not a panic.
pub fn run_client(job: &Value) -> Value {
    spawn_client(job).finish()
}

/// Start a job without waiting for it, so the test can act (kill a backend, ...) while
/// the client runs; `wait_mark` synchronises on `{"mark": ...}` actions.
pub fn spawn_client(job: &Value) -> ClientProcess {
    let script = repo_path("tests/clients/xmpp_client.py");
    let mut child = Command::new(PYTHON)
        .arg(&script)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {PYTHON} {}: {e}; the tests need Debian's Python with slixmpp: \
                 apt-get install python3-slixmpp",
                script.display()
            )
        });
    let mut stdin = child.stdin.take().expect("stdin was piped");
    // A write error means the driver already died; finish() reports its stderr.
    let _ = stdin.write_all(job.to_string().as_bytes());
    drop(stdin);
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let (marks_tx, marks) = mpsc::channel();
    // Both pipes are drained by threads so that neither can fill up and block the driver.
    let stderr_thread = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(name) = line.strip_prefix(MARK_PREFIX) {
                let _ = marks_tx.send(name.to_string());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let stdout_thread = std::thread::spawn(move || read_all(stdout));
    ClientProcess {
        child,
        started: Instant::now(),
        marks,
        stdout_thread: Some(stdout_thread),
        stderr_thread: Some(stderr_thread),
    }
}

fn read_all(mut stdout: ChildStdout) -> String {
    let mut text = String::new();
    let _ = stdout.read_to_string(&mut text);
    text
}

/// A running driver; killed by pid if dropped unfinished.
pub struct ClientProcess {
    child: Child,
    started: Instant,
    marks: mpsc::Receiver<String>,
    stdout_thread: Option<JoinHandle<String>>,
    stderr_thread: Option<JoinHandle<String>>,
}

impl ClientProcess {
    /// Block until the driver reaches `{"mark": name}`; panics after `limit`.
    pub fn wait_mark(&mut self, name: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.marks.recv_timeout(left) {
                Ok(m) if m == name => return,
                Ok(_) => {}
                Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "client never reached mark {name:?} within {limit:?}; stderr:\n{}",
                        self.stderr_text()
                    );
                }
            }
        }
    }

    /// Wait for the answer (bounded by `CLIENT_TIMEOUT` from the start).
    pub fn finish(mut self) -> Value {
        let left = CLIENT_TIMEOUT.saturating_sub(self.started.elapsed());
        let status = super::wait_for(left, || self.child.try_wait().ok().flatten());
        let Some(status) = status else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "client driver did not finish within {CLIENT_TIMEOUT:?}; stderr:\n{}",
                self.stderr_text()
            );
        };
        let stdout = self
            .stdout_thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let stderr = self.stderr_text();
        if stderr.contains("No module named 'slixmpp'") {
            panic!("{PYTHON} cannot import slixmpp: apt-get install python3-slixmpp\n{stderr}");
        }
        let answer = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| serde_json::from_str::<Value>(l).ok());
        match answer {
            Some(v) if status.success() => v,
            _ => panic!("client driver failed ({status}); stdout:\n{stdout}\nstderr:\n{stderr}"),
        }
    }

    fn stderr_text(&mut self) -> String {
        self.stderr_thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How the client protects its stream (the driver's "tls" field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Plaintext; never STARTTLS even if offered.
    Plain,
    /// STARTTLS required: the client refuses to authenticate without it.
    StartTls,
    /// STARTTLS if offered, plaintext otherwise.
    StartTlsIfOffered,
    /// TLS from the first byte (XEP-0368).
    DirectTls,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Plain => "none",
            Transport::StartTls => "starttls",
            Transport::StartTlsIfOffered => "optional",
            Transport::DirectTls => "direct",
        }
    }
}

/// One account's connection parameters (a `login` job, or an account of a session).
#[derive(Clone, Debug)]
pub struct LoginOpts {
    pub jid: String,
    pub password: String,
    pub addr: SocketAddr,
    pub tls: Transport,
    /// Force one SASL mechanism ("PLAIN", "SCRAM-SHA-1"); None lets slixmpp choose.
    pub mechanism: Option<String>,
    /// On `<see-other-host/>`: false reports the target, true connects to exactly it.
    pub follow_redirect: bool,
    pub resource: Option<String>,
    /// TLS server name; defaults to the JID's domain.
    pub sni: Option<String>,
    /// Seconds until the login counts as failed (driver default 10).
    pub timeout: Option<f64>,
    /// A certificate (PEM) to trust: the client then verifies the server's against it
    /// and the TLS server name. None: no verification (test certificates).
    pub ca: Option<String>,
    /// Session only: send initial presence after login (default true).
    pub presence: bool,
    /// Session only: log in at the start (false: a `login` action does it later).
    pub connect: bool,
}

impl LoginOpts {
    pub fn new(jid: &str, password: &str, addr: SocketAddr) -> Self {
        LoginOpts {
            jid: jid.to_string(),
            password: password.to_string(),
            addr,
            tls: Transport::Plain,
            mechanism: None,
            follow_redirect: false,
            resource: None,
            sni: None,
            timeout: None,
            ca: None,
            presence: true,
            connect: true,
        }
    }

    pub fn tls(mut self, tls: Transport) -> Self {
        self.tls = tls;
        self
    }

    pub fn with_password(mut self, password: &str) -> Self {
        self.password = password.to_string();
        self
    }

    pub fn mechanism(mut self, mech: &str) -> Self {
        self.mechanism = Some(mech.to_string());
        self
    }

    pub fn follow_redirect(mut self, follow: bool) -> Self {
        self.follow_redirect = follow;
        self
    }

    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_string());
        self
    }

    pub fn sni(mut self, name: &str) -> Self {
        self.sni = Some(name.to_string());
        self
    }

    pub fn verify_with(mut self, ca_pem: &std::path::Path) -> Self {
        self.ca = Some(ca_pem.display().to_string());
        self
    }

    pub fn timeout(mut self, secs: f64) -> Self {
        self.timeout = Some(secs);
        self
    }

    pub fn connect_later(mut self) -> Self {
        self.connect = false;
        self
    }

    /// The account object of the JSON protocol.
    pub fn to_json(&self) -> Value {
        json!({
            "jid": self.jid,
            "password": self.password,
            "host": self.addr.ip().to_string(),
            "port": self.addr.port(),
            "tls": self.tls.as_str(),
            "mechanism": self.mechanism,
            "follow_redirect": self.follow_redirect,
            "resource": self.resource,
            "sni": self.sni,
            "timeout": self.timeout,
            "ca": self.ca,
            "presence": self.presence,
            "connect": self.connect,
        })
    }

    /// A `login` job.
    pub fn job(&self) -> Value {
        let mut v = self.to_json();
        v["op"] = json!("login");
        v
    }
}

/// The driver's answer to a login.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct LoginResult {
    pub ok: bool,
    pub bound_jid: Option<String>,
    pub error: Option<String>,
    /// The SASL `<failure/>` condition, e.g. "not-authorized".
    pub sasl_failure: Option<String>,
    pub stream_error: Option<String>,
    pub stream_error_text: Option<String>,
    /// The target of a `<see-other-host/>` that was not followed.
    pub see_other_host: Option<String>,
    /// The targets followed, in order.
    pub redirects: Vec<String>,
    /// SASL mechanisms the server offered (last offer seen).
    pub mechanisms: Option<Vec<String>>,
    pub starttls_offered: Option<bool>,
    pub encrypted: bool,
    pub elapsed_ms: Option<u64>,
}

fn parse_login(v: &Value) -> LoginResult {
    LoginResult::deserialize(v).unwrap_or_else(|e| panic!("bad login result {v}: {e}"))
}

/// Log in once and disconnect.
pub fn login(opts: &LoginOpts) -> LoginResult {
    parse_login(&run_client(&opts.job()))
}

/// Several independent logins in one driver process, in order.
pub fn login_many(opts: &[LoginOpts]) -> Vec<LoginResult> {
    login_jobs("steps", opts)
}

/// Independent logins in one driver process, all started at once (a burst).
pub fn login_parallel(opts: &[LoginOpts]) -> Vec<LoginResult> {
    login_jobs("parallel", opts)
}

/// Login jobs batched under `how` ("steps" or "parallel"), and their results.
fn login_jobs(how: &str, opts: &[LoginOpts]) -> Vec<LoginResult> {
    let jobs: Vec<Value> = opts.iter().map(LoginOpts::job).collect();
    let answer = run_client(&json!({ how: jobs }));
    let results = answer["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {answer}"));
    results.iter().map(parse_login).collect()
}

/// The driver's answer to a session.
#[derive(Clone, Debug)]
pub struct SessionResult {
    pub ok: bool,
    pub accounts: Vec<LoginResult>,
    /// One object per action: at least "ok" and "action" (see the driver's docstring).
    pub actions: Vec<Value>,
    pub raw: Value,
}

impl SessionResult {
    fn from_json(raw: Value) -> SessionResult {
        let accounts = raw["accounts"]
            .as_array()
            .map(|a| a.iter().map(parse_login).collect())
            .unwrap_or_default();
        let actions = raw["actions"].as_array().cloned().unwrap_or_default();
        SessionResult {
            ok: raw["ok"].as_bool().unwrap_or(false),
            accounts,
            actions,
            raw,
        }
    }

    /// Every byte account `i` received, after TLS, over all its logins.
    pub fn received(&self, i: usize) -> String {
        self.raw["raw"][i].as_str().unwrap_or_default().to_owned()
    }

    /// Panic with the whole answer unless every login and every action succeeded.
    pub fn assert_ok(&self) {
        assert!(
            self.ok,
            "session failed:\n{}",
            serde_json::to_string_pretty(&self.raw).unwrap_or_else(|_| self.raw.to_string())
        );
    }
}

/// The JSON job for a session; `spawn_client` runs it in the background.
pub fn session_job(accounts: &[LoginOpts], actions: Vec<Value>) -> Value {
    let accounts: Vec<Value> = accounts.iter().map(LoginOpts::to_json).collect();
    json!({ "op": "session", "accounts": accounts, "actions": actions })
}

/// Log the accounts in, run the actions in order, disconnect.
pub fn session(accounts: &[LoginOpts], actions: Vec<Value>) -> SessionResult {
    SessionResult::from_json(run_client(&session_job(accounts, actions)))
}

/// Parse the answer of a session started with `spawn_client`.
pub fn session_result(raw: Value) -> SessionResult {
    SessionResult::from_json(raw)
}

/// Builders for session actions; accounts are indexes into the session's account list.
pub mod act {
    use serde_json::{Value, json};

    pub fn send_message(from: usize, to: &str, body: &str) -> Value {
        json!({ "from": from, "send_message_to": to, "body": body })
    }

    /// Wait (5 s) for a message to account `to` from `from` (bare: any resource).
    pub fn expect_message(to: usize, from: &str, body: &str) -> Value {
        json!({ "expect_message": { "to": to, "from": from, "body": body, "timeout": 5 } })
    }

    /// Wait (5 s) for a `type='error'` message with this condition.
    pub fn expect_message_error(to: usize, condition: &str) -> Value {
        json!({ "expect_message": { "to": to, "type": "error", "error": condition, "timeout": 5 } })
    }

    pub fn expect_no_message(to: usize, secs: f64) -> Value {
        json!({ "expect_no_message": { "to": to, "timeout": secs } })
    }

    pub fn subscribe(from: usize, to: &str) -> Value {
        json!({ "from": from, "subscribe": to })
    }

    pub fn approve(from: usize, to: &str) -> Value {
        json!({ "from": from, "approve": to })
    }

    /// Wait (5 s) for a presence of this type ("available", "subscribe", ...).
    pub fn expect_presence(to: usize, from: &str, kind: &str) -> Value {
        json!({ "expect_presence": { "to": to, "from": from, "type": kind, "timeout": 5 } })
    }

    pub fn get_roster(from: usize) -> Value {
        json!({ "from": from, "get_roster": true })
    }

    /// An IQ with a raw XML payload; the answer carries "type", "error" and "xml".
    pub fn iq(from: usize, kind: &str, to: &str, payload: &str) -> Value {
        json!({ "from": from, "iq": { "type": kind, "to": to, "payload": payload } })
    }

    pub fn disconnect(from: usize) -> Value {
        json!({ "from": from, "disconnect": true })
    }

    /// Wait for account `account`'s stream to end (e.g. its backend was killed).
    pub fn expect_disconnect(account: usize, secs: f64) -> Value {
        json!({ "expect_disconnect": { "account": account, "timeout": secs } })
    }

    /// (Re)connect account `account` with a fresh client.
    pub fn login(account: usize) -> Value {
        json!({ "login": account })
    }

    /// Tell the Rust side (`ClientProcess::wait_mark`) that the actions so far are done.
    pub fn mark(name: &str) -> Value {
        json!({ "mark": name })
    }

    pub fn sleep(secs: f64) -> Value {
        json!({ "sleep": secs })
    }
}
