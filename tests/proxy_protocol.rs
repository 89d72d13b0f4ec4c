//! The PROXY protocol end to end (issue 8, item 6): HAProxy with `send-proxy-v2` in
//! front of a dealer listener that expects the header, and a Prosody backend behind
//! dealer that reads the v2 header dealer sends, so the backend sees the original
//! client's address. The client connects from 127.0.0.5 (and 127.0.0.6), never from
//! 127.0.0.1, so an address that survives every hop cannot be a coincidence.
//!
//! Debian 12's `prosody-modules` does not ship `mod_net_proxy` (its README.Debian: only
//! modules the maintainers use), so the Prosody side is a small PROXY v2 receiver
//! written here ([`PROXY_MODULE`]) that hands the connection to the stock c2s listener;
//! what Prosody then believes is read back in band with the stock admin command
//! `admin#user-stats` (XEP-0133), which lists `session.ip` of every resource. A second
//! test puts HAProxy (`accept-proxy`) behind dealer instead, so an independent parser
//! judges the header dealer writes.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::prosody::{Prosody, ProsodySpec};
use common::raw::HEADER;
use common::{DealerProcess, free_port, repo_path, wait_for};
use tempfile::TempDir;

const PW: &str = "s3cret";
const SECS: Duration = Duration::from_secs(5);
const HAPROXY: &str = "/usr/sbin/haproxy";

/// A PROXY protocol v2 receiver for Prosody 0.12's c2s, written for these tests. It
/// listens on `proxy_c2s_ports`, accepts connections only from
/// `proxy_c2s_trusted_proxies`, requires one v2 header first (PROXY over TCP4/TCP6, or
/// LOCAL), makes `conn:ip()`/`conn:port()` answer the client the header names, and hands
/// the connection and the bytes after the header to mod_c2s's own listener. Anything
/// else closes the connection.
const PROXY_MODULE: &str = r#"-- Written by tests/proxy_protocol.rs: PROXY v2 before the stock c2s listener.
module:set_global();

local portmanager = require "core.portmanager";
local ntop = require "util.net".ntop;

local SIGNATURE = "\r\n\r\n\0\r\nQUIT\n";
local MAX_BLOCK = 1024;
local trusted = module:get_option_set("proxy_c2s_trusted_proxies", { "127.0.0.1" });
local pending = {};

local function u16(s, i)
	return s:byte(i) * 256 + s:byte(i + 1);
end

