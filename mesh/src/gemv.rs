//! The decode GEMV on a region (MeshGEMV's functional half): every PE multiplies
//! its own 16-bit tile by its slice of the input vector, then the partial sums of
//! each output block are reduced along the input axis of the region with the
//! line's reduction schedule.
//!
//! The input vector is split along the input axis and replicated along the
//! output axis (the broadcast the cost model charges); functionally each PE of an
//! input line reads the same slice, so the broadcast is not copied.
//!
//! Work is batched per storage block of output lines (see `tiling`): one pass
//! widens the block's tiles to f32 one input line at a time (a contiguous
//! slice that stays in L1), accumulates every PE's partial sums for the block's
//! rows (`parts[in line][row]`), then runs the line's reduction schedule with
//! each transfer adding the sender's whole row vector into the receiver's
//! (`crate::fused` on AVX+F16C hosts, the blocked whole-slice path otherwise). Every
//! output row still sees exactly the additions, in exactly the order, of its own
//! PE-by-PE reduction. Arithmetic is f32 inside a PE's tile; the partial sums
//! travel in the reduction's wire format and are summed in its accumulation
//! format ([`Formats`]: the spec's `activation_dtype` and `accumulate_dtype`),
//! and the result arrives in the wire format.

#[cfg(target_arch = "x86_64")]
use crate::fused;
use crate::tiling::TiledMatrix;
use half::f16;
use rayon::prelude::*;
use wafer_kernels::format::{round_slice, Formats};
use wafer_models::reference::team::Shared;
use wafer_sim::schedule::{line_pair_mut, Schedule};

/// `y = W x` with `W` held as `m`'s tiles; `schedule` reduces along the whole
/// input axis of the region (`m.in_split.parts` PEs; lines past the used ones
/// hold no tile and contribute nothing).
pub fn tiled_gemv(m: &TiledMatrix, x: &[f32], y: &mut [f32], schedule: &Schedule, f: Formats) {
    tiled_gemvs(&[m], x, &mut [y], schedule, f);
}

/// Several GEMVs over the same input and reduction lines (Q, K and V; gate and
/// up), as one parallel pass over all their blocks (rayon, in parts of
/// consecutive blocks, [`tiled_gemvs_part`]): on the wafer they run side by
/// side on the same PEs, and on the host one pass keeps both cores busy.
pub fn tiled_gemvs(
    ms: &[&TiledMatrix],
    x: &[f32],
    ys: &mut [&mut [f32]],
    schedule: &Schedule,
    f: Formats,
) {
    let shared: Vec<Shared> = ys.iter_mut().map(|y| Shared::new(y)).collect();
    let blocks: usize = ms
        .iter()
        .map(|m| m.out_dim().div_ceil(m.block_lines * m.out_split.chunk))
        .sum();
    let parts = blocks.min(GEMV_PARTS);
    (0..parts)
        .into_par_iter()
        .for_each_init(GemvScratch::default, |scratch, part| {
            // SAFETY: the parts write disjoint blocks of rows of `ys`, which
            // outlive the pass; nothing else touches them meanwhile.
            unsafe { tiled_gemvs_part(ms, x, &shared, schedule, f, part, parts, scratch) }
        });
}

/// Parts one GEMV pass is cut into for rayon (a few per core).
const GEMV_PARTS: usize = 16;

/// A thread's reusable buffers for [`tiled_gemvs_part`].
#[derive(Debug, Default)]
pub struct GemvScratch {
    parts: Vec<f32>,
    x_pad: Vec<f32>,
}

/// Part `part` of `parts` near-equal parts of the blocks of [`tiled_gemvs`]
/// (every matrix's storage blocks in order), each block computed exactly as
/// the whole pass computes it.
///
/// # Safety
/// `ys[i]` is `ms[i]`'s output; no other thread reads or writes the output
/// rows of this part's blocks while it runs (other parts write other blocks),
/// and the buffers outlive the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tiled_gemvs_part(
    ms: &[&TiledMatrix],
    x: &[f32],
    ys: &[Shared],
    schedule: &Schedule,
    f: Formats,
    part: usize,
    parts: usize,
    scratch: &mut GemvScratch,
) {
    assert_eq!(ms.len(), ys.len(), "one output per matrix");
    let Some(first) = ms.first() else { return };
    let in_split = first.in_split;
    assert_eq!(
        schedule.len() as usize,
        in_split.parts,
        "reduction line length"
    );
    assert_eq!(x.len(), in_split.len, "gemv input length");
    let (ti, nin) = (in_split.chunk, in_split.used());
    // The input padded to whole tile columns: the last line's padding
    // multiplies zeros, as the PE's padded tile does.
    scratch.x_pad.clear();
    scratch.x_pad.resize(nin * ti, 0.0);
    scratch.x_pad[..x.len()].copy_from_slice(x);
    let blocks = |m: &TiledMatrix| m.out_dim().div_ceil(m.block_lines * m.out_split.chunk);
    let total: usize = ms.iter().map(|m| blocks(m)).sum();
    let mine = wafer_models::reference::team::share(total, part, parts);
    let mut first_block = 0;
    for (m, y) in ms.iter().zip(ys) {
        assert_eq!(m.in_split, in_split, "matrices sharing an input split");
        let nb = blocks(m);
        let (lo, hi) = (
            mine.start.clamp(first_block, first_block + nb) - first_block,
            mine.end.clamp(first_block, first_block + nb) - first_block,
        );
        first_block += nb;
        let full_rows = m.block_lines * m.out_split.chunk;
        let block_len = full_rows * nin * ti;
        for b in lo..hi {
            let rows = b * full_rows..((b + 1) * full_rows).min(m.out_dim());
            let data = &m.data[b * block_len..((b + 1) * block_len).min(m.data.len())];
            gemv_block(
                data,
                &scratch.x_pad,
                nin,
                ti,
                schedule,
                f,
                &mut scratch.parts,
                y.part(rows),
            );
        }
    }
}

