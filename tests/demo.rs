//! The README's first command, `.ci/demo`, run as a newcomer would (on free ports, with
//! the test's dealer binary instead of a release build): three standalone Prosody
//! servers behind dealer with masked domains, and two users on different backends
//! exchange a message through it with a real client. Then the script is stopped and
//! takes its processes with it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::client::{LoginOpts, Transport, act, session};
use common::{dealer_bin, free_port, http_get, repo_path, wait_for};

struct Demo {
    child: Child,
    dir: tempfile::TempDir,
}

impl Demo {
    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default()
    }

    fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for f in [
            "node1/prosody.pid",
            "node2/prosody.pid",
            "node3/prosody.pid",
            "dnsmasq.pid",
        ] {
            if let Some(p) = std::fs::read_to_string(self.dir.path().join("state").join(f))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                pids.push(p);
            }
        }
        pids
    }
}

fn alive(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

impl Drop for Demo {
    fn drop(&mut self) {
        let pids = self.pids();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in pids {
            if let Some(pid) = rustix::process::Pid::from_raw(p) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

#[test]
fn the_demo_lets_users_on_different_backends_talk() {
    let dir = tempfile::tempdir().unwrap();
    let (c2s, http) = (free_port(), free_port());
    let out = std::fs::File::create(dir.path().join("out.log")).unwrap();
    let err = out.try_clone().unwrap();
    let node = |_: u8| {
        // Each backend takes its c2s port and the next one for s2s: two free ports in
        // a row, both taken from the harness so nothing else is handed either.
        loop {
            let (a, b) = (free_port(), free_port());
            if b == a + 1 {
                return a;
            }
        }
    };
    let child = Command::new("sh")
        .arg(repo_path(".ci/demo"))
        .env("DEMO_DIR", dir.path().join("state"))
        .env("DEMO_DEALER", dealer_bin())
        .env("DEMO_C2S", c2s.to_string())
        .env("DEMO_C2S_TLS", free_port().to_string())
        .env("DEMO_C2S_PLAIN", free_port().to_string())
        .env("DEMO_HTTP", http.to_string())
        .env("DEMO_S2S_INTERNAL", free_port().to_string())
        .env("DEMO_DNS", free_port().to_string())
        .env("DEMO_NODE1", node(1).to_string())
        .env("DEMO_NODE2", node(2).to_string())
        .env("DEMO_NODE3", node(3).to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("running .ci/demo");
    let demo = Demo { child, dir };
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    let up = wait_for(Duration::from_secs(60), || {
        http_get(http, "/readyz").ok().filter(|(s, _)| *s == 200)
    });
    assert!(up.is_some(), "the demo did not come up:\n{}", demo.output());
    let text = demo.output();
    assert!(
        text.contains("tls trust"),
        "the banner says how to connect:\n{text}"
    );
    // Two users the banner places on different backends.
    let users: Vec<(String, String)> =
        std::fs::read_to_string(demo.dir.path().join("state/users.txt"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(u, o)| (u.to_owned(), o.to_owned()))
            .collect();
    let (a, a_owner) = users[0].clone();
    let (b, b_owner) = users
        .iter()
        .find(|(_, o)| *o != a_owner)
        .cloned()
        .expect("users on two backends");
    assert!(
        text.contains(&format!("{a}@example.com → {a_owner}")),
        "{text}"
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], c2s));
    let (ja, jb) = (format!("{a}@example.com"), format!("{b}@example.com"));
    let s = session(
        &[
            LoginOpts::new(&ja, "demo", addr).tls(Transport::StartTls),
            LoginOpts::new(&jb, "demo", addr).tls(Transport::StartTls),
        ],
        vec![
            act::send_message(0, &jb, &format!("hello {b} on {b_owner}")),
            act::expect_message(1, &ja, &format!("hello {b} on {b_owner}")),
            act::send_message(1, &ja, "hi back"),
            act::expect_message(0, &jb, "hi back"),
        ],
    );
    assert!(
        s.ok,
        "{}\n--- demo ---\n{}\n--- node logs ---\n{}",
        serde_json::to_string_pretty(&s.raw).unwrap_or_default(),
        demo.output(),
        ["node1", "node2", "node3"]
            .iter()
            .map(|n| std::fs::read_to_string(
                demo.dir.path().join("state").join(n).join("prosody.log")
            )
            .unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Stopping the script stops what it started.
    let pids = demo.pids();
    assert_eq!(pids.len(), 4, "three Prosody servers and dnsmasq");
    let script = rustix::process::Pid::from_raw(demo.child.id() as i32).unwrap();
    rustix::process::kill_process(script, rustix::process::Signal::TERM).unwrap();
    let gone = wait_for(Duration::from_secs(10), || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
    assert!(
        gone.is_some(),
        "processes left behind: {pids:?}\n{}",
        demo.output()
    );
}
