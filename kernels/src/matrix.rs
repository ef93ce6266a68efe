//! Matrix kernels on one PE's tile: the GEMV of decode (MeshGEMV's local step)
//! and the GEMM tile update of one Cannon step (MeshGEMM's local step).
//!
//! Weights are fp16 (`half::f16`) as the spec's `precision.weight_dtype` says for
//! WSE; arithmetic is f32 (the functional GEMV accumulates in f32; the cost reads
//! `precision.accumulate_dtype` for the multiply-accumulate width). The GEMM
//! tile update has a cost only: prefill runs functionally as decode steps.
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

/// One PE's GEMV on its `k x n` row-major fp16 tile: `y[j] = sum_i x[i] *
/// w[i * n + j]` (`k = x.len()`, `n = y.len()`), accumulated in f32 over `i` in
/// order from zero. Multiply then add, never fused, so the vector path (AVX and
/// F16C, detected at run time) and the portable path round identically.
pub fn gemv_tile(x: &[f32], w: &[f16], y: &mut [f32]) {
    assert_eq!(w.len(), x.len() * y.len(), "gemv tile: w must be k x n");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") && std::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU supports AVX and F16C (checked above).
        unsafe { x86::gemv_tile(x, w, y) };
        return;
    }
    gemv_tile_portable(x, w, y, 0);
}

/// The portable loop, from output `start` on (the vector path's tail).
fn gemv_tile_portable(x: &[f32], w: &[f16], y: &mut [f32], start: usize) {
    let n = y.len();
    for (j, yj) in y.iter_mut().enumerate().skip(start) {
        let mut acc = 0.0f32;
        for (i, &xi) in x.iter().enumerate() {
            acc += w[i * n + j].to_f32() * xi;
        }
        *yj = acc;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// Eight outputs per step: widen each tile row's 8 values, multiply by the
    /// row's input, add into the running sums.
    #[target_feature(enable = "avx,f16c")]
    pub unsafe fn gemv_tile(x: &[f32], w: &[f16], y: &mut [f32]) {
        let n = y.len();
        let wp = w.as_ptr() as *const u16;
        let mut j = 0;
        while j + 8 <= n {
            let mut acc = _mm256_setzero_ps();
            for (i, &xi) in x.iter().enumerate() {
                // SAFETY: i * n + j + 8 <= x.len() * n == w.len().
                let wv = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i * n + j) as *const __m128i));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(wv, _mm256_set1_ps(xi)));
            }
            _mm256_storeu_ps(y.as_mut_ptr().add(j), acc);
            j += 8;
        }
        super::gemv_tile_portable(x, w, y, j);
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

/// Cycles of one Cannon step's `m x k x n` tile update: `k` tasks (one per
/// arriving row of B), each an `m x n` multiply-accumulate stream.
pub fn gemm_tile_cycles(spec: &WaferSpec, m: u64, k: u64, n: u64) -> Cycles {
    gemm_tile_cycles_of(spec, m, k, n, spec.precision.weight_dtype)
}

/// The same update with `B` stored as `dtype`.
pub fn gemm_tile_cycles_of(spec: &WaferSpec, m: u64, k: u64, n: u64, dtype: DType) -> Cycles {
    let per_row = task_cycles(spec) + vector_op_cycles(spec, SimdOp::Fmac, dtype, m * n, 1);
    per_row * k as f64
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
        // x = [1, 2], W = [[1, 2, 3], [4, 5, 6]] -> y = [9, 12, 15].
        let mut y = vec![7.0; 3];
        gemv_tile(&[1.0, 2.0], &h(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), &mut y);
        assert_eq!(y, vec![9.0, 12.0, 15.0]);
    }

    /// The vector path and the portable loop give the same bits, tails included.
    #[test]
    fn vector_and_portable_paths_agree_bit_for_bit() {
        let mut seed = 1u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for (k, n) in [(1, 1), (3, 8), (5, 13), (16, 64), (7, 29)] {
            let x: Vec<f32> = (0..k).map(|_| next()).collect();
            let w: Vec<f16> = (0..k * n).map(|_| f16::from_f32(next())).collect();
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            gemv_tile(&x, &w, &mut a);
            gemv_tile_portable(&x, &w, &mut b, 0);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{k} x {n}");
            // And the plain definition, in f64, to within f32 rounding.
            for j in 0..n {
                let want: f64 = (0..k).map(|i| x[i] as f64 * w[i * n + j].to_f64()).sum();
                assert!((a[j] as f64 - want).abs() < 1e-5, "{k} x {n}: {j}");
            }
        }
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
