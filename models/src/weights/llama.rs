//! Loads a Hugging Face checkpoint of a supported family (Llama 2/3.x, SmolLM2,
//! Mistral, Qwen2 with q/k/v biases, Qwen3 with per-head q/k norms) into
//! [`LlamaWeights`].
//!
//! The tensor list comes from the family table ([`crate::family`]). Every
//! tensor's shape is checked against `config.json` before it is read, so a
//! config that disagrees with the weights fails here, naming the tensor and both
//! shapes. A checkpoint holding tensors the model would not use, or a NaN or
//! infinite weight, is refused with the tensor's name.

use super::matrix::{round_to, Matrix, MatrixData};
use super::safetensors_files::{SafetensorsFiles, TensorView};
use crate::config::ModelConfig;
use crate::family::{self, Role, Slot, TensorSpec, IGNORED_LAYER_TENSORS, MODEL_TENSORS};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
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
    /// Llama's `attention_bias` also biases o_proj; Qwen2's does not.
    pub o_bias: Option<Vec<f32>>,
    /// Qwen3: RMSNorm gain (`head_dim` values, shared by every query head)
    /// applied to each q head after the projection and before RoPE.
    pub q_norm: Option<Vec<f32>>,
    /// Qwen3: the same for each k head.
    pub k_norm: Option<Vec<f32>>,
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
        let dtype = match precision {
            Some(p) => p,
            None => files.get("model.embed_tokens.weight")?.dtype,
        };
        check_no_leftovers(files, c)?;
        let matrix = |spec: &TensorSpec, layer: usize| -> Result<Matrix> {
            let name = spec.hf_name(layer);
            let t = files.get(&name)?;
            let shape = spec.shape.dims(c);
            t.expect_shape(&shape)?;
            let (rows, cols) = (shape[0], shape[1]);
            let m = match t.raw_u16(dtype) {
                // Already stored at the wanted 16-bit precision: no rounding needed.
                Some(raw) => {
                    let data = match dtype {
                        DType::F16 => super::matrix::MatrixData::F16(raw),
                        _ => super::matrix::MatrixData::BF16(raw),
                    };
                    Matrix { rows, cols, data }
                }
                None => Matrix::from_f32(rows, cols, t.to_f32(), dtype),
            };
            if let Some(i) = first_non_finite(&m) {
                bail!(non_finite_error(&t, i, &t.to_f32(), dtype));
            }
            Ok(m)
        };
        let vector = |spec: &TensorSpec, layer: usize| -> Result<Vec<f32>> {
            let name = spec.hf_name(layer);
            let t = files.get(&name)?;
            t.expect_shape(&spec.shape.dims(c))?;
            let source = t.to_f32();
            let mut v = source.clone();
            round_to(&mut v, dtype);
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                bail!(non_finite_error(&t, i, &source, dtype));
            }
            Ok(v)
        };
        let present = |spec: &TensorSpec, layer: usize| files.contains(&spec.hf_name(layer));
        LlamaWeights::assemble(c, dtype, present, matrix, vector)
    }

    /// Builds the weights of `c` from any source of tensors: `matrix` and
    /// `vector` produce the family table's tensor for a layer (checked and in
    /// Hugging Face layout), `present` says whether an optional one exists. The
    /// safetensors loader and the GGUF loader (in `wafer-import`) both go
    /// through here, so the slot-to-field mapping exists once.
    pub fn assemble(
        c: &ModelConfig,
        dtype: DType,
        present: impl Fn(&TensorSpec, usize) -> bool + Sync,
        matrix: impl Fn(&TensorSpec, usize) -> Result<Matrix> + Sync,
        vector: impl Fn(&TensorSpec, usize) -> Result<Vec<f32>> + Sync,
    ) -> Result<LlamaWeights> {
        let layer = |i: usize| -> Result<LayerWeights> {
            // Each slot the family lists (and the config enables), loaded by kind.
            let mut matrices: HashMap<Slot, Matrix> = HashMap::new();
            let mut vectors: HashMap<Slot, Vec<f32>> = HashMap::new();
            for spec in family::layer_tensors(c) {
                if !spec.presence.required(c) && !present(spec, i) {
                    continue;
                }
                match spec.role {
                    Role::Matrix => {
                        matrices.insert(spec.slot, matrix(spec, i)?);
                    }
                    Role::NormGain | Role::HeadNormGain | Role::Bias => {
                        vectors.insert(spec.slot, vector(spec, i)?);
                    }
                }
            }
            let mut m = |slot: Slot| {
                matrices.remove(&slot).with_context(|| {
                    format!(
                        "the {} family table lists no {slot:?} matrix for layer {i}",
                        c.family.spec().name
                    )
                })
            };
            Ok(LayerWeights {
                q_proj: m(Slot::QProj)?,
                k_proj: m(Slot::KProj)?,
                v_proj: m(Slot::VProj)?,
                o_proj: m(Slot::OProj)?,
                gate_proj: m(Slot::GateProj)?,
                up_proj: m(Slot::UpProj)?,
                down_proj: m(Slot::DownProj)?,
                input_layernorm: vectors.remove(&Slot::InputNorm).unwrap_or_default(),
                post_attention_layernorm: vectors
                    .remove(&Slot::PostAttentionNorm)
                    .unwrap_or_default(),
                q_bias: vectors.remove(&Slot::QBias),
                k_bias: vectors.remove(&Slot::KBias),
                v_bias: vectors.remove(&Slot::VBias),
                o_bias: vectors.remove(&Slot::OBias),
                q_norm: vectors.remove(&Slot::QNorm),
                k_norm: vectors.remove(&Slot::KNorm),
            })
        };
        let layers = (0..c.num_hidden_layers)
            .into_par_iter()
            .map(layer)
            .collect::<Result<Vec<_>>>()?;
        let [embed, final_norm, head] = MODEL_TENSORS else {
            bail!("the family table's model-level tensors are not embedding, norm and LM head");
        };
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(matrix(head, 0).context(
                "config.json has tie_word_embeddings = false, so the checkpoint needs its own `lm_head.weight`",
            )?)
        };
        Ok(LlamaWeights {
            embed_tokens: matrix(embed, 0)?,
            layers,
            norm: vector(final_norm, 0)?,
            lm_head,
            dtype,
        })
    }
}

