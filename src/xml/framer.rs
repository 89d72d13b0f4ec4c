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
//!
//! It is dealer's one XML reader: a visitor (`Visit`) sees what it reads — values and
//! text for the rewriting relay, tags as well for what needs structure — and
//! `read_element` and `read_start_tag` read one element outside a stream (a frame
//! read again for its tree, its addressing, or a rewrite) the same way.

use std::borrow::Cow;

use super::XmlError;
use super::escape;
use super::scan::{self, Attr, Token, same_bytes, utf8};
use super::stream_header::StreamHeader;

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

/// Limits that never fire: for reading again what a framer with the configured limits
/// already took.
pub(crate) const UNLIMITED: FrameLimits = FrameLimits {
    max_header_bytes: usize::MAX,
    max_stanza_bytes: usize::MAX,
    max_depth: usize::MAX,
    max_attributes: usize::MAX,
};

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
    stream_qname: super::stream_header::Text,
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
            stream_qname: super::stream_header::Text::Borrowed(""),
            attrs: Vec::new(),
        }
    }

    /// A framer for a stream whose header was already read (a relay taking over).
    pub fn in_stream(
        limits: FrameLimits,
        stream_qname: impl Into<super::stream_header::Text>,
    ) -> Framer {
        let mut f = Framer::new(limits);
        f.state = State::Stream;
        f.stream_qname = stream_qname.into();
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
    /// with its byte offset in `buf` — so a rewriter needs no second pass — and, if
    /// it wants them, every tag. A frame read over several calls is visited piece by
    /// piece, each piece once (a tag cut by a read is shown once it is whole).
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
                    escape::reference(utf8(&buf[name_start..end - 1])?)?;
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
                    if let Some(enc) = scan::declared_encoding(buf, at, end)?
                        && !enc.eq_ignore_ascii_case(b"utf-8")
                    {
                        return Err(XmlError::UnsupportedEncoding);
                    }
                    end
                }
                Token::Start {
                    name_end,
                    empty,
                    end,
                    ascii_names,
                } => {
                    if !ascii_names {
                        check_names(buf, at, name_end, &self.attrs)?;
                    }
                    let tag = Tag {
                        buf,
                        attrs: &self.attrs,
                        at,
                        name_end,
                        end,
                        empty,
                    };
                    if prolog {
                        let header = read_header(&tag, &self.limits, visit)?;
                        self.stream_qname.clone_from(&header.qname);
                        self.state = State::Stream;
                        return Ok(Some(self.emit(Frame::Header { len: end, header })));
                    }
                    if self.depth + 1 > self.limits.max_depth {
                        return Err(XmlError::TooDeep(self.limits.max_depth));
                    }
                    tag.show(visit);
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
                        if V::TAGS {
                            visit.end(&self.stream_qname, at);
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
                    if V::TAGS {
                        visit.end(checked_str(name), at);
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
}

/// The stream header the framer read as `tag`, shown to `visit`. Once a stream:
/// out of line.
#[cold]
#[inline(never)]
fn read_header<V: Visit>(
    tag: &Tag<'_>,
    limits: &FrameLimits,
    visit: &mut V,
) -> Result<StreamHeader, XmlError> {
    if tag.empty {
        return Err(XmlError::NotWellFormed("expected a stream header".into()));
    }
    if tag.end > limits.max_header_bytes {
        return Err(XmlError::HeaderTooBig(limits.max_header_bytes));
    }
    tag.show(visit);
    StreamHeader::from_attributes(tag.qname(), tag.attributes().map(|a| (a.key, a.value)))
}

/// Read the element at the front of `bytes` — whitespace before it skipped — as the
/// framer reads the elements of a stream, showing `visit` all of it; where it ends
/// (bytes after it are not read). For an element read again by a visitor that
/// wants more than a relay does (a tree, a rewrite outside a relay): no limits
/// apply, since the element was framed under them, but every rule of the framer does.
pub(crate) fn read_element<V: Visit>(bytes: &[u8], visit: &mut V) -> Result<usize, XmlError> {
    let mut framer = Framer::in_stream(UNLIMITED, "");
    framer.scanned = leading_space(bytes);
    match framer.parse_with(bytes, visit)? {
        Some(Frame::Element { len }) => Ok(len),
        Some(_) => Err(XmlError::NotWellFormed("expected an element".into())),
        None => Err(XmlError::NotWellFormed("incomplete element".into())),
    }
}

/// Read only the start tag of the element at the front of `bytes` — whitespace
/// before it skipped — checked as the framer checks it, and show it to `visit`;
/// where it ends. What follows it is not read: this is for a frame whose addressing
/// is all that is wanted.
pub(crate) fn read_start_tag<V: Visit>(bytes: &[u8], visit: &mut V) -> Result<usize, XmlError> {
    // The attribute list is the thread's, reused: this runs for every s2s stanza
    // and every SASL answer. Taken out while in use, so a visitor that reads another
    // tag gets a list of its own.
    let mut attrs = START_ATTRS.take();
    let r = start_tag_with(bytes, visit, &mut attrs);
    attrs.clear();
    // A tag with very many attributes does not leave its room behind.
    if attrs.capacity() <= 64 {
        START_ATTRS.set(attrs);
    }
    r
}

thread_local! {
    static START_ATTRS: std::cell::Cell<Vec<Attr>> = const { std::cell::Cell::new(Vec::new()) };
}

fn start_tag_with<V: Visit>(
    bytes: &[u8],
    visit: &mut V,
    attrs: &mut Vec<Attr>,
) -> Result<usize, XmlError> {
    let at = leading_space(bytes);
    match scan::next(bytes, at, false, attrs, usize::MAX)? {
        Token::Start {
            name_end,
            empty,
            end,
            ascii_names,
        } => {
            if !ascii_names {
                check_names(bytes, at, name_end, attrs)?;
            }
            let tag = Tag {
                buf: bytes,
                attrs,
                at,
                name_end,
                end,
                empty,
            };
            tag.show(visit);
            Ok(end)
        }
        Token::Incomplete => Err(XmlError::NotWellFormed("incomplete element".into())),
        _ => Err(XmlError::NotWellFormed("expected an element".into())),
    }
}

fn leading_space(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| !scan::is_space(b))
        .unwrap_or(bytes.len())
}

/// The UTF-8 of a tag's name and attribute names, when the tokenizer saw bytes
/// beyond ASCII in them.
#[cold]
fn check_names(buf: &[u8], at: usize, name_end: usize, attrs: &[Attr]) -> Result<(), XmlError> {
    utf8(&buf[at + 1..name_end])?;
    for a in attrs {
        utf8(&buf[a.key_start..a.key_end])?;
    }
    Ok(())
}

/// Bytes the framer has checked to be UTF-8 (names, values, text), as a string.
#[inline]
fn checked_str(b: &[u8]) -> &str {
    // Cannot fail: every caller passes bytes the framer checked (or ASCII ones).
    std::str::from_utf8(b).unwrap_or_default()
}

/// Sees what the framer reads (see `Framer::parse_with`): values and text always,
/// tags when `TAGS` says so. Offsets are byte positions in the buffer being read.
pub trait Visit {
    /// Whether the visitor wants attribute values (lets `NoVisit` cost nothing).
    const WANTS: bool = true;
    /// Whether the visitor wants tags (`start`, `end`): those that only look at values
    /// (the masked relay's rewriter) pay nothing for them.
    const TAGS: bool = false;
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
    /// A start tag, checked, after `attribute` was shown its values: the stream
    /// header's too (its frame says which it is). A tag written `<…/>` has no `end`.
    fn start(&mut self, _tag: &Tag<'_>) {}
    /// An end tag `</qname>` at byte `at`, matched with its start tag (the stream
    /// close's too).
    fn end(&mut self, _qname: &str, _at: usize) {}
}

/// A start tag the framer read: its qualified name and attributes as written, and
/// where each stands in the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Tag<'a> {
    buf: &'a [u8],
    attrs: &'a [Attr],
    at: usize,
    name_end: usize,
    end: usize,
    empty: bool,
}

impl<'a> Tag<'a> {
    /// The qualified name (`prefix:local` or `local`), at `at() + 1`.
    pub fn qname(&self) -> &'a str {
        checked_str(&self.buf[self.at + 1..self.name_end])
    }

    /// Where the tag's `<` stands.
    pub fn at(&self) -> usize {
        self.at
    }

    /// One past the tag's `>`.
    pub fn end(&self) -> usize {
        self.end
    }

    /// Whether it is written `<…/>`: an element without content.
    pub fn is_empty_element(&self) -> bool {
        self.empty
    }

    /// The attributes in the order written, namespace declarations among them.
    pub fn attributes(&self) -> impl ExactSizeIterator<Item = Attribute<'a>> + use<'a> {
        let buf = self.buf;
        self.attrs.iter().map(move |a| Attribute {
            key: checked_str(&buf[a.key_start..a.key_end]),
            key_at: a.key_start,
            value: checked_str(&buf[a.value_start..a.value_end]),
            value_at: a.value_start,
            hints: Hints::of(a.holds),
        })
    }

    /// Show `visit` this tag: its values, then, if it wants tags, the tag.
    #[inline(always)]
    fn show<V: Visit>(&self, visit: &mut V) {
        if V::WANTS {
            for a in self.attrs {
                visit.attribute(
                    &self.buf[a.key_start..a.key_end],
                    &self.buf[a.value_start..a.value_end],
                    a.value_start,
                    Hints::of(a.holds),
                );
            }
        }
        if V::TAGS {
            visit.start(self);
        }
    }
}

/// One attribute of a `Tag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The qualified name, at byte `key_at`.
    pub key: &'a str,
    pub key_at: usize,
    /// The value as written (escaped), between its quotes, at byte `value_at`.
    pub value: &'a str,
    pub value_at: usize,
    pub hints: Hints,
}

impl<'a> Attribute<'a> {
    /// The value an XML parser reports: references replaced, white space normalised
    /// (`escape::unescape_attr`).
    pub fn unescaped(&self) -> Result<Cow<'a, str>, XmlError> {
        escape::unescape_attr(self.value)
    }
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

impl Hints {
    /// From what the tokenizer noted in an attribute value (`scan::HAS_*`).
    #[inline(always)]
    fn of(holds: u8) -> Hints {
        Hints {
            refs: holds & scan::HAS_AMP != 0,
            slash: holds & scan::HAS_SLASH != 0,
        }
    }
}

/// The visitor of plain `parse`.
pub struct NoVisit;

impl Visit for NoVisit {
    const WANTS: bool = false;
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

/// XML whitespace (S): space, tab, CR, LF.
pub fn is_ws(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
}
