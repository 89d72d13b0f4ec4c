//! Zero-copy relay for plain TCP legs: splice(2) moves bytes socket → pipe → socket
//! inside the kernel. Pipes come from a pool and are held only while a chunk is in
//! flight, so an idle session holds none. No `unsafe`: rustix wraps the syscalls.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use rustix::pipe::{PipeFlags, SpliceFlags, pipe_with, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{Counters, Totals};

/// A pipe moves at most this much per splice (the Linux default pipe size).
const PIPE_BYTES: usize = 64 * 1024;
/// Idle pipes kept for reuse; more may exist while many chunks are in flight.
pub const POOL_MAX: usize = 64;

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

fn take_pipe() -> io::Result<Pipe> {
    if let Some(p) = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop() {
        return Ok(p);
    }
    let (r, w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    Ok(Pipe { r, w })
}

/// Return an empty pipe to the pool (or close it when the pool is full).
fn put_pipe(p: Pipe) {
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if pool.len() < POOL_MAX {
        pool.push(p);
    }
}

/// Idle pipes in the pool (for tests and metrics).
pub fn pooled() -> usize {
    POOL.lock().unwrap_or_else(|p| p.into_inner()).len()
}

/// Relay both directions until both have ended; an error in either ends both.
pub async fn relay(
    client: &TcpStream,
    backend: &TcpStream,
    counters: &Counters,
) -> io::Result<Totals> {
    let up = direction(client, backend, &counters.client_to_backend);
    let down = direction(backend, client, &counters.backend_to_client);
    let (a, b) = tokio::try_join!(up, down)?;
    Ok(Totals {
        client_to_backend: a,
        backend_to_client: b,
    })
}

/// `src` → `dst` until `src` ends (then half-close `dst`); returns the bytes moved.
async fn direction(
    src: &TcpStream,
    dst: &TcpStream,
    counter: &prometheus::IntCounter,
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        src.readable().await?;
        let pipe = take_pipe()?;
        let moved = src.try_io(Interest::READABLE, || {
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
        let n = match moved {
            Ok(0) => {
                put_pipe(pipe);
                // The source finished sending: pass the half-close on.
                let _ = rustix::net::shutdown(dst, rustix::net::Shutdown::Write);
                return Ok(total);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                put_pipe(pipe);
                continue;
            }
            Err(e) => {
                put_pipe(pipe);
                return Err(e);
            }
        };
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
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
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The pipe still holds bytes: drop it rather than pool it.
                Err(e) => return Err(e),
            }
        }
        put_pipe(pipe);
        total += n as u64;
        counter.inc_by(n as u64);
    }
}
