//! The ring allreduce ([`crate::collective::Algorithm::Ring`]) on the fabric:
//! reduce-scatter, then all-gather, around the interleaved ring of every line
//! of a region (the ring [`super::programs::interleaved_ring`] gives: even PEs
//! ascending, then odd ones descending, so every logical neighbour is at most
//! two PEs away and no link wraps around).
//!
//! A line of `P` PEs splits its `W` wavelets into `P` chunks (chunk `k` is
//! wavelets `k W / P .. (k + 1) W / P`, rounded down: sizes differ by at most
//! one, and some are empty when `W < P`). The PE at logical position `l`, in
//! `2 (P - 1)` synchronous exchanges with its logical neighbours:
//! - reduce-scatter step `s` (`0 .. P - 1`): sends chunk `l - s` to `l + 1`
//!   and receives chunk `l - s - 1` from `l - 1`, adding it into its own;
//! - all-gather step `s`: sends chunk `l + 1 - s` and receives chunk `l - s`,
//!   storing it (indices mod `P`).
//!
//! So chunk `k` is summed in ring order starting at its owner:
//! `((v[k] + v[k+1]) + v[k+2]) + ... + v[k+P-1]` over logical positions mod
//! `P` (a test checks it bit for bit), finished at position `k - 1`, whose
//! f32 sum every other PE then receives (rounded to f16 when the values are
//! 16-bit: every partial is rounded when it is sent).
//!
//! Two schedules, chosen by the chunk's size:
//! - **pipelined**, when every chunk fits its path's PE queues (the sender's
//!   output queue and the receiver's input queue, `router.*_queue_depths[0]`:
//!   every PE sends on one colour and receives on one): every PE sends its
//!   own chunk, then runs `2 (P - 1)` receives, each adding (reduce-scatter)
//!   or storing (all-gather) a chunk and sending every wavelet on at once
//!   (element-pipelined, `@fadds(fabout, mem, fabin)`), since what a PE
//!   sends at step `s + 1` is what it received at step `s` — the last
//!   reduce-scatter receive forwards the PE's finished chunk as the
//!   all-gather's first send, and only the last receive forwards nothing.
//!   All PEs send at once, so a whole chunk per PE is in flight; each initial
//!   send completes into its path's queues, and from then on every PE passes
//!   one wavelet on for each it takes, which cannot fill every path at once;
//! - **step by step**, when a chunk outgrows the queues (the pipelined ring
//!   would deadlock: every PE blocked in its first send): each of the
//!   `2 (P - 1)` steps is a synchronous send and receive on one task, a PE at
//!   an even logical position sending then receiving, at an odd one
//!   receiving then sending, as in the Cannon rounds, so no PE waits on one
//!   that waits on it whatever the chunk's size.
//!
//! The ring's links take the colours its paths need (`colour_paths`: 2 for
//! `P = 2`, 3 from `P = 3`).

use super::engine::{Colour, Combine, DirSet, FabricProgram, Op, Route, Task, Trigger};
use super::programs::{
    colour_paths, interleaved_ring, packing_of, path_routes, port_on, StepProgram, MAX_PROGRAM_OPS,
    MAX_PROGRAM_WAVELETS,
};
use super::FabricError;
use crate::tiling::Axis;
use wafer_core::WaferSpec;

/// The boundaries of the `p` chunks of `w` wavelets: chunk `k` is
/// `bounds[k] .. bounds[k + 1]`.
pub fn ring_chunks(w: u64, p: u32) -> Vec<u64> {
    (0..=p as u64).map(|k| k * w / p.max(1) as u64).collect()
}

/// The largest chunk the pipelined ring runs: the first output and input
/// queue depths of the spec's PEs.
pub fn ring_pipeline_limit(spec: &WaferSpec) -> u64 {
    let r = &spec.router;
    let first = |d: &[u32]| d.first().copied().unwrap_or(0) as u64;
    first(&r.output_queue_depths) + first(&r.input_queue_depths)
}

/// A ring allreduce of `values` values of `bytes_per_value` bytes per PE
/// along every line of `axis` of a `width x height` region (see the module
/// doc): pipelined when every chunk fits [`ring_pipeline_limit`], step by step
/// otherwise.
pub fn ring_allreduce_program(
    spec: &WaferSpec,
    width: u32,
    height: u32,
    axis: Axis,
    values: u64,
    bytes_per_value: u64,
) -> Result<StepProgram, FabricError> {
    ring_program(spec, width, height, axis, values, bytes_per_value, None)
}

