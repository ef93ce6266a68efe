//! The one tiling of a transformer onto its regions: for each placed item (a
//! decoder layer, the embedding table, the LM head), every tensor's tile geometry
//! on a `width x height` region. Placement counts SRAM from it, the cost plan
//! charges MACs and buffer sizes from it, and the mesh engine cuts its tiles by
//! it, so there is no second tiling anywhere.
//!
//! Data layout of a layer (MeshGEMV, WaferLLM §5): the residual `x` is split over
//! the rows (chunk `r` replicated along row `r`). Q/K/V and gate/up take their
//! input over rows and put their output over columns (reduced along columns, lines
//! of `h` PEs); O and down take theirs over columns and put the output back over
//! rows (reduced along rows, lines of `w`), so each GEMV's reduced output lies
//! where the next one needs its input. Q/K/V outputs are grouped per column: a
//! column holds `kv_chunk` KV dims and the `group` query heads' dims beside each
//! of them (grouped-query sharing without copies), so the query split follows
//! the KV split. Norm gains follow the residual's split (every PE scales its own
//! copy of its row's chunk); biases follow their output's split. The KV cache
//! holds position `t` on row `t mod h`, its dims over columns like K and V.
//!
//! The embedding table and the LM head share one layout (vocabulary over the
//! columns, hidden over the rows), so a tied head reads the embedding's tiles and
//! a looked-up row arrives split over rows, as the first layer wants it.

use serde::Serialize;
use wafer_core::DType;
use wafer_models::config::ModelConfig;
use wafer_sim::tiling::{Axis, MatrixTiling, Orientation, Split, Tile, VectorTiling};

/// Every tensor of one decoder layer on a `width x height` region.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerTiling {
    pub width: usize,
    pub height: usize,
    /// The residual (hidden dims) over rows.
    pub x: Split,
    /// KV dims over columns.
    pub kv: Split,
    /// Query dims over columns, `group` heads' dims beside each KV dim.
    pub q: Split,
    /// FFN dims over columns.
    pub f: Split,
    pub q_proj: MatrixTiling,
    pub k_proj: MatrixTiling,
    pub v_proj: MatrixTiling,
    pub o_proj: MatrixTiling,
    pub gate_proj: MatrixTiling,
    pub up_proj: MatrixTiling,
    pub down_proj: MatrixTiling,
    /// Every tensor of the layer (matrices, gains, biases), named as in the checkpoint.
    pub tiles: Vec<Tile>,
    /// The KV cache's number format.
    pub kv_dtype: DType,
}

/// Whether a layer has an output-projection bias: Llama's `attention_bias`
/// biases o_proj too, Qwen2's does not.
pub fn has_o_bias(cfg: &ModelConfig) -> bool {
    cfg.attention_bias && cfg.model_type != "qwen2"
}

impl LayerTiling {
    pub fn new(
        cfg: &ModelConfig,
        weight: DType,
        kv_dtype: DType,
        width: usize,
        height: usize,
    ) -> LayerTiling {
        let (w, h) = (width, height);
        let (d, qd, kvd, ff) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let x = Split::new(d, h);
        let kv = Split::new(kvd, w);
        let q = Split::with_chunk(qd, w, kv.chunk * cfg.group_size());
        let f = Split::new(ff, w);
        let m = |out: Split, inp: Split, orientation| MatrixTiling {
            out,
            inp,
            orientation,
            dtype: weight,
        };
        use Orientation::{OutAlongColumns as Cols, OutAlongRows as Rows};
        let (q_proj, k_proj, v_proj) = (m(q, x, Cols), m(kv, x, Cols), m(kv, x, Cols));
        let o_proj = m(x, q, Rows);
        let (gate_proj, up_proj) = (m(f, x, Cols), m(f, x, Cols));
        let down_proj = m(x, f, Rows);
        let vector = |name: &str, split: Split, along: Axis| Tile::Vector {
            name: name.into(),
            tiling: VectorTiling {
                split,
                along,
                dtype: weight,
            },
        };
        let matrix = |name: &str, tiling: MatrixTiling| Tile::Matrix {
            name: name.into(),
            tiling,
        };
        let mut tiles = vec![
            vector("input_layernorm.weight", x, Axis::Column),
            matrix("self_attn.q_proj.weight", q_proj),
            matrix("self_attn.k_proj.weight", k_proj),
            matrix("self_attn.v_proj.weight", v_proj),
            matrix("self_attn.o_proj.weight", o_proj),
            vector("post_attention_layernorm.weight", x, Axis::Column),
            matrix("mlp.gate_proj.weight", gate_proj),
            matrix("mlp.up_proj.weight", up_proj),
            matrix("mlp.down_proj.weight", down_proj),
        ];
        if cfg.qk_norm() {
            // One gain of head_dim values shared by every head: each column holds
            // the gains of its KV dims' positions in their head (its query dims
            // sit at the same positions).
            let gains = Split::with_chunk(cfg.head_dim, w, kv.chunk.min(cfg.head_dim));
            tiles.push(vector("self_attn.q_norm.weight", gains, Axis::Row));
            tiles.push(vector("self_attn.k_norm.weight", gains, Axis::Row));
        }
        if cfg.attention_bias {
            tiles.push(vector("self_attn.q_proj.bias", q, Axis::Row));
            tiles.push(vector("self_attn.k_proj.bias", kv, Axis::Row));
            tiles.push(vector("self_attn.v_proj.bias", kv, Axis::Row));
        }
        if has_o_bias(cfg) {
            tiles.push(vector("self_attn.o_proj.bias", x, Axis::Column));
        }
        LayerTiling {
            width,
            height,
            x,
            kv,
            q,
            f,
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            gate_proj,
            up_proj,
            down_proj,
            tiles,
            kv_dtype,
        }
    }

