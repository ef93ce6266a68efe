//! The model configuration, mirroring a Hugging Face `config.json` for the Llama
//! family (Llama 2/3.x, SmolLM2, Mistral, Qwen2-style, Qwen3-style).
//!
//! [`RawConfig`] is the file as written (field names as in `config.json`, every
//! optional field optional); [`ModelConfig`] is the resolved, validated form the
//! rest of the crate uses. Shape presets build a `ModelConfig` directly.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `config.json` as written by Hugging Face. Unknown fields are ignored: real
/// configs carry many that do not change the forward pass.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct RawConfig {
    pub model_type: Option<String>,
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<serde_json::Value>,
    /// Newer files put `rope_theta` and the scaling here instead.
    pub rope_parameters: Option<serde_json::Value>,
    pub tie_word_embeddings: Option<bool>,
    pub attention_bias: Option<bool>,
    pub mlp_bias: Option<bool>,
    pub bos_token_id: Option<serde_json::Value>,
    pub eos_token_id: Option<serde_json::Value>,
    pub torch_dtype: Option<String>,
}

/// How rotary position frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's piecewise rescaling by wavelength band.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// A validated Llama-family configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    /// Reads and validates `DIR/config.json`.
    pub fn from_dir(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        ModelConfig::from_json_str(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_json_str(text: &str) -> Result<ModelConfig> {
        let raw: RawConfig = serde_json::from_str(text).context("config.json is not valid JSON")?;
        ModelConfig::from_raw(raw)
    }

    pub fn from_raw(raw: RawConfig) -> Result<ModelConfig> {
        fn need<T>(v: Option<T>, field: &str) -> Result<T> {
            v.with_context(|| format!("config.json: required field `{field}` is missing"))
        }
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let num_attention_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(num_attention_heads);
        if num_attention_heads == 0 {
            bail!("config.json: `num_attention_heads` must be at least 1, found 0");
        }
        let head_dim = match raw.head_dim {
            Some(h) => h,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    bail!(
                        "config.json: `hidden_size` {hidden_size} is not divisible by `num_attention_heads` {num_attention_heads} and no `head_dim` is given"
                    );
                }
                hidden_size / num_attention_heads
            }
        };
        // `rope_parameters` (newer files) may carry both theta and the scaling.
        let params = raw.rope_parameters.as_ref();
        let rope_theta = raw
            .rope_theta
            .or_else(|| {
                params
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(|v| v.as_f64())
            })
            .unwrap_or(10_000.0);
        let scaling_value = raw
            .rope_scaling
            .clone()
            .or_else(|| raw.rope_parameters.clone());
        let rope_scaling = match scaling_value {
            None | Some(serde_json::Value::Null) => RopeScaling::Default,
            Some(v) => parse_rope_scaling(&v)?,
        };
        if raw.mlp_bias == Some(true) {
            bail!("config.json: `mlp_bias` = true is not supported (Llama-family MLPs have no biases)");
        }
        let config = ModelConfig {
            model_type: raw.model_type.clone().unwrap_or_else(|| "llama".into()),
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            num_hidden_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            // Qwen2 configs carry no `attention_bias` field: their q/k/v projections always have biases.
            attention_bias: raw
                .attention_bias
                .unwrap_or(raw.model_type.as_deref() == Some("qwen2")),
            bos_token_id: token_ids(raw.bos_token_id.as_ref(), "bos_token_id")?
                .into_iter()
                .next(),
            eos_token_ids: token_ids(raw.eos_token_id.as_ref(), "eos_token_id")?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks that the shape is one a forward pass can run.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ] {
            if v == 0 {
                bail!("config: `{field}` must be at least 1, found 0");
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            bail!(
                "config: `num_attention_heads` {} is not a multiple of `num_key_value_heads` {}",
                self.num_attention_heads,
                self.num_key_value_heads
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            bail!("config: `head_dim` {} must be even for RoPE", self.head_dim);
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.rms_norm_eps) || !positive(self.rope_theta) {
            bail!("config: `rms_norm_eps` and `rope_theta` must be positive");
        }
        Ok(())
    }

    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Query heads that share one key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Parameters of one decoder layer (matrices, norms and biases).
    pub fn layer_params(&self) -> u64 {
        let d = self.hidden_size as u64;
        let q = self.q_dim() as u64;
        let kv = self.kv_dim() as u64;
        let ffn = self.intermediate_size as u64;
        let attn = d * q + 2 * d * kv + q * d;
        let bias = if self.attention_bias { q + 2 * kv } else { 0 };
        attn + bias + 3 * d * ffn + 2 * d
    }

    /// All parameters, counting a tied LM head once.
    pub fn param_count(&self) -> u64 {
        let embed = self.vocab_size as u64 * self.hidden_size as u64;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + self.num_hidden_layers as u64 * self.layer_params() + self.hidden_size as u64
    }
}

fn parse_rope_scaling(v: &serde_json::Value) -> Result<RopeScaling> {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    let num = |field: &str| -> Result<f64> {
        v.get(field).and_then(|x| x.as_f64()).with_context(|| {
            format!("config.json: rope scaling of type `{kind}` needs a number `{field}`")
        })
    };
    Ok(match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        },
        other => bail!(
            "config.json: rope scaling type `{other}` is not supported (expected default, linear or llama3)"
        ),
    })
}

