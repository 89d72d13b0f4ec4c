//! Every metric name dealer exports, once. The dashboard and its test read the same
//! names; renaming one here is a breaking change for operators' alerts.

pub const CONFIG_GENERATION: &str = "dealer_config_generation";
pub const CONFIG_RELOADS: &str = "dealer_config_reloads_total";

pub const CONNECTIONS_ACCEPTED: &str = "dealer_connections_accepted_total";
pub const CONNECTIONS: &str = "dealer_connections";
pub const HANDSHAKE_DURATION: &str = "dealer_handshake_duration_seconds";
pub const AUTH_PEEKS: &str = "dealer_auth_peeks_total";
pub const ROUTING_DECISIONS: &str = "dealer_routing_decisions_total";
pub const ROUTING_SOURCES: &str = "dealer_routing_sources_total";
pub const LIMIT_HITS: &str = "dealer_limit_hits_total";
pub const STREAM_ERRORS: &str = "dealer_stream_errors_total";
pub const SESSION_DROPS: &str = "dealer_session_drops_total";
pub const SESSION_ENDS: &str = "dealer_session_ends_total";

pub const BACKEND_UP: &str = "dealer_backend_up";
pub const HEALTH_CHECKS: &str = "dealer_health_checks_total";

pub const AUTH_RESULTS: &str = "dealer_auth_results_total";
pub const BACKEND_CONNECT_DURATION: &str = "dealer_backend_connect_duration_seconds";
pub const WARM_STREAMS: &str = "dealer_warm_streams_total";
pub const RELAY_BYTES: &str = "dealer_relay_bytes_total";

pub const S2S_STREAMS: &str = "dealer_s2s_streams";
pub const S2S_STANZAS: &str = "dealer_s2s_stanzas_total";
pub const S2S_QUEUED_BYTES: &str = "dealer_s2s_queued_bytes";
pub const SERVICE_STANZAS: &str = "dealer_service_stanzas_total";

pub const REDEAL_CLOSED: &str = "dealer_redeal_sessions_closed_total";
pub const RELAY_SPLICED_BYTES: &str = "dealer_relay_spliced_bytes_total";
