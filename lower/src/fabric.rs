//! A decode step timed on the fabric simulator (`--sim fabric`): every layer's
//! placed program and the LM head's steps run as whole region programs
//! ([`wafer_sim::fabric::simulate_region`], timing-only), in place of the
//! analytic price of their steps.
//!
//! What still comes from the analytic pricer, and is reported apart
//! (`analytic_rest`): the transfers between regions and wafers (the embedding's
//! hand-off to layer 0, each layer's hand-off to the next, the token's loop-back)
//! and the embedding lookup, which the fabric simulator does not run yet.
//!
//! A layer's figure is its run's span (first PE start to last PE end): the next
//! layer starts from the last PE's result. Layers on regions of one shape run
//! the same program at one KV length (and at every KV length with the same
//! cached positions per PE), and timing never depends on values, so with a
//! [`FabricMemo`] one simulation serves every identical program, across calls;
//! without one every layer is simulated, in parallel over both cores, and
//! gives the same cycles (a test checks it).

use crate::cost::{OpKind, PlanOptions};
use crate::layout::{Layout, Site};
use crate::program::{decode_layer_program, model_steps, LayerProgram};
use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use wafer_core::{Cycles, WaferSpec};
use wafer_models::config::ModelConfig;
use wafer_sim::fabric::{simulate_region, FabricRun, RunOptions};
use wafer_sim::program::{RegionProgram, Step};

/// One decode step's cycles from the fabric simulator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FabricDecode {
    /// The token: every layer's and the head's simulated span, plus `analytic_rest`.
    pub cycles: Cycles,
    /// Each decoder layer's simulated span.
    pub layer_cycles: Vec<Cycles>,
    /// The final norm, LM head and argmax, simulated on the head's region.
    pub head_cycles: Cycles,
    /// The embedding lookup and every transfer between regions, priced
    /// analytically (not simulated).
    pub analytic_rest: Cycles,
    /// Fabric runs made by this call (the head's included); with a memo,
    /// programs simulated before are not run again.
    pub simulations: usize,
    /// Events and wavelet-hops of the runs this call made.
    pub events: u64,
    pub wavelet_hops: u64,
    /// Wavelet-hops of the whole token (every layer, simulated or shared).
    pub token_wavelet_hops: u64,
    /// The most wavelets any buffer or queue held in any run.
    pub max_queue_occupancy: u32,
}

/// Fabric runs of layer programs already simulated: identical programs (same
/// region, same steps: the KV length enters only as cached positions per PE)
/// share one run, since timing never depends on values.
#[derive(Debug, Default)]
pub struct FabricMemo {
    runs: Vec<(LayerProgram, FabricRun)>,
}

impl FabricMemo {
    /// Distinct programs simulated so far.
    pub fn len(&self) -> usize {
        self.runs.len()
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
    let events = fresh.iter().map(|r| r.events).sum();
    let wavelet_hops = fresh.iter().map(|r| r.wavelet_hops).sum();
    let peak = fresh.iter().map(|r| r.max_queue_occupancy).max();
    // Each run's result: its own without a memo, else the memo's.
    let runs: Vec<&FabricRun> = match memo {
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
    let rest = token.analytic_rest;
    Ok(FabricDecode {
        cycles: layer_cycles.iter().copied().sum::<Cycles>() + head_cycles + rest,
        layer_cycles,
        head_cycles,
        analytic_rest: rest,
        simulations,
        events,
        wavelet_hops,
        token_wavelet_hops: runs.iter().map(|r| r.wavelet_hops).sum(),
        max_queue_occupancy: peak.unwrap_or(0),
    })
}

/// What one decode token runs on the fabric, in order, and what it does not.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenPrograms {
    /// Every decoder layer's program on its site, in layer order, then the
    /// LM head's steps (final norm, head, argmax) on the head's site (last).
    pub runs: Vec<(Site, LayerProgram)>,
    /// The embedding lookup and every transfer between regions, priced
    /// analytically (not simulated).
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
    let analytic = |steps: &[Step<OpKind>]| {
        steps
            .iter()
            .fold(Cycles::ZERO, |a, s| a + s.cost(spec).total())
    };
    let mut rest = analytic(&around.embedding) + analytic(&head_rest);
    for steps in &around.after_layer {
        rest += analytic(steps);
    }
    TokenPrograms {
        runs,
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
