//! The model hyper-parameters a GGUF of a supported family (`general.architecture`
//! `llama`, `qwen2` or `qwen3`, see [`wafer_models::family`]) carries in its metadata,
//! and the Hugging Face `config.json` written from them.
//!
//! Key names are llama.cpp's (`gguf-py/gguf/constants.py`, `Keys.LLM` and
//! `Keys.Attention`/`Keys.Rope`), prefixed by `general.architecture`.

use crate::gguf::GgufFile;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use wafer_models::config::{ModelConfig, RawConfig};
use wafer_models::family::{self, Family};

/// Hyper-parameters read from GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaParams {
    pub arch: String,
    /// The family `arch` stands for in the family table.
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    /// True when the file names `attention.key_length` itself.
    pub head_dim_given: bool,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Value>,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub bos_token_id: Option<u64>,
    pub eos_token_id: Option<u64>,
    pub pad_token_id: Option<u64>,
}

impl LlamaParams {
    /// Reads the parameters, checking each against the others and the tensors.
    pub fn from_gguf(g: &GgufFile) -> Result<LlamaParams> {
        let m = &g.metadata;
        let file = g.path().display().to_string();
        let ctx = |what: &str| format!("GGUF file {file}: {what}");
        let arch = m
            .require_str("general.architecture")
            .map_err(|e| g.error(e))?
            .to_string();
        let Some(family) = Family::from_gguf_architecture(&arch) else {
            bail!(
                "GGUF file {file}: `general.architecture` is `{arch}`, which is not supported (expected one of {:?})",
                family::known_gguf_architectures()
            );
        };
        let need = |key: &str| -> Result<usize> {
            let full = format!("{arch}.{key}");
            let v = m.require_u64(&full).map_err(|e| g.error(e))?;
            usize::try_from(v).with_context(|| ctx(&format!("`{full}` = {v} is too large")))
        };
        let opt = |key: &str| -> Result<Option<u64>> {
            m.u64(&format!("{arch}.{key}"))
                .map_err(|e| g.error(e).into())
        };
        let optf = |key: &str| -> Result<Option<f64>> {
            m.f64(&format!("{arch}.{key}"))
                .map_err(|e| g.error(e).into())
        };
        let hidden_size = need("embedding_length")?;
        let num_attention_heads = need("attention.head_count")?;
        if num_attention_heads == 0 {
            bail!(ctx(&format!("`{arch}.attention.head_count` is 0")));
        }
        let num_key_value_heads = opt("attention.head_count_kv")?
            .map(|v| v as usize)
            .unwrap_or(num_attention_heads);
        let key_length = opt("attention.key_length")?;
        let head_dim = match key_length {
            Some(k) => k as usize,
            None => hidden_size / num_attention_heads,
        };
        if let Some(v) = opt("attention.value_length")? {
            if v as usize != head_dim {
                bail!(ctx(&format!(
                    "`attention.value_length` {v} differs from the key length {head_dim}; Llama needs them equal"
                )));
            }
        }
        let embed = g
            .tensor("token_embd.weight")
            .with_context(|| ctx("tensor `token_embd.weight` is missing"))?;
        let vocab_size = match opt("vocab_size")? {
            Some(v) => v as usize,
            None => match m
                .str_array("tokenizer.ggml.tokens")
                .map_err(|e| g.error(e))?
            {
                Some(t) => t.len(),
                None => *embed.shape().first().unwrap_or(&0),
            },
        };
        let rope_scaling = rope_scaling(g, &arch)?;
        let tokenizer_id = |key: &str| -> Result<Option<u64>> {
            m.u64(&format!("tokenizer.ggml.{key}"))
                .map_err(|e| g.error(e).into())
        };
        let p = LlamaParams {
            vocab_size,
            hidden_size,
            intermediate_size: need("feed_forward_length")?,
            num_hidden_layers: need("block_count")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            head_dim_given: key_length.is_some(),
            max_position_embeddings: opt("context_length")?.map_or(2048, |v| v as usize),
            rms_norm_eps: optf("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
            rope_theta: optf("rope.freq_base")?.unwrap_or(10_000.0),
            rope_scaling,
            tie_word_embeddings: g.tensor("output.weight").is_none(),
            attention_bias: g.tensor("blk.0.attn_q.bias").is_some(),
            family,
            bos_token_id: tokenizer_id("bos_token_id")?,
            eos_token_id: tokenizer_id("eos_token_id")?,
            pad_token_id: tokenizer_id("padding_token_id")?,
            arch: arch.clone(),
        };
        if let Some(dims) = opt("rope.dimension_count")? {
            if dims as usize != p.head_dim {
                bail!(ctx(&format!(
                    "`rope.dimension_count` {dims} differs from the head dimension {}; partial RoPE is not supported",
                    p.head_dim
                )));
            }
        }
        Ok(p)
    }

    /// The Hugging Face `config.json` fields for these parameters.
    pub fn to_raw_config(&self) -> RawConfig {
        let spec = self.family.spec();
        RawConfig {
            architectures: Some(
                spec.architectures
                    .iter()
                    .take(1)
                    .map(|a| a.to_string())
                    .collect(),
            ),
            model_type: Some(spec.name.to_string()),
            vocab_size: Some(self.vocab_size),
            hidden_size: Some(self.hidden_size),
            intermediate_size: Some(self.intermediate_size),
            num_hidden_layers: Some(self.num_hidden_layers),
            num_attention_heads: Some(self.num_attention_heads),
            num_key_value_heads: Some(self.num_key_value_heads),
            head_dim: self.head_dim_given.then_some(self.head_dim),
            max_position_embeddings: Some(self.max_position_embeddings),
            rms_norm_eps: Some(self.rms_norm_eps),
            rope_theta: Some(self.rope_theta),
            rope_scaling: Some(self.rope_scaling.clone().unwrap_or(Value::Null)),
            tie_word_embeddings: Some(self.tie_word_embeddings),
            attention_bias: Some(self.attention_bias),
            mlp_bias: Some(false),
            hidden_act: Some("silu".into()),
            bos_token_id: self.bos_token_id.map(|v| json!(v)),
            eos_token_id: self.eos_token_id.map(|v| json!(v)),
            pad_token_id: self.pad_token_id.map(|v| json!(v)),
            torch_dtype: Some("float32".into()),
            ..RawConfig::default()
        }
    }

    /// The validated configuration these parameters describe.
    pub fn to_model_config(&self) -> Result<ModelConfig> {
        ModelConfig::from_raw(self.to_raw_config())
    }

    /// The Hugging Face `config.json` for these parameters.
    pub fn to_config_json(&self) -> Value {
        serde_json::to_value(self.to_raw_config()).unwrap_or(Value::Null)
    }
}

/// `rope_scaling` from `{arch}.rope.scaling.*`. Llama 3.1-style scaling is stored
/// by llama.cpp as a precomputed `rope_freqs.weight` tensor without its
/// parameters, so it cannot be turned back into a `config.json` entry.
fn rope_scaling(g: &GgufFile, arch: &str) -> Result<Option<Value>> {
    let m = &g.metadata;
    let e = |k| g.error(k);
    let kind = m.str(&format!("{arch}.rope.scaling.type")).map_err(e)?;
    let factor = m.f64(&format!("{arch}.rope.scaling.factor")).map_err(e)?;
    if g.tensor("rope_freqs.weight").is_some() {
        bail!(
            "GGUF file {}: it carries `rope_freqs.weight` (Llama 3.1-style RoPE scaling baked into a tensor); \
             its parameters are not in the metadata, so it cannot be converted to a config.json",
            g.path().display()
        );
    }
    Ok(match (kind, factor) {
        (None | Some("none"), _) => None,
        (Some("linear"), Some(f)) => Some(json!({"rope_type": "linear", "factor": f})),
        (Some(other), _) => bail!(
            "GGUF file {}: `{arch}.rope.scaling.type` is `{other}`{}; only `none` and `linear` (with a factor) are supported",
            g.path().display(),
            if factor.is_none() { " without a factor" } else { "" }
        ),
    })
}
