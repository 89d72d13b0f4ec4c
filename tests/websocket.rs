//! The WebSocket front (RFC 7395) with real clients: xmpp.js over `ws://` (routed on
//! its `<open from/>`) and `wss://` (without `from`, on dealer's own stream) to the
//! owners of its users, two of them exchanging a message; Converse.js in headless
//! Chromium logging in through dealer and sending a message a slixmpp user receives
//! — on the same backend, and with masked domains on another one (a screenshot of
//! the chat is kept under target/test-artifacts/); redirect with `see-other-uri`;
//! host-meta; a relayed session ended by shutdown closed with `<close/>`; and what
//! RFC 7395 refuses: a subprotocol other than xmpp, a binary
//! frame, an oversized message, two elements in one message, no `<open/>`.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::client::{LoginOpts, Transport, act, spawn_client};
use common::dealer::Dealer;
use common::prosody::{Prosody, ProsodySpec};
use common::{free_port, repo_path, xmppjs};
use tungstenite::Message;

const PW: &str = "s3cret";

struct Ws {
    plain: SocketAddr,
    tls: SocketAddr,
}

fn ws_listen() -> (Ws, String) {
    let (p, t) = (free_port(), free_port());
    (
        Ws {
            plain: SocketAddr::from(([127, 0, 0, 1], p)),
            tls: SocketAddr::from(([127, 0, 0, 1], t)),
        },
        format!(
            "  websocket: [\"127.0.0.1:{p}\", {{ addr: \"127.0.0.1:{t}\", tls: true, host_meta: \"wss://example.com/xmpp-websocket\" }}]\n"
        ),
    )
}

fn ranges() -> &'static str {
    "routing:\n  strategy: ranges\n  ranges:\n    \
       - { from: a, to: m, backend: node1 }\n    \
       - { from: n, to: z, backend: node2 }\n  \
       default: node1\n"
}

fn shared_backends() -> (Prosody, Prosody) {
    (
        ProsodySpec::new("example.com")
            .user("alice", PW)
            .user("bob", PW)
            .start(),
        ProsodySpec::new("example.com").user("nora", PW).start(),
    )
}

/// Two Prosody backends sharing `example.com` and dealer in front with ranges routing
/// and WebSocket listeners, plus `extra` config lines.
fn ranges_dealer(extra: &str) -> (Prosody, Prosody, Ws, Dealer) {
    let (n1, n2) = shared_backends();
    let (ws, listen) = ws_listen();
    let d = Dealer::start_with(
        &format!(
            "{}backends:\n  node1: {{ c2s: \"{}\" }}\n  node2: {{ c2s: \"{}\" }}\n{extra}\n",
            ranges(),
            n1.c2s,
            n2.c2s
        ),
        &listen,
    );
    (n1, n2, ws, d)
}

fn js(service: &str, user: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--service",
        service,
        "--domain",
        "example.com",
        "--username",
        user,
        "--password",
        PW,
        "--no-tls-verify",
        "--mechanism",
        "PLAIN",
    ];
    args.extend_from_slice(extra);
    xmppjs::run(&args)
}

