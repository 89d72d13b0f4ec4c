//! Warm backend streams (`c2s.warm_streams`, `c2s.warm_max_age`) against a real
//! Prosody: logins take streams opened ahead of them and work as any other; a stream
//! Prosody closed (its `c2s_timeout` for unauthenticated streams) or one past its age
//! is never handed to a client; a pool grows with a burst of logins and shrinks when
//! idle; zero turns the pool off.

mod common;

use std::time::Duration;

use common::client::{LoginOpts, Transport, act, login, login_parallel, session};
use common::dealer::{Dealer, backend_yaml};
use common::prosody::{Prosody, ProsodySpec};

const PW: &str = "s3cret";

fn backend(extra_lua: &str) -> Prosody {
    ProsodySpec::new("example.com")
        .user("alice", PW)
        .user("heidi", PW)
        .config(extra_lua)
        .start()
}

fn body(p: &Prosody, warm: &str) -> String {
    format!(
        "c2s: {{ mode: forward, mechanisms: [SCRAM-SHA-1, PLAIN], {warm} }}\n\
         routing: {{ strategy: hash }}\n\
         backends:\n{}",
        backend_yaml("node1", p, "")
    )
}

fn user(name: &str, d: &Dealer) -> LoginOpts {
    LoginOpts::new(&format!("{name}@example.com"), PW, d.c2s).tls(Transport::StartTls)
}

fn warm(d: &Dealer, outcome: &str) -> f64 {
    d.metric(&format!(
        "dealer_warm_streams_total{{backend=\"node1\",outcome=\"{outcome}\"}}"
    ))
}

#[test]
fn logins_take_warm_streams_and_work_as_any_other() {
    let p = backend("");
    let d = Dealer::start_one_thread(&body(&p, "warm_streams: 2, warm_max_age: 60s"));
    // One worker thread (pools are per thread): the first login finds none and opens
    // its own; the ones after it find the streams it started opening.
    for _ in 0..4 {
        let r = login(&user("alice", &d).mechanism("PLAIN"));
        assert!(r.ok, "login through dealer: {r:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(warm(&d, "miss"), 1.0);
    assert_eq!(
        warm(&d, "hit"),
        3.0,
        "the logins after the first take warm streams"
    );
    assert_eq!(warm(&d, "closed"), 0.0);
    // Two users on warm streams talk to each other, SCRAM and PLAIN.
    let s = session(
        &[
            user("alice", &d).mechanism("SCRAM-SHA-1"),
            user("heidi", &d).mechanism("PLAIN"),
        ],
        vec![
            act::send_message(0, "heidi@example.com", "warm hello"),
            act::expect_message(1, "alice@example.com", "warm hello"),
            act::send_message(1, "alice@example.com", "warm reply"),
            act::expect_message(0, "heidi@example.com", "warm reply"),
        ],
    );
    s.assert_ok();
    assert_eq!(
        warm(&d, "hit"),
        5.0,
        "the session's logins took warm streams"
    );
    assert_eq!(
        d.metric("dealer_auth_results_total{backend=\"node1\",result=\"success\"}"),
        6.0
    );
}

#[test]
fn a_pool_grows_with_a_burst_of_logins_and_shrinks_when_idle() {
    let p = backend("");
    let d = Dealer::start_one_thread(&body(&p, "warm_streams: 8, warm_max_age: 2s"));
    // A lone login: the pool keeps what one login at a time needs, not the most allowed.
    let r = login(&user("alice", &d).mechanism("PLAIN"));
    assert!(r.ok, "{r:?}");
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(
        warm(&d, "expired"),
        2.0,
        "a lone login should leave two warm streams (its replacement and one more)"
    );
    // A burst finds the shrunk pool short and grows it; the next burst finds enough.
    let burst: Vec<LoginOpts> = (0..8)
        .map(|_| user("alice", &d).mechanism("PLAIN"))
        .collect();
    for r in login_parallel(&burst) {
        assert!(r.ok, "a login of the first burst: {r:?}");
    }
    let missed = warm(&d, "miss");
    std::thread::sleep(Duration::from_millis(500));
    let hits = warm(&d, "hit");
    for r in login_parallel(&burst) {
        assert!(r.ok, "a login of the second burst: {r:?}");
    }
    assert_eq!(
        warm(&d, "hit") - hits,
        8.0,
        "every login of the second burst should find a warm stream (the first burst missed {})",
        missed - 1.0
    );
    assert_eq!(warm(&d, "closed"), 0.0);
}

#[test]
fn a_stream_the_backend_closed_is_never_handed_out() {
    // Prosody ends an unauthenticated stream after c2s_timeout seconds.
    let p = backend("c2s_timeout = 1\n");
    let d = Dealer::start_one_thread(&body(&p, "warm_streams: 2, warm_max_age: 60s"));
    let r = login(&user("alice", &d).mechanism("PLAIN"));
    assert!(r.ok, "first login: {r:?}");
    // Prosody closes the streams the first login left warm.
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..3 {
        let r = login(&user("alice", &d).mechanism("PLAIN"));
        assert!(r.ok, "a login after Prosody closed the warm streams: {r:?}");
    }
    assert_eq!(
        warm(&d, "closed"),
        2.0,
        "the next login finds both warm streams closed"
    );
    assert_eq!(
        d.metric("dealer_auth_results_total{backend=\"node1\",result=\"unreachable\"}"),
        0.0
    );
}

#[test]
fn warm_streams_are_dropped_at_their_age_and_zero_turns_them_off() {
    let p = backend("");
    let mut d = Dealer::start_one_thread(&body(&p, "warm_streams: 1, warm_max_age: 1s"));
    let r = login(&user("alice", &d).mechanism("PLAIN"));
    assert!(r.ok, "{r:?}");
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        warm(&d, "expired") >= 1.0,
        "the unused warm stream was not dropped at its age"
    );
    let r = login(&user("alice", &d).mechanism("PLAIN"));
    assert!(r.ok, "{r:?}");

    // Zero: no pool is looked at, none is filled (once the stream the last login
    // left warm has aged out).
    d.reload(&body(&p, "warm_streams: 0"));
    std::thread::sleep(Duration::from_millis(1500));
    let before: f64 = ["hit", "miss", "expired", "closed"]
        .iter()
        .map(|o| warm(&d, o))
        .sum();
    for _ in 0..2 {
        let r = login(&user("heidi", &d).mechanism("PLAIN"));
        assert!(r.ok, "{r:?}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let after: f64 = ["hit", "miss", "expired", "closed"]
        .iter()
        .map(|o| warm(&d, o))
        .sum();
    assert_eq!(before, after, "warm_streams: 0 still used the pool");
}
