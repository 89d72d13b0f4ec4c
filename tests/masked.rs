//! Masked domains end to end: standalone Prosody backends each serving their own
//! internal domain (node1.internal, node2.internal), a remote Prosody (remote.test),
//! split-horizon DNS, dealer in front, and slixmpp clients whose every received byte
//! is captured. Users on different backends subscribe to each other, see presence,
//! talk in real time, talk to the remote user, use carbons (two resources), query
//! their archive (MAM) and their own vCard — and no byte a client receives names an
//! internal domain.

mod common;

use std::time::Duration;

use base64::Engine;
use common::client::{LoginOpts, Transport, act, session};
use common::dealer::Dealer;
use common::dns::Dnsmasq;
use common::prosody::{Prosody, ProsodySpec};
use common::raw::{HEADER, Raw};
use common::{free_port, wait_for};

const PW: &str = "s3cret";
const SECS: Duration = Duration::from_secs(5);

fn backend_line(name: &str, p: &Prosody, redirect: Option<&str>) -> String {
    format!(
        "  {name}: {{ c2s: \"{}\", s2s: \"{}\", domain: {}{} }}\n",
        p.c2s,
        p.s2s,
        p.domain,
        redirect
            .map(|r| format!(", redirect: \"{r}\""))
            .unwrap_or_default()
    )
}

fn routing() -> &'static str {
    "routing:\n  strategy: ranges\n  ranges:\n    \
       - { from: a, to: m, backend: node1 }\n    \
       - { from: n, to: z, backend: node2 }\n  \
       default: node1\n"
}

#[test]
fn masked_cluster_looks_like_one_domain() {
    let (s2s, internal, remote_s2s) = (free_port(), free_port(), free_port());
    let public_dns = Dnsmasq::start(&[("example.com", s2s), ("remote.test", remote_s2s)]);
    // The backends resolve every foreign domain — the public one included — to dealer.
    let internal_dns = Dnsmasq::start(&[("example.com", internal), ("remote.test", internal)]);
    let node1 = ProsodySpec::new("node1.internal")
        .user("alice", PW)
        .module("vcard")
        .dns_port(internal_dns.port)
        .start();
    let node2 = ProsodySpec::new("node2.internal")
        .user("nora", PW)
        .dns_port(internal_dns.port)
        .start();
    let remote = ProsodySpec::new("remote.test")
        .user("rob", PW)
        .dns_port(public_dns.port)
        .s2s_port(remote_s2s)
        .start();
    let body = format!(
        "domains: masked\nc2s: {{ mode: forward }}\n{}backends:\n{}{}\
         s2s: {{ dialback_secret: \"masked secret\", domain_backend: node1, resolver: \"127.0.0.1:{}\" }}\n",
        routing(),
        backend_line("node1", &node1, None),
        backend_line("node2", &node2, None),
        public_dns.port
    );
    let d = Dealer::start_with(
        &body,
        &format!("  s2s: [\"127.0.0.1:{s2s}\"]\n  s2s_internal: [\"127.0.0.1:{internal}\"]\n"),
    );
    let via = |user: &str, resource: &str| {
        LoginOpts::new(&format!("{user}@example.com"), PW, d.c2s)
            .tls(Transport::StartTls)
            .resource(resource)
    };
    let carbons = "<enable xmlns='urn:xmpp:carbons:2'/>";
    let s = session(
        &[
            via("alice", "phone"),
            via("alice", "laptop"),
            via("nora", "desk"),
            LoginOpts::new("rob@remote.test", PW, remote.c2s),
        ],
        vec![
            act::iq(0, "set", "", carbons),
            act::iq(1, "set", "", carbons),
            // A full subscription handshake across backends, both ways.
            act::subscribe(0, "nora@example.com"),
            act::expect_presence(2, "alice@example.com", "subscribe"),
            act::approve(2, "alice@example.com"),
            act::expect_presence(0, "nora@example.com", "subscribed"),
            act::subscribe(2, "alice@example.com"),
            act::expect_presence(0, "nora@example.com", "subscribe"),
            act::approve(0, "nora@example.com"),
            act::expect_presence(2, "alice@example.com", "subscribed"),
            // Presence changes travel across backends.
            serde_json::json!({ "from": 2, "presence": { "status": "in a meeting" } }),
            act::expect_presence(0, "nora@example.com", "available"),
            // Messages across backends, in real time, both ways; carbons to the laptop.
            act::send_message(0, "nora@example.com", "hello nora from alice"),
            act::expect_message(2, "alice@example.com", "hello nora from alice"),
            act::send_message(2, "alice@example.com/phone", "hi alice"),
            act::expect_message(0, "nora@example.com", "hi alice"),
            act::sleep(0.5),
            // The federation, both ways, from both backends.
            act::send_message(0, "rob@remote.test", "hi rob from alice"),
            act::expect_message(3, "alice@example.com", "hi rob from alice"),
            act::send_message(3, "alice@example.com", "hi alice from rob"),
            act::expect_message(0, "rob@remote.test", "hi alice from rob"),
            act::send_message(2, "rob@remote.test", "hi rob from nora"),
            act::expect_message(3, "nora@example.com", "hi rob from nora"),
            act::send_message(3, "nora@example.com", "hi nora from rob"),
            act::expect_message(2, "rob@remote.test", "hi nora from rob"),
            // The archive and the user's own vCard.
            act::iq(0, "set", "", "<query xmlns='urn:xmpp:mam:2' queryid='q1'/>"),
            act::iq(
                0,
                "set",
                "",
                "<vCard xmlns='vcard-temp'><FN>Alice</FN><JABBERID>alice@example.com</JABBERID></vCard>",
            ),
            act::iq(0, "get", "", "<vCard xmlns='vcard-temp'/>"),
            act::sleep(0.5),
        ],
    );
    s.assert_ok();
    for (i, want) in [
        "alice@example.com/phone",
        "alice@example.com/laptop",
        "nora@example.com/desk",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(s.accounts[i].bound_jid.as_deref(), Some(*want));
    }
    let vcard = s
        .actions
        .iter()
        .rev()
        .find(|a| a["action"] == "iq")
        .expect("the vCard get");
    assert!(
        vcard["xml"]
            .as_str()
            .unwrap_or_default()
            .contains("<JABBERID>alice@example.com</JABBERID>"),
        "{vcard}"
    );
    let phone = s.received(0);
    let laptop = s.received(1);
    assert!(
        laptop.contains("urn:xmpp:carbons:2") && laptop.contains("hi alice"),
        "the laptop got a carbon:\n{laptop}"
    );
    assert!(
        phone.contains("urn:xmpp:mam:2") && phone.contains("<stanza-id"),
        "MAM results:\n{phone}"
    );
    for i in 0..3 {
        let raw = s.received(i);
        assert!(raw.len() > 1000, "account {i} received {} bytes", raw.len());
        assert!(
            !raw.contains(".internal"),
            "account {i} saw an internal domain:\n{raw}"
        );
    }
    assert!(
        !s.received(3).contains(".internal"),
        "the remote user saw an internal domain"
    );
    if std::env::var("DEALER_TEST_DUMP").is_ok() {
        eprintln!("PHONE:\n{phone}\nLAPTOP:\n{laptop}");
    }
    assert!(
        d.metric("dealer_relay_bytes_total{kind=\"rewrite\",direction=\"backend_to_client\"}")
            > 0.0
    );

    // A client that breaks its stream mid-session gets the error, and the whole
    // session ends: the backend leg too, not only the client's.
    let relaying = "dealer_connections{listener=\"c2s\",state=\"relaying\"}";
    assert!(
        wait_for(Duration::from_secs(5), || (d.metric(relaying) == 0.0)
            .then_some(()))
        .is_some(),
        "sessions before the raw one"
    );
    let (mut r, _) = Raw::starttls(d.c2s);
    r.send(format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{PW}"))
    ));
    r.expect("<success", SECS);
    r.send(HEADER);
    r.expect("</stream:features>", SECS);
    r.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>raw</resource></bind></iq>");
    let got = r.expect("</iq>", SECS);
    assert!(got.contains("<jid>alice@example.com/raw</jid>"), "{got}");
    assert_eq!(d.metric(relaying), 1.0);
    r.send("<message to='nora@example.com'><body>x</wrong></message>");
    let (got, _) = r.read_to_close(SECS);
    assert!(got.contains("<not-well-formed"), "{got}");
    assert!(
        wait_for(SECS, || (d.metric(relaying) == 0.0).then_some(())).is_some(),
        "the session's backend leg is still open"
    );
}

