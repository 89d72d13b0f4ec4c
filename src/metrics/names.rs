//! Every metric name dealer exports, once. The dashboard and its test read the same
//! names; renaming one here is a breaking change for operators' alerts.

pub const CONFIG_GENERATION: &str = "dealer_config_generation";
pub const CONFIG_RELOADS: &str = "dealer_config_reloads_total";
