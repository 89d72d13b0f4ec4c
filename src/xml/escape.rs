//! Escaping for the XML dealer writes itself, and unescaping for what it reads.
//! Everything dealer sends that came from a peer or the config passes through `text`
//! or `attr`; every attribute value or piece of text dealer reads for its meaning
//! passes through `unescape_attr` or `unescape_text`, and every reference through
//! `reference`, which the framer also uses to check the references it lets through.

use std::borrow::Cow;

use super::XmlError;

/// Escape character data (`&`, `<`, `>`).
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// Escape an attribute value for either quote style.
pub fn attr(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

fn escape(s: &str, quotes: bool) -> Cow<'_, str> {
    let needs = |b: u8| matches!(b, b'&' | b'<' | b'>') || (quotes && matches!(b, b'\'' | b'"'));
    if !s.bytes().any(needs) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' if quotes => out.push_str("&apos;"),
            '"' if quotes => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The character the reference `&name;` stands for. XMPP allows only the five
/// predefined entities and character references to characters XML allows (RFC 6120
/// §11.1); anything else is an error, an undeclared entity a restricted one.
pub(crate) fn reference(name: &str) -> Result<char, XmlError> {
    match name {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        _ if name.starts_with('#') => {
            // Digits only: `u32::from_str` would also take a sign.
            let n = if let Some(hex) = name.strip_prefix("#x") {
                (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| u32::from_str_radix(hex, 16).ok())
                    .flatten()
            } else {
                let dec = &name[1..];
                (!dec.is_empty() && dec.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| dec.parse::<u32>().ok())
                    .flatten()
            };
            match n.and_then(char::from_u32) {
                Some(c) if is_xml_char(c) => Ok(c),
                _ => Err(XmlError::NotWellFormed(format!(
                    "bad character reference &{name};"
                ))),
            }
        }
        _ => Err(XmlError::Restricted("entity reference")),
    }
}

/// Characters XML allows (its `Char` production).
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Character data as written (text between tags, or a value read as text) → the
/// characters it stands for: each reference replaced; nothing else changes.
pub fn unescape_text(raw: &str) -> Result<Cow<'_, str>, XmlError> {
    unescape(raw, false)
}

/// An attribute value as written → the value an XML parser reports (XML 1.0
/// §3.3.3, attribute-value normalisation for CDATA attributes): each reference
/// replaced, and each tab, line feed, carriage return or CR LF pair written as such
/// a space (written as references, they stay what they are).
pub fn unescape_attr(raw: &str) -> Result<Cow<'_, str>, XmlError> {
    unescape(raw, true)
}

fn unescape(raw: &str, attribute: bool) -> Result<Cow<'_, str>, XmlError> {
    let bytes = raw.as_bytes();
    let special = |b: u8| b == b'&' || (attribute && matches!(b, b'\t' | b'\n' | b'\r'));
    // Most values hold nothing to replace, and are handed back as they are.
    let Some(first) = bytes.iter().position(|&b| special(b)) else {
        return Ok(Cow::Borrowed(raw));
    };
    let mut out = String::with_capacity(raw.len());
    // `raw[plain..i]` is copied as it is when something to replace is met; every
    // byte looked for is ASCII, so each cut stands at a character boundary.
    let mut plain = 0;
    let mut i = first;
    while let Some(&b) = bytes.get(i) {
        if !special(b) {
            i += 1;
            continue;
        }
        out.push_str(&raw[plain..i]);
        i += match b {
            b'&' => {
                let Some(len) = memchr::memchr(b';', &bytes[i..]) else {
                    return Err(XmlError::NotWellFormed("`&` without a reference".into()));
                };
                out.push(reference(&raw[i + 1..i + len])?);
                len + 1
            }
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.push(' ');
                2
            }
            _ => {
                out.push(' ');
                1
            }
        };
        plain = i;
    }
    out.push_str(&raw[plain..]);
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(text("a<b&c>'\""), "a&lt;b&amp;c&gt;'\"");
        assert_eq!(attr("a'b\"c"), "a&apos;b&quot;c");
        assert!(matches!(text("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn unescapes() {
        let cases: &[(&str, &str, &str)] = &[
            // (as written, as text, as an attribute value)
            ("plain", "plain", "plain"),
            ("", "", ""),
            ("a&amp;b", "a&b", "a&b"),
            ("&lt;&gt;&amp;&apos;&quot;", "<>&'\"", "<>&'\""),
            ("&#65;&#x42;&#x1F3B2;", "AB\u{1F3B2}", "AB\u{1F3B2}"),
            ("caf\u{e9}&#233;", "caf\u{e9}\u{e9}", "caf\u{e9}\u{e9}"),
            // Line ends and tabs written as such are spaces in a value (a CR LF
            // pair one space); written as references they stay.
            ("a\tb\nc\rd\r\ne", "a\tb\nc\rd\r\ne", "a b c d e"),
            ("\r\n\r\n", "\r\n\r\n", "  "),
            ("&#9;&#10;&#13;", "\t\n\r", "\t\n\r"),
            ("&amp;amp;", "&amp;", "&amp;"),
        ];
        for &(raw, as_text, as_attr) in cases {
            assert_eq!(unescape_text(raw).as_deref(), Ok(as_text), "{raw:?}");
            assert_eq!(unescape_attr(raw).as_deref(), Ok(as_attr), "{raw:?}");
        }
        assert!(matches!(unescape_text("a&lt;b"), Ok(Cow::Owned(_))));
        assert!(matches!(unescape_attr("no refs"), Ok(Cow::Borrowed(_))));
        for bad in [
            "&",
            "a&b",
            "&#0;",
            "&#x;",
            "&#;",
            "&#+1;",
            "&#x110000;",
            "&#xD800;",
        ] {
            assert!(
                matches!(unescape_text(bad), Err(XmlError::NotWellFormed(_))),
                "{bad}"
            );
        }
        assert_eq!(
            unescape_attr("&xxe;"),
            Err(XmlError::Restricted("entity reference"))
        );
    }
}
