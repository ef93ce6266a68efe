//! The mesh engine (`generate --engine mesh`): the functional executor of the
//! placed program. It executes a transformer on the simulated wafer with real
//! numbers: each layer's weights are cut into 16-bit per-PE tiles on the layer's
//! region as `wafer_lower::tiling` says, the KV cache is spread over the region's
//! PEs along the sequence, each layer's program (`wafer_lower::program`) runs
//! step by step with the PE kernels of `wafer-kernels`, and partial sums travel
//! along region rows and columns on the `wafer_sim::Schedule` of the tree each
//! step charges.
//!
//! Invariants: it never decides a tiling or a tree of its own (it reads both and
//! checks, when built, that every collective it runs is the charged tree); its
//! reported cycles are the analytic pricer's reading of the program it ran.

pub mod attention;
pub mod engine;
#[cfg(target_arch = "x86_64")]
mod fused;
pub mod gemv;
pub mod heads;
pub mod report;
pub mod run;
pub mod tiling;
pub mod weights;

pub use engine::MeshProgram;
pub use weights::{LayerSource, ModelSource, RowSource};

use wafer_models::weights::matrix::MatrixData;
use wafer_models::weights::{LlamaWeights, Matrix};

use half::f16;
pub use run::{MeshEngine, MeshSetup};

impl RowSource for Matrix {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn row_f16(&self, r: usize, out: &mut [f16]) {
        let (a, b) = (r * self.cols, (r + 1) * self.cols);
        match &self.data {
            MatrixData::F16(v) => out.copy_from_slice(bytemuck::cast_slice(&v[a..b])),
            MatrixData::F32(v) => out
                .iter_mut()
                .zip(&v[a..b])
                .for_each(|(o, x)| *o = f16::from_f32(*x)),
            MatrixData::BF16(v) => out
                .iter_mut()
                .zip(&v[a..b])
                .for_each(|(o, x)| *o = f16::from_f32(half::bf16::from_bits(*x).to_f32())),
            MatrixData::Quant(_) => {
                let mut row = vec![0f32; self.cols];
                self.rows_to_f32(r, r + 1, &mut row);
                out.iter_mut()
                    .zip(&row)
                    .for_each(|(o, x)| *o = f16::from_f32(*x));
            }
        }
    }
}

/// Borrows a loaded checkpoint as the mesh engine's weight source.
pub fn model_source(w: &LlamaWeights) -> ModelSource<'_> {
    ModelSource {
        embed_tokens: &w.embed_tokens,
        layers: w
            .layers
            .iter()
            .map(|l| LayerSource {
                input_layernorm: &l.input_layernorm,
                q_proj: &l.q_proj,
                k_proj: &l.k_proj,
                v_proj: &l.v_proj,
                o_proj: &l.o_proj,
                q_bias: l.q_bias.as_deref(),
                k_bias: l.k_bias.as_deref(),
                v_bias: l.v_bias.as_deref(),
                o_bias: l.o_bias.as_deref(),
                q_norm: l.q_norm.as_deref(),
                k_norm: l.k_norm.as_deref(),
                post_attention_layernorm: &l.post_attention_layernorm,
                gate_proj: &l.gate_proj,
                up_proj: &l.up_proj,
                down_proj: &l.down_proj,
            })
            .collect(),
        norm: &w.norm,
        lm_head: w.lm_head(),
    }
}
