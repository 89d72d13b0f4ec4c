//! Differential tests of dealer's one XML reader against quick-xml's: what the
//! framer's visitors make of an element — its events (tags, unescaped values, text
//! nodes), its tree (`Element::parse`), its head (`Head::parse`), a stream header,
//! a JID rewrite (`rewrite::rewrite`), an unescaped value — must be what quick-xml's
//! reading of the same bytes gives, over hand-picked and random elements the framer
//! accepts. The quick-xml readings here are the oracles; dealer's code uses none.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use zeroize::Zeroizing;

use super::element::{Element, Node, Scope};
use super::escape;
use super::framer::{Hints, Tag, Visit};
use super::start_tag::Head;
use super::tests::{Rng, random_element};
use super::*;
use crate::config::Normalise;
use crate::masking::{Rewriter, Rule, rewrite};

/// What a reader reports of an element, positions left out: text nodes whole
/// (character data, references and CDATA sections next to each other are one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ev {
    Start {
        qname: String,
        /// Unescaped values.
        attrs: Vec<(String, String)>,
        empty: bool,
    },
    End(String),
    Text(String),
}

fn push_text(events: &mut Vec<Ev>, s: &str) {
    if let Some(Ev::Text(t)) = events.last_mut() {
        t.push_str(s);
    } else {
        events.push(Ev::Text(s.to_owned()));
    }
}

/// A visitor that records the framer's events, and checks on the way that every
/// offset it is given points at what it is told stands there.
pub(super) struct Recorder<'i> {
    /// The whole input, of which the framer's buffer starts at `base`.
    input: &'i [u8],
    pub(super) base: usize,
    pub(super) events: Vec<Ev>,
    /// The values `attribute` was shown, for `start` to compare with its tag's.
    values: Vec<(String, String, usize)>,
}

impl<'i> Recorder<'i> {
    pub(super) fn new(input: &'i [u8]) -> Recorder<'i> {
        Recorder {
            input,
            base: 0,
            events: Vec::new(),
            values: Vec::new(),
        }
    }

    fn at(&self, at: usize, len: usize) -> &'i [u8] {
        &self.input[self.base + at..self.base + at + len]
    }
}

impl Visit for Recorder<'_> {
    const TAGS: bool = true;

    fn attribute(&mut self, key: &[u8], value: &[u8], at: usize, hints: Hints) {
        assert_eq!(self.at(at, value.len()), value);
        assert_eq!(hints.refs, value.contains(&b'&'));
        assert_eq!(hints.slash, value.contains(&b'/'));
        let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        self.values.push((s(key), s(value), at));
    }

    fn start(&mut self, tag: &Tag<'_>) {
        let qname = tag.qname();
        let written = self.at(tag.at(), tag.end() - tag.at());
        assert!(written.starts_with(format!("<{qname}").as_bytes()));
        assert!(written.ends_with(if tag.is_empty_element() { b"/>" } else { b">" }));
        let mut attrs = Vec::new();
        let values = std::mem::take(&mut self.values);
        assert_eq!(values.len(), tag.attributes().len());
        for (a, (key, value, at)) in tag.attributes().zip(values) {
            assert_eq!((a.key, a.value, a.value_at), (&*key, &*value, at));
            assert_eq!(self.at(a.key_at, a.key.len()), a.key.as_bytes());
            attrs.push((a.key.to_owned(), a.unescaped().unwrap().into_owned()));
        }
        self.events.push(Ev::Start {
            qname: qname.to_owned(),
            attrs,
            empty: tag.is_empty_element(),
        });
    }

    fn end(&mut self, qname: &str, at: usize) {
        assert!(
            self.input[self.base + at..].starts_with(format!("</{qname}").as_bytes()),
            "end tag at {at}"
        );
        self.events.push(Ev::End(qname.to_owned()));
    }

    fn text(&mut self, value: &[u8], at: usize, hints: Hints) {
        assert_eq!(self.at(at, value.len()), value);
        assert!(!hints.refs);
        assert_eq!(hints.slash, value.contains(&b'/'));
        push_text(&mut self.events, std::str::from_utf8(value).unwrap());
    }

    fn cdata(&mut self, value: &str, at: usize) {
        assert_eq!(self.at(at, value.len()), value.as_bytes());
        push_text(&mut self.events, value);
    }

    fn reference(&mut self, at: usize, len: usize) {
        let written = std::str::from_utf8(self.at(at, len)).unwrap();
        let c = escape::reference(&written[1..len - 1]).unwrap();
        push_text(&mut self.events, c.encode_utf8(&mut [0; 4]));
    }
}

