//! Argument handling shared by several subcommands: `--hw` and `--model` resolution.

use anyhow::{bail, Context, Result};
use std::path::Path;
use wafer_core::WaferSpec;
use wafer_models::{presets, ModelConfig};

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

/// Resolves `--model`: a shape preset name (see `wafer models`) or a directory of
/// which only `config.json` is read (no weights are needed). Returns a display name
/// and the config.
pub fn load_model(arg: &str) -> Result<(String, ModelConfig)> {
    if let Some(config) = presets::lookup(arg) {
        return Ok((arg.to_ascii_lowercase(), config));
    }
    let path = Path::new(arg);
    if path.is_dir() {
        let config = ModelConfig::from_dir(path)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| arg.to_string());
        return Ok((name, config));
    }
    if path.exists() {
        bail!("--model {arg}: expected a preset name or a model directory containing config.json, found a file");
    }
    bail!(
        "unknown model `{arg}`: not a preset and not a directory (presets: {})",
        presets::names().join(", ")
    )
}

/// `8030261248` -> `8,030,261,248`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Parses a token count: `8192`, `8k` (8,192) or `128K` (131,072), `1M` (1,048,576).
pub fn parse_tokens(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let (digits, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1024),
        Some('m' | 'M') => (&t[..t.len() - 1], 1024 * 1024),
        _ => (&t[..], 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a token count; expected e.g. 8192, 8k or 128k"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large a token count"))
}
