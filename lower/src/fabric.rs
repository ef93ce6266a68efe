//! A decode step timed on the fabric simulator (`--sim fabric`): every layer's
//! placed program and the LM head's steps run as whole region programs
//! ([`wafer_sim::fabric::simulate_region`], timing-only), in place of the
//! analytic price of their steps.
//!
//! The transfers between regions and wafers (the embedding's hand-off to
//! layer 0, each layer's hand-off to the next region, the token's loop-back,
//! hand-offs between wafers) run on the fabric too, each on a fabric of its
//! own ([`wafer_sim::fabric::simulate_transfer`]: parallel lines across the
//! wafer, or the off-wafer link and then the destination's replication), and
//! are reported apart (`transfer_cycles`). What still comes from the analytic
//! pricer, reported as `analytic_rest`, is the embedding lookup.
//!
//! A layer's figure is its run's span (first PE start to last PE end): the next
//! layer starts from the last PE's result. Layers on regions of one shape run
//! the same program at one KV length (and at every KV length with the same
//! cached positions per PE), and timing never depends on values, so with a
//! [`FabricMemo`] one simulation serves every identical program, across calls
//! (and one every identical transfer: same route, replication and lines);
//! without one every layer and transfer is simulated, in parallel over both
//! cores, and gives the same cycles (a test checks it).

use crate::cost::{OpKind, PlanOptions};
use crate::layout::{Layout, Site};
use crate::program::{decode_layer_program, model_steps, LayerProgram};
use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use wafer_core::{Cycles, WaferSpec};
use wafer_models::config::ModelConfig;
use wafer_sim::fabric::{simulate_region, simulate_transfer, FabricRun, RunOptions, TransferRun};
use wafer_sim::program::{RegionProgram, Step, Transfer};

/// One decode step's cycles from the fabric simulator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FabricDecode {
    /// The token: every layer's and the head's simulated span, the simulated
    /// transfers, plus `analytic_rest`.
    pub cycles: Cycles,
    /// Each decoder layer's simulated span.
    pub layer_cycles: Vec<Cycles>,
    /// The final norm, LM head and argmax, simulated on the head's region.
    pub head_cycles: Cycles,
    /// The embedding lookup, priced analytically (not simulated).
    pub analytic_rest: Cycles,
    /// Every transfer between regions and wafers of the token, simulated
    /// (one after another: each waits for the region before it).
    pub transfer_cycles: Cycles,
    /// The analytic price of the same transfers.
    pub analytic_transfer_cycles: Cycles,
    /// Region program runs made by this call (the head's included); with a
    /// memo, programs simulated before are not run again.
    pub simulations: usize,
    /// Transfer runs made by this call (likewise memoised).
    pub transfer_simulations: usize,
    /// Events and wavelet-hops of the runs this call made (transfers included).
    pub events: u64,
    pub wavelet_hops: u64,
    /// Wavelet-hops of the token's region programs (every layer and the
    /// head, simulated or shared).
    pub token_wavelet_hops: u64,
    /// Wavelet-hops of the token's transfers (simulated or shared).
    pub transfer_wavelet_hops: u64,
    /// The most wavelets any buffer or queue held in any run.
    pub max_queue_occupancy: u32,
}

/// Fabric runs of layer programs already simulated: identical programs (same
/// region, same steps: the KV length enters only as cached positions per PE)
/// share one run, since timing never depends on values.
#[derive(Debug, Default)]
pub struct FabricMemo {
    runs: Vec<(LayerProgram, FabricRun)>,
    transfers: Vec<(TokenTransfer, TransferRun)>,
}

