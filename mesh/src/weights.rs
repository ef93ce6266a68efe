//! What the mesh engine reads its weights from: any row-major matrix that can
//! hand out one row at 16 bits. The CPU engines' `weights::Matrix` implements it
//! (in `mesh/mod.rs`).

use half::f16;

/// A `rows x cols` row-major matrix readable one row at a time, as f16.
pub trait RowSource: Sync {
    fn shape(&self) -> (usize, usize);
    /// Writes row `r` (`cols` values) into `out`.
    fn row_f16(&self, r: usize, out: &mut [f16]);
}

/// One decoder layer's tensors, borrowed.
pub struct LayerSource<'a> {
    pub input_layernorm: &'a [f32],
    pub q_proj: &'a dyn RowSource,
    pub k_proj: &'a dyn RowSource,
    pub v_proj: &'a dyn RowSource,
    pub o_proj: &'a dyn RowSource,
    pub q_bias: Option<&'a [f32]>,
    pub k_bias: Option<&'a [f32]>,
    pub v_bias: Option<&'a [f32]>,
    pub o_bias: Option<&'a [f32]>,
    /// Per-head RMSNorm gains of q and k (`head_dim` values; Qwen3).
    pub q_norm: Option<&'a [f32]>,
    pub k_norm: Option<&'a [f32]>,
    pub post_attention_layernorm: &'a [f32],
    pub gate_proj: &'a dyn RowSource,
    pub up_proj: &'a dyn RowSource,
    pub down_proj: &'a dyn RowSource,
}

/// A whole model's tensors, borrowed.
pub struct ModelSource<'a> {
    pub embed_tokens: &'a dyn RowSource,
    pub layers: Vec<LayerSource<'a>>,
    pub norm: &'a [f32],
    pub lm_head: &'a dyn RowSource,
}
