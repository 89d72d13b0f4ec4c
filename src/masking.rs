//! JID rewriting for `domains: masked`, without a DOM: an element is read with the
//! one XML reader (the framer, which shows a [`Rewriter`] every value as it reads
//! it — in the masked relay as it frames, for s2s stanzas through `append`), the
//! attribute values and text nodes that hold a JID to change are found by position,
//! and the output is the input with only those byte ranges replaced. Everything
//! else — whitespace, quoting, prefixes, unknown payloads — is copied unchanged.
//!
//! Which JIDs change is decided by a [`Rule`]:
//! - [`Rule::Mask`] (backend → outside): every JID at the backend's internal domain or
//!   a subdomain of it becomes the public domain (or the same subdomain of it, unless
//!   that is a service domain: `conference.node1.internal` never becomes the shared
//!   `conference.example.com`, whose rooms live elsewhere),
//!   wherever it stands: attributes, `<jid/>` and form `<value/>` text, nested
//!   `<forwarded/>` stanzas, `<stanza-id by/>`, `<delay from/>`, `<error by/>`.
//! - [`Rule::Unmask`] (client → its backend): only the user's own JID and the bare
//!   public domain become the internal domain; other users of the public domain stay
//!   as they are, so the backend routes them through dealer like any foreign JID.
//! - [`Rule::To`] (s2s into a backend): only the top-level `to` (`append` reads
//!   only the start tag for it; a framer's visits would show it every `to`).

use std::ops::Range;

use crate::config::{Normalise, Service};
use crate::xml::find;
use crate::xml::framer::{self, Hints, UNLIMITED, Visit};
use crate::xml::{Frame, Framer, XmlError};

#[derive(Debug, Clone, Copy)]
pub enum Rule<'a> {
    Mask {
        internal: &'a str,
        public: &'a str,
        /// Service domains: no subdomain of `internal` is masked onto one.
        services: &'a [Service],
    },
    Unmask {
        public: &'a str,
        internal: &'a str,
        own_local: &'a str,
        /// How `own_local` was normalised, to recognise it however it is written.
        normalise: Normalise,
    },
    To {
        public: &'a str,
        internal: &'a str,
    },
}

