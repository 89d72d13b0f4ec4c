//! Sixteen bytes at a time: the tokenizer's scans of attribute values (the longest
//! per-byte loop over a stanza's markup: JIDs, ids) and of text, done on a 16-lane
//! vector with one bit per lane out (`wide`: SSE2 on x86_64, NEON on aarch64, plain
//! code elsewhere; no `unsafe` here). Each finds where its token ends and, on the
//! way, what it holds (`<`, `&`, `/`, control characters, bytes beyond ASCII), so
//! neither the framer's checks nor the rewriter look again: one test for the bytes
//! that need a closer look (below 0x20, beyond ASCII, and in values `<` and `&`),
//! which plain values and text never pass. A value of up to 15 bytes costs one
//! step instead of a loop with a branch per byte. The last bytes of
//! a buffer, fewer than 16, go through the tokenizer's byte-at-a-time loops, which
//! are also what the tests hold these to.
//!
//! Names are not scanned here: they are short (`to`, `id`, `from`), too short for a
//! vector classification of name characters to pay for itself.

use wide::u8x16;

use super::scan::{HAS_AMP, HAS_CONTROL, HAS_LT, HAS_NON_ASCII, HAS_SLASH, is_control};

#[inline(always)]
fn load(block: &[u8]) -> u8x16 {
    u8x16::from(<[u8; 16]>::try_from(block).unwrap_or_default())
}

#[inline(always)]
fn splat(b: u8) -> u8x16 {
    u8x16::splat(b)
}

/// The lanes before the first one marked in `stop` (all sixteen when none is).
#[inline(always)]
fn before(stop: u32) -> u32 {
    if stop == 0 {
        0xFFFF
    } else {
        (stop & stop.wrapping_neg()) - 1
    }
}

/// Lanes of `v` that may need a closer look: bytes below 0x20 (tab, line feed and
/// carriage return among them) and beyond ASCII, plus `extra`; one mask, so the
/// common value or text of plain characters costs one test.
#[inline(always)]
fn odd(v: u8x16, extra: u8x16) -> u32 {
    // `| v` keeps the top bit of bytes beyond ASCII, which is what `to_bitmask` reads.
    (v.saturating_sub(splat(0x1F)).simd_eq(splat(0)) | extra | v).to_bitmask()
}

/// What the lanes `before` of `v` (read from `block`) hold that `odd` flagged:
/// `<`, `&`, bytes beyond ASCII, control characters XML forbids. Rare; out of line.
#[inline(never)]
fn closer(v: u8x16, block: &[u8], before: u32) -> u8 {
    let mut holds = seen(v.simd_eq(splat(b'<')).to_bitmask(), before, HAS_LT)
        | seen(v.simd_eq(splat(b'&')).to_bitmask(), before, HAS_AMP)
        | seen(v.to_bitmask(), before, HAS_NON_ASCII);
    // Tab, line feed and carriage return may stand there, the other bytes below
    // 0x20 may not; sorted out byte by byte, when there are any.
    let low = v.saturating_sub(splat(0x1F)).simd_eq(splat(0)).to_bitmask() & before;
    if low != 0
        && block[..before.count_ones() as usize]
            .iter()
            .any(|&b| is_control(b))
    {
        holds |= HAS_CONTROL;
    }
    holds
}

/// `flag` when a lane of `mask` is among the lanes `before`.
#[inline(always)]
fn seen(mask: u32, before: u32, flag: u8) -> u8 {
    if mask & before != 0 { flag } else { 0 }
}

/// An attribute value's closing `quote` in `rest` and what the value holds
/// (`HAS_*`), or, when fewer than 16 bytes are left before it is found, how far it
/// got (`Err`) and what it saw so far, for the caller to finish byte by byte.
#[inline(always)]
pub(super) fn value_end(rest: &[u8], quote: u8) -> Result<(usize, u8), (usize, u8)> {
    let mut holds = 0;
    let mut j = 0;
    while let Some(block) = rest.get(j..j + 16) {
        let v = load(block);
        let q = v.simd_eq(splat(quote)).to_bitmask();
        let before = before(q);
        holds |= seen(v.simd_eq(splat(b'/')).to_bitmask(), before, HAS_SLASH);
        let markup = v.simd_eq(splat(b'<')) | v.simd_eq(splat(b'&'));
        if odd(v, markup) & before != 0 {
            holds |= closer(v, block, before);
        }
        if q != 0 {
            return Ok((j + q.trailing_zeros() as usize, holds));
        }
        j += 16;
    }
    Err((j, holds))
}