/// One storage block: every PE's partial sums, then the line's reduction.
#[allow(clippy::too_many_arguments)]
fn gemv_block(
    block: &[f16],
    x_pad: &[f32],
    nin: usize,
    ti: usize,
    schedule: &Schedule,
    f: Formats,
    parts: &mut Vec<f32>,
    y_block: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if fused::supports(f) {
        let lines = schedule.lines_needed(nin);
        parts.clear();
        parts.resize(lines * y_block.len().max(fused::LANES), 0.0);
        // SAFETY: the CPU has AVX and F16C (`supports` checked).
        unsafe { fused::block(block, x_pad, nin, ti, schedule, f, parts, y_block) };
        return;
    }
    gemv_block_blocked(block, x_pad, nin, ti, schedule, f, parts, y_block)
}

/// [`gemv_block`] as whole-block passes: every PE's partials for all the
/// block's rows, then each transfer adding a whole row vector (any formats,
/// any CPU).
#[allow(clippy::too_many_arguments)]
fn gemv_block_blocked(
    block: &[f16],
    x_pad: &[f32],
    nin: usize,
    ti: usize,
    schedule: &Schedule,
    f: Formats,
    parts: &mut Vec<f32>,
    y_block: &mut [f32],
) {
    let bo = block.len() / (nin * ti);
    parts.clear();
    // Lines past the used ones hold zeros until a transfer reaches them (a
    // mid-rooted tree's west half passes partials east through them).
    parts.resize(schedule.lines_needed(nin) * bo, 0.0);
    // parts[pe][row]: PE `pe`'s partial sum for each row of the block.
    for ((p, w), xs) in parts
        .chunks_exact_mut(bo)
        .zip(block.chunks_exact(ti * bo))
        .zip(x_pad.chunks_exact(ti))
    {
        tile_partials(p, w, xs);
    }
    // The reduction along the input axis, transfer by transfer in the
    // schedule's order, every row of the block at once.
    schedule.for_each_live(nin, |from, to| {
        let (src, dst) = line_pair_mut(parts, bo, from, to);
        round_slice(f.wire, src);
        for (d, s) in dst.iter_mut().zip(src.iter()) {
            *d += s;
        }
        round_slice(f.acc, dst);
    });
    let n = y_block.len();
    y_block.copy_from_slice(&parts[schedule.root() as usize * bo..][..n]);
    round_slice(f.wire, y_block);
}

