//! A small owned element tree, for the few elements dealer must understand before
//! authentication (`<auth/>`, `<iq/>` with iq:auth or iq:register, dialback). Those are
//! bounded by the framer's limits and read once per login, so a tree keeps the code
//! that reads them simple; hot paths never build one. The tree is built by a visitor
//! of the framer (`read_element`), which resolves namespaces as the tags come. Text
//! nodes are zeroed on drop, because they may carry credentials.

use std::borrow::Cow;

use zeroize::Zeroizing;

use super::XmlError;
use super::escape;
use super::framer::{self, Hints, Tag, Visit};
use super::stream_header::{StreamHeader, Text};

/// Namespace declarations in force where an element starts. Borrowed from a stream
/// header where one declares them (`from_header`), so reading an element on a stream
/// copies nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope<'a> {
    pub default_ns: Option<Cow<'a, str>>,
    pub prefixes: Cow<'a, [(Text, Text)]>,
}

/// `raw`, one whole element read on a stream whose header declared `prefixes`, made
/// readable on another stream: each of the header's prefix declarations (but
/// `stream`) the element does not make itself is added to its start tag, right after
/// the name. `None` when nothing is to add (the header declared no prefix). The copy
/// is zeroed on drop: a login element carries credentials.
pub fn with_header_prefixes(raw: &[u8], prefixes: &[(Text, Text)]) -> Option<Zeroizing<Vec<u8>>> {
    let wanted = || prefixes.iter().filter(|(p, _)| p != "stream");
    wanted().next()?;
    // The start tag's extent, quotes honoured (the framer has checked the element).
    let mut quote = None;
    let end = raw.iter().position(|&b| match quote {
        Some(q) => {
            if b == q {
                quote = None;
            }
            false
        }
        None if b == b'\'' || b == b'"' => {
            quote = Some(b);
            false
        }
        None => b == b'>',
    })?;
    let tag = &raw[..end];
    let name_end = tag
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/'))
        .unwrap_or(tag.len());
    let declares = |p: &str| {
        let needle = format!("xmlns:{p}");
        tag.windows(needle.len()).enumerate().any(|(i, w)| {
            w == needle.as_bytes()
                && matches!(
                    tag.get(i + needle.len()),
                    Some(b'=' | b' ' | b'\t' | b'\r' | b'\n')
                )
        })
    };
    let mut out = Zeroizing::new(Vec::with_capacity(raw.len() + 64));
    out.extend_from_slice(&raw[..name_end]);
    for (p, ns) in wanted().filter(|(p, _)| !declares(p)) {
        out.extend_from_slice(format!(" xmlns:{p}='{}'", escape::attr(ns)).as_bytes());
    }
    out.extend_from_slice(&raw[name_end..]);
    Some(out)
}

impl<'a> Scope<'a> {
    pub fn from_header(h: &'a StreamHeader) -> Scope<'a> {
        Scope {
            default_ns: h.default_ns.as_deref().map(Cow::Borrowed),
            prefixes: Cow::Borrowed(&h.prefixes),
        }
    }

    /// A copy that borrows nothing, for a scope held while its header may change.
    pub fn into_owned(self) -> Scope<'static> {
        Scope {
            default_ns: self.default_ns.map(|n| Cow::Owned(n.into_owned())),
            prefixes: Cow::Owned(self.prefixes.into_owned()),
        }
    }

