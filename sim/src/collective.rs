//! The cost of collectives along a line of PEs (one row or column of a region):
//! broadcast, reduce and allreduce as a chain, a ring and a K-tree, and the
//! neighbour shift. The trees themselves — which PE sends to which, in which
//! order — are [`crate::schedule`]'s; a tree's cost is read from its
//! [`TreeShape`] (depth and reach), the same shape its schedule executes.
//!
//! Closed forms from spec fields, after Luczynski et al. (HPDC 2024) and
//! WaferLLM's alpha*hops + beta*stages:
//!
//! * `phase_overhead_cycles` once per communication phase (sync category);
//! * `reduce_level_cycles` per dependent receive -> add -> send level;
//! * `cost.hop_cycles` per hop, counted twice on a flow that runs against the
//!   launch wavefront. The figure we estimate (calibration.md: mean over PEs of
//!   each PE's own start-to-end time, timers aligned at 1 cycle per hop) hides the
//!   hops of a flow that travels with the launch (its receiver starts that much
//!   later) and doubles those of a flow that travels against it. Reductions run
//!   toward the root at index 0 (against), broadcasts run from it (with).
//! * one cycle per wavelet streamed (16-bit values pack two to a 32-bit wavelet),
//!   and `2 * ramp_latency_cycles` to enter and leave the fabric;
//! * a software shift step (`relay_stage_cycles` + `relay_cycles_per_wavelet` per
//!   extra wavelet) for store-and-forward neighbour exchanges.

use crate::cost::Cost;
use crate::error::SimError;
use crate::schedule::{check_ktree, TreeShape};
use wafer_core::{Cycles, WaferSpec};

/// How a reduction is scheduled along a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Every PE adds its value and passes the sum on: depth P - 1.
    Chain,
    /// Reduce-scatter then all-gather around a ring of P PEs (interleaved so each
    /// step is at most 2 hops): 2(P - 1) steps of W/P wavelets.
    Ring,
    /// K nested levels of chains. K = 2 with `groups = Some(G)` is MeshGEMV's
    /// scheme: chains inside G groups of ceil(P/G) PEs toward each group root,
    /// then a chain across the group roots. `groups = None` picks near-equal levels.
    KTree { k: u32, groups: Option<u32> },
    /// The same K-tree run from both ends toward the middle PE: each half-line
    /// reduces toward the centre concurrently, the centre adds the two halves and
    /// broadcasts both ways, so a value travels at most half the line each way.
    MidKTree { k: u32, groups: Option<u32> },
}

impl Algorithm {
    /// Parses `chain`, `ring`, `ktree` (needs `k`), as on the command line.
    pub fn parse(name: &str, k: u32, groups: Option<u32>) -> Result<Algorithm, SimError> {
        match name.to_ascii_lowercase().as_str() {
            "chain" => Ok(Algorithm::Chain),
            "ring" => Ok(Algorithm::Ring),
            "ktree" | "k-tree" | "tree" | "mid-ktree" | "midktree" => {
                check_ktree(k, groups)?;
                if name.to_ascii_lowercase().starts_with("mid") {
                    Ok(Algorithm::MidKTree { k, groups })
                } else {
                    Ok(Algorithm::KTree { k, groups })
                }
            }
            other => Err(SimError::InvalidCollective(format!(
                "unknown algorithm `{other}` (expected chain, ring, ktree or mid-ktree)"
            ))),
        }
    }
}

/// Wavelets to carry `values` values of `bytes_per_value` bytes (16-bit values
/// pack two to a 32-bit wavelet).
pub fn wavelets(spec: &WaferSpec, values: u64, bytes_per_value: u64) -> u64 {
    let per = (spec.router.wavelet_bits as u64 / 8 / bytes_per_value.max(1)).max(1);
    values.div_ceil(per)
}

/// A line of PEs along which a collective runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub pes: u32,
}

impl Line {
    pub fn new(pes: u32) -> Line {
        Line { pes: pes.max(1) }
    }

    fn ramps(spec: &WaferSpec) -> f64 {
        2.0 * spec.router.ramp_latency_cycles
    }

