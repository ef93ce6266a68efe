//! A PE kernel as data: what one step of a placed program runs on every PE of
//! its region, with the sizes it runs at. The placed program lists these; the
//! analytic pricer asks each for its cycles ([`Kernel::cycles`]), which are the
//! `*_cycles` halves of the kernels in [`crate::vector`] and [`crate::matrix`].

use crate::{matrix, vector};
use serde::Serialize;
use wafer_core::{Cycles, DType, WaferSpec};

/// One kernel invocation on every PE of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kernel", rename_all = "snake_case")]
pub enum Kernel {
    /// `y[n] += x[k] W[k, n]` over a `k x n` tile held as `dtype`.
    Gemv {
        k: u64,
        n: u64,
        dtype: DType,
    },
    /// `C[m, n] += A[m, k] B[k, n]` with `B` held as `dtype`: one Cannon
    /// round's tile update, or `m` tokens through a weight tile at once.
    Gemm {
        m: u64,
        k: u64,
        n: u64,
        dtype: DType,
    },
    SumSquares {
        n: u64,
    },
    RmsScale {
        n: u64,
    },
    Rope {
        n: u64,
    },
    /// A local copy or scale of `n` values.
    Scale {
        n: u64,
    },
    Max {
        n: u64,
    },
    ExpSum {
        n: u64,
    },
    Normalize {
        n: u64,
    },
    Add {
        n: u64,
    },
    SiluMul {
        n: u64,
    },
}

impl Kernel {
    /// Cycles one PE spends on this kernel.
    pub fn cycles(&self, spec: &WaferSpec) -> Cycles {
        match *self {
            Kernel::Gemv { k, n, dtype } => matrix::gemv_tile_cycles_of(spec, k, n, dtype),
            Kernel::Gemm { m, k, n, dtype } => matrix::gemm_tile_cycles_of(spec, m, k, n, dtype),
            Kernel::SumSquares { n } => vector::sum_squares_cycles(spec, n),
            Kernel::RmsScale { n } => vector::rms_scale_cycles(spec, n),
            Kernel::Rope { n } => vector::rope_cycles(spec, n),
            Kernel::Scale { n } => vector::scale_cycles(spec, n),
            Kernel::Max { n } => vector::max_cycles(spec, n),
            Kernel::ExpSum { n } => vector::exp_sum_cycles(spec, n),
            Kernel::Normalize { n } => vector::normalize_cycles(spec, n),
            Kernel::Add { n } => vector::add_cycles(spec, n),
            Kernel::SiluMul { n } => vector::silu_mul_cycles(spec, n),
        }
    }

    /// Multiply-accumulates per PE (zero for the vector kernels).
    pub fn macs(&self) -> u64 {
        match *self {
            Kernel::Gemv { k, n, .. } => k * n,
            Kernel::Gemm { m, k, n, .. } => m * k * n,
            _ => 0,
        }
    }
}
