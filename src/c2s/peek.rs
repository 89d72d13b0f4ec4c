//! Who is logging in: read the username from the client's first authentication
//! element without consuming more than it (DESIGN.md §3.3). Pure functions over the
//! decoded element; nothing here keeps a password. Decoded SASL data lives in
//! `Zeroizing` buffers that are wiped when dropped.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::config::Mechanism;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeekError {
    /// Maps to the SASL `<incorrect-encoding/>` failure.
    #[error("initial response is not valid base64")]
    Encoding,
    /// Maps to `<malformed-request/>`.
    #[error("malformed {0} message")]
    Malformed(&'static str),
    /// SCRAM with channel binding (`p=`): never offered, since TLS ends at dealer.
    #[error("channel binding requested but not offered")]
    ChannelBinding,
    /// A mechanism whose first message does not name the account.
    #[error("this mechanism does not say who logs in in its first message")]
    Unreadable,
}

/// Decode a SASL initial response or response: `=` is the empty response (RFC 6120
/// §6.4.2), absent text is "no initial response" (`None`).
pub fn decode_sasl(text: &str) -> Result<Option<Zeroizing<Vec<u8>>>, PeekError> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t == "=" {
        return Ok(Some(Zeroizing::new(Vec::new())));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(t.len() * 3 / 4 + 3));
    STANDARD
        .decode_vec(t, &mut out)
        .map_err(|_| PeekError::Encoding)?;
    Ok(Some(out))
}

/// The authentication identity in a mechanism's first client message.
pub fn sasl_username(mechanism: Mechanism, data: &[u8]) -> Result<String, PeekError> {
    match mechanism {
        Mechanism::Plain => plain_authcid(data),
        Mechanism::ScramSha1 | Mechanism::ScramSha256 => scram_username(data),
        Mechanism::Anonymous => Ok(String::new()),
    }
}

/// Who a mechanism's first client message names, by the mechanism's name as a client
/// wrote it — for streams where the owner's own list is offered (SASL2, early-routed
/// streams), so names dealer does not offer itself appear: `HT-*` (XEP-0484 FAST:
/// `authcid NUL token-proof`), `SCRAM-SHA-512` and the like. `Ok(None)` for ANONYMOUS;
/// an error for a mechanism whose first message names nobody dealer can read
/// (EXTERNAL, DIGEST-MD5, OAUTHBEARER: the account is not in it, or not plainly).
pub fn username_by_name(mechanism: &str, data: &[u8]) -> Result<Option<String>, PeekError> {
    let m = mechanism.to_ascii_uppercase();
    if m == "PLAIN" {
        plain_authcid(data).map(Some)
    } else if m == "ANONYMOUS" {
        Ok(None)
    } else if m.starts_with("SCRAM-") {
        scram_username(data).map(Some)
    } else if m.starts_with("HT-") {
        let authcid = data
            .split(|b| *b == 0)
            .next()
            .filter(|a| !a.is_empty() && data.contains(&0))
            .ok_or(PeekError::Malformed("HT"))?;
        let authcid = std::str::from_utf8(authcid).map_err(|_| PeekError::Malformed("HT"))?;
        Ok(Some(local_part(authcid).to_owned()))
    } else {
        Err(PeekError::Unreadable)
    }
}

/// PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`. The authcid is the account;
/// a client that sends a bare JID there gets its localpart (a localpart cannot hold
/// `@`, so nothing is lost).
fn plain_authcid(data: &[u8]) -> Result<String, PeekError> {
    let mut parts = data.splitn(3, |b| *b == 0);
    let (_authzid, authcid, passwd) = (parts.next(), parts.next(), parts.next());
    let (Some(authcid), Some(_)) = (authcid, passwd) else {
        return Err(PeekError::Malformed("PLAIN"));
    };
    let authcid = std::str::from_utf8(authcid).map_err(|_| PeekError::Malformed("PLAIN"))?;
    if authcid.is_empty() {
        return Err(PeekError::Malformed("PLAIN"));
    }
    Ok(local_part(authcid).to_owned())
}

/// SCRAM client-first-message (RFC 5802 §7): `gs2-header client-first-bare`, where the
/// gs2 header is `n,` / `y,` / `p=…,` then an optional `a=authzid`, then `,`; the bare
/// part starts `n=username,r=nonce`. In the username `=2C` is `,` and `=3D` is `=`.
fn scram_username(data: &[u8]) -> Result<String, PeekError> {
    let s = std::str::from_utf8(data).map_err(|_| PeekError::Malformed("SCRAM"))?;
    let mut it = s.splitn(3, ',');
    let cb = it.next().ok_or(PeekError::Malformed("SCRAM"))?;
    let _authzid = it.next().ok_or(PeekError::Malformed("SCRAM"))?;
    let bare = it.next().ok_or(PeekError::Malformed("SCRAM"))?;
    match cb {
        "n" | "y" => {}
        c if c.starts_with("p=") => return Err(PeekError::ChannelBinding),
        _ => return Err(PeekError::Malformed("SCRAM")),
    }
    let user = bare
        .split(',')
        .next()
        .and_then(|a| a.strip_prefix("n="))
        .ok_or(PeekError::Malformed("SCRAM"))?;
    let mut out = String::with_capacity(user.len());
    let mut rest = user;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(PeekError::Malformed("SCRAM")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(PeekError::Malformed("SCRAM"));
    }
    Ok(local_part(&out).to_owned())
}

