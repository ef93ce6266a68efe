//! A reduction along one line of PEs as an explicit schedule: which PE sends its
//! partial to which, in which order. This is the one representation of a tree
//! or chain reduction: the placed program records it, the functional executor
//! runs it value by value, and the pricer reads its depth and reach from it.
//!
//! A schedule over `n` PEs (indices along the line, 0 at the west or north end)
//! is a list of [`Transfer`]s in dependency order. It is checked when built:
//! every PE but the root sends exactly once, after everything it receives, to a
//! PE that has not sent yet, and the root never sends. Executing the transfers in
//! order therefore delivers every partial exactly once to the root.
//!
//! The trees are WaferLLM's K-trees: K nested levels of chains (`levels`, the
//! chain length of each level, innermost first). End-rooted trees reduce toward
//! PE 0; mid-rooted ones run the same tree from both ends toward the middle PE
//! `(n - 1) / 2`, so a partial crosses at most half the line. Both halves use the
//! levels of the longer half. A ring is not a reduce-to-root and has no schedule.
//!
//! Cost terms ([`TreeShape::depth`], [`TreeShape::reach`]) are those of the tree's
//! shape: `depth` counts dependent receive-add-send levels (`sum(s - 1)` over the
//! levels, plus one where the middle PE adds the two halves), `reach` the hops
//! the farthest partial travels, `sum((s - 1) * stride)` over the levels, at most
//! the (half-)line. Both are computed from the same levels the transfers are
//! built from, so what is charged is what is executed.

use crate::collective::Algorithm;
use crate::error::SimError;
use wafer_kernels::format::{round_slice, Formats};

/// One transfer: `from` sends its (accumulated) partial to `to`, which adds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Transfer {
    pub from: u32,
    pub to: u32,
    /// The lowest PE index whose partial this transfer carries: when only PEs
    /// `0..used` start with data, the transfer carries data iff `first < used`.
    pub first: u32,
}

/// The shape of a reduction tree over a line: everything the pricer needs, and
/// everything [`Schedule::reduce`] builds its transfers from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeShape {
    algorithm: Algorithm,
    n: u32,
    root: u32,
    /// Chain length of each level of the tree (over the longer half when mid-rooted).
    levels: Vec<u32>,
}

/// A checked reduction schedule over a line of `n` PEs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    shape: TreeShape,
    transfers: Vec<Transfer>,
}

/// The longest line a schedule lists transfers for: its transfers are held in
/// memory, and the largest wafer is 1,172 PEs tall, so a longer line can only
/// come from an edited spec. (A tree's shape, which the pricer reads, has no
/// such bound: it holds only its levels.)
pub const MAX_SCHEDULE_PES: u32 = 1 << 16;

/// The largest K a schedule accepts: K nested levels over any line of a few
/// thousand PEs need far fewer; this bounds what `levels` allocates.
pub const MAX_K: u32 = 32;

/// K and the group count of a K-tree: 1 <= K <= [`MAX_K`], at least one group.
pub fn check_ktree(k: u32, groups: Option<u32>) -> Result<(), SimError> {
    if k == 0 || k > MAX_K {
        return Err(SimError::InvalidCollective(format!(
            "a K-tree needs 1 <= K <= {MAX_K}, found K = {k}"
        )));
    }
    if groups == Some(0) {
        return Err(SimError::InvalidCollective(
            "a K-tree needs at least one group".into(),
        ));
    }
    Ok(())
}

/// The chain length of each level of a K-tree over `p` PEs (product >= p).
pub fn ktree_levels(p: u32, k: u32, groups: Option<u32>) -> Vec<u32> {
    let p = p.max(1);
    let k = k.clamp(1, MAX_K);
    if k == 1 {
        return vec![p];
    }
    if let (2, Some(g)) = (k, groups) {
        let g = g.clamp(1, p);
        let inner = p.div_ceil(g);
        return vec![inner, p.div_ceil(inner)];
    }
    // Smallest s with s^k >= p, then the last level covers what remains.
    let mut s = 1u64;
    while s.checked_pow(k).is_some_and(|v| v < p as u64) {
        s += 1;
    }
    let s = s as u32;
    let mut levels = Vec::with_capacity(k as usize);
    let mut covered = 1u32;
    for _ in 0..k - 1 {
        levels.push(s);
        covered = covered.saturating_mul(s);
    }
    levels.push(p.div_ceil(covered).max(1));
    levels
}

