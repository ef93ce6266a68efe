//! Fetching the default model (SmolLM2-135M-Instruct) into the cache on first use.

use anyhow::{bail, Result};
use std::path::PathBuf;

/// The cache root: `$WAFER_HOME`, or `~/.cache/wafer`.
pub fn wafer_home() -> PathBuf {
    if let Some(h) = std::env::var_os("WAFER_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("wafer")
}

/// Returns the default model's directory, fetching and converting it first if it is missing.
pub fn default_model_dir() -> Result<PathBuf> {
    // Placeholder until the GGUF import lands (issue 2); replaced by the real fetch.
    bail!("fetching the default model is not built yet")
}
