//! The start tag of a top-level element, read without building a tree: its name,
//! namespace and the addressing attributes (`to`, `from`, `type`, `id`). This is all
//! s2s routing needs per stanza; the rest of the element is copied as bytes.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::XmlError;
use super::element::Scope;

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
        let mut r = Reader::from_reader(bytes);
        r.config_mut().trim_text(false);
        let bad = |e: &dyn std::fmt::Display| XmlError::NotWellFormed(e.to_string());
        let (start, empty) = loop {
            match r.read_event().map_err(|e| bad(&e))? {
                Event::Start(s) => break (s, false),
                Event::Empty(s) => break (s, true),
                Event::Text(_) => continue,
                _ => return Err(XmlError::NotWellFormed("expected an element".into())),
            }
        };
        // The tag borrows from `bytes`: find the name there so it outlives `start`
        // (by position, since quick-xml may have skipped a byte order mark).
        let qname_str: &str = start.name().0;
        let qname_at = qname_str.as_ptr() as usize - bytes.as_ptr() as usize;
        let skipped_bom = if bytes.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        let start_len = r.buffer_position() as usize + skipped_bom;
        let qname: &'a str = std::str::from_utf8(&bytes[qname_at..qname_at + qname_str.len()])
            .map_err(|e| bad(&e))?;
        let (prefix, name) = match qname.split_once(':') {
            Some((p, l)) => (Some(p), l),
            None => (None, qname),
        };
        let mut head = Head {
            name,
            ns: Cow::Borrowed(""),
            to: None,
            from: None,
            typ: None,
            id: None,
            start_len,
            empty,
        };
        let mut own_ns: Option<Cow<'a, str>> = None;
        for a in start.attributes() {
            let a = a.map_err(|e| bad(&e))?;
            let key = a.key.as_ref();
            let value = || -> Result<Cow<'a, str>, XmlError> {
                let v = a
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map_err(|e| bad(&e))?;
                Ok(Cow::Owned(v.into_owned()))
            };
            match key {
                "to" => head.to = Some(value()?),
                "from" => head.from = Some(value()?),
                "type" => head.typ = Some(value()?),
                "id" => head.id = Some(value()?),
                "xmlns" if prefix.is_none() => own_ns = Some(value()?),
                k if prefix.is_some_and(|p| k.strip_prefix("xmlns:") == Some(p)) => {
                    own_ns = Some(value()?)
                }
                _ => {}
            }
        }
        head.ns = match own_ns {
            Some(ns) => ns,
            None => {
                let inherited = match prefix {
                    None => scope.default_ns.as_deref(),
                    Some(p) => scope
                        .prefixes
                        .iter()
                        .rev()
                        .find(|(q, _)| q == p)
                        .map(|(_, ns)| ns.as_str()),
                };
                Cow::Owned(inherited.unwrap_or_default().to_owned())
            }
        };
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            default_ns: Some("jabber:server".into()),
            prefixes: vec![("db".into(), "jabber:server:dialback".into())],
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
}
