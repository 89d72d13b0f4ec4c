//! The tokenizer under the framer: finds the next token (text, reference, tag, CDATA
//! section, declaration) at a position of a byte buffer that may end anywhere, and
//! says `Incomplete` when the buffer ends inside one. It finds boundaries, checks the
//! syntax of tags and names and each attribute as it reads it (no duplicate names;
//! values without `<` or forbidden characters, UTF-8, with legal references), and
//! notes what text holds; what else a token must satisfy in a stream (UTF-8 of names
//! and text, references in text, matching end tags, limits) the framer checks.
//!
//! Hand-written because the masked relay runs it over every byte a client receives:
//! it looks at each byte once — names a table lookup a
//! byte, attribute values and text sixteen bytes at a time (`lanes`), noting on the
//! way what the framer and the rewriter would otherwise look for again — and keeps
//! attribute positions in a reused list, so a stanza costs no allocation and no
//! re-decoding.

use super::XmlError;
use super::escape;
use super::lanes;

/// One token starting at the position `next` was called with. Positions are byte
/// offsets into the buffer; `end` is one past the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    /// The buffer ends inside the token (or at its very start).
    Incomplete,
    /// Character data up to `end`: up to the next `<` or `&`, or to the end of the
    /// buffer (a piece of a longer text; a multi-byte character cut by the end waits
    /// for the next call). Not yet checked to be UTF-8; `holds` says whether it has
    /// non-ASCII bytes, control characters XML forbids, a `/` (`HAS_*`).
    Text { end: usize, holds: u8 },
    /// `&name;`: the name is `name_start..end - 1`.
    Ref { name_start: usize, end: usize },
    /// `<![CDATA[…]]>`, content `content_start..end - 3`.
    CData { content_start: usize, end: usize },
    /// `<name attributes>` or `<name attributes/>`; the attributes are in the list
    /// `next` filled. `ascii_names`: the tag's name and attribute names are ASCII
    /// (else they still need their UTF-8 checked).
    Start {
        name_end: usize,
        empty: bool,
        end: usize,
        ascii_names: bool,
    },
    /// `</name>`, the name `at + 2..name_end`.
    End { name_end: usize, end: usize },
    /// `<?xml …?>`, content (after `<?`, before `?>`) `at + 2..end - 2`.
    Decl { end: usize },
}

/// Where one attribute stands: `key_start..key_end`, value `value_start..value_end`
/// (between the quotes, as written), and what the value holds (`HAS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Attr {
    pub key_start: usize,
    pub key_end: usize,
    pub value_start: usize,
    pub value_end: usize,
    pub holds: u8,
}

/// `Attr::holds`: a `<`, an `&`, a control character XML forbids, a non-ASCII byte,
/// a `/` (which, in a JID, starts the resource).
pub(super) const HAS_LT: u8 = 1;
pub(super) const HAS_AMP: u8 = 2;
pub(super) const HAS_CONTROL: u8 = 4;
pub(super) const HAS_NON_ASCII: u8 = 8;
pub(super) const HAS_SLASH: u8 = 128;
const HOLDS: u8 = HAS_LT | HAS_AMP | HAS_CONTROL | HAS_NON_ASCII | HAS_SLASH;

/// Byte classes, one table lookup per byte of markup.
const NAME: u8 = 16;
const NAME_START: u8 = 32;
const SPACE: u8 = 64;

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut k = 0;
        // Bytes beyond ASCII may start and continue a name too, but they are not
        // `NAME`: the name scan hands them to its slower loop, which notes them.
        if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            k |= NAME | NAME_START;
        } else if c >= 0x80 {
            k |= NAME_START;
        } else if c.is_ascii_digit() || c == b'-' || c == b'.' {
            k |= NAME;
        }
        if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
            k |= SPACE;
        } else if c < 0x20 {
            k |= HAS_CONTROL;
        }
        if c == b'<' {
            k |= HAS_LT;
        }
        if c == b'&' {
            k |= HAS_AMP;
        }
        if c == b'/' {
            k |= HAS_SLASH;
        }
        if c >= 0x80 {
            k |= HAS_NON_ASCII;
        }
        t[b] = k;
        b += 1;
    }
    t
}

