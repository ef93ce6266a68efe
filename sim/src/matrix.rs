//! Region-wide matrix schemes of WaferLLM built from the PE kernels and the
//! collectives: MeshGEMV (decode) and MeshGEMM (Cannon-style prefill), plus the
//! shift-then-broadcast microbenchmark of calibration C5.
//!
//! Layout (MeshGEMV): on a `width x height` region the PE in column `c`, row `r`
//! holds the weight block (rows chunk `r` of M, columns chunk `c` of N) and the
//! input chunk `r` (replicated along its row). Each PE multiplies its tile, then
//! every column allreduces its partial outputs, leaving output chunk `c` on every
//! PE of column `c` — the layout the next, transposed GEMV consumes.
//!
//! MeshGEMM: Cannon's algorithm on a P x P region with pre-skewed tiles; each of
//! the P steps multiplies the local tiles, then shifts A one PE west and B one PE
//! north around an interleaved ring (every logical neighbour at most 2 hops away).

use crate::collective::{self, wavelets, Algorithm, Line};
use crate::cost::Cost;
use crate::error::SimError;
use half::f16;
use wafer_core::{Cycles, WaferSpec};
use wafer_kernels::matrix::{gemm_tile, gemm_tile_cycles, gemv_tile, gemv_tile_cycles};

/// Even split of `len` into `parts`: the range of part `i`.
pub fn chunk(i: usize, len: usize, parts: usize) -> std::ops::Range<usize> {
    (i * len / parts)..((i + 1) * len / parts)
}

