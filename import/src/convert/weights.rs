//! GGUF tensors -> `model.safetensors` with Hugging Face names, shapes and row
//! order, stored as f32.
//!
//! The tensor list and both names of every tensor come from the family table
//! ([`wafer_models::family`]; GGUF names follow llama.cpp's `gguf-py/gguf/tensor_mapping.py`).
//! For the `llama` architecture llama.cpp's `convert_hf_to_gguf.py`
//! (`LlamaModel.permute`) reorders the rows of each Q and K head from Hugging
//! Face's "first half / second half" RoPE layout to interleaved pairs;
//! [`unpermute_rows`] undoes that, exactly as transformers' GGUF loader does
//! (`reverse_permute_weights`), using the KV-head count for K. Qwen2/Qwen3 files
//! are not permuted.
//!
//! Tensors are dequantized lazily while the file is written, so peak memory is
//! about one tensor, not the whole model.

use super::config::LlamaParams;
use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use anyhow::{bail, Context, Result};
use safetensors::{Dtype, View};
use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use wafer_models::family::{self, Heads, TensorSpec};

/// One tensor of the output file and where its values come from.
#[derive(Debug)]
pub struct PlannedTensor<'a> {
    pub hf_name: String,
    pub source: &'a TensorInfo,
    /// Row-major (Hugging Face) shape.
    pub shape: Vec<usize>,
    /// `Some(heads)` for Q/K weights and biases whose rows must be un-permuted.
    pub unpermute_heads: Option<usize>,
}

/// Maps every GGUF tensor to its Hugging Face name and checks its type and shape
/// against the configuration. Missing, mis-shaped or unknown tensors are errors.
pub fn plan<'a>(g: &'a GgufFile, p: &LlamaParams) -> Result<Vec<PlannedTensor<'a>>> {
    let c = p.to_model_config().with_context(|| {
        format!(
            "GGUF file {}: the configuration derived from the metadata is invalid",
            g.path().display()
        )
    })?;
    let spec = c.family.spec();
    let mut out = Vec::new();
    let mut want = |t: &TensorSpec, layer: usize| -> Result<()> {
        let (gguf, hf) = (t.gguf_name(layer), t.hf_name(layer));
        let shape = t.shape.dims(&c);
        let Some(src) = g.tensor(&gguf) else {
            if t.presence.required(&c) {
                bail!(
                    "GGUF file {}: tensor `{gguf}` (for {hf}, shape {shape:?}) is missing",
                    g.path().display()
                );
            }
            return Ok(());
        };
        if src.shape() != shape {
            bail!(
                "GGUF file {}: tensor `{gguf}` has shape {:?} (GGUF dims {:?}), but the metadata implies {shape:?}",
                g.path().display(),
                src.shape(),
                src.dims
            );
        }
        if !src.ty.is_dequantizable() {
            return Err(g
                .error(crate::gguf::GgufErrorKind::UnsupportedTensorType {
                    tensor: gguf,
                    ty: src.ty.to_string(),
                })
                .into());
        }
        let heads = match t.heads {
            Some(Heads::Query) if spec.gguf_permutes_qk => Some(c.num_attention_heads),
            Some(Heads::KeyValue) if spec.gguf_permutes_qk => Some(c.num_key_value_heads),
            _ => None,
        };
        out.push(PlannedTensor {
            hf_name: hf,
            source: src,
            shape,
            unpermute_heads: heads,
        });
        Ok(())
    };
    for t in family::model_tensors(&c) {
        want(t, 0)?;
    }
    for i in 0..c.num_hidden_layers {
        for t in family::layer_tensors(&c) {
            want(t, i)?;
        }
    }
    // Anything left over is a tensor this converter would silently drop.
    let used: HashSet<&str> = out.iter().map(|t| t.source.name.as_str()).collect();
    let unknown: Vec<&str> = g
        .tensors
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| !used.contains(n))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "GGUF file {}: {} tensor(s) do not belong to a {}-layer {} model: {}",
            g.path().display(),
            unknown.len(),
            p.num_hidden_layers,
            spec.name,
            unknown
                .iter()
                .take(8)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

