//! Inbound federation throughput: a remote server (this bench) sends stanzas for
//! users of example.com to dealer's `listen.s2s`; dealer checks its dialback with the
//! remote's authoritative server (this bench), routes each stanza by its addressee
//! (hash over two backends) and delivers it over the s2s links it opens to the two
//! backends (sinks in this bench that accept dialback and count stanzas). Reports
//! stanzas/s end to end and dealer's CPU time per stanza (from /proc).
//!
//! `cargo bench --bench s2s`; under `cargo test` a small smoke round only.

use std::io::Write as _;
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

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
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
    let (n, rounds) = if full { (200_000u64, 3) } else { (2_000u64, 1) };
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
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let mut results = Vec::new();
    for round in 0..rounds {
        let (elapsed, cpu) = rt.block_on(async {
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
                    std::fs::read_to_string(dir.path().join("dealer.log")).unwrap_or_default()
                )
            });
            s.set_nodelay(true).ok();
            s.write_all(format!("<stream:stream from='bench.remote' to='example.com' {TAIL}").as_bytes()).await.unwrap();
            s.write_all(b"<db:result from='bench.remote' to='example.com'>any</db:result>").await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&got).contains("type='valid'") {
                let k = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("dialback in time").unwrap();
                assert!(k > 0, "dealer closed: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..k]);
            }
            let before = count.load(Ordering::Relaxed);
            let payload: Vec<u8> = (0..n)
                .flat_map(|i| {
                    format!(
                        "<message from='rob@bench.remote/r' to='user{}@example.com' type='chat' id='r{round}m{i}'><body>hello from the federation, stanza {i:08}</body></message>",
                        i % 1000
                    )
                    .into_bytes()
                })
                .collect();
            let cpu0 = cpu_ticks(pid);
            let t0 = Instant::now();
            for chunk in payload.chunks(64 * 1024) {
                s.write_all(chunk).await.unwrap();
            }
            let limit = Instant::now() + Duration::from_secs(120);
            while count.load(Ordering::Relaxed) < before + n {
                assert!(Instant::now() < limit, "only {} of {n} arrived", count.load(Ordering::Relaxed) - before);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let elapsed = t0.elapsed();
            (elapsed, cpu_ticks(pid) - cpu0)
        });
        results.push((elapsed, cpu));
    }
    let _ = dealer.kill();
    let _ = dealer.wait();
    results.sort();
    let (elapsed, cpu) = results[results.len() / 2];
    let rate = n as f64 / elapsed.as_secs_f64();
    let cpu_ns = cpu as f64 / ticks_per_sec * 1e9 / n as f64;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "s2s inbound: {n} stanzas from one remote stream to two backends (median of {rounds})"
    );
    let _ = writeln!(out, "| stanzas/s | dealer CPU per stanza |");
    let _ = writeln!(out, "|---:|---:|");
    let _ = writeln!(out, "| {rate:.0} | {:.2} µs |", cpu_ns / 1000.0);
}
