//! Service domains (`services:`): one group chat for users on every backend. A Prosody
//! that hosts only `Component "conference.example.com" "muc"` sits behind dealer next
//! to the user backends; slixmpp users of two backends and of a remote Prosody
//! (federation through dealer) join the same room, see each other's presence and
//! messages, and the room shows only public JIDs. Each user backend lists the service
//! in its `disco_items`. In masked mode and in shared mode.

mod common;

use common::client::{LoginOpts, Transport, act, session};
use common::dealer::Dealer;
use common::dns::Dnsmasq;
use common::free_port;
use common::prosody::{Prosody, ProsodySpec};
use serde_json::json;

const PW: &str = "s3cret";
const MUC: &str = "conference.example.com";
const ROOM: &str = "lounge@conference.example.com";

fn routing() -> &'static str {
    "routing:\n  strategy: ranges\n  ranges:\n    \
       - { from: a, to: m, backend: node1 }\n    \
       - { from: n, to: z, backend: node2 }\n  \
       default: node1\n"
}

/// A Prosody serving no users, only the group chat under its public name. Rooms are
/// open, unlocked on creation and show real JIDs to every occupant, so each client can
/// check what the room says about the others.
fn muc_backend(dns_port: u16) -> Prosody {
    ProsodySpec::new("muc.internal")
        .dns_port(dns_port)
        .component(&format!(
            "Component \"{MUC}\" \"muc\"\n\
             muc_room_locking = false\n\
             muc_room_default_public_jids = true\n\
             restrict_room_creation = false"
        ))
        .start()
}

/// A user backend that lists the service in its disco#items.
fn user_backend(domain: &str, user: &str, dns_port: u16) -> Prosody {
    ProsodySpec::new(domain)
        .user(user, PW)
        .dns_port(dns_port)
        .config(&format!(
            "disco_items = {{ {{ \"{MUC}\", \"Group chat\" }} }}"
        ))
        .start()
}

fn join(from: usize, nick: &str) -> serde_json::Value {
    json!({ "from": from, "presence": {
        "to": format!("{ROOM}/{nick}"),
        "payload": "<x xmlns='http://jabber.org/protocol/muc'/>"
    } })
}

fn groupchat(from: usize, body: &str) -> serde_json::Value {
    json!({ "from": from, "send_message_to": ROOM, "body": body, "type": "groupchat" })
}

fn expect_groupchat(to: usize, nick: &str, body: &str) -> serde_json::Value {
    act::expect_message(to, &format!("{ROOM}/{nick}"), body)
}

/// disco#items to the public domain, from a user of each backend: the service is
/// listed once, under its public name.
fn disco(i: usize) -> serde_json::Value {
    act::iq(
        i,
        "get",
        "example.com",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    )
}

fn check_disco(s: &common::client::SessionResult) {
    let answers: Vec<&serde_json::Value> = s
        .actions
        .iter()
        .filter(|a| a["action"] == "iq" && a["xml"].as_str().unwrap_or("").contains("disco#items"))
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    for a in answers {
        let xml = a["xml"].as_str().unwrap_or_default();
        assert_eq!(
            xml.matches(&format!("jid=\"{MUC}\"")).count(),
            1,
            "the service, once, by its public name: {xml}"
        );
        assert!(!xml.contains(".internal"), "{xml}");
    }
}

