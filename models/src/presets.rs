//! Shape presets of public models (no weights): enough to place and estimate them.

use crate::config::ModelConfig;

/// Names of every preset, in the order `wafer models` lists them.
pub fn names() -> Vec<&'static str> {
    vec![]
}

/// The preset called `name`, if there is one.
pub fn lookup(_name: &str) -> Option<ModelConfig> {
    None
}
