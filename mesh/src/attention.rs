//! The KV cache spread over a layer's region, and decode attention over it.
//!
//! Layout (the cost plan's): position `t` lives in region row `t mod h` (its
//! *slot* there is `t / h`), its KV dims split over the columns (`kv_c` per
//! column, stored pair-interleaved, see `heads`). New positions therefore spread
//! evenly over the rows as they arrive, and a position's append touches one
//! row of PEs. PE (column c, row r) owns the `kv_c` key and value dims of
//! column c of every slot of row r.
//!
//! Host storage is in time order, which is also every row's slot order:
//! keys in blocks of [`SLOTS_PER_BLOCK`] consecutive positions with the dim
//! outermost (`[block][dim][position]`), values position-major
//! (`[position][dim]`). Consecutive positions sit on different rows, so one
//! block holds one slot of up to 64 rows: the per-PE partial dots and the
//! segment reductions of a block run as contiguous vectors across positions
//! whatever the context length, and every per-row accumulation (softmax sum,
//! weighted values) still visits that row's positions in slot order.
//!
//! Decode attention, per the plan: every PE dots its query dims with its cached
//! keys (partial scores per query head); the partials of one head are reduced
//! across the segment of columns holding that KV head (a whole block of slots
//! per transfer, each slot's additions in the schedule's order); softmax max and
//! exp-sum are reduced along the columns (over rows); each PE's
//! probability-weighted value sum (its slots in order) is reduced along the
//! columns and divided by the softmax sum. Rows run in parallel (rayon); rows
//! that hold no position yet contribute nothing.

use crate::engine::Numerics;
use crate::heads::HeadOrder;
use crate::tiling::Split;
use anyhow::{bail, Result};
use rayon::prelude::*;
use wafer_core::DType;
use wafer_kernels::attention;
use wafer_kernels::format::round_slice;
use wafer_lower::cost::PlanOptions;
use wafer_sim::schedule::Schedule;

/// Positions per key block: the partial scores of one block and one KV head
/// (`columns x group x positions` f32) stay in the host's L1.
pub const SLOTS_PER_BLOCK: usize = 64;

/// Keys and values of one layer, capacity fixed when the region was accounted.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub kv_dim: usize,
    /// Positions the SRAM accounting reserved room for.
    pub capacity: usize,
    pub len: usize,
    /// Values are rounded to this type on append (the spec's `kv_dtype`).
    pub dtype: DType,
    /// Keys as `[block][dim][position of the block]`.
    k: Vec<f32>,
    /// Values as `[position][dim]`.
    v: Vec<f32>,
}

impl KvCache {
    pub fn new(kv_dim: usize, capacity: usize, dtype: DType) -> KvCache {
        KvCache {
            kv_dim,
            capacity,
            len: 0,
            dtype,
            k: Vec::new(),
            v: Vec::new(),
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.k.clear();
        self.v.clear();
    }

    /// Keeps the first `len` positions (rolled-back draft tokens): the key
    /// blocks past them are dropped, slots past `len` in the last block are
    /// overwritten by the next appends (attention reads only `len` slots).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            bail!(
                "cannot roll the KV cache back to {len} positions: it holds {}",
                self.len
            );
        }
        self.k
            .truncate(len.div_ceil(SLOTS_PER_BLOCK) * self.kv_dim * SLOTS_PER_BLOCK);
        self.v.truncate(len * self.kv_dim);
        self.len = len;
        Ok(())
    }

    /// Appends one position's (rotated, stored-order) key and value.
    pub fn append(&mut self, k: &[f32], v: &[f32]) -> Result<()> {
        if self.len >= self.capacity {
            bail!(
                "position {} does not fit: the KV cache of this layer was accounted for {} positions (no PE may exceed its SRAM)",
                self.len,
                self.capacity
            );
        }
        let round = |x: f32| match self.dtype {
            DType::F32 => x,
            DType::F16 => half::f16::from_f32(x).to_f32(),
            DType::BF16 => half::bf16::from_f32(x).to_f32(),
        };
        let (block, at) = (self.len / SLOTS_PER_BLOCK, self.len % SLOTS_PER_BLOCK);
        if at == 0 {
            self.k
                .resize((block + 1) * self.kv_dim * SLOTS_PER_BLOCK, 0.0);
        }
        let base = block * self.kv_dim * SLOTS_PER_BLOCK + at;
        for (e, &x) in k.iter().enumerate() {
            self.k[base + e * SLOTS_PER_BLOCK] = round(x);
        }
        self.v.extend(v.iter().map(|&x| round(x)));
        self.len += 1;
        Ok(())
    }
}

