//! The start tag of a top-level element, read without building a tree: its name,
//! namespace and the addressing attributes (`to`, `from`, `type`, `id`). This is all
//! s2s routing needs per stanza; the rest of the element is copied as bytes, and
//! only the start tag is read (by the framer's `read_start_tag`). Also one attribute
//! and plain text content, for the client's SASL `<auth/>`, read on every login.

use std::borrow::Cow;
use std::ops::Range;

use super::XmlError;
use super::element::Scope;
use super::escape;
use super::framer::{self, Tag, Visit};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'a> {
    pub name: &'a str,
    pub ns: Cow<'a, str>,
    pub to: Option<Cow<'a, str>>,
    pub from: Option<Cow<'a, str>>,
    pub typ: Option<Cow<'a, str>>,
    pub id: Option<Cow<'a, str>>,
    /// Length of the start tag in bytes (`<…>` or `<…/>`).
    pub start_len: usize,
    /// Whether the element is written `<…/>`.
    pub empty: bool,
}

impl<'a> Head<'a> {
    /// Read the start tag of `bytes`, a complete element from the framer.
    pub fn parse(bytes: &'a [u8], scope: &Scope) -> Result<Head<'a>, XmlError> {
        let mut seen = Seen::default();
        let start_len = framer::read_start_tag(bytes, &mut seen)?;
        let value = |r: Option<Range<usize>>| -> Result<Option<Cow<'a, str>>, XmlError> {
            r.map(|r| escape::unescape_attr(str_at(bytes, r)?))
                .transpose()
        };
        let qname = str_at(bytes, seen.qname)?;
        let (prefix, name) = match qname.split_once(':') {
            Some((p, l)) => (Some(p), l),
            None => (None, qname),
        };
        let ns = match value(seen.own_ns)? {
            Some(ns) => ns,
            None => Cow::Owned(scope.resolve(prefix).unwrap_or_default().to_owned()),
        };
        Ok(Head {
            name,
            ns,
            to: value(seen.to)?,
            from: value(seen.from)?,
            typ: value(seen.typ)?,
            id: value(seen.id)?,
            start_len,
            empty: seen.empty,
        })
    }
}

/// The value of the unprefixed attribute `name` on the start tag of `bytes`, a
/// complete element from the framer; `Ok(None)` when the tag also carries a prefixed
/// attribute (other than a namespace declaration), whose prefix only a tree resolves
/// (and refuses when undeclared).
pub fn plain_attribute<'a>(
    bytes: &'a [u8],
    name: &str,
) -> Result<Option<Option<Cow<'a, str>>>, XmlError> {
    let mut one = One {
        name,
        at: None,
        prefixed: false,
    };
    framer::read_start_tag(bytes, &mut one)?;
    if one.prefixed {
        return Ok(None);
    }
    one.at
        .map(|r| escape::unescape_attr(str_at(bytes, r)?))
        .transpose()
        .map(Some)
}

/// The character data of `bytes`, whose start tag is `head`, when it is all the
/// element holds and needs no unescaping: no child, no reference, no CDATA section
/// (`None` then: read the element as a tree). An empty element's is "".
pub fn plain_text<'a>(bytes: &'a [u8], head: &Head<'_>) -> Option<&'a str> {
    if head.empty {
        return Some("");
    }
    // The framer handed out a whole element: it ends with its end tag.
    let end = bytes.windows(2).rposition(|w| w == b"</")?;
    let content = bytes.get(head.start_len..end)?;
    if content.iter().any(|&b| b == b'<' || b == b'&') {
        return None;
    }
    std::str::from_utf8(content).ok()
}

/// Where the attribute `name` stands, and whether any is prefixed, for
/// `plain_attribute`.
struct One<'n> {
    name: &'n str,
    at: Option<Range<usize>>,
    prefixed: bool,
}

impl Visit for One<'_> {
    const WANTS: bool = false;
    const TAGS: bool = true;

    fn start(&mut self, tag: &Tag<'_>) {
        for a in tag.attributes() {
            if a.key == self.name {
                self.at = Some(a.value_at..a.value_at + a.value.len());
            } else if a.key.contains(':') && !a.key.starts_with("xmlns:") {
                self.prefixed = true;
            }
        }
    }
}

/// A piece of the tag, by where it stands, borrowed from `bytes` (checked UTF-8 by
/// the framer; the check here costs little for such short strings).
fn str_at(bytes: &[u8], r: Range<usize>) -> Result<&str, XmlError> {
    std::str::from_utf8(&bytes[r]).map_err(|_| XmlError::NotWellFormed("invalid UTF-8".into()))
}

/// Where the parts of the start tag `Head` wants stand.
#[derive(Default)]
struct Seen {
    qname: Range<usize>,
    empty: bool,
    to: Option<Range<usize>>,
    from: Option<Range<usize>>,
    typ: Option<Range<usize>>,
    id: Option<Range<usize>>,
    /// The declaration of the namespace the element's own name is in, when the tag
    /// makes it.
    own_ns: Option<Range<usize>>,
}

impl Visit for Seen {
    const WANTS: bool = false;
    const TAGS: bool = true;

