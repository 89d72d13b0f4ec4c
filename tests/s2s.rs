//! dealer as the public domain's face to the federation, end to end, on loopback:
//! two Prosody backends serving example.com, one more Prosody serving remote.test,
//! split-horizon DNS through two dnsmasq instances (the federation resolves
//! example.com to dealer's `listen.s2s`; the backends resolve remote.test to dealer's
//! `listen.s2s_internal`), and slixmpp clients on both sides. Two dealer instances
//! with one dialback secret: the backends send through one (A), the federation
//! reaches the other (B), so every dialback key is issued by one instance and
//! verified by the other.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::client::{LoginOpts, Transport, act, session};
use common::dealer::{Dealer, backend_yaml};
use common::dns::Dnsmasq;
use common::free_port;
use common::prosody::{Prosody, ProsodySpec};
use common::raw::Raw;

const PW: &str = "s3cret";
const SECS: Duration = Duration::from_secs(5);
const SERVER_HEADER_TAIL: &str = "xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' version='1.0'>";

struct World {
    a: Dealer,
    b: Dealer,
    node1: Prosody,
    node2: Prosody,
    remote: Prosody,
    b_s2s: SocketAddr,
    a_internal: SocketAddr,
    _public_dns: Dnsmasq,
    _internal_dns: Dnsmasq,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Start everything; `evil` adds a DNS record for a fake peer's domain.
fn world(evil: Option<(&str, u16)>) -> World {
    world_with(evil, false)
}

/// `direct_tls`: both dealers also listen for Direct TLS federation streams, the
/// federation's DNS names B's in `_xmpps-server._tcp.example.com`, and its
/// `_xmpp-server._tcp.example.com` names a port nobody listens on, so a stream only
/// reaches dealer over Direct TLS.
fn world_with(evil: Option<(&str, u16)>, direct_tls: bool) -> World {
    let (a_s2s, a_internal, b_s2s, b_internal) =
        (free_port(), free_port(), free_port(), free_port());
    let (a_s2s_tls, b_s2s_tls, nobody) = (free_port(), free_port(), free_port());
    let remote_s2s = free_port();
    // loop1.test points back at dealer A's own internal listener, loop2.test at
    // dealer B's federation listener, loop3.test at B's internal listener, loop4.test
    // at A's Direct TLS listener (in `direct_tls` worlds): each would make dealer
    // deliver to itself.
    let mut public_records = vec![
        ("example.com", if direct_tls { nobody } else { b_s2s }),
        ("remote.test", remote_s2s),
        ("loop1.test", a_internal),
        ("loop2.test", b_s2s),
        ("loop3.test", b_internal),
        ("loop4.test", a_s2s_tls),
    ];
    if let Some(e) = evil {
        public_records.push(e);
    }
    let public_dns = if direct_tls {
        Dnsmasq::start_with(&public_records, &[("example.com", b_s2s_tls)])
    } else {
        Dnsmasq::start(&public_records)
    };
    // The backends resolve every foreign domain to dealer (here: the two the tests use).
    let internal_dns = Dnsmasq::start(&[
        ("remote.test", a_internal),
        ("nowhere.test", a_internal),
        ("loop1.test", a_internal),
        ("loop2.test", a_internal),
        ("loop3.test", a_internal),
        ("loop4.test", a_internal),
    ]);
    let node1 = ProsodySpec::new("example.com")
        .user("alice", PW)
        .user("heidi", PW)
        .dns_port(internal_dns.port)
        .start();
    let node2 = ProsodySpec::new("example.com")
        .user("nora", PW)
        .dns_port(internal_dns.port)
        .start();
    let mut remote = ProsodySpec::new("remote.test")
        .user("rob", PW)
        .dns_port(public_dns.port)
        .s2s_port(remote_s2s);
    if direct_tls {
        // Outgoing TLS (a client context needs no certificate of its own): without
        // mod_tls, Prosody never looks for `_xmpps-server._tcp`.
        remote = remote.module("tls");
    }
    let remote = remote.start();
    let body = |internal: u16| {
        format!(
            "c2s: {{ mode: forward }}\n\
             routing:\n  strategy: ranges\n  ranges:\n    \
               - {{ from: a, to: m, backend: node1 }}\n    \
               - {{ from: n, to: z, backend: node2 }}\n  \
               default: node1\n\
             backends:\n{}{}\
             health: {{ interval: 1s, timeout: 1s, fall: 1, rise: 1 }}\n\
             s2s:\n  dialback_secret: \"one secret for every instance\"\n  domain_backend: node1\n  resolver: \"127.0.0.1:{}\"\n\
             # internal: {internal}\n",
            backend_yaml("node1", &node1, ""),
            backend_yaml("node2", &node2, ""),
            public_dns.port,
        )
    };
    let listen = |s2s: u16, internal: u16, tls: u16| {
        let mut l =
            format!("  s2s: [\"127.0.0.1:{s2s}\"]\n  s2s_internal: [\"127.0.0.1:{internal}\"]\n");
        if direct_tls {
            l.push_str(&format!("  s2s_tls: [\"127.0.0.1:{tls}\"]\n"));
        }
        l
    };
    let a = Dealer::start_with(&body(a_internal), &listen(a_s2s, a_internal, a_s2s_tls));
    let b = Dealer::start_with(&body(b_internal), &listen(b_s2s, b_internal, b_s2s_tls));
    World {
        a,
        b,
        node1,
        node2,
        remote,
        b_s2s: addr(b_s2s),
        a_internal: addr(a_internal),
        _public_dns: public_dns,
        _internal_dns: internal_dns,
    }
}

fn local(name: &str, w: &World) -> LoginOpts {
    LoginOpts::new(&format!("{name}@example.com"), PW, w.a.c2s).tls(Transport::StartTls)
}

fn rob(w: &World) -> LoginOpts {
    LoginOpts::new("rob@remote.test", PW, w.remote.c2s)
}

#[test]
fn messages_and_subscriptions_cross_the_federation_both_ways() {
    let w = world(None);
    let s = session(
        &[local("alice", &w), local("nora", &w), rob(&w)],
        vec![
            act::send_message(0, "rob@remote.test", "hi rob, alice here"),
            act::expect_message(2, "alice@example.com", "hi rob, alice here"),
            act::send_message(2, "alice@example.com", "hi alice"),
            act::expect_message(0, "rob@remote.test", "hi alice"),
            act::send_message(2, "nora@example.com", "hi nora"),
            act::expect_message(1, "rob@remote.test", "hi nora"),
            act::send_message(1, "rob@remote.test", "hi rob, nora here"),
            act::expect_message(2, "nora@example.com", "hi rob, nora here"),
            // Presence subscriptions, both directions.
            act::subscribe(0, "rob@remote.test"),
            act::expect_presence(2, "alice@example.com", "subscribe"),
            act::approve(2, "alice@example.com"),
            act::expect_presence(0, "rob@remote.test", "subscribed"),
            act::subscribe(2, "nora@example.com"),
            act::expect_presence(1, "rob@remote.test", "subscribe"),
            act::approve(1, "rob@remote.test"),
            act::expect_presence(2, "nora@example.com", "subscribed"),
        ],
    );
    s.assert_ok();
    // What rob sees comes from user@example.com only (shared domains: the backends'
    // own JIDs are already public).
    let seen = s.raw.to_string();
    assert!(!seen.contains("internal"), "{seen}");
    assert!(w.b.metric("dealer_s2s_stanzas_total{direction=\"in\",result=\"routed\"}") >= 2.0);
    assert!(w.a.metric("dealer_s2s_stanzas_total{direction=\"out\",result=\"routed\"}") >= 2.0);
    // Each instance verified keys the other issued.
    assert!(
        w.a.log().contains("db:verify answered") && w.a.log().contains("valid=true"),
        "A: {}",
        w.a.log()
    );
    assert!(
        w.b.log().contains("db:verify answered") && w.b.log().contains("valid=true"),
        "B: {}",
        w.b.log()
    );
}

/// A remote server that finds dealer through `_xmpps-server._tcp` (XEP-0368) opens its
/// stream over Direct TLS: ALPN `xmpp-server`, dialback inside TLS, and stanzas reach
/// the owners' backends as over STARTTLS.
#[test]
fn the_federation_reaches_dealer_over_direct_tls() {
    let w = world_with(None, true);
    let s = session(
        &[local("alice", &w), local("nora", &w), rob(&w)],
        vec![
            act::send_message(2, "alice@example.com", "direct to alice"),
            act::expect_message(0, "rob@remote.test", "direct to alice"),
            act::send_message(2, "nora@example.com", "direct to nora"),
            act::expect_message(1, "rob@remote.test", "direct to nora"),
            // A's own Direct TLS listener is dealer too, not a way out.
            act::send_message(0, "x@loop4.test", "round and round?"),
            serde_json::json!({ "expect_message": { "to": 0, "from": "x@loop4.test", "type": "error", "error": "remote-server-not-found", "timeout": 15 } }),
        ],
    );
    s.assert_ok();
    assert!(
        w.a.log().contains("the destination is dealer itself"),
        "{}",
        w.a.log()
    );
    assert!(
        w.b.metric("dealer_connections_accepted_total{listener=\"s2s_tls\"}") >= 1.0,
        "{}",
        w.b.log()
    );
    assert_eq!(
        w.b.metric("dealer_connections_accepted_total{listener=\"s2s\"}"),
        0.0
    );
    assert!(w.b.metric("dealer_s2s_stanzas_total{direction=\"in\",result=\"routed\"}") >= 2.0);
}

#[test]
fn a_stanza_for_a_user_whose_backend_is_down_bounces() {
    let mut w = world(None);
    w.node2.kill();
    // Health checks (1 s) take node2 out; then the stanza bounces at once.
    std::thread::sleep(Duration::from_millis(2500));
    let s = session(
        &[rob(&w)],
        vec![
            act::send_message(0, "nora@example.com", "are you there?"),
            act::expect_message_error(0, "service-unavailable"),
        ],
    );
    s.assert_ok();
    assert!(w.b.metric("dealer_s2s_stanzas_total{direction=\"in\",result=\"bounced\"}") >= 1.0);
    drop(w.node1);
}

#[test]
fn a_stanza_for_an_unreachable_domain_bounces_to_its_sender() {
    let w = world(None);
    // The backend hands nowhere.test to dealer, but nowhere.test has no SRV and no
    // address in the federation's DNS: dealer bounces it.
    let s = session(
        &[local("alice", &w)],
        vec![
            act::send_message(0, "ghost@nowhere.test", "anyone?"),
            serde_json::json!({ "expect_message": { "to": 0, "from": "ghost@nowhere.test", "type": "error", "error": "remote-server-not-found", "timeout": 15 } }),
        ],
    );
    s.assert_ok();
    assert!(w.a.metric("dealer_s2s_stanzas_total{direction=\"out\",result=\"bounced\"}") >= 1.0);
}

#[test]
fn domains_that_lead_back_to_dealer_bounce_instead_of_looping() {
    let w = world(None);
    let s = session(
        &[local("alice", &w)],
        vec![
            act::send_message(0, "x@loop1.test", "round and round?"),
            serde_json::json!({ "expect_message": { "to": 0, "from": "x@loop1.test", "type": "error", "error": "remote-server-not-found", "timeout": 15 } }),
            act::send_message(0, "y@loop2.test", "and round?"),
            serde_json::json!({ "expect_message": { "to": 0, "from": "y@loop2.test", "type": "error", "error": "remote-server-not-found", "timeout": 15 } }),
            act::send_message(0, "z@loop3.test", "and round again?"),
            serde_json::json!({ "expect_message": { "to": 0, "from": "z@loop3.test", "type": "error", "error": "remote-server-not-found", "timeout": 15 } }),
        ],
    );
    s.assert_ok();
    // B's internal listener saw a key from the shared secret: dealer talking to itself.
    assert!(
        w.b.log().contains("refusing a routing loop"),
        "{}",
        w.b.log()
    );
    // Nothing kept circling: a handful of routed stanzas, not thousands.
    std::thread::sleep(Duration::from_millis(500));
    let routed =
        w.a.metric("dealer_s2s_stanzas_total{direction=\"out\",result=\"routed\"}");
    assert!(routed < 10.0, "{routed} stanzas routed out");
}

/// A fake authoritative server for a domain the test controls: it vouches for any key.
fn fake_authority() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding the fake authority");
    let port = l.local_addr().expect("bound").port();
    let h = std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut got = String::new();
        let mut buf = [0u8; 4096];
        let mut answered_header = false;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
            if !answered_header && got.contains("<stream:stream") && got.contains('>') {
                let _ = s.write_all(format!("<stream:stream id='fake' from='evil.test' {SERVER_HEADER_TAIL}<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>").as_bytes());
                answered_header = true;
            }
            if let Some(i) = got.find("<db:verify ") {
                let tag = &got[i..];
                let id = tag
                    .split("id='")
                    .nth(1)
                    .and_then(|r| r.split('\'').next())
                    .unwrap_or("");
                let _ = s.write_all(
                    format!(
                        "<db:verify from='evil.test' to='example.com' id='{id}' type='valid'/>"
                    )
                    .as_bytes(),
                );
                break;
            }
        }
    });
    (port, h)
}

