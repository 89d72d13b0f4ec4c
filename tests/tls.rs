//! TLS on both of dealer's legs: the certificate clients see follows a SIGHUP reload
//! (it lives in the config snapshot, served by a resolver that reads the live one),
//! `backends.X.tls` runs STARTTLS to a backend that refuses plaintext logins, and a
//! client that kept a session ticket resumes its TLS session.

mod common;

use std::time::Duration;

use common::client::{LoginOpts, Transport, login};
use common::dealer::{Dealer, backend_yaml};
use common::prosody::ProsodySpec;
use common::raw::{HEADER, Raw};
use common::repo_path;

const PW: &str = "s3cret";

#[test]
fn sighup_swaps_the_certificate_clients_see() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = common::certificate(dir.path(), "example.com");
    let a = ProsodySpec::new("example.com").user("alice", PW).start();
    let body = format!("backends:\n{}", backend_yaml("node1", &a, ""));
    let d = Dealer::start(&body);
    let served = |d: &Dealer| {
        let mut r = Raw::direct_tls(d.c2s_tls);
        r.send(HEADER);
        r.expect("</stream:features>", Duration::from_secs(5));
        r.peer_certificate().expect("a certificate")
    };
    let before = served(&d);
    // The reload keeps listeners and body; only `tls` changes, through the body hook.
    let text = std::fs::read_to_string(&d.config).unwrap();
    let swapped = text
        .lines()
        .map(|l| {
            if l.starts_with("tls:") {
                format!(
                    "tls: {{ cert: \"{}\", key: \"{}\" }}",
                    crt.display(),
                    key.display()
                )
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&d.config, swapped).unwrap();
    let gen_before = d.metric("dealer_config_generation");
    d.process.signal(rustix::process::Signal::HUP);
    let reloaded = common::wait_for(Duration::from_secs(10), || {
        (d.metric("dealer_config_generation") > gen_before).then_some(())
    });
    assert!(reloaded.is_some(), "{}", d.log());
    let after = served(&d);
    assert_ne!(before, after, "new connections get the new certificate");
    // And a login still works over it.
    let r = login(&LoginOpts::new("alice@example.com", PW, d.c2s).tls(Transport::StartTls));
    assert!(r.ok, "{r:?}");
}

#[test]
fn starttls_to_a_backend_that_requires_it() {
    let cert = repo_path("conf/example.com.crt");
    let key = repo_path("conf/example.com.key");
    let a = ProsodySpec::new("example.com")
        .user("alice", PW)
        .module("tls")
        .config(&format!(
            "ssl = {{ certificate = \"{}\"; key = \"{}\" }}\nc2s_require_encryption = true",
            cert.display(),
            key.display()
        ))
        .start();
    // The backend refuses to authenticate anyone in clear…
    let direct = login(&LoginOpts::new("alice@example.com", PW, a.c2s).timeout(2.0));
    assert!(!direct.ok, "{direct:?}");
    // …so a login through dealer proves the leg to it is TLS.
    let d = Dealer::start(&format!(
        "backends:\n{}",
        backend_yaml("node1", &a, "tls: true")
    ));
    for t in [Transport::StartTls, Transport::Plain] {
        let addr = if t == Transport::Plain {
            d.c2s_plain
        } else {
            d.c2s
        };
        let r = login(&LoginOpts::new("alice@example.com", PW, addr).tls(t));
        assert!(r.ok, "{t:?}: {r:?}\n{}", d.log());
    }
    assert!(
        d.metric("dealer_relay_bytes_total{kind=\"copy\",direction=\"backend_to_client\"}") > 0.0
    );
    assert_eq!(
        d.metric("dealer_relay_bytes_total{kind=\"splice\",direction=\"backend_to_client\"}"),
        0.0,
        "a TLS leg is never spliced"
    );
}

#[test]
fn a_reconnecting_client_resumes_its_tls_session() {
    let a = ProsodySpec::new("example.com").user("alice", PW).start();
    let d = Dealer::start(&format!("backends:\n{}", backend_yaml("node1", &a, "")));
    // One client config for both connections: its store keeps the tickets dealer
    // sends after the first handshake.
    let config = Raw::direct_tls_config();
    let connect = || {
        let mut r = Raw::direct_tls_with(d.c2s_tls, config.clone());
        r.send(HEADER);
        // Tickets arrive after the handshake; reading the features takes them in.
        r.expect("</stream:features>", Duration::from_secs(5));
        r.handshake_kind()
    };
    assert_eq!(connect(), Some(rustls::HandshakeKind::Full));
    assert_eq!(
        connect(),
        Some(rustls::HandshakeKind::Resumed),
        "the second connection resumes with a ticket from the first"
    );
    // A client without a ticket still gets a full handshake.
    let mut fresh = Raw::direct_tls_with(d.c2s_tls, Raw::direct_tls_config());
    fresh.send(HEADER);
    fresh.expect("</stream:features>", Duration::from_secs(5));
    assert_eq!(fresh.handshake_kind(), Some(rustls::HandshakeKind::Full));
}
