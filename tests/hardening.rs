//! Faults an adversarial run found, each shown against real parts:
//!
//! - legacy auth: only a complete `set` reaches a backend, and only an empty `result`
//!   counts as a login (Prosody answers an incomplete `set` with a `result` carrying
//!   the fields form; jabberd2 too is checked);
//! - an iq before authentication carries exactly one child, so dealer and the backend
//!   read the same request;
//! - a login element written with a prefix from the client's header reaches the
//!   backend with its declaration;
//! - a per-stream limit on failed logins, over SASL and iq:auth;
//! - `limits.max_connections` counts connections exactly and refuses at once;
//! - a client that pipelines its stream restart (with an XML declaration) behind its
//!   authentication logs in;
//! - federation queues bounded in bytes, in total and per link;
//! - a burst beyond a link's queue slows its sender instead of being bounced.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use common::dealer::{Dealer, backend_yaml};
use common::jabberd2::Jabberd2Spec;
use common::prosody::ProsodySpec;
use common::raw::{HEADER, Raw};
use common::{free_port, wait_for};

const PW: &str = "s3cret";
const SECS: Duration = Duration::from_secs(5);

fn plain(user: &str, pw: &str) -> String {
    format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
    )
}

fn iq_set(id: &str, fields: &str) -> String {
    format!("<iq type='set' id='{id}'><query xmlns='jabber:iq:auth'>{fields}</query></iq>")
}

/// Incomplete or digest `set`s are answered by dealer with 406 and never forwarded;
/// the stream stays unauthenticated. Then a complete one logs in.
fn legacy_auth_variants(d: &Dealer, user: &str, what: &str) {
    let peeks = d.metric("dealer_auth_peeks_total{mechanism=\"iq-auth\"}");
    for (i, fields) in [
        format!("<username>{user}</username><resource>r</resource>"),
        format!("<username>{user}</username><password>{PW}</password>"),
        format!("<username>{user}</username><password>{PW}</password><resource></resource>"),
        format!("<username>{user}</username><digest>0123456789abcdef</digest><resource>r</resource>"),
        format!("<username>{user}</username><password>{PW}</password><digest>00</digest><resource>r</resource>"),
    ]
    .iter()
    .enumerate()
    {
        let mut r = Raw::plain(d.c2s_plain);
        r.send(HEADER.replace(" version='1.0'", ""));
        r.send(iq_set(&format!("v{i}"), fields));
        let got = r.expect("</iq>", SECS);
        assert!(
            got.contains(&format!("<iq type='error' id='v{i}'>"))
                && got.contains("code='406' type='modify'")
                && got.contains("<not-acceptable"),
            "{what}: {fields}: {got}"
        );
        // Still before authentication: a stanza ends the stream, nothing is relayed.
        r.send("<message to='x@example.com'><body>hi</body></message>");
        let (got, _) = r.read_to_close(SECS);
        assert!(got.contains("<not-authorized"), "{what}: {fields}: {got}");
    }
    assert_eq!(
        d.metric("dealer_auth_peeks_total{mechanism=\"iq-auth\"}"),
        peeks,
        "{what}: no incomplete set was routed"
    );
    let mut r = Raw::plain(d.c2s_plain);
    r.send(HEADER.replace(" version='1.0'", ""));
    r.send(iq_set(
        "ok",
        &format!("<username>{user}</username><password>{PW}</password><resource>r</resource>"),
    ));
    let got = r.expect("id='ok'", SECS);
    assert!(got.contains("type='result'"), "{what}: {got}\n{}", d.log());
}

#[test]
fn legacy_auth_succeeds_only_when_the_backend_says_so() {
    let p = ProsodySpec::new("example.com")
        .user("alice", PW)
        .module("legacyauth")
        .start();
    let d = Dealer::start(&format!(
        "c2s: {{ legacy_auth: true }}\nlimits: {{ logins_per_source_per_second: 0 }}\nbackends:\n{}",
        backend_yaml("node1", &p, "")
    ));
    legacy_auth_variants(&d, "alice", "prosody");

    let j = Jabberd2Spec::new("example.com").user("zoe", PW).start();
    let d = Dealer::start(&format!(
        "c2s: {{ legacy_auth: true, mechanisms: [PLAIN] }}\nlimits: {{ logins_per_source_per_second: 0 }}\nbackends:\n{}",
        j.backend_yaml("node1", "")
    ));
    legacy_auth_variants(&d, "zoe", "jabberd2");
}

