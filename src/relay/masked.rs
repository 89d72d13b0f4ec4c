//! The stanza-aware relay of `domains: masked`: both directions run through the one
//! framer, and each frame is rewritten by `crate::masking` before it is passed on —
//! client → backend unmasks the user's own JID and the bare public domain, backend →
//! client masks every JID at the backend's internal domain. Because dealer still
//! parses here, it can end a session between stanzas with a stream error. Writes to
//! the client go through one lock, so the two directions never interleave inside a
//! stanza.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Counters, RelayError, Totals};
use crate::config::Normalise;
use crate::masking::{Rewriter, Rule};
use crate::metrics::{Cause, Side};
use crate::net::Conn;
use crate::xml::{Frame, FrameLimits, Framer, StreamError, XmlError};

/// Who is masked as whom in one session.
#[derive(Debug, Clone)]
pub struct Masking {
    pub public: String,
    pub internal: String,
    /// The user's normalised localpart.
    pub own_local: String,
    /// How it was normalised.
    pub normalise: Normalise,
    /// Service domains, which no subdomain of `internal` is masked onto.
    pub services: Vec<crate::config::Service>,
}

/// Where each stream stands at hand-over.
#[derive(Debug, Clone)]
pub enum Start {
    /// After SASL success: both sides open a new stream first.
    NewStreams,
    /// After XEP-0078: the streams go on, inside headers with these qualified names
    /// (which their closing tags must repeat).
    InStream {
        client: crate::xml::stream_header::Text,
        backend: crate::xml::stream_header::Text,
    },
}

/// Reads start at `READ` bytes, so an idle session holds little, and double up to
/// `READ_MAX` while the peer keeps filling them, so a busy one pays few syscalls
/// (and, on loopback, few wake-ups of the reader: 128 KiB took 8% less CPU a
/// stanza than 64 KiB, 256 KiB another 7%; 512 KiB no less). A quiet session
/// drops what it grew (below).
const READ: usize = 4096;
const READ_MAX: usize = 256 * 1024;
/// After one side closed its stream cleanly, how long the other has to close its own.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long a stream error dealer writes to the client may take.
const ERROR_WRITE: Duration = Duration::from_secs(1);

pub async fn relay(
    (client, client_pending): (Conn, BytesMut),
    (backend, backend_pending): (Conn, BytesMut),
    m: Masking,
    start: Start,
    limits: FrameLimits,
    counters: Counters,
    stop: CancellationToken,
) -> Result<Totals, RelayError> {
    let (client_r, client_w) = tokio::io::split(client);
    let (backend_r, backend_w) = tokio::io::split(backend);
    let client_w = Arc::new(Mutex::new(client_w));
    let (client_framer, backend_framer) = match &start {
        Start::NewStreams => (Framer::new(limits), Framer::new(limits)),
        Start::InStream { client, backend } => (
            Framer::in_stream(limits, client.clone()),
            Framer::in_stream(limits, backend.clone()),
        ),
    };
    let up_rule = Rule::Unmask {
        public: &m.public,
        internal: &m.internal,
        own_local: &m.own_local,
        normalise: m.normalise,
    };
    let down_rule = Rule::Mask {
        internal: &m.internal,
        public: &m.public,
        services: &m.services,
    };
    let up = direction(
        client_r,
        client_pending,
        client_framer,
        up_rule,
        Out::Backend(backend_w),
        &client_w,
        &counters.client_to_backend,
        Side::Client,
        &stop,
    );
    let down = direction(
        backend_r,
        backend_pending,
        backend_framer,
        down_rule,
        Out::Client(client_w.clone()),
        &client_w,
        &counters.backend_to_client,
        Side::Backend,
        &stop,
    );
    tokio::pin!(up, down);
    // The backend → client direction tells the client about a stop between stanzas;
    // this is the backstop for a client too slow to take even that.
    let stopped = async {
        stop.cancelled().await;
        tokio::time::sleep(2 * ERROR_WRITE).await;
    };
    tokio::select! {
        // An error on either side ends the session: returning drops both halves of
        // both connections, which closes them.
        r = &mut up => {
            let a = r?;
            let b = finish(down, Side::Backend, &stop).await?;
            Ok(Totals { client_to_backend: a, backend_to_client: b, closed_by: Side::Client })
        }
        r = &mut down => {
            let b = r?;
            let a = finish(up, Side::Client, &stop).await?;
            Ok(Totals { client_to_backend: a, backend_to_client: b, closed_by: Side::Backend })
        }
        _ = stopped => Err(RelayError::stopped()),
    }
}

/// The other direction, after one closed cleanly: it gets a while to close too.
async fn finish(
    other: impl Future<Output = Result<u64, RelayError>>,
    other_side: Side,
    stop: &CancellationToken,
) -> Result<u64, RelayError> {
    tokio::select! {
        r = tokio::time::timeout(CLOSE_GRACE, other) => r.map_err(|_| RelayError {
            side: other_side,
            cause: Cause::Timeout,
            error: io::Error::new(io::ErrorKind::TimedOut, "one side closed its stream; the other did not"),
        })?,
        _ = stop.cancelled() => Err(RelayError::stopped()),
    }
}

enum Out {
    Backend(WriteHalf<Conn>),
    Client(Arc<Mutex<WriteHalf<Conn>>>),
}

impl Out {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Out::Backend(w) => {
                w.write_all(bytes).await?;
                w.flush().await
            }
            Out::Client(w) => {
                let mut w = w.lock().await;
                w.write_all(bytes).await?;
                w.flush().await
            }
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Out::Backend(w) => w.shutdown().await,
            Out::Client(w) => w.lock().await.shutdown().await,
        };
    }
}

