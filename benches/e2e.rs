//! End-to-end load run: dealer's forward mode beside HAProxy (`mode tcp`, without and
//! with `option splice-auto`; `bind … ssl crt` for TLS clients) in front of the same
//! backend, in one run, with the relays taking turns phase by phase (dealer, haproxy,
//! haproxy-splice, dealer, …; the order reversed every other round) so drift on a
//! noisy machine hits all alike; one table of ratios per family at the end.
//!
//! `cargo bench --bench e2e` runs the full plan (about five minutes once built).
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a smoke round of a
//! few logins and stanzas through every relay, which fails on any error. Options after
//! `--` narrow a run down for profiling (see `options`).
//!
//! A/B: `-- --baseline PATH` runs another build of dealer (say, an older commit's, built
//! in a git worktree with its own `--target-dir`) beside this one, as one more relay of
//! each family ("dealer baseline", the same config), taking its turns and measured like
//! every relay; an A/B table per family gives each figure as this build ÷ the baseline
//! (the median of the per-round ratios, min–max). On a shared host two runs at different
//! times differ by more than most changes do; turns within one run share the drift. The
//! baseline is never judged and never one of the HAProxies. A full A/B run keeps its
//! output in `benches/results/e2e-ab-<date>-<commit>.txt`.
//!
//! Layout, all on loopback:
//! - the sink (`e2e/sink.rs`): a minimal XMPP backend, this executable run again as a
//!   child, one port per relay;
//! - six relay processes, each measured alone: dealer with its plaintext listener
//!   (both legs plain: splice), dealer with its Direct TLS listener (TLS terminated,
//!   copy), HAProxy plain, HAProxy plain with `option splice-auto`, HAProxy `ssl crt`,
//!   and the reference "relay only" (`e2e/pump.rs`: dealer's byte relay from the first
//!   byte, no XMPP; plaintext only), whose column shows what dealer's XMPP work costs
//!   and is never one of the HAProxies goals are judged against; in an A/B run, two
//!   more: the baseline's plaintext and Direct TLS listeners;
//! - the load generator (`e2e/client.rs`, `e2e/load.rs`): tokio clients in this
//!   process, from source addresses 127.0.0.2–9.
//!
//! Phases (`e2e/load.rs`): idle memory at 9,000 sessions (first, on fresh processes),
//! then rounds of:
//! - logins (connect, PLAIN, bind, close): plaintext 16 and 50 at a time; TLS 16 at a
//!   time with full handshakes (no resumption), then again with clients that keep the
//!   TLS 1.3 tickets the relay sends and offer one on reconnecting (a store per relay,
//!   filled by a few logins first; the share of handshakes that did resume is shown);
//! - login latency: one client logging in one login after another, each timed from
//!   the connect to the bind result, free and with relay, sink and load generator
//!   pinned to one CPU;
//! - stanza throughput;
//! - round trips of one stanza, free and pinned to one CPU.
//!
//! CPU figures are the relay's time on a CPU over a phase (nanoseconds, from
//! `/proc/PID/task/*/schedstat`); rates and latencies as the load generator sees them.
//! Each round's figures are kept apart: a table cell is a relay's median over the
//! rounds, a ratio the median of the per-round ratios with their spread (min–max), and
//! each goal of the issue is judged on dealer's ratio to the best HAProxy of the family
//! in each round; a summary lists every goal as met or missed. Every line goes to the
//! terminal and, in a full run (not narrowed by options), to
//! `benches/results/e2e-<date>-<commit>.txt`, headed by a description of the machine.

#[path = "e2e/client.rs"]
mod client;
#[path = "e2e/load.rs"]
mod load;
#[path = "common/machine.rs"]
mod machine;
#[path = "e2e/procs.rs"]
mod procs;
#[path = "e2e/pump.rs"]
mod pump;
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/sink.rs"]
mod sink;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::Endpoint;
use load::{Counted, Pids};
use procs::Proc;
use report::{Log, Results, Round};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Plain,
    Tls,
}

