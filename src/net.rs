//! A byte stream that is plain TCP or TLS over TCP, so session phases can upgrade a
//! connection (STARTTLS) without changing type, and relays can see which kind of leg
//! they have (splice needs both legs plain). Under TLS the TCP stream is a [`TlsTcp`],
//! which can drop the whitespace some peers send between `<starttls/>` and the
//! handshake.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TlsTcp>>),
    /// An RFC 7395 WebSocket, read and written as an XML stream over TCP would be.
    Ws(Box<crate::websocket::WsConn>),
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

    /// Plain TCP on both ends of the kernel: what `splice(2)` needs.
    pub fn is_plain_tcp(&self) -> bool {
        matches!(self, Conn::Plain(_))
    }

    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Plain(s) => Some(s),
            Conn::Tls(s) => Some(&s.get_ref().0.tcp),
            Conn::Ws(_) | Conn::Gone => None,
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
            Conn::Ws(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            Conn::Ws(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Ws(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Ws(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
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
            Conn::Ws(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Conn::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
            Conn::Ws(_) | Conn::Gone => false,
        }
    }
}

/// XML whitespace (RFC 6120 allows none after `<starttls/>`, but real clients send a
/// newline there, and Prosody accepts it).
fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Whitespace dropped before the first TLS byte, at most: enough for any client's
/// habit, too little to keep a connection busy (the handshake deadline bounds time).
const MAX_SPACE_BEFORE_TLS: usize = 1024;

/// The TCP stream under a TLS session. After STARTTLS it drops XML whitespace that
/// arrives before the first TLS byte — in whatever segment it comes — so that a peer
/// that sends `<starttls/>` plus a newline still gets its handshake; the first other
/// byte ends the skipping, and the TLS library judges it.
pub struct TlsTcp {
    tcp: TcpStream,
    /// Whitespace still to be dropped; `None` once TLS bytes flow.
    skip: Option<usize>,
}

impl TlsTcp {
    /// For Direct TLS: every byte is TLS from the start.
    pub fn direct(tcp: TcpStream) -> TlsTcp {
        TlsTcp { tcp, skip: None }
    }

    /// For STARTTLS: whitespace before the first TLS byte is dropped.
    pub fn after_starttls(tcp: TcpStream) -> TlsTcp {
        TlsTcp {
            tcp,
            skip: Some(MAX_SPACE_BEFORE_TLS),
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl AsyncRead for TlsTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(budget) = this.skip.as_mut() else {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        };
        loop {
            let start = buf.filled().len();
            std::task::ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
            let got = buf.filled().len() - start;
            if got == 0 {
                return Poll::Ready(Ok(())); // end of stream
            }
            let space = buf.filled()[start..]
                .iter()
                .take_while(|&&b| is_xml_space(b))
                .count();
            if space > *budget {
                buf.set_filled(start);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "too much whitespace before the TLS handshake",
                )));
            }
            *budget -= space;
            if space < got {
                buf.filled_mut()
                    .copy_within(start + space..start + got, start);
                buf.set_filled(start + got - space);
                this.skip = None;
                return Poll::Ready(Ok(()));
            }
            // Only whitespace: forget it and read again (until the socket has nothing).
            buf.set_filled(start);
        }
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// The socket option of connections dealer opens (see `connect`), for a connection
/// opened elsewhere (the benches' reference relay): no Nagle delay (XMPP is
/// request/response at login).
pub fn tune(s: &TcpStream) {
    // Connections dealer opens (to backends, to peers) are short-haul: no Nagle delay.
    // Dead peers show as resets or failed writes; keepalive is for the accepted side.
    let _ = s.set_nodelay(true);
}

/// Open a connection on which dealer speaks first (a stream header follows at once),
/// with `tune`'s options set before the handshake. Quick ACKs are off for the
/// handshake: the kernel then does not answer the server's SYN-ACK with an ACK of its
/// own but lets it ride on the stream header (HAProxy's `tcp-smart-connect`), one
/// packet less for both ends. The kernel turns quick ACKs back on by itself as the
/// connection goes on (tcp(7)), so later traffic is acknowledged as usual.
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    let _ = sock.set_nodelay(true);
    let _ = socket2::SockRef::from(&sock).set_tcp_quickack(false);
    sock.connect(addr).await
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
/// be a TLS ClientHello that a TLS acceptor must see. The outer error is the
/// connection's, the inner one the header's.
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
        let start = buf.len();
        buf.resize(start + proxy_protocol::next_read(&buf), 0);
        tcp.read_exact(&mut buf[start..]).await?;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The handshake's last ACK rides on the first bytes dealer writes: until then the
    /// server holds only a half-open connection (SYN-RECV), which `accept` does not
    /// return. With quick ACKs on, the kernel would ACK the SYN-ACK at once.
    #[tokio::test]
    async fn a_connection_dealer_opens_acknowledges_the_handshake_with_its_first_bytes() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // The kernel sends a delayed ACK after 200 ms: a connection accepted sooner
        // was acknowledged at once; one accepted later says nothing (a busy machine
        // stalled this thread), so that attempt is made again.
        for _ in 0..5 {
            let start = Instant::now();
            let mut c = super::connect(l.local_addr().unwrap()).await.unwrap();
            assert!(c.nodelay().unwrap());
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(50), l.accept()).await {
                drop(r);
                assert!(
                    start.elapsed() >= Duration::from_millis(190),
                    "the handshake was acknowledged before any data"
                );
                continue;
            }
            c.write_all(b"<stream:stream>").await.unwrap();
            let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), l.accept())
                .await
                .expect("the first bytes complete the handshake")
                .unwrap();
            let mut got = [0u8; 15];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"<stream:stream>");
            return;
        }
        panic!("five attempts stalled past the kernel's delayed ACK");
    }
}
