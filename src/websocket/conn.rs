//! An RFC 7395 WebSocket as the byte stream the rest of dealer speaks: XMPP over TCP.
//! Reading, each client message (one element) becomes bytes — `<open/>` the stream
//! header it stands for, `<close/>` the stream close, anything else as written (it
//! declares its own namespaces). Writing, the bytes dealer (or a backend, once
//! relayed) writes are cut into elements by the framer and sent one message each,
//! standing alone: a stream header becomes `<open/>`, the close `<close/>`, and an
//! element gets the declarations it inherited from the stream header
//! (`xmlns='jabber:client'`, `xmlns:stream` on `<stream:features/>` and
//! `<stream:error/>`). So pre-auth, forwarding, SASL2, early routing and the relays
//! run unchanged over WebSocket clients.
//!
//! What RFC 7395 refuses is refused here, with its answer: a message holding more or
//! less than one element gets `<not-well-formed/>` and `<close/>`, a binary frame a
//! WebSocket close 1003, an oversized message (the stanza limit) a close 1009. dealer
//! pings an idle client every `PING` and ends with `<close/>` when its session is told
//! to stop.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::{Sink, Stream};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::xml::escape::attr as esc;
use crate::xml::start_tag::Head;
use crate::xml::{Frame, FrameLimits, Framer, NS_CLIENT, NS_STREAMS, StreamHeader};

/// RFC 7395's framing namespace (`<open/>`, `<close/>`).
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
/// How often an idle client is pinged.
pub const PING: Duration = Duration::from_secs(60);

const CLOSE: &str = "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";

type Socket = WebSocketStream<TokioIo<Upgraded>>;

pub struct WsConn {
    ws: Socket,
    /// Client messages already turned into bytes, for the reader.
    incoming: BytesMut,
    /// The client sent `<close/>` or closed: the reader sees the end.
    eof: bool,
    /// Bytes dealer wrote that do not yet form a whole element.
    written: BytesMut,
    framer: Framer,
    limits: FrameLimits,
    /// The header of the stream dealer writes, whose declarations elements inherit.
    header: Option<StreamHeader>,
    /// Messages waiting for the socket to take them.
    outbox: VecDeque<Message>,
    ping: tokio::time::Interval,
    stop: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl WsConn {
    pub fn new(ws: Socket, limits: FrameLimits) -> WsConn {
        let mut ping = tokio::time::interval(PING);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        WsConn {
            ws,
            incoming: BytesMut::new(),
            eof: false,
            written: BytesMut::new(),
            framer: Framer::new(limits),
            limits,
            header: None,
            outbox: VecDeque::new(),
            ping,
            stop: None,
        }
    }

    /// End with `<close/>` when `token` is cancelled (a relayed session dealer stops:
    /// the client is told, then the stream ends in order).
    pub fn close_on(&mut self, token: CancellationToken) {
        self.stop = Some(Box::pin(token.cancelled_owned()));
    }

    /// Send what waits in the outbox, as far as the socket takes it.
    fn poll_outbox(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(m) = self.outbox.pop_front() {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Pending => {
                    self.outbox.push_front(m);
                    return Poll::Pending;
                }
            }
            Pin::new(&mut self.ws)
                .start_send(m)
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Refuse what the client sent with a stream error and `<close/>`, then end.
    fn refuse(&mut self, condition: &str, text: &str) {
        self.outbox.push_back(Message::text(format!(
            "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>{}</text></stream:error>",
            crate::xml::escape::text(text)
        )));
        self.outbox.push_back(Message::text(CLOSE));
        self.outbox.push_back(Message::Close(None));
        self.eof = true;
    }

    /// Close the WebSocket with `code` and end.
    fn close_with(&mut self, code: CloseCode, reason: &'static str) {
        self.outbox.push_back(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })));
        self.eof = true;
    }

    /// One client message as the bytes of an XML stream.
    fn take_message(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let len = match crate::xml::framer::read_element(bytes, &mut crate::xml::framer::NoVisit) {
            Ok(len) => len,
            Err(e) => return self.refuse("not-well-formed", &e.to_string()),
        };
        if !crate::xml::framer::is_ws(&bytes[len..]) {
            return self.refuse("not-well-formed", "one element a message (RFC 7395)");
        }
        let element = &bytes[..len];
        let Ok(head) = Head::parse(element, &crate::xml::element::Scope::default()) else {
            return self.refuse("not-well-formed", "unreadable element");
        };
        if head.ns == NS_FRAMING {
            match head.name {
                "open" => {
                    // The stream header `<open/>` stands for, in the client's words.
                    let mut h = String::from(
                        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'",
                    );
                    let el = crate::xml::element::Element::parse(
                        element,
                        &crate::xml::element::Scope::default(),
                    );
                    if let Ok(el) = el {
                        for (k, v) in &el.attrs {
                            if matches!(k.as_str(), "to" | "from" | "version" | "xml:lang" | "id") {
                                h.push_str(&format!(" {k}='{}'", esc(v)));
                            }
                        }
                    }
                    h.push('>');
                    self.incoming.extend_from_slice(h.as_bytes());
                }
                "close" => {
                    self.incoming.extend_from_slice(b"</stream:stream>");
                    self.eof = true;
                }
                _ => self.refuse("unsupported-stanza-type", "unknown framing element"),
            }
            return;
        }
        self.incoming.extend_from_slice(element);
    }

    /// Cut what dealer wrote into messages, each standing alone.
    fn frame_written(&mut self) -> io::Result<()> {
        loop {
            // A new stream header (a restart after SASL): a new stream to frame.
            let lead = self
                .written
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            let rest = &self.written[lead..];
            if self.header.is_some()
                && (rest.starts_with(b"<?xml") || rest.starts_with(b"<stream:stream"))
            {
                self.written.advance(lead);
                self.framer = Framer::new(self.limits);
                self.header = None;
                continue;
            }
            let frame = self
                .framer
                .parse(&self.written)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let Some(frame) = frame else { return Ok(()) };
            let len = frame.len();
            match frame {
                Frame::Header { header, .. } => {
                    let mut open =
                        String::from("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'");
                    for (k, v) in [
                        ("from", header.from.as_deref()),
                        ("to", header.to.as_deref()),
                        ("id", header.id.as_deref()),
                        ("xml:lang", header.lang.as_deref()),
                    ] {
                        if let Some(v) = v {
                            open.push_str(&format!(" {k}='{}'", esc(v)));
                        }
                    }
                    if header.version.is_some() {
                        open.push_str(" version='1.0'");
                    }
                    open.push_str("/>");
                    self.outbox.push_back(Message::text(open));
                    self.header = Some(header);
                }
                Frame::Element { .. } => {
                    let m = standing_alone(&self.written[..len], self.header.as_ref());
                    let is_close =
                        m.starts_with("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'");
                    self.outbox.push_back(Message::text(m));
                    if is_close {
                        self.outbox.push_back(Message::Close(None));
                    }
                }
                Frame::Close { .. } => {
                    self.outbox.push_back(Message::text(CLOSE));
                    self.outbox.push_back(Message::Close(None));
                }
                Frame::Whitespace { .. } => {}
            }
            self.written.advance(len);
        }
    }
}

