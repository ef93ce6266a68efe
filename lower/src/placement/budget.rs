//! The SRAM budget of one region in closed form: what every PE of a region stores,
//! without visiting the PEs.
//!
//! A PE `(x, y)` of a `W x H` region holding a group of items stores, in bytes:
//! - weights: the padded tile of every tensor, as the one tiling of the model
//!   ([`crate`]) lays it out, at `precision.weight_dtype` — the same on
//!   every PE of the region;
//! - KV cache: the sequence is spread over the rows, shift-based as in WaferLLM, so
//!   row `y` holds `T / H` tokens plus one more for `y < T mod H`; for each of those
//!   tokens each PE keeps its column's padded KV chunk of keys and as many values
//!   per layer, at `precision.kv_dtype`;
//! - buffers: the activation slice a GEMV reads and the partial sums it writes, and
//!   the online-softmax state of attention (see [`item_buffers`]); the items of a
//!   group run one after another on the same PEs, so the group needs the largest
//!   of its items' buffers, not their sum;
//! - reserve: `pe.reserve_bytes` for code and runtime.
//!
//! With several sequences in flight ([`Sizes::users`]), every layer holds each
//! one's cache laid out as above: its KV terms are `users` times one sequence's,
//! and the context a region holds is the context of each sequence.
//!
//! Every component is largest on the region's row 0, so its PEs decide whether
//! the region fits, and the largest context follows by division.

use super::tensors::Item;
use crate::tiling::{final_norm_tiling, table_tiling, LayerTiling};
use serde::Serialize;
use wafer_core::WaferSpec;
use wafer_models::config::ModelConfig;

/// Bytes of one PE's SRAM, by what they hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeBytes {
    pub weights: u64,
    pub kv: u64,
    pub buffers: u64,
    pub reserve: u64,
}

impl PeBytes {
    /// The sum, saturating: a context far past what fits gives `u64::MAX`
    /// (more than any SRAM), not an overflow.
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv)
            .saturating_add(self.buffers)
            .saturating_add(self.reserve)
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
    pub weight_dtype: wafer_core::DType,
    pub kv_dtype: wafer_core::DType,
    pub weight: u64,
    pub activation: u64,
    pub accumulate: u64,
    pub kv: u64,
    pub sram: u64,
    pub reserve: u64,
    /// Sequences in flight whose KV caches every layer holds (`--users`); 1
    /// from the spec. Every KV term below is this many times one sequence's.
    pub users: u64,
}

impl Sizes {
    pub fn from_spec(spec: &WaferSpec) -> Sizes {
        Sizes {
            weight_dtype: spec.precision.weight_dtype,
            kv_dtype: spec.precision.kv_dtype,
            weight: spec.precision.weight_dtype.size_bytes(),
            activation: spec.precision.activation_dtype.size_bytes(),
            accumulate: spec.precision.accumulate_dtype.size_bytes(),
            kv: spec.precision.kv_dtype.size_bytes(),
            sram: spec.pe.sram_bytes,
            reserve: spec.pe.reserve_bytes,
            users: 1,
        }
    }

    /// The same sizes with the KV caches of `users` sequences (at least 1).
    pub fn with_users(self, users: u64) -> Sizes {
        Sizes {
            users: users.max(1),
            ..self
        }
    }
}

/// What a group of items stores per PE on a `w x h` region, as closed-form terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub w: u64,
    pub h: u64,
    /// Weight bytes every PE stores (padded tiles of every tensor).
    pub weight_per_pe: u64,
    /// KV bytes a PE stores per token its row holds (all layers of the group,
    /// every sequence in flight).
    pub kv_per_token: u64,
    /// Buffer bytes: the largest over the group's items.
    pub buffers: u64,
    /// Weight bytes of the model placed here, without padding.
    pub real_weight: u64,
    /// KV bytes per token of context (every sequence in flight), without padding.
    pub real_kv_per_token: u64,
}

impl Footprint {
    pub fn empty(w: u64, h: u64) -> Footprint {
        Footprint {
            w,
            h,
            weight_per_pe: 0,
            kv_per_token: 0,
            buffers: 0,
            real_weight: 0,
            real_kv_per_token: 0,
        }
    }

