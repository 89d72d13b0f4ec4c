//! The HAProxy PROXY protocol, versions 1 (text) and 2 (binary): how a load balancer
//! in front of dealer tells it who the client really is, and how dealer tells a backend
//! the same thing. Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.
//!
//! Sans-IO, like the XML framer: [`parse`] looks at the bytes read so far and answers
//! "need more", a header and its length, or an error; [`encode_v2`] builds bytes to
//! write. The caller owns the socket and the buffer, so bytes that follow the header
//! (the start of the XMPP or TLS stream) stay in the caller's buffer and are never lost.
//!
//! A listener that expects a header must not wait for one that is not coming: a
//! client that connects directly and sends `<?xml` or a TLS ClientHello gets an error
//! from its first byte, not after a read timeout. So [`parse`] answers "need more" only
//! while the bytes so far can still begin a valid header, and it bounds how much it
//! asks for ([`MAX_HEADER_LEN`]) so a peer cannot make dealer buffer much.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest v1 header, CRLF included (spec §2.1: `PROXY UNKNOWN` with two full-length
/// IPv6 addresses and two 5-digit ports).
pub const V1_MAX_LEN: usize = 107;

/// Longest v2 header dealer accepts: the 16 fixed bytes and at most 1 KiB of addresses
/// and TLVs. The wire format allows 64 KiB; no TLV dealer could use needs that much,
/// and the cap bounds what one unauthenticated connection can make us hold.
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + 1024;

/// With this many bytes buffered, [`parse`] never answers "need more".
pub const MAX_HEADER_LEN: usize = if V1_MAX_LEN > V2_MAX_LEN {
    V1_MAX_LEN
} else {
    V2_MAX_LEN
};

const V1_PREFIX: &[u8] = b"PROXY ";

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/protocol, 16-bit length.
const V2_FIXED_LEN: usize = 16;
/// Address block sizes (spec §2.2): two addresses and two ports; UNIX has two 108-byte paths.
const V2_INET_LEN: usize = 12;
const V2_INET6_LEN: usize = 36;
const V2_UNIX_LEN: usize = 216;

const V2_CMD_LOCAL: u8 = 0x0;
const V2_CMD_PROXY: u8 = 0x1;
const V2_AF_UNSPEC: u8 = 0x0;
const V2_AF_INET: u8 = 0x1;
const V2_AF_INET6: u8 = 0x2;
const V2_AF_UNIX: u8 = 0x3;
const V2_PROTO_UNSPEC: u8 = 0x0;
const V2_PROTO_STREAM: u8 = 0x1;
const V2_PROTO_DGRAM: u8 = 0x2;

/// What a PROXY header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyInfo {
    /// A proxied TCP connection over IPv4 or IPv6: the original client and the address
    /// it connected to. Addresses are reported as sent: a v2 sender that mixed families
    /// sends IPv4-mapped IPv6 (see [`encode_v2`]); `IpAddr::to_canonical` undoes that.
    Tcp {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// `PROXY UNKNOWN` (v1) or the LOCAL command / AF_UNSPEC / non-TCP (v2): keep the
    /// socket's own addresses. UDP and UNIX addresses under the PROXY command land here
    /// too: they say nothing usable about a TCP client, and the spec lets a receiver
    /// fall back to the real endpoints for protocols it does not support.
    Local,
}

/// Why the bytes cannot start a PROXY header. None of these echo peer bytes, so they
/// are safe to log and small enough to count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY v1 header: {0}")]
    V1Syntax(&'static str),
    #[error("PROXY v1 header with an unknown protocol (not TCP4, TCP6 or UNKNOWN)")]
    V1Protocol,
    #[error("PROXY v1 header with the wrong number of fields")]
    V1Fields,
    #[error("PROXY v1 header with a bad address or one of the wrong family")]
    V1Address,
    #[error("PROXY v1 header with a bad port")]
    V1Port,
    #[error("PROXY v1 header without CRLF within {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("PROXY v2 header with unsupported version {0}")]
    V2Version(u8),
    #[error("PROXY v2 header with unknown command {0}")]
    V2Command(u8),
    #[error("PROXY v2 header with unknown address family/protocol {0:#04x}")]
    V2Family(u8),
    #[error("PROXY v2 address block of {len} bytes, its family needs {min}")]
    V2ShortAddress { len: usize, min: usize },
    #[error("PROXY v2 header of {0} bytes, more than the {V2_MAX_LEN} accepted")]
    V2TooLong(usize),
}

