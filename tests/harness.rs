//! Proves the test harness itself, with no dealer involved: real Prosody instances
//! start, stop, die and come back on loopback, and the slixmpp driver logs in, messages,
//! follows or reports a see-other-host, and notices a dead backend.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::client::{self, LoginOpts, Transport, act};
use common::prosody::{Prosody, ProsodySpec};

const DOMAIN: &str = "example.com";

/// A: alice and carol; B: bob. Same domain, disjoint users, as behind dealer.
fn two_backends() -> (Prosody, Prosody) {
    let a = ProsodySpec::new(DOMAIN)
        .user("alice", "alice-pw")
        .user("carol", "carol-pw")
        .start();
    let b = ProsodySpec::new(DOMAIN).user("bob", "bob-pw").start();
    (a, b)
}

#[test]
fn same_domain_on_two_backends_with_disjoint_users() {
    let (a, b) = two_backends();
    let alice = |addr| LoginOpts::new("alice@example.com", "alice-pw", addr);
    let bob = |addr| LoginOpts::new("bob@example.com", "bob-pw", addr);
    let results = client::login_many(&[
        alice(a.c2s).mechanism("PLAIN"),
        alice(a.c2s).mechanism("SCRAM-SHA-1"),
        bob(b.c2s).mechanism("PLAIN"),
        bob(b.c2s).mechanism("SCRAM-SHA-1"),
        alice(b.c2s).mechanism("PLAIN"),
        alice(b.c2s).mechanism("SCRAM-SHA-1"),
        bob(a.c2s),
        LoginOpts::new("alice@example.com", "wrong", a.c2s),
        // Prosody here has no certificate, so a client that insists on TLS stops.
        alice(a.c2s).tls(Transport::StartTls),
    ]);
    for (i, r) in results[..4].iter().enumerate() {
        assert!(r.ok, "login {i} failed: {r:?}");
        assert!(!r.encrypted, "login {i}: {r:?}");
        let offered = r.mechanisms.as_deref().unwrap_or_default();
        assert!(
            offered.iter().any(|m| m == "PLAIN") && offered.iter().any(|m| m == "SCRAM-SHA-1"),
            "login {i}: {r:?}"
        );
    }
    let bound = |i: usize| results[i].bound_jid.clone().unwrap_or_default();
    assert!(
        bound(0).starts_with("alice@example.com/"),
        "{:?}",
        results[0]
    );
    assert!(bound(2).starts_with("bob@example.com/"), "{:?}", results[2]);
    for (i, r) in results[4..8].iter().enumerate() {
        assert!(!r.ok, "login {} should fail: {r:?}", i + 4);
        assert_eq!(r.sasl_failure.as_deref(), Some("not-authorized"), "{r:?}");
    }
    let r = &results[8];
    assert!(!r.ok && r.starttls_offered == Some(false), "{r:?}");
    assert_eq!(r.error.as_deref(), Some("server offered no starttls"));
}

#[test]
fn messages_between_users_of_one_backend() {
    let (a, _b) = two_backends();
    let accounts = [
        LoginOpts::new("alice@example.com", "alice-pw", a.c2s).mechanism("PLAIN"),
        LoginOpts::new("carol@example.com", "carol-pw", a.c2s).mechanism("SCRAM-SHA-1"),
    ];
    let s = client::session(
        &accounts,
        vec![
            act::send_message(0, "carol@example.com", "hello carol"),
            act::expect_message(1, "alice@example.com", "hello carol"),
            act::send_message(1, "alice@example.com", "hello alice"),
            act::expect_message(0, "carol@example.com", "hello alice"),
            // bob exists only on B: A answers for its own domain at once.
            act::send_message(0, "bob@example.com", "lost"),
            act::expect_message_error(0, "service-unavailable"),
            act::expect_no_message(1, 0.2),
            act::subscribe(0, "carol@example.com"),
            act::expect_presence(1, "alice@example.com", "subscribe"),
            act::approve(1, "alice@example.com"),
            act::expect_presence(0, "carol@example.com", "subscribed"),
            act::expect_presence(0, "carol@example.com", "available"),
            act::get_roster(0),
        ],
    );
    s.assert_ok();
    let roster = &s.actions[12]["items"]["carol@example.com"];
    assert_eq!(roster["subscription"], "to", "{}", s.raw);
}

