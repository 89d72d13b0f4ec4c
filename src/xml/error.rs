//! What can be wrong with a stream, and the stream error (RFC 6120 §4.9.3) that tells
//! the peer. Each limit violation also names the limit for the metrics.

use std::fmt;

/// A problem the framer found in the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("not well-formed XML: {0}")]
    NotWellFormed(String),
    #[error("restricted XML: {0}")]
    Restricted(&'static str),
    #[error("character data between stanzas")]
    TextAtStreamLevel,
    #[error("stream header longer than {0} bytes")]
    HeaderTooBig(usize),
    #[error("element longer than {0} bytes")]
    StanzaTooBig(usize),
    #[error("elements nested deeper than {0}")]
    TooDeep(usize),
    #[error("more than {0} attributes on one element")]
    TooManyAttributes(usize),
    #[error("an encoding other than UTF-8")]
    UnsupportedEncoding,
}

impl XmlError {
    pub fn condition(&self) -> StreamError {
        match self {
            XmlError::NotWellFormed(_) => StreamError::NotWellFormed,
            XmlError::Restricted(_) => StreamError::RestrictedXml,
            XmlError::TextAtStreamLevel => StreamError::BadFormat,
            XmlError::UnsupportedEncoding => StreamError::UnsupportedEncoding,
            XmlError::HeaderTooBig(_)
            | XmlError::StanzaTooBig(_)
            | XmlError::TooDeep(_)
            | XmlError::TooManyAttributes(_) => StreamError::PolicyViolation,
        }
    }

    /// The `limit` label of `dealer_limit_hits_total`, for violations of a limit.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            XmlError::HeaderTooBig(_) => Some("header_bytes"),
            XmlError::StanzaTooBig(_) => Some("stanza_bytes"),
            XmlError::TooDeep(_) => Some("depth"),
            XmlError::TooManyAttributes(_) => Some("attributes"),
            _ => None,
        }
    }
}

/// Stream error conditions dealer sends (RFC 6120 §4.9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    BadFormat,
    ConnectionTimeout,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    RemoteConnectionFailed,
    ResourceConstraint,
    RestrictedXml,
    SeeOtherHost,
    SystemShutdown,
    UndefinedCondition,
    UnsupportedEncoding,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamError {
    pub fn name(self) -> &'static str {
        match self {
            StreamError::BadFormat => "bad-format",
            StreamError::ConnectionTimeout => "connection-timeout",
            StreamError::HostUnknown => "host-unknown",
            StreamError::ImproperAddressing => "improper-addressing",
            StreamError::InternalServerError => "internal-server-error",
            StreamError::InvalidFrom => "invalid-from",
            StreamError::InvalidNamespace => "invalid-namespace",
            StreamError::NotAuthorized => "not-authorized",
            StreamError::NotWellFormed => "not-well-formed",
            StreamError::PolicyViolation => "policy-violation",
            StreamError::RemoteConnectionFailed => "remote-connection-failed",
            StreamError::ResourceConstraint => "resource-constraint",
            StreamError::RestrictedXml => "restricted-xml",
            StreamError::SeeOtherHost => "see-other-host",
            StreamError::SystemShutdown => "system-shutdown",
            StreamError::UndefinedCondition => "undefined-condition",
            StreamError::UnsupportedEncoding => "unsupported-encoding",
            StreamError::UnsupportedStanzaType => "unsupported-stanza-type",
            StreamError::UnsupportedVersion => "unsupported-version",
        }
    }

    /// `<stream:error>…</stream:error></stream:stream>`; `content` is the
    /// condition's character data (see-other-host's address), `text` an optional
    /// human-readable `<text/>`. Both are escaped here.
    pub fn to_xml(self, content: Option<&str>, text: Option<&str>) -> String {
        use super::escape::text as esc;
        let mut s = String::with_capacity(160);
        s.push_str("<stream:error><");
        s.push_str(self.name());
        s.push_str(" xmlns='urn:ietf:params:xml:ns:xmpp-streams'");
        match content {
            Some(c) => {
                s.push('>');
                s.push_str(&esc(c));
                s.push_str("</");
                s.push_str(self.name());
                s.push('>');
            }
            None => s.push_str("/>"),
        }
        if let Some(t) = text {
            s.push_str("<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>");
            s.push_str(&esc(t));
            s.push_str("</text>");
        }
        s.push_str("</stream:error></stream:stream>");
        s
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