/// How much of everything a run does.
#[derive(Clone)]
struct Plan {
    rounds: usize,
    /// Phases to run (all, unless `--phases` narrows them for profiling).
    phases: Phases,
    warmup_logins: usize,
    /// Logins per relay per login phase: plaintext (at each concurrency), TLS with full
    /// handshakes, TLS resuming a session.
    logins_plain: usize,
    logins_tls: usize,
    logins_resumed: usize,
    /// Logins that fill a resumption store before its phase is measured.
    resume_prime: usize,
    /// Logins at a time: every family, and plaintext again at the higher figure.
    login_conc: usize,
    login_conc_high: usize,
    /// Logins one at a time, by family, in each login-latency phase.
    lat_logins_plain: usize,
    lat_logins_tls: usize,
    /// Concurrent sessions, stanzas in flight per session, and how long they send.
    stanza_sessions: usize,
    stanza_window: usize,
    stanza_time: Duration,
    /// Upper bound on stanzas per session per phase.
    stanza_max: u64,
    /// Sessions with one stanza in flight each, and round trips per session. One
    /// session: with more, round trips queue behind each other on two CPUs and the
    /// figure turns into a throughput measure.
    rtt_sessions: usize,
    rtt_trips: usize,
    /// Idle sessions for the memory figure.
    idle: usize,
    idle_conc: usize,
    /// Upper bound on any one phase.
    cap: Duration,
    /// Pause between phases (closes finish), and before reading idle memory.
    settle: Duration,
    idle_settle: Duration,
}

#[derive(Clone, Copy)]
struct Phases {
    idle: bool,
    login: bool,
    login_latency: bool,
    stanzas: bool,
    rtt: bool,
}

const ALL_PHASES: Phases = Phases {
    idle: true,
    login: true,
    login_latency: true,
    stanzas: true,
    rtt: true,
};

const FULL: Plan = Plan {
    rounds: 5,
    phases: ALL_PHASES,
    warmup_logins: 300,
    logins_plain: 6_000,
    logins_tls: 1_500,
    logins_resumed: 3_000,
    resume_prime: 32,
    login_conc: 16,
    login_conc_high: 50,
    lat_logins_plain: 400,
    lat_logins_tls: 200,
    stanza_sessions: 64,
    stanza_window: 16,
    stanza_time: Duration::from_secs(4),
    stanza_max: 1_000_000,
    rtt_sessions: 1,
    rtt_trips: 4_000,
    idle: 9_000,
    idle_conc: 64,
    cap: Duration::from_secs(30),
    settle: Duration::from_millis(200),
    idle_settle: Duration::from_secs(1),
};

const SMOKE: Plan = Plan {
    rounds: 1,
    phases: ALL_PHASES,
    warmup_logins: 2,
    logins_plain: 4,
    logins_tls: 2,
    logins_resumed: 4,
    resume_prime: 2,
    login_conc: 2,
    login_conc_high: 3,
    lat_logins_plain: 3,
    lat_logins_tls: 2,
    stanza_sessions: 2,
    stanza_window: 4,
    stanza_time: Duration::from_millis(200),
    stanza_max: 40,
    rtt_sessions: 1,
    rtt_trips: 10,
    idle: 8,
    idle_conc: 4,
    cap: Duration::from_secs(10),
    settle: Duration::from_millis(10),
    idle_settle: Duration::from_millis(50),
};

/// One relay under test: a process and where its clients connect.
struct Relay {
    label: &'static str,
    family: Family,
    proc: Proc,
    ep: Endpoint,
    /// dealer's HTTP endpoint, the baseline's too (for the relay-kind check).
    http: Option<SocketAddr>,
    results: Results,
}

