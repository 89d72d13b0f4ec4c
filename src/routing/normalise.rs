//! Usernames are compared the way the backends compare localparts, so that every
//! spelling of one account routes to one backend: stringprep Nodeprep (RFC 3920/6122,
//! what Prosody 0.12 and jabberd2 do; `Straße` and `strasse` are one account) or PRECIS
//! UsernameCaseMapped (RFC 7622/8265).

use std::borrow::Cow;

use precis_core::profile::Profile;
use precis_profiles::UsernameCaseMapped;

use super::Normalise;

/// RFC 7622 §3.3: a localpart is at most 1023 octets.
pub const MAX_LOCALPART_BYTES: usize = 1023;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormaliseError {
    #[error("empty username")]
    Empty,
    #[error("username longer than {MAX_LOCALPART_BYTES} bytes")]
    TooLong,
    #[error("username has a character a JID localpart may not contain")]
    Prohibited,
}

/// Normalise `name`; borrows when it is already in normal form (the common case for
/// lower-case ASCII names, so the hot path does not allocate).
pub fn normalise(how: Normalise, name: &str) -> Result<Cow<'_, str>, NormaliseError> {
    if name.is_empty() {
        return Err(NormaliseError::Empty);
    }
    if name.len() > MAX_LOCALPART_BYTES * 4 {
        // Bound the work before any Unicode processing.
        return Err(NormaliseError::TooLong);
    }
    if let Some(fast) = ascii(name) {
        return fast;
    }
    let out = match how {
        Normalise::Nodeprep => {
            stringprep::nodeprep(name).map_err(|_| NormaliseError::Prohibited)?
        }
        Normalise::Precis => {
            let out = UsernameCaseMapped::new()
                .enforce(name)
                .map_err(|_| NormaliseError::Prohibited)?;
            // RFC 7622 §3.3.1: characters PRECIS allows but a localpart does not.
            if out
                .chars()
                .any(|c| matches!(c, '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@'))
            {
                return Err(NormaliseError::Prohibited);
            }
            out
        }
    };
    if out.is_empty() {
        return Err(NormaliseError::Empty);
    }
    if out.len() > MAX_LOCALPART_BYTES {
        return Err(NormaliseError::TooLong);
    }
    Ok(out)
}

/// Both normalisers agree on printable ASCII: lower-case it, and refuse space, controls
/// and the localpart-prohibited `"&'/:<>@`. This skips the Unicode machinery (and its
/// allocations) for the common case; `None` means "not plain ASCII, take the long way".
#[inline]
fn ascii(name: &str) -> Option<Result<Cow<'_, str>, NormaliseError>> {
    let mut upper = false;
    for &b in name.as_bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => {}
            b'A'..=b'Z' => upper = true,
            b'"' | b'&' | b'\'' | b'/' | b':' | b'<' | b'>' | b'@' => {
                return Some(Err(NormaliseError::Prohibited));
            }
            0x21..=0x7e => {}
            0x00..=0x20 | 0x7f => return Some(Err(NormaliseError::Prohibited)),
            _ => return None,
        }
    }
    if name.len() > MAX_LOCALPART_BYTES {
        return Some(Err(NormaliseError::TooLong));
    }
    Some(Ok(if upper {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Normalise::*;

    #[test]
    fn table() {
        let cases: &[(Normalise, &str, Result<&str, NormaliseError>)] = &[
            (Nodeprep, "alice", Ok("alice")),
            (Nodeprep, "Alice", Ok("alice")),
            (Nodeprep, "ALICE", Ok("alice")),
            (Nodeprep, "Straße", Ok("strasse")),
            (Nodeprep, "STRASSE", Ok("strasse")),
            (Nodeprep, "Ärger", Ok("ärger")),
            (Nodeprep, "ＡＢＣ", Ok("abc")), // fullwidth, NFKC
            (Nodeprep, "ΣΊΣΥΦΟΣ", Ok("σίσυφοσ")),
            (Nodeprep, "日本", Ok("日本")),
            (Nodeprep, "a@b", Err(NormaliseError::Prohibited)),
            (Nodeprep, "a b", Err(NormaliseError::Prohibited)),
            (Nodeprep, "", Err(NormaliseError::Empty)),
            (Nodeprep, "\u{00AD}", Err(NormaliseError::Empty)), // soft hyphen maps to nothing
            (Precis, "alice", Ok("alice")),
            (Precis, "Alice", Ok("alice")),
            (Precis, "Straße", Ok("straße")), // PRECIS keeps ß: not one account with strasse
            (Precis, "ＡＢＣ", Ok("abc")),    // width mapping
            (Precis, "a b", Err(NormaliseError::Prohibited)),
            (Precis, "a@b", Err(NormaliseError::Prohibited)),
        ];
        for (how, input, want) in cases {
            let got = normalise(*how, input).map(|c| c.into_owned());
            assert_eq!(got, want.clone().map(str::to_owned), "{how:?} {input:?}");
        }
    }

    #[test]
    fn lower_case_ascii_borrows() {
        assert!(matches!(
            normalise(Nodeprep, "alice.smith-2").unwrap(),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            normalise(Precis, "alice").unwrap(),
            Cow::Borrowed(_)
        ));
    }

    /// The ASCII fast path must give exactly what the libraries give.
    #[test]
    fn ascii_fast_path_agrees_with_the_libraries() {
        let printable: Vec<char> = (0x20u8..=0x7e).map(char::from).collect();
        let mut inputs: Vec<String> = Vec::new();
        for &a in &printable {
            inputs.push(a.to_string());
            for &b in &printable {
                inputs.push(format!("x{a}{b}"));
            }
        }
        inputs.push("\u{7f}".into());
        inputs.push("a\tb".into());
        for input in &inputs {
            let fast = ascii(input).expect("ascii input takes the fast path");
            let slow_nodeprep = stringprep::nodeprep(input).map(|c| c.into_owned());
            let slow_precis = UsernameCaseMapped::new()
                .enforce(input.as_str())
                .map(|c| c.into_owned());
            let prohibited = input
                .chars()
                .any(|c| matches!(c, '"' | '&' | '\'' | '/' | ':' | '<' | '>' | '@'));
            let want_nodeprep = slow_nodeprep.ok();
            let want_precis = slow_precis.ok().filter(|_| !prohibited);
            let got = fast.clone().ok().map(|c| c.into_owned());
            assert_eq!(got, want_nodeprep, "nodeprep {input:?}");
            assert_eq!(got, want_precis, "precis {input:?}");
        }
    }

    #[test]
    fn too_long() {
        let long = "a".repeat(MAX_LOCALPART_BYTES + 1);
        assert_eq!(normalise(Nodeprep, &long), Err(NormaliseError::TooLong));
        assert!(normalise(Nodeprep, &long[1..]).is_ok());
    }
}
