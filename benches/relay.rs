//! The masked-domain rewriting relay beside the plain relays, in one run: the same
//! stream of 200-byte-class stanzas (each naming the backend's internal domain) goes
//! backend → client through `relay::run` (splice, both legs plain TCP) and through
//! `relay::rewrite::relay` (framer + JID rewriting), alternating rounds, and the
//! table gives stanzas/s, MB/s and the ratio. Goal: rewrite ≥ 50% of plain.
//!
//! `cargo bench --bench relay`; under `cargo test` (no `--bench` argument) a small
//! smoke round only.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use dealer::metrics::Metrics;
use dealer::net::Conn;
use dealer::relay::rewrite::{Masking, Start};
use dealer::relay::{Counters, rewrite};
use dealer::xml::FrameLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn stanza(i: usize) -> String {
    format!(
        "<message from='bob@example.com/desk' to='alice@node1.internal/phone' type='chat' id='m{i:08}'>\
         <body>the quick brown fox jumps over the lazy dog {i:08}</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='alice@node1.internal' id='s{i:08}'/></message>"
    )
}

/// A connected pair of loopback sockets.
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = TcpStream::connect(l.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (b, _) = l.accept().await.expect("accept");
    a.set_nodelay(true).ok();
    b.set_nodelay(true).ok();
    (a, b)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Splice,
    Copy,
    Rewrite,
}

/// Push `n` stanzas backend → client through one relay; the time until the client
/// side has read everything.
async fn round(kind: Kind, payload: &[u8], expect: usize) -> Duration {
    let metrics = std::sync::Arc::new(Metrics::new());
    // client_app <-> [client leg | relay | backend leg] <-> backend_app
    let (mut client_app, client_leg) = pair().await;
    let (backend_leg, mut backend_app) = pair().await;
    let m = metrics.clone();
    let relay = async move {
        let metrics = m;
        match kind {
            Kind::Splice => dealer::relay::run(
                Conn::Plain(client_leg),
                BytesMut::new(),
                Conn::Plain(backend_leg),
                BytesMut::new(),
                &metrics,
            )
            .await
            .map(|_| ()),
            Kind::Copy => dealer::relay::copy::relay(
                Conn::Plain(client_leg),
                Conn::Plain(backend_leg),
                &Counters::new(&metrics, "copy"),
            )
            .await
            .map(|_| ()),
            Kind::Rewrite => rewrite::relay(
                (Conn::Plain(client_leg), BytesMut::new()),
                (Conn::Plain(backend_leg), BytesMut::new()),
                Masking {
                    public: "example.com".into(),
                    internal: "node1.internal".into(),
                    own_local: "alice".into(),
                    normalise: dealer::config::Normalise::Nodeprep,
                },
                Start::InStream {
                    client: "stream:stream".into(),
                    backend: "stream:stream".into(),
                },
                FrameLimits::default(),
                Counters::new(&metrics, "rewrite"),
                tokio_util::sync::CancellationToken::new(),
            )
            .await
            .map(|_| ()),
        }
    };
    let relay = tokio::spawn(relay);
    let start = Instant::now();
    let writer = async {
        for chunk in payload.chunks(64 * 1024) {
            backend_app.write_all(chunk).await.expect("backend write");
        }
        backend_app
    };
    let reader = async {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        while got < expect {
            let n = client_app.read(&mut buf).await.expect("client read");
            assert!(n > 0, "relay closed early after {got} of {expect} bytes");
            got += n;
        }
        client_app
    };
    let (backend_app, client_app) = tokio::join!(writer, reader);
    let took = start.elapsed();
    drop((backend_app, client_app));
    let _ = relay.await;
    took
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, rounds) = if full { (200_000, 5) } else { (2_000, 1) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let payload: Vec<u8> = (0..n).flat_map(|i| stanza(i).into_bytes()).collect();
    let mut rewritten = Vec::new();
    let mut expect_rewrite = 0;
    for i in 0..n {
        dealer::rewrite::rewrite(
            stanza(i).as_bytes(),
            dealer::rewrite::Rule::Mask {
                internal: "node1.internal",
                public: "example.com",
            },
            &mut rewritten,
        )
        .expect("rewrite");
        expect_rewrite += rewritten.len();
    }
    assert!(!String::from_utf8_lossy(&rewritten).contains("internal"));
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds {
        times[0].push(rt.block_on(round(Kind::Splice, &payload, payload.len())));
        times[1].push(rt.block_on(round(Kind::Copy, &payload, payload.len())));
        times[2].push(rt.block_on(round(Kind::Rewrite, &payload, expect_rewrite)));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (plain, copy, rw) = (
        median(&mut times[0]),
        median(&mut times[1]),
        median(&mut times[2]),
    );
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let mbps = |bytes: usize, d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    println!(
        "relay throughput, {n} stanzas of ~{} bytes, backend -> client, median of {rounds} alternating rounds",
        payload.len() / n
    );
    println!("| relay | stanzas/s | MB/s |");
    println!("|---|---:|---:|");
    println!(
        "| splice (plain) | {:.0} | {:.1} |",
        rate(plain),
        mbps(payload.len(), plain)
    );
    println!(
        "| copy (the relay of TLS legs, here over plain legs) | {:.0} | {:.1} |",
        rate(copy),
        mbps(payload.len(), copy)
    );
    println!(
        "| rewrite (masked) | {:.0} | {:.1} |",
        rate(rw),
        mbps(expect_rewrite, rw)
    );
    let ratio = rate(rw) / rate(plain);
    println!(
        "rewrite / splice = {:.2} (goal >= 0.50: {}); rewrite / copy = {:.2}",
        ratio,
        if ratio >= 0.5 { "met" } else { "missed" },
        rate(rw) / rate(copy)
    );
}
