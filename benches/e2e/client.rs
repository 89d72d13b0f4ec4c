//! The load generator's XMPP client: connect (plain TCP or Direct TLS) from one of
//! several loopback source addresses, log in with SASL PLAIN, bind, then send 200-byte
//! `<message/>` stanzas and read their echoes. Up to the bind, replies are cut with the
//! crate's own framer; after it, every echo is exactly the stanza sent with `from` and
//! `to` swapped, so echoes are counted and checked 200 bytes at a time, byte for byte.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use dealer::xml::{Frame, FrameLimits, Framer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::timeout;

/// Size of every stanza the load sends, and of its echo.
pub const STANZA_BYTES: usize = 200;
/// Longest wait for any one read or write before the session counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Client sockets bind to 127.0.0.2 … 127.0.0.(1 + SOURCES) in turn, so ephemeral
/// ports (and TIME_WAIT entries) are spread over several source addresses.
const SOURCES: usize = 8;

pub const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where a client connects, and how.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Direct TLS from the first byte when set.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

pub fn bad(what: impl Into<String>) -> io::Error {
    io::Error::other(what.into())
}

/// The client TLS config: TLS 1.3, ALPN `xmpp-client`, no certificate check (the demo
/// certificate is self-signed) and no session resumption, so every login pays for a
/// full handshake on every proxy alike.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    // ring's provider: X25519 key exchange only, so every relay does the same
    // handshake (dealer would pick X25519MLKEM768 with a client offering it, which
    // HAProxy's OpenSSL 3.0 cannot).
    let ring = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = (*dealer::tls::backend_client_config_with(ring)).clone();
    c.alpn_protocols = vec![dealer::tls::ALPN_CLIENT.to_vec()];
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

/// The same, but with rustls's default in-memory resumption store, new and empty: the
/// clients that share this config keep the TLS 1.3 tickets servers send them, and each
/// new connection offers one from an earlier connection. The store is keyed by server
/// name, and every relay is `example.com`, so each relay's phase needs a config of its
/// own (a ticket from one relay would not resume on another).
pub fn tls_config_resuming() -> Arc<rustls::ClientConfig> {
    let mut c = (*tls_config()).clone();
    c.resumption = rustls::client::Resumption::in_memory_sessions(256);
    Arc::new(c)
}

static NEXT_SOURCE: AtomicUsize = AtomicUsize::new(0);

/// A connection to `ep`, and whether its TLS handshake resumed a session.
async fn connect(ep: &Endpoint) -> io::Result<(Box<dyn Io>, bool)> {
    let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % SOURCES;
    let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + n as u8));
    let sock = TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    sock.bind(SocketAddr::new(src, 0))?;
    let tcp = timeout(IO_TIMEOUT, sock.connect(ep.addr))
        .await
        .map_err(|_| bad("connect timed out"))??;
    tcp.set_nodelay(true)?;
    match &ep.tls {
        None => Ok((Box::new(tcp), false)),
        Some(cfg) => {
            let name = ServerName::try_from("example.com").expect("a valid DNS name");
            let tls = timeout(
                IO_TIMEOUT,
                tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp),
            )
            .await
            .map_err(|_| bad("TLS handshake timed out"))??;
            let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            Ok((Box::new(tls), resumed))
        }
    }
}

