//! An XML stream over a connection: the bytes read so far, the framer that cuts them
//! into frames, and helpers to write. Every phase that reads XML (c2s pre-auth, the
//! backend leg during authentication, health probes, s2s) goes through this, so the
//! buffered bytes move with the stream from phase to phase and are never lost.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::Conn;
use crate::xml::{Frame, FrameLimits, Framer, XmlError};

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
    pub conn: Conn,
    /// Bytes read and not yet consumed; frames are cut from its front.
    pub buf: BytesMut,
    pub framer: Framer,
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

    /// Move the connection out (for a TLS upgrade); put the upgraded one back with
    /// `self.conn = …`.
    pub fn take_conn(&mut self) -> Conn {
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

    /// Release the buffer's memory once it is empty (before a long idle relay).
    pub fn shrink(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}
