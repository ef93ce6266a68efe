//! `wafer estimate` from shapes alone: lower a model onto a layout and report
//! decode cycles per token at KV length T, time-to-first-token for an N-token
//! prompt, and the breakdowns. Closed-form per layer (no per-PE loops), so a
//! 405B-shaped model at 131,072 tokens takes milliseconds.
//!
//! The layout is the one `wafer place` computes ([`crate::placement::place`]) for
//! the same model, hardware, region, wafer count and context, so `wafer estimate`
//! and `wafer generate --engine mesh` cost the same placement.
//!
//! Time-to-first-token is the cheaper prefill scheme ([`crate::cost::prefill`]:
//! MeshGEMM, or the prompt as decode steps); the estimate says which. Lowering
//! choices that are not part of the placement (the reduction tree's K) come as
//! [`PlanOptions`] through [`estimate_with`]; [`estimate`] uses the defaults.

use crate::cost::{decode_plan_with, prefill, Chunking, Plan, PlanOptions, PrefillScheme};
use crate::layout::Layout;
use crate::placement::{place, PlaceOptions, Placement, Strategy};
use anyhow::{bail, Result};
use serde::Serialize;
use wafer_core::{Bytes, Cycles, RegionShape, WaferSpec};
use wafer_models::config::ModelConfig;

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

/// Whether the placement fits the PEs' SRAM.
#[derive(Debug, Clone, Serialize)]
pub struct SramCheck {
    pub fits: bool,
    /// Bytes the fullest PE holds (weights, KV cache at the context, buffers, reserve).
    pub bytes_per_pe: Bytes,
    /// A PE's SRAM.
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
    /// The MeshGEMM prefill's total (= `ttft_cycles` when it was chosen);
    /// `None` when not even a chunk of the prompt fits the PEs.
    pub prefill_gemm_cycles: Option<Cycles>,
    /// How the MeshGEMM prefill splits the prompt to fit.
    pub prefill_gemm_chunking: Option<Chunking>,
    /// The streamed prefill's total and chunks (`None`: not even one token's
    /// buffers fit).
    pub prefill_stream_cycles: Option<Cycles>,
    pub prefill_stream_chunking: Option<Chunking>,
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

/// Lowers decode and prefill on `layout` and gathers the figures.
fn gather(
    spec: &WaferSpec,
    cfg: &ModelConfig,
    layout: &Layout,
    opts: &EstimateOptions,
    plan_opts: &PlanOptions,
    sram: SramCheck,
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
        sram,
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
        prefill_gemm_chunking: pre.gemm_chunking,
        prefill_stream_cycles: pre.stream_cycles,
        prefill_stream_chunking: pre.stream_chunking,
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
    // The placement's per-PE accounting (the fullest PE, everything included).
    let (fullest, _) = placement.pe_summary();
    let sram = SramCheck {
        fits: placement.fits(),
        bytes_per_pe: Bytes(fullest.total()),
        budget_per_pe: Bytes(spec.pe.sram_bytes),
    };
    Ok(gather(
        spec,
        cfg,
        &placement.layout(),
        opts,
        plan_opts,
        sram,
    ))
}