/// One PE's partial sums for the rows of a block: `p[row] = sum_c w[c][row] *
/// x[c]`, the PE kernel `wafer_kernels::matrix::gemv_tile` on the PE's `ti x
/// rows` tile slice and its `ti` input values.
fn tile_partials(p: &mut [f32], w: &[f16], x: &[f32]) {
    wafer_kernels::matrix::gemv_tile(x, w, p);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiling::Orientation;
    use half::f16;
    use rand::{Rng, SeedableRng};
    use wafer_lower::cost::PlanOptions;
    use wafer_sim::collective::Algorithm;

    /// The blocked, vectorised GEMV must perform each PE's additions and the
    /// line's transfers in exactly the per-PE, per-row order: bit-identical to
    /// computing every PE's partial from its tile and reducing row by row.
    #[test]
    fn tiled_gemv_is_bit_identical_to_pe_by_pe_reduction() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for case in 0..40 {
            let (out_dim, in_dim) = (rng.gen_range(1..300), rng.gen_range(1..120));
            let (w, h) = (rng.gen_range(1..30), rng.gen_range(1..30));
            let m = TiledMatrix::from_rows(
                out_dim,
                in_dim,
                |o, row| {
                    row.iter_mut()
                        .enumerate()
                        .for_each(|(i, v)| *v = f16::from_f32(rng_value(case, o * 1000 + i)))
                },
                w,
                h,
                Orientation::OutAlongColumns,
            );
            let x: Vec<f32> = (0..in_dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let k = rng.gen_range(1..4);
            let tree = PlanOptions::with_reduce_k(k).unwrap().tree(h as u32);
            let schedule = Schedule::reduce(m.in_split.parts as u32, tree).unwrap();
            let mut y = vec![0.0; out_dim];
            tiled_gemv(&m, &x, &mut y, &schedule, Formats::F32);
            let (to, ti) = (m.out_split.chunk, m.in_split.chunk);
            let nin = m.in_split.used();
            for (o, yo) in y.iter().enumerate() {
                let (ob, r) = (o / to, o % to);
                let mut parts: Vec<f32> = (0..schedule.lines_needed(nin))
                    .map(|ib| {
                        let mut acc = 0.0f32;
                        for c in 0..ti * usize::from(ib < nin) {
                            let xi = x.get(ib * ti + c).copied().unwrap_or(0.0);
                            acc += m.tile_element(ob, ib, r, c).to_f32() * xi;
                        }
                        acc
                    })
                    .collect();
                let want = schedule.sum(&mut parts, 1, nin)[0];
                assert_eq!(yo.to_bits(), want.to_bits(), "case {case} row {o}");
            }
        }
    }

    /// In every format pair the mesh runs (f32 or f16 on the wire and in the
    /// running sums), each output row is bit-identical to its PE-by-PE
    /// reduction: every PE's partial from its tile, then the schedule's
    /// transfers with the formats' roundings (`Schedule::sum_in`).
    #[test]
    fn tiled_gemv_rounds_like_the_pe_by_pe_reduction_in_every_format() {
        use wafer_core::DType;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let formats = [DType::F32, DType::F16, DType::BF16];
        for case in 0..40 {
            let f = Formats {
                wire: formats[case % 3],
                acc: formats[(case / 3) % 3],
            };
            let (out_dim, in_dim) = (rng.gen_range(1..200), rng.gen_range(1..100));
            let (w, h) = (rng.gen_range(1..20), rng.gen_range(1..40));
            let m = TiledMatrix::from_rows(
                out_dim,
                in_dim,
                |o, row| {
                    row.iter_mut()
                        .enumerate()
                        .for_each(|(i, v)| *v = f16::from_f32(rng_value(case + 100, o * 1000 + i)))
                },
                w,
                h,
                Orientation::OutAlongColumns,
            );
            let x: Vec<f32> = (0..in_dim).map(|_| rng.gen_range(-4.0..4.0)).collect();
            let tree = PlanOptions::with_reduce_k(rng.gen_range(1..4))
                .unwrap()
                .tree(h as u32);
            let schedule = Schedule::reduce(m.in_split.parts as u32, tree).unwrap();
            let mut y = vec![0.0; out_dim];
            tiled_gemv(&m, &x, &mut y, &schedule, f);
            let (to, ti) = (m.out_split.chunk, m.in_split.chunk);
            let nin = m.in_split.used();
            for (o, yo) in y.iter().enumerate() {
                let mut parts: Vec<f32> = (0..schedule.lines_needed(nin))
                    .map(|ib| {
                        let mut acc = 0.0f32;
                        for c in 0..ti * usize::from(ib < nin) {
                            let xi = x.get(ib * ti + c).copied().unwrap_or(0.0);
                            acc += m.tile_element(o / to, ib, o % to, c).to_f32() * xi;
                        }
                        acc
                    })
                    .collect();
                let want = schedule.sum_in(&mut parts, 1, nin, f)[0];
                assert_eq!(yo.to_bits(), want.to_bits(), "case {case} {f:?} row {o}");
            }
        }
    }

    /// A deterministic pseudo-random weight in [-1, 1) (the row closure must be `Sync`).
    fn rng_value(case: usize, salt: usize) -> f32 {
        let h = (case as u64 + 1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(salt as u64)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
        ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn tiled_gemv_equals_dense_matvec_on_random_shapes() {
        let seed = 11;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for case in 0..60 {
            let (out_dim, in_dim) = (rng.gen_range(1..90), rng.gen_range(1..90));
            let (w, h) = (rng.gen_range(1..40), rng.gen_range(1..40));
            let orientation = if rng.gen() {
                Orientation::OutAlongRows
            } else {
                Orientation::OutAlongColumns
            };
            let alg = match rng.gen_range(0..3) {
                0 => Algorithm::Chain,
                1 => Algorithm::KTree {
                    k: 2,
                    groups: Some(rng.gen_range(1..8)),
                },
                _ => PlanOptions::default().tree(w.max(h) as u32),
            };
            let dense: Vec<f16> = (0..out_dim * in_dim)
                .map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)))
                .collect();
            let x: Vec<f32> = (0..in_dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let m = TiledMatrix::from_rows(
                out_dim,
                in_dim,
                |o, row| row.copy_from_slice(&dense[o * in_dim..(o + 1) * in_dim]),
                w,
                h,
                orientation,
            );
            let schedule = Schedule::reduce(m.in_split.parts as u32, alg).unwrap();
            let mut y = vec![0.0; out_dim];
            tiled_gemv(&m, &x, &mut y, &schedule, Formats::F32);
            for o in 0..out_dim {
                let want: f64 = (0..in_dim)
                    .map(|i| dense[o * in_dim + i].to_f64() * x[i] as f64)
                    .sum();
                assert!(
                    (y[o] as f64 - want).abs() < 1e-4,
                    "seed {seed} case {case}: {out_dim}x{in_dim} on {w}x{h} {orientation:?} {alg:?}: y[{o}] = {} want {want}",
                    y[o]
                );
            }
        }
    }
}
