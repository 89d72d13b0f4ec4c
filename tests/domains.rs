//! Several public domains in one dealer (`hosts:`): example.com (shared, two Prosody
//! backends serving example.com) and example.org (masked, two Prosody backends serving
//! org1.internal and org2.internal), each with its own certificate and routing. slixmpp
//! clients verify the certificate they are shown (STARTTLS and Direct TLS, chosen by
//! SNI), land on their own domain's backends, are refused on the wrong domain, talk
//! across the two domains and with a remote Prosody through dealer's s2s.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::client::{LoginOpts, Transport, act, login, session};
use common::dealer::Dealer;
use common::dns::Dnsmasq;
use common::free_port;
use common::prosody::{Prosody, ProsodySpec};
use common::raw::Raw;

const PW: &str = "s3cret";

fn ranges(low: &str, high: &str) -> String {
    format!(
        "{{ strategy: ranges, default: {low}, ranges: [\
         {{ from: a, to: m, backend: {low} }}, {{ from: n, to: z, backend: {high} }}] }}"
    )
}

struct Cluster {
    d: Dealer,
    com_ca: PathBuf,
    org_ca: PathBuf,
    remote: Prosody,
    _parts: (Vec<Prosody>, Dnsmasq, Dnsmasq, tempfile::TempDir),
}

fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let (org_crt, org_key) = common::certificate(dir.path(), "example.org");
    let (s2s, internal, remote_s2s) = (free_port(), free_port(), free_port());
    let public_dns = Dnsmasq::start(&[
        ("example.com", s2s),
        ("example.org", s2s),
        ("remote.test", remote_s2s),
    ]);
    let internal_dns = Dnsmasq::start(&[
        ("example.com", internal),
        ("example.org", internal),
        ("remote.test", internal),
    ]);
    let node = |domain: &str, user: &str| {
        ProsodySpec::new(domain)
            .user(user, PW)
            .dns_port(internal_dns.port)
            .start()
    };
    let (node1, node2) = (node("example.com", "alice"), node("example.com", "nora"));
    let (org1, org2) = (node("org1.internal", "bob"), node("org2.internal", "zoe"));
    let remote = ProsodySpec::new("remote.test")
        .user("rob", PW)
        .dns_port(public_dns.port)
        .s2s_port(remote_s2s)
        .start();
    let resolver = format!("resolver: \"127.0.0.1:{}\"", public_dns.port);
    let body = format!(
        "c2s: {{ mode: forward }}\n\
         routing: {}\n\
         backends:\n  \
           node1: {{ c2s: \"{}\", s2s: \"{}\" }}\n  \
           node2: {{ c2s: \"{}\", s2s: \"{}\" }}\n\
         s2s: {{ dialback_secret: \"com secret\", domain_backend: node1, {resolver} }}\n\
         hosts:\n  \
           example.org:\n    \
             tls: {{ cert: \"{}\", key: \"{}\" }}\n    \
             domains: masked\n    \
             routing: {}\n    \
             backends:\n      \
               org1: {{ c2s: \"{}\", s2s: \"{}\", domain: org1.internal }}\n      \
               org2: {{ c2s: \"{}\", s2s: \"{}\", domain: org2.internal }}\n    \
             s2s: {{ dialback_secret: \"org secret\", domain_backend: org1, {resolver} }}\n",
        ranges("node1", "node2"),
        node1.c2s,
        node1.s2s,
        node2.c2s,
        node2.s2s,
        org_crt.display(),
        org_key.display(),
        ranges("org1", "org2"),
        org1.c2s,
        org1.s2s,
        org2.c2s,
        org2.s2s,
    );
    let d = Dealer::start_with(
        &body,
        &format!("  s2s: [\"127.0.0.1:{s2s}\"]\n  s2s_internal: [\"127.0.0.1:{internal}\"]\n"),
    );
    Cluster {
        d,
        com_ca: common::repo_path("conf/example.com.crt"),
        org_ca: org_crt,
        remote,
        _parts: (
            vec![node1, node2, org1, org2],
            public_dns,
            internal_dns,
            dir,
        ),
    }
}