    /// Flooding broadcast of `w` wavelets from the PE at index `src`.
    pub fn broadcast_cost(self, spec: &WaferSpec, w: u64, src: u32) -> Cost {
        if self.pes <= 1 || w == 0 {
            return Cost::default();
        }
        let against = src.min(self.pes - 1) as f64;
        Cost::sync(Cycles(spec.cost.phase_overhead_cycles))
            + Cost::fabric(Cycles(
                2.0 * spec.cost.hop_cycles * against + w as f64 + Self::ramps(spec),
            ))
    }

    /// Reduction of `w` wavelets per PE to the root of `alg`'s tree (a ring:
    /// reduce-scatter, then a gather of the chunks to PE 0).
    pub fn reduce_cost(self, spec: &WaferSpec, w: u64, alg: Algorithm) -> Cost {
        match alg {
            Algorithm::Ring if self.pes > 1 && w > 0 => self.ring_steps_cost(spec, w),
            Algorithm::Ring => Cost::default(),
            _ => self.tree_reduce_cost(spec, w, &tree(self.pes, alg)),
        }
    }

    /// Reduction of `w` wavelets per PE along the tree `shape` (over this line).
    /// Against the wavefront of the previous phase's broadcast the reach counts
    /// twice (a mid-rooted tree: the longer half's, against the V-shaped front).
    pub fn tree_reduce_cost(self, spec: &WaferSpec, w: u64, shape: &TreeShape) -> Cost {
        debug_assert_eq!(shape.len(), self.pes, "a tree over another line");
        if self.pes <= 1 || w == 0 {
            return Cost::default();
        }
        let c = &spec.cost;
        let h = spec.cost.hop_cycles;
        Cost::sync(Cycles(c.phase_overhead_cycles))
            + Cost::fabric(Cycles(
                c.reduce_level_cycles * shape.depth() as f64
                    + 2.0 * h * shape.reach() as f64
                    + (w - 1) as f64
                    + Self::ramps(spec),
            ))
    }

    fn ring_steps_cost(self, spec: &WaferSpec, w: u64) -> Cost {
        let p = self.pes as f64;
        let chunk = w.div_ceil(self.pes as u64) as f64;
        let c = &spec.cost;
        let step = c.reduce_level_cycles
            + 2.0 * spec.cost.hop_cycles
            + c.relay_cycles_per_wavelet * (chunk - 1.0);
        Cost::sync(Cycles(2.0 * c.phase_overhead_cycles))
            + Cost::fabric(Cycles(2.0 * (p - 1.0) * step + Self::ramps(spec)))
    }

    /// Every PE ends with the sum of `w` wavelets per PE.
    pub fn allreduce_cost(self, spec: &WaferSpec, w: u64, alg: Algorithm) -> Cost {
        match alg {
            Algorithm::Ring => {
                if self.pes <= 1 || w == 0 {
                    Cost::default()
                } else {
                    self.ring_steps_cost(spec, w)
                }
            }
            _ => self.tree_allreduce_cost(spec, w, &tree(self.pes, alg)),
        }
    }

    /// Reduce along `shape`, then broadcast the result back over the line. A mid
    /// K-tree's centre broadcasts outward, with the wavefront both ways, so its
    /// broadcast costs what one from the end of the line does.
    pub fn tree_allreduce_cost(self, spec: &WaferSpec, w: u64, shape: &TreeShape) -> Cost {
        self.tree_reduce_cost(spec, w, shape) + self.broadcast_cost(spec, w, 0)
    }

    /// `steps` synchronous neighbour exchanges of `w` wavelets (software relay).
    pub fn shift_cost(self, spec: &WaferSpec, w: u64, steps: u32) -> Cost {
        if steps == 0 || w == 0 {
            return Cost::default();
        }
        let c = &spec.cost;
        let step = c.relay_stage_cycles + c.relay_cycles_per_wavelet * (w - 1) as f64;
        Cost::sync(Cycles(c.phase_overhead_cycles)) + Cost::fabric(Cycles(steps as f64 * step))
    }
}

