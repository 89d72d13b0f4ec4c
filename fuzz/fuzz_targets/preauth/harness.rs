//! The `preauth` target's world and one iteration. Once per process: two fake backends
//! (`backend`) and a real dealer (`dealer::app::run`, the same assembly `dealer
//! --config` runs) on one single-threaded tokio runtime on loopback, configured by a
//! YAML file in a temporary folder. Per input: a fresh client connection to one of
//! dealer's three c2s listeners (STARTTLS off, optional, required), the transcript
//! written segment by segment, each followed by a wait until dealer's runtime has had
//! nothing left to do for a moment; then the connection is closed, the backends'
//! connections of this iteration end, and any violation the backends recorded is a
//! panic that names the transcript and what the backends saw.
//!
//! Input: `L SCRIPT \n TRANSCRIPT`. The first line (at most 64 bytes; without a
//! newline the whole input is the transcript) picks the listener with its first byte
//! (`0` off, `1` optional, `2` required; any byte, modulo 3) and gives the backend
//! script, one step per element a backend receives (see `backend::STEPS`). The
//! transcript is split on NUL bytes (never valid in XML) into the segments written
//! one after another.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::backend::{self, Shared};

/// How long dealer's runtime must have been idle (parked) to call the exchange
/// settled; `PREAUTH_QUIET_US` overrides it.
fn quiet() -> Duration {
    static Q: OnceLock<Duration> = OnceLock::new();
    *Q.get_or_init(|| {
        let us = std::env::var("PREAUTH_QUIET_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(400);
        Duration::from_micros(us)
    })
}

/// At most this long for one segment to settle, and for one whole iteration.
const SEGMENT_LIMIT: Duration = Duration::from_millis(150);
const ITERATION_LIMIT: Duration = Duration::from_millis(600);
const MAX_SEGMENTS: usize = 24;

// The runtime's park hooks: how many times it parked, whether it is parked, since when.
static PARKS: AtomicU64 = AtomicU64::new(0);
static PARKED: AtomicBool = AtomicBool::new(false);
static PARKED_AT: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

pub struct World {
    pub listeners: [SocketAddr; 3],
    pub shared: Arc<Shared>,
}

pub fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(start)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start() -> World {
    if std::env::var_os("DEALER_LOG").is_some() {
        dealer::logging::init();
    }
    epoch();
    let b1 = std::net::TcpListener::bind("127.0.0.1:0").expect("backend listener");
    let b2 = std::net::TcpListener::bind("127.0.0.1:0").expect("backend listener");
    let ports = [free_port(), free_port(), free_port()];
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf");
    let yaml = format!(
        r#"domain: {domain}
tls: {{ cert: "{conf}/example.com.crt", key: "{conf}/example.com.key" }}
listen:
  c2s:
    - {{ addr: "127.0.0.1:{p0}", starttls: off }}
    - {{ addr: "127.0.0.1:{p1}", starttls: optional }}
    - {{ addr: "127.0.0.1:{p2}", starttls: required }}
c2s:
  mode: forward
  mechanisms: [SCRAM-SHA-1, PLAIN]
  legacy_auth: true
  registration: true
domains: shared
routing:
  strategy: ranges
  normalise: nodeprep
  ranges:
    - {{ from: a, to: m, backend: node1 }}
    - {{ from: n, to: z, backend: node2 }}
  default: node1
backends:
  node1: {{ c2s: "{b1}" }}
  node2: {{ c2s: "{b2}" }}
health: {{ interval: 1h, timeout: 2s }}
shutdown: {{ grace: 1s }}
limits:
  handshake_timeout: 10s
  backend_connect_timeout: 2s
  max_header_bytes: 2048
  max_stanza_bytes: 8192
  max_depth: 16
  max_attributes: 16
  max_connections: 2000
  max_connections_per_source: 0
  logins_per_source_per_second: 0
  max_failed_logins: 0
"#,
        domain = backend::DOMAIN,
        p0 = ports[0],
        p1 = ports[1],
        p2 = ports[2],
        b1 = b1.local_addr().unwrap(),
        b2 = b2.local_addr().unwrap(),
    );
    let dir = std::env::temp_dir().join(format!("dealer-fuzz-preauth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("dealer.yaml");
    std::fs::write(&path, yaml).expect("config");

    let health = dealer::snapshot::HealthRegistry::default();
    let snap = dealer::snapshot::Snapshot::load(&path, 1, &health)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Read once: nothing reloads it (`Dealer::new` gets no path).
    let _ = std::fs::remove_dir_all(&dir);
    let shared = Shared::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(|| {
            PARKED_AT.store(now_ns(), Ordering::SeqCst);
            PARKED.store(true, Ordering::SeqCst);
            PARKS.fetch_add(1, Ordering::SeqCst);
        })
        .on_thread_unpark(|| PARKED.store(false, Ordering::SeqCst))
        .build()
        .expect("runtime");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let s = shared.clone();
    std::thread::Builder::new()
        .name("dealer".into())
        .spawn(move || {
            rt.block_on(async move {
                for (i, l) in [b1, b2].into_iter().enumerate() {
                    l.set_nonblocking(true).unwrap();
                    let l = tokio::net::TcpListener::from_std(l).unwrap();
                    tokio::spawn(backend::serve(l, i, s.clone()));
                }
                let listeners = dealer::app::Listeners::bind(&snap)
                    .await
                    .expect("binding dealer's listeners");
                let dealer = dealer::app::Dealer::new(
                    snap,
                    health,
                    None,
                    Arc::new(dealer::systemd::Notifier::none()),
                );
                let _ = s.snapshot.set(dealer.snapshot.clone());
                // As `dealer::app::start` does: learn the backends' offer first.
                dealer::checks::check_all(&dealer.checker).await;
                ready_tx.send(()).unwrap();
                dealer::app::run(
                    listeners,
                    dealer,
                    std::future::pending::<dealer::shutdown::Stop>(),
                )
                .await;
            })
        })
        .expect("dealer thread");
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("dealer did not start");
    // `run` checks the backends once more as it starts: let that pass.
    std::thread::sleep(Duration::from_millis(50));
    settle(
        Mark::now(false),
        None,
        &mut Vec::new(),
        &mut false,
        Duration::from_secs(1),
    );
    let listeners = ports.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    World { listeners, shared }
}

/// When the client last did something dealer must react to, and whether that surely
/// wakes dealer's runtime (bytes written do; a close may find nothing left to close).
#[derive(Clone, Copy)]
struct Mark {
    parks: u64,
    at: u64,
    wakes: bool,
}

impl Mark {
    fn now(wakes: bool) -> Mark {
        Mark {
            parks: PARKS.load(Ordering::SeqCst),
            at: now_ns(),
            wakes,
        }
    }
}

/// Whether dealer's runtime has been parked for `quiet()` since `m` (and, when `m`
/// surely woke it, has parked again since).
fn idle_since(m: Mark) -> bool {
    let since = PARKED_AT.load(Ordering::SeqCst).max(m.at);
    (!m.wakes || PARKS.load(Ordering::SeqCst) > m.parks)
        && PARKED.load(Ordering::SeqCst)
        && now_ns().saturating_sub(since) >= quiet().as_nanos() as u64
}

/// Read what dealer sent (without blocking) into `out`; `closed` once it closed.
fn drain(s: &mut TcpStream, out: &mut Vec<u8>, closed: &mut bool) {
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                *closed = true;
                return;
            }
            Ok(n) => {
                if out.len() < 65536 {
                    out.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                *closed = true;
                return;
            }
        }
    }
}

/// Wait until dealer's runtime is idle after `g` (`idle_since`), reading what it sends
/// meanwhile; at most `limit`.
fn settle(
    g: Mark,
    mut s: Option<&mut TcpStream>,
    out: &mut Vec<u8>,
    closed: &mut bool,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    let t0 = Instant::now();
    loop {
        if let Some(s) = s.as_deref_mut()
            && !*closed
        {
            drain(s, out, closed);
        }
        if idle_since(g) || Instant::now() >= deadline {
            if std::env::var_os("PREAUTH_DEBUG").is_some() {
                eprintln!(
                    "settle {:?} idle={} parks={} parked={}",
                    t0.elapsed(),
                    idle_since(g),
                    PARKS.load(Ordering::SeqCst) - g.parks,
                    PARKED.load(Ordering::SeqCst)
                );
            }
            return;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// A parsed input.
pub struct Input<'a> {
    pub listener: usize,
    pub script: &'a [u8],
    pub segments: Vec<&'a [u8]>,
}

impl<'a> Input<'a> {
    pub fn parse(data: &'a [u8]) -> Input<'a> {
        let (head, transcript) = match data.iter().take(64).position(|b| *b == b'\n') {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (&b""[..], data),
        };
        let listener = head
            .first()
            .map_or(0, |b| (b.wrapping_sub(b'0') % 3) as usize);
        let script = head.get(1..).unwrap_or(&[]);
        let segments = transcript
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .take(MAX_SEGMENTS)
            .collect();
        Input {
            listener,
            script,
            segments,
        }
    }
}

/// Write all of `data`, reading dealer's answers while its window is full.
fn write_all(s: &mut TcpStream, mut data: &[u8], out: &mut Vec<u8>, closed: &mut bool) {
    let deadline = Instant::now() + SEGMENT_LIMIT;
    while !data.is_empty() && !*closed {
        match s.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                drain(s, out, closed);
                if Instant::now() > deadline {
                    return;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => *closed = true,
        }
    }
}

/// Run one transcript against dealer; panic if a backend saw a violation.
pub fn run_one(data: &[u8]) {
    let w = world();
    let input = Input::parse(data);
    w.shared.begin(input.script);
    let started = Instant::now();
    let mut out = Vec::new();
    let mut closed = false;
    let mut written = 0usize;
    let mut s = TcpStream::connect(w.listeners[input.listener]).expect("connect to dealer");
    s.set_nodelay(true).unwrap();
    s.set_nonblocking(true).unwrap();
    for seg in &input.segments {
        if closed || started.elapsed() > ITERATION_LIMIT {
            break;
        }
        let g = Mark::now(true);
        write_all(&mut s, seg, &mut out, &mut closed);
        written += 1;
        settle(g, Some(&mut s), &mut out, &mut closed, SEGMENT_LIMIT);
    }
    // Close, then let dealer and the backends see it through.
    let g = Mark::now(false);
    let _ = s.shutdown(std::net::Shutdown::Both);
    drop(s);
    settle(g, None, &mut out, &mut closed, SEGMENT_LIMIT);
    let deadline = Instant::now() + Duration::from_millis(200);
    while w.shared.open() > 0 && Instant::now() < deadline {
        settle(
            Mark::now(false),
            None,
            &mut out,
            &mut closed,
            Duration::from_millis(20),
        );
    }
    let report = w.shared.report();
    if std::env::var_os("PREAUTH_TRACE").is_some() {
        eprintln!(
            "--- listener {}, script {:?}, {written} of {} segments written, {} ms\n\
             dealer -> client: {}\nbackends ({} still open):\n  {}",
            input.listener,
            String::from_utf8_lossy(input.script),
            input.segments.len(),
            started.elapsed().as_millis(),
            String::from_utf8_lossy(&out),
            report.still_open,
            report.log.join("\n  "),
        );
    }
    if !report.violations.is_empty() {
        panic!(
            "dealer passed on what a backend must not see before a success:\n  {}\n\
             listener {} ({}), script {:?}, {} of {} segments written:\n{}\n\
             dealer -> client:\n{}\nbackends saw:\n  {}",
            report.violations.join("\n  "),
            input.listener,
            ["starttls off", "starttls optional", "starttls required"][input.listener],
            String::from_utf8_lossy(input.script),
            written,
            input.segments.len(),
            input
                .segments
                .iter()
                .enumerate()
                .map(|(i, s)| format!("  [{i}] {}", String::from_utf8_lossy(s)))
                .collect::<Vec<_>>()
                .join("\n"),
            String::from_utf8_lossy(&out),
            report.log.join("\n  "),
        );
    }
}
