//! JID rewriting for `domains: masked`, without a DOM: an element is read with the
//! one XML parser, the attribute values and text nodes that hold a JID to change are
//! found by position, and the output is the input with only those byte ranges
//! replaced. Everything else — whitespace, quoting, prefixes, unknown payloads — is
//! copied unchanged.
//!
//! Which JIDs change is decided by a [`Rule`]:
//! - [`Rule::Mask`] (backend → outside): every JID at the backend's internal domain or
//!   a subdomain of it becomes the public domain (or the same subdomain of it),
//!   wherever it stands: attributes, `<jid/>` and form `<value/>` text, nested
//!   `<forwarded/>` stanzas, `<stanza-id by/>`, `<delay from/>`, `<error by/>`.
//! - [`Rule::Unmask`] (client → its backend): only the user's own JID and the bare
//!   public domain become the internal domain; other users of the public domain stay
//!   as they are, so the backend routes them through dealer like any foreign JID.
//! - [`Rule::To`] (s2s into a backend): only the top-level `to`.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::jid::same_domain;
use crate::xml::XmlError;

#[derive(Debug, Clone, Copy)]
pub enum Rule<'a> {
    Mask {
        internal: &'a str,
        public: &'a str,
    },
    Unmask {
        public: &'a str,
        internal: &'a str,
        own_local: &'a str,
    },
    To {
        public: &'a str,
        internal: &'a str,
    },
}

impl<'a> Rule<'a> {
    /// The replacement for a raw JID-valued string, if it needs one: the new text for
    /// the domain part, and that part's byte range in `raw`.
    fn map(&self, raw: &str) -> Option<(std::ops::Range<usize>, Replacement<'a>)> {
        let bare_end = memchr::memchr(b'/', raw.as_bytes()).unwrap_or(raw.len());
        let bare = &raw[..bare_end];
        // Most values (ids, types, bodies) do not end in the domain: reject them
        // before any closer look.
        let needle = match *self {
            Rule::Mask { internal, .. } => internal,
            Rule::Unmask { public, .. } | Rule::To { public, .. } => public,
        };
        if bare.len() < needle.len()
            || !bare.as_bytes()[bare.len() - needle.len()..].eq_ignore_ascii_case(needle.as_bytes())
        {
            return None;
        }
        if bare.len() > 3071 || !looks_like_jid(bare) {
            return None;
        }
        let (local, domain, dstart) = match memchr::memchr(b'@', bare.as_bytes()) {
            Some(i) => (Some(&bare[..i]), &bare[i + 1..], i + 1),
            None => (None, bare, 0),
        };
        let range = dstart..dstart + domain.len();
        match *self {
            Rule::Mask { internal, public } => {
                let keep = if same_domain(domain, internal) {
                    0
                } else {
                    // A subdomain: `conference.node1.internal` → `conference.example.com`.
                    let cut = domain.len().checked_sub(internal.len())?;
                    let (sub, rest) = domain.split_at(cut);
                    if cut < 2 || !sub.ends_with('.') || !rest.eq_ignore_ascii_case(internal) {
                        return None;
                    }
                    cut
                };
                Some((
                    range,
                    Replacement {
                        keep,
                        domain: public,
                    },
                ))
            }
            Rule::Unmask {
                public,
                internal,
                own_local,
            } => {
                if !same_domain(domain, public) {
                    return None;
                }
                let swap = Replacement {
                    keep: 0,
                    domain: internal,
                };
                match local {
                    None => Some((range, swap)),
                    Some(l) if same_user(l, own_local) => Some((range, swap)),
                    Some(_) => None,
                }
            }
            Rule::To { public, internal } => same_domain(domain, public).then_some((
                range,
                Replacement {
                    keep: 0,
                    domain: internal,
                },
            )),
        }
    }
}

/// Compare a localpart as written with the session's normalised one.
fn same_user(written: &str, normalised: &str) -> bool {
    written == normalised
        || crate::routing::normalise::normalise(crate::config::Normalise::Nodeprep, written)
            .is_ok_and(|n| n == normalised)
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// A plausible JID: no whitespace or markup characters, at most one `@` before the
/// domain, and a domain of DNS-ish characters.
fn looks_like_jid(bare: &str) -> bool {
    let domain = bare
        .rsplit_once('@')
        .map_or(bare, |(l, d)| if l.contains('@') { "" } else { d });
    !domain.is_empty()
        && !bare
            .bytes()
            .any(|b| b.is_ascii_whitespace() || matches!(b, b'<' | b'>' | b'"' | b'\'' | b'&'))
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') || b >= 0x80)
}

/// Rewrite `input` (one complete element, or a stream header) into `out` by `rule`.
/// Returns whether anything changed; when nothing did, `out` holds a plain copy.
pub fn rewrite(input: &[u8], rule: Rule<'_>, out: &mut Vec<u8>) -> Result<bool, XmlError> {
    out.clear();
    Rewriter::new(rule).append(input, out)
}

/// A rule prepared for many elements: the substring search is built once and the
/// edit list is reused, so rewriting a stream allocates nothing per stanza.
pub struct Rewriter<'a> {
    rule: Rule<'a>,
    finder: memchr::memmem::Finder<'a>,
    edits: Vec<(usize, usize, Replacement<'a>)>,
}

/// What replaces a domain part: the new domain, after an optional kept prefix.
#[derive(Debug, Clone, Copy)]
struct Replacement<'a> {
    /// `conference.` of `conference.node1.internal`, borrowed from the input.
    keep: usize,
    domain: &'a str,
}