/// The framer's events for `input` (a stream, from its header), fed in pieces of
/// the given sizes (cycled), up to the first error.
pub(super) fn framed_events(input: &[u8], chunks: &[usize]) -> (Vec<Ev>, Option<XmlError>) {
    let mut framer = Framer::new(FrameLimits::default());
    let mut rec = Recorder::new(input);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().copied().cycle();
    loop {
        loop {
            match framer.parse_with(&buf, &mut rec) {
                Ok(Some(f)) => {
                    buf.drain(..f.len());
                    rec.base += f.len();
                }
                Ok(None) => break,
                Err(e) => return (rec.events, Some(e)),
            }
        }
        if fed == input.len() {
            return (rec.events, None);
        }
        let n = sizes.next().unwrap_or(1).clamp(1, input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
    }
}

/// quick-xml's events for `input`, as `Ev`s.
fn quick_xml_events(input: &[u8]) -> Result<Vec<Ev>, String> {
    let mut r = Reader::from_reader(input);
    r.config_mut().trim_text(false);
    let mut events = Vec::new();
    loop {
        match r.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => events.push(quick_xml_start(&e, false)?),
            Event::Empty(e) => events.push(quick_xml_start(&e, true)?),
            Event::End(e) => events.push(Ev::End(e.name().as_ref().to_owned())),
            Event::Text(t) => push_text(&mut events, &t),
            Event::CData(c) => push_text(&mut events, &c),
            Event::GeneralRef(g) => {
                let c = match g.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c,
                    None => quick_xml::escape::resolve_predefined_entity(&g)
                        .and_then(|s| s.chars().next())
                        .ok_or("unknown entity")?,
                };
                push_text(&mut events, c.encode_utf8(&mut [0; 4]));
            }
            Event::Eof => return Ok(events),
            _ => {}
        }
    }
}

fn quick_xml_start(e: &BytesStart<'_>, empty: bool) -> Result<Ev, String> {
    let mut attrs = Vec::new();
    for a in e.attributes().with_checks(true) {
        let a = a.map_err(|e| e.to_string())?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| e.to_string())?;
        attrs.push((a.key.as_ref().to_owned(), value.into_owned()));
    }
    Ok(Ev::Start {
        qname: e.name().as_ref().to_owned(),
        attrs,
        empty,
    })
}

