//! STARTTLS and the bytes around it, on dealer's c2s and s2s listeners: whitespace
//! after `<starttls/>` is tolerated (sent with it, or in a segment of its own after
//! `<proceed/>`), any other byte sent before the handshake ends the connection
//! (STARTTLS command injection) and is counted. go-sendxmpp, which sends a newline
//! after `<starttls/>`, logs in through dealer and delivers a message.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::client::{LoginOpts, Transport, act, session};
use common::dealer::{Dealer, backend_yaml};
use common::prosody::{Prosody, ProsodySpec};
use common::raw::{HEADER, Raw};
use common::{free_port, wait_for};

const PW: &str = "s3cret";
const SECS: Duration = Duration::from_secs(5);
const STARTTLS: &str = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
const S2S_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
    from='remote.test' to='example.com' version='1.0'>";

fn start() -> (Prosody, Dealer, u16) {
    let p = ProsodySpec::new("example.com")
        .user("alice", PW)
        .user("bob", PW)
        .start();
    let s2s = free_port();
    let body = format!(
        "backends:\n{}s2s: {{ dialback_secret: \"starttls test\", domain_backend: node1 }}\n",
        backend_yaml("node1", &p, "")
    );
    let d = Dealer::start_with(&body, &format!("  s2s: [\"127.0.0.1:{s2s}\"]\n"));
    (p, d, s2s)
}

/// Open a stream with `header`, ask for STARTTLS with `with` after it in the same
/// write, then send `later` in a segment of its own; returns the stream, or `None`
/// when dealer closed it before TLS.
fn upgrade(addr: std::net::SocketAddr, header: &str, with: &str, later: &str) -> Option<Raw> {
    let mut r = Raw::plain(addr);
    r.send(header);
    r.expect("</stream:features>", SECS);
    r.send(format!("{STARTTLS}{with}"));
    r.expect("<proceed", SECS);
    if !later.is_empty() {
        std::thread::sleep(Duration::from_millis(50));
        r.try_send(later);
    }
    std::thread::sleep(Duration::from_millis(100));
    if r.is_closed() {
        return None;
    }
    r.upgrade_tls();
    r.send(header);
    r.expect("</stream:features>", SECS);
    Some(r)
}

#[test]
fn whitespace_after_starttls_is_tolerated_other_bytes_are_not() {
    let (_p, d, s2s) = start();
    let s2s = std::net::SocketAddr::from(([127, 0, 0, 1], s2s));
    let drops = |d: &Dealer| d.metric("dealer_session_drops_total{reason=\"starttls_pipelined\"}");
    for (listener, addr, header) in [("c2s", d.c2s, HEADER), ("s2s", s2s, S2S_HEADER)] {
        for (with, later) in [
            ("\n", ""),
            (" ", ""),
            ("\r\n", ""),
            ("", "\n"),
            ("\n", " \r\n"),
        ] {
            let r = upgrade(addr, header, with, later);
            assert!(
                r.is_some(),
                "{listener}: {with:?} then {later:?} must not end the stream\n{}",
                d.log()
            );
        }
        let before = drops(&d);
        for with in ["x", "\n<iq type='get' id='1'/>", "<presence/>"] {
            let r = upgrade(addr, header, with, "");
            assert!(
                r.is_none(),
                "{listener}: {with:?} before the TLS handshake must end the stream"
            );
        }
        let counted = wait_for(SECS, || (drops(&d) >= before + 3.0).then_some(()));
        assert!(counted.is_some(), "{listener}: drops counted\n{}", d.log());
    }
    assert!(
        d.log().contains("session dropped"),
        "the reason is logged:\n{}",
        d.log()
    );
}

#[test]
fn go_sendxmpp_logs_in_over_starttls() {
    let bin = "/usr/bin/go-sendxmpp";
    assert!(
        std::path::Path::new(bin).exists(),
        "{bin} is missing: apt-get install go-sendxmpp (.ci/test installs it)"
    );
    let (_p, d, _) = start();
    let mut child = Command::new(bin)
        .args([
            "--username",
            "alice@example.com",
            "--password",
            PW,
            "--jserver",
            &d.c2s.to_string(),
            "--no-tls-verify",
            "--timeout",
            "10",
            "bob@example.com",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting go-sendxmpp");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        stdin
            .write_all(b"hello bob from go-sendxmpp\n")
            .expect("writing the message");
    }
    let done = wait_for(Duration::from_secs(30), || child.try_wait().ok().flatten());
    if done.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("go-sendxmpp output");
    assert!(
        out.status.success(),
        "go-sendxmpp failed: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    // Bob was offline: the message waits on his server and arrives when he logs in.
    let s = session(
        &[LoginOpts::new("bob@example.com", PW, d.c2s).tls(Transport::StartTls)],
        vec![act::expect_message(
            0,
            "alice@example.com",
            "hello bob from go-sendxmpp",
        )],
    );
    s.assert_ok();
    assert_eq!(
        d.metric("dealer_auth_results_total{backend=\"node1\",result=\"success\"}"),
        2.0
    );
}