#[test]
fn xmppjs_over_ws_and_wss_reaches_the_owner() {
    let (_n1, _n2, ws, d) = ranges_dealer("limits: { logins_per_source_per_second: 0 }");
    let plain = format!("ws://{}/xmpp-websocket", ws.plain);
    let tls = format!("wss://{}/xmpp-websocket", ws.tls);
    for (service, user, extra) in [
        (&plain, "alice", &[][..]),
        (&plain, "nora", &[][..]),
        (&tls, "nora", &["--no-stream-from"][..]),
        (&tls, "alice", &[][..]),
    ] {
        let r = js(service, user, extra);
        assert_eq!(r["ok"], true, "{service} {user}: {r}\n{}", d.log());
        assert_eq!(r["transport"], "websocket", "{r}");
        assert!(
            r["jid"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&format!("{user}@example.com/")),
            "{r}"
        );
    }
    // Each user exists only on its owner: four logins, two on each.
    for node in ["node1", "node2"] {
        assert_eq!(
            d.metric(&format!(
                "dealer_auth_results_total{{backend=\"{node}\",result=\"success\"}}"
            )),
            2.0
        );
    }
    assert_eq!(
        d.metric("dealer_connections_accepted_total{listener=\"websocket\"}"),
        4.0
    );
    // Two users of node1 talk over WebSocket.
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("bob.ready");
    let ready_s = ready.to_string_lossy().into_owned();
    let plain2 = plain.clone();
    let bob = std::thread::spawn(move || {
        js(
            &plain2,
            "bob",
            &[
                "--ready-file",
                &ready_s,
                "--expect-from",
                "alice@example.com",
                "--expect-body",
                "hi bob, over websocket",
                "--timeout",
                "20",
            ],
        )
    });
    let up = common::wait_for(Duration::from_secs(20), || ready.exists().then_some(()));
    assert!(up.is_some(), "bob came online");
    let bob_jid = std::fs::read_to_string(&ready).unwrap();
    let a = js(
        &plain,
        "alice",
        &[
            "--send-to",
            bob_jid.trim(),
            "--body",
            "hi bob, over websocket",
        ],
    );
    assert_eq!(a["ok"], true, "{a}");
    let b = bob.join().unwrap();
    assert_eq!(b["ok"], true, "{b}");

    // host-meta on the TLS listener, as configured.
    let mut r = common::raw::Raw::tls_alpn(ws.tls, b"http/1.1");
    r.send("GET /.well-known/host-meta HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
    let (got, _) = r.read_to_close(Duration::from_secs(5));
    assert!(
        got.contains("urn:xmpp:alt-connections:websocket")
            && got.contains("wss://example.com/xmpp-websocket"),
        "{got}"
    );
}

/// A raw WebSocket to `addr` offering `protocol`.
fn connect(
    addr: SocketAddr,
    protocol: &str,
) -> Result<tungstenite::WebSocket<TcpStream>, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/xmpp-websocket")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tungstenite::client::client(req, tcp)
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => {
                tungstenite::Error::Io(std::io::ErrorKind::WouldBlock.into())
            }
        })
}

/// Everything the server sends until it closes: texts, and the close code.
fn drain(ws: &mut tungstenite::WebSocket<TcpStream>) -> (Vec<String>, Option<u16>) {
    let mut texts = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => texts.push(t.to_string()),
            Ok(Message::Close(c)) => return (texts, c.map(|f| u16::from(f.code))),
            Ok(_) => {}
            Err(_) => return (texts, None),
        }
    }
}

const OPEN: &str =
    "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>";

