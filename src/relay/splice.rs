//! The relay for plain TCP legs, in the manner of HAProxy's `splice-auto`: small,
//! interactive traffic (the usual XMPP stanza) is read into a pooled buffer and sent on
//! — two system calls a chunk, and a read shorter than the buffer proves the socket
//! drained, so no extra call finds out — while a read that fills the buffer switches
//! the direction to splice(2), which moves bytes socket → pipe → socket inside the
//! kernel until the burst ends. Buffers and pipes come from pools and are held only
//! while a chunk is in flight, so an idle session holds neither. No `unsafe`: rustix
//! wraps the syscalls, and a short read clears tokio's readiness (`clear_readable`)
//! so the relay does not ask a drained socket again.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{Counters, FirstClose, RelayError, Totals};
use crate::metrics::Side;

/// A pipe moves at most this much per splice (the Linux default pipe size).
const PIPE_BYTES: usize = 64 * 1024;
/// The copy buffer; a read that fills it means bulk traffic: splice from then on.
const BUF_BYTES: usize = 16 * 1024;
/// Idle pipes kept for reuse; more may exist while many bursts are in flight.
pub const POOL_MAX: usize = 64;
const BUF_POOL_MAX: usize = 256;

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

static PIPES: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());
static BUFS: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

fn take_pipe() -> io::Result<Pipe> {
    if let Some(p) = PIPES.lock().unwrap_or_else(|p| p.into_inner()).pop() {
        return Ok(p);
    }
    let (r, w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    Ok(Pipe { r, w })
}

/// Return an empty pipe to the pool (or close it when the pool is full).
fn put_pipe(p: Pipe) {
    let mut pool = PIPES.lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() < POOL_MAX {
        pool.push(p);
    }
}

fn take_buf() -> Box<[u8]> {
    BUFS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .unwrap_or_else(|| vec![0u8; BUF_BYTES].into_boxed_slice())
}

fn put_buf(b: Box<[u8]>) {
    let mut pool = BUFS.lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() < BUF_POOL_MAX {
        pool.push(b);
    }
}

/// Relay both directions until both have ended; an error in either ends both.
pub async fn relay(
    client: &TcpStream,
    backend: &TcpStream,
    counters: &Counters,
) -> Result<Totals, RelayError> {
    let first = FirstClose::default();
    let up = direction(
        (client, Side::Client),
        (backend, Side::Backend),
        &counters.client_to_backend,
        &counters.spliced,
        &first,
    );
    let down = direction(
        (backend, Side::Backend),
        (client, Side::Client),
        &counters.backend_to_client,
        &counters.spliced,
        &first,
    );
    let (a, b) = tokio::try_join!(up, down)?;
    Ok(Totals {
        client_to_backend: a,
        backend_to_client: b,
        closed_by: first.side(),
    })
}

/// Forget `s`'s read readiness without a system call: `try_io` clears readiness when
/// its closure reports `WouldBlock`, and only for the readiness event it saw, so an
/// event that arrives meanwhile is not lost.
fn clear_readable(s: &TcpStream) {
    let _ = s.try_io(Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}

/// `src` → `dst` until `src` ends (then half-close `dst`); returns the bytes moved. An
/// error names the side whose socket failed.
async fn direction(
    (src, src_side): (&TcpStream, Side),
    (dst, dst_side): (&TcpStream, Side),
    counter: &prometheus::IntCounter,
    spliced: &prometheus::IntCounter,
    first: &FirstClose,
) -> Result<u64, RelayError> {
    let on_src = |e| RelayError::gone(src_side, e);
    let on_dst = |e| RelayError::gone(dst_side, e);
    let mut total = 0u64;
    let mut bulk = false;
    loop {
        src.readable().await.map_err(on_src)?;
        let moved = if bulk {
            let Ok(pipe) = take_pipe() else {
                // Out of descriptors for a pipe: copy this chunk instead.
                bulk = false;
                continue;
            };
            let r = src.try_io(Interest::READABLE, || {
                splice(
                    src,
                    None,
                    &pipe.w,
                    None,
                    PIPE_BYTES,
                    SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
                )
                .map_err(io::Error::from)
            });
            match r {
                Ok(0) => {
                    put_pipe(pipe);
                    0
                }
                Ok(n) => {
                    drain_pipe(&pipe, n, dst).await.map_err(on_dst)?;
                    put_pipe(pipe);
                    spliced.inc_by(n as u64);
                    // A burst that thins out goes back to copying.
                    bulk = n >= BUF_BYTES;
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    put_pipe(pipe);
                    bulk = false;
                    continue;
                }
                Err(e) => {
                    put_pipe(pipe);
                    return Err(on_src(e));
                }
            }
        } else {
            let mut buf = take_buf();
            match src.try_read(&mut buf) {
                Ok(0) => {
                    put_buf(buf);
                    0
                }
                Ok(n) => {
                    if n < buf.len() {
                        // A short read: the socket is drained; wait for the next event
                        // instead of asking again.
                        clear_readable(src);
                    } else {
                        bulk = true;
                    }
                    let sent = write_all(dst, &buf[..n]).await;
                    put_buf(buf);
                    sent.map_err(on_dst)?;
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    put_buf(buf);
                    continue;
                }
                Err(e) => {
                    put_buf(buf);
                    return Err(on_src(e));
                }
            }
        };
        if moved == 0 {
            // The source finished sending: pass the half-close on. When the other
            // direction ended first, both sockets are closed as soon as this returns,
            // and the close sends that FIN: a `shutdown` would be one system call
            // more a session than HAProxy makes.
            if first.note(src_side) {
                let _ = rustix::net::shutdown(dst, rustix::net::Shutdown::Write);
            }
            return Ok(total);
        }
        total += moved as u64;
        counter.inc_by(moved as u64);
    }
}

async fn write_all(dst: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match dst.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(m) => data = &data[m..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Move `n` bytes from the pipe to `dst`. On an error the pipe still holds bytes and
/// is dropped (closed) by the caller, never pooled.
async fn drain_pipe(pipe: &Pipe, mut left: usize, dst: &TcpStream) -> io::Result<()> {
    while left > 0 {
        match dst.try_io(Interest::WRITABLE, || {
            splice(
                &pipe.r,
                None,
                dst,
                None,
                left,
                SpliceFlags::MOVE | SpliceFlags::NONBLOCK,
            )
            .map_err(io::Error::from)
        }) {
            Ok(m) => left -= m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// Small chunks go through the buffer, a bulk transfer through splice(2); every
    /// byte arrives in order either way, and half-close passes through.
    #[tokio::test]
    async fn small_and_bulk_traffic_arrive_intact() {
        let m = Metrics::new();
        let counters = Counters::new(&m, crate::metrics::RelayKind::Splice);
        let (mut client_app, client_leg) = pair().await;
        let (backend_leg, mut backend_app) = pair().await;
        let relay = relay(&client_leg, &backend_leg, &counters);
        let traffic = async {
            // Interactive: a few small stanzas.
            for i in 0..5 {
                let s = format!("<message id='{i}'/>");
                client_app.write_all(s.as_bytes()).await.unwrap();
                let mut buf = vec![0u8; s.len()];
                backend_app.read_exact(&mut buf).await.unwrap();
                assert_eq!(buf, s.as_bytes());
            }
            assert_eq!(m.relay_spliced_bytes.get(), 0, "small chunks are copied");
            // Bulk: 8 MiB in one go, backend to client.
            let bulk: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
            let expect = bulk.clone();
            let writer = async move {
                backend_app.write_all(&bulk).await.unwrap();
                backend_app.shutdown().await.unwrap();
                backend_app
            };
            let reader = async {
                let mut got = Vec::new();
                client_app.read_to_end(&mut got).await.unwrap();
                got
            };
            let (_backend_app, got) = tokio::join!(writer, reader);
            assert!(got == expect, "bulk bytes arrive intact and in order");
            client_app.shutdown().await.unwrap();
        };
        let (r, ()) = tokio::join!(relay, traffic);
        let t = r.unwrap();
        assert_eq!(t.backend_to_client, 8 << 20);
        assert!(
            m.relay_spliced_bytes.get() > 0,
            "a bulk transfer is spliced"
        );
    }
}