    /// The footprint of one item, read from the model's tiling.
    pub fn of(model: &ModelConfig, sizes: &Sizes, item: Item, w: u64, h: u64) -> Footprint {
        let mut f = Footprint::empty(w, h);
        let (wd, kvd) = (sizes.weight_dtype, sizes.kv_dtype);
        let (wu, hu) = (w as usize, h as usize);
        let table = table_tiling(model, wd, wu, hu);
        let table_real = model.vocab_size as u64 * model.hidden_size as u64 * sizes.weight;
        match item {
            Item::Embedding => {
                f.weight_per_pe = table.bytes_per_pe();
                f.real_weight = table_real;
            }
            Item::LmHead => {
                let norm = final_norm_tiling(model, wd, hu);
                f.weight_per_pe = norm.bytes_per_pe();
                f.real_weight = model.hidden_size as u64 * sizes.weight;
                if !model.tie_word_embeddings {
                    f.weight_per_pe += table.bytes_per_pe();
                    f.real_weight += table_real;
                }
            }
            Item::Layer(_) => {
                let t = LayerTiling::new(model, wd, kvd, wu, hu);
                f.weight_per_pe = t.weight_bytes_per_pe();
                f.real_weight = t.real_weight_bytes();
                // Each of the `users` sequences keeps its own cache, spread over
                // the rows the same way, so a row's bytes per position scale.
                f.kv_per_token = t.kv_bytes_per_position().saturating_mul(sizes.users);
                f.real_kv_per_token =
                    (2 * model.kv_dim() as u64 * sizes.kv).saturating_mul(sizes.users);
                f.buffers = t.buffer_bytes(model, sizes.activation, sizes.accumulate);
                return f;
            }
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
            weight_per_pe: self.weight_per_pe + other.weight_per_pe,
            kv_per_token: self.kv_per_token + other.kv_per_token,
            buffers: self.buffers.max(other.buffers),
            real_weight: self.real_weight + other.real_weight,
            real_kv_per_token: self.real_kv_per_token + other.real_kv_per_token,
        }
    }

    /// `n` copies of this group on the same region: what adding it `n` times to
    /// an empty group gives (saturating, so a count far past what fits stays
    /// "does not fit").
    pub fn times(&self, n: u64) -> Footprint {
        Footprint {
            w: self.w,
            h: self.h,
            weight_per_pe: self.weight_per_pe.saturating_mul(n),
            kv_per_token: self.kv_per_token.saturating_mul(n),
            buffers: if n == 0 { 0 } else { self.buffers },
            real_weight: self.real_weight.saturating_mul(n),
            real_kv_per_token: self.real_kv_per_token.saturating_mul(n),
        }
    }

    /// Tokens of the sequence held by row `y` at context `t`.
    pub fn tokens_in_row(&self, t: u64, y: u64) -> u64 {
        t / self.h + u64::from(y < t % self.h)
    }

    /// What PE `(x, y)` of the region stores at context `t`.
    pub fn at(&self, sizes: &Sizes, t: u64, x: u64, y: u64) -> PeBytes {
        debug_assert!(x < self.w && y < self.h, "PE ({x}, {y}) outside the region");
        PeBytes {
            weights: self.weight_per_pe,
            // Saturating: the context comes from the command line and may be
            // anything up to u64::MAX tokens.
            kv: self.tokens_in_row(t, y).saturating_mul(self.kv_per_token),
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
        let kv = self.kv_per_token as f64 * t as f64 * self.w as f64;
        PeBytesMean {
            weights: self.weight_per_pe as f64,
            kv: kv / pes,
            buffers: self.buffers as f64,
            reserve: sizes.reserve as f64,
        }
    }

    /// Bytes stored on the whole region at context `t`.
    pub fn total(&self, sizes: &Sizes, t: u64) -> u64 {
        let pes = self.w * self.h;
        (self.weight_per_pe * pes)
            .saturating_add(self.kv_per_token.saturating_mul(t).saturating_mul(self.w))
            .saturating_add((self.buffers + sizes.reserve) * pes)
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
/// - a layer: [`LayerTiling::buffer_bytes`] (GEMV input and partial-sum slices,
///   attention state);
/// - the embedding: the looked-up row's chunk, `ceil(hidden/h)` activations;
/// - the LM head: its input chunk and its column's `ceil(vocab/w)` logit partial sums.
pub fn item_buffers(model: &ModelConfig, sizes: &Sizes, item: Item, w: u64, h: u64) -> u64 {
    let d = model.hidden_size as u64;
    let (act, acc) = (sizes.activation, sizes.accumulate);
    match item {
        Item::Embedding => d.div_ceil(h) * act,
        Item::LmHead => d.div_ceil(h) * act + (model.vocab_size as u64).div_ceil(w) * acc,
        Item::Layer(_) => LayerTiling::new(
            model,
            sizes.weight_dtype,
            sizes.kv_dtype,
            w as usize,
            h as usize,
        )
        .buffer_bytes(model, act, acc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{place, PlaceOptions, Strategy};
    use wafer_core::WaferSpec;

    #[test]
    fn a_context_of_u64_max_tokens_saturates_instead_of_overflowing() {
        // Found by fuzzing: a PE's KV bytes (tokens x bytes per token) overflowed.
        let model = wafer_models::presets::lookup("smollm2-135m").unwrap();
        let spec = WaferSpec::preset("wse3").unwrap();
        for strategy in [Strategy::Packed, Strategy::LayerPerRegion] {
            let opts = PlaceOptions {
                context_tokens: u64::MAX,
                region: None,
                wafers: None,
                strategy,
            };
            // Nothing holds that context; the answer may be an error or the
            // longest context that fits, but it is an answer.
            let _ = place(&model, &spec, &opts);
        }
        let full = PeBytes {
            weights: u64::MAX,
            kv: 1,
            buffers: 1,
            reserve: 1,
        };
        assert_eq!(full.total(), u64::MAX);
    }
}
