//! The masked-domain rewriting relay beside the plain relays, in one run: the same
//! stream of 250-byte stanzas (each naming the backend's internal domain twice) goes
//! backend → client through `relay::run` (splice, both legs plain TCP) and through
//! `relay::masked::relay` (framer + JID rewriting), alternating rounds, and the
//! table gives stanzas/s, MB/s and the ratio. Goal: rewrite ≥ 50% of plain.
//!
//! Two more rows show the shape of production, where the client leg is TLS (STARTTLS
//! is mandatory for c2s): there the plain relay is the copy relay, and both pay for
//! encryption. Last, framing + rewriting alone, in memory: the CPU floor of the
//! rewriting relay, without sockets.
//!
//! Each relay runs alone on a thread of its own, so beside the rates the table gives
//! the relay's own CPU time a stanza: steadier than the rates on a shared machine,
//! and the cost an operator pays per stanza whatever the load.
//!
//! `cargo bench --bench relay`; under `cargo test` (no `--bench` argument) a small
//! smoke round only.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use dealer::metrics::Metrics;
use dealer::net::Conn;
use dealer::relay::masked::{Masking, Start};
use dealer::relay::{Counters, masked};
use dealer::xml::FrameLimits;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
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
    CopyTls,
    RewriteTls,
}

/// TLS on the client leg, as a c2s session has it: the relay's side is the server,
/// with the demo certificate of `conf/`.
struct Tls {
    server: tokio_rustls::TlsAcceptor,
    client: tokio_rustls::TlsConnector,
}

impl Tls {
    fn new() -> Tls {
        let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let certs = CertificateDer::pem_file_iter(conf.join("example.com.crt"))
            .expect("conf/example.com.crt")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate");
        let key = PrivateKeyDer::from_pem_file(conf.join("example.com.key")).expect("key");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        Tls {
            server: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server)),
            // Encrypts without checking the self-signed demo certificate.
            client: tokio_rustls::TlsConnector::from(dealer::tls::backend_client_config()),
        }
    }
}

/// CPU time this thread has run, in nanoseconds (Linux: `/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat: CPU time")
}

/// What one round measured.
#[derive(Clone, Copy)]
struct Round {
    /// Until the client side has read everything.
    took: Duration,
    /// CPU the relay's own thread spent (after any TLS handshake).
    relay_cpu: Duration,
}

