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

/// Resolves `--model`: a shape preset name (see `wafer models`), a directory of
/// which only `config.json` is read, or a GGUF file of which only the metadata
/// is read (no weights are needed). Returns a display name
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
    if path.is_file() {
        // A GGUF file: the configuration its metadata describes.
        let model = wafer_import::gguf::model::GgufModel::open(path)?;
        let name = path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| arg.to_string());
        return Ok((name, model.config));
    }
    if path.exists() {
        bail!("--model {arg}: expected a preset name, a model directory containing config.json or a GGUF file, found neither");
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
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
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

/// The default `--context` of `place`, `estimate` and `sweep` (8k = 8,192 tokens).
pub const DEFAULT_CONTEXT: &str = "8k";

/// [`parse_tokens`] for counts held as `usize`.
pub fn parse_count(s: &str) -> Result<usize, String> {
    let n = parse_tokens(s)?;
    usize::try_from(n).map_err(|_| format!("`{s}` is too large a token count"))
}

/// [`parse_count`] that also refuses 0: a context or prompt of no tokens has
/// no cost to estimate and no rate to report.
pub fn parse_positive_count(s: &str) -> Result<usize, String> {
    match parse_count(s)? {
        0 => Err(format!("`{s}`: must be at least 1 token")),
        n => Ok(n),
    }
}

/// Writes `path` by having `write` fill a temporary file beside it, then renaming
/// it into place: a failure leaves any existing file as it was, and no half file.
/// The temporary name keeps the extension (image encoders choose by it).
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".partial-{}", std::process::id()));
    if let Some(ext) = path.extension() {
        tmp_name.push(".");
        tmp_name.push(ext);
    }
    let tmp = path.with_file_name(tmp_name);
    let result = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `place`, `estimate` and `sweep` answer what-if questions from shapes alone, so
/// a context beyond the model's `max_position_embeddings` is allowed there, with
/// this warning on stderr naming both numbers. (`generate` runs the model and
/// refuses such a context instead.)
pub fn warn_past_model_context(flag: &str, tokens: u64, model: &str, model_max: usize) {
    if let Some(msg) = past_model_context(flag, tokens, model, model_max) {
        eprintln!("warning: {msg}");
    }
}

/// The warning of [`warn_past_model_context`], if one is due.
pub fn past_model_context(
    flag: &str,
    tokens: u64,
    model: &str,
    model_max: usize,
) -> Option<String> {
    (tokens > model_max as u64).then(|| {
        format!(
            "{flag} {} is more than the {} positions {model} is trained for (max_position_embeddings); the figures are a what-if",
            group_thousands(tokens),
            group_thousands(model_max as u64)
        )
    })
}

/// Refuses an image path that does not end in `.png` (the only format drawn),
/// before any file is touched.
pub fn check_png_path(flag: &str, path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if ext.as_deref() != Some("png") {
        bail!(
            "{flag} {}: expected a .png file name, found {}",
            path.display(),
            match ext {
                Some(e) => format!("the extension .{e}"),
                None => "no extension".to_string(),
            }
        );
    }
    Ok(())
}

/// On Ctrl-C (or SIGTERM), removes `partials` (files or directories this process
/// is writing and renames into place only when whole), says so, and exits with
/// 130. Setting the handler fails only if one is already set (a second call in
/// one process, as in tests), where the first one's stays.
pub fn remove_on_interrupt(what: &'static str, partials: Vec<std::path::PathBuf>) {
    let _ = ctrlc::set_handler(move || {
        let left: Vec<_> = partials
            .iter()
            .filter(|p| !wafer_import::convert::remove_partial_dir(p))
            .collect();
        if left.is_empty() {
            eprintln!("interrupted: {what} was stopped and its partial output removed");
        } else {
            for p in left {
                eprintln!(
                    "interrupted: {what} was stopped; remove {} by hand",
                    p.display()
                );
            }
        }
        std::process::exit(130);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_and_grouping() {
        assert_eq!(parse_tokens("8192"), Ok(8192));
        assert_eq!(parse_tokens("8k"), Ok(8192));
        assert_eq!(parse_tokens("128K"), Ok(131_072));
        assert_eq!(parse_tokens("1M"), Ok(1 << 20));
        assert!(parse_tokens("-5").is_err());
        assert!(parse_tokens("lots").is_err());
        assert_eq!(parse_count("8k"), Ok(8192));
        assert_eq!(parse_positive_count("4096"), Ok(4096));
        let e = parse_positive_count("0").unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        assert_eq!(group_thousands(8_030_261_248), "8,030,261,248");
        assert_eq!(group_thousands(999), "999");
        let w = past_model_context("--context", 131_072, "llama-2-13b", 4096).unwrap();
        assert!(
            w.contains("131,072") && w.contains("4,096") && w.contains("llama-2-13b"),
            "{w}"
        );
        assert_eq!(past_model_context("--context", 4096, "m", 4096), None);
    }

    #[test]
    fn model_argument_is_a_preset_or_a_directory_with_config_json() {
        let (name, c) = load_model("llama-3.1-8b").unwrap();
        assert_eq!((name.as_str(), c.num_hidden_layers), ("llama-3.1-8b", 32));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":3,"num_attention_heads":2}"#,
        )
        .unwrap();
        let (_, c) = load_model(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(c.num_hidden_layers, 3);
        let err = load_model("no-such-model").unwrap_err().to_string();
        assert!(
            err.contains("no-such-model") && err.contains("llama-3.1-8b"),
            "{err}"
        );
        let err = format!("{:#}", load_spec("wse7").unwrap_err());
        assert!(err.contains("wse7"), "{err}");
    }
}
