//! Escaping for the XML dealer writes itself. Everything dealer sends that came from a
//! peer or the config passes through here.

use std::borrow::Cow;

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

#[cfg(test)]
mod tests {
    #[test]
    fn escapes() {
        assert_eq!(super::text("a<b&c>'\""), "a&lt;b&amp;c&gt;'\"");
        assert_eq!(super::attr("a'b\"c"), "a&apos;b&quot;c");
        assert!(matches!(
            super::text("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
