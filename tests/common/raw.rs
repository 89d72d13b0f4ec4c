//! A raw XMPP socket for the tests that must send what no client library would
//! (garbage, oversized headers, DTDs) or read dealer's exact bytes (stream errors,
//! the XEP-0078 answer). Plain TCP, STARTTLS or Direct TLS; TLS does not verify the
//! server certificate (the demo certificate is self-signed).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

pub const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";

enum Io {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Moved,
}

pub struct Raw {
    io: Io,
    /// Everything received so far.
    pub received: Vec<u8>,
    closed: bool,
}

fn tls_config(alpn: Option<&[u8]>) -> Arc<rustls::ClientConfig> {
    let mut c = (*dealer::tls::backend_client_config()).clone();
    if let Some(a) = alpn {
        c.alpn_protocols = vec![a.to_vec()];
    }
    Arc::new(c)
}

fn wrap_tls(tcp: TcpStream, alpn: Option<&[u8]>) -> Io {
    let conn = rustls::ClientConnection::new(
        tls_config(alpn),
        ServerName::try_from("example.com").expect("a valid DNS name"),
    )
    .expect("a TLS client");
    Io::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
}

impl Raw {
    pub fn plain(addr: SocketAddr) -> Raw {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        tcp.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("socket option");
        Raw {
            io: Io::Plain(tcp),
            received: Vec::new(),
            closed: false,
        }
    }

    /// Direct TLS with ALPN `xmpp-client` (XEP-0368).
    pub fn direct_tls(addr: SocketAddr) -> Raw {
        let mut r = Raw::plain(addr);
        let Io::Plain(tcp) = std::mem::replace(&mut r.io, Io::Moved) else {
            unreachable!()
        };
        r.io = wrap_tls(tcp, Some(b"xmpp-client"));
        r
    }

    /// Direct TLS with the client config `config` (one that keeps session tickets
    /// across connections, say).
    pub fn direct_tls_with(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Raw {
        let mut r = Raw::plain(addr);
        let Io::Plain(tcp) = std::mem::replace(&mut r.io, Io::Moved) else {
            unreachable!()
        };
        let conn = rustls::ClientConnection::new(
            config,
            ServerName::try_from("example.com").expect("a valid DNS name"),
        )
        .expect("a TLS client");
        r.io = Io::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
        r
    }

    /// The client config Direct TLS uses (ALPN `xmpp-client`, certificate unchecked).
    pub fn direct_tls_config() -> Arc<rustls::ClientConfig> {
        tls_config(Some(b"xmpp-client"))
    }

    /// Whether the TLS handshake was full or resumed (None on plaintext).
    pub fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        match &self.io {
            Io::Tls(t) => t.conn.handshake_kind(),
            _ => None,
        }
    }

    /// TLS with ALPN `alpn` (a WebSocket listener takes `http/1.1`).
    pub fn tls_alpn(addr: SocketAddr, alpn: &[u8]) -> Raw {
        let mut r = Raw::plain(addr);
        let Io::Plain(tcp) = std::mem::replace(&mut r.io, Io::Moved) else {
            unreachable!()
        };
        r.io = wrap_tls(tcp, Some(alpn));
        r
    }

    pub fn send(&mut self, s: impl AsRef<[u8]>) {
        let r = match &mut self.io {
            Io::Plain(t) => t.write_all(s.as_ref()).and_then(|_| t.flush()),
            Io::Tls(t) => t.write_all(s.as_ref()).and_then(|_| t.flush()),
            Io::Moved => unreachable!("stream moved"),
        };
        r.unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// Write, ignoring errors (the peer may have closed already).
    pub fn try_send(&mut self, s: impl AsRef<[u8]>) {
        let _ = match &mut self.io {
            Io::Plain(t) => t.write_all(s.as_ref()),
            Io::Tls(t) => t.write_all(s.as_ref()),
            Io::Moved => Ok(()),
        };
    }

    fn read_some(&mut self) {
        let mut buf = [0u8; 8192];
        let r = match &mut self.io {
            Io::Plain(t) => t.read(&mut buf),
            Io::Tls(t) => t.read(&mut buf),
            Io::Moved => Ok(0),
        };
        match r {
            Ok(0) => self.closed = true,
            Ok(n) => self.received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => self.closed = true,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }

    /// Read until `needle` has been received; panics after `limit`.
    pub fn expect(&mut self, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        while !self.text().contains(needle) {
            if self.closed || start.elapsed() > limit {
                panic!(
                    "waited {:?} for {needle:?}; closed: {}; got: {}",
                    start.elapsed(),
                    self.closed,
                    self.text()
                );
            }
            self.read_some();
        }
        self.text()
    }

    /// Read until the peer closes; returns everything and how long it took.
    pub fn read_to_close(&mut self, limit: Duration) -> (String, Duration) {
        let start = Instant::now();
        while !self.closed {
            if start.elapsed() > limit {
                panic!("not closed within {limit:?}; got: {}", self.text());
            }
            self.read_some();
        }
        (self.text(), start.elapsed())
    }

    /// Read until the peer closes or `limit` passes; returns everything and whether
    /// it closed.
    pub fn read_to_close_or(&mut self, limit: Duration) -> (String, bool) {
        let start = Instant::now();
        while !self.closed && start.elapsed() < limit {
            self.read_some();
        }
        (self.text(), self.closed)
    }

    pub fn is_closed(&mut self) -> bool {
        self.read_some();
        self.closed
    }

    /// The certificate the server presented (DER), on a TLS stream.
    pub fn peer_certificate(&mut self) -> Option<Vec<u8>> {
        match &mut self.io {
            Io::Tls(t) => {
                // The handshake completes on first use; make sure it has.
                while t.conn.is_handshaking() {
                    t.conn.complete_io(&mut t.sock).ok()?;
                }
                t.conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec())
            }
            _ => None,
        }
    }

    /// After `<proceed/>`: the TLS handshake on this connection.
    pub fn upgrade_tls(&mut self) {
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Moved) else {
            panic!("STARTTLS on a TLS stream")
        };
        self.io = wrap_tls(tcp, None);
        self.received.clear();
    }

    /// Open a stream, STARTTLS, and open the stream again; returns the features.
    pub fn starttls(addr: SocketAddr) -> (Raw, String) {
        let mut r = Raw::plain(addr);
        r.send(HEADER);
        r.expect("</stream:features>", Duration::from_secs(5));
        r.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        r.expect("<proceed", Duration::from_secs(5));
        r.upgrade_tls();
        r.send(HEADER);
        let f = r.expect("</stream:features>", Duration::from_secs(5));
        (r, f)
    }
}
