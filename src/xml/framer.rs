//! The incremental XML framer: sans-IO, no DOM. Given the bytes read so far from one
//! stream, it answers "need more", or the next frame (the stream header, one complete
//! top-level element, whitespace between elements, the stream close), or an error.
//!
//! It runs the tokenizer (`scan`) over the unconsumed bytes and remembers how far it
//! has read, so a frame that arrives in pieces is not re-scanned from its start each
//! time (text is taken piece by piece; only a tag cut by a read is read again). It
//! enforces the limits of DESIGN.md §6 while the frame is still arriving (a header or
//! element that is too long fails before it is complete) and refuses what XMPP forbids
//! (RFC 6120 §11.1): DTDs, comments, processing instructions, and entity references
//! other than the five predefined ones and character references. Text, names and
//! attribute values must be UTF-8 without the control characters XML forbids.
//!
//! Contract: after `parse` returns a frame of `len` bytes, the caller removes exactly
//! those bytes from the front of its buffer before calling `parse` again.

use quick_xml::events::{BytesDecl, BytesStart};

use super::XmlError;
use super::header::StreamHeader;
use super::scan::{self, Attr, Token};

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
    /// Bytes at the front of the caller's buffer already read as complete tokens of
    /// the frame in progress.
    scanned: usize,
    /// Open elements inside the stream at `scanned`.
    depth: usize,
    /// Where the qualified names of the open elements stand in the caller's buffer
    /// (which keeps the frame in progress in place until it is handed out).
    open: Vec<(usize, usize)>,
    /// The header's qualified name, which the stream close must repeat.
    stream_qname: String,
    /// The attributes of the tag just read, reused from tag to tag.
    attrs: Vec<Attr>,
}

