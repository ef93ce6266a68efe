//! Transfers between regions and between wafers on the fabric: the placed
//! program's [`Transfer`] (a layer's hand-off of the residual to the next
//! region, the embedding's to layer 0, the token's loop-back), simulated
//! timing-only.
//!
//! On one wafer ([`Route::OnWafer`]), every one of `lines` parallel lines
//! streams its `wavelets_per_line` wavelets from the source's edge PE across
//! `hops` links to the destination's edge PE on one colour (routers between
//! only pass it on). With `replicate = (pes, w)` the same route then
//! multicasts along the destination's row of `pes` PEs (each router delivers
//! to its PE and passes on), so the replication is not a second phase. The
//! program is a `(hops + pes) x lines` fabric of its own — lines are straight
//! (turns are not modelled, `docs/fabric.md`) and independent (no two share a
//! link), and may be longer than the wafer is wide: the path's hops are the
//! Manhattan distance the lowering counts. Its cost is the run's span; the run
//! takes events per wavelet-hop, not per PE or cycle.
//!
//! Between wafers ([`Route::OffWafer`]) the spec gives only the link's
//! bandwidth and latency (`system.offwafer_*`), so the link is a single
//! first-in first-out channel: the message's last byte arrives
//! `latency + bytes / bandwidth` after the first leaves (whole cycles, rounded
//! up) — an event model of one message on such a link gives exactly that
//! closed form. The replication on the destination (its edge PE of each row
//! multicasting along the row) then runs on the fabric.

use super::engine::{
    run, Colour, Combine, Dir, DirSet, FabricProgram, FabricRun, Op, Route as FabricRoute,
    RunOptions, Task, Trigger,
};
use super::programs::{packing_of, MAX_PROGRAM_WAVELETS};
use super::FabricError;
use crate::program::{Route, Transfer};
use wafer_core::WaferSpec;

/// The most PEs a transfer's own fabric may have (bounds its memory).
pub const MAX_TRANSFER_PES: u64 = 1 << 24;

/// What a simulated transfer took.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferRun {
    /// The off-wafer link's cycles (0 on one wafer) plus the fabric run's span.
    pub cycles: u64,
    /// The off-wafer link's cycles (0 on one wafer).
    pub link_cycles: u64,
    /// The fabric part (none when nothing moves on a fabric).
    pub run: Option<FabricRun>,
}

impl TransferRun {
    pub fn events(&self) -> u64 {
        self.run.as_ref().map_or(0, |r| r.events)
    }

    pub fn wavelet_hops(&self) -> u64 {
        self.run.as_ref().map_or(0, |r| r.wavelet_hops)
    }

    pub fn max_queue_occupancy(&self) -> u32 {
        self.run.as_ref().map_or(0, |r| r.max_queue_occupancy)
    }
}

/// `lines` parallel rows: on each, the PE at x = 0 sends `wavelets` wavelets
/// east over `hops` links to the PE at x = `hops`, and on along the `dest`
/// PEs from there, each of which receives them; PEs in between only route.
pub fn line_transfer_program(
    lines: u32,
    wavelets: u64,
    bytes_per_value: u64,
    hops: u64,
    dest: u32,
) -> Result<FabricProgram, FabricError> {
    if lines == 0 || hops == 0 || dest == 0 {
        return Err(FabricError::InvalidProgram(format!(
            "a transfer needs at least one line, one hop and one receiving PE, found {lines} lines, {hops} hops, {dest} PEs"
        )));
    }
    let packing = packing_of(bytes_per_value)?;
    let width = hops.saturating_add(dest as u64);
    let pes = width.saturating_mul(lines as u64);
    if pes > MAX_TRANSFER_PES {
        return Err(FabricError::TooLarge(format!(
            "a transfer over {hops} hops to {dest} PEs on {lines} lines: {pes} PEs; at most {MAX_TRANSFER_PES}"
        )));
    }
    let sent = (lines as u64).saturating_mul(wavelets);
    if sent.saturating_mul(width) > MAX_PROGRAM_WAVELETS {
        return Err(FabricError::TooLarge(format!(
            "a transfer of {lines} lines x {wavelets} wavelets over {width} PEs; at most {MAX_PROGRAM_WAVELETS} wavelet-hops"
        )));
    }
    let wv = wavelets as u32;
    let width = width as u32;
    let mut prog = FabricProgram::new(
        width,
        lines,
        packing,
        wavelets * packing.values_per_wavelet(),
    );
    let c = Colour(0);
    let route = |rx: Dir, tx: &[Dir]| FabricRoute {
        rx,
        tx: DirSet::of(tx),
    };
    for y in 0..lines {
        let pe = |x: u32| y as usize * width as usize + x as usize;
        prog.routes[pe(0)].push((c, route(Dir::Ramp, &[Dir::East])));
        for x in 1..width {
            let r = if (x as u64) < hops {
                route(Dir::West, &[Dir::East])
            } else if x + 1 < width {
                route(Dir::West, &[Dir::Ramp, Dir::East])
            } else {
                route(Dir::West, &[Dir::Ramp])
            };
            prog.routes[pe(x)].push((c, r));
        }
        if wv == 0 {
            continue;
        }
        prog.pes[pe(0)].tasks.push(Task {
            name: "send",
            trigger: Trigger::Start,
            ops: vec![Op::Send {
                colour: c,
                first: 0,
                wavelets: wv,
            }],
        });
        for x in hops as u32..width {
            prog.pes[pe(x)].tasks.push(Task {
                name: "receive",
                trigger: Trigger::Start,
                ops: vec![Op::Recv {
                    colour: c,
                    first: 0,
                    wavelets: wv,
                    combine: Combine::Store,
                    forward: None,
                }],
            });
        }
    }
    Ok(prog)
}

