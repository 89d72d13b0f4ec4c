//! An XML stream over a connection: the bytes read so far, the framer that cuts them
//! into frames, and helpers to write. Every phase that reads XML (c2s pre-auth, the
//! backend leg during authentication, health probes, s2s) goes through this, so the
//! buffered bytes move with the stream from phase to phase and are never lost.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::Conn;
use crate::xml::{Frame, FrameLimits, Framer, XmlError};

pub mod upgrade;

pub use upgrade::StartTlsError;

/// Read granularity; small on purpose: pre-auth frames are small, and an idle
/// session should not pin a large buffer.
const READ_CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StreamIoError {
    #[error("connection closed")]
    Eof,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Xml(#[from] XmlError),
}

pub struct XmlStream {
    conn: Conn,
    /// Bytes read and not yet consumed; frames are cut from its front.
    buf: BytesMut,
    framer: Framer,
}

impl XmlStream {
    pub fn new(conn: Conn, limits: FrameLimits) -> XmlStream {
        XmlStream::with_buf(conn, limits, BytesMut::new())
    }

    /// Take over bytes an earlier phase already read (e.g. after a PROXY header).
    pub fn with_buf(conn: Conn, limits: FrameLimits, buf: BytesMut) -> XmlStream {
        XmlStream {
            conn,
            buf,
            framer: Framer::new(limits),
        }
    }

    /// The bytes read and not yet consumed: a frame `next_frame` returned is their
    /// first `len` bytes.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// The connection and the bytes read from it that no phase consumed, for a relay
    /// that takes over.
    pub fn into_parts(self) -> (Conn, BytesMut) {
        (self.conn, self.buf)
    }

    /// Write `data` and flush, without a deadline (the caller has one).
    pub async fn write_flushed(&mut self, data: &[u8]) -> io::Result<()> {
        self.conn.write_all(data).await?;
        // TLS keeps the tail of a record buffered until flushed.
        self.conn.flush().await
    }

    /// Read a PROXY protocol header from the connection, exactly, before any other
    /// byte was read (what follows may be a TLS ClientHello). The outer error is the
    /// connection's, the inner one the header's.
    pub async fn read_proxy_header(
        &mut self,
    ) -> io::Result<Result<crate::proxy_protocol::ProxyInfo, crate::proxy_protocol::ProxyError>>
    {
        match &mut self.conn {
            Conn::Plain(tcp) if self.buf.is_empty() => crate::net::read_proxy_header(tcp).await,
            _ => Err(io::Error::other("a PROXY header comes first, on plain TCP")),
        }
    }

    /// The next frame, reading as needed. The caller looks at `self.buf[..len]` and
    /// then calls `consume(len)`.
    pub async fn next_frame(&mut self) -> Result<Frame, StreamIoError> {
        loop {
            if let Some(f) = self.framer.parse(&self.buf)? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    /// Like `next_frame`, but answers `None` — reading nothing further — once the
    /// buffered bytes begin a new stream: an XML declaration or a `<qname` stream
    /// header, which a client pipelines behind its authentication to restart at
    /// once. Those bytes stay in the buffer for whoever reads the new stream.
    pub async fn next_frame_before_restart(
        &mut self,
        qname: &str,
    ) -> Result<Option<Frame>, StreamIoError> {
        loop {
            let rest = &self.buf[self
                .buf
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count()..];
            let header = |s: &[u8]| -> bool {
                s.len() > qname.len()
                    && s[0] == b'<'
                    && &s[1..=qname.len()] == qname.as_bytes()
                    && matches!(
                        s[qname.len() + 1],
                        b' ' | b'\t' | b'\r' | b'\n' | b'>' | b'/'
                    )
            };
            if rest.starts_with(b"<?xml") || header(rest) {
                return Ok(None);
            }
            // A start that may still turn into one of those: wait for more.
            let undecided = !rest.is_empty()
                && (b"<?xml".starts_with(rest)
                    || (rest[0] == b'<'
                        && rest.len() <= qname.len() + 1
                        && qname.as_bytes().starts_with(&rest[1..])));
            if !undecided && let Some(f) = self.framer.parse(&self.buf)? {
                return Ok(Some(f));
            }
            self.fill().await?;
        }
    }

    /// Read once more into the buffer.
    pub async fn fill(&mut self) -> Result<(), StreamIoError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let n = self.conn.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(StreamIoError::Eof);
        }
        Ok(())
    }

    pub fn consume(&mut self, len: usize) {
        self.buf.advance(len);
    }

    /// Consume after overwriting the bytes: for elements that carried credentials.
    pub fn consume_zeroed(&mut self, len: usize) {
        zeroize::Zeroize::zeroize(&mut self.buf[..len]);
        self.buf.advance(len);
    }

    /// Move the connection out (for a TLS upgrade, which puts the upgraded one back).
    fn take_conn(&mut self) -> Conn {
        std::mem::replace(&mut self.conn, Conn::Gone)
    }

    /// A new stream on the same connection (after STARTTLS or SASL success).
    pub fn restart(&mut self) {
        self.framer = Framer::new(*self.framer.limits());
    }

    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.conn.write_all(data).await?;
        self.conn.flush().await
    }
}

