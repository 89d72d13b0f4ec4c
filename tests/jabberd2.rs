//! dealer in front of jabberd2 2.7, the server the seed's operators run (issue 4): two
//! real, unmodified jabberd2 instances host example.com with disjoint users, dealer
//! routes a–m to node1 and n–z to node2, and slixmpp (or a raw socket where the exact
//! bytes matter) logs in through it in forward and in redirect mode. jabberd2 offers
//! PLAIN and DIGEST-MD5 in clear, no STARTTLS (no certificate), and the legacy
//! jabber:iq:auth; dealer offers only what its config lists, here PLAIN.

mod common;

use std::time::Duration;

use common::client::{LoginOpts, Transport, act, login_many, session};
use common::dealer::Dealer;
use common::jabberd2::{Jabberd2, Jabberd2Spec};
use common::raw::{HEADER, Raw};
use serde_json::{Value, json};

const PW: &str = "s3cret";
const SECS: Duration = Duration::from_secs(5);

/// node1 owns a–m (alice, heidi), node2 owns n–z (nora, zoe); each user exists on
/// its owner only. The two instances start in parallel (each takes ~0.1 s).
fn backends() -> (Jabberd2, Jabberd2) {
    let b = std::thread::spawn(|| {
        Jabberd2Spec::new("example.com")
            .user("nora", PW)
            .user("zoe", PW)
            .start()
    });
    let a = Jabberd2Spec::new("example.com")
        .user("alice", PW)
        .user("heidi", PW)
        .start();
    // A panic in the thread (jabberd2 did not come up) is re-raised here with its
    // message.
    let b = b.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    (a, b)
}

fn body(mode: &str, a: &Jabberd2, b: &Jabberd2) -> String {
    format!(
        "c2s: {{ mode: {mode}, legacy_auth: true, mechanisms: [PLAIN] }}\n\
         routing:\n  strategy: ranges\n  ranges:\n    \
           - {{ from: a, to: m, backend: node1 }}\n    \
           - {{ from: n, to: z, backend: node2 }}\n  \
           default: node1\n\
         backends:\n{}{}",
        a.backend_yaml("node1", ""),
        b.backend_yaml("node2", ""),
    )
}

fn jid(user: &str) -> String {
    format!("{user}@example.com")
}

/// jabberd2 listens on loopback only: its c2s and its router port, nothing else.
fn assert_loopback_only(j: &Jabberd2) {
    let mut listening = j.listening();
    listening.sort();
    let mut want = vec![j.c2s, j.router];
    want.sort();
    assert_eq!(listening, want, "pids {:?}", j.pids());
}

#[test]
fn forward_users_of_both_backends_log_in_and_talk_over_starttls() {
    let (a, b) = backends();
    let d = Dealer::start(&body("forward", &a, &b));
    let via = |user: &str| {
        let mut o = LoginOpts::new(&jid(user), PW, d.c2s)
            .tls(Transport::StartTls)
            .mechanism("PLAIN");
        // The driver's own initial presence waits for the server to echo it back;
        // jabberd2 never echoes it, so that would stall 5 s per account. Presence is
        // sent below instead.
        o.presence = false;
        o
    };
    let accounts = [via("alice"), via("heidi"), via("nora"), via("zoe")];
    let mut actions: Vec<Value> = (0..accounts.len())
        .map(|i| json!({ "from": i, "presence": {} }))
        .collect();
    // A round trip on each stream after its presence: once the roster answer is
    // back, sm has made that resource available, so a message to the bare JID is
    // delivered to it instead of stored offline.
    actions.extend((0..accounts.len()).map(act::get_roster));
    actions.extend([
        act::send_message(0, &jid("heidi"), "hello heidi"),
        act::expect_message(1, &jid("alice"), "hello heidi"),
        act::send_message(1, &jid("alice"), "hi alice"),
        act::expect_message(0, &jid("heidi"), "hi alice"),
        act::send_message(2, &jid("zoe"), "hello zoe"),
        act::expect_message(3, &jid("nora"), "hello zoe"),
        act::send_message(3, &jid("nora"), "hi nora"),
        act::expect_message(2, &jid("zoe"), "hi nora"),
    ]);
    let s = session(&accounts, actions);
    if !s.ok {
        eprintln!(
            "dealer log:\n{}\nnode1:\n{}\nnode2:\n{}",
            d.log(),
            a.log(),
            b.log()
        );
    }
    s.assert_ok();
    for (acc, name) in s.accounts.iter().zip(["alice", "heidi", "nora", "zoe"]) {
        assert!(acc.encrypted, "{name} talks TLS to dealer: {acc:?}");
        let bound = acc.bound_jid.as_deref().unwrap_or_default();
        assert!(
            bound.starts_with(&format!("{name}@example.com/")),
            "{name}: {bound}"
        );
        // jabberd2 also offers DIGEST-MD5; dealer offers only what it is configured for.
        assert_eq!(
            acc.mechanisms.as_deref(),
            Some(&["PLAIN".to_string()][..]),
            "{name}: {acc:?}"
        );
    }
    for node in ["node1", "node2"] {
        assert_eq!(
            d.metric(&format!(
                "dealer_auth_results_total{{backend=\"{node}\",result=\"success\"}}"
            )),
            2.0,
            "{node}"
        );
        assert_eq!(
            d.metric(&format!(
                "dealer_routing_decisions_total{{backend=\"{node}\",outcome=\"forward\"}}"
            )),
            2.0,
            "{node}"
        );
    }
    // Each user's session is on its owner (jabberd2's sm logs the session start).
    for (j, users) in [(&a, ["alice", "heidi"]), (&b, ["nora", "zoe"])] {
        let log = j.log();
        for u in users {
            assert!(
                log.contains(&format!("session started: jid={u}@example.com/")),
                "{u} on {}:\n{log}",
                j.c2s
            );
        }
    }
}

