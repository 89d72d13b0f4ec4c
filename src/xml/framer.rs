//! The incremental XML framer: sans-IO, no DOM. Given the bytes read so far from one
//! stream, it answers "need more", or the next frame (the stream header, one complete
//! top-level element, whitespace between elements, the stream close), or an error.
//!
//! It runs quick-xml over the unconsumed bytes and remembers how far it has tokenised,
//! so a frame that arrives in pieces is not re-scanned from its start each time. It
//! enforces the limits of DESIGN.md §6 while the frame is still arriving (a header or
//! element that is too long fails before it is complete) and refuses what XMPP forbids
//! (RFC 6120 §11.1): DTDs, comments, processing instructions, and entity references
//! other than the five predefined ones and character references.
//!
//! Contract: after `parse` returns a frame of `len` bytes, the caller removes exactly
//! those bytes from the front of its buffer before calling `parse` again.

use quick_xml::Reader;
use quick_xml::errors::{Error as QxError, IllFormedError, SyntaxError};
use quick_xml::events::{BytesStart, Event};

use super::XmlError;
use super::header::StreamHeader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    pub max_header_bytes: usize,
    pub max_stanza_bytes: usize,
    /// Element nesting; a top-level element is depth 1.
    pub max_depth: usize,
    pub max_attributes: usize,
}

impl FrameLimits {
    pub fn from_config(l: &crate::config::Limits) -> FrameLimits {
        FrameLimits {
            max_header_bytes: l.max_header_bytes,
            max_stanza_bytes: l.max_stanza_bytes,
            max_depth: l.max_depth,
            max_attributes: l.max_attributes,
        }
    }
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_header_bytes: 4096,
            max_stanza_bytes: 262_144,
            max_depth: 32,
            max_attributes: 64,
        }
    }
}

/// One unit of a stream. `len` counts the bytes the caller must drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The stream header, with any XML declaration and whitespace before it.
    Header { len: usize, header: StreamHeader },
    /// One complete top-level element: exactly `buf[..len]`.
    Element { len: usize },
    /// Whitespace between top-level elements (keepalives).
    Whitespace { len: usize },
    /// The peer's `</stream:stream>`.
    Close { len: usize },
}