/// What went wrong while opening a stream to a peer or reading its next element.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Io(#[from] StreamIoError),
    #[error("peer sent {0}")]
    Protocol(String),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(StreamIoError::Io(e))
    }
}

impl XmlStream {
    /// Start a new stream: send `header` (our complete start tag, and whatever is to go
    /// out in the same write) and read the peer's, which must be a stream whose content
    /// namespace is `ns`.
    pub async fn open(
        &mut self,
        header: &[u8],
        ns: &str,
    ) -> Result<crate::xml::StreamHeader, OpenError> {
        self.restart();
        self.send(header).await?;
        // The framer yields a header or an error before anything else.
        let h = match self.next_frame().await? {
            Frame::Header { len, header } => {
                self.consume(len);
                header
            }
            other => {
                return Err(OpenError::Protocol(format!(
                    "{other:?} before a stream header"
                )));
            }
        };
        if !h.is_stream() || h.default_ns.as_deref() != Some(ns) {
            return Err(OpenError::Protocol(format!(
                "a header that is not a {ns} stream"
            )));
        }
        Ok(h)
    }

    /// The next element (whitespace skipped), parsed in `header`'s scope; the caller
    /// consumes `len` bytes. A stream close or a second header is a protocol error.
    pub async fn next_element(
        &mut self,
        header: &crate::xml::StreamHeader,
    ) -> Result<(crate::xml::element::Element, usize), OpenError> {
        use crate::xml::element::{Element, Scope};
        let len = self.next_element_len().await?;
        let e = Element::parse(&self.buf[..len], &Scope::from_header(header))
            .map_err(StreamIoError::Xml)?;
        Ok((e, len))
    }

    /// The length of the next element at the front of the buffer (whitespace before
    /// it consumed), unparsed, for a caller that may not need its tree.
    pub async fn next_element_len(&mut self) -> Result<usize, OpenError> {
        loop {
            match self.next_frame().await? {
                Frame::Whitespace { len } => self.consume(len),
                Frame::Element { len } => return Ok(len),
                Frame::Close { .. } => return Err(OpenError::Protocol("stream close".into())),
                Frame::Header { .. } => return Err(OpenError::Protocol("a second header".into())),
            }
        }
    }
}

/// The condition of a `<stream:error/>` element, for logs.
pub fn stream_error_condition(e: &crate::xml::element::Element) -> String {
    e.elements()
        .next()
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

impl XmlStream {
    /// Write `bytes` and close the connection, giving up after a second (a peer that
    /// does not read must not hold a task).
    pub async fn close_with(&mut self, bytes: &[u8]) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            let _ = self.send(bytes).await;
            let _ = self.conn.shutdown().await;
        })
        .await;
    }

    /// End the stream with a stream error, opening it first with `our_header` when
    /// dealer has not sent its header yet (RFC 6120 §4.9.1.2), and count it.
    pub async fn stream_error(
        &mut self,
        metrics: &crate::metrics::Metrics,
        our_header: Option<String>,
        cond: crate::xml::StreamError,
        content: Option<&str>,
        text: Option<&str>,
    ) {
        metrics.stream_error(cond);
        let mut out = our_header.unwrap_or_default();
        out.push_str(&cond.to_xml(content, text));
        self.close_with(out.as_bytes()).await;
    }
}

/// A fresh, unpredictable stream id: a counter hashed with a per-process random key
/// (one `getrandom` per process, not per stream).
pub fn new_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static KEY: OnceLock<(u64, u64)> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (a, b) = *KEY.get_or_init(|| {
        let mut k = [0u8; 16];
        // The OS generator does not fail on Linux once booted.
        let _ = getrandom::fill(&mut k);
        (
            u64::from_le_bytes(k[..8].try_into().unwrap_or_default()),
            u64::from_le_bytes(k[8..].try_into().unwrap_or_default()),
        )
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes();
    let hi = xxhash_rust::xxh3::xxh3_64_with_seed(&n, a);
    let lo = xxhash_rust::xxh3::xxh3_64_with_seed(&n, b);
    // Hex by hand into one exact allocation: `format!` would grow its buffer twice,
    // and this runs for every stream.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(24);
    for shift in (0..16).rev() {
        id.push(char::from(HEX[((hi >> (shift * 4)) & 0xf) as usize]));
    }
    for shift in (0..8).rev() {
        id.push(char::from(HEX[((lo >> (shift * 4)) & 0xf) as usize]));
    }
    id
}
