//! Inbound federation throughput: a remote server (this bench) sends stanzas for
//! users of example.com to dealer's `listen.s2s`; dealer checks its dialback with the
//! remote's authoritative server (this bench), routes each stanza by its addressee
//! (hash over two backends) and delivers it over the s2s links it opens to the two
//! backends (sinks in this bench that accept dialback and count stanzas).
//!
//! After one unmeasured warm-up round (dealer opens its links to the backends), each
//! round sends 200,000 stanzas on a new inbound stream and times them from the first
//! write until the sinks have counted them all; dealer's CPU time over that interval
//! comes from `/proc/PID/task/*/schedstat` (nanoseconds, summed over its threads;
//! `common/machine.rs`). Printed: each round's stanzas/s and µs of dealer CPU per
//! stanza, then their medians and spreads (min–max) over the rounds, and the issue's
//! goal (≤ 2.0 µs a stanza) judged on the median. A full run also writes its output to
//! `benches/results/s2s-<date>-<commit>.txt`, headed by a description of the machine.
//!
//! `cargo bench --bench s2s` (nine rounds); under `cargo test` a small smoke round only.

#[path = "common/machine.rs"]
mod machine;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TAIL: &str = "xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' version='1.0'>";

/// A peer's side of stream set-up: answer its header with ours and dialback features.
async fn answer_header(s: &mut TcpStream, from: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("<stream:stream") || !got.contains(&b'>') {
        let n = s.read(&mut buf).await.expect("read header");
        assert!(n > 0, "peer closed before its header");
        got.extend_from_slice(&buf[..n]);
    }
    s.write_all(
        format!("<stream:stream id='bench{}' from='{from}' {TAIL}<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>", got.len()).as_bytes(),
    )
    .await
    .expect("write header");
    got
}

/// A backend: accepts any dialback (it trusts this bench), then counts `</message>`s.
async fn sink(l: TcpListener, count: Arc<AtomicU64>) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let count = count.clone();
        tokio::spawn(async move {
            let mut seen = answer_header(&mut s, "example.com").await;
            let finder = memchr::memmem::Finder::new(b"</message>");
            let mut buf = vec![0u8; 256 * 1024];
            let mut valid_sent = false;
            let mut carry: Vec<u8> = Vec::new();
            loop {
                if !valid_sent {
                    let text = String::from_utf8_lossy(&seen).into_owned();
                    if let Some(i) = text.find("<db:result ") {
                        let from = text[i..]
                            .split("from='")
                            .nth(1)
                            .and_then(|r| r.split('\'').next())
                            .unwrap_or("");
                        let reply =
                            format!("<db:result from='example.com' to='{from}' type='valid'/>");
                        s.write_all(reply.as_bytes())
                            .await
                            .expect("dialback answer");
                        valid_sent = true;
                        let end = text[i..]
                            .find("</db:result>")
                            .map(|e| i + e + 12)
                            .unwrap_or(text.len());
                        carry = seen[end..].to_vec();
                    }
                }
                if valid_sent && !carry.is_empty() {
                    count.fetch_add(finder.find_iter(&carry).count() as u64, Ordering::Relaxed);
                    let keep = carry.len().saturating_sub(9);
                    carry.drain(..keep);
                }
                let n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if valid_sent {
                    carry.extend_from_slice(&buf[..n]);
                } else {
                    seen.extend_from_slice(&buf[..n]);
                }
            }
        });
    }
}

