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
//! The `sim` crate's collectives were not yet available when this was written;
//! these operate on the mesh engine's own contiguous buffers.

/// How partial sums travel along a line toward its root (index 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineAlgorithm {
    Chain,
    /// Two-level tree: `groups` chains of about `n / groups` PEs, then one chain
    /// over the group roots (`groups` = 1 is a chain).
    TwoLevel { groups: usize },
}

/// A checked order of transfers that reduces `n` partials into index 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReduceSchedule {
    pub n: usize,
    pub steps: Vec<(u32, u32)>,
}

impl ReduceSchedule {
    pub fn new(n: usize, algorithm: LineAlgorithm) -> ReduceSchedule {
        assert!(n > 0, "a reduction line needs at least one PE");
        let mut steps = Vec::with_capacity(n.saturating_sub(1));
        let chain = |steps: &mut Vec<(u32, u32)>, members: &[usize]| {
            // From the far end toward members[0], one hop at a time.
            for w in members.windows(2).rev() {
                steps.push((w[1] as u32, w[0] as u32));
            }
        };
        match algorithm {
            LineAlgorithm::Chain => chain(&mut steps, &(0..n).collect::<Vec<_>>()),
            LineAlgorithm::TwoLevel { groups } => {
                let groups = groups.clamp(1, n);
                let size = n.div_ceil(groups);
                let roots: Vec<usize> = (0..n).step_by(size).collect();
                for &r in &roots {
                    chain(&mut steps, &(r..(r + size).min(n)).collect::<Vec<_>>());
                }
                chain(&mut steps, &roots);
            }
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
    #[inline]
    pub fn run(&self, parts: &mut [f32], len: usize) {
        debug_assert!(parts.len() >= self.n * len);
        for &(from, to) in &self.steps {
            let (from, to) = (from as usize * len, to as usize * len);
            // `from` and `to` never overlap: distinct PEs own disjoint slices.
            for k in 0..len {
                parts[to + k] += parts[from + k];
            }
        }
    }

    /// Same as [`run`](Self::run) with `max` as the combining operation.
    pub fn run_max(&self, parts: &mut [f32], len: usize) {
        for &(from, to) in &self.steps {
            let (from, to) = (from as usize * len, to as usize * len);
            for k in 0..len {
                parts[to + k] = parts[to + k].max(parts[from + k]);
            }
        }
    }
}

/// Schedules for every line length one region needs, built once.
#[derive(Debug, Clone)]
pub struct Reducers {
    pub algorithm: LineAlgorithm,
    cache: std::collections::BTreeMap<usize, ReduceSchedule>,
}

impl Reducers {
    pub fn new(algorithm: LineAlgorithm) -> Reducers {
        Reducers {
            algorithm,
            cache: Default::default(),
        }
    }

    /// Builds (once) the schedule for a line of `n` PEs.
    pub fn prepare(&mut self, n: usize) {
        let alg = self.algorithm;
        self.cache
            .entry(n)
            .or_insert_with(|| ReduceSchedule::new(n, alg));
    }

    pub fn get(&self, n: usize) -> &ReduceSchedule {
        self.cache
            .get(&n)
            .unwrap_or_else(|| panic!("no reduction schedule prepared for a line of {n} PEs"))
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
            for alg in [LineAlgorithm::Chain, LineAlgorithm::TwoLevel { groups }] {
                let s = ReduceSchedule::new(n, alg);
                assert_eq!(s.steps.len(), n - 1, "{alg:?}");
                let mut p = parts.clone();
                s.run(&mut p, len);
                for k in 0..len {
                    // Small integers sum exactly in any order.
                    let want: f32 = (0..n).map(|i| parts[i * len + k]).sum();
                    assert_eq!(p[k], want, "n {n} len {len} {alg:?}");
                }
                let mut p = parts.clone();
                s.run_max(&mut p, len);
                let want = (0..n).map(|i| parts[i * len]).fold(f32::MIN, f32::max);
                assert_eq!(p[0], want);
            }
        }
    }

    #[test]
    fn two_level_tree_shape() {
        // 6 PEs in 2 groups: chains 2->1->0 and 5->4->3, then 3->0.
        let s = ReduceSchedule::new(6, LineAlgorithm::TwoLevel { groups: 2 });
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