/// quick-xml's tree of one element (the oracle of `Element::parse`).
fn quick_xml_element(bytes: &[u8], scope: &Scope) -> Result<Element, String> {
    fn open(e: &BytesStart<'_>, parent: &Scope) -> Result<(Element, Scope<'static>), String> {
        let mut scope = parent.clone().into_owned();
        let mut attrs = Vec::new();
        for a in e.attributes().with_checks(true) {
            let a = a.map_err(|e| e.to_string())?;
            let key = a.key.as_ref().to_owned();
            let value = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| e.to_string())?
                .into_owned();
            if key == "xmlns" {
                scope.default_ns = Some(value.into());
            } else if let Some(p) = key.strip_prefix("xmlns:") {
                scope
                    .prefixes
                    .to_mut()
                    .push((p.to_owned().into(), value.into()));
            } else {
                attrs.push((key, value));
            }
        }
        let qname = e.name().as_ref().to_owned();
        let (prefix, local) = match qname.split_once(':') {
            Some((p, l)) => (Some(p), l),
            None => (None, qname.as_str()),
        };
        let ns = match (prefix, scope.resolve(prefix)) {
            (_, Some(ns)) => ns.to_owned(),
            (None, None) => String::new(),
            (Some(p), None) => return Err(format!("undeclared prefix `{p}`")),
        };
        let el = Element {
            name: local.to_owned(),
            ns,
            attrs,
            children: Vec::new(),
        };
        Ok((el, scope))
    }
    fn text(p: &mut Element, s: &str) {
        if let Some(Node::Text(t)) = p.children.last_mut() {
            t.push_str(s);
        } else {
            p.children.push(Node::Text(Zeroizing::new(s.to_owned())));
        }
    }
    let mut r = Reader::from_reader(bytes);
    r.config_mut().trim_text(false);
    let mut stack: Vec<(Element, Scope<'static>)> = Vec::new();
    loop {
        let closed = match r.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                let parent = stack.last().map(|(_, s)| s).unwrap_or(scope);
                let open = open(&e, parent)?;
                stack.push(open);
                None
            }
            Event::Empty(e) => {
                let parent = stack.last().map(|(_, s)| s).unwrap_or(scope);
                Some(open(&e, parent)?.0)
            }
            Event::End(_) => Some(stack.pop().ok_or("end tag without a start")?.0),
            Event::Text(t) => {
                if let Some((p, _)) = stack.last_mut() {
                    text(p, &t);
                }
                None
            }
            Event::GeneralRef(g) => {
                if let Some((p, _)) = stack.last_mut() {
                    let c = match g.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) => c,
                        None => quick_xml::escape::resolve_predefined_entity(&g)
                            .and_then(|s| s.chars().next())
                            .ok_or("unknown entity")?,
                    };
                    text(p, c.encode_utf8(&mut [0; 4]));
                }
                None
            }
            Event::CData(c) => {
                if let Some((p, _)) = stack.last_mut() {
                    text(p, &c);
                }
                None
            }
            Event::Eof => return Err("incomplete element".into()),
            _ => return Err("markup other than elements and text".into()),
        };
        if let Some(el) = closed {
            match stack.last_mut() {
                Some((p, _)) => p.children.push(Node::Element(el)),
                None => return Ok(el),
            }
        }
    }
}

/// quick-xml's reading of a start tag (the oracle of `Head::parse`).
fn quick_xml_head<'a>(bytes: &'a [u8], scope: &Scope) -> Result<Head<'a>, String> {
    let mut r = Reader::from_reader(bytes);
    r.config_mut().trim_text(false);
    let (start, empty) = loop {
        match r.read_event().map_err(|e| e.to_string())? {
            Event::Start(s) => break (s, false),
            Event::Empty(s) => break (s, true),
            Event::Text(_) => continue,
            _ => return Err("expected an element".into()),
        }
    };
    let qname = start.name().as_ref().to_owned();
    let at = memchr::memmem::find(bytes, qname.as_bytes()).ok_or("no name")?;
    let name = std::str::from_utf8(&bytes[at..at + qname.len()]).map_err(|e| e.to_string())?;
    let (prefix, name) = match name.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, name),
    };
    let mut head = Head {
        name,
        ns: Cow::Borrowed(""),
        to: None,
        from: None,
        typ: None,
        id: None,
        start_len: r.buffer_position() as usize,
        empty,
    };
    let mut own_ns = None;
    for a in start.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| e.to_string())?
            .into_owned();
        match a.key.as_ref() {
            "to" => head.to = Some(Cow::Owned(value)),
            "from" => head.from = Some(Cow::Owned(value)),
            "type" => head.typ = Some(Cow::Owned(value)),
            "id" => head.id = Some(Cow::Owned(value)),
            "xmlns" if prefix.is_none() => own_ns = Some(value),
            k if prefix.is_some() && k.strip_prefix("xmlns:") == prefix => own_ns = Some(value),
            _ => {}
        }
    }
    head.ns =
        Cow::Owned(own_ns.unwrap_or_else(|| scope.resolve(prefix).unwrap_or_default().to_owned()));
    Ok(head)
}

