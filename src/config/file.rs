//! The configuration file as written: serde structs that mirror the YAML keys of
//! DESIGN.md §8 one for one. Nothing here is interpreted; `validate` turns these into a
//! typed `Config`. Unknown keys are rejected (a typo in routing is an outage), and
//! values whose meaning needs checking (addresses, durations, enum words) stay strings
//! here so that validation can report every bad one at once, each with its key.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub domain: Option<String>,
    #[serde(rename = "self")]
    pub self_backend: Option<String>,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub listen: RawListen,
    #[serde(default)]
    pub c2s: RawC2s,
    pub domains: Option<String>,
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub backends: RawBackends,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub shutdown: RawShutdown,
    #[serde(default)]
    pub s2s: RawS2s,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub services: BTreeMap<String, RawService>,
    /// More public domains, each with its own backends (the top-level keys are the
    /// first domain's). Read here only to refuse unknown keys; `hosts` re-reads each
    /// one merged over the top level.
    #[serde(default)]
    pub hosts: BTreeMap<String, RawHost>,
}

/// One more public domain: what it has of its own. Everything else (listeners, c2s,
/// limits, health, shutdown) is the top level's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read again, merged, by `hosts`
pub struct RawHost {
    pub tls: Option<RawTls>,
    pub domains: Option<String>,
    pub routing: Option<serde_yaml::Value>,
    pub backends: Option<serde_yaml::Value>,
    pub services: Option<serde_yaml::Value>,
    pub s2s: Option<serde_yaml::Value>,
}

/// The keys a host has of its own.
pub const HOST_KEYS: [&str; 6] = ["tls", "domains", "routing", "backends", "services", "s2s"];

/// Each host of `text` as a whole config: the top level with `domain` set to the
/// host's name, its own keys replaced by the host's (absent ones take their
/// defaults), and without `hosts` and `self` (a guard stands in front of one backend
/// of the first domain).
pub fn hosts(text: &str) -> Result<Vec<(String, RawConfig)>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let top: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let Some(serde_yaml::Value::Mapping(hosts)) = top.get("hosts") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (name, host) in hosts {
        let name = name.as_str().unwrap_or_default().to_owned();
        let mut merged = top.as_mapping().cloned().unwrap_or_default();
        merged.remove("hosts");
        merged.remove("self");
        for k in HOST_KEYS {
            merged.remove(k);
            if let Some(v) = host.get(k) {
                merged.insert(k.into(), v.clone());
            }
        }
        merged.insert("domain".into(), name.clone().into());
        let raw = serde_yaml::from_value(serde_yaml::Value::Mapping(merged))
            .map_err(|e| format!("hosts.{name}: {e}"))?;
        out.push((name, raw));
    }
    Ok(out)
}

/// A service domain (MUC, upload, pubsub, a component) and the backend that hosts it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub backend: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// Each kind of listener is a list, or one listener written on its own
/// (`c2s: "[::]:5222"` as `c2s: ["[::]:5222"]`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    #[serde(default, deserialize_with = "one_or_many")]
    pub c2s: Vec<RawListener>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub c2s_tls: Vec<RawListener>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub s2s: Vec<RawListener>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub s2s_tls: Vec<RawListener>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub s2s_internal: Vec<RawListener>,
    pub http: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub websocket: Vec<RawWsListener>,
}

/// A sequence of `T`, or a single `T` (a string or a map) standing for a list of one.
/// Written as a visitor rather than an untagged enum so that an error inside a list
/// still names the element and the key at fault.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a listener (an address string or a map) or a list of them")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(x) = seq.next_element()? {
                out.push(x);
            }
            Ok(out)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            T::deserialize(de::value::StrDeserializer::new(v)).map(|x| vec![x])
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|x| vec![x])
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

