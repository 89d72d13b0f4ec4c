//! The measured phases. Each runs against one relay (a client endpoint and the relay
//! process's pid), is bounded in count and in time, and returns what it counted with
//! the CPU time the relay, the sink and this process (the load generator) used over
//! exactly the measured interval. Sessions a phase needs are opened before the
//! interval starts and closed after it ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::client::{self, Endpoint, Session};
use super::procs;

/// The processes whose CPU time a phase reads.
#[derive(Clone, Copy)]
pub struct Pids {
    pub relay: u32,
    pub sink: u32,
}

impl Pids {
    fn cpu(&self) -> [f64; 3] {
        [
            procs::cpu_of(self.relay),
            procs::cpu_of(self.sink),
            procs::cpu_of(std::process::id()),
        ]
    }
}

/// What a phase counted.
#[derive(Debug, Default, Clone)]
pub struct Counted {
    /// Logins, or stanzas relayed (each direction counts: a round trip is two).
    pub count: u64,
    pub secs: f64,
    /// CPU seconds of the relay, the sink and the load generator over the phase.
    pub cpu: f64,
    pub sink_cpu: f64,
    pub gen_cpu: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Logins whose TLS handshake resumed an earlier session.
    pub resumed: u64,
}

impl Counted {
    pub fn add(&mut self, o: &Counted) {
        self.count += o.count;
        self.resumed += o.resumed;
        self.secs += o.secs;
        self.cpu += o.cpu;
        self.sink_cpu += o.sink_cpu;
        self.gen_cpu += o.gen_cpu;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
    }
}

/// Errors seen by a phase's tasks: how many, and the first.
#[derive(Default)]
struct Errors(Mutex<(u64, Option<String>)>);

impl Errors {
    fn note(&self, e: std::io::Error) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        if g.1.is_none() {
            g.1 = Some(e.to_string());
        }
    }

    fn counted(&self, count: u64, secs: f64, c0: [f64; 3], c1: [f64; 3]) -> Counted {
        let (errors, first_error) = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Counted {
            count,
            secs,
            cpu: c1[0] - c0[0],
            sink_cpu: c1[1] - c0[1],
            gen_cpu: c1[2] - c0[2],
            errors,
            first_error,
            resumed: 0,
        }
    }
}

/// Longest a phase may take to open the sessions it measures.
const SETUP_CAP: Duration = Duration::from_secs(30);

/// User numbers: every login of a run has its own name (`u17`, …).
static USERS: AtomicUsize = AtomicUsize::new(0);

fn next_user() -> usize {
    USERS.fetch_add(1, Ordering::Relaxed)
}

/// Log in `n` sessions, `conc` at a time, within `cap`; failures are counted, not
/// fatal.
pub async fn open(
    ep: &Endpoint,
    n: usize,
    conc: usize,
    window: usize,
    cap: Duration,
) -> (Vec<Session>, Counted) {
    let deadline = Instant::now() + cap;
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Errors::default());
    let tasks: Vec<_> = (0..conc.min(n).max(1))
        .map(|_| {
            let (ep, next, errors) = (ep.clone(), next.clone(), errors.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < n && Instant::now() < deadline {
                    match client::login(&ep, next_user(), false, window).await {
                        Ok(s) => out.push(s),
                        Err(e) => errors.note(e),
                    }
                }
                out
            })
        })
        .collect();
    let mut sessions = Vec::with_capacity(n);
    for t in tasks {
        sessions.extend(t.await.expect("a login task"));
    }
    let count = sessions.len() as u64;
    (sessions, errors.counted(count, 0.0, [0.0; 3], [0.0; 3]))
}

