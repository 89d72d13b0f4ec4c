//! SASL2 on dealer's own stream, for clients that do not name themselves in their
//! stream header: when every backend offers SASL2 (Prosody 0.12 with Debian's
//! mod_sasl2 and mod_sasl2_bind2, plaintext legs), dealer offers it too, routes on
//! `<authenticate/>`'s initial response and replays the element to the owner. A raw
//! client runs SCRAM-SHA-1 to the end (the server signature checked), PLAIN with
//! Bind2, a failure then a retry as a user of the other backend on the same stream;
//! xmpp.js with its header `from` removed logs in with SASL2; redirect mode and masked
//! domains; a backend without SASL2 turns it off on dealer's stream.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::dealer::Dealer;
use common::prosody::{Prosody, ProsodySpec};
use common::raw::{HEADER, Raw};
use common::xmppjs;

const PW: &str = "s3cret";
const SECS: Duration = Duration::from_secs(5);

fn ranges() -> &'static str {
    "routing:\n  strategy: ranges\n  ranges:\n    \
       - { from: a, to: m, backend: node1 }\n    \
       - { from: n, to: z, backend: node2 }\n  \
       default: node1\n"
}

fn backends(d1: &str, d2: &str) -> (Prosody, Prosody) {
    (
        ProsodySpec::new(d1).sasl2().user("alice", PW).start(),
        ProsodySpec::new(d2).sasl2().user("nora", PW).start(),
    )
}

fn dealer(n1: &Prosody, n2: &Prosody, mode: &str) -> Dealer {
    Dealer::start(&format!(
        "c2s: {{ mode: {mode}, mechanisms: [SCRAM-SHA-1, PLAIN] }}\n{}backends:\n  \
         node1: {{ c2s: \"{}\", redirect: \"{}\" }}\n  node2: {{ c2s: \"{}\", redirect: \"{}\" }}\n\
         health: {{ interval: 1s, timeout: 500ms }}\n\
         limits: {{ logins_per_source_per_second: 0 }}\n",
        ranges(),
        n1.c2s,
        n1.c2s,
        n2.c2s,
        n2.c2s
    ))
}

/// A stream to dealer over TLS, without `from`; returns it with the features.
fn open(d: &Dealer) -> (Raw, String) {
    let mut r = Raw::direct_tls(d.c2s_tls);
    r.send(HEADER);
    let f = r.expect("</stream:features>", SECS);
    r.received.clear();
    (r, f)
}

fn plain(user: &str, pw: &str, bind: Option<&str>) -> String {
    let ir = B64.encode(format!("\0{user}\0{pw}"));
    let bind = bind
        .map(|t| format!("<bind xmlns='urn:xmpp:bind:0'><tag>{t}</tag></bind>"))
        .unwrap_or_default();
    format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>{ir}</initial-response>\
         <user-agent id='0c1e3a4b-2d5f-4e6a-8b7c-9d0e1f2a3b4c'><software>raw</software></user-agent>{bind}</authenticate>"
    )
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> &'a str {
    let a = s.find(open).unwrap_or_else(|| panic!("no {open} in {s}")) + open.len();
    let b = s[a..]
        .find(close)
        .unwrap_or_else(|| panic!("no {close} in {s}"))
        + a;
    &s[a..b]
}