/// RFC 6120 §8.2.3: an iq `get`/`set` carries exactly one child. Prosody dispatches an
/// unauthenticated iq on its first child, so an iq:auth login behind a registration
/// would be answered with the registration's empty `result`, which reads as a login.
/// dealer answers `bad-request` itself, on its own stream and on one routed early.
#[test]
fn an_iq_with_two_children_never_reaches_a_backend() {
    let p = ProsodySpec::new("example.com")
        .user("alice", PW)
        .allow_registration(true)
        .module("legacyauth")
        .start();
    let d = Dealer::start(&format!(
        "c2s: {{ legacy_auth: true, registration: true }}\nlimits: {{ logins_per_source_per_second: 0 }}\nbackends:\n{}",
        backend_yaml("node1", &p, "")
    ));
    let smuggled = format!(
        "<iq type='set' id='x1'><query xmlns='jabber:iq:register'><username>bob</username>\
         <password>{PW}</password></query><query xmlns='jabber:iq:auth'><username>alice</username>\
         <password>{PW}</password><resource>r</resource></query></iq>"
    );
    let early = HEADER.replace("version='1.0'", "version='1.0' from='alice@example.com'");
    for (what, header) in [
        ("legacy stream", HEADER.replace(" version='1.0'", "")),
        ("early", early),
    ] {
        let mut r = Raw::plain(d.c2s_plain);
        r.send(header);
        if what == "early" {
            r.expect("</stream:features>", SECS);
        }
        r.send(&smuggled);
        let got = r.expect("</iq>", SECS);
        assert!(
            got.contains("<iq type='error' id='x1'>") && got.contains("<bad-request"),
            "{what}: {got}\n{}",
            d.log()
        );
        // Still unauthenticated: dealer ends its own stream; Prosody bounces the
        // message on the early-routed one.
        r.send("<message to='x@example.com'><body>hi</body></message>");
        if what == "early" {
            r.expect("<service-unavailable", SECS);
        } else {
            let (got, _) = r.read_to_close(SECS);
            assert!(got.contains("<not-authorized"), "{what}: {got}");
        }
    }
    // Nothing was registered.
    let mut r = Raw::plain(d.c2s_plain);
    r.send(HEADER.replace(" version='1.0'", ""));
    r.send(iq_set(
        "b",
        &format!("<username>bob</username><password>{PW}</password><resource>r</resource>"),
    ));
    let got = r.expect("</iq>", SECS);
    assert!(got.contains("type='error'"), "bob was registered: {got}");
}

/// An authentication element written with a prefix the client declared on its stream
/// header (found by the preauth fuzz target): the backend's stream is dealer's, so
/// the declaration travels with the element. Forwarded and routed early alike.
#[test]
fn a_login_with_a_prefix_from_the_client_header_reaches_the_backend_readable() {
    let p = ProsodySpec::new("example.com").user("alice", PW).start();
    let d = Dealer::start(&format!(
        "limits: {{ logins_per_source_per_second: 0 }}\nbackends:\n{}",
        backend_yaml("node1", &p, "")
    ));
    let auth = plain("alice", PW)
        .replace(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'",
            "<sasl:auth",
        )
        .replace("</auth>", "</sasl:auth>");
    let declared = HEADER.replace(
        " version='1.0'",
        " xmlns:sasl='urn:ietf:params:xml:ns:xmpp-sasl' version='1.0'",
    );
    let early = declared.replace("version='1.0'", "version='1.0' from='alice@example.com'");
    for (what, header) in [("forwarded", declared), ("early", early)] {
        let mut r = Raw::plain(d.c2s_plain);
        r.send(header);
        r.expect("</stream:features>", SECS);
        r.send(&auth);
        // Without the declaration Prosody cannot read the element and ends the
        // stream: no <success/> ever comes.
        let got = r.expect("<success", SECS);
        assert!(!got.contains("<failure"), "{what}: {got}");
    }
}