    /// The namespace `prefix` (`None`: the default namespace) stands for.
    pub(super) fn resolve(&self, prefix: Option<&str>) -> Option<&str> {
        match prefix {
            None => self.default_ns.as_deref(),
            Some("xml") => Some("http://www.w3.org/XML/1998/namespace"),
            Some(p) => self
                .prefixes
                .iter()
                .rev()
                .find(|(q, _)| q == p)
                .map(|(_, ns)| ns.as_ref()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(Zeroizing<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Local name.
    pub name: String,
    /// Resolved namespace ("" when none is in scope).
    pub ns: String,
    /// Attributes other than namespace declarations, by qualified name, unescaped.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    /// Parse one complete element (a frame from the framer) in `scope`.
    pub fn parse(bytes: &[u8], scope: &Scope) -> Result<Element, XmlError> {
        let mut tree = Tree {
            bytes,
            outer: scope,
            decls: Vec::new(),
            open: Vec::new(),
            root: None,
            fault: None,
        };
        let read = framer::read_element(bytes, &mut tree);
        // The first fault in the order of the bytes: the tree's come before the
        // framer's, which reads on after them.
        if let Some(e) = tree.fault {
            return Err(e);
        }
        read?;
        tree.root
            .ok_or_else(|| XmlError::NotWellFormed("incomplete element".into()))
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    /// The element's own character data, concatenated (zeroed on drop).
    pub fn text(&self) -> Zeroizing<String> {
        let texts = || {
            self.children.iter().filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                Node::Element(_) => None,
            })
        };
        // Sized first: a string that grows leaves its old buffer behind unzeroed.
        let mut s = Zeroizing::new(String::with_capacity(texts().map(str::len).sum()));
        texts().for_each(|t| s.push_str(t));
        s
    }
}

/// Builds the tree as the framer shows the element's tags and text.
struct Tree<'b, 's> {
    bytes: &'b [u8],
    /// The scope the element stands in.
    outer: &'s Scope<'s>,
    /// The namespace declarations of the open elements, innermost last: the prefix
    /// (`None` for `xmlns`) and the namespace.
    decls: Vec<(Option<String>, String)>,
    /// Open elements, innermost last, each with how many `decls` were in force
    /// before it.
    open: Vec<(Element, usize)>,
    root: Option<Element>,
    /// What was wrong that the framer does not check (an undeclared prefix).
    fault: Option<XmlError>,
}

impl Tree<'_, '_> {
    fn resolve(&self, prefix: Option<&str>) -> Option<&str> {
        if prefix == Some("xml") {
            return self.outer.resolve(prefix);
        }
        match self
            .decls
            .iter()
            .rev()
            .find(|(p, _)| p.as_deref() == prefix)
        {
            Some((_, ns)) => Some(ns),
            None => self.outer.resolve(prefix),
        }
    }

    fn open(&mut self, tag: &Tag<'_>) -> Result<(), XmlError> {
        let mark = self.decls.len();
        let mut attrs = Vec::new();
        for a in tag.attributes() {
            let value = a.unescaped()?.into_owned();
            if a.key == "xmlns" {
                self.decls.push((None, value));
            } else if let Some(p) = a.key.strip_prefix("xmlns:") {
                self.decls.push((Some(p.to_owned()), value));
            } else {
                attrs.push((a.key.to_owned(), value));
            }
        }
        let qname = tag.qname();
        let (prefix, local) = match qname.split_once(':') {
            Some((p, l)) => (Some(p), l),
            None => (None, qname),
        };
        let ns = match (prefix, self.resolve(prefix)) {
            (_, Some(ns)) => ns.to_owned(),
            (None, None) => String::new(),
            (Some(p), None) => {
                return Err(XmlError::NotWellFormed(format!("undeclared prefix `{p}`")));
            }
        };
        let el = Element {
            name: local.to_owned(),
            ns,
            attrs,
            children: Vec::new(),
        };
        if tag.is_empty_element() {
            self.decls.truncate(mark);
            self.close(el);
        } else {
            self.open.push((el, mark));
        }
        Ok(())
    }

    fn close(&mut self, el: Element) {
        match self.open.last_mut() {
            Some((parent, _)) => parent.children.push(Node::Element(el)),
            None => self.root = Some(el),
        }
    }

    /// Text of the innermost open element (the framer allows none outside it).
    fn push_text(&mut self, s: &str) {
        if let Some((p, _)) = self.open.last_mut() {
            push_text(p, s);
        }
    }
}

impl Visit for Tree<'_, '_> {
    const WANTS: bool = false;
    const TAGS: bool = true;

    fn start(&mut self, tag: &Tag<'_>) {
        if self.fault.is_none()
            && let Err(e) = self.open(tag)
        {
            self.fault = Some(e);
        }
    }

    fn end(&mut self, _qname: &str, _at: usize) {
        // The framer matched the name with the open element's.
        if let Some((el, mark)) = self.open.pop() {
            self.decls.truncate(mark);
            self.close(el);
        }
    }

    fn text(&mut self, value: &[u8], _at: usize, _hints: Hints) {
        // Checked to be UTF-8 by the framer before it is shown.
        if let Ok(s) = std::str::from_utf8(value) {
            self.push_text(s);
        }
    }

    fn cdata(&mut self, value: &str, _at: usize) {
        self.push_text(value);
    }

    fn reference(&mut self, at: usize, len: usize) {
        // `&name;`, checked by the framer; a fault all the same if it were not.
        let name = std::str::from_utf8(&self.bytes[at + 1..at + len - 1]).unwrap_or_default();
        match escape::reference(name) {
            Ok(c) => self.push_text(c.encode_utf8(&mut [0; 4])),
            Err(e) => {
                self.fault.get_or_insert(e);
            }
        }
    }
}

/// Append `s` to `p`'s trailing text node, so that "a&amp;b" stays one string.
fn push_text(p: &mut Element, s: &str) {
    let Some(Node::Text(t)) = p.children.last_mut() else {
        p.children.push(Node::Text(Zeroizing::new(s.to_owned())));
        return;
    };
    if t.capacity() - t.len() < s.len() {
        // Grown by hand: a string that grows itself frees its old buffer unzeroed;
        // this one is zeroed when the old `Zeroizing` is dropped.
        let mut bigger = Zeroizing::new(String::with_capacity(
            (t.len() + s.len()).max(2 * t.capacity()),
        ));
        bigger.push_str(t);
        *t = bigger;
    }
    t.push_str(s);
}

/// Where the direct child `ns`:`local` of the element in `bytes` stands (its first
/// occurrence), from its `<` to one past its end, so a caller can leave just that
/// child out and pass the rest on byte for byte (the backend's `<starttls/>` in
/// features relayed to a client already on TLS). A child's namespace is the one it
/// declares or the element declares for its prefix.
pub fn child_range(
    bytes: &[u8],
    ns: &str,
    local: &str,
) -> Result<Option<std::ops::Range<usize>>, XmlError> {
    struct Find<'a> {
        ns: &'a str,
        local: &'a str,
        depth: usize,
        /// The element's own declarations: `(prefix or "", namespace)`.
        root: Vec<(String, String)>,
        start: Option<usize>,
        found: Option<std::ops::Range<usize>>,
    }
    impl Visit for Find<'_> {
        const WANTS: bool = false;
        const TAGS: bool = true;
        fn start(&mut self, tag: &Tag<'_>) {
            let decls = tag.attributes().filter_map(|a| {
                let prefix = if a.key == "xmlns" {
                    ""
                } else {
                    a.key.strip_prefix("xmlns:")?
                };
                Some((prefix.to_owned(), a.unescaped().ok()?.into_owned()))
            });
            if self.depth == 0 {
                self.root = decls.collect();
            } else if self.depth == 1 && self.found.is_none() && self.start.is_none() {
                let (prefix, name) = tag.qname().split_once(':').unwrap_or(("", tag.qname()));
                let own: Vec<(String, String)> = decls.collect();
                let resolved = own
                    .iter()
                    .chain(&self.root)
                    .find(|(p, _)| p == prefix)
                    .map(|(_, n)| n.as_str());
                if name == self.local && resolved == Some(self.ns) {
                    if tag.is_empty_element() {
                        self.found = Some(tag.at()..tag.end());
                    } else {
                        self.start = Some(tag.at());
                    }
                }
            }
            if !tag.is_empty_element() {
                self.depth += 1;
            }
        }
        fn end(&mut self, qname: &str, at: usize) {
            self.depth = self.depth.saturating_sub(1);
            if self.depth == 1
                && let Some(start) = self.start.take()
            {
                // `</qname>` ends at `at` + its length + 3.
                self.found = Some(start..at + qname.len() + 3);
            }
        }
    }
    let mut f = Find {
        ns,
        local,
        depth: 0,
        root: Vec::new(),
        start: None,
        found: None,
    };
    framer::read_element(bytes, &mut f)?;
    Ok(f.found)
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_prefixes_travel_with_the_element() {
        let prefixes: Vec<(Text, Text)> = vec![
            ("stream".into(), "http://etherx.jabber.org/streams".into()),
            ("sasl".into(), "urn:ietf:params:xml:ns:xmpp-sasl".into()),
        ];
        let raw = b"<sasl:auth mechanism='PLAIN'>AGEAYg==</sasl:auth>";
        let out = with_header_prefixes(raw, &prefixes).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "<sasl:auth xmlns:sasl='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</sasl:auth>"
        );
        // Declared by the element itself: not twice.
        let own = b"<sasl:auth xmlns:sasl='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='x>y'/>";
        assert_eq!(&with_header_prefixes(own, &prefixes).unwrap()[..], &own[..]);
        assert!(with_header_prefixes(raw, &prefixes[..1]).is_none());
    }

