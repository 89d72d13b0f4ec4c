//! The stream header (`<stream:stream …>`, RFC 6120 §4.7): what a peer's header says,
//! read from the start tag the framer read, and the header dealer writes back.

use super::escape::{attr as esc, unescape_attr};
use super::{NS_STREAMS, XmlError};

/// A header value: the handful every stream carries (its name, the namespaces, the
/// streams prefix, `en`) are borrowed constants, so reading a header allocates only
/// for what differs from stream to stream (addresses, ids).
pub type Text = std::borrow::Cow<'static, str>;

/// `value` as a [`Text`], borrowed when it is one of the common constants.
pub fn text(value: std::borrow::Cow<'_, str>) -> Text {
    const COMMON: &[&str] = &[
        "stream:stream",
        "stream",
        super::NS_STREAMS,
        super::NS_CLIENT,
        super::NS_SERVER,
        "en",
        "db",
        super::NS_DIALBACK,
    ];
    match COMMON.iter().find(|c| **c == value) {
        Some(c) => Text::Borrowed(c),
        None => Text::Owned(value.into_owned()),
    }
}

/// A peer's stream header. Namespace declarations are kept so that top-level elements
/// resolve their prefixes the way the header declared them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// The qualified name as written (`stream:stream`); `</…>` must repeat it.
    pub qname: Text,
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    /// `(major, minor)`; `None` for a pre-XMPP-1.0 stream.
    pub version: Option<(u32, u32)>,
    pub lang: Option<Text>,
    /// `xmlns` on the header: the content namespace (`jabber:client`, `jabber:server`).
    pub default_ns: Option<Text>,
    /// `xmlns:prefix` declarations, in order.
    pub prefixes: Vec<(Text, Text)>,
}

impl StreamHeader {
    /// The header whose start tag the framer read: its qualified name and its
    /// attributes as written (name, escaped value), checked, none twice.
    pub(crate) fn from_attributes<'a>(
        qname: &str,
        attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<StreamHeader, XmlError> {
        let mut h = StreamHeader {
            qname: text(qname.into()),
            ..StreamHeader::default()
        };
        for (key, value) in attributes {
            let value = unescape_attr(value)?;
            match key {
                "to" => h.to = Some(value.into_owned()),
                "from" => h.from = Some(value.into_owned()),
                "id" => h.id = Some(value.into_owned()),
                "version" => h.version = Some(parse_version(&value)?),
                "xml:lang" => h.lang = Some(text(value)),
                "xmlns" => h.default_ns = Some(text(value)),
                k => {
                    if let Some(p) = k.strip_prefix("xmlns:") {
                        h.prefixes.push((text(p.into()), text(value)));
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
            .map(|(_, ns)| ns.as_ref())
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

#[cfg(test)]
mod tests {
    use crate::xml::{Frame, FrameLimits, Framer, XmlError};

    fn header(tag: &str) -> Result<super::StreamHeader, XmlError> {
        match Framer::new(FrameLimits::default()).parse(tag.as_bytes())? {
            Some(Frame::Header { header, .. }) => Ok(header),
            other => panic!("{tag}: {other:?}"),
        }
    }

    #[test]
    fn the_common_values_of_a_header_are_not_copied() {
        use std::borrow::Cow;
        let h = header(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
             xmlns:x='urn:example:x' to='example.com' version='1.0' xml:lang='en'>",
        )
        .unwrap();
        assert!(matches!(h.qname, Cow::Borrowed("stream:stream")));
        assert!(matches!(h.default_ns, Some(Cow::Borrowed("jabber:client"))));
        assert!(matches!(h.lang, Some(Cow::Borrowed("en"))));
        assert!(matches!(
            h.prefixes[0],
            (
                Cow::Borrowed("stream"),
                Cow::Borrowed(crate::xml::NS_STREAMS)
            )
        ));
        // What is not one of them is kept as written.
        assert_eq!(h.prefixes[1], ("x".into(), "urn:example:x".into()));
        assert!(matches!(h.prefixes[1].1, Cow::Owned(_)));
        let fr =
            header("<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xml:lang='fr'>")
                .unwrap();
        assert!(matches!(fr.lang, Some(Cow::Owned(ref l)) if l == "fr"));
    }

    #[test]
    fn headers_are_read_from_the_framers_tag() {
        let h = header(
            "<?xml version='1.0' encoding=\"UTF-8\" ?>\n<s:stream xmlns='jabber:server' \
             xmlns:s='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
             to='ex&#x61;mple.com' from=\"a\tb&amp;c\" id='i&#10;d' version='1.0' xml:lang='en'>",
        )
        .unwrap();
        assert_eq!(h.qname, "s:stream");
        assert!(h.is_stream());
        assert_eq!(h.local_name(), "stream");
        assert_eq!(h.to.as_deref(), Some("example.com"));
        assert_eq!(h.from.as_deref(), Some("a b&c"));
        assert_eq!(h.id.as_deref(), Some("i\nd"));
        assert_eq!(h.version, Some((1, 0)));
        assert_eq!(h.lang.as_deref(), Some("en"));
        assert_eq!(h.default_ns.as_deref(), Some("jabber:server"));
        assert_eq!(h.prefix_ns("db"), Some("jabber:server:dialback"));
        let old = header("<stream xmlns='http://etherx.jabber.org/streams'>").unwrap();
        assert!(old.is_stream() && old.version.is_none());
        assert!(!header("<stream:stream>").unwrap().is_stream());
        for bad in [
            "<stream:stream version='1'>",
            "<stream:stream version='a.b'>",
            "<?xml version='1.0'encoding='UTF-8'?><stream:stream>",
            "<?xml version?><stream:stream>",
            "<?xml version='1.0' encoding='UTF-8?><stream:stream>",
        ] {
            assert!(
                matches!(header(bad), Err(XmlError::NotWellFormed(_))),
                "{bad}"
            );
        }
        for other in [
            "<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>",
            "<?xml encoding = \"utf-16\" version='1.0'?><stream:stream>",
        ] {
            assert_eq!(header(other), Err(XmlError::UnsupportedEncoding), "{other}");
        }
    }
}