static CLASS: [u8; 256] = classes();

/// A character below 0x20 that XML forbids (all but tab, line feed, carriage return).
#[inline(always)]
pub(super) fn is_control(b: u8) -> bool {
    CLASS[b as usize] & HAS_CONTROL != 0
}

/// XML whitespace (S).
#[inline]
pub(super) fn is_space(b: u8) -> bool {
    CLASS[b as usize] & SPACE != 0
}

/// Bytes that may end a name inside a tag.
#[inline]
fn ends_name(b: u8) -> bool {
    is_space(b) || matches!(b, b'/' | b'>' | b'=')
}

/// The end of the name at `buf[i..]`: ASCII name characters (letters, digits,
/// `-._:`, not starting with a digit, `-` or `.`) checked strictly, anything beyond
/// ASCII let through (the non-ASCII name characters are many, and no stanza's meaning
/// depends on them; the framer checks the UTF-8 of a tag whose names `name_noting`
/// saw such bytes in). `Ok(None)`: the buffer ends inside it.
#[inline(always)]
fn name(buf: &[u8], i: usize) -> Result<Option<usize>, XmlError> {
    name_noting(buf, i, &mut 0)
}

/// `name`, setting the top bit of `seen` when the name has bytes beyond ASCII (so
/// a tag's names are known to be ASCII without another look at them).
#[inline(always)]
fn name_noting(buf: &[u8], mut i: usize, seen: &mut u8) -> Result<Option<usize>, XmlError> {
    let start = i;
    while let Some(&b) = buf.get(i) {
        if CLASS[b as usize] & NAME == 0 {
            if b >= 0x80 {
                return name_beyond_ascii(buf, start, i, seen);
            }
            return name_ends(buf, start, i).map(Some);
        }
        i += 1;
    }
    Ok(None)
}

/// The rest of a name from its first byte beyond ASCII at `i`.
#[cold]
#[inline(never)]
fn name_beyond_ascii(
    buf: &[u8],
    start: usize,
    mut i: usize,
    seen: &mut u8,
) -> Result<Option<usize>, XmlError> {
    *seen |= 0x80;
    while let Some(&b) = buf.get(i) {
        if CLASS[b as usize] & NAME == 0 && b < 0x80 {
            return name_ends(buf, start, i).map(Some);
        }
        i += 1;
    }
    Ok(None)
}

/// What must hold where a name stops at `end`: it is not empty, starts with a
/// name-start character, and stops at a byte that may follow a name in a tag. The
/// error is built out of line, which keeps the scan of names small enough to inline.
#[inline(always)]
fn name_ends(buf: &[u8], start: usize, end: usize) -> Result<usize, XmlError> {
    if end == start || CLASS[buf[start] as usize] & NAME_START == 0 || !ends_name(buf[end]) {
        return Err(bad_name(buf, start, end));
    }
    Ok(end)
}

#[cold]
#[inline(never)]
fn bad_name(buf: &[u8], start: usize, end: usize) -> XmlError {
    if end == start || CLASS[buf[start] as usize] & NAME_START == 0 {
        XmlError::NotWellFormed("a tag without a proper name".into())
    } else {
        XmlError::NotWellFormed(format!("`{}` in a name", buf[end].escape_ascii()))
    }
}

