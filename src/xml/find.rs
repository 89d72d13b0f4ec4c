//! Finding one byte in the short strings attribute values are (ids, types, JIDs),
//! eight bytes at a time in a `u64` (SWAR), without calling out: for a value of a
//! few dozen bytes the call into `memchr` costs more than the search. Longer strings
//! go to `memchr`.

const LANES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each lane of `x` equal to `b`. Exact in the lowest such lane; a
/// lane above a match may be marked falsely (the borrow), so only the lowest marked
/// lane is ever used.
#[inline(always)]
fn lanes_equal(x: u64, b: u8) -> u64 {
    let y = x ^ (LANES * u64::from(b));
    y.wrapping_sub(LANES) & !y & HIGH
}

#[inline(always)]
fn word(eight: &[u8]) -> u64 {
    u64::from_le_bytes(eight.try_into().unwrap_or_default())
}

/// The index of the first `b` in `hay`.
#[inline]
pub fn byte(hay: &[u8], b: u8) -> Option<usize> {
    let len = hay.len();
    if len > 32 {
        return memchr::memchr(b, hay);
    }
    if len < 8 {
        return hay.iter().position(|&c| c == b);
    }
    let mut i = 0;
    while i + 8 <= len {
        let m = lanes_equal(word(&hay[i..i + 8]), b);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if i == len {
        return None;
    }
    // The last eight bytes, overlapping what was searched: those lanes hold no `b`
    // (so no borrow marks a lane falsely) and are shifted out.
    let skip = i - (len - 8);
    let m = lanes_equal(word(&hay[len - 8..]), b) >> (skip * 8);
    (m != 0).then(|| i + (m.trailing_zeros() / 8) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_answer_as_a_plain_search_at_every_length_and_place() {
        for len in 0..80 {
            for at in 0..=len {
                // `at == len`: not there at all. Bytes around the sought one include
                // its neighbours in value (borrows) and bytes with the high bit set.
                let mut hay: Vec<u8> = (0..len)
                    .map(|i| [b'.', b'0', 0x80, 0xFF, b'@'][i % 5])
                    .collect();
                if at < len {
                    hay[at] = b'/';
                    if at + 1 < len {
                        hay[at + 1] = b'/';
                    }
                }
                let want = hay.iter().position(|&c| c == b'/');
                assert_eq!(byte(&hay, b'/'), want, "len {len}, at {at}");
            }
        }
    }
}