impl<'a> Rewriter<'a> {
    pub fn new(rule: Rule<'a>) -> Rewriter<'a> {
        let needle: &'a str = match rule {
            Rule::Mask { internal, .. } => internal,
            Rule::Unmask { public, .. } | Rule::To { public, .. } => public,
        };
        Rewriter {
            rule,
            finder: memchr::memmem::Finder::new(needle.as_bytes()),
            edits: Vec::new(),
        }
    }

    fn may_apply(&self, bytes: &[u8]) -> bool {
        self.finder.find(bytes).is_some()
            || (!matches!(self.rule, Rule::Mask { .. })
                && contains_ignore_case(bytes, self.finder.needle()))
    }

    /// Append `input`, rewritten, to `out`; whether anything changed.
    pub fn append(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool, XmlError> {
        if !self.may_apply(input) {
            out.extend_from_slice(input);
            return Ok(false);
        }
        self.edits.clear();
        let rule = self.rule;
        let base = input.as_ptr() as usize;
        let offset = |s: &str| s.as_ptr() as usize - base;
        let mut reader = Reader::from_reader(input);
        reader.config_mut().trim_text(false);
        let only_top_to = matches!(rule, Rule::To { .. });
        let bad = |e: quick_xml::Error| XmlError::NotWellFormed(e.to_string());
        loop {
            match reader.read_event().map_err(bad)? {
                Event::Start(e) | Event::Empty(e) => {
                    attributes(&e, rule, only_top_to, &offset, &mut self.edits)?;
                    if only_top_to {
                        break;
                    }
                }
                Event::Text(t) if !only_top_to => {
                    let s: &str = &t;
                    let trimmed = s.trim();
                    if !trimmed.is_empty()
                        && let Some((r, new)) = rule.map(trimmed)
                    {
                        let at = offset(trimmed);
                        self.edits.push((at + r.start, at + r.end, new));
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if self.edits.is_empty() {
            out.extend_from_slice(input);
            return Ok(false);
        }
        self.edits.sort_unstable_by_key(|e| e.0);
        let mut at = 0;
        for (start, end, new) in &self.edits {
            out.extend_from_slice(&input[at..start + new.keep]);
            out.extend_from_slice(new.domain.as_bytes());
            at = *end;
        }
        out.extend_from_slice(&input[at..]);
        Ok(true)
    }
}

impl crate::xml::framer::Visit for Rewriter<'_> {
    fn attribute(&mut self, key: &str, value: &str, at: usize) {
        let only_to = matches!(self.rule, Rule::To { .. });
        if key == "xmlns" || key.starts_with("xmlns:") || (only_to && key != "to") {
            return;
        }
        if let Some((r, new)) = self.rule.map(value) {
            self.edits.push((at + r.start, at + r.end, new));
        }
    }

    fn text(&mut self, value: &str, at: usize) {
        if matches!(self.rule, Rule::To { .. }) {
            return;
        }
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return;
        }
        let at = at + (trimmed.as_ptr() as usize - value.as_ptr() as usize);
        if let Some((r, new)) = self.rule.map(trimmed) {
            self.edits.push((at + r.start, at + r.end, new));
        }
    }
}

impl Rewriter<'_> {
    /// After the framer visited a whole frame (`Framer::parse_with(buf, self)`), append
    /// `buf[..len]` with the recorded edits applied; the edits are then forgotten.
    /// Offsets were taken relative to `buf`, which must start with the frame.
    pub fn emit(&mut self, frame: &[u8], out: &mut Vec<u8>) {
        if self.edits.is_empty() {
            out.extend_from_slice(frame);
            return;
        }
        self.edits.sort_unstable_by_key(|e| e.0);
        let mut at = 0;
        for (start, end, new) in &self.edits {
            if *start < at || *end > frame.len() {
                continue; // cannot happen for edits of this frame; never corrupt output
            }
            out.extend_from_slice(&frame[at..start + new.keep]);
            out.extend_from_slice(new.domain.as_bytes());
            at = *end;
        }
        out.extend_from_slice(&frame[at..]);
        self.edits.clear();
    }

    /// Forget edits recorded for a frame that will not be emitted.
    pub fn discard(&mut self) {
        self.edits.clear();
    }
}

fn attributes<'a>(
    e: &BytesStart<'_>,
    rule: Rule<'a>,
    only_to: bool,
    offset: &impl Fn(&str) -> usize,
    edits: &mut Vec<(usize, usize, Replacement<'a>)>,
) -> Result<(), XmlError> {
    for a in e.attributes() {
        let a = a.map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
        let key = a.key.as_ref();
        if key == "xmlns" || key.starts_with("xmlns:") || (only_to && key != "to") {
            continue;
        }
        // Values borrowed from the input have a position there; an owned value (only
        // when quick-xml had to transform it) cannot be a plain JID anyway.
        let Cow::Borrowed(v) = a.value else { continue };
        if let Some((r, new)) = rule.map(v) {
            let at = offset(v);
            edits.push((at + r.start, at + r.end, new));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: Rule = Rule::Mask {
        internal: "node1.internal",
        public: "example.com",
    };
    const UNMASK: Rule = Rule::Unmask {
        public: "example.com",
        internal: "node1.internal",
        own_local: "alice",
    };

    fn run(input: &str, rule: Rule) -> String {
        let mut out = Vec::new();
        rewrite(input.as_bytes(), rule, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn mask_everywhere_jids_stand() {
        let cases = [
            (
                "<message from='bob@example.com/x' to=\"alice@node1.internal/phone\" id='1'><body>hi node1.internal friends</body></message>",
                "<message from='bob@example.com/x' to=\"alice@example.com/phone\" id='1'><body>hi node1.internal friends</body></message>",
            ),
            (
                "<iq type='result' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@node1.internal/res</jid></bind></iq>",
                "<iq type='result' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@example.com/res</jid></bind></iq>",
            ),
            (
                "<message from='alice@node1.internal' to='alice@node1.internal/r2'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message from='bob@example.com/x' to='alice@node1.internal/r1'><body>b</body></message></forwarded></received></message>",
                "<message from='alice@example.com' to='alice@example.com/r2'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message from='bob@example.com/x' to='alice@example.com/r1'><body>b</body></message></forwarded></received></message>",
            ),
            (
                "<message><stanza-id xmlns='urn:xmpp:sid:0' by='alice@node1.internal' id='s'/><delay xmlns='urn:xmpp:delay' from='node1.internal' stamp='x'/><error by='node1.internal' type='cancel'/></message>",
                "<message><stanza-id xmlns='urn:xmpp:sid:0' by='alice@example.com' id='s'/><delay xmlns='urn:xmpp:delay' from='example.com' stamp='x'/><error by='example.com' type='cancel'/></message>",
            ),
            (
                "<x xmlns='jabber:x:data'><field var='j'><value> conference.node1.internal </value></field></x>",
                "<x xmlns='jabber:x:data'><field var='j'><value> conference.example.com </value></field></x>",
            ),
            (
                "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='node1.internal' id='i' version='1.0'>",
                "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='i' version='1.0'>",
            ),
            // Not JIDs at the domain, or not JIDs at all: untouched.
            (
                "<m from='x@node1.internalx'/>",
                "<m from='x@node1.internalx'/>",
            ),
            (
                "<m from='x@evilnode1.internal'/>",
                "<m from='x@evilnode1.internal'/>",
            ),
            (
                "<body>mail me at a@node1.internal please</body>",
                "<body>mail me at a@node1.internal please</body>",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(run(input, MASK), want, "{input}");
        }
    }

    #[test]
    fn unmask_only_own_jid_and_bare_domain() {
        let cases = [
            (
                "<message to='bob@example.com' from='alice@example.com/r'/>",
                "<message to='bob@example.com' from='alice@node1.internal/r'/>",
            ),
            (
                "<iq to='example.com' type='get' id='d'/>",
                "<iq to='node1.internal' type='get' id='d'/>",
            ),
            (
                "<iq to='Alice@Example.COM' type='get' id='v'/>",
                "<iq to='Alice@node1.internal' type='get' id='v'/>",
            ),
            (
                "<presence to='conference.example.com'/>",
                "<presence to='conference.example.com'/>",
            ),
            (
                "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>",
                "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='node1.internal' version='1.0'>",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(run(input, UNMASK), want, "{input}");
        }
    }

    #[test]
    fn to_only() {
        let rule = Rule::To {
            public: "example.com",
            internal: "node2.internal",
        };
        assert_eq!(
            run(
                "<message from='r@remote.test' to='bob@example.com/x'><x jid='bob@example.com'/></message>",
                rule
            ),
            "<message from='r@remote.test' to='bob@node2.internal/x'><x jid='bob@example.com'/></message>"
        );
    }

    #[test]
    fn untouched_input_is_copied() {
        let mut out = Vec::new();
        let changed = rewrite(b"<presence from='a@b.test'/>", MASK, &mut out).unwrap();
        assert!(!changed);
        assert_eq!(out, b"<presence from='a@b.test'/>");
    }
}
