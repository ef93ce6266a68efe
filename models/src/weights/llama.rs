//! Loads a Hugging Face Llama-family checkpoint (Llama 2/3.x, SmolLM2, Mistral,
//! Qwen2-style with q/k/v biases) into [`LlamaWeights`].
//!
//! This is the only place that knows the tensor names. Every tensor's shape is
//! checked against `config.json` before it is read, so a config that disagrees
//! with the weights fails here, naming the tensor and both shapes.

use super::matrix::{round_to, Matrix};
use super::safetensors_files::SafetensorsFiles;
use crate::config::ModelConfig;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::Path;
use wafer_core::DType;

/// One decoder layer.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub input_layernorm: Vec<f32>,
    pub q_proj: Matrix,
    pub k_proj: Matrix,
    pub v_proj: Matrix,
    pub o_proj: Matrix,
    /// Present when `attention_bias` is true (Qwen2-style).
    pub q_bias: Option<Vec<f32>>,
    pub k_bias: Option<Vec<f32>>,
    pub v_bias: Option<Vec<f32>>,
    pub post_attention_layernorm: Vec<f32>,
    pub gate_proj: Matrix,
    pub up_proj: Matrix,
    pub down_proj: Matrix,
}

/// A whole model's weights at one precision.
#[derive(Debug, Clone)]
pub struct LlamaWeights {
    pub embed_tokens: Matrix,
    pub layers: Vec<LayerWeights>,
    pub norm: Vec<f32>,
    /// `None` when the LM head is tied to the embedding.
    pub lm_head: Option<Matrix>,
    /// The precision the matrices are held in.
    pub dtype: DType,
}

impl LlamaWeights {
    /// The LM head matrix (`[vocab, hidden]`), tied or not.
    pub fn lm_head(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// Loads the weights of `dir` (single or sharded safetensors), converting
    /// every matrix to `precision` (`None`: keep the dtype of the first matrix in the file).
    pub fn load_dir(
        dir: &Path,
        config: &ModelConfig,
        precision: Option<DType>,
    ) -> Result<LlamaWeights> {
        let files = SafetensorsFiles::open_dir(dir)?;
        LlamaWeights::load(&files, config, precision)
    }

    pub fn load(
        files: &SafetensorsFiles,
        c: &ModelConfig,
        precision: Option<DType>,
    ) -> Result<LlamaWeights> {
        let d = c.hidden_size;
        let (q, kv, ffn, vocab) = (c.q_dim(), c.kv_dim(), c.intermediate_size, c.vocab_size);
        let dtype = match precision {
            Some(p) => p,
            None => files.get("model.embed_tokens.weight")?.dtype,
        };
        // Weights for more layers than the config declares mean the two disagree.
        let extra = format!(
            "model.layers.{}.input_layernorm.weight",
            c.num_hidden_layers
        );
        if files.contains(&extra) {
            bail!(
                "the weights hold more layers than config.json's num_hidden_layers = {} (found `{extra}`)",
                c.num_hidden_layers
            );
        }
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<Matrix> {
            let t = files.get(name)?;
            t.expect_shape(&[rows, cols])?;
            if let Some(raw) = t.raw_u16(dtype) {
                // Already stored at the wanted 16-bit precision: no rounding needed.
                let data = match dtype {
                    DType::F16 => super::matrix::MatrixData::F16(raw),
                    _ => super::matrix::MatrixData::BF16(raw),
                };
                return Ok(Matrix { rows, cols, data });
            }
            Ok(Matrix::from_f32(rows, cols, t.to_f32(), dtype))
        };
        let vector = |name: &str, len: usize| -> Result<Vec<f32>> {
            let t = files.get(name)?;
            t.expect_shape(&[len])?;
            let mut v = t.to_f32();
            round_to(&mut v, dtype);
            Ok(v)
        };
        let layer = |i: usize| -> Result<LayerWeights> {
            let p = format!("model.layers.{i}");
            let bias = |name: &str, len: usize| -> Result<Option<Vec<f32>>> {
                if c.attention_bias {
                    Ok(Some(vector(&format!("{p}.self_attn.{name}.bias"), len)?))
                } else {
                    Ok(None)
                }
            };
            Ok(LayerWeights {
                input_layernorm: vector(&format!("{p}.input_layernorm.weight"), d)?,
                q_proj: matrix(&format!("{p}.self_attn.q_proj.weight"), q, d)?,
                k_proj: matrix(&format!("{p}.self_attn.k_proj.weight"), kv, d)?,
                v_proj: matrix(&format!("{p}.self_attn.v_proj.weight"), kv, d)?,
                o_proj: matrix(&format!("{p}.self_attn.o_proj.weight"), d, q)?,
                q_bias: bias("q_proj", q)?,
                k_bias: bias("k_proj", kv)?,
                v_bias: bias("v_proj", kv)?,
                post_attention_layernorm: vector(
                    &format!("{p}.post_attention_layernorm.weight"),
                    d,
                )?,
                gate_proj: matrix(&format!("{p}.mlp.gate_proj.weight"), ffn, d)?,
                up_proj: matrix(&format!("{p}.mlp.up_proj.weight"), ffn, d)?,
                down_proj: matrix(&format!("{p}.mlp.down_proj.weight"), d, ffn)?,
            })
        };
        let layers = (0..c.num_hidden_layers)
            .into_par_iter()
            .map(layer)
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(matrix("lm_head.weight", vocab, d).context(
                "config.json has tie_word_embeddings = false, so the checkpoint needs its own `lm_head.weight`",
            )?)
        };
        Ok(LlamaWeights {
            embed_tokens: matrix("model.embed_tokens.weight", vocab, d)?,
            layers,
            norm: vector("model.norm.weight", d)?,
            lm_head,
            dtype,
        })
    }
}
