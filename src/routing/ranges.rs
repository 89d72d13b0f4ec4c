//! `strategy: ranges` — an ordered table of alphabetical rows plus a default.
//!
//! A row `from`–`to` covers a normalised name `n` when `from <= n` and `n` sorts before
//! the first string greater than every string that starts with `to`; equivalently,
//! `from <= n && (n <= to || n.starts_with(to))`. So `a`–`g` covers `alice`, `gus` and
//! `gzzz`, and overlaps `gz`–`m`. Strings compare by code point (UTF-8 byte order).
//! Validated rows never overlap, so at most one row covers a name: the last row whose
//! `from <= n`, found by binary search.

use super::{BackendId, RangeRow};

/// Does the row `from`–`to` cover `n`?
#[inline]
pub fn covers(from: &str, to: &str, n: &str) -> bool {
    from <= n && (n <= to || n.starts_with(to))
}

/// A row is empty when no name satisfies `covers`: `from` sorts after `to` and does not
/// start with it.
pub fn row_is_empty(from: &str, to: &str) -> bool {
    !(from <= to || from.starts_with(to))
}

/// Two non-empty rows with `a.from <= b.from` overlap exactly when `a` covers `b.from`.
pub fn rows_overlap(a: &RangeRow, b: &RangeRow) -> bool {
    covers(&a.from, &a.to, &b.from)
}

#[derive(Debug, Clone)]
pub struct RangeTable {
    /// Sorted by `from`, non-overlapping.
    rows: Vec<RangeRow>,
    /// `prefix_key(rows[i].from)`: the binary search mostly compares these integers,
    /// in one compact array, instead of chasing each row's heap string.
    keys: Vec<u64>,
    default: BackendId,
}

/// The first 8 bytes of `s`, big-endian, zero-padded. Monotone in string order for
/// strings without NUL (which no normalised username contains): `a < b` implies
/// `prefix_key(a) <= prefix_key(b)`.
#[inline]
fn prefix_key(s: &str) -> u64 {
    let b = s.as_bytes();
    let mut k = [0u8; 8];
    let n = b.len().min(8);
    k[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(k)
}

/// Which rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeMatch {
    Row(usize),
    Default,
}

impl RangeTable {
    /// `rows` must be validated (sorted, non-overlapping); `config::validate` does that.
    pub fn new(rows: Vec<RangeRow>, default: BackendId) -> RangeTable {
        debug_assert!(
            rows.windows(2)
                .all(|w| w[0].from <= w[1].from && !rows_overlap(&w[0], &w[1]))
        );
        let keys = rows.iter().map(|r| prefix_key(&r.from)).collect();
        RangeTable {
            rows,
            keys,
            default,
        }
    }

    #[inline]
    pub fn lookup(&self, n: &str) -> (BackendId, RangeMatch) {
        let nk = prefix_key(n);
        // Rows with a smaller key sort before `n`; only equal keys need the strings.
        let lo = self.keys.partition_point(|&k| k < nk);
        let hi = lo + self.keys[lo..].partition_point(|&k| k == nk);
        let i = lo + self.rows[lo..hi].partition_point(|r| r.from.as_str() <= n);
        if i > 0 {
            let r = &self.rows[i - 1];
            if covers(&r.from, &r.to, n) {
                return (r.backend, RangeMatch::Row(i - 1));
            }
        }
        (self.default, RangeMatch::Default)
    }

    pub fn row(&self, i: usize) -> &RangeRow {
        &self.rows[i]
    }

    pub fn default_backend(&self) -> BackendId {
        self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(from: &str, to: &str, backend: BackendId) -> RangeRow {
        RangeRow {
            from: from.into(),
            to: to.into(),
            backend,
        }
    }

    #[test]
    fn coverage_rule() {
        let cases = [
            ("a", "g", "alice", true),
            ("a", "g", "a", true),
            ("a", "g", "g", true),
            ("a", "g", "gus", true),
            ("a", "g", "gzzz", true),
            ("a", "g", "h", false),
            ("a", "g", "0day", false),
            ("h", "l", "gzzz", false),
            ("h", "l", "h", true),
            ("h", "l", "lzz", true),
            ("h", "l", "m", false),
            ("gz", "m", "gz", true),
            ("gz", "m", "gy", false),
            ("m", "z", "zzzz", true),
            ("m", "z", "ärger", false), // non-Latin sorts after z
        ];
        for (from, to, n, want) in cases {
            assert_eq!(covers(from, to, n), want, "{from}-{to} {n}");
        }
    }

    #[test]
    fn emptiness_and_overlap() {
        assert!(!row_is_empty("a", "g"));
        assert!(!row_is_empty("g", "g"));
        assert!(!row_is_empty("gz", "g")); // covers gz…
        assert!(row_is_empty("h", "g"));
        assert!(rows_overlap(&row("a", "g", 0), &row("gz", "m", 1)));
        assert!(rows_overlap(&row("a", "g", 0), &row("g", "m", 1)));
        assert!(!rows_overlap(&row("a", "g", 0), &row("h", "m", 1)));
        assert!(!rows_overlap(&row("a", "gy", 0), &row("gz", "m", 1)));
    }

    #[test]
    fn lookup_boundaries() {
        let t = RangeTable::new(
            vec![row("a", "g", 0), row("h", "l", 1), row("m", "z", 2)],
            3,
        );
        let cases = [
            ("a", 0),
            ("alice", 0),
            ("gzzz", 0),
            ("h", 1),
            ("lzzz", 1),
            ("m", 2),
            ("zed", 2),
            ("0day", 3),
            ("_x", 3),
            ("日本", 3),
            ("ärger", 3),
        ];
        for (n, want) in cases {
            assert_eq!(t.lookup(n).0, want, "{n}");
        }
        assert_eq!(t.lookup("h").1, RangeMatch::Row(1));
        // Bounds sharing their first eight bytes exercise the string comparison.
        let t = RangeTable::new(
            vec![
                row("abcdefgh", "abcdefghm", 0),
                row("abcdefghn", "abcdefghz", 1),
            ],
            2,
        );
        assert_eq!(t.lookup("abcdefgh").0, 0);
        assert_eq!(t.lookup("abcdefghmzz").0, 0);
        assert_eq!(t.lookup("abcdefghn").0, 1);
        assert_eq!(t.lookup("abcdefg").0, 2);
        assert_eq!(t.lookup("abcdefgi").0, 2);
        assert_eq!(t.lookup("9").1, RangeMatch::Default);
    }
}
