//! The start tag of a top-level element, read without building a tree: its name,
//! namespace and the addressing attributes (`to`, `from`, `type`, `id`). This is all
//! s2s routing needs per stanza; the rest of the element is copied as bytes, and
//! only the start tag is read (by the framer's `read_start_tag`).

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
