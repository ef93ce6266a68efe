//! A prefill layer's program on the fabric, timing-only: its MeshGEMM steps as
//! Cannon rounds ([`super::programs::cannon_program`]), the runs of other steps
//! between them (norms, softmax allreduces, local kernels) as whole region
//! programs ([`super::simulate_region`]).
//!
//! The segments run one after another: a segment starts when the previous one's
//! last PE is done (its span), so the layer's figure is the sum of its
//! segments' spans. The Cannon steps' routes (six colours on interleaved rings)
//! and the collectives' routes are distinct static route sets; a barrier between
//! them stands for the re-routing WaferLLM's kernels do between phases (its cost
//! is not modelled).
//!
//! A Cannon step of `p` rounds runs all `p` rounds when its program fits the
//! simulator's limits (`MAX_PROGRAM_OPS`, `MAX_PROGRAM_WAVELETS`). A larger
//! one (WSE-scale squares: `p^3` operations) is extrapolated from runs of its
//! first `k` and `2 k` rounds ([`extrapolate_cannon`]); the rounds are not
//! exactly identical in time (see there), so such a figure is an
//! approximation and is reported as extrapolated.

use super::engine::{run, FabricRun, RunOptions};
use super::layer::simulate_region;
use super::programs::cannon_rounds;
use super::FabricError;
use crate::program::{RegionProgram, Step};
use wafer_core::WaferSpec;

/// What the fabric measured for a step, a segment or a layer (only runs made
/// count in `events` and `wavelet_hops`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PrefillRun {
    /// Cycles from the first PE's start to the last PE's end (summed over
    /// segments for a layer; extrapolated for Cannon steps that reached a
    /// steady state).
    pub span: u64,
    /// Events processed and wavelet-hops moved by the runs made.
    pub events: u64,
    pub wavelet_hops: u64,
    pub max_queue_occupancy: u32,
    /// Fabric runs made.
    pub runs: usize,
    /// Cannon steps whose span was extrapolated from a steady state.
    pub extrapolated_steps: usize,
    /// Cannon steps run round by round to the end.
    pub full_steps: usize,
}

impl PrefillRun {
    fn add(&mut self, o: &PrefillRun) {
        self.span += o.span;
        self.events += o.events;
        self.wavelet_hops += o.wavelet_hops;
        self.max_queue_occupancy = self.max_queue_occupancy.max(o.max_queue_occupancy);
        self.runs += o.runs;
        self.extrapolated_steps += o.extrapolated_steps;
        self.full_steps += o.full_steps;
    }

    fn of(r: &FabricRun) -> PrefillRun {
        PrefillRun {
            span: r.span,
            events: r.events,
            wavelet_hops: r.wavelet_hops,
            max_queue_occupancy: r.max_queue_occupancy,
            runs: 1,
            ..PrefillRun::default()
        }
    }
}

/// Runs the first `rounds` rounds of the Cannon `step` on its `p x p` square.
pub fn simulate_cannon_rounds<L>(
    spec: &WaferSpec,
    step: &Step<L>,
    rounds: u32,
    opts: &RunOptions,
) -> Result<FabricRun, FabricError> {
    let p = step.cannon.map_or(0, |c| c.p);
    let sp = cannon_rounds(spec, p, p, step, Some(rounds))?;
    run(spec, &sp.program, opts)
}

/// The most rounds [`simulate_cannon`] runs to measure the mean round when the
/// whole step is too large: it runs `k` and `2 k` rounds, `k` at most this.
pub const MAX_MEASURED_ROUNDS: u32 = 16;

