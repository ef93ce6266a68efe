//! Argument handling shared by several subcommands: `--hw` resolution.

use anyhow::{Context, Result};
use std::path::Path;
use wafer_core::WaferSpec;

/// Resolves `--hw`: a preset name (`wse3`, `wse2`) or a path to a TOML file that
/// may name a preset as `base` and override any of its fields.
pub fn load_spec(arg: &str) -> Result<WaferSpec> {
    let looks_like_file = arg.ends_with(".toml") || arg.contains('/') || Path::new(arg).exists();
    if looks_like_file {
        let text = std::fs::read_to_string(arg)
            .with_context(|| format!("cannot read hardware spec file {arg}"))?;
        Ok(WaferSpec::from_toml_str(&text, arg)?)
    } else {
        Ok(WaferSpec::preset(arg)?)
    }
}