/// The off-wafer link's cycles for `bytes`: `system.offwafer_latency_s` plus
/// the bytes over `system.offwafer_bandwidth_bytes_per_s`, rounded up to
/// whole cycles.
pub fn offwafer_link_cycles(spec: &WaferSpec, bytes: u64) -> Result<u64, FabricError> {
    let s = &spec.system;
    let cycles =
        (s.offwafer_latency_s + bytes as f64 / s.offwafer_bandwidth_bytes_per_s) * spec.clock_hz;
    if !cycles.is_finite() || cycles < 0.0 || cycles > u64::MAX as f64 / 2.0 {
        return Err(FabricError::InvalidProgram(format!(
            "an off-wafer transfer of {bytes} bytes takes {cycles} cycles (system.offwafer_latency_s {}, system.offwafer_bandwidth_bytes_per_s {})",
            s.offwafer_latency_s, s.offwafer_bandwidth_bytes_per_s
        )));
    }
    // Rounded up, past float noise in the product (1e-6 s x 1e9 Hz is 1,000).
    Ok((cycles - 1e-6).ceil().max(0.0) as u64)
}

/// Runs `transfer` (its values `bytes_per_value` bytes each) on `lines`
/// parallel lines, timing-only (see the module doc).
pub fn simulate_transfer(
    spec: &WaferSpec,
    transfer: &Transfer,
    lines: u32,
    bytes_per_value: u64,
    opts: &RunOptions,
) -> Result<TransferRun, FabricError> {
    let opts = RunOptions {
        values: None,
        ..opts.clone()
    };
    let timed = |prog: Option<FabricProgram>, link: u64| -> Result<TransferRun, FabricError> {
        let run = prog.map(|p| run(spec, &p, &opts)).transpose()?;
        Ok(TransferRun {
            cycles: link + run.as_ref().map_or(0, |r| r.span),
            link_cycles: link,
            run,
        })
    };
    match (transfer.route, transfer.replicate) {
        (
            Route::OnWafer {
                wavelets_per_line,
                hops,
            },
            replicate,
        ) => {
            let dest = match replicate {
                None => 1,
                Some((pes, w)) if w == wavelets_per_line => pes.max(1),
                Some((pes, w)) => {
                    return Err(FabricError::Unsupported(format!(
                        "a transfer of {wavelets_per_line} wavelets per line replicated as {w} wavelets along {pes} PEs"
                    )))
                }
            };
            if hops == 0 || wavelets_per_line == 0 {
                // Nothing crosses a link: the values are where they are needed.
                return timed(None, 0);
            }
            let prog =
                line_transfer_program(lines, wavelets_per_line, bytes_per_value, hops, dest)?;
            timed(Some(prog), 0)
        }
        (Route::OffWafer { bytes }, replicate) => {
            let link = offwafer_link_cycles(spec, bytes)?;
            let prog = match replicate {
                Some((pes, w)) if pes > 1 && w > 0 => Some(line_transfer_program(
                    lines,
                    w,
                    bytes_per_value,
                    1,
                    pes - 1,
                )?),
                _ => None,
            };
            timed(prog, link)
        }
    }
}
