//! Vector kernels on one PE's slice: the residual add, the RMSNorm pieces (local
//! sum of squares, then scaling by the reciprocal RMS and the norm weight), RoPE's
//! pair rotation and SiLU * mul, each with its cost; and the costs of the other
//! vector steps a program charges (dot, axpy, copy/scale, the softmax pieces),
//! whose numerics the mesh's attention runs vectorised across positions.
//!
//! The distributed versions (e.g. RMSNorm over a row of PEs) are these local
//! pieces joined by collectives in `wafer-sim`; the pieces are split exactly where
//! a PE has to wait for the rest of the mesh.
//!
//! Costs are vector instructions from [`crate::cost`] on the spec's activation
//! dtype, plus one task per kernel call.

use crate::cost::{task_cycles, vector_op_cycles, SimdOp};
use wafer_core::{Cycles, WaferSpec};

fn act(spec: &WaferSpec) -> wafer_core::DType {
    spec.precision.activation_dtype
}

pub fn dot_cycles(spec: &WaferSpec, n: u64) -> Cycles {
    task_cycles(spec) + vector_op_cycles(spec, SimdOp::Fmac, act(spec), n, 2)
}

pub fn axpy_cycles(spec: &WaferSpec, n: u64) -> Cycles {
    task_cycles(spec) + vector_op_cycles(spec, SimdOp::Fmac, act(spec), n, 2)
}

pub fn scale_cycles(spec: &WaferSpec, n: u64) -> Cycles {
    task_cycles(spec) + vector_op_cycles(spec, SimdOp::Mul, act(spec), n, 1)
}

/// Elementwise `y += x` (the residual add).
pub fn add_into(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "add: lengths differ");
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += xi;
    }
}

pub fn add_cycles(spec: &WaferSpec, n: u64) -> Cycles {
    task_cycles(spec) + vector_op_cycles(spec, SimdOp::Add, act(spec), n, 2)
}

/// RMSNorm piece 1: this PE's sum of squares (summed over the mesh afterwards).
pub fn sum_squares(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum()
}

pub fn sum_squares_cycles(spec: &WaferSpec, n: u64) -> Cycles {
    task_cycles(spec) + vector_op_cycles(spec, SimdOp::Fmac, act(spec), n, 1)
}

/// RMSNorm piece 2: `x[i] = x[i] / sqrt(total_sum_squares / dim + eps) * weight[i]`.
pub fn rms_scale(x: &mut [f32], weight: &[f32], total_sum_squares: f32, dim: usize, eps: f32) {
    assert_eq!(x.len(), weight.len(), "rms_scale: weight length differs");
    let inv = 1.0 / (total_sum_squares / dim as f32 + eps).sqrt();
    for (v, w) in x.iter_mut().zip(weight) {
        *v = *v * inv * w;
    }
}

pub fn rms_scale_cycles(spec: &WaferSpec, n: u64) -> Cycles {
    task_cycles(spec)
        + vector_op_cycles(spec, SimdOp::Transcendental, act(spec), 1, 1)
        + vector_op_cycles(spec, SimdOp::Mul, act(spec), n, 2) * 2.0
}

/// RoPE's rotation of pairs `(a[i], b[i])` by one angle (`cos`, `sin`): the
/// PE holds both halves of each pair side by side (the mesh's pair-interleaved
/// head order), so a rotation is local.
pub fn rotate(a: &mut [f32], b: &mut [f32], cos: f32, sin: f32) {
    assert_eq!(a.len(), b.len(), "rotate: halves differ in length");
    for (x1, x2) in a.iter_mut().zip(b.iter_mut()) {
        let (v1, v2) = (*x1, *x2);
        *x1 = v1 * cos - v2 * sin;
        *x2 = v2 * cos + v1 * sin;
    }
}

pub fn rope_cycles(spec: &WaferSpec, n: u64) -> Cycles {
    task_cycles(spec)
        + vector_op_cycles(spec, SimdOp::Mul, act(spec), 2 * n, 2)
        + vector_op_cycles(spec, SimdOp::Add, act(spec), n, 2)
}

pub fn max_cycles(spec: &WaferSpec, n: u64) -> Cycles {
    task_cycles(spec) + vector_op_cycles(spec, SimdOp::Max, act(spec), n, 1)
}

pub fn exp_sum_cycles(spec: &WaferSpec, n: u64) -> Cycles {
    task_cycles(spec)
        + vector_op_cycles(spec, SimdOp::Add, act(spec), n, 1) * 2.0
        + vector_op_cycles(spec, SimdOp::Transcendental, act(spec), n, 1)
}

pub fn normalize_cycles(spec: &WaferSpec, n: u64) -> Cycles {
    scale_cycles(spec, n)
}

/// SwiGLU's elementwise part: `gate[i] = silu(gate[i]) * up[i]`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: lengths differ");
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

pub fn silu_mul_cycles(spec: &WaferSpec, n: u64) -> Cycles {
    task_cycles(spec)
        + vector_op_cycles(spec, SimdOp::Transcendental, act(spec), n, 1)
        + vector_op_cycles(spec, SimdOp::Mul, act(spec), n, 2) * 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_core::spec::wse3;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-5 * (1.0 + b.abs())
    }

    #[test]
    fn numeric_hand_cases() {
        assert_eq!(sum_squares(&[3.0, 4.0]), 25.0);
        // dim 2, sum of squares 25 -> rms = sqrt(12.5); weights 1 and 2.
        let mut x = vec![3.0, 4.0];
        rms_scale(&mut x, &[1.0, 2.0], 25.0, 2, 0.0);
        assert!(close(x[0], 3.0 / 12.5f32.sqrt()) && close(x[1], 8.0 / 12.5f32.sqrt()));
        let mut y = vec![1.0, 1.0];
        add_into(&[3.0, -1.0], &mut y);
        assert_eq!(y, vec![4.0, 0.0]);
        let mut g = vec![0.0, 1.0];
        silu_mul(&mut g, &[5.0, 2.0]);
        assert!(close(g[0], 0.0) && close(g[1], 2.0 / (1.0 + (-1.0f32).exp())));
    }

    #[test]
    fn rotate_turns_pairs_by_the_angle() {
        // A quarter turn maps (a, b) to (-b, a).
        let (mut a, mut b) = (vec![1.0, 3.0], vec![2.0, 4.0]);
        rotate(&mut a, &mut b, 0.0, 1.0);
        assert_eq!((a, b), (vec![-2.0, -4.0], vec![1.0, 3.0]));
    }

    #[test]
    fn costs_on_hand_cases() {
        let mut s = wse3();
        s.cost.task_overhead_cycles = 10.0;
        s.cost.loop_overhead_cycles_per_element = 0.0;
        s.cost.transcendental_cycles_per_element = 4.0;
        // 64 fp16 elements, one operand: 128 bytes / 8 bytes per cycle = 16 > 64/8.
        assert_eq!(max_cycles(&s, 64), Cycles(26.0));
        // dot: two operands 256 bytes / 8 = 32 > 64/4.
        assert_eq!(dot_cycles(&s, 64), Cycles(42.0));
        // silu_mul of 8: 10 + 8*4 + 2 * max(1, 4).
        assert_eq!(silu_mul_cycles(&s, 8), Cycles(50.0));
    }
}