/// An element as its own message: the namespace declarations it inherited from the
/// stream header added to its start tag.
fn standing_alone(element: &[u8], header: Option<&StreamHeader>) -> String {
    let text = String::from_utf8_lossy(element);
    let Ok(head) = Head::parse(element, &crate::xml::element::Scope::default()) else {
        return text.into_owned();
    };
    if !head.ns.is_empty() {
        return text.into_owned();
    }
    let qname_end = 1 + element[1..]
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'>' || *b == b'/')
        .unwrap_or(element.len() - 1);
    let qname = &text[1..qname_end];
    let decl = match qname.split_once(':') {
        Some((prefix, _)) => {
            let ns = header
                .and_then(|h| h.prefix_ns(prefix).map(str::to_owned))
                .unwrap_or_else(|| NS_STREAMS.to_owned());
            format!(" xmlns:{prefix}='{}'", esc(&ns))
        }
        None => {
            let ns = header
                .and_then(|h| h.default_ns.clone())
                .unwrap_or(NS_CLIENT.into());
            format!(" xmlns='{}'", esc(&ns))
        }
    };
    let mut out = String::with_capacity(text.len() + decl.len());
    out.push_str(&text[..qname_end]);
    out.push_str(&decl);
    out.push_str(&text[qname_end..]);
    out
}

impl AsyncRead for WsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.incoming.is_empty() {
                let n = this.incoming.len().min(buf.remaining());
                buf.put_slice(&this.incoming[..n]);
                this.incoming.advance(n);
                return Poll::Ready(Ok(()));
            }
            // Whatever waits to go out (pongs, refusals, pings) goes first.
            let _ = this.poll_outbox(cx)?;
            let _ = Pin::new(&mut this.ws).poll_flush(cx);
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if let Some(stop) = this.stop.as_mut()
                && stop.as_mut().poll(cx).is_ready()
            {
                this.stop = None;
                this.outbox.push_back(Message::text(CLOSE));
                this.outbox.push_back(Message::Close(None));
                this.eof = true;
                continue;
            }
            if this.ping.poll_tick(cx).is_ready() {
                this.outbox.push_back(Message::Ping(Default::default()));
                continue;
            }
            match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) | Poll::Ready(Some(Ok(Message::Close(_)))) => this.eof = true,
                Poll::Ready(Some(Ok(Message::Text(t)))) => {
                    this.ping.reset();
                    this.take_message(&t);
                }
                Poll::Ready(Some(Ok(Message::Binary(_)))) => {
                    this.close_with(CloseCode::Unsupported, "XMPP over WebSocket is text");
                }
                Poll::Ready(Some(Ok(_))) => this.ping.reset(),
                Poll::Ready(Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_)))) => {
                    this.close_with(CloseCode::Size, "message too big");
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl AsyncWrite for WsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Backpressure: take more only once what was framed before has gone out.
        std::task::ready!(this.poll_outbox(cx))?;
        this.written.extend_from_slice(buf);
        this.frame_written()?;
        let _ = this.poll_outbox(cx)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_outbox(cx))?;
        Pin::new(&mut this.ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_outbox(cx))?;
        match Pin::new(&mut this.ws).poll_close(cx) {
            Poll::Ready(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed))
            | Poll::Ready(Err(tokio_tungstenite::tungstenite::Error::AlreadyClosed)) => {
                Poll::Ready(Ok(()))
            }
            p => p.map_err(io::Error::other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_get_their_inherited_namespaces() {
        let mut h = StreamHeader {
            default_ns: Some(NS_CLIENT.into()),
            ..Default::default()
        };
        h.prefixes.push(("stream".into(), NS_STREAMS.into()));
        for (el, want) in [
            (
                "<message to='a@b'><body>hi</body></message>",
                "<message xmlns='jabber:client' to='a@b'><body>hi</body></message>",
            ),
            ("<iq/>", "<iq xmlns='jabber:client'/>"),
            (
                "<stream:features><x/></stream:features>",
                "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><x/></stream:features>",
            ),
            (
                "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
                "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
            ),
        ] {
            assert_eq!(standing_alone(el.as_bytes(), Some(&h)), want);
        }
    }
}
