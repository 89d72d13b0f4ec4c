//! Prometheus metrics: an owned registry per dealer instance (several can run in one
//! test process), every name from `names`, label values known in advance set to zero
//! at start so that rates and alerts work from the first scrape.

pub mod http;
pub mod names;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    /// Generation of the live config snapshot: 1 at start, +1 per successful reload.
    pub config_generation: IntGauge,
    /// `result` = `ok` | `error`.
    pub config_reloads: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let config_generation = IntGauge::new(
            names::CONFIG_GENERATION,
            "Generation of the running configuration (1 at start, +1 per successful reload).",
        )
        .expect("static metric definition");
        let config_reloads = IntCounterVec::new(
            Opts::new(names::CONFIG_RELOADS, "Configuration reloads by result."),
            &["result"],
        )
        .expect("static metric definition");
        for r in ["ok", "error"] {
            config_reloads.with_label_values(&[r]);
        }
        registry
            .register(Box::new(config_generation.clone()))
            .expect("names are unique");
        registry
            .register(Box::new(config_reloads.clone()))
            .expect("names are unique");
        Metrics {
            registry,
            config_generation,
            config_reloads,
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