/// Named cost parts of one kernel, in execution order.
pub type Parts = Vec<(&'static str, Cost)>;

pub fn total(parts: &Parts) -> Cost {
    parts.iter().fold(Cost::default(), |a, (_, c)| a + *c)
}

/// Cost of `y[1,N] = x[1,M] W[M,N]` on a `width x height` region.
pub fn mesh_gemv_cost(
    spec: &WaferSpec,
    width: u32,
    height: u32,
    m: u64,
    n: u64,
    alg: Algorithm,
) -> Parts {
    let k_tile = m.div_ceil(height as u64);
    let n_tile = n.div_ceil(width as u64);
    let act = spec.precision.activation_dtype.size_bytes();
    vec![
        (
            "local GEMV",
            Cost::compute(gemv_tile_cycles(spec, k_tile, n_tile)),
        ),
        (
            "column allreduce",
            Line::new(height).allreduce_cost(spec, wavelets(spec, n_tile, act), alg),
        ),
    ]
}

/// Functional MeshGEMV: returns the output chunk each PE ends with (row-major
/// over the region). `w` is `m x n` row-major fp16.
pub fn mesh_gemv(
    spec: &WaferSpec,
    width: usize,
    height: usize,
    x: &[f32],
    w: &[f16],
    n: usize,
    alg: Algorithm,
) -> Result<Vec<Vec<f32>>, SimError> {
    let m = x.len();
    if w.len() != m * n || width > n || height > m {
        return Err(SimError::InvalidCollective(format!(
            "MeshGEMV of [{m}] x [{m},{n}] with {} weights on {width}x{height}",
            w.len()
        )));
    }
    let acc = spec.precision.accumulate_dtype;
    let mut out = vec![Vec::new(); width * height];
    for c in 0..width {
        let cols = chunk(c, n, width);
        let mut column: Vec<Vec<f32>> = (0..height)
            .map(|r| {
                let rows = chunk(r, m, height);
                let mut tile = Vec::with_capacity(rows.len() * cols.len());
                for i in rows.clone() {
                    tile.extend_from_slice(&w[i * n + cols.start..i * n + cols.end]);
                }
                let mut y = vec![0.0; cols.len()];
                gemv_tile(&x[rows], &tile, &mut y, acc);
                y
            })
            .collect();
        collective::allreduce(&mut column, alg)?;
        for (r, y) in column.into_iter().enumerate() {
            out[r * width + c] = y;
        }
    }
    Ok(out)
}

/// Cost of `C[M,N] = A[M,K] B[K,N]` by Cannon's algorithm on a P x P region.
pub fn mesh_gemm_cost(spec: &WaferSpec, p: u32, m: u64, k: u64, n: u64) -> Parts {
    let pp = p as u64;
    let (mt, kt, nt) = (m.div_ceil(pp), k.div_ceil(pp), n.div_ceil(pp));
    let act = spec.precision.activation_dtype.size_bytes();
    let wa = wavelets(spec, mt * kt, act);
    let wb = wavelets(spec, kt * nt, act);
    let c = &spec.cost;
    let steps = p as f64;
    let shift_step = c.relay_stage_cycles
        + c.relay_cycles_per_wavelet * (wa + wb).saturating_sub(2) as f64
        + 2.0 * spec.router.hop_latency_cycles;
    let compute_step = Cycles(c.task_overhead_cycles) + gemm_tile_cycles(spec, mt, kt, nt);
    vec![
        ("launch", Cost::sync(Cycles(c.phase_overhead_cycles))),
        ("tile multiply", Cost::compute(compute_step * steps)),
        ("Cannon shifts", Cost::fabric(Cycles(shift_step * steps))),
    ]
}

/// Functional Cannon GEMM on a P x P region: returns `C` (`m x n`, row-major).
/// `a` is `m x k` f32, `b` is `k x n` fp16; both need at least P rows/columns.
pub fn mesh_gemm(
    spec: &WaferSpec,
    p: usize,
    a: &[f32],
    b: &[f16],
    m: usize,
    k: usize,
    n: usize,
) -> Result<Vec<f32>, SimError> {
    if a.len() != m * k || b.len() != k * n || p == 0 || p > m.min(k).min(n) {
        return Err(SimError::InvalidCollective(format!(
            "MeshGEMM [{m},{k}] x [{k},{n}] on {p}x{p} needs every dimension >= {p}"
        )));
    }
    let acc = spec.precision.accumulate_dtype;
    let a_tile = |i: usize, l: usize| -> Vec<f32> {
        let (rows, cols) = (chunk(i, m, p), chunk(l, k, p));
        rows.flat_map(|r| a[r * k + cols.start..r * k + cols.end].iter().copied())
            .collect()
    };
    let b_tile = |l: usize, j: usize| -> Vec<f16> {
        let (rows, cols) = (chunk(l, k, p), chunk(j, n, p));
        rows.flat_map(|r| b[r * n + cols.start..r * n + cols.end].iter().copied())
            .collect()
    };
    // Pre-skewed: PE (row i, column j) starts with A(i, i+j) and B(i+j, j).
    let mut at: Vec<(usize, Vec<f32>)> = Vec::with_capacity(p * p);
    let mut bt: Vec<(usize, Vec<f16>)> = Vec::with_capacity(p * p);
    for i in 0..p {
        for j in 0..p {
            let l = (i + j) % p;
            at.push((l, a_tile(i, l)));
            bt.push((l, b_tile(l, j)));
        }
    }
    let mut ct: Vec<Vec<f32>> = (0..p * p)
        .map(|idx| vec![0.0; chunk(idx / p, m, p).len() * chunk(idx % p, n, p).len()])
        .collect();
    for _ in 0..p {
        for idx in 0..p * p {
            let (i, j) = (idx / p, idx % p);
            let (l, ref atile) = at[idx];
            debug_assert_eq!(bt[idx].0, l, "Cannon tiles out of step");
            let (mi, kl, nj) = (
                chunk(i, m, p).len(),
                chunk(l, k, p).len(),
                chunk(j, n, p).len(),
            );
            gemm_tile(atile, &bt[idx].1, &mut ct[idx], mi, kl, nj, acc);
        }
        // A moves one PE west along its row, B one PE north along its column.
        let prev_a = at.clone();
        let prev_b = bt.clone();
        for i in 0..p {
            for j in 0..p {
                at[i * p + j] = prev_a[i * p + (j + 1) % p].clone();
                bt[i * p + j] = prev_b[((i + 1) % p) * p + j].clone();
            }
        }
    }
    let mut c = vec![0.0; m * n];
    for (idx, tile) in ct.iter().enumerate() {
        let (rows, cols) = (chunk(idx / p, m, p), chunk(idx % p, n, p));
        let w = cols.len();
        for (t, r) in rows.enumerate() {
            c[r * n + cols.start..r * n + cols.end].copy_from_slice(&tile[t * w..(t + 1) * w]);
        }
    }
    Ok(c)
}

/// Calibration C5: a tile of `elements` 16-bit values moved `steps` PEs east by
/// synchronous neighbour exchanges, then broadcast along the row of `p` PEs.
pub fn shift_broadcast_cost(spec: &WaferSpec, p: u32, elements: u64, steps: u32) -> Parts {
    let w = wavelets(spec, elements, spec.precision.activation_dtype.size_bytes());
    let line = Line::new(p);
    vec![
        ("neighbour shifts", line.shift_cost(spec, w, steps)),
        ("row broadcast", line.broadcast_cost(spec, w, 0)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_core::spec::wse3;

    #[test]
    fn gemv_cost_on_a_hand_case() {
        let mut s = wse3();
        s.cost.task_overhead_cycles = 40.0;
        s.cost.loop_overhead_cycles_per_element = 0.0;
        s.cost.phase_overhead_cycles = 10.0;
        s.cost.reduce_level_cycles = 5.0;
        // 4x4 region, 8x8 weights: 2x2 tiles (4 MACs: 1 cycle, 8 bytes: 1 cycle) -> 41.
        // Column allreduce over 4 PEs as a chain, 1 wavelet (2 fp16 values):
        // reduce 10 + 3*5 + 2*3 + 0 + 4 = 35, broadcast 10 + 1 + 4 = 15.
        let parts = mesh_gemv_cost(&s, 4, 4, 8, 8, Algorithm::Chain);
        assert_eq!(parts[0].1.total(), Cycles(41.0));
        assert_eq!(parts[1].1.total(), Cycles(50.0));
    }

    #[test]
    fn gemm_cost_on_a_hand_case() {
        let mut s = wse3();
        s.cost.task_overhead_cycles = 40.0;
        s.cost.loop_overhead_cycles_per_element = 0.0;
        s.cost.phase_overhead_cycles = 10.0;
        s.cost.relay_stage_cycles = 70.0;
        s.cost.relay_cycles_per_wavelet = 2.0;
        // P = 2, 4x4x4: 2x2 tiles; A and B tiles 2 wavelets each.
        // Step: compute 40 + 2 * (40 + 1) = 122; shift 70 + 2*2 + 2 = 76. Two steps.
        let parts = mesh_gemm_cost(&s, 2, 4, 4, 4);
        assert_eq!(total(&parts).total(), Cycles(10.0 + 2.0 * (122.0 + 76.0)));
    }
}
