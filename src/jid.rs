//! JIDs as routing needs them: split `local@domain/resource` without allocating, and
//! compare domains the way XMPP does (case-insensitively, without a trailing dot).
//! Localparts are normalised by `routing::normalise` where they are routed.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jid<'a> {
    pub local: Option<&'a str>,
    pub domain: &'a str,
    pub resource: Option<&'a str>,
}

impl<'a> Jid<'a> {
    /// Split a JID; `None` when it has no domain part.
    pub fn parse(s: &'a str) -> Option<Jid<'a>> {
        let (bare, resource) = match s.split_once('/') {
            Some((b, r)) => (b, Some(r)),
            None => (s, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((l, d)) => (Some(l), d),
            None => (None, bare),
        };
        if domain.is_empty() || local == Some("") || resource == Some("") {
            return None;
        }
        Some(Jid {
            local,
            domain,
            resource,
        })
    }

    /// Whether the domain part is `domain` (already lower-case, no trailing dot).
    pub fn domain_is(&self, domain: &str) -> bool {
        same_domain(self.domain, domain)
    }
}

/// Case-insensitive domain comparison ignoring one trailing dot on `a`.
pub fn same_domain(a: &str, b: &str) -> bool {
    a.strip_suffix('.').unwrap_or(a).eq_ignore_ascii_case(b)
}

/// The lower-case domain of a JID, for keys and comparisons.
pub fn domain_key(domain: &str) -> String {
    domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let j = Jid::parse("alice@Example.com/phone/2").unwrap();
        assert_eq!(
            (j.local, j.domain, j.resource),
            (Some("alice"), "Example.com", Some("phone/2"))
        );
        assert!(j.domain_is("example.com"));
        let d = Jid::parse("example.com").unwrap();
        assert_eq!((d.local, d.resource), (None, None));
        assert!(Jid::parse("@x").is_none());
        assert!(Jid::parse("a@").is_none());
        assert!(Jid::parse("a@b/").is_none());
        assert!(same_domain("example.com.", "example.com"));
    }
}