#[test]
fn each_domain_has_its_own_certificate_backends_and_federation() {
    let c = cluster();
    let d = &c.d;
    // Each user on its own domain's pool, over STARTTLS and Direct TLS, the client
    // verifying the certificate against its domain's.
    for (jid, ca, bound) in [
        ("alice@example.com", &c.com_ca, "alice@example.com/"),
        ("nora@example.com", &c.com_ca, "nora@example.com/"),
        ("bob@example.org", &c.org_ca, "bob@example.org/"),
        ("zoe@example.org", &c.org_ca, "zoe@example.org/"),
    ] {
        for (tls, addr) in [
            (Transport::StartTls, d.c2s),
            (Transport::DirectTls, d.c2s_tls),
        ] {
            let r = login(&LoginOpts::new(jid, PW, addr).tls(tls).verify_with(ca));
            assert!(r.ok, "{jid} over {tls:?}: {r:?}\n{}", d.log());
            assert!(
                r.bound_jid
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with(bound),
                "{jid}: {r:?}"
            );
        }
    }
    // The other domain's certificate is refused by a client that checks it.
    let r = login(
        &LoginOpts::new("bob@example.org", PW, d.c2s_tls)
            .tls(Transport::DirectTls)
            .verify_with(&c.com_ca),
    );
    assert!(
        !r.ok,
        "example.org must not be served example.com's certificate: {r:?}"
    );

    for (who, backend) in [
        ("org1", "org1"),
        ("org2", "org2"),
        ("node1", "node1"),
        ("node2", "node2"),
    ] {
        let series =
            format!("dealer_auth_results_total{{backend=\"{backend}\",result=\"success\"}}");
        assert!(d.metric(&series) >= 2.0, "{who}: {series}");
    }
    let domain_of = |backend: &str, domain: &str| {
        d.metric(&format!(
            "dealer_backend_up{{domain=\"{domain}\",backend=\"{backend}\"}}"
        ))
    };
    assert_eq!(domain_of("org1", "example.org"), 1.0);
    assert_eq!(domain_of("node2", "example.com"), 1.0);

    // A user of one domain is never routed to another's backends: alice has no
    // account on example.org's pool, and an unknown domain is host-unknown.
    let r = login(&LoginOpts::new("alice@example.org", PW, d.c2s).tls(Transport::StartTls));
    assert!(!r.ok && r.sasl_failure.is_some(), "{r:?}");
    let mut raw = Raw::plain(d.c2s_plain);
    raw.send(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='example.net' version='1.0'>",
    );
    let (got, _) = raw.read_to_close(std::time::Duration::from_secs(5));
    assert!(got.contains("<host-unknown"), "{got}");

    // /route and `dealer route` take NAME@DOMAIN; a bare name is the first domain's.
    assert_eq!(d.route("alice"), "node1");
    assert_eq!(d.route("alice@example.com"), "node1");
    assert_eq!(d.route("alice@example.org"), "org1");
    assert_eq!(d.route("zoe@example.org"), "org2");
    let out = Command::new(common::dealer_bin())
        .args(["route", "--config"])
        .arg(&d.config)
        .args(["nora@example.org", "nora"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("nora@example.org\torg2") && text.contains("nora\tnode2"),
        "{text}"
    );

    // Across the two domains and with the federation, both ways, through dealer's s2s.
    let via = |jid: &str| LoginOpts::new(jid, PW, d.c2s).tls(Transport::StartTls);
    let s = session(
        &[
            via("alice@example.com"),
            via("bob@example.org"),
            via("zoe@example.org"),
            LoginOpts::new("rob@remote.test", PW, c.remote.c2s),
        ],
        vec![
            act::send_message(0, "bob@example.org", "hi bob from alice"),
            act::expect_message(1, "alice@example.com", "hi bob from alice"),
            act::send_message(1, "alice@example.com", "hi alice from bob"),
            act::expect_message(0, "bob@example.org", "hi alice from bob"),
            act::send_message(3, "zoe@example.org", "hi zoe from rob"),
            act::expect_message(2, "rob@remote.test", "hi zoe from rob"),
            act::send_message(2, "rob@remote.test", "hi rob from zoe"),
            act::expect_message(3, "zoe@example.org", "hi rob from zoe"),
            act::send_message(3, "alice@example.com", "hi alice from rob"),
            act::expect_message(0, "rob@remote.test", "hi alice from rob"),
        ],
    );
    s.assert_ok();
    for i in 0..4 {
        assert!(
            !s.received(i).contains(".internal"),
            "account {i} saw an internal domain"
        );
    }
}

/// A reload that breaks one domain keeps the whole running configuration.
#[test]
fn a_reload_that_breaks_one_domain_keeps_every_domain() {
    let c = cluster();
    let d = &c.d;
    let before = d.metric("dealer_config_generation");
    let text = std::fs::read_to_string(&d.config).unwrap();
    let broken = text.replace("domain_backend: org1", "domain_backend: nowhere");
    assert_ne!(text, broken);
    std::fs::write(&d.config, broken).unwrap();
    let errors = "dealer_config_reloads_total{result=\"error\"}";
    let failed = d.metric(errors);
    d.process.signal(rustix::process::Signal::HUP);
    assert!(
        common::wait_for(std::time::Duration::from_secs(10), || (d.metric(errors)
            > failed)
            .then_some(()))
        .is_some(),
        "the reload was not refused"
    );
    assert!(
        d.log().contains("hosts.example.org.s2s.domain_backend"),
        "the error names the host's key:\n{}",
        d.log()
    );
    assert_eq!(d.metric("dealer_config_generation"), before);
    assert_eq!(d.route("zoe@example.org"), "org2");
    let r = login(
        &LoginOpts::new("zoe@example.org", PW, d.c2s)
            .tls(Transport::StartTls)
            .verify_with(&c.org_ca),
    );
    assert!(r.ok, "{r:?}");
}
