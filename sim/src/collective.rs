//! Collectives along a line of PEs (one row or column of a region): broadcast,
//! reduce and allreduce as a chain, a ring and a K-tree, and the neighbour shift.
//!
//! Functional half: each PE's buffer is a `Vec<f32>`; the functions move and add
//! real values in the algorithm's order (so fp32 rounding follows the schedule).
//! Cost half: closed forms from spec fields, after Luczynski et al. (HPDC 2024)
//! and WaferLLM's alpha*hops + beta*stages:
//!
//! * `phase_overhead_cycles` once per communication phase (sync category);
//! * `reduce_level_cycles` per dependent receive -> add -> send level;
//! * `hop_latency_cycles` per hop, counted twice on a flow that runs against the
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
}

impl Algorithm {
    /// Parses `chain`, `ring`, `ktree` (needs `k`), as on the command line.
    pub fn parse(name: &str, k: u32, groups: Option<u32>) -> Result<Algorithm, SimError> {
        match name.to_ascii_lowercase().as_str() {
            "chain" => Ok(Algorithm::Chain),
            "ring" => Ok(Algorithm::Ring),
            "ktree" | "k-tree" | "tree" => {
                if k == 0 {
                    return Err(SimError::InvalidCollective("K-tree needs K >= 1".into()));
                }
                Ok(Algorithm::KTree { k, groups })
            }
            other => Err(SimError::InvalidCollective(format!(
                "unknown algorithm `{other}` (expected chain, ring or ktree)"
            ))),
        }
    }
}

/// The chain length of each level of a K-tree over `p` PEs (product >= p).
pub fn ktree_levels(p: u32, k: u32, groups: Option<u32>) -> Vec<u32> {
    let p = p.max(1);
    let k = k.max(1);
    if k == 1 {
        return vec![p];
    }
    if let (2, Some(g)) = (k, groups) {
        let g = g.clamp(1, p);
        let inner = p.div_ceil(g);
        return vec![inner, p.div_ceil(inner)];
    }
    // Smallest s with s^k >= p, then the last level covers what remains.
    let mut s = 1u32;
    while (s as u64).pow(k) < p as u64 {
        s += 1;
    }
    let mut levels = Vec::with_capacity(k as usize);
    let mut covered = 1u32;
    for _ in 0..k - 1 {
        levels.push(s);
        covered = covered.saturating_mul(s);
    }
    levels.push(p.div_ceil(covered).max(1));
    levels
}

/// Dependent levels and the longest route (hops) of a K-tree reduction.
fn ktree_depth_hops(p: u32, levels: &[u32]) -> (u32, u32) {
    let depth = levels.iter().map(|s| s - 1).sum();
    let mut stride = 1u32;
    let mut hops = 0u32;
    for &s in levels {
        hops += (s - 1) * stride;
        stride = stride.saturating_mul(s);
    }
    (depth, hops.min(p - 1))
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
                2.0 * spec.router.hop_latency_cycles * against + w as f64 + Self::ramps(spec),
            ))
    }

    /// Reduction of `w` wavelets per PE to the PE at index 0.
    pub fn reduce_cost(self, spec: &WaferSpec, w: u64, alg: Algorithm) -> Cost {
        let p = self.pes;
        if p <= 1 || w == 0 {
            return Cost::default();
        }
        let c = &spec.cost;
        let h = spec.router.hop_latency_cycles;
        match alg {
            Algorithm::Ring => {
                // Reduce-scatter then gather of the chunks to the root: 2(P - 1) steps.
                self.ring_steps_cost(spec, w)
            }
            Algorithm::Chain | Algorithm::KTree { .. } => {
                let levels = match alg {
                    Algorithm::KTree { k, groups } => ktree_levels(p, k, groups),
                    _ => vec![p],
                };
                let (depth, hops) = ktree_depth_hops(p, &levels);
                Cost::sync(Cycles(c.phase_overhead_cycles))
                    + Cost::fabric(Cycles(
                        c.reduce_level_cycles * depth as f64
                            + 2.0 * h * hops as f64
                            + (w - 1) as f64
                            + Self::ramps(spec),
                    ))
            }
        }
    }

    fn ring_steps_cost(self, spec: &WaferSpec, w: u64) -> Cost {
        let p = self.pes as f64;
        let chunk = w.div_ceil(self.pes as u64) as f64;
        let c = &spec.cost;
        let step = c.reduce_level_cycles
            + 2.0 * spec.router.hop_latency_cycles
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
            _ => self.reduce_cost(spec, w, alg) + self.broadcast_cost(spec, w, 0),
        }
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

