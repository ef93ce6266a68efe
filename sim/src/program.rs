//! The placed program of one region: what every PE holds and the ordered steps
//! every PE runs — the single description of a layout that placement, the
//! analytic pricer and the functional executor all read (after the Cerebras SDK's
//! layout + per-PE program, written once).
//!
//! - `tiles`: every tensor the region holds and its tile geometry
//!   ([`crate::tiling`]); bytes per PE follow from them.
//! - `kv_bytes_per_position`: what a PE adds for each position cached on its row.
//! - `buffer_bytes`: the working buffers a PE needs for the steps.
//! - `steps`: in execution order, each a list of local PE [`Kernel`]s with their
//!   shapes and at most one [`Collective`] after them, whose reduction tree is
//!   explicit ([`TreeShape`]; [`Collective::schedule`] gives the transfer list),
//!   or a [`Transfer`] to another region or wafer.
//!
//! The program knows nothing of transformers: a step's `label` is the caller's
//! type (the lowering of a model names its operations with it).

use crate::collective::{wavelets, Line};
use crate::cost::Cost;
use crate::error::SimError;
use crate::schedule::{Schedule, TreeShape};
use crate::tiling::{Axis, Tile};
use crate::transfer::{offwafer_cost, parallel_lines_cost};
use serde::Serialize;
use wafer_core::{Cycles, WaferSpec};
use wafer_kernels::Kernel;

/// What a collective leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectiveKind {
    /// The sum (or max) on every PE of the line: a reduction along the tree,
    /// then a broadcast from its root.
    Allreduce,
    /// The result on the tree's root only.
    Reduce,
}

/// A collective along every line of one axis of the region at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Collective {
    pub kind: CollectiveKind,
    /// The axis the lines run along (a line along a column has `height` PEs).
    pub axis: Axis,
    /// The reduction tree over one line.
    #[serde(serialize_with = "tree_summary")]
    pub tree: TreeShape,
    /// Values each PE contributes.
    pub values_per_pe: u64,
    pub bytes_per_value: u64,
    /// Whether it runs inside a whole layer's program, where each of an
    /// allreduce's two dependent phases pays `layer_phase_sync_cycles` (the
    /// calibrated hand-over between phases); a microbenchmark's lone collective
    /// does not.
    pub in_layer: bool,
}

fn tree_summary<S: serde::Serializer>(t: &TreeShape, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("TreeShape", 6)?;
    st.serialize_field("algorithm", &format!("{:?}", t.algorithm()))?;
    st.serialize_field("line_pes", &t.len())?;
    st.serialize_field("root", &t.root())?;
    st.serialize_field("levels", t.levels())?;
    st.serialize_field("depth", &t.depth())?;
    st.serialize_field("reach_hops", &t.reach())?;
    st.end()
}

impl Collective {
    /// PEs in one line.
    pub fn line_pes(&self) -> u32 {
        self.tree.len()
    }

    /// Whether this is one of a layer program's dependent phase pairs: an
    /// in-layer allreduce over more than one PE. The analytic model charges it
    /// `layer_phase_sync_cycles` twice, the fabric simulator its fitted
    /// `fabric_collective_residual_cycles` once.
    pub fn hands_over_phases(&self) -> bool {
        self.kind == CollectiveKind::Allreduce && self.in_layer && self.line_pes() > 1
    }

    /// Which PE sends to which, in order, along one line.
    pub fn schedule(&self) -> Result<Schedule, SimError> {
        Schedule::from_shape(self.tree.clone())
    }

    pub fn cost(&self, spec: &WaferSpec) -> Cost {
        let w = wavelets(spec, self.values_per_pe, self.bytes_per_value);
        let line = Line::new(self.line_pes());
        match self.kind {
            CollectiveKind::Reduce => line.tree_reduce_cost(spec, w, &self.tree),
            CollectiveKind::Allreduce => {
                let sync = if self.hands_over_phases() {
                    Cost::sync(Cycles(2.0 * spec.cost.layer_phase_sync_cycles))
                } else {
                    Cost::default()
                };
                line.tree_allreduce_cost(spec, w, &self.tree) + sync
            }
        }
    }
}

/// How a transfer between regions travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// On one wafer: every row of the source sends its part along its own
    /// links, `wavelets_per_line` over `hops` hops (no two rows share a link).
    OnWafer { wavelets_per_line: u64, hops: u64 },
    /// Over the system's link to the next wafer.
    OffWafer { bytes: u64 },
}

/// A transfer from one region to another (a hand-off of the residual, the token
/// going back to the embedding), optionally replicated along the rows of the
/// destination afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transfer {
    pub route: Route,
    /// `(row PEs, wavelets)`: the arriving part broadcast along each row.
    pub replicate: Option<(u32, u64)>,
}

impl Transfer {
    pub fn cost(&self, spec: &WaferSpec) -> Cost {
        let moved = match self.route {
            Route::OnWafer {
                wavelets_per_line,
                hops,
            } => parallel_lines_cost(spec, wavelets_per_line, hops),
            Route::OffWafer { bytes } => offwafer_cost(spec, bytes),
        };
        match self.replicate {
            Some((pes, w)) => moved + Line::new(pes).broadcast_cost(spec, w, 0),
            None => moved,
        }
    }
}

