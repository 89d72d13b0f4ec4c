//! Small typed values that appear in the config file and on the wire: `host:port`
//! (IPv6 in brackets), durations such as `30s`, and domain names.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// A value that must never show in logs or `Debug` output (the dialback secret):
/// read it with `expose`.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A `host:port` where the host may be a name or an IP literal (`[v6]:port`). Used for
/// addresses dealer hands to others (see-other-host, static s2s routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    pub fn parse(s: &str) -> Result<HostPort, String> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or_else(|| format!("`{s}` is not [IPv6]:port"))?;
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("`{v6}` is not an IPv6 address"))?;
            (v6, port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| format!("`{s}` is not host:port"))?;
            if host.contains(':') {
                return Err(format!(
                    "`{s}`: write an IPv6 address in brackets, [v6]:port"
                ));
            }
            (host, port)
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{port}` is not a port number (1-65535)"))?;
        if host.parse::<IpAddr>().is_err() {
            check_hostname(host)?;
        }
        Ok(HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn check_hostname(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{host}` is not a host name"))
    }
}

/// `30s`, `500ms`, `2m`, `1h 30m` (humantime's syntax); zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration such as 30s or 500ms ({e})"))?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

/// A domain as XMPP compares it: nameprep, lower case, no trailing dot.
pub fn parse_domain(s: &str) -> Result<String, String> {
    let trimmed = s.strip_suffix('.').unwrap_or(s);
    let prepped = stringprep::nameprep(trimmed)
        .map_err(|e| format!("`{s}` is not a valid domain ({e})"))?
        .to_lowercase();
    if prepped.is_empty() || prepped.len() > 1023 {
        return Err(format!("`{s}` is not a valid domain"));
    }
    if prepped
        .chars()
        .any(|c| matches!(c, '@' | '/' | ':' | ' ' | '[' | ']' | '\\'))
        || prepped.split('.').any(str::is_empty)
    {
        return Err(format!("`{s}` is not a valid domain"));
    }
    Ok(prepped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let cases: &[(&str, Option<&str>)] = &[
            ("xmpp1.example.com:5222", Some("xmpp1.example.com:5222")),
            ("XMPP1.Example.com:5222", Some("xmpp1.example.com:5222")),
            ("127.0.0.1:15222", Some("127.0.0.1:15222")),
            ("[::1]:5222", Some("[::1]:5222")),
            ("[2001:db8::1]:5222", Some("[2001:db8::1]:5222")),
            ("::1:5222", None),
            ("host", None),
            ("host:0", None),
            ("host:70000", None),
            ("bad host:5222", None),
            ("[nope]:5222", None),
        ];
        for (input, want) in cases {
            let got = HostPort::parse(input).ok().map(|h| h.to_string());
            assert_eq!(got.as_deref(), *want, "{input}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("thirty").is_err());
        assert!(parse_duration("30").is_err());
    }

    #[test]
    fn domains() {
        assert_eq!(parse_domain("Example.COM.").unwrap(), "example.com");
        assert!(parse_domain("a@b").is_err());
        assert!(parse_domain("a..b").is_err());
        assert!(parse_domain("").is_err());
    }
}