impl Frame {
    pub fn len(&self) -> usize {
        match self {
            Frame::Header { len, .. }
            | Frame::Element { len }
            | Frame::Whitespace { len }
            | Frame::Close { len } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Prolog,
    Stream,
    Closed,
}

#[derive(Debug)]
pub struct Framer {
    limits: FrameLimits,
    state: State,
    /// Bytes at the front of the caller's buffer already tokenised into complete
    /// events of the frame in progress.
    scanned: usize,
    /// Open elements inside the stream at `scanned`.
    depth: usize,
    /// Qualified names of the open elements, concatenated; `name_starts` indexes it.
    names: String,
    name_starts: Vec<usize>,
    /// The header's qualified name, which the stream close must repeat.
    stream_qname: String,
}

impl Framer {
    pub fn new(limits: FrameLimits) -> Framer {
        Framer {
            limits,
            state: State::Prolog,
            scanned: 0,
            depth: 0,
            names: String::new(),
            name_starts: Vec::new(),
            stream_qname: String::new(),
        }
    }

    /// A framer for a stream whose header was already read (a relay taking over).
    pub fn in_stream(limits: FrameLimits, stream_qname: &str) -> Framer {
        let mut f = Framer::new(limits);
        f.state = State::Stream;
        f.stream_qname = stream_qname.to_owned();
        f
    }

    pub fn limits(&self) -> &FrameLimits {
        &self.limits
    }

    /// Find the next frame at the front of `buf`, or `Ok(None)` if more bytes are
    /// needed. See the module's contract about consuming frames.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<Frame>, XmlError> {
        self.parse_with(buf, &mut NoVisit)
    }

    /// `parse`, showing `visit` every attribute value and text node as it is read,
    /// with its byte offset in `buf` — so a rewriter needs no second pass. A frame
    /// read over several calls is visited piece by piece, each piece once.
    pub fn parse_with<V: Visit>(
        &mut self,
        buf: &[u8],
        visit: &mut V,
    ) -> Result<Option<Frame>, XmlError> {
        if self.state == State::Closed {
            return Ok(None);
        }
        debug_assert!(self.scanned <= buf.len(), "caller dropped unconsumed bytes");
        // quick-xml drops a UTF-8 byte order mark at the start of its input without
        // counting it in `buffer_position`, and each call starts a reader mid-document:
        // account for the three bytes here. A BOM is legal at the very start of the
        // stream and as a character (U+FEFF) inside text, never between stanzas.
        let bom = buf[self.scanned..].starts_with(UTF8_BOM);
        if bom && self.state == State::Stream && self.depth == 0 {
            return Err(XmlError::TextAtStreamLevel);
        }
        // quick-xml strips (exactly one) BOM itself; positions are counted after it.
        let base = self.scanned + if bom { UTF8_BOM.len() } else { 0 };
        let mut reader = Reader::from_reader(&buf[self.scanned..]);
        {
            let c = reader.config_mut();
            c.check_end_names = false; // we check, across calls
            c.allow_unmatched_ends = true; // each call starts mid-document
            c.expand_empty_elements = false;
            c.trim_text(false);
            c.check_comments = false;
            c.allow_dangling_amp = false;
        }
        loop {
            let committed = self.scanned;
            let event = reader.read_event();
            let end = base + reader.buffer_position() as usize;
            let event = match event {
                Ok(ev) => ev,
                Err(e) => {
                    self.classify(&e, &buf[committed..], end == buf.len())?;
                    return self.need_more(buf.len());
                }
            };
            match (self.state, event) {
                (_, Event::Eof) => return self.need_more(buf.len()),
                (_, Event::Comment(_)) => return Err(XmlError::Restricted("comment")),
                (_, Event::PI(_)) => return Err(XmlError::Restricted("processing instruction")),
                (_, Event::DocType(_)) => return Err(XmlError::Restricted("DTD")),
                (State::Prolog, Event::Decl(d)) if committed == 0 => {
                    // RFC 6120 §11.6: UTF-8 only.
                    if let Some(enc) = d.encoding() {
                        let enc = enc.map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
                        if !enc.eq_ignore_ascii_case("utf-8") {
                            return Err(XmlError::UnsupportedEncoding);
                        }
                    }
                }
                (_, Event::Decl(_)) => {
                    return Err(XmlError::Restricted("processing instruction"));
                }
                (State::Prolog, Event::Text(t)) => {
                    if !is_ws(t.as_bytes()) {
                        return Err(XmlError::NotWellFormed(
                            "text before the stream header".into(),
                        ));
                    }
                }
                (State::Prolog, Event::Start(e)) => {
                    if end > self.limits.max_header_bytes {
                        return Err(XmlError::HeaderTooBig(self.limits.max_header_bytes));
                    }
                    self.check_attributes(&e, buf, visit)?;
                    let header = StreamHeader::from_start(&e)?;
                    self.stream_qname.clone_from(&header.qname);
                    self.state = State::Stream;
                    return Ok(Some(self.emit(Frame::Header { len: end, header })));
                }
                (State::Prolog, _) => {
                    return Err(XmlError::NotWellFormed("expected a stream header".into()));
                }
                (State::Stream, Event::Text(t)) if self.depth == 0 => {
                    if !is_ws(t.as_bytes()) {
                        return Err(XmlError::TextAtStreamLevel);
                    }
                    return Ok(Some(self.emit(Frame::Whitespace { len: end })));
                }
                (State::Stream, Event::CData(_) | Event::GeneralRef(_)) if self.depth == 0 => {
                    return Err(XmlError::TextAtStreamLevel);
                }
                (State::Stream, Event::Start(e)) => {
                    if self.depth + 1 > self.limits.max_depth {
                        return Err(XmlError::TooDeep(self.limits.max_depth));
                    }
                    self.check_attributes(&e, buf, visit)?;
                    self.depth += 1;
                    self.name_starts.push(self.names.len());
                    self.names.push_str(e.name().as_ref());
                }
                (State::Stream, Event::Empty(e)) => {
                    if self.depth + 1 > self.limits.max_depth {
                        return Err(XmlError::TooDeep(self.limits.max_depth));
                    }
                    self.check_attributes(&e, buf, visit)?;
                    if self.depth == 0 {
                        self.check_size(end)?;
                        return Ok(Some(self.emit(Frame::Element { len: end })));
                    }
                }
                (State::Stream, Event::End(e)) => {
                    let name = e.name();
                    if self.depth == 0 {
                        if name.as_ref() != self.stream_qname {
                            return Err(XmlError::NotWellFormed("end tag without a start".into()));
                        }
                        self.state = State::Closed;
                        return Ok(Some(self.emit(Frame::Close { len: end })));
                    }
                    // `depth > 0` means a name was pushed.
                    let start = self.name_starts.pop().unwrap_or(0);
                    if self.names[start..] != *name.as_ref() {
                        return Err(XmlError::NotWellFormed(format!(
                            "</{}> closes <{}>",
                            name.as_ref(),
                            &self.names[start..]
                        )));
                    }
                    self.names.truncate(start);
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.check_size(end)?;
                        return Ok(Some(self.emit(Frame::Element { len: end })));
                    }
                }
                (State::Stream, Event::GeneralRef(r)) => {
                    check_reference(&r)?;
                    // The reference is part of the text node around it.
                    let text: &str = &r;
                    visit.reference(
                        text.as_ptr() as usize - buf.as_ptr() as usize - 1,
                        text.len() + 2,
                    );
                }
                (State::Stream, Event::Text(t)) => {
                    let text: &str = &t;
                    check_chars(text)?;
                    visit.text(text, text.as_ptr() as usize - buf.as_ptr() as usize);
                }
                (State::Stream, Event::CData(_)) => {}
                (State::Closed, _) => return Ok(None),
            }
            self.scanned = end;
            if self.depth > 0 {
                self.check_size(end)?;
            }
        }
    }