/// SCRAM-SHA-1 (RFC 5802) to the end, inside SASL2; returns the success element.
fn scram(r: &mut Raw, user: &str, pw: &str) -> String {
    use ring::{digest, hmac, pbkdf2};
    let cnonce = "fyko+d2lbbFgONRv9qkxdawL";
    let first_bare = format!("n={user},r={cnonce}");
    r.send(format!(
        "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-1'><initial-response>{}</initial-response></authenticate>",
        B64.encode(format!("n,,{first_bare}"))
    ));
    let got = r.expect("</challenge>", SECS);
    let server_first = String::from_utf8(
        B64.decode(between(
            &got,
            "<challenge xmlns='urn:xmpp:sasl:2'>",
            "</challenge>",
        ))
        .unwrap(),
    )
    .unwrap();
    let field = |k: &str| {
        server_first
            .split(',')
            .find_map(|f| f.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {server_first}"))
            .to_owned()
    };
    let (nonce, salt, iters) = (field("r="), B64.decode(field("s=")).unwrap(), field("i="));
    let mut salted = [0u8; 20];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA1,
        iters.parse().unwrap(),
        &salt,
        pw.as_bytes(),
        &mut salted,
    );
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, client_key.as_ref());
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{first_bare},{server_first},{without_proof}");
    let sig = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, stored.as_ref()),
        auth_message.as_bytes(),
    );
    let proof: Vec<u8> = client_key
        .as_ref()
        .iter()
        .zip(sig.as_ref())
        .map(|(a, b)| a ^ b)
        .collect();
    r.received.clear();
    r.send(format!(
        "<response xmlns='urn:xmpp:sasl:2'>{}</response>",
        B64.encode(format!("{without_proof},p={}", B64.encode(proof)))
    ));
    let got = r.expect("</success>", SECS);
    let server_key = hmac::sign(&key, b"Server Key");
    let server_sig = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, server_key.as_ref()),
        auth_message.as_bytes(),
    );
    let additional = String::from_utf8(
        B64.decode(between(&got, "<additional-data>", "</additional-data>"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        additional,
        format!("v={}", B64.encode(server_sig.as_ref())),
        "the owner's server signature reaches the client intact"
    );
    got
}

#[test]
fn dealer_offers_sasl2_and_routes_on_authenticate() {
    let (n1, n2) = backends("example.com", "example.com");
    let d = dealer(&n1, &n2, "forward");
    let (mut r, features) = open(&d);
    assert!(
        features.contains("<authentication xmlns='urn:xmpp:sasl:2'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism><inline><bind xmlns='urn:xmpp:bind:0'/></inline></authentication>"),
        "{features}"
    );
    let got = scram(&mut r, "alice", PW);
    assert!(
        got.contains("<authorization-identifier>alice@example.com"),
        "{got}"
    );

    // PLAIN with Bind2 for nora (node2), after a failed attempt on the same stream.
    let (mut r, _) = open(&d);
    r.send(plain("alice", "wrong", None));
    let got = r.expect("</failure>", SECS);
    assert!(got.contains("<failure xmlns='urn:xmpp:sasl:2'>"), "{got}");
    r.received.clear();
    r.send(plain("nora", PW, Some("tablet")));
    let got = r.expect("</success>", SECS);
    assert!(
        got.contains("<authorization-identifier>nora@example.com/tablet"),
        "{got}"
    );
    // The session is live on nora's owner: a message to herself comes back.
    r.received.clear();
    let me = between(
        &got,
        "<authorization-identifier>",
        "</authorization-identifier>",
    )
    .to_owned();
    r.send(format!(
        "<message to='{me}' type='chat' id='m1'><body>echo</body></message>"
    ));
    r.expect("<body>echo</body>", SECS);
    assert_eq!(
        d.metric("dealer_routing_sources_total{source=\"sasl2\"}"),
        3.0
    );
    assert_eq!(
        d.metric("dealer_auth_results_total{backend=\"node1\",result=\"failure\"}"),
        1.0
    );

    // A mechanism whose first message names nobody gets a clear failure.
    let (mut r, _) = open(&d);
    r.send("<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'/>");
    let got = r.expect("</failure>", SECS);
    assert!(
        got.contains("<malformed-request") && got.contains("initial response"),
        "{got}"
    );

    // xmpp.js without `from` in its header meets dealer's stream, and SASL2 there.
    let service = format!("xmpp://{}", d.c2s);
    let js = xmppjs::run(&[
        "--service",
        &service,
        "--domain",
        "example.com",
        "--username",
        "nora",
        "--password",
        PW,
        "--no-tls-verify",
        "--no-stream-from",
        "--sasl2-required",
        "--mechanism",
        "PLAIN",
        "--resource",
        "js",
        "--no-presence",
    ]);
    assert_eq!(js["ok"], true, "{js}\n{}", d.log());
    assert_eq!(js["sasl"], "SASL2", "{js}");
    assert!(
        js["jid"]
            .as_str()
            .unwrap_or_default()
            .starts_with("nora@example.com/js"),
        "{js}"
    );
}

#[test]
fn redirect_and_masked_and_a_backend_without_sasl2() {
    let (n1, n2) = backends("example.com", "example.com");
    let d = dealer(&n1, &n2, "redirect");
    let (mut r, _) = open(&d);
    r.send(plain("nora", PW, None));
    let (got, _) = r.read_to_close(SECS);
    assert!(
        got.contains(&format!(
            "<see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>{}</see-other-host>",
            n2.c2s
        )),
        "{got}"
    );

    // Masked domains: the authorization identifier comes back in the public domain.
    let (m1, m2) = backends("node1.internal", "node2.internal");
    let d = Dealer::start_with(
        &format!(
            "domains: masked\nc2s: {{ mode: forward, mechanisms: [PLAIN] }}\n{}backends:\n  \
             node1: {{ c2s: \"{}\", s2s: \"{}\", domain: node1.internal }}\n  \
             node2: {{ c2s: \"{}\", s2s: \"{}\", domain: node2.internal }}\n\
             s2s: {{ dialback_secret: \"x\" }}\n",
            ranges(),
            m1.c2s,
            m1.s2s,
            m2.c2s,
            m2.s2s
        ),
        &format!("  s2s_internal: [\"127.0.0.1:{}\"]\n", common::free_port()),
    );
    let (mut r, features) = open(&d);
    assert!(features.contains("urn:xmpp:sasl:2"), "{features}");
    r.send(plain("alice", PW, Some("phone")));
    let got = r.expect("</success>", SECS);
    assert!(
        got.contains("<authorization-identifier>alice@example.com/phone"),
        "{got}"
    );
    assert!(!got.contains(".internal"), "{got}");

    // One backend without SASL2: dealer stops offering it (and logs why).
    let plain_only = ProsodySpec::new("example.com").user("nora", PW).start();
    let d = dealer(&n1, &plain_only, "forward");
    let gone = common::wait_for(SECS, || {
        let (_, f) = open(&d);
        (!f.contains("urn:xmpp:sasl:2")).then_some(f)
    });
    assert!(
        gone.is_some(),
        "SASL2 is offered only while every backend has it"
    );
}
