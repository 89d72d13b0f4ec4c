//! The c2s front in redirect mode, end to end: real Prosody backends hosting
//! example.com with disjoint users, dealer as a child process, and slixmpp (a client
//! library the project did not write) or a raw socket where exact bytes matter.
//! Every user exists only on its owner, so logging in at the address dealer's
//! redirect names proves the routing.

mod common;

use std::time::Duration;

use common::client::{LoginOpts, Transport, login, login_many};
use common::dealer::{Dealer, backend_yaml};
use common::prosody::{Prosody, ProsodySpec};
use common::raw::{HEADER, Raw};

const PW: &str = "s3cret";
const SECS: Duration = Duration::from_secs(5);

/// node1 owns a–m, node2 owns n–z.
fn backends() -> (Prosody, Prosody) {
    let a = ProsodySpec::new("example.com")
        .user("alice", PW)
        .user("heidi", PW)
        .start();
    let b = ProsodySpec::new("example.com")
        .user("nora", PW)
        .user("zoe", PW)
        .start();
    (a, b)
}

fn body(a: &Prosody, b: &Prosody, split: &str, extra: &str) -> String {
    format!(
        "c2s: {{ mode: redirect, legacy_auth: true, mechanisms: [SCRAM-SHA-1, PLAIN] }}\n\
         routing:\n  strategy: ranges\n  ranges:\n    \
           - {{ from: a, to: {split}, backend: node1 }}\n    \
           - {{ from: {next}, to: z, backend: node2 }}\n  \
           default: node1\n\
         backends:\n{}{}{extra}",
        backend_yaml("node1", a, ""),
        backend_yaml("node2", b, ""),
        next = (split.as_bytes()[0] + 1) as char,
    )
}

/// Follow a redirect by hand: log in at exactly the address dealer named.
fn login_at(target: &str, user: &str) -> common::client::LoginResult {
    let addr = target
        .parse()
        .unwrap_or_else(|_| panic!("redirect target {target:?} is IP:port here"));
    login(&LoginOpts::new(&format!("{user}@example.com"), PW, addr))
}

#[test]
fn redirects_over_starttls_and_direct_tls_to_the_owner() {
    let (a, b) = backends();
    let d = Dealer::start(&body(&a, &b, "m", ""));
    let via = |user: &str, t: Transport, mech: &str| {
        let addr = if t == Transport::DirectTls {
            d.c2s_tls
        } else {
            d.c2s
        };
        LoginOpts::new(&format!("{user}@example.com"), PW, addr)
            .tls(t)
            .mechanism(mech)
    };
    let jobs = [
        via("alice", Transport::StartTls, "SCRAM-SHA-1"),
        via("zoe", Transport::StartTls, "PLAIN"),
        via("heidi", Transport::DirectTls, "PLAIN"),
        via("nora", Transport::DirectTls, "SCRAM-SHA-1"),
    ];
    let results = login_many(&jobs);
    let owners = [a.c2s, b.c2s, a.c2s, b.c2s];
    for ((job, r), owner) in jobs.iter().zip(&results).zip(owners) {
        assert!(
            !r.ok,
            "{}: dealer must not log anyone in itself: {r:?}",
            job.jid
        );
        assert_eq!(
            r.see_other_host.as_deref(),
            Some(owner.to_string().as_str()),
            "{}: {r:?}",
            job.jid
        );
    }
    // With TLS required (StartTls refuses to authenticate in clear, and Direct TLS is
    // TLS from the start), a see-other-host answer proves the auth went over TLS.
    // The client takes host and port only from dealer's stream error.
    for (job, r) in jobs.iter().zip(&results) {
        let user = job.jid.split('@').next().unwrap();
        let at = login_at(r.see_other_host.as_deref().unwrap(), user);
        assert!(at.ok, "{user} logs in where dealer sent it: {at:?}");
    }
    assert_eq!(
        d.metric("dealer_routing_decisions_total{backend=\"node1\",outcome=\"redirect\"}"),
        2.0
    );
    assert_eq!(
        d.metric("dealer_routing_decisions_total{backend=\"node2\",outcome=\"redirect\"}"),
        2.0
    );
    assert_eq!(
        d.metric("dealer_auth_peeks_total{mechanism=\"PLAIN\"}"),
        2.0
    );
    assert_eq!(
        d.metric("dealer_auth_peeks_total{mechanism=\"SCRAM-SHA-1\"}"),
        2.0
    );
    assert_eq!(
        d.metric("dealer_connections_accepted_total{listener=\"c2s_tls\"}"),
        2.0
    );
}