/// Refuses tensors the model would not use: more layers than the config
/// declares, a bias or norm the family or config does not have, a stray name.
/// A tied model may carry an `lm_head.weight` only if it is a byte-identical copy
/// of the embedding.
fn check_no_leftovers(files: &SafetensorsFiles, c: &ModelConfig) -> Result<()> {
    let mut used: HashSet<String> = family::model_tensors(c).map(|t| t.hf_name(0)).collect();
    for i in 0..c.num_hidden_layers {
        used.extend(family::layer_tensors(c).map(|t| t.hf_name(i)));
        used.extend(
            IGNORED_LAYER_TENSORS
                .iter()
                .map(|n| format!("model.layers.{i}.{n}")),
        );
    }
    let mut leftovers: Vec<&str> = files.names().filter(|n| !used.contains(*n)).collect();
    leftovers.sort_unstable();
    if c.tie_word_embeddings {
        if let Some(pos) = leftovers.iter().position(|n| *n == "lm_head.weight") {
            let (head, embed) = (
                files.get("lm_head.weight")?,
                files.get("model.embed_tokens.weight")?,
            );
            if head.dtype != embed.dtype || head.shape != embed.shape || head.bytes != embed.bytes {
                bail!(
                    "tensor `lm_head.weight` in {}: config.json has tie_word_embeddings = true, \
                     so the LM head must be the embedding, but this one differs from `model.embed_tokens.weight`",
                    head.file.display()
                );
            }
            leftovers.remove(pos);
        }
    }
    if let Some(first) = leftovers.first() {
        let layer_of = |n: &str| {
            n.strip_prefix("model.layers.")
                .and_then(|r| r.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
        };
        let why = match layer_of(first) {
            Some(i) if i >= c.num_hidden_layers => format!(
                "the weights hold more layers than config.json's num_hidden_layers = {}",
                c.num_hidden_layers
            ),
            _ => format!(
                "a {} model with attention_bias = {} and tie_word_embeddings = {} does not use it",
                c.family.spec().name,
                c.attention_bias,
                c.tie_word_embeddings
            ),
        };
        let file = files
            .get(first)
            .map(|t| t.file.display().to_string())
            .unwrap_or_default();
        bail!(
            "unexpected tensor `{first}` in {file}: {why} ({} unused tensor(s): {})",
            leftovers.len(),
            leftovers
                .iter()
                .take(8)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// The index of the first NaN or infinite element of `m`, if any.
pub fn first_non_finite(m: &Matrix) -> Option<usize> {
    match &m.data {
        MatrixData::F32(v) => v.iter().position(|x| !x.is_finite()),
        // All-ones exponent: infinity or NaN.
        MatrixData::F16(v) => v.iter().position(|b| b & 0x7c00 == 0x7c00),
        MatrixData::BF16(v) => v.iter().position(|b| b & 0x7f80 == 0x7f80),
        MatrixData::Quant(q) => q.first_non_finite(),
    }
}

/// Names the tensor and element that is not finite, and whether it was so in
/// the file or became so when rounded to the load precision (f16 overflow).
fn non_finite_error(t: &TensorView<'_>, i: usize, source: &[f32], dtype: DType) -> String {
    let (row, col) = match t.shape {
        [_, cols] if *cols > 0 => (i / cols, Some(i % cols)),
        _ => (i, None),
    };
    let at = match col {
        Some(col) => format!("[{row}, {col}]"),
        None => format!("[{row}]"),
    };
    match source.get(i) {
        Some(v) if v.is_finite() => format!(
            "tensor `{}` in {}: element {at} = {v} overflows when rounded to {dtype:?} (expected every weight finite at the load precision)",
            t.name,
            t.file.display()
        ),
        v => format!(
            "tensor `{}` in {}: element {at} is {} (expected every weight finite)",
            t.name,
            t.file.display(),
            v.map_or("not finite".to_string(), |v| v.to_string())
        ),
    }
}
