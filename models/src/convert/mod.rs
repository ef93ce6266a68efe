//! Converting a Llama-architecture GGUF file into a Hugging Face-style model
//! directory: `config.json`, `model.safetensors` (f32, Hugging Face names and
//! row order), `tokenizer.json` and `tokenizer_config.json`.
//!
//! The directory is written into a temporary sibling and renamed into place, so
//! a reader never sees a half-written model.

pub mod config;
pub mod tokenizer;
pub mod weights;

use crate::gguf::GgufFile;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub use config::LlamaParams;

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub out_dir: PathBuf,
    pub n_tensors: usize,
    pub n_parameters: u64,
    /// GGUF tensor types that were dequantized, e.g. `["Q8_0", "F32", "Q4_1"]`.
    pub source_types: Vec<String>,
}

/// Converts `gguf` into the model directory `out`. `out` must not exist yet, or
/// be an empty directory.
pub fn convert_gguf(gguf: &Path, out: &Path) -> Result<ConvertReport> {
    // Read and check the input before touching the output location.
    let g = GgufFile::open(gguf)?;
    if out.exists() {
        let empty = out.is_dir()
            && std::fs::read_dir(out)
                .with_context(|| format!("cannot read {}", out.display()))?
                .next()
                .is_none();
        if !empty {
            bail!(
                "output directory {} already exists and is not empty; remove it or choose another --out",
                out.display()
            );
        }
        std::fs::remove_dir(out).with_context(|| format!("cannot replace {}", out.display()))?;
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot clear {}", tmp.display()))?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = write_model_dir(&g, &tmp);
    match result {
        Ok(mut report) => {
            std::fs::rename(&tmp, out)
                .with_context(|| format!("cannot move {} to {}", tmp.display(), out.display()))?;
            report.out_dir = out.to_path_buf();
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Writes the four files into the existing directory `dir`.
pub fn write_model_dir(g: &GgufFile, dir: &Path) -> Result<ConvertReport> {
    let params = LlamaParams::from_gguf(g)?;
    let planned = weights::plan(g, &params)?;
    let (tok, special) = tokenizer::build_tokenizer(g)?;

    let config = params.to_config_json();
    // Refuse to write a config the rest of wafer would reject.
    crate::config::ModelConfig::from_json_str(&config.to_string())
        .context("the configuration derived from the GGUF metadata is invalid")?;
    write_json(&dir.join("config.json"), &config)?;
    let tok_path = dir.join("tokenizer.json");
    tok.save(&tok_path, true)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tok_path.display()))?;
    let tok_config = tokenizer::tokenizer_config_json(g, &special, params.max_position_embeddings)?;
    write_json(&dir.join("tokenizer_config.json"), &tok_config)?;
    weights::write_safetensors(g, &planned, &dir.join("model.safetensors"))?;

    Ok(ConvertReport {
        out_dir: dir.to_path_buf(),
        n_tensors: planned.len(),
        n_parameters: planned.iter().map(|t| t.source.n_elements).sum(),
        source_types: weights::types_used(&planned)
            .iter()
            .map(|t| t.to_string())
            .collect(),
    })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}