/// Parse a PROXY header at the start of `buf`.
///
/// - `Ok(None)`: more bytes are needed (`buf` is a prefix of a possibly valid header).
/// - `Ok(Some((info, len)))`: a complete header of `len` bytes; the caller drops them
///   and what follows is the application stream.
/// - `Err`: `buf` cannot start a valid PROXY header (e.g. it starts with `<`, an XMPP
///   client that sent no header, or garbage).
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyInfo, usize)>, ProxyError> {
    // The two versions differ from the first byte, so one byte is enough to choose.
    match buf.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

/// How many bytes to read next so as not to read past a header that starts with
/// `buf`: what follows it may be a TLS ClientHello that a TLS library must see. A v2
/// header announces its length after 16 bytes; before that, and for v1, one byte.
pub fn next_read(buf: &[u8]) -> usize {
    if buf.len() >= V2_FIXED_LEN && buf[0] == b'\r' {
        (V2_FIXED_LEN + usize::from(u16::from_be_bytes([buf[14], buf[15]])))
            .saturating_sub(buf.len())
            .max(1)
    } else {
        1
    }
}

/// The v2 header a proxy sends to tell its backend who the client is (command PROXY,
/// STREAM over INET or INET6). If source and destination are of different families,
/// the IPv4 one is mapped to IPv4-mapped IPv6 so that both are INET6: the header has
/// one family byte for both addresses.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (family, src, dst): (u8, Vec<u8>, Vec<u8>) = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (V2_AF_INET, s.octets().into(), d.octets().into()),
        (s, d) => (
            V2_AF_INET6,
            as_v6(s).octets().into(),
            as_v6(d).octets().into(),
        ),
    };
    let block_len = src.len() + dst.len() + 4;
    let mut out = Vec::with_capacity(V2_FIXED_LEN + block_len);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x20 | V2_CMD_PROXY);
    out.push((family << 4) | V2_PROTO_STREAM);
    // At most 36 bytes, so the cast cannot truncate.
    out.extend_from_slice(&(block_len as u16).to_be_bytes());
    out.extend_from_slice(&src);
    out.extend_from_slice(&dst);
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

// ---------------------------------------------------------------------------------
// Version 1: `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, single spaces, at most 107
// bytes. Incomplete lines are checked field by field, so that a line which has already
// gone wrong fails now rather than when its CRLF (or the 107th byte) arrives.

#[derive(Clone, Copy)]
enum V1Family {
    Tcp4,
    Tcp6,
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyInfo, usize)>, ProxyError> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Err(ProxyError::NotProxy);
    }
    if buf.len() <= V1_PREFIX.len() {
        return Ok(None);
    }
    // Nothing past the longest possible line matters: it is the application stream or
    // proof that the line is too long.
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            // `lf` >= 6: the first six bytes are "PROXY ".
            if window[lf - 1] != b'\r' {
                return Err(ProxyError::V1Syntax("line feed without carriage return"));
            }
            let body = &window[V1_PREFIX.len()..lf - 1];
            check_printable(body)?;
            let info = parse_v1_line(body)?;
            Ok(Some((info, lf + 1)))
        }
        None => {
            let (body, has_cr) = match &window[V1_PREFIX.len()..] {
                [body @ .., b'\r'] => (body, true),
                body => (body, false),
            };
            check_printable(body)?;
            if buf.len() >= V1_MAX_LEN {
                return Err(ProxyError::V1TooLong);
            }
            if has_cr {
                // Only the LF is missing: the line must already be complete and valid.
                parse_v1_line(body)?;
            } else {
                check_v1_partial(body)?;
            }
            Ok(None)
        }
    }
}

fn check_printable(body: &[u8]) -> Result<(), ProxyError> {
    match body.iter().find(|b| !matches!(b, 0x20..=0x7e)) {
        None => Ok(()),
        Some(b'\r') => Err(ProxyError::V1Syntax("carriage return without line feed")),
        Some(_) => Err(ProxyError::V1Syntax("byte that is not printable ASCII")),
    }
}