/// The geometry of attention on one `width x height` region.
#[derive(Debug, Clone)]
pub struct AttnGeometry {
    pub width: usize,
    pub height: usize,
    /// KV dims over columns.
    pub kv_split: Split,
    /// Per KV head: (first column, schedule over the segment of columns).
    pub segments: Vec<(usize, Schedule)>,
    /// Reductions along a column (over the rows).
    pub column: Schedule,
}

impl AttnGeometry {
    /// The geometry on a `width x height` region, every reduction on the tree
    /// `opts` picks for its line.
    pub fn new(
        width: usize,
        height: usize,
        heads: &HeadOrder,
        opts: &PlanOptions,
    ) -> Result<AttnGeometry> {
        let kv_dim = heads.kv.len();
        let kv_split = Split::new(kv_dim, width);
        let segments = (0..heads.kv_heads)
            .map(|gk| {
                let c0 = gk * heads.head_dim / kv_split.chunk;
                let c1 = ((gk + 1) * heads.head_dim - 1) / kv_split.chunk;
                let n = (c1 - c0 + 1) as u32;
                Ok((c0, Schedule::reduce(n, opts.tree(n))?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AttnGeometry {
            width,
            height,
            kv_split,
            segments,
            column: Schedule::reduce(height as u32, opts.tree(height as u32))?,
        })
    }
}

/// Reusable buffers, so decode allocates nothing per step once warmed up.
#[derive(Debug, Default)]
pub struct AttnScratch {
    /// Per row: scores as `[block][head][slot of the block]`.
    scores: Vec<f32>,
    /// One position's score per head.
    head_scores: Vec<f32>,
    stats: Vec<f32>,
    values: Vec<f32>,
}

/// Cached positions below which a row group is not split further across cores.
const MIN_POSITIONS_PER_TASK: usize = 512;

/// The scores of the positions of consecutive key blocks: each KV head's
/// column segment computes per-PE partial dots (vectors over the block's
/// positions), reduces them across the segment, and scales; fills `scores`
/// (`[block][head][position]`). `positions` counts the valid ones from the
/// first block on.
#[allow(clippy::too_many_arguments)]
fn block_scores(
    geo: &AttnGeometry,
    heads: &HeadOrder,
    keys: &[f32],
    positions: usize,
    q: &[f32],
    scale: f32,
    nums: Numerics,
    scores: &mut [f32],
) {
    const B: usize = SLOTS_PER_BLOCK;
    let (hd, g, kv_dim) = (heads.head_dim, heads.group, heads.kv.len());
    let n_heads = heads.kv_heads * g;
    let kc = geo.kv_split.chunk;
    let mut parts = Vec::new();
    for (b, (kblk, sblk)) in keys
        .chunks_exact(kv_dim * B)
        .zip(scores.chunks_exact_mut(n_heads * B))
        .enumerate()
    {
        let valid = (positions - b * B).min(B);
        // Partials are strided by the block's valid positions (the last block
        // may be short).
        let n = valid;
        for (gk, (c0, seg)) in geo.segments.iter().enumerate() {
            parts.clear();
            parts.resize(seg.len() as usize * g * n, 0.0);
            let (lo, hi) = (gk * hd, (gk + 1) * hd);
            // parts[column of the segment][query head of the group][slot].
            for (i, part) in parts.chunks_exact_mut(g * n).enumerate() {
                let c = c0 + i;
                let (a, z) = ((c * kc).max(lo), ((c + 1) * kc).min(hi));
                attention::score_partials(part, q, kblk, B, a..z, g);
            }
            // Across the segment's columns, every slot of the block at once.
            let summed = seg.sum_in(&mut parts, g * n, seg.len() as usize, nums.acts());
            for (m, pm) in summed.chunks_exact(n).enumerate() {
                let head = gk * g + m;
                let dst = &mut sblk[head * B..head * B + n];
                for (d, p) in dst.iter_mut().zip(pm) {
                    *d = p * scale;
                }
            }
        }
    }
}

/// Attention of one query (stored order, RoPE applied) over `cache`; writes the
/// output in stored query order.
pub fn attend(
    geo: &AttnGeometry,
    heads: &HeadOrder,
    cache: &KvCache,
    q: &[f32],
    out: &mut [f32],
    scratch: &mut AttnScratch,
    nums: Numerics,
) {
    const B: usize = SLOTS_PER_BLOCK;
    let (hd, g, kv_dim) = (heads.head_dim, heads.group, cache.kv_dim);
    let n_heads = heads.kv_heads * g;
    let q_dim = q.len();
    let t_len = cache.len;
    assert!(t_len > 0, "attention over an empty cache");
    let h = geo.height;
    let rows = h.min(t_len);
    // Buffers over the rows that hold positions plus those a column reduction
    // passes partials through (a mid-rooted tree's root may lie past them).
    let lines = geo.column.lines_needed(rows);
    let blocks = t_len.div_ceil(B);
    let scale = 1.0 / (hd as f32).sqrt();
    // Only the valid slots of each block are written and read: no need to clear.
    let need = blocks * n_heads * B;
    if scratch.scores.len() < need {
        scratch.scores.resize(need, 0.0);
    }
    scratch.stats.clear();
    scratch.stats.resize(2 * lines * n_heads, 0.0);
    scratch.values.clear();
    scratch.values.resize(lines * q_dim, 0.0);
    let (maxes, sums) = scratch.stats.split_at_mut(lines * n_heads);

    // Scores: per PE partial dots, reduced across each head's column segment,
    // a block of consecutive positions (one slot of up to 64 rows) per task.
    // Short caches stay on the calling thread (the decode step's team runs
    // this as one operation; a pass through rayon would only add a wake-up).
    let min_blocks = MIN_POSITIONS_PER_TASK.div_ceil(B);
    let one_block = |(b, (scores, keys)): (usize, (&mut [f32], &[f32]))| {
        block_scores(geo, heads, keys, t_len - b * B, q, scale, nums, scores);
    };
    if blocks <= min_blocks {
        scratch.scores[..need]
            .chunks_mut(n_heads * B)
            .zip(cache.k.chunks(kv_dim * B))
            .enumerate()
            .for_each(one_block);
    } else {
        scratch.scores[..need]
            .par_chunks_mut(n_heads * B)
            .zip(cache.k.par_chunks(kv_dim * B))
            .enumerate()
            .with_min_len(min_blocks)
            .for_each(one_block);
    }
    let scores = &scratch.scores[..need];
    let score = |t: usize, head: usize| scores[(t / B * n_heads + head) * B + t % B];
    // Each row's max over its positions, then along the columns (over rows).
    maxes.fill(f32::NEG_INFINITY);
    let s = &mut scratch.head_scores;
    s.resize(n_heads, 0.0);
    for t in 0..t_len {
        s.iter_mut()
            .enumerate()
            .for_each(|(head, x)| *x = score(t, head));
        attention::max_into(&mut maxes[(t % h) * n_heads..][..n_heads], s);
    }
    let global_max = geo.column.max_in(maxes, n_heads, rows, nums.acts());

    // exp, each row's local sums and probability-weighted value partials, its
    // positions in slot order; row groups in parallel (each task walks the
    // positions and keeps its own rows').
    let groups = if t_len >= MIN_POSITIONS_PER_TASK * 2 {
        2
    } else {
        1
    };
    let rows_per_group = rows.div_ceil(groups);
    let one_group = |(group, (sums, values)): (usize, (&mut [f32], &mut [f32]))| {
        let r0 = group * rows_per_group;
        let r1 = (r0 + rows_per_group).min(rows);
        let (mut p, mut s) = (vec![0.0f32; n_heads], vec![0.0f32; n_heads]);
        for t in 0..t_len {
            let r = t % h;
            if r < r0 || r >= r1 {
                continue;
            }
            s.iter_mut()
                .enumerate()
                .for_each(|(head, x)| *x = score(t, head));
            let row_sum = &mut sums[(r - r0) * n_heads..][..n_heads];
            attention::softmax_weights(&s, global_max, &mut p, row_sum);
            let row_values = &mut values[(r - r0) * q_dim..][..q_dim];
            let val = &cache.v[t * kv_dim..(t + 1) * kv_dim];
            attention::weighted_values(row_values, &p, val, hd, g);
        }
    };
    let (sums_used, values_used) = (
        &mut sums[..rows * n_heads],
        &mut scratch.values[..rows * q_dim],
    );
    if groups == 1 {
        one_group((0, (sums_used, values_used)));
    } else {
        sums_used
            .par_chunks_mut(rows_per_group * n_heads)
            .zip(values_used.par_chunks_mut(rows_per_group * q_dim))
            .enumerate()
            .for_each(one_group);
    }
    let total = geo.column.sum_in(sums, n_heads, rows, nums.sums());
    let values = geo
        .column
        .sum_in(&mut scratch.values, q_dim, rows, nums.acts());
    attention::normalize_heads(out, values, total, hd, g);
    round_slice(nums.act, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Plain softmax attention on original-order vectors.
    fn dense(
        q: &[f32],
        ks: &[Vec<f32>],
        vs: &[Vec<f32>],
        hd: usize,
        kvh: usize,
        g: usize,
    ) -> Vec<f32> {
        let mut out = vec![0.0; kvh * g * hd];
        for head in 0..kvh * g {
            let gk = head / g;
            let scores: Vec<f64> = ks
                .iter()
                .map(|k| {
                    (0..hd)
                        .map(|d| q[head * hd + d] as f64 * k[gk * hd + d] as f64)
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for d in 0..hd {
                out[head * hd + d] = (e
                    .iter()
                    .zip(vs)
                    .map(|(p, v)| p * v[gk * hd + d] as f64)
                    .sum::<f64>()
                    / z) as f32;
            }
        }
        out
    }

    /// Rolled-back positions leave no trace: a cache truncated and appended
    /// to attends exactly as one that never held the dropped positions, at
    /// lengths on and off the key-block boundary.
    #[test]
    fn a_truncated_cache_attends_as_if_the_dropped_positions_never_ran() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let (hd, kvh, g, w, h) = (4, 2, 2, 3, 5);
        let heads = HeadOrder::new(hd, kvh, g);
        let opts = PlanOptions::default();
        let geo = AttnGeometry::new(w, h, &heads, &opts).unwrap();
        let kv_dim = kvh * hd;
        let mut pos = || -> (Vec<f32>, Vec<f32>) {
            (
                (0..kv_dim).map(|_| rng.gen_range(-1.0..1.0)).collect(),
                (0..kv_dim).map(|_| rng.gen_range(-1.0..1.0)).collect(),
            )
        };
        for (kept, dropped, after) in [(10, 5, 3), (64, 9, 2), (70, 60, 1), (1, 130, 70)] {
            let keep: Vec<_> = (0..kept).map(|_| pos()).collect();
            let drop: Vec<_> = (0..dropped).map(|_| pos()).collect();
            let more: Vec<_> = (0..after).map(|_| pos()).collect();
            let cap = kept + dropped + after;
            let mut rolled = KvCache::new(kv_dim, cap, DType::F32);
            let mut direct = KvCache::new(kv_dim, cap, DType::F32);
            for (k, v) in keep.iter().chain(&drop) {
                rolled.append(k, v).unwrap();
            }
            rolled.truncate(kept).unwrap();
            assert!(rolled.truncate(kept + 1).is_err());
            for (k, v) in keep.iter().chain(&more) {
                direct.append(k, v).unwrap();
            }
            for (k, v) in &more {
                rolled.append(k, v).unwrap();
            }
            let q: Vec<f32> = (0..kv_dim * g).map(|i| (i as f32 * 0.37).sin()).collect();
            let run = |cache: &KvCache| {
                let mut out = vec![0.0; q.len()];
                attend(
                    &geo,
                    &heads,
                    cache,
                    &q,
                    &mut out,
                    &mut AttnScratch::default(),
                    Numerics::F32,
                );
                out
            };
            assert_eq!(run(&rolled), run(&direct), "kept {kept}, dropped {dropped}");
        }
    }

    #[test]
    fn distributed_attention_equals_dense_attention() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for case in 0..60 {
            let hd = 2 * rng.gen_range(1..6);
            let kvh = rng.gen_range(1..4);
            let g = rng.gen_range(1..4);
            let (w, h) = (rng.gen_range(1..12), rng.gen_range(1..12));
            // Some caches span several key blocks per row.
            let t_len = if case % 4 == 0 {
                rng.gen_range(100..400)
            } else {
                rng.gen_range(1..40)
            };
            let heads = HeadOrder::new(hd, kvh, g);
            let k = rng.gen_range(1..4);
            let opts = PlanOptions::with_reduce_k(k).unwrap();
            let geo = AttnGeometry::new(w, h, &heads, &opts).unwrap();
            let kv_dim = kvh * hd;
            let mut cache = KvCache::new(kv_dim, t_len, DType::F32);
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            for _ in 0..t_len {
                let k: Vec<f32> = (0..kv_dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let v: Vec<f32> = (0..kv_dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let ks_st: Vec<f32> = heads.kv.iter().map(|&i| k[i]).collect();
                let vs_st: Vec<f32> = heads.kv.iter().map(|&i| v[i]).collect();
                cache.append(&ks_st, &vs_st).unwrap();
                ks.push(k);
                vs.push(v);
            }
            assert!(cache
                .append(&vec![0.0; kv_dim], &vec![0.0; kv_dim])
                .is_err());
            let q: Vec<f32> = (0..kv_dim * g).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let q_st: Vec<f32> = heads.q.iter().map(|&i| q[i]).collect();
            let mut out = vec![0.0; q.len()];
            attend(
                &geo,
                &heads,
                &cache,
                &q_st,
                &mut out,
                &mut AttnScratch::default(),
                Numerics::F32,
            );
            let want = dense(&q, &ks, &vs, hd, kvh, g);
            for (p, &i) in heads.q.iter().enumerate() {
                assert!(
                    (out[p] - want[i]).abs() < 1e-5,
                    "case {case}: hd {hd} kvh {kvh} g {g} on {w}x{h}, T {t_len}: {} vs {}",
                    out[p],
                    want[i]
                );
            }
        }
    }
}