fn main() {
    if let Ok(n) = std::env::var(sink::ENV) {
        sink::main(n.parse().expect("DEALER_E2E_SINK is a port count"));
    }
    if let Ok(spec) = std::env::var(pump::ENV) {
        pump::main(&spec);
    }
    let full = std::env::args().any(|a| a == "--bench");
    let mut plan = if full { FULL } else { SMOKE };
    let (only, narrowed, baseline) = options(&mut plan);
    let plan = &plan;
    let started = Instant::now();
    // A full run, not narrowed, keeps its output under benches/results/; an A/B run
    // under a name of its own, so it never replaces the plain run of the same commit.
    let name = if baseline.is_some() { "e2e-ab" } else { "e2e" };
    let log = Log::new((full && !narrowed).then(|| machine::results_path(name)));
    let dealer_bin = env!("CARGO_BIN_EXE_dealer");
    if full {
        assert!(
            dealer_bin.contains("/release/"),
            "{dealer_bin} is not a release build; run `cargo bench --bench e2e`"
        );
    }
    let nofile = procs::raise_nofile();
    let need = plan.idle as u64 + 1_000;
    assert!(
        nofile >= need,
        "the descriptor limit is {nofile}; this run needs {need} (raise `ulimit -Hn`)"
    );
    let haproxy = procs::have_haproxy();
    if !haproxy {
        assert!(
            !full,
            "HAProxy is not installed (Debian: apt-get install haproxy)"
        );
        log.line("e2e: haproxy not found; smoke round through dealer only");
    }
    log.line(format!(
        "e2e: {} run on {} (UTC)",
        if full { "full" } else { "smoke" },
        machine::today()
    ));
    for l in machine::describe() {
        log.line(l);
    }
    if haproxy {
        log.line(format!(
            "haproxy: {}",
            machine::first_line("haproxy", &["-v"]).unwrap_or_default()
        ));
    }
    log.line(format!("plan: {}", plan_text(plan)));
    log.line(format!(
        "e2e: dealer binary {dealer_bin}; descriptor limit {nofile}"
    ));
    if let Some(b) = &baseline {
        log.line(format!("e2e: A/B, baseline binary {}", b.display()));
    }

    let dir = tempfile::tempdir().expect("a temporary directory");
    // One port per relay: dealer plain and TLS, the reference pump, three HAProxies,
    // then the baseline's plain and TLS.
    let baseline_port = if haproxy { 6 } else { 3 };
    let sink = procs::sink(
        dir.path(),
        baseline_port + if baseline.is_some() { 2 } else { 0 },
    );
    let tls = client::tls_config();
    let mut dealers = vec![(Path::new(dealer_bin), "dealer", "dealer", 0)];
    if let Some(b) = &baseline {
        dealers.push((
            b.as_path(),
            report::BASELINE,
            "dealer-baseline",
            baseline_port,
        ));
    }
    let mut relays = Vec::new();
    // The baseline right after dealer: the two take their turns one after the other.
    for (k, family) in [Family::Plain, Family::Tls].into_iter().enumerate() {
        for &(bin, label, name, port) in &dealers {
            let name = match family {
                Family::Plain => name.to_owned(),
                Family::Tls => format!("{name}-tls"),
            };
            let d = procs::dealer(dir.path(), bin, &name, sink.ports[port + k]);
            relays.push(dealer_relay(d, label, family, &tls));
        }
    }
    let (proc, addr) = procs::pump(dir.path(), "relay-only", sink.ports[2]);
    relays.push(Relay {
        label: report::REFERENCE,
        family: Family::Plain,
        proc,
        ep: Endpoint { addr, tls: None },
        http: None,
        results: Results::default(),
    });
    if haproxy {
        let pem = procs::pem(dir.path());
        for (i, (label, name, splice, family)) in [
            ("HAProxy", "haproxy", false, Family::Plain),
            ("HAProxy splice-auto", "haproxy-splice", true, Family::Plain),
            ("HAProxy ssl", "haproxy-tls", false, Family::Tls),
        ]
        .into_iter()
        .enumerate()
        {
            let (proc, addr) = procs::haproxy(
                dir.path(),
                name,
                sink.ports[3 + i],
                splice,
                (family == Family::Tls).then_some(pem.as_path()),
            );
            relays.push(Relay {
                label,
                family,
                proc,
                ep: Endpoint {
                    addr,
                    tls: (family == Family::Tls).then(|| tls.clone()),
                },
                http: None,
                results: Results::default(),
            });
        }
    }

    relays.retain(|r| only.is_none_or(|f| f == r.family));
    for r in &relays {
        log.line(format!(
            "e2e: {} pid {} on {}",
            tag(r),
            r.proc.pid(),
            r.ep.addr
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let cpus = procs::cpu_list();
    let finished = rt.block_on(async {
        // Ctrl-C or SIGTERM: stop, so the relays and the sink are killed on the way out.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            () = run(plan, &mut relays, &sink, &cpus, &log) => true,
            _ = tokio::signal::ctrl_c() => false,
            _ = term.recv() => false,
        }
    });
    if !finished {
        log.line("e2e: interrupted");
        drop(relays);
        drop(sink);
        drop(dir);
        std::process::exit(130);
    }

    for r in &mut relays {
        r.proc.assert_alive();
    }
    let errors: u64 = relays.iter().map(|r| r.results.errors()).sum();
    let elapsed = started.elapsed();
    print_report(plan, &relays, full, elapsed, &log);
    if errors > 0 {
        for r in &relays {
            if let Some(e) = r.results.first_error() {
                log.line(format!(
                    "e2e: {} ({:?}): {} errors, first: {e}\n  relay log tail:\n{}\n  sink log tail:\n{}",
                    r.label,
                    r.family,
                    r.results.errors(),
                    r.proc.log_tail(),
                    sink.proc.log_tail()
                ));
            }
        }
        assert!(full, "the smoke round had {errors} errors");
    }
    if let Some(p) = log.path() {
        eprintln!("e2e: this output is in {}", p.display());
    }
}

/// One of dealer's listeners as the relay of a family: the plaintext one (both legs
/// plain: splice) or Direct TLS (TLS terminated: copy).
fn dealer_relay(
    d: procs::Dealer,
    label: &'static str,
    family: Family,
    tls: &Arc<rustls::ClientConfig>,
) -> Relay {
    let (addr, tls) = match family {
        Family::Plain => (d.plain, None),
        Family::Tls => (d.tls, Some(tls.clone())),
    };
    Relay {
        label,
        family,
        proc: d.proc,
        ep: Endpoint { addr, tls },
        http: Some(d.http),
        results: Results::default(),
    }
}

/// Options after `--`, to narrow a run down for profiling: `--rounds N`,
/// `--phases idle,login,login-latency,stanzas,rtt`, `--family plain|tls`; and
/// `--baseline PATH`, another build of dealer for an A/B run. Returns the family,
/// whether a narrowing option was given (a narrowed run keeps no results file), and
/// the baseline.
fn options(plan: &mut Plan) -> (Option<Family>, bool, Option<PathBuf>) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter().position(|a| a == name).map(|i| {
            args.get(i + 1)
                .unwrap_or_else(|| panic!("{name} needs a value"))
        })
    };
    let mut narrowed = false;
    if let Some(n) = value("--rounds") {
        plan.rounds = n.parse().expect("--rounds N");
        narrowed = true;
    }
    if let Some(list) = value("--phases") {
        let has = |p: &str| list.split(',').any(|x| x == p);
        plan.phases = Phases {
            idle: has("idle"),
            login: has("login"),
            login_latency: has("login-latency"),
            stanzas: has("stanzas"),
            rtt: has("rtt"),
        };
        narrowed = true;
    }
    let family = value("--family").map(|f| match f.as_str() {
        "plain" => Family::Plain,
        "tls" => Family::Tls,
        other => panic!("--family plain|tls, not {other}"),
    });
    let baseline = value("--baseline").map(|p| executable(p));
    (family, narrowed || family.is_some(), baseline)
}

