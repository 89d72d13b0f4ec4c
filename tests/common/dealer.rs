//! dealer in front of real backends, as the tests run it: the binary as a child
//! process with a generated config on free loopback ports — a STARTTLS listener
//! (`c2s`), a plaintext one (`c2s_plain`, `starttls: off`), a Direct TLS one
//! (`c2s_tls`), and the HTTP endpoint — using the demo certificate for example.com.

use std::net::SocketAddr;
use std::path::PathBuf;

use tempfile::TempDir;

use super::prosody::Prosody;
use super::{DealerProcess, free_port, repo_path};

pub struct Dealer {
    pub process: DealerProcess,
    /// STARTTLS required.
    pub c2s: SocketAddr,
    /// Plaintext (`starttls: off`).
    pub c2s_plain: SocketAddr,
    /// Direct TLS (XEP-0368).
    pub c2s_tls: SocketAddr,
    pub http: SocketAddr,
    pub config: PathBuf,
    pub dir: TempDir,
    /// The part of the config the test wrote (everything but listeners and TLS).
    body: String,
    extra_listen: String,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A backend's YAML lines for a Prosody instance, plus `extra` keys.
pub fn backend_yaml(name: &str, p: &Prosody, extra: &str) -> String {
    format!(
        "  {name}: {{ c2s: \"{}\", s2s: \"{}\", redirect: \"{}\"{}{extra} }}\n",
        p.c2s,
        p.s2s,
        p.c2s,
        if extra.is_empty() { "" } else { ", " }
    )
}

impl Dealer {
    /// Start dealer with `body`: the config without `listen` and `tls` (and without
    /// `domain`, which is example.com).
    pub fn start(body: &str) -> Dealer {
        Dealer::start_with(body, "")
    }

    /// Like `start`, logging at `level` (DEALER_LOG).
    pub fn start_logging(body: &str, level: &str) -> Dealer {
        Dealer::start_inner(body, "", level)
    }

    /// Like `start`, with more `listen:` entries (indented lines such as
    /// `  s2s: ["127.0.0.1:5269"]\n`).
    pub fn start_with(body: &str, extra_listen: &str) -> Dealer {
        Dealer::start_inner(body, extra_listen, "debug")
    }

    /// Like `start`, with one worker thread (dealer pinned to one CPU).
    pub fn start_one_thread(body: &str) -> Dealer {
        Dealer::start_full(body, "", "debug", true)
    }

    fn start_inner(body: &str, extra_listen: &str, level: &str) -> Dealer {
        Dealer::start_full(body, extra_listen, level, false)
    }

    fn start_full(body: &str, extra_listen: &str, level: &str, one_cpu: bool) -> Dealer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (c2s, c2s_plain, c2s_tls, http) = (
            addr(free_port()),
            addr(free_port()),
            addr(free_port()),
            addr(free_port()),
        );
        let config = dir.path().join("dealer.yaml");
        let ports = Ports {
            c2s,
            c2s_plain,
            c2s_tls,
            http,
            extra: extra_listen.to_owned(),
        };
        write_config(&config, &ports, body);
        let start = if one_cpu {
            DealerProcess::start_on_one_cpu
        } else {
            DealerProcess::start_at_level
        };
        let process = start(&config, Some(http), dir.path().join("dealer.log"), level);
        Dealer {
            process,
            c2s,
            c2s_plain,
            c2s_tls,
            http,
            config,
            body: body.to_owned(),
            extra_listen: extra_listen.to_owned(),
            dir,
        }
    }

    fn ports(&self) -> Ports {
        Ports {
            c2s: self.c2s,
            c2s_plain: self.c2s_plain,
            c2s_tls: self.c2s_tls,
            http: self.http,
            extra: self.extra_listen.clone(),
        }
    }

    /// Kill the process and start it again with the same config and ports.
    /// Stop with SIGINT (sessions and links closed at once, politely), then start again.
    pub fn restart_after_sigint(&mut self) {
        self.process.signal(rustix::process::Signal::INT);
        let status = self
            .process
            .wait_exit(std::time::Duration::from_secs(10))
            .expect("dealer exits on SIGINT");
        assert!(status.success(), "{status:?}");
        self.process = DealerProcess::start(
            &self.config,
            Some(self.http),
            self.dir.path().join("dealer.log"),
        );
    }

    pub fn restart(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
        self.process = DealerProcess::start(
            &self.config,
            Some(self.http),
            self.dir.path().join("dealer.log"),
        );
    }

    /// Replace the body of the config (listeners stay) and send SIGHUP; waits until
    /// the generation rose.
    pub fn reload(&mut self, body: &str) {
        let before = self.process.metric("dealer_config_generation");
        write_config(&self.config, &self.ports(), body);
        self.body = body.to_owned();
        self.process.signal(rustix::process::Signal::HUP);
        let ok = super::wait_for(std::time::Duration::from_secs(10), || {
            (self.process.metric("dealer_config_generation") > before).then_some(())
        });
        assert!(ok.is_some(), "reload not applied; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        self.process.log_text()
    }

    pub fn metric(&self, series: &str) -> f64 {
        self.process.metric(series)
    }

    /// The backend `/route?name=` names for `name` (`NAME` or `NAME@DOMAIN`).
    pub fn route(&self, name: &str) -> String {
        let (status, body) = self.process.get(&format!("/route?name={name}"));
        assert_eq!(status, 200, "{name}: {body}");
        body.trim()
            .split('\t')
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    }

    pub fn body(&self) -> &str {
        &self.body
    }
}

struct Ports {
    c2s: SocketAddr,
    c2s_plain: SocketAddr,
    c2s_tls: SocketAddr,
    http: SocketAddr,
    /// Further `listen:` lines.
    extra: String,
}

fn write_config(path: &std::path::Path, p: &Ports, body: &str) {
    let yaml = format!(
        "domain: example.com\n\
         tls: {{ cert: \"{}\", key: \"{}\" }}\n\
         listen:\n  \
           c2s: [\"{}\", {{ addr: \"{}\", starttls: \"off\" }}]\n  \
           c2s_tls: [\"{}\"]\n  \
           http: \"{}\"\n\
         {}\
         {body}",
        repo_path("conf/example.com.crt").display(),
        repo_path("conf/example.com.key").display(),
        p.c2s,
        p.c2s_plain,
        p.c2s_tls,
        p.http,
        p.extra,
    );
    std::fs::write(path, yaml).expect("writing the dealer config");
}
