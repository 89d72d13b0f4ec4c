//! A small owned element tree, for the few elements dealer must understand before
//! authentication (`<auth/>`, `<iq/>` with iq:auth or iq:register, dialback). Those are
//! bounded by the framer's limits and read once per login, so a tree keeps the code
//! that reads them simple; hot paths never build one. Text nodes are zeroed on drop,
//! because they may carry credentials.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use zeroize::Zeroizing;

use super::XmlError;
use super::header::StreamHeader;

/// Namespace declarations in force where an element starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub default_ns: Option<String>,
    pub prefixes: Vec<(String, String)>,
}

impl Scope {
    pub fn from_header(h: &StreamHeader) -> Scope {
        Scope {
            default_ns: h.default_ns.clone(),
            prefixes: h.prefixes.clone(),
        }
    }

    fn resolve(&self, prefix: Option<&str>) -> Option<&str> {
        match prefix {
            None => self.default_ns.as_deref(),
            Some("xml") => Some("http://www.w3.org/XML/1998/namespace"),
            Some(p) => self
                .prefixes
                .iter()
                .rev()
                .find(|(q, _)| q == p)
                .map(|(_, ns)| ns.as_str()),
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
        let bad = |e: quick_xml::Error| XmlError::NotWellFormed(e.to_string());
        let mut reader = Reader::from_reader(bytes);
        reader.config_mut().trim_text(false);
        let mut stack: Vec<(Element, Scope)> = Vec::new();
        loop {
            match reader.read_event().map_err(bad)? {
                Event::Start(e) => {
                    let parent = stack.last().map(|(_, s)| s).unwrap_or(scope);
                    let (el, sc) = open(&e, parent)?;
                    stack.push((el, sc));
                }
                Event::Empty(e) => {
                    let parent = stack.last().map(|(_, s)| s).unwrap_or(scope);
                    let (el, _) = open(&e, parent)?;
                    match stack.last_mut() {
                        Some((p, _)) => p.children.push(Node::Element(el)),
                        None => return Ok(el),
                    }
                }
                Event::End(_) => {
                    let Some((el, _)) = stack.pop() else {
                        return Err(XmlError::NotWellFormed("end tag without a start".into()));
                    };
                    match stack.last_mut() {
                        Some((p, _)) => p.children.push(Node::Element(el)),
                        None => return Ok(el),
                    }
                }
                Event::Text(t) => {
                    if let Some((p, _)) = stack.last_mut() {
                        let s = quick_xml::escape::unescape(&t)
                            .map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
                        push_text(p, &s);
                    }
                }
                Event::GeneralRef(r) => {
                    if let Some((p, _)) = stack.last_mut() {
                        let c = match &*r {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "apos" => '\'',
                            "quot" => '"',
                            _ => r
                                .resolve_char_ref()
                                .map_err(bad)?
                                .ok_or(XmlError::Restricted("entity reference"))?,
                        };
                        push_text(p, c.encode_utf8(&mut [0; 4]));
                    }
                }
                Event::CData(c) => {
                    if let Some((p, _)) = stack.last_mut() {
                        push_text(p, &c);
                    }
                }
                Event::Eof => return Err(XmlError::NotWellFormed("incomplete element".into())),
                Event::Comment(_) | Event::PI(_) | Event::DocType(_) | Event::Decl(_) => {
                    return Err(XmlError::Restricted("markup other than elements and text"));
                }
            }
        }
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
        let mut s = Zeroizing::new(String::new());
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }
}

fn push_text(p: &mut Element, s: &str) {
    // Append to a trailing text node so that "a&amp;b" stays one string.
    if let Some(Node::Text(t)) = p.children.last_mut() {
        t.push_str(s);
    } else {
        p.children.push(Node::Text(Zeroizing::new(s.to_owned())));
    }
}

fn open(e: &BytesStart<'_>, parent: &Scope) -> Result<(Element, Scope), XmlError> {
    let mut scope = parent.clone();
    let mut attrs = Vec::new();
    for a in e.attributes().with_checks(true) {
        let a = a.map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
        let key = a.key.as_ref().to_owned();
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| XmlError::NotWellFormed(e.to_string()))?
            .into_owned();
        if key == "xmlns" {
            scope.default_ns = Some(value);
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            scope.prefixes.push((p.to_owned(), value));
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
        (Some(p), None) => {
            return Err(XmlError::NotWellFormed(format!("undeclared prefix `{p}`")));
        }
    };
    Ok((
        Element {
            name: local.to_owned(),
            ns,
            attrs,
            children: Vec::new(),
        },
        scope,
    ))
}
