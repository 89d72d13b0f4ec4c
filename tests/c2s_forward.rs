//! Forward mode, dealer's main job, end to end: real Prosody backends hosting
//! example.com with disjoint users, dealer as a child process in front of them, and
//! slixmpp logging in through dealer and talking to other users. Raw sockets only
//! where the test needs what slixmpp will not do (a retry on the same stream, XEP-0077
//! by hand).

mod common;

use std::time::Duration;

use base64::Engine;
use common::client::{
    LoginOpts, Transport, act, login, login_many, session, session_job, session_result,
    spawn_client,
};
use common::dealer::{Dealer, backend_yaml};
use common::prosody::{Prosody, ProsodySpec};
use common::raw::{HEADER, Raw};

const PW: &str = "s3cret";
const SECS: Duration = Duration::from_secs(5);

/// node1 owns a–m (alice, heidi), node2 owns n–z (nora, zoe).
fn backends() -> (Prosody, Prosody) {
    let a = ProsodySpec::new("example.com")
        .user("alice", PW)
        .user("heidi", PW)
        .allow_registration(true)
        .start();
    let b = ProsodySpec::new("example.com")
        .user("nora", PW)
        .user("zoe", PW)
        .allow_registration(true)
        .start();
    (a, b)
}

fn body(a: &Prosody, b: &Prosody, split: &str, extra: &str) -> String {
    format!(
        "c2s: {{ mode: forward, registration: true, mechanisms: [SCRAM-SHA-256, SCRAM-SHA-1, PLAIN] }}\n\
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

fn user(name: &str, d: &Dealer, t: Transport) -> LoginOpts {
    let addr = match t {
        Transport::Plain => d.c2s_plain,
        Transport::DirectTls => d.c2s_tls,
        _ => d.c2s,
    };
    LoginOpts::new(&format!("{name}@example.com"), PW, addr).tls(t)
}

fn plain_auth(user: &str, pw: &str) -> String {
    format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
    )
}

#[test]
fn users_of_two_backends_log_in_and_talk_through_dealer() {
    let (a, b) = backends();
    let d = Dealer::start(&body(&a, &b, "m", ""));
    let accounts = [
        user("alice", &d, Transport::StartTls).mechanism("SCRAM-SHA-1"),
        user("heidi", &d, Transport::DirectTls).mechanism("PLAIN"),
        user("nora", &d, Transport::StartTls),
        user("zoe", &d, Transport::StartTls).mechanism("PLAIN"),
    ];
    let s = session(
        &accounts,
        vec![
            act::send_message(0, "heidi@example.com", "hello heidi"),
            act::expect_message(1, "alice@example.com", "hello heidi"),
            act::send_message(1, "alice@example.com", "hi alice"),
            act::expect_message(0, "heidi@example.com", "hi alice"),
            act::send_message(2, "zoe@example.com", "hello zoe"),
            act::expect_message(3, "nora@example.com", "hello zoe"),
            act::send_message(3, "nora@example.com", "hi nora"),
            act::expect_message(2, "zoe@example.com", "hi nora"),
        ],
    );
    s.assert_ok();
    for (acc, name) in s.accounts.iter().zip(["alice", "heidi", "nora", "zoe"]) {
        assert!(acc.encrypted, "{name} talks TLS to dealer");
        let jid = acc.bound_jid.as_deref().unwrap_or_default();
        assert!(
            jid.starts_with(&format!("{name}@example.com/")),
            "{name}: {jid}"
        );
        // SCRAM-SHA-256 is configured, but no backend offers it: dealer does not either.
        let mechs = acc.mechanisms.clone().unwrap_or_default();
        assert!(!mechs.contains(&"SCRAM-SHA-256".to_string()), "{mechs:?}");
        assert!(mechs.contains(&"SCRAM-SHA-1".to_string()), "{mechs:?}");
    }
    assert!(
        d.log()
            .contains("c2s.mechanisms lists a mechanism this backend does not offer"),
        "dealer warns about SCRAM-SHA-256: {}",
        d.log()
    );
    assert_eq!(
        d.metric("dealer_auth_results_total{backend=\"node1\",result=\"success\"}"),
        2.0
    );
    assert_eq!(
        d.metric("dealer_auth_results_total{backend=\"node2\",result=\"success\"}"),
        2.0
    );
    assert_eq!(
        d.metric("dealer_routing_decisions_total{backend=\"node2\",outcome=\"forward\"}"),
        2.0
    );
    assert!(
        d.metric("dealer_relay_bytes_total{kind=\"copy\",direction=\"backend_to_client\"}") > 0.0
    );

    // A wrong password fails; a retry on the same stream with the right one succeeds.
    let wrong = login(
        &user("alice", &d, Transport::StartTls)
            .mechanism("PLAIN")
            .with_password("nope"),
    );
    assert!(
        !wrong.ok && wrong.sasl_failure.as_deref() == Some("not-authorized"),
        "{wrong:?}"
    );
    let (mut r, _) = Raw::starttls(d.c2s);
    r.send(plain_auth("alice", "wrong"));
    r.expect("</failure>", SECS);
    r.received.clear();
    r.send(plain_auth("zoe", PW)); // another user: routed afresh, to node2
    r.expect("<success", SECS);
    r.received.clear();
    r.send(HEADER);
    r.expect("</stream:features>", SECS);
    r.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>raw</resource></bind></iq>");
    let got = r.expect("</iq>", SECS);
    assert!(got.contains("<jid>zoe@example.com/raw</jid>"), "{got}");
    assert!(d.metric("dealer_auth_results_total{backend=\"node1\",result=\"failure\"}") >= 2.0);

    // In the middle of alice's SCRAM exchange, a fresh <auth/> for another user would
    // reach alice's backend unrouted: dealer ends the stream instead.
    let (mut r, _) = Raw::starttls(d.c2s);
    let first = base64::engine::general_purpose::STANDARD.encode("n,,n=alice,r=0123456789abcdef");
    r.send(format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{first}</auth>"
    ));
    r.expect("</challenge>", SECS);
    r.send(plain_auth("heidi", PW));
    let (got, _) = r.read_to_close(SECS);
    assert!(got.contains("<policy-violation"), "{got}");
    assert!(!got.contains("<success"), "{got}");
}