/// quick-xml's reading of a stream header's start tag `<…>`.
fn quick_xml_header(tag: &str) -> Result<StreamHeader, String> {
    let inner = &tag[1..tag.len() - 1];
    let name_len = inner
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(inner.len());
    let e = BytesStart::from_content(inner, name_len);
    let mut h = StreamHeader {
        qname: e.name().as_ref().to_owned().into(),
        ..StreamHeader::default()
    };
    for a in e.attributes().with_checks(true) {
        let a = a.map_err(|e| e.to_string())?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| e.to_string())?
            .into_owned();
        match a.key.as_ref() {
            "to" => h.to = Some(value),
            "from" => h.from = Some(value),
            "id" => h.id = Some(value),
            "version" => {
                let (a, b) = value.split_once('.').ok_or("version")?;
                let n = |s: &str| s.parse::<u32>().map_err(|e| e.to_string());
                h.version = Some((n(a)?, n(b)?));
            }
            "xml:lang" => h.lang = Some(value.into()),
            "xmlns" => h.default_ns = Some(value.into()),
            k => {
                if let Some(p) = k.strip_prefix("xmlns:") {
                    h.prefixes.push((p.to_owned().into(), value.into()));
                }
            }
        }
    }
    Ok(h)
}

/// A rewrite with the values found by quick-xml's reader and shown to a `Rewriter`
/// (the oracle of `Rewriter::append`).
fn quick_xml_rewrite(input: &[u8], rule: Rule<'_>) -> Result<Vec<u8>, String> {
    let mut rw = Rewriter::new(rule);
    let base = input.as_ptr() as usize;
    let offset = |s: &str| s.as_ptr() as usize - base;
    let mut r = Reader::from_reader(input);
    r.config_mut().trim_text(false);
    let only_top_to = matches!(rule, Rule::To { .. });
    loop {
        match r.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) | Event::Empty(e) => {
                for a in e.attributes() {
                    let a = a.map_err(|e| e.to_string())?;
                    let Cow::Borrowed(v) = a.value else {
                        return Err("a value quick-xml transformed".into());
                    };
                    let hints = Hints {
                        refs: v.contains('&'),
                        slash: v.contains('/'),
                    };
                    rw.attribute(a.key.as_ref().as_bytes(), v.as_bytes(), offset(v), hints);
                }
                if only_top_to {
                    break;
                }
            }
            Event::Text(t) => {
                let s: &str = &t;
                let hints = Hints {
                    refs: false,
                    slash: s.contains('/'),
                };
                rw.text(s.as_bytes(), offset(s), hints);
            }
            Event::CData(c) => rw.cdata(&c, offset(&c)),
            Event::GeneralRef(g) => rw.reference(offset(&g) - 1, g.len() + 2),
            Event::Eof => break,
            _ => {}
        }
    }
    let mut out = Vec::new();
    rw.emit(input, &mut out);
    Ok(out)
}

fn scope() -> Scope<'static> {
    Scope {
        default_ns: Some(NS_CLIENT.into()),
        prefixes: vec![
            ("stream".into(), NS_STREAMS.into()),
            ("db".into(), NS_DIALBACK.into()),
        ]
        .into(),
    }
}

const MASK: Rule = Rule::Mask {
    internal: "node1.internal",
    public: "example.com",
    services: &[],
};
const UNMASK: Rule = Rule::Unmask {
    public: "example.com",
    internal: "node1.internal",
    own_local: "alice",
    normalise: Normalise::Nodeprep,
};
const TO: Rule = Rule::To {
    public: "example.com",
    internal: "node2.internal",
};