#[test]
fn legacy_iq_auth_gets_fields_without_digest_then_302() {
    let (a, b) = backends();
    let d = Dealer::start(&body(&a, &b, "m", ""));
    // A pre-XMPP-1.0 stream (no version) on the plaintext listener.
    let mut r = Raw::plain(d.c2s_plain);
    r.send(HEADER.replace(" version='1.0'", ""));
    r.send("<iq type='get' id='a1'><query xmlns='jabber:iq:auth'><username>zoe</username></query></iq>");
    let got = r.expect("</iq>", SECS);
    assert!(
        !got.contains("<stream:features"),
        "no features on a version-less stream: {got}"
    );
    assert!(got.contains("<iq type='result' id='a1'>"), "{got}");
    assert!(
        got.contains("<password/>") && got.contains("<resource/>"),
        "{got}"
    );
    assert!(
        !got.contains("digest"),
        "no <digest/>: it would bind dealer's stream id: {got}"
    );
    r.send(
        "<iq type='set' id='a2'><query xmlns='jabber:iq:auth'><username>zoe</username>\
         <password>s3cret</password><resource>r</resource></query></iq>",
    );
    let (got, _) = r.read_to_close(SECS);
    let want = format!(
        "<iq type='error' id='a2'><error code='302' type='modify'><redirect xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>{}</redirect></error></iq>",
        b.c2s
    );
    assert!(got.contains(&want), "expected {want} in {got}");
    assert!(got.ends_with("</stream:stream>"), "{got}");
    assert!(login_at(&b.c2s.to_string(), "zoe").ok);
    assert_eq!(
        d.metric("dealer_auth_peeks_total{mechanism=\"iq-auth\"}"),
        1.0
    );
}

#[test]
fn auth_without_initial_response_gets_an_empty_challenge() {
    let (a, b) = backends();
    let d = Dealer::start(&body(&a, &b, "m", ""));
    for (mech, first, owner) in [
        ("PLAIN", "\0nora\0s3cret".to_string(), b.c2s),
        (
            "SCRAM-SHA-1",
            "n,,n=heidi,r=fyko+d2lbbFgONRv9qkxdawL".to_string(),
            a.c2s,
        ),
    ] {
        let mut r = Raw::plain(d.c2s_plain);
        r.send(HEADER);
        r.expect("</stream:features>", SECS);
        r.send(format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'/>"
        ));
        r.expect(
            "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
            SECS,
        );
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(first);
        r.send(format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{b64}</response>"
        ));
        let (got, _) = r.read_to_close(SECS);
        assert!(
            got.contains(&format!("<see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>{owner}</see-other-host>")),
            "{mech}: {got}"
        );
    }
}

#[test]
fn guard_redirects_users_of_other_backends() {
    let (a, b) = backends();
    let guard = format!("self: node1\n{}", body(&a, &b, "m", ""));
    let d = Dealer::start(&guard);
    let r = login(&LoginOpts::new("zoe@example.com", PW, d.c2s).tls(Transport::StartTls));
    assert_eq!(
        r.see_other_host.as_deref(),
        Some(b.c2s.to_string().as_str()),
        "{r:?}"
    );
    assert!(login_at(&b.c2s.to_string(), "zoe").ok);
}

#[test]
fn reload_changes_where_the_next_login_goes() {
    let (a, b) = backends();
    let mut d = Dealer::start(&body(&a, &b, "m", ""));
    let nora = LoginOpts::new("nora@example.com", PW, d.c2s).tls(Transport::StartTls);
    assert_eq!(login(&nora).see_other_host, Some(b.c2s.to_string()));
    // n now belongs to node1.
    d.reload(&body(&a, &b, "n", ""));
    assert_eq!(login(&nora).see_other_host, Some(a.c2s.to_string()));
}

