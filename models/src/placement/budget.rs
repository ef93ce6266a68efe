//! The SRAM budget of one region in closed form: what every PE of a region stores,
//! without visiting the PEs.
//!
//! A PE `(x, y)` of a `W x H` region holding a group of items stores, in bytes:
//! - weights: the padded tiles of every matrix (the same on every PE), plus norm
//!   gains on row 0 and biases on column 0 (see `tensors`), at `precision.weight_dtype`;
//! - KV cache: the sequence is spread over the rows, shift-based as in WaferLLM, so
//!   row `y` holds `T / H` tokens plus one more for `y < T mod H`; for each of those
//!   tokens each PE keeps `ceil(kv_dim / W)` keys and as many values per layer, at
//!   `precision.kv_dtype`;
//! - buffers: the activation slice a GEMV reads and the partial sums it writes, and
//!   the online-softmax state of attention (see [`item_buffers`]); the items of a
//!   group run one after another on the same PEs, so the group needs the largest
//!   of its items' buffers, not their sum;
//! - reserve: `pe.reserve_bytes` for code and runtime.
//!
//! Every component is largest at the region's PE (0, 0), so that PE decides whether
//! the region fits, and the largest context follows by division.

use super::tensors::{visit_tensors, Item};
use crate::config::ModelConfig;
use serde::Serialize;
use wafer_core::WaferSpec;

/// Bytes of one PE's SRAM, by what they hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeBytes {
    pub weights: u64,
    pub kv: u64,
    pub buffers: u64,
    pub reserve: u64,
}

impl PeBytes {
    pub fn total(&self) -> u64 {
        self.weights + self.kv + self.buffers + self.reserve
    }
}

/// The mean over a region's PEs of each component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PeBytesMean {
    pub weights: f64,
    pub kv: f64,
    pub buffers: f64,
    pub reserve: f64,
}

impl PeBytesMean {
    pub fn total(&self) -> f64 {
        self.weights + self.kv + self.buffers + self.reserve
    }
}

/// Byte sizes of the number formats placement needs, read from the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub weight: u64,
    pub activation: u64,
    pub accumulate: u64,
    pub kv: u64,
    pub sram: u64,
    pub reserve: u64,
}

impl Sizes {
    pub fn from_spec(spec: &WaferSpec) -> Sizes {
        Sizes {
            weight: spec.precision.weight_dtype.size_bytes(),
            activation: spec.precision.activation_dtype.size_bytes(),
            accumulate: spec.precision.accumulate_dtype.size_bytes(),
            kv: spec.precision.kv_dtype.size_bytes(),
            sram: spec.pe.sram_bytes,
            reserve: spec.pe.reserve_bytes,
        }
    }
}

/// What a group of items stores per PE on a `w x h` region, as closed-form terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub w: u64,
    pub h: u64,
    /// Weight bytes every PE stores (padded matrix tiles).
    pub uniform_weight: u64,
    /// Extra weight bytes on each PE of row 0 (norm gains).
    pub row0_weight: u64,
    /// Extra weight bytes on each PE of column 0 (biases).
    pub col0_weight: u64,
    /// KV bytes a PE stores per token its row holds (all layers of the group).
    pub kv_per_token: u64,
    /// Buffer bytes: the largest over the group's items.
    pub buffers: u64,
    /// Weight bytes of the model placed here, without padding.
    pub real_weight: u64,
    /// KV bytes per token of context, without padding.
    pub real_kv_per_token: u64,
}

impl Footprint {
    pub fn empty(w: u64, h: u64) -> Footprint {
        Footprint {
            w,
            h,
            uniform_weight: 0,
            row0_weight: 0,
            col0_weight: 0,
            kv_per_token: 0,
            buffers: 0,
            real_weight: 0,
            real_kv_per_token: 0,
        }
    }

    /// The footprint of one item.
    pub fn of(model: &ModelConfig, sizes: &Sizes, item: Item, w: u64, h: u64) -> Footprint {
        let mut f = Footprint::empty(w, h);
        let wb = sizes.weight;
        visit_tensors(model, item, |_, shape| {
            // Row 0 and column 0 differ from the rest only by the vectors they hold.
            let any = shape.stored_at(w, h, 1, 1);
            f.uniform_weight += any * wb;
            f.row0_weight += (shape.stored_at(w, h, 1, 0) - any) * wb;
            f.col0_weight += (shape.stored_at(w, h, 0, 1) - any) * wb;
            f.real_weight += shape.elements() * wb;
        });
        if let Item::Layer(_) = item {
            let kv = model.kv_dim() as u64;
            f.kv_per_token = 2 * kv.div_ceil(w) * sizes.kv;
            f.real_kv_per_token = 2 * kv * sizes.kv;
        }
        f.buffers = item_buffers(model, sizes, item, w, h);
        f
    }

    /// The footprint of this group with `other` (same region) added.
    pub fn plus(&self, other: &Footprint) -> Footprint {
        debug_assert_eq!((self.w, self.h), (other.w, other.h));
        Footprint {
            w: self.w,
            h: self.h,
            uniform_weight: self.uniform_weight + other.uniform_weight,
            row0_weight: self.row0_weight + other.row0_weight,
            col0_weight: self.col0_weight + other.col0_weight,
            kv_per_token: self.kv_per_token + other.kv_per_token,
            buffers: self.buffers.max(other.buffers),
            real_weight: self.real_weight + other.real_weight,
            real_kv_per_token: self.real_kv_per_token + other.real_kv_per_token,
        }
    }

