//! The WebSocket front (RFC 7395): what happens on a `listen.websocket` connection
//! before it is an XMPP stream — the PROXY header when expected, the per-source
//! limit, TLS (ALPN `http/1.1`, the public domain's certificate), and the HTTP/1.1
//! upgrade (hyper) on the listener's path with `Sec-WebSocket-Protocol: xmpp`, an
//! allowed `Origin`, and `/.well-known/host-meta` (XEP-0156) answered on the way. The
//! upgraded socket becomes a `Conn::Ws` (`conn`), and the session goes on as any c2s
//! session: same routing, same modes, same relays.

pub mod conn;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::c2s::{Client, Context, SessionError};
use crate::config::WsListener;
use crate::listener::SourceSlot;
use crate::metrics::{Cause, DropReason, Limit, Side};
use crate::net::Conn;
use crate::stream::XmlStream;
use crate::xml::FrameLimits;

pub use conn::WsConn;

/// PROXY header, per-source limit, TLS and the HTTP upgrade: the client's stream is a
/// WebSocket afterwards. A connection that only asked for host-meta ends here
/// (`Done`).
pub async fn preamble(c: &mut Client, ctx: &Arc<Context>) -> Result<SourceSlot, SessionError> {
    if c.listener.proxy_protocol {
        match c.stream.read_proxy_header().await? {
            Ok(crate::proxy_protocol::ProxyInfo::Tcp {
                source,
                destination,
            }) => {
                c.peer = source;
                c.local = destination;
                tracing::Span::current().record("client.addr", tracing::field::display(source));
            }
            Ok(crate::proxy_protocol::ProxyInfo::Local) => {
                tracing::Span::current().record("client.addr", tracing::field::display(c.peer));
            }
            // No XMPP stream to report on yet, and HTTP has not begun: close.
            Err(e) => return Err(SessionError::Gone(format!("expected a PROXY header: {e}"))),
        }
    }
    let snap = ctx.snapshot.load_full();
    let ws = snap
        .config
        .listen
        .websocket
        .iter()
        .find(|w| w.listener.addr == c.listener.addr)
        .cloned()
        .unwrap_or_else(|| WsListener {
            listener: c.listener,
            tls: false,
            path: crate::config::WEBSOCKET_PATH.to_owned(),
            origins: Vec::new(),
            host_meta: None,
        });
    let max = snap.config.limits.max_connections_per_source;
    let limits = FrameLimits::from_config(&snap.config.limits);
    drop(snap);
    let Some(slot) = ctx.conn_limits.admit(c.peer.ip(), max) else {
        // An HTTP refusal would cost the handshake this limit saves: close.
        ctx.metrics.limit(Limit::ConnectionsPerSource);
        return Err(SessionError::Dropped(
            DropReason::ConnectionsPerSource,
            format!("too many connections from {}", c.peer.ip()),
        ));
    };
    if ws.tls {
        c.stream
            .tls_server_direct(ctx.server_tls.websocket.clone())
            .await?;
    }
    let placeholder = XmlStream::new(Conn::Gone, limits);
    let (conn, _) = std::mem::replace(&mut c.stream, placeholder).into_parts();
    let socket = upgrade(conn, &ws, limits).await?;
    c.stream = XmlStream::new(Conn::Ws(Box::new(WsConn::new(socket, limits))), limits);
    Ok(slot)
}

type Upgraded = tokio_tungstenite::WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Serve HTTP on `conn` until a WebSocket upgrade on the listener's path succeeds.
async fn upgrade(
    conn: Conn,
    ws: &WsListener,
    limits: FrameLimits,
) -> Result<Upgraded, SessionError> {
    let pending: Arc<Mutex<Option<hyper::upgrade::OnUpgrade>>> = Arc::new(Mutex::new(None));
    let (path, origins, host_meta) = (ws.path.clone(), ws.origins.clone(), ws.host_meta.clone());
    let slot = pending.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let answer = answer(&mut req, &path, &origins, host_meta.as_deref());
        if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(hyper::upgrade::on(&mut req));
        }
        async move { Ok::<_, Infallible>(answer) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(conn), svc)
        .with_upgrades()
        .await;
    let on_upgrade = pending.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(on_upgrade) = on_upgrade else {
        // Plain HTTP (host-meta, a refused upgrade) and the client left.
        if let Err(e) = served {
            tracing::debug!(error = %e, "websocket listener: http connection ended");
        }
        return Err(SessionError::Done(Side::Client, Cause::Closed));
    };
    let upgraded = on_upgrade
        .await
        .map_err(|e| SessionError::Gone(format!("websocket upgrade: {e}")))?;
    // One message holds one stanza: the stanza limit bounds both, with room for the
    // namespace declarations a client repeats on every message.
    let max = limits.max_stanza_bytes + 1024;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    Ok(tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        Some(config),
    )
    .await)
}

/// The HTTP answer: 101 for a proper XMPP upgrade on the path, host-meta, or a refusal.
fn answer(
    req: &mut Request<Incoming>,
    path: &str,
    origins: &[String],
    host_meta: Option<&str>,
) -> Response<Full<Bytes>> {
    let uri_path = req.uri().path().to_owned();
    if let Some(url) = host_meta {
        match uri_path.as_str() {
            "/.well-known/host-meta" => {
                return text(
                    StatusCode::OK,
                    "application/xrd+xml",
                    format!(
                        "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  <Link rel='urn:xmpp:alt-connections:websocket' href='{}'/>\n</XRD>\n",
                        crate::xml::escape::attr(url)
                    ),
                );
            }
            "/.well-known/host-meta.json" => {
                return text(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({"links": [{"rel": "urn:xmpp:alt-connections:websocket", "href": url}]})
                        .to_string(),
                );
            }
            _ => {}
        }
    }
    if uri_path != path {
        return text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    }
    let h = req.headers();
    let has = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or_default()
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return text(
            StatusCode::UPGRADE_REQUIRED,
            "text/plain",
            "a WebSocket upgrade (RFC 7395) is expected here\n".into(),
        );
    }
    if !has(header::SEC_WEBSOCKET_PROTOCOL, "xmpp") {
        return text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "Sec-WebSocket-Protocol must offer xmpp (RFC 7395)\n".into(),
        );
    }
    if !origins.is_empty() {
        let origin = h
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or_default();
        if !origins.iter().any(|o| o == origin) {
            return text(
                StatusCode::FORBIDDEN,
                "text/plain",
                "this origin may not connect\n".into(),
            );
        }
    }
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
        return text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "Sec-WebSocket-Key missing\n".into(),
        );
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    hs.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("xmpp"),
    );
    if let Ok(v) = HeaderValue::from_str(&accept) {
        hs.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