#[test]
fn failed_logins_end_the_stream() {
    let p = ProsodySpec::new("example.com")
        .user("alice", PW)
        .module("legacyauth")
        .start();
    let d = Dealer::start(&format!(
        "c2s: {{ legacy_auth: true }}\nlimits: {{ logins_per_source_per_second: 0, max_failed_logins: 5 }}\nbackends:\n{}",
        backend_yaml("node1", &p, "")
    ));
    // SASL: four failures are answered and the stream goes on; the fifth ends it.
    let mut r = Raw::plain(d.c2s_plain);
    r.send(HEADER);
    r.expect("</stream:features>", SECS);
    for i in 1..=4 {
        r.received.clear();
        r.send(plain("alice", &format!("wrong{i}")));
        let got = r.expect("</failure>", SECS);
        assert!(got.contains("<not-authorized"), "{got}");
    }
    r.received.clear();
    r.send(plain("alice", "wrong5"));
    let (got, _) = r.read_to_close(SECS);
    assert!(
        got.contains("</failure>") && got.contains("<policy-violation"),
        "{got}"
    );
    // iq:auth: wrong passwords one after the other; the fifth error ends the stream.
    let mut r = Raw::plain(d.c2s_plain);
    r.send(HEADER.replace(" version='1.0'", ""));
    for i in 0..5 {
        r.try_send(iq_set(
            &format!("w{i}"),
            &format!("<username>alice</username><password>x{i}</password><resource>r</resource>"),
        ));
        if i < 4 {
            r.expect(&format!("id='w{i}'"), SECS);
        }
    }
    let (got, _) = r.read_to_close(SECS);
    assert_eq!(got.matches("type='error'").count(), 5, "{got}");
    assert!(got.contains("<policy-violation"), "{got}");
    assert_eq!(
        d.metric("dealer_limit_hits_total{limit=\"failed_logins\"}"),
        2.0
    );
    // The right password still works on a fresh stream.
    let mut r = Raw::plain(d.c2s_plain);
    r.send(HEADER);
    r.expect("</stream:features>", SECS);
    r.send(plain("alice", PW));
    r.expect("<success", SECS);
}

#[test]
fn a_pipelined_restart_with_a_declaration_logs_in() {
    let p = ProsodySpec::new("example.com").user("alice", PW).start();
    let node = ProsodySpec::new("node1.internal").user("bob", PW).start();
    let shared = Dealer::start(&format!("backends:\n{}", backend_yaml("node1", &p, "")));
    let masked = Dealer::start_with(
        &format!(
            "domains: masked\nbackends:\n  node1: {{ c2s: \"{}\", s2s: \"{}\", domain: node1.internal }}\n\
             s2s: {{ dialback_secret: \"x\" }}\n",
            node.c2s, node.s2s
        ),
        &format!("  s2s_internal: [\"127.0.0.1:{}\"]\n", free_port()),
    );
    for (d, user) in [(&shared, "alice"), (&masked, "bob")] {
        let mut r = Raw::plain(d.c2s_plain);
        r.send(HEADER);
        r.expect("</stream:features>", SECS);
        r.received.clear();
        // Everything in one write: auth, then the restarted stream and a bind.
        r.send(format!(
            "{}{HEADER}<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>fast</resource></bind></iq>",
            plain(user, PW)
        ));
        let got = r.expect("</iq>", SECS);
        assert!(
            got.contains("<success") && got.contains(&format!("{user}@example.com/fast")),
            "{user}: {got}\n{}",
            d.log()
        );
    }
}

#[test]
fn max_connections_is_exact_and_refuses_at_once() {
    let p = ProsodySpec::new("example.com").user("alice", PW).start();
    for max in [4usize, 50] {
        let d = Dealer::start(&format!(
            "limits: {{ max_connections: {max}, max_connections_per_source: 0 }}\nbackends:\n{}",
            backend_yaml("node1", &p, "")
        ));
        let mut held: Vec<Raw> = (0..max)
            .map(|i| {
                let mut r = Raw::plain(if i % 2 == 0 { d.c2s_plain } else { d.c2s });
                r.send(HEADER);
                r.expect("</stream:features>", SECS);
                r
            })
            .collect();
        // One more on a plaintext or STARTTLS listener: a stream error, at once.
        let started = Instant::now();
        let mut over = Raw::plain(d.c2s);
        let (got, _) = over.read_to_close(SECS);
        assert!(
            got.contains("<resource-constraint") && got.contains("limit of"),
            "{max}: {got}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{max}: answered at once"
        );
        // On Direct TLS: closed without a handshake.
        let tcp = TcpStream::connect(d.c2s_tls).unwrap();
        tcp.set_read_timeout(Some(SECS)).unwrap();
        let mut buf = [0u8; 16];
        let n = std::io::Read::read(&mut &tcp, &mut buf).unwrap_or(0);
        assert_eq!(n, 0, "{max}: Direct TLS over the limit is closed");
        assert_eq!(
            d.metric("dealer_session_drops_total{reason=\"connections\"}"),
            1.0
        );
        // One leaves, the next gets in.
        held.pop();
        let ok = wait_for(SECS, || {
            let mut r = Raw::plain(d.c2s_plain);
            r.try_send(HEADER);
            let (got, _) = r.read_to_close_or(Duration::from_millis(500));
            got.contains("<stream:features").then_some(r)
        });
        assert!(ok.is_some(), "{max}: a freed slot is usable");
        assert!(d.metric("dealer_limit_hits_total{limit=\"connections\"}") >= 2.0);
        drop(held);
    }
}