impl<'a> Rule<'a> {
    fn needle(&self) -> &'a str {
        match *self {
            Rule::Mask { internal, .. } => internal,
            Rule::Unmask { public, .. } | Rule::To { public, .. } => public,
        }
    }

    /// What `map`'s spans are replaced with.
    fn replacement(&self) -> &'a str {
        match *self {
            Rule::Mask { public, .. } => public,
            Rule::Unmask { internal, .. } | Rule::To { internal, .. } => internal,
        }
    }

    /// Whether a raw JID-valued string needs rewriting: the byte range of `raw` to
    /// replace with `replacement()` (the domain part, or the part of it that
    /// changes). One pass over the bare JID, since this runs on every attribute value
    /// and text node the masked relay passes on. `slash`: whether `raw` may hold a
    /// `/` (the tokenizer knows for attribute values, which spares the search).
    #[inline(always)]
    fn map(&self, raw: &[u8], slash: bool) -> Option<Span> {
        let needle = self.needle().as_bytes();
        // Most values (ids, types, bodies) are shorter than the domain or, without a
        // resource, end in another letter than it (or its trailing dot): turned away
        // here, in the caller, without a call.
        let last = match raw.last() {
            Some(&b) if raw.len() >= needle.len() => b,
            _ => return None,
        };
        if !slash && last != b'.' && !last.eq_ignore_ascii_case(needle.last().unwrap_or(&0)) {
            return None;
        }
        self.map_jid(raw, slash)
    }

    /// `map` for a value that may end in the domain.
    #[inline(never)]
    fn map_jid(&self, raw: &[u8], slash: bool) -> Option<Span> {
        let needle = self.needle().as_bytes();
        let bare_end = if slash {
            find::byte(raw, b'/').unwrap_or(raw.len())
        } else {
            raw.len()
        };
        let bare = &raw[..bare_end];
        // A fully qualified domain may end in a dot.
        let dom_end = bare_end - usize::from(bare.last() == Some(&b'.'));
        // Most values (ids, types, bodies) do not end in the domain: reject them by
        // their last letter before any closer look.
        if dom_end < needle.len()
            || !raw[dom_end - 1].eq_ignore_ascii_case(&needle[needle.len() - 1])
            || (!same(&raw[dom_end - needle.len()..dom_end], needle)
                && !raw[dom_end - needle.len()..dom_end].eq_ignore_ascii_case(needle))
            || bare_end > 3071
        {
            return None;
        }
        // A plausible JID: no whitespace or markup characters, at most one `@`, a
        // domain of DNS-ish characters. The part matched by the needle (a configured
        // domain) is known to be fine, so only what stands before it is looked at, in
        // one pass (it is short: a localpart and perhaps a subdomain).
        let head = &raw[..dom_end - needle.len()];
        let mut at_sign = None;
        for (i, &c) in head.iter().enumerate() {
            match HEAD[c as usize] {
                HEAD_PLAIN => {}
                HEAD_AT if at_sign.is_none() => at_sign = Some(i),
                _ => return None,
            }
        }
        let dstart = at_sign.map_or(0, |i| i + 1);
        let domain = &raw[dstart..dom_end];
        let sub = &domain[..domain.len() - needle.len()];
        if !sub
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_') || c >= 0x80)
        {
            return None;
        }
        // The domain ends with the needle; it is the needle when the lengths agree.
        let whole = domain.len() == needle.len();
        match *self {
            Rule::Mask {
                public, services, ..
            } => {
                if whole {
                    return Span::new(dstart, dom_end);
                }
                // A subdomain: `pubsub.node1.internal` → `pubsub.example.com`.
                let cut = domain.len() - needle.len();
                if cut < 2 || domain[cut - 1] != b'.' {
                    return None;
                }
                let image_is_service = services.iter().any(|s| {
                    s.domain.len() == cut + public.len()
                        && s.domain.as_bytes()[..cut].eq_ignore_ascii_case(&domain[..cut])
                        && s.domain.ends_with(public)
                });
                if image_is_service {
                    None
                } else {
                    Span::new(dstart + cut, dom_end)
                }
            }
            Rule::Unmask {
                own_local,
                normalise,
                ..
            } => {
                if !whole {
                    return None;
                }
                match at_sign {
                    None => Span::new(dstart, dom_end),
                    Some(i) => {
                        let local = std::str::from_utf8(&raw[..i]).ok()?;
                        if same_user(local, own_local, normalise) {
                            Span::new(dstart, dom_end)
                        } else {
                            None
                        }
                    }
                }
            }
            Rule::To { .. } if whole => Span::new(dstart, dom_end),
            Rule::To { .. } => None,
        }
    }
}

/// Byte equality of equal-length strings, for a domain of 8 to 16 bytes as two
/// overlapping words (no call to `memcmp`), else as slices.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_ne_bytes)
    };
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if (8..=16).contains(&n) {
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

/// What a byte before the domain of a JID-valued string may be, one lookup a byte:
/// whitespace and markup characters end the candidate, an `@` splits it (once).
const HEAD_PLAIN: u8 = 0;
const HEAD_AT: u8 = 1;
const HEAD_BAD: u8 = 2;
static HEAD: [u8; 256] = {
    let mut t = [HEAD_PLAIN; 256];
    let mut c = 0;
    while c <= b' ' {
        t[c as usize] = HEAD_BAD;
        c += 1;
    }
    t[b'<' as usize] = HEAD_BAD;
    t[b'>' as usize] = HEAD_BAD;
    t[b'"' as usize] = HEAD_BAD;
    t[b'\'' as usize] = HEAD_BAD;
    t[b'&' as usize] = HEAD_BAD;
    t[b'@' as usize] = HEAD_AT;
    t
};

/// The part of a value `Rule::map` replaces, packed in one non-zero word (start in
/// the high half, end in the low; a JID's bare part is under 3,072 bytes and the end
/// of a domain is never 0) so the answer comes back in a register: a wider one went
/// through memory and stalled the read-back on every JID that matched.
#[derive(Debug, Clone, Copy)]
struct Span(std::num::NonZeroU64);

impl Span {
    fn new(start: usize, end: usize) -> Option<Span> {
        std::num::NonZeroU64::new(((start as u64) << 32) | end as u64).map(Span)
    }

    fn start(self) -> usize {
        (self.0.get() >> 32) as usize
    }

    fn end(self) -> usize {
        (self.0.get() & u64::from(u32::MAX)) as usize
    }
}

/// Compare a localpart as written with the session's normalised one.
fn same_user(written: &str, normalised: &str, how: Normalise) -> bool {
    written == normalised
        || crate::routing::normalise::normalise(how, written).is_ok_and(|n| n == normalised)
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Rewrite `input` (one complete element, or a stream header) into `out` by `rule`.
/// Returns whether anything changed; when nothing did, `out` holds a plain copy.
pub fn rewrite(input: &[u8], rule: Rule<'_>, out: &mut Vec<u8>) -> Result<bool, XmlError> {
    out.clear();
    Rewriter::new(rule).append(input, out)
}

/// A rule prepared for many elements: the substring search is built once and the
/// edit lists are reused, so rewriting a stream allocates nothing per stanza.
///
/// It is fed as a [`Visit`]or: attribute values come whole, but a text node may come
/// in pieces — split by character references, or by the reads a frame arrived in —
/// so text is only gathered into runs while visiting and judged whole at `emit`.
pub struct Rewriter<'a> {
    rule: Rule<'a>,
    finder: memchr::memmem::Finder<'a>,
    edits: Vec<Edit<'a>>,
    /// Text of the frame being visited, adjacent pieces merged.
    runs: Vec<Run>,
    /// Replacement text for runs written with references.
    owned: String,
}

/// A stretch of character data in the frame being visited.
#[derive(Debug, Clone, Copy)]
struct Run {
    start: usize,
    end: usize,
    /// Written with references, so it must be unescaped to be read.
    refs: bool,
    /// The content of a CDATA section.
    cdata: bool,
    /// Next to text or another CDATA section in the same text node.
    mixed: bool,
    /// May hold a `/` (the framer knows for plain text).
    slash: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Text,
    Ref,
    CData,
}

const CDATA_OPEN: usize = "<![CDATA[".len();
const CDATA_CLOSE: usize = "]]>".len();

/// Replace `frame[start..end]`.
#[derive(Debug, Clone)]
struct Edit<'a> {
    start: usize,
    end: usize,
    with: With<'a>,
}