/// Where a piece of text starting at `at` ends (its first `<` or `&`) and what it
/// holds before that (`HAS_NON_ASCII`, `HAS_CONTROL`, `HAS_SLASH`), or, when fewer
/// than 16 bytes are left before it is found, how far it got (`Err`) and what it saw.
#[inline(always)]
pub(super) fn text_end(buf: &[u8], at: usize) -> Result<(usize, u8), (usize, u8)> {
    let mut holds = 0;
    let mut i = at;
    while let Some(block) = buf.get(i..i + 16) {
        let v = load(block);
        let stop = (v.simd_eq(splat(b'<')) | v.simd_eq(splat(b'&'))).to_bitmask();
        let before = before(stop);
        holds |= seen(v.simd_eq(splat(b'/')).to_bitmask(), before, HAS_SLASH);
        if odd(v, splat(0)) & before != 0 {
            holds |= closer(v, block, before);
        }
        if stop != 0 {
            return Ok((i + stop.trailing_zeros() as usize, holds));
        }
        i += 16;
    }
    Err((i, holds))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time answer: the closing quote and the `HAS_*` flags.
    fn bytewise(rest: &[u8], quote: u8) -> Option<(usize, u8)> {
        let mut holds = 0;
        for (j, &b) in rest.iter().enumerate() {
            if b == quote {
                return Some((j, holds));
            }
            holds |= match b {
                b'<' => HAS_LT,
                b'&' => HAS_AMP,
                b'/' => HAS_SLASH,
                b'\t' | b'\n' | b'\r' => 0,
                0..0x20 => HAS_CONTROL,
                0x80.. => HAS_NON_ASCII,
                _ => 0,
            };
        }
        None
    }

    #[test]
    fn same_answer_as_byte_by_byte_wherever_things_stand() {
        // Every special byte at every place of values of many lengths, before and
        // after the quote (what stands after it must not count), over blocks.
        let specials = [
            b'<', b'&', b'/', b'\t', b'\n', b'\r', 0x01, 0x1F, 0x20, 0x7F, 0x80, 0xFF, b'"',
        ];
        for quote in [b'\'', b'"'] {
            for len in 0..40 {
                for at in 0..48 {
                    for &special in &specials {
                        let mut rest: Vec<u8> = (0..48).map(|i| b'a' + (i % 26) as u8).collect();
                        rest[len] = quote;
                        if at != len {
                            rest[at] = special;
                        }
                        let want = bytewise(&rest, quote);
                        let got = match value_end(&rest, quote) {
                            Ok(found) => Some(found),
                            Err((from, holds)) => {
                                let mut holds = holds;
                                let mut found = None;
                                for (j, &b) in rest.iter().enumerate().skip(from) {
                                    if b == quote {
                                        found = Some((j, holds));
                                        break;
                                    }
                                    holds |= bytewise(&[b, quote], quote).map_or(0, |f| f.1);
                                }
                                found
                            }
                        };
                        assert_eq!(got, want, "quote {quote}, len {len}, {special:#x} at {at}");
                    }
                }
            }
        }
    }

    #[test]
    fn text_ends_where_byte_by_byte_says() {
        let specials = [b'<', b'&', b'/', b'\t', b'\n', 0x01, 0x1F, 0x20, 0x80, 0xFF];
        for len in 0..40 {
            for at in 0..48 {
                for &special in &specials {
                    for stop in [b'<', b'&'] {
                        let mut buf: Vec<u8> = (0..48).map(|i| b'a' + (i % 26) as u8).collect();
                        buf[len] = stop;
                        if at != len {
                            buf[at] = special;
                        }
                        // Byte by byte: the first `<` or `&`, and what stands before.
                        let end = buf.iter().position(|&b| b == b'<' || b == b'&').unwrap();
                        let want = buf[..end].iter().fold(0, |h, &b| {
                            h | match b {
                                b'/' => HAS_SLASH,
                                0x80.. => HAS_NON_ASCII,
                                b'\t' | b'\n' | b'\r' => 0,
                                0..0x20 => HAS_CONTROL,
                                _ => 0,
                            }
                        });
                        match text_end(&buf, 0) {
                            Ok(got) => {
                                assert_eq!(got, (end, want), "len {len}, {special:#x} at {at}")
                            }
                            // Left for the byte-by-byte finish: not past the stop, and
                            // what it saw is part of what stands before it.
                            Err((from, holds)) => {
                                assert!(from <= end && buf.len() - from < 16);
                                assert_eq!(holds & !want, 0, "len {len}, {special:#x} at {at}");
                            }
                        }
                    }
                }
            }
        }
    }
}
