//! The mesh engine: executes a Llama-family model as a dataflow program on the
//! simulated wafer. Each layer's weights are cut into 16-bit per-PE tiles on the
//! layer's region (from the placement's `Layout`), the KV cache is spread over the
//! region's PEs along the sequence, every PE computes on its own tiles, and
//! partial sums travel along region rows and columns with checked reduction
//! schedules in the order the cost model charges for.

pub mod attention;
pub mod engine;
pub mod gemv;
pub mod heads;
pub mod report;
pub mod run;
pub mod tiling;
pub mod weights;

pub use engine::MeshProgram;
pub use weights::{LayerSource, ModelSource, RowSource};

use crate::weights::matrix::MatrixData;
use crate::weights::{LlamaWeights, Matrix};

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