/// Close sessions gracefully, many at a time (not measured).
async fn close_all(sessions: Vec<Session>) {
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|s| tokio::spawn(s.close()))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// `n` logins (connect, PLAIN, bind, close), `conc` at a time, within `cap`; counts
/// the handshakes that resumed a TLS session too.
pub async fn logins(ep: &Endpoint, pids: Pids, n: usize, conc: usize, cap: Duration) -> Counted {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Errors::default());
    let c0 = pids.cpu();
    let t0 = Instant::now();
    let deadline = t0 + cap;
    let tasks: Vec<_> = (0..conc.min(n).max(1))
        .map(|_| {
            let (ep, next, errors) = (ep.clone(), next.clone(), errors.clone());
            tokio::spawn(async move {
                let (mut ok, mut resumed) = (0u64, 0u64);
                while next.fetch_add(1, Ordering::Relaxed) < n && Instant::now() < deadline {
                    let r = async {
                        let s = client::login(&ep, next_user(), false, 1).await?;
                        let r = s.resumed;
                        s.close().await.map(|()| r)
                    };
                    match r.await {
                        Ok(r) => {
                            ok += 1;
                            resumed += u64::from(r);
                        }
                        Err(e) => errors.note(e),
                    }
                }
                (ok, resumed)
            })
        })
        .collect();
    let (mut ok, mut resumed) = (0, 0);
    for t in tasks {
        let (o, r) = t.await.expect("a login task");
        ok += o;
        resumed += r;
    }
    let secs = t0.elapsed().as_secs_f64();
    let c1 = pids.cpu();
    let mut c = errors.counted(ok, secs, c0, c1);
    c.resumed = resumed;
    c
}

/// `n` logins one after another by a single client (within `cap`), each timed from
/// the connect to the bind result; returns every login's time in nanoseconds. The
/// close after each login is not timed.
pub async fn login_latency(
    ep: &Endpoint,
    pids: Pids,
    n: usize,
    cap: Duration,
) -> (Vec<u64>, Counted) {
    let errors = Arc::new(Errors::default());
    let c0 = pids.cpu();
    let t0 = Instant::now();
    let until = t0 + cap;
    let task = {
        let (ep, errors) = (ep.clone(), errors.clone());
        tokio::spawn(async move {
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                if Instant::now() >= until {
                    break;
                }
                let t = Instant::now();
                match client::login(&ep, next_user(), false, 1).await {
                    Ok(s) => {
                        times.push(t.elapsed().as_nanos() as u64);
                        if let Err(e) = s.close().await {
                            errors.note(e);
                        }
                    }
                    Err(e) => errors.note(e),
                }
            }
            times
        })
    };
    let times = task.await.expect("a login-latency task");
    let secs = t0.elapsed().as_secs_f64();
    let c1 = pids.cpu();
    let c = errors.counted(times.len() as u64, secs, c0, c1);
    (times, c)
}

/// `sessions` sessions each keep `window` stanzas in flight for `dur` (at most `max`
/// stanzas each), then collect the echoes still due.
pub async fn throughput(
    ep: &Endpoint,
    pids: Pids,
    sessions: usize,
    window: usize,
    dur: Duration,
    max: u64,
) -> Counted {
    let (ss, opened) = open(ep, sessions, 16, window, SETUP_CAP).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let errors = Arc::new(Errors::default());
    let c0 = pids.cpu();
    let t0 = Instant::now();
    let until = t0 + dur;
    let tasks: Vec<_> = ss
        .into_iter()
        .map(|mut s| {
            let errors = errors.clone();
            tokio::spawn(async move {
                match pump(&mut s, window, max, until).await {
                    Ok(n) => (Some(s), n),
                    Err((e, n)) => {
                        errors.note(e);
                        (None, n)
                    }
                }
            })
        })
        .collect();
    let mut echoes = 0;
    let mut alive = Vec::new();
    for t in tasks {
        let (s, n) = t.await.expect("a stanza task");
        echoes += n;
        alive.extend(s);
    }
    let secs = t0.elapsed().as_secs_f64();
    let c1 = pids.cpu();
    close_all(alive).await;
    let mut c = errors.counted(2 * echoes, secs, c0, c1);
    c.errors += opened.errors;
    if c.first_error.is_none() {
        c.first_error = opened.first_error;
    }
    c
}

