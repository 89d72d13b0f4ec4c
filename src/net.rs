//! A byte stream that is plain TCP or TLS over TCP, so session phases can upgrade a
//! connection (STARTTLS) without changing type, and relays can see which kind of leg
//! they have (splice needs both legs plain).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// Moved out for an upgrade (TLS handshake) that did not put a stream back.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection moved out for an upgrade",
    )
}

impl Conn {
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Plain(s) => Some(s),
            Conn::Tls(s) => Some(s.get_ref().0),
            Conn::Gone => None,
        }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().ok_or_else(gone)?.peer_addr()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Conn::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
            Conn::Gone => false,
        }
    }
}

/// Socket options for connections dealer opens: no Nagle delay (XMPP is
/// request/response at login).
pub fn tune(s: &TcpStream) {
    // Connections dealer opens (to backends, to peers) are short-haul: no Nagle delay.
    // Dead peers show as resets or failed writes; keepalive is for the accepted side.
    let _ = s.set_nodelay(true);
}

/// Options for listening sockets, which accepted connections inherit (Linux), saving
/// the system calls per connection: no Nagle delay, and TCP keepalive so the dead
/// clients of idle relayed sessions are found.
pub fn tune_socket(sock: &socket2::SockRef<'_>) {
    let _ = sock.set_tcp_nodelay(true);
    let ka = socket2::TcpKeepalive::new().with_time(std::time::Duration::from_secs(120));
    let _ = sock.set_tcp_keepalive(&ka);
}

/// Read exactly a PROXY protocol header from `tcp`, nothing after it: what follows may
/// be a TLS ClientHello that a TLS acceptor must see. v1 is read a byte at a time (a
/// short line, once per connection); v2 announces its length after 16 bytes. The
/// outer error is the connection's, the inner one the header's.
pub async fn read_proxy_header(
    tcp: &mut TcpStream,
) -> io::Result<Result<crate::proxy_protocol::ProxyInfo, crate::proxy_protocol::ProxyError>> {
    use crate::proxy_protocol;
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(proxy_protocol::V1_MAX_LEN + 1);
    loop {
        match proxy_protocol::parse(&buf) {
            Ok(Some((info, _))) => return Ok(Ok(info)),
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
        let want = if buf.len() >= 16 && buf[0] == b'\r' {
            (16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]))).saturating_sub(buf.len())
        } else {
            1
        }
        .max(1);
        let start = buf.len();
        buf.resize(start + want, 0);
        tcp.read_exact(&mut buf[start..]).await?;
    }
}
