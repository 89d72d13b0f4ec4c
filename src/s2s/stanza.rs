//! A stanza in transit between s2s streams: its bytes as received (copied through
//! unparsed) and the addressing read from its start tag. Bounces are built here: an
//! error stanza back to the sender, never for an error (RFC 6120 §8.3.1) or an iq
//! result.

use bytes::Bytes;

use crate::xml::element::Scope;
use crate::xml::escape::attr as esc;
use crate::xml::start_tag::Head;
use crate::xml::{NS_CLIENT, NS_SERVER, XmlError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Presence => "presence",
            Kind::Iq => "iq",
        }
    }
}

/// Stanzas this long are held in memory of their own, mapped from the system, rather
/// than the allocator's heap: a flood of them may fill the federation queues to their
/// bound, and such memory goes back to the system as each one leaves its queue
/// (heap memory freed in the middle of an arena stays with the process).
const OWN_MAPPING: usize = 64 * 1024;

/// A copy of `bytes` to keep while a stanza waits for its link.
pub fn hold(bytes: &[u8]) -> Bytes {
    if bytes.len() >= OWN_MAPPING
        && let Ok(mut map) = memmap2::MmapMut::map_anon(bytes.len())
    {
        map.copy_from_slice(bytes);
        if let Ok(map) = map.make_read_only() {
            return Bytes::from_owner(map);
        }
    }
    Bytes::copy_from_slice(bytes)
}

#[derive(Debug, Clone)]
pub struct Stanza {
    pub bytes: Bytes,
    pub kind: Kind,
    pub from: String,
    pub to: String,
    pub typ: Option<String>,
    pub id: Option<String>,
}

/// Stanza error conditions dealer generates (RFC 6120 §8.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    RemoteServerNotFound,
    RemoteServerTimeout,
    ServiceUnavailable,
    ItemNotFound,
    ResourceConstraint,
}

impl Condition {
    pub fn name(self) -> &'static str {
        match self {
            Condition::RemoteServerNotFound => "remote-server-not-found",
            Condition::RemoteServerTimeout => "remote-server-timeout",
            Condition::ServiceUnavailable => "service-unavailable",
            Condition::ItemNotFound => "item-not-found",
            Condition::ResourceConstraint => "resource-constraint",
        }
    }

    fn error_type(self) -> &'static str {
        match self {
            Condition::RemoteServerTimeout | Condition::ResourceConstraint => "wait",
            _ => "cancel",
        }
    }
}

impl Stanza {
    /// A stanza from a complete top-level element; `Ok(None)` when the element is not
    /// a stanza (the caller handles dialback, TLS and stream elements).
    pub fn parse(bytes: &[u8], scope: &Scope) -> Result<Option<Stanza>, XmlError> {
        let h = Head::parse(bytes, scope)?;
        if h.ns != NS_SERVER && h.ns != NS_CLIENT {
            return Ok(None);
        }
        let kind = match h.name {
            "message" => Kind::Message,
            "presence" => Kind::Presence,
            "iq" => Kind::Iq,
            _ => return Ok(None),
        };
        Ok(Some(Stanza {
            bytes: hold(bytes),
            kind,
            from: h.from.map(|c| c.into_owned()).unwrap_or_default(),
            to: h.to.map(|c| c.into_owned()).unwrap_or_default(),
            typ: h.typ.map(|c| c.into_owned()),
            id: h.id.map(|c| c.into_owned()),
        }))
    }

    /// The error reply to this stanza, from its recipient to its sender; `None` for
    /// stanzas that must not be answered with an error.
    pub fn bounce(&self, cond: Condition) -> Option<Stanza> {
        match (self.kind, self.typ.as_deref()) {
            (_, Some("error")) | (Kind::Iq, Some("result")) => return None,
            (Kind::Presence, Some("unavailable" | "unsubscribed" | "unsubscribe")) => return None,
            _ => {}
        }
        if self.from.is_empty() || self.to.is_empty() {
            return None;
        }
        let mut s = format!(
            "<{} xmlns='jabber:server' from='{}' to='{}' type='error'",
            self.kind.name(),
            esc(&self.to),
            esc(&self.from)
        );
        if let Some(id) = &self.id {
            s.push_str(" id='");
            s.push_str(&esc(id));
            s.push('\'');
        }
        s.push_str(&format!(
            "><error type='{}'><{} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></{}>",
            cond.error_type(),
            cond.name(),
            self.kind.name()
        ));
        Some(Stanza {
            bytes: Bytes::from(s),
            kind: self.kind,
            from: self.to.clone(),
            to: self.from.clone(),
            typ: Some("error".into()),
            id: self.id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope<'static> {
        Scope {
            default_ns: Some(NS_SERVER.into()),
            prefixes: Default::default(),
        }
    }

    #[test]
    fn parse_and_bounce() {
        let s = Stanza::parse(
            b"<message from='a@x.test/r' to='b@y.test' id='m1'><body>hi</body></message>",
            &scope(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.kind, s.from.as_str(), s.to.as_str()),
            (Kind::Message, "a@x.test/r", "b@y.test")
        );
        let b = s.bounce(Condition::RemoteServerNotFound).unwrap();
        assert_eq!(
            std::str::from_utf8(&b.bytes).unwrap(),
            "<message xmlns='jabber:server' from='b@y.test' to='a@x.test/r' type='error' id='m1'><error type='cancel'><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        );
        assert!(
            b.bounce(Condition::ServiceUnavailable).is_none(),
            "never bounce an error"
        );
        let r = Stanza::parse(b"<iq type='result' from='a@x' to='b@y' id='1'/>", &scope())
            .unwrap()
            .unwrap();
        assert!(r.bounce(Condition::ServiceUnavailable).is_none());
        assert!(
            Stanza::parse(b"<db:result xmlns:db='jabber:server:dialback'/>", &scope())
                .unwrap()
                .is_none()
        );
    }
}