/// The `p` rounds of the Cannon `step`: all of them when the program fits the
/// simulator's limits, exact; otherwise extrapolated ([`extrapolate_cannon`]
/// with the largest `k` up to [`MAX_MEASURED_ROUNDS`] whose `2 k` rounds fit).
pub fn simulate_cannon<L>(
    spec: &WaferSpec,
    step: &Step<L>,
    opts: &RunOptions,
) -> Result<PrefillRun, FabricError> {
    let Some(c) = step.cannon else {
        return Err(FabricError::InvalidProgram(
            "a MeshGEMM program needs a step with Cannon rounds".into(),
        ));
    };
    match simulate_cannon_rounds(spec, step, c.p, opts) {
        Ok(full) => {
            let mut r = PrefillRun::of(&full);
            r.full_steps = 1;
            Ok(r)
        }
        Err(FabricError::TooLarge(why)) => {
            let mut k = MAX_MEASURED_ROUNDS.min(c.p / 2);
            while k >= 1 {
                if cannon_rounds(spec, c.p, c.p, step, Some(2 * k)).is_ok() {
                    return extrapolate_cannon(spec, step, k, opts);
                }
                k /= 2;
            }
            Err(FabricError::TooLarge(format!(
                "{why}; not even 2 rounds fit to measure a round"
            )))
        }
        Err(e) => Err(e),
    }
}

/// The `p` rounds of the Cannon `step` from runs of its first `k` and `2 k`
/// rounds: the `2 k`-round span plus `p - 2 k` times the mean round between
/// them, `(span(2 k) - span(k)) / k`, rounded to a whole cycle. An
/// approximation: rounds repeat the same operations, but the event order
/// within a cycle (which wins a contended link) carries from round to round,
/// so consecutive rounds differ by a few cycles (a test bounds the error on
/// small squares). `p <= 2 k` runs all `p` rounds.
pub fn extrapolate_cannon<L>(
    spec: &WaferSpec,
    step: &Step<L>,
    k: u32,
    opts: &RunOptions,
) -> Result<PrefillRun, FabricError> {
    let p = step.cannon.map_or(0, |c| c.p);
    let k = k.max(1);
    if p <= 2 * k {
        let mut r = PrefillRun::of(&simulate_cannon_rounds(spec, step, p, opts)?);
        r.full_steps = 1;
        return Ok(r);
    }
    let a = simulate_cannon_rounds(spec, step, k, opts)?;
    let b = simulate_cannon_rounds(spec, step, 2 * k, opts)?;
    let mut made = PrefillRun::of(&a);
    made.add(&PrefillRun::of(&b));
    let round = b.span.saturating_sub(a.span) as f64 / k as f64;
    made.span = b.span + ((p - 2 * k) as f64 * round).round() as u64;
    made.extrapolated_steps = 1;
    Ok(made)
}