/// Keep `window` stanzas in flight until `until` (or `max` sent); returns the echoes.
async fn pump(
    s: &mut Session,
    window: usize,
    max: u64,
    until: Instant,
) -> Result<u64, (std::io::Error, u64)> {
    let first = (window as u64).min(max);
    s.send(first as usize).await.map_err(|e| (e, 0))?;
    let (mut sent, mut got) = (first, 0u64);
    while got < sent {
        let k = s.recv().await.map_err(|e| (e, got))? as u64;
        got += k;
        if sent < max && Instant::now() < until {
            let more = k.min(max - sent);
            if more > 0 {
                s.send(more as usize).await.map_err(|e| (e, got))?;
                sent += more;
            }
        }
    }
    Ok(got)
}

/// `sessions` sessions each send one stanza and wait for its echo, `trips` times
/// (within `cap`); returns every round-trip time in nanoseconds.
pub async fn latency(
    ep: &Endpoint,
    pids: Pids,
    sessions: usize,
    trips: usize,
    cap: Duration,
) -> (Vec<u64>, Counted) {
    let (ss, opened) = open(ep, sessions, 16, 1, SETUP_CAP).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let errors = Arc::new(Errors::default());
    let c0 = pids.cpu();
    let t0 = Instant::now();
    let until = t0 + cap;
    let tasks: Vec<_> = ss
        .into_iter()
        .map(|mut s| {
            let errors = errors.clone();
            tokio::spawn(async move {
                let mut rtts = Vec::with_capacity(trips);
                for _ in 0..trips {
                    if Instant::now() >= until {
                        break;
                    }
                    let t = Instant::now();
                    let r = async {
                        s.send(1).await?;
                        while s.recv().await? == 0 {}
                        Ok::<_, std::io::Error>(())
                    };
                    if let Err(e) = r.await {
                        errors.note(e);
                        return (None, rtts);
                    }
                    rtts.push(t.elapsed().as_nanos() as u64);
                }
                (Some(s), rtts)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut alive = Vec::new();
    for t in tasks {
        let (s, rtts) = t.await.expect("a latency task");
        all.extend(rtts);
        alive.extend(s);
    }
    let secs = t0.elapsed().as_secs_f64();
    let c1 = pids.cpu();
    close_all(alive).await;
    let mut c = errors.counted(2 * all.len() as u64, secs, c0, c1);
    c.errors += opened.errors;
    if c.first_error.is_none() {
        c.first_error = opened.first_error;
    }
    (all, c)
}

/// Resident memory of the relay before and after `n` idle forwarded sessions.
#[derive(Debug, Clone, Default)]
pub struct Idle {
    pub sessions: u64,
    pub before_kib: u64,
    pub after_kib: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub secs: f64,
}

impl Idle {
    pub fn per_session_kib(&self) -> Option<f64> {
        (self.sessions > 0)
            .then(|| (self.after_kib as f64 - self.before_kib as f64) / self.sessions as f64)
    }
}

/// Open `n` sessions (logged in and bound, then idle), read the relay's RSS before and
/// after, then drop them all and wait until the relay has let go of their descriptors.
pub async fn idle(ep: &Endpoint, relay_pid: u32, n: usize, conc: usize, settle: Duration) -> Idle {
    let fds_before = procs::fds(relay_pid);
    let before_kib = procs::rss_kib(relay_pid);
    let t0 = Instant::now();
    let (sessions, opened) = open(ep, n, conc, 1, Duration::from_secs(120)).await;
    let secs = t0.elapsed().as_secs_f64();
    // Let the relay finish the hand-overs (and free what login needed) before reading.
    tokio::time::sleep(settle).await;
    let after_kib = procs::rss_kib(relay_pid);
    let idle = Idle {
        sessions: sessions.len() as u64,
        before_kib,
        after_kib,
        errors: opened.errors,
        first_error: opened.first_error,
        secs,
    };
    drop(sessions);
    let limit = Instant::now() + Duration::from_secs(60);
    while procs::fds(relay_pid) > fds_before + 8 && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    idle
}