    /// Reset progress for the next frame and hand `f` out.
    fn emit(&mut self, f: Frame) -> Frame {
        self.scanned = 0;
        f
    }

    fn need_more(&self, buffered: usize) -> Result<Option<Frame>, XmlError> {
        match self.state {
            State::Prolog if buffered > self.limits.max_header_bytes => {
                Err(XmlError::HeaderTooBig(self.limits.max_header_bytes))
            }
            State::Stream if buffered > self.limits.max_stanza_bytes => {
                Err(XmlError::StanzaTooBig(self.limits.max_stanza_bytes))
            }
            _ => Ok(None),
        }
    }

    fn check_size(&self, len: usize) -> Result<(), XmlError> {
        if len > self.limits.max_stanza_bytes {
            Err(XmlError::StanzaTooBig(self.limits.max_stanza_bytes))
        } else {
            Ok(())
        }
    }

    fn check_attributes<V: Visit>(
        &self,
        e: &BytesStart<'_>,
        buf: &[u8],
        visit: &mut V,
    ) -> Result<(), XmlError> {
        let mut n = 0;
        // Names seen so far, for the duplicate check: on the stack for the usual few
        // attributes, so checking a stanza allocates nothing.
        let mut seen: [&str; 16] = [""; 16];
        // quick-xml's own duplicate check allocates per element; this one does not.
        for a in e.attributes().with_checks(false) {
            let a = a.map_err(|e| XmlError::NotWellFormed(format!("attribute: {e}")))?;
            n += 1;
            if n > self.limits.max_attributes {
                return Err(XmlError::TooManyAttributes(self.limits.max_attributes));
            }
            let key: &str = a.key.0;
            if n <= seen.len() {
                if seen[..n - 1].contains(&key) {
                    return Err(XmlError::NotWellFormed(format!(
                        "duplicate attribute `{key}`"
                    )));
                }
                seen[n - 1] = key;
            } else if e
                .attributes()
                .with_checks(false)
                .flatten()
                .take(n - 1)
                .any(|b| b.key.0 == key)
            {
                return Err(XmlError::NotWellFormed(format!(
                    "duplicate attribute `{key}`"
                )));
            }
            let v = a.value.as_bytes();
            if v.contains(&b'<') {
                return Err(XmlError::NotWellFormed("`<` in an attribute value".into()));
            }
            if V::WANTS
                && let std::borrow::Cow::Borrowed(value) = a.value
            {
                visit.attribute(key, value, value.as_ptr() as usize - buf.as_ptr() as usize);
            }
            check_chars(&a.value)?;
            if v.contains(&b'&') {
                // Every reference in the value, by the same rules as in text.
                let mut rest: &str = &a.value;
                while let Some(i) = rest.find('&') {
                    let Some(j) = rest[i..].find(';') else {
                        return Err(XmlError::NotWellFormed("`&` without a reference".into()));
                    };
                    check_reference(&rest[i + 1..i + j])?;
                    rest = &rest[i + j + 1..];
                }
            }
        }
        Ok(())
    }

