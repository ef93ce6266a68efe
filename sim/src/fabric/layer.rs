//! A whole region program — every step of a layer's placed program, in order,
//! on every PE — as one fabric program, run timing-only.
//!
//! Every PE runs one task: for each step, the step's kernels as one compute
//! operation (their [`Kernel::cycles`](wafer_kernels::Kernel::cycles), rounded
//! up), then its part of the step's collective, exactly as
//! [`super::step_program`] runs a lone step. No barrier separates the steps: a
//! PE starts a step's kernels as soon as its own part of the previous
//! collective is done, so a reduction runs against the wavefront the previous
//! broadcast left behind. The hand-over between phases that the analytic model
//! charges as one calibrated constant (`layer_phase_sync_cycles`, twice per
//! allreduce) is here what the mechanisms produce (PEs waiting for wavelets,
//! queues filling, each operation's setup) plus one named residual,
//! `cost.fabric_collective_residual_cycles`: local work every PE does before
//! each of the program's in-layer allreduces, fitted to C4 (docs/fabric.md).
//!
//! Routes are static for the whole layer, as in WaferLLM's decode kernels:
//! collectives of one pattern (kind, axis and tree) share one set of routes
//! and colours. On one colour every path has a single sender, links and queues
//! are first in first out, and every PE runs the steps in order, so a later
//! step's wavelets queue behind an earlier step's on the same colour and never
//! overtake them. Distinct patterns take disjoint colours; a layer whose
//! patterns need more colours than the router has is refused
//! ([`FabricError::TooManyColours`]). A PE's queues are re-bound from phase
//! to phase ([`FabricParams::rebind_queues`](super::FabricParams)): a layer's
//! patterns together deliver more colours to some PEs than WSE-3's eight input
//! queues, though no one step does.
//!
//! A collective whose tree is shorter than its line (attention's reductions
//! across the columns of one KV head) runs on consecutive segments of the
//! tree's length from the line's start, the last one shorter when the line
//! does not divide. The placed program charges one representative segment;
//! the functional mesh reduces each KV head's own columns, which may start
//! mid-segment.
//!
//! Timing only: a layer's steps carry 16- and 32-bit values (sums of squares
//! travel as f32, activations as 16-bit floats), so each step's wavelet count
//! is its own, and the run carries no values (timing never depends on them).
//! The per-wavelet send and add cycles are those of the first collective's
//! packing (one cycle for either on both presets).

use super::engine::{
    ceil_cycles, run, whole_cycles, Colour, DirSet, FabricProgram, Op, Route, Task,
};
use super::engine::{FabricRun, Packing, RunOptions, Trigger};
use super::programs::{
    packing_of, plan_line, port_on, LPort, MAX_PROGRAM_OPS, MAX_PROGRAM_WAVELETS,
};
use super::FabricError;
use crate::program::{Collective, CollectiveKind, RegionProgram};
use crate::schedule::TreeShape;
use crate::tiling::Axis;
use wafer_core::{Cycles, WaferSpec};

/// A region program as one fabric program.
#[derive(Debug, Clone)]
pub struct RegionFabric {
    pub program: FabricProgram,
    /// Distinct collective patterns (each with its own routes and colours).
    pub patterns: usize,
    /// Colours the routes use.
    pub colours: usize,
}

/// A collective pattern: its key and the colours it was given.
struct Pattern {
    kind: CollectiveKind,
    axis: Axis,
    tree: TreeShape,
    base: u8,
}

