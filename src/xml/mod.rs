//! XML for XMPP streams, read by one reader: the incremental framer every stream
//! reader uses (`framer`, over the tokenizer `scan`), whose visitors also read what
//! needs more than framing — the stream header (`stream_header`), the start tag of a stanza
//! (`start_tag`), a small owned element tree for the few pre-authentication elements
//! dealer must understand (`element`), JID rewriting (`crate::masking`). Also stream
//! errors (`error`), escaping for what dealer writes and unescaping for what it reads
//! (`escape`), and a byte search for short values (`find`).

pub mod element;
pub mod error;
pub mod escape;
pub mod find;
pub mod framer;
mod lanes;
mod scan;
pub mod start_tag;
pub mod stream_header;

pub use error::{StreamError, XmlError};
pub use framer::{Frame, FrameLimits, Framer, Hints};
pub use stream_header::StreamHeader;

pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
pub const NS_CLIENT: &str = "jabber:client";
pub const NS_SERVER: &str = "jabber:server";
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const NS_STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// XEP-0388 Extensible SASL Profile.
pub const NS_SASL2: &str = "urn:xmpp:sasl:2";
/// XEP-0386 Bind 2.
pub const NS_BIND2: &str = "urn:xmpp:bind:0";
/// XEP-0484 Fast Authentication Streamlining Tokens.
pub const NS_FAST: &str = "urn:xmpp:fast:0";
/// XEP-0440 SASL Channel-Binding Type Capability.
pub const NS_SASL_CB: &str = "urn:xmpp:sasl-cb:0";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_IQ_AUTH: &str = "jabber:iq:auth";
pub const NS_IQ_AUTH_FEATURE: &str = "http://jabber.org/features/iq-auth";
pub const NS_IQ_REGISTER: &str = "jabber:iq:register";
pub const NS_REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
pub const NS_DIALBACK: &str = "jabber:server:dialback";
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";

#[cfg(test)]
mod differential;
#[cfg(test)]
mod oracle;
#[cfg(test)]
mod tests;