/// A random element with namespace declarations, prefixed names (some of them
/// undeclared), JIDs at the masked domains in values and text, references, white
/// space written as such in values, CDATA, nesting.
fn random_ns_element(rng: &mut Rng, depth: usize, out: &mut String) {
    const NAMES: &[&str] = &[
        "message",
        "iq",
        "body",
        "jid",
        "value",
        "p:item",
        "q:x",
        "stream:features",
        "db:result",
        "xml:x",
        "\u{e9}t\u{e9}",
    ];
    const DECLS: &[(&str, &str)] = &[
        ("xmlns", "jabber:client"),
        ("xmlns", "urn:a"),
        ("xmlns", ""),
        ("xmlns:p", "urn:p"),
        ("xmlns:p", "urn:p2"),
        ("xmlns:q", "urn:q&amp;r"),
        ("xmlns:q", "urn:q\tx&#10;"),
    ];
    const KEYS: &[&str] = &["to", "from", "id", "type", "by", "jid", "xml:lang", "p:k"];
    const VALUES: &[&str] = &[
        "a",
        "alice@node1.internal/r",
        "bob@example.com",
        "alice@example.com/r",
        "Alice@Example.COM/x",
        "example.com",
        "conference.node1.internal",
        "a&#64;node1.internal/&apos;x",
        "node1.internal.",
        "x&amp;y",
        "&lt;&#x41;&#66;&gt;",
        "a\tb\nc\r\nd\re",
        "&#9;&#10;&#13;",
        "a/>b",
        "",
        "\u{e9}@example.com",
    ];
    const TEXT: &[&str] = &[
        "hi",
        " alice@node1.internal/r ",
        "alice&#64;node1.internal",
        "example.com",
        "&amp;",
        "&lt;b&gt;",
        "caf\u{e9} \u{1F3B2}",
        "a > b",
        "\n\t",
        "\r\n",
        "'\"",
        "<![CDATA[alice@node1.internal]]>",
        "<![CDATA[<not/> &markup;]]>",
    ];
    let name = rng.pick(NAMES);
    out.push('<');
    out.push_str(name);
    let mut used: Vec<&str> = Vec::new();
    let mut attr = |rng: &mut Rng, out: &mut String, key: &'static str, value: &str| {
        if used.contains(&key) {
            return;
        }
        used.push(key);
        let q = if rng.below(2) == 0 { '\'' } else { '"' };
        let sp = rng.pick(&[" ", "  ", "\n", "\t"]);
        out.push_str(&format!("{sp}{key}={q}{value}{q}"));
    };
    for _ in 0..rng.below(3) {
        let (key, value) = DECLS[rng.below(DECLS.len())];
        attr(rng, out, key, value);
    }
    for _ in 0..rng.below(4) {
        let key = rng.pick(KEYS);
        let value = rng.pick(VALUES);
        attr(rng, out, key, value);
    }
    if depth >= 4 || rng.below(4) == 0 {
        out.push_str(rng.pick(&["/>", " />"]));
        return;
    }
    out.push('>');
    for _ in 0..rng.below(4) {
        match rng.below(3) {
            0 => random_ns_element(rng, depth + 1, out),
            _ => out.push_str(rng.pick(TEXT)),
        }
    }
    out.push_str("</");
    out.push_str(name);
    out.push_str(rng.pick(&[">", " >"]));
}

/// Whether the framer takes `bytes` as exactly one element (what every reader
/// here is given in dealer).
fn frames_as_one_element(bytes: &[u8]) -> bool {
    let mut f = Framer::in_stream(FrameLimits::default(), "stream:stream");
    matches!(f.parse(bytes), Ok(Some(Frame::Element { len })) if len == bytes.len())
}

