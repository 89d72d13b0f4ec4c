//! The backend every proxy forwards to: a minimal XMPP server for `example.com`, run as
//! a child process of the bench (the same executable, `DEALER_E2E_SINK=<ports>`), so
//! its descriptors and CPU are its own. It offers SASL PLAIN only (no TLS), answers
//! `<success/>` to any PLAIN `<auth/>`, handles the stream restart, resource bind and
//! session, and echoes each `<message/>` to its sender with `from` and `to` swapped.
//! Stanzas are cut by the crate's own framer; everything one read brings in is answered
//! with one write. It listens on `ports` loopback ports (one per proxy, so no two
//! proxies share a four-tuple space), prints them on one line, and exits when its
//! stdin closes (the bench ended, however it ended).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use dealer::xml::{Frame, FrameLimits, Framer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const ENV: &str = "DEALER_E2E_SINK";
const DOMAIN: &str = "example.com";

const FEATURES_PREAUTH: &[u8] =
    b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
    <mechanism>PLAIN</mechanism></mechanisms></stream:features>";
const FEATURES_AUTHED: &[u8] = b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
    <session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session></stream:features>";
const SUCCESS: &[u8] = b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>";
const CLOSE: &[u8] = b"</stream:stream>";

static STREAM_IDS: AtomicU64 = AtomicU64::new(1);

/// Run the sink until stdin closes; never returns.
pub fn main(ports: usize) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let mut line = String::new();
        for _ in 0..ports {
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("binding a sink port");
            let port = l.local_addr().expect("a bound address").port();
            line.push_str(&format!("{port} "));
            tokio::spawn(accept(l));
        }
        println!("{}", line.trim_end());
        std::io::stdout().flush().expect("stdout");
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await
        .expect("the stdin watcher");
    });
    std::process::exit(0)
}

async fn accept(l: TcpListener) {
    loop {
        match l.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(async move {
                    if let Err(e) = serve(tcp).await {
                        eprintln!("sink: {e}");
                    }
                });
            }
            Err(e) => {
                // Out of descriptors or a transient error: wait, never die.
                eprintln!("sink: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    PreAuth,
    Authed,
}

/// One connection: a health probe from dealer, or a client through a proxy.
async fn serve(mut tcp: TcpStream) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut framer = Framer::new(FrameLimits::default());
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::new();
    let mut phase = Phase::PreAuth;
    let mut user = String::from("anonymous");
    let mut jid = String::new();
    loop {
        let mut start = 0;
        let mut closing = false;
        while !closing {
            let frame = match framer.parse(&buf[start..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    out.extend_from_slice(
                        b"<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
                    );
                    out.extend_from_slice(CLOSE);
                    tcp.write_all(&out).await?;
                    return Err(std::io::Error::other(format!("client XML: {e}")));
                }
            };
            let len = frame.len();
            let el = &buf[start..start + len];
            start += len;
            match frame {
                Frame::Header { header, .. } => {
                    let id = STREAM_IDS.fetch_add(1, Ordering::Relaxed);
                    out.extend_from_slice(
                        format!(
                            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                             xmlns:stream='http://etherx.jabber.org/streams' id='s{id}' \
                             from='{DOMAIN}' version='1.0'>"
                        )
                        .as_bytes(),
                    );
                    if header.to.as_deref() != Some(DOMAIN) {
                        out.extend_from_slice(
                            b"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
                        );
                        out.extend_from_slice(CLOSE);
                        closing = true;
                        continue;
                    }
                    out.extend_from_slice(match phase {
                        Phase::PreAuth => FEATURES_PREAUTH,
                        Phase::Authed => FEATURES_AUTHED,
                    });
                }
                Frame::Whitespace { .. } => {}
                Frame::Close { .. } => {
                    out.extend_from_slice(CLOSE);
                    closing = true;
                }
                Frame::Element { .. } => match phase {
                    Phase::PreAuth
                        if el.starts_with(b"<auth") && attr(el, b"mechanism") == Some(b"PLAIN") =>
                    {
                        if let Some(u) = plain_authcid(el) {
                            user = u;
                        }
                        out.extend_from_slice(SUCCESS);
                        phase = Phase::Authed;
                        // The client restarts the stream after <success/>.
                        framer = Framer::new(FrameLimits::default());
                    }
                    Phase::PreAuth => {
                        out.extend_from_slice(
                            b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-mechanism/></failure>",
                        );
                    }
                    Phase::Authed if el.starts_with(b"<message") => {
                        echo(el, &jid, &mut out);
                    }
                    Phase::Authed if el.starts_with(b"<iq") => {
                        let id =
                            String::from_utf8_lossy(attr(el, b"id").unwrap_or(b"")).into_owned();
                        if find(el, b"urn:ietf:params:xml:ns:xmpp-bind").is_some() {
                            let resource = between(el, b"<resource>", b"</resource>")
                                .map(|r| String::from_utf8_lossy(r).into_owned())
                                .unwrap_or_else(|| {
                                    format!("r{}", STREAM_IDS.fetch_add(1, Ordering::Relaxed))
                                });
                            jid = format!("{user}@{DOMAIN}/{resource}");
                            out.extend_from_slice(
                                format!(
                                    "<iq type='result' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                                     <jid>{jid}</jid></bind></iq>"
                                )
                                .as_bytes(),
                            );
                        } else if find(el, b"urn:ietf:params:xml:ns:xmpp-session").is_some() {
                            out.extend_from_slice(
                                format!("<iq type='result' id='{id}'/>").as_bytes(),
                            );
                        } else {
                            out.extend_from_slice(
                                format!(
                                    "<iq type='error' id='{id}'><error type='cancel'><service-unavailable \
                                     xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
                                )
                                .as_bytes(),
                            );
                        }
                    }
                    // Presence and anything else: swallowed.
                    Phase::Authed => {}
                },
            }
        }
        if !out.is_empty() {
            tcp.write_all(&out).await?;
            out.clear();
        }
        if closing {
            tcp.shutdown().await?;
            return Ok(());
        }
        buf.drain(..start);
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(16 * 1024);
        }
        if tcp.read_buf(&mut buf).await? == 0 {
            // The peer went away without closing the stream (an idle session dropped).
            return Ok(());
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn between<'a>(hay: &'a [u8], open: &[u8], close: &[u8]) -> Option<&'a [u8]> {
    let s = find(hay, open)? + open.len();
    let e = s + find(&hay[s..], close)?;
    Some(&hay[s..e])
}

/// The authcid of a PLAIN `<auth/>` (`authzid NUL authcid NUL password`, base64).
fn plain_authcid(el: &[u8]) -> Option<String> {
    let gt = el.iter().position(|&b| b == b'>')?;
    let text = between(&el[gt..], b">", b"<")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim_ascii())
        .ok()?;
    let user = raw.split(|&b| b == 0).nth(1)?;
    Some(String::from_utf8_lossy(user).into_owned())
}

