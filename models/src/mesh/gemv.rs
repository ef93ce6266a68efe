//! The decode GEMV on a region (MeshGEMV's functional half): every PE multiplies
//! its own 16-bit tile by its slice of the input vector, then the partial sums of
//! each output block are reduced along the input axis of the region with the
//! line's reduction schedule.
//!
//! The input vector is split along the input axis and replicated along the
//! output axis (the broadcast the cost model charges); functionally each PE of an
//! input line reads the same slice, so the broadcast is not copied.
//!
//! Work is batched per output line: one rayon task widens that line's tiles to
//! f32 in one call (a contiguous slice), computes every PE's partials with the PE
//! index innermost (one long multiply-add per tile element across the line),
//! and runs the reduction in place on each tile row's partials (ordered by PE). Arithmetic is
//! f32 (the spec's `precision.accumulate_dtype` on WSE-3).

use super::collective::ReduceSchedule;
use super::tiling::TiledMatrix;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// `y = W x` with `W` held as `m`'s tiles; `schedule` reduces along the whole
/// input axis of the region (`m.in_split.parts` PEs; lines past the used ones
/// hold no tile and contribute nothing).
pub fn tiled_gemv(m: &TiledMatrix, x: &[f32], y: &mut [f32], schedule: &ReduceSchedule) {
    assert_eq!(schedule.n, m.in_split.parts, "reduction line length");
    assert_eq!(x.len(), m.in_dim(), "gemv input length");
    assert_eq!(y.len(), m.out_dim(), "gemv output length");
    let (to, ti) = (m.out_split.chunk, m.in_split.chunk);
    let nin = m.in_split.used();
    let line_len = nin * to * ti;
    // Each PE's input slice, laid out `[tile col][PE]` like the tiles, with the
    // last line's padding multiplying zeros as the PE's padded tile does.
    let mut x_t = vec![0.0f32; ti * nin];
    for (i, &v) in x.iter().enumerate() {
        x_t[(i % ti) * nin + i / ti] = v;
    }
    y.par_chunks_mut(to)
        .zip(m.data.par_chunks(line_len))
        .for_each_init(
            || (Vec::<f32>::new(), Vec::<f32>::new()),
            |(tiles, parts), (y_line, line)| {
                tiles.resize(line.len(), 0.0);
                line.convert_to_f32_slice(tiles);
                // parts[r][pe]: every PE's partial sum for tile row r.
                parts.clear();
                parts.resize(to * nin, 0.0);
                for (r, p) in parts.chunks_exact_mut(nin).enumerate() {
                    for c in 0..ti {
                        let w = &tiles[(r * ti + c) * nin..][..nin];
                        let xc = &x_t[c * nin..][..nin];
                        for ((p, w), x) in p.iter_mut().zip(w).zip(xc) {
                            *p += w * x;
                        }
                    }
                }
                // Reduce each tile row's partials along the line, PE by PE in
                // the schedule's order (one scalar add per transfer and row).
                for (yr, p) in y_line.iter_mut().zip(parts.chunks_exact_mut(nin)) {
                    schedule.run_scalar_prefix(p, nin);
                    *yr = p[0];
                }
            },
        );
}

#[cfg(test)]
mod tests {
    use super::super::collective::tree_for;
    use super::super::tiling::Orientation;
    use super::*;
    use half::f16;
    use rand::{Rng, SeedableRng};
    use wafer_sim::collective::Algorithm;

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
                _ => tree_for(w.max(h) as u32),
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
            let schedule = ReduceSchedule::new(m.in_split.parts, alg);
            let mut y = vec![0.0; out_dim];
            tiled_gemv(&m, &x, &mut y, &schedule);
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