/// `path` made absolute (so it is never looked up in `PATH`), checked before anything
/// starts rather than failing as a relay that never comes up.
fn executable(path: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let abs = std::fs::canonicalize(path).unwrap_or_else(|e| panic!("--baseline {path}: {e}"));
    let meta = std::fs::metadata(&abs).unwrap_or_else(|e| panic!("--baseline {path}: {e}"));
    assert!(
        meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        "--baseline {path}: not an executable file"
    );
    abs
}

fn pids(r: &Relay, sink: &procs::Sink) -> Pids {
    Pids {
        relay: r.proc.pid(),
        sink: sink.proc.pid(),
    }
}

fn tag(r: &Relay) -> String {
    format!(
        "{} {}",
        match r.family {
            Family::Plain => "plain",
            Family::Tls => "tls",
        },
        r.label
    )
}

/// A round's line for a login phase.
fn login_line(round: usize, phase: &str, r: &Relay, c: &Counted) -> String {
    let per = |cpu: f64| 1e6 * cpu / c.count.max(1) as f64;
    let mut line = format!(
        "r{round} {phase:<9} {:<28} {:>6} in {:.2} s = {:>7.0}/s, relay {:>6.1} µs/login (sink {:.1}, gen {:.1}), {} errors",
        tag(r),
        c.count,
        c.secs,
        c.count as f64 / c.secs,
        per(c.cpu),
        per(c.sink_cpu),
        per(c.gen_cpu),
        c.errors
    );
    if r.family == Family::Tls {
        line.push_str(&format!(
            ", {:.1}% resumed",
            100.0 * c.resumed as f64 / c.count.max(1) as f64
        ));
    }
    line
}

