//! The leg to a backend's c2s port: connect, optionally announce the client with a
//! PROXY v2 header, open an XMPP stream to the backend's domain, STARTTLS when the
//! backend's `tls` is set, and read its features. Forwarding and health checks both
//! start here, so a health check proves exactly what a login needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

pub mod warm;

use crate::net::{Conn, tune};
use crate::stream::{StreamIoError, XmlStream, stream_error_condition};
use crate::xml::element::Element;
use crate::xml::{
    FrameLimits, NS_BIND2, NS_CLIENT, NS_FAST, NS_IQ_AUTH_FEATURE, NS_REGISTER_FEATURE, NS_SASL,
    NS_SASL_CB, NS_SASL2, NS_STREAMS, NS_TLS,
};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("stream: {0}")]
    Stream(#[from] StreamIoError),
    #[error("backend sent {0}")]
    Protocol(String),
    #[error("starttls: {0}")]
    Tls(#[from] crate::stream::StartTlsError),
}

impl From<crate::stream::OpenError> for BackendError {
    fn from(e: crate::stream::OpenError) -> Self {
        match e {
            crate::stream::OpenError::Io(e) => BackendError::Stream(e),
            crate::stream::OpenError::Protocol(p) => BackendError::Protocol(p),
        }
    }
}

impl From<std::io::Error> for BackendError {
    fn from(e: std::io::Error) -> Self {
        BackendError::Stream(StreamIoError::Io(e))
    }
}

/// What a backend's `<stream:features/>` offered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    pub mechanisms: Vec<String>,
    pub starttls: bool,
    pub iq_auth: bool,
    pub register: bool,
    /// SASL2 and what rides inline with it (XEP-0388, 0386, 0484), channel binding.
    pub sasl2: Option<Vec<String>>,
    pub bind2: bool,
    pub fast: Vec<String>,
    pub channel_binding: Vec<String>,
}

impl Features {
    pub fn parse(e: &Element) -> Features {
        let texts = |parent: &Element, ns: &str| -> Vec<String> {
            parent
                .elements()
                .filter(|m| m.is("mechanism", ns))
                .map(|m| m.text().trim().to_owned())
                .collect()
        };
        let mut f = Features::default();
        for c in e.elements() {
            match (c.ns.as_str(), c.name.as_str()) {
                (NS_TLS, "starttls") => f.starttls = true,
                (NS_SASL, "mechanisms") => f.mechanisms = texts(c, NS_SASL),
                (NS_SASL2, "authentication") => {
                    f.sasl2 = Some(texts(c, NS_SASL2));
                    if let Some(inline) = c.child("inline", NS_SASL2) {
                        f.bind2 = inline.child("bind", NS_BIND2).is_some();
                        if let Some(fast) = inline.child("fast", NS_FAST) {
                            f.fast = texts(fast, NS_FAST);
                        }
                    }
                }
                (NS_SASL_CB, "sasl-channel-binding") => {
                    f.channel_binding = c
                        .elements()
                        .filter(|b| b.is("channel-binding", NS_SASL_CB))
                        .filter_map(|b| b.attr("type").map(str::to_owned))
                        .collect();
                }
                (NS_IQ_AUTH_FEATURE, "auth") => f.iq_auth = true,
                (NS_REGISTER_FEATURE, "register") => f.register = true,
                _ => {}
            }
        }
        f
    }

    /// What routing keeps of it (the health state's offer).
    pub fn offer(&self) -> crate::routing::health::Offer {
        crate::routing::health::Offer {
            mechanisms: self.mechanisms.clone(),
            sasl2: self.sasl2.clone(),
            bind2: self.bind2,
            fast: self.fast.clone(),
            channel_binding: self.channel_binding.clone(),
        }
    }
}

/// Where and how to reach one backend.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The stream's `to`: the public domain, or the backend's own in masked mode.
    pub domain: String,
    pub tls: bool,
    /// `(client, dealer's local address)` for a PROXY v2 header.
    pub proxy: Option<(SocketAddr, SocketAddr)>,
    /// The stream header's `from`: the user, for a client routed on its own header
    /// (RFC 6120 §4.7.1), in the backend's domain.
    pub from: Option<String>,
}

/// An open, pre-authentication stream to a backend.
pub struct BackendStream {
    pub stream: XmlStream,
    pub features: Features,
    /// The content of the backend's stream header (for a relay that takes over).
    pub header: crate::xml::StreamHeader,
    /// The `<stream:features/>` element as the backend wrote it (relayed to a client
    /// routed on its header).
    pub features_raw: Vec<u8>,
}

/// Connect and open the stream, all before `deadline`.
pub async fn open(
    target: &Target,
    limits: FrameLimits,
    tls: &Arc<rustls::ClientConfig>,
    deadline: Instant,
) -> Result<BackendStream, BackendError> {
    tokio::time::timeout_at(deadline, open_inner(target, limits, tls))
        .await
        .map_err(|_| BackendError::Timeout)?
}

async fn open_inner(
    target: &Target,
    limits: FrameLimits,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<BackendStream, BackendError> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| BackendError::Connect(target.addr, e))?;
    tune(&tcp);
    let mut s = XmlStream::new(Conn::Plain(tcp), limits);
    if let Some((client, local)) = target.proxy {
        s.send(&crate::proxy_protocol::encode_v2(client, local))
            .await?;
    }
    let (mut header, mut features, mut raw) =
        restart(&mut s, &target.domain, target.from.as_deref()).await?;
    if target.tls {
        if !features.starttls {
            return Err(BackendError::Protocol(
                "no STARTTLS although `tls: true`".into(),
            ));
        }
        let name = rustls::pki_types::ServerName::try_from(target.domain.clone())
            .map_err(|_| BackendError::Protocol("backend domain is not a DNS name".into()))?;
        s.starttls_client(&header, tls.clone(), name).await?;
        (header, features, raw) = restart(&mut s, &target.domain, target.from.as_deref()).await?;
    }
    Ok(BackendStream {
        stream: s,
        features,
        header,
        features_raw: raw,
    })
}

/// Send a stream header and read the backend's header and features.
async fn restart(
    s: &mut XmlStream,
    domain: &str,
    from: Option<&str>,
) -> Result<(crate::xml::StreamHeader, Features, Vec<u8>), BackendError> {
    let from = from
        .map(|f| format!(" from='{}'", crate::xml::escape::attr(f)))
        .unwrap_or_default();
    let h = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'{from} to='{}' version='1.0'>",
        crate::xml::escape::attr(domain)
    );
    let header = s.open(&h, NS_CLIENT).await?;
    let (e, len) = s.next_element(&header).await?;
    let raw = s.buffered()[..len].to_vec();
    s.consume(len);
    if e.is("error", NS_STREAMS) {
        return Err(BackendError::Protocol(format!(
            "stream error <{}/>",
            stream_error_condition(&e)
        )));
    }
    if !e.is("features", NS_STREAMS) {
        return Err(BackendError::Protocol(format!(
            "<{}/> instead of features",
            e.name
        )));
    }
    Ok((header, Features::parse(&e), raw))
}

/// A health check: open the stream as a login would, note the features, close.
pub async fn probe(
    target: &Target,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Features, BackendError> {
    let mut b = open(
        target,
        FrameLimits::default(),
        tls,
        Instant::now() + timeout,
    )
    .await?;
    let _ = tokio::time::timeout(
        Duration::from_millis(200),
        b.stream.send(b"</stream:stream>"),
    )
    .await;
    Ok(b.features)
}