/// Bad input gets the right stream error within the deadline, while a good session
/// opened before it carries on.
#[test]
fn bad_input_gets_the_right_stream_error() {
    let (a, b) = backends();
    let limits = "limits: { handshake_timeout: 4s, max_header_bytes: 1024, max_stanza_bytes: 2048, max_depth: 8 }\n";
    let d = Dealer::start(&body(&a, &b, "m", limits));
    let mut good = Raw::plain(d.c2s_plain);
    good.send(HEADER);
    good.expect("</stream:features>", SECS);

    let deep = format!("{}{}", "<a>".repeat(9), "</a>".repeat(9));
    let many_attrs: String = (0..70).map(|i| format!(" a{i}='x'")).collect();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "garbage",
            "\u{16}\u{3}\u{1}\u{2}garbage".into(),
            "not-well-formed",
        ),
        (
            "http",
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            "not-well-formed",
        ),
        (
            "proxy header",
            "PROXY TCP4 192.0.2.1 192.0.2.2 1234 5222\r\n".into(),
            "not-well-formed",
        ),
        (
            "oversized header",
            format!(
                "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' x='{}'>",
                "y".repeat(2000)
            ),
            "policy-violation",
        ),
        (
            "dtd",
            format!("<!DOCTYPE x [<!ENTITY a 'b'>]>{HEADER}"),
            "restricted-xml",
        ),
        ("entity", format!("{HEADER}<iq>&a;</iq>"), "restricted-xml"),
        ("too deep", format!("{HEADER}{deep}"), "policy-violation"),
        (
            "too many attributes",
            format!("{HEADER}<iq{many_attrs}/>"),
            "policy-violation",
        ),
        (
            "too big",
            format!("{HEADER}<iq>{}</iq>", "z".repeat(4000)),
            "policy-violation",
        ),
        (
            "wrong host",
            HEADER.replace("example.com", "elsewhere.example"),
            "host-unknown",
        ),
        (
            "wrong namespace",
            HEADER.replace("jabber:client", "jabber:server"),
            "invalid-namespace",
        ),
        (
            "wrong version",
            HEADER.replace("'1.0'", "'2.0'"),
            "unsupported-version",
        ),
        (
            "stanza before auth",
            format!("{HEADER}<message to='x@example.com'/>"),
            "not-authorized",
        ),
    ];
    for (what, input, condition) in cases {
        let mut r = Raw::plain(d.c2s_plain);
        r.try_send(input);
        let (got, took) = r.read_to_close(SECS);
        assert!(
            got.contains(&format!(
                "<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'"
            )),
            "{what}: expected <{condition}/>, got {got}"
        );
        assert!(got.ends_with("</stream:stream>"), "{what}: {got}");
        assert!(
            took < Duration::from_secs(2),
            "{what}: answered at once, took {took:?}"
        );
    }
    // The good session was not disturbed.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode("\0alice\0s3cret");
    good.send(format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{b64}</auth>"
    ));
    let (got, _) = good.read_to_close(SECS);
    assert!(
        got.contains(&format!(">{}</see-other-host>", a.c2s)),
        "{got}"
    );
    for l in ["header_bytes", "stanza_bytes", "depth", "attributes"] {
        assert_eq!(
            d.metric(&format!("dealer_limit_hits_total{{limit=\"{l}\"}}")),
            1.0,
            "{l}"
        );
    }
    // A header that never ends, and a client that never speaks: the deadline (4 s).
    let slow: Vec<_> = [
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='exa",
        "",
    ]
    .into_iter()
    .map(|input| {
        let addr = d.c2s_plain;
        std::thread::spawn(move || {
            let mut r = Raw::plain(addr);
            r.try_send(input);
            let (got, took) = r.read_to_close(Duration::from_secs(8));
            (input, got, took)
        })
    })
    .collect();
    for t in slow {
        let (input, got, took) = t.join().expect("reader thread");
        assert!(got.contains("<connection-timeout"), "{input:?}: {got}");
        assert!(
            took >= Duration::from_millis(3500) && took < Duration::from_secs(6),
            "{took:?}"
        );
    }
    assert_eq!(
        d.metric("dealer_limit_hits_total{limit=\"handshake_timeout\"}"),
        2.0
    );
}