-- "more", or "ok" with the client (nil for LOCAL) and the bytes after the header, or
-- "bad" with the reason.
local function parse(buf)
	local n = math.min(#buf, #SIGNATURE);
	if buf:sub(1, n) ~= SIGNATURE:sub(1, n) then
		return "bad", "no PROXY v2 signature";
	end
	if #buf < 16 then
		return "more";
	end
	local ver_cmd, family, len = buf:byte(13), buf:byte(14), u16(buf, 15);
	if len > MAX_BLOCK then
		return "bad", ("address block of %d bytes"):format(len);
	end
	if #buf < 16 + len then
		return "more";
	end
	local block, rest = buf:sub(17, 16 + len), buf:sub(17 + len);
	if ver_cmd == 0x20 then
		return "ok", nil, rest;
	elseif ver_cmd ~= 0x21 then
		return "bad", ("version/command 0x%02x"):format(ver_cmd);
	elseif family == 0x11 and len >= 12 then
		return "ok", { ip = ntop(block:sub(1, 4)), port = u16(block, 9),
			dst = ("%s:%d"):format(ntop(block:sub(5, 8)), u16(block, 11)) }, rest;
	elseif family == 0x21 and len >= 36 then
		return "ok", { ip = ntop(block:sub(1, 16)), port = u16(block, 33),
			dst = ("[%s]:%d"):format(ntop(block:sub(17, 32)), u16(block, 35)) }, rest;
	end
	return "bad", ("family/protocol 0x%02x with %d address bytes"):format(family, len);
end

local listener = {};

function listener.onconnect(conn)
	if not trusted:contains(conn:ip()) then
		module:log("warn", "Refused a connection from untrusted %s", conn:ip());
		conn:close();
		return;
	end
	pending[conn] = "";
end

function listener.onincoming(conn, data)
	local buf = pending[conn];
	if not buf or not data then
		return;
	end
	buf = buf .. data;
	local status, client, rest = parse(buf);
	if status == "more" then
		pending[conn] = buf;
		return;
	end
	pending[conn] = nil;
	if status == "bad" then
		module:log("warn", "Closed %s: %s", conn:ip(), client);
		conn:close();
		return;
	end
	local proxy = conn:ip();
	if client then
		conn.ip = function() return client.ip; end
		conn.port = function() return client.port; end
		conn.clientport = conn.port;
	end
	module:log("info", "PROXY v2 header from %s names client %s:%d for %s", proxy, conn:ip(), conn:port(),
		client and client.dst or "LOCAL");
	local c2s = portmanager.get_service("c2s").listener;
	conn:setlistener(c2s);
	c2s.onconnect(conn);
	if #rest > 0 then
		return c2s.onincoming(conn, rest);
	end
end

function listener.ondisconnect(conn)
	pending[conn] = nil;
end
listener.ondetach = listener.ondisconnect;

module:provides("net", { name = "proxy_c2s"; listener = listener; });
"#;

fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// HAProxy as a child process in TCP mode with one frontend and one server; killed
/// by pid when dropped. Its log (one line per connection, `client=IP:PORT`, written
/// as soon as the server leg is up) and its own messages go to one file.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Haproxy {
    /// `bind 127.0.0.1:FREE {bind_opts}`, `server s {server} {server_opts}`; waits
    /// until the port accepts.
    fn start(bind_opts: &str, server: SocketAddr, server_opts: &str) -> Haproxy {
        assert!(
            Path::new(HAPROXY).exists(),
            "{HAPROXY} is missing: the PROXY protocol tests need a real HAProxy; \
             install it with `apt-get install haproxy` (.ci/test installs it)"
        );
        let dir = tempfile::Builder::new()
            .prefix("haproxy-")
            .tempdir()
            .expect("a temporary directory for HAProxy");
        let bind = addr([127, 0, 0, 1], free_port());
        let config = dir.path().join("haproxy.cfg");
        let log = dir.path().join("haproxy.log");
        std::fs::write(
            &config,
            format!(
                "# Written by tests/proxy_protocol.rs for one test.\n\
                 global\n    \
                   pidfile {pid}\n    \
                   log stdout format raw local0 info\n\
                 defaults\n    \
                   mode tcp\n    \
                   log global\n    \
                   option logasap\n    \
                   log-format \"conn client=%ci:%cp frontend=%fi:%fp\"\n    \
                   timeout connect 2s\n    \
                   timeout client 30s\n    \
                   timeout server 30s\n\
                 frontend fe\n    \
                   bind {bind} {bind_opts}\n    \
                   default_backend be\n\
                 backend be\n    \
                   server s {server} {server_opts}\n",
                pid = dir.path().join("haproxy.pid").display(),
            ),
        )
        .expect("writing the HAProxy config");
        let out = std::fs::File::create(&log).expect("creating the HAProxy log");
        let err = out.try_clone().expect("duplicating the HAProxy log handle");
        // -db: stay in the foreground, no master-worker, so the child's pid is HAProxy.
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {HAPROXY}: {e}"));
        let mut h = Haproxy {
            child,
            addr: bind,
            log,
            _dir: dir,
        };
        let up = wait_for(SECS, || {
            if let Ok(Some(status)) = h.child.try_wait() {
                panic!("haproxy exited with {status}:\n{}", h.log_text());
            }
            TcpStream::connect_timeout(&bind, Duration::from_millis(200)).ok()
        });
        assert!(
            up.is_some(),
            "haproxy never listened on {bind}:\n{}",
            h.log_text()
        );
        h
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Child::kill is SIGKILL to this child's pid, nothing else.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// dealer with one plaintext c2s listener (`proxy_protocol` as given) and one backend,
/// node1 at `backend` (`backend_proxy` as given).
struct Front {
    process: DealerProcess,
    c2s: SocketAddr,
    _dir: TempDir,
}

impl Front {
    fn start(listener_proxy: bool, backend: SocketAddr, backend_proxy: bool) -> Front {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let c2s = addr([127, 0, 0, 1], free_port());
        let http = addr([127, 0, 0, 1], free_port());
        let config = dir.path().join("dealer.yaml");
        std::fs::write(
            &config,
            format!(
                "domain: example.com\n\
                 tls: {{ cert: \"{cert}\", key: \"{key}\" }}\n\
                 listen:\n  \
                   c2s: [{{ addr: \"{c2s}\", starttls: \"off\", proxy_protocol: {listener_proxy} }}]\n  \
                   http: \"{http}\"\n\
                 c2s: {{ mode: forward, mechanisms: [SCRAM-SHA-1, PLAIN] }}\n\
                 routing: {{ strategy: hash }}\n\
                 backends:\n  \
                   node1: {{ c2s: \"{backend}\", proxy_protocol: {backend_proxy} }}\n\
                 health: {{ interval: 300ms, timeout: 250ms }}\n",
                cert = repo_path("conf/example.com.crt").display(),
                key = repo_path("conf/example.com.key").display(),
            ),
        )
        .expect("writing the dealer config");
        let process = DealerProcess::start(&config, Some(http), dir.path().join("dealer.log"));
        Front {
            process,
            c2s,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        self.process.log_text()
    }
}

/// Prosody for example.com with alice (an admin) and heidi, plus the PROXY v2 c2s
/// port of [`PROXY_MODULE`]; returns the instance, that port, and the folder holding
/// the module (it must outlive the instance).
fn proxied_prosody() -> (Prosody, SocketAddr, TempDir) {
    let plugins = tempfile::Builder::new()
        .prefix("prosody-plugins-")
        .tempdir()
        .expect("a temporary directory for the Prosody module");
    std::fs::write(plugins.path().join("mod_proxy_c2s.lua"), PROXY_MODULE)
        .expect("writing mod_proxy_c2s.lua");
    let proxy_port = free_port();
    let p = ProsodySpec::new("example.com")
        .user("alice", PW)
        .user("heidi", PW)
        .module("adhoc")
        .module("admin_adhoc")
        .module("proxy_c2s")
        .plugin_dir(plugins.path())
        .config(&format!(
            "admins = {{ \"alice@example.com\" }}\n\
             proxy_c2s_ports = {{ {proxy_port} }}\n\
             proxy_c2s_interfaces = {{ \"127.0.0.1\" }}\n\
             proxy_c2s_trusted_proxies = {{ \"127.0.0.1\" }}"
        ))
        .start();
    let proxy = addr([127, 0, 0, 1], proxy_port);
    let up = format!("Activated service 'proxy_c2s' on [127.0.0.1]:{proxy_port}");
    assert!(
        p.log().contains(&up),
        "the PROXY c2s port is not up:\n{}",
        p.log()
    );
    (p, proxy, plugins)
}

/// A raw XMPP client over a socket bound to a chosen loopback source address (slixmpp
/// cannot choose one). Bytes are matched in order: `expect` consumes what it matched.
struct Client {
    s: TcpStream,
    local: SocketAddr,
    got: String,
    seen: usize,
    closed: bool,
}

impl Client {
    fn connect_from(src: Ipv4Addr, to: SocketAddr) -> Client {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a TCP socket");
        sock.bind(&SocketAddr::from((src, 0)).into())
            .unwrap_or_else(|e| panic!("binding {src}: {e}"));
        sock.connect_timeout(&to.into(), SECS)
            .unwrap_or_else(|e| panic!("connect {src} -> {to}: {e}"));
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .and_then(|()| s.set_write_timeout(Some(SECS)))
            .expect("socket options");
        let local = s
            .local_addr()
            .expect("a connected socket has a local address");
        Client {
            s,
            local,
            got: String::new(),
            seen: 0,
            closed: false,
        }
    }

    fn send(&mut self, text: &str) {
        self.s
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("send from {}: {e}; got so far: {}", self.local, self.got));
    }

    fn read_some(&mut self) {
        let mut buf = [0u8; 8192];
        match self.s.read(&mut buf) {
            Ok(0) => self.closed = true,
            Ok(n) => self.got.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => self.closed = true,
        }
    }

    /// Read until `needle` follows what earlier calls matched; returns the text up to
    /// and including it. Panics after 5 s or when the peer closes first.
    fn expect(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(i) = self.got[self.seen..].find(needle) {
                let end = self.seen + i + needle.len();
                let part = self.got[self.seen..end].to_owned();
                self.seen = end;
                return part;
            }
            if self.closed || start.elapsed() > SECS {
                panic!(
                    "client {} waited {:?} for {needle:?}; closed: {}; got: {}",
                    self.local,
                    start.elapsed(),
                    self.closed,
                    &self.got[self.seen..]
                );
            }
            self.read_some();
        }
    }

    /// Read until the peer closes (5 s at most); returns everything received.
    fn read_to_close(&mut self) -> String {
        let start = Instant::now();
        while !self.closed {
            assert!(
                start.elapsed() < SECS,
                "not closed within {SECS:?}; got: {}",
                self.got
            );
            self.read_some();
        }
        self.got.clone()
    }

    /// PLAIN, stream restart and resource binding; returns the bound JID.
    fn login(&mut self, user: &str, resource: &str) -> String {
        self.send(HEADER);
        let features = self.expect("</stream:features>");
        assert!(features.contains(">PLAIN<"), "no PLAIN offered: {features}");
        let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{PW}"));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        ));
        let answer = self.expect("/>");
        assert!(
            answer.contains("<success"),
            "{user} not authenticated: {answer}"
        );
        self.send(HEADER);
        let features = self.expect("</stream:features>");
        assert!(
            features.contains("xmpp-bind"),
            "no bind after auth: {features}"
        );
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ));
        let bound = self.expect("</iq>");
        let jid = between(&bound, "<jid>", "</jid>")
            .unwrap_or_else(|| panic!("no JID bound: {bound}"))
            .to_owned();
        assert_eq!(jid, format!("{user}@example.com/{resource}"));
        jid
    }

    /// XEP-0133 "Get User Statistics" for `account`; returns the `ipaddresses` values.
    fn user_stats_ips(&mut self, account: &str) -> Vec<String> {
        const NODE: &str = "http://jabber.org/protocol/admin#user-stats";
        self.send(&format!(
            "<iq type='set' id='stats1' to='example.com'>\
             <command xmlns='http://jabber.org/protocol/commands' node='{NODE}' action='execute'/></iq>"
        ));
        let form = self.expect("</iq>");
        let session = between(&form, "sessionid='", "'")
            .or_else(|| between(&form, "sessionid=\"", "\""))
            .unwrap_or_else(|| panic!("no ad-hoc session (is alice an admin?): {form}"))
            .to_owned();
        self.send(&format!(
            "<iq type='set' id='stats2' to='example.com'>\
             <command xmlns='http://jabber.org/protocol/commands' node='{NODE}' sessionid='{session}'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/admin</value></field>\
             <field var='accountjid'><value>{account}</value></field></x></command></iq>"
        ));
        let result = self.expect("</iq>");
        let field = between(&result, "var='ipaddresses'", "</field>")
            .or_else(|| between(&result, "var=\"ipaddresses\"", "</field>"))
            .unwrap_or_else(|| panic!("no ipaddresses field: {result}"));
        field
            .split("<value>")
            .skip(1)
            .filter_map(|v| v.split_once("</value>").map(|(v, _)| v.trim().to_owned()))
            .filter(|v| !v.is_empty())
            .collect()
    }
}