    /// Weight bytes every PE of the region holds for this layer.
    pub fn weight_bytes_per_pe(&self) -> u64 {
        self.tiles.iter().map(Tile::bytes_per_pe).sum()
    }

    /// Weight bytes of the layer without padding.
    pub fn real_weight_bytes(&self) -> u64 {
        self.tiles
            .iter()
            .map(|t| t.elements() * t.dtype().size_bytes())
            .sum()
    }

    /// KV bytes a PE holds per position cached on its row (keys and values of
    /// its column's padded KV chunk).
    pub fn kv_bytes_per_position(&self) -> u64 {
        2 * self.kv.chunk as u64 * self.kv_dtype.size_bytes()
    }

    /// Working buffers a PE needs for this layer, in bytes: its chunk of the
    /// residual (activations, live through the whole layer) plus the largest of
    /// what one phase of the decode step holds at once —
    /// - Q/K/V: the normalised input chunk and the fused pass's partial sums;
    /// - attention: the PE's query dims, as many output accumulators, and a
    ///   running max, sum and current score per query head its KV dims touch;
    /// - O: the attention output chunk and the residual-sized partial sums;
    /// - gate/up: the normalised input chunk and the fused pass's partial sums;
    /// - down: the SiLU x up chunk and the residual-sized partial sums.
    ///
    /// Phases run one after another on the same PEs, so their buffers share
    /// memory; only the residual survives from one phase to the next.
    pub fn buffer_bytes(&self, cfg: &ModelConfig, act: u64, acc: u64) -> u64 {
        let (x, q, kv, f) = (
            self.x.chunk as u64,
            self.q.chunk as u64,
            self.kv.chunk as u64,
            self.f.chunk as u64,
        );
        let hd = cfg.head_dim as u64;
        let group = cfg.group_size() as u64;
        // The most heads of `hd` dims an interval of `kv` dims can touch.
        let kv_heads_touched = ((kv + hd - 2) / hd + 1).min(cfg.num_key_value_heads as u64);
        let phases = [
            x * act + (q + 2 * kv) * acc,
            q * act + q * acc + 3 * group * kv_heads_touched * acc,
            q * act + x * acc,
            x * act + 2 * f * acc,
            f * act + x * acc,
        ];
        x * act + phases.into_iter().max().unwrap_or(0)
    }
}

/// The token-embedding table or the LM head on a `width x height` region:
/// vocabulary over the columns, hidden over the rows (see the module doc).
pub fn table_tiling(cfg: &ModelConfig, weight: DType, width: usize, height: usize) -> MatrixTiling {
    MatrixTiling::new(
        cfg.vocab_size,
        cfg.hidden_size,
        width,
        height,
        Orientation::OutAlongColumns,
        weight,
    )
}

/// The final norm's gain on the LM head's region (over rows, like the residual).
pub fn final_norm_tiling(cfg: &ModelConfig, weight: DType, height: usize) -> VectorTiling {
    VectorTiling {
        split: Split::new(cfg.hidden_size, height),
        along: Axis::Column,
        dtype: weight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_models::presets::lookup as preset;

    /// Llama-3.1-8B on 190 x 130: KV chunk 6, query chunk 24 (4 heads per KV
    /// head), residual chunk 32, FFN chunk 76 — the Q/K/V pass does 32 x 36 MACs.
    #[test]
    fn llama_8b_on_190_by_130() {
        let cfg = preset("llama-3.1-8b").unwrap();
        let t = LayerTiling::new(&cfg, DType::F16, DType::F16, 190, 130);
        assert_eq!(
            (t.kv.chunk, t.q.chunk, t.x.chunk, t.f.chunk),
            (6, 24, 32, 76)
        );
        let qkv = t.q_proj.tile_elements() + t.k_proj.tile_elements() + t.v_proj.tile_elements();
        assert_eq!(qkv, 32 * 36);
        // Matrices 2 * (768 + 192 + 192 + 768 + 3 * 2432) elements, two gains of 32.
        assert_eq!(
            t.weight_bytes_per_pe(),
            2 * (768 + 192 + 192 + 768 + 3 * 2432) + 2 * 2 * 32
        );
        assert_eq!(t.kv_bytes_per_position(), 2 * 6 * 2);
    }
}