/// Every reader against its oracle on one element the framer took.
fn agree(bytes: &[u8]) {
    let shown = String::from_utf8_lossy(bytes);
    let scope = scope();
    let ours = Element::parse(bytes, &scope).map_err(|e| e.to_string());
    let theirs = quick_xml_element(bytes, &scope);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "tree of {shown}"),
        (Err(_), Err(_)) => {}
        _ => panic!("tree of {shown}: {ours:?} but quick-xml {theirs:?}"),
    }
    assert_eq!(
        Head::parse(bytes, &scope).map_err(|_| ()),
        quick_xml_head(bytes, &scope).map_err(|_| ()),
        "head of {shown}"
    );
    let stream = [HEADER.as_bytes(), bytes, b"</stream:stream>"].concat();
    let (events, fault) = framed_events(&stream, &[usize::MAX]);
    assert_eq!(fault, None);
    assert_eq!(Ok(events), quick_xml_events(&stream), "events of {shown}");
    for rule in [MASK, UNMASK, TO] {
        let mut out = Vec::new();
        let ours = rewrite(bytes, rule, &mut out).map(|_| out);
        assert_eq!(
            ours.as_ref().map_err(|_| ()),
            quick_xml_rewrite(bytes, rule).as_ref().map_err(|_| ()),
            "{rule:?} rewrite of {shown}"
        );
        // The relay's way, the framer showing the rewriter every value as it frames:
        // the same (`Rule::To` is only ever used through `masking::rewrite`).
        if !matches!(rule, Rule::To { .. }) {
            let mut framer = Framer::in_stream(FrameLimits::default(), "stream:stream");
            let mut rw = Rewriter::new(rule);
            let mut relayed = Vec::new();
            if let Ok(Some(f)) = framer.parse_with(bytes, &mut rw) {
                rw.emit(&bytes[..f.len()], &mut relayed);
            }
            assert_eq!(
                ours.as_ref().ok(),
                Some(&relayed),
                "{rule:?} relay of {shown}"
            );
        }
    }
}

const HEADER: &str = "<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";

#[test]
fn readers_agree_with_quick_xml_on_chosen_elements() {
    let cases = [
        "<message to='a/>b' id=\"x>y\"><body>hi</body></message>",
        "<m><b><![CDATA[</m><evil/>]]>x&amp;<![CDATA[y]]></b></m>",
        "<sasl:auth xmlns:sasl='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</sasl:auth>",
        "<a b='&lt;&#x41;&#66;&amp;&apos;&quot;' c=\"t&#9;a\tb\r\nc\rd\ne\"/>",
        "<iq xmlns='jabber:client'><query xmlns='q'><item/></query><x/></iq>",
        "<p:a xmlns:p='one'><p:b xmlns:p='two'/><p:c/></p:a>",
        "<a><p:b xmlns:p='x'/><p:c/></a>",
        "<stream:error><text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>x</text></stream:error>",
        "<xml:x/>",
        "<a xmlns=''><b/></a>",
        "<db:result from='r.test' to='example.com'>abc</db:result>",
        "<x\u{e9}y a='1' b\u{e9}c='\u{e9}'><xy/></x\u{e9}y >",
        "<message from='a&#64;node1.internal/&apos;x' to='b@remote.test'><body> alice&#64;&#x6E;ode1.internal/a&lt;b </body></message>",
        "<iq type='result' id='b'><jid><![CDATA[alice@node1.internal/r]]></jid><x>a<![CDATA[b]]>node1.internal</x></iq>",
        "<presence to='Alice@Example.COM'/>",
        "<message to='bob@example.com/x'><x to='bob@example.com'/></message>",
    ];
    for case in cases {
        assert!(frames_as_one_element(case.as_bytes()), "{case}");
        agree(case.as_bytes());
    }
}