/// Run `f` with the relay, the sink and this process pinned to the first CPU of
/// `cpus` when `pinned`, and let them run on all of `cpus` again after.
async fn maybe_pinned<T>(
    pinned: bool,
    p: Pids,
    cpus: &str,
    f: impl std::future::Future<Output = T>,
) -> T {
    let all = [p.relay, p.sink, std::process::id()];
    if pinned {
        procs::pin(&all, &procs::first_cpu(cpus));
    }
    let out = f.await;
    if pinned {
        procs::pin(&all, cpus);
    }
    out
}

/// Every phase of the plan; `cpus` is the CPU list to restore after pinning.
async fn run(plan: &Plan, relays: &mut [Relay], sink: &procs::Sink, cpus: &str, log: &Log) {
    for r in relays.iter_mut() {
        ready(r).await;
    }
    // Warm up: first-use allocations, pools and page faults out of the figures.
    for r in relays.iter() {
        let p = pids(r, sink);
        load::logins(&r.ep, p, plan.warmup_logins, 8, plan.cap).await;
        if plan.phases.stanzas || plan.phases.rtt {
            load::throughput(
                &r.ep,
                p,
                plan.stanza_sessions.min(8),
                plan.stanza_window,
                plan.stanza_time / 4,
                plan.stanza_max,
            )
            .await;
        }
    }
    // Idle memory, before the rounds (and their freed memory) can blur it.
    for r in relays.iter_mut().filter(|_| plan.phases.idle) {
        let idle = load::idle(
            &r.ep,
            r.proc.pid(),
            plan.idle,
            plan.idle_conc,
            plan.idle_settle,
        )
        .await;
        log.line(format!(
            "idle  {:<28} {} sessions in {:.1} s: RSS {} → {} KiB = {:.2} KiB each, {} errors",
            tag(r),
            idle.sessions,
            idle.secs,
            idle.before_kib,
            idle.after_kib,
            idle.per_session_kib().unwrap_or(f64::NAN),
            idle.errors
        ));
        r.results.idle = idle;
    }
    let settle = || tokio::time::sleep(plan.settle);
    for round in 1..=plan.rounds {
        for r in relays.iter_mut() {
            r.results.rounds.push(Round::default());
        }
        for family in [Family::Plain, Family::Tls] {
            let mut idx: Vec<usize> = (0..relays.len())
                .filter(|&i| relays[i].family == family)
                .collect();
            // Turns alternate: whoever went last in one round goes first in the next.
            if round % 2 == 0 {
                idx.reverse();
            }
            let (logins, concs, lat_logins) = match family {
                Family::Plain => (
                    plan.logins_plain,
                    vec![plan.login_conc, plan.login_conc_high],
                    plan.lat_logins_plain,
                ),
                Family::Tls => (plan.logins_tls, vec![plan.login_conc], plan.lat_logins_tls),
            };
            for (k, &conc) in concs.iter().enumerate().filter(|_| plan.phases.login) {
                for &i in &idx {
                    settle().await;
                    let r = &mut relays[i];
                    let c = load::logins(&r.ep, pids(r, sink), logins, conc, plan.cap).await;
                    log.line(login_line(round, &format!("login{conc}"), r, &c));
                    let now = r.results.round();
                    if k == 0 {
                        now.login = c;
                    } else {
                        now.login_high = c;
                    }
                }
            }
            for &i in idx
                .iter()
                .filter(|_| plan.phases.login && family == Family::Tls)
            {
                settle().await;
                let r = &mut relays[i];
                // A resumption store of this relay's own, filled before the interval.
                let ep = Endpoint {
                    addr: r.ep.addr,
                    tls: Some(client::tls_config_resuming()),
                };
                let p = pids(r, sink);
                let primed =
                    load::logins(&ep, p, plan.resume_prime, plan.login_conc, plan.cap).await;
                let mut c =
                    load::logins(&ep, p, plan.logins_resumed, plan.login_conc, plan.cap).await;
                c.errors += primed.errors;
                if c.first_error.is_none() {
                    c.first_error = primed.first_error;
                }
                log.line(login_line(round, "resumed", r, &c));
                r.results.round().resumed = c;
            }
            for pinned in [false, true]
                .into_iter()
                .filter(|_| plan.phases.login_latency)
            {
                for &i in &idx {
                    settle().await;
                    let r = &mut relays[i];
                    let p = pids(r, sink);
                    let (times, c) = maybe_pinned(
                        pinned,
                        p,
                        cpus,
                        load::login_latency(&r.ep, p, lat_logins, plan.cap),
                    )
                    .await;
                    log.line(format!(
                        "r{round} {:<9} {:<28} {:>6} logins one at a time: p50 {:.1} µs, p99 {:.1} µs, {} errors",
                        if pinned { "login1/1" } else { "login1" },
                        tag(r),
                        times.len(),
                        report::quantile_us(&times, 0.5).unwrap_or(f64::NAN),
                        report::quantile_us(&times, 0.99).unwrap_or(f64::NAN),
                        c.errors
                    ));
                    let now = r.results.round();
                    if pinned {
                        now.login_times_pinned = times;
                    } else {
                        now.login_times = times;
                    }
                    now.login_latency.add(&c);
                }
            }
            for &i in idx.iter().filter(|_| plan.phases.stanzas) {
                settle().await;
                let r = &mut relays[i];
                let c = load::throughput(
                    &r.ep,
                    pids(r, sink),
                    plan.stanza_sessions,
                    plan.stanza_window,
                    plan.stanza_time,
                    plan.stanza_max,
                )
                .await;
                log.line(format!(
                    "r{round} stanzas   {:<28} {:>8} in {:.2} s = {:>7.0}/s, relay {:>6.1} ns/stanza (sink {:.1}, gen {:.1}), {} errors",
                    tag(r),
                    c.count,
                    c.secs,
                    c.count as f64 / c.secs,
                    1e9 * c.cpu / c.count.max(1) as f64,
                    1e9 * c.sink_cpu / c.count.max(1) as f64,
                    1e9 * c.gen_cpu / c.count.max(1) as f64,
                    c.errors
                ));
                r.results.round().stanzas = c;
            }
            for pinned in [false, true].into_iter().filter(|_| plan.phases.rtt) {
                for &i in &idx {
                    settle().await;
                    let r = &mut relays[i];
                    let p = pids(r, sink);
                    let (rtt, c) = maybe_pinned(
                        pinned,
                        p,
                        cpus,
                        load::latency(&r.ep, p, plan.rtt_sessions, plan.rtt_trips, plan.cap),
                    )
                    .await;
                    log.line(format!(
                        "r{round} {:<9} {:<28} {:>6} trips: p50 {:.1} µs, p99 {:.1} µs, {} errors",
                        if pinned { "rtt/1" } else { "rtt" },
                        tag(r),
                        rtt.len(),
                        report::quantile_us(&rtt, 0.5).unwrap_or(f64::NAN),
                        report::quantile_us(&rtt, 0.99).unwrap_or(f64::NAN),
                        c.errors
                    ));
                    let now = r.results.round();
                    if pinned {
                        now.rtt_pinned = rtt;
                    } else {
                        now.rtt = rtt;
                    }
                    now.latency.add(&c);
                }
            }
        }
    }
}