/// Transfers of an end-rooted K-tree over local indices `0..size` (0 the root).
fn end_rooted(size: u32, levels: &[u32], mut emit: impl FnMut(u32, u32)) {
    let mut stride = 1u64;
    for &s in levels {
        let span = stride * s as u64;
        let mut root = 0u64;
        while root < size as u64 {
            // From the far end of the group toward its root, one hop at a time.
            let members = (0..s as u64)
                .map(|j| root + j * stride)
                .filter(|&i| i < size as u64)
                .count() as u64;
            for j in (1..members).rev() {
                emit((root + j * stride) as u32, (root + (j - 1) * stride) as u32);
            }
            root += span;
        }
        stride = span;
    }
}

impl TreeShape {
    /// The tree of `algorithm` over `n` PEs.
    pub fn new(n: u32, algorithm: Algorithm) -> Result<TreeShape, SimError> {
        if n == 0 {
            return Err(SimError::InvalidCollective(
                "a reduction line needs at least one PE".into(),
            ));
        }
        let (root, tree_len) = match algorithm {
            Algorithm::MidKTree { .. } => {
                let root = (n - 1) / 2;
                (root, n - root)
            }
            _ => (0, n),
        };
        let levels = match algorithm {
            Algorithm::Chain => vec![tree_len],
            Algorithm::KTree { k, groups } | Algorithm::MidKTree { k, groups } => {
                check_ktree(k, groups)?;
                ktree_levels(tree_len, k, groups)
            }
            Algorithm::Ring => {
                return Err(SimError::InvalidCollective(
                    "a ring is a reduce-scatter plus all-gather, not a reduction to one root"
                        .into(),
                ))
            }
        };
        Ok(TreeShape {
            algorithm,
            n,
            root,
            levels,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// PEs in the line.
    pub fn len(&self) -> u32 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The PE that ends with the result.
    pub fn root(&self) -> u32 {
        self.root
    }

    pub fn levels(&self) -> &[u32] {
        &self.levels
    }

    pub fn is_mid_rooted(&self) -> bool {
        matches!(self.algorithm, Algorithm::MidKTree { .. })
    }

    /// Dependent receive-add-send levels (see the module doc).
    pub fn depth(&self) -> u32 {
        if self.n <= 1 {
            return 0;
        }
        let d: u32 = self.levels.iter().map(|s| s - 1).sum();
        d + u32::from(self.is_mid_rooted())
    }

    /// Hops the farthest partial travels to the root.
    pub fn reach(&self) -> u32 {
        let line = if self.is_mid_rooted() {
            self.n - self.root
        } else {
            self.n
        };
        let mut stride = 1u64;
        let mut hops = 0u64;
        for &s in &self.levels {
            hops = hops.saturating_add((s as u64 - 1).saturating_mul(stride));
            stride = stride.saturating_mul(s as u64);
        }
        hops.min(line.saturating_sub(1) as u64) as u32
    }
}

impl Schedule {
    /// The reduction of `algorithm` over `n` PEs.
    pub fn reduce(n: u32, algorithm: Algorithm) -> Result<Schedule, SimError> {
        Schedule::from_shape(TreeShape::new(n, algorithm)?)
    }

    /// The transfers of a tree.
    pub fn from_shape(shape: TreeShape) -> Result<Schedule, SimError> {
        let (n, root, levels) = (shape.n, shape.root, &shape.levels);
        if n > MAX_SCHEDULE_PES {
            return Err(SimError::InvalidCollective(format!(
                "a reduction schedule over {n} PEs: transfers are listed for lines of at most {MAX_SCHEDULE_PES} PEs"
            )));
        }
        let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(n as usize - 1);
        if root == 0 {
            end_rooted(n, levels, |a, b| pairs.push((a, b)));
        } else {
            // West half toward the middle (local j is PE root - j), then the east half.
            end_rooted(root + 1, levels, |a, b| pairs.push((root - a, root - b)));
            end_rooted(n - root, levels, |a, b| pairs.push((root + a, root + b)));
        }
        let mut first: Vec<u32> = (0..n).collect();
        let transfers = pairs
            .into_iter()
            .map(|(from, to)| {
                let f = first[from as usize];
                first[to as usize] = first[to as usize].min(f);
                Transfer { from, to, first: f }
            })
            .collect();
        let schedule = Schedule { shape, transfers };
        schedule.check()?;
        Ok(schedule)
    }

    /// The delivery invariant (see the module doc).
    fn check(&self) -> Result<(), SimError> {
        let (n, root) = (self.shape.n, self.shape.root);
        let mut sent = vec![false; n as usize];
        for t in &self.transfers {
            let bad = |why: String| Err(SimError::InvalidCollective(why));
            if t.from == root {
                return bad(format!("the root PE {root} sent its partial away"));
            }
            if sent[t.from as usize] {
                return bad(format!("PE {} sent its partial twice", t.from));
            }
            if sent[t.to as usize] {
                return bad(format!("PE {} received after it had sent", t.to));
            }
            sent[t.from as usize] = true;
        }
        let missing = (0..n).filter(|&i| i != root && !sent[i as usize]).count();
        if missing > 0 {
            return Err(SimError::InvalidCollective(format!(
                "{missing} partial sums never reach the root"
            )));
        }
        Ok(())
    }

    /// The tree this schedule runs (what the pricer charges).
    pub fn shape(&self) -> &TreeShape {
        &self.shape
    }

    pub fn len(&self) -> u32 {
        self.shape.n
    }

    pub fn is_empty(&self) -> bool {
        self.shape.n == 0
    }

    pub fn root(&self) -> u32 {
        self.shape.root
    }

    pub fn transfers(&self) -> &[Transfer] {
        &self.transfers
    }

    /// Lines of a buffer a reduction touches when only PEs `0..used` start with
    /// data: the data-holding PEs and every PE that receives from them.
    pub fn lines_needed(&self, used: usize) -> usize {
        used.max(self.root() as usize + 1).min(self.len() as usize)
    }

    /// Calls `f(from, to)` for every transfer, in order, that carries data when
    /// only PEs `0..used` start with data (the others hold the identity of the
    /// combining operation, so skipping their transfers changes nothing).
    #[inline]
    pub fn for_each_live(&self, used: usize, mut f: impl FnMut(usize, usize)) {
        for t in &self.transfers {
            if (t.first as usize) < used {
                f(t.from as usize, t.to as usize);
            }
        }
    }

    /// Sums `parts` (PE-ordered lines of `len` values; at least
    /// [`lines_needed`](Self::lines_needed)`(used)` lines, those past `used`
    /// zero) into the root's line, which it returns.
    pub fn sum<'a>(&self, parts: &'a mut [f32], len: usize, used: usize) -> &'a [f32] {
        self.sum_in(parts, len, used, Formats::F32)
    }

    /// As [`sum`](Self::sum) in the number formats `f`: each sender's line is
    /// rounded to `f.wire` as it leaves, each receiver's sum to `f.acc`, and the
    /// root's sum to `f.wire` (as an allreduce's broadcast delivers it).
    pub fn sum_in<'a>(
        &self,
        parts: &'a mut [f32],
        len: usize,
        used: usize,
        f: Formats,
    ) -> &'a [f32] {
        self.combine(parts, len, used, f, |d, s| *d += s)
    }

    /// As [`sum`](Self::sum) with `max` (lines past `used` hold -inf).
    pub fn max<'a>(&self, parts: &'a mut [f32], len: usize, used: usize) -> &'a [f32] {
        self.max_in(parts, len, used, Formats::F32)
    }

    /// As [`max`](Self::max), values rounded to `f.wire` as they travel.
    pub fn max_in<'a>(
        &self,
        parts: &'a mut [f32],
        len: usize,
        used: usize,
        f: Formats,
    ) -> &'a [f32] {
        self.combine(parts, len, used, f, |d, s| *d = d.max(s))
    }

    fn combine<'a>(
        &self,
        parts: &'a mut [f32],
        len: usize,
        used: usize,
        f: Formats,
        op: impl Fn(&mut f32, f32),
    ) -> &'a [f32] {
        self.for_each_live(used, |from, to| {
            let (src, dst) = line_pair_mut(parts, len, from, to);
            round_slice(f.wire, src);
            for (d, &s) in dst.iter_mut().zip(src.iter()) {
                op(d, s);
            }
            round_slice(f.acc, dst);
        });
        let root = &mut parts[self.root() as usize * len..][..len];
        round_slice(f.wire, root);
        root
    }

    /// Reduces `(value, index)` pairs to the largest value (the lower index on a
    /// tie); returns the root's pair.
    pub fn argmax(&self, vals: &mut [f32], idx: &mut [u32], used: usize) -> (f32, u32) {
        self.for_each_live(used, |from, to| {
            let better = vals[from] > vals[to] || (vals[from] == vals[to] && idx[from] < idx[to]);
            if better {
                vals[to] = vals[from];
                idx[to] = idx[from];
            }
        });
        let root = self.root() as usize;
        (vals[root], idx[root])
    }
}