#[test]
fn redirect_through_a_front_to_the_owners_guard() {
    let node1 = ProsodySpec::new("node1.internal").user("alice", PW).start();
    let node2 = ProsodySpec::new("node2.internal").user("nora", PW).start();
    // A guard in front of node1: forwards node1's users, masking.
    let guard_body = |redirect1: &str, redirect2: &str| {
        format!(
            "domains: masked\nc2s: {{ mode: redirect }}\n{}backends:\n{}{}\
             s2s: {{ dialback_secret: \"masked secret\" }}\n",
            routing(),
            backend_line("node1", &node1, Some(redirect1)),
            backend_line("node2", &node2, Some(redirect2)),
        )
    };
    // Masked domains need an internal s2s listener (the backends' way to each other).
    let internal = || format!("  s2s_internal: [\"127.0.0.1:{}\"]\n", free_port());
    let guard = Dealer::start_with(
        &format!("self: node1\n{}", guard_body("127.0.0.1:1", "127.0.0.1:2")),
        &internal(),
    );
    let front = Dealer::start_with(
        &guard_body(&guard.c2s.to_string(), "127.0.0.1:2"),
        &internal(),
    );
    let r = common::client::login(
        &LoginOpts::new("alice@example.com", PW, front.c2s).tls(Transport::StartTls),
    );
    assert_eq!(
        r.see_other_host.as_deref(),
        Some(guard.c2s.to_string().as_str()),
        "{r:?}"
    );
    let at_guard = common::client::login(
        &LoginOpts::new("alice@example.com", PW, guard.c2s).tls(Transport::StartTls),
    );
    assert!(at_guard.ok, "{at_guard:?}");
    assert!(
        at_guard
            .bound_jid
            .as_deref()
            .unwrap_or_default()
            .starts_with("alice@example.com/")
    );
}