/// [`ring_allreduce_program`], with the schedule forced (`Some(true)`:
/// pipelined, `Some(false)`: step by step).
pub(crate) fn ring_program(
    spec: &WaferSpec,
    width: u32,
    height: u32,
    axis: Axis,
    values: u64,
    bytes_per_value: u64,
    pipelined: Option<bool>,
) -> Result<StepProgram, FabricError> {
    if width == 0 || height == 0 || width > spec.fabric.width_pes || height > spec.fabric.height_pes
    {
        return Err(FabricError::InvalidProgram(format!(
            "a {width}x{height} region on the {}x{} fabric of {}",
            spec.fabric.width_pes, spec.fabric.height_pes, spec.name
        )));
    }
    let packing = packing_of(bytes_per_value)?;
    let w = values.div_ceil(packing.values_per_wavelet());
    let (p, across) = match axis {
        Axis::Column => (height, width),
        Axis::Row => (width, height),
    };
    let pes = width as u64 * height as u64;
    // Every PE sends about 2 (P - 1) / P of its wavelets, in 4 (P - 1) operations.
    if pes.saturating_mul(2).saturating_mul(w) > MAX_PROGRAM_WAVELETS {
        return Err(FabricError::TooLarge(format!(
            "a ring allreduce of {pes} PEs x {w} wavelets each; at most {MAX_PROGRAM_WAVELETS} wavelets in all"
        )));
    }
    if pes.saturating_mul(4 * (p as u64 - 1)) > MAX_PROGRAM_OPS {
        return Err(FabricError::TooLarge(format!(
            "a ring allreduce of {pes} PEs on lines of {p}: {} operations each; at most {MAX_PROGRAM_OPS} in all",
            4 * (p as u64 - 1)
        )));
    }
    let mut prog = FabricProgram::new(width, height, packing, values);
    let pe = |l: u32, i: u32| match axis {
        Axis::Column => i as usize * width as usize + l as usize,
        Axis::Row => l as usize * width as usize + i as usize,
    };
    let mut lines = Vec::new();
    if p < 2 || w == 0 {
        for l in 0..across {
            lines.push((0..p).map(|i| pe(l, i)).collect());
        }
        return Ok(StepProgram {
            program: prog,
            lines,
        });
    }
    let ring = interleaved_ring(p);
    let n = p as usize;
    let pairs: Vec<(u32, u32)> = (0..n).map(|l| (ring[l], ring[(l + 1) % n])).collect();
    let (colour, _) = colour_paths(&pairs)?;
    let bounds = ring_chunks(w, p);
    let chunk = |k: usize| {
        let k = k % n;
        (bounds[k] as u32, (bounds[k + 1] - bounds[k]) as u32)
    };
    let largest = (0..n).map(|k| chunk(k).1 as u64).max().unwrap_or(0);
    let pipelined = pipelined.unwrap_or(largest <= ring_pipeline_limit(spec));
    let nonempty = |op: &Op| {
        !matches!(
            op,
            Op::Send { wavelets: 0, .. } | Op::Recv { wavelets: 0, .. }
        )
    };
    // Per logical position: its operations, pipelined.
    let streamed = |l: usize| {
        let (out, inc) = (Colour(colour[l]), Colour(colour[(l + n - 1) % n]));
        let (first, wavelets) = chunk(l);
        let mut o = vec![Op::Send {
            colour: out,
            first,
            wavelets,
        }];
        for step in 0..2 * (n - 1) {
            let (got, combine) = if step < n - 1 {
                (l + 2 * n - step - 1, Combine::Add)
            } else {
                (l + n - (step - (n - 1)), Combine::Store)
            };
            let (first, wavelets) = chunk(got);
            o.push(Op::Recv {
                colour: inc,
                first,
                wavelets,
                combine,
                forward: (step + 1 < 2 * (n - 1)).then_some(out),
            });
        }
        o.retain(nonempty);
        o
    };
    // Per logical position: its operations, step by step.
    let stepped = |l: usize| {
        let (out, inc) = (Colour(colour[l]), Colour(colour[(l + n - 1) % n]));
        let mut o = Vec::with_capacity(4 * (n - 1));
        for step in 0..2 * (n - 1) {
            // Chunks sent and received (indices mod P, kept positive).
            let (sent, got, combine) = if step < n - 1 {
                (l + n - step, l + 2 * n - step - 1, Combine::Add)
            } else {
                let s = step - (n - 1);
                (l + n + 1 - s, l + n - s, Combine::Store)
            };
            let (first, wavelets) = chunk(sent);
            let send = Op::Send {
                colour: out,
                first,
                wavelets,
            };
            let (first, wavelets) = chunk(got);
            let recv = Op::Recv {
                colour: inc,
                first,
                wavelets,
                combine,
                forward: None,
            };
            let pair = if l.is_multiple_of(2) {
                [send, recv]
            } else {
                [recv, send]
            };
            o.extend(pair.into_iter().filter(nonempty));
        }
        o
    };
    let ops: Vec<Vec<Op>> = (0..n)
        .map(|l| if pipelined { streamed(l) } else { stepped(l) })
        .collect();
    for l in 0..across {
        for (k, &(from, to)) in pairs.iter().enumerate() {
            for (i, c, rx, tx) in path_routes(from, to, Colour(colour[k])) {
                let tx = tx
                    .iter()
                    .fold(DirSet::default(), |s, q| s.with(port_on(axis, *q)));
                prog.routes[pe(l, i)].push((
                    c,
                    Route {
                        rx: port_on(axis, rx),
                        tx,
                    },
                ));
            }
        }
        for (pos, &i) in ring.iter().enumerate() {
            prog.pes[pe(l, i)].tasks.push(Task {
                name: "ring",
                trigger: Trigger::Start,
                ops: ops[pos].clone(),
            });
        }
        lines.push((0..p).map(|i| pe(l, i)).collect());
    }
    Ok(StepProgram {
        program: prog,
        lines,
    })
}
