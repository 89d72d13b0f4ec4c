//! The reference relay: dealer's own byte relay (`dealer::relay::run`) from a
//! connection's first byte, with no XMPP in front of it — what a plaintext login would
//! cost dealer if its XMPP work (pre-auth stream, routing, warm streams, watching
//! authentication) were free. Like dealer it runs one single-threaded tokio runtime per
//! CPU, each accepting on its own duplicate of one listening socket; like HAProxy it
//! connects to the backend when a client connects. It is this executable run again as a
//! child (`DEALER_E2E_PUMP=<listen>,<backend>`) and exits when its stdin closes.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use dealer::metrics::Metrics;
use dealer::net::Conn;
use tokio::net::{TcpListener, TcpStream};

pub const ENV: &str = "DEALER_E2E_PUMP";

/// Run the pump described by `spec` (`listen,backend`) until stdin closes; never
/// returns.
pub fn main(spec: &str) -> ! {
    let (listen, backend) = spec
        .split_once(',')
        .and_then(|(l, b)| Some((l.parse::<SocketAddr>().ok()?, b.parse::<SocketAddr>().ok()?)))
        .expect("DEALER_E2E_PUMP is <listen>,<backend>");
    // Set up as dealer's listeners are (`app::bind`): accepted sockets inherit the
    // options, so the pump spends no system call on them that dealer does not.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    sock.set_reuse_address(true).expect("SO_REUSEADDR");
    dealer::net::tune_socket(&socket2::SockRef::from(&sock));
    sock.bind(&listen.into()).expect("binding the pump's port");
    sock.listen(1024).expect("listening");
    sock.set_nonblocking(true).expect("a non-blocking listener");
    let listener: std::net::TcpListener = sock.into();
    let metrics = Arc::new(Metrics::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for _ in 0..threads {
        let l = listener.try_clone().expect("a duplicate listener");
        let metrics = metrics.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(async move {
                let l = TcpListener::from_std(l).expect("a tokio listener");
                loop {
                    let Ok((client, _)) = l.accept().await else {
                        continue;
                    };
                    tokio::spawn(pump(client, backend, metrics.clone()));
                }
            })
        });
    }
    // The bench closes the pipe when it ends, however it ends.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    std::process::exit(0)
}

async fn pump(client: TcpStream, backend: SocketAddr, metrics: Arc<Metrics>) {
    let Ok(server) = TcpStream::connect(backend).await else {
        return;
    };
    dealer::net::tune(&server);
    let _ = dealer::relay::run(
        Conn::Plain(client),
        BytesMut::new(),
        Conn::Plain(server),
        BytesMut::new(),
        metrics,
    )
    .await;
}
