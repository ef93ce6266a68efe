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
//! the same program at one KV length, and timing never depends on values, so by
//! default one simulation serves every layer of a shape (`memo`); without it
//! every layer is simulated, in parallel over both cores, and gives the same
//! cycles (a test checks it).

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
    /// Fabric runs made (one per distinct region shape with `memo`).
    pub simulations: usize,
    /// Events and wavelet-hops of the runs made.
    pub events: u64,
    pub wavelet_hops: u64,
    /// Wavelet-hops of the whole token (every layer, simulated or shared).
    pub token_wavelet_hops: u64,
    /// The most wavelets any buffer or queue held in any run.
    pub max_queue_occupancy: u32,
}

/// The decode step at KV length `context` on `layout`, each layer and the head
/// run on the fabric (see the module doc).
pub fn fabric_decode(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    context: usize,
    opts: &PlanOptions,
    run: &RunOptions,
    memo: bool,
) -> Result<FabricDecode> {
    let shape = |s: &Site| (s.region.width(), s.region.height());
    // The layers to simulate: one per shape with `memo`, every one without.
    let mut jobs: Vec<(u32, u32)> = Vec::new();
    let mut job_of = Vec::with_capacity(layout.layers.len());
    for site in &layout.layers {
        let key = shape(site);
        match jobs.iter().position(|k| memo && *k == key) {
            Some(j) => job_of.push(j),
            None => {
                job_of.push(jobs.len());
                jobs.push(key);
            }
        }
    }
    let runs: Vec<FabricRun> = jobs
        .par_iter()
        .map(|&(w, h)| {
            let program = decode_layer_program(spec, cfg, w, h, context, opts);
            simulate_region(spec, &program, run).with_context(|| {
                format!("a decode layer on a {w}x{h} region at KV length {context}")
            })
        })
        .collect::<Result<_>>()?;

    let around = model_steps(spec, cfg, layout, opts);
    let (head_region, head_rest): (Vec<_>, Vec<_>) = around
        .head
        .iter()
        .cloned()
        .partition(|s| s.transfer.is_none());
    let (hw, hh) = shape(&layout.lm_head);
    let head = region_of(hw, hh, head_region);
    let head_run = simulate_region(spec, &head, run)
        .with_context(|| format!("the LM head on a {hw}x{hh} region"))?;

    let analytic = |steps: &[Step<OpKind>]| {
        steps
            .iter()
            .fold(Cycles::ZERO, |a, s| a + s.cost(spec).total())
    };
    let mut rest = analytic(&around.embedding) + analytic(&head_rest);
    for steps in &around.after_layer {
        rest += analytic(steps);
    }
    let span = |r: &FabricRun| Cycles(r.span as f64);
    let layer_cycles: Vec<Cycles> = job_of.iter().map(|&j| span(&runs[j])).collect();
    let head_cycles = span(&head_run);
    let cycles = layer_cycles.iter().copied().sum::<Cycles>() + head_cycles + rest;
    let all = runs.iter().chain(std::iter::once(&head_run));
    Ok(FabricDecode {
        cycles,
        layer_cycles,
        head_cycles,
        analytic_rest: rest,
        simulations: runs.len() + 1,
        events: all.clone().map(|r| r.events).sum(),
        wavelet_hops: all.clone().map(|r| r.wavelet_hops).sum(),
        token_wavelet_hops: job_of.iter().map(|&j| runs[j].wavelet_hops).sum::<u64>()
            + head_run.wavelet_hops,
        max_queue_occupancy: all.map(|r| r.max_queue_occupancy).max().unwrap_or(0),
    })
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
