//! A private DNS server for s2s tests: dnsmasq on a loopback port, answering only the
//! records a test gives it (no upstream, no /etc/hosts), so that split-horizon setups
//! (backends see one answer, the federation another) can be built and no query ever
//! leaves loopback.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

pub struct Dnsmasq {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Serve `_xmpp-server._tcp.DOMAIN` → DOMAIN:PORT and DOMAIN → 127.0.0.1 for each
    /// `(DOMAIN, PORT)`.
    pub fn start(records: &[(&str, u16)]) -> Dnsmasq {
        Dnsmasq::start_with(records, &[])
    }

    /// Like `start`, plus `_xmpps-server._tcp.DOMAIN` → DOMAIN:PORT (Direct TLS,
    /// XEP-0368) for each `(DOMAIN, PORT)` of `direct_tls`.
    pub fn start_with(records: &[(&str, u16)], direct_tls: &[(&str, u16)]) -> Dnsmasq {
        assert!(
            std::path::Path::new(DNSMASQ).exists(),
            "dnsmasq is missing: apt-get install dnsmasq-base (.ci/test installs it)"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let mut args = vec![
            "--no-daemon".to_string(),
            format!("--port={port}"),
            "--listen-address=127.0.0.1".into(),
            "--bind-interfaces".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--conf-file=/dev/null".into(),
            format!("--pid-file={}", dir.path().join("dnsmasq.pid").display()),
            "--log-queries".into(),
            format!(
                "--log-facility={}",
                dir.path().join("dnsmasq.log").display()
            ),
        ];
        for (domain, p) in records {
            args.push(format!("--host-record={domain},127.0.0.1"));
            args.push(format!(
                "--srv-host=_xmpp-server._tcp.{domain},{domain},{p},0,5"
            ));
        }
        for (domain, p) in direct_tls {
            args.push(format!(
                "--srv-host=_xmpps-server._tcp.{domain},{domain},{p},0,5"
            ));
        }
        let child = Command::new(DNSMASQ)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dnsmasq");
        let d = Dnsmasq { port, child, dir };
        let up = wait_for(Duration::from_secs(5), || {
            std::fs::read_to_string(d.dir.path().join("dnsmasq.log"))
                .ok()
                .filter(|l| l.contains("started"))
        });
        assert!(up.is_some(), "dnsmasq did not start on port {port}");
        d
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