/// One attribute of a start tag: name, raw value, quote character.
struct Attr<'a> {
    name: &'a [u8],
    value: &'a [u8],
    quote: u8,
}

/// The attributes of `el`'s start tag and the index where the tag's `>` or `/>`
/// starts; `None` if the tag is malformed.
fn start_tag(el: &[u8]) -> Option<(Vec<Attr<'_>>, usize)> {
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let mut i = 1;
    while i < el.len() && !space(el[i]) && el[i] != b'>' && el[i] != b'/' {
        i += 1;
    }
    let mut attrs = Vec::new();
    loop {
        while i < el.len() && space(el[i]) {
            i += 1;
        }
        if matches!(el.get(i)?, b'>' | b'/') {
            return Some((attrs, i));
        }
        let name_start = i;
        while i < el.len() && el[i] != b'=' && !space(el[i]) {
            i += 1;
        }
        let name = &el[name_start..i];
        while i < el.len() && space(el[i]) {
            i += 1;
        }
        if *el.get(i)? != b'=' {
            return None;
        }
        i += 1;
        while i < el.len() && space(el[i]) {
            i += 1;
        }
        let quote = *el.get(i)?;
        if quote != b'\'' && quote != b'"' {
            return None;
        }
        i += 1;
        let value_start = i;
        while *el.get(i)? != quote {
            i += 1;
        }
        attrs.push(Attr {
            name,
            value: &el[value_start..i],
            quote,
        });
        i += 1;
    }
}

fn attr<'a>(el: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let (attrs, _) = start_tag(el)?;
    attrs.into_iter().find(|a| a.name == name).map(|a| a.value)
}

/// Append the echo of `<message/>` `el`: the same bytes with the values of `from` and
/// `to` swapped (a missing `from` is the sender's bound JID; a missing `to`, the
/// domain). A malformed start tag is dropped.
fn echo(el: &[u8], jid: &str, out: &mut Vec<u8>) {
    let Some((attrs, end)) = start_tag(el) else {
        return;
    };
    let get = |n: &[u8]| attrs.iter().find(|a| a.name == n);
    let (to, from) = (get(b"to"), get(b"from"));
    let new_to: (&[u8], u8) = from.map_or((jid.as_bytes(), b'\''), |a| (a.value, a.quote));
    let new_from: (&[u8], u8) = to.map_or((DOMAIN.as_bytes(), b'\''), |a| (a.value, a.quote));
    let put = |out: &mut Vec<u8>, name: &[u8], (value, quote): (&[u8], u8)| {
        out.push(b' ');
        out.extend_from_slice(name);
        out.push(b'=');
        out.push(quote);
        out.extend_from_slice(value);
        out.push(quote);
    };
    out.extend_from_slice(b"<message");
    for a in &attrs {
        match a.name {
            b"to" => put(out, b"to", new_to),
            b"from" => put(out, b"from", new_from),
            _ => put(out, a.name, (a.value, a.quote)),
        }
    }
    // A missing attribute has no slot to be written in: add it.
    if from.is_none() {
        put(out, b"from", new_from);
    }
    if to.is_none() {
        put(out, b"to", new_to);
    }
    out.extend_from_slice(&el[end..]);
}
