//! Relay with at least one TLS leg: bytes are decrypted and re-encrypted, so they are
//! copied through a buffer. Buffers come from a pool and are held only from a read
//! that returned data until that data is written, so an idle session holds none.
//! Both directions are driven by one poll function over the two connections (no
//! split locks), like tokio's `copy_bidirectional`.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Counters, FirstClose, RelayError, Totals};
use crate::metrics::Side;
use crate::net::Conn;

/// One TLS record's worth of plaintext.
const BUF_BYTES: usize = 16 * 1024;
const POOL_MAX: usize = 256;

static POOL: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

fn take_buf() -> Box<[u8]> {
    POOL.lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .unwrap_or_else(|| vec![0u8; BUF_BYTES].into_boxed_slice())
}

fn put_buf(b: Box<[u8]>) {
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() < POOL_MAX {
        pool.push(b);
    }
}

#[derive(Default)]
struct Dir {
    buf: Option<Box<[u8]>>,
    pos: usize,
    end: usize,
    eof: bool,
    done: bool,
    total: u64,
}

impl Dir {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        mut src: Pin<&mut Conn>,
        mut dst: Pin<&mut Conn>,
        counter: &prometheus::IntCounter,
    ) -> Poll<Result<(), (End, io::Error)>> {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if self.pos < self.end {
                // Write what is buffered before reading more.
                let buf = self.buf.as_ref().expect("data implies a buffer");
                let n = ready!(dst.as_mut().poll_write(cx, &buf[self.pos..self.end]))
                    .map_err(|e| (End::Dst, e))?;
                if n == 0 {
                    return Poll::Ready(Err((End::Dst, io::ErrorKind::WriteZero.into())));
                }
                self.pos += n;
                self.total += n as u64;
                counter.inc_by(n as u64);
                continue;
            }
            if self.eof {
                ready!(dst.as_mut().poll_flush(cx)).map_err(|e| (End::Dst, e))?;
                ready!(dst.as_mut().poll_shutdown(cx)).map_err(|e| (End::Dst, e))?;
                self.done = true;
                continue;
            }
            // Flush before waiting for more input, so TLS records leave promptly.
            if self.buf.is_some() {
                ready!(dst.as_mut().poll_flush(cx)).map_err(|e| (End::Dst, e))?;
            }
            let mut buf = self.buf.take().unwrap_or_else(take_buf);
            let mut rb = ReadBuf::new(&mut buf);
            match src.as_mut().poll_read(cx, &mut rb) {
                Poll::Pending => {
                    // Nothing to hold while idle.
                    put_buf(buf);
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    put_buf(buf);
                    return Poll::Ready(Err((End::Src, e)));
                }
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    self.pos = 0;
                    self.end = n;
                    if n == 0 {
                        self.eof = true;
                        put_buf(buf);
                    } else {
                        self.buf = Some(buf);
                    }
                }
            }
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            put_buf(b);
        }
    }
}

/// Which end of a direction failed.
enum End {
    Src,
    Dst,
}

pub async fn relay(
    mut client: Conn,
    mut backend: Conn,
    counters: &Counters,
) -> Result<Totals, RelayError> {
    let mut up = Dir::default();
    let mut down = Dir::default();
    let first = FirstClose::default();
    poll_fn(|cx| {
        let a = up.poll(
            cx,
            Pin::new(&mut client),
            Pin::new(&mut backend),
            &counters.client_to_backend,
        );
        if let Poll::Ready(Err((end, e))) = a {
            let side = match end {
                End::Src => Side::Client,
                End::Dst => Side::Backend,
            };
            return Poll::Ready(Err(RelayError::gone(side, e)));
        }
        if up.done {
            first.note(Side::Client);
        }
        let b = down.poll(
            cx,
            Pin::new(&mut backend),
            Pin::new(&mut client),
            &counters.backend_to_client,
        );
        if let Poll::Ready(Err((end, e))) = b {
            let side = match end {
                End::Src => Side::Backend,
                End::Dst => Side::Client,
            };
            return Poll::Ready(Err(RelayError::gone(side, e)));
        }
        if down.done {
            first.note(Side::Backend);
        }
        if up.done && down.done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await?;
    Ok(Totals {
        client_to_backend: up.total,
        backend_to_client: down.total,
        closed_by: first.side(),
    })
}
