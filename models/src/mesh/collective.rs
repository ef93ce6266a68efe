//! Functional reductions along one line of PEs (a region row or column), in place
//! on a PE-ordered slice of partial sums.
//!
//! A reduction is a validated *schedule*: an ordered list of `(from, to)`
//! transfers, each adding the sender's whole partial vector into the receiver's.
//! The schedule is built once per line length and algorithm and checked when
//! built (every non-root PE sends exactly once, after everything it receives; the
//! root never sends), so executing it delivers every partial sum exactly once to
//! the root — the invariant the simulation promises. The algorithms are the ones
//! the cost model charges for (see `shared/hardware-facts.md`): a chain toward
//! the root, and WaferLLM's two-level K-tree (chains inside groups toward each
//! group's root, then a chain across the group roots).
//!
//! `wafer_sim::collective::reduce` does the same on one `Vec` per PE; the engine
//! needs it in place on one contiguous buffer per line, without allocation, so
//! it runs these schedules (built from `sim`'s `ktree_levels`, same order).

use wafer_sim::collective::{ktree_levels, Algorithm};

/// A checked order of transfers that reduces `n` partials into index 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReduceSchedule {
    pub n: usize,
    pub steps: Vec<(u32, u32)>,
}

/// The K = 2 tree with the group count that minimises its depth over `p` PEs:
/// the rule the cost plan (`models::cost`, decode lowering) charges every
/// reduction with, restated here because that function is private to it.
pub fn tree_for(p: u32) -> Algorithm {
    let root = (p as f64).sqrt().round().max(1.0) as u32;
    let depth = |g: u32| p.div_ceil(g) + g;
    let best = (root.saturating_sub(2).max(1)..=root + 2)
        .min_by_key(|&g| depth(g))
        .unwrap_or(1);
    Algorithm::KTree {
        k: 2,
        groups: Some(best),
    }
}

impl ReduceSchedule {
    /// Reduces `(value, index)` pairs to the largest value (the lower index on
    /// a tie), for the argmax over the vocabulary.
    pub fn run_argmax_prefix(&self, vals: &mut [f32], idx: &mut [u32], used: usize) {
        for &(from, to) in &self.steps {
            let (from, to) = (from as usize, to as usize);
            if from >= used {
                continue;
            }
            let better = vals[from] > vals[to] || (vals[from] == vals[to] && idx[from] < idx[to]);
            if better {
                vals[to] = vals[from];
                idx[to] = idx[from];
            }
        }
    }

    /// The schedule of `algorithm` over `n` PEs: the same levels (`sim`'s
    /// `ktree_levels`) and the same order as `wafer_sim::collective::reduce`.
    /// The ring is not a reduce-to-root and has no schedule here.
    pub fn new(n: usize, algorithm: Algorithm) -> ReduceSchedule {
        assert!(n > 0, "a reduction line needs at least one PE");
        let levels = match algorithm {
            Algorithm::Chain => vec![n as u32],
            Algorithm::KTree { k, groups } => ktree_levels(n as u32, k, groups),
            // The decode plan's mid-rooted tree (two half-lines meeting in the middle)
            // is executed with the end-rooted order of K-tree levels over the line:
            // the same sum, up to the order of f32 additions; its cycles are the
            // plan's mid-rooted ones.
            Algorithm::MidKTree { k, groups } => ktree_levels(n as u32, k, groups),
            Algorithm::Ring => panic!("the mesh engine reduces with chains and K-trees, not rings"),
        };
        let mut steps = Vec::with_capacity(n.saturating_sub(1));
        let mut stride = 1usize;
        for &s in &levels {
            let span = stride * s as usize;
            for root in (0..n).step_by(span) {
                let members: Vec<usize> = (0..s as usize)
                    .map(|j| root + j * stride)
                    .filter(|&i| i < n)
                    .collect();
                // From the far end of the group toward its root, one hop at a time.
                for w in members.windows(2).rev() {
                    steps.push((w[1] as u32, w[0] as u32));
                }
            }
            stride = span;
        }
        let schedule = ReduceSchedule { n, steps };
        schedule.check();
        schedule
    }

    /// Asserts the delivery invariant: every non-root sends once, after all of
    /// its receives, to a PE that has not sent yet; the root never sends.
    fn check(&self) {
        let mut sent = vec![false; self.n];
        for &(from, to) in &self.steps {
            let (from, to) = (from as usize, to as usize);
            assert!(from != 0, "the root sent its partial away");
            assert!(!sent[from], "PE {from} sent its partial twice");
            assert!(!sent[to], "PE {to} received after it had already sent");
            sent[from] = true;
        }
        let missing = (1..self.n).filter(|&i| !sent[i]).count();
        assert_eq!(missing, 0, "{missing} partial sums never delivered");
    }