fn local_part(s: &str) -> &str {
    s.split_once('@').map_or(s, |(l, _)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn plain() {
        let cases: &[(&[u8], Result<&str, PeekError>)] = &[
            (b"\0alice\0secret", Ok("alice")),
            (b"alice@example.com\0alice\0secret", Ok("alice")),
            (b"\0alice@example.com\0secret", Ok("alice")),
            (b"\0Stra\xc3\x9fe\0pw", Ok("Straße")),
            (b"\0alice\0", Ok("alice")), // empty password: the backend decides
            (b"\0\0secret", Err(PeekError::Malformed("PLAIN"))),
            (b"alice", Err(PeekError::Malformed("PLAIN"))),
            (b"\0alice", Err(PeekError::Malformed("PLAIN"))),
            (b"\0\xff\0pw", Err(PeekError::Malformed("PLAIN"))),
        ];
        for (data, want) in cases {
            let got = decode_sasl(&b64(data))
                .unwrap()
                .map(|d| sasl_username(Mechanism::Plain, &d))
                .unwrap();
            assert_eq!(got, want.clone().map(String::from), "{data:?}");
        }
    }

    #[test]
    fn scram() {
        let cases: &[(&str, Result<&str, PeekError>)] = &[
            ("n,,n=alice,r=abc", Ok("alice")),
            ("y,,n=alice,r=abc", Ok("alice")),
            ("n,a=alice@example.com,n=alice,r=abc", Ok("alice")),
            ("n,,n=a=2Cb=3Dc,r=abc", Ok("a,b=c")),
            ("n,,n=Stra\u{df}e,r=abc", Ok("Straße")),
            ("n,,n=alice@example.com,r=x", Ok("alice")),
            (
                "p=tls-unique,,n=alice,r=abc",
                Err(PeekError::ChannelBinding),
            ),
            ("n,,n=a=2Xb,r=abc", Err(PeekError::Malformed("SCRAM"))),
            ("n,,r=abc", Err(PeekError::Malformed("SCRAM"))),
            ("n,,n=,r=abc", Err(PeekError::Malformed("SCRAM"))),
            ("x,,n=alice,r=abc", Err(PeekError::Malformed("SCRAM"))),
            ("n,n=alice", Err(PeekError::Malformed("SCRAM"))),
        ];
        for (msg, want) in cases {
            let got = sasl_username(Mechanism::ScramSha1, msg.as_bytes());
            assert_eq!(got, want.clone().map(String::from), "{msg}");
        }
    }

    #[test]
    fn by_name() {
        let by = |m: &str, d: &[u8]| username_by_name(m, d);
        assert_eq!(by("PLAIN", b"\0alice\0pw"), Ok(Some("alice".into())));
        assert_eq!(by("scram-sha-512", b"n,,n=bob,r=x"), Ok(Some("bob".into())));
        assert_eq!(
            by("HT-SHA-256-NONE", b"carol@example.com\0\x01\x02"),
            Ok(Some("carol".into()))
        );
        assert_eq!(
            by("HT-SHA-256-NONE", b"carol"),
            Err(PeekError::Malformed("HT"))
        );
        assert_eq!(
            by("HT-SHA-256-NONE", b"\0x"),
            Err(PeekError::Malformed("HT"))
        );
        assert_eq!(by("ANONYMOUS", b""), Ok(None));
        assert_eq!(by("EXTERNAL", b"="), Err(PeekError::Unreadable));
        assert_eq!(
            by("SCRAM-SHA-1-PLUS", b"p=tls-exporter,,n=bob,r=x"),
            Err(PeekError::ChannelBinding)
        );
    }

    #[test]
    fn base64_forms() {
        assert_eq!(decode_sasl("").unwrap(), None);
        assert_eq!(decode_sasl("  \n").unwrap(), None);
        assert_eq!(decode_sasl("=").unwrap().unwrap().len(), 0);
        assert_eq!(decode_sasl("not base64!"), Err(PeekError::Encoding));
        assert_eq!(&**decode_sasl("YWJj").unwrap().unwrap(), b"abc");
    }
}