/// A WebSocket listener (RFC 7395): a bare address (plain `ws://` on the default
/// path) or a map with its options.
#[derive(Debug, Default, PartialEq)]
pub struct RawWsListener {
    pub addr: String,
    pub tls: Option<bool>,
    pub path: Option<String>,
    pub proxy_protocol: Option<bool>,
    pub origins: Option<Vec<String>>,
    pub host_meta: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWsListenerMap {
    addr: String,
    tls: Option<bool>,
    path: Option<String>,
    proxy_protocol: Option<bool>,
    origins: Option<Vec<String>>,
    host_meta: Option<String>,
}

impl<'de> Deserialize<'de> for RawWsListener {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawWsListener;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an address string or a map {addr, tls, path, proxy_protocol, origins, host_meta}",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawWsListener, E> {
                Ok(RawWsListener {
                    addr: v.to_owned(),
                    ..RawWsListener::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawWsListener, A::Error> {
                let m = RawWsListenerMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawWsListener {
                    addr: m.addr,
                    tls: m.tls,
                    path: m.path,
                    proxy_protocol: m.proxy_protocol,
                    origins: m.origins,
                    host_meta: m.host_meta,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A listener is either a bare address string or a map with per-listener options.
#[derive(Debug, Default, PartialEq)]
pub struct RawListener {
    pub addr: String,
    pub starttls: Option<String>,
    pub proxy_protocol: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenerMap {
    addr: String,
    starttls: Option<String>,
    proxy_protocol: Option<bool>,
}

impl<'de> Deserialize<'de> for RawListener {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawListener;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address string or a map {addr, starttls, proxy_protocol}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawListener, E> {
                Ok(RawListener {
                    addr: v.to_owned(),
                    ..RawListener::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawListener, A::Error> {
                let m = RawListenerMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawListener {
                    addr: m.addr,
                    starttls: m.starttls,
                    proxy_protocol: m.proxy_protocol,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawC2s {
    pub mode: Option<String>,
    pub starttls: Option<String>,
    pub mechanisms: Option<Vec<String>>,
    pub legacy_auth: Option<bool>,
    pub registration: Option<bool>,
    pub anonymous_backend: Option<String>,
    pub warm_streams: Option<u64>,
    pub warm_max_age: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub strategy: Option<String>,
    pub normalise: Option<String>,
    #[serde(default)]
    pub ranges: Vec<RawRange>,
    pub default: Option<String>,
    pub redeal_on_reload: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRange {
    pub from: String,
    pub to: String,
    pub backend: String,
}

/// The `backends` map, with the names written more than once (YAML maps keep only
/// the last of a repeated key; validation reports them instead).
#[derive(Debug, Default)]
pub struct RawBackends {
    pub map: BTreeMap<String, RawBackend>,
    pub duplicates: Vec<String>,
}

impl std::ops::Deref for RawBackends {
    type Target = BTreeMap<String, RawBackend>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<'de> Deserialize<'de> for RawBackends {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawBackends;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of backend names to backends")
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawBackends, E> {
                Ok(RawBackends::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawBackends, A::Error> {
                let mut out = RawBackends::default();
                while let Some((k, v)) = map.next_entry::<String, RawBackend>()? {
                    if out.map.insert(k.clone(), v).is_some() {
                        out.duplicates.push(k);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub c2s: Option<String>,
    pub s2s: Option<String>,
    pub domain: Option<String>,
    pub redirect: Option<String>,
    pub redirect_tls: Option<String>,
    pub redirect_websocket: Option<String>,
    pub weight: Option<u32>,
    pub tls: Option<bool>,
    pub proxy_protocol: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub fallback: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub grace: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawS2s {
    pub dialback_secret: Option<super::Secret>,
    pub domain_backend: Option<String>,
    pub internal_allow: Option<Vec<String>>,
    pub resolver: Option<String>,
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    pub queue_bytes_per_link: Option<u64>,
    pub queue_bytes: Option<u64>,
}

/// `max_connections` is a number or the word `auto`.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RawCount {
    Number(u64),
    Word(String),
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub handshake_timeout: Option<String>,
    pub backend_connect_timeout: Option<String>,
    pub max_header_bytes: Option<u64>,
    pub max_stanza_bytes: Option<u64>,
    pub max_depth: Option<u64>,
    pub max_attributes: Option<u64>,
    pub max_connections: Option<RawCount>,
    pub max_connections_per_source: Option<u64>,
    pub logins_per_source_per_second: Option<u64>,
    pub max_failed_logins: Option<u64>,
}

/// Parse YAML text into the raw structs; serde_yaml's error names the key path where it
/// stopped (for example `c2s: unknown field \`mechanism\``) and the line.
pub fn parse(text: &str) -> Result<RawConfig, String> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    serde_yaml::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_as_string_or_map() {
        let raw = parse(
            "listen:\n  c2s: [\"127.0.0.1:5222\", {addr: \"127.0.0.1:5223\", starttls: off, proxy_protocol: true}]\n",
        )
        .unwrap();
        assert_eq!(raw.listen.c2s[0].addr, "127.0.0.1:5222");
        assert_eq!(raw.listen.c2s[1].starttls.as_deref(), Some("off"));
        assert_eq!(raw.listen.c2s[1].proxy_protocol, Some(true));
    }

    #[test]
    fn a_listener_on_its_own_is_a_list_of_one() {
        let raw = parse(
            "listen:\n  c2s: \"127.0.0.1:5222\"\n  s2s: {addr: \"127.0.0.1:5269\", starttls: required}\n  websocket: \"127.0.0.1:5280\"\n  s2s_internal: ~\n",
        )
        .unwrap();
        assert_eq!(raw.listen.c2s.len(), 1);
        assert_eq!(raw.listen.c2s[0].addr, "127.0.0.1:5222");
        assert_eq!(raw.listen.s2s.len(), 1);
        assert_eq!(raw.listen.s2s[0].starttls.as_deref(), Some("required"));
        assert_eq!(raw.listen.websocket[0].addr, "127.0.0.1:5280");
        assert!(raw.listen.s2s_internal.is_empty());
        let err = parse("listen:\n  c2s: {addr: \"1.2.3.4:5\", tls: on}\n").unwrap_err();
        assert!(err.contains("listen.c2s") && err.contains("tls"), "{err}");
        let err = parse("listen:\n  c2s: 5222\n").unwrap_err();
        assert!(
            err.contains("listen.c2s") && err.contains("a list of them"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_names_its_path() {
        let err = parse("routing:\n  strategy: hash\n  colour: red\n").unwrap_err();
        assert!(err.starts_with("routing"), "{err}");
        assert!(err.contains("colour"), "{err}");
        let err = parse("listen:\n  c2s: [{addr: \"1.2.3.4:5\", tls: on}]\n").unwrap_err();
        assert!(
            err.contains("listen.c2s[0]") && err.contains("tls"),
            "{err}"
        );
    }

    #[test]
    fn secret_is_masked_in_debug() {
        let raw = parse("s2s:\n  dialback_secret: hunter2\n").unwrap();
        assert!(!format!("{raw:?}").contains("hunter2"));
    }
}
