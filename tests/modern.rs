//! Modern clients, routed on the stream header's `from` (early routing): real Prosody
//! 0.12 backends with Debian's mod_sasl2 and mod_sasl2_bind2 (plaintext legs, where
//! 0.12 runs them), xmpp.js logging in with SASL2 and Bind2 over STARTTLS through
//! dealer, and raw sockets for what a library would hide: Conversations' quick start
//! (header and `<authenticate/>` in one write), an identity that belongs elsewhere
//! (with a decoy account on the wrong backend, so a wrong route would succeed), the
//! owner's `<mechanisms/>` and `<authentication/>` byte for byte, classic resumption
//! after a cut connection, redirect mode, and masked domains. Every user exists on
//! its owner only.

mod common;

use std::time::Duration;

use base64::Engine;
use common::dealer::Dealer;
use common::prosody::{Prosody, ProsodySpec};
use common::raw::Raw;
use common::xmppjs;

const PW: &str = "s3cret";
const SECS: Duration = Duration::from_secs(5);

fn header(from: &str, to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' from='{from}' to='{to}' version='1.0'>"
    )
}

fn authenticate(user: &str, pw: &str, bind: Option<&str>) -> String {
    let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"));
    let bind = bind
        .map(|t| format!("<bind xmlns='urn:xmpp:bind:0'><tag>{t}</tag></bind>"))
        .unwrap_or_default();
    format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>{ir}</initial-response>\
         <user-agent id='d6a3a1e2-5f2c-4a3b-9c1d-2b8e4f6a7c90'><software>raw</software></user-agent>{bind}</authenticate>"
    )
}

/// node1 owns a–m (alice, and a decoy nora with nora's password), node2 n–z (nora).
fn backends(domain1: &str, domain2: &str) -> (Prosody, Prosody) {
    let n1 = ProsodySpec::new(domain1)
        .sasl2()
        .user("alice", PW)
        .user("nora", PW)
        .debug_log()
        .start();
    let n2 = ProsodySpec::new(domain2).sasl2().user("nora", PW).start();
    (n1, n2)
}

fn ranges() -> &'static str {
    "routing:\n  strategy: ranges\n  ranges:\n    \
       - { from: a, to: m, backend: node1 }\n    \
       - { from: n, to: z, backend: node2 }\n  \
       default: node1\n"
}

fn shared(n1: &Prosody, n2: &Prosody, mode: &str) -> Dealer {
    Dealer::start(&format!(
        "c2s: {{ mode: {mode}, mechanisms: [PLAIN] }}\n{}backends:\n  \
         node1: {{ c2s: \"{}\", redirect: \"{}\" }}\n  node2: {{ c2s: \"{}\", redirect: \"{}\" }}\n\
         limits: {{ logins_per_source_per_second: 0 }}\n",
        ranges(),
        n1.c2s,
        n1.c2s,
        n2.c2s,
        n2.c2s
    ))
}

fn js(addr: std::net::SocketAddr, user: &str, extra: &[&str]) -> serde_json::Value {
    let service = format!("xmpp://{addr}");
    let mut args = vec![
        "--service",
        &service,
        "--domain",
        "example.com",
        "--username",
        user,
        "--password",
        PW,
        "--no-tls-verify",
        "--mechanism",
        "PLAIN",
        "--no-presence",
    ];
    args.extend_from_slice(extra);
    xmppjs::run(&args)
}

#[test]
fn xmppjs_logs_in_with_sasl2_and_bind2_on_the_owner() {
    let (n1, n2) = backends("example.com", "example.com");
    let d = shared(&n1, &n2, "forward");
    for (user, owner) in [("alice", "node1"), ("nora", "node2")] {
        let r = js(d.c2s, user, &["--sasl2-required", "--resource", "laptop"]);
        assert_eq!(r["ok"], true, "{user}: {r}\n{}", d.log());
        assert_eq!(r["sasl"], "SASL2", "{r}");
        assert_eq!(r["bind"], "bind2", "{r}");
        assert_eq!(r["starttls"], true, "STARTTLS to dealer: {r}");
        assert!(
            r["jid"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&format!("{user}@example.com/laptop")),
            "{r}"
        );
        assert!(
            r["stream_from"]
                .as_array()
                .is_some_and(|a| a.iter().any(|f| f == &format!("{user}@example.com"))),
            "the library named itself: {r}"
        );
        assert!(
            d.metric(&format!(
                "dealer_auth_results_total{{backend=\"{owner}\",result=\"success\"}}"
            )) >= 1.0
        );
    }
    assert_eq!(
        d.metric("dealer_routing_sources_total{source=\"stream-from\"}"),
        2.0
    );
    // Without `from` the same library meets dealer's own stream, which offers SASL2
    // too (every backend has it), and still lands on the owner; without SASL2 it
    // falls back to SASL (PLAIN, as c2s.mechanisms says).
    let r = js(d.c2s, "nora", &["--no-stream-from"]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["sasl"], "SASL2", "{r}");
    let r = js(d.c2s, "nora", &["--no-stream-from", "--no-sasl2"]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["sasl"], "SASL", "{r}");
    assert_eq!(
        d.metric("dealer_routing_sources_total{source=\"sasl2\"}"),
        1.0
    );
    assert_eq!(
        d.metric("dealer_routing_sources_total{source=\"sasl\"}"),
        1.0
    );
}

