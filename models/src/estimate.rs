//! `wafer estimate` from shapes alone: lower a model onto a layout and report
//! decode cycles per token at KV length T, time-to-first-token for an N-token
//! prompt, and the breakdowns. Closed-form per layer (no per-PE loops), so a
//! 405B-shaped model at 131,072 tokens takes milliseconds.
//!
//! The layout is the one `wafer place` computes ([`crate::placement::place`]) for
//! the same model, hardware, region, wafer count and context, so `wafer estimate`
//! and `wafer generate --engine mesh` cost the same placement. [`interim_layout`]
//! is a simpler hand-made layout (regions of one shape dealt contiguous blocks of
//! layers) kept for experiments that want a layout without the SRAM search.
//!
//! Time-to-first-token is the cheaper prefill scheme ([`crate::cost::prefill`]:
//! MeshGEMM, or the prompt as decode steps); the estimate says which. Lowering
//! choices that are not part of the placement (the reduction tree's K) come as
//! [`PlanOptions`] through the `*_with` functions; the plain ones use the
//! defaults, which is what the mesh engine runs.

use crate::config::ModelConfig;
use crate::cost::{decode_plan_with, prefill, Plan, PlanOptions, PrefillScheme};
use crate::layout::{Layout, Site};
use crate::placement::{place, PlaceOptions, Placement, Strategy};
use anyhow::{bail, Result};
use serde::Serialize;
use wafer_core::{Bytes, Cycles, PeCoord, Region, RegionShape, WaferSpec};

/// What to estimate.
#[derive(Debug, Clone)]
pub struct EstimateOptions {
    /// `None`: the smallest number of wafers that holds the model at the context.
    pub wafers: Option<u32>,
    /// `None`: the region the placement search chooses.
    pub region: Option<RegionShape>,
    pub strategy: Strategy,
    /// KV length of the decode step.
    pub context: usize,
    pub prompt_tokens: usize,
}

/// Whether the layout's weights and KV cache fit the PEs' data SRAM.
#[derive(Debug, Clone, Serialize)]
pub struct SramCheck {
    pub fits: bool,
    /// Bytes the fullest PE would hold (weights + KV cache at the context).
    pub bytes_per_pe: Bytes,
    pub budget_per_pe: Bytes,
}

#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub hw: String,
    pub region: RegionShape,
    pub wafers: u32,
    pub regions: u32,
    pub layers_per_region: u32,
    pub context: usize,
    pub prompt_tokens: usize,
    pub sram: SramCheck,
    /// K of the reduction trees the plans were lowered with.
    pub reduce_k: u32,
    pub decode: Plan,
    /// The chosen prefill scheme's plan; its total is `ttft_cycles`.
    pub prefill: Plan,
    pub prefill_scheme: PrefillScheme,
    /// The MeshGEMM prefill's total (= `ttft_cycles` when it was chosen).
    pub prefill_gemm_cycles: Cycles,
    /// The token-by-token prefill's total when `prefill_token_by_token_exact`;
    /// otherwise a lower bound on it that already reached the MeshGEMM cost (it
    /// was not evaluated further).
    pub prefill_token_by_token_cycles: Cycles,
    pub prefill_token_by_token_exact: bool,
    pub decode_cycles_per_token: Cycles,
    pub decode_tokens_per_s: f64,
    pub ttft_cycles: Cycles,
    pub ttft_ms: f64,
    pub prefill_tokens_per_s: f64,
}

/// Regions of `shape` that fit on one wafer (tiled from the north-west corner).
pub fn regions_per_wafer(spec: &WaferSpec, shape: RegionShape) -> u32 {
    (spec.fabric.width_pes / shape.width) * (spec.fabric.height_pes / shape.height)
}

/// The interim layout (see the module doc); replaced by placement at merge.
pub fn interim_layout(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    shape: RegionShape,
    wafers: u32,
) -> Result<Layout> {
    let per_wafer = regions_per_wafer(spec, shape);
    if per_wafer == 0 {
        bail!(
            "region {shape} does not fit the {}x{} fabric of {}",
            spec.fabric.width_pes,
            spec.fabric.height_pes,
            spec.name
        );
    }
    if wafers == 0 {
        bail!("--wafers must be at least 1");
    }
    let cols = spec.fabric.width_pes / shape.width;
    let regions = (per_wafer * wafers)
        .min(cfg.num_hidden_layers as u32)
        .max(1);
    let per_region = (cfg.num_hidden_layers as u32).div_ceil(regions);
    let site = |i: u32| {
        let local = i % per_wafer;
        // Snake order so consecutive regions are neighbours.
        let (row, c) = (local / cols, local % cols);
        let col = if row % 2 == 0 { c } else { cols - 1 - c };
        Site {
            wafer: i / per_wafer,
            region: Region::new(PeCoord::new(col * shape.width, row * shape.height), shape),
        }
    };
    let layers: Vec<Site> = (0..cfg.num_hidden_layers as u32)
        .map(|l| site(l / per_region))
        .collect();
    Ok(Layout {
        embedding: layers[0],
        lm_head: *layers
            .last()
            .expect("a validated config has at least one layer"),
        layers,
    })
}