#[derive(Debug, Clone)]
enum With<'a> {
    Domain(&'a str),
    /// A range of `Rewriter::owned`.
    Owned(Range<usize>),
}

impl<'a> Rewriter<'a> {
    pub fn new(rule: Rule<'a>) -> Rewriter<'a> {
        Rewriter {
            rule,
            finder: memchr::memmem::Finder::new(rule.needle().as_bytes()),
            edits: Vec::new(),
            runs: Vec::new(),
            owned: String::new(),
        }
    }

    /// Whether `bytes` may hold the domain at all, in any letter case or written
    /// with character references.
    fn may_apply(&self, bytes: &[u8]) -> bool {
        self.finder.find(bytes).is_some()
            || contains_ignore_case(bytes, self.finder.needle())
            || memchr::memmem::find(bytes, b"&#").is_some()
    }

    /// Append `input`, one complete element or a stream header, rewritten, to `out`;
    /// whether anything changed. For values outside a framed stream (s2s stanzas):
    /// the framer reads `input` and shows this rewriter its values, as in the relay.
    /// On an error, `out` is as it was.
    pub fn append(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool, XmlError> {
        self.discard();
        if !self.may_apply(input) {
            out.extend_from_slice(input);
            return Ok(false);
        }
        let mark = out.len();
        let r = if matches!(self.rule, Rule::To { .. }) {
            // Only the top-level `to` changes: its start tag is all there is to read.
            framer::read_start_tag(input, self).map(|_| self.apply(input, out))
        } else {
            self.append_frames(input, out)
        };
        if r.is_err() {
            self.discard();
            out.truncate(mark);
        }
        r
    }

    /// `append` for `Mask` and `Unmask`: `input` framed as a stream's content, each
    /// frame rewritten as the relay does; or, when it does not start with an element,
    /// as a stream header (with what may follow it).
    fn append_frames(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool, XmlError> {
        let mut framer = Framer::in_stream(UNLIMITED, "");
        let first = match framer.parse_with(input, self) {
            Ok(Some(f)) => f,
            other => {
                self.discard();
                framer = Framer::new(UNLIMITED);
                match framer.parse_with(input, self) {
                    Ok(Some(f @ Frame::Header { .. })) => f,
                    _ => {
                        return Err(other.err().unwrap_or_else(|| {
                            XmlError::NotWellFormed("incomplete element".into())
                        }));
                    }
                }
            }
        };
        let mut changed = false;
        let mut used = 0;
        let mut frame = Some(first);
        while let Some(f) = frame {
            let len = f.len();
            let bytes = &input[used..used + len];
            match f {
                Frame::Header { .. } | Frame::Element { .. } => changed |= self.apply(bytes, out),
                Frame::Whitespace { .. } | Frame::Close { .. } => {
                    self.discard();
                    out.extend_from_slice(bytes);
                }
            }
            used += len;
            frame = framer.parse_with(&input[used..], self)?;
        }
        if used < input.len() {
            return Err(XmlError::NotWellFormed("incomplete element".into()));
        }
        Ok(changed)
    }

    /// After the framer visited a whole frame (`Framer::parse_with(buf, self)`), append
    /// `buf[..len]` with the recorded edits applied; the edits are then forgotten.
    /// Offsets were taken relative to `buf`, which must start with the frame.
    pub fn emit(&mut self, frame: &[u8], out: &mut Vec<u8>) {
        self.apply(frame, out);
    }

    /// Forget what was recorded for a frame that will not be emitted.
    pub fn discard(&mut self) {
        self.edits.clear();
        self.runs.clear();
        self.owned.clear();
    }

    fn apply(&mut self, frame: &[u8], out: &mut Vec<u8>) -> bool {
        self.judge_text(frame);
        let changed = !self.edits.is_empty();
        if changed {
            // In order already unless a text node's edit follows a later tag's.
            if !self.edits.is_sorted_by_key(|e| e.start) {
                self.edits.sort_unstable_by_key(|e| e.start);
            }
            let mut at = 0;
            for e in &self.edits {
                if e.start < at || e.end > frame.len() {
                    continue; // cannot happen for edits of this frame; never corrupt output
                }
                out.extend_from_slice(&frame[at..e.start]);
                out.extend_from_slice(match &e.with {
                    With::Domain(d) => d.as_bytes(),
                    With::Owned(r) => self.owned[r.clone()].as_bytes(),
                });
                at = e.end;
            }
            out.extend_from_slice(&frame[at..]);
        } else {
            out.extend_from_slice(frame);
        }
        self.discard();
        changed
    }

    /// Turn the gathered text runs into edits.
    fn judge_text(&mut self, frame: &[u8]) {
        for i in 0..self.runs.len() {
            let Run {
                start,
                end,
                refs: has_ref,
                mixed,
                slash,
                ..
            } = self.runs[i];
            let Some(bytes) = frame.get(start..end) else {
                continue;
            };
            if mixed {
                continue;
            }
            let trimmed = bytes.trim_ascii();
            if trimmed.is_empty() {
                continue;
            }
            let at = start + (trimmed.as_ptr() as usize - bytes.as_ptr() as usize);
            if has_ref {
                if let Ok(raw) = std::str::from_utf8(trimmed) {
                    self.judge_escaped(raw, at, false);
                }
            } else if let Some(r) = self.rule.map(trimmed, slash) {
                self.edits.push(Edit {
                    start: at + r.start(),
                    end: at + r.end(),
                    with: With::Domain(self.rule.replacement()),
                });
            }
        }
    }

    /// A value written with references (`raw`, at byte `at`): read it unescaped, and
    /// when it changes, write all of it anew, escaped.
    fn judge_escaped(&mut self, raw: &str, at: usize, in_attribute: bool) {
        let Ok(u) = crate::xml::escape::unescape_text(raw) else {
            return;
        };
        let ut = u.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
        let lead = ut.as_ptr() as usize - u.as_ptr() as usize;
        let Some(r) = self.rule.map(ut.as_bytes(), true) else {
            return;
        };
        let domain = self.rule.replacement();
        let mut changed = String::with_capacity(u.len() + domain.len());
        changed.push_str(&u[..lead + r.start()]);
        changed.push_str(domain);
        changed.push_str(&u[lead + r.end()..]);
        let from = self.owned.len();
        self.owned.push_str(&if in_attribute {
            crate::xml::escape::attr(&changed)
        } else {
            crate::xml::escape::text(&changed)
        });
        self.edits.push(Edit {
            start: at,
            end: at + raw.len(),
            with: With::Owned(from..self.owned.len()),
        });
    }

    fn push_run(&mut self, at: usize, len: usize, piece: Piece, slash: bool) {
        let mut run = Run {
            start: at,
            end: at + len,
            refs: piece == Piece::Ref,
            cdata: piece == Piece::CData,
            mixed: false,
            slash,
        };
        if let Some(last) = self.runs.last_mut() {
            // Only CDATA markup between the last run and this one: one text node.
            let markup =
                if last.cdata { CDATA_CLOSE } else { 0 } + if run.cdata { CDATA_OPEN } else { 0 };
            if last.end + markup == at {
                if markup == 0 {
                    last.end = run.end;
                    last.refs |= run.refs;
                    last.slash |= run.slash;
                    return;
                }
                // Text and CDATA sections in one node: too mixed to rewrite piece
                // by piece, so left as they are (no server writes JIDs like that).
                last.mixed = true;
                run.mixed = true;
            }
        }
        self.runs.push(run);
    }
}

impl Visit for Rewriter<'_> {
    fn attribute(&mut self, key: &[u8], value: &[u8], at: usize, hints: Hints) {
        let only_to = matches!(self.rule, Rule::To { .. });
        if key.starts_with(b"xmlns") && (key.len() == 5 || key[5] == b':')
            || (only_to && key != b"to")
        {
            return;
        }
        if hints.refs {
            if let Ok(value) = std::str::from_utf8(value) {
                self.judge_escaped(value, at, true);
            }
        } else if let Some(r) = self.rule.map(value, hints.slash) {
            self.edits.push(Edit {
                start: at + r.start(),
                end: at + r.end(),
                with: With::Domain(self.rule.replacement()),
            });
        }
    }

    fn text(&mut self, value: &[u8], at: usize, hints: Hints) {
        if !matches!(self.rule, Rule::To { .. }) {
            self.push_run(at, value.len(), Piece::Text, hints.slash);
        }
    }

    fn cdata(&mut self, value: &str, at: usize) {
        if !matches!(self.rule, Rule::To { .. }) {
            self.push_run(at, value.len(), Piece::CData, true);
        }
    }

    fn reference(&mut self, at: usize, len: usize) {
        if !matches!(self.rule, Rule::To { .. }) {
            self.push_run(at, len, Piece::Ref, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn run(input: &str, rule: Rule) -> String {
        let mut out = Vec::new();
        rewrite(input.as_bytes(), rule, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn no_subdomain_masks_onto_a_service_domain() {
        let services = [Service {
            domain: "conference.example.com".into(),
            backend: 2,
        }];
        let rule = Rule::Mask {
            internal: "node1.internal",
            public: "example.com",
            services: &services,
        };
        assert_eq!(
            run(
                "<presence from='room@Conference.node1.internal/a' to='alice@node1.internal'/>",
                rule
            ),
            "<presence from='room@Conference.node1.internal/a' to='alice@example.com'/>"
        );
        assert_eq!(
            run(
                "<iq from='pubsub.node1.internal' to='alice@node1.internal'/>",
                rule
            ),
            "<iq from='pubsub.example.com' to='alice@example.com'/>"
        );
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
            // A fully qualified domain, with its trailing dot.
            (
                "<m from='x@node1.internal./r'/>",
                "<m from='x@example.com./r'/>",
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
            // The relay's way: the framer's visits (and its hints) in any two reads.
            if !input.starts_with("<stream:") {
                for got in framed_all_splits(input, MASK) {
                    assert_eq!(got, want, "framed: {input}");
                }
            }
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
            // The relay's way: the framer's visits (and its hints) in any two reads.
            if !input.starts_with("<stream:") {
                for got in framed_all_splits(input, UNMASK) {
                    assert_eq!(got, want, "framed: {input}");
                }
            }
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

    /// Feed `input` to a framer in every pair of pieces, as a relay reads it, and
    /// rewrite each frame as the relay does.
    fn framed_all_splits(input: &str, rule: Rule) -> Vec<String> {
        use crate::xml::{Frame, FrameLimits, Framer};
        let bytes = input.as_bytes();
        (1..bytes.len())
            .map(|cut| {
                let mut framer = Framer::in_stream(FrameLimits::default(), "stream:stream");
                let mut rw = Rewriter::new(rule);
                let mut buf: Vec<u8> = Vec::new();
                let mut out = Vec::new();
                for piece in [&bytes[..cut], &bytes[cut..]] {
                    buf.extend_from_slice(piece);
                    while let Some(f) = framer.parse_with(&buf, &mut rw).unwrap() {
                        let len = f.len();
                        match f {
                            Frame::Element { .. } => rw.emit(&buf[..len], &mut out),
                            _ => panic!("unexpected {f:?}"),
                        }
                        buf.drain(..len);
                    }
                }
                assert!(buf.is_empty());
                String::from_utf8(out).unwrap()
            })
            .collect()
    }

    #[test]
    fn text_split_across_reads_is_still_masked() {
        let input = "<iq type='result' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@node1.internal/r&amp;s</jid></bind></iq>";
        let want = "<iq type='result' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@example.com/r&amp;s</jid></bind></iq>";
        for got in framed_all_splits(input, MASK) {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn jids_in_cdata_sections_are_masked() {
        let input = "<iq type='result' id='b'><jid><![CDATA[alice@node1.internal/r]]></jid><x>a<![CDATA[b]]>node1.internal</x></iq>";
        // A text node of text and CDATA together is left as it is, JID or not.
        let want = "<iq type='result' id='b'><jid><![CDATA[alice@example.com/r]]></jid><x>a<![CDATA[b]]>node1.internal</x></iq>";
        assert_eq!(run(input, MASK), want);
        for got in framed_all_splits(input, MASK) {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn text_written_with_references_is_read_unescaped() {
        // `&#64;` is `@`, `&#x6E;` is `n`: the JID is alice@node1.internal.
        let input =
            "<iq type='result' id='b'><jid> alice&#64;&#x6E;ode1.internal/a&lt;b </jid></iq>";
        let want = "<iq type='result' id='b'><jid> alice@example.com/a&lt;b </jid></iq>";
        assert_eq!(run(input, MASK), want);
        for got in framed_all_splits(input, MASK) {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn attributes_written_with_references_are_read_unescaped() {
        assert_eq!(
            run(
                "<message from='a&#64;node1.internal/&apos;x' to='b@remote.test'/>",
                MASK
            ),
            "<message from='a@example.com/&apos;x' to='b@remote.test'/>"
        );
    }

    #[test]
    fn mask_ignores_letter_case_of_the_domain() {
        assert_eq!(
            run(
                "<message from='a@NODE1.Internal/x' to='b@remote.test'/>",
                MASK
            ),
            "<message from='a@example.com/x' to='b@remote.test'/>"
        );
    }

    #[test]
    fn unmask_knows_the_user_however_written() {
        let precis = Rule::Unmask {
            public: "example.com",
            internal: "node1.internal",
            own_local: "\u{e9}mile",
            normalise: Normalise::Precis,
        };
        assert_eq!(
            run("<presence to='\u{c9}MILE@example.com'/>", precis),
            "<presence to='\u{c9}MILE@node1.internal'/>"
        );
        assert_eq!(
            run("<presence to='emile@example.com'/>", precis),
            "<presence to='emile@example.com'/>"
        );
    }

    #[test]
    fn append_reads_elements_headers_and_what_follows_them() {
        let cases = [
            // A header with its declaration, and elements after it.
            (
                "<?xml version='1.0'?>\n<stream:stream xmlns:stream='http://etherx.jabber.org/streams' from='node1.internal'> <a to='x@node1.internal'/>",
                "<?xml version='1.0'?>\n<stream:stream xmlns:stream='http://etherx.jabber.org/streams' from='example.com'> <a to='x@example.com'/>",
            ),
            // Several elements, with white space around them.
            (
                " <a from='node1.internal'/>\n<b><c>node1.internal</c></b> ",
                " <a from='example.com'/>\n<b><c>example.com</c></b> ",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(run(input, MASK), want, "{input}");
        }
        // On an error, what is already in `out` stays and nothing is added.
        for bad in [
            "<a from='node1.internal'/><b>",
            "<a from='node1.internal'><!-- x --></a>",
            "<a from='node1.internal'/>text",
            "<a from='node1.internal'></b>",
            "<a from='node1.internal' from='node1.internal'/>",
        ] {
            let mut out = b"kept".to_vec();
            assert!(
                Rewriter::new(MASK)
                    .append(bad.as_bytes(), &mut out)
                    .is_err(),
                "{bad}"
            );
            assert_eq!(out, b"kept", "{bad}");
        }
        // `To` reads the start tag only: what follows it is copied unread.
        let to = Rule::To {
            public: "example.com",
            internal: "node2.internal",
        };
        assert_eq!(
            run(
                "<message to='b@example.com'><x to='example.com'/>&bogus;",
                to
            ),
            "<message to='b@node2.internal'><x to='example.com'/>&bogus;"
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