/// Split off the first space-separated field; `None` for the rest when there is no space.
fn split_field(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// A complete line without `PROXY ` and CRLF.
fn parse_v1_line(body: &[u8]) -> Result<ProxyInfo, ProxyError> {
    let (proto, rest) = split_field(body);
    let family = match proto {
        // The spec: after UNKNOWN the receiver ignores everything up to the CRLF.
        b"UNKNOWN" => return Ok(ProxyInfo::Local),
        b"TCP4" => V1Family::Tcp4,
        b"TCP6" => V1Family::Tcp6,
        _ => return Err(ProxyError::V1Protocol),
    };
    let mut fields = rest.ok_or(ProxyError::V1Fields)?.split(|&b| b == b' ');
    let mut next = || fields.next().ok_or(ProxyError::V1Fields);
    let source_ip = v1_address(family, next()?)?;
    let destination_ip = v1_address(family, next()?)?;
    let source_port = v1_port(next()?)?;
    let destination_port = v1_port(next()?)?;
    if fields.next().is_some() {
        return Err(ProxyError::V1Fields);
    }
    Ok(ProxyInfo::Tcp {
        source: SocketAddr::new(source_ip, source_port),
        destination: SocketAddr::new(destination_ip, destination_port),
    })
}

/// An incomplete line (no CR yet) without `PROXY `: every finished field must be valid
/// and the field being received must be a prefix of a valid one.
fn check_v1_partial(body: &[u8]) -> Result<(), ProxyError> {
    let (proto, rest) = split_field(body);
    let Some(rest) = rest else {
        let known: [&[u8]; 3] = [b"TCP4", b"TCP6", b"UNKNOWN"];
        return if known.iter().any(|p| p.starts_with(proto)) {
            Ok(())
        } else {
            Err(ProxyError::V1Protocol)
        };
    };
    let family = match proto {
        b"UNKNOWN" => return Ok(()),
        b"TCP4" => V1Family::Tcp4,
        b"TCP6" => V1Family::Tcp6,
        _ => return Err(ProxyError::V1Protocol),
    };
    let (done, last) = match rest.iter().rposition(|&b| b == b' ') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let mut index = 0;
    for field in done.into_iter().flat_map(|d| d.split(|&b| b == b' ')) {
        match index {
            0 | 1 => {
                v1_address(family, field)?;
            }
            2 | 3 => {
                v1_port(field)?;
            }
            _ => return Err(ProxyError::V1Fields),
        }
        index += 1;
    }
    match index {
        0 | 1 => v1_address_prefix(family, last),
        2 | 3 => v1_port_digits(last).map(|_| ()),
        _ => Err(ProxyError::V1Fields),
    }
}

fn v1_address(family: V1Family, field: &[u8]) -> Result<IpAddr, ProxyError> {
    let text = std::str::from_utf8(field).map_err(|_| ProxyError::V1Address)?;
    // std's parsers are strict enough for the spec: no leading zeros in IPv4 octets,
    // no IPv6 zone identifiers, no surrounding brackets.
    let ip = match family {
        V1Family::Tcp4 => text.parse::<Ipv4Addr>().map(IpAddr::V4),
        V1Family::Tcp6 => text.parse::<Ipv6Addr>().map(IpAddr::V6),
    };
    ip.map_err(|_| ProxyError::V1Address)
}

fn v1_address_prefix(family: V1Family, field: &[u8]) -> Result<(), ProxyError> {
    // Longest text forms: "255.255.255.255" and "ffff:…:ffff:255.255.255.255".
    let ok = match family {
        V1Family::Tcp4 => {
            field.len() <= 15 && field.iter().all(|&b| b.is_ascii_digit() || b == b'.')
        }
        V1Family::Tcp6 => {
            field.len() <= 45
                && field
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ProxyError::V1Address)
    }
}

fn v1_port(field: &[u8]) -> Result<u16, ProxyError> {
    if field.is_empty() {
        return Err(ProxyError::V1Port);
    }
    u16::try_from(v1_port_digits(field)?).map_err(|_| ProxyError::V1Port)
}

/// The value of a port, or of the start of one still arriving: decimal digits only
/// (std's integer parser would take a leading `+`), no leading zero except "0" itself,
/// at most 65535.
fn v1_port_digits(field: &[u8]) -> Result<u32, ProxyError> {
    let leading_zero = field.len() > 1 && field[0] == b'0';
    if field.len() > 5 || leading_zero || !field.iter().all(u8::is_ascii_digit) {
        return Err(ProxyError::V1Port);
    }
    // At most five digits: no overflow.
    let value = field
        .iter()
        .fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'));
    if value > u32::from(u16::MAX) {
        return Err(ProxyError::V1Port);
    }
    Ok(value)
}

// ---------------------------------------------------------------------------------
// Version 2: 12-byte signature, version/command, family/protocol, big-endian length,
// then the address block and TLVs. Each fixed byte is checked as soon as it arrives.

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyInfo, usize)>, ProxyError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(ProxyError::NotProxy);
    }
    let Some(&version_command) = buf.get(12) else {
        return Ok(None);
    };
    let version = version_command >> 4;
    if version != 2 {
        return Err(ProxyError::V2Version(version));
    }
    let local = match version_command & 0x0f {
        V2_CMD_LOCAL => true,
        V2_CMD_PROXY => false,
        other => return Err(ProxyError::V2Command(other)),
    };
    let Some(&family_protocol) = buf.get(13) else {
        return Ok(None);
    };
    // Under LOCAL the spec says to discard the block "including the family", so the
    // family byte is only checked for PROXY.
    let (family, protocol) = (family_protocol >> 4, family_protocol & 0x0f);
    let defined = matches!(family, V2_AF_UNSPEC | V2_AF_INET | V2_AF_INET6 | V2_AF_UNIX)
        && matches!(protocol, V2_PROTO_UNSPEC | V2_PROTO_STREAM | V2_PROTO_DGRAM);
    if !local && !defined {
        return Err(ProxyError::V2Family(family_protocol));
    }
    let [Some(&hi), Some(&lo)] = [buf.get(14), buf.get(15)] else {
        return Ok(None);
    };
    let block_len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = V2_FIXED_LEN + block_len;
    if total > V2_MAX_LEN {
        return Err(ProxyError::V2TooLong(total));
    }
    // The block must hold the addresses it announces; LOCAL and UNSPEC announce none.
    let min = match family {
        _ if local || protocol == V2_PROTO_UNSPEC => 0,
        V2_AF_INET => V2_INET_LEN,
        V2_AF_INET6 => V2_INET6_LEN,
        V2_AF_UNIX => V2_UNIX_LEN,
        _ => 0,
    };
    if block_len < min {
        return Err(ProxyError::V2ShortAddress {
            len: block_len,
            min,
        });
    }
    let Some(block) = buf.get(V2_FIXED_LEN..total) else {
        return Ok(None);
    };
    // Whatever follows the addresses in the block is TLVs (ALPN, SNI, unique id…);
    // dealer uses none of them, so they are skipped without being parsed.
    let info = match (local, family, protocol) {
        (false, V2_AF_INET, V2_PROTO_STREAM) => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    block[at],
                    block[at + 1],
                    block[at + 2],
                    block[at + 3],
                ))
            };
            ProxyInfo::Tcp {
                source: SocketAddr::new(ip(0), be16(block, 8)),
                destination: SocketAddr::new(ip(4), be16(block, 10)),
            }
        }
        (false, V2_AF_INET6, V2_PROTO_STREAM) => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            ProxyInfo::Tcp {
                source: SocketAddr::new(ip(0), be16(block, 32)),
                destination: SocketAddr::new(ip(16), be16(block, 34)),
            }
        }
        _ => ProxyInfo::Local,
    };
    Ok(Some((info, total)))
}