#[test]
fn readers_agree_with_quick_xml_on_random_and_mutated_elements() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut agreed, mut mutants) = (0, 0);
    for _ in 0..1500 {
        let mut s = String::new();
        if rng.below(3) == 0 {
            random_element(&mut rng, 1, &mut s);
        } else {
            random_ns_element(&mut rng, 1, &mut s);
        }
        assert!(frames_as_one_element(s.as_bytes()), "{s}");
        agree(s.as_bytes());
        agreed += 1;
        // A byte changed, dropped or added: whatever the framer still takes as one
        // element, the readers must read as quick-xml does.
        for _ in 0..4 {
            let mut m = s.clone().into_bytes();
            let at = rng.below(m.len());
            const BYTES: &[u8] = b"<>/'\"&;=:# \t\rxp";
            let byte = BYTES[rng.below(BYTES.len())];
            match rng.below(3) {
                0 => m[at] = byte,
                1 => {
                    m.remove(at);
                }
                _ => m.insert(at, byte),
            }
            if frames_as_one_element(&m) {
                agree(&m);
                mutants += 1;
            }
        }
    }
    assert!(
        agreed == 1500 && mutants > 300,
        "only {mutants} mutants framed"
    );
}

#[test]
fn stream_headers_agree_with_quick_xml() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    const ATTRS: &[&str] = &[
        "xmlns='jabber:client'",
        "xmlns='jabber:server'",
        "xmlns:stream='http://etherx.jabber.org/streams'",
        "xmlns:db='jabber:server:dialback'",
        "xmlns:s=\"http://etherx.jabber.org/streams\"",
        "to='example.com'",
        "to='ex&amp;ample.com'",
        "from='a\tb&#9;c'",
        "id='i&#x41;d\r\n'",
        "version='1.0'",
        "version=\"2.17\"",
        "xml:lang='en'",
        "other='x'",
    ];
    for _ in 0..500 {
        let mut tag = String::from(rng.pick(&["<stream:stream", "<s:stream", "<stream"]));
        let mut keys = Vec::new();
        for _ in 0..rng.below(7) {
            let a = rng.pick(ATTRS);
            let key = a.split('=').next().unwrap();
            if !keys.contains(&key) {
                keys.push(key);
                tag.push_str(rng.pick(&[" ", "\n ", "\t"]));
                tag.push_str(a);
            }
        }
        tag.push_str(rng.pick(&[">", " >"]));
        let theirs = quick_xml_header(&tag).map_err(|_| ());
        let ours = match Framer::new(FrameLimits::default()).parse(tag.as_bytes()) {
            Ok(Some(Frame::Header { header, len })) if len == tag.len() => Ok(header),
            _ => Err(()),
        };
        assert_eq!(ours, theirs, "{tag}");
        // The header's events, too.
        let (events, _) = framed_events(tag.as_bytes(), &[usize::MAX]);
        assert_eq!(Ok(events), quick_xml_events(tag.as_bytes()), "{tag}");
    }
}

#[test]
fn unescaping_agrees_with_quick_xml() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    const PIECES: &[&str] = &[
        "a",
        "\u{e9}",
        "&amp;",
        "&lt;",
        "&gt;",
        "&apos;",
        "&quot;",
        "&#65;",
        "&#x1F3B2;",
        "&#9;",
        "&#10;",
        "&#13;",
        "\t",
        "\n",
        "\r",
        "\r\n",
        " ",
        "/",
        ";",
        "#",
    ];
    for _ in 0..3000 {
        let s: String = (0..rng.below(8)).map(|_| rng.pick(PIECES)).collect();
        assert_eq!(
            escape::unescape_text(&s).unwrap(),
            quick_xml::escape::unescape(&s).unwrap(),
            "{s:?}"
        );
        let attr = quick_xml::events::attributes::Attribute {
            key: quick_xml::name::QName("k"),
            value: Cow::Borrowed(&s),
        };
        assert_eq!(
            escape::unescape_attr(&s).unwrap(),
            attr.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .unwrap(),
            "{s:?}"
        );
    }
}

