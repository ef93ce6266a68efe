//! The model configuration, mirroring a Hugging Face `config.json` of a
//! supported family (Llama 2/3.x, SmolLM2, Mistral, Qwen2, Qwen3; see
//! [`crate::family`]).
//!
//! [`RawConfig`] is the file as written (field names as in `config.json`, every
//! optional field optional); [`ModelConfig`] is the resolved, validated form the
//! rest of the crate uses. The family comes from `model_type`/`architectures`
//! through the family table; what no family runs (another architecture, an
//! activation other than SiLU, sliding-window attention that is in force, MLP
//! biases) is refused naming the field. Shape presets build a `ModelConfig`
//! directly.

use crate::family::{self, BiasRule, Family, WindowRule};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `config.json` as written by Hugging Face. Unknown fields are ignored: real
/// configs carry many that do not change the forward pass.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct RawConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intermediate_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_hidden_layers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_attention_heads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rms_norm_eps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Written as `null` when absent: "no scaling" is a statement, not an omission.
    pub rope_scaling: Option<serde_json::Value>,
    /// Newer files put `rope_theta` and the scaling here instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    /// The MLP activation; only `silu` (SwiGLU) is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    /// Sliding-window attention span (Mistral; Qwen2/3 with `use_sliding_window`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
    /// Qwen2/3: layers below this index keep full attention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_window_layers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
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