/// Every step of a prefill layer's `program` (on its `p x p` square): runs of
/// steps without Cannon rounds as region programs, each Cannon step by
/// [`simulate_cannon`], one after another. Identical Cannon steps (same rounds,
/// tiles and kernels) within the program share one simulation.
pub fn simulate_prefill_layer<L: Clone>(
    spec: &WaferSpec,
    program: &RegionProgram<L>,
    opts: &RunOptions,
) -> Result<PrefillRun, FabricError> {
    let mut total = PrefillRun::default();
    let mut seen: Vec<(&Step<L>, PrefillRun)> = Vec::new();
    let mut segment: Vec<Step<L>> = Vec::new();
    let flush = |segment: &mut Vec<Step<L>>, total: &mut PrefillRun| {
        if segment.is_empty() {
            return Ok::<(), FabricError>(());
        }
        let region = RegionProgram {
            width: program.width,
            height: program.height,
            tiles: Vec::new(),
            kv_bytes_per_position: 0,
            buffer_bytes: 0,
            steps: std::mem::take(segment),
        };
        total.add(&PrefillRun::of(&simulate_region(spec, &region, opts)?));
        Ok(())
    };
    for step in &program.steps {
        if step.cannon.is_none() {
            segment.push(step.clone());
            continue;
        }
        flush(&mut segment, &mut total)?;
        let same = |s: &Step<L>| s.cannon == step.cannon && s.kernels == step.kernels;
        match seen.iter().find(|(s, _)| same(s)) {
            Some((_, r)) => total.span += r.span,
            None => {
                let r = simulate_cannon(spec, step, opts)?;
                total.add(&r);
                seen.push((step, r));
            }
        }
    }
    flush(&mut segment, &mut total)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::Cannon;
    use wafer_kernels::Kernel;

    fn gemm_step(p: u32, tile: u64) -> Step<&'static str> {
        Step {
            label: "gemm",
            work_per_pe: 0,
            kernels: vec![Kernel::Gemm {
                m: tile,
                k: tile,
                n: tile,
                dtype: wafer_core::DType::F16,
            }],
            collective: None,
            transfer: None,
            cannon: Some(Cannon {
                p,
                a_values: tile * tile,
                b_values: tile * tile,
                bytes_per_value: 2,
                in_layer: true,
            }),
        }
    }

    fn spec() -> WaferSpec {
        WaferSpec::from_toml_str(
            "base = \"wse3\"\n[fabric]\nwidth_pes = 32\nheight_pes = 32\n",
            "small.toml",
        )
        .unwrap()
    }

    #[test]
    fn the_extrapolated_cannon_span_is_within_a_percent_of_the_full_run() {
        // Squares small enough to run every round: the extrapolation from
        // k and 2k rounds against all p rounds.
        let spec = spec();
        let opts = RunOptions::default();
        let mut worst: f64 = 0.0;
        for (p, tile, k) in [(16, 3, 4), (20, 1, 4), (24, 4, 4), (28, 2, 4), (32, 2, 8)] {
            let step = gemm_step(p, tile);
            let full = simulate_cannon_rounds(&spec, &step, p, &opts).unwrap();
            let r = extrapolate_cannon(&spec, &step, k, &opts).unwrap();
            assert_eq!(r.extrapolated_steps, 1);
            assert_eq!(r.runs, 2);
            let err = (r.span as f64 - full.span as f64).abs() / full.span as f64;
            worst = worst.max(err);
            assert!(
                err < 0.01,
                "p = {p}: {} extrapolated, {} simulated",
                r.span,
                full.span
            );
        }
        // Small squares fit whole: simulate_cannon runs every round.
        let step = gemm_step(16, 3);
        let r = simulate_cannon(&spec, &step, &opts).unwrap();
        let full = simulate_cannon_rounds(&spec, &step, 16, &opts).unwrap();
        assert_eq!(
            (r.span, r.full_steps, r.extrapolated_steps),
            (full.span, 1, 0)
        );
        eprintln!("worst extrapolation error {:.3}%", 100.0 * worst);
    }

    #[test]
    fn a_layer_is_its_segments_one_after_another() {
        // Two identical Cannon steps around a compute-only step: the layer's
        // span is twice the Cannon step's plus the compute, and the second
        // Cannon step is not simulated again.
        let spec = spec();
        let opts = RunOptions::default();
        let g = gemm_step(8, 2);
        let local = Step {
            label: "add",
            work_per_pe: 0,
            kernels: vec![Kernel::Add { n: 1000 }],
            collective: None,
            transfer: None,
            cannon: None,
        };
        let program = RegionProgram {
            width: 8,
            height: 8,
            tiles: Vec::new(),
            kv_bytes_per_position: 0,
            buffer_bytes: 0,
            steps: vec![g.clone(), local.clone(), g.clone()],
        };
        let layer = simulate_prefill_layer(&spec, &program, &opts).unwrap();
        let cannon = simulate_cannon_rounds(&spec, &g, 8, &opts).unwrap();
        let add = super::super::engine::ceil_cycles(Kernel::Add { n: 1000 }.cycles(&spec));
        assert_eq!(layer.span, 2 * cannon.span + add);
        assert_eq!(
            layer.runs, 2,
            "one Cannon run (all 8 rounds) and one segment"
        );
        assert_eq!(layer.full_steps, 1);
    }
}