/// The sender's line and the receiver's line of a PE-ordered buffer of `len`-value lines.
#[inline]
pub fn line_pair_mut(
    parts: &mut [f32],
    len: usize,
    from: usize,
    to: usize,
) -> (&mut [f32], &mut [f32]) {
    debug_assert_ne!(from, to);
    if from > to {
        let (lo, hi) = parts.split_at_mut(from * len);
        (&mut hi[..len], &mut lo[to * len..][..len])
    } else {
        let (lo, hi) = parts.split_at_mut(to * len);
        (&mut lo[from * len..][..len], &mut hi[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two PEs, one transfer, worked by hand: the sender's value is rounded to
    /// the wire format as it leaves, the receiver's sum to the accumulation
    /// format, and the result to the wire format.
    #[test]
    fn sums_round_on_the_wire_and_in_the_accumulator() {
        use wafer_core::DType::{F16, F32};
        let s = Schedule::reduce(2, Algorithm::Chain).unwrap();
        let root = s.root() as usize;
        let run = |at_root: f32, sent: f32, wire, acc| {
            let mut parts = [0.0f32; 2];
            parts[root] = at_root;
            parts[1 - root] = sent;
            s.sum_in(&mut parts, 1, 2, Formats { wire, acc })[0]
        };
        let tiny = 2f32.powi(-12); // below half an f16 step at 1 (2^-11)
                                   // 1 + 2^-12 leaves as f16 1.0: the root gets 0.25 + 1.0.
        assert_eq!(run(0.25, 1.0 + tiny, F16, F32), 1.25);
        assert_eq!(run(0.25, 1.0 + tiny, F32, F32), 1.25 + tiny);
        // 1 + 2^-11 is a tie in f16 and rounds to even (1.0) in the accumulator.
        let half_step = 2f32.powi(-11);
        assert_eq!(run(1.0, half_step, F32, F16), 1.0);
        assert_eq!(run(1.0, half_step, F32, F32), 1.0 + half_step);
        // The result arrives in the wire format: 2^-12 travels exactly, but
        // 1 + 2^-12 becomes 1.0 in f16 (and 1 + 3 * 2^-12 rounds up to 1 + 2^-10).
        assert_eq!(run(1.0, tiny, F16, F32), 1.0);
        assert_eq!(run(1.0, tiny, F32, F32), 1.0 + tiny);
        assert_eq!(run(1.0, 3.0 * tiny, F16, F32), 1.0 + 2f32.powi(-10));
    }

    fn pairs(s: &Schedule) -> Vec<(u32, u32)> {
        s.transfers().iter().map(|t| (t.from, t.to)).collect()
    }

    #[test]
    fn two_level_tree_shape() {
        // 6 PEs in 2 groups: chains 2->1->0 and 5->4->3, then 3->0.
        let s = Schedule::reduce(
            6,
            Algorithm::KTree {
                k: 2,
                groups: Some(2),
            },
        )
        .unwrap();
        assert_eq!(pairs(&s), vec![(2, 1), (1, 0), (5, 4), (4, 3), (3, 0)]);
        assert_eq!((s.root(), s.shape().depth(), s.shape().reach()), (0, 3, 5));
    }

    #[test]
    fn mid_rooted_chain_meets_in_the_middle() {
        // 5 PEs: root 2; west 0->1->2, east 4->3->2; depth 2 + 1, reach 2.
        let s = Schedule::reduce(5, Algorithm::MidKTree { k: 1, groups: None }).unwrap();
        assert_eq!(pairs(&s), vec![(0, 1), (1, 2), (4, 3), (3, 2)]);
        assert_eq!((s.root(), s.shape().depth(), s.shape().reach()), (2, 3, 2));
        // The west transfers carry PE 0's partial; the east ones only their own.
        let firsts: Vec<u32> = s.transfers().iter().map(|t| t.first).collect();
        assert_eq!(firsts, vec![0, 0, 4, 3]);
    }

    #[test]
    fn every_partial_reaches_the_root_once_for_every_tree() {
        for n in 1..200u32 {
            for alg in [
                Algorithm::Chain,
                Algorithm::KTree { k: 2, groups: None },
                Algorithm::KTree {
                    k: 2,
                    groups: Some(1 + n / 7),
                },
                Algorithm::KTree { k: 3, groups: None },
                Algorithm::MidKTree { k: 1, groups: None },
                Algorithm::MidKTree {
                    k: 2,
                    groups: Some(1 + n / 9),
                },
                Algorithm::MidKTree { k: 4, groups: None },
            ] {
                let s = Schedule::reduce(n, alg).unwrap();
                assert_eq!(s.transfers().len() as u32, n - 1, "{n} {alg:?}");
                // Small integers: every order sums exactly in f64.
                let mut parts: Vec<f64> = (0..n).map(|i| (i % 50) as f64 + 1.0).collect();
                let want: f64 = parts.iter().sum();
                for t in s.transfers() {
                    parts[t.to as usize] += parts[t.from as usize];
                }
                assert_eq!(parts[s.root() as usize], want, "{n} {alg:?}");
                // The farthest partial's route is no longer than the reach charged.
                let far = (0..n)
                    .map(|i| {
                        let (mut pe, mut hops) = (i, 0u32);
                        while let Some(t) = s.transfers().iter().find(|t| t.from == pe) {
                            hops += t.from.abs_diff(t.to);
                            pe = t.to;
                        }
                        hops
                    })
                    .max()
                    .unwrap();
                let reach = s.shape().reach();
                assert!(far <= reach, "{n} {alg:?}: route {far} > {reach}");
            }
        }
    }

    #[test]
    fn prefix_skipping_equals_the_full_reduction() {
        for n in 1..60u32 {
            for alg in [
                Algorithm::Chain,
                Algorithm::KTree { k: 2, groups: None },
                Algorithm::MidKTree { k: 2, groups: None },
                Algorithm::MidKTree { k: 3, groups: None },
            ] {
                let s = Schedule::reduce(n, alg).unwrap();
                for used in 0..=n as usize {
                    let full: Vec<f32> = (0..n as usize)
                        .map(|i| if i < used { (i + 1) as f32 } else { 0.0 })
                        .collect();
                    let mut a = full.clone();
                    let want = s.sum(&mut a, 1, n as usize)[0];
                    let mut b = full[..s.lines_needed(used)].to_vec();
                    assert_eq!(s.sum(&mut b, 1, used)[0], want, "{n} {alg:?} used {used}");
                }
            }
        }
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        assert!(Schedule::reduce(0, Algorithm::Chain).is_err());
        assert!(Schedule::reduce(8, Algorithm::Ring).is_err());
        assert!(Schedule::reduce(8, Algorithm::KTree { k: 0, groups: None }).is_err());
        assert!(Schedule::reduce(
            8,
            Algorithm::KTree {
                k: 100,
                groups: None
            }
        )
        .is_err());
        assert!(Schedule::reduce(
            8,
            Algorithm::KTree {
                k: 2,
                groups: Some(0)
            }
        )
        .is_err());
        // A line longer than any wafer: its shape is priced, its transfers refused.
        let shape = TreeShape::new(1 << 30, Algorithm::MidKTree { k: 2, groups: None }).unwrap();
        assert!(shape.depth() > 0);
        let err = Schedule::from_shape(shape).unwrap_err().to_string();
        assert!(err.contains("at most 65536 PEs"), "{err}");
        // K = 32 over a long line: levels stay bounded, no overflow.
        let s = Schedule::reduce(
            1172,
            Algorithm::KTree {
                k: 32,
                groups: None,
            },
        )
        .unwrap();
        assert_eq!(s.shape().levels().len(), 32);
    }

    #[test]
    fn a_double_delivery_is_caught() {
        let s = Schedule {
            shape: TreeShape::new(3, Algorithm::Chain).unwrap(),
            transfers: vec![
                Transfer {
                    from: 1,
                    to: 0,
                    first: 1,
                },
                Transfer {
                    from: 1,
                    to: 0,
                    first: 1,
                },
            ],
        };
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
    }
}