/// Push `n` stanzas backend → client through one relay. The relay runs alone on a
/// thread of its own (a current-thread runtime), so its CPU time is its own; the
/// two applications run on this thread.
async fn round(kind: Kind, payload: &[u8], expect: usize, tls: &Tls) -> Round {
    // client_app <-> [client leg | relay | backend leg] <-> backend_app
    let (client_app, client_leg) = pair().await;
    let (backend_leg, mut backend_app) = pair().await;
    let with_tls = matches!(kind, Kind::CopyTls | Kind::RewriteTls);
    let client_leg = client_leg.into_std().expect("client leg");
    let backend_leg = backend_leg.into_std().expect("backend leg");
    let acceptor = tls.server.clone();
    let relay = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("relay runtime");
        rt.block_on(async move {
            let metrics = std::sync::Arc::new(Metrics::new());
            let client_leg = TcpStream::from_std(client_leg).expect("client leg");
            let backend_leg = Conn::Plain(TcpStream::from_std(backend_leg).expect("backend leg"));
            let client_leg = if with_tls {
                let s = acceptor
                    .accept(dealer::net::TlsTcp::direct(client_leg))
                    .await
                    .expect("server handshake");
                Conn::Tls(Box::new(s.into()))
            } else {
                Conn::Plain(client_leg)
            };
            let cpu = thread_cpu_ns();
            let _ = match kind {
                Kind::Splice => dealer::relay::run(
                    client_leg,
                    BytesMut::new(),
                    backend_leg,
                    BytesMut::new(),
                    metrics.clone(),
                )
                .await
                .map(|_| ()),
                Kind::Copy | Kind::CopyTls => dealer::relay::copy::relay(
                    client_leg,
                    backend_leg,
                    &Counters::new(&metrics, dealer::metrics::RelayKind::Copy),
                )
                .await
                .map(|_| ()),
                Kind::Rewrite | Kind::RewriteTls => masked::relay(
                    (client_leg, BytesMut::new()),
                    (backend_leg, BytesMut::new()),
                    Masking {
                        public: "example.com".into(),
                        internal: "node1.internal".into(),
                        own_local: "alice".into(),
                        normalise: dealer::config::Normalise::Nodeprep,
                        services: Vec::new(),
                    },
                    Start::InStream {
                        client: "stream:stream".into(),
                        backend: "stream:stream".into(),
                    },
                    FrameLimits::default(),
                    Counters::new(&metrics, dealer::metrics::RelayKind::Rewrite),
                    tokio_util::sync::CancellationToken::new(),
                )
                .await
                .map(|_| ()),
            };
            Duration::from_nanos(thread_cpu_ns() - cpu)
        })
    });
    let mut client_app: Box<dyn AsyncRead + Unpin + Send> = if with_tls {
        let name = ServerName::try_from("example.com").expect("name");
        Box::new(
            tls.client
                .connect(name, client_app)
                .await
                .expect("client handshake"),
        )
    } else {
        Box::new(client_app)
    };
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
    // Closing both ends ends the relay.
    drop((backend_app, client_app));
    let relay_cpu = relay.join().expect("relay thread");
    Round { took, relay_cpu }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n, rounds) = if full { (200_000, 9) } else { (2_000, 1) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let payload: Vec<u8> = (0..n).flat_map(|i| stanza(i).into_bytes()).collect();
    let mut rewritten = Vec::new();
    let mut expect_rewrite = 0;
    for i in 0..n {
        dealer::masking::rewrite(
            stanza(i).as_bytes(),
            dealer::masking::Rule::Mask {
                internal: "node1.internal",
                public: "example.com",
                services: &[],
            },
            &mut rewritten,
        )
        .expect("rewrite");
        expect_rewrite += rewritten.len();
    }
    assert!(!String::from_utf8_lossy(&rewritten).contains("internal"));
    let tls = rt.block_on(async { Tls::new() });
    let kinds = [
        Kind::Splice,
        Kind::Copy,
        Kind::Rewrite,
        Kind::CopyTls,
        Kind::RewriteTls,
    ];
    let mut times = vec![Vec::new(); kinds.len()];
    let mut cpus = vec![Vec::new(); kinds.len()];
    for _ in 0..rounds {
        for (i, &kind) in kinds.iter().enumerate() {
            let expect = if matches!(kind, Kind::Rewrite | Kind::RewriteTls) {
                expect_rewrite
            } else {
                payload.len()
            };
            let r = rt.block_on(round(kind, &payload, expect, &tls));
            times[i].push(r.took);
            cpus[i].push(r.relay_cpu);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let t: Vec<Duration> = times.iter_mut().map(median).collect();
    let cpu: Vec<Duration> = cpus.iter_mut().map(median).collect();
    let in_memory = framing_alone(&payload, rounds);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let mbps = |bytes: usize, d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    let per_stanza = |d: Duration| d.as_secs_f64() * 1e9 / n as f64;
    println!(
        "relay throughput, {n} stanzas of ~{} bytes, backend -> client, median of {rounds} alternating rounds",
        payload.len() / n
    );
    println!("| relay | client leg | stanzas/s | MB/s | relay CPU, ns/stanza |");
    println!("|---|---|---:|---:|---:|");
    let rows = [
        ("splice (the plain relay)", "TCP", 0, payload.len()),
        (
            "copy (the plain relay of TLS legs)",
            "TCP",
            1,
            payload.len(),
        ),
        ("rewrite (masked)", "TCP", 2, expect_rewrite),
        (
            "copy (the plain relay of TLS legs)",
            "TLS 1.3",
            3,
            payload.len(),
        ),
        ("rewrite (masked)", "TLS 1.3", 4, expect_rewrite),
    ];
    for (name, leg, i, bytes) in rows {
        println!(
            "| {name} | {leg} | {:.0} | {:.1} | {:.0} |",
            rate(t[i]),
            mbps(bytes, t[i]),
            per_stanza(cpu[i])
        );
    }
    println!(
        "| framing + rewriting alone, in memory | - | {:.0} | {:.1} | {:.0} |",
        rate(in_memory),
        mbps(expect_rewrite, in_memory),
        per_stanza(in_memory)
    );
    let ratio = rate(t[2]) / rate(t[0]);
    println!(
        "rewrite / splice = {:.2} (goal >= 0.50: {}); rewrite / copy = {:.2}; over a TLS client leg, rewrite / copy = {:.2}",
        ratio,
        if ratio >= 0.5 { "met" } else { "missed" },
        rate(t[2]) / rate(t[1]),
        rate(t[4]) / rate(t[3]),
    );
}

/// The rewriting relay's per-stanza work without sockets: the framer visiting for the
/// rewriter and the rewritten frames appended to a batch, over the payload in 64 KiB
/// reads. The best of `rounds`.
fn framing_alone(payload: &[u8], rounds: usize) -> Duration {
    use dealer::masking::{Rewriter, Rule};
    use dealer::xml::{Frame, Framer};
    let rule = Rule::Mask {
        internal: "node1.internal",
        public: "example.com",
        services: &[],
    };
    let mut best = Duration::MAX;
    let mut out = Vec::with_capacity(128 * 1024);
    for _ in 0..rounds {
        let mut framer = Framer::in_stream(FrameLimits::default(), "stream:stream");
        let mut rw = Rewriter::new(rule);
        let start = Instant::now();
        let mut at = 0;
        let mut read_end = 0;
        while at < payload.len() {
            read_end = (read_end + 64 * 1024).min(payload.len());
            while let Some(f) = framer
                .parse_with(&payload[at..read_end], &mut rw)
                .expect("well-formed")
            {
                let len = f.len();
                if let Frame::Element { .. } = f {
                    rw.emit(&payload[at..at + len], &mut out);
                }
                at += len;
            }
            std::hint::black_box(&out);
            out.clear();
        }
        best = best.min(start.elapsed());
    }
    best
}