/// An attribute value the tokenizer saw something in (`holds`, `HAS_*`): no
/// `<` or forbidden control character, UTF-8, and only legal references. Out of line:
/// most values hold none of these.
#[inline(never)]
fn check_value(value: &[u8], holds: u8) -> Result<(), XmlError> {
    if holds & HAS_LT != 0 {
        return Err(XmlError::NotWellFormed("`<` in an attribute value".into()));
    }
    if holds & HAS_CONTROL != 0 {
        return Err(XmlError::NotWellFormed("a control character".into()));
    }
    if holds & HAS_NON_ASCII != 0 {
        utf8(value)?;
    }
    if holds & HAS_AMP != 0 {
        // Every reference in the value, by the same rules as in text.
        let mut rest = value;
        while let Some(i) = memchr::memchr(b'&', rest) {
            let Some(j) = memchr::memchr(b';', &rest[i..]) else {
                return Err(XmlError::NotWellFormed("`&` without a reference".into()));
            };
            escape::reference(utf8(&rest[i + 1..i + j])?)?;
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

pub(super) fn utf8(b: &[u8]) -> Result<&str, XmlError> {
    std::str::from_utf8(b).map_err(|_| XmlError::NotWellFormed("invalid UTF-8".into()))
}

/// The longest reference dealer waits for: `&#x10FFFF;` and the entity names are far
/// shorter, so a longer one is a fault, not a slow peer.
const MAX_REF: usize = 32;

/// The token at `buf[at..]`. `decl_allowed`: whether `<?xml` may start a declaration
/// here (the very start of a stream). Attributes of a `Start` are left in `attrs`; a
/// tag with more than `max_attributes` fails as soon as the one too many is read.
#[inline(always)]
pub(super) fn next(
    buf: &[u8],
    at: usize,
    decl_allowed: bool,
    attrs: &mut Vec<Attr>,
    max_attributes: usize,
) -> Result<Token, XmlError> {
    let Some(&first) = buf.get(at) else {
        return Ok(Token::Incomplete);
    };
    match first {
        b'<' => markup(buf, at, decl_allowed, attrs, max_attributes),
        b'&' => reference(buf, at),
        _ => match text_end(buf, at) {
            (end, _) if end == at => Ok(Token::Incomplete),
            (end, holds) => Ok(Token::Text { end, holds }),
        },
    }
}

/// Where the text starting at `at` ends — before the next `<` or `&`, or before a
/// multi-byte character cut by the end of the buffer — and what it holds: sixteen
/// bytes at a time (`lanes`), the last few one at a time.
#[inline(always)]
fn text_end(buf: &[u8], at: usize) -> (usize, u8) {
    match lanes::text_end(buf, at) {
        Ok(found) => found,
        Err((from, holds)) => text_end_bytewise(buf, at, from, holds),
    }
}

/// `text_end` for the last bytes of the buffer, from `from`, with what was seen
/// before it.
#[inline(never)]
fn text_end_bytewise(buf: &[u8], at: usize, from: usize, mut holds: u8) -> (usize, u8) {
    for (i, &b) in buf.iter().enumerate().skip(from) {
        if b == b'<' || b == b'&' {
            return (i, holds);
        }
        // The loop stops at `<` and `&`, so of the class bits only these can be set.
        holds |= CLASS[b as usize] & (HAS_NON_ASCII | HAS_SLASH | HAS_CONTROL);
    }
    // Hold back the start of a character whose continuation bytes are missing.
    let len = buf.len();
    let tail_start = len.saturating_sub(3).max(at);
    for i in (tail_start..len).rev() {
        let b = buf[i];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return (if len - i < need { i } else { len }, holds);
    }
    (len, holds)
}

fn reference(buf: &[u8], at: usize) -> Result<Token, XmlError> {
    let window = &buf[at + 1..buf.len().min(at + 1 + MAX_REF)];
    match memchr::memchr(b';', window) {
        Some(i)
            if !window[..i]
                .iter()
                .any(|&b| is_space(b) || b == b'<' || b == b'&') =>
        {
            Ok(Token::Ref {
                name_start: at + 1,
                end: at + 1 + i + 1,
            })
        }
        None if window.len() < MAX_REF
            && !window
                .iter()
                .any(|&b| is_space(b) || b == b'<' || b == b'&') =>
        {
            Ok(Token::Incomplete)
        }
        _ => Err(XmlError::NotWellFormed("`&` without a reference".into())),
    }
}

#[inline(always)]
fn markup(
    buf: &[u8],
    at: usize,
    decl_allowed: bool,
    attrs: &mut Vec<Attr>,
    max_attributes: usize,
) -> Result<Token, XmlError> {
    let Some(&second) = buf.get(at + 1) else {
        return Ok(Token::Incomplete);
    };
    match second {
        b'/' => end_tag(buf, at),
        b'!' => bang(buf, at),
        b'?' => {
            let rest = &buf[at..];
            if !decl_allowed {
                return Err(XmlError::Restricted("processing instruction"));
            }
            if rest.len() < 6 {
                return if b"<?xml".starts_with(&rest[..rest.len().min(5)]) {
                    Ok(Token::Incomplete)
                } else {
                    Err(XmlError::Restricted("processing instruction"))
                };
            }
            if !rest.starts_with(b"<?xml") || !(is_space(rest[5]) || rest[5] == b'?') {
                return Err(XmlError::Restricted("processing instruction"));
            }
            match memchr::memmem::find(&rest[5..], b"?>") {
                Some(i) => Ok(Token::Decl {
                    end: at + 5 + i + 2,
                }),
                None => Ok(Token::Incomplete),
            }
        }
        _ => start_tag(buf, at, attrs, max_attributes),
    }
}

fn bang(buf: &[u8], at: usize) -> Result<Token, XmlError> {
    const CDATA: &[u8] = b"<![CDATA[";
    let rest = &buf[at..];
    match rest.get(2) {
        None => Ok(Token::Incomplete),
        Some(b'-') => Err(XmlError::Restricted("comment")),
        Some(b'D') => Err(XmlError::Restricted("DTD")),
        Some(b'[') => {
            let n = rest.len().min(CDATA.len());
            if rest[..n] != CDATA[..n] {
                return Err(XmlError::NotWellFormed("malformed `<![`".into()));
            }
            if n < CDATA.len() {
                return Ok(Token::Incomplete);
            }
            let content_start = at + CDATA.len();
            match memchr::memmem::find(&buf[content_start..], b"]]>") {
                Some(i) => Ok(Token::CData {
                    content_start,
                    end: content_start + i + 3,
                }),
                None => Ok(Token::Incomplete),
            }
        }
        Some(_) => Err(XmlError::NotWellFormed("malformed `<!`".into())),
    }
}

fn end_tag(buf: &[u8], at: usize) -> Result<Token, XmlError> {
    let Some(name_end) = name(buf, at + 2)? else {
        return Ok(Token::Incomplete);
    };
    let mut i = name_end;
    while i < buf.len() && is_space(buf[i]) {
        i += 1;
    }
    match buf.get(i) {
        None => Ok(Token::Incomplete),
        Some(b'>') => Ok(Token::End {
            name_end,
            end: i + 1,
        }),
        Some(_) => Err(XmlError::NotWellFormed("malformed end tag".into())),
    }
}

/// Where an attribute value ends (its closing `quote` in `rest`), and what it holds:
/// sixteen bytes at a time (`lanes`), the last few one at a time (out of line, so
/// the tag scanner around this stays small and keeps the vector constants in
/// registers from one attribute to the next).
#[inline(always)]
fn value(rest: &[u8], quote: u8) -> Option<(usize, u8)> {
    match lanes::value_end(rest, quote) {
        Ok(found) => Some(found),
        Err((from, holds)) => value_bytewise(rest, quote, from, holds),
    }
}

/// `value`, byte by byte from `from`, with what was seen before it.
#[inline(never)]
fn value_bytewise(rest: &[u8], quote: u8, from: usize, mut holds: u8) -> Option<(usize, u8)> {
    for (j, &b) in rest.iter().enumerate().skip(from) {
        if b == quote {
            return Some((j, holds));
        }
        holds |= CLASS[b as usize];
    }
    None
}

/// After an attribute's name, at `i`: spaces, `=`, spaces, then the opening quote,
/// whose position is returned (`None`: the buffer ends first).
#[inline(never)]
fn spaced_equals(buf: &[u8], mut i: usize) -> Result<Option<usize>, XmlError> {
    let len = buf.len();
    while i < len && is_space(buf[i]) {
        i += 1;
    }
    match buf.get(i) {
        None => return Ok(None),
        Some(b'=') => i += 1,
        Some(_) => return Err(XmlError::NotWellFormed("attribute without a value".into())),
    }
    while i < len && is_space(buf[i]) {
        i += 1;
    }
    match buf.get(i) {
        None => Ok(None),
        Some(b'\'' | b'"') => Ok(Some(i)),
        Some(_) => Err(XmlError::NotWellFormed(
            "attribute value without quotes".into(),
        )),
    }
}

/// The value of the `encoding` pseudo-attribute of the XML declaration `buf[at..end]`
/// (`<?xml version='1.0' encoding='UTF-8'?>`, a `Token::Decl`), if it has one. Its
/// pseudo-attributes are read as a start tag's attributes are: separated by
/// whitespace, `name='value'` with either quote and spaces around the `=`. Once a
/// stream: out of line.
#[cold]
#[inline(never)]
pub(super) fn declared_encoding(
    buf: &[u8],
    at: usize,
    end: usize,
) -> Result<Option<&[u8]>, XmlError> {
    let bad = || Err(XmlError::NotWellFormed("malformed XML declaration".into()));
    // Up to the `?>`, after `<?xml`.
    let decl = &buf[..end - 2];
    // Names and values are otherwise only delimited, and a relay passes the
    // declaration on as written: the stream's encoding is UTF-8 from its first byte.
    utf8(&decl[at..])?;
    let mut i = at + 5;
    let mut encoding = None;
    loop {
        let space_start = i;
        while i < decl.len() && is_space(decl[i]) {
            i += 1;
        }
        if i == decl.len() {
            return Ok(encoding);
        }
        if i == space_start {
            return bad();
        }
        let key_start = i;
        let Some(key_end) = name(decl, i)? else {
            return bad();
        };
        let Some(quote_at) = spaced_equals(decl, key_end)? else {
            return bad();
        };
        let value_start = quote_at + 1;
        let Some((n, _)) = value(&decl[value_start..], decl[quote_at]) else {
            return bad();
        };
        if &decl[key_start..key_end] == b"encoding" {
            encoding = Some(&decl[value_start..value_start + n]);
        }
        i = value_start + n + 1;
    }
}

/// A start tag, its attributes recorded in `attrs`. Quotes are honoured, so `>` and
/// `/>` inside values do not end it.
#[inline(always)]
fn start_tag(
    buf: &[u8],
    at: usize,
    attrs: &mut Vec<Attr>,
    max_attributes: usize,
) -> Result<Token, XmlError> {
    attrs.clear();
    let len = buf.len();
    let bad = |what: &str| Err(XmlError::NotWellFormed(what.into()));
    let mut seen = 0;
    let mut keys_seen = 0u64;
    let Some(name_end) = name_noting(buf, at + 1, &mut seen)? else {
        return Ok(Token::Incomplete);
    };
    let mut i = name_end;
    loop {
        let space_start = i;
        while i < len && is_space(buf[i]) {
            i += 1;
        }
        let Some(&c) = buf.get(i) else {
            return Ok(Token::Incomplete);
        };
        match c {
            b'>' => {
                return Ok(Token::Start {
                    name_end,
                    empty: false,
                    end: i + 1,
                    ascii_names: seen < 0x80,
                });
            }
            b'/' => {
                return match buf.get(i + 1) {
                    None => Ok(Token::Incomplete),
                    Some(b'>') => Ok(Token::Start {
                        name_end,
                        empty: true,
                        end: i + 2,
                        ascii_names: seen < 0x80,
                    }),
                    Some(_) => bad("`/` inside a tag"),
                };
            }
            _ if i == space_start => return bad("attributes must be separated by whitespace"),
            _ => {}
        }
        let key_start = i;
        let Some(key_end) = name_noting(buf, i, &mut seen)? else {
            return Ok(Token::Incomplete);
        };
        // `key='value'`, as nearly everyone writes it, costs two compares; spaces
        // around the `=` take the longer way.
        i = match buf.get(key_end..key_end + 2) {
            Some(&[b'=', b'\'' | b'"']) => key_end + 1,
            _ => match spaced_equals(buf, key_end)? {
                Some(q) => q,
                None => return Ok(Token::Incomplete),
            },
        };
        let quote = buf[i];
        let value_start = i + 1;
        let Some((n, holds)) = value(&buf[value_start..], quote) else {
            return Ok(Token::Incomplete);
        };
        i = value_start + n;
        if attrs.len() == max_attributes {
            return Err(XmlError::TooManyAttributes(max_attributes));
        }
        // Checked here, while the attribute is at hand: no duplicate name (keys are
        // compared only when a 6-bit digest of length and last byte was seen before),
        // and a value that holds anything but plain characters is looked at closely.
        let key = &buf[key_start..key_end];
        let digest = 1u64 << ((key.len() * 8 + usize::from(buf[key_end - 1])) & 63);
        if keys_seen & digest != 0
            && attrs
                .iter()
                .any(|a| same_bytes(&buf[a.key_start..a.key_end], key))
        {
            return Err(XmlError::NotWellFormed(format!(
                "duplicate attribute `{}`",
                String::from_utf8_lossy(key)
            )));
        }
        keys_seen |= digest;
        if holds & (HAS_LT | HAS_CONTROL | HAS_NON_ASCII | HAS_AMP) != 0 {
            check_value(&buf[value_start..i], holds)?;
        }
        attrs.push(Attr {
            key_start,
            key_end,
            value_start,
            value_end: i,
            holds: holds & HOLDS,
        });
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> Result<Token, XmlError> {
        next(s.as_bytes(), 0, false, &mut Vec::new(), 64)
    }

    #[test]
    fn tokens_and_their_ends() {
        assert_eq!(tok("ab<c/>"), Ok(Token::Text { end: 2, holds: 0 }));
        assert_eq!(
            tok("&amp;x"),
            Ok(Token::Ref {
                name_start: 1,
                end: 5
            })
        );
        assert_eq!(
            tok("<a b='>' c=\"/>\"/>x"),
            Ok(Token::Start {
                name_end: 2,
                empty: true,
                end: 17,
                ascii_names: true,
            })
        );
        assert_eq!(
            tok("</a >"),
            Ok(Token::End {
                name_end: 3,
                end: 5
            })
        );
        assert_eq!(
            tok("<![CDATA[<x>]]>"),
            Ok(Token::CData {
                content_start: 9,
                end: 15
            })
        );
        let mut attrs = Vec::new();
        assert_eq!(
            next(b"<?xml version='1.0'?><s>", 0, true, &mut attrs, 64),
            Ok(Token::Decl { end: 21 })
        );
        next(b"<m  a = 'x' b=\"y\">", 0, false, &mut attrs, 64).unwrap();
        assert_eq!(
            attrs,
            [
                Attr {
                    key_start: 4,
                    key_end: 5,
                    value_start: 9,
                    value_end: 10,
                    holds: 0
                },
                Attr {
                    key_start: 12,
                    key_end: 13,
                    value_start: 15,
                    value_end: 16,
                    holds: 0
                }
            ]
        );
    }

    #[test]
    fn cut_anywhere_is_incomplete() {
        for whole in [
            "<a b='1' c=\"2\"/>",
            "</abc >",
            "&#x41;",
            "<![CDATA[x]]>",
            "<message to='a'>",
        ] {
            for cut in 0..whole.len() {
                assert_eq!(
                    tok(&whole[..cut]),
                    Ok(Token::Incomplete),
                    "{whole} at {cut}"
                );
            }
        }
        // A character cut by the end of the buffer waits; whole ones pass.
        assert_eq!(
            tok("ab\u{e9}"),
            Ok(Token::Text {
                end: 4,
                holds: HAS_NON_ASCII
            })
        );
        let cut = &"ab\u{1F3B2}".as_bytes()[..4];
        assert_eq!(
            next(cut, 0, false, &mut Vec::new(), 64),
            Ok(Token::Text {
                end: 2,
                holds: HAS_NON_ASCII
            })
        );
    }

    #[test]
    fn faults() {
        for bad in [
            "<a b>",
            "<a b=c>",
            "<a b='1'c='2'>",
            "< a>",
            "<a/ >",
            "</>",
            "</a b>",
            "& x;",
            "<!x",
            "<![CDATX[",
        ] {
            assert!(
                matches!(tok(bad), Err(XmlError::NotWellFormed(_))),
                "{bad}: {:?}",
                tok(bad)
            );
        }
        assert_eq!(tok("<!--"), Err(XmlError::Restricted("comment")));
        assert_eq!(tok("<!DOCTYPE"), Err(XmlError::Restricted("DTD")));
        assert_eq!(
            tok("<?xml?>"),
            Err(XmlError::Restricted("processing instruction"))
        );
    }
}