/// The text between the first `start` and the next `end` after it.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

/// Wait (bounded) until `log()` contains `needle`; panics with the log.
fn wait_log(what: &str, needle: &str, log: impl Fn() -> String) {
    let found = wait_for(SECS, || log().contains(needle).then_some(()));
    assert!(
        found.is_some(),
        "{what} never logged {needle:?}:\n{}",
        log()
    );
}

#[test]
fn the_backend_sees_the_address_haproxy_saw_through_dealer() {
    let (prosody, proxy_port, _plugins) = proxied_prosody();
    let dealer = Front::start(true, proxy_port, true);
    let haproxy = Haproxy::start("", dealer.c2s, "send-proxy-v2");

    let mut alice = Client::connect_from(Ipv4Addr::new(127, 0, 0, 5), haproxy.addr);
    alice.login("alice", "pp");
    let mut heidi = Client::connect_from(Ipv4Addr::new(127, 0, 0, 6), haproxy.addr);
    heidi.login("heidi", "pp");

    // Prosody's own view, in band: session.ip of each user's session.
    assert_eq!(
        alice.user_stats_ips("alice@example.com"),
        ["127.0.0.5"],
        "Prosody's session.ip for alice; prosody log:\n{}",
        prosody.log()
    );
    assert_eq!(alice.user_stats_ips("heidi@example.com"), ["127.0.0.6"]);

    // The ports made it through both hops too: HAProxy read the client's socket, dealer
    // read HAProxy's header, Prosody read dealer's. The destination dealer passes on is
    // the one HAProxy's header named: HAProxy's own frontend.
    for (c, user) in [(&alice, "alice"), (&heidi, "heidi")] {
        wait_log("HAProxy", &format!("conn client={}", c.local), || {
            haproxy.log_text()
        });
        let dealer_saw = format!("client.addr={}", c.local);
        let who = format!("user=\"{user}\"");
        let line = wait_for(SECS, || {
            let log = dealer.log();
            let line = log
                .lines()
                .find(|l| l.contains("handing over") && l.contains(&who))?;
            Some(line.to_owned())
        })
        .unwrap_or_else(|| panic!("dealer never handed {user} over:\n{}", dealer.log()));
        assert!(
            line.contains(&dealer_saw),
            "dealer's view of {user}: {line}"
        );
        assert_eq!(
            line.matches("client.addr=").count(),
            1,
            "one client address per log line, the balancer's is proxy.addr: {line}"
        );
        assert!(line.contains("proxy.addr=127.0.0.1:"), "{line}");
        wait_log(
            "Prosody",
            &format!(
                "PROXY v2 header from 127.0.0.1 names client {} for {}",
                c.local, haproxy.addr
            ),
            || prosody.log(),
        );
    }
    // Health checks carry a header too (naming dealer, 127.0.0.1:0) and pass.
    wait_log(
        "Prosody",
        &format!("PROXY v2 header from 127.0.0.1 names client 127.0.0.1:0 for {proxy_port}"),
        || prosody.log(),
    );
    let ok = wait_for(SECS, || {
        (dealer
            .process
            .metric("dealer_health_checks_total{backend=\"node1\",result=\"ok\"}")
            >= 2.0)
            .then_some(())
    });
    assert!(ok.is_some(), "health checks failing:\n{}", dealer.log());
    assert!(
        !dealer.log().contains("backend down"),
        "dealer took the backend down:\n{}",
        dealer.log()
    );
    assert!(
        !prosody.log().contains("mod_proxy_c2s\twarn"),
        "the PROXY module refused a connection:\n{}",
        prosody.log()
    );
}

