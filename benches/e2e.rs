//! End-to-end load run: dealer's forward mode beside HAProxy (`mode tcp`, without and
//! with `option splice-auto`) in front of the same backend, in one run, with the
//! relays taking turns phase by phase (dealer, haproxy, haproxy-splice, dealer, …) so
//! drift on a noisy machine hits all alike; one table of ratios at the end.
//!
//! `cargo bench --bench e2e` runs the full plan (about three minutes once built).
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a smoke round of a
//! few logins and stanzas through every relay, which fails on any error. Options after
//! `--` narrow a run down for profiling (see `options`).
//!
//! Layout, all on loopback:
//! - the sink (`e2e/sink.rs`): a minimal XMPP backend, this executable run again as a
//!   child, one port per relay;
//! - five relay processes, each measured alone: dealer with its plaintext listener
//!   (both legs plain: splice), dealer with its Direct TLS listener (TLS terminated,
//!   copy), HAProxy plain, HAProxy plain with `option splice-auto`, HAProxy `ssl crt`;
//! - the load generator (`e2e/client.rs`, `e2e/load.rs`): tokio clients in this
//!   process, from source addresses 127.0.0.2–9.
//!
//! Phases (`e2e/load.rs`): idle memory at 9,000 sessions (first, on fresh processes),
//! then rounds of logins, stanza throughput, round trips, and round trips with every
//! process pinned to one CPU. CPU figures are the relay process's utime + stime over a
//! phase; rates and latencies as the load generator sees them.

#[path = "e2e/client.rs"]
mod client;
#[path = "e2e/load.rs"]
mod load;
#[path = "e2e/procs.rs"]
mod procs;
#[path = "e2e/report.rs"]
mod report;
#[path = "e2e/sink.rs"]
mod sink;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use client::Endpoint;
use load::Pids;
use procs::Proc;
use report::Results;

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
    /// Logins per relay per round, by family.
    logins_plain: usize,
    logins_tls: usize,
    login_conc: usize,
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
    stanzas: bool,
    rtt: bool,
}

const ALL_PHASES: Phases = Phases {
    idle: true,
    login: true,
    stanzas: true,
    rtt: true,
};

const FULL: Plan = Plan {
    rounds: 5,
    phases: ALL_PHASES,
    warmup_logins: 300,
    logins_plain: 3_000,
    logins_tls: 1_000,
    login_conc: 16,
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
    login_conc: 2,
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
    /// dealer's HTTP endpoint (for the relay-kind check).
    http: Option<SocketAddr>,
    results: Results,
}

fn main() {
    if let Ok(n) = std::env::var(sink::ENV) {
        sink::main(n.parse().expect("DEALER_E2E_SINK is a port count"));
    }
    let full = std::env::args().any(|a| a == "--bench");
    let mut plan = if full { FULL } else { SMOKE };
    let only = options(&mut plan);
    let plan = &plan;
    let started = Instant::now();
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
        eprintln!("e2e: haproxy not found; smoke round through dealer only");
    }
    eprintln!(
        "e2e: {} run; dealer binary {dealer_bin}; descriptor limit {nofile}",
        if full { "full" } else { "smoke" }
    );

    let dir = tempfile::tempdir().expect("a temporary directory");
    let sink = procs::sink(dir.path(), if haproxy { 5 } else { 2 });
    let tls = client::tls_config();
    let mut relays = Vec::new();
    let d = procs::dealer(dir.path(), "dealer", sink.ports[0]);
    relays.push(Relay {
        label: "dealer",
        family: Family::Plain,
        proc: d.proc,
        ep: Endpoint {
            addr: d.plain,
            tls: None,
        },
        http: Some(d.http),
        results: Results::default(),
    });
    let d = procs::dealer(dir.path(), "dealer-tls", sink.ports[1]);
    relays.push(Relay {
        label: "dealer",
        family: Family::Tls,
        proc: d.proc,
        ep: Endpoint {
            addr: d.tls,
            tls: Some(tls.clone()),
        },
        http: Some(d.http),
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
                sink.ports[2 + i],
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
        eprintln!("e2e: {} pid {} on {}", tag(r), r.proc.pid(), r.ep.addr);
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
            () = run(plan, &mut relays, &sink, &cpus) => true,
            _ = tokio::signal::ctrl_c() => false,
            _ = term.recv() => false,
        }
    });
    if !finished {
        eprintln!("e2e: interrupted");
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
    print_report(plan, &relays, full, elapsed);
    if errors > 0 {
        for r in &relays {
            if let Some(e) = r.results.first_error() {
                eprintln!(
                    "e2e: {} ({:?}): {} errors, first: {e}\n  relay log tail:\n{}\n  sink log tail:\n{}",
                    r.label,
                    r.family,
                    r.results.errors(),
                    r.proc.log_tail(),
                    sink.proc.log_tail()
                );
            }
        }
        assert!(full, "the smoke round had {errors} errors");
    }
}

/// Options after `--`, to narrow a run down for profiling: `--rounds N`,
/// `--phases idle,login,stanzas,rtt`, `--family plain|tls`. Returns the family.
fn options(plan: &mut Plan) -> Option<Family> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| {
        args.iter().position(|a| a == name).map(|i| {
            args.get(i + 1)
                .unwrap_or_else(|| panic!("{name} needs a value"))
        })
    };
    if let Some(n) = value("--rounds") {
        plan.rounds = n.parse().expect("--rounds N");
    }
    if let Some(list) = value("--phases") {
        let has = |p: &str| list.split(',').any(|x| x == p);
        plan.phases = Phases {
            idle: has("idle"),
            login: has("login"),
            stanzas: has("stanzas"),
            rtt: has("rtt"),
        };
    }
    value("--family").map(|f| match f.as_str() {
        "plain" => Family::Plain,
        "tls" => Family::Tls,
        other => panic!("--family plain|tls, not {other}"),
    })
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

