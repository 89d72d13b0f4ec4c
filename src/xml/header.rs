//! The stream header (`<stream:stream …>`, RFC 6120 §4.7): what a peer's header says,
//! and the header dealer writes back.

use quick_xml::events::BytesStart;

use super::escape::attr as esc;
use super::{NS_STREAMS, XmlError};

/// A peer's stream header. Namespace declarations are kept so that top-level elements
/// resolve their prefixes the way the header declared them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// The qualified name as written (`stream:stream`); `</…>` must repeat it.
    pub qname: String,
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    /// `(major, minor)`; `None` for a pre-XMPP-1.0 stream.
    pub version: Option<(u32, u32)>,
    pub lang: Option<String>,
    /// `xmlns` on the header: the content namespace (`jabber:client`, `jabber:server`).
    pub default_ns: Option<String>,
    /// `xmlns:prefix` declarations, in order.
    pub prefixes: Vec<(String, String)>,
}

impl StreamHeader {
    pub(crate) fn from_start(e: &BytesStart<'_>) -> Result<StreamHeader, XmlError> {
        let qname = e.name().as_ref().to_owned();
        let mut h = StreamHeader {
            qname,
            ..StreamHeader::default()
        };
        for a in e.attributes().with_checks(true) {
            let a = a.map_err(|e| XmlError::NotWellFormed(format!("header attribute: {e}")))?;
            let key: &str = a.key.as_ref();
            let value = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| XmlError::NotWellFormed(format!("header attribute `{key}`: {e}")))?
                .into_owned();
            match key {
                "to" => h.to = Some(value),
                "from" => h.from = Some(value),
                "id" => h.id = Some(value),
                "version" => h.version = Some(parse_version(&value)?),
                "xml:lang" => h.lang = Some(value),
                "xmlns" => h.default_ns = Some(value),
                k => {
                    if let Some(p) = k.strip_prefix("xmlns:") {
                        h.prefixes.push((p.to_owned(), value));
                    }
                }
            }
        }
        Ok(h)
    }

    /// The namespace the header's own name is in; must be the streams namespace.
    pub fn element_ns(&self) -> Option<&str> {
        match self.qname.split_once(':') {
            Some((p, _)) => self.prefix_ns(p),
            None => self.default_ns.as_deref(),
        }
    }

    pub fn local_name(&self) -> &str {
        self.qname.rsplit(':').next().unwrap_or(&self.qname)
    }

    pub fn is_stream(&self) -> bool {
        self.local_name() == "stream" && self.element_ns() == Some(NS_STREAMS)
    }

    pub fn prefix_ns(&self, prefix: &str) -> Option<&str> {
        self.prefixes
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, ns)| ns.as_str())
    }
}

fn parse_version(v: &str) -> Result<(u32, u32), XmlError> {
    let bad = || XmlError::NotWellFormed(format!("version `{v}` is not MAJOR.MINOR"));
    let (a, b) = v.split_once('.').ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

/// The header dealer sends: `stream:` prefix, `ns` as content namespace.
pub fn write(ns: &str, from: &str, to: Option<&str>, id: &str, version: bool) -> String {
    let mut s = String::with_capacity(256);
    s.push_str("<?xml version='1.0'?><stream:stream xmlns='");
    s.push_str(&esc(ns));
    s.push_str("' xmlns:stream='http://etherx.jabber.org/streams'");
    if ns == super::NS_SERVER {
        s.push_str(" xmlns:db='jabber:server:dialback'");
    }
    s.push_str(" from='");
    s.push_str(&esc(from));
    s.push('\'');
    if let Some(to) = to {
        s.push_str(" to='");
        s.push_str(&esc(to));
        s.push('\'');
    }
    s.push_str(" id='");
    s.push_str(&esc(id));
    s.push('\'');
    if version {
        s.push_str(" version='1.0'");
    }
    s.push_str(" xml:lang='en'>");
    s
}