    fn start(&mut self, tag: &Tag<'_>) {
        let qname = tag.qname();
        self.qname = tag.at() + 1..tag.at() + 1 + qname.len();
        self.empty = tag.is_empty_element();
        let prefix = qname.split_once(':').map(|(p, _)| p);
        for a in tag.attributes() {
            let slot = match a.key {
                "to" => &mut self.to,
                "from" => &mut self.from,
                "type" => &mut self.typ,
                "id" => &mut self.id,
                "xmlns" if prefix.is_none() => &mut self.own_ns,
                k if prefix.is_some() && k.strip_prefix("xmlns:") == prefix => &mut self.own_ns,
                _ => continue,
            };
            *slot = Some(a.value_at..a.value_at + a.value.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope<'static> {
        Scope {
            default_ns: Some("jabber:server".into()),
            prefixes: vec![("db".into(), "jabber:server:dialback".into())].into(),
        }
    }

    #[test]
    fn heads() {
        let h = Head::parse(
            b"<message to='a@b' from=\"c@d/e\" type='chat' id='x&amp;1'><body>hi</body></message>",
            &scope(),
        )
        .unwrap();
        assert_eq!((h.name, &*h.ns), ("message", "jabber:server"));
        assert_eq!(h.to.as_deref(), Some("a@b"));
        assert_eq!(h.from.as_deref(), Some("c@d/e"));
        assert_eq!(h.typ.as_deref(), Some("chat"));
        assert_eq!(h.id.as_deref(), Some("x&1"));
        assert!(!h.empty);
        assert_eq!(
            h.start_len,
            "<message to='a@b' from=\"c@d/e\" type='chat' id='x&amp;1'>".len()
        );
        let d = Head::parse(
            b"<db:result from='r.test' to='example.com'>abc</db:result>",
            &scope(),
        )
        .unwrap();
        assert_eq!((d.name, &*d.ns), ("result", "jabber:server:dialback"));
        let s = Head::parse(
            b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
            &scope(),
        )
        .unwrap();
        assert_eq!(
            (s.name, &*s.ns, s.empty),
            ("starttls", "urn:ietf:params:xml:ns:xmpp-tls", true)
        );
        let p = Head::parse(b"<x:presence xmlns:x='jabber:server'/>", &scope()).unwrap();
        assert_eq!((p.name, &*p.ns), ("presence", "jabber:server"));
    }

    #[test]
    fn only_the_start_tag_is_read() {
        let cases: &[(&str, &str, Option<&str>, usize, bool)] = &[
            // (element, name, to, start_len, empty)
            (
                "<message to='a/>b'><body/></message>",
                "message",
                Some("a/>b"),
                19,
                false,
            ),
            (
                "<iq to=\"x&#64;y&amp;z\" id='1'/>",
                "iq",
                Some("x@y&z"),
                31,
                true,
            ),
            (
                "<presence\n to = 'a\tb'\n/>",
                "presence",
                Some("a b"),
                24,
                true,
            ),
            ("\n <iq/>", "iq", None, 7, true),
            // What follows the start tag is not read.
            (
                "<message to='a'><<<&bogus;",
                "message",
                Some("a"),
                16,
                false,
            ),
        ];
        for &(input, name, to, start_len, empty) in cases {
            let h = Head::parse(input.as_bytes(), &scope()).unwrap();
            assert_eq!(
                (h.name, h.to.as_deref(), h.start_len, h.empty),
                (name, to, start_len, empty),
                "{input}"
            );
        }
        // Plain text is read in place; anything else is left to the tree.
        for (input, want) in [
            ("<auth mechanism='PLAIN'>AGEAYg==</auth>", Some("AGEAYg==")),
            (
                "<a:auth xmlns:a='x'>\n dGVzdA== </a:auth >",
                Some("\n dGVzdA== "),
            ),
            ("<auth mechanism='PLAIN'/>", Some("")),
            ("<auth></auth>", Some("")),
            ("<auth>AGE&#x3D;</auth>", None),
            ("<auth>x<y/>z</auth>", None),
            ("<auth><![CDATA[AGE=]]></auth>", None),
        ] {
            let h = Head::parse(input.as_bytes(), &scope()).unwrap();
            assert_eq!(plain_text(input.as_bytes(), &h), want, "{input}");
        }
        let a = b"<a:auth xmlns:a='urn:ietf:params:xml:ns:xmpp-sasl' mechanism=\"SCRAM-SHA-1\"/>";
        let value = |b: &[u8], name| {
            plain_attribute(b, name)
                .unwrap()
                .map(|v| v.map(Cow::into_owned))
        };
        assert_eq!(value(a, "mechanism"), Some(Some("SCRAM-SHA-1".into())));
        assert_eq!(value(a, "other"), Some(None));
        assert_eq!(value(b"<auth m='&#x41;'/>", "m"), Some(Some("A".into())));
        // A prefixed attribute is left to the tree, which resolves (or refuses) it.
        assert_eq!(
            value(b"<auth mechanism='PLAIN' x:m='1'/>", "mechanism"),
            None
        );
        assert_eq!(
            value(b"<auth xml:lang='en' mechanism='PLAIN'/>", "mechanism"),
            None
        );
        // Values without references or white space to normalise are borrowed.
        let h = Head::parse(b"<message to='a@b' id='x'/>", &scope()).unwrap();
        assert!(matches!(h.to, Some(Cow::Borrowed("a@b"))));
        for bad in [
            &b"text<a/>"[..],
            b"<!-- c --><a/>",
            b"</a>",
            b"<a to='x",
            b"<a to='&xxe;'/>",
            b"<a to='1' to='2'/>",
            b"<a\xff/>",
            b"",
        ] {
            assert!(
                Head::parse(bad, &scope()).is_err(),
                "{}",
                bad.escape_ascii()
            );
        }
    }
}