    /// Tokens of the sequence held by row `y` at context `t`.
    pub fn tokens_in_row(&self, t: u64, y: u64) -> u64 {
        t / self.h + u64::from(y < t % self.h)
    }

    /// What PE `(x, y)` of the region stores at context `t`.
    pub fn at(&self, sizes: &Sizes, t: u64, x: u64, y: u64) -> PeBytes {
        let mut weights = self.uniform_weight;
        if y == 0 {
            weights += self.row0_weight;
        }
        if x == 0 {
            weights += self.col0_weight;
        }
        PeBytes {
            weights,
            kv: self.tokens_in_row(t, y) * self.kv_per_token,
            buffers: self.buffers,
            reserve: sizes.reserve,
        }
    }

    /// The fullest PE, (0, 0).
    pub fn max(&self, sizes: &Sizes, t: u64) -> PeBytes {
        self.at(sizes, t, 0, 0)
    }

    /// The mean over the region's PEs (the KV cache sums to `t` tokens per column).
    pub fn mean(&self, sizes: &Sizes, t: u64) -> PeBytesMean {
        let pes = (self.w * self.h) as f64;
        let weights = self.uniform_weight as f64 * pes
            + self.row0_weight as f64 * self.w as f64
            + self.col0_weight as f64 * self.h as f64;
        let kv = self.kv_per_token as f64 * t as f64 * self.w as f64;
        PeBytesMean {
            weights: weights / pes,
            kv: kv / pes,
            buffers: self.buffers as f64,
            reserve: sizes.reserve as f64,
        }
    }

    /// Bytes stored on the whole region at context `t`.
    pub fn total(&self, sizes: &Sizes, t: u64) -> u64 {
        let pes = self.w * self.h;
        self.uniform_weight * pes
            + self.row0_weight * self.w
            + self.col0_weight * self.h
            + self.kv_per_token * t * self.w
            + (self.buffers + sizes.reserve) * pes
    }

    /// Bytes of PE (0, 0) that do not depend on the context.
    pub fn fixed_max(&self, sizes: &Sizes) -> u64 {
        self.max(sizes, 0).total()
    }

    pub fn fits(&self, sizes: &Sizes, t: u64) -> bool {
        self.max(sizes, t).total() <= sizes.sram
    }

    /// The largest context at which every PE fits: `None` if not even the weights
    /// fit, `u64::MAX` if nothing here grows with the context.
    pub fn max_tokens(&self, sizes: &Sizes) -> Option<u64> {
        let fixed = self.fixed_max(sizes);
        if fixed > sizes.sram {
            return None;
        }
        if self.kv_per_token == 0 {
            return Some(u64::MAX);
        }
        // ceil(t / h) tokens on row 0 must fit: t <= floor(free / kv_per_token) * h.
        let rows_tokens = (sizes.sram - fixed) / self.kv_per_token;
        Some(rows_tokens.saturating_mul(self.h))
    }
}

/// Buffer bytes one item needs on a `w x h` region.
///
/// - a layer: the widest GEMV input slice (`ceil(n/w)` activations for n = hidden,
///   q, ffn), the widest partial-sum slice (`ceil(n/h)` accumulators for n = q, kv,
///   hidden, ffn) and the attention state of an online softmax over the PE's keys:
///   the query elements matching its `ceil(kv/w)` key columns (group x that many,
///   activations), the same number of output accumulators, and a running max, sum
///   and current score for each query head those columns touch;
/// - the embedding: the looked-up row's slice, `ceil(hidden/w)` activations;
/// - the LM head: its input slice and `ceil(vocab/h)` logit partial sums.
pub fn item_buffers(model: &ModelConfig, sizes: &Sizes, item: Item, w: u64, h: u64) -> u64 {
    let d = model.hidden_size as u64;
    let q = model.q_dim() as u64;
    let kv = model.kv_dim() as u64;
    let ffn = model.intermediate_size as u64;
    let act = sizes.activation;
    let acc = sizes.accumulate;
    match item {
        Item::Embedding => d.div_ceil(w) * act,
        Item::LmHead => d.div_ceil(w) * act + (model.vocab_size as u64).div_ceil(h) * acc,
        Item::Layer(_) => {
            let input = d.div_ceil(w).max(q.div_ceil(w)).max(ffn.div_ceil(w)) * act;
            let partial = q
                .div_ceil(h)
                .max(kv.div_ceil(h))
                .max(d.div_ceil(h))
                .max(ffn.div_ceil(h))
                * acc;
            let kc = kv.div_ceil(w);
            let hd = model.head_dim as u64;
            let group = model.group_size() as u64;
            // The most heads of `hd` columns an interval of `kc` columns can touch.
            let kv_heads_touched = ((kc + hd - 2) / hd + 1).min(model.num_key_value_heads as u64);
            let attention = group * kc * act + group * kc * acc + 3 * group * kv_heads_touched * acc;
            input + partial + attention
        }
    }
}