/// The remote domain's authoritative server: vouches for every key.
async fn authority(l: TcpListener) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut got = answer_header(&mut s, "bench.remote").await;
            let mut buf = [0u8; 4096];
            loop {
                let text = String::from_utf8_lossy(&got).into_owned();
                if let Some(i) = text.find("<db:verify ") {
                    let id = text[i..]
                        .split("id='")
                        .nth(1)
                        .and_then(|r| r.split('\'').next())
                        .unwrap_or("");
                    let reply = format!(
                        "<db:verify from='bench.remote' to='example.com' id='{id}' type='valid'/>"
                    );
                    let _ = s.write_all(reply.as_bytes()).await;
                    return;
                }
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        });
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, rounds, warmup) = if full {
        (200_000u64, 9, 50_000u64)
    } else {
        (2_000u64, 1, 0)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let count = Arc::new(AtomicU64::new(0));
    let (sink1, sink2, auth) = rt.block_on(async {
        (
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
    });
    let addr = |l: &TcpListener| l.local_addr().unwrap();
    let (a1, a2, aa) = (addr(&sink1), addr(&sink2), addr(&auth));
    rt.spawn(sink(sink1, count.clone()));
    rt.spawn(sink(sink2, count.clone()));
    rt.spawn(authority(auth));
    let s2s: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("dealer.yaml");
    std::fs::write(
        &cfg,
        format!(
            "domain: example.com\nlisten:\n  s2s: [\"{s2s}\"]\n  s2s_internal: [\"127.0.0.1:{}\"]\n\
             c2s: {{ mode: redirect }}\nrouting: {{ strategy: hash }}\n\
             backends:\n  node1: {{ s2s: \"{a1}\", redirect: \"127.0.0.1:1\" }}\n  node2: {{ s2s: \"{a2}\", redirect: \"127.0.0.1:2\" }}\n\
             s2s: {{ dialback_secret: bench, domain_backend: node1, routes: {{ bench.remote: \"{aa}\" }} }}\n\
             limits: {{ max_connections_per_source: 0, logins_per_source_per_second: 0 }}\n",
            free_port()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("dealer.log")).unwrap();
    let mut dealer = std::process::Command::new(env!("CARGO_BIN_EXE_dealer"))
        .arg("--config")
        .arg(&cfg)
        .env("DEALER_LOG", "warn")
        .stderr(log)
        .spawn()
        .expect("starting dealer");
    let pid = dealer.id();
    let dealer_log = dir.path().join("dealer.log");
    let round =
        |label: String, n: u64| rt.block_on(one_round(s2s, &count, pid, n, label, &dealer_log));
    let mut out = Output::new(full.then(|| machine::results_path("s2s")));
    out.line(format!(
        "s2s: {} run on {} (UTC)",
        if full { "full" } else { "smoke" },
        machine::today()
    ));
    for l in machine::describe() {
        out.line(l);
    }
    out.line(format!(
        "plan: {rounds} rounds of {n} stanzas from one remote stream (a new one each \
         round) to two backends, after a warm-up round of {warmup}"
    ));
    if warmup > 0 {
        round("warm-up".into(), warmup);
    }
    let mut rates = Vec::new();
    let mut cpu_us = Vec::new();
    for r in 1..=rounds {
        let (elapsed, cpu) = round(format!("r{r}"), n);
        let rate = n as f64 / elapsed.as_secs_f64();
        let us = cpu * 1e6 / n as f64;
        out.line(format!(
            "r{r}: {n} stanzas in {:.3} s = {rate:.0}/s, dealer CPU {:.3} s = {us:.3} µs/stanza",
            elapsed.as_secs_f64(),
            cpu
        ));
        rates.push(rate);
        cpu_us.push(us);
    }
    let _ = dealer.kill();
    let _ = dealer.wait();
    let (rate, cpu) = (Spread::of(&rates), Spread::of(&cpu_us));
    let goal = if !full {
        "(smoke)"
    } else if cpu.median <= GOAL_US {
        "met"
    } else {
        "**missed**"
    };
    out.line("");
    out.line(format!(
        "s2s inbound: {n} stanzas from one remote stream to two backends, median (min–max) \
         of {rounds} rounds"
    ));
    out.line("| stanzas/s | dealer CPU per stanza, µs | goal |");
    out.line("|---:|---:|---|");
    out.line(format!(
        "| {:.0} ({:.0}–{:.0}) | {:.3} ({:.3}–{:.3}) | ≤ {GOAL_US:.1} µs/stanza: {goal} |",
        rate.median, rate.min, rate.max, cpu.median, cpu.min, cpu.max
    ));
    out.line(format!(
        "goal ≤ {GOAL_US:.1} µs/stanza: {goal} (median {:.3} µs)",
        cpu.median
    ));
    if let Some(p) = &out.path {
        eprintln!("s2s: this output is in {}", p.display());
    }
}

/// The goal: dealer's CPU time per inbound stanza, µs.
const GOAL_US: f64 = 2.0;

/// Lines to stdout, and in a full run to a results file too.
struct Output {
    file: Option<std::fs::File>,
    path: Option<std::path::PathBuf>,
}

impl Output {
    fn new(path: Option<std::path::PathBuf>) -> Output {
        let file = path
            .as_ref()
            .map(|p| std::fs::File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
        Output { file, path }
    }

    fn line(&mut self, text: impl AsRef<str>) {
        use std::io::Write as _;
        println!("{}", text.as_ref());
        if let Some(f) = &mut self.file {
            writeln!(f, "{}", text.as_ref()).expect("writing the results file");
        }
    }
}

/// Median, min and max of some per-round figures.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(v: &[f64]) -> Spread {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let k = s.len();
        assert!(k > 0, "no rounds");
        Spread {
            median: if k % 2 == 1 {
                s[k / 2]
            } else {
                (s[k / 2 - 1] + s[k / 2]) / 2.0
            },
            min: s[0],
            max: s[k - 1],
        }
    }
}

/// One round: a new inbound stream from the remote, dialback, then `n` stanzas; returns
/// the time from the first write until the sinks counted them all, and dealer's CPU
/// seconds over that time.
async fn one_round(
    s2s: SocketAddr,
    count: &AtomicU64,
    pid: u32,
    n: u64,
    label: String,
    dealer_log: &std::path::Path,
) -> (Duration, f64) {
    let mut s = None;
    for _ in 0..100 {
        if let Ok(c) = TcpStream::connect(s2s).await {
            s = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = s.unwrap_or_else(|| {
        panic!(
            "dealer's s2s listener never came up:\n{}",
            std::fs::read_to_string(dealer_log).unwrap_or_default()
        )
    });
    s.set_nodelay(true).ok();
    s.write_all(format!("<stream:stream from='bench.remote' to='example.com' {TAIL}").as_bytes())
        .await
        .unwrap();
    s.write_all(b"<db:result from='bench.remote' to='example.com'>any</db:result>")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("type='valid'") {
        let k = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("dialback in time")
            .unwrap();
        assert!(k > 0, "dealer closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..k]);
    }
    let before = count.load(Ordering::Relaxed);
    let payload: Vec<u8> = (0..n)
        .flat_map(|i| {
            format!(
                "<message from='rob@bench.remote/r' to='user{}@example.com' type='chat' id='{label}m{i}'><body>hello from the federation, stanza {i:08}</body></message>",
                i % 1000
            )
            .into_bytes()
        })
        .collect();
    let cpu0 = machine::cpu_of(pid);
    let t0 = Instant::now();
    for chunk in payload.chunks(64 * 1024) {
        s.write_all(chunk).await.unwrap();
    }
    let limit = Instant::now() + Duration::from_secs(120);
    while count.load(Ordering::Relaxed) < before + n {
        assert!(
            Instant::now() < limit,
            "only {} of {n} arrived; dealer log:\n{}",
            count.load(Ordering::Relaxed) - before,
            std::fs::read_to_string(dealer_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = t0.elapsed();
    (elapsed, machine::cpu_of(pid) - cpu0)
}