fn check_lengths(bufs: &[Vec<f32>]) -> Result<usize, SimError> {
    let n = bufs
        .first()
        .map(|b| b.len())
        .ok_or_else(|| SimError::InvalidCollective("a collective needs at least one PE".into()))?;
    if let Some((i, b)) = bufs.iter().enumerate().find(|(_, b)| b.len() != n) {
        return Err(SimError::InvalidCollective(format!(
            "PE {i} holds {} values, PE 0 holds {n}",
            b.len()
        )));
    }
    Ok(n)
}

/// `dst += src` between two PEs of the line (`dst` receives).
fn add_from(bufs: &mut [Vec<f32>], dst: usize, src: usize) {
    let (d, s) = if dst < src {
        let (a, b) = bufs.split_at_mut(src);
        (&mut a[dst], &b[0])
    } else {
        let (a, b) = bufs.split_at_mut(dst);
        (&mut b[0], &a[src])
    };
    for (x, y) in d.iter_mut().zip(s.iter()) {
        *x += *y;
    }
}

/// Copies the buffer at `src` into every other PE's buffer.
pub fn broadcast(bufs: &mut [Vec<f32>], src: usize) -> Result<(), SimError> {
    check_lengths(bufs)?;
    let value = bufs
        .get(src)
        .ok_or_else(|| {
            SimError::InvalidCollective(format!("broadcast source {src} is outside the line"))
        })?
        .clone();
    for (i, b) in bufs.iter_mut().enumerate() {
        if i != src {
            b.copy_from_slice(&value);
        }
    }
    Ok(())
}

/// Reduces every PE's buffer into the buffer at index 0 in the algorithm's
/// order. Other buffers are left holding partial sums.
pub fn reduce(bufs: &mut [Vec<f32>], alg: Algorithm) -> Result<(), SimError> {
    check_lengths(bufs)?;
    let p = bufs.len();
    match alg {
        Algorithm::Ring => {
            ring_allreduce(bufs)?;
        }
        Algorithm::Chain => reduce_levels(bufs, &[p as u32]),
        Algorithm::KTree { k, groups } => {
            reduce_levels(bufs, &ktree_levels(p as u32, k, groups));
        }
    }
    Ok(())
}

/// Chains of each level, from the far end of each group toward its root.
fn reduce_levels(bufs: &mut [Vec<f32>], levels: &[u32]) {
    let p = bufs.len();
    let mut stride = 1usize;
    for &s in levels {
        let span = stride * s as usize;
        let mut root = 0;
        while root < p {
            let members: Vec<usize> = (0..s as usize)
                .map(|j| root + j * stride)
                .filter(|&i| i < p)
                .collect();
            for pair in members.windows(2).rev() {
                add_from(bufs, pair[0], pair[1]);
            }
            root += span;
        }
        stride = span;
    }
}

/// Every PE ends with the sum of all buffers.
pub fn allreduce(bufs: &mut [Vec<f32>], alg: Algorithm) -> Result<(), SimError> {
    match alg {
        Algorithm::Ring => {
            check_lengths(bufs)?;
            ring_allreduce(bufs)
        }
        _ => {
            reduce(bufs, alg)?;
            broadcast(bufs, 0)
        }
    }
}

