//! Matrix kernels on one PE's tile: the GEMV of decode (MeshGEMV's local step)
//! and the GEMM tile update of one Cannon step (MeshGEMM's local step).
//!
//! Weights are fp16 (`half::f16`) as the spec's `precision.weight_dtype` says for
//! WSE; arithmetic is f32, and when `precision.accumulate_dtype` is f16 every
//! accumulation is rounded to fp16 the way `@fmach` would.
//!
//! Costs. The GEMV is one task that streams the whole `k x n` tile through one
//! multiply-accumulate instruction stream (C6 shows an 8x8 tile costs only ~30
//! cycles more than 1x1, so there is no per-row overhead). The GEMM step is
//! message-driven: each of the `k` rows of the B tile arrives as its own message
//! and runs its own task with an `m x n` outer-product update; that per-`k` task
//! is what makes the inner dimension expensive in C7 (~40 cycles per extra `k`).

use crate::cost::{task_cycles, vector_op_cycles, SimdOp};
use half::f16;
use wafer_core::{Cycles, DType, WaferSpec};

/// `y[j] += sum_i x[i] * w[i * n + j]` for a `k x n` row-major fp16 tile.
/// `acc` selects the accumulation precision.
pub fn gemv_tile(x: &[f32], w: &[f16], y: &mut [f32], acc: DType) {
    let n = y.len();
    assert_eq!(w.len(), x.len() * n, "gemv tile: w must be k x n");
    for (i, &xi) in x.iter().enumerate() {
        let row = &w[i * n..(i + 1) * n];
        for (yj, wij) in y.iter_mut().zip(row) {
            *yj = round_to(acc, *yj + xi * wij.to_f32());
        }
    }
}

/// Cycles of [`gemv_tile`] on a `k x n` weight tile (`precision.weight_dtype`):
/// one task and `k * n` MACs.
pub fn gemv_tile_cycles(spec: &WaferSpec, k: u64, n: u64) -> Cycles {
    gemv_tile_cycles_of(spec, k, n, spec.precision.weight_dtype)
}

/// The same GEMV over a tile stored as `dtype` (attention reads the KV cache,
/// held at `precision.kv_dtype`).
pub fn gemv_tile_cycles_of(spec: &WaferSpec, k: u64, n: u64, dtype: DType) -> Cycles {
    task_cycles(spec) + vector_op_cycles(spec, SimdOp::Fmac, dtype, k * n, 1)
}

/// `c[i * n + j] += sum_l a[i * k + l] * b[l * n + j]` on row-major tiles
/// (`a` is `m x k` f32 activations, `b` is `k x n` fp16 weights or activations).
pub fn gemm_tile(a: &[f32], b: &[f16], c: &mut [f32], m: usize, k: usize, n: usize, acc: DType) {
    assert_eq!(a.len(), m * k, "gemm tile: a must be m x k");
    assert_eq!(b.len(), k * n, "gemm tile: b must be k x n");
    assert_eq!(c.len(), m * n, "gemm tile: c must be m x n");
    // Loop order l-outer matches the cost model: one task per arriving row of B.
    for l in 0..k {
        let brow = &b[l * n..(l + 1) * n];
        for i in 0..m {
            let ail = a[i * k + l];
            let crow = &mut c[i * n..(i + 1) * n];
            for (cij, blj) in crow.iter_mut().zip(brow) {
                *cij = round_to(acc, *cij + ail * blj.to_f32());
            }
        }
    }
}

/// Cycles of [`gemm_tile`]: `k` tasks, each an `m x n` multiply-accumulate stream.
pub fn gemm_tile_cycles(spec: &WaferSpec, m: u64, k: u64, n: u64) -> Cycles {
    let per_row = task_cycles(spec)
        + vector_op_cycles(spec, SimdOp::Fmac, spec.precision.weight_dtype, m * n, 1);
    per_row * k as f64
}

/// Rounds an accumulator to the accumulation type.
pub fn round_to(acc: DType, v: f32) -> f32 {
    match acc {
        DType::F32 => v,
        DType::F16 => f16::from_f32(v).to_f32(),
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_core::spec::wse3;

    fn h(v: &[f32]) -> Vec<f16> {
        v.iter().map(|&x| f16::from_f32(x)).collect()
    }

    #[test]
    fn gemv_on_a_hand_case() {
        // x = [1, 2], W = [[1, 2, 3], [4, 5, 6]] -> y = [9, 12, 15] (+ the initial y).
        let mut y = vec![1.0, 0.0, -1.0];
        gemv_tile(
            &[1.0, 2.0],
            &h(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            &mut y,
            DType::F32,
        );
        assert_eq!(y, vec![10.0, 12.0, 14.0]);
    }

    #[test]
    fn fp16_accumulation_rounds_each_step() {
        // 2048 + 1 is not representable in fp16 (spacing 2 there): it stays 2048.
        let mut y = vec![2048.0];
        gemv_tile(&[1.0], &h(&[1.0]), &mut y, DType::F16);
        assert_eq!(y, vec![2048.0]);
        let mut y = vec![2048.0];
        gemv_tile(&[1.0], &h(&[1.0]), &mut y, DType::F32);
        assert_eq!(y, vec![2049.0]);
    }

    #[test]
    fn gemm_on_a_hand_case() {
        // [[1,2],[3,4]] x [[5,6],[7,8]] = [[19,22],[43,50]]
        let mut c = vec![0.0; 4];
        gemm_tile(
            &[1.0, 2.0, 3.0, 4.0],
            &h(&[5.0, 6.0, 7.0, 8.0]),
            &mut c,
            2,
            2,
            2,
            DType::F32,
        );
        assert_eq!(c, vec![19.0, 22.0, 43.0, 50.0]);
    }

    #[test]
    fn costs_on_hand_cases() {
        let mut s = wse3();
        s.cost.task_overhead_cycles = 40.0;
        s.cost.loop_overhead_cycles_per_element = 0.0;
        // 8 x 8 tile: 64 MACs at 4/cycle (fp32 accumulate) = 16; 128 bytes read at 8/cycle = 16.
        assert_eq!(gemv_tile_cycles(&s, 8, 8), Cycles(56.0));
        // GEMM 1 x 8 x 1: 8 tasks of one MAC each: 8 * (40 + 1).
        assert_eq!(gemm_tile_cycles(&s, 1, 8, 1), Cycles(328.0));
        // 8 x 8 x 8: 8 * (40 + 16).
        assert_eq!(gemm_tile_cycles(&s, 8, 8, 8), Cycles(448.0));
    }
}
