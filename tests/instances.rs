//! Operating dealer like HAProxy: two instances with the same configuration in front
//! of the same backends deal every user to the same owner, and a SIGHUP that has
//! reached one and not yet the other shows in `/route`'s generation header. (A
//! dialback check landing on the instance that did not issue the key is shown in
//! tests/s2s.rs, whose federation reaches one instance while the backends send
//! through the other.) And a reload storm under load: 200 relayed sessions carry
//! messages while 100 SIGHUPs alternate good files that move no user and bad ones;
//! no session drops, no message is lost, every bad file is counted and logged with
//! its key.

mod common;

use std::time::Duration;

use base64::Engine;
use common::client::{LoginOpts, Transport, login_many};
use common::dealer::{Dealer, backend_yaml};
use common::prosody::{Prosody, ProsodySpec};
use common::raw::{HEADER, Raw};
use common::{http_get, wait_for};

const PW: &str = "s3cret";
const SECS: Duration = Duration::from_secs(5);

fn body(a: &Prosody, b: &Prosody, extra: &str) -> String {
    format!(
        "routing: {{ strategy: hash }}\nbackends:\n{}{}{extra}",
        backend_yaml("node1", a, ""),
        backend_yaml("node2", b, ""),
    )
}

fn route(d: &Dealer, name: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(d.http).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET /route?name={name} HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let generation = raw
        .lines()
        .find_map(|l| l.strip_prefix("x-dealer-generation: "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let owner = raw
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| b.split('\t').nth(1))
        .unwrap_or_default()
        .trim()
        .to_owned();
    (generation, owner)
}

#[test]
fn two_instances_deal_alike_and_show_which_reloaded() {
    let names: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
    let (mut a, mut b) = (
        ProsodySpec::new("example.com"),
        ProsodySpec::new("example.com"),
    );
    // Each user exists on the owner both instances name (asked of a throwaway
    // dealer's routing through the library, the same code the instances run).
    let cfg = dealer::config::Config::from_yaml(
        "domain: example.com\nbackends:\n  node1: { c2s: \"127.0.0.1:1\" }\n  node2: { c2s: \"127.0.0.1:2\" }\n",
        std::path::Path::new("."),
    )
    .unwrap();
    let router = dealer::routing::Router::new(&cfg.routing_spec());
    for n in &names {
        if router.route(n).unwrap().backend == 0 {
            a = a.user(n, PW);
        } else {
            b = b.user(n, PW);
        }
    }
    let (a, b) = (a.start(), b.start());
    let one = Dealer::start(&body(&a, &b, ""));
    let two = Dealer::start(&body(&a, &b, ""));
    for n in &names {
        assert_eq!(route(&one, n), route(&two, n), "{n}");
    }
    // Logins through either instance reach the owner (each user exists only there).
    let jobs: Vec<LoginOpts> = names
        .iter()
        .take(10)
        .flat_map(|n| {
            [&one, &two].map(|d| {
                LoginOpts::new(&format!("{n}@example.com"), PW, d.c2s_plain).tls(Transport::Plain)
            })
        })
        .collect();
    for r in login_many(&jobs) {
        assert!(r.ok, "{r:?}");
    }
    // A reload that reached `one` only: its generation moved, `two`'s did not, and
    // routing differs where the new weight moved a user.
    let mut one = one;
    one.reload(&body(&a, &b, "").replace("node2: {", "node2: { weight: 3,"));
    let moved = names
        .iter()
        .filter(|n| route(&one, n).1 != route(&two, n).1)
        .count();
    assert_eq!(route(&one, "x").0, "2");
    assert_eq!(route(&two, "x").0, "1");
    assert!(moved > 0, "a weight change moves some users");
}

fn plain_auth(user: &str) -> String {
    format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{PW}"))
    )
}

/// A bound session on dealer's plaintext listener, as `user/resource`.
fn session(d: &Dealer, user: &str, resource: &str) -> Raw {
    let mut r = Raw::plain(d.c2s_plain);
    r.send(HEADER);
    r.expect("</stream:features>", SECS);
    r.send(plain_auth(user));
    r.expect("<success", SECS);
    r.received.clear();
    r.send(HEADER);
    r.expect("</stream:features>", SECS);
    r.send(format!(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
    ));
    r.expect("</iq>", SECS);
    r.received.clear();
    r
}

