//! Running dealer like an operator does: scraping it (promtool-clean metrics that the
//! Grafana dashboard's queries all find), routing around a dead backend and back,
//! draining on SIGTERM and stopping on SIGINT, re-dealing sessions on reload, and
//! logs that never carry a credential. Real Prosody backends and slixmpp throughout.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::client::{
    LoginOpts, Transport, act, login, session, session_job, session_result, spawn_client,
};
use common::dealer::{Dealer, backend_yaml};
use common::prosody::{Prosody, ProsodySpec};
use common::raw::{HEADER, Raw};
use common::{free_port, wait_for};
use rustix::process::Signal;

const PW: &str = "s3cret";
const SECS: Duration = Duration::from_secs(5);

/// Two backends that both know every test user (the "central user database" case,
/// where any backend can serve anyone): hash routing may move users between them.
fn twins(users: &[&str]) -> (Prosody, Prosody) {
    let spec = || {
        let mut s = ProsodySpec::new("example.com");
        for u in users {
            s = s.user(u, PW);
        }
        s
    };
    (spec().start(), spec().start())
}

fn hash_body(backends: &[(&str, &Prosody)], extra: &str) -> String {
    let mut b = String::from("c2s: { mode: forward }\nrouting: { strategy: hash }\nbackends:\n");
    for (name, p) in backends {
        b.push_str(&backend_yaml(name, p, ""));
    }
    b.push_str(extra);
    b
}

#[test]
fn metrics_are_promtool_clean_and_cover_the_dashboard() {
    let (a, b) = twins(&["alice", "bob"]);
    // A service too, so its series are exported (at zero) for the dashboard's panel.
    let service = format!(
        "  muc: {{ s2s: \"127.0.0.1:{}\" }}\nservices:\n  conference.example.com: {{ backend: muc }}\ns2s: {{ dialback_secret: x }}\n",
        free_port()
    );
    let d = Dealer::start_with(
        &hash_body(&[("node1", &a), ("node2", &b)], &service),
        &format!("  s2s_internal: [\"127.0.0.1:{}\"]\n", free_port()),
    );
    // Some traffic, so histograms and labelled series have samples.
    let s = session(
        &[
            LoginOpts::new("alice@example.com", PW, d.c2s).tls(Transport::StartTls),
            LoginOpts::new("bob@example.com", PW, d.c2s_plain),
        ],
        vec![act::send_message(0, "bob@example.com", "scrape me")],
    );
    s.assert_ok();
    let (_, text) = d.process.get("/metrics");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is missing: apt-get install prometheus (.ci/test installs it)");
    promtool
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("feeding promtool");
    let out = promtool.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    for h in text.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(h.split(' ').count() > 3, "HELP text missing: {h}");
    }
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_path("dashboards/dealer.json")).unwrap(),
    )
    .unwrap();
    let mut queried = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            let mut rest = expr;
            while let Some(i) = rest.find("dealer_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name)
                    .to_owned();
                queried.insert(base);
            }
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");
    for name in &queried {
        assert!(
            exported.contains(name),
            "the dashboard queries {name}, which dealer does not export"
        );
    }
}

#[test]
fn a_down_backends_users_go_to_the_next_choice_and_come_back() {
    let users: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let (mut a, mut b) = twins(&names);
    let health = "health: { interval: 300ms, timeout: 300ms, rise: 1, fall: 1 }\n";
    let d = Dealer::start(&hash_body(&[("node1", &a), ("node2", &b)], health));
    let on_node1 = *names
        .iter()
        .find(|u| d.route(u) == "node1")
        .expect("some user on node1");
    assert_eq!(d.process.get("/readyz").0, 200);

    a.kill();
    let down = wait_for(SECS, || {
        (d.metric("dealer_backend_up{backend=\"node1\"}") == 0.0).then_some(())
    });
    assert!(down.is_some(), "node1 never counted as down:\n{}", d.log());
    assert_eq!(d.route(on_node1), "node2", "the next choice of the hash");
    let r = login(
        &LoginOpts::new(&format!("{on_node1}@example.com"), PW, d.c2s).tls(Transport::StartTls),
    );
    assert!(r.ok, "{r:?}");
    assert_eq!(
        d.metric("dealer_auth_results_total{backend=\"node2\",result=\"success\"}"),
        1.0
    );
    assert_eq!(d.process.get("/readyz").0, 200, "one backend is enough");

    a.restart();
    let up = wait_for(SECS, || {
        (d.metric("dealer_backend_up{backend=\"node1\"}") == 1.0).then_some(())
    });
    assert!(up.is_some(), "node1 never came back:\n{}", d.log());
    assert_eq!(d.route(on_node1), "node1");
    let r = login(
        &LoginOpts::new(&format!("{on_node1}@example.com"), PW, d.c2s).tls(Transport::StartTls),
    );
    assert!(r.ok, "{r:?}");
    assert_eq!(
        d.metric("dealer_auth_results_total{backend=\"node1\",result=\"success\"}"),
        1.0
    );

    a.kill();
    b.kill();
    let none = wait_for(SECS, || (d.process.get("/readyz").0 == 503).then_some(()));
    assert!(none.is_some(), "/readyz must fail with no backend up");
}