#[test]
fn a_client_without_a_proxy_header_is_refused() {
    let (_prosody, proxy_port, _plugins) = proxied_prosody();
    let dealer = Front::start(true, proxy_port, true);

    let mut direct = Client::connect_from(Ipv4Addr::new(127, 0, 0, 5), dealer.c2s);
    direct.send(HEADER);
    let got = direct.read_to_close();
    assert!(
        got.contains("not-well-formed") && got.contains("</stream:stream>"),
        "no not-well-formed stream error: {got}\ndealer log:\n{}",
        dealer.log()
    );
    assert!(
        !got.contains("<stream:features"),
        "features offered without a PROXY header: {got}"
    );
}

#[test]
fn haproxy_behind_dealer_accepts_its_header_and_reads_the_client_address() {
    // An independent parser of dealer's v2 header: HAProxy's accept-proxy, in front of
    // a stock Prosody. A header HAProxy did not like would close the connection.
    let prosody = ProsodySpec::new("example.com").user("alice", PW).start();
    let haproxy = Haproxy::start("accept-proxy", prosody.c2s, "");
    let dealer = Front::start(false, haproxy.addr, true);

    let mut alice = Client::connect_from(Ipv4Addr::new(127, 0, 0, 5), dealer.c2s);
    alice.login("alice", "pp");
    // Source: the client's own socket; destination: the dealer listener it reached.
    wait_log(
        "HAProxy",
        &format!("conn client={} frontend={}", alice.local, dealer.c2s),
        || haproxy.log_text(),
    );
    // The health checks' header, too: dealer names itself (port 0) and the backend.
    wait_log(
        "HAProxy",
        &format!("conn client=127.0.0.1:0 frontend={}", haproxy.addr),
        || haproxy.log_text(),
    );
    let ok = wait_for(SECS, || {
        (dealer
            .process
            .metric("dealer_health_checks_total{backend=\"node1\",result=\"ok\"}")
            >= 2.0)
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "health checks through HAProxy failing:\n{}\nhaproxy:\n{}",
        dealer.log(),
        haproxy.log_text()
    );
    // HAProxy logs a header it refuses ("does not look like a PROXY protocol header",
    // "unsupported address family", ...); the only complaint allowed is about its own
    // readiness probe, which connects and closes without sending anything.
    let log = haproxy.log_text();
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("conn client="))
        .filter(|l| !l.ends_with("Connection closed while waiting for PROXY protocol header"))
        .collect();
    assert!(complaints.is_empty(), "HAProxy complained:\n{log}");
}