impl FabricMemo {
    /// Distinct region programs simulated so far.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Distinct transfers simulated so far.
    pub fn transfers(&self) -> usize {
        self.transfers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The run of `program`, if it was simulated.
    fn run_of(&self, program: &LayerProgram) -> Option<&FabricRun> {
        self.runs.iter().find(|(q, _)| q == program).map(|(_, r)| r)
    }
}

/// The decode step at KV length `context` on `layout`, each layer and the head
/// run on the fabric (see the module doc). With `memo`, a layer whose program
/// was simulated before (in this call or an earlier one) reuses that run;
/// without it every layer is simulated.
pub fn fabric_decode(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    context: usize,
    opts: &PlanOptions,
    run: &RunOptions,
    memo: Option<&mut FabricMemo>,
) -> Result<FabricDecode> {
    let token = token_programs(spec, cfg, layout, context, opts);
    // What to simulate now: every run without a memo; with one, each program
    // it does not hold yet, once.
    let mut todo: Vec<&LayerProgram> = Vec::new();
    for (_, p) in &token.runs {
        let known = |m: &FabricMemo| m.run_of(p).is_some() || todo.contains(&p);
        if !memo.as_deref().is_some_and(known) {
            todo.push(p);
        }
    }
    let fresh = todo
        .par_iter()
        .map(|p| {
            simulate_region(spec, *p, run).with_context(|| {
                format!(
                    "a program of {} steps on a {}x{} region at KV length {context}",
                    p.steps.len(),
                    p.width,
                    p.height
                )
            })
        })
        .collect::<Result<Vec<FabricRun>>>()?;
    let simulations = fresh.len();
    let events: u64 = fresh.iter().map(|r| r.events).sum();
    let wavelet_hops: u64 = fresh.iter().map(|r| r.wavelet_hops).sum();
    let peak = fresh.iter().map(|r| r.max_queue_occupancy).max();
    // Each run's result: its own without a memo, else the memo's.
    let mut memo = memo;
    let runs: Vec<&FabricRun> = match memo.as_deref_mut() {
        None => fresh.iter().collect(),
        Some(m) => {
            m.runs.extend(todo.into_iter().cloned().zip(fresh));
            let m = &*m;
            token
                .runs
                .iter()
                .map(|(_, p)| m.run_of(p))
                .collect::<Option<_>>()
                .context("a simulated program")?
        }
    };
    let (head, layers) = runs.split_last().context("the head's program")?;
    let span = |r: &FabricRun| Cycles(r.span as f64);
    let layer_cycles: Vec<Cycles> = layers.iter().map(|r| span(r)).collect();
    let head_cycles = span(head);
    let token_wavelet_hops = runs.iter().map(|r| r.wavelet_hops).sum();
    let moved = token_transfers(spec, &token, run, memo)?;
    let rest = token.analytic_rest;
    Ok(FabricDecode {
        cycles: layer_cycles.iter().copied().sum::<Cycles>() + head_cycles + moved.cycles + rest,
        layer_cycles,
        head_cycles,
        analytic_rest: rest,
        transfer_cycles: moved.cycles,
        analytic_transfer_cycles: token
            .transfers
            .iter()
            .fold(Cycles::ZERO, |a, t| a + t.transfer.cost(spec).total()),
        simulations,
        transfer_simulations: moved.simulations,
        events: events + moved.events,
        wavelet_hops: wavelet_hops + moved.wavelet_hops,
        token_wavelet_hops,
        transfer_wavelet_hops: moved.token_wavelet_hops,
        max_queue_occupancy: peak.unwrap_or(0).max(moved.max_queue_occupancy),
    })
}

/// One transfer of a decode token, as the fabric runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTransfer {
    pub transfer: Transfer,
    /// Parallel lines: the destination region's rows for a hand-off of the
    /// residual, one for the token's loop-back.
    pub lines: u32,
    /// Bytes per value moved (the activations', or 4 for token ids).
    pub bytes_per_value: u64,
}

/// The token's transfers on the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TransferTiming {
    /// Every transfer's cycles, added up (in token order).
    pub cycles: Cycles,
    /// Runs made by this call (with a memo, only transfers it did not hold).
    pub simulations: usize,
    /// Events and wavelet-hops of the runs this call made.
    pub events: u64,
    pub wavelet_hops: u64,
    /// Wavelet-hops of every transfer of the token, simulated or shared.
    pub token_wavelet_hops: u64,
    pub max_queue_occupancy: u32,
}

