//! Choices of the lowering that are neither the model, the hardware nor the
//! layout: the K of the reduction tree every collective of a plan uses, and
//! (optionally) the one prefill scheme to cost.
//!
//! K is the number of nested chain levels of `wafer_sim`'s K-tree
//! (`Algorithm::MidKTree { k, groups }`, run from both ends of the line toward
//! the middle PE). K = 2 is WaferLLM's MeshGEMV tree and the default: with it
//! every plan is exactly what it was before the option existed (the group count
//! that minimises the depth, [`super::tree_for`]). K = 1 is a plain chain toward
//! the middle; K >= 3 takes `wafer_sim::schedule::ktree_levels`' near-equal
//! levels (smallest `s` with `s^K >= half-line`), which minimise the depth for
//! that K. In the cost model a level costs `reduce_level_cycles` and the hops
//! are the same for every K (the far PE's partial sum still crosses the
//! half-line), so larger K only removes dependent levels; nothing here models
//! the extra router colours a deep tree would need.

use super::decode::tree_for;
use super::PrefillScheme;
use anyhow::{bail, Result};
use wafer_sim::collective::Algorithm;

/// The largest K accepted: a line of the largest WSE fabric (1,172 PEs, 586 per
/// half-line) needs at most 10 binary levels, so K > 32 can only be a mistake,
/// and it bounds the level list `ktree_levels` allocates.
pub const MAX_REDUCE_K: u32 = 32;

/// Options of [`super::decode_plan_with`] and [`super::prefill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// K of the reduction tree (levels of chains); 2 by default.
    reduce_k: u32,
    /// The prefill scheme to cost, or `None` for the cheapest.
    prefill: Option<PrefillScheme>,
}

impl Default for PlanOptions {
    fn default() -> PlanOptions {
        PlanOptions {
            reduce_k: 2,
            prefill: None,
        }
    }
}

impl PlanOptions {
    /// Options with a K-level reduction tree; K must be 1..=[`MAX_REDUCE_K`].
    pub fn with_reduce_k(k: u32) -> Result<PlanOptions> {
        if k == 0 {
            bail!("K = 0 is not a reduction tree: K counts the levels of chains (K = 1 is a single chain, K = 2 the MeshGEMV tree)");
        }
        if k > MAX_REDUCE_K {
            bail!(
                "K = {k} is more levels than any line of PEs can use (expected 1..={MAX_REDUCE_K})"
            );
        }
        Ok(PlanOptions {
            reduce_k: k,
            ..PlanOptions::default()
        })
    }

    /// Cost only `scheme` for the prefill, beside one decode step per token
    /// (`None`: the cheapest of all three).
    pub fn with_prefill_scheme(self, scheme: Option<PrefillScheme>) -> PlanOptions {
        PlanOptions {
            prefill: scheme,
            ..self
        }
    }

    pub fn prefill_scheme(&self) -> Option<PrefillScheme> {
        self.prefill
    }

    pub fn reduce_k(&self) -> u32 {
        self.reduce_k
    }

    /// The reduction every collective of the plan runs on a line of `p` PEs.
    pub fn tree(&self, p: u32) -> Algorithm {
        match self.reduce_k {
            2 => tree_for(p),
            k => Algorithm::MidKTree { k, groups: None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_sim::schedule::ktree_levels;

    #[test]
    fn k_is_validated_and_two_is_the_default_tree() {
        assert_eq!(PlanOptions::default().reduce_k(), 2);
        assert_eq!(
            PlanOptions::with_reduce_k(2).unwrap(),
            PlanOptions::default()
        );
        for p in [1, 2, 7, 180, 360, 721] {
            assert_eq!(PlanOptions::default().tree(p), tree_for(p));
        }
        let err = PlanOptions::with_reduce_k(0).unwrap_err().to_string();
        assert!(err.contains("K = 0"), "{err}");
        let err = PlanOptions::with_reduce_k(33).unwrap_err().to_string();
        assert!(err.contains("1..=32"), "{err}");
        assert!(PlanOptions::with_reduce_k(32).is_ok());
        // K = 1: one chain over each half-line.
        let chain = PlanOptions::with_reduce_k(1).unwrap().tree(360);
        assert_eq!(chain, Algorithm::MidKTree { k: 1, groups: None });
        assert_eq!(ktree_levels(180, 1, None), vec![180]);
        // K = 3 over a half-line of 180: 6^3 = 216 >= 180, levels 6, 6, 5.
        assert_eq!(ktree_levels(180, 3, None), vec![6, 6, 5]);
    }
}