#[test]
fn what_rfc_7395_refuses_is_refused() {
    let (_n1, _n2, ws, d) = ranges_dealer("limits: { max_stanza_bytes: 4096 }");
    // Not the xmpp subprotocol: the upgrade is refused.
    match connect(ws.plain, "chat") {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    // A well-behaved open gets <open/> and features, each a message of its own.
    let mut w = connect(ws.plain, "xmpp").unwrap();
    w.send(Message::text(OPEN)).unwrap();
    let open = w.read().unwrap().into_text().unwrap();
    assert!(
        open.starts_with("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'"),
        "{open}"
    );
    let features = w.read().unwrap().into_text().unwrap();
    assert!(
        features.starts_with("<stream:features xmlns:stream='http://etherx.jabber.org/streams'>"),
        "{features}"
    );
    // Two elements in one message: not-well-formed, then <close/>.
    w.send(Message::text(
        "<iq xmlns='jabber:client' type='get' id='1'/><iq xmlns='jabber:client' type='get' id='2'/>",
    ))
    .unwrap();
    let (texts, _) = drain(&mut w);
    let all = texts.join("");
    assert!(all.contains("<not-well-formed"), "{all}");
    assert!(
        all.contains("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"),
        "{all}"
    );
    // A binary frame: WebSocket close 1003.
    let mut w = connect(ws.plain, "xmpp").unwrap();
    w.send(Message::binary(OPEN.as_bytes().to_vec())).unwrap();
    let (_, code) = drain(&mut w);
    assert_eq!(code, Some(1003));
    // A message over the stanza limit: close 1009.
    let mut w = connect(ws.plain, "xmpp").unwrap();
    w.send(Message::text(OPEN)).unwrap();
    let big = format!(
        "<message xmlns='jabber:client' to='x@example.com'><body>{}</body></message>",
        "x".repeat(20_000)
    );
    let _ = w.send(Message::text(big));
    let (_, code) = drain(&mut w);
    assert_eq!(code, Some(1009));
    // No <open/> first: a stream error (with dealer's <open/> before it), then <close/>.
    let mut w = connect(ws.plain, "xmpp").unwrap();
    w.send(Message::text(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>",
    ))
    .unwrap();
    let (texts, _) = drain(&mut w);
    let all = texts.join("");
    assert!(
        all.contains("<stream:error") && all.contains("</stream:error>"),
        "{all}"
    );
    assert!(
        all.contains("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"),
        "{all}"
    );
    drop(d);
}

#[test]
fn a_relayed_websocket_session_ended_by_shutdown_is_closed_in_order() {
    let (_n1, _n2, ws, d) = ranges_dealer("shutdown: { grace: 1s }");
    // alice logs in and binds by hand, through to the relay.
    let mut w = connect(ws.plain, "xmpp").unwrap();
    let read_until = |w: &mut tungstenite::WebSocket<TcpStream>, what: &str| {
        let mut seen = String::new();
        while !seen.contains(what) {
            match w.read() {
                Ok(Message::Text(t)) => seen.push_str(&t),
                Ok(_) => {}
                Err(e) => panic!("waiting for {what}: {e}; got {seen}"),
            }
        }
        seen
    };
    w.send(Message::text(OPEN)).unwrap();
    read_until(&mut w, "</stream:features>");
    w.send(Message::text(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHMzY3JldA==</auth>",
    ))
    .unwrap();
    read_until(&mut w, "<success");
    w.send(Message::text(OPEN)).unwrap();
    read_until(&mut w, "</stream:features>");
    w.send(Message::text(
        "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
    ))
    .unwrap();
    let bound = read_until(&mut w, "</iq>");
    assert!(bound.contains("alice@example.com/"), "{bound}");
    // Past the shutdown grace the session is ended: a WebSocket client is told with
    // <close/> (RFC 7395 §3.6) and a WebSocket close frame, not just dropped.
    d.process.signal(rustix::process::Signal::TERM);
    read_until(&mut w, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'");
    let closed_in_order = loop {
        match w.read() {
            Ok(Message::Close(_)) => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    assert!(
        closed_in_order,
        "the WebSocket ended without a close frame after <close/>"
    );
    drop(d);
}

#[test]
fn redirect_mode_sends_browsers_to_the_owners_websocket_url() {
    let (n1, n2) = shared_backends();
    let (ws, listen) = ws_listen();
    let _d = Dealer::start_with(
        &format!(
            "c2s: {{ mode: redirect }}\n{}backends:\n  \
             node1: {{ c2s: \"{}\", redirect: \"{}\", redirect_websocket: \"wss://xmpp1.example.com/xmpp-websocket\" }}\n  \
             node2: {{ c2s: \"{}\", redirect: \"{}\", redirect_websocket: \"wss://xmpp2.example.com/xmpp-websocket\" }}\n",
            ranges(),
            n1.c2s,
            n1.c2s,
            n2.c2s,
            n2.c2s
        ),
        &listen,
    );
    let mut w = connect(ws.plain, "xmpp").unwrap();
    w.send(Message::text(
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='nora@example.com' to='example.com' version='1.0'/>",
    ))
    .unwrap();
    let (texts, _) = drain(&mut w);
    let all = texts.join("");
    assert!(
        all.contains("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing' see-other-uri='wss://xmpp2.example.com/xmpp-websocket'/>"),
        "{all}"
    );
}

/// Converse.js in Chromium; returns its JSON.
fn converse(websocket: &str, jid: &str, to: &str, body: &str, shot: &str) -> serde_json::Value {
    let dir = repo_path("tests/clients/browser");
    assert!(
        dir.join("node_modules/converse.js").exists(),
        "converse.js is not installed: run `npm ci` in {} (.ci/test does)",
        dir.display()
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is missing: apt-get install chromium (.ci/test installs it)"
    );
    let out = Command::new("node")
        .arg(dir.join("run.mjs"))
        .args([
            "--websocket",
            websocket,
            "--jid",
            jid,
            "--password",
            PW,
            "--send-to",
            to,
            "--body",
            body,
            "--screenshot",
            shot,
            "--timeout",
            "40",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("running the browser harness (node)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| {
        panic!(
            "no JSON from run.mjs ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn artifacts() -> std::path::PathBuf {
    let dir = repo_path("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What Converse.js asks a server for before it opens a chat (PEP, the blocklist,
/// vCards): without them it waits.
fn for_browsers(spec: ProsodySpec) -> ProsodySpec {
    spec.module("pep")
        .module("blocklist")
        .module("vcard_legacy")
}

#[test]
fn converse_in_a_browser_talks_to_slixmpp_through_dealer() {
    // Shared domain: the browser user and the slixmpp user on one backend.
    let n1 = for_browsers(ProsodySpec::new("example.com"))
        .user("alice", PW)
        .user("bob", PW)
        .start();
    let n2 = for_browsers(ProsodySpec::new("example.com"))
        .user("nora", PW)
        .start();
    let (ws, listen) = ws_listen();
    let d = Dealer::start_with(
        &format!(
            "{}backends:\n  node1: {{ c2s: \"{}\" }}\n  node2: {{ c2s: \"{}\" }}\n",
            ranges(),
            n1.c2s,
            n2.c2s
        ),
        &listen,
    );
    let mut bob = spawn_client(&common::client::session_job(
        &[LoginOpts::new("bob@example.com", PW, d.c2s).tls(Transport::StartTls)],
        vec![
            act::mark("online"),
            serde_json::json!({"expect_message": {"to": 0, "from": "alice@example.com", "body": "hello bob, from a browser", "timeout": 45}}),
        ],
    ));
    bob.wait_mark("online", Duration::from_secs(20));
    let shot = artifacts().join("websocket-converse-shared.png");
    let r = converse(
        &format!("ws://{}/xmpp-websocket", ws.plain),
        "alice@example.com",
        "bob@example.com",
        "hello bob, from a browser",
        &shot.to_string_lossy(),
    );
    assert_eq!(r["ok"], true, "{r}\n{}", d.log());
    let s = common::client::session_result(bob.finish());
    s.assert_ok();
    assert!(shot.exists(), "the chat's screenshot is kept");
    drop(n1);
    drop(n2);

    // Masked domains: alice on node1 (browser), nora on node2 (slixmpp).
    let s2s_internal = free_port();
    let dns = common::dns::Dnsmasq::start(&[("example.com", s2s_internal)]);
    let m1 = for_browsers(ProsodySpec::new("node1.internal"))
        .user("alice", PW)
        .dns_port(dns.port)
        .start();
    let m2 = for_browsers(ProsodySpec::new("node2.internal"))
        .user("nora", PW)
        .dns_port(dns.port)
        .start();
    let (ws, listen) = ws_listen();
    let d = Dealer::start_with(
        &format!(
            "domains: masked\n{}backends:\n  \
             node1: {{ c2s: \"{}\", s2s: \"{}\", domain: node1.internal }}\n  \
             node2: {{ c2s: \"{}\", s2s: \"{}\", domain: node2.internal }}\n\
             s2s: {{ dialback_secret: \"masked\" }}\n",
            ranges(),
            m1.c2s,
            m1.s2s,
            m2.c2s,
            m2.s2s
        ),
        &format!("{listen}  s2s_internal: [\"127.0.0.1:{s2s_internal}\"]\n"),
    );
    let mut nora = spawn_client(&common::client::session_job(
        &[LoginOpts::new("nora@example.com", PW, d.c2s).tls(Transport::StartTls)],
        vec![
            act::mark("online"),
            serde_json::json!({"expect_message": {"to": 0, "from": "alice@example.com", "body": "hello nora, across backends", "timeout": 45}}),
        ],
    ));
    nora.wait_mark("online", Duration::from_secs(20));
    let shot = artifacts().join("websocket-converse-masked.png");
    let r = converse(
        &format!("wss://{}/xmpp-websocket", ws.tls),
        "alice@example.com",
        "nora@example.com",
        "hello nora, across backends",
        &shot.to_string_lossy(),
    );
    assert_eq!(r["ok"], true, "{r}\n{}", d.log());
    let s = common::client::session_result(nora.finish());
    s.assert_ok();
}