/// Simulates the transfers of `token` (each distinct one once with `memo`,
/// every one without), in parallel.
pub fn token_transfers(
    spec: &WaferSpec,
    token: &TokenPrograms,
    run: &RunOptions,
    memo: Option<&mut FabricMemo>,
) -> Result<TransferTiming> {
    let known = |m: &FabricMemo, t: &TokenTransfer| m.transfers.iter().any(|(u, _)| u == t);
    let mut todo: Vec<&TokenTransfer> = Vec::new();
    for t in &token.transfers {
        if !memo.as_deref().is_some_and(|m| known(m, t)) && (memo.is_none() || !todo.contains(&t)) {
            todo.push(t);
        }
    }
    let fresh = todo
        .par_iter()
        .map(|t| {
            simulate_transfer(spec, &t.transfer, t.lines, t.bytes_per_value, run)
                .with_context(|| format!("the transfer {:?} on {} lines", t.transfer, t.lines))
        })
        .collect::<Result<Vec<TransferRun>>>()?;
    let mut timing = TransferTiming {
        simulations: fresh.len(),
        events: fresh.iter().map(TransferRun::events).sum(),
        wavelet_hops: fresh.iter().map(TransferRun::wavelet_hops).sum(),
        max_queue_occupancy: fresh
            .iter()
            .map(TransferRun::max_queue_occupancy)
            .max()
            .unwrap_or(0),
        ..TransferTiming::default()
    };
    let runs: Vec<&TransferRun> = match memo {
        None => fresh.iter().collect(),
        Some(m) => {
            m.transfers.extend(todo.into_iter().copied().zip(fresh));
            let m = &*m;
            token
                .transfers
                .iter()
                .map(|t| m.transfers.iter().find(|(u, _)| u == t).map(|(_, r)| r))
                .collect::<Option<_>>()
                .context("a simulated transfer")?
        }
    };
    timing.cycles = runs.iter().map(|r| Cycles(r.cycles as f64)).sum();
    timing.token_wavelet_hops = runs.iter().map(|r| r.wavelet_hops()).sum();
    Ok(timing)
}

/// What one decode token runs on the fabric, in order, and what it does not.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenPrograms {
    /// Every decoder layer's program on its site, in layer order, then the
    /// LM head's steps (final norm, head, argmax) on the head's site (last).
    pub runs: Vec<(Site, LayerProgram)>,
    /// Every transfer between regions and wafers, in token order: the
    /// embedding's hand-off, the layers' hand-offs, the token's loop-back.
    pub transfers: Vec<TokenTransfer>,
    /// The embedding lookup, priced analytically (not simulated).
    pub analytic_rest: Cycles,
}

/// The region programs of one decode token at KV length `context` on
/// `layout` (see [`TokenPrograms`]): what [`fabric_decode`] simulates, and
/// what `wafer trace --token` traces.
pub fn token_programs(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    context: usize,
    opts: &PlanOptions,
) -> TokenPrograms {
    let shape = |s: &Site| (s.region.width(), s.region.height());
    let around = model_steps(spec, cfg, layout, opts);
    let (head_region, head_rest): (Vec<_>, Vec<_>) = around
        .head
        .iter()
        .cloned()
        .partition(|s| s.transfer.is_none());
    let (hw, hh) = shape(&layout.lm_head);
    let mut runs: Vec<(Site, LayerProgram)> = layout
        .layers
        .iter()
        .map(|site| {
            let (w, h) = shape(site);
            (*site, decode_layer_program(spec, cfg, w, h, context, opts))
        })
        .collect();
    runs.push((layout.lm_head, region_of(hw, hh, head_region)));
    // What the steps around the layers move, and their kernels (the embedding
    // lookup), which stay analytic.
    let act = spec.precision.activation_dtype.size_bytes();
    let mut transfers = Vec::new();
    let mut rest = Cycles::ZERO;
    let mut around_step = |step: &Step<OpKind>, lines: u32, bytes_per_value: u64| {
        let mut local = step.clone();
        if let Some(t) = local.transfer.take() {
            transfers.push(TokenTransfer {
                transfer: t,
                lines: lines.max(1),
                bytes_per_value,
            });
        }
        rest += local.cost(spec).total();
    };
    let first = layout.layers.first().unwrap_or(&layout.lm_head);
    for s in &around.embedding {
        around_step(s, first.region.height(), act);
    }
    for (l, steps) in around.after_layer.iter().enumerate() {
        let next = layout.layers.get(l + 1).unwrap_or(&layout.lm_head);
        for s in steps {
            around_step(s, next.region.height(), act);
        }
    }
    // The token's loop-back: one 32-bit id on one line.
    for s in &head_rest {
        around_step(s, 1, 4);
    }
    TokenPrograms {
        runs,
        transfers,
        analytic_rest: rest,
    }
}

/// Steps on a `w x h` region as a program with no tiles (only its steps run).
fn region_of(w: u32, h: u32, steps: Vec<Step<OpKind>>) -> LayerProgram {
    RegionProgram {
        width: w,
        height: h,
        tiles: Vec::new(),
        kv_bytes_per_position: 0,
        buffer_bytes: 0,
        steps,
    }
}