#[test]
fn quick_start_a_foreign_identity_and_the_owners_offer_byte_for_byte() {
    let (n1, n2) = backends("example.com", "example.com");
    let d = shared(&n1, &n2, "forward");

    // What node1 offers alice directly, on its plaintext port.
    let mut direct = Raw::plain(n1.c2s);
    direct.send(header("alice@example.com", "example.com"));
    let direct = direct.expect("</stream:features>", SECS);
    let part = |s: &str, open: &str, close: &str| -> String {
        let a = s.find(open).unwrap_or_else(|| panic!("no {open} in {s}"));
        let b = s[a..]
            .find(close)
            .unwrap_or_else(|| panic!("no {close} in {s}"))
            + a;
        s[a..b + close.len()].to_owned()
    };

    // Conversations' quick start over Direct TLS: header and authenticate at once.
    let mut r = Raw::direct_tls(d.c2s_tls);
    r.send(format!(
        "{}{}",
        header("alice@example.com", "example.com"),
        authenticate("alice", PW, Some("phone"))
    ));
    let got = r.expect("</success>", SECS);
    for (open, close) in [
        ("<mechanisms", "</mechanisms>"),
        ("<authentication", "</authentication>"),
    ] {
        assert_eq!(
            part(&got, open, close),
            part(&direct, open, close),
            "the owner's {open} reaches the client as written"
        );
    }
    assert!(
        !got.contains("<starttls"),
        "no STARTTLS on a TLS stream: {got}"
    );
    assert!(
        got.contains("<authorization-identifier>alice@example.com/phone"),
        "{got}"
    );

    // alice's stream, nora's credentials: nora belongs to node2. node1 holds a decoy
    // nora with the same password, so a login forwarded there would succeed.
    let successes = || d.metric("dealer_auth_results_total{backend=\"node1\",result=\"success\"}");
    let before = successes();
    let mut r = Raw::direct_tls(d.c2s_tls);
    r.send(header("alice@example.com", "example.com"));
    r.expect("</stream:features>", SECS);
    r.received.clear();
    r.send(authenticate("nora", PW, None));
    let got = r.expect("</failure>", SECS);
    assert!(
        got.contains("<failure xmlns='urn:xmpp:sasl:2'><not-authorized"),
        "{got}"
    );
    assert_eq!(successes(), before, "node1 never saw nora's credentials");
    assert!(
        !n1.log().contains("nora@example.com"),
        "node1's log does not know nora:\n{}",
        n1.log()
    );
    // The same stream may still log in as the user it named.
    r.received.clear();
    r.send(authenticate("alice", PW, Some("desk")));
    let got = r.expect("</success>", SECS);
    assert!(got.contains("alice@example.com/desk"), "{got}");
}

#[test]
fn resumption_after_a_cut_lands_on_the_owner() {
    let (n1, n2) = backends("example.com", "example.com");
    let d = shared(&n1, &n2, "forward");
    let mut r = Raw::direct_tls(d.c2s_tls);
    r.send(header("nora@example.com", "example.com"));
    r.expect("</stream:features>", SECS);
    r.send(authenticate("nora", PW, Some("mobile")));
    r.expect("</success>", SECS);
    r.received.clear();
    r.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    r.expect("<enabled", SECS);
    let got = r.expect("/>", SECS).to_owned();
    let id = got
        .split("id='")
        .nth(1)
        .or_else(|| got.split("id=\"").nth(1))
        .and_then(|s| s.split(['\'', '"']).next())
        .unwrap_or_else(|| panic!("an sm id in {got}"))
        .to_owned();
    drop(r); // the connection is cut, without a stream close
    std::thread::sleep(Duration::from_millis(300));
    let mut r = Raw::direct_tls(d.c2s_tls);
    r.send(header("nora@example.com", "example.com"));
    r.expect("</stream:features>", SECS);
    r.send(authenticate("nora", PW, None));
    r.expect("</success>", SECS);
    r.received.clear();
    r.send(format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>"
    ));
    let got = r.expect("<resumed", SECS);
    assert!(got.contains(&id), "{got}");
}

#[test]
fn redirect_mode_redirects_on_the_header_alone() {
    let (n1, n2) = backends("example.com", "example.com");
    let d = shared(&n1, &n2, "redirect");
    let mut r = Raw::direct_tls(d.c2s_tls);
    r.send(header("nora@example.com", "example.com"));
    let (got, _) = r.read_to_close(SECS);
    assert!(
        got.contains(&format!(
            "<see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>{}</see-other-host>",
            n2.c2s
        )),
        "{got}"
    );
    assert!(!got.contains("<stream:features"), "{got}");
}

#[test]
fn masked_domains_mask_what_sasl2_names() {
    let (n1, n2) = backends("node1.internal", "node2.internal");
    let d = Dealer::start_with(
        &format!(
            "domains: masked\nc2s: {{ mode: forward, mechanisms: [PLAIN] }}\n{}backends:\n  \
             node1: {{ c2s: \"{}\", s2s: \"{}\", domain: node1.internal }}\n  \
             node2: {{ c2s: \"{}\", s2s: \"{}\", domain: node2.internal }}\n\
             s2s: {{ dialback_secret: \"x\" }}\n",
            ranges(),
            n1.c2s,
            n1.s2s,
            n2.c2s,
            n2.s2s
        ),
        &format!("  s2s_internal: [\"127.0.0.1:{}\"]\n", common::free_port()),
    );
    let mut r = Raw::direct_tls(d.c2s_tls);
    r.send(format!(
        "{}{}",
        header("alice@example.com", "example.com"),
        authenticate("alice", PW, Some("phone"))
    ));
    let got = r.expect("</success>", SECS);
    assert!(
        got.contains("<authorization-identifier>alice@example.com/phone"),
        "{got}"
    );
    assert!(!got.contains(".internal"), "{got}");
    let r = js(d.c2s, "nora", &["--sasl2-required", "--resource", "web"]);
    assert_eq!(r["ok"], true, "{r}\n{}", d.log());
    assert!(
        r["jid"]
            .as_str()
            .unwrap_or_default()
            .starts_with("nora@example.com/web"),
        "{r}"
    );
}