#[test]
fn plaintext_clients_are_spliced() {
    let (a, b) = backends();
    let d = Dealer::start(&body(&a, &b, "m", ""));
    let s = session(
        &[
            user("alice", &d, Transport::Plain),
            user("heidi", &d, Transport::Plain),
        ],
        vec![
            act::send_message(0, "heidi@example.com", "through the kernel"),
            act::expect_message(1, "alice@example.com", "through the kernel"),
            act::send_message(1, "alice@example.com", "and back"),
            act::expect_message(0, "heidi@example.com", "and back"),
        ],
    );
    s.assert_ok();
    let splice_up =
        d.metric("dealer_relay_bytes_total{kind=\"splice\",direction=\"client_to_backend\"}");
    let splice_down =
        d.metric("dealer_relay_bytes_total{kind=\"splice\",direction=\"backend_to_client\"}");
    assert!(
        splice_up > 0.0 && splice_down > 0.0,
        "{splice_up} {splice_down}"
    );
    for dir in ["client_to_backend", "backend_to_client"] {
        assert_eq!(
            d.metric(&format!(
                "dealer_relay_bytes_total{{kind=\"copy\",direction=\"{dir}\"}}"
            )),
            0.0
        );
    }
}

#[test]
fn guard_forwards_its_own_users_and_redirects_others() {
    let (a, b) = backends();
    let d = Dealer::start(&format!("self: node1\n{}", body(&a, &b, "m", "")));
    let r = login_many(&[
        user("heidi", &d, Transport::StartTls),
        user("zoe", &d, Transport::StartTls),
    ]);
    assert!(r[0].ok, "{:?}", r[0]);
    assert!(
        r[0].bound_jid
            .as_deref()
            .unwrap_or_default()
            .starts_with("heidi@example.com/")
    );
    assert_eq!(
        r[1].see_other_host.as_deref(),
        Some(b.c2s.to_string().as_str()),
        "{:?}",
        r[1]
    );
}

#[test]
fn registration_lands_on_the_owner() {
    let (a, b) = backends();
    let d = Dealer::start(&body(&a, &b, "m", ""));
    let mut r = Raw::plain(d.c2s_plain);
    r.send(HEADER);
    let f = r.expect("</stream:features>", SECS);
    assert!(
        f.contains("<register xmlns='http://jabber.org/features/iq-register'/>"),
        "{f}"
    );
    r.send("<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>");
    r.expect("</iq>", SECS);
    r.received.clear();
    // `nadia` falls in n–z: node2.
    r.send("<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>nadia</username><password>s3cret</password></query></iq>");
    let got = r.expect("id='r2'", SECS);
    assert!(got.contains("type='result'"), "{got}");
    // The account exists on node2 only.
    let direct = login_many(&[
        LoginOpts::new("nadia@example.com", PW, b.c2s),
        LoginOpts::new("nadia@example.com", PW, a.c2s),
    ]);
    assert!(direct[0].ok, "{:?}", direct[0]);
    assert!(!direct[1].ok, "{:?}", direct[1]);
    // And through dealer.
    assert!(login(&user("nadia", &d, Transport::StartTls)).ok);
    assert_eq!(
        d.metric("dealer_auth_peeks_total{mechanism=\"register\"}"),
        1.0
    );
}