/// The fabric program of every step of `program`, in order, on its
/// `width x height` region.
pub fn region_fabric<L>(
    spec: &WaferSpec,
    program: &RegionProgram<L>,
) -> Result<RegionFabric, FabricError> {
    let (width, height) = (program.width, program.height);
    if width == 0 || height == 0 || width > spec.fabric.width_pes || height > spec.fabric.height_pes
    {
        return Err(FabricError::InvalidProgram(format!(
            "a {width}x{height} region on the {}x{} fabric of {}",
            spec.fabric.width_pes, spec.fabric.height_pes, spec.name
        )));
    }
    let pes = width as u64 * height as u64;
    let packing = program
        .steps
        .iter()
        .find_map(|s| s.collective.as_ref())
        .map_or(Ok(Packing::F32), |c| packing_of(c.bytes_per_value))?;
    let residual = whole_cycles(
        "cost.fabric_collective_residual_cycles",
        spec.cost.fabric_collective_residual_cycles,
    )?;
    let mut ops: Vec<Vec<Op>> = vec![Vec::new(); pes as usize];
    let mut prog = FabricProgram::new(width, height, packing, 0);
    let mut patterns: Vec<Pattern> = Vec::new();
    let mut next_colour: u32 = 0;
    let (mut max_wavelets, mut sent, mut op_count) = (0u64, 0u64, 0u64);
    for step in &program.steps {
        if step.transfer.is_some() {
            return Err(FabricError::Unsupported(
                "transfers between regions inside a region program".into(),
            ));
        }
        if step.cannon.is_some() {
            return Err(FabricError::Unsupported(
                "Cannon rounds inside a whole region program (each runs as its own step program)"
                    .into(),
            ));
        }
        let collective = step.collective.as_ref().filter(|c| c.values_per_pe > 0);
        // The fitted residual, before each allreduce of a layer's program (the
        // collectives the analytic model charges its phase sync).
        let residual = match collective {
            Some(c) if c.hands_over_phases() => residual,
            _ => 0,
        };
        let compute = ceil_cycles(
            step.kernels
                .iter()
                .fold(Cycles::ZERO, |a, k| a + k.cycles(spec)),
        ) + residual;
        if compute > 0 {
            for o in &mut ops {
                o.push(Op::Compute { cycles: compute });
            }
            op_count += pes;
        }
        let Some(c) = collective else {
            continue;
        };
        let wavelets = c
            .values_per_pe
            .div_ceil(packing_of(c.bytes_per_value)?.values_per_wavelet());
        sent = sent.saturating_add(pes.saturating_mul(wavelets));
        if sent > MAX_PROGRAM_WAVELETS || wavelets > u32::MAX as u64 {
            return Err(FabricError::TooLarge(format!(
                "a {width}x{height} region sending {sent} wavelets or more; at most {MAX_PROGRAM_WAVELETS} in all"
            )));
        }
        max_wavelets = max_wavelets.max(wavelets);
        let (along, across) = match c.axis {
            Axis::Column => (height, width),
            Axis::Row => (width, height),
        };
        let seg = c.tree.len();
        if seg == 0 || seg > along {
            return Err(FabricError::InvalidProgram(format!(
                "a tree over {seg} PEs on lines of {along}"
            )));
        }
        // The segments of one line: (first index, tree).
        let mut segments: Vec<(u32, Collective)> = Vec::new();
        let mut first = 0;
        while first < along {
            let len = seg.min(along - first);
            let tree = if len == seg {
                c.tree.clone()
            } else {
                TreeShape::new(len, c.tree.algorithm())?
            };
            segments.push((first, Collective { tree, ..c.clone() }));
            first += len;
        }
        let known = patterns
            .iter()
            .find(|p| p.kind == c.kind && p.axis == c.axis && p.tree == c.tree)
            .map(|p| p.base);
        let (base, new) = match known {
            Some(b) => (b, false),
            None => {
                let b = u8::try_from(next_colour).map_err(|_| {
                    FabricError::Unsupported("a layer needing more than 255 colours".into())
                })?;
                (b, true)
            }
        };
        let port = |p: LPort| port_on(c.axis, p);
        let plans = segments
            .iter()
            .map(|(start, coll)| Ok((*start, plan_line(coll, wavelets as u32)?)))
            .collect::<Result<Vec<_>, FabricError>>()?;
        let used = plans
            .iter()
            .flat_map(|(_, plan)| plan.routes.iter().map(|r| r.1 .0 as u32 + 1))
            .max()
            .unwrap_or(0);
        if base as u32 + used > u8::MAX as u32 {
            return Err(FabricError::Unsupported(
                "a layer needing more than 255 colours".into(),
            ));
        }
        let shift = |col: Colour| Colour(col.0 + base);
        for (start, plan) in &plans {
            for l in 0..across {
                let pe = |i: u32| {
                    let i = start + i;
                    match c.axis {
                        Axis::Column => i as usize * width as usize + l as usize,
                        Axis::Row => l as usize * width as usize + i as usize,
                    }
                };
                if new {
                    for (i, colour, rx, tx) in &plan.routes {
                        let tx = tx.iter().fold(DirSet::default(), |s, p| s.with(port(*p)));
                        prog.routes[pe(*i)].push((shift(*colour), Route { rx: port(*rx), tx }));
                    }
                }
                for (i, o) in plan.ops.iter().enumerate() {
                    op_count += o.len() as u64;
                    ops[pe(i as u32)].extend(o.iter().map(|op| match *op {
                        Op::Send {
                            colour,
                            first,
                            wavelets,
                        } => Op::Send {
                            colour: shift(colour),
                            first,
                            wavelets,
                        },
                        Op::Recv {
                            colour,
                            first,
                            wavelets,
                            combine,
                            forward,
                        } => Op::Recv {
                            colour: shift(colour),
                            first,
                            wavelets,
                            combine,
                            forward: forward.map(shift),
                        },
                        other => other,
                    }));
                }
            }
        }
        if op_count > MAX_PROGRAM_OPS {
            return Err(FabricError::TooLarge(format!(
                "a {width}x{height} region with {op_count} operations or more; at most {MAX_PROGRAM_OPS}"
            )));
        }
        if new {
            patterns.push(Pattern {
                kind: c.kind,
                axis: c.axis,
                tree: c.tree.clone(),
                base,
            });
            next_colour += used;
        }
    }
    prog.values_per_pe = max_wavelets * packing.values_per_wavelet();
    for (p, o) in prog.pes.iter_mut().zip(ops) {
        if !o.is_empty() {
            p.tasks.push(Task {
                name: "layer",
                trigger: Trigger::Start,
                ops: o,
            });
        }
    }
    let colours = prog.colours_used().len();
    Ok(RegionFabric {
        program: prog,
        patterns: patterns.len(),
        colours,
    })
}