/// Undoes llama.cpp's Q/K row permutation. Within each head of `head_dim` rows,
/// GGUF row `2*i + j` holds Hugging Face row `j*head_dim/2 + i` (i < head_dim/2,
/// j in {0, 1}). `values` is row-major with `row_len` values per row.
/// Generic over the element, so quantized rows can be moved as bytes (`row_len`
/// then counts the bytes of a row).
pub fn unpermute_rows<T: Copy + Default>(
    values: &[T],
    heads: usize,
    row_len: usize,
) -> Result<Vec<T>> {
    let rows = values.len() / row_len.max(1);
    if heads == 0
        || !rows.is_multiple_of(heads)
        || !(rows / heads).is_multiple_of(2)
        || rows * row_len != values.len()
    {
        bail!(
            "cannot un-permute {rows} rows of {row_len} into {heads} heads: rows must split into heads of even size"
        );
    }
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![T::default(); values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * head_dim + 2 * i + j) * row_len;
                let dst = (h * head_dim + j * half + i) * row_len;
                out[dst..dst + row_len].copy_from_slice(&values[src..src + row_len]);
            }
        }
    }
    Ok(out)
}

/// Produces a planned tensor's f32 values in Hugging Face layout.
pub fn hf_values(g: &GgufFile, t: &PlannedTensor<'_>) -> Result<Vec<f32>> {
    let values = g.dequantize(t.source)?;
    match t.unpermute_heads {
        None => Ok(values),
        Some(heads) => {
            let row_len = t.shape.get(1).copied().unwrap_or(1);
            unpermute_rows(&values, heads, row_len)
                .with_context(|| format!("tensor `{}`", t.source.name))
        }
    }
}

/// A tensor dequantized only when the safetensors writer asks for its bytes.
/// `View::data` cannot fail, so an error is parked in `failure` and the caller
/// checks it after writing.
struct LazyTensor<'a> {
    g: &'a GgufFile,
    t: &'a PlannedTensor<'a>,
    failure: &'a Mutex<Option<anyhow::Error>>,
}

impl View for LazyTensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.t.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match hf_values(self.g, self.t) {
            // safetensors is little-endian, like every target wafer builds for.
            Ok(v) => Cow::Owned(bytemuck::cast_slice(&v).to_vec()),
            Err(e) => {
                if let Ok(mut slot) = self.failure.lock() {
                    slot.get_or_insert(e);
                }
                Cow::Owned(vec![0u8; self.data_len()])
            }
        }
    }

    fn data_len(&self) -> usize {
        self.t.shape.iter().product::<usize>() * 4
    }
}

/// Writes `model.safetensors` (f32) at `path`.
pub fn write_safetensors(g: &GgufFile, planned: &[PlannedTensor<'_>], path: &Path) -> Result<()> {
    let failure = Mutex::new(None);
    let views = planned.iter().map(|t| {
        (
            t.hf_name.clone(),
            LazyTensor {
                g,
                t,
                failure: &failure,
            },
        )
    });
    let meta = Some(
        [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect(),
    );
    safetensors::serialize_to_file(views, &meta, path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if let Some(e) = failure.into_inner().ok().flatten() {
        let _ = std::fs::remove_file(path);
        return Err(e.context(format!("while writing {}", path.display())));
    }
    Ok(())
}

/// The GGUF types that appear among the planned tensors, for reporting.
pub fn types_used(planned: &[PlannedTensor<'_>]) -> Vec<GgmlType> {
    let mut tys: Vec<GgmlType> = Vec::new();
    for t in planned {
        if !tys.contains(&t.source.ty) {
            tys.push(t.source.ty);
        }
    }
    tys
}