    use super::*;
    use crate::xml::{NS_DIALBACK, NS_STREAMS};

    fn scope() -> Scope<'static> {
        Scope {
            default_ns: Some("jabber:server".into()),
            prefixes: vec![
                ("stream".into(), NS_STREAMS.into()),
                ("db".into(), NS_DIALBACK.into()),
            ]
            .into(),
        }
    }

    /// `{ns}name[key=value,…](children)`, text quoted.
    fn show(e: &Element) -> String {
        let mut s = format!("{{{}}}{}", e.ns, e.name);
        if !e.attrs.is_empty() {
            let attrs: Vec<String> = e.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", attrs.join(",")));
        }
        if !e.children.is_empty() {
            let children: Vec<String> = e
                .children
                .iter()
                .map(|n| match n {
                    Node::Element(c) => show(c),
                    Node::Text(t) => format!("{:?}", t.as_str()),
                })
                .collect();
            s.push_str(&format!("({})", children.join(" ")));
        }
        s
    }

    #[test]
    fn namespaces_are_scoped_and_text_is_read_whole() {
        let cases = [
            (
                "<iq xmlns='jabber:client'><query xmlns='q'><item/></query><x/></iq>",
                "{jabber:client}iq({q}query({q}item) {jabber:client}x)",
            ),
            (
                "<p:a xmlns:p='one'><p:b xmlns:p='two'/><p:c/></p:a>",
                "{one}a({two}b {one}c)",
            ),
            ("<iq/>", "{jabber:server}iq"),
            (
                "<stream:features/>",
                "{http://etherx.jabber.org/streams}features",
            ),
            ("<a xmlns=''><b/></a>", "{}a({}b)"),
            ("<xml:x/>", "{http://www.w3.org/XML/1998/namespace}x"),
            (
                "<stream:x xmlns:stream='other'><stream:y/></stream:x>",
                "{other}x({other}y)",
            ),
            (
                "<db:result from='a' to='b'>k&amp;ey</db:result>",
                "{jabber:server:dialback}result[from=a,to=b](\"k&ey\")",
            ),
            // Declarations are not attributes; prefixed attributes keep their prefix.
            (
                "<a xmlns:p='u' p:k='1' xml:lang='en' xmlns='d'/>",
                "{d}a[p:k=1,xml:lang=en]",
            ),
            // A declaration's value is unescaped and normalised like any value.
            ("<p:a xmlns:p='u&amp;&#9;v\tw'/>", "{u&\tv w}a"),
            // Character data, CDATA and references next to each other: one node.
            (
                "<a>x<![CDATA[<y>]]>&#x41;&lt;<b/>z</a>",
                "{jabber:server}a(\"x<y>A<\" {jabber:server}b \"z\")",
            ),
            (
                "<a k='a&#9;b\tc&#10;d\r\ne' j=\"'\"/>",
                "{jabber:server}a[k=a\tb c\nd e,j=']",
            ),
            ("\n <a/>", "{jabber:server}a"),
        ];
        for (input, want) in cases {
            let e = Element::parse(input.as_bytes(), &scope());
            assert_eq!(e.as_ref().map(show), Ok(want.to_owned()), "{input}");
        }
        let e = Element::parse(b"<a>x&amp;y<b/>z</a>", &scope()).unwrap();
        assert_eq!(&*e.text(), "x&yz");
    }

    #[test]
    fn hostile_elements_are_refused() {
        use XmlError::*;
        let nwf = |r: &Result<Element, XmlError>| matches!(r, Err(NotWellFormed(_)));
        type Check = fn(&Result<Element, XmlError>) -> bool;
        let cases: Vec<(&[u8], Check)> = vec![
            (b"<nope:x/>", nwf),
            // A prefix declared on a sibling is not in scope.
            (b"<a><p:b xmlns:p='x'/><p:c/></a>", nwf),
            (b"<a><!-- c --></a>", |r| *r == Err(Restricted("comment"))),
            (b"<a><?pi x?></a>", |r| {
                *r == Err(Restricted("processing instruction"))
            }),
            (b"<!DOCTYPE a><a/>", |r| *r == Err(Restricted("DTD"))),
            (b"<a>&xxe;</a>", |r| {
                *r == Err(Restricted("entity reference"))
            }),
            (b"<a b='&xxe;'/>", |r| {
                *r == Err(Restricted("entity reference"))
            }),
            (b"<a>&#0;</a>", nwf),
            (b"<a b='&#1;'/>", nwf),
            (b"<a>& b</a>", nwf),
            (b"<a></b>", nwf),
            (b"<a><b></a></b>", nwf),
            (b"<a>", nwf),
            (b"<a b='1", nwf),
            (b"", nwf),
            (b"<a/ >", nwf),
            (b"</a>", nwf),
            (b"junk<a/>", |r| *r == Err(TextAtStreamLevel)),
            (b"<a>\x01</a>", nwf),
            (b"<a b='1' b='2'/>", nwf),
            (b"<a>\xff</a>", nwf),
            (b"<a b='<'/>", nwf),
            (b"<![CDATA[x]]>", |r| *r == Err(TextAtStreamLevel)),
        ];
        for (input, ok) in cases {
            let r = Element::parse(input, &scope());
            assert!(ok(&r), "{}: {r:?}", input.escape_ascii());
        }
    }

    #[test]
    fn text_nodes_are_zeroed_on_drop() {
        let e = Element::parse(
            b"<auth>AGFsaWNl&#x41;AHNlY3JldA==<![CDATA[x]]></auth>",
            &scope(),
        )
        .unwrap();
        let [Node::Text(t)] = &e.children[..] else {
            panic!("{e:?}")
        };
        let _: &Zeroizing<String> = t;
        assert_eq!(t.as_str(), "AGFsaWNlAAHNlY3JldA==x");
    }

    #[test]
    fn a_child_left_out() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
                Some("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
            ),
            (
                "<f><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls><x/></f>",
                Some("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"),
            ),
            (
                "<f xmlns:t='urn:ietf:params:xml:ns:xmpp-tls'><t:starttls/></f>",
                Some("<t:starttls/>"),
            ),
            ("<f><starttls xmlns='other'/></f>", None),
            (
                "<f><a><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></a></f>",
                None,
            ),
        ];
        for (xml, want) in cases {
            let got = child_range(xml.as_bytes(), crate::xml::NS_TLS, "starttls")
                .unwrap()
                .map(|r| &xml[r]);
            assert_eq!(got, *want, "{xml}");
        }
    }
}