    /// Reduces `parts` (`n` partials of `len` values, PE-ordered) into `parts[..len]`.
    pub fn run(&self, parts: &mut [f32], len: usize) {
        self.run_prefix(parts, len, self.n);
    }

    /// The same reduction when only the first `used` PEs hold data and the rest
    /// hold zeros (padding lines, or rows with no cached position yet): their
    /// transfers would add exact zeros, so they are skipped. `parts` needs only
    /// `used * len` values.
    #[inline]
    pub fn run_prefix(&self, parts: &mut [f32], len: usize, used: usize) {
        debug_assert!(parts.len() >= used * len && used <= self.n);
        for &(from, to) in &self.steps {
            if from as usize >= used {
                // A PE past `used` only ever receives from PEs past `used`
                // (toward-the-root order), so it holds zeros.
                continue;
            }
            let (from, to) = (from as usize * len, to as usize * len);
            // `from` and `to` never overlap: distinct PEs own disjoint slices.
            for k in 0..len {
                parts[to + k] += parts[from + k];
            }
        }
    }

    /// [`run_prefix`](Self::run_prefix) for one value per PE.
    #[inline]
    pub fn run_scalar_prefix(&self, parts: &mut [f32], used: usize) {
        for &(from, to) in &self.steps {
            let (from, to) = (from as usize, to as usize);
            if from < used {
                parts[to] += parts[from];
            }
        }
    }

    /// Same as [`run_prefix`](Self::run_prefix) with `max` as the combining
    /// operation (the skipped PEs hold the identity, -inf).
    pub fn run_max_prefix(&self, parts: &mut [f32], len: usize, used: usize) {
        for &(from, to) in &self.steps {
            if from as usize >= used {
                continue;
            }
            let (from, to) = (from as usize * len, to as usize * len);
            for k in 0..len {
                parts[to + k] = parts[to + k].max(parts[from + k]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn reductions_equal_plain_sums_for_random_lines() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..200 {
            let n = rng.gen_range(1..300);
            let len = rng.gen_range(1..6);
            let groups = rng.gen_range(1..20);
            let parts: Vec<f32> = (0..n * len).map(|_| rng.gen_range(-4..5) as f32).collect();
            let k = rng.gen_range(1..4);
            for alg in [
                Algorithm::Chain,
                Algorithm::KTree {
                    k: 2,
                    groups: Some(groups),
                },
                Algorithm::KTree { k, groups: None },
                tree_for(n as u32),
            ] {
                let s = ReduceSchedule::new(n, alg);
                assert_eq!(s.steps.len(), n - 1, "{alg:?}");
                let mut p = parts.clone();
                s.run(&mut p, len);
                for k in 0..len {
                    let want: f64 = (0..n).map(|i| parts[i * len + k] as f64).sum();
                    assert!((p[k] as f64 - want).abs() < 1e-4, "n {n} len {len} {alg:?}");
                }
                // Same order as sim's functional reduce: bit-identical results.
                let mut bufs: Vec<Vec<f32>> = parts.chunks(len).map(|c| c.to_vec()).collect();
                wafer_sim::collective::reduce(&mut bufs, alg).unwrap();
                assert_eq!(&p[..len], &bufs[0][..]);
                let mut p = parts.clone();
                s.run_max_prefix(&mut p, len, n);
                let want = (0..n).map(|i| parts[i * len]).fold(f32::MIN, f32::max);
                assert_eq!(p[0], want);
            }
        }
    }

    #[test]
    fn two_level_tree_shape() {
        // 6 PEs in 2 groups: chains 2->1->0 and 5->4->3, then 3->0.
        let s = ReduceSchedule::new(
            6,
            Algorithm::KTree {
                k: 2,
                groups: Some(2),
            },
        );
        assert_eq!(s.steps, vec![(2, 1), (1, 0), (5, 4), (4, 3), (3, 0)]);
    }

    #[test]
    #[should_panic(expected = "twice")]
    fn a_double_delivery_is_caught() {
        ReduceSchedule {
            n: 3,
            steps: vec![(1, 0), (1, 0), (2, 0)],
        }
        .check();
    }
}