/// The tree of a non-ring algorithm over `p` PEs. Algorithms are validated where
/// they are made ([`Algorithm::parse`], the lowering's options), so this cannot fail
/// for one of them.
fn tree(p: u32, alg: Algorithm) -> TreeShape {
    TreeShape::new(p.max(1), alg).expect("a validated tree algorithm")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_core::spec::wse3;

    fn unit_spec() -> WaferSpec {
        let mut s = wse3();
        s.cost.hop_cycles = 1.0;
        s.router.ramp_latency_cycles = 2.0;
        s.cost.phase_overhead_cycles = 10.0;
        s.cost.reduce_level_cycles = 5.0;
        s.cost.relay_stage_cycles = 70.0;
        s.cost.relay_cycles_per_wavelet = 2.0;
        s
    }

    #[test]
    fn ktree_levels_cover_the_line() {
        use crate::schedule::ktree_levels;
        assert_eq!(ktree_levels(144, 2, Some(8)), vec![18, 8]);
        assert_eq!(ktree_levels(144, 2, Some(5)), vec![29, 5]);
        assert_eq!(ktree_levels(100, 2, None), vec![10, 10]);
        assert_eq!(ktree_levels(100, 3, None), vec![5, 5, 4]);
        assert_eq!(ktree_levels(7, 1, None), vec![7]);
        let t = tree(
            144,
            Algorithm::KTree {
                k: 2,
                groups: Some(8),
            },
        );
        assert_eq!((t.depth(), t.reach()), (24, 143));
    }

    #[test]
    fn costs_on_hand_cases() {
        let s = unit_spec();
        let line = Line::new(144);
        // K=2, G=8: depth 17 + 7 = 24 levels, 143 hops against the wavefront,
        // 1 wavelet: 10 + 24*5 + 2*143 + 0 + 4 = 420.
        let r = line.reduce_cost(
            &s,
            1,
            Algorithm::KTree {
                k: 2,
                groups: Some(8),
            },
        );
        assert_eq!(r.total(), Cycles(420.0));
        assert_eq!(r.sync, Cycles(10.0));
        // Broadcast from index 0: 10 + 1 + 4.
        assert_eq!(line.broadcast_cost(&s, 1, 0).total(), Cycles(15.0));
        // Chain of 4 PEs, 3 wavelets: 10 + 3*5 + 2*3 + 2 + 4 = 37.
        assert_eq!(
            Line::new(4).reduce_cost(&s, 3, Algorithm::Chain).total(),
            Cycles(37.0)
        );
        // Ring of 4, 8 wavelets: chunk 2; 2 phases 20 + 6 steps * (5 + 2 + 2) + 4 = 78.
        assert_eq!(
            Line::new(4).allreduce_cost(&s, 8, Algorithm::Ring).total(),
            Cycles(78.0)
        );
        // Shift 3 steps of 4 wavelets: 10 + 3 * (70 + 3*2) = 238.
        assert_eq!(line.shift_cost(&s, 4, 3).total(), Cycles(238.0));
        // Mid K-tree over 9 PEs (halves of 5 and 4: chain depth 4, 4 hops):
        // 10 + (4 + 1)*5 + 2*4 + 0 + 4 = 47, then broadcast 15.
        let mid = Algorithm::MidKTree { k: 1, groups: None };
        assert_eq!(
            Line::new(9).allreduce_cost(&s, 1, mid).total(),
            Cycles(62.0)
        );
        // A single PE communicates nothing.
        assert_eq!(
            Line::new(1).allreduce_cost(&s, 5, Algorithm::Chain).total(),
            Cycles(0.0)
        );
        assert_eq!(wavelets(&s, 5, 2), 3);
        assert_eq!(wavelets(&s, 5, 4), 5);
    }

    #[test]
    fn unknown_or_unbounded_algorithms_are_refused() {
        assert!(Algorithm::parse("star", 2, None).is_err());
        assert!(Algorithm::parse("ktree", 0, None).is_err());
        assert!(Algorithm::parse("ktree", 34, None).is_err());
        assert!(Algorithm::parse("ktree", 2, Some(0)).is_err());
        assert!(Algorithm::parse("mid-ktree", 32, None).is_ok());
    }
}