/// A message to the session's own full JID, and its return through dealer.
fn echo(r: &mut Raw, jid: &str, n: usize) {
    let body = format!("ping {n}");
    r.send(format!(
        "<message to='{jid}' type='chat' id='m{n}'><body>{body}</body></message>"
    ));
    r.expect(&format!("<body>{body}</body>"), SECS);
}

#[test]
fn a_reload_storm_under_load_drops_nothing() {
    let a = ProsodySpec::new("example.com").user("anna", PW).start();
    let b = ProsodySpec::new("example.com").user("zack", PW).start();
    let ranges = "routing:\n  strategy: ranges\n  ranges:\n    - { from: a, to: m, backend: node1 }\n    - { from: n, to: z, backend: node2 }\n  default: node1\n";
    let good = |i: usize| {
        format!(
            "{ranges}backends:\n{}{}health: {{ interval: {}s, timeout: 1s }}\n\
             limits: {{ logins_per_source_per_second: 0 }}\n",
            backend_yaml("node1", &a, ""),
            backend_yaml("node2", &b, ""),
            1 + i % 2
        )
    };
    let mut d = Dealer::start_logging(&good(0), "info");
    // 200 relayed sessions: 100 resources of a user on each backend.
    let mut sessions: Vec<(Raw, String)> = (0..200)
        .map(|i| {
            let user = if i % 2 == 0 { "anna" } else { "zack" };
            let res = format!("r{i}");
            (session(&d, user, &res), format!("{user}@example.com/{res}"))
        })
        .collect();
    let relaying = "dealer_connections{listener=\"c2s\",state=\"relaying\"}";
    assert_eq!(d.metric(relaying), 200.0);
    let reloads = |d: &Dealer| {
        d.metric("dealer_config_reloads_total{result=\"ok\"}")
            + d.metric("dealer_config_reloads_total{result=\"error\"}")
    };
    let mut sent = 0;
    for i in 0..100 {
        let before = reloads(&d);
        if i % 2 == 0 {
            // A good file that moves no user (only the health interval changes).
            let text = std::fs::read_to_string(&d.config).unwrap();
            let head = text.split("routing:").next().unwrap().to_owned();
            std::fs::write(&d.config, format!("{head}{}", good(i / 2 + 1))).unwrap();
        } else {
            let text = std::fs::read_to_string(&d.config).unwrap();
            std::fs::write(
                &d.config,
                text.replace("strategy: ranges", "strategy: ranges\n  colour: red"),
            )
            .unwrap();
        }
        d.process.signal(rustix::process::Signal::HUP);
        // Signals coalesce: wait for this one to be handled before the next.
        let handled = wait_for(SECS, || (reloads(&d) > before).then_some(()));
        assert!(handled.is_some(), "reload {i} not handled:\n{}", d.log());
        // Traffic through a rotating tenth of the sessions meanwhile.
        for k in 0..20 {
            let (r, jid) = &mut sessions[(i * 20 + k) % 200];
            echo(r, jid, sent);
            sent += 1;
        }
    }
    // Every session is still there and still carries messages.
    for (r, jid) in sessions.iter_mut() {
        echo(r, jid, sent);
        sent += 1;
    }
    assert_eq!(d.metric(relaying), 200.0);
    assert_eq!(d.metric("dealer_config_reloads_total{result=\"ok\"}"), 50.0);
    assert_eq!(
        d.metric("dealer_config_reloads_total{result=\"error\"}"),
        50.0
    );
    let log = d.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("reload rejected") && l.contains("colour"))
            .count(),
        50,
        "every bad file logged with its key"
    );
    assert_eq!(
        d.metric("dealer_config_generation"),
        51.0,
        "each good file is a generation"
    );
    let _ = http_get(d.http, "/healthz");
    d.reload(&good(0));
}