/// Cannon's schedule (MeshGEMM, `C = A B`) on the `p x p` square at the
/// region's origin, tiles pre-skewed as they are loaded: `p` rounds, each the
/// step's kernels on every PE of the square, then every PE passes its A tile one
/// PE west and its B tile one PE north around an interleaved ring (every logical
/// neighbour at most two hops away).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cannon {
    pub p: u32,
    /// Values of the A tile and of the B tile each PE passes on every round.
    pub a_values: u64,
    pub b_values: u64,
    pub bytes_per_value: u64,
    /// Whether it runs inside a whole layer's program (then it pays one
    /// `layer_phase_sync_cycles` hand-over, as a collective phase does).
    pub in_layer: bool,
}

impl Cannon {
    /// The named parts of its cost when one round's kernels take `round`
    /// cycles: the launch, the rounds' tile multiplies (each a task), the
    /// rounds' shifts.
    pub fn parts(&self, spec: &WaferSpec, round: Cycles) -> [(&'static str, Cost); 3] {
        let c = &spec.cost;
        let wa = wavelets(spec, self.a_values, self.bytes_per_value);
        let wb = wavelets(spec, self.b_values, self.bytes_per_value);
        let rounds = self.p as f64;
        let shift = c.relay_stage_cycles
            + c.relay_cycles_per_wavelet * (wa + wb).saturating_sub(2) as f64
            + 2.0 * spec.cost.hop_cycles;
        let multiply = Cycles(c.task_overhead_cycles) + round;
        [
            ("launch", Cost::sync(Cycles(c.phase_overhead_cycles))),
            ("tile multiply", Cost::compute(multiply * rounds)),
            ("Cannon shifts", Cost::fabric(Cycles(shift * rounds))),
        ]
    }

    pub fn cost(&self, spec: &WaferSpec, round: Cycles) -> Cost {
        let parts = self.parts(spec, round);
        let total = parts.iter().fold(Cost::default(), |a, (_, c)| a + *c);
        if self.in_layer {
            total + Cost::sync(Cycles(spec.cost.layer_phase_sync_cycles))
        } else {
            total
        }
    }
}

/// One step: local kernels on every PE, then at most one collective within the
/// region, or a transfer out of it; or, with `cannon`, the kernels as the rounds
/// of a MeshGEMM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step<L> {
    pub label: L,
    /// Elements (or MACs for matrix kernels) each PE computes on.
    pub work_per_pe: u64,
    pub kernels: Vec<Kernel>,
    pub collective: Option<Collective>,
    pub transfer: Option<Transfer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cannon: Option<Cannon>,
}

impl<L> Step<L> {
    /// The step's cycles: its kernels one after another (every round of its
    /// MeshGEMM, if it is one), then its collective and its transfer.
    pub fn cost(&self, spec: &WaferSpec) -> Cost {
        let compute = self
            .kernels
            .iter()
            .fold(Cycles::ZERO, |a, k| a + k.cycles(spec));
        let mut cost = match &self.cannon {
            Some(c) => c.cost(spec, compute),
            None => Cost::compute(compute),
        };
        if let Some(c) = &self.collective {
            cost += c.cost(spec);
        }
        if let Some(t) = &self.transfer {
            cost += t.cost(spec);
        }
        cost
    }

    /// Multiply-accumulates each PE performs in this step (over all rounds).
    pub fn macs_per_pe(&self) -> u64 {
        let rounds = self.cannon.map_or(1, |c| c.p as u64);
        self.kernels.iter().map(Kernel::macs).sum::<u64>() * rounds
    }
}

/// The program of one region.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionProgram<L> {
    pub width: u32,
    pub height: u32,
    pub tiles: Vec<Tile>,
    pub kv_bytes_per_position: u64,
    pub buffer_bytes: u64,
    pub steps: Vec<Step<L>>,
}

impl<L> RegionProgram<L> {
    /// Weight bytes every PE holds.
    pub fn weight_bytes_per_pe(&self) -> u64 {
        self.tiles.iter().map(Tile::bytes_per_pe).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::Algorithm;
    use wafer_core::spec::wse3;
    use wafer_core::DType;

    #[test]
    fn a_step_costs_its_kernels_then_its_collective() {
        let mut s = wse3();
        s.cost.layer_phase_sync_cycles = 100.0;
        let tree = TreeShape::new(9, Algorithm::MidKTree { k: 1, groups: None }).unwrap();
        let c = Collective {
            kind: CollectiveKind::Allreduce,
            axis: Axis::Column,
            tree: tree.clone(),
            values_per_pe: 6,
            bytes_per_value: 2,
            in_layer: true,
        };
        let k = Kernel::Gemv {
            k: 4,
            n: 6,
            dtype: DType::F16,
        };
        let step = Step {
            label: "gemv",
            work_per_pe: 24,
            kernels: vec![k, Kernel::Add { n: 6 }],
            collective: Some(c.clone()),
            transfer: None,
            cannon: None,
        };
        let want = Cost::compute(k.cycles(&s) + Kernel::Add { n: 6 }.cycles(&s))
            + Line::new(9).tree_allreduce_cost(&s, 3, &tree)
            + Cost::sync(Cycles(200.0));
        assert_eq!(step.cost(&s), want);
        assert_eq!(step.macs_per_pe(), 24);
        let sched = c.schedule().unwrap();
        assert_eq!((sched.len(), sched.root()), (9, 4));
        // A lone collective pays no layer phase hand-over.
        let lone = Collective {
            in_layer: false,
            ..c
        };
        assert_eq!(
            lone.cost(&s),
            Line::new(9).tree_allreduce_cost(&s, 3, &tree)
        );
    }
}