#[test]
fn redirect_names_the_owner_where_the_login_succeeds() {
    let (a, b) = backends();
    assert_loopback_only(&a);
    assert_loopback_only(&b);
    let d = Dealer::start(&body("redirect", &a, &b));
    let users = ["alice", "heidi", "nora", "zoe"];
    let owners = [a.c2s, a.c2s, b.c2s, b.c2s];
    let others = [b.c2s, b.c2s, a.c2s, a.c2s];
    // Through dealer (not followed: the answer is the target), then directly at the
    // owner, then at the other backend, all in one driver process.
    let mut jobs: Vec<LoginOpts> = users
        .iter()
        .map(|u| {
            LoginOpts::new(&jid(u), PW, d.c2s)
                .tls(Transport::StartTls)
                .mechanism("PLAIN")
        })
        .collect();
    jobs.extend(
        users
            .iter()
            .zip(owners)
            .map(|(u, at)| LoginOpts::new(&jid(u), PW, at).timeout(5.0)),
    );
    jobs.extend(
        users
            .iter()
            .zip(others)
            .map(|(u, at)| LoginOpts::new(&jid(u), PW, at).timeout(5.0)),
    );
    let r = login_many(&jobs);
    for (i, (user, owner)) in users.iter().zip(owners).enumerate() {
        // StartTls refuses to authenticate in clear: the PLAIN that dealer peeked at
        // went over TLS.
        let via = &r[i];
        assert!(!via.ok, "{user}: dealer logs no one in itself: {via:?}");
        assert_eq!(via.starttls_offered, Some(true), "{user}: {via:?}");
        assert_eq!(
            via.see_other_host.as_deref(),
            Some(owner.to_string().as_str()),
            "{user}: {via:?}\ndealer log:\n{}",
            d.log()
        );
        let direct = &r[4 + i];
        assert!(direct.ok, "{user} logs in at {owner}: {direct:?}");
        assert!(
            direct
                .bound_jid
                .as_deref()
                .unwrap_or_default()
                .starts_with(&format!("{user}@example.com/")),
            "{direct:?}"
        );
        // What jabberd2 itself offers in clear (the stock mechanisms, no STARTTLS).
        assert_eq!(
            direct.mechanisms.as_deref(),
            Some(&["PLAIN".to_string(), "DIGEST-MD5".to_string()][..]),
            "{direct:?}"
        );
        assert_eq!(direct.starttls_offered, Some(false), "{direct:?}");
        let elsewhere = &r[8 + i];
        assert!(
            !elsewhere.ok,
            "{user} has no account on the other backend: {elsewhere:?}"
        );
    }
    for node in ["node1", "node2"] {
        assert_eq!(
            d.metric(&format!(
                "dealer_routing_decisions_total{{backend=\"{node}\",outcome=\"redirect\"}}"
            )),
            2.0,
            "{node}"
        );
    }
}

#[test]
fn forward_legacy_iq_auth_reaches_the_owner() {
    let (a, b) = backends();
    let d = Dealer::start(&body("forward", &a, &b));
    for (user, owner) in [("zoe", &b), ("heidi", &a)] {
        // A pre-XMPP-1.0 stream (no version) on the plaintext listener.
        let mut r = Raw::plain(d.c2s_plain);
        r.send(HEADER.replace(" version='1.0'", ""));
        r.send(format!(
            "<iq type='get' id='a1'><query xmlns='jabber:iq:auth'><username>{user}</username></query></iq>"
        ));
        let got = r.expect("</iq>", SECS);
        assert!(got.contains("<iq type='result' id='a1'>"), "{user}: {got}");
        assert!(
            got.contains("<password/>") && got.contains("<resource/>"),
            "{user}: {got}"
        );
        // dealer answers the get itself, from its own stream: a digest would be bound
        // to dealer's stream id, which the owner never saw.
        assert!(!got.contains("digest"), "{user}: {got}");
        r.received.clear();
        r.send(format!(
            "<iq type='set' id='a2'><query xmlns='jabber:iq:auth'><username>{user}</username>\
             <password>{PW}</password><resource>legacy</resource></query></iq>"
        ));
        let got = r.expect("</iq>", SECS);
        assert!(
            got.contains("id='a2'") && got.contains("type='result'"),
            "{user}: the owner's result comes back: {got}\ndealer log:\n{}\nowner log:\n{}",
            d.log(),
            owner.log()
        );
        // The session is live on the owner: a message to oneself comes back.
        r.received.clear();
        let me = format!("{user}@example.com/legacy");
        r.send(format!(
            "<message to='{me}' id='m1' type='chat'><body>echo</body></message>"
        ));
        let got = r.expect("</message>", SECS);
        assert!(got.contains("<body>echo</body>"), "{user}: {got}");
        assert!(
            owner
                .log()
                .contains(&format!("session started: jid={user}@example.com/legacy")),
            "{user}: the session is on its owner:\n{}",
            owner.log()
        );
        r.try_send("</stream:stream>");
    }
    assert_eq!(
        d.metric("dealer_auth_peeks_total{mechanism=\"iq-auth\"}"),
        2.0
    );
    for node in ["node1", "node2"] {
        assert_eq!(
            d.metric(&format!(
                "dealer_auth_results_total{{backend=\"{node}\",result=\"success\"}}"
            )),
            1.0,
            "{node}"
        );
    }
}
