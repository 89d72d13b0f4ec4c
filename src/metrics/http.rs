//! The operator's HTTP endpoint (hyper, HTTP/1.1): `/metrics` in Prometheus text
//! format, `/healthz` (the process is alive), `/readyz` (it can route clients), and
//! `/route?name=NAME` answered from the live snapshot, as `dealer route` would print
//! it. Everything else is 404. Read-only: nothing here changes dealer's state.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Metrics;
use crate::shutdown::{Lifecycle, Phase};
use crate::snapshot::Live;

/// What the endpoint reads: metrics, the live snapshot, the lifecycle.
pub struct Endpoint {
    pub metrics: Arc<Metrics>,
    pub snapshot: Live,
    pub lifecycle: Arc<Lifecycle>,
}

impl Endpoint {
    /// Whether dealer can take clients now (for `/readyz`).
    pub fn ready(&self) -> Result<(), &'static str> {
        match self.lifecycle.current() {
            Phase::Running => {}
            Phase::Draining | Phase::Stopped => return Err("shutting down"),
        }
        let snap = self.snapshot.load();
        if snap
            .all()
            .any(|s| (0..s.config.backends.len()).any(|id| s.is_up(id)))
        {
            Ok(())
        } else {
            Err("no backend is up")
        }
    }
}

/// Serve until `stop` is cancelled. The accept loop survives every accept error.
pub async fn serve(listener: TcpListener, ep: Arc<Endpoint>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            // Cancel-safe: `accept` loses nothing when the other branch wins.
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "http accept failed");
                // EMFILE and friends: give the process a moment to free descriptors.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ep = ep.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let ep = ep.clone();
                async move { Ok::<_, Infallible>(handle(&ep, req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r { debug!(client.addr = %peer, error = %e, "http connection ended") },
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn handle(ep: &Endpoint, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = text(StatusCode::OK, ep.metrics.render());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match ep.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/route" => route(ep, req.uri().query().unwrap_or("")),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn route(ep: &Endpoint, query: &str) -> Response<Full<Bytes>> {
    let mut name = None;
    let mut explain = false;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "name" => name = Some(v.into_owned()),
            "explain" => explain = v != "0" && v != "false",
            _ => {}
        }
    }
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "usage: /route?name=NAME[&explain=1]\n".into(),
        );
    };
    let snap = ep.snapshot.load();
    let mut r = match snap.route_line(&name, explain) {
        Ok(line) => text(StatusCode::OK, line),
        Err(line) => text(StatusCode::UNPROCESSABLE_ENTITY, line),
    };
    r.headers_mut()
        .insert("x-dealer-generation", HeaderValue::from(snap.generation));
    r
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