#[test]
fn connection_and_login_limits_per_source() {
    let (a, b) = backends();
    let limits = "limits: { max_connections_per_source: 3, logins_per_source_per_second: 2 }\n";
    let d = Dealer::start(&body(&a, &b, "m", limits));
    let mut held: Vec<Raw> = (0..3)
        .map(|_| {
            let mut r = Raw::plain(d.c2s_plain);
            r.send(HEADER);
            r.expect("</stream:features>", SECS);
            r
        })
        .collect();
    let mut fourth = Raw::plain(d.c2s_plain);
    fourth.try_send(HEADER);
    let (got, _) = fourth.read_to_close(SECS);
    assert!(got.contains("<policy-violation"), "{got}");
    assert_eq!(
        d.metric("dealer_limit_hits_total{limit=\"connections_per_source\"}"),
        1.0
    );
    // Two logins a second: the third in a burst is refused with a stream error.
    use base64::Engine;
    let auth = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        base64::engine::general_purpose::STANDARD.encode("\0alice\0s3cret")
    );
    let mut outcomes = Vec::new();
    for r in held.iter_mut() {
        r.send(&auth);
        outcomes.push(r.read_to_close(SECS).0);
    }
    assert!(
        outcomes[0].contains("<see-other-host") && outcomes[1].contains("<see-other-host"),
        "{outcomes:?}"
    );
    assert!(outcomes[2].contains("<policy-violation"), "{outcomes:?}");
    assert_eq!(
        d.metric("dealer_limit_hits_total{limit=\"logins_per_source\"}"),
        1.0
    );
    // Slots came back when those sessions ended.
    let mut again = Raw::plain(d.c2s_plain);
    again.send(HEADER);
    again.expect("</stream:features>", SECS);
}

#[test]
fn direct_tls_clients_are_sent_to_the_owners_direct_tls_address() {
    let (a, b) = backends();
    let with_tls = |p: &Prosody, tls: &str| {
        format!(
            "  {}: {{ c2s: \"{}\", redirect: \"{}\", redirect_tls: \"{tls}\" }}\n",
            if p.c2s == a.c2s { "node1" } else { "node2" },
            p.c2s,
            p.c2s
        )
    };
    let body = format!(
        "c2s: {{ mode: redirect, legacy_auth: true, mechanisms: [SCRAM-SHA-1, PLAIN] }}\n\
         routing:\n  strategy: ranges\n  ranges:\n    \
           - {{ from: a, to: m, backend: node1 }}\n    \
           - {{ from: n, to: z, backend: node2 }}\n  \
           default: node1\n\
         backends:\n{}{}",
        with_tls(&a, "xmpp1.example.com:5223"),
        with_tls(&b, "[2001:db8::2]:5223"),
    );
    let d = Dealer::start(&body);
    let via = |user: &str, t: Transport| {
        let addr = if t == Transport::DirectTls {
            d.c2s_tls
        } else {
            d.c2s
        };
        LoginOpts::new(&format!("{user}@example.com"), PW, addr).tls(t)
    };
    let results = login_many(&[
        via("alice", Transport::DirectTls),
        via("nora", Transport::DirectTls),
        via("alice", Transport::StartTls),
        via("nora", Transport::StartTls),
    ]);
    let want = [
        "xmpp1.example.com:5223".to_string(),
        "[2001:db8::2]:5223".to_string(),
        a.c2s.to_string(),
        b.c2s.to_string(),
    ];
    for (r, w) in results.iter().zip(&want) {
        assert_eq!(r.see_other_host.as_deref(), Some(w.as_str()), "{r:?}");
    }
    // The legacy 302 follows the same rule.
    let mut r = Raw::direct_tls(d.c2s_tls);
    r.send(HEADER.replace(" version='1.0'", ""));
    r.send(
        "<iq type='set' id='a2'><query xmlns='jabber:iq:auth'><username>zoe</username>\
         <password>s3cret</password><resource>r</resource></query></iq>",
    );
    let (got, _) = r.read_to_close(SECS);
    assert!(
        got.contains(
            "<redirect xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>[2001:db8::2]:5223</redirect>"
        ),
        "{got}"
    );
    // Without redirect_tls, `dealer check` says what Direct TLS clients get.
    let out = std::process::Command::new(common::dealer_bin())
        .args(["check", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("redirect_tls is not set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace(", redirect_tls: \"xmpp1.example.com:5223\"", "");
    std::fs::write(&d.config, plain).unwrap();
    let out = std::process::Command::new(common::dealer_bin())
        .args(["check", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("backends.node1.redirect_tls is not set"),
        "{stderr}"
    );
}
