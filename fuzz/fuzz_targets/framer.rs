//! Fuzz target for the framer: any bytes, fed whole and in pieces, must frame the
//! same; a stream the framer takes whole (up to its close) must be well-formed to
//! quick-xml's strict reading; and what the masking rewriter makes of each element
//! must frame again as one element. Never a panic.
#![no_main]

use dealer::masking::{Rewriter, Rule};
use dealer::xml::{Frame, FrameLimits, Framer, XmlError};
use libfuzzer_sys::fuzz_target;

#[path = "../../src/xml/oracle.rs"]
mod oracle;
use oracle::strictly_well_formed;

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";

/// Frames as (kind, bytes), and the kind of error that ended them (its variant: the
/// message may name a different first fault when the pieces differ, e.g. a control
/// character before a bad UTF-8 sequence), feeding `input` in pieces of `piece`.
fn frames(
    input: &[u8],
    piece: usize,
) -> (Vec<(u8, Vec<u8>)>, Option<std::mem::Discriminant<XmlError>>) {
    let mut framer = Framer::new(FrameLimits::default());
    let mut buf = Vec::new();
    let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
    for chunk in input.chunks(piece.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match framer.parse(&buf) {
                Ok(Some(f)) => {
                    let len = f.len();
                    let kind = match f {
                        Frame::Header { .. } => 0,
                        Frame::Element { .. } => 1,
                        // Whitespace may come in several frames, or not at all
                        // when text that follows it in the same read is refused.
                        Frame::Whitespace { .. } => 2,
                        Frame::Close { .. } => 3,
                    };
                    if kind != 2 {
                        out.push((kind, buf[..len].to_vec()));
                    }
                    buf.drain(..len);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(std::mem::discriminant(&e))),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    // Half the inputs start inside a stream, so the fuzzer spends its time on stanzas.
    let input: Vec<u8> = if seed & 1 == 0 {
        [HEADER, rest].concat()
    } else {
        rest.to_vec()
    };
    let whole = frames(&input, usize::MAX);
    let piece = 1 + (seed as usize >> 1) % 64;
    assert_eq!(frames(&input, piece), whole, "split in pieces of {piece}");

    let (out, _) = &whole;
    if let Some(close) = out.iter().position(|(k, _)| *k == 3) {
        let doc: Vec<u8> = out[..=close].iter().flat_map(|(_, b)| b.clone()).collect();
        assert!(strictly_well_formed(&doc), "framed a malformed stream");
    }

    // Masking keeps every element one well-formed element.
    let rule = Rule::Mask {
        internal: "node1.internal",
        public: "example.com",
        services: &[],
    };
    for (kind, bytes) in out {
        if *kind != 1 {
            continue;
        }
        let mut framer = Framer::in_stream(FrameLimits::default(), "stream:stream");
        let mut rw = Rewriter::new(rule);
        let Ok(Some(f)) = framer.parse_with(bytes, &mut rw) else {
            panic!("an element did not frame again");
        };
        assert_eq!(f.len(), bytes.len());
        let mut masked = Vec::new();
        rw.emit(bytes, &mut masked);
        let mut again = Framer::in_stream(FrameLimits::default(), "stream:stream");
        match again.parse(&masked) {
            Ok(Some(Frame::Element { len })) if len == masked.len() => {}
            other => panic!(
                "masked element does not frame: {other:?}: {}",
                String::from_utf8_lossy(&masked)
            ),
        }
    }
});