/// A peer that accepts s2s connections and never answers: links to it stay in setup,
/// and their queues fill. Once it hangs up it closes new connections at once, so the
/// links dealer opens for stanzas it reads afterwards fail instead of filling again.
struct Silent {
    addr: SocketAddr,
    /// `None` once it has hung up.
    held: std::sync::Arc<std::sync::Mutex<Option<Vec<TcpStream>>>>,
}

impl Silent {
    fn start() -> Silent {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let held = std::sync::Arc::new(std::sync::Mutex::new(Some(Vec::new())));
        let h = held.clone();
        std::thread::spawn(move || {
            for s in l.incoming().take(256).flatten() {
                if let Some(v) = h.lock().unwrap().as_mut() {
                    v.push(s);
                }
            }
        });
        Silent { addr, held }
    }

    /// Close every connection: the links waiting on them fail.
    fn hang_up(&self) {
        for s in self.held.lock().unwrap().take().into_iter().flatten() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn rss_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn federation_queues_are_bounded_in_bytes() {
    let p = ProsodySpec::new("example.com").user("alice", PW).start();
    let silent = Silent::start();
    let internal = free_port();
    // Ten links of 8 MiB each could hold 80 MiB: the total bound (64 MiB) must hold.
    let remotes = 10;
    let routes: String = (0..remotes)
        .map(|i| format!("remote{i}.test: \"{}\", ", silent.addr))
        .collect();
    // Bounces go back to the sender's backend; its s2s port refuses at once, so they
    // are dropped quickly instead of waiting on a link of their own.
    let d = Dealer::start_with(
        &format!(
            "backends:\n  node1: {{ c2s: \"{}\", s2s: \"127.0.0.1:1\" }}\n\
             s2s: {{ dialback_secret: \"flood\", routes: {{ {routes} }} }}\n",
            p.c2s
        ),
        &format!("  s2s_internal: [\"127.0.0.1:{internal}\"]\n"),
    );
    let bound = 64.0 * 1024.0 * 1024.0_f64;
    let pid = d.process.pid();
    let before = rss_kib(pid, "VmRSS:");
    // A backend's outbound stream (the internal listener trusts its allow-list).
    let mut s = TcpStream::connect(("127.0.0.1", internal)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='example.com' to='remote0.test' version='1.0'>").unwrap();
    let mut seen = String::new();
    let read = |s: &mut TcpStream, seen: &mut String, want: &str| {
        let start = Instant::now();
        while !seen.contains(want) && start.elapsed() < SECS {
            let mut buf = [0u8; 4096];
            if let Ok(n) = std::io::Read::read(s, &mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
        assert!(seen.contains(want), "{seen}");
    };
    read(&mut s, &mut seen, "</stream:features>");
    for i in 0..remotes {
        write!(
            s,
            "<db:result from='example.com' to='remote{i}.test'>k</db:result>"
        )
        .unwrap();
        read(&mut s, &mut seen, "to='example.com' type='valid'");
        seen.clear();
    }
    // 3,000 stanzas of 250 KB, spread over the links.
    let body = "x".repeat(250_000);
    let gauge = "dealer_s2s_queued_bytes";
    let mut peak = 0.0_f64;
    for n in 0..3000 {
        write!(
            s,
            "<message from='alice@example.com/r' to='rob@remote{}.test' id='f{n}'><body>{body}</body></message>",
            n % remotes
        )
        .unwrap();
        if n % 250 == 0 {
            peak = peak.max(d.metric(gauge));
        }
    }
    let settled = wait_for(Duration::from_secs(10), || {
        let g = d.metric(gauge);
        peak = peak.max(g);
        (g > 0.0 && d.metric("dealer_limit_hits_total{limit=\"s2s_queue_bytes\"}") > 0.0)
            .then_some(())
    });
    assert!(settled.is_some(), "the queues filled up:\n{}", d.log());
    assert!(peak <= bound, "queued {peak} bytes, bound {bound}");
    let grown_kib = rss_kib(pid, "VmHWM:").saturating_sub(before);
    assert!(
        grown_kib < 128 * 1024,
        "dealer grew by {grown_kib} KiB for a 750 MB flood"
    );
    // When the links fail, their queues drain: bounced, and nothing stays counted.
    silent.hang_up();
    let drained = wait_for(Duration::from_secs(15), || {
        (d.metric(gauge) == 0.0).then_some(())
    });
    assert!(drained.is_some(), "queues drained:\n{}", d.log());
    // And the memory they held goes back to the system.
    let released = wait_for(SECS, || {
        (rss_kib(pid, "VmRSS:") < before + 16 * 1024).then_some(())
    });
    assert!(
        released.is_some(),
        "rss before {before} KiB, peak +{grown_kib} KiB, after draining {} KiB",
        rss_kib(pid, "VmRSS:")
    );
}

/// A remote server that takes dealer's link (answers its header and vouches for its
/// dialback key), then stops reading for `pause` (a peer that hangs for a moment)
/// before counting the `</message>`s that reach it.
fn slow_peer(pause: Duration) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::Read;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut answered = false;
        while !String::from_utf8_lossy(&seen).contains("</db:result>") {
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                return;
            }
            seen.extend_from_slice(&buf[..n]);
            if !answered && String::from_utf8_lossy(&seen).contains("<stream:stream") {
                s.write_all(b"<stream:stream id='slow' from='remote.test' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' version='1.0'><stream:features/>").unwrap();
                answered = true;
            }
        }
        s.write_all(b"<db:result from='remote.test' to='example.com' type='valid'/>")
            .unwrap();
        std::thread::sleep(pause);
        let finder = b"</message>";
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                return;
            }
            carry.extend_from_slice(&buf[..n]);
            let found = carry.windows(finder.len()).filter(|w| w == finder).count();
            c.fetch_add(found as u64, std::sync::atomic::Ordering::Relaxed);
            let keep = carry.len().saturating_sub(finder.len() - 1);
            carry.drain(..keep);
        }
    });
    (addr, count)
}