/// Wait until a login through `r` works (the relay is up and the sink reachable).
async fn ready(r: &mut Relay) {
    let limit = Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = async { client::login(&r.ep, 0, true, 1).await?.close().await };
        match attempt.await {
            Ok(()) => return,
            Err(e) if Instant::now() > limit => panic!(
                "{} ({:?}) is not relaying logins: {e}\nlog tail:\n{}",
                r.label,
                r.family,
                r.proc.log_tail()
            ),
            Err(_) => {
                r.proc.assert_alive();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a run does, in a sentence.
fn plan_text(plan: &Plan) -> String {
    format!(
        "{} rounds, relays taking turns phase by phase, the order reversed every other \
         round; per relay and round: {} plaintext logins {} at a time and {} more {} at a \
         time; {} TLS logins with full handshakes and {} resuming a session, {} at a time \
         (after {} logins that fill the ticket store); {} plaintext or {} TLS logins one at \
         a time, free and pinned to one CPU; {} sessions × {} stanzas of {} bytes in flight \
         for {:?}; {} session(s) × {} round trips (one stanza in flight), free and pinned to \
         one CPU. RSS at {} idle sessions, once before the rounds.",
        plan.rounds,
        plan.logins_plain,
        plan.login_conc,
        plan.logins_plain,
        plan.login_conc_high,
        plan.logins_tls,
        plan.logins_resumed,
        plan.login_conc,
        plan.resume_prime,
        plan.lat_logins_plain,
        plan.lat_logins_tls,
        plan.stanza_sessions,
        plan.stanza_window,
        client::STANZA_BYTES,
        plan.stanza_time,
        plan.rtt_sessions,
        plan.rtt_trips,
        plan.idle,
    )
}

fn print_report(plan: &Plan, relays: &[Relay], full: bool, elapsed: Duration, log: &Log) {
    log.out("");
    if !full {
        log.out("e2e smoke round (figures are not measurements; run `cargo bench --bench e2e`)");
    }
    let conc = report::Conc {
        low: plan.login_conc,
        high: plan.login_conc_high,
    };
    let mut goals = Vec::new();
    for family in [Family::Plain, Family::Tls] {
        let cols: Vec<(&str, &Results)> = relays
            .iter()
            .filter(|r| r.family == family && r.label != report::BASELINE)
            .map(|r| (r.label, &r.results))
            .collect();
        if cols.len() < 2 {
            continue;
        }
        let (table, verdicts) = report::table(family, &cols, &conc, full);
        log.out(table);
        log.out(format!(
            "CPU while stanzas flowed: {}\n",
            report::cpu_shares(&cols)
        ));
        goals.extend(verdicts);
    }
    let ab: Vec<(Family, &Relay, &Relay)> = [Family::Plain, Family::Tls]
        .into_iter()
        .filter_map(|family| {
            let of = |label| {
                relays
                    .iter()
                    .find(|r| r.family == family && r.label == label)
            };
            Some((family, of("dealer")?, of(report::BASELINE)?))
        })
        .collect();
    if !ab.is_empty() {
        log.out(format!(
            "A/B: this build of dealer ÷ the {} (`--baseline`), for each figure the median \
             of the per-round ratios (min–max over the rounds). Never judged: the goals are \
             dealer ÷ the best HAProxy alone.\n",
            report::BASELINE
        ));
    }
    for (family, d, b) in ab {
        let cols = [(d.label, &d.results), (b.label, &b.results)];
        log.out(report::ab_table(family, &d.results, &b.results, &conc));
        log.out(format!(
            "CPU while stanzas flowed: {}\n",
            report::cpu_shares(&cols)
        ));
    }
    for r in relays {
        if let Some(http) = r.http {
            let m = procs::http_get(http, "/metrics").unwrap_or_default();
            log.out(format!(
                "{} ({:?} clients) relayed {:.0} bytes by splice, {:.0} by copy",
                r.label,
                r.family,
                procs::metric_sum(&m, "dealer_relay_bytes_total", "kind=\"splice\""),
                procs::metric_sum(&m, "dealer_relay_bytes_total", "kind=\"copy\"")
            ));
        }
    }
    log.out(format!(
        "{} Cells: a relay's median over the rounds; ratios: the median of the per-round \
         ratios (min–max over the rounds); goals: judged on dealer ÷ the best HAProxy of \
         the family in each round. Total run time {:.0} s.",
        plan_text(plan),
        elapsed.as_secs_f64()
    ));
    if !goals.is_empty() {
        let missed = goals.iter().filter(|g| g.ends_with("**missed**")).count();
        log.out(format!(
            "\nGoals: {} met, {missed} missed",
            goals.len() - missed
        ));
        for g in &goals {
            log.out(format!("- {g}"));
        }
    }
}
