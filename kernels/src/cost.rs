//! The cost of one vector instruction on one PE, the building block of every
//! kernel cost.
//!
//! A vector (DSD) instruction over `n` elements retires `simd` elements per
//! cycle (the SIMD widths of `spec.simd`, from the Cerebras SDK's instruction
//! tables), unless the memory ports cannot feed it: a PE reads
//! `pe.mem_reads_per_cycle` words of `pe.mem_port_bits` per cycle. Each element
//! also pays `cost.loop_overhead_cycles_per_element` (fitted; see
//! `docs/cost-model.md`). Transcendentals (exp, sigmoid, reciprocal square root)
//! have no SIMD instruction and cost `cost.transcendental_cycles_per_element`.

use wafer_core::{Cycles, DType, WaferSpec};

/// The instruction classes whose throughput the spec gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdOp {
    /// Multiply-accumulate into the spec's accumulation type.
    Fmac,
    Add,
    Mul,
    Max,
    /// Software exp / sigmoid / rsqrt.
    Transcendental,
}

/// Elements per cycle of `op` on values of `dtype` (the accumulation type for `Fmac`).
pub fn simd_width(spec: &WaferSpec, op: SimdOp, dtype: DType) -> u32 {
    let s = &spec.simd;
    let half = dtype != DType::F32;
    match op {
        SimdOp::Fmac => match (spec.precision.weight_dtype, spec.precision.accumulate_dtype) {
            (DType::F32, _) => s.fp32_fmac,
            (_, DType::F32) => s.fp16_fmac_fp32_acc,
            _ => s.fp16_fmac,
        },
        SimdOp::Add if half => s.fp16_add,
        SimdOp::Add => s.fp32_add,
        SimdOp::Mul if half => s.fp16_mul,
        SimdOp::Mul => s.fp32_mul,
        SimdOp::Max if half => s.fp16_max,
        SimdOp::Max => s.fp32_max,
        SimdOp::Transcendental => 1,
    }
}

/// Cycles of one vector instruction of `op` over `n` elements of `dtype` that
/// reads `operands` values per element from memory.
pub fn vector_op_cycles(
    spec: &WaferSpec,
    op: SimdOp,
    dtype: DType,
    n: u64,
    operands: u32,
) -> Cycles {
    if n == 0 {
        return Cycles::ZERO;
    }
    let n_f = n as f64;
    let issue = if op == SimdOp::Transcendental {
        n_f * spec.cost.transcendental_cycles_per_element
    } else {
        (n_f / simd_width(spec, op, dtype) as f64).ceil()
    };
    let read_bytes = n_f * operands as f64 * dtype.size_bytes() as f64;
    let port_bytes_per_cycle =
        spec.pe.mem_reads_per_cycle as f64 * spec.pe.mem_port_bits as f64 / 8.0;
    let memory = (read_bytes / port_bytes_per_cycle).ceil();
    Cycles(issue.max(memory) + n_f * spec.cost.loop_overhead_cycles_per_element)
}

/// Starting one compute task on a PE (task picker, argument setup).
pub fn task_cycles(spec: &WaferSpec) -> Cycles {
    Cycles(spec.cost.task_overhead_cycles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_core::spec::{wse2, wse3};

    #[test]
    fn widths_follow_the_sdk_tables() {
        let s3 = wse3();
        assert_eq!(simd_width(&s3, SimdOp::Fmac, DType::F16), 4); // fp32 accumulate
        assert_eq!(simd_width(&s3, SimdOp::Max, DType::F16), 8);
        assert_eq!(simd_width(&wse2(), SimdOp::Max, DType::F16), 1);
        let mut s = wse3();
        s.precision.accumulate_dtype = DType::F16;
        assert_eq!(simd_width(&s, SimdOp::Fmac, DType::F16), 8);
    }

    #[test]
    fn vector_cost_is_simd_or_memory_bound() {
        let mut s = wse3();
        s.cost.loop_overhead_cycles_per_element = 0.0;
        // 100 fp16 adds at 8/cycle: 13 cycles; two operands = 400 bytes at 8 bytes/cycle = 50.
        assert_eq!(
            vector_op_cycles(&s, SimdOp::Add, DType::F16, 100, 2),
            Cycles(50.0)
        );
        // one operand: 200 bytes / 8 = 25 > 13.
        assert_eq!(
            vector_op_cycles(&s, SimdOp::Add, DType::F16, 100, 1),
            Cycles(25.0)
        );
        // wide ports: SIMD bound, ceil(100/8) = 13.
        s.pe.mem_port_bits = 64;
        s.pe.mem_reads_per_cycle = 4;
        assert_eq!(
            vector_op_cycles(&s, SimdOp::Add, DType::F16, 100, 1),
            Cycles(13.0)
        );
        s.cost.loop_overhead_cycles_per_element = 0.5;
        assert_eq!(
            vector_op_cycles(&s, SimdOp::Add, DType::F16, 100, 1),
            Cycles(63.0)
        );
        s.cost.transcendental_cycles_per_element = 6.0;
        assert_eq!(
            vector_op_cycles(&s, SimdOp::Transcendental, DType::F16, 10, 1),
            Cycles(65.0)
        );
        assert_eq!(
            vector_op_cycles(&s, SimdOp::Add, DType::F16, 0, 1),
            Cycles::ZERO
        );
    }
}
