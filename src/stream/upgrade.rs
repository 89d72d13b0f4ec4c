//! TLS upgrades of an XML stream: Direct TLS on an accepted connection, and
//! STARTTLS (RFC 6120 §5.4) at every site where dealer upgrades a stream: as the
//! server (a client or a federated peer asked) and as the client (dealer asks a backend
//! or a remote server). One rule for the bytes around the upgrade, everywhere:
//!
//! - XML whitespace between `<starttls/>` (or `<proceed/>`) and the first TLS byte is
//!   dropped, whether it was read with the element or arrives later in a segment of
//!   its own (RFC 6120 allows none, but go-sendxmpp sends a newline and Prosody
//!   accepts it);
//! - any other byte already read before the handshake is refused: it would otherwise
//!   be taken as if it had come through TLS (STARTTLS command injection).

use std::sync::Arc;

use super::{OpenError, StreamIoError, XmlStream};
use crate::net::{Conn, TlsTcp};
use crate::xml::{NS_TLS, StreamHeader};

#[derive(Debug, thiserror::Error)]
pub enum StartTlsError {
    /// Bytes other than whitespace were sent before the TLS handshake.
    #[error("data after <starttls/> before the TLS handshake")]
    Pipelined,
    #[error("STARTTLS on a connection that is already TLS")]
    NotPlain,
    /// The peer answered `<starttls/>` with something other than `<proceed/>`.
    #[error("<{0}/> in answer to <starttls/>")]
    Refused(String),
    #[error("{0}")]
    Stream(#[from] StreamIoError),
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("tls handshake: {0}")]
    Handshake(#[source] std::io::Error),
}

impl From<std::io::Error> for StartTlsError {
    fn from(e: std::io::Error) -> Self {
        StartTlsError::Stream(StreamIoError::Io(e))
    }
}

const PROCEED: &[u8] = b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
const STARTTLS: &[u8] = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";

impl XmlStream {
    /// dealer as the server: the peer's `<starttls/>` was read and consumed. Answer
    /// `<proceed/>` and run the TLS handshake; the peer then opens a new stream.
    pub async fn starttls_server(
        &mut self,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<(), StartTlsError> {
        if self.conn.is_tls() {
            return Err(StartTlsError::NotPlain);
        }
        self.send(PROCEED).await?;
        let tcp = self.take_plain_after_negotiation()?;
        let tls = tokio_rustls::TlsAcceptor::from(config)
            .accept(TlsTcp::after_starttls(tcp))
            .await
            .map_err(StartTlsError::Handshake)?;
        self.conn = Conn::Tls(Box::new(tls.into()));
        self.restart();
        Ok(())
    }

    /// dealer as the client, on a stream whose features offered STARTTLS: send
    /// `<starttls/>`, expect `<proceed/>`, run the handshake as `name`. The caller
    /// opens a new stream afterwards.
    pub async fn starttls_client(
        &mut self,
        header: &StreamHeader,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<(), StartTlsError> {
        if self.conn.is_tls() {
            return Err(StartTlsError::NotPlain);
        }
        self.send(STARTTLS).await?;
        let (e, len) = self.next_element(header).await?;
        self.consume(len);
        if !e.is("proceed", NS_TLS) {
            return Err(StartTlsError::Refused(e.name));
        }
        let tcp = self.take_plain_after_negotiation()?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, TlsTcp::after_starttls(tcp))
            .await
            .map_err(StartTlsError::Handshake)?;
        self.conn = Conn::Tls(Box::new(tls.into()));
        self.restart();
        Ok(())
    }

    /// Direct TLS (XEP-0368) on an accepted connection: the handshake before any XML.
    pub async fn tls_server_direct(
        &mut self,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<(), StartTlsError> {
        if !self.buf.is_empty() {
            return Err(StartTlsError::Pipelined);
        }
        let tcp = match self.take_conn() {
            Conn::Plain(tcp) => tcp,
            other => {
                self.conn = other;
                return Err(StartTlsError::NotPlain);
            }
        };
        let tls = tokio_rustls::TlsAcceptor::from(config)
            .accept(TlsTcp::direct(tcp))
            .await
            .map_err(StartTlsError::Handshake)?;
        self.conn = Conn::Tls(Box::new(tls.into()));
        Ok(())
    }

    /// The plain TCP stream, once the bytes read past the negotiation are known to be
    /// whitespace only (they are dropped).
    fn take_plain_after_negotiation(&mut self) -> Result<tokio::net::TcpStream, StartTlsError> {
        if !crate::xml::framer::is_ws(&self.buf) {
            return Err(StartTlsError::Pipelined);
        }
        self.buf.clear();
        match self.take_conn() {
            Conn::Plain(tcp) => Ok(tcp),
            other => {
                self.conn = other;
                Err(StartTlsError::NotPlain)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::StartTlsError;
    use crate::net::{Conn, TlsTcp};
    use crate::stream::XmlStream;
    use crate::xml::{FrameLimits, NS_CLIENT};

    fn server_config() -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(dir.join("example.com.crt"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("example.com.key")).unwrap();
        Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
        )
    }

    /// A fake server for dealer's client side: answers the stream header, then
    /// `<starttls/>` with `<proceed/>` followed by `after` (and `later`, in a segment
    /// of its own), then runs TLS and writes `ok` through it.
    async fn client_side(after: &'static [u8], later: &'static [u8]) -> Result<(), StartTlsError> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains("version='1.0'>") {
                let n = tcp.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            tcp.write_all(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='1' version='1.0'>").await.unwrap();
            while !String::from_utf8_lossy(&got).contains("<starttls") {
                let n = tcp.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            let mut answer = b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".to_vec();
            answer.extend_from_slice(after);
            tcp.write_all(&answer).await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            let _ = tcp.write_all(later).await;
            if let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(server_config())
                .accept(tcp)
                .await
            {
                let _ = tls.write_all(b"ok").await;
                let _ = tls.flush().await;
            }
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut s = XmlStream::new(Conn::Plain(tcp), FrameLimits::default());
        let header = s
            .open(
                b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>",
                NS_CLIENT,
            )
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("example.com").unwrap();
        let r = s
            .starttls_client(&header, crate::tls::backend_client_config(), name)
            .await;
        if r.is_ok() {
            let mut ok = [0u8; 2];
            s.conn.read_exact(&mut ok).await.unwrap();
            assert_eq!(&ok, b"ok");
        }
        drop(s);
        server.await.unwrap();
        r
    }

    #[tokio::test]
    async fn client_side_tolerates_whitespace_after_proceed() {
        client_side(b"\n", b"").await.unwrap();
        client_side(b"", b" \r\n").await.unwrap();
        client_side(b"\r\n", b"\t").await.unwrap();
    }

    #[tokio::test]
    async fn client_side_refuses_other_bytes_after_proceed() {
        let e = client_side(b"<iq/>", b"").await.unwrap_err();
        assert!(matches!(e, StartTlsError::Pipelined), "{e}");
    }

    /// Whitespace before the first TLS byte is dropped across segments; the first
    /// other byte and everything after it pass unchanged (whitespace included).
    #[tokio::test]
    async fn leading_whitespace_is_dropped_in_any_segment() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            for part in [&b"\n"[..], b" \r\n", b"\t\x16\x03 \n", b"rest"] {
                c.write_all(part).await.unwrap();
                c.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        let (tcp, _) = l.accept().await.unwrap();
        let mut t = TlsTcp::after_starttls(tcp);
        let mut got = Vec::new();
        t.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, b"\x16\x03 \nrest");
    }

    #[tokio::test]
    async fn direct_tls_keeps_every_byte() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b" \n\x16").await.unwrap();
        });
        let (tcp, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        TlsTcp::direct(tcp).read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, b" \n\x16");
    }

    #[tokio::test]
    async fn endless_whitespace_is_refused() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let _ = c.write_all(&[b' '; 4096]).await;
        });
        let (tcp, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        let e = TlsTcp::after_starttls(tcp)
            .read_to_end(&mut got)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        writer.await.unwrap();
    }
}