/// A validated configuration of one of the supported families.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub model_type: String,
    /// The family's row of [`crate::family::FAMILIES`]: which tensors a layer
    /// has and which ops differ (e.g. Qwen3's q/k norm).
    #[serde(default)]
    pub family: Family,
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
    /// q/k/v projections have biases (always true for Qwen2).
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
            bail!("config.json: `mlp_bias` = true is not supported (expected false or absent: Llama-family MLPs have no biases)");
        }
        let family = resolve_family(&raw)?;
        let spec = family.spec();
        match raw.hidden_act.as_deref() {
            None | Some("silu") => {}
            Some(other) => bail!(
                "config.json: `hidden_act` is \"{other}\"; expected \"silu\" (the SwiGLU MLP of the {} family)",
                spec.name
            ),
        }
        let vocab_size = need(raw.vocab_size, "vocab_size")?;
        let intermediate_size = need(raw.intermediate_size, "intermediate_size")?;
        let num_hidden_layers = need(raw.num_hidden_layers, "num_hidden_layers")?;
        let max_position_embeddings = raw.max_position_embeddings.unwrap_or(2048);
        check_sliding_window(
            &raw,
            spec.sliding_window,
            num_hidden_layers,
            max_position_embeddings,
        )?;
        let attention_bias = match (spec.attention_bias, raw.attention_bias) {
            (BiasRule::FromConfig, v) => v.unwrap_or(false),
            // Qwen2 configs carry no `attention_bias` field: their q/k/v projections always have biases.
            (BiasRule::Always, None | Some(true)) => true,
            (BiasRule::Never, None | Some(false)) => false,
            (BiasRule::Always, Some(false)) => bail!(
                "config.json: `attention_bias` is false, but {} models always have q/k/v biases (expected true or absent)",
                spec.name
            ),
            (BiasRule::Never, Some(true)) => bail!(
                "config.json: `attention_bias` is true, but {} models have no attention biases (expected false or absent)",
                spec.name
            ),
        };
        let config = ModelConfig {
            model_type: raw.model_type.clone().unwrap_or_else(|| spec.name.into()),
            family,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias,
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
        // Sizes come from a file: bound them so that every count derived from
        // the shape (widths, tensor elements, parameters, their bytes) fits.
        for (field, v, max) in [
            ("vocab_size", self.vocab_size, MAX_DIM),
            ("hidden_size", self.hidden_size, MAX_DIM),
            ("intermediate_size", self.intermediate_size, MAX_DIM),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_DIM),
            ("num_key_value_heads", self.num_key_value_heads, MAX_DIM),
            ("head_dim", self.head_dim, MAX_DIM),
        ] {
            if v > max {
                bail!("config: `{field}` is {v}, more than the {max} supported");
            }
        }
        match self.checked_param_count() {
            Some(n) if n <= MAX_PARAMS => {}
            _ => bail!("config: the shape has more than {MAX_PARAMS} parameters"),
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
        if let Some(f) = Family::from_model_type(&self.model_type) {
            if f != self.family {
                bail!(
                    "config: `model_type` \"{}\" is a {} model, but the family is {}",
                    self.model_type,
                    f.spec().name,
                    self.family.spec().name
                );
            }
        }
        let bias_rule = self.family.spec().attention_bias;
        if (bias_rule == BiasRule::Always && !self.attention_bias)
            || (bias_rule == BiasRule::Never && self.attention_bias)
        {
            bail!(
                "config: `attention_bias` = {} contradicts the {} family",
                self.attention_bias,
                self.family.spec().name
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

    /// Whether q and k get a per-head RMSNorm before RoPE (Qwen3).
    pub fn qk_norm(&self) -> bool {
        self.family.spec().qk_norm
    }

    /// Parameters of one decoder layer: every tensor the family table requires
    /// (matrices, norms, biases, per-head q/k norms).
    pub fn layer_params(&self) -> u64 {
        family::layer_tensors(self)
            .filter(|t| t.presence.required(self))
            .map(|t| t.shape.elements(self))
            .sum()
    }

    /// [`Self::param_count`] with every product and sum checked; `None` on
    /// overflow. Needs the width fields within [`MAX_DIM`] (so `q_dim` fits).
    fn checked_param_count(&self) -> Option<u64> {
        let elements = |t: &family::TensorSpec| {
            t.shape
                .dims(self)
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        };
        let mut layer = 0u64;
        for t in family::layer_tensors(self).filter(|t| t.presence.required(self)) {
            layer = layer.checked_add(elements(t)?)?;
        }
        let mut total = layer.checked_mul(self.num_hidden_layers as u64)?;
        for t in family::model_tensors(self).filter(|t| t.presence.required(self)) {
            total = total.checked_add(elements(t)?)?;
        }
        Some(total)
    }

    /// All parameters, counting a tied LM head once.
    pub fn param_count(&self) -> u64 {
        let outside: u64 = family::model_tensors(self)
            .filter(|t| t.presence.required(self))
            .map(|t| t.shape.elements(self))
            .sum();
        outside + self.num_hidden_layers as u64 * self.layer_params()
    }
}

/// The largest width [`ModelConfig::validate`] accepts for any size field (the
/// largest real ones are vocabularies of a few hundred thousand).
pub const MAX_DIM: usize = 1 << 24;
/// The most decoder layers [`ModelConfig::validate`] accepts (real models have
/// at most a few hundred; the placement search is quadratic in the layers).
pub const MAX_LAYERS: usize = 1 << 10;
/// The most parameters [`ModelConfig::validate`] accepts, about 10^15 (over
/// a thousand times the largest open model), so byte counts stay within `u64`.
pub const MAX_PARAMS: u64 = 1 << 50;

/// The family named by `model_type` and `architectures`, which must agree.
/// A file with neither is taken to be a Llama (older Llama exports omit both).
fn resolve_family(raw: &RawConfig) -> Result<Family> {
    let by_type = match raw.model_type.as_deref() {
        None => None,
        Some(t) => Some(Family::from_model_type(t).with_context(|| {
            format!(
                "config.json: `model_type` is \"{t}\"; expected one of {:?}",
                family::known_model_types()
            )
        })?),
    };
    let mut by_arch = None;
    for a in raw.architectures.iter().flatten() {
        let f = Family::from_architecture(a).with_context(|| {
            format!(
                "config.json: `architectures` lists \"{a}\"; expected one of {:?}",
                family::known_architectures()
            )
        })?;
        match (by_type, by_arch) {
            (Some(t), _) if t != f => bail!(
                "config.json: `architectures` lists \"{a}\" (a {} model), but `model_type` is \"{}\"; expected one of {:?}",
                f.spec().name,
                raw.model_type.as_deref().unwrap_or_default(),
                t.spec().architectures
            ),
            (_, Some(prev)) if prev != f => bail!(
                "config.json: `architectures` mixes families ({} and {}); expected one",
                Family::spec(prev).name,
                f.spec().name
            ),
            _ => by_arch = Some(f),
        }
    }
    Ok(by_type.or(by_arch).unwrap_or(Family::Llama))
}

/// Refuses sliding-window attention that would change the result: a window
/// shorter than the context, in force for at least one layer.
fn check_sliding_window(
    raw: &RawConfig,
    rule: WindowRule,
    layers: usize,
    max_positions: usize,
) -> Result<()> {
    let enabled = match rule {
        WindowRule::None => return Ok(()),
        WindowRule::Field => true,
        // Only layers from `max_window_layers` on use the window.
        WindowRule::FieldIfEnabled => {
            raw.use_sliding_window == Some(true) && raw.max_window_layers.unwrap_or(0) < layers
        }
    };
    let window = match &raw.sliding_window {
        None | Some(serde_json::Value::Null) => return Ok(()),
        Some(v) => v.as_u64().with_context(|| {
            format!("config.json: `sliding_window` holds {v}, expected a token count or null")
        })?,
    };
    if enabled && (window as u128) < max_positions as u128 {
        bail!(
            "config.json: `sliding_window` = {window}{} restricts attention to fewer positions than \
             `max_position_embeddings` = {max_positions}; sliding-window attention is not supported \
             (expected null, a window >= the context{})",
            if rule == WindowRule::FieldIfEnabled { " with `use_sliding_window` = true" } else { "" },
            if rule == WindowRule::FieldIfEnabled { ", or `use_sliding_window` = false" } else { "" }
        );
    }
    Ok(())
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

    #[test]
    fn shapes_whose_counts_overflow_are_rejected() {
        // Found by fuzzing: 4.36 billion layers were accepted, and placing the
        // model allocated a list of units as long as the layer count.
        let layers = r#"{"model_type":"llama","vocab_size":128256,"hidden_size":4096,
            "intermediate_size":14336,"num_hidden_layers":4358760014,"num_attention_heads":32,
            "num_key_value_heads":8}"#;
        let err = format!("{:#}", ModelConfig::from_json_str(layers).unwrap_err());
        assert!(err.contains("num_hidden_layers"), "{err}");
        // Each field within its bound, but the matrices' elements overflow a u64.
        let wide = r#"{"model_type":"llama","vocab_size":16777216,"hidden_size":16777216,
            "intermediate_size":16777216,"num_hidden_layers":1024,"num_attention_heads":16777216,
            "head_dim":16777216}"#;
        let err = format!("{:#}", ModelConfig::from_json_str(wide).unwrap_err());
        assert!(err.contains("parameters"), "{err}");
        for p in crate::presets::names() {
            let cfg = crate::presets::lookup(p).unwrap();
            assert_eq!(cfg.checked_param_count(), Some(cfg.param_count()), "{p}");
        }
    }

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

    const BASE: &str = r#""vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,"max_position_embeddings":1024"#;

    fn with(extra: &str) -> Result<ModelConfig> {
        ModelConfig::from_json_str(&format!("{{{BASE},{extra}}}"))
    }

    fn refused(extra: &str, needles: &[&str]) {
        let err = format!("{:#}", with(extra).unwrap_err());
        for n in needles {
            assert!(err.contains(n), "`{err}` should mention `{n}`");
        }
    }

    #[test]
    fn family_comes_from_model_type_or_architectures() {
        let fam = |extra: &str| with(extra).unwrap().family;
        assert_eq!(fam(r#""model_type":"llama""#), Family::Llama);
        assert_eq!(fam(r#""model_type":"mistral""#), Family::Mistral);
        assert_eq!(fam(r#""model_type":"qwen2""#), Family::Qwen2);
        assert_eq!(fam(r#""model_type":"qwen3""#), Family::Qwen3);
        assert_eq!(
            fam(r#""architectures":["Qwen3ForCausalLM"]"#),
            Family::Qwen3
        );
        // Neither field: an older Llama export.
        let c = with(r#""torch_dtype":"float32""#).unwrap();
        assert_eq!((c.family, c.model_type.as_str()), (Family::Llama, "llama"));
        assert!(with(r#""model_type":"qwen3""#).unwrap().qk_norm());
        assert!(!with(r#""model_type":"qwen2""#).unwrap().qk_norm());
    }

    #[test]
    fn unknown_families_are_refused_naming_the_field() {
        refused(r#""model_type":"gpt2""#, &["`model_type`", "gpt2", "qwen3"]);
        refused(
            r#""architectures":["GPT2LMHeadModel"]"#,
            &["`architectures`", "GPT2LMHeadModel", "LlamaForCausalLM"],
        );
        refused(
            r#""model_type":"llama","architectures":["Qwen3ForCausalLM"]"#,
            &[
                "`architectures`",
                "Qwen3ForCausalLM",
                "`model_type`",
                "llama",
            ],
        );
    }

    #[test]
    fn activations_other_than_silu_are_refused() {
        refused(r#""hidden_act":"gelu""#, &["`hidden_act`", "gelu", "silu"]);
        refused(
            r#""model_type":"qwen2","hidden_act":"gelu_pytorch_tanh""#,
            &["`hidden_act`", "gelu_pytorch_tanh"],
        );
        assert!(with(r#""hidden_act":"silu""#).is_ok());
    }

    #[test]
    fn only_sliding_windows_that_change_nothing_load() {
        // Qwen2/3 carry a window that `use_sliding_window: false` switches off.
        for mt in ["qwen2", "qwen3"] {
            with(&format!(
                r#""model_type":"{mt}","sliding_window":512,"use_sliding_window":false,"max_window_layers":2"#
            ))
            .unwrap();
            with(&format!(r#""model_type":"{mt}","sliding_window":null"#)).unwrap();
            refused(
                &format!(
                    r#""model_type":"{mt}","sliding_window":512,"use_sliding_window":true,"max_window_layers":0"#
                ),
                &["`sliding_window` = 512", "use_sliding_window", "1024"],
            );
            // Enabled, but every layer is below max_window_layers: full attention.
            with(&format!(
                r#""model_type":"{mt}","sliding_window":512,"use_sliding_window":true,"max_window_layers":2"#
            ))
            .unwrap();
        }
        // Mistral: a null window or one covering the context is full attention.
        with(r#""model_type":"mistral","sliding_window":null"#).unwrap();
        with(r#""model_type":"mistral","sliding_window":1024"#).unwrap();
        refused(
            r#""model_type":"mistral","sliding_window":512"#,
            &["`sliding_window` = 512", "`max_position_embeddings` = 1024"],
        );
        refused(
            r#""model_type":"mistral","sliding_window":"wide""#,
            &["`sliding_window`", "wide"],
        );
    }

    #[test]
    fn attention_bias_follows_the_family() {
        assert!(
            with(r#""model_type":"qwen3","attention_bias":true"#)
                .unwrap()
                .attention_bias
        );
        assert!(!with(r#""model_type":"qwen3""#).unwrap().attention_bias);
        refused(
            r#""model_type":"qwen2","attention_bias":false"#,
            &["`attention_bias`", "qwen2"],
        );
        refused(
            r#""model_type":"mistral","attention_bias":true"#,
            &["`attention_bias`", "mistral"],
        );
    }

    #[test]
    fn validate_catches_a_family_that_contradicts_the_config() {
        let mut c = with(r#""model_type":"qwen3""#).unwrap();
        c.family = Family::Llama;
        assert!(c.validate().unwrap_err().to_string().contains("qwen3"));
        let mut c = with(r#""model_type":"mistral""#).unwrap();
        c.attention_bias = true;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("attention_bias"));
    }

    #[test]
    fn qwen3_parameters_include_the_per_head_norms() {
        let q3 = with(r#""model_type":"qwen3","head_dim":6"#).unwrap();
        let llama = with(r#""model_type":"llama","head_dim":6"#).unwrap();
        assert_eq!(q3.layer_params(), llama.layer_params() + 2 * 6);
        assert_eq!(q3.param_count(), llama.param_count() + 2 * 2 * 6);
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