/// Write a stream error to the client, between stanzas (the writer lock), and close.
async fn tell_client(client_w: &Mutex<WriteHalf<Conn>>, cond: StreamError) {
    let _ = tokio::time::timeout(ERROR_WRITE, async {
        let mut w = client_w.lock().await;
        let _ = w.write_all(cond.to_xml(None, None).as_bytes()).await;
        let _ = w.shutdown().await;
    })
    .await;
}

/// Output gathered from the frames of one read before a single write.
const BATCH: usize = 256 * 1024;
/// A batch this small is kept however quiet the session.
const BATCH_KEEP: usize = 8 * 1024;

/// Why a pass over the buffered bytes stopped.
enum Ended {
    /// The rest is an incomplete frame.
    NeedRead,
    /// The batch is full; complete frames may be left behind.
    BatchFull,
    /// The stream's close was among the frames.
    Closed,
    /// The stream went wrong after the frames.
    Failed(XmlError),
}

/// The complete frames at the front of `buf`, each rewritten into `batch`, until
/// the buffer runs out of them, the batch is full, the stream closes or goes
/// wrong; how many bytes they took and why it stopped. A plain function over a
/// slice, apart from the async relay around it, so the per-stanza loop compiles as
/// tightly as it does in memory.
fn frames(
    framer: &mut Framer,
    rewriter: &mut Rewriter<'_>,
    buf: &[u8],
    batch: &mut Vec<u8>,
) -> (usize, Ended) {
    let mut used = 0;
    loop {
        let rest = &buf[used..];
        let frame = match framer.parse_with(rest, rewriter) {
            Ok(Some(f)) => f,
            Ok(None) => return (used, Ended::NeedRead),
            Err(e) => return (used, Ended::Failed(e)),
        };
        let len = frame.len();
        match frame {
            // One pass: the framer showed the rewriter every value as it read it.
            Frame::Header { .. } | Frame::Element { .. } => rewriter.emit(&rest[..len], batch),
            Frame::Whitespace { .. } | Frame::Close { .. } => {
                rewriter.discard();
                batch.extend_from_slice(&rest[..len]);
            }
        }
        used += len;
        if matches!(frame, Frame::Close { .. }) {
            return (used, Ended::Closed);
        }
        if batch.len() >= BATCH {
            return (used, Ended::BatchFull);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn direction<R: AsyncRead + Unpin>(
    mut src: R,
    mut buf: BytesMut,
    mut framer: Framer,
    rule: Rule<'_>,
    mut out: Out,
    client_w: &Mutex<WriteHalf<Conn>>,
    counter: &prometheus::IntCounter,
    side: Side,
    stop: &CancellationToken,
) -> Result<u64, RelayError> {
    let other = if side == Side::Client {
        Side::Backend
    } else {
        Side::Client
    };
    let mut total = 0u64;
    let mut rewriter = Rewriter::new(rule);
    let mut batch: Vec<u8> = Vec::new();
    let mut read_size = READ;
    loop {
        // Every complete frame in the buffer, rewritten into one batch and written
        // with one call: the per-stanza cost is parsing, not syscalls.
        let (used, ended) = frames(&mut framer, &mut rewriter, &buf, &mut batch);
        bytes::Buf::advance(&mut buf, used);
        if !batch.is_empty() {
            out.write(&batch)
                .await
                .map_err(|e| RelayError::gone(other, e))?;
            total += batch.len() as u64;
            counter.inc_by(batch.len() as u64);
            batch.clear();
        }
        match ended {
            Ended::Failed(e) => {
                debug!(error = %e, side = side.label(), "masked relay: bad stream");
                // dealer parses here, so it can tell the client why, between stanzas.
                let cond = if side == Side::Client {
                    e.condition()
                } else {
                    StreamError::InternalServerError
                };
                tell_client(client_w, cond).await;
                return Err(RelayError {
                    side,
                    cause: Cause::Protocol,
                    error: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
                });
            }
            Ended::Closed => {
                out.shutdown().await;
                return Ok(total);
            }
            // Complete frames may be left behind: take them first.
            Ended::BatchFull => {}
            Ended::NeedRead => {
                if buf.capacity() - buf.len() < read_size / 4 {
                    buf.reserve(read_size);
                }
                let room = buf.capacity() - buf.len();
                let n = tokio::select! {
                    r = src.read_buf(&mut buf) => r.map_err(|e| RelayError::gone(side, e))?,
                    _ = stop.cancelled() => {
                        // Only one direction speaks for the session: the one that
                        // writes to the client, so the error lands between stanzas.
                        if side == Side::Backend {
                            tell_client(client_w, StreamError::SystemShutdown).await;
                        } else {
                            std::future::pending::<()>().await;
                        }
                        return Err(RelayError::stopped());
                    }
                };
                if n == 0 {
                    out.shutdown().await;
                    return Ok(total);
                }
                read_size = if n == room {
                    (read_size * 2).min(READ_MAX)
                } else if n < read_size / 4 {
                    READ
                } else {
                    read_size
                };
            }
        }
        // Let a quiet session's large buffers go: the read buffer once it is
        // drained, the (empty) batch once reads are small again.
        if buf.is_empty() && buf.capacity() > 2 * read_size {
            buf = BytesMut::new();
        }
        if batch.capacity() > 2 * read_size.max(BATCH_KEEP) {
            batch = Vec::new();
        }
    }
}