/// The length check above guarantees `at + 1 < block.len()`.
fn be16(block: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([block[at], block[at + 1]])
}

#[cfg(test)]
mod tests {
    use super::ProxyError::*;
    use super::*;

    fn tcp(source: &str, destination: &str) -> ProxyInfo {
        ProxyInfo::Tcp {
            // Test literals, all valid socket addresses.
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    /// A v2 header: signature, the two given bytes, the block's length, the block.
    fn v2(version_command: u8, family_protocol: u8, block: &[u8]) -> Vec<u8> {
        let mut out = v2_fixed(version_command, family_protocol, block.len() as u16);
        out.extend_from_slice(block);
        out
    }

    /// Only the 16 fixed bytes, claiming a block of `len` bytes.
    fn v2_fixed(version_command: u8, family_protocol: u8, len: u16) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(version_command);
        out.push(family_protocol);
        out.extend_from_slice(&len.to_be_bytes());
        out
    }

    const INET_BLOCK: [u8; 12] = [192, 0, 2, 1, 198, 51, 100, 7, 0x30, 0x39, 0x14, 0x66];

    fn inet6_block() -> Vec<u8> {
        // Test literals, both valid IPv6 addresses.
        let mut b = Vec::new();
        b.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"2001:db8::2:3".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&[0xff, 0xff, 0x00, 0x00]);
        b
    }