#[test]
fn killed_backend_refuses_logins_until_restarted() {
    let mut a = ProsodySpec::new(DOMAIN).user("alice", "alice-pw").start();
    let alice = LoginOpts::new("alice@example.com", "alice-pw", a.c2s);

    // The client sees its stream end when the backend dies mid-session.
    let mut running = client::spawn_client(&client::session_job(
        std::slice::from_ref(&alice),
        vec![act::mark("online"), act::expect_disconnect(0, 5.0)],
    ));
    running.wait_mark("online", Duration::from_secs(15));
    a.kill();
    client::session_result(running.finish()).assert_ok();

    let r = client::login(&alice);
    assert!(!r.ok, "{r:?}");
    assert!(
        r.error
            .as_deref()
            .unwrap_or_default()
            .starts_with("connection failed"),
        "{r:?}"
    );

    a.restart();
    a.register("dave", "dave-pw");
    let results = client::login_many(&[
        alice.clone(),
        LoginOpts::new("dave@example.com", "dave-pw", a.c2s),
    ]);
    for r in &results {
        assert!(r.ok, "{r:?}\n{}", a.log());
    }

    a.stop();
    assert!(!client::login(&alice).ok);
}

/// Prosody never sends `<see-other-host/>`, so a one-line fake peer does: it answers
/// each of `count` connections with that stream error pointing at `target`.
fn redirector(target: SocketAddr, count: usize) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake peer");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    listener
        .set_nonblocking(true)
        .expect("a fresh listener accepts O_NONBLOCK");
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut served = 0;
        while served < count && Instant::now() < deadline {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            served += 1;
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            // Read the client's stream header (it ends with the first '>' after
            // `<stream:stream`), bounded in size and time by the read timeout.
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while got.len() < 8192 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                let text = String::from_utf8_lossy(&got);
                if text
                    .find("<stream:stream")
                    .is_some_and(|i| text[i..].contains('>'))
                {
                    break;
                }
            }
            let _ = write!(
                s,
                "<?xml version='1.0'?><stream:stream from='{DOMAIN}' id='r{served}' \
                 xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
                 version='1.0'><stream:error><see-other-host \
                 xmlns='urn:ietf:params:xml:ns:xmpp-streams'>{target}</see-other-host>\
                 </stream:error></stream:stream>"
            );
        }
    });
    (addr, handle)
}

#[test]
fn see_other_host_is_reported_or_followed_to_the_exact_address() {
    let a = ProsodySpec::new(DOMAIN).user("alice", "alice-pw").start();
    let (fake, peer) = redirector(a.c2s, 2);
    let alice = LoginOpts::new("alice@example.com", "alice-pw", fake);
    let results = client::login_many(&[alice.clone(), alice.follow_redirect(true)]);

    let reported = &results[0];
    assert!(!reported.ok, "{reported:?}");
    assert_eq!(reported.stream_error.as_deref(), Some("see-other-host"));
    assert_eq!(reported.see_other_host, Some(a.c2s.to_string()));
    assert!(reported.redirects.is_empty(), "{reported:?}");

    let followed = &results[1];
    assert!(followed.ok, "{followed:?}");
    assert_eq!(followed.redirects, vec![a.c2s.to_string()]);
    assert!(
        followed
            .bound_jid
            .as_deref()
            .is_some_and(|j| j.starts_with("alice@example.com/")),
        "{followed:?}"
    );
    peer.join().expect("the fake peer thread does not panic");
}