/// Reduce-scatter then all-gather: the vector is cut into P chunks; in step s
/// PE i passes its running chunk (i - s) mod P to PE i + 1, which adds its own.
fn ring_allreduce(bufs: &mut [Vec<f32>]) -> Result<(), SimError> {
    let p = bufs.len();
    let n = check_lengths(bufs)?;
    if p == 1 {
        return Ok(());
    }
    let chunk = |c: usize| (c * n / p)..((c + 1) * n / p);
    let mut msgs: Vec<Vec<f32>> = vec![Vec::new(); p];
    for s in 0..p - 1 {
        for (i, m) in msgs.iter_mut().enumerate() {
            let c = (i + p - s) % p;
            m.clear();
            m.extend_from_slice(&bufs[i][chunk(c)]);
        }
        for (i, m) in msgs.iter().enumerate() {
            let dst = (i + 1) % p;
            let c = (i + p - s) % p;
            for (x, y) in bufs[dst][chunk(c)].iter_mut().zip(m) {
                *x += *y;
            }
        }
    }
    // PE i now holds the full sum of chunk (i + 1) mod P; pass it around.
    for s in 0..p - 1 {
        for (i, m) in msgs.iter_mut().enumerate() {
            let c = (i + 1 + p - s) % p;
            m.clear();
            m.extend_from_slice(&bufs[i][chunk(c)]);
        }
        for (i, m) in msgs.iter().enumerate() {
            let dst = (i + 1) % p;
            let c = (i + 1 + p - s) % p;
            bufs[dst][chunk(c)].copy_from_slice(m);
        }
    }
    Ok(())
}

/// Moves every PE's buffer `steps` PEs east, cyclically (Cannon's shift).
pub fn shift(bufs: &mut [Vec<f32>], steps: usize) -> Result<(), SimError> {
    check_lengths(bufs)?;
    let p = bufs.len();
    bufs.rotate_right(steps % p);
    Ok(())
}

/// Broadcast along every row (`along_rows`) or column of a `width x height`
/// region whose buffers are stored row-major, from index `src` of each line.
pub fn multicast(
    bufs: &mut [Vec<f32>],
    width: usize,
    height: usize,
    along_rows: bool,
    src: usize,
) -> Result<(), SimError> {
    if bufs.len() != width * height {
        return Err(SimError::InvalidCollective(format!(
            "multicast over {width}x{height} needs {} buffers, found {}",
            width * height,
            bufs.len()
        )));
    }
    let (lines, len) = if along_rows {
        (height, width)
    } else {
        (width, height)
    };
    for l in 0..lines {
        let idx = |j: usize| {
            if along_rows {
                l * width + j
            } else {
                j * width + l
            }
        };
        let value = bufs[idx(src)].clone();
        for j in 0..len {
            bufs[idx(j)].copy_from_slice(&value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_core::spec::wse3;

    fn unit_spec() -> WaferSpec {
        let mut s = wse3();
        s.router.hop_latency_cycles = 1.0;
        s.router.ramp_latency_cycles = 2.0;
        s.cost.phase_overhead_cycles = 10.0;
        s.cost.reduce_level_cycles = 5.0;
        s.cost.relay_stage_cycles = 70.0;
        s.cost.relay_cycles_per_wavelet = 2.0;
        s
    }

    #[test]
    fn ktree_levels_cover_the_line() {
        assert_eq!(ktree_levels(144, 2, Some(8)), vec![18, 8]);
        assert_eq!(ktree_levels(144, 2, Some(5)), vec![29, 5]);
        assert_eq!(ktree_levels(100, 2, None), vec![10, 10]);
        assert_eq!(ktree_levels(100, 3, None), vec![5, 5, 4]);
        assert_eq!(ktree_levels(7, 1, None), vec![7]);
        assert_eq!(ktree_depth_hops(144, &[18, 8]), (24, 143));
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
        // A single PE communicates nothing.
        assert_eq!(
            Line::new(1).allreduce_cost(&s, 5, Algorithm::Chain).total(),
            Cycles(0.0)
        );
        assert_eq!(wavelets(&s, 5, 2), 3);
        assert_eq!(wavelets(&s, 5, 4), 5);
    }

    #[test]
    fn mismatched_buffers_are_an_error() {
        let mut bufs = vec![vec![1.0; 3], vec![1.0; 2]];
        let err = allreduce(&mut bufs, Algorithm::Chain).unwrap_err();
        assert!(err.to_string().contains("PE 1 holds 2"), "{err}");
        assert!(Algorithm::parse("star", 2, None).is_err());
    }
}
