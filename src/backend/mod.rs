//! The leg to a backend's c2s port: connect, optionally announce the client with a
//! PROXY v2 header, open an XMPP stream to the backend's domain, STARTTLS when the
//! backend's `tls` is set, and read its features. Forwarding and health checks both
//! start here, so a health check proves exactly what a login needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub mod warm;

use crate::net::Conn;
use crate::stream::{StreamIoError, XmlStream, stream_error_condition};
use crate::xml::element::{Element, Scope};
use crate::xml::stream_header::Text;
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
    /// Shared with other streams to the same backend that offered the same.
    pub features: Arc<Features>,
    /// The content of the backend's stream header (for a relay that takes over).
    pub header: crate::xml::StreamHeader,
    /// The `<stream:features/>` element as the backend wrote it (relayed to a client
    /// routed on its header).
    pub features_raw: bytes::Bytes,
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
    let tcp = crate::net::connect(target.addr)
        .await
        .map_err(|e| BackendError::Connect(target.addr, e))?;
    let mut s = XmlStream::new(Conn::Plain(tcp), limits);
    // The PROXY header goes out in the stream header's write.
    let proxy = target
        .proxy
        .map(|(client, local)| crate::proxy_protocol::encode_v2(client, local));
    let proxy = proxy.as_deref().unwrap_or_default();
    let (mut header, mut features, mut raw) =
        restart(&mut s, &target.domain, target.from.as_deref(), proxy).await?;
    if target.tls {
        if !features.starttls {
            return Err(BackendError::Protocol(
                "no STARTTLS although `tls: true`".into(),
            ));
        }
        let name = rustls::pki_types::ServerName::try_from(target.domain.clone())
            .map_err(|_| BackendError::Protocol("backend domain is not a DNS name".into()))?;
        s.starttls_client(&header, tls.clone(), name).await?;
        (header, features, raw) =
            restart(&mut s, &target.domain, target.from.as_deref(), b"").await?;
    }
    Ok(BackendStream {
        stream: s,
        features,
        header,
        features_raw: raw,
    })
}

/// Send a stream header (behind `before`, in one write) and read the backend's header
/// and features.
async fn restart(
    s: &mut XmlStream,
    domain: &str,
    from: Option<&str>,
    before: &[u8],
) -> Result<(crate::xml::StreamHeader, Arc<Features>, bytes::Bytes), BackendError> {
    // Built in one allocation: every login (or warm stream) opens a stream.
    let mut h = Vec::with_capacity(before.len() + 192);
    h.extend_from_slice(before);
    h.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'");
    if let Some(f) = from {
        h.extend_from_slice(b" from='");
        h.extend_from_slice(crate::xml::escape::attr(f).as_bytes());
        h.push(b'\'');
    }
    h.extend_from_slice(b" to='");
    h.extend_from_slice(crate::xml::escape::attr(domain).as_bytes());
    h.extend_from_slice(b"' version='1.0'>");
    let header = s.open(&h, NS_CLIENT).await?;
    let len = s.next_element_len().await?;
    if let Some((features, raw)) = seen_features(&s.buffered()[..len], &header) {
        s.consume(len);
        return Ok((header, features, raw));
    }
    let e = Element::parse(&s.buffered()[..len], &Scope::from_header(&header))
        .map_err(StreamIoError::Xml)?;
    let raw = bytes::Bytes::copy_from_slice(&s.buffered()[..len]);
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
    let features = Arc::new(Features::parse(&e));
    remember_features(&raw, &header, &features);
    Ok((header, features, raw))
}

/// How many backends' features each thread remembers.
const SEEN_FEATURES: usize = 8;

/// A features element read before, with the header scope it was read in and what it
/// offered.
struct Seen {
    raw: bytes::Bytes,
    default_ns: Option<Text>,
    prefixes: Vec<(Text, Text)>,
    features: Arc<Features>,
}

thread_local! {
    /// A backend writes the same `<stream:features/>` on every stream it opens: a
    /// thread compares the bytes with those it read last (most recent first) rather
    /// than parse them again for every login and warm stream.
    static SEEN: std::cell::RefCell<Vec<Seen>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What `raw` offered, when the same bytes were read before under the same header
/// declarations (which give its prefixes their meaning).
fn seen_features(
    raw: &[u8],
    header: &crate::xml::StreamHeader,
) -> Option<(Arc<Features>, bytes::Bytes)> {
    SEEN.with_borrow(|seen| {
        seen.iter()
            .find(|x| {
                x.raw[..] == *raw
                    && x.default_ns == header.default_ns
                    && x.prefixes == header.prefixes
            })
            .map(|x| (x.features.clone(), x.raw.clone()))
    })
}

fn remember_features(raw: &bytes::Bytes, header: &crate::xml::StreamHeader, f: &Arc<Features>) {
    SEEN.with_borrow_mut(|seen| {
        if seen.len() == SEEN_FEATURES {
            seen.pop();
        }
        seen.insert(
            0,
            Seen {
                raw: raw.clone(),
                default_ns: header.default_ns.clone(),
                prefixes: header.prefixes.clone(),
                features: f.clone(),
            },
        );
    });
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
    Ok(Arc::unwrap_or_clone(b.features))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::StreamHeader;

    fn header(prefixes: &[(&str, &str)]) -> StreamHeader {
        StreamHeader {
            qname: "stream:stream".into(),
            default_ns: Some(NS_CLIENT.into()),
            prefixes: prefixes
                .iter()
                .map(|(p, n)| (p.to_string().into(), n.to_string().into()))
                .collect(),
            ..StreamHeader::default()
        }
    }

    /// Remembered features come back only for the same bytes under the same header
    /// declarations, and a thread keeps a bounded number of them.
    #[test]
    fn features_are_reused_only_for_the_same_bytes_and_declarations() {
        let h = header(&[("stream", NS_STREAMS)]);
        let raw = bytes::Bytes::from_static(b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>");
        let f = Arc::new(Features {
            mechanisms: vec!["PLAIN".into()],
            ..Features::default()
        });
        assert!(seen_features(&raw, &h).is_none());
        remember_features(&raw, &h, &f);
        let (got, got_raw) = seen_features(&raw, &h).expect("remembered");
        assert!(Arc::ptr_eq(&got, &f) && got_raw == raw);
        // The same bytes where `stream` names another namespace mean something else.
        assert!(seen_features(&raw, &header(&[("stream", "urn:other")])).is_none());
        assert!(seen_features(&raw[..raw.len() - 1], &h).is_none());
        for i in 0..SEEN_FEATURES {
            let other = bytes::Bytes::from(format!("<stream:features n='{i}'/>"));
            remember_features(&other, &h, &f);
        }
        assert!(seen_features(&raw, &h).is_none(), "the oldest is forgotten");
        SEEN.with_borrow(|s| assert_eq!(s.len(), SEEN_FEATURES));
    }
}
