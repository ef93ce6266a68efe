//! The cost of WaferLLM's region-wide matrix schemes, built from the PE kernels'
//! and the collectives' costs: MeshGEMV (decode) and MeshGEMM (Cannon-style
//! prefill), plus the shift-then-broadcast microbenchmark of calibration C5.
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

use crate::collective::{wavelets, Algorithm, Line};
use crate::cost::Cost;
use crate::program::{Cannon, Collective, CollectiveKind, RegionProgram, Step};
use crate::schedule::TreeShape;
use crate::tiling::{Axis, MatrixTiling, Orientation, Tile};
use wafer_core::{Cycles, WaferSpec};
use wafer_kernels::Kernel;

/// Named cost parts of one kernel, in execution order.
pub type Parts = Vec<(&'static str, Cost)>;

pub fn total(parts: &Parts) -> Cost {
    parts.iter().fold(Cost::default(), |a, (_, c)| a + *c)
}

/// MeshGEMV `y[1,N] = x[1,M] W[M,N]` on a `width x height` region as a placed
/// program: `W`'s output axis over the columns and its input over the rows (the
/// layout of a layer's Q/K/V GEMV), one step of the local tile GEMV and an
/// allreduce of the partial outputs along every column on `tree` (over `height`
/// PEs).
pub fn mesh_gemv_program(
    spec: &WaferSpec,
    width: u32,
    height: u32,
    m: u64,
    n: u64,
    tree: TreeShape,
) -> RegionProgram<&'static str> {
    let tiling = MatrixTiling::new(
        n as usize,
        m as usize,
        width as usize,
        height as usize,
        Orientation::OutAlongColumns,
        spec.precision.weight_dtype,
    );
    let (k_tile, n_tile) = (tiling.inp.chunk as u64, tiling.out.chunk as u64);
    RegionProgram {
        width,
        height,
        tiles: vec![Tile::Matrix {
            name: "W".into(),
            tiling,
        }],
        kv_bytes_per_position: 0,
        buffer_bytes: 0,
        steps: vec![Step {
            label: "gemv",
            work_per_pe: k_tile * n_tile,
            kernels: vec![Kernel::Gemv {
                k: k_tile,
                n: n_tile,
                dtype: spec.precision.weight_dtype,
            }],
            collective: Some(Collective {
                kind: CollectiveKind::Allreduce,
                axis: Axis::Column,
                tree,
                values_per_pe: n_tile,
                bytes_per_value: spec.precision.activation_dtype.size_bytes(),
                in_layer: false,
            }),
            transfer: None,
            cannon: None,
        }],
    }
}

/// Cost of `y[1,N] = x[1,M] W[M,N]` on a `width x height` region: the priced
/// [`mesh_gemv_program`] for a tree algorithm; a ring (not a tree) is priced
/// from its closed form beside the same local GEMV.
pub fn mesh_gemv_cost(
    spec: &WaferSpec,
    width: u32,
    height: u32,
    m: u64,
    n: u64,
    alg: Algorithm,
) -> Parts {
    let line = height.max(1);
    let tree = match alg {
        Algorithm::Ring => None,
        _ => Some(TreeShape::new(line, alg).expect("a validated tree algorithm")),
    };
    let program = mesh_gemv_program(
        spec,
        width,
        height,
        m,
        n,
        tree.clone().unwrap_or_else(|| {
            TreeShape::new(line, Algorithm::Chain).expect("a chain over a line")
        }),
    );
    let step = &program.steps[0];
    let compute = step
        .kernels
        .iter()
        .fold(Cycles::ZERO, |a, k| a + k.cycles(spec));
    let collective = step.collective.as_ref().expect("the gemv step reduces");
    let comm = match tree {
        Some(_) => collective.cost(spec),
        None => Line::new(line).allreduce_cost(
            spec,
            wavelets(spec, collective.values_per_pe, collective.bytes_per_value),
            alg,
        ),
    };
    vec![
        ("local GEMV", Cost::compute(compute)),
        ("column allreduce", comm),
    ]
}

/// MeshGEMM `C[M,N] = A[M,K] B[K,N]` on a `p x p` region as a placed program:
/// `A` and `B` in square blocks (`B`'s output axis over the columns), one step
/// of `p` Cannon rounds, each the local tile GEMM and the two ring shifts.
pub fn mesh_gemm_program(
    spec: &WaferSpec,
    p: u32,
    m: u64,
    k: u64,
    n: u64,
) -> RegionProgram<&'static str> {
    let pp = p as u64;
    let (mt, kt, nt) = (m.div_ceil(pp), k.div_ceil(pp), n.div_ceil(pp));
    let tiling = MatrixTiling::new(
        n as usize,
        k as usize,
        p as usize,
        p as usize,
        Orientation::OutAlongColumns,
        spec.precision.weight_dtype,
    );
    RegionProgram {
        width: p,
        height: p,
        tiles: vec![Tile::Matrix {
            name: "B".into(),
            tiling,
        }],
        kv_bytes_per_position: 0,
        // The A tile and the C tile, and one arriving A and B tile in flight.
        buffer_bytes: (2 * mt * kt + mt * nt) * spec.precision.activation_dtype.size_bytes()
            + kt * nt * spec.precision.weight_dtype.size_bytes(),
        steps: vec![Step {
            label: "gemm",
            work_per_pe: mt * kt * nt * pp,
            kernels: vec![Kernel::Gemm {
                m: mt,
                k: kt,
                n: nt,
                dtype: spec.precision.weight_dtype,
            }],
            collective: None,
            transfer: None,
            cannon: Some(Cannon {
                p,
                a_values: mt * kt,
                b_values: kt * nt,
                bytes_per_value: spec.precision.activation_dtype.size_bytes(),
                in_layer: false,
            }),
        }],
    }
}

/// Cost of `C[M,N] = A[M,K] B[K,N]` by Cannon's algorithm on a P x P region:
/// the priced [`mesh_gemm_program`].
pub fn mesh_gemm_cost(spec: &WaferSpec, p: u32, m: u64, k: u64, n: u64) -> Parts {
    let program = mesh_gemm_program(spec, p, m, k, n);
    let step = &program.steps[0];
    let round = step
        .kernels
        .iter()
        .fold(Cycles::ZERO, |a, k| a + k.cycles(spec));
    let cannon = step.cannon.expect("a MeshGEMM step runs Cannon rounds");
    cannon.parts(spec, round).to_vec()
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