/// Every phase of the plan; `cpus` is the CPU list to restore after pinning.
async fn run(plan: &Plan, relays: &mut [Relay], sink: &procs::Sink, cpus: &str) {
    for r in relays.iter_mut() {
        ready(r).await;
    }
    // Warm up: first-use allocations, pools and page faults out of the figures.
    for r in relays.iter() {
        let p = pids(r, sink);
        load::logins(&r.ep, p, plan.warmup_logins, 8, plan.cap).await;
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
        eprintln!(
            "idle  {:<28} {} sessions in {:.1} s: RSS {} → {} KiB = {:.2} KiB each, {} errors",
            tag(r),
            idle.sessions,
            idle.secs,
            idle.before_kib,
            idle.after_kib,
            idle.per_session_kib().unwrap_or(f64::NAN),
            idle.errors
        );
        r.results.idle = idle;
    }
    let settle = || tokio::time::sleep(plan.settle);
    for round in 1..=plan.rounds {
        for family in [Family::Plain, Family::Tls] {
            let idx: Vec<usize> = (0..relays.len())
                .filter(|&i| relays[i].family == family)
                .collect();
            let logins = match family {
                Family::Plain => plan.logins_plain,
                Family::Tls => plan.logins_tls,
            };
            for &i in idx.iter().filter(|_| plan.phases.login) {
                settle().await;
                let r = &mut relays[i];
                let c = load::logins(&r.ep, pids(r, sink), logins, plan.login_conc, plan.cap).await;
                eprintln!(
                    "r{round} login   {:<28} {:>6} in {:.2} s = {:>7.0}/s, relay {:>6.1} µs/login (sink {:.1}, gen {:.1}), {} errors",
                    tag(r),
                    c.count,
                    c.secs,
                    c.count as f64 / c.secs,
                    1e6 * c.cpu / c.count.max(1) as f64,
                    1e6 * c.sink_cpu / c.count.max(1) as f64,
                    1e6 * c.gen_cpu / c.count.max(1) as f64,
                    c.errors
                );
                r.results.login.add(&c);
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
                eprintln!(
                    "r{round} stanzas {:<28} {:>8} in {:.2} s = {:>7.0}/s, relay {:>6.1} ns/stanza (sink {:.1}, gen {:.1}), {} errors",
                    tag(r),
                    c.count,
                    c.secs,
                    c.count as f64 / c.secs,
                    1e9 * c.cpu / c.count.max(1) as f64,
                    1e9 * c.sink_cpu / c.count.max(1) as f64,
                    1e9 * c.gen_cpu / c.count.max(1) as f64,
                    c.errors
                );
                r.results.stanzas.add(&c);
            }
            for pinned in [false, true] {
                for &i in idx.iter().filter(|_| plan.phases.rtt) {
                    settle().await;
                    let r = &mut relays[i];
                    let p = pids(r, sink);
                    let all = [p.relay, p.sink, std::process::id()];
                    if pinned {
                        procs::pin(&all, &procs::first_cpu(cpus));
                    }
                    let (rtt, c) =
                        load::latency(&r.ep, p, plan.rtt_sessions, plan.rtt_trips, plan.cap).await;
                    if pinned {
                        procs::pin(&all, cpus);
                    }
                    eprintln!(
                        "r{round} rtt{}  {:<28} {:>6} trips: p50 {:.1} µs, p99 {:.1} µs, {} errors",
                        if pinned { "/1" } else { "  " },
                        tag(r),
                        rtt.len(),
                        report::quantile_us(&rtt, 0.5).unwrap_or(f64::NAN),
                        report::quantile_us(&rtt, 0.99).unwrap_or(f64::NAN),
                        c.errors
                    );
                    if pinned {
                        r.results.rtt_pinned.extend(rtt);
                    } else {
                        r.results.rtt.extend(rtt);
                    }
                    r.results.latency.add(&c);
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

fn print_report(plan: &Plan, relays: &[Relay], full: bool, elapsed: Duration) {
    println!();
    if !full {
        println!("e2e smoke round (figures are not measurements; run `cargo bench --bench e2e`)");
    }
    for family in [Family::Plain, Family::Tls] {
        let cols: Vec<(&str, &Results)> = relays
            .iter()
            .filter(|r| r.family == family)
            .map(|r| (r.label, &r.results))
            .collect();
        if cols.len() < 2 {
            continue;
        }
        println!("{}", report::table(family, &cols, full));
        println!("CPU while stanzas flowed: {}\n", report::cpu_shares(&cols));
    }
    for r in relays {
        if let Some(http) = r.http {
            let m = procs::http_get(http, "/metrics").unwrap_or_default();
            println!(
                "dealer ({:?} clients) relayed {:.0} bytes by splice, {:.0} by copy",
                r.family,
                procs::metric_sum(&m, "dealer_relay_bytes_total", "kind=\"splice\""),
                procs::metric_sum(&m, "dealer_relay_bytes_total", "kind=\"copy\"")
            );
        }
    }
    println!(
        "{} rounds; per relay and round: {} plaintext or {} TLS logins ({} at a time); \
         {} sessions × {} stanzas of {} bytes in flight for {:?}; {} session(s) × {} round trips \
         (one stanza in flight), free and pinned to one CPU; RSS at {} idle sessions. \
         Total run time {:.0} s.",
        plan.rounds,
        plan.logins_plain,
        plan.logins_tls,
        plan.login_conc,
        plan.stanza_sessions,
        plan.stanza_window,
        client::STANZA_BYTES,
        plan.stanza_time,
        plan.rtt_sessions,
        plan.rtt_trips,
        plan.idle,
        elapsed.as_secs_f64()
    );
}