#[test]
fn users_of_every_backend_and_the_federation_meet_in_one_room_masked() {
    let (s2s, internal, remote_s2s) = (free_port(), free_port(), free_port());
    // The federation finds the public domain and the service at dealer.
    let public_dns = Dnsmasq::start(&[
        ("example.com", s2s),
        (MUC, s2s),
        ("remote.test", remote_s2s),
    ]);
    // Every backend finds every other domain at dealer's internal listener.
    let internal_dns = Dnsmasq::start(&[
        ("example.com", internal),
        (MUC, internal),
        ("remote.test", internal),
    ]);
    let node1 = user_backend("node1.internal", "alice", internal_dns.port);
    let node2 = user_backend("node2.internal", "nora", internal_dns.port);
    let muc = muc_backend(internal_dns.port);
    let remote = ProsodySpec::new("remote.test")
        .user("rob", PW)
        .dns_port(public_dns.port)
        .s2s_port(remote_s2s)
        .start();
    let body = format!(
        "domains: masked\nc2s: {{ mode: forward }}\n{}backends:\n  \
           node1: {{ c2s: \"{}\", s2s: \"{}\", domain: node1.internal }}\n  \
           node2: {{ c2s: \"{}\", s2s: \"{}\", domain: node2.internal }}\n  \
           muc: {{ s2s: \"{}\" }}\n\
         services:\n  {MUC}: {{ backend: muc }}\n\
         s2s: {{ dialback_secret: \"services secret\", domain_backend: node1, resolver: \"127.0.0.1:{}\" }}\n",
        routing(),
        node1.c2s,
        node1.s2s,
        node2.c2s,
        node2.s2s,
        muc.s2s,
        public_dns.port
    );
    let d = Dealer::start_with(
        &body,
        &format!("  s2s: [\"127.0.0.1:{s2s}\"]\n  s2s_internal: [\"127.0.0.1:{internal}\"]\n"),
    );
    let via = |user: &str| {
        LoginOpts::new(&format!("{user}@example.com"), PW, d.c2s).tls(Transport::StartTls)
    };
    let s = session(
        &[
            via("alice"),
            via("nora"),
            LoginOpts::new("rob@remote.test", PW, remote.c2s),
        ],
        vec![
            disco(0),
            disco(1),
            join(0, "alice"),
            act::expect_presence(0, &format!("{ROOM}/alice"), "available"),
            join(1, "nora"),
            act::expect_presence(1, &format!("{ROOM}/nora"), "available"),
            act::expect_presence(0, &format!("{ROOM}/nora"), "available"),
            join(2, "rob"),
            act::expect_presence(2, &format!("{ROOM}/rob"), "available"),
            act::expect_presence(0, &format!("{ROOM}/rob"), "available"),
            act::expect_presence(1, &format!("{ROOM}/rob"), "available"),
            groupchat(0, "hello room from alice"),
            expect_groupchat(1, "alice", "hello room from alice"),
            expect_groupchat(2, "alice", "hello room from alice"),
            groupchat(1, "hi from nora"),
            expect_groupchat(0, "nora", "hi from nora"),
            expect_groupchat(2, "nora", "hi from nora"),
            groupchat(2, "hi from rob"),
            expect_groupchat(0, "rob", "hi from rob"),
            expect_groupchat(1, "rob", "hi from rob"),
        ],
    );
    s.assert_ok();
    check_disco(&s);
    for (i, who) in ["alice", "nora", "rob"].iter().enumerate() {
        let raw = s.received(i);
        assert!(
            !raw.contains(".internal"),
            "{who} saw an internal domain:\n{raw}"
        );
        // Every occupant's real JID, as the room tells it: public JIDs only.
        for (jid, other) in [
            ("alice@example.com/", "alice"),
            ("nora@example.com/", "nora"),
            ("rob@remote.test/", "rob"),
        ] {
            assert!(
                raw.contains(&format!("jid=\"{jid}")) || raw.contains(&format!("jid='{jid}")),
                "{who} was not shown {other}'s real JID:\n{raw}"
            );
        }
    }
    let stanzas = |dir: &str| {
        d.metric(&format!(
            "dealer_service_stanzas_total{{service=\"{MUC}\",direction=\"{dir}\"}}"
        ))
    };
    assert!(
        stanzas("to") >= 6.0 && stanzas("from") >= 9.0,
        "{}",
        d.log()
    );
}

#[test]
fn shared_backends_use_one_room() {
    let internal = free_port();
    let dns = Dnsmasq::start(&[("example.com", internal), (MUC, internal)]);
    let node1 = user_backend("example.com", "alice", dns.port);
    let node2 = user_backend("example.com", "nora", dns.port);
    let muc = muc_backend(dns.port);
    let body = format!(
        "c2s: {{ mode: forward }}\n{}backends:\n  \
           node1: {{ c2s: \"{}\", s2s: \"{}\" }}\n  \
           node2: {{ c2s: \"{}\", s2s: \"{}\" }}\n  \
           muc: {{ s2s: \"{}\" }}\n\
         services:\n  {MUC}: {{ backend: muc }}\n\
         s2s: {{ dialback_secret: \"services secret\" }}\n",
        routing(),
        node1.c2s,
        node1.s2s,
        node2.c2s,
        node2.s2s,
        muc.s2s,
    );
    let d = Dealer::start_with(
        &body,
        &format!("  s2s_internal: [\"127.0.0.1:{internal}\"]\n"),
    );
    let via = |user: &str| {
        LoginOpts::new(&format!("{user}@example.com"), PW, d.c2s).tls(Transport::StartTls)
    };
    let s = session(
        &[via("alice"), via("nora")],
        vec![
            disco(0),
            disco(1),
            join(0, "alice"),
            act::expect_presence(0, &format!("{ROOM}/alice"), "available"),
            join(1, "nora"),
            act::expect_presence(0, &format!("{ROOM}/nora"), "available"),
            act::expect_presence(1, &format!("{ROOM}/alice"), "available"),
            groupchat(0, "hello from alice"),
            expect_groupchat(1, "alice", "hello from alice"),
            groupchat(1, "hello from nora"),
            expect_groupchat(0, "nora", "hello from nora"),
        ],
    );
    s.assert_ok();
    check_disco(&s);
}