/// Per-PE bytes of the fullest region: its layers' weights and KV cache at
/// `context`, plus the embedding / LM head where they share it.
pub fn sram_check(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    context: usize,
) -> SramCheck {
    let wbytes = spec.precision.weight_dtype.size_bytes();
    let abytes = spec.precision.activation_dtype.size_bytes();
    let layer = cfg.layer_params() * wbytes + 2 * (context * cfg.kv_dim()) as u64 * abytes;
    let table = (cfg.vocab_size * cfg.hidden_size) as u64 * wbytes;
    let mut worst = 0u64;
    let mut sites: Vec<Site> = layout.layers.clone();
    sites.dedup();
    for s in &sites {
        let mut bytes = layout.layers.iter().filter(|x| *x == s).count() as u64 * layer;
        if *s == layout.embedding {
            bytes += table;
        }
        if *s == layout.lm_head && !cfg.tie_word_embeddings {
            bytes += table;
        }
        worst = worst.max(bytes.div_ceil(s.region.pes()));
    }
    let budget = spec.pe.sram_bytes - spec.pe.reserve_bytes;
    SramCheck {
        fits: worst <= budget,
        bytes_per_pe: Bytes(worst),
        budget_per_pe: Bytes(budget),
    }
}

/// Lowers decode and prefill on `layout` and gathers the figures, with the
/// default lowering options.
pub fn estimate_on(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    opts: &EstimateOptions,
) -> Estimate {
    estimate_on_with(spec, cfg, layout, opts, &PlanOptions::default())
}

/// [`estimate_on`] with explicit lowering options.
pub fn estimate_on_with(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    opts: &EstimateOptions,
    plan_opts: &PlanOptions,
) -> Estimate {
    let decode = decode_plan_with(spec, cfg, layout, opts.context.max(1), plan_opts);
    let pre = prefill(spec, cfg, layout, opts.prompt_tokens.max(1), plan_opts);
    let prefill = pre.plan;
    let d = decode.total();
    let t = prefill.total();
    let shape = layout.layers[0].region.shape;
    let mut sites = layout.layers.clone();
    sites.dedup();
    Estimate {
        hw: spec.name.clone(),
        region: shape,
        wafers: layout.wafers(),
        regions: sites.len() as u32,
        layers_per_region: (layout.layers.len() as u32).div_ceil(sites.len() as u32),
        context: opts.context,
        prompt_tokens: opts.prompt_tokens,
        sram: sram_check(spec, cfg, layout, opts.context),
        decode_tokens_per_s: spec.clock_hz / d.get(),
        ttft_ms: t.seconds_at(spec.clock_hz) * 1e3,
        prefill_tokens_per_s: opts.prompt_tokens.max(1) as f64 / t.seconds_at(spec.clock_hz),
        decode_cycles_per_token: d,
        ttft_cycles: t,
        reduce_k: plan_opts.reduce_k(),
        decode,
        prefill,
        prefill_scheme: pre.scheme,
        prefill_gemm_cycles: pre.gemm_cycles,
        prefill_token_by_token_cycles: pre.token_by_token_cycles,
        prefill_token_by_token_exact: pre.token_by_token_exact,
    }
}

/// The placement the estimate (and the mesh engine) runs on: `wafer place` with
/// the same options, accounted for the longer of the decode context and the prompt.
pub fn placement_for(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    opts: &EstimateOptions,
) -> Result<Placement> {
    let context_tokens = opts.context.max(opts.prompt_tokens).max(1) as u64;
    let placement = place(
        cfg,
        spec,
        &PlaceOptions {
            context_tokens,
            region: opts.region,
            wafers: opts.wafers,
            strategy: opts.strategy,
        },
    )?;
    if !placement.fits() {
        bail!(
            "the model does not fit on {} {} wafer(s) at {context_tokens} tokens of context (this placement holds at most {}); \
             run `wafer place` with the same options to see which PE overflows and what would fit",
            placement.wafers,
            spec.name,
            placement.max_context_tokens
        );
    }
    Ok(placement)
}

/// The estimate on the placement `wafer place` would choose for these options,
/// with the default lowering options.
pub fn estimate(spec: &WaferSpec, cfg: &ModelConfig, opts: &EstimateOptions) -> Result<Estimate> {
    estimate_with(spec, cfg, opts, &PlanOptions::default())
}

/// [`estimate`] with explicit lowering options (e.g. the reduction tree's K).
pub fn estimate_with(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    opts: &EstimateOptions,
    plan_opts: &PlanOptions,
) -> Result<Estimate> {
    let placement = placement_for(spec, cfg, opts)?;
    let mut e = estimate_on_with(spec, cfg, &placement.layout(), opts, plan_opts);
    // The placement's exact per-PE accounting replaces the layout-only check.
    let (fullest, _) = placement.pe_summary();
    e.sram = SramCheck {
        fits: placement.fits(),
        bytes_per_pe: Bytes(fullest.total()),
        budget_per_pe: Bytes(spec.pe.sram_bytes),
    };
    Ok(e)
}