/// Runs every step of `program` on the fabric, timing-only.
pub fn simulate_region<L>(
    spec: &WaferSpec,
    program: &RegionProgram<L>,
    opts: &RunOptions,
) -> Result<FabricRun, FabricError> {
    if opts.values.is_some() {
        return Err(FabricError::Unsupported(
            "values through a whole region program (its steps mix 16- and 32-bit values); it runs timing-only".into(),
        ));
    }
    let rf = region_fabric(spec, program)?;
    let mut opts = opts.clone();
    opts.params.rebind_queues = true;
    run(spec, &rf.program, &opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::Algorithm;
    use crate::program::Step;
    use wafer_kernels::Kernel;

    use crate::fabric::tests::spec_h1_r2 as spec;

    fn step(kernels: Vec<Kernel>, c: Option<Collective>) -> Step<&'static str> {
        Step {
            label: "s",
            work_per_pe: 0,
            kernels,
            collective: c,
            transfer: None,
            cannon: None,
        }
    }

    fn allreduce(axis: Axis, n: u32, algorithm: Algorithm, values: u64) -> Collective {
        Collective {
            kind: CollectiveKind::Allreduce,
            axis,
            tree: TreeShape::new(n, algorithm).unwrap(),
            values_per_pe: values,
            bytes_per_value: 4,
            in_layer: true,
        }
    }

    fn region(w: u32, h: u32, steps: Vec<Step<&'static str>>) -> RegionProgram<&'static str> {
        RegionProgram {
            width: w,
            height: h,
            tiles: Vec::new(),
            kv_bytes_per_position: 0,
            buffer_bytes: 0,
            steps,
        }
    }

    #[test]
    fn two_chain_allreduces_follow_each_other_without_a_barrier() {
        // A column of n PEs runs two steps: c compute cycles, then a chain
        // allreduce of W f32 wavelets toward PE 0 (as in the lone-step test in
        // `tests.rs`: a level costs h + 2r + 1, the root's last add ends at
        // R = start + c + (W - 1) + (n - 1)(h + 2r + 1), and broadcast wavelet
        // j reaches PE k at R + j + 2r + k h, so PE k ends at
        // E_k = R + (W - 1) + 2r + k h + 1 and the root at R + W).
        // With no barrier, each PE starts step 2 at its own end of step 1. The
        // leaf n - 1 ends step 1 last and heads step 2's chain, so step 2's root
        // finishes adding at R2 = E_{n-1} + c + (W - 1) + (n - 1)(h + 2r + 1):
        // every PE k < n - 1 is waiting by then, having ended step 1 earlier.
        // Both steps share the chain's routes and colours. The fitted
        // residual q is local work before each collective: c becomes c + q.
        let mut s = spec();
        let (h, r) = (1u64, 2u64);
        for (n, q) in (2..=9u64).flat_map(|n| [(n, 0u64), (n, 7)]) {
            s.cost.fabric_collective_residual_cycles = q as f64;
            for w in [1u64, 3] {
                for cmp in [0u64, 4] {
                    // Some local work (its cycles are the kernel's own).
                    let kernels = if cmp > 0 {
                        vec![Kernel::Add { n: 16 * cmp }]
                    } else {
                        vec![]
                    };
                    let c = allreduce(Axis::Column, n as u32, Algorithm::Chain, w);
                    let one = step(kernels.clone(), Some(c.clone()));
                    let prog = region(1, n as u32, vec![one.clone(), one]);
                    let compute =
                        ceil_cycles(kernels.iter().fold(Cycles::ZERO, |a, k| a + k.cycles(&s))) + q;
                    let level = h + 2 * r + 1;
                    let r1 = compute + (w - 1) + (n - 1) * level;
                    let end1 = |k: u64| {
                        if k == 0 {
                            r1 + w
                        } else {
                            r1 + (w - 1) + 2 * r + k * h + 1
                        }
                    };
                    let r2 = end1(n - 1) + compute + (w - 1) + (n - 1) * level;
                    let mut want = vec![r2 + w];
                    want.extend((1..n).map(|k| r2 + (w - 1) + 2 * r + k * h + 1));
                    let rf = region_fabric(&s, &prog).unwrap();
                    assert_eq!(rf.patterns, 1);
                    let out = simulate_region(&s, &prog, &RunOptions::default()).unwrap();
                    assert_eq!(out.pe_cycles, want, "n {n} W {w} c {compute} q {q}");
                    assert_eq!(out.wavelet_hops, 4 * w * (n - 1));
                }
            }
        }
    }

    #[test]
    fn each_pattern_takes_its_own_colours_and_repeats_share_them() {
        let s = spec();
        let tree = Algorithm::MidKTree {
            k: 2,
            groups: Some(2),
        };
        let col = || step(vec![], Some(allreduce(Axis::Column, 9, tree, 2)));
        let row = || step(vec![], Some(allreduce(Axis::Row, 7, tree, 2)));
        let colours = |steps| region_fabric(&s, &region(7, 9, steps)).unwrap().colours;
        let (c, r) = (colours(vec![col()]), colours(vec![row()]));
        assert!(c >= 2 && r >= 2, "a tree and its broadcast: {c}, {r}");
        assert_eq!(colours(vec![col(), col(), col()]), c);
        assert_eq!(colours(vec![col(), row(), col(), row()]), c + r);
        // A step's wavelets: the region runs, and every PE ends.
        let out = simulate_region(
            &s,
            &region(7, 9, vec![col(), row(), col()]),
            &RunOptions::default(),
        )
        .unwrap();
        assert!(out.pe_cycles.iter().all(|&c| c > 0));
    }

    #[test]
    fn a_tree_shorter_than_its_line_runs_on_consecutive_segments() {
        // Rows of 5 PEs, a chain over 2: segments {0,1}, {2,3} and the lone
        // PE 4. Each pair moves W wavelets one hop in and one hop back; the lone
        // PE moves nothing.
        let s = spec();
        for w in [1u64, 4] {
            let c = allreduce(Axis::Row, 2, Algorithm::Chain, w);
            let prog = region(5, 3, vec![step(vec![], Some(c))]);
            let out = simulate_region(&s, &prog, &RunOptions::default()).unwrap();
            assert_eq!(out.wavelet_hops, 3 * 2 * 2 * w);
            for y in 0..3 {
                assert_eq!(out.pe_cycles[y * 5 + 4], 0, "the lone PE has nothing to do");
                // Each pair is the 2-PE chain: R = (W - 1) + (h + 2r + 1).
                let big_r = (w - 1) + 6;
                for x in [0, 2] {
                    assert_eq!(out.pe_cycles[y * 5 + x], big_r + w);
                    assert_eq!(out.pe_cycles[y * 5 + x + 1], big_r + (w - 1) + 4 + 1 + 1);
                }
            }
        }
    }

    #[test]
    fn too_many_colours_and_values_are_refused() {
        let mut s = spec();
        let tree = Algorithm::MidKTree {
            k: 2,
            groups: Some(2),
        };
        let prog = region(
            7,
            9,
            vec![
                step(vec![], Some(allreduce(Axis::Column, 9, tree, 2))),
                step(vec![], Some(allreduce(Axis::Row, 7, tree, 2))),
            ],
        );
        s.router.colors = 3;
        assert!(matches!(
            simulate_region(&s, &prog, &RunOptions::default()),
            Err(FabricError::TooManyColours { .. })
        ));
        let opts = RunOptions {
            values: Some(vec![0.0; 63 * 2]),
            ..RunOptions::default()
        };
        assert!(matches!(
            simulate_region(&spec(), &prog, &opts),
            Err(FabricError::Unsupported(_))
        ));
    }
}