#[test]
fn sigterm_drains_sessions_then_closes_the_rest() {
    let users: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let (a, b) = twins(&names);
    let mut d = Dealer::start(&hash_body(
        &[("node1", &a), ("node2", &b)],
        "shutdown: { grace: 3s }\n",
    ));
    // Two users on one backend: shared domains deliver locally on each backend.
    let on1: Vec<&str> = names
        .iter()
        .copied()
        .filter(|u| d.route(u) == "node1")
        .collect();
    let (x, y) = (on1[0], on1[1]);
    let (xj, yj) = (format!("{x}@example.com"), format!("{y}@example.com"));
    let mut client = spawn_client(&session_job(
        &[
            LoginOpts::new(&xj, PW, d.c2s).tls(Transport::StartTls),
            LoginOpts::new(&yj, PW, d.c2s_plain),
        ],
        vec![
            act::mark("in"),
            act::sleep(1.0),
            // Draining: established sessions still work…
            act::send_message(0, &yj, "during the drain"),
            act::expect_message(1, &xj, "during the drain"),
            // …until the grace period is over.
            act::expect_disconnect(0, 6.0),
            act::expect_disconnect(1, 6.0),
        ],
    ));
    client.wait_mark("in", Duration::from_secs(30));
    // A client still in pre-auth when the grace period ends is told why.
    let mut pre = Raw::plain(d.c2s_plain);
    pre.send(HEADER);
    pre.expect("</stream:features>", SECS);
    d.process.signal(Signal::TERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect_timeout(&d.c2s_plain, Duration::from_secs(1)).is_err(),
        "no new connections while draining"
    );
    let s = session_result(client.finish());
    s.assert_ok();
    let (got, _) = pre.read_to_close(SECS);
    assert!(got.contains("<system-shutdown"), "{got}");
    let status = d
        .process
        .wait_exit(SECS)
        .expect("dealer exits after draining");
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigint_stops_at_once() {
    let (a, b) = twins(&["alice"]);
    let mut d = Dealer::start(&hash_body(
        &[("node1", &a), ("node2", &b)],
        "shutdown: { grace: 30s }\n",
    ));
    let mut client = spawn_client(&session_job(
        &[LoginOpts::new("alice@example.com", PW, d.c2s_plain)],
        vec![act::mark("in"), act::expect_disconnect(0, 5.0)],
    ));
    client.wait_mark("in", Duration::from_secs(30));
    let started = std::time::Instant::now();
    d.process.signal(Signal::INT);
    d.process.wait_exit(SECS).expect("dealer exits on SIGINT");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    session_result(client.finish()).assert_ok();
}

#[test]
fn reload_redeals_sessions_whose_owner_changed() {
    let users: Vec<String> = (0..60).map(|i| format!("u{i}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let (a, b) = twins(&names);
    let c = {
        let mut s = ProsodySpec::new("example.com");
        for u in &names {
            s = s.user(u, PW);
        }
        s.start()
    };
    let opt_in = "routing: { strategy: hash, redeal_on_reload: true }\n";
    let two = hash_body(&[("node1", &a), ("node2", &b)], "")
        .replace("routing: { strategy: hash }\n", opt_in);
    let three = hash_body(&[("node1", &a), ("node2", &b), ("node3", &c)], "")
        .replace("routing: { strategy: hash }\n", opt_in);
    // Which users node3 will take, as the new table says.
    let new_cfg = dealer::config::Config::from_yaml(
        &format!("domain: example.com\n{three}"),
        std::path::Path::new("."),
    )
    .unwrap();
    let new_router = dealer::routing::Router::new(&new_cfg.routing_spec());
    let moves = |u: &str| new_router.backend_name(new_router.route(u).unwrap().backend) == "node3";
    let mover = *names.iter().find(|u| moves(u)).expect("a user node3 takes");
    let stayer = *names.iter().find(|u| !moves(u)).expect("a user that stays");
    let mut d = Dealer::start(&two);
    let mut client = spawn_client(&session_job(
        &[
            LoginOpts::new(&format!("{mover}@example.com"), PW, d.c2s).tls(Transport::StartTls),
            LoginOpts::new(&format!("{stayer}@example.com"), PW, d.c2s_plain),
        ],
        vec![
            act::mark("in"),
            act::expect_disconnect(0, 10.0),
            // The client reconnects through dealer and lands on node3.
            act::login(0),
            // The one that stayed still talks (to itself: no other user shares its backend
            // for sure).
            act::send_message(1, &format!("{stayer}@example.com"), "I was not moved"),
            act::expect_message(1, &format!("{stayer}@example.com"), "I was not moved"),
        ],
    ));
    client.wait_mark("in", Duration::from_secs(30));
    d.reload(&three);
    session_result(client.finish()).assert_ok();
    assert_eq!(d.metric("dealer_redeal_sessions_closed_total"), 1.0);
    assert_eq!(
        d.metric("dealer_auth_results_total{backend=\"node3\",result=\"success\"}"),
        1.0
    );
}

/// A minimal SCRAM-SHA-1 client (RFC 5802), so the test knows the exact proof it must
/// not find in the log.
fn scram_login(addr: std::net::SocketAddr, user: &str, password: &str) -> (bool, Vec<String>) {
    use ring::{digest, hmac, pbkdf2};
    let (mut r, _) = Raw::starttls(addr);
    let cnonce = "rOprNGfwEbeRWgbNEkqO";
    let first_bare = format!("n={user},r={cnonce}");
    r.received.clear();
    r.send(format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>{}</auth>",
        B64.encode(format!("n,,{first_bare}"))
    ));
    let got = r.expect("</challenge>", SECS);
    let b64 = got
        .split("'>")
        .last()
        .unwrap()
        .split("</challenge>")
        .next()
        .unwrap();
    let server_first = String::from_utf8(B64.decode(b64).unwrap()).unwrap();
    let field = |k: &str| {
        server_first
            .split(',')
            .find_map(|f| f.strip_prefix(k))
            .unwrap()
            .to_owned()
    };
    let (nonce, salt, iters) = (
        field("r="),
        B64.decode(field("s=")).unwrap(),
        field("i=").parse::<u32>().unwrap(),
    );
    let mut salted = [0u8; 20];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA1,
        std::num::NonZeroU32::new(iters).unwrap(),
        &salt,
        password.as_bytes(),
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
    let proof_b64 = B64.encode(&proof);
    let client_final = format!("{without_proof},p={proof_b64}");
    let final_b64 = B64.encode(&client_final);
    r.received.clear();
    r.send(format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{final_b64}</response>"
    ));
    let got = r.expect("</", SECS);
    (got.contains("<success"), vec![proof_b64, final_b64])
}

#[test]
fn trace_logs_never_show_credentials() {
    let password = "Tr4ce-Me-If-You-Can";
    let a = ProsodySpec::new("example.com")
        .user("alice", password)
        .user("bob", password)
        .start();
    let mut d = Dealer::start_logging(
        &format!(
            "c2s: {{ mode: forward }}\nbackends:\n{}",
            backend_yaml("node1", &a, "")
        ),
        "trace",
    );
    let plain = LoginOpts::new("alice@example.com", password, d.c2s)
        .tls(Transport::StartTls)
        .mechanism("PLAIN");
    assert!(login(&plain).ok);
    let (ok, scram_secrets) = scram_login(d.c2s, "bob", password);
    assert!(ok, "SCRAM through dealer");
    d.process.signal(Signal::TERM);
    let _ = d.process.wait_exit(SECS);
    let log = d.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log runs at trace level"
    );
    assert!(
        log.contains("user=\"alice\"") && log.contains("user=\"bob\""),
        "spans carry the user"
    );
    let plain_blob = B64.encode(format!("\0alice\0{password}"));
    let plain_blob_authzid = B64.encode(format!("alice@example.com\0alice\0{password}"));
    for secret in [password.to_string(), plain_blob, plain_blob_authzid]
        .into_iter()
        .chain(scram_secrets)
    {
        assert!(
            !log.contains(&secret),
            "the log shows a credential ({secret})"
        );
    }
}