/// Frames from the peer, for the login exchange (small, so copies are fine).
struct Reader {
    framer: Framer,
    buf: Vec<u8>,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            framer: Framer::new(FrameLimits::default()),
            buf: Vec::new(),
        }
    }

    /// The next frame other than whitespace, with its bytes.
    async fn next(&mut self, io: &mut dyn Io) -> io::Result<(Frame, Vec<u8>)> {
        loop {
            let parsed = self
                .framer
                .parse(&self.buf)
                .map_err(|e| bad(format!("peer's XML: {e}")))?;
            if let Some(f) = parsed {
                let bytes: Vec<u8> = self.buf.drain(..f.len()).collect();
                if let Frame::Whitespace { .. } = f {
                    continue;
                }
                return Ok((f, bytes));
            }
            let mut tmp = [0u8; 4096];
            let n = timeout(IO_TIMEOUT, io.read(&mut tmp))
                .await
                .map_err(|_| bad("read timed out during login"))??;
            if n == 0 {
                return Err(bad(format!(
                    "peer closed during login after {:?}",
                    String::from_utf8_lossy(&self.buf)
                )));
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    async fn header(&mut self, io: &mut dyn Io) -> io::Result<()> {
        match self.next(io).await? {
            (Frame::Header { header, .. }, _) if header.is_stream() => Ok(()),
            (_, b) => Err(bad(format!(
                "expected a stream header, got {:?}",
                String::from_utf8_lossy(&b)
            ))),
        }
    }

    /// The next element, which must start with `prefix`.
    async fn element(&mut self, io: &mut dyn Io, prefix: &str) -> io::Result<Vec<u8>> {
        match self.next(io).await? {
            (Frame::Element { .. }, b) if b.starts_with(prefix.as_bytes()) => Ok(b),
            (_, b) => Err(bad(format!(
                "expected {prefix}…, got {:?}",
                String::from_utf8_lossy(&b)
            ))),
        }
    }
}

async fn send(io: &mut dyn Io, bytes: &[u8]) -> io::Result<()> {
    timeout(IO_TIMEOUT, async {
        io.write_all(bytes).await?;
        io.flush().await
    })
    .await
    .map_err(|_| bad("write timed out"))?
}

/// A logged-in, bound session, ready to send stanzas.
pub struct Session {
    io: Box<dyn Io>,
    /// The TLS handshake resumed an earlier session (always false for plain TCP).
    pub resumed: bool,
    /// `STANZA_BYTES`-sized copies of this session's stanza, as many as a window holds.
    batch: Vec<u8>,
    /// The echo expected for each stanza.
    echo: Vec<u8>,
    /// Bytes read and not yet counted as echoes (allocated on first use, so thousands
    /// of idle sessions stay small).
    rbuf: Vec<u8>,
    have: usize,
}

/// The stanza user `n` sends, and its echo (`from` and `to` swapped); both are
/// exactly `STANZA_BYTES` long.
pub fn stanza(n: usize) -> (Vec<u8>, Vec<u8>) {
    let me = format!("u{n}@example.com/bench");
    let make = |from: &str, to: &str, pad: usize| {
        format!(
            "<message from='{from}' to='{to}' type='chat' id='m'><body>{}</body></message>",
            "x".repeat(pad)
        )
    };
    let bare = make(&me, "echo@example.com", 0).len();
    assert!(
        bare <= STANZA_BYTES,
        "user number too long for a 200-byte stanza"
    );
    let pad = STANZA_BYTES - bare;
    let msg = make(&me, "echo@example.com", pad).into_bytes();
    let echo = make("echo@example.com", &me, pad).into_bytes();
    debug_assert_eq!((msg.len(), echo.len()), (STANZA_BYTES, STANZA_BYTES));
    (msg, echo)
}

/// Connect as user `n`, authenticate with PLAIN, bind (and, with `session`, open the
/// RFC 3921 session too). `window` is how many stanzas `send` may write at once.
pub async fn login(ep: &Endpoint, n: usize, session: bool, window: usize) -> io::Result<Session> {
    let (mut io, resumed) = connect(ep).await?;
    let io_ref: &mut dyn Io = &mut *io;
    let mut r = Reader::new();
    send(io_ref, HEADER).await?;
    r.header(io_ref).await?;
    r.element(io_ref, "<stream:features").await?;
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("\0u{n}\0secret"));
    let auth =
        format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>");
    send(io_ref, auth.as_bytes()).await?;
    r.element(io_ref, "<success").await?;
    r.framer = Framer::new(FrameLimits::default());
    send(io_ref, HEADER).await?;
    r.header(io_ref).await?;
    r.element(io_ref, "<stream:features").await?;
    send(
        io_ref,
        b"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
          <resource>bench</resource></bind></iq>",
    )
    .await?;
    let res = r.element(io_ref, "<iq").await?;
    if !contains(&res, b"type='result'") || !contains(&res, b"<jid>") {
        return Err(bad(format!(
            "bind answered {:?}",
            String::from_utf8_lossy(&res)
        )));
    }
    if session {
        send(
            io_ref,
            b"<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
        )
        .await?;
        let res = r.element(io_ref, "<iq").await?;
        if !contains(&res, b"type='result'") {
            return Err(bad(format!(
                "session answered {:?}",
                String::from_utf8_lossy(&res)
            )));
        }
    }
    if !r.buf.is_empty() {
        return Err(bad("unexpected bytes after bind"));
    }
    let (msg, echo) = stanza(n);
    Ok(Session {
        io,
        resumed,
        batch: msg.repeat(window.max(1)),
        echo,
        rbuf: Vec::new(),
        have: 0,
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl Session {
    /// Write `k` stanzas (at most the window) in one write.
    pub async fn send(&mut self, k: usize) -> io::Result<()> {
        let k = k.min(self.batch.len() / STANZA_BYTES);
        send(&mut *self.io, &self.batch[..k * STANZA_BYTES]).await
    }

    /// Read once; returns how many whole echoes arrived (each checked byte for byte).
    pub async fn recv(&mut self) -> io::Result<usize> {
        if self.rbuf.is_empty() {
            self.rbuf = vec![0u8; 64 * 1024];
        }
        let n = timeout(IO_TIMEOUT, self.io.read(&mut self.rbuf[self.have..]))
            .await
            .map_err(|_| bad("no echo within the timeout"))??;
        if n == 0 {
            return Err(bad("peer closed while echoes were due"));
        }
        self.have += n;
        let whole = self.have / STANZA_BYTES;
        for c in self.rbuf[..whole * STANZA_BYTES].chunks_exact(STANZA_BYTES) {
            if c != &self.echo[..] {
                return Err(bad(format!("wrong echo {:?}", String::from_utf8_lossy(c))));
            }
        }
        self.rbuf.copy_within(whole * STANZA_BYTES..self.have, 0);
        self.have -= whole * STANZA_BYTES;
        Ok(whole)
    }

    /// Close the stream and wait for the peer to close it too.
    pub async fn close(mut self) -> io::Result<()> {
        send(&mut *self.io, b"</stream:stream>").await?;
        let mut seen = Vec::new();
        let mut tmp = [0u8; 1024];
        loop {
            match timeout(IO_TIMEOUT, self.io.read(&mut tmp)).await {
                Err(_) => return Err(bad("no stream close from the peer")),
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => seen.extend_from_slice(&tmp[..n]),
                // A TLS peer that closed without close_notify: the stream still ended.
                Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Ok(Err(e)) => return Err(e),
            }
        }
        if !contains(&seen, b"</stream:stream>") {
            return Err(bad(format!(
                "closed without </stream:stream>: {:?}",
                String::from_utf8_lossy(&seen)
            )));
        }
        Ok(())
    }
}