fn token_ids(v: Option<&serde_json::Value>, field: &str) -> Result<Vec<u32>> {
    let as_id = |x: &serde_json::Value| -> Result<u32> {
        x.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .with_context(|| format!("config.json: `{field}` holds {x}, expected a token id"))
    };
    match v {
        None | Some(serde_json::Value::Null) => Ok(vec![]),
        Some(serde_json::Value::Array(items)) => items.iter().map(as_id).collect(),
        Some(x) => Ok(vec![as_id(x)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama",
      "vocab_size":49152,"hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
      "num_attention_heads":9,"num_key_value_heads":3,"max_position_embeddings":8192,
      "rms_norm_eps":1e-05,"rope_theta":100000,"rope_scaling":null,"tie_word_embeddings":true,
      "bos_token_id":1,"eos_token_id":2}"#;

    #[test]
    fn parses_smollm2() {
        let c = ModelConfig::from_json_str(SMOLLM2).unwrap();
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.group_size(), 3);
        assert_eq!(c.eos_token_ids, vec![2]);
        assert_eq!(c.rope_scaling, RopeScaling::Default);
        // SmolLM2-135M has 134,515,008 parameters.
        assert_eq!(c.param_count(), 134_515_008);
    }

    #[test]
    fn parses_llama3_scaling_and_eos_lists() {
        let text = r#"{"vocab_size":128256,"hidden_size":4096,"intermediate_size":14336,
          "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,
          "rope_theta":500000.0,"eos_token_id":[128001,128008,128009],
          "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
          "original_max_position_embeddings":8192,"rope_type":"llama3"}}"#;
        let c = ModelConfig::from_json_str(text).unwrap();
        assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        // Llama-3.1-8B: 8,030,261,248 parameters.
        assert_eq!(c.param_count(), 8_030_261_248);
    }

    #[test]
    fn rope_parameters_are_read_where_newer_files_put_them() {
        let text = r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,
          "num_attention_heads":2,"rope_parameters":{"rope_type":"linear","factor":2.0,"rope_theta":1234.0}}"#;
        let c = ModelConfig::from_json_str(text).unwrap();
        assert_eq!(c.rope_theta, 1234.0);
        assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });
    }

    #[test]
    fn qwen2_has_qkv_biases_without_saying_so() {
        let base = r#""vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2"#;
        let c = ModelConfig::from_json_str(&format!(r#"{{"model_type":"qwen2",{base}}}"#)).unwrap();
        assert!(c.attention_bias);
        let c = ModelConfig::from_json_str(&format!(r#"{{"model_type":"llama",{base}}}"#)).unwrap();
        assert!(!c.attention_bias);
        let err =
            ModelConfig::from_json_str(&format!(r#"{{"mlp_bias":true,{base}}}"#)).unwrap_err();
        assert!(err.to_string().contains("mlp_bias"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let check = |text: &str, needle: &str| {
            let err = format!("{:#}", ModelConfig::from_json_str(text).unwrap_err());
            assert!(err.contains(needle), "{err} should mention {needle}");
        };
        check(r#"{"hidden_size":8}"#, "num_attention_heads");
        check(r#"{"hidden_size":8,"num_attention_heads":2}"#, "vocab_size");
        check(
            r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":3}"#,
            "head_dim",
        );
        check(
            r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":3}"#,
            "num_key_value_heads",
        );
        check(
            r#"{"vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"rope_scaling":{"rope_type":"yarn","factor":4}}"#,
            "yarn",
        );
        check("{", "JSON");
    }
}
