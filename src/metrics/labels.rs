//! Every label value dealer exports, as enums: a typo cannot create a new series, and
//! each enum's `ALL` lets the registry export every series at zero from the start.

/// An enum of label values: its variants, their label text, and the list of all.
macro_rules! labels {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The variant's place in `ALL`, for tables of series by label.
            pub fn index(self) -> usize {
                self as usize
            }

            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

labels! {
    /// Which kind of listener accepted a connection: `listener`.
    Listener {
        C2s => "c2s",
        C2sTls => "c2s_tls",
        S2s => "s2s",
        S2sTls => "s2s_tls",
        S2sInternal => "s2s_internal",
        Websocket => "websocket",
    }
}

labels! {
    /// Where a client session stands: `state` of `dealer_connections`.
    ConnState {
        Handshake => "handshake",
        Authenticating => "authenticating",
        Relaying => "relaying",
    }
}

labels! {
    /// What a routing decision did: `outcome`.
    Outcome {
        Redirect => "redirect",
        Forward => "forward",
        Error => "error",
    }
}

labels! {
    /// How an authentication watched through to a backend ended: `result`.
    AuthResult {
        Success => "success",
        Failure => "failure",
        Unreachable => "unreachable",
    }
}

labels! {
    /// What a forwarded login found in its backend's warm streams: `outcome`.
    WarmOutcome {
        Hit => "hit",
        Miss => "miss",
        Expired => "expired",
        Closed => "closed",
    }
}

labels! {
    /// A health check's result, and a reload's: `result`.
    CheckResult {
        Ok => "ok",
        Failed => "failed",
    }
}

labels! {
    ReloadResult {
        Ok => "ok",
        Error => "error",
    }
}

labels! {
    /// Limits of DESIGN.md §6 that fired: `limit`.
    Limit {
        HeaderBytes => "header_bytes",
        StanzaBytes => "stanza_bytes",
        Depth => "depth",
        Attributes => "attributes",
        HandshakeTimeout => "handshake_timeout",
        Connections => "connections",
        ConnectionsPerSource => "connections_per_source",
        LoginsPerSource => "logins_per_source",
        S2sInternalAllow => "s2s_internal_allow",
        FailedLogins => "failed_logins",
        S2sQueueBytes => "s2s_queue_bytes",
    }
}

labels! {
    /// What a client's first authentication element was: `mechanism`.
    Peek {
        Plain => "PLAIN",
        ScramSha1 => "SCRAM-SHA-1",
        ScramSha256 => "SCRAM-SHA-256",
        Anonymous => "ANONYMOUS",
        IqAuth => "iq-auth",
        Register => "register",
    }
}

labels! {
    /// Open s2s streams: `direction` (from the federation, links dealer opened, from
    /// the backends).
    S2sStreams {
        In => "in",
        Out => "out",
        Internal => "internal",
    }
}

labels! {
    /// s2s stanzas: `direction` (in: to backends, out: to the federation).
    StanzaDirection {
        In => "in",
        Out => "out",
    }
}

labels! {
    /// What became of an s2s stanza: `result` (masked counts those whose JIDs were
    /// rewritten, which are also routed).
    StanzaResult {
        Routed => "routed",
        Masked => "masked",
        Bounced => "bounced",
        Dropped => "dropped",
        Rejected => "rejected",
    }
}

labels! {
    /// The relay kinds: `kind`.
    RelayKind {
        Splice => "splice",
        Copy => "copy",
        Rewrite => "rewrite",
    }
}

labels! {
    /// Which way relayed bytes went: `direction`.
    RelayDirection {
        ClientToBackend => "client_to_backend",
        BackendToClient => "backend_to_client",
    }
}

labels! {
    /// Why dealer ended a session without a stream error: `reason` of
    /// `dealer_session_drops_total`.
    DropReason {
        /// Bytes other than whitespace between `<starttls/>` and the TLS handshake.
        StarttlsPipelined => "starttls_pipelined",
        /// The TLS handshake failed (or took longer than the handshake deadline).
        TlsHandshake => "tls_handshake",
        /// `limits.max_connections` reached on a Direct TLS listener.
        Connections => "connections",
        /// `limits.max_connections_per_source` reached on a Direct TLS listener.
        ConnectionsPerSource => "connections_per_source",
    }
}

labels! {
    /// Which side ended a session: `side` of `dealer_session_ends_total`.
    Side {
        /// The client (or the federated peer that opened the stream).
        Client => "client",
        /// The backend on the other leg.
        Backend => "backend",
        /// A remote server dealer connected to.
        RemoteServer => "remote_server",
        /// dealer itself: a limit, a policy, shutdown.
        Dealer => "dealer",
    }
}

labels! {
    /// How a session ended: `cause` of `dealer_session_ends_total`.
    Cause {
        /// Closed its stream or connection in order.
        Closed => "closed",
        /// The connection failed (reset, timed out at TCP level).
        Gone => "gone",
        /// Sent what XMPP or dealer's limits do not allow.
        Protocol => "protocol",
        /// The TLS handshake failed.
        Tls => "tls",
        /// Took longer than the handshake deadline.
        Timeout => "timeout",
        /// Refused by a limit or a policy.
        Refused => "refused",
        /// Sent on to another server (see-other-host, the iq-auth 302).
        Redirected => "redirected",
        /// Unreachable, or failed while dealer still watched it.
        Unavailable => "unavailable",
        /// dealer is shutting down, or a re-deal moved the user.
        Shutdown => "shutdown",
    }
}

labels! {
    /// Stanzas to a service domain, or from it: `direction` of
    /// `dealer_service_stanzas_total`.
    ServiceDirection {
        To => "to",
        From => "from",
    }
}

labels! {
    /// How dealer learned whom a login routes for: `source` of
    /// `dealer_routing_sources_total`.
    RoutingSource {
        /// The stream header's `from` (early routing).
        StreamFrom => "stream-from",
        Sasl => "sasl",
        Sasl2 => "sasl2",
        IqAuth => "iq-auth",
        Register => "register",
    }
}

impl Peek {
    pub fn of(m: crate::config::Mechanism) -> Peek {
        use crate::config::Mechanism as M;
        match m {
            M::Plain => Peek::Plain,
            M::ScramSha1 => Peek::ScramSha1,
            M::ScramSha256 => Peek::ScramSha256,
            M::Anonymous => Peek::Anonymous,
        }
    }
}

impl Limit {
    /// The limit a framer error names (`XmlError::limit`).
    pub fn from_label(s: &str) -> Option<Limit> {
        Limit::ALL.iter().copied().find(|l| l.label() == s)
    }
}