    fn with_tlvs(block: &[u8]) -> Vec<u8> {
        let mut b = block.to_vec();
        b.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']); // PP2_TYPE_ALPN
        b.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]); // PP2_TYPE_NOOP
        b
    }

    fn valid() -> Vec<(&'static str, Vec<u8>, ProxyInfo)> {
        let v1 = |s: &str| s.as_bytes().to_vec();
        let longest_unknown = format!(
            "PROXY UNKNOWN {f} {f} 65535 65535\r\n",
            f = ["ffff"; 8].join(":")
        );
        assert_eq!(longest_unknown.len(), V1_MAX_LEN);
        let mut max_tlvs = INET6_BLOCK_FOR_MAX.to_vec();
        max_tlvs.resize(1024, 0);
        vec![
            (
                "v1 tcp4",
                v1("PROXY TCP4 192.0.2.1 198.51.100.7 12345 5222\r\n"),
                tcp("192.0.2.1:12345", "198.51.100.7:5222"),
            ),
            (
                "v1 tcp4 port limits",
                v1("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"),
                tcp("0.0.0.0:0", "255.255.255.255:65535"),
            ),
            (
                "v1 tcp6",
                v1("PROXY TCP6 2001:db8::1 2001:db8::2:3 65535 5222\r\n"),
                tcp("[2001:db8::1]:65535", "[2001:db8::2:3]:5222"),
            ),
            (
                "v1 tcp6 mapped v4",
                v1("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n"),
                tcp("[::ffff:192.0.2.1]:1", "[::1]:2"),
            ),
            (
                "v1 tcp6 upper case",
                v1("PROXY TCP6 2001:DB8::A ::1 80 443\r\n"),
                tcp("[2001:db8::a]:80", "[::1]:443"),
            ),
            ("v1 unknown", v1("PROXY UNKNOWN\r\n"), ProxyInfo::Local),
            (
                "v1 unknown with addresses",
                v1("PROXY UNKNOWN 192.0.2.1 ::1 80 443\r\n"),
                ProxyInfo::Local,
            ),
            (
                "v1 unknown with junk",
                v1("PROXY UNKNOWN whatever <we> ignore\r\n"),
                ProxyInfo::Local,
            ),
            (
                "v1 longest line",
                longest_unknown.into_bytes(),
                ProxyInfo::Local,
            ),
            (
                "v2 tcp4",
                v2(0x21, 0x11, &INET_BLOCK),
                tcp("192.0.2.1:12345", "198.51.100.7:5222"),
            ),
            (
                "v2 tcp6",
                v2(0x21, 0x21, &inet6_block()),
                tcp("[2001:db8::1]:65535", "[2001:db8::2:3]:0"),
            ),
            (
                "v2 tcp4 with tlvs",
                v2(0x21, 0x11, &with_tlvs(&INET_BLOCK)),
                tcp("192.0.2.1:12345", "198.51.100.7:5222"),
            ),
            (
                "v2 tcp6 with tlvs",
                v2(0x21, 0x21, &with_tlvs(&inet6_block())),
                tcp("[2001:db8::1]:65535", "[2001:db8::2:3]:0"),
            ),
            (
                "v2 tcp6 largest accepted",
                v2(0x21, 0x21, &max_tlvs),
                tcp("[::1]:1", "[::2]:2"),
            ),
            ("v2 local", v2(0x20, 0x00, &[]), ProxyInfo::Local),
            (
                "v2 local with tcp4 block",
                v2(0x20, 0x11, &INET_BLOCK),
                ProxyInfo::Local,
            ),
            // The spec discards the family under LOCAL, even an undefined one.
            (
                "v2 local ignores family",
                v2(0x20, 0xff, &[1, 2, 3]),
                ProxyInfo::Local,
            ),
            ("v2 proxy unspec", v2(0x21, 0x00, &[]), ProxyInfo::Local),
            (
                "v2 proxy udp4",
                v2(0x21, 0x12, &INET_BLOCK),
                ProxyInfo::Local,
            ),
            (
                "v2 proxy udp6",
                v2(0x21, 0x22, &inet6_block()),
                ProxyInfo::Local,
            ),
            (
                "v2 proxy unix stream",
                v2(0x21, 0x31, &[b'/'; 216]),
                ProxyInfo::Local,
            ),
            (
                "v2 proxy unix dgram",
                v2(0x21, 0x32, &[0; 216]),
                ProxyInfo::Local,
            ),
            (
                "v2 proxy inet unspec protocol",
                v2(0x21, 0x10, &[]),
                ProxyInfo::Local,
            ),
        ]
    }

    /// [::1]:1 → [::2]:2.
    const INET6_BLOCK_FOR_MAX: [u8; 36] = {
        let mut b = [0u8; 36];
        b[15] = 1;
        b[31] = 2;
        b[33] = 1;
        b[35] = 2;
        b
    };

    fn invalid() -> Vec<(&'static str, Vec<u8>, ProxyError)> {
        let v1 = |s: &str| s.as_bytes().to_vec();
        let too_long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_LEN - 15));
        assert_eq!(too_long.len(), V1_MAX_LEN + 1);
        let mut bad_signature = v2(0x21, 0x11, &INET_BLOCK);
        bad_signature[11] = b'\r';
        vec![
            ("xmpp", v1("<?xml version='1.0'?><stream:stream"), NotProxy),
            (
                "xmpp without declaration",
                v1("<stream:stream xmlns='jabber:client'>"),
                NotProxy,
            ),
            (
                "tls client hello",
                vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01],
                NotProxy,
            ),
            ("http", v1("GET / HTTP/1.1\r\n"), NotProxy),
            (
                "lower case",
                v1("proxy TCP4 192.0.2.1 192.0.2.2 1 2\r\n"),
                NotProxy,
            ),
            (
                "no space",
                v1("PROXYTCP4 192.0.2.1 192.0.2.2 1 2\r\n"),
                NotProxy,
            ),
            ("bare proxy", v1("PROXY\r\n"), NotProxy),
            (
                "v1 unknown protocol",
                v1("PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n"),
                V1Protocol,
            ),
            (
                "v1 lower-case protocol",
                v1("PROXY tcp4 192.0.2.1 192.0.2.2 1 2\r\n"),
                V1Protocol,
            ),
            ("v1 empty protocol", v1("PROXY \r\n"), V1Protocol),
            ("v1 unknown glued", v1("PROXY UNKNOWNX\r\n"), V1Protocol),
            ("v1 tcp4 alone", v1("PROXY TCP4\r\n"), V1Fields),
            (
                "v1 missing port",
                v1("PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n"),
                V1Fields,
            ),
            (
                "v1 extra field",
                v1("PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n"),
                V1Fields,
            ),
            (
                "v1 trailing space",
                v1("PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n"),
                V1Fields,
            ),
            (
                "v1 double space",
                v1("PROXY TCP4  192.0.2.1 192.0.2.2 1 2\r\n"),
                V1Address,
            ),
            (
                "v1 octet too big",
                v1("PROXY TCP4 256.0.2.1 192.0.2.2 1 2\r\n"),
                V1Address,
            ),
            (
                "v1 three octets",
                v1("PROXY TCP4 192.0.2 192.0.2.2 1 2\r\n"),
                V1Address,
            ),
            (
                "v1 leading zero octet",
                v1("PROXY TCP4 192.0.2.01 192.0.2.2 1 2\r\n"),
                V1Address,
            ),
            (
                "v1 hostname",
                v1("PROXY TCP4 localhost 192.0.2.2 1 2\r\n"),
                V1Address,
            ),
            (
                "v1 tcp4 with v6",
                v1("PROXY TCP4 ::1 ::2 1 2\r\n"),
                V1Address,
            ),
            (
                "v1 tcp4 with v6 destination",
                v1("PROXY TCP4 192.0.2.1 ::2 1 2\r\n"),
                V1Address,
            ),
            (
                "v1 tcp6 with v4",
                v1("PROXY TCP6 192.0.2.1 192.0.2.2 1 2\r\n"),
                V1Address,
            ),
            (
                "v1 tcp6 zone",
                v1("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"),
                V1Address,
            ),
            (
                "v1 tcp6 brackets",
                v1("PROXY TCP6 [::1] ::1 1 2\r\n"),
                V1Address,
            ),
            (
                "v1 tcp6 bad group",
                v1("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"),
                V1Address,
            ),
            (
                "v1 port too big",
                v1("PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n"),
                V1Port,
            ),
            (
                "v1 port far too big",
                v1("PROXY TCP4 192.0.2.1 192.0.2.2 1 100000\r\n"),
                V1Port,
            ),
            (
                "v1 port plus",
                v1("PROXY TCP4 192.0.2.1 192.0.2.2 +1 2\r\n"),
                V1Port,
            ),
            (
                "v1 port minus",
                v1("PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n"),
                V1Port,
            ),
            (
                "v1 port leading zero",
                v1("PROXY TCP4 192.0.2.1 192.0.2.2 1 0443\r\n"),
                V1Port,
            ),
            (
                "v1 port double zero",
                v1("PROXY TCP4 192.0.2.1 192.0.2.2 00 2\r\n"),
                V1Port,
            ),
            (
                "v1 port hex",
                v1("PROXY TCP4 192.0.2.1 192.0.2.2 1 8a\r\n"),
                V1Port,
            ),
            (
                "v1 port empty",
                v1("PROXY TCP4 192.0.2.1 192.0.2.2  2\r\n"),
                V1Port,
            ),
            (
                "v1 lf only",
                v1("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n"),
                V1Syntax("line feed without carriage return"),
            ),
            (
                "v1 cr cr lf",
                v1("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\r\n"),
                V1Syntax("carriage return without line feed"),
            ),
            (
                "v1 cr then data",
                v1("PROXY UNKNOWN\r<stream:stream>"),
                V1Syntax("carriage return without line feed"),
            ),
            (
                "v1 tab",
                v1("PROXY TCP4 192.0.2.1\t192.0.2.2 1 2\r\n"),
                V1Syntax("byte that is not printable ASCII"),
            ),
            (
                "v1 nul after unknown",
                v1("PROXY UNKNOWN \0\r\n"),
                V1Syntax("byte that is not printable ASCII"),
            ),
            (
                "v1 non-ascii",
                "PROXY UNKNOWN é\r\n".as_bytes().to_vec(),
                V1Syntax("byte that is not printable ASCII"),
            ),
            ("v1 too long", too_long.into_bytes(), V1TooLong),
            (
                "v1 no crlf",
                v1(&format!("PROXY UNKNOWN {}", "y".repeat(200))),
                V1TooLong,
            ),
            ("v2 bad signature", bad_signature, NotProxy),
            ("v2 version 1", v2(0x11, 0x11, &INET_BLOCK), V2Version(1)),
            ("v2 version 3", v2(0x31, 0x11, &INET_BLOCK), V2Version(3)),
            ("v2 version 0", v2(0x01, 0x11, &INET_BLOCK), V2Version(0)),
            ("v2 command 2", v2(0x22, 0x11, &INET_BLOCK), V2Command(2)),
            ("v2 command 15", v2(0x2f, 0x11, &INET_BLOCK), V2Command(15)),
            ("v2 family 4", v2(0x21, 0x41, &INET_BLOCK), V2Family(0x41)),
            ("v2 protocol 3", v2(0x21, 0x13, &INET_BLOCK), V2Family(0x13)),
            ("v2 family 0xff", v2(0x21, 0xff, &[]), V2Family(0xff)),
            (
                "v2 tcp4 short",
                v2(0x21, 0x11, &INET_BLOCK[..11]),
                V2ShortAddress { len: 11, min: 12 },
            ),
            (
                "v2 tcp6 with v4 length",
                v2(0x21, 0x21, &INET_BLOCK),
                V2ShortAddress { len: 12, min: 36 },
            ),
            (
                "v2 tcp6 empty",
                v2_fixed(0x21, 0x21, 0),
                V2ShortAddress { len: 0, min: 36 },
            ),
            (
                "v2 udp4 short",
                v2_fixed(0x21, 0x12, 4),
                V2ShortAddress { len: 4, min: 12 },
            ),
            (
                "v2 unix short",
                v2(0x21, 0x31, &[0; 36]),
                V2ShortAddress { len: 36, min: 216 },
            ),
            (
                "v2 just too long",
                v2_fixed(0x21, 0x21, 1025),
                V2TooLong(V2_MAX_LEN + 1),
            ),
            (
                "v2 longest claim",
                v2_fixed(0x21, 0x11, u16::MAX),
                V2TooLong(16 + 65535),
            ),
            (
                "v2 local too long",
                v2_fixed(0x20, 0x00, 2000),
                V2TooLong(2016),
            ),
        ]
    }

    #[test]
    fn valid_headers_at_every_split() {
        for (name, header, info) in valid() {
            let len = header.len();
            assert!(len <= MAX_HEADER_LEN, "{name}");
            for cut in 0..len {
                assert_eq!(
                    parse(&header[..cut]),
                    Ok(None),
                    "{name}: prefix of {cut} bytes"
                );
            }
            assert_eq!(parse(&header), Ok(Some((info, len))), "{name}");
            // What follows belongs to the application and must not change the answer,
            // even when it looks like another header.
            for tail in [
                &b"<?xml version='1.0'?><stream:stream"[..],
                b"\r\n",
                b"PROXY UNKNOWN\r\n",
                &[0x16, 3, 1],
                &[0; 2000],
            ] {
                let mut stream = header.clone();
                stream.extend_from_slice(tail);
                assert_eq!(
                    parse(&stream),
                    Ok(Some((info, len))),
                    "{name} with tail {tail:?}"
                );
            }
        }
    }

    #[test]
    fn invalid_headers_fail_early_and_consistently() {
        for (name, bytes, error) in invalid() {
            assert_eq!(parse(&bytes), Err(error.clone()), "{name}");
            // While the bytes are still consistent with a header we wait; once they are
            // not, every longer prefix reports the same error.
            let mut failed = false;
            for cut in 0..bytes.len() {
                match parse(&bytes[..cut]) {
                    Ok(None) => assert!(!failed, "{name}: prefix of {cut} bytes recovered"),
                    Err(e) => {
                        assert_eq!(e, error, "{name}: prefix of {cut} bytes");
                        failed = true;
                    }
                    Ok(Some(found)) => panic!("{name}: prefix of {cut} bytes parsed as {found:?}"),
                }
            }
        }
    }

    #[test]
    fn errors_come_as_soon_as_the_bad_byte_arrives() {
        let cases: [(&str, &[u8], ProxyError); 12] = [
            ("xmpp", b"<", NotProxy),
            ("tls", &[0x16], NotProxy),
            ("nul", &[0], NotProxy),
            ("v1 signature", b"PROXI", NotProxy),
            ("v2 signature", b"\r\n\r\n\0\r\nQUIT\r", NotProxy),
            ("v1 protocol", b"PROXY TCP3", V1Protocol),
            ("v1 xml as address", b"PROXY TCP4 <", V1Address),
            ("v1 v6 in tcp4", b"PROXY TCP4 :", V1Address),
            ("v1 port sign", b"PROXY TCP4 1.2.3.4 5.6.7.8 +", V1Port),
            (
                "v1 port leading zero",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 01",
                V1Port,
            ),
            ("v2 version", b"\r\n\r\n\0\r\nQUIT\n\x11", V2Version(1)),
            ("v2 family", b"\r\n\r\n\0\r\nQUIT\n\x21\x51", V2Family(0x51)),
        ];
        for (name, bytes, error) in cases {
            assert_eq!(parse(bytes), Err(error), "{name}");
        }
        // The two streams a misconfigured client would send, in full.
        for stream in [
            &b"<?xml version='1.0'?><stream:stream"[..],
            &[0x16, 0x03, 0x01],
        ] {
            for cut in 1..=stream.len() {
                assert_eq!(
                    parse(&stream[..cut]),
                    Err(NotProxy),
                    "{stream:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn enough_bytes_always_decide() {
        // A peer that trickles printable bytes after "PROXY UNKNOWN" is cut off at the
        // v1 limit; one that claims a long v2 block at the length field.
        let mut v1 = b"PROXY UNKNOWN ".to_vec();
        v1.resize(V1_MAX_LEN - 1, b'a');
        assert_eq!(parse(&v1), Ok(None));
        v1.push(b'a');
        assert_eq!(parse(&v1), Err(V1TooLong));
        let mut v2 = v2_fixed(0x21, 0x21, 1024);
        v2.resize(MAX_HEADER_LEN - 1, 0);
        assert_eq!(parse(&v2), Ok(None));
        v2.push(0);
        assert!(matches!(parse(&v2), Ok(Some((_, MAX_HEADER_LEN)))));
    }

    #[test]
    fn encode_v2_round_trips() {
        let cases = [
            (
                "v4 v4",
                "192.0.2.1:12345",
                "198.51.100.7:5222",
                0x11,
                "192.0.2.1:12345",
                "198.51.100.7:5222",
            ),
            (
                "v6 v6",
                "[2001:db8::1]:1",
                "[2001:db8::2]:65535",
                0x21,
                "[2001:db8::1]:1",
                "[2001:db8::2]:65535",
            ),
            (
                "v4 v6",
                "192.0.2.1:0",
                "[2001:db8::2]:5222",
                0x21,
                "[::ffff:192.0.2.1]:0",
                "[2001:db8::2]:5222",
            ),
            (
                "v6 v4",
                "[::1]:5269",
                "198.51.100.7:5269",
                0x21,
                "[::1]:5269",
                "[::ffff:198.51.100.7]:5269",
            ),
            (
                "mapped v6 stays v6",
                "[::ffff:192.0.2.1]:7",
                "[::ffff:192.0.2.2]:8",
                0x21,
                "[::ffff:192.0.2.1]:7",
                "[::ffff:192.0.2.2]:8",
            ),
        ];
        for (name, source, destination, family, want_source, want_destination) in cases {
            // Test literals, all valid socket addresses.
            let header = encode_v2(source.parse().unwrap(), destination.parse().unwrap());
            assert_eq!(&header[..12], &V2_SIGNATURE, "{name}");
            assert_eq!(header[12], 0x21, "{name}: version 2, PROXY");
            assert_eq!(header[13], family, "{name}");
            let block = usize::from(u16::from_be_bytes([header[14], header[15]]));
            assert_eq!(header.len(), V2_FIXED_LEN + block, "{name}");
            let want = tcp(want_source, want_destination);
            assert_eq!(parse(&header), Ok(Some((want, header.len()))), "{name}");
        }
        // The exact bytes of one header, against a hand-written copy (valid literals).
        let header = encode_v2(
            "192.0.2.1:12345".parse().unwrap(),
            "198.51.100.7:5222".parse().unwrap(),
        );
        assert_eq!(header, v2(0x21, 0x11, &INET_BLOCK));
    }
}