impl Framer {
    pub fn new(limits: FrameLimits) -> Framer {
        Framer {
            limits,
            state: State::Prolog,
            scanned: 0,
            depth: 0,
            open: Vec::new(),
            stream_qname: String::new(),
            attrs: Vec::new(),
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
        // A UTF-8 byte order mark may open the stream, before any declaration; inside
        // text it is the character U+FEFF, and between stanzas it is text, refused.
        let bom = if self.state == State::Prolog {
            if self.scanned == 0 && buf.len() < UTF8_BOM.len() && UTF8_BOM.starts_with(buf) {
                return self.need_more(buf.len());
            }
            if buf.starts_with(UTF8_BOM) {
                self.scanned = self.scanned.max(UTF8_BOM.len());
                UTF8_BOM.len()
            } else {
                0
            }
        } else {
            0
        };
        loop {
            let at = self.scanned;
            let prolog = self.state == State::Prolog;
            if !prolog && self.depth == 0 && buf.get(at) == Some(&b'&') {
                return Err(XmlError::TextAtStreamLevel);
            }
            let token = match self.closing_tag(buf, at) {
                Some(token) => token,
                None => scan::next(
                    buf,
                    at,
                    prolog && at == bom,
                    &mut self.attrs,
                    self.limits.max_attributes,
                )?,
            };
            let end = match token {
                Token::Incomplete => return self.need_more(buf.len()),
                Token::Text { end, holds } => {
                    let raw = &buf[at..end];
                    if prolog {
                        if !is_ws(raw) {
                            return Err(XmlError::NotWellFormed(
                                "text before the stream header".into(),
                            ));
                        }
                    } else if self.depth == 0 {
                        if !is_ws(raw) {
                            return Err(XmlError::TextAtStreamLevel);
                        }
                        return Ok(Some(self.emit(Frame::Whitespace { len: end })));
                    } else {
                        if holds & scan::HAS_NON_ASCII != 0 {
                            utf8(raw)?;
                        }
                        if holds & scan::HAS_CONTROL != 0 {
                            return Err(XmlError::NotWellFormed("a control character".into()));
                        }
                        let hints = Hints {
                            refs: false,
                            slash: holds & scan::HAS_SLASH != 0,
                        };
                        visit.text(raw, at, hints);
                    }
                    end
                }
                Token::Ref { name_start, end } => {
                    if prolog {
                        return Err(XmlError::NotWellFormed(
                            "text before the stream header".into(),
                        ));
                    }
                    check_reference(utf8(&buf[name_start..end - 1])?)?;
                    // The reference is part of the text node around it.
                    visit.reference(at, end - at);
                    end
                }
                Token::CData { content_start, end } => {
                    if prolog {
                        return Err(XmlError::NotWellFormed("expected a stream header".into()));
                    }
                    if self.depth == 0 {
                        return Err(XmlError::TextAtStreamLevel);
                    }
                    let text = utf8(&buf[content_start..end - 3])?;
                    check_chars(text)?;
                    visit.cdata(text, content_start);
                    end
                }
                Token::Decl { end } => {
                    // RFC 6120 §11.6: UTF-8 only.
                    let content = utf8(&buf[at + 2..end - 2])?;
                    let decl = BytesDecl::from_start(BytesStart::from_content(content, 3));
                    if let Some(enc) = decl.encoding() {
                        let enc = enc.map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
                        if !enc.eq_ignore_ascii_case("utf-8") {
                            return Err(XmlError::UnsupportedEncoding);
                        }
                    }
                    end
                }
                Token::Start {
                    name_end,
                    empty,
                    end,
                    ascii_names,
                } => {
                    let name = &buf[at + 1..name_end];
                    if !ascii_names {
                        utf8(name)?;
                        for a in &self.attrs {
                            utf8(&buf[a.key_start..a.key_end])?;
                        }
                    }
                    if prolog {
                        if empty {
                            return Err(XmlError::NotWellFormed("expected a stream header".into()));
                        }
                        if end > self.limits.max_header_bytes {
                            return Err(XmlError::HeaderTooBig(self.limits.max_header_bytes));
                        }
                        self.visit_attributes(buf, visit);
                        let tag = utf8(&buf[at..end])?;
                        let start = BytesStart::from_content(&tag[1..tag.len() - 1], name.len());
                        let header = StreamHeader::from_start(&start)?;
                        self.stream_qname.clone_from(&header.qname);
                        self.state = State::Stream;
                        return Ok(Some(self.emit(Frame::Header { len: end, header })));
                    }
                    if self.depth + 1 > self.limits.max_depth {
                        return Err(XmlError::TooDeep(self.limits.max_depth));
                    }
                    self.visit_attributes(buf, visit);
                    if empty {
                        if self.depth == 0 {
                            self.check_size(end)?;
                            return Ok(Some(self.emit(Frame::Element { len: end })));
                        }
                    } else {
                        self.depth += 1;
                        self.open.push((at + 1, name_end));
                    }
                    end
                }
                Token::End { name_end, end } => {
                    if prolog {
                        return Err(XmlError::NotWellFormed("expected a stream header".into()));
                    }
                    // Compared with names already checked, so not checked itself.
                    let name = &buf[at + 2..name_end];
                    if self.depth == 0 {
                        if name != self.stream_qname.as_bytes() {
                            return Err(XmlError::NotWellFormed("end tag without a start".into()));
                        }
                        self.state = State::Closed;
                        return Ok(Some(self.emit(Frame::Close { len: end })));
                    }
                    // `depth > 0` means a name was pushed.
                    let (start, start_end) = self.open.pop().unwrap_or((0, 0));
                    let open = &buf[start..start_end];
                    if !same_bytes(open, name) {
                        return Err(XmlError::NotWellFormed(format!(
                            "</{}> closes <{}>",
                            String::from_utf8_lossy(name),
                            String::from_utf8_lossy(open)
                        )));
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.check_size(end)?;
                        return Ok(Some(self.emit(Frame::Element { len: end })));
                    }
                    end
                }
            };
            // A frame growing past the stanza limit fails at `need_more` (the buffer
            // holds it) or when it is complete, so tokens need no check of their own.
            self.scanned = end;
        }
    }

    /// The end tag of the innermost open element at `at`, as it is almost always
    /// written (`</name>`): its name compared with the start tag's, not scanned
    /// again. Any other form is left to the tokenizer.
    #[inline(always)]
    fn closing_tag(&self, buf: &[u8], at: usize) -> Option<Token> {
        if buf.get(at..at + 2) != Some(b"</") {
            return None;
        }
        let &(start, end) = self.open.last()?;
        let name_end = at + 2 + (end - start);
        if buf.get(name_end) == Some(&b'>') && same_bytes(&buf[at + 2..name_end], &buf[start..end])
        {
            Some(Token::End {
                name_end,
                end: name_end + 1,
            })
        } else {
            None
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

    /// Show `visit` each attribute of the tag just read (the tokenizer checked
    /// them): its value as written, with its offset in `buf`.
    #[inline(always)]
    fn visit_attributes<V: Visit>(&self, buf: &[u8], visit: &mut V) {
        if !V::WANTS {
            return;
        }
        for a in &self.attrs {
            let hints = Hints {
                refs: a.holds & scan::HAS_AMP != 0,
                slash: a.holds & scan::HAS_SLASH != 0,
            };
            visit.attribute(
                &buf[a.key_start..a.key_end],
                &buf[a.value_start..a.value_end],
                a.value_start,
                hints,
            );
        }
    }
}

/// An attribute value the tokenizer saw something in (`holds`, `scan::HAS_*`): no
/// `<` or forbidden control character, UTF-8, and only legal references. Out of line:
/// most values hold none of these.
#[inline(never)]
pub(super) fn check_value(value: &[u8], holds: u8) -> Result<(), XmlError> {
    if holds & scan::HAS_LT != 0 {
        return Err(XmlError::NotWellFormed("`<` in an attribute value".into()));
    }
    if holds & scan::HAS_CONTROL != 0 {
        return Err(XmlError::NotWellFormed("a control character".into()));
    }
    if holds & scan::HAS_NON_ASCII != 0 {
        utf8(value)?;
    }
    if holds & scan::HAS_AMP != 0 {
        // Every reference in the value, by the same rules as in text.
        let mut rest = value;
        while let Some(i) = memchr::memchr(b'&', rest) {
            let Some(j) = memchr::memchr(b';', &rest[i..]) else {
                return Err(XmlError::NotWellFormed("`&` without a reference".into()));
            };
            check_reference(utf8(&rest[i + 1..i + j])?)?;
            rest = &rest[i + j + 1..];
        }
    }
    Ok(())
}

/// Byte equality written out: attribute names are a few bytes, too short to be worth
/// a call to `memcmp`.
#[inline]
pub(super) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

fn utf8(b: &[u8]) -> Result<&str, XmlError> {
    std::str::from_utf8(b).map_err(|_| XmlError::NotWellFormed("invalid UTF-8".into()))
}

/// Sees the values the framer reads (see `Framer::parse_with`).
pub trait Visit {
    /// Whether the visitor wants anything (lets `NoVisit` cost nothing).
    const WANTS: bool = true;
    /// An attribute value as written (escaped, UTF-8), at byte `at` of the buffer,
    /// with what the tokenizer noticed in it.
    fn attribute(&mut self, _key: &[u8], _value: &[u8], _at: usize, _hints: Hints) {}
    /// Character data as written (UTF-8, checked), at byte `at` of the buffer (a
    /// piece of a text node), with what the framer noticed in it.
    fn text(&mut self, _value: &[u8], _at: usize, _hints: Hints) {}
    /// The content of a CDATA section, at byte `at` of the buffer.
    fn cdata(&mut self, _value: &str, _at: usize) {}
    /// A character or entity reference of `len` bytes at byte `at`, inside text.
    fn reference(&mut self, _at: usize, _len: usize) {}
}

/// What an attribute value or a piece of text holds, noticed while it was read, so
/// a visitor need not look for it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    /// A reference (an `&`).
    pub refs: bool,
    /// A `/`.
    pub slash: bool,
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