/// The events of a stream are the same however it is cut into reads.
fn events_whatever_the_reads(input: &str) -> Vec<Ev> {
    let b = input.as_bytes();
    let whole = framed_events(b, &[usize::MAX]);
    assert_eq!(whole.1, None, "{input}");
    assert_eq!(framed_events(b, &[1]), whole, "byte by byte: {input}");
    for k in 1..b.len() {
        assert_eq!(
            framed_events(b, &[k, usize::MAX]),
            whole,
            "split at {k}: {input}"
        );
    }
    whole.0
}

#[test]
fn visitor_sees_tags_values_and_text_however_the_stream_is_cut() {
    use Ev::*;
    let start = |qname: &str, attrs: &[(&str, &str)], empty: bool| Start {
        qname: qname.into(),
        attrs: attrs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        empty,
    };
    let end = |qname: &str| End(qname.into());
    let text = |s: &str| Text(s.into());
    let header = start(
        "stream:stream",
        &[
            ("xmlns", "jabber:client"),
            ("xmlns:stream", NS_STREAMS),
            ("to", "example.com"),
            ("version", "1.0"),
        ],
        false,
    );
    let cases: Vec<(&str, Vec<Ev>)> = vec![
        // `/>` and `>` inside values do not end a tag.
        (
            "<message to='a/>b' id=\"x>y\"><body>hi</body></message>",
            vec![
                start("message", &[("to", "a/>b"), ("id", "x>y")], false),
                start("body", &[], false),
                text("hi"),
                end("body"),
                end("message"),
            ],
        ),
        // CDATA hides markup; with text and references next to it, one text node.
        (
            "<m><b><![CDATA[</m><evil/>]]>x&amp;<![CDATA[y]]></b></m>",
            vec![
                start("m", &[], false),
                start("b", &[], false),
                text("</m><evil/>x&y"),
                end("b"),
                end("m"),
            ],
        ),
        // Prefixed names, and namespace declarations among the attributes.
        (
            "<sasl:auth xmlns:sasl='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>=</sasl:auth>",
            vec![
                start(
                    "sasl:auth",
                    &[
                        ("xmlns:sasl", "urn:ietf:params:xml:ns:xmpp-sasl"),
                        ("mechanism", "PLAIN"),
                    ],
                    false,
                ),
                text("="),
                end("sasl:auth"),
            ],
        ),
        // References in values and text; white space written as such in a value is
        // a space, written as a reference it stays.
        (
            "<a b='&lt;&#x41;&#66;&amp;&apos;&quot;' c=\"t&#9;a\tb\r\nc\"><c>&#x1F3B2;&lt;x&gt; \u{e9}</c></a>",
            vec![
                start("a", &[("b", "<AB&'\""), ("c", "t\ta b c")], false),
                start("c", &[], false),
                text("\u{1F3B2}<x> \u{e9}"),
                end("c"),
                end("a"),
            ],
        ),
        // Same-named nesting, empty elements, end tags with space, names beyond ASCII.
        (
            "<a><a><a/></a ></a><\u{e9}t\u{e9} k\u{e9}='v'/>",
            vec![
                start("a", &[], false),
                start("a", &[], false),
                start("a", &[], true),
                end("a"),
                end("a"),
                start("\u{e9}t\u{e9}", &[("k\u{e9}", "v")], true),
            ],
        ),
    ];
    for (body, want) in cases {
        let input = format!("{HEADER}{body} </stream:stream>");
        let mut all = vec![header.clone()];
        all.extend(want);
        all.push(text(" "));
        all.push(end("stream:stream"));
        let got = events_whatever_the_reads(&input);
        // Whitespace between stanzas is a frame of its own, not text: drop it.
        let all: Vec<Ev> = all.into_iter().filter(|e| *e != text(" ")).collect();
        assert_eq!(got, all, "{body}");
        assert_eq!(
            Ok(got),
            quick_xml_events(input.as_bytes())
                .map(|e| { e.into_iter().filter(|e| *e != text(" ")).collect() }),
            "{body}"
        );
    }
}