#[test]
fn forged_dialback_spoofed_from_and_strangers_are_rejected() {
    let (evil_port, evil) = fake_authority();
    let w = world(Some(("evil.test", evil_port)));

    // A db:verify with a key dealer never issued.
    let mut r = Raw::plain(w.b_s2s);
    r.send(format!(
        "<stream:stream from='remote.test' to='example.com' {SERVER_HEADER_TAIL}"
    ));
    r.expect("</stream:features>", SECS);
    r.send("<db:verify from='remote.test' to='example.com' id='abc'>0123456789abcdef</db:verify>");
    let got = r.expect("<db:verify ", SECS);
    assert!(got.contains("type='invalid'"), "{got}");

    // A db:result claiming remote.test with a forged key: remote.test's own server
    // (the real Prosody) says it is not its key.
    let mut r = Raw::plain(w.b_s2s);
    r.send(format!(
        "<stream:stream from='remote.test' to='example.com' {SERVER_HEADER_TAIL}"
    ));
    r.expect("</stream:features>", SECS);
    r.send("<db:result from='remote.test' to='example.com'>deadbeefdeadbeef</db:result>");
    let got = r.expect("<db:result ", Duration::from_secs(15));
    assert!(got.contains("type='invalid'"), "{got}");

    // evil.test passes dialback (its fake authority vouches), then spoofs remote.test.
    let mut r = Raw::plain(w.b_s2s);
    r.send(format!(
        "<stream:stream from='evil.test' to='example.com' {SERVER_HEADER_TAIL}"
    ));
    r.expect("</stream:features>", SECS);
    r.send("<db:result from='evil.test' to='example.com'>any-key-will-do</db:result>");
    let got = r.expect("<db:result ", Duration::from_secs(15));
    assert!(got.contains("type='valid'"), "{got}");
    r.send("<message from='rob@remote.test' to='alice@example.com'><body>it is me, rob</body></message>");
    let (got, _) = r.read_to_close(SECS);
    assert!(got.contains("<invalid-from"), "{got}");
    evil.join().expect("fake authority thread");
    assert!(w.b.metric("dealer_s2s_stanzas_total{direction=\"in\",result=\"rejected\"}") >= 1.0);

    // A host the internal listener allows may still speak only for the public domain.
    let mut r = Raw::plain(w.a_internal);
    r.send(format!(
        "<stream:stream from='gmail.test' to='remote.test' {SERVER_HEADER_TAIL}"
    ));
    r.expect("</stream:features>", SECS);
    r.send("<db:result from='gmail.test' to='remote.test'>whatever</db:result>");
    let (got, _) = r.read_to_close(SECS);
    assert!(got.contains("<invalid-from"), "{got}");

    // The internal listener only takes backends (127.0.0.1): not 127.0.0.9.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 9], 0)).into())
        .expect("binding 127.0.0.9");
    sock.connect(&w.a_internal.into())
        .expect("connect from 127.0.0.9");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(SECS)).unwrap();
    let _ = s.write_all(
        format!("<stream:stream from='example.com' to='remote.test' {SERVER_HEADER_TAIL}")
            .as_bytes(),
    );
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert!(got.contains("<policy-violation"), "{got}");
    assert_eq!(
        w.a.metric("dealer_limit_hits_total{limit=\"s2s_internal_allow\"}"),
        1.0
    );
}

#[test]
fn traffic_flows_again_after_dealer_restarts() {
    let mut w = world(None);
    let round = |w: &World, tag: &str| {
        session(
            &[local("heidi", w), rob(w)],
            vec![
                act::send_message(0, "rob@remote.test", &format!("out {tag}")),
                act::expect_message(1, "heidi@example.com", &format!("out {tag}")),
                act::send_message(1, "heidi@example.com", &format!("in {tag}")),
                act::expect_message(0, "rob@remote.test", &format!("in {tag}")),
            ],
        )
    };
    round(&w, "before").assert_ok();
    // One stopped politely: the remote server is told why dealer's link to it ended.
    w.a.restart_after_sigint();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = w.remote.log();
    assert!(log.contains("system-shutdown"), "{log}");
    // One killed.
    w.b.restart();
    round(&w, "after").assert_ok();
}