#[test]
fn a_dying_backend_ends_its_sessions_only() {
    let (mut a, b) = backends();
    let d = Dealer::start(&body(
        &a,
        &b,
        "m",
        "health: { interval: 1s, timeout: 1s, fall: 1, rise: 1 }\n",
    ));
    let mut client = spawn_client(&session_job(
        &[
            user("alice", &d, Transport::StartTls),
            user("nora", &d, Transport::Plain),
            user("zoe", &d, Transport::StartTls),
        ],
        vec![
            act::mark("in"),
            act::expect_disconnect(0, 3.0),
            act::send_message(1, "zoe@example.com", "still here"),
            act::expect_message(2, "nora@example.com", "still here"),
        ],
    ));
    client.wait_mark("in", Duration::from_secs(30));
    a.kill();
    let s = session_result(client.finish());
    s.assert_ok();
    // Down at login: the client is told, not left hanging.
    let r = login(&user("heidi", &d, Transport::StartTls));
    assert_eq!(
        r.stream_error.as_deref(),
        Some("remote-connection-failed"),
        "{r:?}"
    );
}

#[test]
fn sessions_survive_a_reload_that_changes_their_owner() {
    let (a, b) = backends();
    let mut d = Dealer::start(&body(&a, &b, "m", ""));
    let mut client = spawn_client(&session_job(
        &[
            user("alice", &d, Transport::StartTls),
            user("heidi", &d, Transport::Plain),
        ],
        vec![
            act::mark("in"),
            act::sleep(3.0),
            act::send_message(0, "heidi@example.com", "after the reload"),
            act::expect_message(1, "alice@example.com", "after the reload"),
            act::send_message(1, "alice@example.com", "still with node1"),
            act::expect_message(0, "heidi@example.com", "still with node1"),
        ],
    ));
    client.wait_mark("in", Duration::from_secs(30));
    // a–m now belongs to node2, where alice has no account.
    let moved = format!(
        "c2s: {{ mode: forward }}\nrouting:\n  strategy: ranges\n  ranges:\n    - {{ from: a, to: z, backend: node2 }}\n  default: node2\nbackends:\n{}{}",
        backend_yaml("node1", &a, ""),
        backend_yaml("node2", &b, "")
    );
    d.reload(&moved);
    session_result(client.finish()).assert_ok();
    let r = login(&user("alice", &d, Transport::StartTls));
    assert!(
        !r.ok,
        "alice is routed to node2 now, where she has no account: {r:?}"
    );
    // slixmpp tries its next mechanism on the same stream: one decision or more.
    assert!(
        d.metric("dealer_routing_decisions_total{backend=\"node2\",outcome=\"forward\"}") >= 1.0
    );
}

/// A backend written as `localhost:PORT`: dealer looks the name up when it loads the
/// config and logs the backend's users in there. Prosody also listens on the address
/// the system resolver gives first for localhost, should that not be 127.0.0.1.
#[test]
fn a_backend_named_by_host_name_logs_its_users_in() {
    use std::net::ToSocketAddrs;
    let first = ("localhost", 5222)
        .to_socket_addrs()
        .expect("the system resolver answers for localhost")
        .next()
        .expect("localhost has an address");
    let mut spec = ProsodySpec::new("example.com")
        .user("alice", PW)
        .user("heidi", PW);
    if first.ip().to_string() != "127.0.0.1" {
        spec = spec.config(&format!(
            "c2s_interfaces = {{ \"127.0.0.1\", \"{}\" }}",
            first.ip()
        ));
    }
    let a = spec.start();
    let d = Dealer::start(&format!(
        "c2s: {{ mode: forward, mechanisms: [SCRAM-SHA-1, PLAIN] }}\n\
         backends:\n  node1: {{ c2s: \"localhost:{}\" }}\n",
        a.c2s.port()
    ));
    session(
        &[
            user("alice", &d, Transport::StartTls),
            user("heidi", &d, Transport::Plain),
        ],
        vec![
            act::send_message(0, "heidi@example.com", "by name"),
            act::expect_message(1, "alice@example.com", "by name"),
        ],
    )
    .assert_ok();
}
