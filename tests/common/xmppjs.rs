//! A second real client: xmpp.js (`@xmpp/client` from npm) driven by
//! `tests/clients/xmppjs/client.mjs` (its header documents the options and the one
//! JSON line it prints). It speaks SASL2 with Bind2 and WebSocket, which slixmpp
//! does not. One process per login.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::repo_path;

pub const NODE: &str = "node";

/// Run the client with `args` (flags as the script takes them); returns its JSON.
pub fn run(args: &[&str]) -> serde_json::Value {
    let dir = repo_path("tests/clients/xmppjs");
    assert!(
        dir.join("node_modules/@xmpp/client").exists(),
        "@xmpp/client is not installed: run `npm ci` in {} (.ci/test does), with Node.js \
         from `apt-get install nodejs npm`",
        dir.display()
    );
    let mut child = Command::new(NODE)
        .arg("--experimental-websocket")
        .arg(dir.join("client.mjs"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {NODE}: {e}; apt-get install nodejs npm"));
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for node") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            break child.wait().expect("reaping node");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("node output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "client.mjs printed no JSON ({e}, {status}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