    /// Decide whether a quick-xml error only means "the input stops here" (`Ok`) or
    /// is a real fault. `rest` is the input from the last complete event; `at_end`
    /// says whether quick-xml had read to the end of the input when it failed.
    fn classify(&self, e: &QxError, rest: &[u8], at_end: bool) -> Result<(), XmlError> {
        match e {
            QxError::Syntax(SyntaxError::UnclosedComment) => Err(XmlError::Restricted("comment")),
            QxError::Syntax(SyntaxError::UnclosedDoctype) => Err(XmlError::Restricted("DTD")),
            QxError::Syntax(SyntaxError::UnclosedPI) => {
                // `<?`, `<?x` … may still become the XML declaration at the very start.
                let decl_start = self.state == State::Prolog && self.scanned == 0;
                let rest = rest.strip_prefix(UTF8_BOM).unwrap_or(rest);
                if decl_start && b"<?xml".starts_with(rest) {
                    Ok(())
                } else {
                    Err(XmlError::Restricted("processing instruction"))
                }
            }
            QxError::Syntax(SyntaxError::UnclosedXmlDecl) => {
                if self.state == State::Prolog && self.scanned == 0 {
                    Ok(())
                } else {
                    Err(XmlError::Restricted("processing instruction"))
                }
            }
            QxError::Syntax(SyntaxError::InvalidBangMarkup) => {
                if b"<![CDATA[".starts_with(rest) {
                    Ok(())
                } else if b"<!--".starts_with(rest) {
                    Err(XmlError::Restricted("comment"))
                } else if b"<!DOCTYPE".starts_with(rest) {
                    Err(XmlError::Restricted("DTD"))
                } else {
                    Err(XmlError::NotWellFormed(e.to_string()))
                }
            }
            // Every other syntax error means "the input ended inside a construct".
            QxError::Syntax(_) => Ok(()),
            QxError::IllFormed(IllFormedError::UnclosedReference) => {
                // `&name` with no `;` yet: incomplete only if nothing but name bytes follow.
                let tail = rest.get(1..).unwrap_or_default();
                if at_end && tail.len() < 32 && !tail.iter().any(|b| matches!(b, b'<' | b'&')) {
                    Ok(())
                } else {
                    Err(XmlError::NotWellFormed("`&` without a reference".into()))
                }
            }
            QxError::Encoding(quick_xml::encoding::EncodingError::Utf8(u))
                if at_end && u.error_len().is_none() =>
            {
                Ok(()) // a multi-byte character split by the read
            }
            e => Err(XmlError::NotWellFormed(e.to_string())),
        }
    }
}

/// Sees the values the framer reads (see `Framer::parse_with`).
pub trait Visit {
    /// Whether the visitor wants anything (lets `NoVisit` cost nothing).
    const WANTS: bool = true;
    /// An attribute value as written (escaped), at byte `at` of the buffer.
    fn attribute(&mut self, _key: &str, _value: &str, _at: usize) {}
    /// Character data as written, at byte `at` of the buffer.
    fn text(&mut self, _value: &str, _at: usize) {}
    /// A character or entity reference of `len` bytes at byte `at`, inside text.
    fn reference(&mut self, _at: usize, _len: usize) {}
}

/// The visitor of plain `parse`.
pub struct NoVisit;

impl Visit for NoVisit {
    const WANTS: bool = false;
}

/// Only the five predefined entities and character references to legal characters.
fn check_reference(r: &str) -> Result<(), XmlError> {
    match r {
        "lt" | "gt" | "amp" | "apos" | "quot" => Ok(()),
        _ if r.starts_with('#') => {
            // Digits only: `u32::from_str` would also take a sign.
            let n = if let Some(hex) = r.strip_prefix("#x") {
                (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| u32::from_str_radix(hex, 16).ok())
                    .flatten()
            } else {
                let dec = &r[1..];
                (!dec.is_empty() && dec.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| dec.parse::<u32>().ok())
                    .flatten()
            };
            match n.and_then(char::from_u32) {
                Some(c) if is_xml_char(c) => Ok(()),
                _ => Err(XmlError::NotWellFormed(format!(
                    "bad character reference &{r};"
                ))),
            }
        }
        _ => Err(XmlError::Restricted("entity reference")),
    }
}

/// Raw characters XML forbids: C0 controls other than tab, line feed and carriage
/// return (the other forbidden code points cannot be encoded in valid UTF-8 text here).
fn check_chars(s: &str) -> Result<(), XmlError> {
    // Branch-free within each chunk, so the compiler vectorises it: this runs over
    // every byte of text the masked relay passes on.
    let bad = |b: u8| (b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r');
    if s.as_bytes()
        .chunks(64)
        .any(|c| c.iter().fold(false, |acc, &b| acc | bad(b)))
    {
        return Err(XmlError::NotWellFormed("a control character".into()));
    }
    Ok(())
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// XML whitespace (S): space, tab, CR, LF.
pub fn is_ws(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
}