#[test]
fn a_burst_beyond_a_link_queue_waits_for_a_slow_peer_instead_of_bouncing() {
    let p = ProsodySpec::new("example.com").user("alice", PW).start();
    let (peer, count) = slow_peer(Duration::from_millis(1500));
    let internal = free_port();
    let d = Dealer::start_with(
        &format!(
            "backends:\n  node1: {{ c2s: \"{}\", s2s: \"127.0.0.1:1\" }}\n\
             s2s: {{ dialback_secret: \"burst\", routes: {{ remote.test: \"{peer}\" }} }}\n",
            p.c2s
        ),
        &format!("  s2s_internal: [\"127.0.0.1:{internal}\"]\n"),
    );
    // A backend's outbound stream (the internal listener trusts its allow-list).
    let mut r = Raw::plain(SocketAddr::from(([127, 0, 0, 1], internal)));
    r.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='example.com' to='remote.test' version='1.0'>");
    r.expect("</stream:features>", SECS);
    r.send("<db:result from='example.com' to='remote.test'>k</db:result>");
    r.expect("type='valid'", SECS);
    // Four times the 10,000 stanzas a link queue holds, and more than its 8 MiB,
    // sent while the peer is not reading: the stream is slowed, nothing is lost.
    let n = 40_000u64;
    let pad = "p".repeat(120);
    let burst: String = (0..n)
        .map(|i| {
            format!(
                "<message from='alice@example.com/r' to='rob@remote.test' id='b{i}'><body>{pad}</body></message>"
            )
        })
        .collect();
    r.send(burst);
    let arrived = wait_for(Duration::from_secs(30), || {
        (count.load(std::sync::atomic::Ordering::Relaxed) >= n).then_some(())
    });
    assert!(
        arrived.is_some(),
        "{} of {n} stanzas reached the peer:\n{}",
        count.load(std::sync::atomic::Ordering::Relaxed),
        d.log()
    );
    assert_eq!(
        d.metric("dealer_limit_hits_total{limit=\"s2s_queue_bytes\"}"),
        0.0,
        "{}",
        d.log()
    );
    assert_eq!(
        d.metric("dealer_s2s_stanzas_total{direction=\"out\",result=\"bounced\"}"),
        0.0
    );
}
